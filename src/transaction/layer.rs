//! The async shell around the sans-IO transactions: the transaction tables,
//! the timers, and the hand-off to the transport below and the TU above.
//!
//! Concurrency: each table is a `DashMap`; a machine is stepped while its
//! shard is locked (no await there), and the resulting actions are carried
//! out after the lock is released; timers are armed under that lock and
//! remembered by their transaction, which cancels those still pending when
//! it terminates. All timers of a layer live in one queue served by one
//! task ([`super::wheel`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tracing::debug;

use super::key::{AckKey, Slot, SlotHashing};
use super::lingering::{ClientLinger, Linger, ServerLinger};
use super::metrics::TransactionMetrics;
use super::sent_by::{SentBy, SentByTable};
use super::user::{TransactionUser, TuItem, Urgency};
use super::via_prefix::ViaPrefixes;
use super::wheel::{Batch, Tick, TimerId, Wheel};
use super::{
    Action, Actions, ClientKey, InviteClient, InviteServer, InviteServerState, KeyError,
    NonInviteClient, NonInviteServer, Refused, ServerKey, Timer, TimerConfig, TuEvent, TxError,
};
use crate::sip::{ByteStr, HeaderName, Message, Method, Request, Response, StatusCode, Via};
use crate::transport::{Destination, Protocol, Source};

/// The future a [`TransportSink`] returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>>;

/// The transport failed to send a message of a transaction (§17.1.4,
/// §17.2.4).
#[derive(Debug, thiserror::Error)]
#[error("could not send to {dest}")]
pub struct SendError {
    /// Where the message was going.
    pub dest: Destination,
    /// What the transport reported.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What the layer needs from the transport: sending encoded messages.
pub trait TransportSink: Send + Sync + 'static {
    /// Sends an encoded request (or a retransmission, or an ACK/CANCEL built
    /// by a client transaction) to `dest`.
    fn send_request(&self, data: Bytes, dest: Destination) -> SendFuture<'_>;

    /// Sends an encoded response to the request that arrived from `source`
    /// (RFC 3261 §18.2.2): over the same TCP connection while it is open;
    /// otherwise to `dest`, the address §18.2.2/RFC 3581 derive from the
    /// request's top Via.
    fn send_response(&self, data: Bytes, source: Source, dest: Destination) -> SendFuture<'_>;

    /// Sends like [`TransportSink::send_request`] if that can be done
    /// without waiting (e.g. a UDP datagram the socket takes at once), else
    /// hands the message back with [`TrySend::WouldWait`] and the layer
    /// calls `send_request`. The default never sends here.
    fn try_send_request(&self, data: Bytes, _dest: Destination) -> TrySend {
        TrySend::WouldWait(data)
    }

    /// Sends like [`TransportSink::send_response`] if that can be done
    /// without waiting (see [`TransportSink::try_send_request`]).
    fn try_send_response(&self, data: Bytes, _source: Source, _dest: Destination) -> TrySend {
        TrySend::WouldWait(data)
    }

    /// A count of the times the receive side that gets `dest`'s answers
    /// (the socket bound to `local` when given, where a request came in;
    /// else the one requests to `dest` go out from) has been drained: read
    /// everything queued and handed it on. The layer reads it when it
    /// sends a message it may retransmit and again when the retransmission
    /// is due; the same value means the answer may be queued unread, and
    /// the retransmission is held back ([`Timer::retransmits`]). `None`,
    /// the default, never holds one back (TCP, or no such count).
    fn receive_drains(&self, _local: Option<SocketAddr>, _dest: Destination) -> Option<u32> {
        None
    }

    /// Whether that receive side has read everything that arrived before
    /// [`TransportSink::receive_drains`] returned `drains`. By default:
    /// the count moved (or there is none). A transport whose receive loop
    /// does not count while it is idle must say so here (an idle receive
    /// side is drained).
    fn drained_since(&self, local: Option<SocketAddr>, dest: Destination, drains: u32) -> bool {
        self.receive_drains(local, dest) != Some(drains)
    }
}

/// What a [`TransportSink`]'s synchronous send did.
pub enum TrySend {
    /// Handed to the socket (or failed) without waiting.
    Done(Result<(), SendError>),
    /// Queued without waiting behind a connection being opened (TCP); the
    /// future tells, once the connect ended, whether it went out. Later
    /// sends to the same destination go out after it.
    Queued(SendFuture<'static>),
    /// Sending would have to wait: here is the message back, for the async
    /// send.
    WouldWait(Bytes),
}

impl std::fmt::Debug for TrySend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Done(result) => f.debug_tuple("Done").field(result).finish(),
            Self::Queued(_) => f.write_str("Queued"),
            Self::WouldWait(data) => f.debug_tuple("WouldWait").field(data).finish(),
        }
    }
}

/// What a synchronous step of the layer could not finish without waiting
/// (a send the transport can only do asynchronously, and every action
/// after it). Boxed, so that only this rare path pays for a large future.
type Deferred = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `first`, then `then`.
fn chain(first: Option<Deferred>, then: Option<Deferred>) -> Option<Deferred> {
    match (first, then) {
        (Some(a), Some(b)) => Some(Box::pin(async move {
            a.await;
            b.await;
        })),
        (a, b) => a.or(b),
    }
}

/// The future of an entry point whose step is done: it finishes the sends
/// that had to wait (if any) and returns the step's result.
fn finish(stepped: Result<Option<Deferred>, TxError>) -> impl Future<Output = Result<(), TxError>> {
    finish_with(stepped.map(|deferred| ((), deferred)))
}

/// [`finish`] for a step with a value to hand back.
/// Whose a failure of a new client transaction's first send is, when the
/// transport refuses it at once (see [`Inner::start_client`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum First {
    /// The caller's, as an error: the TU started the transaction.
    Caller,
    /// The machine's, as for any later send: a transport error event (a
    /// CANCEL the layer sends for the TU, whose caller is not the TU).
    Machine,
}

async fn finish_with<T>(stepped: Result<(T, Option<Deferred>), TxError>) -> Result<T, TxError> {
    let (value, deferred) = stepped?;
    if let Some(deferred) = deferred {
        deferred.await;
    }
    Ok(value)
}

/// Tunables of the layer; `Default` gives production values.
#[derive(Debug, Clone)]
pub struct LayerConfig {
    /// T1, T2, T4.
    pub timers: TimerConfig,
    /// Capacity of the channel of [`Incoming`] messages to the TU. When it
    /// is full, new requests are answered 503 with Retry-After by their
    /// server transaction.
    pub tu_queue: usize,
    /// Capacity of the event channel [`TransactionLayer::send_request`]
    /// creates per client transaction.
    pub client_queue: usize,
    /// Seconds in the Retry-After of overload 503s.
    pub overload_retry_after: u32,
    /// Do the UAS core's 2xx retransmission (§13.3.1.4) for the TU: resend
    /// a 2xx to INVITE at T1, 2*T1, … T2 until its ACK arrives, and report
    /// [`TuEvent::Timeout`] on the server transaction when none arrives
    /// within 64*T1. For UA-type TUs that leave this to the layer; a proxy
    /// TU must not use it. Off by default: the B2BUA's call machine
    /// retransmits its 2xx itself.
    pub retransmit_2xx: bool,
    /// Told of each new request answered 503 because the TU queue is full.
    pub refusals: Option<Arc<dyn crate::transport::RefusalObserver>>,
    /// Send [`ClientEventKind::Terminated`] when a client transaction ends
    /// (on by default). A TU that keeps its own timers for what it sent
    /// and has nothing to do when a transaction is gone (the B2BUA) turns
    /// it off: each one is a send on its channel and a wake-up of its task,
    /// two per call (Timers M and K), for an event it drops. The channel
    /// of [`TransactionLayer::send_request`] still closes when its
    /// transaction (and its CANCEL, if any) is gone.
    pub terminated_events: bool,
    /// The call rate (calls per second) the tables and the timer queue are
    /// sized for when the layer starts (see [`Reserve::for_rate`]); 0: they
    /// start empty and grow as needed (the default). A table or queue that
    /// grows under load copies or rehashes everything it holds in one
    /// step, milliseconds at the sizes lingering transactions reach, which
    /// a daemon at its capacity cannot pay back before T1.
    pub expected_cps: u32,
}

/// How many transactions and timers a layer makes room for when it starts
/// ([`LayerConfig::expected_cps`]), and never gives back below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reserve {
    /// Server transactions (table slots).
    pub servers: usize,
    /// Client transactions (table slots).
    pub clients: usize,
    /// Timers (the timer queue's slab).
    pub timers: usize,
    /// Timers of one duration scheduled per second: each lane of the
    /// timer queue makes room for this many times its duration in seconds.
    pub timers_per_second: usize,
}

impl Reserve {
    /// The room `cps` calls per second through a B2BUA need when each call
    /// leaves what one call over UDP leaves (docs/performance.md, "Memory
    /// of lingering transactions"): two server transactions lingering
    /// 64*T1 (the INVITE's in Accepted, the BYE's in Completed), a client
    /// INVITE lingering 64*T1 and a client BYE lingering T4, each with one
    /// pending timer; one more second of each for the transactions not
    /// yet lingering. A lane is sized for three timers of its duration per
    /// call (the three 64*T1 ones share one lane).
    ///
    /// At most [`Reserve::MAX_TRANSACTIONS`] transactions in all (and as
    /// many timers): beyond that both kinds are scaled down alike, so that
    /// a high rate with long timers (the config allows T1 up to 1 min and
    /// 100,000 calls/s, ~768M slots) cannot make the start fail or the
    /// tables' control bytes take gigabytes; past the cap the tables grow.
    pub fn for_rate(cps: u32, timers: &TimerConfig) -> Reserve {
        if cps == 0 {
            return Reserve::default();
        }
        let linger = timers.t1.saturating_mul(64).as_secs_f64() + 1.0;
        let servers = f64::from(cps) * 2.0 * linger;
        let clients = f64::from(cps) * (linger + timers.t4.as_secs_f64() + 1.0);
        let scale = (Reserve::MAX_TRANSACTIONS as f64 / (servers + clients)).min(1.0);
        // Rounded down when scaled, so the sum stays within the cap.
        let room = |n: f64| {
            if scale < 1.0 {
                (n * scale).floor() as usize
            } else {
                n.ceil() as usize
            }
        };
        let (servers, clients) = (room(servers), room(clients));
        Reserve {
            servers,
            clients,
            timers: servers + clients,
            timers_per_second: ((f64::from(cps) * 3.0).ceil() as usize).min(servers + clients),
        }
    }

    /// The most transactions (servers and clients together) a reserve
    /// makes room for: 4,194,304, what ~40,000 calls/s leave at the
    /// default timers; ~10 MB of table control bytes written at start.
    pub const MAX_TRANSACTIONS: usize = 1 << 22;
}

/// Shards of each transaction table (and of the B2BUA's call and leg
/// tables, which grow the same way). A `DashMap` has four per CPU by
/// default (8 on two cores); a table grows one shard at a time, and with
/// 64 each growth rehashes 1/64 of the table instead of 1/8 (with 8, steps
/// of up to 2 ms at 6,000 calls/s hold 1 s: docs/performance.md, "Session
/// 8: stalls at the cap").
pub(crate) const TABLE_SHARDS: usize = 64;

impl Default for LayerConfig {
    fn default() -> Self {
        Self {
            timers: TimerConfig::default(),
            tu_queue: 4096,
            client_queue: 16,
            overload_retry_after: 5,
            retransmit_2xx: false,
            refusals: None,
            terminated_events: true,
            expected_cps: 0,
        }
    }
}

/// What the layer passes up to the TU through the channel returned by
/// [`TransactionLayer::new`].
///
/// The large payloads are boxed once where the item is made, so the item
/// (144 bytes) is cheap to move through the channel and the TU's async
/// calls: unboxed it was 392 bytes, copied by value at each hop.
#[derive(Debug)]
pub enum Incoming {
    /// A new request (not ACK): a server transaction was created; answer it
    /// with [`ServerTransaction::respond`].
    Request(Box<ServerRequest>),
    /// An ACK that is not part of an INVITE server transaction's non-2xx
    /// exchange: the ACK for a 2xx, which is end-to-end and the dialog's
    /// (§13.3.1.4; RFC 6026 §7.1). Also an ACK matching nothing.
    Ack {
        /// The ACK.
        request: Box<Request>,
        /// Where it came from.
        source: Source,
    },
    /// A response matching no client transaction (§17.1.3): e.g. a 2xx
    /// retransmission after Timer M, or a late answer from a fork. A UA core
    /// ACKs (and BYEs) an unexpected 2xx; anything else may be dropped.
    Response {
        /// The response.
        response: Box<Response>,
        /// Where it came from.
        source: Source,
    },
    /// Something happened to a server transaction after its request was
    /// delivered: Timer H fired (no ACK for a non-2xx final) or the
    /// transport failed to send a response.
    Event(ServerEvent),
}

/// A new request and the server transaction created for it.
#[derive(Debug)]
pub struct ServerRequest {
    /// The request as received (`received`/`rport` already stamped).
    pub request: Request,
    /// Where it came from.
    pub source: Source,
    /// The transaction to respond on.
    pub tx: ServerTransaction,
}

/// An event of a server transaction (see [`Incoming::Event`]).
#[derive(Debug)]
pub struct ServerEvent {
    /// The transaction.
    pub tx: ServerTransaction,
    /// [`TuEvent::Timeout`] or [`TuEvent::TransportError`].
    pub event: TuEvent,
}

/// An event of a client transaction, tagged with its key so one channel can
/// serve several transactions (an INVITE and its CANCEL, or all the
/// transactions of a call).
#[derive(Debug)]
pub struct ClientEvent {
    /// Which transaction (its method tells an INVITE from its CANCEL):
    /// the key the layer's table holds, shared rather than copied into
    /// every event.
    pub key: Arc<ClientKey>,
    /// What happened.
    pub event: ClientEventKind,
}

/// What happened to a client transaction.
#[derive(Debug)]
pub enum ClientEventKind {
    /// A response (provisional, final, or in Accepted a further 2xx that
    /// the TU must ACK again).
    Response(Response),
    /// Timer B or F fired: no final response (treat as 408, §8.1.3.1).
    Timeout,
    /// The transport could not send the request (treat as 503, §8.1.3.1).
    TransportError,
    /// The transaction is gone; nothing more will come for this key. Not
    /// sent when [`LayerConfig::terminated_events`] is off.
    Terminated,
}

/// The transaction layer: RFC 3261 §17 client and server transactions over
/// a [`TransportSink`]. Cheap to clone (one `Arc`).
///
/// # What the TU must do itself
/// - Put a Via with a fresh magic-cookie branch ([`super::generate_branch`])
///   on every request it sends; the branch is the client transaction's key.
/// - ACK 2xx responses to INVITE (end-to-end, §13.2.2.4), including each
///   retransmitted 2xx delivered in Accepted, and retransmit its own 2xx
///   until the ACK arrives (§13.3.1.4): the layer ACKs only non-2xx finals
///   and retransmits only non-2xx finals, unless
///   [`LayerConfig::retransmit_2xx`] hands it the 2xx retransmission. A
///   2xx retransmission handed to an Accepted transaction while the
///   transport has not read everything that arrived since the previous
///   one went out is not sent (the ACK may be queued unread; counted in
///   `response_retransmissions_deferred`): the next one goes by the TU's
///   schedule, and is sent drained or not (at most every other one is
///   skipped).
/// - Handle [`Incoming::Event`]: Timer H (no ACK), Timer Unanswered (the TU
///   left a request unanswered; an INVITE then got 408) and transport
///   errors of server transactions.
/// - Answer CANCEL: it arrives as its own request; find the INVITE with
///   [`TransactionLayer::find_invite`], answer the CANCEL 200 (or 481 when
///   there is none) and the INVITE 487 (§9.2).
/// - Send at most one final response per server transaction (2xx may be
///   repeated), and add the To tag to final responses (§8.2.6.2).
/// - Read the [`Incoming`] channel promptly: when it is full new requests
///   are refused with 503.
#[derive(Clone)]
pub struct TransactionLayer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TransactionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionLayer")
            .field("clients", &self.inner.clients.len())
            .field("servers", &self.inner.servers.len())
            .finish_non_exhaustive()
    }
}

// Not boxed per variant: the whole `ActiveClient` is boxed, one allocation
// per transaction.
#[allow(clippy::large_enum_variant)]
enum ClientMachine {
    Invite(InviteClient),
    NonInvite(NonInviteClient),
}

impl ClientMachine {
    fn on_response(&mut self, response: Response, out: &mut Actions) {
        match self {
            Self::Invite(m) => m.on_response_into(response, out),
            Self::NonInvite(m) => m.on_response_into(response, out),
        }
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Actions) {
        match self {
            Self::Invite(m) => m.on_timer_into(timer, out),
            Self::NonInvite(m) => m.on_timer_into(timer, out),
        }
    }

    fn on_transport_error(&mut self) -> Actions {
        match self {
            Self::Invite(m) => m.on_transport_error(),
            Self::NonInvite(m) => m.on_transport_error(),
        }
    }

    fn wants_timer(&self, timer: Timer) -> bool {
        match self {
            Self::Invite(m) => m.wants_timer(timer),
            Self::NonInvite(m) => m.wants_timer(timer),
        }
    }

    fn linger(&self) -> Option<ClientLinger> {
        match self {
            Self::Invite(m) => m.linger(),
            Self::NonInvite(m) => m.linger(),
        }
    }
}

// As `ClientMachine`: the whole `ActiveServer` is boxed, one allocation
// per transaction.
#[allow(clippy::large_enum_variant)]
enum ServerMachine {
    Invite(InviteServer),
    NonInvite(NonInviteServer),
}

impl ServerMachine {
    fn on_request(&mut self, request: Request) -> Actions {
        match self {
            Self::Invite(m) => m.on_request(request),
            Self::NonInvite(m) => m.on_request(),
        }
    }

    fn on_tu_response(&mut self, response: &Response, out: &mut Actions) -> Result<(), TxError> {
        match self {
            Self::Invite(m) => m.on_tu_response_into(response, out),
            Self::NonInvite(m) => m.on_tu_response_into(response, out),
        }
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Actions) {
        match self {
            Self::Invite(m) => m.on_timer_into(timer, out),
            Self::NonInvite(m) => m.on_timer_into(timer, out),
        }
    }

    fn on_transport_error(&mut self) -> Actions {
        match self {
            Self::Invite(m) => m.on_transport_error(),
            Self::NonInvite(m) => m.on_transport_error(),
        }
    }

    fn wants_timer(&self, timer: Timer) -> bool {
        match self {
            Self::Invite(m) => m.wants_timer(timer),
            Self::NonInvite(m) => m.wants_timer(timer),
        }
    }

    fn linger(&self) -> Option<ServerLinger> {
        match self {
            Self::Invite(m) => m.linger(),
            Self::NonInvite(m) => m.linger(),
        }
    }
}

/// A client transaction in its table. The slot holds the key and two
/// words: the state lives in a box, the full machine while the transaction
/// works and a compact record once it only lingers (see
/// [`super::lingering`]), so that the hundreds of thousands of lingering
/// transactions under load cost little more than their keys.
struct ClientEntry {
    /// Tells this transaction from a later one with the same key, so stale
    /// timers and handles cannot touch it.
    id: u64,
    tx: ClientTx,
}

enum ClientTx {
    Active(Box<ActiveClient>),
    Lingering(Box<LingeringClient>),
}

/// A client transaction before its final response (or while its machine
/// does more than absorb retransmissions).
struct ActiveClient {
    machine: ClientMachine,
    dest: Destination,
    events: ClientEvents,
    timers: TimerSet,
}

/// A client transaction in Completed or Accepted: what absorbing
/// retransmitted responses needs.
struct LingeringClient {
    linger: ClientLinger,
    dest: Destination,
    /// For the 2xx of Accepted and the final `Terminated`.
    events: ClientEvents,
    /// Its last timer (D, K or M) while pending.
    timer: Option<TimerId>,
}

impl ClientEntry {
    fn ctx(&self, key: &Arc<ClientKey>) -> ClientCtx {
        let (dest, events) = match &self.tx {
            ClientTx::Active(a) => (a.dest, &a.events),
            ClientTx::Lingering(l) => (l.dest, &l.events),
        };
        ClientCtx {
            key: Arc::clone(key),
            id: self.id,
            dest,
            events: events.clone(),
        }
    }

    /// Appends the step's actions to `out` (see `Inner::lock_client`).
    fn on_response(&mut self, response: Response, out: &mut Actions) {
        match &mut self.tx {
            ClientTx::Active(a) => a.machine.on_response(response, out),
            ClientTx::Lingering(l) => *out = l.linger.on_response(response),
        }
    }

    /// Timer `timer_id` (a `timer`) fired: appends the step's actions to
    /// `out`.
    fn on_timer(&mut self, timer_id: TimerId, timer: Timer, out: &mut Actions) {
        match &mut self.tx {
            ClientTx::Active(a) => {
                a.timers.remove(timer_id);
                a.machine.on_timer(timer, out);
            }
            ClientTx::Lingering(l) => {
                if l.timer == Some(timer_id) {
                    l.timer = None;
                }
                l.linger.on_timer_into(timer, out);
            }
        }
    }

    fn on_transport_error(&mut self) -> Actions {
        match &mut self.tx {
            ClientTx::Active(a) => a.machine.on_transport_error(),
            ClientTx::Lingering(l) => l.linger.on_transport_error(),
        }
    }

    /// The INVITE machine, while it is active (a lingering INVITE has
    /// nothing left to cancel).
    fn invite_machine(&mut self) -> Option<&mut InviteClient> {
        match &mut self.tx {
            ClientTx::Active(a) => match &mut a.machine {
                ClientMachine::Invite(m) => Some(m),
                ClientMachine::NonInvite(_) => None,
            },
            ClientTx::Lingering(_) => None,
        }
    }

    /// Cancels every pending timer.
    fn release(&mut self, wheel: &Wheel<TimerTarget>) {
        match &mut self.tx {
            ClientTx::Active(a) => wheel.cancel_all(a.timers.drain()),
            ClientTx::Lingering(l) => wheel.cancel_all(l.timer.take()),
        }
    }
}

/// Most pending timers a transaction keeps track of. The machines have at
/// most five pending at once (an INVITE client's A, B, Unanswered,
/// Cancelled and D/M), fewer as the layer cancels those its machine no
/// longer wants; one beyond this is not lost, it fires and finds its
/// transaction gone (or still there, as any timer would).
const TRACKED_TIMERS: usize = 6;

/// The pending timers of one transaction: cancelled when its machine no
/// longer wants them, and all of them when it terminates. A rounded timer
/// ([`Inner::slack`]) keeps its deadline (`at`, 0 for the others), so that
/// a step can tell when one it no longer wants is due exactly when one it
/// arms is (see [`TimerSet::take_over`]).
#[derive(Default)]
struct TimerSet {
    ids: [Option<(TimerId, Timer)>; TRACKED_TIMERS],
    at: [Tick; TRACKED_TIMERS],
}

impl TimerSet {
    fn insert(&mut self, id: TimerId, timer: Timer, at: Tick) {
        match self.ids.iter().position(Option::is_none) {
            Some(i) => {
                self.ids[i] = Some((id, timer));
                self.at[i] = at;
            }
            None => debug!("more pending timers than tracked"),
        }
    }

    /// Forgets `id` (it fired).
    fn remove(&mut self, id: TimerId) {
        if let Some(slot) = self
            .ids
            .iter_mut()
            .find(|slot| slot.is_some_and(|(i, _)| i == id))
        {
            *slot = None;
        }
    }

