//! Dialogs (RFC 3261 §12): the peer-to-peer state one leg of a call keeps
//! between an INVITE and the BYE that ends it.
//!
//! A [`Dialog`] owns the dialog identifiers (Call-ID, local and remote tag),
//! the local and remote CSeq numbers, the remote target and the route set,
//! and builds the in-dialog requests (BYE, re-INVITE, UPDATE, INFO, PRACK,
//! ACK for a 2xx) of RFC 3261 §12.2.1.1. It is pure: no I/O and no clock.
//! It does not add a Via (that needs the transport and a fresh branch) nor a
//! Contact: the B2BUA adds both, since they depend on the leg's transport.
//!
//! The dialog's strings (Call-ID, tags, the From/To values of our requests,
//! the peer's Contact) are kept as raw bytes in one text, copied once when
//! the dialog is set up (so the received datagram is not kept alive for the
//! whole call), with 4-byte offsets; building a request copies no text.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::sip::{
    ByteStr, HeaderError, HeaderName, Headers, Method, NameAddr, Request, Response, Uri,
};

/// Why a message could not set up or update a dialog.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DialogError {
    /// A header the dialog needs is missing or malformed.
    #[error("dialog header: {0}")]
    Header(#[from] HeaderError),
    /// The remote party's To of a 2xx (UAC) carries no tag.
    #[error("the remote party's {0} header has no tag")]
    MissingTag(&'static str),
    /// A request with a CSeq lower than or equal to the last one seen
    /// (RFC 3261 §12.2.2: answer 500).
    #[error("CSeq {got} is not above the last remote CSeq {last}")]
    CSeqOutOfOrder {
        /// CSeq number of the request.
        got: u32,
        /// Highest CSeq number seen from the remote party.
        last: u32,
    },
}

/// Identifies a dialog (RFC 3261 §12): Call-ID plus local and remote tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID of the dialog.
    pub call_id: ByteStr,
    /// Our tag (From of our requests).
    pub local_tag: ByteStr,
    /// The peer's tag; empty while a UAC dialog has no response with a tag.
    pub remote_tag: ByteStr,
}

/// Dialog state (RFC 3261 §12): early after a 1xx with a To tag, confirmed
/// after a 2xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogState {
    /// A UAC dialog whose INVITE has no response with a tag yet.
    Initial,
    /// Created by a provisional response.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
}

/// The pieces of a dialog's text ([`Dialog`]), in their order in it.
const CALL_ID: usize = 0;
const LOCAL_TAG: usize = 1;
const REMOTE_TAG: usize = 2;
/// From of our requests (with our tag).
const LOCAL_HEADER: usize = 3;
/// To of our requests (with the remote tag once known).
const REMOTE_HEADER: usize = 4;
/// The peer's Contact value, the remote target's text (empty: none).
const REMOTE_CONTACT: usize = 5;
const PIECES: usize = 6;

/// One dialog, seen from our side.
///
/// Its strings (Call-ID, both tags, From and To of our requests, the
/// peer's Contact) are one text, piece after piece, with where each piece
/// ends: one handle on the call's buffer and 4 bytes per string, instead
/// of a handle of 32 bytes per string. The remote target is kept as the
/// Contact's text and parsed when a request needs it (a dialog is read
/// again, cold, at the call's BYE; the fewer cache lines it spans, the
/// better: docs/performance.md, "Session 10").
#[derive(Clone, Debug)]
pub struct Dialog {
    /// The pieces ([`CALL_ID`] ... [`REMOTE_CONTACT`]), one after the other.
    text: Bytes,
    /// Where each piece of `text` ends (it starts where the one before
    /// ends).
    ends: [u32; PIECES],
    local_seq: u32,
    remote_seq: Option<u32>,
    /// Route set in the order the Route headers of our requests list it,
    /// each with its text (the Route value), written once.
    route_set: Box<[RouteEntry]>,
    state: DialogState,
    /// The remote Contact is one `<URI>` and nothing else, a URI that
    /// parses (see [`bare_contact_uri`]): the text between the brackets is
    /// the remote target as written, and a request written to bytes copies
    /// it instead of writing the URI again. Set from a response or a
    /// target refresh (a UAS dialog's first Contact is read in full, when
    /// needed).
    bare_contact: bool,
}

