//! The async shell around [`Call`]: the call table, the routing of new
//! INVITEs, the execution of call actions on the transaction layer and the
//! transport, the call timers and the CDR of every call.
//!
//! Every call has an `info` span (`call_id`, `number`, `pbx`) entered while
//! its machine runs; its routine events (routed, ended, refused) are
//! `debug`, so a busy daemon logs nothing per call at `info`.
//!
//! No task per call: one task reads the events of all our client
//! transactions (their branch names the call, see [`ids::branch_for`]), one
//! task serves all call timers from one timer queue (the transaction
//! layer's [`Wheel`]: O(1) to schedule and cancel), and the daemon's
//! transaction-user loop hands requests in through [`B2bua::handle`]. A
//! call's state is locked only while its sans-IO machine runs; sending
//! happens after the lock is released.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::cdr::{CallTimes, CdrLine, CdrSink, LineTarget};
use crate::routing::{ExternalPbx, Number, PbxId, Routes, Target};
use crate::sip::{ByteStr, HeaderName, Host, Message, Method, Request, Response, StatusCode, Uri};
use crate::transaction::wheel::{Batch, TimerId, Wheel};
use crate::transaction::{
    ClientEvent, ClientEventKind, Incoming, ServerRequest, ServerTransaction, TransactionLayer,
};
use crate::transport::{Destination, Protocol, Source, Transports};

use super::admission::{self, Admission, CallSlot, Refusal};
use super::call::{ack_and_bye_for_stray_2xx, Action, Call, CallSettings, Leg, LegTransport, Plan};
use super::refused::{dialed_for_cdr, refusal_record};
use super::{ids, FinishReason};

/// Settings of the B2BUA, from the daemon config.
#[derive(Clone, Debug)]
pub struct B2buaConfig {
    /// Timers and the maximum call duration.
    pub calls: CallSettings,
    /// Overload limits.
    pub limits: admission::Limits,
    /// Host (name or IP) to put in our Via and Contact; else the IP of the
    /// local socket (set it when listening on 0.0.0.0 or behind NAT).
    pub advertised_host: Option<String>,
    /// The call rate the call and leg tables are sized for at start
    /// (`[limits] expected_cps`, as the transaction layer's tables): ten
    /// seconds of calls at that rate, at most the `max_calls` of `limits`
    /// and 524,288; 0: room for 16,384 calls.
    pub expected_cps: u32,
}

/// Key of the inbound leg index: the caller's Call-ID and From tag, so
/// that CANCEL (no To tag) and a repeated INVITE find their call. Requests
/// inside a dialog find it by our To tag instead ([`ids::tag_for`]). A
/// call stays in it to its end: its INVITE server transaction, which a
/// CANCEL (RFC 3261 §9.2) and a merged copy of the INVITE (§8.2.2.2) are
/// matched against, stays Accepted after the caller's ACK until Timer L
/// (RFC 6026 §7.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LegKey {
    call_id: Bytes,
    remote_tag: Bytes,
}

/// What the CDR needs besides the call's own outcome (the caller's URI
/// and the Call-ID are the call's): shared or inline values, so a routed
/// call allocates nothing for its CDR until its line is written.
#[derive(Debug)]
struct Meta {
    started: SystemTime,
    /// The dialed number (it parsed: the call was routed by it).
    number: Number,
    pbx: PbxId,
    /// Id of the external PBX the call went to (`external:<id>`).
    target: Arc<str>,
    inbound_dest: Destination,
    outbound_dest: Destination,
    span: tracing::Span,
}

/// A server transaction waiting for the call's answer.
#[derive(Debug)]
struct OpenServer<T = ServerTransaction> {
    leg: Leg,
    seq: u32,
    method: Method,
    tx: T,
}

/// The server transactions of a call waiting for its answers: two in
/// place (the INVITE's and one more: its CANCEL, a BYE), more in a list
/// (re-INVITEs and the like), so a call needs no list of its own.
#[derive(Debug)]
struct Servers<T = ServerTransaction> {
    inline: [Option<OpenServer<T>>; 2],
    more: Vec<OpenServer<T>>,
}

impl<T> Default for Servers<T> {
    fn default() -> Self {
        Servers {
            inline: [None, None],
            more: Vec::new(),
        }
    }
}

impl<T> Servers<T> {
    fn push(&mut self, server: OpenServer<T>) {
        match self.inline.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(server),
            None => self.more.push(server),
        }
    }

    fn is(s: &OpenServer<T>, leg: Leg, seq: u32, method: &Method) -> bool {
        s.leg == leg && s.seq == seq && s.method == *method
    }

    /// The transaction of request `seq` `method` received on `leg`.
    fn get(&self, leg: Leg, seq: u32, method: &Method) -> Option<&OpenServer<T>> {
        self.inline
            .iter()
            .flatten()
            .chain(&self.more)
            .find(|s| Self::is(s, leg, seq, method))
    }

    /// [`Servers::get`], taken out.
    fn take(&mut self, leg: Leg, seq: u32, method: &Method) -> Option<OpenServer<T>> {
        if let Some(slot) = self
            .inline
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|s| Self::is(s, leg, seq, method)))
        {
            return slot.take();
        }
        let i = self
            .more
            .iter()
            .position(|s| Self::is(s, leg, seq, method))?;
        Some(self.more.swap_remove(i))
    }

    fn clear(&mut self) {
        self.inline = [None, None];
        self.more.clear();
    }
}

#[derive(Debug)]
struct State {
    call: Box<Call>,
    servers: Servers,
    /// The deadline the call's timer is set for, and that timer.
    scheduled: Option<(Instant, TimerId)>,
    meta: Meta,
    /// Frees the concurrent-call slot when the call is dropped.
    _slot: CallSlot,
}

/// A call in the call table. What identifies its dialogs (Call-IDs, our
/// tags, the inbound leg's key) is read from the call itself, under its
/// lock: no copies of them here.
#[derive(Debug)]
struct Entry {
    id: u64,
    state: Mutex<State>,
}