    /// Takes out the timers `wanted` says are no longer wanted.
    fn unwanted<'a>(
        &'a mut self,
        wanted: impl Fn(Timer) -> bool + 'a,
    ) -> impl Iterator<Item = TimerId> + 'a {
        self.ids.iter_mut().filter_map(move |slot| match *slot {
            Some((id, timer)) if !wanted(timer) => {
                *slot = None;
                Some(id)
            }
            _ => None,
        })
    }

    /// A rounded pending timer that `wanted` says is no longer wanted, if
    /// there is one: its index and deadline.
    fn rounded_unwanted(&self, wanted: impl Fn(Timer) -> bool) -> Option<(usize, Tick)> {
        self.ids
            .iter()
            .zip(self.at)
            .position(|(slot, at)| at != 0 && slot.is_some_and(|(_, t)| !wanted(t)))
            .map(|i| (i, self.at[i]))
    }

    /// Timer `timer`, armed with deadline `at`, takes over the queue entry
    /// of the unwanted timer at index `i` (see [`TimerSet::rounded_unwanted`]),
    /// which is due then too: instead of a cancel and a schedule, the
    /// entry's target is changed (`retarget`). False, with nothing done,
    /// when the deadlines differ or the entry is gone.
    fn take_over(
        &mut self,
        i: usize,
        timer: Timer,
        at: Tick,
        retarget: impl FnOnce(TimerId) -> bool,
    ) -> bool {
        let Some(Some((id, _))) = self.ids.get(i).copied() else {
            return false;
        };
        if self.at[i] != at || !retarget(id) {
            return false;
        }
        self.ids[i] = Some((id, timer));
        true
    }

    /// Arms `timer`, one that may fire late, due `after` from now rounded
    /// up within `slack`: it takes over the queue entry of a rounded timer
    /// `wanted` no longer wants when both fall due at the same instant
    /// ([`TimerSet::take_over`]), else it gets an entry of its own, aimed
    /// at `target()`.
    fn schedule_rounded(
        &mut self,
        wheel: &mut Batch<'_, TimerTarget>,
        wanted: impl Fn(Timer) -> bool,
        (timer, after, slack): (Timer, Duration, Duration),
        target: impl FnOnce() -> TimerTarget,
    ) {
        if let Some((i, _)) = self.rounded_unwanted(wanted) {
            let at = wheel.deadline_within(after, slack);
            let retarget = |id| wheel.retarget(id, |t| t.set_timer(timer));
            if self.take_over(i, timer, at, retarget) {
                return;
            }
        }
        let (timer_id, at) = wheel.schedule_within_at(after, slack, target());
        self.insert(timer_id, timer, at);
    }

    fn drain(&mut self) -> impl Iterator<Item = TimerId> + '_ {
        self.ids
            .iter_mut()
            .filter_map(|slot| slot.take().map(|(id, _)| id))
    }

    /// Takes out a pending `timer`, if there is one.
    fn take(&mut self, timer: Timer) -> Option<TimerId> {
        self.ids
            .iter_mut()
            .find(|slot| slot.is_some_and(|(_, t)| t == timer))
            .and_then(Option::take)
            .map(|(id, _)| id)
    }
}

/// A server transaction in its table: like [`ClientEntry`], the full
/// machine while it works, a compact record while it lingers.
struct ServerEntry {
    id: u64,
    tx: ServerTx,
}

enum ServerTx {
    Active(Box<ActiveServer>),
    Lingering(Box<LingeringServer>),
}

struct ActiveServer {
    machine: ServerMachine,
    source: Source,
    /// Where responses go when the request's connection is gone / for UDP.
    reply: Destination,
    /// RFC 2543 keys only: the To tag of the final response, which the ACK
    /// must carry to match (§17.2.3).
    final_to_tag: Option<ByteStr>,
    /// While a 2xx awaits its ACK: the entry in `Inner::awaiting_ack`
    /// (boxed: only with `retransmit_2xx`).
    ack_key: Option<Box<AckKey>>,
    timers: TimerSet,
}

/// A server transaction in Completed (non-INVITE), Confirmed or Accepted
/// (INVITE): what answering retransmissions needs. Only for RFC 3261 keys
/// (an RFC 2543 ACK is matched with the To tag the active entry keeps).
struct LingeringServer {
    linger: ServerLinger,
    source: Source,
    /// The port of `reply_destination`: the rest is the source's (which
    /// keeps the record in a smaller allocator size class).
    reply_port: u16,
    /// Its last timer (J, I or L) while pending.
    timer: Option<TimerId>,
}

impl LingeringServer {
    /// Where responses go when the request's connection is gone / for UDP
    /// (see `reply_destination`).
    fn reply(&self) -> Destination {
        Destination {
            protocol: self.source.protocol,
            addr: SocketAddr::new(self.source.peer.ip(), self.reply_port),
        }
    }
}

impl ServerEntry {
    fn ctx(&self, key: &Arc<ServerKey>) -> ServerCtx {
        let (source, reply) = match &self.tx {
            ServerTx::Active(a) => (a.source, a.reply),
            ServerTx::Lingering(l) => (l.source, l.reply()),
        };
        ServerCtx {
            key: Arc::clone(key),
            id: self.id,
            source,
            reply,
        }
    }

    fn on_request(&mut self, request: Request) -> Actions {
        match &mut self.tx {
            ServerTx::Active(a) => a.machine.on_request(request),
            ServerTx::Lingering(l) => l.linger.on_request(request),
        }
    }

    /// Timer `timer_id` (a `timer`) fired: appends the step's actions to
    /// `out`.
    fn on_timer(&mut self, timer_id: TimerId, timer: Timer, out: &mut Actions) {
        match &mut self.tx {
            ServerTx::Active(a) => {
                a.timers.remove(timer_id);
                a.machine.on_timer(timer, out);
            }
            ServerTx::Lingering(l) => {
                if l.timer == Some(timer_id) {
                    l.timer = None;
                }
                l.linger.on_timer_into(timer, out);
            }
        }
    }

    fn on_transport_error(&mut self) -> Actions {
        match &mut self.tx {
            ServerTx::Active(a) => a.machine.on_transport_error(),
            ServerTx::Lingering(l) => l.linger.on_transport_error(),
        }
    }

    /// The To tag an RFC 2543 ACK must carry (active entries only).
    fn final_to_tag(&self) -> Option<&str> {
        match &self.tx {
            ServerTx::Active(a) => a.final_to_tag.as_deref(),
            ServerTx::Lingering(_) => None,
        }
    }

    /// Cancels every pending timer; returns the `awaiting_ack` entry.
    fn release(&mut self, wheel: &Wheel<TimerTarget>) -> Option<Box<AckKey>> {
        match &mut self.tx {
            ServerTx::Active(a) => {
                wheel.cancel_all(a.timers.drain());
                a.ack_key.take()
            }
            ServerTx::Lingering(l) => {
                wheel.cancel_all(l.timer.take());
                None
            }
        }
    }
}

/// What executing a client step needs once the table lock is released.
#[derive(Clone)]
struct ClientCtx {
    /// The table's key, shared with the transaction's timers.
    key: Arc<ClientKey>,
    id: u64,
    dest: Destination,
    events: ClientEvents,
}

#[derive(Clone)]
struct ServerCtx {
    key: Arc<ServerKey>,
    id: u64,
    source: Source,
    reply: Destination,
}

/// Keys are shared (`Arc`) between a table slot and the transaction's
/// timers: a slot and a timer hold a pointer, not a 48- or 80-byte key.
/// The `u32` of a retransmission timer ([`Timer::retransmits`]) is the
/// transport's receive drain count when the message it resends was last
/// sent ([`TransportSink::receive_drains`]), the `u16` how many more times
/// it may be held back ([`TimerConfig::deferrals_within`] its interval);
/// 0 for the others. They fill what was the target's padding: still three
/// words.
enum TimerTarget {
    Client(Arc<ClientKey>, u64, Timer, u32, u16),
    Server(Arc<ServerKey>, u64, Timer, u32, u16),
}

impl TimerTarget {
    /// Makes the target fire as `timer` (see [`TimerSet::take_over`]).
    fn set_timer(&mut self, timer: Timer) {
        match self {
            Self::Client(_, _, t, _, _) | Self::Server(_, _, t, _, _) => *t = timer,
        }
    }
}

/// A table of transactions: each slot holds its key's hash (see [`Slot`]).
type Table<K, V> = DashMap<Slot<K>, V, SlotHashing>;

/// The table of INVITE server transactions awaiting the ACK of their 2xx.
/// Keys are partly chosen by peers, so the hasher is seeded per process.
type AckTable = DashMap<AckKey, (Arc<ServerKey>, u64), foldhash::fast::RandomState>;

struct Inner {
    config: LayerConfig,
    sink: Arc<dyn TransportSink>,
    clients: Table<ClientKey, ClientEntry>,
    servers: Table<ServerKey, ServerEntry>,
    metrics: TransactionMetrics,
    /// INVITE server transactions whose 2xx is retransmitted until its ACK
    /// (which has its own branch) arrives.
    awaiting_ack: AckTable,
    wheel: Arc<Wheel<TimerTarget>>,
    incoming: mpsc::Sender<Incoming>,
    /// The TU taking what `incoming` carried, once set (see
    /// [`TransactionLayer::set_user`]).
    user: OnceLock<Weak<dyn TransactionUser>>,
    next_id: AtomicU64,
    /// The top Via sent-by values of our requests (RFC 3261 §18.1.2).
    sent_by: SentByTable,
    /// How our requests' top Vias start, up to the branch.
    via_prefixes: ViaPrefixes,
    /// `config.timers.ending_slack()`, computed once.
    ending_slack: Duration,
    /// The room made at start, which trimming keeps.
    reserve: Reserve,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.wheel.close();
    }
}

impl TransactionLayer {
    /// Creates the layer and starts its timer task (call inside a tokio
    /// runtime). Returns the channel on which the TU receives new requests,
    /// 2xx ACKs, stray responses and server transaction events.
    pub fn new(
        sink: Arc<dyn TransportSink>,
        config: LayerConfig,
    ) -> (TransactionLayer, mpsc::Receiver<Incoming>) {
        let (incoming, rx) = mpsc::channel(config.tu_queue.max(1));
        let reserve = Reserve::for_rate(config.expected_cps, &config.timers);
        let wheel = Arc::new(Wheel::with_reserve(
            reserve.timers,
            reserve.timers_per_second,
        ));
        let inner = Arc::new(Inner {
            sink,
            clients: table(reserve.clients, SlotHashing::default()),
            servers: table(reserve.servers, SlotHashing::default()),
            metrics: TransactionMetrics::default(),
            awaiting_ack: table(0, foldhash::fast::RandomState::default()),
            wheel: Arc::clone(&wheel),
            incoming,
            user: OnceLock::new(),
            next_id: AtomicU64::new(1),
            sent_by: SentByTable::default(),
            via_prefixes: ViaPrefixes::default(),
            ending_slack: config.timers.ending_slack(),
            reserve,
            config,
        });
        tokio::spawn(timer_task(wheel, Arc::downgrade(&inner)));
        (TransactionLayer { inner }, rx)
    }

    /// The timer values in use.
    pub fn timers(&self) -> &TimerConfig {
        &self.inner.config.timers
    }

    /// Hands an inbound message to the layer (the transport calls this for
    /// every message it receives). Responses go to their client
    /// transaction, retransmitted requests and non-2xx ACKs to their server
    /// transaction; new requests create one and go to the TU; the rest goes
    /// to the TU as [`Incoming::Ack`] / [`Incoming::Response`].
    ///
    /// Fails only when the message lacks the headers matching needs (the
    /// transport answers such requests 400 before they get here).
    pub async fn on_message(&self, message: Message, source: Source) -> Result<(), TxError> {
        self.receive(message, source).await.map_err(|e| match e {
            Refused::Unkeyed { error, .. } => TxError::Key(error),
            Refused::Tx(e) => e,
        })
    }

    /// [`TransactionLayer::on_message`] that hands a request it cannot key
    /// back ([`Refused::Unkeyed`]) instead of dropping it, so that the
    /// caller can answer it statelessly without checking every request's
    /// key beforehand.
    ///
    /// The message is matched and handled when this is called (it is not
    /// moved into the future); the future only finishes the sends that had
    /// to wait for the transport.
    pub fn receive(
        &self,
        message: Message,
        source: Source,
    ) -> impl Future<Output = Result<(), Refused>> + Send + 'static {
        let stepped = self.receive_now(message, source);
        async move {
            if let Some(deferred) = stepped? {
                deferred.await;
            }
            Ok(())
        }
    }

    /// [`TransactionLayer::receive`] without the future: the message is
    /// matched and handled now; what comes back is the part of its sends
    /// that has to wait for the transport, if any, for the caller to run
    /// (or spawn). For a caller that must not wait, e.g. a receive loop
    /// handing its messages straight to the layer.
    pub fn receive_now(
        &self,
        message: Message,
        source: Source,
    ) -> Result<Option<impl Future<Output = ()> + Send + 'static>, Refused> {
        match message {
            Message::Response(r) => self.inner.on_response(r, source).map_err(Refused::from),
            Message::Request(r) => self.inner.on_request(r, source),
        }
    }

    /// Starts a client transaction for `request` (INVITE or non-INVITE, not
    /// ACK) towards `dest`. Its events arrive on the returned handle.
    ///
    /// The transaction starts when this is called (the request is sent if
    /// the transport takes it at once); the future only finishes the sends
    /// that had to wait, so the request is not moved into it. A send the
    /// transport refuses at once (e.g. an unreachable peer) is returned as
    /// [`TxError::Send`], the transaction ended with no event, so that the
    /// caller handles it in order with the rest of its step; a later
    /// failure (a queued or waiting send, a retransmission) is a
    /// [`ClientEventKind::TransportError`] event.
    pub fn send_request(
        &self,
        request: Request,
        dest: Destination,
    ) -> impl Future<Output = Result<ClientTransaction, TxError>> + Send + 'static {
        let (tx, events) = mpsc::channel(self.inner.config.client_queue.max(1));
        let started = self
            .inner
            .start_client(request, dest, ClientEvents::Channel(tx), First::Caller)
            .map(|(key, deferred)| {
                let handle = ClientTransaction {
                    key,
                    events,
                    layer: self.clone(),
                };
                (handle, deferred)
            });
        finish_with(started)
    }

    /// Like [`TransactionLayer::send_request`], with the events going to a
    /// channel of the caller's (e.g. one per call for all its transactions).
    /// Started when called, as [`TransactionLayer::send_request`]. The
    /// key returned (and carried by every [`ClientEvent`]) is the one the
    /// layer's table holds.
    pub fn send_request_with(
        &self,
        request: Request,
        dest: Destination,
        events: mpsc::Sender<ClientEvent>,
    ) -> impl Future<Output = Result<Arc<ClientKey>, TxError>> + Send + 'static {
        finish_with(self.inner.start_client(
            request,
            dest,
            ClientEvents::Channel(events),
            First::Caller,
        ))
    }

    /// [`TransactionLayer::send_request_with`] with the events going to
    /// `events`, or with `None` to the layer's [`TransactionUser`] as
    /// [`TuItem::Client`] (see [`TransactionLayer::set_user`]; dropped when
    /// there is none).
    pub fn send_request_to(
        &self,
        request: Request,
        dest: Destination,
        events: Option<mpsc::Sender<ClientEvent>>,
    ) -> impl Future<Output = Result<Arc<ClientKey>, TxError>> + Send + 'static {
        let events = events.map_or(ClientEvents::User, ClientEvents::Channel);
        finish_with(
            self.inner
                .start_client(request, dest, events, First::Caller),
        )
    }

    /// From now on, what the layer passed up through the channel
    /// [`TransactionLayer::new`] returned goes to `user` instead, directly,
    /// from the step that makes it (as do the events of client transactions
    /// started with [`TransactionLayer::send_request_to`] without a channel): nothing
    /// more comes through the channel. Kept weakly (the user holds the
    /// layer); once it is dropped, items are dropped. Set once: false if a
    /// user was set before.
    pub fn set_user(&self, user: &Arc<dyn TransactionUser>) -> bool {
        self.inner.user.set(Arc::downgrade(user)).is_ok()
    }

    /// Cancels the INVITE client transaction `key` (§9.1): sends a CANCEL
    /// as its own client transaction (events to the INVITE's channel, with
    /// a CANCEL key) once a provisional response has arrived; before that
    /// the CANCEL waits for the first one. If no final response follows
    /// within 64*T1, the INVITE ends with [`ClientEventKind::Timeout`].
    pub async fn cancel(&self, key: &ClientKey) -> Result<(), TxError> {
        if let Some(deferred) = self.inner.cancel(key)? {
            deferred.await;
        }
        Ok(())
    }

    /// Sends `response` on the server transaction it answers, found from
    /// its top Via (branch, sent-by) and CSeq method as §17.2.3 matches the
    /// request. Only for requests with an RFC 3261 branch; an RFC 2543
    /// request is answered through its [`ServerTransaction`] handle.
    ///
    /// The response is handled when this is called, as by
    /// [`ServerTransaction::respond`].
    pub fn respond(
        &self,
        response: Response,
    ) -> impl Future<Output = Result<(), TxError>> + Send + 'static {
        finish(self.respond_now(&response))
    }

    fn respond_now(&self, response: &Response) -> Result<Option<Deferred>, TxError> {
        let key = ServerKey::for_response(response)?;
        let id = self
            .inner
            .servers
            .get(&key)
            .map(|e| e.id)
            .ok_or(TxError::NoTransaction)?;
        self.inner.respond(&key, id, response)
    }

    /// Sends a request outside any transaction: the ACK for a 2xx
    /// (§13.2.2.4), which the TU sends (and resends) itself.
    pub async fn send_stateless_request(
        &self,
        request: &Request,
        dest: Destination,
    ) -> Result<(), TxError> {
        let data = super::encode_request(request);
        match self.inner.sink.try_send_request(data, dest) {
            TrySend::Done(result) => Ok(result?),
            // No transaction to tell; the transport counts a failure.
            TrySend::Queued(_) => Ok(()),
            TrySend::WouldWait(data) => Ok(self.inner.sink.send_request(data, dest).await?),
        }
    }

    /// Sends a response outside any transaction (e.g. a 2xx retransmission
    /// after its INVITE server transaction ended) back to where its request
    /// came from, per §18.2.2.
    pub async fn send_stateless_response(
        &self,
        response: &Response,
        source: Source,
    ) -> Result<(), TxError> {
        let via = response
            .headers
            .top_via_ref()
            .map_err(|source| super::KeyError::Header {
                header: "Via",
                source,
            })?;
        let dest = reply_destination(via, &source);
        let data = super::encode_response(response);
        match self.inner.sink.try_send_response(data, source, dest) {
            TrySend::Done(result) => Ok(result?),
            TrySend::Queued(_) => Ok(()),
            TrySend::WouldWait(data) => {
                Ok(self.inner.sink.send_response(data, source, dest).await?)
            }
        }
    }

    /// The INVITE server transaction a CANCEL request cancels (§9.2), if it
    /// still exists.
    pub fn find_invite(&self, cancel: &Request) -> Option<ServerTransaction> {
        let key = ServerKey::invite_for_cancel(cancel).ok()?;
        let entry = self.inner.servers.get(&key)?;
        Some(ServerTransaction {
            key: Arc::clone(entry.key().key()),
            id: entry.id,
            inner: Arc::clone(&self.inner),
        })
    }

    /// The layer's counters, with the `pending_timers` gauge refreshed.
    pub fn metrics(&self) -> &TransactionMetrics {
        let pending = u64::try_from(self.inner.wheel.len()).unwrap_or(u64::MAX);
        self.inner
            .metrics
            .pending_timers
            .store(pending, Ordering::Relaxed);
        &self.inner.metrics
    }

    /// Live client and server transactions.
    pub fn transaction_counts(&self) -> (usize, usize) {
        (self.inner.clients.len(), self.inner.servers.len())
    }

    /// Timers scheduled that have neither fired nor been cancelled. Every
    /// one belongs to a live transaction: a transaction's pending timers are
    /// cancelled when it terminates.
    pub fn pending_timers(&self) -> usize {
        self.inner.wheel.len()
    }
}

/// A client transaction started by [`TransactionLayer::send_request`].
#[derive(Debug)]
pub struct ClientTransaction {
    key: Arc<ClientKey>,
    events: mpsc::Receiver<ClientEvent>,
    layer: TransactionLayer,
}

impl ClientTransaction {
    /// The transaction's key.
    pub fn key(&self) -> &ClientKey {
        &self.key
    }

    /// The next event; `None` once the transaction (and its CANCEL, if any)
    /// are gone.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// Cancels this INVITE (see [`TransactionLayer::cancel`]); the CANCEL's
    /// events arrive on this handle too.
    pub async fn cancel(&self) -> Result<(), TxError> {
        self.layer.cancel(&self.key).await
    }
}

/// A handle to a server transaction, to respond on it. Cheap to clone.
#[derive(Clone)]
pub struct ServerTransaction {
    key: Arc<ServerKey>,
    id: u64,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServerTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTransaction")
            .field("key", &self.key)
            .field("id", &self.id)
            .finish()
    }
}

impl ServerTransaction {
    /// The transaction's key.
    pub fn key(&self) -> &ServerKey {
        &self.key
    }

    /// Sends `response` on this transaction. Fails with
    /// [`TxError::ResponseNotAllowed`] when the state does not allow it
    /// (e.g. a second final response) and [`TxError::NoTransaction`] once
    /// the transaction has terminated.
    ///
    /// The response is handled (encoded, sent if the transport takes it at
    /// once, the transaction stepped) when this is called, not when the
    /// future is first polled: the future only finishes the sends that
    /// had to wait, so the response is not moved into it.
    pub fn respond(
        &self,
        response: Response,
    ) -> impl Future<Output = Result<(), TxError>> + Send + 'static {
        self.respond_ref(&response)
    }

    /// [`ServerTransaction::respond`] with the response lent (the layer
    /// only reads it): a TU that keeps its responses in a list sends them
    /// without moving each one out.
    pub fn respond_ref(
        &self,
        response: &Response,
    ) -> impl Future<Output = Result<(), TxError>> + Send + 'static {
        finish(self.inner.respond(&self.key, self.id, response))
    }
}

impl Inner {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    // ---- client side ----

    /// The key of a request we send. Its top Via is parsed in full only
    /// when it does not start as one parsed before (see [`ViaPrefixes`]):
    /// then its sent-by is learned (§18.1.2) and its prefix remembered.
    fn client_key(&self, request: &Request) -> Result<ClientKey, KeyError> {
        let top = request.headers.get(&HeaderName::Via);
        if let Some(branch) = top.and_then(|v| self.via_prefixes.branch(v)) {
            return Ok(ClientKey::of_token(branch, request.method.clone()));
        }
        let (key, via) = ClientKey::for_request_with_via(request)?;
        self.sent_by.learn(SentBy::of(via));
        if let Some(top) = top {
            self.via_prefixes.learn(top, via);
        }
        Ok(key)
    }

    /// Starts a client transaction for `request` and sends it. With
    /// `First::Caller`, a first send that fails at once is the caller's
    /// error ([`TxError::Send`], the transaction removed) instead of a
    /// [`ClientEventKind::TransportError`] handed to `events` from inside
    /// this call: the TU learns of it in order, from the step that sent the
    /// request, not nested in it (its user may run it inline, see
    /// [`TransactionUser`]).
    fn start_client(
        self: &Arc<Self>,
        request: Request,
        dest: Destination,
        events: ClientEvents,
        first: First,
    ) -> Result<(Arc<ClientKey>, Option<Deferred>), TxError> {
        if request.method == Method::Ack {
            return Err(TxError::AckTransaction);
        }
        let key = Arc::new(self.client_key(&request)?);
        // Only arms Timer Cancelled on the INVITE: nothing is sent, so the
        // CANCEL below cannot overtake anything.
        let cancelled = if request.method == Method::Cancel {
            self.cancel_sent(&key.with_method(Method::Invite))
        } else {
            None
        };
        let reliable = dest.protocol.is_reliable();
        let id = self.next_id();
        // Filled in place (see `on_request`).
        let mut actions = Actions::default();
        match self.clients.entry(Slot::new(Arc::clone(&key))) {
            Entry::Occupied(_) => return Err(TxError::Duplicate),
            Entry::Vacant(v) => {
                let timers = &self.config.timers;
                let machine = if request.method == Method::Invite {
                    let m = InviteClient::new_into(request, reliable, timers, &mut actions);
                    ClientMachine::Invite(m)
                } else {
                    let m = NonInviteClient::new_into(&request, reliable, timers, &mut actions);
                    ClientMachine::NonInvite(m)
                };
                TransactionMetrics::inc(&self.metrics.client_transactions);
                let mut entry = ClientEntry {
                    id,
                    tx: ClientTx::Active(Box::new(ActiveClient {
                        machine,
                        dest,
                        events: events.clone(),
                        timers: TimerSet::default(),
                    })),
                };
                self.arm_client(&key, &mut entry, &mut actions);
                v.insert(entry);
                debug!(branch = key.branch(), method = %key.method(), %dest, "client transaction");
            }
        }
        let key_out = Arc::clone(&key);
        let ctx = ClientCtx {
            key,
            id,
            dest,
            events,
        };
        // `cancelled` only arms Timer Cancelled: nothing was left to wait.
        let deferred = self.step_client(&ctx, &mut actions, first)?;
        Ok((key_out, chain(cancelled, deferred)))
    }

    /// Steps client transaction `key` (if it is still transaction `id`,
    /// when given) under its shard lock; the timers among the step's
    /// actions are armed there.
    ///
    /// `f` leaves the step's actions in `actions` (see `lock_server`).
    fn lock_client<R>(
        &self,
        key: &ClientKey,
        id: Option<u64>,
        actions: &mut Actions,
        f: impl FnOnce(&mut ClientEntry, &mut Actions) -> R,
    ) -> Option<(R, ClientCtx)> {
        let mut entry = self.clients.get_mut(key)?;
        if id.is_some_and(|id| id != entry.id) {
            return None;
        }
        let (slot, entry) = entry.pair_mut();
        let key = slot.key();
        let r = f(entry, actions);
        self.arm_client(key, entry, actions);
        Some((r, entry.ctx(key)))
    }