/// What [`Dialog::new_uac_in`] finds written at the start of its buffer:
/// the lengths of the dialog's Call-ID, our tag, our From (with that tag)
/// and To, one after the other.
#[derive(Clone, Copy, Debug)]
pub struct UacText {
    /// Length of the Call-ID.
    pub call_id: usize,
    /// Length of our tag.
    pub local_tag: usize,
    /// Length of our From value, tag included.
    pub local_header: usize,
    /// Length of the To value.
    pub remote_header: usize,
}

/// Writes a dialog's text into a buffer, piece by piece in their order.
struct TextWriter<'a> {
    buf: &'a mut BytesMut,
    start: usize,
    ends: [u32; PIECES],
    next: usize,
}

impl<'a> TextWriter<'a> {
    fn new(buf: &'a mut BytesMut) -> Self {
        let start = buf.len();
        TextWriter {
            buf,
            start,
            ends: [0; PIECES],
            next: 0,
        }
    }

    /// Appends to the current piece.
    fn put(&mut self, part: &[u8]) {
        self.buf.put_slice(part);
    }

    /// Ends the current piece: what was put since the one before.
    fn end(&mut self) {
        // A dialog's text is a few header values of one message: far
        // below 4 GiB.
        let at = u32::try_from(self.buf.len() - self.start).unwrap_or(u32::MAX);
        if let Some(end) = self.ends.get_mut(self.next) {
            *end = at;
        }
        self.next += 1;
    }

    /// One whole piece.
    fn piece(&mut self, value: &[u8]) {
        self.put(value);
        self.end();
    }

    /// The text, split off the buffer (with whatever the buffer held
    /// before it, which no one keeps: callers split what they keep), and
    /// where its pieces end.
    fn finish(self) -> (Bytes, [u32; PIECES]) {
        let text = self.buf.split().freeze().slice(self.start..);
        (text, self.ends)
    }
}

impl Dialog {
    /// The UAS side of a dialog created by `request` (an INVITE) answered
    /// with `local_tag` (RFC 3261 §12.1.1): remote target from Contact
    /// (parsed on use, see [`Dialog::remote_target`]), route set from
    /// Record-Route in order, remote CSeq from the request.
    pub fn new_uas(request: &Request, local_tag: ByteStr) -> Result<Dialog, DialogError> {
        Dialog::new_uas_from(request, &request.from()?, local_tag)
    }

    /// [`Dialog::new_uas`] with the request's From already parsed.
    pub fn new_uas_from(
        request: &Request,
        from: &NameAddr,
        local_tag: ByteStr,
    ) -> Result<Dialog, DialogError> {
        Dialog::new_uas_in(request, from, &local_tag, &mut BytesMut::new())
    }

    /// [`Dialog::new_uas_from`] with the dialog's text (Call-ID, tags,
    /// From, To, Contact; copies, so that the received datagram is not
    /// kept alive) written into `buf` and split off it, so that it shares
    /// one allocation with whatever else the caller keeps there (see
    /// [`Dialog::uas_len`] for the room it takes).
    pub fn new_uas_in(
        request: &Request,
        from: &NameAddr,
        local_tag: &str,
        buf: &mut BytesMut,
    ) -> Result<Dialog, DialogError> {
        let call_id = request.call_id()?;
        let remote_seq = request.cseq()?.seq;
        let route_set = own_routes(request.record_route()?);
        let raw = |name: HeaderName| request.headers.get(&name).map_or(&[][..], |v| &v[..]);
        // The remote target is parsed from the copy only when a request
        // goes to the caller (many calls never send one): the daemon's
        // validator has checked every Contact of the request already.
        let contact = Some(raw(HeaderName::Contact)).filter(|raw| raw.trim_ascii() != b"*");
        let mut w = TextWriter::new(buf);
        w.piece(call_id.as_bytes());
        w.piece(local_tag.as_bytes());
        // RFC 3261 §12.1.1: a From without tag (RFC 2543) is a null tag.
        w.piece(from.tag().unwrap_or_default().as_bytes());
        w.put(raw(HeaderName::To));
        w.put(b";tag=");
        w.put(local_tag.as_bytes());
        w.end();
        w.piece(raw(HeaderName::From));
        w.piece(contact.unwrap_or_default());
        let (text, ends) = w.finish();
        Ok(Dialog {
            text,
            ends,
            local_seq: 0,
            remote_seq: Some(remote_seq),
            route_set,
            state: DialogState::Confirmed,
            bare_contact: false,
        })
    }