impl Entry {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while a call was locked poisons only that call's mutex;
        // its state is still the best we have.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An input for one call.
// Inputs live briefly on the stack of one step; boxing the request would
// cost an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
enum Input {
    Request(Leg, Request, Option<ServerTransaction>),
    Response(Leg, Response),
    Failed(Leg, Method, u32),
    Timeout,
    Terminate,
    /// As `Terminate`, without a message to either side: the call is only
    /// recorded (the hang-up time of a stop is over).
    Abandon,
}

/// What a step leaves to do once the call is unlocked: the call's actions
/// as it wrote them, each with where it goes (`routes[i]` for
/// `actions[i]`), picked while the call was locked; carried out in order.
/// The actions stay where the call put them (they are not moved into a
/// second list).
struct Effects {
    actions: Vec<Action>,
    routes: Vec<Route>,
}

/// What a step leaves: its effects, and the CDR line of a call it ended.
type Done = (Effects, Option<Vec<u8>>);

/// Where an action goes.
enum Route {
    /// Through this server transaction (a response, our 2xx again).
    Server(ServerTransaction),
    /// To this peer (a request in a new client transaction, an ACK).
    Peer(Destination),
    /// Nowhere: a response whose server transaction is gone.
    Drop,
}

/// The B2BUA service. Cheap to clone.
#[derive(Clone)]
pub struct B2bua {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for B2bua {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("B2bua")
            .field("calls", &self.inner.calls.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: B2buaConfig,
    txn: TransactionLayer,
    transports: Transports,
    routes: Arc<Routes>,
    cdr: Option<CdrSink>,
    admission: Admission,
    calls: CallTable,
    legs: LegTable,
    /// Via/Contact addressing per (local socket, protocol): one entry per
    /// socket we send from, so a short list beats hashing the address.
    leg_transports: Mutex<Vec<LegTransportEntry>>,
    next_id: AtomicU64,
    /// Where the events of our client transactions go: the channel of the
    /// client-event task, or (`None`) the transaction layer's user, which
    /// hands them to [`B2bua::client_event`].
    client_events: Option<mpsc::Sender<ClientEvent>>,
    /// The calls' timers: one per call at most, its target the call
    /// number.
    timers: Wheel<u64>,
}

/// A local socket and protocol, and our addressing on it.
type LegTransportEntry = ((SocketAddr, Protocol), Arc<LegTransport>);

/// The key of `call`'s inbound leg in the leg index (its own copies).
fn in_key_of(call: &Call) -> LegKey {
    let (call_id, remote_tag) = call.inbound_key();
    LegKey {
        call_id,
        remote_tag,
    }
}

/// Hasher of the call table. Call numbers are ours (sequential, chosen by
/// no one outside), so one multiplication spreads them well (all low bits
/// differ, the high ones are mixed); SipHash, the default for keys from
/// the wire, costs more than the rest of the lookup.
#[derive(Clone, Copy, Debug, Default)]
struct CallNumberHasher(u64);

impl std::hash::Hasher for CallNumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The inbound leg index: the caller's Call-ID and From tag → call number.
/// The keys are the caller's (chosen on the wire), so their hash is seeded
/// per process (foldhash's `RandomState`, as the transaction tables' keys),
/// which costs far fewer instructions than the default SipHash.
type LegTable = DashMap<LegKey, u64, foldhash::fast::RandomState>;

/// The call table: call number → call.
type CallTable = DashMap<u64, Arc<Entry>, std::hash::BuildHasherDefault<CallNumberHasher>>;

/// Calls the call and leg tables have room for at start without an
/// expected rate (each shard grows from there): with 64 shards grown from
/// empty, the first second of a load is hundreds of small rehashes. ~3.5
/// MB of address space; a page costs memory once a call lands in it.
pub(crate) const CALLS_AT_START: usize = 16_384;

/// Seconds of calls at the expected rate the tables make room for: a call
/// is in them from its INVITE to its end, its ring time plus its hold
/// time, neither of which the daemon knows. 10 s covers every call in
/// progress while ring plus hold stays under it (the load benchmark's hold
/// 0 and 1 s with an instant answer), and the first 10 s of a load of
/// longer calls: the seconds a start's cold state makes dear
/// (docs/performance.md, session 8: most failed runs fall behind in their
/// first one or two seconds). Past them the tables grow in 1/64 steps.
const CALL_SECONDS_AT_START: usize = 10;

/// The most calls the tables make room for at start: 524,288, ten seconds
/// of ~52,000 calls/s (the config allows 100,000); ~90 MB of address space
/// (1M buckets a table, 64 shards of powers of two), ~2 MB of control
/// bytes written at start. Capped as the transaction layer caps its
/// reserve (`Reserve::MAX_TRANSACTIONS`); past it the tables grow.
pub(crate) const MAX_CALLS_AT_START: usize = 1 << 19;

/// Calls the call and leg tables have room for at start: [`CALLS_AT_START`]
/// without an expected rate, else `expected_cps` for
/// [`CALL_SECONDS_AT_START`], never more than `max_calls` (no more are
/// admitted at once) nor [`MAX_CALLS_AT_START`].
pub(crate) fn calls_at_start(expected_cps: u32, max_calls: usize) -> usize {
    if expected_cps == 0 {
        return CALLS_AT_START;
    }
    usize::try_from(expected_cps)
        .unwrap_or(usize::MAX)
        .saturating_mul(CALL_SECONDS_AT_START)
        .min(max_calls)
        .min(MAX_CALLS_AT_START)
}

/// Empty call and leg tables with room for `calls`.
fn tables(calls: usize) -> (CallTable, LegTable) {
    let shards = crate::transaction::TABLE_SHARDS;
    (
        CallTable::with_capacity_and_hasher_and_shard_amount(calls, Default::default(), shards),
        LegTable::with_capacity_and_hasher_and_shard_amount(calls, Default::default(), shards),
    )
}

/// Capacity of the channel of client transaction events of all calls.
const CLIENT_EVENT_QUEUE: usize = 16_384;

impl B2bua {
    /// Starts the B2BUA (inside a tokio runtime): its client-event task and
    /// its timer task run until the last handle is dropped.
    pub fn new(
        config: B2buaConfig,
        txn: TransactionLayer,
        transports: Transports,
        routes: Arc<Routes>,
        cdr: Option<CdrSink>,
    ) -> B2bua {
        let (client_events, events_rx) = mpsc::channel(CLIENT_EVENT_QUEUE);
        let b2bua = B2bua::start(config, txn, transports, routes, cdr, Some(client_events));
        tokio::spawn(client_event_task(Arc::downgrade(&b2bua.inner), events_rx));
        b2bua
    }

    /// [`B2bua::new`] without the client-event task: the events of the
    /// B2BUA's client transactions go to the transaction layer's user
    /// ([`TransactionLayer::set_user`]), which must hand each one to
    /// [`B2bua::client_event`], in order. Its timer task runs until the
    /// last handle is dropped.
    pub fn for_user(
        config: B2buaConfig,
        txn: TransactionLayer,
        transports: Transports,
        routes: Arc<Routes>,
        cdr: Option<CdrSink>,
    ) -> B2bua {
        B2bua::start(config, txn, transports, routes, cdr, None)
    }