    /// After a step of client transaction `key`: cancels the pending
    /// timers its machine no longer wants, arms the timers among `actions`
    /// and, once the machine only lingers, replaces it by its compact
    /// record, which keeps just the last timer.
    fn arm_client(&self, key: &Arc<ClientKey>, entry: &mut ClientEntry, actions: &mut Actions) {
        let id = entry.id;
        let ClientTx::Active(active) = &mut entry.tx else {
            // A lingering record schedules nothing; should it, the timer
            // still fires (untracked, as any beyond `TRACKED_TIMERS`).
            let mut wheel = self.wheel.batch();
            actions.take_schedules(|timer, after| {
                let target = TimerTarget::Client(Arc::clone(key), id, timer, 0, 0);
                wheel.schedule_within(after, self.slack(timer), target);
            });
            return;
        };
        let ActiveClient {
            machine,
            timers,
            dest,
            events,
        } = &mut **active;
        let mut wheel = self.wheel.batch();
        actions.take_schedules(|timer, after| {
            if timer.may_fire_late() {
                // Timer B made unwanted by the final response that arms
                // D or M: when both are due at the same instant (the
                // response came within the slack), the new timer takes
                // over B's queue entry.
                timers.schedule_rounded(
                    &mut wheel,
                    |t| machine.wants_timer(t),
                    (timer, after, self.ending_slack),
                    || TimerTarget::Client(Arc::clone(key), id, timer, 0, 0),
                );
                return;
            }
            let (drains, holds) = self.resend_bounds(timer, after, None, *dest);
            let target = TimerTarget::Client(Arc::clone(key), id, timer, drains, holds);
            timers.insert(wheel.schedule(after, target), timer, 0);
        });
        wheel.cancel_all(timers.unwanted(|t| machine.wants_timer(t)));
        let Some(linger) = machine.linger() else {
            return;
        };
        let timer = timers.take(linger.last_timer());
        wheel.cancel_all(timers.drain());
        entry.tx = ClientTx::Lingering(Box::new(LingeringClient {
            linger,
            dest: *dest,
            events: events.clone(),
            timer,
        }));
    }

    fn on_response(
        self: &Arc<Self>,
        response: Response,
        source: Source,
    ) -> Result<Option<Deferred>, TxError> {
        // A top Via that starts as our requests' do (see `ViaPrefixes`):
        // only its branch is read, and its sent-by, one we learned before
        // the prefix, is ours. Parameters after the branch are not read
        // (nor checked) on this path, as for the requests we send.
        let top = response.headers.get(&HeaderName::Via);
        let lookup = match top.and_then(|v| self.via_prefixes.branch(v)) {
            Some(branch) => ClientKey::for_response_with_branch(branch, &response)?,
            None => {
                let (lookup, via) = ClientKey::for_response_with_via(&response)?;
                // §18.1.2: not a value we put in our requests, so not an
                // answer to one; checked before matching, stray responses
                // included.
                let sent_by = SentBy::of(via);
                if !self.sent_by.is_ours(&sent_by) {
                    debug!(
                        %sent_by,
                        status = response.status.as_u16(),
                        peer = %source.peer,
                        "response discarded: its top Via sent-by is not ours"
                    );
                    TransactionMetrics::inc(&self.metrics.foreign_sent_by);
                    return Ok(None);
                }
                lookup
            }
        };
        let Some(mut entry) = self.clients.get_mut(&lookup) else {
            debug!(
                branch = lookup.branch(),
                status = response.status.as_u16(),
                "stray response"
            );
            TransactionMetrics::inc(&self.metrics.stray_responses);
            self.pass_up(
                Incoming::Response {
                    response: Box::new(response),
                    source,
                },
                Urgency::Refusable,
            );
            return Ok(None);
        };
        // The table's copy: `lookup` shares the response's bytes, and what
        // is made of the key here (timers, events for the TU) may outlive
        // them.
        let key = Arc::clone(entry.key().key());
        drop(lookup);
        let e = &mut *entry;
        let mut actions = Actions::default();
        e.on_response(response, &mut actions);
        let mut pending_cancel = e
            .invite_machine()
            .and_then(InviteClient::take_pending_cancel);
        self.arm_client(&key, e, &mut actions);
        if let Some((_, cancel_actions)) = &mut pending_cancel {
            self.arm_client(&key, e, cancel_actions);
        }
        let ctx = e.ctx(&key);
        drop(entry);
        let mut deferred = self.run_client(&ctx, &mut actions);
        if let Some((cancel, mut actions)) = pending_cancel {
            // The pending CANCEL's actions only arm Timer Cancelled.
            deferred = chain(deferred, self.run_client(&ctx, &mut actions));
            let (_, started) = self.start_client(cancel, ctx.dest, ctx.events, First::Machine)?;
            deferred = chain(deferred, started);
        }
        Ok(deferred)
    }

    fn cancel(self: &Arc<Self>, key: &ClientKey) -> Result<Option<Deferred>, TxError> {
        let mut actions = Actions::default();
        let (result, ctx) = self
            .lock_client(key, None, &mut actions, |e, actions| {
                match e.invite_machine() {
                    Some(m) => m.cancel().map(|(cancel, step)| {
                        *actions = step;
                        cancel
                    }),
                    // A lingering INVITE has its final response.
                    None => Err(TxError::NothingToCancel),
                }
            })
            .ok_or(TxError::NoTransaction)?;
        let cancel = result?;
        // Only Timer Cancelled, armed already: nothing to overtake.
        let mut deferred = self.run_client(&ctx, &mut actions);
        if let Some(cancel) = cancel {
            let (_, started) = self.start_client(cancel, ctx.dest, ctx.events, First::Machine)?;
            deferred = chain(deferred, started);
        }
        Ok(deferred)
    }

    /// A CANCEL is going out for the INVITE client transaction `invite`
    /// (built by the TU or by `cancel`): its final response is now awaited
    /// 64*T1 at most (§9.1).
    fn cancel_sent(self: &Arc<Self>, invite: &ClientKey) -> Option<Deferred> {
        let mut actions = Actions::default();
        let ((), ctx) = self.lock_client(invite, None, &mut actions, |e, actions| {
            if let Some(m) = e.invite_machine() {
                *actions = m.on_cancel_sent();
            }
        })?;
        self.run_client(&ctx, &mut actions)
    }

    /// Carries out a client machine's actions as far as that is possible
    /// without waiting; a failed send feeds the machine a transport error
    /// and carries out what that yields. Returns the rest when a send has
    /// to wait (see [`Inner::finish_client`]).
    // `actions` is the caller's list, borrowed: taking it by value copied
    // the 424-byte list on every step (callgrind).
    fn run_client(self: &Arc<Self>, ctx: &ClientCtx, actions: &mut Actions) -> Option<Deferred> {
        // With `First::Machine` a failure is the machine's: never an error.
        self.step_client(ctx, actions, First::Machine)
            .unwrap_or_default()
    }

    /// [`Inner::run_client`]; with `First::Caller` (the first step of a
    /// transaction the TU starts) a send failing at once ends the
    /// transaction and is returned instead (see [`Inner::start_client`]).
    fn step_client(
        self: &Arc<Self>,
        ctx: &ClientCtx,
        actions: &mut Actions,
        first: First,
    ) -> Result<Option<Deferred>, SendError> {
        let key = &ctx.key;
        loop {
            let mut failed = false;
            {
                let mut iter = actions.drain();
                while let Some(action) = iter.next() {
                    let Action::Send(data) = action else {
                        self.client_action(ctx, action);
                        continue;
                    };
                    if failed {
                        continue;
                    }
                    match self.sink.try_send_request(data, ctx.dest) {
                        TrySend::Done(Ok(())) => {}
                        TrySend::Done(Err(e)) => {
                            debug!(branch = key.branch(), error = %e, "send failed");
                            if first == First::Caller {
                                // Its other actions (none but the send: the
                                // timers are armed) dropped with it.
                                drop(iter);
                                self.end_unsent_client(ctx);
                                return Err(e);
                            }
                            failed = true;
                        }
                        TrySend::Queued(outcome) => self.watch_client_send(ctx, outcome),
                        TrySend::WouldWait(data) => {
                            let mut rest = Actions::default();
                            rest.push(Action::Send(data));
                            iter.for_each(|a| rest.push(a));
                            let (inner, ctx) = (Arc::clone(self), ctx.clone());
                            return Ok(Some(Box::pin(inner.finish_client(ctx, rest))));
                        }
                    }
                }
            }
            if !failed {
                return Ok(None);
            }
            let step = self.lock_client(key, Some(ctx.id), actions, |e, next| {
                *next = e.on_transport_error();
            });
            if step.is_none() {
                return Ok(None);
            }
        }
    }

    /// Ends client transaction `ctx` whose first send failed at once, the
    /// failure being the caller's: it goes from the table with its timers,
    /// counted as a transport error, and tells its events nothing.
    fn end_unsent_client(&self, ctx: &ClientCtx) {
        TransactionMetrics::inc(&self.metrics.transport_errors);
        if let Some((_, mut entry)) = self.clients.remove_if(&*ctx.key, |_, e| e.id == ctx.id) {
            entry.release(&self.wheel);
        }
    }

    /// A send of client transaction `ctx` queued behind a connection being
    /// opened: the step goes on without waiting for it (one dead peer must
    /// not hold up the caller, who steps every transaction); a task waits
    /// for the outcome and, should the message not go out, feeds the
    /// machine the transport error (§17.1.1.2, §17.1.2.2) if it is still
    /// the same transaction.
    fn watch_client_send(self: &Arc<Self>, ctx: &ClientCtx, outcome: SendFuture<'static>) {
        let (inner, ctx) = (Arc::clone(self), ctx.clone());
        tokio::spawn(async move {
            let Err(e) = outcome.await else { return };
            debug!(branch = ctx.key.branch(), error = %e, "queued send failed");
            let mut actions = Actions::default();
            let Some(((), ctx)) =
                inner.lock_client(&ctx.key, Some(ctx.id), &mut actions, |e, next| {
                    *next = e.on_transport_error();
                })
            else {
                return;
            };
            if let Some(deferred) = inner.run_client(&ctx, &mut actions) {
                deferred.await;
            }
        });
    }

    /// What [`Inner::run_client`] left: carries out `actions` with async
    /// sends.
    async fn finish_client(self: Arc<Self>, ctx: ClientCtx, actions: Actions) {
        let key = &ctx.key;
        let mut actions = actions;
        loop {
            let mut failed = false;
            for action in actions.drain() {
                let Action::Send(data) = action else {
                    self.client_action(&ctx, action);
                    continue;
                };
                if failed {
                    continue;
                }
                if let Err(e) = self.sink.send_request(data, ctx.dest).await {
                    debug!(branch = key.branch(), error = %e, "send failed");
                    failed = true;
                }
            }
            if !failed {
                return;
            }
            let step = self.lock_client(key, Some(ctx.id), &mut actions, |e, next| {
                *next = e.on_transport_error();
            });
            if step.is_none() {
                return;
            }
        }
    }

    /// Carries out one action of a client machine other than a send.
    fn client_action(&self, ctx: &ClientCtx, action: Action) {
        let key = &ctx.key;
        match action {
            // Sends are the caller's.
            Action::Send(_) => {}
            // Armed under the transaction's lock already; any other still
            // fires (its transaction just cannot cancel it).
            Action::Schedule(timer, after) => {
                self.wheel.schedule(
                    after,
                    TimerTarget::Client(Arc::clone(key), ctx.id, timer, 0, 0),
                );
            }
            Action::Deliver(event) => {
                self.count_failure(&event);
                let (event, urgency) = match event {
                    TuEvent::Response(r) => {
                        let provisional = r.status.is_provisional();
                        let urgency = if provisional {
                            Urgency::Refusable
                        } else {
                            Urgency::Must
                        };
                        (ClientEventKind::Response(r), urgency)
                    }
                    TuEvent::Timeout => (ClientEventKind::Timeout, Urgency::Must),
                    TuEvent::TransportError => (ClientEventKind::TransportError, Urgency::Must),
                    // Client machines never deliver ACKs.
                    TuEvent::Ack(_) => return,
                };
                let event = ClientEvent {
                    key: Arc::clone(key),
                    event,
                };
                self.pass_event(&ctx.events, event, urgency);
            }
            Action::Terminate => {
                debug!(branch = key.branch(), method = %key.method(), "client transaction terminated");
                if let Some((_, mut entry)) = self.clients.remove_if(&**key, |_, e| e.id == ctx.id)
                {
                    entry.release(&self.wheel);
                }
                if self.config.terminated_events {
                    let event = ClientEvent {
                        key: Arc::clone(key),
                        event: ClientEventKind::Terminated,
                    };
                    self.pass_event(&ctx.events, event, Urgency::Must);
                }
            }
        }
    }

    // ---- server side ----

    /// Fails ([`Refused::Unkeyed`]) before doing anything when `request`
    /// has no key.
    fn on_request(
        self: &Arc<Self>,
        request: Request,
        source: Source,
    ) -> Result<Option<Deferred>, Refused> {
        // The request keeps its top Via parsed (the transport parsed it to
        // stamp it): borrowed here, not parsed or copied again.
        let via = match request.headers.top_via_ref() {
            Ok(via) => via,
            Err(source) => {
                let error = KeyError::Header {
                    header: "Via",
                    source,
                };
                return Err(unkeyed(request, error));
            }
        };
        if request.method == Method::Ack {
            return match ServerKey::for_ack_lookup(&request, via) {
                Ok(lookup) => Ok(self.on_ack(&lookup, request, source)),
                Err(error) => Err(unkeyed(request, error)),
            };
        }
        let (key, reply) = match ServerKey::for_request_via(&request, via) {
            Ok(key) => (Arc::new(key), reply_destination(via, &source)),
            Err(error) => return Err(unkeyed(request, error)),
        };
        let id = self.next_id();
        let reliable = source.protocol.is_reliable();
        // Filled in place rather than returned with the rest: the list is
        // large, and every move of it a copy.
        let mut actions = Actions::default();
        // A new request stays in `request` until it goes to the TU: not
        // moved through the match (each move of it is a copy).
        let ctx = match self.servers.entry(Slot::new(key)) {
            Entry::Occupied(mut o) => {
                TransactionMetrics::inc(&self.metrics.retransmissions_absorbed);
                // The table's key, which the timers share.
                let key = Arc::clone(o.key().key());
                let entry = o.get_mut();
                let ctx = entry.ctx(&key);
                actions = entry.on_request(request);
                self.arm_server(&key, entry, &mut actions);
                // Unlocked before the actions are carried out.
                drop(o);
                return Ok(self.run_server(&ctx, &mut actions));
            }
            Entry::Vacant(v) => {
                let timers = &self.config.timers;
                let machine = if request.method == Method::Invite {
                    let mut m = InviteServer::new_into(&request, reliable, timers, &mut actions);
                    if self.config.retransmit_2xx {
                        m.retransmit_2xx();
                    }
                    ServerMachine::Invite(m)
                } else {
                    ServerMachine::NonInvite(NonInviteServer::new_into(
                        reliable,
                        timers,
                        &mut actions,
                    ))
                };
                debug!(key = ?v.key(), method = %request.method, peer = %source.peer, "server transaction");
                TransactionMetrics::inc(&self.metrics.server_transactions);
                let mut entry = ServerEntry {
                    id,
                    tx: ServerTx::Active(Box::new(ActiveServer {
                        machine,
                        source,
                        reply,
                        final_to_tag: None,
                        ack_key: None,
                        timers: TimerSet::default(),
                    })),
                };
                let key = Arc::clone(v.key().key());
                self.arm_server(&key, &mut entry, &mut actions);
                v.insert(entry);
                ServerCtx {
                    key,
                    id,
                    source,
                    reply,
                }
            }
        };
        let mut deferred = self.run_server(&ctx, &mut actions);
        let tx = ServerTransaction {
            key: ctx.key,
            id,
            inner: Arc::clone(self),
        };
        // Built in the call (a named item was one more copy of it).
        let refused = self.offer(Incoming::Request(Box::new(ServerRequest {
            request,
            source,
            tx,
        })));
        if let Some(Incoming::Request(r)) = refused {
            debug!("TU queue full: 503");
            TransactionMetrics::inc(&self.metrics.overload_rejected);
            if let Some(refusals) = &self.config.refusals {
                refusals.refused(&r.request, StatusCode::SERVICE_UNAVAILABLE);
            }
            let response = overload_response(&r.request, self.config.overload_retry_after);
            // Only a transaction that vanished meanwhile fails here.
            if let Ok(sent) = self.respond(&r.tx.key, r.tx.id, &response) {
                deferred = chain(deferred, sent);
            }
        }
        Ok(deferred)
    }

    /// `lookup` shares the ACK's bytes: what outlives this call uses the
    /// table's key.
    fn on_ack(
        self: &Arc<Self>,
        lookup: &ServerKey,
        ack: Request,
        source: Source,
    ) -> Option<Deferred> {
        match self.servers.get_mut(lookup) {
            Some(mut entry) if ack_matches(lookup, &entry, &ack) => {
                TransactionMetrics::inc(&self.metrics.acks_absorbed);
                if let ServerTx::Lingering(l) = &entry.tx {
                    if matches!(l.linger, ServerLinger::Accepted { .. }) {
                        // RFC 6026 §7.1: the ACK for the 2xx is the TU's.
                        // All the record does with it is hand it up
                        // (`ServerLinger::on_request`): done here, so the
                        // request is boxed once, into the item, and not
                        // copied on the way.
                        drop(entry);
                        let ack = Incoming::Ack {
                            request: Box::new(ack),
                            source,
                        };
                        self.pass_up(ack, Urgency::Refusable);
                        return None;
                    }
                }
                let (slot, e) = entry.pair_mut();
                let key = slot.key();
                let ctx = ServerCtx {
                    source,
                    ..e.ctx(key)
                };
                let mut actions = e.on_request(ack);
                self.arm_server(key, e, &mut actions);
                // Unlocked before the actions are carried out.
                drop(entry);
                return self.run_server(&ctx, &mut actions);
            }
            _ => {}
        }
        // The ACK for a 2xx (its own branch) or one matching nothing: the
        // TU's. Boxed once, into the item for the TU.
        self.ack_for_2xx(&ack);
        let item = Incoming::Ack {
            request: Box::new(ack),
            source,
        };
        self.pass_up(item, Urgency::Refusable);
        None
    }

    /// Stops the 2xx retransmissions an ACK (for a 2xx) answers.
    fn ack_for_2xx(&self, ack: &Request) {
        if self.awaiting_ack.is_empty() {
            return;
        }
        let Some(ack_key) = AckKey::of(&ack.headers) else {
            return;
        };
        let Some((_, (key, id))) = self.awaiting_ack.remove(&ack_key) else {
            return;
        };
        if let Some(mut entry) = self.servers.get_mut(&*key) {
            if entry.id == id {
                let e = &mut *entry;
                if let ServerTx::Active(active) = &mut e.tx {
                    active.ack_key = None;
                    if let ServerMachine::Invite(m) = &mut active.machine {
                        m.on_2xx_ack();
                    }
                }
                // Now it may only linger.
                self.arm_server(&key, e, &mut Actions::default());
            }
        }
    }

    /// Steps server transaction `key` if it is still transaction `id`,
    /// under its shard lock; the timers among the step's actions are armed
    /// there. `f` fails without a step (no actions).
    ///
    /// `f` leaves the step's actions in `actions` (rather than returning
    /// them: each move of the list is a copy of a few hundred bytes).
    fn lock_server(
        &self,
        key: &ServerKey,
        id: u64,
        actions: &mut Actions,
        f: impl FnOnce(&Arc<ServerKey>, &mut ServerEntry, &mut Actions) -> Result<(), TxError>,
    ) -> Option<Result<ServerCtx, TxError>> {
        let mut entry = self.servers.get_mut(key)?;
        if entry.id != id {
            return None;
        }
        let (slot, entry) = entry.pair_mut();
        let key = slot.key();
        if let Err(e) = f(key, entry, actions) {
            return Some(Err(e));
        }
        self.arm_server(key, entry, actions);
        Some(Ok(entry.ctx(key)))
    }

    /// After a step of server transaction `key` (see `arm_client`). An
    /// entry lingers only with an RFC 3261 key (an RFC 2543 ACK is matched
    /// by the To tag the active entry keeps) and no 2xx of its own awaiting
    /// an ACK.
    fn arm_server(&self, key: &Arc<ServerKey>, entry: &mut ServerEntry, actions: &mut Actions) {
        let id = entry.id;
        let ServerTx::Active(active) = &mut entry.tx else {
            // See `arm_client`.
            let mut wheel = self.wheel.batch();
            actions.take_schedules(|timer, after| {
                let target = TimerTarget::Server(Arc::clone(key), id, timer, 0, 0);
                wheel.schedule_within(after, self.slack(timer), target);
            });
            return;
        };
        let ActiveServer {
            machine,
            timers,
            source,
            reply,
            ack_key,
            ..
        } = &mut **active;
        let mut wheel = self.wheel.batch();
        actions.take_schedules(|timer, after| {
            if timer.may_fire_late() {
                // Timer Unanswered made unwanted by the final response
                // that arms J or L takes over as it (see `arm_client`).
                timers.schedule_rounded(
                    &mut wheel,
                    |t| machine.wants_timer(t),
                    (timer, after, self.ending_slack),
                    || TimerTarget::Server(Arc::clone(key), id, timer, 0, 0),
                );
                return;
            }
            let local = Some(source.local);
            let (drains, holds) = self.resend_bounds(timer, after, local, *reply);
            let target = TimerTarget::Server(Arc::clone(key), id, timer, drains, holds);
            timers.insert(wheel.schedule(after, target), timer, 0);
        });
        wheel.cancel_all(timers.unwanted(|t| machine.wants_timer(t)));
        if ack_key.is_some() || key.is_rfc2543() {
            return;
        }
        let Some(mut linger) = machine.linger() else {
            return;
        };
        if let ServerLinger::Accepted { drains, .. } = &mut linger {
            // The 2xx goes out after this step: the count at its send, for
            // the TU's retransmissions of it (`ServerLinger::resend_2xx`).
            let now = self.sink.receive_drains(Some(source.local), *reply);
            *drains = now.unwrap_or(0);
        }
        let timer = timers.take(linger.last_timer());
        wheel.cancel_all(timers.drain());
        entry.tx = ServerTx::Lingering(Box::new(LingeringServer {
            linger,
            source: *source,
            reply_port: reply.addr.port(),
            timer,
        }));
    }

    /// The TU's `response` on server transaction `key` (if it is still
    /// transaction `id`). Borrowed: the machines only encode it.
    fn respond(
        self: &Arc<Self>,
        key: &ServerKey,
        id: u64,
        response: &Response,
    ) -> Result<Option<Deferred>, TxError> {
        let mut actions = Actions::default();
        let ctx = self
            .lock_server(key, id, &mut actions, |table_key, entry, actions| {
                let entry_id = entry.id;
                let entry = match &mut entry.tx {
                    ServerTx::Active(active) => active,
                    ServerTx::Lingering(l) => {
                        let (local, reply) = (Some(l.source.local), l.reply());
                        if let Some((last, skipped)) = l.linger.resend_2xx(response) {
                            if !*skipped && !self.sink.drained_since(local, reply, *last) {
                                // The ACK may be queued unread; the TU's
                                // next retransmission comes at its next
                                // interval, and goes out whether or not
                                // the receive side has drained by then.
                                *skipped = true;
                                TransactionMetrics::inc(
                                    &self.metrics.response_retransmissions_deferred,
                                );
                                return Ok(());
                            }
                            *skipped = false;
                            *last = self.sink.receive_drains(local, reply).unwrap_or(0);
                        }
                        *actions = l.linger.on_tu_response(response)?;
                        return Ok(());
                    }
                };
                let status = response.status;
                if key.is_rfc2543() && !status.is_provisional() {
                    entry.final_to_tag = to_tag(response);
                }
                let first_2xx = status.is_success()
                    && entry.ack_key.is_none()
                    && matches!(&entry.machine, ServerMachine::Invite(m)
                        if m.state() == InviteServerState::Proceeding);
                let ack_key = if first_2xx && self.config.retransmit_2xx {
                    AckKey::of(&response.headers)
                } else {
                    None
                };
                entry.machine.on_tu_response(response, actions)?;
                if let Some(ack_key) = ack_key {
                    self.awaiting_ack
                        .insert(ack_key.clone(), (Arc::clone(table_key), entry_id));
                    entry.ack_key = Some(Box::new(ack_key));
                }
                Ok(())
            })
            .ok_or(TxError::NoTransaction)??;
        Ok(self.run_server(&ctx, &mut actions))
    }

    /// Carries out a server machine's actions as far as that is possible
    /// without waiting (see `run_client`). `ctx.source` is where an ACK
    /// delivered to the TU came from.
    // See `run_client` for the borrowed list.
    fn run_server(self: &Arc<Self>, ctx: &ServerCtx, actions: &mut Actions) -> Option<Deferred> {
        loop {
            let mut failed = false;
            {
                let mut iter = actions.drain();
                while let Some(action) = iter.next() {
                    let Action::Send(data) = action else {
                        self.server_action(ctx, action);
                        continue;
                    };
                    if failed {
                        continue;
                    }
                    match self.sink.try_send_response(data, ctx.source, ctx.reply) {
                        TrySend::Done(Ok(())) => {}
                        TrySend::Done(Err(e)) => {
                            debug!(error = %e, "response send failed");
                            failed = true;
                        }
                        TrySend::Queued(outcome) => self.watch_server_send(ctx, outcome),
                        TrySend::WouldWait(data) => {
                            let mut rest = Actions::default();
                            rest.push(Action::Send(data));
                            iter.for_each(|a| rest.push(a));
                            let (inner, ctx) = (Arc::clone(self), ctx.clone());
                            return Some(Box::pin(inner.finish_server(ctx, rest)));
                        }
                    }
                }
            }
            if !failed {
                return None;
            }
            let step = self.lock_server(&ctx.key, ctx.id, actions, |_, e, next| {
                *next = e.on_transport_error();
                Ok(())
            });
            if !matches!(step, Some(Ok(_))) {
                return None;
            }
        }
    }