    /// The UAC side of a dialog we are about to create with an INVITE
    /// (RFC 3261 §12.1.2 once a response arrives). `from` is the From value
    /// without tag; `to` the To value; `cseq` the INVITE's CSeq number.
    pub fn new_uac(
        call_id: ByteStr,
        local_tag: ByteStr,
        from: &[u8],
        to: Bytes,
        target: Uri,
        cseq: u32,
    ) -> Dialog {
        let mut local_header = BytesMut::with_capacity(from.len() + 5 + local_tag.len());
        local_header.put_slice(from);
        local_header.put_slice(b";tag=");
        local_header.put_slice(local_tag.as_bytes());
        Dialog::new_uac_with(
            call_id,
            local_tag,
            local_header.freeze(),
            to,
            Some(target),
            cseq,
        )
    }

    /// [`Dialog::new_uac`] with our From already written, tag included
    /// (`local_header`). Without `target`, the remote target is the URI of
    /// `to`, read from it when needed (a response with a Contact usually
    /// sets it before: then never); with one, it is kept as the text
    /// `<target>`, as a Contact.
    pub fn new_uac_with(
        call_id: ByteStr,
        local_tag: ByteStr,
        local_header: Bytes,
        to: Bytes,
        target: Option<Uri>,
        cseq: u32,
    ) -> Dialog {
        let mut buf = BytesMut::new();
        let mut w = TextWriter::new(&mut buf);
        w.piece(call_id.as_bytes());
        w.piece(local_tag.as_bytes());
        w.end();
        w.piece(&local_header);
        w.piece(&to);
        if let Some(target) = &target {
            w.put(b"<");
            target.write_into(w.buf);
            w.put(b">");
        }
        w.end();
        let (text, ends) = w.finish();
        let mut dialog = Dialog::uac(text, ends, cseq);
        dialog.bare_contact = is_bare_contact(&dialog.piece_bytes(REMOTE_CONTACT));
        dialog
    }

    /// [`Dialog::new_uac_with`] without a target, its text already written
    /// into `buf` (at its start: its Call-ID, our tag, our From with that
    /// tag and its To, of the lengths `lens` gives) and split off it: it
    /// shares the allocation of whatever else the caller keeps there, and
    /// nothing is copied.
    pub fn new_uac_in(buf: &mut BytesMut, lens: UacText, cseq: u32) -> Dialog {
        let mut ends = [0u32; PIECES];
        let mut at = 0usize;
        for (piece, len) in [
            (CALL_ID, lens.call_id),
            (LOCAL_TAG, lens.local_tag),
            (REMOTE_TAG, 0),
            (LOCAL_HEADER, lens.local_header),
            (REMOTE_HEADER, lens.remote_header),
            (REMOTE_CONTACT, 0),
        ] {
            at = (at + len).min(buf.len());
            ends[piece] = u32::try_from(at).unwrap_or(u32::MAX);
        }
        let text = buf.split_to(at).freeze();
        Dialog::uac(text, ends, cseq)
    }

    fn uac(text: Bytes, ends: [u32; PIECES], cseq: u32) -> Dialog {
        Dialog {
            text,
            ends,
            local_seq: cseq,
            remote_seq: None,
            route_set: Box::default(),
            state: DialogState::Initial,
            bare_contact: false,
        }
    }

    /// Where `piece` is in the text.
    fn span(&self, piece: usize) -> std::ops::Range<usize> {
        let start = piece
            .checked_sub(1)
            .and_then(|p| self.ends.get(p))
            .map_or(0, |&e| e as usize);
        start..self.ends.get(piece).map_or(start, |&e| e as usize)
    }

    /// The text of `piece`.
    fn piece(&self, piece: usize) -> &[u8] {
        self.text.get(self.span(piece)).unwrap_or_default()
    }

    /// The text of `piece`, as a handle on the dialog's text.
    fn piece_bytes(&self, piece: usize) -> Bytes {
        let span = self.span(piece);
        if span.start <= span.end && span.end <= self.text.len() {
            self.text.slice(span)
        } else {
            Bytes::new()
        }
    }

    /// The text of `piece` that is UTF-8 by construction (a Call-ID or a
    /// tag, copied from a `str`).
    fn piece_str(&self, piece: usize) -> &str {
        std::str::from_utf8(self.piece(piece)).unwrap_or_default()
    }