    fn start(
        config: B2buaConfig,
        txn: TransactionLayer,
        transports: Transports,
        routes: Arc<Routes>,
        cdr: Option<CdrSink>,
        client_events: Option<mpsc::Sender<ClientEvent>>,
    ) -> B2bua {
        let admission = Admission::new(config.limits.clone(), Instant::now());
        let (calls, legs) = tables(calls_at_start(config.expected_cps, config.limits.max_calls));
        let inner = Arc::new(Inner {
            config,
            txn,
            transports,
            routes,
            cdr,
            admission,
            calls,
            legs,
            leg_transports: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            client_events,
            timers: Wheel::new(),
        });
        tokio::spawn(timer_task(Arc::downgrade(&inner)));
        B2bua { inner }
    }

    /// Calls alive now (the call table's size).
    pub fn active_calls(&self) -> usize {
        self.inner.calls.len()
    }

    /// Entries of the inbound leg index (one per live call); for leak checks.
    pub fn leg_entries(&self) -> usize {
        self.inner.legs.len()
    }

    /// Refuse new calls with 503 from now on (SIGTERM drain); calls in
    /// progress go on.
    pub fn start_draining(&self) {
        self.inner.admission.start_draining();
    }

    /// Returns once no call is left (poll every 50 ms; bound it with a
    /// timeout).
    pub async fn drained(&self) {
        while !self.inner.calls.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ends every call still in progress (after the drain time), each with
    /// its CDR now: for at most `limit`, BYE on both legs of established
    /// calls, 503 and CANCEL for ringing ones; once `limit` has passed, the
    /// calls left are only recorded (the process is about to exit; their
    /// peers end them by their own timers). Returns how many calls were
    /// hung up and how many only recorded.
    pub async fn hang_up_all(&self, limit: Duration) -> (usize, usize) {
        let entries: Vec<Arc<Entry>> = self
            .inner
            .calls
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect();
        if entries.is_empty() {
            return (0, 0);
        }
        tracing::warn!(
            calls = entries.len(),
            ?limit,
            "hanging up the calls left after the drain"
        );
        let deadline = Instant::now() + limit;
        let (mut hung_up, mut recorded) = (0, 0);
        for entry in entries {
            if Instant::now() < deadline {
                self.inner.step(&entry, Input::Terminate).await;
                hung_up += 1;
            } else {
                self.inner.step(&entry, Input::Abandon).await;
                recorded += 1;
            }
        }
        if recorded > 0 {
            tracing::warn!(
                hung_up,
                recorded,
                "hang-up time over: the other calls were recorded without BYE or CANCEL"
            );
        }
        (hung_up, recorded)
    }

    /// Handles an event of one of the B2BUA's client transactions (those
    /// of a B2BUA made with [`B2bua::for_user`]).
    pub async fn client_event(&self, ev: ClientEvent) {
        self.inner.client_event(ev).await;
    }

    /// Handles what the transaction layer passes up. Returns the requests
    /// that are not the B2BUA's (out-of-dialog requests other than INVITE
    /// and CANCEL, e.g. OPTIONS or REGISTER) for the daemon to answer.
    pub async fn handle(&self, incoming: Incoming) -> Option<Box<ServerRequest>> {
        match incoming {
            Incoming::Request(sr) => self.inner.on_request(sr).await,
            Incoming::Ack { request, .. } => {
                let to_tag = to_tag_of(&request);
                let found = self.inner.find(&request, to_tag.as_deref());
                if let Some((entry, leg)) = found {
                    let done = self.inner.run(&entry, Input::Request(leg, *request, None));
                    self.inner.carry_out(&entry, done).await;
                }
                None
            }
            Incoming::Response { response, source } => {
                // A 2xx retransmission after the client transaction ended.
                let leg = response
                    .headers
                    .top_via_ref()
                    .ok()
                    .and_then(|v| v.branch().and_then(|b| ids::parse_branch(b.as_bytes())))
                    .map(|(id, leg, _)| (id, leg));
                // Not an answer to anything we sent: dropped.
                if let Some((id, leg)) = leg {
                    match self.inner.entry(id) {
                        Some(entry) => {
                            let done = self.inner.run(&entry, Input::Response(leg, *response));
                            self.inner.carry_out(&entry, done).await;
                        }
                        // Our INVITE, but its call is gone.
                        None => {
                            let dest = Destination {
                                protocol: source.protocol,
                                addr: source.peer,
                            };
                            self.inner
                                .end_stray_2xx(&response, dest, Some(source.local))
                                .await
                        }
                    }
                }
                None
            }
            // Timer H or a transport error on one of our server
            // transactions: the call's own timers cover both.
            Incoming::Event(ev) => {
                tracing::debug!(event = ?ev.event, "server transaction event");
                None
            }
        }
    }
}

/// The tag of a request's To header, read without parsing its URI
/// ([`crate::sip::NameAddr::tag_of`]); `None` without one, or when To is
/// unreadable (the daemon's validator answers such requests 400 before
/// they get here; an ACK is never answered).
fn to_tag_of(req: &Request) -> Option<ByteStr> {
    let to = req.headers.get(&HeaderName::To)?;
    crate::sip::NameAddr::tag_of(to).flatten()
}

/// The caller's From tag, a slice of the request (for a lookup: do not
/// keep it); empty for an RFC 2543 From without tag (RFC 3261 §12.1.1
/// "null"); `None` when From is unreadable.
fn remote_tag_of(from: &crate::sip::NameAddr) -> ByteStr {
    from.params
        .get("tag")
        .flatten()
        .cloned()
        .unwrap_or_default()
}

/// The dialed number (SPEC §2.1): the user part of a `sip:`/`sips:`
/// Request-URI or the number of a `tel:` one, else the same from To (only
/// then is To parsed).
pub fn dialed_number(req: &Request) -> Option<Number> {
    Number::from_uri(&req.uri).ok().or_else(|| {
        let to = req.to().ok()?;
        Number::from_uri(&to.uri).ok()
    })
}

fn host_port(
    addr: SocketAddr,
    advertised: Option<&str>,
    fallback: Option<IpAddr>,
) -> (String, u16) {
    let ip = addr.ip();
    let host = match advertised {
        Some(h) => h.to_owned(),
        None if ip.is_unspecified() => fallback.unwrap_or(IpAddr::from([127, 0, 0, 1])).to_string(),
        None => ip.to_string(),
    };
    (host, addr.port())
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "UDP",
        Protocol::Tcp => "TCP",
    }
}

/// Where the external PBX is: its IP address from the config, else its
/// host name resolved (first address) with the port of its URI.
async fn destination(ext: &ExternalPbx) -> Option<Destination> {
    if let Some(d) = ext.destination() {
        return Some(d);
    }
    let Host::Domain(name) = &ext.uri.host else {
        return None;
    };
    let port = ext
        .uri
        .port
        .unwrap_or(if ext.uri.secure { 5061 } else { 5060 });
    let addr = tokio::net::lookup_host((name.as_str(), port))
        .await
        .ok()?
        .next()?;
    Some(Destination {
        protocol: ext.transport,
        addr,
    })
}

impl Inner {
    /// Our Via/Contact addressing for a local socket, built once per socket.
    fn leg_transport(
        &self,
        local: SocketAddr,
        protocol: Protocol,
        fallback: Option<IpAddr>,
    ) -> Arc<LegTransport> {
        let mut known = self
            .leg_transports
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, tp)) = known.iter().find(|(k, _)| *k == (local, protocol)) {
            return Arc::clone(tp);
        }
        let (host, port) = host_port(local, self.config.advertised_host.as_deref(), fallback);
        let tp = Arc::new(LegTransport::new(&host, port, protocol_name(protocol)));
        known.push(((local, protocol), Arc::clone(&tp)));
        tp
    }