    /// A response of server transaction `ctx` queued behind a connection
    /// being opened (see `watch_client_send`; §17.2.4).
    fn watch_server_send(self: &Arc<Self>, ctx: &ServerCtx, outcome: SendFuture<'static>) {
        let (inner, ctx) = (Arc::clone(self), ctx.clone());
        tokio::spawn(async move {
            let Err(e) = outcome.await else { return };
            debug!(error = %e, "queued response send failed");
            let mut actions = Actions::default();
            let step = inner.lock_server(&ctx.key, ctx.id, &mut actions, |_, e, next| {
                *next = e.on_transport_error();
                Ok(())
            });
            if !matches!(step, Some(Ok(_))) {
                return;
            }
            if let Some(deferred) = inner.run_server(&ctx, &mut actions) {
                deferred.await;
            }
        });
    }

    /// What [`Inner::run_server`] left: carries out `actions` with async
    /// sends.
    async fn finish_server(self: Arc<Self>, ctx: ServerCtx, actions: Actions) {
        let mut actions = actions;
        loop {
            let mut failed = false;
            for action in actions.drain() {
                let Action::Send(data) = action else {
                    self.server_action(&ctx, action);
                    continue;
                };
                if failed {
                    continue;
                }
                if let Err(e) = self.sink.send_response(data, ctx.source, ctx.reply).await {
                    debug!(error = %e, "response send failed");
                    failed = true;
                }
            }
            if !failed {
                return;
            }
            let step = self.lock_server(&ctx.key, ctx.id, &mut actions, |_, e, next| {
                *next = e.on_transport_error();
                Ok(())
            });
            if !matches!(step, Some(Ok(_))) {
                return;
            }
        }
    }

    /// Carries out one action of a server machine other than a send.
    fn server_action(self: &Arc<Self>, ctx: &ServerCtx, action: Action) {
        let key = &ctx.key;
        match action {
            // Sends are the caller's.
            Action::Send(_) => {}
            // Armed under the transaction's lock already (see
            // `client_action`).
            Action::Schedule(timer, after) => {
                self.wheel.schedule(
                    after,
                    TimerTarget::Server(Arc::clone(key), ctx.id, timer, 0, 0),
                );
            }
            Action::Deliver(TuEvent::Ack(request)) => self.pass_up(
                Incoming::Ack {
                    request,
                    source: ctx.source,
                },
                Urgency::Refusable,
            ),
            Action::Deliver(event) => {
                self.count_failure(&event);
                let tx = ServerTransaction {
                    key: Arc::clone(key),
                    id: ctx.id,
                    inner: Arc::clone(self),
                };
                self.pass_up(Incoming::Event(ServerEvent { tx, event }), Urgency::Must);
            }
            Action::Terminate => {
                debug!(method = %key.method(), peer = %ctx.source.peer, "server transaction terminated");
                if let Some((_, mut entry)) = self.servers.remove_if(&**key, |_, e| e.id == ctx.id)
                {
                    if let Some(ack_key) = entry.release(&self.wheel) {
                        self.awaiting_ack.remove(&ack_key);
                    }
                }
            }
        }
    }

    fn count_failure(&self, event: &TuEvent) {
        match event {
            TuEvent::Timeout => TransactionMetrics::inc(&self.metrics.timeouts),
            TuEvent::TransportError => TransactionMetrics::inc(&self.metrics.transport_errors),
            TuEvent::Response(_) | TuEvent::Ack(_) => {}
        }
    }

    // ---- timers ----

    fn fire(self: &Arc<Self>, timer_id: TimerId, target: TimerTarget) -> Option<Deferred> {
        match target {
            TimerTarget::Client(key, id, timer, drains, holds) => {
                if holds > 0 && self.defer_client(timer_id, &key, id, timer, (drains, holds)) {
                    return None;
                }
                if self.expire_client(&key, id, timer) {
                    return None;
                }
                let mut actions = Actions::default();
                let ((), ctx) = self.lock_client(&key, Some(id), &mut actions, |e, actions| {
                    e.on_timer(timer_id, timer, actions);
                })?;
                self.count_timer_sends(timer, &actions);
                self.run_client(&ctx, &mut actions)
            }
            TimerTarget::Server(key, id, timer, drains, holds) => {
                if holds > 0 && self.defer_server(timer_id, &key, id, timer, (drains, holds)) {
                    return None;
                }
                if self.expire_server(&key, id, timer) {
                    return None;
                }
                let mut actions = Actions::default();
                let ctx = self
                    .lock_server(&key, id, &mut actions, |_, e, actions| {
                        e.on_timer(timer_id, timer, actions);
                        Ok(())
                    })?
                    .ok()?;
                self.count_timer_sends(timer, &actions);
                self.run_server(&ctx, &mut actions)
            }
        }
    }

    /// The last timer of lingering client transaction `key` (transaction
    /// `id`) fired: the transaction ends (as its record's `on_timer` +
    /// `Terminate` would have it) in one table operation, without a step
    /// (no look-up before the removal, no actions, no context). Most
    /// transactions end so, 32 s after their final response. False, with
    /// nothing done, when the transaction is not that record (active, gone,
    /// or `timer` is not its last): the caller steps it as any other.
    fn expire_client(&self, key: &Arc<ClientKey>, id: u64, timer: Timer) -> bool {
        if !timer.ends_lingering() {
            return false;
        }
        let Some((_, entry)) = self.clients.remove_if(&**key, |_, e| {
            e.id == id && matches!(&e.tx, ClientTx::Lingering(l) if l.linger.last_timer() == timer)
        }) else {
            return false;
        };
        debug!(branch = key.branch(), method = %key.method(), "client transaction terminated");
        // The record's own timer is the one firing: nothing to cancel.
        if self.config.terminated_events {
            if let ClientTx::Lingering(l) = entry.tx {
                let event = ClientEvent {
                    key: Arc::clone(key),
                    event: ClientEventKind::Terminated,
                };
                self.pass_event(&l.events, event, Urgency::Must);
            }
        }
        true
    }

    /// [`Inner::expire_client`] for server transactions (a lingering
    /// record has no `awaiting_ack` entry).
    fn expire_server(&self, key: &Arc<ServerKey>, id: u64, timer: Timer) -> bool {
        if !timer.ends_lingering() {
            return false;
        }
        let removed = self.servers.remove_if(&**key, |_, e| {
            e.id == id && matches!(&e.tx, ServerTx::Lingering(l) if l.linger.last_timer() == timer)
        });
        let Some((_, entry)) = removed else {
            return false;
        };
        if let ServerTx::Lingering(l) = &entry.tx {
            debug!(method = %key.method(), peer = %l.source.peer, "server transaction terminated");
        }
        true
    }

    /// How late `timer` may fire ([`TimerConfig::ending_slack`] for the
    /// timers that may fire late, [`Timer::may_fire_late`], zero for the
    /// others).
    fn slack(&self, timer: Timer) -> Duration {
        if timer.may_fire_late() {
            self.ending_slack
        } else {
            Duration::ZERO
        }
    }

    /// What to arm `timer` with, `after` a step that sends (first or
    /// again) the message it retransmits: the receive drain count now and
    /// how many times the retransmission may be held back, so that it is
    /// at most `after`, its own interval, late. Both are read only for the
    /// retransmission timers (0, never held back, for the others).
    fn resend_bounds(
        &self,
        timer: Timer,
        after: Duration,
        local: Option<SocketAddr>,
        dest: Destination,
    ) -> (u32, u16) {
        if !timer.retransmits() {
            return (0, 0);
        }
        let holds = self.config.timers.deferrals_within(after);
        if holds == 0 {
            return (0, 0);
        }
        let drains = self.sink.receive_drains(local, dest).unwrap_or(0);
        (drains, holds)
    }

    /// Timer A or E of client transaction `key` (transaction `id`) is due,
    /// armed with `(drains, holds)` ([`Inner::resend_bounds`], `holds` > 0).
    /// When the transport has not read everything that arrived since the
    /// request was last sent (its receive drain count is still `drains`,
    /// and it is not idle), the response may be among the datagrams not
    /// read yet: the timer is re-armed [`TimerConfig::deferral`] later
    /// with the same count and one hold less instead of retransmitting,
    /// and the deferral counted. Once the holds are used up (the
    /// retransmission is a whole interval late) it goes out all the same:
    /// RFC 3261 §17.1.1.2 / §17.1.2.2 want it when the timer fires, and a
    /// request really lost is still resent under sustained overload.
    /// Timers B and F run on their own, so the transaction still times out
    /// at 64*T1. True when deferred.
    fn defer_client(
        &self,
        timer_id: TimerId,
        key: &Arc<ClientKey>,
        id: u64,
        timer: Timer,
        (drains, holds): (u32, u16),
    ) -> bool {
        let Some(mut entry) = self.clients.get_mut(&**key) else {
            return false;
        };
        if entry.id != id {
            return false;
        }
        let ClientTx::Active(active) = &mut entry.tx else {
            return false;
        };
        if !active.machine.wants_timer(timer) || self.sink.drained_since(None, active.dest, drains)
        {
            return false;
        }
        active.timers.remove(timer_id);
        let holds = holds.saturating_sub(1);
        let target = TimerTarget::Client(Arc::clone(key), id, timer, drains, holds);
        let after = self.config.timers.deferral();
        active
            .timers
            .insert(self.wheel.schedule(after, target), timer, 0);
        TransactionMetrics::inc(&self.metrics.request_retransmissions_deferred);
        true
    }

    /// [`Inner::defer_client`] for Timer G and the 2xx retransmission of
    /// server transaction `key`, whose answer is the ACK (Timer H, or the
    /// 64*T1 of the 2xx, run on their own; §17.2.1 and §13.3.1.4 want the
    /// response resent when the timer fires).
    fn defer_server(
        &self,
        timer_id: TimerId,
        key: &Arc<ServerKey>,
        id: u64,
        timer: Timer,
        (drains, holds): (u32, u16),
    ) -> bool {
        let Some(mut entry) = self.servers.get_mut(&**key) else {
            return false;
        };
        if entry.id != id {
            return false;
        }
        let ServerTx::Active(active) = &mut entry.tx else {
            return false;
        };
        let drained = self
            .sink
            .drained_since(Some(active.source.local), active.reply, drains);
        if !active.machine.wants_timer(timer) || drained {
            return false;
        }
        active.timers.remove(timer_id);
        let holds = holds.saturating_sub(1);
        let target = TimerTarget::Server(Arc::clone(key), id, timer, drains, holds);
        let after = self.config.timers.deferral();
        active
            .timers
            .insert(self.wheel.schedule(after, target), timer, 0);
        TransactionMetrics::inc(&self.metrics.response_retransmissions_deferred);
        true
    }

    /// Gives back the memory of a load peak once it has passed: shrinks
    /// the tables when they are less than a quarter full (a hash table
    /// otherwise keeps its largest size; at 10,000 calls per second the
    /// lingering transactions fill ~10^6 slots) and trims the timer queue.
    /// Under steady load the tables are fuller than that and nothing is
    /// done.
    fn trim(&self) {
        shrink_sparse(&self.clients, self.reserve.clients);
        shrink_sparse(&self.servers, self.reserve.servers);
        shrink_sparse(&self.awaiting_ack, 0);
        self.wheel.trim();
    }

    fn count_timer_sends(&self, timer: Timer, actions: &Actions) {
        let counter = match timer {
            Timer::A | Timer::E => &self.metrics.request_retransmissions,
            Timer::G | Timer::Retransmit2xx => &self.metrics.response_retransmissions,
            Timer::Trying => &self.metrics.trying_sent,
            _ => return,
        };
        if actions.iter().any(|a| matches!(a, Action::Send(_))) {
            TransactionMetrics::inc(counter);
        }
    }
}

/// How often the timer task gives back what a load peak left behind (see
/// [`Inner::trim`]).
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Timers the timer task fires before it lets the other tasks run: the
/// lingering transactions' ending timers fall due together at a multiple
/// of [`TimerConfig::ending_slack`] (100 ms), ~2,400 at 8,000 calls/s, a
/// few milliseconds of work in one step when fired at once.
const EXPIRY_CHUNK: usize = 256;

/// Tables of at most this capacity are never shrunk.
const TRIM_MIN: usize = 4096;

/// Serves the layer's timers until the layer is dropped, and trims the
/// layer's memory every [`TRIM_EVERY`].
async fn timer_task(wheel: Arc<Wheel<TimerTarget>>, inner: Weak<Inner>) {
    let mut due = Vec::new();
    let mut trim = tokio::time::interval(TRIM_EVERY);
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !wheel.is_closed() {
        let trim_now = tokio::select! {
            () = wheel.wait() => false,
            _ = trim.tick() => true,
        };
        if trim_now {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            inner.trim();
            if due.capacity() > TRIM_MIN {
                due = Vec::new();
            }
            continue;
        }
        wheel.pop_due(Instant::now(), &mut due);
        if due.is_empty() {
            continue;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        for (i, (id, target)) in due.drain(..).enumerate() {
            if i > 0 && i % EXPIRY_CHUNK == 0 {
                // Lets the receive side in (the runtime polls its I/O
                // first): a wave of expiries is not one long step.
                tokio::task::yield_now().await;
            }
            if let Some(deferred) = inner.fire(id, target) {
                deferred.await;
            }
        }
    }
}

/// A transaction table of [`TABLE_SHARDS`] shards with room for
/// `capacity` entries.
fn table<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher + Clone>(
    capacity: usize,
    hasher: S,
) -> DashMap<K, V, S> {
    DashMap::with_capacity_and_hasher_and_shard_amount(capacity, hasher, TABLE_SHARDS)
}

/// Shrinks each shard of `table` that is less than a quarter full to its
/// entries, but not below its share of `reserve` entries.
fn shrink_sparse<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher + Clone>(
    table: &DashMap<K, V, S>,
    reserve: usize,
) {
    let shards = table.shards();
    let floor = reserve.div_ceil(shards.len().max(1));
    let min = (TRIM_MIN / shards.len().max(1)).max(floor);
    for shard in shards {
        let mut shard = shard.write();
        let (len, capacity) = (shard.len(), shard.capacity());
        if capacity > min && len < capacity / 4 {
            shard.shrink_to(len.max(floor), |(k, _)| table.hasher().hash_one(k));
        }
    }
}

impl Inner {
    /// The TU set with [`TransactionLayer::set_user`], if it is still
    /// there; `Err(())` when one was set and is gone.
    fn user(&self) -> Option<Result<Arc<dyn TransactionUser>, ()>> {
        self.user.get().map(|weak| weak.upgrade().ok_or(()))
    }

    /// Passes `item` up (to the TU or through the channel), with no lock
    /// of the layer held: a TU handles it at once and may call back in.
    /// A refusable item the TU has no room for is dropped; what must be
    /// taken waits (see [`deliver`]).
    fn pass_up(&self, item: Incoming, urgency: Urgency) {
        match self.user() {
            None => deliver(
                &self.metrics,
                &self.incoming,
                item,
                urgency == Urgency::Refusable,
            ),
            Some(Ok(user)) => {
                if user.take(TuItem::Incoming(item), urgency).is_err() {
                    TransactionMetrics::inc(&self.metrics.tu_queue_full);
                    debug!("TU queue full: dropped");
                }
            }
            // Shut down: nobody takes it.
            Some(Err(())) => {}
        }
    }

    /// Offers a new request to the TU; hands it back when the TU (or the
    /// channel) is full, for a 503.
    fn offer(&self, item: Incoming) -> Option<Incoming> {
        match self.user() {
            None => match self.incoming.try_send(item) {
                Ok(()) | Err(TrySendError::Closed(_)) => None,
                Err(TrySendError::Full(item)) => Some(item),
            },
            Some(Ok(user)) => match user.take(TuItem::Incoming(item), Urgency::Refusable) {
                Ok(()) => None,
                Err(TuItem::Incoming(item)) => Some(item),
                Err(TuItem::Client(_)) => None,
            },
            Some(Err(())) => None,
        }
    }

    /// Passes a client transaction's event to where its events go.
    fn pass_event(&self, to: &ClientEvents, event: ClientEvent, urgency: Urgency) {
        match to {
            ClientEvents::Channel(tx) => {
                deliver(&self.metrics, tx, event, urgency == Urgency::Refusable)
            }
            ClientEvents::User => {
                let Some(Ok(user)) = self.user() else { return };
                if user.take(TuItem::Client(event), urgency).is_err() {
                    TransactionMetrics::inc(&self.metrics.tu_queue_full);
                    debug!("TU queue full: dropped");
                }
            }
        }
    }
}

/// Where a client transaction's events go.
#[derive(Clone)]
enum ClientEvents {
    /// A channel of the TU's ([`TransactionLayer::send_request`],
    /// [`TransactionLayer::send_request_with`]).
    Channel(mpsc::Sender<ClientEvent>),
    /// The layer's [`TransactionUser`]
    /// ([`TransactionLayer::send_request_to`] without a channel).
    User,
}

/// Passes `item` to the TU. When the channel is full, droppable items
/// (provisional responses, stray messages the peer will retransmit) are
/// dropped; the others wait in a task so a final response is never lost.
fn deliver<T: Send + 'static>(
    metrics: &TransactionMetrics,
    tx: &mpsc::Sender<T>,
    item: T,
    droppable: bool,
) {
    match tx.try_send(item) {
        Ok(()) | Err(TrySendError::Closed(_)) => {}
        Err(TrySendError::Full(item)) => {
            TransactionMetrics::inc(&metrics.tu_queue_full);
            if droppable {
                debug!("TU queue full: dropped");
                return;
            }
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(item).await;
            });
        }
    }
}

/// Whether an ACK matching `key` belongs to `entry`: always for RFC 3261
/// keys; for RFC 2543 keys its To tag must equal that of the final response
/// sent (§17.2.3).
fn unkeyed(request: Request, error: KeyError) -> Refused {
    Refused::Unkeyed {
        request: Box::new(request),
        error,
    }
}

fn ack_matches(key: &ServerKey, entry: &ServerEntry, ack: &Request) -> bool {
    !key.is_rfc2543()
        || ack
            .headers
            .to_ref()
            .ok()
            .is_some_and(|to| to.tag() == entry.final_to_tag())
}

fn to_tag(response: &Response) -> Option<ByteStr> {
    let to = response.headers.to_ref().ok()?;
    to.tag().map(|t| ByteStr::from(t.to_owned()))
}

/// Where responses to a request from `source` with top Via `via` go when
/// they cannot use its connection: RFC 3261 §18.2.2 with RFC 3581, as
/// [`crate::transport::response_destination`] decides it (computed from the
/// request here, so it is known before the first response exists). The IP
/// is the source IP; the port is the source port for UDP with `rport` (the
/// transport writes its NAT policy into the Via as `rport=PORT`), else the
/// sent-by port, else 5060.
fn reply_destination(via: &Via, source: &Source) -> Destination {
    let port = if source.protocol == Protocol::Udp && via.rport().is_some() {
        source.peer.port()
    } else {
        via.port.unwrap_or(5060)
    };
    Destination {
        protocol: source.protocol,
        addr: SocketAddr::new(source.peer.ip(), port),
    }
}