    /// Writes the text again (into `buf`, split off it) with `remote_tag`,
    /// `remote_header` and `contact`, those given, instead of the pieces
    /// it has.
    fn rewrite(
        &mut self,
        buf: &mut BytesMut,
        remote_tag: Option<&[u8]>,
        remote_header: Option<&[u8]>,
        contact: Option<&[u8]>,
    ) {
        let mut w = TextWriter::new(buf);
        for piece in 0..PIECES {
            let new = match piece {
                REMOTE_TAG => remote_tag,
                REMOTE_HEADER => remote_header,
                REMOTE_CONTACT => contact,
                _ => None,
            };
            w.piece(new.unwrap_or_else(|| self.piece(piece)));
        }
        (self.text, self.ends) = w.finish();
    }

    /// Updates a UAC dialog from a response to its INVITE: a 1xx with a To
    /// tag makes it early, a 2xx confirms it; the remote target comes from
    /// Contact and the route set from Record-Route in reverse (the 2xx's route
    /// set replaces an early one, RFC 3261 §12.1.2 and §13.2.2.4). A 100 and
    /// failures change nothing.
    pub fn on_uac_response(&mut self, response: &Response) -> Result<(), DialogError> {
        self.on_uac_response_in(response, &mut BytesMut::new())
    }

    /// [`Dialog::on_uac_response`] with the dialog's text, when it
    /// changes (the To and its tag, Contact), written again into `buf` and
    /// split off it.
    pub fn on_uac_response_in(
        &mut self,
        response: &Response,
        buf: &mut BytesMut,
    ) -> Result<(), DialogError> {
        let status = response.status;
        if status.as_u16() == 100 || status.as_u16() >= 300 || self.state == DialogState::Confirmed
        {
            return Ok(());
        }
        let raw_to = response.headers.get(&HeaderName::To);
        // The 2xx after a provisional response of the same early dialog
        // carries the same To (tag included): no need to parse it again.
        let same_to = self.state == DialogState::Early
            && raw_to.is_some_and(|raw| raw[..] == *self.piece(REMOTE_HEADER));
        let new_tag = if same_to {
            None
        } else {
            // Only the tag is needed: read without parsing To's URI.
            let to = raw_to.ok_or(HeaderError::Missing(HeaderName::To))?;
            let tag = NameAddr::tag_of(to).ok_or(HeaderError::Invalid {
                name: HeaderName::To,
                reason: "not a single address with well-formed parameters",
            })?;
            let Some(tag) = tag else {
                if status.is_success() {
                    return Err(DialogError::MissingTag("To"));
                }
                return Ok(());
            };
            (self.state == DialogState::Initial || self.piece(REMOTE_TAG) != tag.as_bytes())
                .then_some(tag)
        };
        if new_tag.is_some() || status.is_success() {
            let new_to = raw_to.filter(|raw| raw[..] != *self.piece(REMOTE_HEADER));
            let same_contact = response
                .headers
                .get(&HeaderName::Contact)
                .is_some_and(|raw| raw[..] == *self.piece(REMOTE_CONTACT));
            // A Contact or Record-Route that does not parse is taken as
            // absent and reported after the rest is recorded: the remote
            // tag and To must still be, or our ACK and BYE would leave them
            // out (RFC 3261 §12.1.2, §13.2.2.4).
            let mut error = None;
            let contact = if same_contact {
                None
            } else {
                contact_target(&response.headers).unwrap_or_else(|e| {
                    error = Some(e);
                    None
                })
            };
            let mut routes = response.record_route().unwrap_or_else(|e| {
                error.get_or_insert(DialogError::from(e));
                Vec::new()
            });
            // Another To tag than the early dialog's is another fork of
            // our INVITE, another dialog (RFC 3261 §12.1.2): it takes
            // nothing of the one before. Without a usable Contact of its
            // own its remote target is its To URI (the Request-URI we
            // sent), not the other fork's Contact; no request of the other
            // fork counts for its remote CSeq.
            let other_fork = new_tag.is_some() && self.state == DialogState::Early;
            let contact_text = match contact {
                Some((raw, _)) => Some(&raw[..]),
                None if other_fork && !same_contact => Some(&b""[..]),
                None => None,
            };
            if other_fork {
                self.remote_seq = None;
            }
            if new_tag.is_some() || new_to.is_some() || contact_text.is_some() {
                self.rewrite(
                    buf,
                    new_tag.as_ref().map(|t| t.as_bytes().as_ref()),
                    new_to.map(|raw| &raw[..]),
                    contact_text,
                );
                if contact_text.is_some() {
                    self.bare_contact = contact.is_some_and(|(_, bare)| bare);
                }
            }
            routes.reverse();
            self.route_set = own_routes(routes);
            self.state = if status.is_success() {
                DialogState::Confirmed
            } else {
                DialogState::Early
            };
            return error.map_or(Ok(()), Err);
        }
        self.state = DialogState::Early;
        Ok(())
    }

