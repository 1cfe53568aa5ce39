//! One call: the inbound leg (we are the UAS of the caller's dialog) and the
//! outbound leg (we are the UAC of the dialog with the callee), and the relay
//! rules between them. Sans-IO: every input is a message or `now`, every
//! output an [`Action`] the async shell carries out; timers are deadlines the
//! shell reads with [`Call::poll_timeout`] (quinn-proto style).
//!
//! The transaction layer below absorbs retransmissions, sends and absorbs
//! the ACKs of non-2xx finals and retransmits requests; what is left here is
//! the transaction user's job of RFC 3261: 2xx retransmission until its ACK
//! (§13.3.1.4; to the caller for its INVITE, to either leg for a relayed
//! re-INVITE, whose ACK is then relayed to the other leg), the ACK of the
//! callee's 2xx (§13.2.2.4), CANCEL (§9), BYE (§15), digest answers (§22.2)
//! and the in-dialog relay (§12.2, §14, RFC 3262 PRACK, RFC 3311 UPDATE,
//! RFC 6086 INFO).
//!
//! Requests towards the caller go back over the flow its INVITE came on
//! (see the shell); requests towards the callee go to the external PBX's
//! configured address (an outbound proxy in RFC 3261 §8.1.2 terms), with the
//! Request-URI and Route of the dialog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::dialog::{cseq_value, put_cseq, Dialog, DialogState, UacText};
use crate::routing::Number;
use crate::sip::{ByteStr, HeaderName, Method, NameAddr, Request, Response, StatusCode, Uri};

use super::auth::{self, DigestCredentials};
use super::ids;
use super::{failure_for_status, FinishReason};

/// The two sides of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leg {
    /// Towards the caller: we are the UAS.
    Inbound,
    /// Towards the callee (the external PBX): we are the UAC.
    Outbound,
}

impl Leg {
    /// 0 for the inbound leg, 1 for the outbound one.
    fn index(self) -> usize {
        match self {
            Leg::Inbound => 0,
            Leg::Outbound => 1,
        }
    }

    fn other(self) -> Leg {
        match self {
            Leg::Inbound => Leg::Outbound,
            Leg::Outbound => Leg::Inbound,
        }
    }
}

/// What the shell must do for the call.
#[derive(Debug)]
pub enum Action {
    /// Answer a request received on `leg` through its server transaction
    /// (its CSeq number and method identify it among the call's).
    Respond {
        /// Leg the request came from.
        leg: Leg,
        /// CSeq number of the request.
        seq: u32,
        /// Method of the request.
        method: Method,
        /// The response.
        response: Response,
    },
    /// Send a request on `leg` in a new client transaction; its responses
    /// come back through [`Call::on_response`] (or [`Call::on_request_failed`]).
    Request {
        /// Leg to send on.
        leg: Leg,
        /// Its CSeq number (a failure is reported with it).
        seq: u32,
        /// The request (with our Via).
        request: Request,
    },
    /// Send our 2xx on `leg` again (its INVITE server transaction passes
    /// the TU's 2xx retransmissions, RFC 6026).
    Retransmit {
        /// Leg to send on.
        leg: Leg,
        /// CSeq number of the INVITE.
        seq: u32,
        /// The 2xx.
        response: Response,
    },
    /// Send an ACK of a 2xx on `leg` straight to the transport, outside any
    /// transaction (RFC 3261 §13.2.2.4): written once, kept as bytes for
    /// the 2xx retransmissions that ask for it again.
    Ack {
        /// Leg to send on.
        leg: Leg,
        /// The ACK on the wire.
        bytes: Bytes,
    },
}

/// The ACK we sent for the 2xx of another fork of our INVITE (one whose To
/// tag is not that of the callee's dialog the call keeps), sent again as
/// is when that 2xx comes again (RFC 3261 §13.2.2.4).
#[derive(Debug)]
struct ForkAck {
    /// The fork's To tag.
    tag: ByteStr,
    /// The ACK on the wire.
    ack: Bytes,
}

/// The ACKs of 2xx to our INVITE that a call keeps as bytes, sent again
/// as they are when their 2xx comes again (RFC 3261 §13.2.2.4), until
/// 64*T1 after our ACK of the callee's 2xx (`ack_keep_deadline`): by then
/// Timer M of the INVITE client transaction (RFC 6026 §7.2, 64*T1 from
/// the first 2xx) has ended, and no 2xx of any fork reaches the call.
#[derive(Debug, Default)]
struct KeptAcks {
    /// The ACK we sent for the callee's 2xx when it carried a body (a late
    /// answer). An ACK without a body is written again instead
    /// ([`Call::write_callee_ack`]): no copy of it lives through the
    /// call's hold, to be freed, cold, at its end. It is the same ACK
    /// (same branch, CSeq, dialog) but not always the same bytes: it is
    /// written from the outbound dialog as it is then, so a target refresh
    /// within the 64*T1 (the callee's re-INVITE or UPDATE, the 2xx of
    /// ours) puts the new remote target in its Request-URI (RFC 3261
    /// §13.2.2.4: the ACK of a 2xx is built from the dialog's state; the
    /// callee matches it by dialog and CSeq).
    late: Option<Bytes>,
    /// The ACKs of other forks' 2xx, at most [`MAX_FORK_ACKS`].
    forks: Vec<ForkAck>,
}

/// How many other forks' 2xx a call ACKs and BYEs (and keeps the ACK of,
/// for their retransmissions). The 2xx of a fork beyond them gets nothing:
/// a BYE for each would be a client transaction living 64*T1 for every 2xx
/// with a new To tag a callee sends, and without the fork's tag kept its
/// retransmissions could not be told from new forks. A UAS that gets no
/// ACK ends its dialog itself (RFC 3261 §13.3.1.4), with a BYE the call
/// answers 481.
const MAX_FORK_ACKS: usize = 8;

/// Local addressing of one leg: what goes into our Via and Contact.
#[derive(Clone, Debug)]
pub struct LegTransport {
    /// `SIP/2.0/UDP host:port;branch=`: the Via value up to the branch.
    pub via_prefix: Bytes,
    /// Our Contact value, e.g. `<sip:vpbx@192.0.2.1:5060;transport=tcp>`.
    pub contact: Bytes,
    /// Host of our From URI on this leg (the advertised address).
    pub host: ByteStr,
    /// TCP (and later TLS): no retransmissions of our 2xx.
    pub reliable: bool,
}

impl LegTransport {
    /// Builds the Via prefix and Contact from the advertised host, port and
    /// transport name (`UDP`, `TCP`).
    pub fn new(host: &str, port: u16, transport: &str) -> LegTransport {
        let hostport = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let upper = transport.to_ascii_uppercase();
        let contact = if upper == "UDP" {
            format!("<sip:vpbx@{hostport}>")
        } else {
            format!(
                "<sip:vpbx@{hostport};transport={}>",
                transport.to_ascii_lowercase()
            )
        };
        LegTransport {
            via_prefix: Bytes::from(format!("SIP/2.0/{upper} {hostport};branch=")),
            contact: Bytes::from(contact),
            host: ByteStr::from(host.to_owned()),
            reliable: upper != "UDP",
        }
    }

    /// Our Via value for request `seq` of `call` on `leg`, with the branch
    /// of [`ids::branch_for`] written straight into it.
    pub fn via_for(&self, call: u64, leg: Leg, seq: u32) -> Bytes {
        let mut b = BytesMut::with_capacity(self.via_len());
        self.put_via(&mut b, call, leg, seq);
        b.freeze()
    }

    /// Room [`LegTransport::put_via`] takes at most.
    pub fn via_len(&self) -> usize {
        self.via_prefix.len() + ids::BRANCH_LEN + 6
    }

    /// Writes [`LegTransport::via_for`] into `buf` and splits it off.
    pub fn put_via(&self, buf: &mut BytesMut, call: u64, leg: Leg, seq: u32) -> Bytes {
        self.write_via(buf, call, leg, seq);
        buf.split().freeze()
    }

    /// Appends [`LegTransport::via_for`] to `buf`.
    pub fn write_via(&self, buf: &mut BytesMut, call: u64, leg: Leg, seq: u32) {
        self.write_via_with(buf, call, leg, seq, rand::random());
    }

    /// [`LegTransport::write_via`] with `nonce` as the random part of the
    /// branch: the same Via again for the same `nonce`.
    pub fn write_via_with(&self, buf: &mut BytesMut, call: u64, leg: Leg, seq: u32, nonce: u64) {
        buf.put_slice(&self.via_prefix);
        ids::put_branch_with(buf, call, leg, seq, nonce);
        buf.put_slice(b";rport");
    }

    /// Our Via value with `branch`.
    pub fn via(&self, branch: &str) -> Bytes {
        let mut b = BytesMut::with_capacity(self.via_prefix.len() + branch.len() + 6);
        b.put_slice(&self.via_prefix);
        b.put_slice(branch.as_bytes());
        b.put_slice(b";rport");
        b.freeze()
    }
}

/// Daemon-wide settings of calls.
#[derive(Clone, Debug)]
pub struct CallSettings {
    /// RFC 3261 T1 (RTT estimate).
    pub t1: Duration,
    /// RFC 3261 T2 (maximum retransmission interval of non-INVITE requests
    /// and of 2xx).
    pub t2: Duration,
    /// A call answered longer than this is hung up on both legs.
    pub max_duration: Option<Duration>,
}