    fn entry(&self, id: u64) -> Option<Arc<Entry>> {
        self.calls.get(&id).map(|e| Arc::clone(e.value()))
    }

    /// A 2xx to an INVITE that no call owns (it ended meanwhile): ACK it
    /// and BYE it, so the callee does not keep a session nobody relays.
    /// `dest` is where the 2xx came from (or its Contact); `local` our
    /// socket, when known.
    async fn end_stray_2xx(
        self: &Arc<Self>,
        response: &Response,
        dest: Destination,
        local: Option<SocketAddr>,
    ) {
        let Some((mut ack, mut bye)) = ack_and_bye_for_stray_2xx(response) else {
            return;
        };
        let Some(local) = local.or_else(|| self.transports.sent_by_for(&dest)) else {
            return;
        };
        let tp = self.leg_transport(local, dest.protocol, None);
        // Call number 0 is never used: events of this BYE find no call.
        for r in [&mut ack, &mut bye] {
            let seq = r.cseq().map(|c| c.seq).unwrap_or_default();
            r.headers.push_front(
                HeaderName::Via,
                tp.via(&ids::branch_for(0, Leg::Outbound, seq)),
            );
        }
        tracing::debug!(call_id = ?response.call_id().ok(), "stray 2xx: ACK and BYE");
        if let Err(e) = self
            .transports
            .queue_bytes(Message::Request(ack).to_bytes(), &dest)
            .await
        {
            tracing::debug!(error = %e, "ACK for a stray 2xx not sent");
        }
        if let Err(e) = self
            .txn
            .send_request_to(bye, dest, self.client_events.clone())
            .await
        {
            tracing::debug!(error = %e, "BYE for a stray 2xx not sent");
        }
    }

    /// The call and leg an in-dialog request (or CANCEL/ACK) belongs to:
    /// by its To tag when that is one of ours (it names the call, and the
    /// Call-ID must be that dialog's), else (CANCEL) by Call-ID and From
    /// tag as the caller's.
    fn find(&self, req: &Request, to_tag: Option<&str>) -> Option<(Arc<Entry>, Leg)> {
        if let Some((id, leg)) = to_tag.and_then(ids::parse_tag) {
            if let Some(entry) = self.entry(id) {
                let ours = {
                    let st = entry.lock();
                    let (dialog_call_id, local_tag) = st.call.dialog_ids(leg);
                    // The raw Call-ID, compared as is: equal to the dialog's
                    // (a well-formed one), it needs no check of its own.
                    let same_call_id = req
                        .headers
                        .get(&HeaderName::CallId)
                        .is_some_and(|raw| raw[..] == *dialog_call_id);
                    same_call_id && Some(local_tag) == to_tag.map(str::as_bytes)
                };
                if ours {
                    return Some((entry, leg));
                }
            }
        }
        let call_id = req.call_id().ok()?;
        let remote_tag = remote_tag_of(req.from_ref().ok()?);
        let id = *self.legs.get(&LegKey {
            call_id: call_id.into_bytes(),
            remote_tag: remote_tag.into_bytes(),
        })?;
        self.entry(id).map(|e| (e, Leg::Inbound))
    }

    async fn on_request(self: &Arc<Self>, sr: Box<ServerRequest>) -> Option<Box<ServerRequest>> {
        // A new INVITE (To without tag, told without parsing To's URI) is
        // the common case and needs no To here.
        let new_invite = sr.request.method == Method::Invite
            && sr
                .request
                .headers
                .get(&HeaderName::To)
                .and_then(crate::sip::NameAddr::has_tag)
                == Some(false);
        if new_invite {
            self.new_call(sr).await;
            return None;
        }
        let to_tag = to_tag_of(&sr.request);
        let has_to_tag = to_tag.is_some();
        if sr.request.method == Method::Invite && !has_to_tag {
            self.new_call(sr).await;
            return None;
        }
        if !has_to_tag && sr.request.method != Method::Cancel {
            return Some(sr);
        }
        match self.find(&sr.request, to_tag.as_deref()) {
            Some((entry, leg)) => {
                let done = self.run(&entry, Input::Request(leg, sr.request, Some(sr.tx)));
                self.carry_out(&entry, done).await;
            }
            None => {
                // RFC 3261 §12.2.2 / §9.2: no such dialog or transaction. A
                // CANCEL whose call is over but whose INVITE server
                // transaction still exists (Accepted until Timer L, RFC
                // 6026 §7.1) matched it: 200, with no effect (§9.2). Its To
                // tag is a new one: the call's is gone with the call.
                let status = if sr.request.method == Method::Cancel
                    && self.txn.find_invite(&sr.request).is_some()
                {
                    StatusCode::OK
                } else {
                    StatusCode::CALL_OR_TRANSACTION_DOES_NOT_EXIST
                };
                let mut r = Response::for_request(&sr.request, status);
                r.set_to_tag(&ids::tag());
                if let Err(e) = sr.tx.respond(r).await {
                    tracing::debug!(error = %e, "cannot answer a request of no call");
                }
            }
        }
        None
    }