    /// The dialog of another fork of our INVITE, before its response is
    /// applied ([`Dialog::on_uac_response_in`]): the Call-ID, our tag and
    /// From and our CSeq of this one, nothing of the remote party's. A
    /// response whose To tag is not that of the dialog the call keeps
    /// comes from another fork, and a 2xx of it makes a dialog of its
    /// own, ACKed and ended in that dialog (RFC 3261 §12.1.2, §13.2.2.4).
    pub fn for_other_fork(&self) -> Dialog {
        let mut buf = BytesMut::new();
        let mut w = TextWriter::new(&mut buf);
        w.piece(self.piece(CALL_ID));
        w.piece(self.piece(LOCAL_TAG));
        w.end();
        w.piece(self.piece(LOCAL_HEADER));
        // Replaced by the response's To.
        w.piece(self.piece(REMOTE_HEADER));
        w.end();
        let (text, ends) = w.finish();
        Dialog::uac(text, ends, self.local_seq)
    }

    /// Checks and records the CSeq of a request from the remote party
    /// (RFC 3261 §12.2.2), and takes a new remote target from a target
    /// refresh request (re-INVITE, UPDATE) with a Contact.
    pub fn on_remote_request(&mut self, request: &Request) -> Result<(), DialogError> {
        let seq = request.cseq()?.seq;
        if !matches!(request.method, Method::Ack | Method::Cancel) {
            if let Some(last) = self.remote_seq {
                if seq <= last {
                    return Err(DialogError::CSeqOutOfOrder { got: seq, last });
                }
            }
            self.remote_seq = Some(seq);
        }
        if matches!(request.method, Method::Invite | Method::Update) {
            if let Some((raw, bare)) = contact_target(&request.headers)? {
                self.rewrite(&mut BytesMut::new(), None, None, Some(raw));
                self.bare_contact = bare;
            }
        }
        Ok(())
    }

    /// Our side's address with our tag: From of our requests, and for a
    /// UAS dialog the To of our responses to the request that created it.
    pub fn local_header(&self) -> Bytes {
        self.piece_bytes(LOCAL_HEADER)
    }

    /// The peer's address (with its tag once known): To of our requests.
    pub fn remote_header(&self) -> Bytes {
        self.piece_bytes(REMOTE_HEADER)
    }

    /// The dialog's identifiers.
    pub fn id(&self) -> DialogId {
        let text = |piece| ByteStr::from_utf8(self.piece_bytes(piece)).unwrap_or_default();
        DialogId {
            call_id: text(CALL_ID),
            local_tag: text(LOCAL_TAG),
            remote_tag: text(REMOTE_TAG),
        }
    }

    /// Call-ID of the dialog.
    pub fn call_id(&self) -> &str {
        self.piece_str(CALL_ID)
    }

    /// [`Dialog::call_id`] as a handle on the dialog's text.
    pub fn call_id_bytes(&self) -> Bytes {
        self.piece_bytes(CALL_ID)
    }

    /// Our tag.
    pub fn local_tag(&self) -> &str {
        self.piece_str(LOCAL_TAG)
    }

    /// The Call-ID and our tag as bytes, for comparing with a received
    /// request's (no UTF-8 check of either: it runs for every in-dialog
    /// request).
    pub fn ids_raw(&self) -> (&[u8], &[u8]) {
        (self.piece(CALL_ID), self.piece(LOCAL_TAG))
    }

    /// The peer's tag (empty before a UAC dialog got one).
    pub fn remote_tag(&self) -> &str {
        self.piece_str(REMOTE_TAG)
    }

    /// [`Dialog::remote_tag`] as a handle on the dialog's text.
    pub fn remote_tag_bytes(&self) -> Bytes {
        self.piece_bytes(REMOTE_TAG)
    }

    /// Current state.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// CSeq number of our last request.
    pub fn local_seq(&self) -> u32 {
        self.local_seq
    }