/// Where and how to place the outbound leg, decided by routing.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Request-URI of the outbound INVITE.
    pub request_uri: Uri,
    /// The dialed number, to be the user part of a `sip:` Request-URI that
    /// names none (see [`crate::routing::ExternalPbx::request_uri`]): its
    /// E.164 text is written into the call's buffer.
    pub request_user: Option<Number>,
    /// No answer within this → CANCEL and `on_failure`.
    pub dial_timeout: Duration,
    /// Our addressing on the outbound leg.
    pub outbound: Arc<LegTransport>,
    /// Credentials for the callee's digest challenge, if configured.
    pub credentials: Option<Arc<DigestCredentials>>,
}

/// How the call ended, for the CDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Finish reason (SPEC §2.5).
    pub reason: FinishReason,
    /// Final status sent to the caller (200 for answered calls).
    pub status: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallerState {
    /// No final response yet.
    Proceeding,
    /// 2xx sent, waiting for the caller's ACK.
    Answered,
    /// ACK received.
    Confirmed,
    /// Final failure sent, or the dialog is ended by BYE.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CalleeState {
    /// Our INVITE has no final response.
    Calling,
    /// 2xx received, our ACK waits for the caller's.
    Answered,
    /// ACK sent.
    Confirmed,
    /// Failed, or ended by BYE.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cancel {
    None,
    /// Wanted, but no provisional response yet (RFC 3261 §9.1).
    Pending,
    Sent,
    /// Wanted, but it could not be built ([`ReadBackError`]; tried only
    /// after a provisional response): our INVITE ends by the callee's
    /// final response or, without one, by the INVITE client's limit in
    /// Proceeding (`UNANSWERED_INVITE`, 180 s), not by Timer B, which does
    /// not end an INVITE client in Proceeding.
    Unsendable,
}

/// An in-dialog request relayed from one leg to the other, waiting for the
/// other leg's final response.
#[derive(Debug)]
struct Relay {
    from: Leg,
    request: Request,
    to_seq: u32,
}

/// A relayed re-INVITE answered 2xx, waiting for the ACK of the leg that
/// sent it. Our 2xx to that leg is retransmitted at T1, 2*T1, … T2 over an
/// unreliable transport, and the session is ended when no ACK comes within
/// 64*T1 (RFC 3261 §13.3.1.4). The ACK is then relayed as the ACK of the
/// other leg's 2xx (with the body of a late answer).
#[derive(Debug)]
struct ReinviteAck {
    /// Leg that sent the re-INVITE (we are its UAS).
    from: Leg,
    from_seq: u32,
    /// CSeq of the re-INVITE we sent on the other leg.
    to_seq: u32,
    /// Our 2xx to `from`, while it is retransmitted.
    ok: Option<Box<Response>>,
    retx_interval: Duration,
    retx_deadline: Option<Instant>,
    /// No ACK by then: BYE both legs.
    ack_deadline: Instant,
}

/// The last ACK we sent for a relayed re-INVITE's 2xx, sent again when that
/// 2xx is retransmitted (its sender retransmits for 64*T1 at most).
#[derive(Debug)]
struct SentAck {
    leg: Leg,
    seq: u32,
    ack: Bytes,
    keep_until: Instant,
}

/// What of our INVITE to the callee is needed again until it has a final
/// response, to build its CANCEL (RFC 3261 §9.1: same Request-URI,
/// Call-ID, From, To, CSeq number and top Via) or to send it again with
/// credentials ([`OutInvite::request`]) without keeping the whole request:
/// the other headers are the outbound dialog's and the caller's INVITE's.
#[derive(Debug)]
struct OutInvite {
    /// To, without tag (a provisional response may have set the dialog's):
    /// `<` Request-URI `>`, the Request-URI as [`Uri::write_into`] wrote
    /// it, so it is read back from here ([`OutInvite::uri`]) instead of
    /// being kept a second time (a `Uri` in the call state costs every
    /// call its size; reading it back is for a CANCEL or a resend with
    /// credentials only).
    to: Bytes,
    /// Our top Via of the INVITE last sent.
    via: Bytes,
    /// Max-Forwards: the caller's less one.
    max_forwards: Bytes,
}

impl OutInvite {
    /// The Request-URI, parsed again from [`OutInvite::to`] (a CANCEL, a
    /// resend with credentials: rare). A URI written from a parsed one
    /// parses again; should it not, that is an error, not another URI (a
    /// CANCEL must carry the INVITE's Request-URI, RFC 3261 §9.1, and a
    /// digest answer is for the Request-URI sent).
    fn uri(&self) -> Result<Uri, ReadBackError> {
        let inner = self
            .to
            .strip_prefix(b"<")
            .and_then(|t| t.strip_suffix(b">"))
            .ok_or(ReadBackError::NotNameAddr)?;
        Ok(Uri::from_bytes(self.to.slice_ref(inner))?)
    }

    /// The INVITE to `uri` (the Request-URI) with CSeq number `seq` and
    /// this Via: From and Call-ID of `dialog`, our `contact`, the
    /// end-to-end headers and body of the caller's `invite`, and `auth` (a
    /// digest answer) last.
    // The pieces of one INVITE; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        uri: Uri,
        dialog: &Dialog,
        invite: &Request,
        contact: &Bytes,
        seq: u32,
        auth: Option<(HeaderName, Bytes)>,
        buf: &mut BytesMut,
    ) -> Request {
        let end_to_end = invite
            .headers
            .iter()
            .filter(|h| is_end_to_end(&h.name))
            .count();
        let mut req = Request::new(Method::Invite, uri);
        let h = &mut req.headers;
        *h = crate::sip::Headers::with_capacity(7 + end_to_end + usize::from(auth.is_some()));
        h.push(HeaderName::Via, self.via.clone());
        h.push(HeaderName::From, dialog.local_header());
        h.push(HeaderName::To, self.to.clone());
        h.push(HeaderName::CallId, dialog.call_id_bytes());
        put_cseq(buf, seq, &Method::Invite);
        h.push(HeaderName::CSeq, buf.split().freeze());
        h.push(HeaderName::MaxForwards, self.max_forwards.clone());
        h.push(HeaderName::Contact, contact.clone());
        copy_end_to_end(&invite.headers, h);
        if let Some((name, value)) = auth {
            h.push(name, value);
        }
        req.body = invite.body.clone();
        req
    }
}

/// An instant of a call (a deadline; when it was answered, ended) as
/// nanoseconds after its start, or none: 8 bytes where an `Option<Instant>`
/// takes 16 (the call's state is read again, cold, at its BYE: the fewer
/// cache lines, the better; docs/performance.md, "Session 10"). Exact: the
/// instant read back is the one set, so a deadline still tells the
/// distance it was set at ([`Call::deadline_set_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Since(u64);

impl Since {
    /// None; the greatest, so the earliest of some is their minimum.
    const NONE: Since = Since(u64::MAX);

    /// `at`, of a call started at `start` (not before it: a call's
    /// instants are `now` of its steps, or later).
    fn new(start: Instant, at: Instant) -> Since {
        let nanos = at.saturating_duration_since(start).as_nanos();
        // 584 years after the start: not reached.
        Since(u64::try_from(nanos).map_or(u64::MAX - 1, |n| n.min(u64::MAX - 1)))
    }

    fn is_some(self) -> bool {
        self != Since::NONE
    }

    /// The instant, of a call started at `start`.
    fn get(self, start: Instant) -> Option<Instant> {
        self.is_some().then(|| start + Duration::from_nanos(self.0))
    }
}

/// One call (see the module doc).
#[derive(Debug)]
pub struct Call {
    /// The rest of the buffer the call's identifiers, dialog copies, Via
    /// and CSeq values are written into and split off (see [`Call::new`]).
    buf: BytesMut,
    /// Our number for the call, carried in our Via branches so that events
    /// of client transactions find their call without a lookup table.
    id: u64,
    settings_t1: Duration,
    settings_t2: Duration,
    max_duration: Option<Duration>,
    inbound_tp: Arc<LegTransport>,
    outbound_tp: Arc<LegTransport>,
    inbound: Dialog,
    outbound: Dialog,
    /// The URI of the caller's From, as [`Uri::to_text`] writes it (in
    /// the call's buffer), for the CDR.
    caller_uri: ByteStr,
    caller: CallerState,
    callee: CalleeState,
    /// The caller's INVITE until it has a final response.
    invite: Option<Box<Request>>,
    invite_seq: u32,
    /// Our INVITE to the callee until it has a final response (for CANCEL
    /// and the resending with credentials).
    out_invite: Option<OutInvite>,
    out_invite_seq: u32,
    caller_100rel: bool,
    provisional_seen: bool,
    credentials: Option<Arc<DigestCredentials>>,
    /// INVITEs resent with credentials so far (one is allowed).
    auth_attempts: u8,
    cancel: Cancel,
    /// The callee's 2xx that our 2xx to the caller was built from, kept
    /// to build it again for its retransmissions until the caller's ACK
    /// (built the same way, it is the same response; keeping the callee's
    /// message costs no copy of ours).
    callee_ok: Option<Box<Response>>,
    retx_interval: Duration,
    /// ACKs of 2xx to our INVITE kept as bytes for the 2xx's
    /// retransmissions ([`KeptAcks`]: a late answer's, other forks'),
    /// until `ack_keep_deadline`. Boxed, as `reinvite_ack_sent`: they are
    /// rare.
    kept_acks: Option<Box<KeptAcks>>,
    /// Random part of the branch of our ACK of the callee's 2xx, so that
    /// [`Call::write_callee_ack`] writes the same branch again (see
    /// [`KeptAcks::late`] for what may differ).
    ack_nonce: u64,
    /// Until when the callee's 2xx is ACKed again (set once we ACKed it):
    /// the callee retransmits its 2xx for 64*T1 at most.
    ack_keep_deadline: Since,
    /// CSeq number of our BYE on each leg ([`Leg::index`]) while it has no
    /// final response (one per leg at most: it ends that leg).
    byes: [Option<u32>; 2],
    relays: Vec<Relay>,
    /// Boxed, as `reinvite_ack_sent`: a relayed re-INVITE is rare, and the
    /// call state every message touches stays smaller without them.
    reinvite_ack: Option<Box<ReinviteAck>>,
    reinvite_ack_sent: Option<Box<SentAck>>,
    dial_deadline: Since,
    max_deadline: Since,
    retx_deadline: Since,
    ack_deadline: Since,
    guard_deadline: Since,
    outcome: Option<Outcome>,
    /// Final status the callee answered our INVITE with, if any.
    callee_status: Option<u16>,
    started_at: Instant,
    answered_at: Since,
    ended_at: Since,
}