/// The 503 a server transaction sends when the TU's queue is full (SPEC §3:
/// overload is answered, never a silent drop).
fn overload_response(request: &Request, retry_after: u32) -> Response {
    let mut response = Response::for_request(request, StatusCode::SERVICE_UNAVAILABLE);
    response.set_to_tag(&super::key::generate_tag());
    response
        .headers
        .push(HeaderName::RetryAfter, retry_after.to_string());
    response
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::sync::oneshot;

    use super::*;
    use crate::transaction::invite_client::{build_ack, build_cancel};
    use crate::transaction::test_support::*;

    /// Where a fake send went.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum To {
        Request(Destination),
        Response(Source, Destination),
    }

    /// A transport that records what it is asked to send, synchronously
    /// (through `try_send_*`, as UDP does) unless `wait` is set.
    #[derive(Default)]
    struct FakeSink {
        sent: Mutex<Vec<(Duration, Bytes, To)>>,
        fail: AtomicBool,
        /// Every send goes through the async path (as TCP does).
        wait: AtomicBool,
        /// Sends done through the async path.
        waited: AtomicU64,
        start: Mutex<Option<Instant>>,
        /// The receive drain count it reports (`None`: none, as before).
        drains: Mutex<Option<u32>>,
        /// Every reading of the drain count finds it changed (a receive
        /// side that is never behind).
        draining: AtomicBool,
    }

    impl FakeSink {
        fn record_now(&self, data: Bytes, to: To) -> Result<(), SendError> {
            let at = {
                let mut start = self.start.lock().unwrap();
                let start = *start.get_or_insert_with(Instant::now);
                Instant::now() - start
            };
            let dest = match to {
                To::Request(d) | To::Response(_, d) => d,
            };
            if self.fail.load(Ordering::Relaxed) {
                return Err(SendError {
                    dest,
                    source: Box::new(std::io::Error::other("unreachable")),
                });
            }
            self.sent.lock().unwrap().push((at, data, to));
            Ok(())
        }

        fn record(&self, data: Bytes, to: To) -> SendFuture<'_> {
            self.waited.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                // Really wait, once, as a socket would.
                tokio::task::yield_now().await;
                self.record_now(data, to)
            })
        }

        fn try_record(&self, data: Bytes, to: To) -> TrySend {
            if self.wait.load(Ordering::Relaxed) {
                TrySend::WouldWait(data)
            } else {
                TrySend::Done(self.record_now(data, to))
            }
        }

        fn sent(&self) -> Vec<(Duration, Bytes, To)> {
            self.sent.lock().unwrap().clone()
        }

        fn statuses(&self) -> Vec<u16> {
            self.sent()
                .iter()
                .map(|(_, b, _)| parse_response(b).status.as_u16())
                .collect()
        }

        /// The receive side drains once (as the transport's loop does when
        /// it has read all that was queued).
        fn drain(&self) {
            let mut drains = self.drains.lock().unwrap();
            *drains = Some(drains.unwrap_or(0).wrapping_add(1));
        }

        /// When each message went out, since the sink was made.
        fn send_times(&self) -> Vec<Duration> {
            self.sent().iter().map(|(at, _, _)| *at).collect()
        }
    }

    impl TransportSink for FakeSink {
        fn send_request(&self, data: Bytes, dest: Destination) -> SendFuture<'_> {
            self.record(data, To::Request(dest))
        }

        fn send_response(&self, data: Bytes, source: Source, dest: Destination) -> SendFuture<'_> {
            self.record(data, To::Response(source, dest))
        }

        fn try_send_request(&self, data: Bytes, dest: Destination) -> TrySend {
            self.try_record(data, To::Request(dest))
        }

        fn try_send_response(&self, data: Bytes, source: Source, dest: Destination) -> TrySend {
            self.try_record(data, To::Response(source, dest))
        }

        fn receive_drains(&self, _local: Option<SocketAddr>, _dest: Destination) -> Option<u32> {
            if self.draining.load(Ordering::Relaxed) {
                self.drain();
            }
            *self.drains.lock().unwrap()
        }
    }

    fn layer_with(
        config: LayerConfig,
    ) -> (TransactionLayer, mpsc::Receiver<Incoming>, Arc<FakeSink>) {
        let sink = Arc::new(FakeSink::default());
        *sink.start.lock().unwrap() = Some(Instant::now());
        let (layer, rx) = TransactionLayer::new(sink.clone(), config);
        (layer, rx, sink)
    }

    fn layer() -> (TransactionLayer, mpsc::Receiver<Incoming>, Arc<FakeSink>) {
        layer_with(LayerConfig::default())
    }

    fn udp_source() -> Source {
        Source {
            protocol: Protocol::Udp,
            peer: "10.0.0.1:40000".parse().unwrap(),
            local: "10.0.0.2:5060".parse().unwrap(),
            conn: None,
        }
    }

    fn peer() -> Destination {
        Destination::udp("10.0.0.3:5060".parse().unwrap())
    }

    /// An OPTIONS we originate with the given branch.
    fn our_options(branch: &str) -> Request {
        let mut req = options();
        req.headers.set(
            HeaderName::Via,
            format!("SIP/2.0/UDP 10.0.0.2:5060;branch={branch}"),
        );
        req
    }

    #[test]
    fn an_item_for_the_tu_is_small() {
        // Its request or response is boxed: the item is moved by value
        // through the channel and the TU's futures.
        let size = std::mem::size_of::<Incoming>();
        println!("Incoming: {size} bytes");
        assert!(size <= 144, "Incoming is {size} bytes (392 unboxed)");
    }

    /// The TU's next item, which must be a server transaction's event
    /// (Timer H, Timer Unanswered, a transport error).
    async fn server_event(rx: &mut mpsc::Receiver<Incoming>) -> TuEvent {
        match rx.recv().await {
            Some(Incoming::Event(ServerEvent { event, .. })) => event,
            other => panic!("expected a server event, got {other:?}"),
        }
    }

    /// Every transaction has ended and left no timer behind (`what`: by
    /// which timer, for the message).
    #[track_caller]
    fn assert_all_ended(layer: &TransactionLayer, what: &str) {
        assert_eq!(layer.transaction_counts(), (0, 0), "{what}");
        assert_eq!(layer.pending_timers(), 0, "{what}");
    }

    async fn expect_request(rx: &mut mpsc::Receiver<Incoming>) -> ServerRequest {
        match rx.recv().await {
            Some(Incoming::Request(r)) => *r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    async fn advance(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn server_invite_absorbs_retransmissions_sends_100_and_waits_for_ack() {
        let (layer, mut rx, sink) = layer();
        let src = udp_source();
        layer.on_message(invite().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        assert_eq!(req.request.method, Method::Invite);
        layer.on_message(invite().into(), src).await.unwrap();
        assert!(rx.try_recv().is_err(), "retransmission absorbed");
        assert!(sink.sent().is_empty());

        advance(Duration::from_millis(250)).await;
        let sent = sink.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, Duration::from_millis(200));
        assert_eq!(parse_response(&sent[0].1).status.as_u16(), 100);
        // Built only now, with the INVITE's Via, From, To, Call-ID, CSeq.
        assert_eq!(
            sent[0].1,
            Response::for_request(&req.request, StatusCode::TRYING).to_bytes()
        );
        // rport in the Via: back to the source port (RFC 3581).
        assert_eq!(sent[0].2, To::Response(src, Destination::udp(src.peer)));

        let busy = response(&req.request, 486, Some("srv"));
        req.tx.respond(busy.clone()).await.unwrap();
        advance(Duration::from_millis(1600)).await;
        // 486 at 250 ms, Timer G at 750 and 1750 ms.
        assert_eq!(sink.statuses(), vec![100, 486, 486, 486]);
        layer.on_message(invite().into(), src).await.unwrap();
        assert_eq!(
            sink.statuses().len(),
            5,
            "INVITE retransmission re-answered"
        );

        layer
            .on_message(build_ack(&invite(), &busy).into(), src)
            .await
            .unwrap();
        advance(Duration::from_secs(4)).await;
        assert_eq!(sink.statuses().len(), 5, "G stopped by the ACK");
        assert!(rx.try_recv().is_err(), "the non-2xx ACK stays in the layer");
        assert_eq!(
            layer.transaction_counts(),
            (0, 1),
            "Confirmed until Timer I"
        );
        advance(Duration::from_secs(2)).await;
        assert_eq!(layer.transaction_counts(), (0, 0));
        let m = layer.metrics();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(get(&m.server_transactions), 1);
        assert_eq!(
            get(&m.retransmissions_absorbed),
            2,
            "two INVITE retransmissions"
        );
        assert_eq!(get(&m.trying_sent), 1);
        assert_eq!(get(&m.response_retransmissions), 2);
        assert_eq!(get(&m.acks_absorbed), 1);
        assert_eq!(get(&m.timeouts), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn server_timer_h_reports_a_missing_ack_to_the_tu() {
        let (layer, mut rx, sink) = layer();
        layer
            .on_message(invite().into(), udp_source())
            .await
            .unwrap();
        let req = expect_request(&mut rx).await;
        req.tx
            .respond(response(&req.request, 480, Some("x")))
            .await
            .unwrap();
        advance(Duration::from_secs(33)).await;
        match rx.recv().await {
            Some(Incoming::Event(ServerEvent {
                event: TuEvent::Timeout,
                tx,
            })) => assert_eq!(tx.key(), req.tx.key()),
            other => panic!("expected Timer H, got {other:?}"),
        }
        assert_eq!(layer.transaction_counts(), (0, 0));
        assert_eq!(
            sink.statuses().len(),
            11,
            "480 + 10 Timer G retransmissions"
        );
        assert!(matches!(
            req.tx.respond(response(&req.request, 500, Some("x"))).await,
            Err(TxError::NoTransaction)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn ack_for_2xx_and_accepted_invite_retransmissions() {
        let (layer, mut rx, sink) = layer_with(LayerConfig {
            retransmit_2xx: true,
            ..LayerConfig::default()
        });
        let src = udp_source();
        layer.on_message(invite().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        let ok = response(&req.request, 200, Some("srv"));
        req.tx.respond(ok.clone()).await.unwrap();
        layer.on_message(invite().into(), src).await.unwrap();
        assert_eq!(sink.statuses(), vec![200], "INVITE absorbed in Accepted");
        // The 2xx ACK has its own branch: end-to-end, to the TU.
        let mut ack = build_ack(&invite(), &ok);
        ack.headers.set(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKack",
        );
        advance(Duration::from_millis(1600)).await;
        assert_eq!(
            sink.statuses(),
            vec![200, 200, 200],
            "UAS core retransmits the 2xx"
        );
        layer.on_message(ack.into(), src).await.unwrap();
        assert!(matches!(rx.recv().await, Some(Incoming::Ack { .. })));
        advance(Duration::from_secs(33)).await;
        assert_eq!(
            sink.statuses().len(),
            3,
            "the ACK stopped the retransmissions"
        );
        assert_eq!(layer.transaction_counts(), (0, 0), "Timer L");
        assert!(rx.try_recv().is_err(), "no timeout after an ACK");
        assert!(layer.inner.awaiting_ack.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn unacknowledged_2xx_is_reported_after_64_t1() {
        let (layer, mut rx, sink) = layer_with(LayerConfig {
            retransmit_2xx: true,
            ..LayerConfig::default()
        });
        layer
            .on_message(invite().into(), udp_source())
            .await
            .unwrap();
        let req = expect_request(&mut rx).await;
        req.tx
            .respond(response(&req.request, 200, Some("srv")))
            .await
            .unwrap();
        advance(Duration::from_secs(33)).await;
        assert!(matches!(server_event(&mut rx).await, TuEvent::Timeout));
        assert_eq!(sink.statuses().len(), 11);
        assert!(layer.inner.awaiting_ack.is_empty());
        assert_eq!(layer.transaction_counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn non_invite_server_answers_retransmissions_from_the_transaction() {
        let (layer, mut rx, sink) = layer();
        let src = udp_source();
        layer.on_message(options().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        layer.on_message(options().into(), src).await.unwrap();
        assert!(sink.sent().is_empty(), "Trying absorbs");
        req.tx
            .respond(response(&req.request, 200, Some("t")))
            .await
            .unwrap();
        layer.on_message(options().into(), src).await.unwrap();
        assert_eq!(sink.statuses(), vec![200, 200]);
        assert!(rx.try_recv().is_err());
        // No rport in this Via: §18.2.2 sends to the sent-by port.
        let (_, _, to) = &sink.sent()[0];
        let expected: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        assert_eq!(*to, To::Response(src, Destination::udp(expected)));
        advance(Duration::from_secs(33)).await;
        assert_eq!(layer.transaction_counts(), (0, 0), "Timer J");
    }

    /// RFC 3261 §17.2.2: a BYE retransmitted while its transaction is
    /// Completed gets the final response again, byte for byte, from the
    /// record's own copy (the encoded buffer the first send shared is
    /// not kept), until Timer J (64*T1, rounded up to the slack); after
    /// that it is a new request for the TU.
    #[tokio::test(start_paused = true)]
    async fn a_bye_retransmitted_20_s_after_its_200_gets_the_same_200_until_timer_j() {
        let (layer, mut rx, sink) = layer();
        let src = udp_source();
        let bye = request(
            "
BYE sip:bob@192.0.2.9 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKbye20
Max-Forwards: 70
From: <sip:alice@example.com>;tag=a1
To: <sip:bob@example.com>;tag=b1
Call-ID: bye-20@10.0.0.1
CSeq: 2 BYE
Content-Length: 0

",
        );
        let start = Instant::now();
        layer.on_message(bye.clone().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        let key = req.tx.key().clone();
        req.tx
            .respond(response(&req.request, 200, None))
            .await
            .unwrap();
        assert!(server_lingers(&layer, &key), "Completed lingers");
        let first = sink.sent()[0].1.clone();
        {
            let entry = layer.inner.servers.get(&key).unwrap();
            let ServerTx::Lingering(l) = &entry.tx else {
                panic!("not lingering");
            };
            let ServerLinger::Completed { last } = &l.linger else {
                panic!("not Completed");
            };
            assert_eq!(&last[..], &first[..]);
            assert!(
                !first.as_ptr_range().contains(&last.as_ptr()),
                "a copy of its own, not the sent buffer"
            );
        }
        advance_to(start, Duration::from_secs(20)).await;
        layer.on_message(bye.clone().into(), src).await.unwrap();
        let sent = sink.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].1, first, "the same 200, byte for byte");
        assert_eq!(sent[1].2, sent[0].2, "to the same place");
        assert!(rx.try_recv().is_err(), "absorbed: not for the TU");
        // Timer J: 64*T1 after the 200, rounded up to the 100-ms slack.
        advance_to(start, Duration::from_millis(31_999)).await;
        layer.on_message(bye.clone().into(), src).await.unwrap();
        assert_eq!(sink.sent().len(), 3, "still Completed at 31.999 s");
        advance_to(start, Duration::from_millis(32_100)).await;
        assert_all_ended(&layer, "Timer J");
        layer.on_message(bye.into(), src).await.unwrap();
        assert_eq!(sink.sent().len(), 3);
        expect_request(&mut rx).await;
    }

    #[tokio::test(start_paused = true)]
    async fn responses_go_to_the_client_transaction_they_match() {
        let (layer, mut rx, sink) = layer();
        let a = our_options("z9hG4bKaaa");
        let b = our_options("z9hG4bKbbb");
        let mut ta = layer.send_request(a.clone(), peer()).await.unwrap();
        let mut tb = layer.send_request(b.clone(), peer()).await.unwrap();
        assert_eq!(sink.sent().len(), 2);
        assert_eq!(sink.sent()[0].2, To::Request(peer()));

        let from = udp_source();
        layer
            .on_message(response(&b, 200, Some("x")).into(), from)
            .await
            .unwrap();
        let ev = tb.recv().await.unwrap();
        assert_eq!(*ev.key, *tb.key());
        assert!(Arc::ptr_eq(&ev.key, &tb.key), "the table's key, shared");
        assert!(matches!(ev.event, ClientEventKind::Response(ref r) if r.status.as_u16() == 200));
        assert!(ta.events.try_recv().is_err());
        // Retransmitted final: absorbed in Completed.
        layer
            .on_message(response(&b, 200, Some("x")).into(), from)
            .await
            .unwrap();
        layer
            .on_message(response(&a, 180, Some("y")).into(), from)
            .await
            .unwrap();
        assert!(matches!(
            ta.recv().await.unwrap().event,
            ClientEventKind::Response(ref r) if r.status.as_u16() == 180
        ));
        advance(Duration::from_secs(6)).await;
        assert!(matches!(
            tb.recv().await.unwrap().event,
            ClientEventKind::Terminated
        ));
        assert!(
            tb.recv().await.is_none(),
            "channel closes with the transaction"
        );
        // A response for no transaction is passed up as stray.
        layer
            .on_message(response(&our_options("z9hG4bKzzz"), 200, None).into(), from)
            .await
            .unwrap();
        assert!(matches!(rx.recv().await, Some(Incoming::Response { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_whose_sent_by_is_not_ours_is_discarded() {
        let (layer, mut rx, _sink) = layer();
        let req = our_options("z9hG4bKsb");
        let mut tx = layer.send_request(req.clone(), peer()).await.unwrap();
        let from = udp_source();
        // Same branch and CSeq, but a top Via we never wrote (RFC 3261
        // §18.1.2): another host, then our host with another port.
        for forged in [
            "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKsb",
            "SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKsb",
        ] {
            let mut r = response(&req, 200, Some("x"));
            r.headers.set(HeaderName::Via, forged);
            layer.on_message(r.into(), from).await.unwrap();
        }
        // A stray one with a foreign sent-by does not reach the TU either.
        let mut stray = response(&our_options("z9hG4bKother"), 200, Some("y"));
        stray.headers.set(
            HeaderName::Via,
            "SIP/2.0/UDP evil.example.com;branch=z9hG4bKother",
        );
        layer.on_message(stray.into(), from).await.unwrap();
        assert!(
            tx.events.try_recv().is_err(),
            "nothing reached the transaction"
        );
        assert!(rx.try_recv().is_err(), "nothing reached the TU");
        let metrics = layer.metrics();
        assert_eq!(metrics.foreign_sent_by.load(Ordering::Relaxed), 3);
        assert_eq!(metrics.stray_responses.load(Ordering::Relaxed), 0);
        // The genuine response (our sent-by, with received/rport added on
        // the way or not) still completes the transaction.
        let mut ok = response(&req, 200, Some("x"));
        ok.headers.set(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKsb;received=10.0.0.2",
        );
        layer.on_message(ok.into(), from).await.unwrap();
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Response(ref r) if r.status.as_u16() == 200
        ));
    }

    /// Whether `r`'s top Via has been parsed (and kept) by someone.
    fn top_via_parsed(r: &Response) -> bool {
        r.headers
            .typed_if_any()
            .is_some_and(|t| t.top_via.get().is_some())
    }

    /// A response whose top Via starts as our request's did (up to the
    /// branch) is matched by its branch alone: it reaches the TU with its
    /// Via unparsed, whatever follows the branch. One that starts
    /// otherwise is parsed, checked (§18.1.2) and matched as before.
    #[tokio::test(start_paused = true)]
    async fn a_response_with_our_via_prefix_is_matched_without_parsing_its_via() {
        let (layer, mut rx, _sink) = layer();
        let req = our_options("z9hG4bKpre");
        let mut tx = layer.send_request(req.clone(), peer()).await.unwrap();
        let from = udp_source();
        let mut trying = response(&req, 100, None);
        trying.headers.set(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKpre;received=10.0.0.2",
        );
        layer.on_message(trying.into(), from).await.unwrap();
        match tx.recv().await.unwrap().event {
            ClientEventKind::Response(r) => {
                assert_eq!(r.status.as_u16(), 100);
                assert!(!top_via_parsed(&r), "matched without parsing the Via");
            }
            other => panic!("expected the 100, got {other:?}"),
        }
        // Our sent-by, but the parameters in another order: parsed.
        let mut ok = response(&req, 200, Some("x"));
        ok.headers.set(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.2:5060;rport=5060;branch=z9hG4bKpre",
        );
        layer.on_message(ok.into(), from).await.unwrap();
        match tx.recv().await.unwrap().event {
            ClientEventKind::Response(r) => {
                assert_eq!(r.status.as_u16(), 200);
                assert!(top_via_parsed(&r));
            }
            other => panic!("expected the 200, got {other:?}"),
        }
        // A stray response with our prefix: no transaction, so it goes to
        // the TU, unparsed as well.
        let stray = response(&our_options("z9hG4bKgone"), 200, Some("y"));
        layer.on_message(stray.into(), from).await.unwrap();
        match rx.recv().await {
            Some(Incoming::Response { response, .. }) => assert!(!top_via_parsed(&response)),
            other => panic!("expected a stray response, got {other:?}"),
        }
        let metrics = layer.metrics();
        assert_eq!(metrics.foreign_sent_by.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.stray_responses.load(Ordering::Relaxed), 1);
        // A CSeq that does not parse still refuses the response.
        let mut bad = response(&req, 200, Some("x"));
        bad.headers.set(HeaderName::CSeq, "x OPTIONS");
        assert!(layer.on_message(bad.into(), from).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn client_timeout_after_retransmissions_over_udp_only() {
        for (dest, sends) in [(peer(), 11), (Destination::tcp(peer().addr), 1)] {
            let (layer, _rx, sink) = layer();
            let mut tx = layer
                .send_request(our_options("z9hG4bKto"), dest)
                .await
                .unwrap();
            advance(Duration::from_secs(33)).await;
            assert!(matches!(
                tx.recv().await.unwrap().event,
                ClientEventKind::Timeout
            ));
            assert!(matches!(
                tx.recv().await.unwrap().event,
                ClientEventKind::Terminated
            ));
            assert_eq!(sink.sent().len(), sends, "{dest}");
            assert_eq!(layer.transaction_counts(), (0, 0));
            let m = layer.metrics();
            assert_eq!(
                m.request_retransmissions.load(Ordering::Relaxed),
                sends as u64 - 1
            );
            assert_eq!(m.timeouts.load(Ordering::Relaxed), 1);
            assert_eq!(m.client_transactions.load(Ordering::Relaxed), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn invite_client_acks_failures_and_cancel_waits_for_a_provisional() {
        let (layer, _rx, sink) = layer();
        let mut inv = invite();
        inv.headers.remove_all(&HeaderName::Via);
        inv.headers.push_front(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKinv",
        );
        let mut tx = layer.send_request(inv.clone(), peer()).await.unwrap();
        tx.cancel().await.unwrap();
        assert_eq!(
            sink.sent().len(),
            1,
            "no CANCEL before a provisional (§9.1)"
        );
        let from = udp_source();
        layer
            .on_message(response(&inv, 180, Some("r")).into(), from)
            .await
            .unwrap();
        let sent = sink.sent();
        assert_eq!(sent.len(), 2);
        let mut cancel = parse_request(&sent[1].1);
        assert_eq!(cancel.method, Method::Cancel);
        cancel.headers.remove_all(&HeaderName::ContentLength);
        assert_eq!(cancel, build_cancel(&inv));
        assert_eq!(layer.transaction_counts(), (2, 0));

        layer
            .on_message(response(&cancel, 200, Some("r")).into(), from)
            .await
            .unwrap();
        layer
            .on_message(response(&inv, 487, Some("r")).into(), from)
            .await
            .unwrap();
        let ack = parse_request(&sink.sent()[2].1);
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.to().unwrap().tag(), Some("r"));
        let mut kinds = Vec::new();
        while let Ok(ev) = tx.events.try_recv() {
            kinds.push((ev.key.method().clone(), ev.event));
        }
        assert!(
            matches!(kinds[0], (Method::Invite, ClientEventKind::Response(ref r)) if r.status.as_u16() == 180)
        );
        assert!(
            matches!(kinds[1], (Method::Cancel, ClientEventKind::Response(ref r)) if r.status.as_u16() == 200)
        );
        assert!(
            matches!(kinds[2], (Method::Invite, ClientEventKind::Response(ref r)) if r.status.as_u16() == 487)
        );
        advance(Duration::from_secs(33)).await;
        assert_eq!(layer.transaction_counts(), (0, 0), "Timers K and D");
    }

    #[tokio::test(start_paused = true)]
    async fn transport_error_terminates_the_client_transaction() {
        let (layer, _rx, sink) = layer();
        let mut tx = layer
            .send_request(our_options("z9hG4bKfail"), peer())
            .await
            .unwrap();
        // Timer E's retransmission fails.
        sink.fail.store(true, Ordering::Relaxed);
        advance(Duration::from_millis(500)).await;
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::TransportError
        ));
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Terminated
        ));
        assert_eq!(layer.transaction_counts(), (0, 0));
    }

    /// A first send that fails at once is the caller's error, not an event
    /// handed to the TU from inside the call: a TU step started outside the
    /// TU's runner (the B2BUA's timer task) learns of it in order, after the
    /// send it made, and not nested in that step (review finding 2).
    #[tokio::test(start_paused = true)]
    async fn a_first_send_failing_at_once_is_the_callers_error_not_an_event() {
        let (layer, _rx, sink) = layer();
        let seen = Seen::default();
        let user: Arc<dyn TransactionUser> = {
            let seen = Arc::clone(&seen);
            crate::transaction::Serial::new(4, move |item: TuItem| {
                seen.lock().unwrap().push(format!("{item:?}"));
                std::future::ready(())
            })
        };
        assert!(layer.set_user(&user));
        sink.fail.store(true, Ordering::Relaxed);
        let sent = layer
            .send_request_to(our_options("z9hG4bKunreachable"), peer(), None)
            .await;
        assert!(matches!(sent, Err(TxError::Send(_))), "{sent:?}");
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );
        assert_eq!(layer.transaction_counts(), (0, 0));
        let m = layer.metrics().to_string();
        assert!(m.contains("transport_errors=1"), "{m}");
        // Nothing more later: no timer of it is left to fire.
        advance(Duration::from_secs(64)).await;
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );
        // The same with a channel of the caller's.
        let (events, mut rx) = mpsc::channel(4);
        let sent = layer
            .send_request_with(our_options("z9hG4bKunreachable2"), peer(), events)
            .await;
        assert!(matches!(sent, Err(TxError::Send(_))), "{sent:?}");
        assert!(rx.try_recv().is_err());
        assert_eq!(layer.transaction_counts(), (0, 0));
    }

    /// A sink whose sends are queued (as behind a TCP connect): their
    /// outcome is what the test reports on the channel, later.
    struct QueuedSink(Mutex<Option<oneshot::Receiver<Result<(), SendError>>>>);

    impl TransportSink for QueuedSink {
        fn send_request(&self, _data: Bytes, _dest: Destination) -> SendFuture<'_> {
            Box::pin(std::future::pending())
        }

        fn send_response(
            &self,
            _data: Bytes,
            _source: Source,
            _dest: Destination,
        ) -> SendFuture<'_> {
            Box::pin(std::future::pending())
        }

        fn try_send_request(&self, _data: Bytes, _dest: Destination) -> TrySend {
            let outcome = self.0.lock().unwrap().take().expect("one send");
            TrySend::Queued(Box::pin(async move { outcome.await.unwrap() }))
        }
    }

    /// A send queued behind a connection being opened does not hold the
    /// step that sent it; when it then fails, the transaction gets the
    /// transport error (§17.1.4) as for a send that failed at once.
    #[tokio::test]
    async fn a_queued_send_that_fails_later_is_a_transport_error() {
        let (report, outcome) = oneshot::channel();
        let sink = Arc::new(QueuedSink(Mutex::new(Some(outcome))));
        let (layer, _rx) = TransactionLayer::new(sink, LayerConfig::default());
        let mut tx = tokio::time::timeout(
            Duration::ZERO,
            layer.send_request(our_options("z9hG4bKqueued"), peer()),
        )
        .await
        .expect("the step waited for the queued send")
        .unwrap();
        tokio::task::yield_now().await;
        assert!(tokio::time::timeout(Duration::ZERO, tx.recv())
            .await
            .is_err());
        assert_eq!(layer.transaction_counts(), (1, 0));
        report
            .send(Err(SendError {
                dest: peer(),
                source: Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
            }))
            .unwrap();
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::TransportError
        ));
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Terminated
        ));
        assert_eq!(layer.transaction_counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn transport_error_on_a_response_is_reported_to_the_tu() {
        let (layer, mut rx, sink) = layer();
        layer
            .on_message(options().into(), udp_source())
            .await
            .unwrap();
        let req = expect_request(&mut rx).await;
        sink.fail.store(true, Ordering::Relaxed);
        req.tx
            .respond(response(&req.request, 200, Some("t")))
            .await
            .unwrap();
        assert!(matches!(
            server_event(&mut rx).await,
            TuEvent::TransportError
        ));
        assert_eq!(layer.transaction_counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_is_its_own_transaction_and_finds_its_invite() {
        let (layer, mut rx, _sink) = layer();
        let src = udp_source();
        layer.on_message(invite().into(), src).await.unwrap();
        let inv = expect_request(&mut rx).await;
        let cancel = build_cancel(&invite());
        layer.on_message(cancel.clone().into(), src).await.unwrap();
        let c = expect_request(&mut rx).await;
        assert_eq!(c.request.method, Method::Cancel);
        assert_ne!(c.tx.key(), inv.tx.key());
        let found = layer.find_invite(&c.request).unwrap();
        assert_eq!(found.key(), inv.tx.key());
        found
            .respond(response(&inv.request, 487, Some("t")))
            .await
            .unwrap();
        c.tx.respond(response(&c.request, 200, Some("t")))
            .await
            .unwrap();
        assert_eq!(layer.transaction_counts(), (0, 2));
        assert!(layer.find_invite(&build_cancel(&options())).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn rfc_2543_ack_must_carry_the_to_tag_of_the_final_response() {
        let (layer, mut rx, sink) = layer();
        let src = udp_source();
        let mut old = invite();
        old.headers.remove_all(&HeaderName::Via);
        old.headers
            .push_front(HeaderName::Via, "SIP/2.0/UDP 10.0.0.1:5060;branch=1234");
        layer.on_message(old.clone().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        assert!(req.tx.key().is_rfc2543());
        let busy = response(&old, 486, Some("ours"));
        req.tx.respond(busy.clone()).await.unwrap();
        // An ACK with another To tag is not this transaction's.
        let wrong = build_ack(&old, &response(&old, 486, Some("other")));
        layer.on_message(wrong.into(), src).await.unwrap();
        assert!(matches!(rx.recv().await, Some(Incoming::Ack { .. })));
        advance(Duration::from_millis(600)).await;
        assert_eq!(sink.statuses(), vec![486, 486], "still Completed: G runs");
        layer
            .on_message(build_ack(&old, &busy).into(), src)
            .await
            .unwrap();
        advance(Duration::from_secs(2)).await;
        assert_eq!(sink.statuses().len(), 2, "Confirmed: G stopped");
        assert!(rx.try_recv().is_err());
    }

    /// Remembers the branch and status of each refusal it is told of.
    #[derive(Debug, Default)]
    struct Refused(Mutex<Vec<(String, u16)>>);

    impl crate::transport::RefusalObserver for Refused {
        fn refused(&self, request: &Request, status: StatusCode) {
            let branch = request.top_via().unwrap().branch().unwrap().to_owned();
            self.0.lock().unwrap().push((branch, status.as_u16()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_tu_queue_is_answered_503_with_retry_after() {
        let refused = Arc::new(Refused::default());
        let config = LayerConfig {
            tu_queue: 1,
            refusals: Some(refused.clone()),
            ..LayerConfig::default()
        };
        let (layer, mut rx, sink) = layer_with(config);
        let src = udp_source();
        layer.on_message(options().into(), src).await.unwrap();
        let mut second = options();
        second.headers.set(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKsecond",
        );
        layer.on_message(second.into(), src).await.unwrap();
        let sent = sink.sent();
        assert_eq!(sent.len(), 1);
        let r = parse_response(&sent[0].1);
        assert_eq!(r.status.as_u16(), 503);
        assert_eq!(
            r.headers.get(&HeaderName::RetryAfter).unwrap().as_ref(),
            b"5"
        );
        assert!(r.to().unwrap().tag().is_some());
        assert!(matches!(rx.recv().await, Some(Incoming::Request(_))));
        assert!(rx.try_recv().is_err());
        let m = layer.metrics().to_string();
        assert!(m.contains("overload_rejected=1"), "{m}");
        assert!(m.contains("server_transactions=2"), "{m}");
        assert_eq!(
            *refused.0.lock().unwrap(),
            vec![("z9hG4bKsecond".to_owned(), 503)]
        );
    }

    /// What a direct TU saw, in order.
    type Seen = Arc<Mutex<Vec<String>>>;

    /// A [`Serial`] TU over `layer` that calls back into the layer from
    /// the synchronous part of its handling (before any await), as the
    /// B2BUA does: answers new requests 200 (and looks up INVITEs), starts
    /// a request of its own for each final response to one of its
    /// requests, and notes everything in `seen`.
    fn calling_back_user(layer: &TransactionLayer, seen: &Seen) -> Arc<dyn TransactionUser> {
        let (layer, seen) = (layer.clone(), Arc::clone(seen));
        let serial = crate::transaction::Serial::new(16, move |item: TuItem| {
            let note = |s: String| seen.lock().unwrap().push(s);
            match item {
                TuItem::Incoming(Incoming::Request(sr)) => {
                    // Looks the transaction up in the table it was put in.
                    let _ = layer.find_invite(&sr.request);
                    note(format!("request {}", sr.request.method));
                    let sent = sr.tx.respond_ref(&response(&sr.request, 200, Some("tu")));
                    assert!(layer.transaction_counts().1 >= 1);
                    drop(sent);
                }
                TuItem::Incoming(Incoming::Ack { .. }) => note("ack".into()),
                TuItem::Incoming(Incoming::Response { response, .. }) => {
                    note(format!("stray {}", response.status.as_u16()));
                    drop(layer.send_request_to(our_options("z9hG4bKafterstray"), peer(), None));
                }
                TuItem::Incoming(Incoming::Event(ev)) => note(format!("event {:?}", ev.event)),
                TuItem::Client(ev) => {
                    let ClientEventKind::Response(r) = &ev.event else {
                        note(format!("client {:?}", ev.event));
                        return std::future::ready(());
                    };
                    note(format!("client {} {}", ev.key.branch(), r.status.as_u16()));
                    if ev.key.branch() == "z9hG4bKfirst" {
                        drop(layer.send_request_to(our_options("z9hG4bKsecond"), peer(), None));
                        let _ = layer.transaction_counts();
                    }
                }
            }
            std::future::ready(())
        });
        serial
    }

    /// Runs `test` on a runtime of its own thread; fails (instead of
    /// hanging) when it does not end within 60 s, e.g. a handler that
    /// deadlocks on a table lock the layer holds.
    fn within_a_minute(test: impl FnOnce() + Send + 'static) {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(test));
            let _ = done.send(result.is_ok());
        });
        match finished.recv_timeout(Duration::from_secs(60)) {
            Ok(ok) => assert!(ok, "the test panicked"),
            Err(_) => panic!("deadlock: the direct TU did not return"),
        }
    }

    #[test]
    fn a_direct_user_handles_items_in_the_step_and_may_call_back_into_the_layer() {
        within_a_minute(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let (layer, mut rx, sink) = layer();
                let seen = Seen::default();
                let user = calling_back_user(&layer, &seen);
                assert!(layer.set_user(&user));
                assert!(!layer.set_user(&user), "set once");
                let src = udp_source();

                // A new request: answered inside `receive_now`, the
                // layer's table not locked meanwhile.
                assert!(layer.receive_now(options().into(), src).unwrap().is_none());
                assert_eq!(sink.statuses(), [200]);
                // An INVITE answered 2xx, then its ACK (an item from the
                // ACK table's path).
                assert!(layer.receive_now(invite().into(), src).unwrap().is_none());
                let mut ack = build_ack(&invite(), &response(&invite(), 200, Some("tu")));
                ack.headers.set(
                    HeaderName::Via,
                    "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKackbranch",
                );
                assert!(layer.receive_now(ack.into(), src).unwrap().is_none());

                // A response to our request: the TU starts another one
                // from inside the client transaction's step.
                let first = our_options("z9hG4bKfirst");
                let key = layer
                    .send_request_to(first.clone(), peer(), None)
                    .await
                    .unwrap();
                assert_eq!(key.branch(), "z9hG4bKfirst");
                let answer = response(&first, 200, Some("callee"));
                assert!(layer.receive_now(answer.into(), src).unwrap().is_none());
                // A stray response: the TU sends from inside the step.
                let stray = response(&our_options("z9hG4bKnone"), 200, Some("x"));
                assert!(layer.receive_now(stray.into(), src).unwrap().is_none());

                assert_eq!(
                    *seen.lock().unwrap(),
                    [
                        "request OPTIONS",
                        "request INVITE",
                        "ack",
                        "client z9hG4bKfirst 200",
                        "stray 200",
                    ]
                );
                let requests: Vec<_> = sink
                    .sent()
                    .into_iter()
                    .filter(|(_, _, to)| matches!(to, To::Request(_)))
                    .map(|(_, b, _)| {
                        parse_request(&b)
                            .top_via()
                            .unwrap()
                            .branch()
                            .unwrap()
                            .to_owned()
                    })
                    .collect();
                assert_eq!(
                    requests,
                    ["z9hG4bKfirst", "z9hG4bKsecond", "z9hG4bKafterstray"]
                );
                assert!(rx.try_recv().is_err(), "nothing went through the channel");
                drop(user);
            });
        });
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_direct_user_gets_new_requests_answered_503_and_keeps_finals() {
        let refused = Arc::new(Refused::default());
        let (layer, _rx, sink) = layer_with(LayerConfig {
            refusals: Some(refused.clone()),
            ..LayerConfig::default()
        });
        let seen = Seen::default();
        let gate = Arc::new(tokio::sync::Notify::new());
        // Room for the rest of the first request, which waits for the
        // gate, and one more.
        let serial = {
            let (seen, gate) = (Arc::clone(&seen), Arc::clone(&gate));
            crate::transaction::Serial::new(2, move |item: TuItem| {
                let (seen, gate) = (Arc::clone(&seen), Arc::clone(&gate));
                async move {
                    let what = match &item {
                        TuItem::Incoming(Incoming::Request(sr)) => {
                            let branch = sr.request.top_via().unwrap().branch().unwrap().to_owned();
                            if branch == "z9hG4bKwaits" {
                                gate.notified().await;
                            }
                            branch
                        }
                        TuItem::Client(ev) => format!("client {}", ev.key.branch()),
                        other => format!("{other:?}"),
                    };
                    seen.lock().unwrap().push(what);
                }
            })
        };
        let lane = tokio::spawn(Arc::clone(&serial).lane());
        let user: Arc<dyn TransactionUser> = serial;
        layer.set_user(&user);
        let src = udp_source();
        let request = |branch: &str| {
            let mut r = options();
            r.headers.set(
                HeaderName::Via,
                format!("SIP/2.0/UDP 10.0.0.1:5060;branch={branch}"),
            );
            Message::from(r)
        };
        let ours = our_options("z9hG4bKours");
        layer
            .send_request_to(ours.clone(), peer(), None)
            .await
            .unwrap();

        layer.receive_now(request("z9hG4bKwaits"), src).unwrap();
        layer.receive_now(request("z9hG4bKqueued"), src).unwrap();
        // Full: refused by the layer, 503 with Retry-After.
        layer.receive_now(request("z9hG4bKrefused"), src).unwrap();
        let statuses: Vec<u16> = sink
            .sent()
            .iter()
            .filter(|(_, _, to)| matches!(to, To::Response(..)))
            .map(|(_, b, _)| parse_response(b).status.as_u16())
            .collect();
        assert_eq!(statuses, [503]);
        assert_eq!(
            *refused.0.lock().unwrap(),
            vec![("z9hG4bKrefused".to_owned(), 503)]
        );
        // A provisional response is dropped, the final one kept.
        layer
            .receive_now(response(&ours, 180, Some("c")).into(), src)
            .unwrap();
        layer
            .receive_now(response(&ours, 200, Some("c")).into(), src)
            .unwrap();
        let m = layer.metrics().to_string();
        assert!(m.contains("overload_rejected=1"), "{m}");
        assert!(m.contains("tu_queue_full=1"), "{m}");
        assert!(seen.lock().unwrap().is_empty(), "the first one still waits");

        gate.notify_one();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            *seen.lock().unwrap(),
            ["z9hG4bKwaits", "z9hG4bKqueued", "client z9hG4bKours"]
        );
        // Drained: the next request is handled inline again.
        layer.receive_now(request("z9hG4bKafter"), src).unwrap();
        assert_eq!(seen.lock().unwrap().last().unwrap(), "z9hG4bKafter");
        lane.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn items_for_a_user_that_is_gone_are_dropped() {
        let (layer, mut rx, _sink) = layer();
        let seen = Seen::default();
        let user = calling_back_user(&layer, &seen);
        layer.set_user(&user);
        drop(user);
        layer.receive_now(options().into(), udp_source()).unwrap();
        assert!(seen.lock().unwrap().is_empty());
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn ack_cannot_start_a_client_transaction_and_keys_are_unique() {
        let (layer, _rx, _sink) = layer();
        let ack = build_ack(&invite(), &response(&invite(), 200, Some("t")));
        assert!(matches!(
            layer.send_request(ack, peer()).await,
            Err(TxError::AckTransaction)
        ));
        let _a = layer
            .send_request(our_options("z9hG4bKdup"), peer())
            .await
            .unwrap();
        assert!(matches!(
            layer.send_request(our_options("z9hG4bKdup"), peer()).await,
            Err(TxError::Duplicate)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn without_2xx_retransmission_the_ack_just_goes_to_the_tu() {
        let (layer, mut rx, sink) = layer();
        let src = udp_source();
        layer.on_message(invite().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        let ok = response(&req.request, 200, Some("srv"));
        req.tx.respond(ok.clone()).await.unwrap();
        advance(Duration::from_secs(2)).await;
        assert_eq!(sink.statuses(), vec![200], "the TU retransmits its 2xx");
        // ... through the transaction while it is Accepted.
        req.tx.respond(ok.clone()).await.unwrap();
        assert_eq!(sink.statuses(), vec![200, 200]);
        advance(Duration::from_secs(33)).await;
        assert!(rx.try_recv().is_err(), "no timeout reported");
        assert_eq!(layer.transaction_counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn respond_finds_the_server_transaction_from_the_response() {
        let (layer, mut rx, sink) = layer();
        let src = udp_source();
        layer.on_message(options().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        layer
            .respond(response(&req.request, 200, Some("t")))
            .await
            .unwrap();
        assert_eq!(sink.statuses(), vec![200]);
        assert!(matches!(
            layer.respond(response(&req.request, 500, Some("t"))).await,
            Err(TxError::ResponseNotAllowed { .. })
        ));
        assert!(matches!(
            layer.respond(response(&invite(), 200, Some("t"))).await,
            Err(TxError::NoTransaction)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn receive_hands_back_the_requests_it_cannot_key_untouched() {
        let (layer, mut rx, sink) = layer();
        let without = |mut r: Request, name: HeaderName| {
            r.headers.remove_all(&name);
            r
        };
        let rfc2543 = |mut r: Request| {
            r.headers
                .set(HeaderName::Via, "SIP/2.0/UDP 10.0.0.1:5060;branch=1");
            r
        };
        let ack = build_ack(&invite(), &response(&invite(), 486, Some("t")));
        let unkeyed = [
            without(invite(), HeaderName::Via),
            without(options(), HeaderName::Via),
            without(ack.clone(), HeaderName::Via),
            // The RFC 2543 fallback needs CSeq, From and Call-ID.
            without(rfc2543(invite()), HeaderName::CSeq),
            without(rfc2543(options()), HeaderName::From),
            without(rfc2543(ack.clone()), HeaderName::CallId),
        ];
        for req in unkeyed {
            match layer.receive(req.clone().into(), udp_source()).await {
                Err(crate::transaction::Refused::Unkeyed { request, .. }) => {
                    assert_eq!(*request, req)
                }
                other => panic!("{req:?} was not handed back: {other:?}"),
            }
            assert!(matches!(
                layer.on_message(req.into(), udp_source()).await,
                Err(TxError::Key(_))
            ));
        }
        assert_eq!(layer.transaction_counts(), (0, 0));
        assert!(sink.sent().is_empty());
        assert!(rx.try_recv().is_err());
        // Keyable ones (RFC 3261 and RFC 2543) are the layer's.
        layer.receive(options().into(), udp_source()).await.unwrap();
        layer
            .receive(rfc2543(invite()).into(), udp_source())
            .await
            .unwrap();
        assert_eq!(layer.transaction_counts(), (0, 2));
        expect_request(&mut rx).await;
        expect_request(&mut rx).await;
    }

    #[tokio::test(start_paused = true)]
    async fn requests_whose_via_starts_as_before_are_keyed_as_a_full_parse_keys_them() {
        let (layer, _rx, _sink) = layer();
        let with_via = |via: &str| {
            let mut req = options();
            req.headers.set(HeaderName::Via, via.to_owned());
            req
        };
        let requests = [
            with_via("SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKfirst;rport"),
            // Read from the remembered prefix.
            with_via("SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKsecond;rport"),
            with_via("SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKthird"),
            // Parsed in full: LWS after the branch, another sent-by.
            with_via("SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKfourth ;rport"),
            with_via("SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bKfifth"),
        ];
        let mut clients = Vec::new();
        for (i, req) in requests.iter().enumerate() {
            // Which ones are read without a parse.
            let via = req.headers.get(&HeaderName::Via).unwrap();
            let read = layer.inner.via_prefixes.branch(via).is_some();
            assert_eq!(read, i == 1 || i == 2, "request {i}");
            let client = layer.send_request(req.clone(), peer()).await.unwrap();
            assert_eq!(client.key(), &ClientKey::for_request(req).unwrap());
            // Either way the key keeps a copy, not the Via's bytes (which
            // may be part of a larger buffer).
            assert!(!via.as_ptr_range().contains(&client.key().branch().as_ptr()));
            clients.push(client);
        }
        // The same branch again is the same transaction, however it is read.
        assert!(matches!(
            layer.send_request(requests[1].clone(), peer()).await,
            Err(TxError::Duplicate)
        ));
        // Every response finds its request; the sent-by of each was learned.
        for (req, client) in requests.iter().zip(&mut clients) {
            layer
                .on_message(response(req, 200, Some("t")).into(), udp_source())
                .await
                .unwrap();
            match client.recv().await {
                Some(ClientEvent {
                    event: ClientEventKind::Response(r),
                    ..
                }) => assert_eq!(r.status.as_u16(), 200),
                other => panic!("expected the 200, got {other:?}"),
            }
        }
        let m = layer.metrics();
        assert_eq!(m.foreign_sent_by.load(Ordering::Relaxed), 0);
        assert_eq!(m.stray_responses.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn stateless_sends_bypass_the_tables() {
        let (layer, _rx, sink) = layer();
        let ack = build_ack(&invite(), &response(&invite(), 200, Some("t")));
        layer.send_stateless_request(&ack, peer()).await.unwrap();
        let src = udp_source();
        let ok = response(&invite(), 200, Some("t"));
        layer.send_stateless_response(&ok, src).await.unwrap();
        let sent = sink.sent();
        assert_eq!(sent[0].2, To::Request(peer()));
        assert_eq!(parse_request(&sent[0].1).method, Method::Ack);
        // The INVITE's Via has rport: back to the source address and port.
        assert_eq!(sent[1].2, To::Response(src, Destination::udp(src.peer)));
        assert_eq!(layer.transaction_counts(), (0, 0));
    }

    #[tokio::test]
    async fn transports_carry_the_layers_messages_over_udp() {
        use crate::transport::{ListenAddr, TransportConfig, Transports};
        let listen: ListenAddr = "udp:127.0.0.1:0".parse().unwrap();
        let (transports, _inbound) = Transports::bind(&[listen], TransportConfig::default())
            .await
            .unwrap();
        let local = transports.local_addrs()[0].addr;
        let (layer, _rx) = TransactionLayer::new(Arc::new(transports), LayerConfig::default());
        let peer_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = Destination::udp(peer_sock.local_addr().unwrap());
        let req = our_options("z9hG4bKreal");
        let _tx = layer.send_request(req.clone(), peer).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, from) = peer_sock.recv_from(&mut buf).await.unwrap();
        assert_eq!(from, local);
        let got = parse_request(&Bytes::copy_from_slice(&buf[..n]));
        assert_eq!(got.method, Method::Options);
        assert_eq!(got.top_via().unwrap().branch(), Some("z9hG4bKreal"));
    }

    /// Over the real transport, with a peer that never answers: the
    /// receive side is idle (drained), so Timer E retransmits on RFC 3261's
    /// schedule; nothing is held back.
    #[tokio::test(start_paused = true)]
    async fn over_an_idle_socket_retransmissions_keep_their_schedule() {
        use crate::transport::{ListenAddr, TransportConfig, Transports};
        let listen: ListenAddr = "udp:127.0.0.1:0".parse().unwrap();
        let (transports, _inbound) = Transports::bind(&[listen], TransportConfig::default())
            .await
            .unwrap();
        let (layer, _rx) = TransactionLayer::new(Arc::new(transports), LayerConfig::default());
        let peer_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = Destination::udp(peer_sock.local_addr().unwrap());
        let start = Instant::now();
        let _tx = layer
            .send_request(our_options("z9hG4bKidle"), peer)
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut arrivals = Vec::new();
        for _ in 0..4 {
            tokio::time::timeout(Duration::from_secs(5), peer_sock.recv_from(&mut buf))
                .await
                .expect("retransmission held back")
                .unwrap();
            arrivals.push(start.elapsed());
        }
        assert_eq!(arrivals, [ms(0), ms(500), ms(1500), ms(3500)]);
        assert_eq!(deferred(&layer), (0, 0));
    }

    #[test]
    fn reply_destination_agrees_with_the_transport() {
        use crate::transport::{response_destination, ResponsePort};
        let vias = [
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport=40000;received=10.0.0.1",
            "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1",
            "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1",
            "SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bK1;rport=40000",
        ];
        for via in vias {
            for protocol in [Protocol::Udp, Protocol::Tcp] {
                let mut req = options();
                req.headers.set(HeaderName::Via, via);
                let source = Source {
                    protocol,
                    ..udp_source()
                };
                let resp = response(&req, 200, Some("t"));
                assert_eq!(
                    reply_destination(&req.top_via().unwrap(), &source),
                    response_destination(&resp, &source, ResponsePort::SentBy),
                    "{via} over {protocol}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tables_and_timers_drain_after_mixed_traffic() {
        let sent = mixed_traffic(false).await;
        assert!(sent.len() > 200, "{}", sent.len());
    }

    /// The async send path (a transport that cannot send at once) sends
    /// the same messages at the same times as the synchronous one.
    #[tokio::test(start_paused = true)]
    async fn sends_that_must_wait_keep_order_and_timing() {
        let now = mixed_traffic(false).await;
        let waited = mixed_traffic(true).await;
        // The same but for the To tags the layer generates (408, 503).
        let strip = |sent: &[(Duration, Bytes, To)]| -> Vec<(Duration, To, String)> {
            sent.iter()
                .map(|(at, data, to)| {
                    let text = String::from_utf8_lossy(data);
                    let text = text
                        .lines()
                        .filter(|l| !l.starts_with("To:"))
                        .collect::<Vec<_>>()
                        .join("\n");
                    (*at, *to, text)
                })
                .collect()
        };
        assert_eq!(strip(&now), strip(&waited));
    }

    /// 60 rounds of server and client transactions of every outcome; checks
    /// that tables and timers drain, and returns what was sent.
    async fn mixed_traffic(wait: bool) -> Vec<(Duration, Bytes, To)> {
        let (layer, mut rx, sink) = layer_with(LayerConfig {
            retransmit_2xx: true,
            ..LayerConfig::default()
        });
        sink.wait.store(wait, Ordering::Relaxed);
        let src = udp_source();
        let mut clients = Vec::new();
        for i in 0..60u32 {
            // Server side: INVITEs answered 486 (ACKed or not), 200 (ACKed
            // or not) or never; OPTIONS answered or not.
            let mut inv = invite();
            inv.headers.set(
                HeaderName::Via,
                format!("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKmix{i};rport"),
            );
            inv.headers.set(HeaderName::CallId, format!("mix-{i}"));
            layer.on_message(inv.clone().into(), src).await.unwrap();
            let req = loop {
                match rx.recv().await {
                    Some(Incoming::Request(r)) => break r,
                    Some(Incoming::Ack { .. }) => continue,
                    other => panic!("unexpected {other:?}"),
                }
            };
            let code = [486, 200, 0][i as usize % 3];
            if code != 0 {
                let resp = response(&req.request, code, Some("t"));
                req.tx.respond(resp.clone()).await.unwrap();
                if i % 2 == 0 {
                    let mut ack = build_ack(&inv, &resp);
                    if code == 200 {
                        ack.headers.set(
                            HeaderName::Via,
                            format!("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKack{i}"),
                        );
                    }
                    layer.on_message(ack.into(), src).await.unwrap();
                }
            }
            // Client side: OPTIONS answered, or left to time out.
            let opt = our_options(&format!("z9hG4bKcli{i}"));
            let tx = layer.send_request(opt.clone(), peer()).await.unwrap();
            if i % 2 == 0 {
                layer
                    .on_message(response(&opt, 200, Some("p")).into(), src)
                    .await
                    .unwrap();
            }
            clients.push(tx);
        }
        // The unanswered INVITEs get their 408 at 192 s, then Timer H.
        advance(Duration::from_secs(190)).await;
        assert_eq!(layer.transaction_counts(), (0, 20));
        advance(Duration::from_secs(40)).await;
        while rx.try_recv().is_ok() {}
        assert_eq!(layer.transaction_counts(), (0, 0));
        assert!(layer.inner.awaiting_ack.is_empty());
        assert_eq!(layer.inner.wheel.len(), 0, "no timer left behind");
        for mut tx in clients {
            let mut last = None;
            while let Some(ev) = tx.recv().await {
                last = Some(ev.event);
            }
            assert!(matches!(last, Some(ClientEventKind::Terminated)));
        }
        let waited = sink.waited.load(Ordering::Relaxed);
        if wait {
            assert_eq!(waited as usize, sink.sent().len());
        } else {
            assert_eq!(waited, 0);
        }
        sink.sent()
    }

    /// What the layer keeps or hands on after a response (the TU's event
    /// key, the timers' targets) is the table's key, not one sharing the
    /// received datagram, which it would keep alive.
    #[tokio::test(start_paused = true)]
    async fn a_response_is_matched_without_keeping_its_datagram() {
        let (layer, _rx, _sink) = layer();
        let opt = our_options("z9hG4bKkeep");
        let mut tx = layer.send_request(opt.clone(), peer()).await.unwrap();
        let wire = response(&opt, 200, Some("p")).to_bytes();
        let received = parse_bytes(&wire);
        layer.on_message(received, udp_source()).await.unwrap();
        let event = tx.recv().await.unwrap();
        assert!(matches!(event.event, ClientEventKind::Response(_)));
        assert_eq!(event.key.branch(), "z9hG4bKkeep");
        assert!(!wire.as_ptr_range().contains(&event.key.branch().as_ptr()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_transaction_leaves_no_timer_behind() {
        let (layer, mut rx, _sink) = layer();
        // Client, UDP: E, F armed; the 200 moves it to Completed (K, 5 s).
        let opt = our_options("z9hG4bKend");
        let _tx = layer.send_request(opt.clone(), peer()).await.unwrap();
        assert_eq!(layer.pending_timers(), 2, "E and F");
        let m = layer.metrics().to_string();
        assert!(m.contains("pending_timers=2"), "{m}");
        layer
            .on_message(response(&opt, 200, Some("p")).into(), udp_source())
            .await
            .unwrap();
        assert_eq!(
            layer.pending_timers(),
            1,
            "K: Completed ignores E and F, so they are cancelled"
        );
        advance(Duration::from_secs(6)).await;
        assert_all_ended(&layer, "Timer K");
        let m = layer.metrics().to_string();
        assert!(m.contains("pending_timers=0"), "{m}");
        assert_eq!(layer.inner.wheel.queued(), 0);

        // Server, TCP: Unanswered (64*T1) armed; the 200 ends it at once.
        let tcp = Source {
            protocol: Protocol::Tcp,
            ..udp_source()
        };
        layer.on_message(options().into(), tcp).await.unwrap();
        let req = expect_request(&mut rx).await;
        assert_eq!(layer.pending_timers(), 1, "Unanswered");
        req.tx
            .respond(response(&req.request, 200, Some("t")))
            .await
            .unwrap();
        assert_eq!(layer.transaction_counts(), (0, 0), "Timer J is zero");
        assert_eq!(layer.pending_timers(), 0, "Unanswered went with it");
    }

    #[tokio::test(start_paused = true)]
    async fn timers_stay_bounded_by_live_transactions_in_a_long_run() {
        use crate::transaction::wheel::COMPACT_MIN;
        let (layer, mut rx, sink) = layer();
        let udp = udp_source();
        let tcp = Source {
            protocol: Protocol::Tcp,
            ..udp
        };
        let mut n = 0u64;
        let mut max_pending = 0;
        // 100 s (three times 64*T1): per 100 ms, 10 INVITEs answered 200 and
        // ACKed (UDP: Timer L keeps them 32 s), 10 OPTIONS over TCP answered
        // at once (their 32 s Unanswered timer outlives them) and 10 of our
        // OPTIONS answered (Timer K 5 s; F outlives them).
        for _ in 0..1_000 {
            for _ in 0..10 {
                n += 1;
                let mut inv = invite();
                inv.headers.set(
                    HeaderName::Via,
                    format!("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKi{n};rport"),
                );
                layer.on_message(inv.into(), udp).await.unwrap();
                let req = expect_request(&mut rx).await;
                let ok = response(&req.request, 200, Some("t"));
                req.tx.respond(ok).await.unwrap();

                let mut opt = options();
                opt.headers.set(
                    HeaderName::Via,
                    format!("SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bKo{n}"),
                );
                layer.on_message(opt.into(), tcp).await.unwrap();
                let req = expect_request(&mut rx).await;
                req.tx
                    .respond(response(&req.request, 200, Some("t")))
                    .await
                    .unwrap();

                let ours = our_options(&format!("z9hG4bKc{n}"));
                let _tx = layer.send_request(ours.clone(), peer()).await.unwrap();
                layer
                    .on_message(response(&ours, 200, Some("p")).into(), udp)
                    .await
                    .unwrap();
            }
            advance(Duration::from_millis(100)).await;
            sink.sent.lock().unwrap().clear();
            let (clients, servers) = layer.transaction_counts();
            let pending = layer.pending_timers();
            // INVITE server in Accepted: L (Trying and Unanswered are
            // cancelled by the answer); client in Completed: K (E and F
            // are cancelled by the 200).
            assert!(
                pending <= clients + servers,
                "{pending} timers for {clients} + {servers} transactions"
            );
            let queued = layer.inner.wheel.queued();
            assert!(
                queued <= 2 * pending + COMPACT_MIN,
                "{queued} queued for {pending} pending timers"
            );
            max_pending = max_pending.max(pending);
        }
        // Steady state: 3,200 INVITE server transactions (100/s for the
        // 32 s of Timer L) and 500 client ones (5 s of Timer K), one timer
        // each; the TCP ones none.
        assert!(
            (3_000..=3_300 + 600).contains(&max_pending),
            "{max_pending}"
        );
        advance(Duration::from_secs(40)).await;
        assert_all_ended(&layer, "");
        assert!(layer.inner.wheel.queued() <= COMPACT_MIN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_from_the_tu_bounds_its_invite() {
        let (layer, _rx, sink) = layer();
        let mut inv = invite();
        inv.headers.remove_all(&HeaderName::Via);
        inv.headers.push_front(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKtu",
        );
        let mut tx = layer.send_request(inv.clone(), peer()).await.unwrap();
        layer
            .on_message(response(&inv, 180, Some("r")).into(), udp_source())
            .await
            .unwrap();
        // The TU builds and sends the CANCEL itself; the callee answers it
        // but never sends a final response for the INVITE.
        let cancel = build_cancel(&inv);
        let mut ctx = layer.send_request(cancel.clone(), peer()).await.unwrap();
        layer
            .on_message(response(&cancel, 200, Some("r")).into(), udp_source())
            .await
            .unwrap();
        assert_eq!(sink.sent().len(), 2);
        advance(Duration::from_secs(33)).await;
        let mut kinds = Vec::new();
        while let Some(ev) = tx.recv().await {
            kinds.push(ev.event);
        }
        assert!(matches!(kinds[0], ClientEventKind::Response(_)));
        assert!(matches!(kinds[1], ClientEventKind::Timeout));
        assert!(matches!(kinds[2], ClientEventKind::Terminated));
        assert!(matches!(
            ctx.recv().await.unwrap().event,
            ClientEventKind::Response(_)
        ));
        assert_eq!(layer.transaction_counts(), (0, 0));
    }

    // ---- lingering transactions (compact records) ----

    fn server_lingers(layer: &TransactionLayer, key: &ServerKey) -> bool {
        let entry = layer.inner.servers.get(key);
        entry.is_some_and(|e| matches!(e.tx, ServerTx::Lingering(_)))
    }

    fn client_lingers(layer: &TransactionLayer, key: &ClientKey) -> bool {
        let entry = layer.inner.clients.get(key);
        entry.is_some_and(|e| matches!(e.tx, ClientTx::Lingering(_)))
    }

    /// Advances the paused clock to `at` after `start`.
    async fn advance_to(start: Instant, at: Duration) {
        tokio::time::sleep_until(start + at).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_non_invite_server_resends_its_final_response_as_sent_until_timer_j() {
        let (layer, mut rx, sink) = layer();
        let src = udp_source();
        let start = Instant::now();
        layer.on_message(options().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        let key = req.tx.key().clone();
        assert!(!server_lingers(&layer, &key), "Trying does not linger");
        req.tx
            .respond(response(&req.request, 200, Some("t")))
            .await
            .unwrap();
        assert!(server_lingers(&layer, &key), "Completed lingers");
        assert_eq!(layer.pending_timers(), 1, "only Timer J is left");
        for at in [1, 10, 31] {
            advance_to(start, Duration::from_secs(at)).await;
            layer.on_message(options().into(), src).await.unwrap();
        }
        let sent = sink.sent();
        assert_eq!(sent.len(), 4);
        for (_, bytes, to) in &sent[1..] {
            assert_eq!(bytes, &sent[0].1, "the same bytes");
            assert_eq!(to, &sent[0].2, "to the same place");
        }
        assert!(
            rx.try_recv().is_err(),
            "retransmissions stay with the layer"
        );
        assert!(matches!(
            req.tx.respond(response(&req.request, 500, None)).await,
            Err(TxError::ResponseNotAllowed {
                status: 500,
                state: "Completed"
            })
        ));
        advance_to(start, Duration::from_millis(32_001)).await;
        assert_all_ended(&layer, "Timer J");
        // After Timer J the same request is a new one.
        layer.on_message(options().into(), src).await.unwrap();
        assert_eq!(
            expect_request(&mut rx).await.request.method,
            Method::Options
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_its_own_last_timer_expires_a_lingering_record_at_once() {
        let (layer, mut rx, _sink) = layer();
        layer
            .on_message(options().into(), udp_source())
            .await
            .unwrap();
        let req = expect_request(&mut rx).await;
        let key = Arc::new(req.tx.key().clone());
        req.tx
            .respond(response(&req.request, 200, Some("t")))
            .await
            .unwrap();
        let inner = &layer.inner;
        let id = inner.servers.get(&*key).map(|e| e.id).unwrap();
        // Another transaction's timer, or one that is not the record's
        // last, is left to the step (which ignores it): nothing removed.
        assert!(!inner.expire_server(&key, id + 1, Timer::J));
        assert!(!inner.expire_server(&key, id, Timer::L));
        assert!(!inner.expire_server(&key, id, Timer::Unanswered));
        assert!(server_lingers(&layer, &key));
        assert!(inner.expire_server(&key, id, Timer::J));
        assert_eq!(layer.transaction_counts(), (0, 0));
        assert!(!inner.expire_server(&key, id, Timer::J), "gone already");

        // A client record: its channel gets `Terminated` (on by default).
        let mut tx = layer
            .send_request(our_options("z9hG4bKexp"), peer())
            .await
            .unwrap();
        let ckey = Arc::new(tx.key().clone());
        let ok = response(&our_options("z9hG4bKexp"), 200, Some("t"));
        layer.on_message(ok.into(), udp_source()).await.unwrap();
        assert!(client_lingers(&layer, &ckey));
        let cid = inner.clients.get(&*ckey).map(|e| e.id).unwrap();
        assert!(!inner.expire_client(&ckey, cid, Timer::M), "K is its last");
        assert!(!inner.expire_client(&ckey, cid, Timer::E));
        assert!(inner.expire_client(&ckey, cid, Timer::K));
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Response(_)
        ));
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Terminated
        ));
        assert_eq!(layer.transaction_counts(), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn lingering_transactions_that_end_within_the_slack_expire_together() {
        let (layer, mut rx, _sink) = layer();
        let start = Instant::now();
        let slack = layer.timers().ending_slack();
        assert_eq!(slack, Duration::from_millis(100));
        // Two non-INVITE servers answered 30 ms and 70 ms in: Timer J
        // (32 s) is due at 32.03 s and 32.07 s, and both fire at 32.1 s.
        let mut keys = Vec::new();
        for (at, branch) in [(30, "z9hG4bKj1"), (70, "z9hG4bKj2")] {
            advance_to(start, Duration::from_millis(at)).await;
            let mut req = options();
            req.headers.set(
                HeaderName::Via,
                format!("SIP/2.0/UDP 10.0.0.1:5060;branch={branch}"),
            );
            layer.on_message(req.into(), udp_source()).await.unwrap();
            let req = expect_request(&mut rx).await;
            keys.push(req.tx.key().clone());
            req.tx
                .respond(response(&req.request, 200, Some("t")))
                .await
                .unwrap();
        }
        advance_to(start, Duration::from_millis(32_099)).await;
        assert!(keys.iter().all(|k| server_lingers(&layer, k)), "not before");
        // (1 ms past it, as in the tests above: the timer task runs after
        // this one at the same instant.)
        advance_to(start, Duration::from_millis(32_101)).await;
        assert_all_ended(&layer, "Timer J, rounded up");
    }

    /// A non-INVITE request with branch `branch` received `at` ms after
    /// `start`, answered 200 `answer_at` ms after it; its key.
    async fn serve_at(
        layer: &TransactionLayer,
        rx: &mut mpsc::Receiver<Incoming>,
        start: Instant,
        (at, answer_at): (u64, u64),
        branch: &str,
    ) -> ServerKey {
        advance_to(start, Duration::from_millis(at)).await;
        let mut req = options();
        req.headers.set(
            HeaderName::Via,
            format!("SIP/2.0/UDP 10.0.0.1:5060;branch={branch}"),
        );
        layer.on_message(req.into(), udp_source()).await.unwrap();
        let req = expect_request(rx).await;
        advance_to(start, Duration::from_millis(answer_at)).await;
        req.tx
            .respond(response(&req.request, 200, Some("t")))
            .await
            .unwrap();
        req.tx.key().clone()
    }

    /// Timer Unanswered (non-INVITE server) and Timer B (INVITE client),
    /// rounded up as the ending timers are: a final response that comes
    /// within the same slack arms J or M due at the same instant, which
    /// takes over the unwanted timer's queue entry (no cancel, no new
    /// entry); one that comes later cancels it and arms its own. Either
    /// way the transaction lingers its full 64*T1 after the response.
    #[tokio::test(start_paused = true)]
    async fn an_ending_timer_due_with_the_unwanted_timeout_takes_over_its_entry() {
        let (layer, mut rx, _sink) = layer();
        let start = Instant::now();
        let wheel = &layer.inner.wheel;
        // Unanswered due at 32.1 s; J (answered at 60 ms) too.
        let same = serve_at(&layer, &mut rx, start, (50, 60), "z9hG4bKsame").await;
        assert_eq!((layer.pending_timers(), wheel.queued()), (1, 1));
        // Unanswered due at 32.2 s, J (answered at 250 ms) at 32.3 s.
        let later = serve_at(&layer, &mut rx, start, (150, 250), "z9hG4bKlater").await;
        assert_eq!(
            (layer.pending_timers(), wheel.queued()),
            (2, 3),
            "a cancelled entry and a new one"
        );
        advance_to(start, Duration::from_millis(32_099)).await;
        assert!(server_lingers(&layer, &same) && server_lingers(&layer, &later));
        advance_to(start, Duration::from_millis(32_101)).await;
        assert!(!server_lingers(&layer, &same), "ended as Timer J");
        advance_to(start, Duration::from_millis(32_299)).await;
        assert!(
            server_lingers(&layer, &later),
            "not at its Unanswered's time"
        );
        advance_to(start, Duration::from_millis(32_301)).await;
        assert_all_ended(&layer, "Timer J");

        // INVITE client: A and B armed at 40.31 s (B due at 72.4 s); the
        // 200 at 40.35 s cancels A and turns B into M, due then as well.
        advance_to(start, Duration::from_millis(40_310)).await;
        let inv = our_invite();
        let mut tx = layer.send_request(inv.clone(), peer()).await.unwrap();
        let key = tx.key().clone();
        assert_eq!((layer.pending_timers(), wheel.queued()), (2, 2), "A, B");
        advance_to(start, Duration::from_millis(40_350)).await;
        let ok = response(&inv, 200, Some("r"));
        layer.on_message(ok.into(), udp_source()).await.unwrap();
        assert!(client_lingers(&layer, &key));
        assert_eq!(
            (layer.pending_timers(), wheel.queued()),
            (1, 2),
            "M in B's entry, A's cancelled one"
        );
        advance_to(start, Duration::from_millis(72_399)).await;
        assert!(
            client_lingers(&layer, &key),
            "not before 64*T1 after the 200"
        );
        advance_to(start, Duration::from_millis(72_401)).await;
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Response(_)
        ));
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Terminated
        ));
        assert_all_ended(&layer, "Timer M");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_resend_ends_a_lingering_server_and_tells_the_tu() {
        let (layer, mut rx, sink) = layer();
        let src = udp_source();
        layer.on_message(options().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        req.tx
            .respond(response(&req.request, 200, Some("t")))
            .await
            .unwrap();
        sink.fail.store(true, Ordering::Relaxed);
        layer.on_message(options().into(), src).await.unwrap();
        assert!(matches!(
            server_event(&mut rx).await,
            TuEvent::TransportError
        ));
        assert_all_ended(&layer, "");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_accepted_invite_server_absorbs_invites_and_passes_2xx_and_acks() {
        let (layer, mut rx, sink) = layer();
        let src = udp_source();
        layer.on_message(invite().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        let key = req.tx.key().clone();
        let ok = response(&req.request, 200, Some("srv"));
        req.tx.respond(ok.clone()).await.unwrap();
        assert!(server_lingers(&layer, &key), "Accepted lingers");
        assert_eq!(layer.pending_timers(), 1, "only Timer L is left");
        layer.on_message(invite().into(), src).await.unwrap();
        assert_eq!(sink.statuses(), vec![200], "INVITE absorbed");
        assert!(rx.try_recv().is_err());
        // The TU's own 2xx retransmission passes (§13.3.1.4).
        req.tx.respond(ok.clone()).await.unwrap();
        let sent = sink.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].1, sent[0].1);
        assert_eq!(sent[1].2, sent[0].2);
        assert!(matches!(
            req.tx.respond(response(&req.request, 486, None)).await,
            Err(TxError::ResponseNotAllowed {
                status: 486,
                state: "Accepted"
            })
        ));
        // An ACK matching the transaction is the TU's (RFC 6026 §7.1).
        layer
            .on_message(build_ack(&invite(), &ok).into(), src)
            .await
            .unwrap();
        assert!(matches!(rx.recv().await, Some(Incoming::Ack { .. })));
        advance(Duration::from_secs(33)).await;
        assert_all_ended(&layer, "Timer L");
        assert!(rx.try_recv().is_err(), "no timeout: the 2xx was the TU's");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_confirmed_invite_server_absorbs_acks_until_timer_i() {
        let (layer, mut rx, sink) = layer();
        let src = udp_source();
        layer.on_message(invite().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        let key = req.tx.key().clone();
        let busy = response(&req.request, 486, Some("srv"));
        req.tx.respond(busy.clone()).await.unwrap();
        assert!(
            !server_lingers(&layer, &key),
            "Completed retransmits its 486"
        );
        let ack = build_ack(&invite(), &busy);
        layer.on_message(ack.clone().into(), src).await.unwrap();
        assert!(server_lingers(&layer, &key), "Confirmed lingers");
        assert_eq!(layer.pending_timers(), 1, "only Timer I is left");
        layer.on_message(ack.clone().into(), src).await.unwrap();
        layer.on_message(invite().into(), src).await.unwrap();
        assert_eq!(sink.statuses(), vec![486], "ACK and INVITE absorbed");
        assert!(rx.try_recv().is_err());
        assert_eq!(layer.metrics().acks_absorbed.load(Ordering::Relaxed), 2);
        advance(Duration::from_secs(6)).await;
        assert_all_ended(&layer, "Timer I");
    }

    #[tokio::test(start_paused = true)]
    async fn a_2xx_retransmitted_by_the_layer_keeps_its_transaction_active_until_the_ack() {
        let (layer, mut rx, _sink) = layer_with(LayerConfig {
            retransmit_2xx: true,
            ..LayerConfig::default()
        });
        let src = udp_source();
        layer.on_message(invite().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        let key = req.tx.key().clone();
        let ok = response(&req.request, 200, Some("srv"));
        req.tx.respond(ok.clone()).await.unwrap();
        assert!(!server_lingers(&layer, &key), "its 2xx awaits the ACK");
        let mut ack = build_ack(&invite(), &ok);
        ack.headers.set(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKack",
        );
        layer.on_message(ack.into(), src).await.unwrap();
        assert!(server_lingers(&layer, &key), "lingers after the ACK");
        assert_eq!(layer.pending_timers(), 1, "Retransmit2xx cancelled");
        advance(Duration::from_secs(33)).await;
        assert_all_ended(&layer, "");
    }

    fn our_invite() -> Request {
        let mut inv = invite();
        inv.headers.remove_all(&HeaderName::Via);
        inv.headers.push_front(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKlinger",
        );
        inv
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_completed_invite_client_acks_each_retransmission_with_the_same_ack() {
        let (layer, _rx, sink) = layer();
        let inv = our_invite();
        let mut tx = layer.send_request(inv.clone(), peer()).await.unwrap();
        let key = tx.key().clone();
        let from = udp_source();
        let busy = response(&inv, 486, Some("r"));
        layer.on_message(busy.clone().into(), from).await.unwrap();
        assert!(client_lingers(&layer, &key), "Completed lingers");
        assert_eq!(layer.pending_timers(), 1, "only Timer D is left");
        for _ in 0..2 {
            layer.on_message(busy.clone().into(), from).await.unwrap();
        }
        let sent = sink.sent();
        assert_eq!(sent.len(), 4, "INVITE and three ACKs");
        assert_eq!(parse_request(&sent[1].1).method, Method::Ack);
        assert_eq!(sent[2].1, sent[1].1);
        assert_eq!(sent[3].1, sent[1].1);
        assert_eq!(sent[3].2, To::Request(peer()));
        assert!(matches!(tx.cancel().await, Err(TxError::NothingToCancel)));
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Response(ref r) if r.status.as_u16() == 486
        ));
        advance(Duration::from_secs(33)).await;
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Terminated
        ));
        assert!(tx.recv().await.is_none(), "the 486 reached the TU once");
        assert_all_ended(&layer, "Timer D");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_accepted_invite_client_passes_each_2xx_to_the_tu_until_timer_m() {
        let (layer, _rx, sink) = layer();
        let inv = our_invite();
        let mut tx = layer.send_request(inv.clone(), peer()).await.unwrap();
        let key = tx.key().clone();
        let from = udp_source();
        let ok = response(&inv, 200, Some("r"));
        layer.on_message(ok.clone().into(), from).await.unwrap();
        assert!(client_lingers(&layer, &key), "Accepted lingers");
        layer.on_message(ok.clone().into(), from).await.unwrap();
        layer
            .on_message(response(&inv, 486, Some("r")).into(), from)
            .await
            .unwrap();
        assert_eq!(sink.sent().len(), 1, "the layer never ACKs a 2xx");
        for _ in 0..2 {
            assert!(matches!(
                tx.recv().await.unwrap().event,
                ClientEventKind::Response(ref r) if r.status.as_u16() == 200
            ));
        }
        advance(Duration::from_secs(33)).await;
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Terminated
        ));
        assert_all_ended(&layer, "Timer M");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_non_invite_client_absorbs_retransmissions_until_timer_k() {
        let (layer, _rx, _sink) = layer();
        let req = our_options("z9hG4bKkkk");
        let mut tx = layer.send_request(req.clone(), peer()).await.unwrap();
        let key = tx.key().clone();
        let from = udp_source();
        layer
            .on_message(response(&req, 200, Some("x")).into(), from)
            .await
            .unwrap();
        assert!(client_lingers(&layer, &key), "Completed lingers");
        assert_eq!(layer.pending_timers(), 1, "only Timer K is left");
        layer
            .on_message(response(&req, 200, Some("x")).into(), from)
            .await
            .unwrap();
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Response(_)
        ));
        advance(Duration::from_secs(6)).await;
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Terminated
        ));
        assert_all_ended(&layer, "Timer K");
    }

    /// Without `terminated_events` a TU's shared channel gets the
    /// responses and timeouts but no `Terminated`; a transaction's own
    /// channel still closes when it ends.
    #[tokio::test(start_paused = true)]
    async fn without_terminated_events_a_client_transaction_ends_silently() {
        let (layer, _rx, _sink) = layer_with(LayerConfig {
            terminated_events: false,
            ..LayerConfig::default()
        });
        let (events, mut shared) = mpsc::channel(16);
        let req = our_options("z9hG4bKquiet");
        let key = layer
            .send_request_with(req.clone(), peer(), events.clone())
            .await
            .unwrap();
        let from = udp_source();
        layer
            .on_message(response(&req, 200, Some("x")).into(), from)
            .await
            .unwrap();
        let ev = shared.recv().await.unwrap();
        assert_eq!(*ev.key, *key);
        assert!(matches!(ev.event, ClientEventKind::Response(_)));
        // An unanswered one still times out (Timer F).
        let lost = our_options("z9hG4bKlost");
        layer
            .send_request_with(lost, peer(), events.clone())
            .await
            .unwrap();
        advance(Duration::from_secs(40)).await;
        let ev = shared.recv().await.unwrap();
        assert_eq!(ev.key.branch(), "z9hG4bKlost");
        assert!(matches!(ev.event, ClientEventKind::Timeout));
        assert_eq!(layer.transaction_counts(), (0, 0), "Timers K and F");
        assert!(shared.try_recv().is_err(), "no Terminated");
        // A transaction's own channel closes with it.
        let own = our_options("z9hG4bKown");
        let mut tx = layer.send_request(own.clone(), peer()).await.unwrap();
        layer
            .on_message(response(&own, 200, Some("y")).into(), from)
            .await
            .unwrap();
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Response(_)
        ));
        advance(Duration::from_secs(6)).await;
        assert!(tx.recv().await.is_none(), "closed, without Terminated");
    }

    /// Bytes of a shared key: the `Arc`'s two counters and the key.
    fn arc_bytes<K>() -> usize {
        2 * size_of::<usize>() + size_of::<K>()
    }

    /// Bytes a lingering server transaction keeps: its table slot, its key
    /// (with its copy of the branch, inline), its record and the record's
    /// heap, and its one timer's target.
    fn lingering_server_bytes(layer: &TransactionLayer, key: &ServerKey) -> usize {
        let entry = layer.inner.servers.get(key).unwrap();
        let ServerTx::Lingering(l) = &entry.tx else {
            panic!("not lingering");
        };
        size_of::<Slot<ServerKey>>()
            + size_of::<ServerEntry>()
            + arc_bytes::<ServerKey>()
            + size_of::<LingeringServer>()
            + l.linger.heap_bytes()
            + size_of::<TimerTarget>()
    }

    /// As [`lingering_server_bytes`], for a client transaction.
    fn lingering_client_bytes(layer: &TransactionLayer, key: &ClientKey) -> usize {
        let entry = layer.inner.clients.get(key).unwrap();
        let ClientTx::Lingering(l) = &entry.tx else {
            panic!("not lingering");
        };
        size_of::<Slot<ClientKey>>()
            + size_of::<ClientEntry>()
            + arc_bytes::<ClientKey>()
            + size_of::<LingeringClient>()
            + l.linger.heap_bytes()
            + size_of::<TimerTarget>()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_transaction_keeps_only_what_retransmissions_need() {
        // A table slot is five words: the shared key and its hash, the id
        // and the boxed state (the full machine, 512 or 536 bytes, while
        // active); a timer's target three (the shared key, the id, the
        // timer, with the drain count and the holds left in its padding).
        assert!(size_of::<(Slot<ServerKey>, ServerEntry)>() <= 40);
        assert!(size_of::<(Slot<ClientKey>, ClientEntry)>() <= 40);
        assert!(size_of::<TimerTarget>() <= 24);
        // 176 bytes with the reply destination (allocator size class 192),
        // 144 with its port (class 160).
        assert!(size_of::<LingeringServer>() <= 144);
        assert!(size_of::<ServerKey>() <= 104);
        assert!(size_of::<ClientKey>() <= 72);

        let (layer, mut rx, _sink) = layer();
        let src = udp_source();
        // INVITE server, Accepted: was a 456-byte slot, a 272-byte machine
        // and a 136-byte timer target (864 bytes).
        layer.on_message(invite().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        let ok = response(&req.request, 200, Some("srv"));
        req.tx.respond(ok).await.unwrap();
        let accepted = lingering_server_bytes(&layer, req.tx.key());
        assert!(accepted <= 336, "{accepted}");
        // Non-INVITE server, Completed: the final response as sent (RFC
        // 3261 §17.2.2) and little else; was 592 bytes and it.
        layer.on_message(options().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        let ok = response(&req.request, 200, Some("srv"));
        let wire = ok.to_bytes().len();
        req.tx.respond(ok).await.unwrap();
        let completed = lingering_server_bytes(&layer, req.tx.key());
        assert!(completed <= 336 + wire, "{completed} for {wire}");

        // INVITE client, Accepted: nothing but where events go; was a
        // 304-byte slot, a 416-byte machine and a 136-byte timer target.
        let inv = our_invite();
        let tx = layer.send_request(inv.clone(), peer()).await.unwrap();
        let ok = response(&inv, 200, Some("r"));
        layer.on_message(ok.into(), src).await.unwrap();
        // (Keys hold their branch inline since session 10: 16 bytes more
        // here, and no allocation of its own for it, which these sums
        // never counted.)
        let accepted = lingering_client_bytes(&layer, tx.key());
        assert!(accepted <= 248, "{accepted}");
        // Non-INVITE client, Completed.
        let req = our_options("z9hG4bKsize");
        let tx = layer.send_request(req.clone(), peer()).await.unwrap();
        let ok = response(&req, 200, Some("r"));
        layer.on_message(ok.into(), src).await.unwrap();
        let completed = lingering_client_bytes(&layer, tx.key());
        assert!(completed <= 248, "{completed}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_memory_of_a_peak_is_given_back_once_its_transactions_end() {
        let (layer, mut rx, _sink) = layer();
        let src = udp_source();
        for i in 0..10_000 {
            let mut req = options();
            req.headers.set(
                HeaderName::Via,
                format!("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKpeak{i}"),
            );
            layer.on_message(req.into(), src).await.unwrap();
            let r = expect_request(&mut rx).await;
            r.tx.respond(response(&r.request, 200, Some("t")))
                .await
                .unwrap();
        }
        let peak = layer.inner.servers.capacity();
        let slab = layer.inner.wheel.slab_capacity();
        assert!(peak >= 10_000 && slab >= 10_000, "{peak} {slab}");
        // While they linger nothing is trimmed.
        advance(Duration::from_secs(5)).await;
        assert_eq!(layer.inner.servers.capacity(), peak);
        assert_eq!(layer.inner.wheel.slab_capacity(), slab);
        // Timer J ends them all; within a trim period the memory is back.
        advance(Duration::from_secs(30)).await;
        assert_eq!(layer.transaction_counts(), (0, 0));
        assert!(layer.inner.servers.capacity() < peak / 4);
        assert!(layer.inner.wheel.slab_capacity() < 64);
    }

    /// `n` answered OPTIONS server transactions, lingering in Completed
    /// until Timer J (all of one instant: their Timer J falls due at once).
    async fn lingering_servers(
        layer: &TransactionLayer,
        rx: &mut mpsc::Receiver<Incoming>,
        n: usize,
    ) {
        let src = udp_source();
        for i in 0..n {
            let mut req = options();
            req.headers.set(
                HeaderName::Via,
                format!("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKwave{i}"),
            );
            layer.on_message(req.into(), src).await.unwrap();
            let r = expect_request(rx).await;
            r.tx.respond(response(&r.request, 200, Some("t")))
                .await
                .unwrap();
        }
    }

    #[test]
    fn a_reserve_makes_room_for_what_the_calls_of_one_second_leave_behind() {
        assert_eq!(
            Reserve::for_rate(0, &TimerConfig::default()),
            Reserve::default()
        );
        // T1 500 ms: 64*T1 = 32 s, one more second each; T4 5 s.
        assert_eq!(
            Reserve::for_rate(1000, &TimerConfig::default()),
            Reserve {
                servers: 66_000,
                clients: 39_000,
                timers: 105_000,
                timers_per_second: 3000,
            }
        );
        let fast = TimerConfig {
            t1: Duration::from_millis(200),
            ..TimerConfig::default()
        };
        // 64*T1 = 12.8 s.
        let r = Reserve::for_rate(10, &fast);
        assert_eq!((r.servers, r.clients, r.timers), (276, 198, 474));
    }

    /// The config's maxima (T1 1 min, T4 10 min, 100,000 calls/s) would
    /// ask for ~768M table slots: the reserve stays within its cap, split
    /// as the uncapped one is, and a layer with it starts.
    #[tokio::test(start_paused = true)]
    async fn a_reserve_at_the_config_maxima_is_capped() {
        let longest = TimerConfig {
            t1: Duration::from_secs(60),
            t4: Duration::from_secs(600),
            ..TimerConfig::default()
        };
        let r = Reserve::for_rate(100_000, &longest);
        assert!(r.servers + r.clients <= Reserve::MAX_TRANSACTIONS, "{r:?}");
        assert!(r.servers + r.clients > Reserve::MAX_TRANSACTIONS - 2);
        assert_eq!(r.timers, r.servers + r.clients);
        assert!(r.timers_per_second <= r.timers);
        // 2*3841 s of servers to 3841 + 601 s of clients.
        let ratio = r.servers as f64 / r.clients as f64;
        assert!((ratio - 7682.0 / 4442.0).abs() < 1e-3, "{ratio}");
        // The default timers at the largest rate are capped as well.
        let r = Reserve::for_rate(100_000, &TimerConfig::default());
        assert!(r.servers + r.clients <= Reserve::MAX_TRANSACTIONS);
        let (layer, _rx, _sink) = layer_with(LayerConfig {
            expected_cps: 100_000,
            timers: longest,
            ..LayerConfig::default()
        });
        assert_eq!(layer.inner.reserve, Reserve::for_rate(100_000, &longest));
    }

    #[tokio::test(start_paused = true)]
    async fn a_layer_sized_for_a_rate_starts_with_that_room_and_keeps_it() {
        let (layer, _rx, _sink) = layer_with(LayerConfig {
            expected_cps: 1000,
            ..LayerConfig::default()
        });
        let inner = &layer.inner;
        assert_eq!(inner.servers.shards().len(), TABLE_SHARDS);
        assert_eq!(inner.clients.shards().len(), TABLE_SHARDS);
        assert!(
            inner.servers.capacity() >= 66_000,
            "{}",
            inner.servers.capacity()
        );
        assert!(
            inner.clients.capacity() >= 39_000,
            "{}",
            inner.clients.capacity()
        );
        assert!(inner.wheel.slab_capacity() >= 105_000);
        let (servers, clients) = (inner.servers.capacity(), inner.clients.capacity());
        // Empty, yet trimming gives none of it back.
        inner.trim();
        assert_eq!(inner.servers.capacity(), servers);
        assert_eq!(inner.clients.capacity(), clients);
        assert!(inner.wheel.slab_capacity() >= 105_000);
        // Without a rate the tables start empty.
        let (plain, _rx, _sink) = layer_with(LayerConfig::default());
        assert_eq!(plain.inner.servers.capacity(), 0);
        assert_eq!(plain.inner.servers.shards().len(), TABLE_SHARDS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peak_above_the_reserve_is_given_back_down_to_the_reserve() {
        let (layer, mut rx, _sink) = layer_with(LayerConfig {
            expected_cps: 20,
            ..LayerConfig::default()
        });
        let reserve = layer.inner.reserve;
        assert_eq!((reserve.servers, reserve.timers), (1320, 2100));
        lingering_servers(&layer, &mut rx, 10_000).await;
        let peak = layer.inner.servers.capacity();
        let slab = layer.inner.wheel.slab_capacity();
        assert!(peak >= 10_000 && slab >= 10_000, "{peak} {slab}");
        advance(Duration::from_secs(35)).await;
        assert_eq!(layer.transaction_counts(), (0, 0));
        let servers = layer.inner.servers.capacity();
        assert!(
            servers >= reserve.servers && servers < peak / 4,
            "{servers} {peak}"
        );
        let slab_now = layer.inner.wheel.slab_capacity();
        assert!(
            slab_now >= reserve.timers && slab_now < slab / 4,
            "{slab_now} {slab}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wave_of_expiries_lets_other_tasks_run_between_chunks() {
        let (layer, mut rx, _sink) = layer();
        let n = 3 * EXPIRY_CHUNK;
        lingering_servers(&layer, &mut rx, n).await;
        // Just before their Timer J (64*T1 = 32 s, rounded up to 100 ms).
        advance(Duration::from_secs(31)).await;
        assert_eq!(layer.transaction_counts(), (0, n));
        let probe = {
            let layer = layer.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let (_, servers) = layer.transaction_counts();
                    seen.push(servers);
                    if servers == 0 {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        tokio::time::advance(Duration::from_secs(2)).await;
        let seen = probe.await.unwrap();
        // The probe ran while the wave was under way, between chunks
        // (fired at once, it would see only n, then 0).
        let between: Vec<usize> = seen.iter().copied().filter(|&c| c > 0 && c < n).collect();
        assert!(!between.is_empty(), "{seen:?}");
        assert!(
            between
                .iter()
                .all(|&c| c == n - EXPIRY_CHUNK || c == n - 2 * EXPIRY_CHUNK),
            "{seen:?}"
        );
    }

    /// A sink whose receive side reports drain count `drains` and never
    /// drains by itself (it is behind).
    fn layer_behind() -> (TransactionLayer, mpsc::Receiver<Incoming>, Arc<FakeSink>) {
        let (layer, rx, sink) = layer();
        *sink.drains.lock().unwrap() = Some(7);
        (layer, rx, sink)
    }

    fn deferred(layer: &TransactionLayer) -> (u64, u64) {
        let m = layer.metrics();
        (
            m.request_retransmissions_deferred.load(Ordering::Relaxed),
            m.response_retransmissions_deferred.load(Ordering::Relaxed),
        )
    }

    /// Timer E (then A) due while the receive side has not drained since
    /// the request went out: nothing is sent, the timer looks again every
    /// T1/5; once it has drained the request goes out, and the next
    /// interval counts from then. Timer F (B) still ends the transaction
    /// at 64*T1.
    #[tokio::test(start_paused = true)]
    async fn a_retransmission_waits_until_the_receive_side_drained_since_the_send() {
        // Behind for good after the third send: each retransmission then
        // goes out one interval of its own late (E: 2, 4, 4, 4 s; A: 2, 4,
        // 8 s), and the timeout comes at 64*T1 all the same.
        let options_late = [5900, 13_900, 21_900, 29_900];
        let invite_late = [5900, 13_900, 29_900];
        let cases = [
            (our_options("z9hG4bKbehind"), &options_late[..]),
            (our_invite(), &invite_late[..]),
        ];
        for (request, late) in cases {
            let (layer, _rx, sink) = layer_behind();
            let start = Instant::now();
            let mut tx = layer.send_request(request, peer()).await.unwrap();
            assert_eq!(sink.send_times(), [ms(0)]);
            // Timer E/A due at 500 ms, looked at again at 600 and 700 ms.
            advance_to(start, ms(750)).await;
            assert_eq!(sink.send_times(), [ms(0)], "held back while behind");
            assert_eq!(deferred(&layer), (3, 0));
            assert_eq!(
                layer
                    .metrics()
                    .request_retransmissions
                    .load(Ordering::Relaxed),
                0
            );
            sink.drain();
            advance_to(start, ms(850)).await;
            assert_eq!(sink.send_times(), [ms(0), ms(800)], "sent once drained");
            // The next one is due 2*T1 after that send (1,800 ms), and
            // waits for a drain since it again.
            advance_to(start, ms(1850)).await;
            assert_eq!(sink.send_times().len(), 2);
            assert_eq!(deferred(&layer), (4, 0));
            sink.drain();
            advance_to(start, ms(1950)).await;
            assert_eq!(sink.send_times(), [ms(0), ms(800), ms(1900)]);
            let m = layer.metrics();
            assert_eq!(m.request_retransmissions.load(Ordering::Relaxed), 2);
            advance_to(start, ms(31_990)).await;
            assert!(tx.events.try_recv().is_err(), "no timeout before 32 s");
            advance_to(start, ms(32_000)).await;
            assert!(matches!(
                tx.recv().await.unwrap().event,
                ClientEventKind::Timeout
            ));
            assert!(matches!(
                tx.recv().await.unwrap().event,
                ClientEventKind::Terminated
            ));
            let expected: Vec<Duration> =
                [0, 800, 1900].iter().chain(late).map(|&t| ms(t)).collect();
            assert_eq!(sink.send_times(), expected);
            assert_eq!(layer.transaction_counts(), (0, 0));
            assert_eq!(layer.pending_timers(), 0, "the deferred timer is gone");
        }
    }

    /// A receive side that never drains (every batch full): Timer E / A
    /// holds each retransmission back one interval of its own and then
    /// sends it all the same (RFC 3261 §17.1.1.2, §17.1.2.2), so a lost
    /// request is still resent; the next interval counts from that send.
    #[tokio::test(start_paused = true)]
    async fn a_retransmission_goes_out_one_interval_late_when_the_socket_never_drains() {
        // E: due 500, 2000, 5000, 11_000, 19_000, 27_000 (intervals 500,
        // 1000, 2000, then T2), each sent its interval later.
        let options_sends = [0, 1000, 3000, 7000, 15_000, 23_000, 31_000];
        // A: due 500, 2000, 5000, 11_000, 23_000 (doubling, no cap).
        let invite_sends = [0, 1000, 3000, 7000, 15_000, 31_000];
        let cases = [
            (our_options("z9hG4bKnever"), &options_sends[..]),
            (our_invite(), &invite_sends[..]),
        ];
        for (request, sends) in cases {
            let (layer, _rx, sink) = layer_behind();
            let start = Instant::now();
            let mut tx = layer.send_request(request, peer()).await.unwrap();
            advance_to(start, ms(990)).await;
            assert_eq!(sink.send_times(), [ms(0)], "held back within T1");
            advance_to(start, ms(1010)).await;
            assert_eq!(sink.send_times(), [ms(0), ms(1000)], "one T1 late");
            advance_to(start, ms(32_000)).await;
            let expected: Vec<Duration> = sends.iter().map(|&t| ms(t)).collect();
            assert_eq!(sink.send_times(), expected);
            let m = layer.metrics();
            let resent = m.request_retransmissions.load(Ordering::Relaxed);
            assert_eq!(resent, sends.len() as u64 - 1);
            // 100 ms steps: 5 + 10 + 20 + 40 + 40 + 40 (E) or + 80 (A).
            assert_eq!(deferred(&layer), (155, 0));
            assert!(matches!(
                tx.recv().await.unwrap().event,
                ClientEventKind::Timeout
            ));
            assert_eq!(layer.pending_timers(), 0);
        }
    }

    /// Timer G and the layer's own 2xx retransmission (`retransmit_2xx`)
    /// over a receive side that never drains: each response
    /// retransmission goes out one interval of its own late (§17.2.1,
    /// §13.3.1.4), T2 capping the interval; Timer H (the 2xx's 64*T1)
    /// still ends it at 32 s.
    #[tokio::test(start_paused = true)]
    async fn a_response_retransmission_goes_out_one_interval_late_when_the_socket_never_drains() {
        for status in [486, 200] {
            let (layer, mut rx, sink) = layer_with(LayerConfig {
                retransmit_2xx: true,
                ..LayerConfig::default()
            });
            *sink.drains.lock().unwrap() = Some(3);
            let start = Instant::now();
            layer
                .on_message(invite().into(), udp_source())
                .await
                .unwrap();
            let req = expect_request(&mut rx).await;
            req.tx
                .respond(response(&req.request, status, Some("srv")))
                .await
                .unwrap();
            advance_to(start, ms(990)).await;
            assert_eq!(sink.statuses(), [status], "{status}: held back within T1");
            advance_to(start, ms(32_000)).await;
            let sends = [0, 1000, 3000, 7000, 15_000, 23_000, 31_000];
            let expected: Vec<Duration> = sends.iter().map(|&t| ms(t)).collect();
            assert_eq!(sink.send_times(), expected, "{status}");
            let m = layer.metrics();
            let resent = m.response_retransmissions.load(Ordering::Relaxed);
            assert_eq!(resent, 6, "{status}");
            assert_eq!(deferred(&layer), (0, 155), "{status}");
            assert!(matches!(server_event(&mut rx).await, TuEvent::Timeout));
        }
    }

    /// The TU's 2xx retransmissions through an Accepted transaction over
    /// a receive side that never drains: at most every other one is held
    /// back, so each interval of the TU's the 2xx goes out at least once
    /// in two.
    #[tokio::test(start_paused = true)]
    async fn the_tus_2xx_retransmissions_are_skipped_at_most_every_other_one() {
        let (layer, mut rx, sink) = layer_behind();
        layer
            .on_message(invite().into(), udp_source())
            .await
            .unwrap();
        let req = expect_request(&mut rx).await;
        let ok = response(&req.request, 200, Some("srv"));
        req.tx.respond(ok.clone()).await.unwrap();
        assert!(server_lingers(&layer, req.tx.key()));
        let mut sent = Vec::new();
        for _ in 0..6 {
            req.tx.respond(ok.clone()).await.unwrap();
            sent.push(sink.statuses().len());
        }
        assert_eq!(sent, [1, 2, 2, 3, 3, 4], "held, sent, held, sent, …");
        assert_eq!(deferred(&layer), (0, 3));
    }

    /// A response that arrives while the retransmission is held back ends
    /// the waiting: nothing more is sent and no timer is left behind.
    #[tokio::test(start_paused = true)]
    async fn a_response_read_while_a_retransmission_waits_cancels_it() {
        let (layer, _rx, sink) = layer_behind();
        let start = Instant::now();
        let req = our_options("z9hG4bKlate");
        let mut tx = layer.send_request(req.clone(), peer()).await.unwrap();
        advance_to(start, ms(650)).await;
        assert_eq!(deferred(&layer), (2, 0));
        let ok = response(&req, 200, Some("x"));
        layer.on_message(ok.into(), udp_source()).await.unwrap();
        assert!(matches!(
            tx.recv().await.unwrap().event,
            ClientEventKind::Response(_)
        ));
        sink.drain();
        advance_to(start, ms(5_000)).await;
        assert_eq!(sink.send_times(), [ms(0)]);
        assert_eq!(deferred(&layer), (2, 0));
        advance_to(start, ms(6_000)).await;
        assert_all_ended(&layer, "Timer K");
    }

    /// With a receive side that drains between any two readings (never
    /// behind), retransmissions keep RFC 3261's schedule exactly, as
    /// without drain counts.
    #[tokio::test(start_paused = true)]
    async fn a_receive_side_that_keeps_draining_leaves_the_schedule_as_it_was() {
        let mut schedules = Vec::new();
        for draining in [false, true] {
            let (layer, _rx, sink) = layer();
            sink.draining.store(draining, Ordering::Relaxed);
            let start = Instant::now();
            let _non_invite = layer
                .send_request(our_options("z9hG4bKsched"), peer())
                .await
                .unwrap();
            let _invite = layer.send_request(our_invite(), peer()).await.unwrap();
            advance_to(start, ms(40_000)).await;
            assert_eq!(deferred(&layer), (0, 0));
            schedules.push(sink.sent());
        }
        assert_eq!(schedules[0], schedules[1]);
        let times: Vec<Duration> = schedules[1].iter().map(|(at, _, _)| *at).collect();
        // E: 0, 0.5, 1.5, 3.5, 7.5 … every T2; A: 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5.
        for at in [0, 500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 31_500] {
            assert!(times.contains(&ms(at)), "{at} ms: {times:?}");
        }
        assert_eq!(times.len(), 11 + 7);
    }

    /// Timer G due while the ACK may be queued unread: held back like a
    /// request retransmission; Timer H still fires at 64*T1.
    #[tokio::test(start_paused = true)]
    async fn timer_g_waits_for_a_drain_and_timer_h_keeps_its_time() {
        let (layer, mut rx, sink) = layer_behind();
        let start = Instant::now();
        let src = udp_source();
        layer.on_message(invite().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        req.tx
            .respond(response(&req.request, 486, Some("srv")))
            .await
            .unwrap();
        advance_to(start, ms(750)).await;
        assert_eq!(sink.statuses(), [486]);
        assert_eq!(deferred(&layer), (0, 3));
        sink.drain();
        advance_to(start, ms(850)).await;
        assert_eq!(sink.statuses(), [486, 486]);
        assert_eq!(sink.send_times()[1], ms(800));
        assert_eq!(
            layer
                .metrics()
                .response_retransmissions
                .load(Ordering::Relaxed),
            1
        );
        advance_to(start, ms(31_990)).await;
        assert!(rx.try_recv().is_err());
        advance_to(start, ms(32_000)).await;
        assert!(matches!(server_event(&mut rx).await, TuEvent::Timeout));
        assert_all_ended(&layer, "");
    }

    /// The TU's 2xx retransmissions through a lingering Accepted INVITE
    /// server transaction: one due while the receive side has not drained
    /// since the 2xx went out is not sent (the TU's next one comes at its
    /// next interval); once drained, it is.
    #[tokio::test(start_paused = true)]
    async fn the_tus_2xx_retransmission_is_held_back_until_a_drain() {
        let (layer, mut rx, sink) = layer_behind();
        let src = udp_source();
        layer.on_message(invite().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        let ok = response(&req.request, 200, Some("srv"));
        req.tx.respond(ok.clone()).await.unwrap();
        assert!(server_lingers(&layer, req.tx.key()));
        assert_eq!(sink.statuses(), [200], "the first 2xx always goes");
        req.tx.respond(ok.clone()).await.unwrap();
        assert_eq!(sink.statuses(), [200], "held back");
        assert_eq!(deferred(&layer), (0, 1));
        sink.drain();
        req.tx.respond(ok.clone()).await.unwrap();
        assert_eq!(sink.statuses(), [200, 200], "sent once drained");
        req.tx.respond(ok.clone()).await.unwrap();
        assert_eq!(sink.statuses(), [200, 200], "not drained since that one");
        sink.drain();
        req.tx.respond(ok).await.unwrap();
        assert_eq!(sink.statuses(), [200, 200, 200]);
        assert_eq!(deferred(&layer), (0, 2));
    }

    /// The layer's own 2xx retransmission (`retransmit_2xx`) waits for a
    /// drain too, and still gives up at 64*T1.
    #[tokio::test(start_paused = true)]
    async fn the_layers_2xx_retransmission_waits_for_a_drain() {
        let (layer, mut rx, sink) = layer_with(LayerConfig {
            retransmit_2xx: true,
            ..LayerConfig::default()
        });
        *sink.drains.lock().unwrap() = Some(1);
        let start = Instant::now();
        let src = udp_source();
        layer.on_message(invite().into(), src).await.unwrap();
        let req = expect_request(&mut rx).await;
        req.tx
            .respond(response(&req.request, 200, Some("srv")))
            .await
            .unwrap();
        advance_to(start, ms(650)).await;
        assert_eq!(sink.statuses(), [200]);
        assert_eq!(deferred(&layer), (0, 2));
        sink.drain();
        advance_to(start, ms(750)).await;
        assert_eq!(sink.statuses(), [200, 200]);
        advance_to(start, ms(32_000)).await;
        assert!(matches!(server_event(&mut rx).await, TuEvent::Timeout));
    }
}