    /// The remote target (Contact of the peer), parsed from the dialog's
    /// copy of the Contact each time (it is needed once or twice a call:
    /// keeping it parsed cost every call its size, and a clone for each
    /// request).
    ///
    /// Should that copy not parse (a UAS dialog's request that bypassed
    /// the daemon's validator), the remote party's address (the copy of
    /// its From or To) is the target instead; that is also the target of a
    /// dialog without a Contact (a UAC one until a response gives one).
    pub fn remote_target(&self) -> Uri {
        let contact = self.piece_bytes(REMOTE_CONTACT);
        let from_contact = if contact.is_empty() {
            None
        } else {
            bare_contact_uri(&contact).or_else(|| first_contact_uri(&contact).ok().flatten())
        };
        from_contact
            .or_else(|| {
                NameAddr::parse_single(&self.piece_bytes(REMOTE_HEADER))
                    .ok()
                    .map(|a| a.uri)
            })
            // The remote header parsed when the dialog was set up: not reached.
            .unwrap_or_else(|| Uri::Other {
                scheme: ByteStr::from_static("sip"),
                rest: ByteStr::from_static("invalid"),
            })
    }

    /// Takes the next local CSeq number without building a request (e.g.
    /// for an INVITE resent with credentials).
    pub fn next_seq(&mut self) -> u32 {
        self.local_seq = self.local_seq.wrapping_add(1);
        self.local_seq
    }

    /// A new request in the dialog (RFC 3261 §12.2.1.1) with the next local
    /// CSeq: Request-URI and Route from the remote target and route set,
    /// From/To with tags, Call-ID, CSeq, Max-Forwards 70. ACK and CANCEL are
    /// built by [`Dialog::ack`] and by the B2BUA from the INVITE.
    pub fn new_request(&mut self, method: Method) -> Request {
        self.local_seq = self.local_seq.wrapping_add(1);
        let seq = self.local_seq;
        self.request_with_seq(method, seq)
    }

    /// The ACK for a 2xx to our INVITE with CSeq number `invite_seq`
    /// (RFC 3261 §13.2.2.4): same CSeq number, method ACK.
    pub fn ack(&self, invite_seq: u32) -> Request {
        self.request_with_seq(Method::Ack, invite_seq)
    }

    /// Takes a new remote target from the Contact of a 2xx to a target
    /// refresh request of ours (re-INVITE, UPDATE; RFC 3261 §12.2.1.2).
    pub fn on_refresh_response(&mut self, response: &Response) {
        if let Ok(Some((raw, bare))) = contact_target(&response.headers) {
            self.rewrite(&mut BytesMut::new(), None, None, Some(raw));
            self.bare_contact = bare;
        }
    }

    /// A request in the dialog with an explicit CSeq number: the initial
    /// INVITE of a UAC dialog, the ACK of a 2xx.
    pub fn request_with_seq(&self, method: Method, seq: u32) -> Request {
        self.request_in(method, seq, None, &mut BytesMut::new())
    }

    /// [`Dialog::request_with_seq`] with `via` (ours, when given) as its
    /// first header and the CSeq value written into `buf` and split off it.
    pub fn request_in(
        &self,
        method: Method,
        seq: u32,
        via: Option<Bytes>,
        buf: &mut BytesMut,
    ) -> Request {
        let (uri, routes) = self.request_target();
        let mut request = Request::new(method.clone(), uri);
        // Room for these, our Via and Contact, and a few end-to-end ones.
        request.headers = Headers::with_capacity(routes.len() + 10);
        let h = &mut request.headers;
        if let Some(via) = via {
            h.push(HeaderName::Via, via);
        }
        for route in routes {
            h.push(HeaderName::Route, route);
        }
        h.push(HeaderName::From, self.piece_bytes(LOCAL_HEADER));
        h.push(HeaderName::To, self.piece_bytes(REMOTE_HEADER));
        h.push(HeaderName::CallId, self.piece_bytes(CALL_ID));
        put_cseq(buf, seq, &method);
        h.push(HeaderName::CSeq, buf.split().freeze());
        h.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
        request
    }