/// Headers copied end to end between the legs: Supported, Require,
/// Allow, Accept, Session-Expires, Min-SE, Content-Disposition, Subject,
/// Info-Package, Recv-Info, Event and the body's Content-Type. Everything
/// else, notably Via, Record-Route, Route, Contact and Call-ID, stays on its
/// leg (topology hiding). All are known names, so the parser has already
/// recognized them (in any case or compact form) as these variants.
fn is_end_to_end(name: &HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Supported
            | HeaderName::Require
            | HeaderName::Allow
            | HeaderName::Accept
            | HeaderName::SessionExpires
            | HeaderName::MinSe
            | HeaderName::ContentDisposition
            | HeaderName::Subject
            | HeaderName::InfoPackage
            | HeaderName::RecvInfo
            | HeaderName::Event
            | HeaderName::ContentType
    )
}

/// [`Action::Respond`] with `response` to `request`, received on `leg`
/// (a request without a readable CSeq has no transaction to answer on).
fn answer(leg: Leg, request: &Request, response: Response, out: &mut Vec<Action>) {
    if let Ok(cseq) = request.cseq_ref() {
        out.push(Action::Respond {
            leg,
            seq: cseq.seq,
            method: cseq.method.clone(),
            response,
        });
    }
}

/// Headers of a relayed request/response that are end-to-end.
fn copy_end_to_end(from: &crate::sip::Headers, to: &mut crate::sip::Headers) {
    for h in from.iter() {
        if is_end_to_end(&h.name) {
            to.push(h.name.clone(), h.value.clone());
        }
    }
}

fn has_option_tag(values: Result<Vec<ByteStr>, crate::sip::HeaderError>, tag: &str) -> bool {
    values
        .map(|v| v.iter().any(|t| t.eq_ignore_ascii_case(tag)))
        .unwrap_or(false)
}

/// Our INVITE's Request-URI cannot be read back from the To written for it
/// ([`OutInvite::uri`]): the URI writer and parser disagree (a bug).
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    /// The To is not `<` URI `>`.
    #[error("our INVITE's To is not `<` URI `>`")]
    NotNameAddr,
    /// The URI in it does not parse.
    #[error("our INVITE's Request-URI does not parse back: {0}")]
    Uri(#[from] crate::sip::UriError),
}

/// The caller's INVITE cannot set up a call (a header the dialog needs is
/// missing or malformed); the INVITE is handed back to be answered.
#[derive(Debug, thiserror::Error)]
#[error("INVITE cannot set up a call: {source}")]
pub struct SetupError {
    /// What is wrong with it.
    #[source]
    pub source: crate::dialog::DialogError,
    /// The INVITE.
    pub invite: Box<Request>,
}

impl Call {
    /// Sets up a call for the caller's `invite` (already admitted: routed,
    /// Max-Forwards checked) and returns it with the outbound INVITE to send.
    // The arguments are the distinct pieces of a call's setup (the sans-IO
    // `now` and `out` included); a struct for the one call site would only
    // rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        invite: Request,
        inbound_tp: Arc<LegTransport>,
        plan: Plan,
        settings: &CallSettings,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<Box<Call>, SetupError> {
        let from = match invite.from_ref() {
            Ok(from) => from,
            Err(e) => {
                return Err(SetupError {
                    source: e.into(),
                    invite: Box::new(invite),
                })
            }
        };
        let outbound_tp = plan.outbound.clone();
        // One buffer for what the call writes and keeps (identifiers, the
        // copies its dialogs keep, our Via and CSeq values): its pieces are
        // split off it and share its allocation. Room for the setup, the
        // callee's To and Contact, and the Via and CSeq of a BYE (the ACK of
        // the callee's 2xx is written into bytes of its own).
        let via_len = outbound_tp.via_len().max(inbound_tp.via_len()) + 16;
        // The outbound dialog's text: Call-ID, our tag, our From with it,
        // To; written again (once) when a provisional response gives the
        // callee's tag and Contact.
        let out_text = 33
            + outbound_tp.host.len()
            + ids::TAG_LEN
            + caller_id_len(from, &outbound_tp.host)
            + 5
            + ids::TAG_LEN
            + 2
            + URI_ROOM;
        let mut buf = BytesMut::with_capacity(
            Dialog::uas_len(&invite, ids::TAG_LEN)
                + caller_uri_len(&invite)
                + ids::E164_LEN
                + 2 * out_text
                + 2 * via_len
                + 3
                + CALLEE_ROOM,
        );
        let checked = (|| {
            let mut tag = [0; ids::TAG_LEN];
            let tag = tag_text(&mut buf, id, Leg::Inbound, &mut tag);
            let inbound = Dialog::new_uas_in(&invite, from, tag, &mut buf)?;
            let invite_seq = invite.cseq()?.seq;
            let max_forwards = invite.max_forwards()?;
            Ok::<_, crate::dialog::DialogError>((inbound, invite_seq, max_forwards))
        })();
        let (inbound, invite_seq, max_forwards) = match checked {
            Ok(v) => v,
            Err(source) => {
                return Err(SetupError {
                    source,
                    invite: Box::new(invite),
                })
            }
        };
        let max_forwards = max_forwards.unwrap_or(70).saturating_sub(1);
        from.uri.write_into(&mut buf);
        // Written from a parsed URI's pieces, each UTF-8 text: checked
        // once here (never empty for that reason).
        let caller_uri = ByteStr::from_utf8(buf.split().freeze()).unwrap_or_default();
        let caller_100rel = has_option_tag(invite.supported(), "100rel")
            || has_option_tag(invite.require(), "100rel");

        let mut request_uri = plan.request_uri;
        if let (Some(number), Uri::Sip(uri)) = (plan.request_user, &mut request_uri) {
            ids::put_e164(&mut buf, number);
            uri.user = Some(ByteStr::from_ascii(buf.split().freeze()));
        }
        // The outbound dialog's text, written in place: Call-ID, our tag,
        // our From with that tag, To.
        ids::put_call_id(&mut buf, &outbound_tp.host);
        let call_id = buf.len();
        let mut out_tag = [0; ids::TAG_LEN];
        let out_tag = tag_text(&mut buf, id, Leg::Outbound, &mut out_tag);
        buf.put_slice(out_tag.as_bytes());
        put_caller_id(&mut buf, from, &outbound_tp.host);
        buf.put_slice(b";tag=");
        buf.put_slice(out_tag.as_bytes());
        let local_header = buf.len() - call_id - out_tag.len();
        buf.put_u8(b'<');
        request_uri.write_into(&mut buf);
        buf.put_u8(b'>');
        let lens = UacText {
            call_id,
            local_tag: out_tag.len(),
            local_header,
            remote_header: buf.len() - call_id - out_tag.len() - local_header,
        };
        let out_seq = 1;
        // The target is To's URI until the callee's Contact: read from
        // it if needed before (a CANCEL, rare).
        let outbound = Dialog::new_uac_in(&mut buf, lens, out_seq);
        let to = outbound.remote_header();
        buf.put_slice(itoa::Buffer::new().format(max_forwards).as_bytes());
        let max_forwards = buf.split().freeze();
        let sent = OutInvite {
            to,
            via: outbound_tp.put_via(&mut buf, id, Leg::Outbound, out_seq),
            max_forwards,
        };
        let req = sent.request(
            request_uri,
            &outbound,
            &invite,
            &outbound_tp.contact,
            out_seq,
            None,
            &mut buf,
        );

        // Boxed here: the call (1.3 kB) is then moved as a pointer into
        // its table entry, not copied into each wrapper on the way (kept
        // inline in the entry instead, it was copied there several times:
        // +0.7k instructions of memcpy and +250-270 D1 write misses per
        // call in callgrind's cache simulation, docs/performance.md,
        // "Session 9").
        let call = Box::new(Call {
            buf,
            id,
            settings_t1: settings.t1,
            settings_t2: settings.t2,
            max_duration: settings.max_duration,
            inbound_tp,
            outbound_tp,
            inbound,
            outbound,
            caller_uri,
            caller: CallerState::Proceeding,
            callee: CalleeState::Calling,
            invite: Some(Box::new(invite)),
            invite_seq,
            out_invite: Some(sent),
            out_invite_seq: out_seq,
            caller_100rel,
            provisional_seen: false,
            credentials: plan.credentials,
            auth_attempts: 0,
            cancel: Cancel::None,
            callee_ok: None,
            retx_interval: settings.t1,
            kept_acks: None,
            ack_nonce: 0,
            ack_keep_deadline: Since::NONE,
            byes: [None; 2],
            relays: Vec::new(),
            reinvite_ack: None,
            reinvite_ack_sent: None,
            dial_deadline: Since::new(now, now + plan.dial_timeout),
            max_deadline: Since::NONE,
            retx_deadline: Since::NONE,
            ack_deadline: Since::NONE,
            guard_deadline: Since::NONE,
            outcome: None,
            callee_status: None,
            started_at: now,
            answered_at: Since::NONE,
            ended_at: Since::NONE,
        });
        out.push(Action::Request {
            leg: Leg::Outbound,
            seq: out_seq,
            request: req,
        });
        Ok(call)
    }