    /// Answers a new INVITE we do not take, and writes its CDR.
    async fn refuse(
        &self,
        sr: Box<ServerRequest>,
        status: StatusCode,
        reason: FinishReason,
        number: Option<Number>,
        pbx: Option<String>,
    ) {
        let now = SystemTime::now();
        let dialed = dialed_for_cdr(&sr.request, number);
        let mut r = Response::for_request(&sr.request, status);
        r.set_to_tag(&ids::tag());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let secs = self.admission.retry_after().as_secs().max(1);
            r.headers
                .push(HeaderName::RetryAfter, Bytes::from(secs.to_string()));
        }
        tracing::debug!(
            call_id = %sr.request.call_id().unwrap_or_default(),
            number = %dialed,
            status = status.as_u16(),
            reason = reason.as_str(),
            "call refused"
        );
        if let Err(e) = sr.tx.respond(r).await {
            tracing::debug!(error = %e, "cannot answer refused INVITE");
        }
        if let Some(cdr) = &self.cdr {
            let rec = refusal_record(&sr.request, status, reason, dialed, pbx, now);
            if let Err(e) = cdr.write(rec).await {
                tracing::error!(error = %e, "CDR lost");
            }
        }
    }

    async fn new_call(self: &Arc<Self>, sr: Box<ServerRequest>) {
        let now = Instant::now();
        let req = &sr.request;
        let number = dialed_number(req);
        if let Err(refusal) = admission::check_invite(req) {
            return self
                .refuse(sr, refusal.status(), refusal.finish_reason(), number, None)
                .await;
        }
        let (Ok(call_id), Ok(from)) = (req.call_id(), req.from_ref()) else {
            return self
                .refuse(
                    sr,
                    StatusCode::BAD_REQUEST,
                    FinishReason::Rejected,
                    number,
                    None,
                )
                .await;
        };
        // Slices of the request, for the lookup only (the call's key is
        // made of its own copies below).
        let in_key = LegKey {
            call_id: call_id.into_bytes(),
            remote_tag: remote_tag_of(from).into_bytes(),
        };
        if self.legs.contains_key(&in_key) {
            // Same dialog-forming request under a new branch: a merged or
            // looped request (RFC 3261 §8.2.2.2).
            let r = Refusal::Loop;
            return self
                .refuse(sr, r.status(), r.finish_reason(), number, None)
                .await;
        }
        let slot = match self.admission.admit(now) {
            Ok(slot) => slot,
            Err(r) => {
                return self
                    .refuse(sr, r.status(), r.finish_reason(), number, None)
                    .await
            }
        };
        // One snapshot per call: what it routes by is kept for its lifetime.
        // No dialed number or no route for it: 404 either way.
        let routed = number.and_then(|number| {
            let route = self.routes.load().lookup(&number).cloned()?;
            Some((number, route))
        });
        let Some((number, route)) = routed else {
            return self
                .refuse(
                    sr,
                    StatusCode::NOT_FOUND,
                    FinishReason::NotFound,
                    number,
                    None,
                )
                .await;
        };
        if !route.enabled {
            return self
                .refuse(
                    sr,
                    StatusCode::TEMPORARILY_UNAVAILABLE,
                    FinishReason::Rejected,
                    Some(number),
                    Some(String::from(&*route.pbx)),
                )
                .await;
        }
        let Target::External(ext) = &route.forward else {
            tracing::warn!(number = %number, "forward target not supported yet");
            return self
                .refuse(
                    sr,
                    StatusCode::TEMPORARILY_UNAVAILABLE,
                    FinishReason::Unavailable,
                    Some(number),
                    Some(String::from(&*route.pbx)),
                )
                .await;
        };
        let protocol = ext.transport;
        let Some(outbound_dest) = destination(ext).await else {
            tracing::warn!(uri = %ext.uri, "external PBX address does not resolve");
            return self
                .refuse(
                    sr,
                    StatusCode::TEMPORARILY_UNAVAILABLE,
                    FinishReason::Unavailable,
                    Some(number),
                    Some(String::from(&*route.pbx)),
                )
                .await;
        };
        let inbound_tp = self.leg_transport(sr.source.local, sr.source.protocol, None);
        let local_out = self
            .transports
            .sent_by_for(&outbound_dest)
            .unwrap_or(sr.source.local);
        let fallback_ip = Some(sr.source.local.ip()).filter(|ip| !ip.is_unspecified());
        let outbound_tp = self.leg_transport(local_out, protocol, fallback_ip);
        let plan = Plan {
            // As `ext.request_uri(number)`, the user written by the call.
            request_uri: Uri::Sip(ext.uri.clone()),
            request_user: ext.uri.user.is_none().then_some(number),
            dial_timeout: ext.dial_timeout,
            outbound: outbound_tp,
            credentials: ext.credentials.clone().map(Arc::new),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let ServerRequest {
            request,
            source,
            tx,
        } = *sr;
        let span = tracing::info_span!(
            "call",
            call_id = %request.call_id().unwrap_or_default(),
            number = %number,
            pbx = %route.pbx,
        );
        let mut effects = scratch::effects();
        let call = match Call::new(
            id,
            request,
            inbound_tp,
            plan,
            &self.config.calls,
            now,
            &mut effects.actions,
        ) {
            Ok(call) => call,
            Err(e) => {
                scratch::give_effects(effects);
                tracing::debug!(error = %e.source, "INVITE cannot set up a dialog");
                drop(slot);
                let sr = Box::new(ServerRequest {
                    request: *e.invite,
                    source,
                    tx,
                });
                return self
                    .refuse(
                        sr,
                        StatusCode::BAD_REQUEST,
                        FinishReason::Rejected,
                        Some(number),
                        Some(String::from(&*route.pbx)),
                    )
                    .await;
            }
        };
        let _enter = span.enter();
        tracing::debug!(target_uri = %ext.uri, "call routed");
        drop(_enter);
        // The call's own copies (in its buffer): the key lives as long as
        // the call, and a slice of the INVITE would keep its datagram.
        let in_key = in_key_of(&call);
        let meta = Meta {
            started: SystemTime::now(),
            number,
            pbx: route.pbx.clone(),
            target: ext.id.clone(),
            inbound_dest: Destination {
                protocol: source.protocol,
                addr: inbound_peer(&source),
            },
            outbound_dest,
            span,
        };
        let invite_seq = call.invite_seq();
        let mut servers = Servers::default();
        servers.push(OpenServer {
            leg: Leg::Inbound,
            seq: invite_seq,
            method: Method::Invite,
            tx,
        });
        let state = State {
            call,
            servers,
            scheduled: None,
            meta,
            _slot: slot,
        };
        self.legs.insert(in_key, id);
        let entry = Arc::new(Entry {
            id,
            state: Mutex::new(state),
        });
        self.calls.insert(id, Arc::clone(&entry));
        {
            let mut st = entry.lock();
            resolve_actions(&mut st, &mut effects, None);
            self.reschedule(id, &mut st, now);
        }
        self.execute(&entry, effects).await;
    }

    /// Runs `input` through the call, then carries out what it asked for,
    /// feeding send failures back in. Callers with a message in hand call
    /// [`Inner::run`] and [`Inner::carry_out`] themselves instead: the
    /// message then goes into the call before any future is made, and is
    /// not copied into one.
    async fn step(self: &Arc<Self>, entry: &Arc<Entry>, input: Input) {
        let done = self.run(entry, input);
        self.carry_out(entry, done).await;
    }

    /// Carries out what a step asked for (and its CDR), feeding send
    /// failures back in.
    async fn carry_out(self: &Arc<Self>, entry: &Arc<Entry>, done: Done) {
        let (effects, record) = done;
        // A step with nothing to send (the caller's ACK, a timer that only
        // forgets something) and no line: no futures to make.
        if effects.actions.is_empty() && record.is_none() {
            scratch::give_effects(effects);
            return;
        }
        // Send failures come back as inputs, in order; usually there are
        // none (and then nothing is allocated).
        let mut failed = self.execute(entry, effects).await;
        // Only the step that ends the call has a line.
        if record.is_some() {
            self.write_cdr(record).await;
        }
        while !failed.is_empty() {
            let (effects, record) = self.run(entry, failed.remove(0));
            failed.extend(self.execute(entry, effects).await);
            self.write_cdr(record).await;
        }
    }

    /// Runs `input` through the locked call: the effects to carry out once
    /// it is unlocked, and its CDR line if the call is over.
    fn run(&self, entry: &Entry, input: Input) -> Done {
        let mut st = entry.lock();
        let st = &mut *st;
        let span = st.meta.span.clone();
        let _enter = span.enter();
        let now = Instant::now();
        let mut effects = scratch::effects();
        let actions = &mut effects.actions;
        let mut fresh = None;
        match input {
            Input::Request(leg, request, tx) => {
                let seq = request.cseq().map(|c| c.seq).ok();
                if request.method == Method::Ack {
                    // The ACK ends the 2xx retransmissions of that INVITE.
                    if let Some(seq) = seq {
                        while st.servers.take(leg, seq, &Method::Invite).is_some() {}
                    }
                }
                // Joins the call's open server transactions once the step's
                // answers are routed: what the call answers at once is this
                // request's, even when another transaction has the same leg,
                // CSeq and method (another fork's request, answered 481).
                fresh = tx.zip(seq).map(|(tx, seq)| OpenServer {
                    leg,
                    seq,
                    method: request.method.clone(),
                    tx,
                });
                st.call.on_request(leg, request, now, actions);
            }
            Input::Response(leg, response) => st.call.on_response(leg, response, now, actions),
            Input::Failed(leg, method, seq) => {
                st.call.on_request_failed(leg, &method, seq, now, actions)
            }
            Input::Timeout => st.call.handle_timeout(now, actions),
            Input::Terminate => st.call.terminate(now, actions),
            Input::Abandon => st.call.terminate(now, &mut Vec::new()),
        }
        resolve_actions(st, &mut effects, fresh);
        let record = if st.call.is_finished() {
            self.remove(entry, st);
            self.record(st)
        } else {
            self.reschedule(entry.id, st, now);
            None
        };
        (effects, record)
    }

    /// Hands a finished call's CDR line to the CDR writer.
    async fn write_cdr(&self, line: Option<Vec<u8>>) {
        if let (Some(line), Some(cdr)) = (line, &self.cdr) {
            if let Err(e) = cdr.write_line(line).await {
                tracing::error!(error = %e, "CDR lost");
            }
        }
    }

    /// Carries out effects; returns the inputs their failures produce.
    async fn execute(self: &Arc<Self>, entry: &Arc<Entry>, mut effects: Effects) -> Vec<Input> {
        let mut failures = Vec::new();
        {
            let Effects { actions, routes } = &mut effects;
            let mut routes = routes.drain(..);
            // The actions stay in their list (emptied with it): a
            // response is lent to its transaction and an ACK's bytes
            // shared; only a request, which its client transaction keeps,
            // is moved out.
            for action in actions.iter_mut() {
                // One route per action, by construction; each kind of
                // action has its kind of route (anything else is Drop).
                let Some(route) = routes.next() else { break };
                if let Action::Request { leg, .. } = action {
                    let Route::Peer(dest) = route else { continue };
                    let rest = Action::Ack {
                        leg: *leg,
                        bytes: Bytes::new(),
                    };
                    let Action::Request { leg, seq, request } = std::mem::replace(action, rest)
                    else {
                        continue;
                    };
                    let method = request.method.clone();
                    if let Err(e) = self
                        .txn
                        .send_request_to(request, dest, self.client_events.clone())
                        .await
                    {
                        tracing::debug!(call = entry.id, error = %e, "request not sent");
                        failures.push(Input::Failed(leg, method, seq));
                    }
                    continue;
                }
                match action {
                    Action::Respond { response, .. } | Action::Retransmit { response, .. } => {
                        let Route::Server(tx) = route else { continue };
                        if let Err(e) = tx.respond_ref(response).await {
                            tracing::debug!(call = entry.id, error = %e, "response not sent");
                        }
                    }
                    Action::Ack { bytes, .. } => {
                        let Route::Peer(dest) = route else { continue };
                        if let Err(e) = self.transports.queue_bytes(bytes.clone(), &dest).await {
                            tracing::debug!(call = entry.id, error = %e, "ACK not sent");
                        }
                    }
                    // Sent above.
                    Action::Request { .. } => {}
                }
            }
        }
        scratch::give_effects(effects);
        failures
    }

    fn remove(&self, entry: &Entry, st: &mut State) {
        let id = entry.id;
        self.calls.remove(&id);
        self.legs.remove(&in_key_of(&st.call));
        if let Some((_, timer)) = st.scheduled.take() {
            self.timers.cancel_all([timer]);
        }
        st.servers.clear();
    }

    /// Sets the call's timer for its next deadline, if that changed (see
    /// [`schedule_call_timer`]). `now` is the instant the step ran at.
    fn reschedule(&self, id: u64, st: &mut State, now: Instant) {
        let want = st.call.poll_timeout();
        if want == st.scheduled.map(|(at, _)| at) {
            return;
        }
        let mut batch = self.timers.batch();
        if let Some((_, old)) = st.scheduled.take() {
            batch.cancel_all([old]);
        }
        if let Some(at) = want {
            let timer = schedule_call_timer(&mut batch, &st.call, id, at, now);
            st.scheduled = Some((at, timer));
        }
    }

    /// The call's CDR line (the call is over), when CDRs are written.
    fn record(&self, st: &State) -> Option<Vec<u8>> {
        let call = &st.call;
        let start = st.meta.started;
        let at = |i: Instant| start + i.saturating_duration_since(call.started_at());
        let end = call.ended_at().map_or_else(SystemTime::now, at);
        let outcome = call.outcome();
        let (status, reason) = outcome.map_or((500, FinishReason::Error), |o| (o.status, o.reason));
        {
            let _enter = st.meta.span.enter();
            tracing::debug!(status, reason = reason.as_str(), "call ended");
        }
        let cdr = self.cdr.as_ref()?;
        let mut e164 = [0u8; ids::E164_LEN];
        let line = CdrLine {
            call_id: call.inbound_call_id(),
            times: CallTimes {
                start,
                answer: call.answered_at().map(at),
                end,
            },
            caller: call.caller_uri(),
            dialed: ids::e164_text(st.meta.number, &mut e164),
            pbx: Some(&st.meta.pbx),
            target: Some(LineTarget {
                kind: "external:",
                id: &st.meta.target,
                status: call.callee_status(),
            }),
            status,
            reason,
        };
        let mut out = cdr.line_buffer();
        line.write_json_line(&mut out);
        Some(out)
    }
}

/// Schedules call `id`'s timer for its deadline `at`, after the step that
/// ran at `now`. A deadline that step set is `now` plus one of the call's
/// durations ([`Call::deadline_set_at`]): it joins the wheel's lane of
/// that duration, shared by the timers of all calls (O(1), in order by
/// construction). Any other deadline (set by an earlier step, its distance
/// from `now` one no other timer has) goes to the wheel's heap: in a lane
/// it would hold one of its own, and once the wheel's lanes were all taken
/// by such one-off distances, every later timer would go to the heap and
/// every look at the front would scan all lanes.
pub(super) fn schedule_call_timer(
    batch: &mut Batch<'_, u64>,
    call: &Call,
    id: u64,
    at: Instant,
    now: Instant,
) -> TimerId {
    let after = at.saturating_duration_since(now);
    if call.deadline_set_at(at, now) {
        batch.schedule(after, id)
    } else {
        batch.schedule_in_heap(after, id)
    }
}

/// Where requests to the caller go: back over the flow its INVITE came on
/// (the TCP connection's peer, or the UDP source), which works behind NAT
/// and needs no resolution of its Contact.
fn inbound_peer(source: &Source) -> SocketAddr {
    source.peer
}

/// Picks where each of a step's actions goes while the call is locked:
/// the server transaction a response belongs to, the destination of a
/// leg. `fresh` is the server transaction of the request the step ran
/// for: an answer with its leg, CSeq and method is its own (not that of
/// an older one with the same, RFC 3261 §17.2.3 tells them by branch);
/// unless answered finally it then joins the call's open ones.
fn resolve_actions(st: &mut State, effects: &mut Effects, mut fresh: Option<OpenServer>) {
    let Effects { actions, routes } = effects;
    routes.clear();
    for action in actions.iter() {
        let route = match action {
            Action::Respond {
                leg,
                seq,
                method,
                response,
            } => {
                let keep = response.status.is_provisional()
                    || (response.status.is_success() && *method == Method::Invite);
                let own = fresh
                    .as_ref()
                    .is_some_and(|s| Servers::is(s, *leg, *seq, method));
                let tx = if own && keep {
                    fresh.as_ref().map(|s| s.tx.clone())
                } else if own {
                    fresh.take().map(|s| s.tx)
                } else if keep {
                    st.servers.get(*leg, *seq, method).map(|s| s.tx.clone())
                } else {
                    st.servers.take(*leg, *seq, method).map(|s| s.tx)
                };
                match tx {
                    Some(tx) => Route::Server(tx),
                    None => {
                        tracing::debug!(
                            status = response.status.as_u16(),
                            "no transaction for response"
                        );
                        Route::Drop
                    }
                }
            }
            Action::Request { leg, .. } | Action::Ack { leg, .. } => Route::Peer(match leg {
                Leg::Inbound => st.meta.inbound_dest,
                Leg::Outbound => st.meta.outbound_dest,
            }),
            // Our 2xx again: through the INVITE server transaction
            // (Accepted passes 2xx retransmissions of the TU).
            Action::Retransmit { leg, seq, .. } => st
                .servers
                .get(*leg, *seq, &Method::Invite)
                .map_or(Route::Drop, |s| Route::Server(s.tx.clone())),
        };
        routes.push(route);
    }
    if let Some(server) = fresh {
        st.servers.push(server);
    }
}

/// Lists of one step's actions and their routes, reused instead of
/// allocated per step (a call takes about ten steps). Per thread: a step's
/// lists live until its actions are carried out (across the awaits of its
/// sends), and go back to the pool of whichever thread finishes with them.
mod scratch {
    use super::{Effects, RefCell};