    /// The wire form of the request [`Dialog::request_in`] builds (with
    /// `via`), followed by `extra` header fields and `body`, written
    /// straight into `out` without building the request: for an ACK of a
    /// 2xx, which goes to the transport as bytes (RFC 3261 §13.2.2.4).
    /// `via` is written by `put_via` at the Via's place.
    pub fn write_request(
        &self,
        method: &Method,
        seq: u32,
        put_via: impl FnOnce(&mut BytesMut),
        extra: &[(HeaderName, &Bytes)],
        body: &Bytes,
        out: &mut BytesMut,
    ) {
        // The remote target as the peer wrote it, when the Request-URI is
        // the remote target (no route set, or loose routing): nothing
        // parsed.
        let contact = self.piece(REMOTE_CONTACT);
        let target_text = self
            .bare_contact
            .then(|| contact.get(1..contact.len().saturating_sub(1)))
            .flatten()
            .filter(|_| self.route_set.first().map_or(true, |r| is_loose(&r.addr)));
        let field = |out: &mut BytesMut, name: HeaderName, value: &[u8]| {
            out.put_slice(name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        };
        out.put_slice(method.as_str().as_bytes());
        out.put_u8(b' ');
        // The routes of a parsed target (the route set as is, or with the
        // strict routing of RFC 3261 §12.2.1.1); `None`: the route set.
        let routes = match target_text {
            Some(text) => {
                out.put_slice(text);
                None
            }
            None => {
                let (uri, routes) = self.request_target();
                uri.write_into(out);
                Some(routes)
            }
        };
        out.put_slice(b" SIP/2.0\r\n");
        out.put_slice(HeaderName::Via.as_str().as_bytes());
        out.put_slice(b": ");
        put_via(out);
        out.put_slice(b"\r\n");
        match &routes {
            Some(routes) => {
                for route in routes {
                    field(out, HeaderName::Route, route);
                }
            }
            None => {
                for route in self.route_set.iter() {
                    field(out, HeaderName::Route, &route.text);
                }
            }
        }
        field(out, HeaderName::From, self.piece(LOCAL_HEADER));
        field(out, HeaderName::To, self.piece(REMOTE_HEADER));
        field(out, HeaderName::CallId, self.piece(CALL_ID));
        out.put_slice(HeaderName::CSeq.as_str().as_bytes());
        out.put_slice(b": ");
        put_cseq(out, seq, method);
        out.put_slice(b"\r\n");
        field(out, HeaderName::MaxForwards, b"70");
        for (name, value) in extra {
            field(out, name.clone(), value);
        }
        out.put_slice(HeaderName::ContentLength.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.put_slice(b"\r\n\r\n");
        out.put_slice(body);
    }

    /// Room to reserve for [`Dialog::write_request`] with a Via of
    /// `via_len` bytes, `extra` and `body`: an estimate, not a bound (the
    /// Request-URI is counted as the remote Contact's length, at least 64,
    /// and routes exactly; a longer URI makes the buffer grow).
    pub fn request_len(
        &self,
        via_len: usize,
        extra: &[(HeaderName, &Bytes)],
        body: &Bytes,
    ) -> usize {
        let routes: usize = self.route_set.iter().map(|r| r.text.len() + 9).sum();
        let fields = extra
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
        let len = |piece| self.span(piece).len();
        // Request line and the names, separators and numbers of the fixed
        // fields.
        160 + len(REMOTE_CONTACT).max(64)
            + routes
            + via_len
            + len(LOCAL_HEADER)
            + len(REMOTE_HEADER)
            + len(CALL_ID)
            + fields
            + body.len()
    }

    /// Room [`Dialog::new_uas_in`] takes in its buffer for `request` at
    /// most, with a local tag of `tag_len` bytes.
    pub fn uas_len(request: &Request, tag_len: usize) -> usize {
        let len = |name: HeaderName| request.headers.get(&name).map_or(0, Bytes::len);
        // The From tag is inside From; our tag, and `;tag=` and ours again
        // after To.
        2 * len(HeaderName::From)
            + len(HeaderName::To)
            + 5
            + 2 * tag_len
            + len(HeaderName::CallId)
            + len(HeaderName::Contact)
    }

    /// Request-URI and Route values: loose routing when the first route has
    /// `lr`, else the strict routing of RFC 3261 §12.2.1.1, which makes the
    /// first route the Request-URI and the remote target the last Route.
    fn request_target(&self) -> (Uri, Vec<Bytes>) {
        let text = |r: &RouteEntry| r.text.clone();
        match self.route_set.first() {
            None => (self.remote_target(), Vec::new()),
            Some(first) if is_loose(&first.addr) => (
                self.remote_target(),
                self.route_set.iter().map(text).collect(),
            ),
            Some(first) => {
                let mut routes: Vec<Bytes> = self.route_set[1..].iter().map(text).collect();
                routes.push(Bytes::from(format!("<{}>", self.remote_target())));
                (strip_uri_headers(&first.addr.uri), routes)
            }
        }
    }
}

/// `CSeq` value `"<seq> <METHOD>"`, in a buffer of its exact size.
pub fn cseq_value(seq: u32, method: &Method) -> Bytes {
    let digits = itoa::Buffer::new().format(seq).len();
    let mut b = BytesMut::with_capacity(digits + 1 + method.as_str().len());
    put_cseq(&mut b, seq, method);
    b.freeze()
}

/// Appends the `CSeq` value `"<seq> <METHOD>"` to `out`.
pub fn put_cseq(out: &mut BytesMut, seq: u32, method: &Method) {
    out.put_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.put_u8(b' ');
    out.put_slice(method.as_str().as_bytes());
}

/// The Contact of `headers` when it gives a remote target (RFC 3261
/// §12.1: the first address's URI; every address is checked), with
/// whether it is one bare `<URI>` ([`bare_contact_uri`]). `*` gives none.
/// Only checked here, nothing parsed is kept: the dialog keeps the text.
fn contact_target(headers: &Headers) -> Result<Option<(&Bytes, bool)>, DialogError> {
    let Some(raw) = headers.get(&HeaderName::Contact) else {
        return Ok(None);
    };
    if raw.trim_ascii() == b"*" {
        return Ok(None);
    }
    if is_bare_contact(raw) {
        return Ok(Some((raw, true)));
    }
    let first = first_contact_uri(raw).map_err(|reason| {
        DialogError::Header(HeaderError::Invalid {
            name: HeaderName::Contact,
            reason,
        })
    })?;
    Ok(first.map(|_| (raw, false)))
}

/// The text between the brackets of a Contact value of the usual shape,
/// one `<URI>` and nothing else (no display name, header parameters,
/// second address or white space; no URI headers); `None` for any other
/// shape.
fn bare_contact_inner(raw: &[u8]) -> Option<&[u8]> {
    let inner = raw.strip_prefix(b"<")?.strip_suffix(b">")?;
    let other_shape = inner.is_empty()
        || inner.iter().any(|&c| {
            matches!(
                c,
                b'<' | b'>' | b'?' | b',' | b'"' | b' ' | b'\t' | b'\r' | b'\n'
            )
        });
    (!other_shape).then_some(inner)
}

/// [`bare_contact_uri`] is `Some`: checked without building the URI.
fn is_bare_contact(raw: &Bytes) -> bool {
    bare_contact_inner(raw).is_some_and(|inner| Uri::scan::<false>(raw, inner).is_ok())
}

/// The URI of a Contact value of the usual shape, one `<URI>` and nothing
/// else (no display name, header parameters, second address or white
/// space; no URI headers), parsed alone: what the full reading of the
/// value ([`first_contact_uri`]) gives for it, with less work. `None` for
/// any other shape or a URI that does not parse (the full reading then
/// says why).
fn bare_contact_uri(raw: &Bytes) -> Option<Uri> {
    Uri::parse_in(raw, bare_contact_inner(raw)?).ok()
}

/// The URI of the first address of a Contact value; every address is
/// checked.
fn first_contact_uri(raw: &Bytes) -> Result<Option<Uri>, &'static str> {
    let mut first = None;
    NameAddr::parse_each(raw, |a| {
        first.get_or_insert(a.uri);
    })?;
    Ok(first)
}

/// One route of a dialog's route set: the address, and its text as a
/// Route value (what the address's `Display` writes), kept so that each
/// request copies a handle instead of formatting it again.
#[derive(Clone, Debug)]
struct RouteEntry {
    addr: NameAddr,
    text: Bytes,
}

/// Route set values in buffers of their own (a slice of the received
/// message would keep the whole datagram alive for the call): each
/// address is written once and parsed again from that text, which the
/// entry keeps as its Route value.
fn own_routes(routes: Vec<NameAddr>) -> Box<[RouteEntry]> {
    routes
        .into_iter()
        .map(|n| {
            let text = Bytes::from(n.to_string());
            let addr = NameAddr::parse_single(&text).unwrap_or(n);
            RouteEntry { addr, text }
        })
        .collect()
}

fn is_loose(route: &NameAddr) -> bool {
    match &route.uri {
        Uri::Sip(u) => u.params.contains("lr"),
        _ => false,
    }
}

/// A Request-URI may not carry URI headers or `method` (RFC 3261 §19.1.5).
fn strip_uri_headers(uri: &Uri) -> Uri {
    let mut uri = uri.clone();
    if let Uri::Sip(u) = &mut uri {
        u.headers = Default::default();
        u.params.remove("method");
    }
    uri
}

#[cfg(test)]
mod tests;