    /// CSeq number of the caller's INVITE.
    pub fn invite_seq(&self) -> u32 {
        self.invite_seq
    }

    /// Call-ID of the caller's dialog.
    pub fn inbound_call_id(&self) -> &str {
        self.inbound.call_id()
    }

    /// The caller's Call-ID and From tag, which key the inbound leg, as
    /// handles on the call's buffer.
    pub fn inbound_key(&self) -> (Bytes, Bytes) {
        (
            self.inbound.call_id_bytes(),
            self.inbound.remote_tag_bytes(),
        )
    }

    /// Our tag on the inbound leg (To tag of our responses).
    pub fn inbound_local_tag(&self) -> &str {
        self.inbound.local_tag()
    }

    /// The caller's From URI (for the CDR).
    pub fn caller_uri(&self) -> &ByteStr {
        &self.caller_uri
    }

    /// Call-ID of the dialog of `leg` and our tag in it: a request naming
    /// the call by that tag must carry that Call-ID.
    pub fn dialog_ids(&self, leg: Leg) -> (&[u8], &[u8]) {
        let dialog = match leg {
            Leg::Inbound => &self.inbound,
            Leg::Outbound => &self.outbound,
        };
        dialog.ids_raw()
    }

    /// Call-ID of the outbound leg (ours).
    pub fn outbound_call_id(&self) -> &str {
        self.outbound.call_id()
    }

    /// Our tag on the outbound leg (From tag of our requests).
    pub fn outbound_local_tag(&self) -> &str {
        self.outbound.local_tag()
    }

    /// How the call ended, once decided.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// Final status of the callee's answer to our INVITE, if it sent one.
    pub fn callee_status(&self) -> Option<u16> {
        self.callee_status
    }

    /// When the call was answered, if it was.
    pub fn answered_at(&self) -> Option<Instant> {
        self.answered_at.get(self.started_at)
    }

    /// When the caller's side ended (final failure or BYE).
    pub fn ended_at(&self) -> Option<Instant> {
        self.ended_at.get(self.started_at)
    }

    /// When the call started.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// True once both legs are over and no transaction of ours is open: the
    /// shell writes the CDR and drops the call.
    pub fn is_finished(&self) -> bool {
        self.caller == CallerState::Done
            && self.callee == CalleeState::Done
            && self.byes == [None; 2]
    }

    /// Whether deadline `at` was set by the step that ran at `now`: it is
    /// `now` plus one of the durations the call's steps set deadlines
    /// with (the dial timeout, at the first step; T1 doubling up to T2;
    /// 64*T1; 65*T1; the maximum call duration), so timers of all calls
    /// share that distance. A deadline set by an earlier step (it became
    /// the earliest when a sooner one was cleared) is some other distance
    /// from `now`, one no other timer shares.
    pub fn deadline_set_at(&self, at: Instant, now: Instant) -> bool {
        let Some(after) = at.checked_duration_since(now) else {
            return false;
        };
        let t1 = self.settings_t1;
        if now == self.started_at
            || after == 64 * t1
            || after == 65 * t1
            || Some(after) == self.max_duration
        {
            return true;
        }
        let mut retx = t1;
        while retx < self.settings_t2 {
            if after == retx {
                return true;
            }
            retx *= 2;
        }
        after == self.settings_t2
    }

    /// The next deadline at which [`Call::handle_timeout`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // `Since::NONE` is the greatest.
        let own = [
            self.dial_deadline,
            self.max_deadline,
            self.retx_deadline,
            self.ack_deadline,
            self.guard_deadline,
            self.ack_keep_deadline,
        ]
        .into_iter()
        .min()
        .and_then(|d| d.get(self.started_at));
        [
            own,
            self.reinvite_ack.as_ref().map(|ra| {
                ra.retx_deadline
                    .map_or(ra.ack_deadline, |r| r.min(ra.ack_deadline))
            }),
            self.reinvite_ack_sent.as_ref().map(|s| s.keep_until),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn dialog(&mut self, leg: Leg) -> &mut Dialog {
        match leg {
            Leg::Inbound => &mut self.inbound,
            Leg::Outbound => &mut self.outbound,
        }
    }

    fn transport(&self, leg: Leg) -> &LegTransport {
        match leg {
            Leg::Inbound => &self.inbound_tp,
            Leg::Outbound => &self.outbound_tp,
        }
    }

    /// `at` as an instant of this call ([`Since`]).
    fn since(&self, at: Instant) -> Since {
        Since::new(self.started_at, at)
    }

    /// Whether deadline `d` is set and due at `now`.
    fn due(&self, d: Since, now: Instant) -> bool {
        d.get(self.started_at).is_some_and(|d| d <= now)
    }

    fn finish(&mut self, reason: FinishReason, status: u16, now: Instant) {
        if self.outcome.is_none() {
            self.outcome = Some(Outcome { reason, status });
            self.ended_at = self.since(now);
        }
    }

    fn enter_ending(&mut self, now: Instant) {
        if !self.guard_deadline.is_some() {
            // Whatever transaction of ours is still open (BYE, CANCELed
            // INVITE) times out by 64*T1 (RFC 3261 §9.1, Timer B/F).
            self.guard_deadline = self.since(now + 64 * self.settings_t1 + self.settings_t1);
        }
        self.dial_deadline = Since::NONE;
        self.max_deadline = Since::NONE;
    }

    // ---- responses to the caller ----

    /// A response to the caller's INVITE: our To tag; Record-Route and our
    /// Contact on 1xx/2xx (RFC 3261 §12.1.1).
    fn caller_response(&self, status: StatusCode, relayed: Option<&Response>) -> Option<Response> {
        let invite = self.invite.as_ref()?;
        let dialog_forming = status.as_u16() > 100 && status.as_u16() < 300;
        // As `Response::for_request` then `Headers::set` of To, in one
        // pass: the INVITE's Via, From, Call-ID and CSeq in their order,
        // and in To's place the caller's To with our tag (built once with
        // the dialog). Room for those, a Record-Route, our Contact and a
        // few end-to-end fields.
        let mut response = Response::new(status);
        let h = &mut response.headers;
        *h = crate::sip::Headers::with_capacity(12);
        let mut to_done = false;
        for f in invite.headers.iter() {
            match f.name {
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    h.push(f.name.clone(), f.value.clone())
                }
                HeaderName::To if !to_done => {
                    to_done = true;
                    h.push(HeaderName::To, self.inbound.local_header());
                }
                _ => {}
            }
        }
        if !to_done {
            h.push(HeaderName::To, self.inbound.local_header());
        }
        if dialog_forming {
            for rr in invite.headers.get_all(&HeaderName::RecordRoute) {
                h.push(HeaderName::RecordRoute, rr.clone());
            }
            h.push(HeaderName::Contact, self.inbound_tp.contact.clone());
        }
        if let Some(from) = relayed {
            response.reason = from.reason.clone();
            copy_end_to_end(&from.headers, &mut response.headers);
            if let Some(rseq) = from.headers.get(&HeaderName::RSeq) {
                if status.is_provisional() && self.caller_100rel {
                    response.headers.push(HeaderName::RSeq, rseq.clone());
                }
            }
            response.body = from.body.clone();
        }
        Some(response)
    }

    /// [`Action::Respond`] with `response` to the caller's INVITE.
    fn answer_caller(&self, response: Response, out: &mut Vec<Action>) {
        out.push(Action::Respond {
            leg: Leg::Inbound,
            seq: self.invite_seq,
            method: Method::Invite,
            response,
        });
    }

    /// Final failure to the caller's INVITE, ending the inbound leg.
    fn reject_caller(
        &mut self,
        status: StatusCode,
        reason: FinishReason,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.caller != CallerState::Proceeding {
            return;
        }
        if let Some(response) = self.caller_response(status, None) {
            self.answer_caller(response, out);
        }
        self.caller = CallerState::Done;
        self.invite = None;
        self.finish(reason, status.as_u16(), now);
        self.enter_ending(now);
    }

    // ---- requests to the legs ----

    /// Our Via for request `seq` on `leg`, in the call's buffer.
    fn via(&mut self, leg: Leg, seq: u32) -> Bytes {
        let tp = match leg {
            Leg::Inbound => &self.inbound_tp,
            Leg::Outbound => &self.outbound_tp,
        };
        tp.put_via(&mut self.buf, self.id, leg, seq)
    }

    /// A request with CSeq number `seq` in the dialog of `leg`, with our
    /// Via (its values in the call's buffer).
    fn request_on(&mut self, leg: Leg, method: Method, seq: u32) -> Request {
        let via = self.via(leg, seq);
        let dialog = match leg {
            Leg::Inbound => &self.inbound,
            Leg::Outbound => &self.outbound,
        };
        dialog.request_in(method, seq, Some(via), &mut self.buf)
    }