    /// Lists kept per thread; more are in use only when that many steps
    /// await their sends at once.
    const KEPT: usize = 8;
    /// A list that grew beyond this (a burst of actions) is not kept.
    const MAX_KEPT: usize = 16;

    thread_local! {
        static EFFECTS: RefCell<Vec<Effects>> = const { RefCell::new(Vec::new()) };
    }

    /// Empty lists (the thread's, if it has some).
    pub(super) fn effects() -> Effects {
        EFFECTS
            .with(|e| e.borrow_mut().pop())
            .unwrap_or_else(|| Effects {
                actions: Vec::with_capacity(4),
                routes: Vec::with_capacity(4),
            })
    }

    /// Gives lists from [`effects`] back, emptied.
    pub(super) fn give_effects(mut effects: Effects) {
        effects.actions.clear();
        effects.routes.clear();
        if effects.actions.capacity() <= MAX_KEPT && effects.routes.capacity() <= MAX_KEPT {
            EFFECTS.with(|e| {
                let mut pool = e.borrow_mut();
                if pool.len() < KEPT {
                    pool.push(effects);
                }
            });
        }
    }
}

/// Where a response's Contact points, if it is an IP address; over the
/// transport of the response's top Via.
fn contact_destination(response: &Response) -> Option<Destination> {
    let Some(crate::sip::Contact::Addrs(addrs)) = response.contacts().ok().flatten() else {
        return None;
    };
    let Uri::Sip(uri) = &addrs.first()?.uri else {
        return None;
    };
    let ip = uri.host.ip()?;
    let protocol = match response.headers.top_via_ref().ok()?.transport {
        crate::sip::Transport::Tcp => Protocol::Tcp,
        _ => Protocol::Udp,
    };
    Some(Destination {
        protocol,
        addr: SocketAddr::new(ip, uri.port.unwrap_or(5060)),
    })
}

async fn client_event_task(inner: Weak<Inner>, mut events: mpsc::Receiver<ClientEvent>) {
    while let Some(ev) = events.recv().await {
        // Every client transaction ends with one; the call has its own
        // timers, so there is nothing to look up for it.
        if matches!(ev.event, ClientEventKind::Terminated) {
            continue;
        }
        let Some(inner) = inner.upgrade() else { return };
        inner.client_event(ev).await;
    }
}

impl Inner {
    async fn client_event(self: &Arc<Self>, ev: ClientEvent) {
        let Some((id, leg, seq)) = ids::parse_branch(ev.key.branch_bytes()) else {
            return;
        };
        let Some(entry) = self.entry(id) else {
            // A 2xx for a call that gave up on its INVITE (guard timer,
            // shutdown): end that session at the callee's Contact.
            if let ClientEventKind::Response(r) = &ev.event {
                if let Some(dest) = contact_destination(r) {
                    self.end_stray_2xx(r, dest, None).await;
                }
            }
            return;
        };
        let input = match ev.event {
            ClientEventKind::Response(r) => Input::Response(leg, r),
            ClientEventKind::Timeout | ClientEventKind::TransportError => {
                Input::Failed(leg, ev.key.method().clone(), seq)
            }
            // The call has its own timers: nothing to do.
            ClientEventKind::Terminated => return,
        };
        let done = self.run(&entry, input);
        self.carry_out(&entry, done).await;
    }
}

async fn timer_task(weak: Weak<Inner>) {
    let mut due = Vec::new();
    let mut trimmed = tokio::time::Instant::now();
    while let Some(inner) = weak.upgrade() {
        let now = tokio::time::Instant::now();
        inner.timers.pop_due(now, &mut due);
        for (timer, id) in due.drain(..) {
            if let Some(entry) = inner.entry(id) {
                {
                    let mut st = entry.lock();
                    if st.scheduled.is_some_and(|(_, t)| t == timer) {
                        st.scheduled = None;
                    }
                }
                inner.step(&entry, Input::Timeout).await;
            }
        }
        if now.duration_since(trimmed) >= Duration::from_secs(1) {
            // What a load peak left in the queue, given back now and then.
            inner.timers.trim();
            trimmed = now;
        }
        // Until the first deadline, an earlier one being scheduled, or a
        // second (to notice the B2BUA is gone).
        tokio::select! {
            _ = inner.timers.wait() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::{
        calls_at_start, tables, CallNumberHasher, Entry, Leg, Method, OpenServer, Servers,
        CALLS_AT_START, MAX_CALLS_AT_START,
    };

    #[test]
    fn the_tables_are_sized_for_the_expected_rate_within_the_caps() {
        // No expected rate: the fixed room.
        assert_eq!(calls_at_start(0, 100_000), CALLS_AT_START);
        // Ten seconds of calls at the rate.
        assert_eq!(calls_at_start(100, 100_000), 1_000);
        assert_eq!(calls_at_start(8_000, 100_000), 80_000);
        // No more than may be up at once, nor than the cap.
        assert_eq!(calls_at_start(10_000, 50_000), 50_000);
        assert_eq!(calls_at_start(100_000, 10_000_000), MAX_CALLS_AT_START);
        // The tables hold that many without growing, and a small rate
        // gets small tables.
        for calls in [1_000, CALLS_AT_START, 80_000] {
            let (c, l) = tables(calls);
            assert!(c.capacity() >= calls && l.capacity() >= calls, "{calls}");
            assert!(c.capacity() < 4 * calls, "{calls}: {}", c.capacity());
        }
    }

    fn open(leg: Leg, seq: u32, method: Method, tx: u32) -> OpenServer<u32> {
        OpenServer {
            leg,
            seq,
            method,
            tx,
        }
    }

    #[test]
    fn open_servers_are_found_by_leg_cseq_and_method_in_place_or_beyond() {
        let mut s = Servers::default();
        s.push(open(Leg::Inbound, 1, Method::Invite, 10));
        s.push(open(Leg::Inbound, 2, Method::Bye, 20));
        // Beyond the two in place.
        s.push(open(Leg::Outbound, 5, Method::Invite, 30));
        s.push(open(Leg::Outbound, 6, Method::Info, 40));
        assert_eq!(
            s.get(Leg::Inbound, 1, &Method::Invite).map(|o| o.tx),
            Some(10)
        );
        assert_eq!(
            s.get(Leg::Outbound, 6, &Method::Info).map(|o| o.tx),
            Some(40)
        );
        assert!(s.get(Leg::Inbound, 1, &Method::Cancel).is_none());
        assert!(s.get(Leg::Outbound, 1, &Method::Invite).is_none());
        assert_eq!(
            s.take(Leg::Inbound, 2, &Method::Bye).map(|o| o.tx),
            Some(20)
        );
        assert!(s.take(Leg::Inbound, 2, &Method::Bye).is_none());
        assert_eq!(
            s.take(Leg::Outbound, 5, &Method::Invite).map(|o| o.tx),
            Some(30)
        );
        // A freed place is used again.
        s.push(open(Leg::Inbound, 3, Method::Cancel, 50));
        assert!(s.more.len() == 1 && s.inline.iter().all(Option::is_some));
        assert_eq!(
            s.get(Leg::Inbound, 3, &Method::Cancel).map(|o| o.tx),
            Some(50)
        );
        s.clear();
        assert!(s.get(Leg::Inbound, 1, &Method::Invite).is_none());
        assert!(s.get(Leg::Outbound, 6, &Method::Info).is_none());
    }

    #[test]
    fn a_call_table_entry_keeps_no_copies_of_the_calls_identifiers() {
        // Was 584 bytes, 192 of them copies of the dialogs' Call-IDs and
        // tags and of the inbound leg's key (six more references to the
        // call's buffer, each counted up at the start and down at the
        // end); now those are read from the call.
        let entry = std::mem::size_of::<Entry>();
        assert!(entry <= 392, "Entry is {entry} bytes");
    }

    #[test]
    fn call_numbers_hash_apart_in_low_and_high_bits() {
        let b = BuildHasherDefault::<CallNumberHasher>::default();
        let hashes: Vec<u64> = (1..=4096u64).map(|n| b.hash_one(n)).collect();
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        assert_eq!(
            low.len(),
            4096,
            "low 12 bits tell 4096 consecutive numbers apart"
        );
        let mut high = [0u32; 16];
        for h in &hashes {
            high[(h >> 60) as usize] += 1;
        }
        assert!(high.iter().all(|&n| (128..=384).contains(&n)), "{high:?}");
    }
}