    /// Our BYE `seq` on `leg` has its final response (or failed).
    fn bye_done(&mut self, leg: Leg, seq: u32) {
        if self.byes[leg.index()] == Some(seq) {
            self.byes[leg.index()] = None;
        }
    }

    fn bye(&mut self, leg: Leg, out: &mut Vec<Action>) {
        let seq = self.dialog(leg).next_seq();
        let request = self.request_on(leg, Method::Bye, seq);
        self.byes[leg.index()] = Some(seq);
        out.push(Action::Request { leg, seq, request });
        match leg {
            Leg::Inbound => self.caller = CallerState::Done,
            Leg::Outbound => self.callee = CalleeState::Done,
        }
    }

    /// ACK the callee's 2xx, with the body of `from_ack` (the caller's
    /// answer to a late offer) if any.
    fn ack_callee(&mut self, from_ack: Option<&Request>, now: Instant, out: &mut Vec<Action>) {
        if self.callee != CalleeState::Answered {
            return;
        }
        // A late answer (RFC 3264 offer in the 2xx) crosses with its type.
        let late = from_ack.filter(|a| !a.body.is_empty());
        self.ack_nonce = rand::random();
        let bytes = self.write_callee_ack(late);
        if late.is_some() {
            self.kept_acks.get_or_insert_with(Box::default).late = Some(bytes.clone());
        }
        out.push(Action::Ack {
            leg: Leg::Outbound,
            bytes,
        });
        self.ack_keep_deadline = self.since(now + 64 * self.settings_t1);
        self.callee = CalleeState::Confirmed;
    }

    /// The ACK of the callee's 2xx on the wire, with the body and
    /// Content-Type of `late` (the caller's ACK with an answer) if given.
    /// Written straight to bytes: the ACK goes to the transport as is.
    fn write_callee_ack(&self, late: Option<&Request>) -> Bytes {
        let empty = Bytes::new();
        let body = late.map_or(&empty, |a| &a.body);
        let tp = &self.outbound_tp;
        let content_type = late.and_then(|a| a.headers.get(&HeaderName::ContentType));
        let fields = [
            (HeaderName::Contact, &tp.contact),
            (HeaderName::ContentType, content_type.unwrap_or(&empty)),
        ];
        let extra = &fields[..1 + usize::from(content_type.is_some())];
        let (call, seq, nonce) = (self.id, self.out_invite_seq, self.ack_nonce);
        let mut ack = BytesMut::with_capacity(self.outbound.request_len(tp.via_len(), extra, body));
        self.outbound.write_request(
            &Method::Ack,
            seq,
            |b| tp.write_via_with(b, call, Leg::Outbound, seq, nonce),
            extra,
            body,
            &mut ack,
        );
        ack.freeze()
    }

    /// Ends the wait for the ACK of a relayed re-INVITE's 2xx: stops our
    /// 2xx retransmissions and ACKs the other leg's 2xx, with the body of
    /// `from_ack` (a late answer) if any. Without `from_ack` (the call is
    /// being hung up) the other leg still gets its ACK (RFC 3261 §13.2.2.4).
    fn ack_reinvite(&mut self, from_ack: Option<&Request>, now: Instant, out: &mut Vec<Action>) {
        let Some(ra) = self.reinvite_ack.take() else {
            return;
        };
        let to = ra.from.other();
        let mut ack = self.request_on(to, Method::Ack, ra.to_seq);
        if let Some(a) = from_ack.filter(|a| !a.body.is_empty()) {
            if let Some(ct) = a.headers.get(&HeaderName::ContentType) {
                ack.headers.push(HeaderName::ContentType, ct.clone());
            }
            ack.body = a.body.clone();
        }
        let bytes = ack.to_bytes();
        out.push(Action::Ack {
            leg: to,
            bytes: bytes.clone(),
        });
        self.reinvite_ack_sent = Some(Box::new(SentAck {
            leg: to,
            seq: ra.to_seq,
            ack: bytes,
            keep_until: now + 64 * self.settings_t1,
        }));
    }

    /// CANCEL our INVITE (RFC 3261 §9.1): same Request-URI, Call-ID, From,
    /// To, CSeq number and top Via; deferred until a provisional response.
    fn cancel_callee(&mut self, out: &mut Vec<Action>) {
        if self.callee != CalleeState::Calling
            || matches!(self.cancel, Cancel::Sent | Cancel::Unsendable)
        {
            return;
        }
        if !self.provisional_seen {
            self.cancel = Cancel::Pending;
            return;
        }
        let Some(invite) = self.out_invite.as_ref() else {
            return;
        };
        let uri = match invite.uri() {
            Ok(uri) => uri,
            Err(e) => {
                tracing::error!(call = self.id, error = %e, "CANCEL not sent");
                self.cancel = Cancel::Unsendable;
                return;
            }
        };
        let mut cancel = Request::new(Method::Cancel, uri);
        let h = &mut cancel.headers;
        *h = crate::sip::Headers::with_capacity(6);
        h.push(HeaderName::Via, invite.via.clone());
        h.push(HeaderName::From, self.outbound.local_header());
        h.push(HeaderName::To, invite.to.clone());
        h.push(HeaderName::CallId, self.outbound.call_id_bytes());
        h.push(
            HeaderName::CSeq,
            cseq_value(self.out_invite_seq, &Method::Cancel),
        );
        h.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
        out.push(Action::Request {
            leg: Leg::Outbound,
            seq: self.out_invite_seq,
            request: cancel,
        });
        self.cancel = Cancel::Sent;
    }

    /// End an established call from our side (max duration, missing ACK):
    /// ACK the callee if needed, BYE both legs.
    fn hang_up_both(&mut self, reason: FinishReason, now: Instant, out: &mut Vec<Action>) {
        self.ack_callee(None, now, out);
        self.ack_reinvite(None, now, out);
        self.callee_ok = None;
        self.retx_deadline = Since::NONE;
        self.ack_deadline = Since::NONE;
        if matches!(self.caller, CallerState::Answered | CallerState::Confirmed) {
            self.bye(Leg::Inbound, out);
        }
        if self.callee == CalleeState::Confirmed {
            self.bye(Leg::Outbound, out);
        }
        self.finish(reason, 200, now);
        self.enter_ending(now);
    }

    // ---- inputs ----

    /// A request received on `leg` that belongs to this call.
    pub fn on_request(&mut self, leg: Leg, request: Request, now: Instant, out: &mut Vec<Action>) {
        if leg == Leg::Outbound && !self.in_callee_dialog(&request) {
            // Another fork's dialog (its 2xx was ACKed and BYEd, e.g. its
            // BYE crossing ours): none of the call's (RFC 3261 §12.2.2,
            // 481; an ACK gets no answer).
            if request.method != Method::Ack {
                let response =
                    Response::for_request(&request, StatusCode::CALL_OR_TRANSACTION_DOES_NOT_EXIST);
                answer(leg, &request, response, out);
            }
            return;
        }
        match request.method {
            Method::Ack => self.on_ack(leg, &request, now, out),
            Method::Cancel => self.on_cancel(leg, &request, now, out),
            Method::Bye => self.on_bye(leg, &request, now, out),
            Method::Options => {
                let mut response = Response::for_request(&request, StatusCode::OK);
                response
                    .headers
                    .push(HeaderName::Allow, Bytes::from_static(super::ALLOW));
                answer(leg, &request, response, out);
            }
            Method::Invite
            | Method::Update
            | Method::Info
            | Method::Prack
            | Method::Message
            | Method::Notify => self.relay_request(leg, request, out),
            _ => {
                let mut response = Response::for_request(&request, StatusCode::NOT_IMPLEMENTED);
                response
                    .headers
                    .push(HeaderName::Allow, Bytes::from_static(super::ALLOW));
                answer(leg, &request, response, out);
            }
        }
    }

    /// Whether a request from the callee's side is in the call's dialog
    /// with the callee, by its From tag (RFC 3261 §12.2.2: a dialog is
    /// its Call-ID and both tags; the shell found the call by Call-ID and
    /// our tag). Only a confirmed dialog is told from other forks': in
    /// the early state, requests of every fork's early dialog are the
    /// caller's one early dialog (see docs/architecture.md, "A forking
    /// callee").
    fn in_callee_dialog(&self, request: &Request) -> bool {
        let ours = self.outbound.remote_tag();
        if self.outbound.state() != DialogState::Confirmed || ours.is_empty() {
            return true;
        }
        match request.headers.get(&HeaderName::From).map(NameAddr::tag_of) {
            Some(Some(Some(tag))) => tag == ours,
            // No From tag or none that reads: not another fork's dialog
            // either; the request's own checks answer it.
            _ => true,
        }
    }

    fn on_ack(&mut self, leg: Leg, ack: &Request, now: Instant, out: &mut Vec<Action>) {
        let Ok(seq) = ack.cseq().map(|c| c.seq) else {
            return;
        };
        if leg == Leg::Inbound && self.caller == CallerState::Answered && seq == self.invite_seq {
            self.caller = CallerState::Confirmed;
            self.callee_ok = None;
            self.retx_deadline = Since::NONE;
            self.ack_deadline = Since::NONE;
            self.invite = None;
            self.ack_callee(Some(ack), now, out);
            return;
        }
        if self
            .reinvite_ack
            .as_ref()
            .is_some_and(|ra| ra.from == leg && ra.from_seq == seq)
        {
            self.ack_reinvite(Some(ack), now, out);
        }
        // Anything else is a retransmitted ACK: nothing to do.
    }

    fn on_cancel(&mut self, leg: Leg, cancel: &Request, now: Instant, out: &mut Vec<Action>) {
        let mut ok = Response::for_request(cancel, StatusCode::OK);
        if leg == Leg::Inbound {
            ok.set_to_tag(self.inbound.local_tag());
        }
        answer(leg, cancel, ok, out);
        if leg == Leg::Inbound && self.caller == CallerState::Proceeding {
            self.reject_caller(
                StatusCode::REQUEST_TERMINATED,
                FinishReason::CallerHangup,
                now,
                out,
            );
            self.cancel_callee(out);
        }
    }

    fn on_bye(&mut self, leg: Leg, bye: &Request, now: Instant, out: &mut Vec<Action>) {
        let in_dialog = match leg {
            Leg::Inbound => self.caller != CallerState::Done,
            Leg::Outbound => matches!(self.callee, CalleeState::Answered | CalleeState::Confirmed),
        };
        if !in_dialog {
            let response =
                Response::for_request(bye, StatusCode::CALL_OR_TRANSACTION_DOES_NOT_EXIST);
            answer(leg, bye, response, out);
            return;
        }
        answer(leg, bye, Response::for_request(bye, StatusCode::OK), out);
        if leg == Leg::Inbound && self.caller == CallerState::Proceeding {
            // BYE on the early dialog (RFC 3261 §15): like a CANCEL.
            self.reject_caller(
                StatusCode::REQUEST_TERMINATED,
                FinishReason::CallerHangup,
                now,
                out,
            );
            self.cancel_callee(out);
            return;
        }
        match leg {
            Leg::Inbound => self.caller = CallerState::Done,
            Leg::Outbound => self.callee = CalleeState::Done,
        }
        self.callee_ok = None;
        self.retx_deadline = Since::NONE;
        self.ack_deadline = Since::NONE;
        self.finish(FinishReason::Answered, 200, now);
        // The callee may still wait for our ACK, of its 2xx to our INVITE or
        // to a relayed re-INVITE.
        if leg == Leg::Inbound {
            self.ack_callee(None, now, out);
        }
        self.ack_reinvite(None, now, out);
        let other = leg.other();
        let other_up = match other {
            Leg::Inbound => matches!(self.caller, CallerState::Answered | CallerState::Confirmed),
            Leg::Outbound => matches!(self.callee, CalleeState::Answered | CalleeState::Confirmed),
        };
        if other_up {
            if other == Leg::Outbound {
                self.ack_callee(None, now, out);
            }
            self.bye(other, out);
        }
        self.enter_ending(now);
    }

    fn relay_request(&mut self, leg: Leg, request: Request, out: &mut Vec<Action>) {
        let to = leg.other();
        let respond = |status: StatusCode, out: &mut Vec<Action>| {
            answer(leg, &request, Response::for_request(&request, status), out);
        };
        // Requests in our dialogs need the other leg's dialog to exist.
        let other_ready = match to {
            Leg::Inbound => self.caller != CallerState::Done,
            Leg::Outbound => {
                self.callee != CalleeState::Done && self.outbound.state() != DialogState::Initial
            }
        };
        let this_up = match leg {
            Leg::Inbound => self.caller != CallerState::Done,
            Leg::Outbound => self.callee != CalleeState::Done,
        };
        if !other_ready || !this_up {
            respond(StatusCode::CALL_OR_TRANSACTION_DOES_NOT_EXIST, out);
            return;
        }
        if request.method == Method::Invite
            && (self
                .relays
                .iter()
                .any(|r| r.request.method == Method::Invite)
                || self.caller == CallerState::Proceeding
                || self.reinvite_ack.is_some())
        {
            // RFC 3261 §14.2: an INVITE while one is pending on the dialog.
            respond(StatusCode::REQUEST_PENDING, out);
            return;
        }
        if let Err(e) = self.dialog(leg).on_remote_request(&request) {
            tracing::debug!(error = %e, "in-dialog request rejected");
            respond(StatusCode::SERVER_INTERNAL_ERROR, out);
            return;
        }
        let method = request.method.clone();
        let to_seq = self.dialog(to).next_seq();
        let mut fwd = self.request_on(to, method.clone(), to_seq);
        if matches!(method, Method::Invite | Method::Update) {
            fwd.headers
                .push(HeaderName::Contact, self.transport(to).contact.clone());
        }
        if method == Method::Prack {
            // RAck names the INVITE of the leg the PRACK goes to (RFC 3262 §7.2).
            match request.rack() {
                Ok(Some(rack)) => {
                    let invite_seq = match to {
                        Leg::Outbound => self.out_invite_seq,
                        Leg::Inbound => self.invite_seq,
                    };
                    fwd.headers.push(
                        HeaderName::RAck,
                        Bytes::from(format!("{} {} INVITE", rack.rseq, invite_seq)),
                    );
                }
                _ => {
                    respond(StatusCode::BAD_REQUEST, out);
                    return;
                }
            }
        }
        copy_end_to_end(&request.headers, &mut fwd.headers);
        fwd.body = request.body.clone();
        self.relays.push(Relay {
            from: leg,
            request,
            to_seq,
        });
        out.push(Action::Request {
            leg: to,
            seq: to_seq,
            request: fwd,
        });
    }

    /// A response to one of our client transactions on `leg`.
    pub fn on_response(
        &mut self,
        leg: Leg,
        response: Response,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Ok(cseq) = response.cseq() else { return };
        match cseq.method {
            Method::Invite if leg == Leg::Outbound && cseq.seq == self.out_invite_seq => {
                self.on_invite_response(response, now, out)
            }
            Method::Bye => {
                if response.status.as_u16() >= 200 {
                    self.bye_done(leg, cseq.seq);
                }
            }
            Method::Cancel => {}
            _ => self.on_relay_response(leg, cseq.seq, &cseq.method, response, now, out),
        }
    }

    /// A client transaction of ours failed without a final response
    /// (timeout or transport error): treated as a 408 from that leg.
    pub fn on_request_failed(
        &mut self,
        leg: Leg,
        method: &Method,
        seq: u32,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        match method {
            Method::Invite if leg == Leg::Outbound && seq == self.out_invite_seq => {
                self.on_invite_failure(StatusCode::REQUEST_TIMEOUT, now, out);
            }
            Method::Bye => self.bye_done(leg, seq),
            Method::Cancel => {}
            _ => {
                if let Some(i) = self
                    .relays
                    .iter()
                    .position(|r| r.to_seq == seq && r.from == leg.other())
                {
                    let relay = self.relays.swap_remove(i);
                    let response =
                        Response::for_request(&relay.request, StatusCode::REQUEST_TIMEOUT);
                    answer(relay.from, &relay.request, response, out);
                }
            }
        }
    }

    fn on_invite_response(&mut self, response: Response, now: Instant, out: &mut Vec<Action>) {
        let status = response.status;
        if status.is_success() {
            return self.on_invite_success(response, now, out);
        }
        if self.callee != CalleeState::Calling {
            return;
        }
        if status.is_provisional() {
            self.provisional_seen = true;
            if self.cancel == Cancel::Pending {
                self.cancel_callee(out);
            }
            if status.as_u16() == 100 {
                // Hop by hop: not relayed.
                return;
            }
            if let Err(e) = self.outbound.on_uac_response_in(&response, &mut self.buf) {
                tracing::debug!(error = %e, "provisional response ignored");
                return;
            }
            if self.caller == CallerState::Proceeding {
                let reliable = response.headers.contains(&HeaderName::RSeq);
                if reliable && !self.caller_100rel {
                    // The callee demands PRACK from a caller that cannot send it:
                    // skip the relay rather than break the caller.
                    return;
                }
                if let Some(r) = self.caller_response(status, Some(&response)) {
                    self.answer_caller(r, out);
                }
            }
            return;
        }
        if matches!(status.as_u16(), 401 | 407) && self.retry_with_credentials(&response, out) {
            return;
        }
        self.callee_status = Some(status.as_u16());
        self.on_invite_failure(status, now, out);
    }

    /// Answers the callee's 401/407 by sending the INVITE again with
    /// credentials (RFC 3261 §22.2): same Call-ID and tags, next CSeq, new
    /// branch. Once only: a second challenge is a failure.
    fn retry_with_credentials(&mut self, challenge: &Response, out: &mut Vec<Action>) -> bool {
        let (Some(creds), Some(invite)) = (self.credentials.clone(), self.out_invite.as_ref())
        else {
            return false;
        };
        if self.auth_attempts > 0
            || self.caller != CallerState::Proceeding
            || self.cancel != Cancel::None
        {
            return false;
        }
        let proxy = challenge.status.as_u16() == 407;
        let challenges = if proxy {
            challenge.proxy_authenticate()
        } else {
            challenge.www_authenticate()
        };
        let request_uri = match invite.uri() {
            Ok(uri) => uri,
            Err(e) => {
                tracing::error!(call = self.id, error = %e, "INVITE not resent with credentials");
                return false;
            }
        };
        let uri = request_uri.to_text();
        let cnonce = ids::tag();
        let Some(value) = challenges
            .unwrap_or_default()
            .iter()
            .find_map(|c| auth::answer(c, &creds, &Method::Invite, &uri, &cnonce))
        else {
            return false;
        };
        let name = if proxy {
            HeaderName::ProxyAuthorization
        } else {
            HeaderName::Authorization
        };
        let seq = self.outbound.next_seq();
        let via = self.via(Leg::Outbound, seq);
        let (Some(sent), Some(caller_invite)) = (self.out_invite.as_mut(), self.invite.as_ref())
        else {
            return false;
        };
        sent.via = via;
        let retry = sent.request(
            request_uri,
            &self.outbound,
            caller_invite,
            &self.outbound_tp.contact,
            seq,
            Some((name, Bytes::from(value))),
            &mut self.buf,
        );
        self.auth_attempts += 1;
        self.out_invite_seq = seq;
        self.provisional_seen = false;
        out.push(Action::Request {
            leg: Leg::Outbound,
            seq,
            request: retry,
        });
        true
    }

    fn on_invite_failure(&mut self, status: StatusCode, now: Instant, out: &mut Vec<Action>) {
        if self.callee != CalleeState::Calling {
            return;
        }
        self.callee = CalleeState::Done;
        self.out_invite = None;
        if self.caller == CallerState::Proceeding {
            let (to_caller, reason) = failure_for_status(status);
            self.reject_caller(to_caller, reason, now, out);
        }
        self.enter_ending(now);
    }

    fn on_invite_success(&mut self, response: Response, now: Instant, out: &mut Vec<Action>) {
        if self.callee != CalleeState::Calling {
            let tag = response
                .headers
                .get(&HeaderName::To)
                .and_then(NameAddr::tag_of);
            match tag {
                Some(Some(tag)) if tag != self.outbound.remote_tag() => {
                    return self.on_other_fork_2xx(tag, &response, out);
                }
                Some(Some(_)) => {}
                // No tag to tell its dialog by: the callee's dialog may be
                // the one without a tag (a 2xx whose To did not read).
                _ if self.outbound.remote_tag().is_empty() => {}
                _ => {
                    tracing::debug!(
                        call = self.id,
                        "2xx of another fork without a To tag ignored"
                    );
                    return;
                }
            }
        }
        match self.callee {
            CalleeState::Calling => {}
            CalleeState::Confirmed | CalleeState::Done => {
                // A retransmitted 2xx: our ACK got lost. ACKed again even
                // after our BYE (RFC 3261 §13.2.2.4: every 2xx is ACKed), or
                // a callee that lost the ACK never takes the BYE in.
                if self.ack_keep_deadline.is_some() {
                    let late = self.kept_acks.as_ref().and_then(|k| k.late.clone());
                    let bytes = late.unwrap_or_else(|| self.write_callee_ack(None));
                    out.push(Action::Ack {
                        leg: Leg::Outbound,
                        bytes,
                    });
                }
                return;
            }
            CalleeState::Answered => return,
        }
        if let Err(e) = self.outbound.on_uac_response_in(&response, &mut self.buf) {
            tracing::debug!(error = %e, "2xx without a usable To tag");
        }
        self.callee_status = Some(response.status.as_u16());
        self.callee = CalleeState::Answered;
        self.out_invite = None;
        self.dial_deadline = Since::NONE;
        if self.caller != CallerState::Proceeding {
            // The CANCEL/200 race (RFC 3261 §9.1): the caller already has its
            // 487; ACK and BYE the callee.
            self.ack_callee(None, now, out);
            self.bye(Leg::Outbound, out);
            self.enter_ending(now);
            return;
        }
        let Some(ok) = self.caller_response(response.status, Some(&response)) else {
            return;
        };
        self.answer_caller(ok, out);
        self.caller = CallerState::Answered;
        self.answered_at = self.since(now);
        if !self.inbound_tp.reliable {
            self.callee_ok = Some(Box::new(response));
            self.retx_interval = self.settings_t1;
            self.retx_deadline = self.since(now + self.settings_t1);
        }
        self.ack_deadline = self.since(now + 64 * self.settings_t1);
        self.max_deadline = self
            .max_duration
            .map_or(Since::NONE, |d| self.since(now + d));
    }

    fn on_relay_response(
        &mut self,
        leg: Leg,
        seq: u32,
        method: &Method,
        response: Response,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(i) = self
            .relays
            .iter()
            .position(|r| r.to_seq == seq && r.from == leg.other() && r.request.method == *method)
        else {
            if response.status.is_success() && *method == Method::Invite {
                self.on_reinvite_2xx_again(leg, seq, out);
            }
            return;
        };
        let status = response.status;
        if status.as_u16() == 100 {
            return;
        }
        if status.is_success() && matches!(method, Method::Invite | Method::Update) {
            // Target refresh by the 2xx (RFC 3261 §12.2.1.2).
            self.dialog(leg).on_refresh_response(&response);
        }
        let relay = &self.relays[i];
        let from = relay.from;
        let Ok(from_cseq) = relay.request.cseq_ref() else {
            return;
        };
        let (from_seq, from_method) = (from_cseq.seq, from_cseq.method.clone());
        let mut back = Response::for_request(&relay.request, status);
        back.reason = response.reason.clone();
        if matches!(method, Method::Invite | Method::Update) && status.as_u16() < 300 {
            back.headers
                .push(HeaderName::Contact, self.transport(from).contact.clone());
        }
        copy_end_to_end(&response.headers, &mut back.headers);
        if let Some(rseq) = response.headers.get(&HeaderName::RSeq) {
            back.headers.push(HeaderName::RSeq, rseq.clone());
        }
        back.body = response.body.clone();
        if status.as_u16() >= 200 {
            let relay = self.relays.swap_remove(i);
            if status.is_success() && *method == Method::Invite {
                if let Ok(c) = relay.request.cseq() {
                    let t1 = self.settings_t1;
                    let unreliable = !self.transport(from).reliable;
                    self.reinvite_ack = Some(Box::new(ReinviteAck {
                        from,
                        from_seq: c.seq,
                        to_seq: seq,
                        ok: unreliable.then(|| Box::new(back.clone())),
                        retx_interval: t1,
                        retx_deadline: unreliable.then_some(now + t1),
                        ack_deadline: now + 64 * t1,
                    }));
                }
            }
        }
        out.push(Action::Respond {
            leg: from,
            seq: from_seq,
            method: from_method,
            response: back,
        });
    }

    /// A 2xx to our INVITE from another fork than the callee's dialog the
    /// call keeps (To tag `tag`), which came first: a dialog of its own,
    /// which the call does not want (RFC 3261 §13.2.2.4). It is ACKed in
    /// that dialog (its To tag, its Contact as the Request-URI, its
    /// Record-Route reversed as the route set), then ended with a BYE
    /// (§15); the caller sees nothing of it. Its retransmissions get the
    /// same ACK again, and no second BYE. The BYE's outcome is nothing to
    /// the call: it is not in `byes`, so its answer, or its failure, finds
    /// nothing to end ([`Call::bye_done`]). Beyond [`MAX_FORK_ACKS`] forks,
    /// a 2xx of a new one gets nothing.
    fn on_other_fork_2xx(&mut self, tag: ByteStr, response: &Response, out: &mut Vec<Action>) {
        if let Some(sent) = self
            .kept_acks
            .as_ref()
            .and_then(|k| k.forks.iter().find(|f| f.tag == tag))
        {
            out.push(Action::Ack {
                leg: Leg::Outbound,
                bytes: sent.ack.clone(),
            });
            return;
        }
        if self
            .kept_acks
            .as_ref()
            .is_some_and(|k| k.forks.len() >= MAX_FORK_ACKS)
        {
            tracing::debug!(call = self.id, fork = %tag, "2xx of one fork too many ignored");
            return;
        }
        let mut fork = self.outbound.for_other_fork();
        if let Err(e) = fork.on_uac_response_in(response, &mut BytesMut::new()) {
            // A Contact or Record-Route that does not parse is taken as
            // absent: the dialog is still set up, from its To.
            tracing::debug!(call = self.id, error = %e, "2xx of another fork");
        }
        if fork.state() != DialogState::Confirmed {
            return;
        }
        let tp = &self.outbound_tp;
        let (call, seq) = (self.id, self.out_invite_seq);
        let empty = Bytes::new();
        let extra = [(HeaderName::Contact, &tp.contact)];
        let mut ack = BytesMut::with_capacity(fork.request_len(tp.via_len(), &extra, &empty));
        fork.write_request(
            &Method::Ack,
            seq,
            |b| tp.write_via(b, call, Leg::Outbound, seq),
            &extra,
            &empty,
            &mut ack,
        );
        let ack = ack.freeze();
        out.push(Action::Ack {
            leg: Leg::Outbound,
            bytes: ack.clone(),
        });
        // A CSeq number of the call's dialog, so that the BYE's client
        // transaction (its branch and its answer's CSeq) is the call's
        // alone; above the INVITE's, as the fork's dialog wants.
        let bye_seq = self.outbound.next_seq();
        let via = self.via(Leg::Outbound, bye_seq);
        let bye = fork.request_in(Method::Bye, bye_seq, Some(via), &mut BytesMut::new());
        out.push(Action::Request {
            leg: Leg::Outbound,
            seq: bye_seq,
            request: bye,
        });
        tracing::debug!(call = self.id, fork = %tag, "2xx of another fork: ACK and BYE");
        let kept = self.kept_acks.get_or_insert_with(Box::default);
        kept.forks.push(ForkAck { tag, ack });
    }

    /// A 2xx again for the re-INVITE `seq` we relayed on `leg`: its sender
    /// did not get our ACK. Sent again once we have sent it; before that the
    /// ACK of the re-INVITE's sender is still awaited (and our own 2xx to it
    /// is on its retransmission timer).
    fn on_reinvite_2xx_again(&mut self, leg: Leg, seq: u32, out: &mut Vec<Action>) {
        if let Some(sent) = self
            .reinvite_ack_sent
            .as_ref()
            .filter(|s| s.leg == leg && s.seq == seq)
        {
            out.push(Action::Ack {
                leg,
                bytes: sent.ack.clone(),
            });
        }
    }

    /// Ends the call now (shutdown after the drain time): a caller still
    /// waiting gets 503 and the callee a CANCEL; an established call is hung
    /// up on both legs. The call is finished on return (the BYE and CANCEL
    /// transactions run on without it), so its CDR can be written at once.
    pub fn terminate(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.caller == CallerState::Proceeding {
            self.reject_caller(
                StatusCode::SERVICE_UNAVAILABLE,
                FinishReason::Error,
                now,
                out,
            );
            self.cancel_callee(out);
        } else if matches!(self.caller, CallerState::Answered | CallerState::Confirmed) {
            self.hang_up_both(FinishReason::Answered, now, out);
        }
        self.give_up();
    }

    /// Forgets every open exchange: the call counts as finished.
    fn give_up(&mut self) {
        self.caller = CallerState::Done;
        self.callee = CalleeState::Done;
        self.byes = [None; 2];
        self.relays.clear();
        self.dial_deadline = Since::NONE;
        self.max_deadline = Since::NONE;
        self.retx_deadline = Since::NONE;
        self.ack_deadline = Since::NONE;
        self.guard_deadline = Since::NONE;
        self.ack_keep_deadline = Since::NONE;
        self.reinvite_ack = None;
        self.reinvite_ack_sent = None;
    }

    /// Runs the timers whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.due(self.dial_deadline, now) {
            self.dial_deadline = Since::NONE;
            if self.caller == CallerState::Proceeding && self.callee == CalleeState::Calling {
                self.reject_caller(
                    StatusCode::TEMPORARILY_UNAVAILABLE,
                    FinishReason::NoAnswer,
                    now,
                    out,
                );
                self.cancel_callee(out);
            }
        }
        if self.due(self.retx_deadline, now) {
            self.retx_deadline = Since::NONE;
            let again = match (self.caller, &self.callee_ok) {
                (CallerState::Answered, Some(ok)) => self.caller_response(ok.status, Some(ok)),
                _ => None,
            };
            if let Some(response) = again {
                out.push(Action::Retransmit {
                    leg: Leg::Inbound,
                    seq: self.invite_seq,
                    response,
                });
                self.retx_interval = (self.retx_interval * 2).min(self.settings_t2);
                self.retx_deadline = self.since(now + self.retx_interval);
            }
        }
        if self.due(self.ack_deadline, now) {
            self.ack_deadline = Since::NONE;
            if self.caller == CallerState::Answered {
                // No ACK within 64*T1 (RFC 3261 §13.3.1.4): end the call.
                self.hang_up_both(FinishReason::Error, now, out);
            }
        }
        if self.due(self.ack_keep_deadline, now) {
            self.ack_keep_deadline = Since::NONE;
            self.kept_acks = None;
        }
        self.reinvite_timers(now, out);
        if self.due(self.max_deadline, now) {
            self.max_deadline = Since::NONE;
            self.hang_up_both(FinishReason::Answered, now, out);
        }
        if self.due(self.guard_deadline, now) {
            self.guard_deadline = Since::NONE;
            // Give up on whatever is still open.
            if self.caller == CallerState::Proceeding {
                self.reject_caller(
                    StatusCode::SERVER_INTERNAL_ERROR,
                    FinishReason::Error,
                    now,
                    out,
                );
            }
            self.give_up();
        }
    }
}

impl Call {
    /// The timers of a relayed re-INVITE's 2xx (see [`ReinviteAck`]) and of
    /// the ACK we keep for its retransmissions.
    fn reinvite_timers(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self
            .reinvite_ack_sent
            .as_ref()
            .is_some_and(|s| s.keep_until <= now)
        {
            self.reinvite_ack_sent = None;
        }
        let t2 = self.settings_t2;
        let Some(ra) = self.reinvite_ack.as_mut() else {
            return;
        };
        if ra.ack_deadline <= now {
            // No ACK within 64*T1 (RFC 3261 §13.3.1.4): the session is
            // ended with BYE; the other leg's 2xx is ACKed first. The call
            // was answered, so that is how it ends.
            self.hang_up_both(FinishReason::Answered, now, out);
            return;
        }
        if ra.retx_deadline.is_some_and(|d| d <= now) {
            if let Some(ok) = &ra.ok {
                out.push(Action::Retransmit {
                    leg: ra.from,
                    seq: ra.from_seq,
                    response: (**ok).clone(),
                });
            }
            ra.retx_interval = (ra.retx_interval * 2).min(t2);
            ra.retx_deadline = Some(now + ra.retx_interval);
        }
    }
}

/// The ACK and the BYE for a 2xx to an INVITE of ours that no call owns any
/// more (RFC 3261 §13.2.2.4: every 2xx is ACKed; a UA that does not want the
/// session then sends BYE), built from the response alone: Request-URI from
/// its Contact, Route from its Record-Route reversed. Without Via: the
/// caller adds its own. `None` for anything but a 2xx to INVITE with a To tag.
pub fn ack_and_bye_for_stray_2xx(response: &Response) -> Option<(Request, Request)> {
    if !response.status.is_success() {
        return None;
    }
    let cseq = response.cseq().ok()?;
    if cseq.method != Method::Invite {
        return None;
    }
    let to = response.to().ok()?;
    to.tag()?;
    let target = match response.contacts().ok().flatten() {
        Some(crate::sip::Contact::Addrs(a)) => a.into_iter().next().map(|a| a.uri),
        _ => None,
    }
    .unwrap_or(to.uri);
    let mut routes = response.record_route().ok()?;
    routes.reverse();
    let h = &response.headers;
    let (from, to_raw, call_id) = (
        h.get(&HeaderName::From)?,
        h.get(&HeaderName::To)?,
        h.get(&HeaderName::CallId)?,
    );
    let build = |method: Method, seq: u32| {
        let mut r = Request::new(method.clone(), target.clone());
        for route in &routes {
            r.headers
                .push(HeaderName::Route, Bytes::from(route.to_string()));
        }
        r.headers.push(HeaderName::From, from.clone());
        r.headers.push(HeaderName::To, to_raw.clone());
        r.headers.push(HeaderName::CallId, call_id.clone());
        r.headers.push(HeaderName::CSeq, cseq_value(seq, &method));
        r.headers
            .push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
        r
    };
    Some((
        build(Method::Ack, cseq.seq),
        build(Method::Bye, cseq.seq.wrapping_add(1)),
    ))
}

/// Room in the call's buffer for the caller's From URI as written again
/// (its From's length: the URI is inside it, and is written as parsed).
fn caller_uri_len(invite: &Request) -> usize {
    invite.headers.get(&HeaderName::From).map_or(0, Bytes::len)
}

/// Our tag for `leg` of call `id` ([`ids::tag_for`]), written into `out`
/// (through `buf`, whose content is left as it was).
fn tag_text<'a>(buf: &mut BytesMut, id: u64, leg: Leg, out: &'a mut [u8; ids::TAG_LEN]) -> &'a str {
    let start = buf.len();
    ids::put_tag_for(buf, id, leg);
    let len = (buf.len() - start).min(ids::TAG_LEN);
    out[..len].copy_from_slice(&buf[start..start + len]);
    buf.truncate(start);
    // Hex digits and a letter.
    std::str::from_utf8(&out[..len]).unwrap_or_default()
}

/// Room in the call's buffer for the To of the outbound INVITE (`<` URI
/// `>`); a longer one takes a new buffer.
const URI_ROOM: usize = 64;

/// Room in the call's buffer for what the callee's answers make the
/// outbound dialog keep (its To with tag, its Contact).
const CALLEE_ROOM: usize = 128;

/// The caller's user part for [`put_caller_id`].
fn caller_user(from: &NameAddr) -> &str {
    match &from.uri {
        Uri::Sip(u) => u.user.as_deref(),
        Uri::Tel(t) => Some(&*t.number),
        _ => None,
    }
    .unwrap_or("anonymous")
}

/// What [`put_caller_id`] writes at most.
fn caller_id_len(from: &NameAddr, host: &str) -> usize {
    from.display_name.as_deref().map_or(0, str::len) + caller_user(from).len() + host.len() + 16
}

/// Writes the From of the outbound INVITE into `out`: the caller's display
/// name and user (caller ID) at our host, without the caller's tag or
/// parameters.
fn put_caller_id(out: &mut BytesMut, from: &NameAddr, host: &str) {
    let user = caller_user(from);
    let display = from.display_name.as_deref().filter(|d| !d.is_empty());
    let bracket = host.contains(':') && !host.starts_with('[');
    if let Some(d) = display {
        // The display name is kept as written inside its quotes (escapes
        // included), so it can be quoted again as is.
        out.put_u8(b'"');
        out.put_slice(d.as_bytes());
        out.put_slice(b"\" ");
    }
    out.put_slice(b"<sip:");
    out.put_slice(user.as_bytes());
    out.put_u8(b'@');
    if bracket {
        out.put_u8(b'[');
    }
    out.put_slice(host.as_bytes());
    if bracket {
        out.put_u8(b']');
    }
    out.put_u8(b'>');
}

#[cfg(test)]
mod tests;
