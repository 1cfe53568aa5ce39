//! The daemon (`vpbx run`): binds the transports, answers requests, and owns
//! the process lifetime: SIGTERM/SIGINT drain (a second one cuts the drain
//! short), stop receiving, and exit;
//! SIGHUP and config file changes reload the routing table (see
//! [`crate::config::watch()`]).
//!
//! Each bound socket is reported on stdout as `listening PROTO ADDR` (port 0
//! resolved), so scripts and tests learn the ports; at exit the transport
//! counters are printed as `transport counters: name=value ...` and
//! `transaction counters: ...`.
//!
//! Every message goes through the transaction layer. The transaction user
//! first lets [`Uas`] refuse what the validator refuses (the RFC 4475
//! semantic checks), then hands new INVITEs, in-dialog requests, CANCEL, 2xx
//! ACKs and stray responses to the B2BUA ([`crate::b2bua::B2bua`]); the
//! rest (OPTIONS, methods we do not serve) is answered by [`Uas`]. Draining
//! refuses new calls with 503 and waits for calls in progress; then the CDR
//! file is flushed and synced, and the call table is reported on stdout as
//! `b2bua calls: active=N legs=M` (0 and 0 after a clean drain).

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::b2bua::admission;
use crate::b2bua::call::CallSettings;
use crate::b2bua::{B2bua, B2buaConfig, RefusedCalls};
use crate::cdr::{CdrWriter, WriterOptions};
use crate::config::{self, Config, DaemonConfig, ListenAddr};
use crate::routing::{Routes, RoutingTable};
use crate::sip::{
    validate_request_with, HeaderName, Message, Method, Policy, Request, Response, StatusCode,
};
use crate::transaction::{
    Incoming, LayerConfig, Refused, Serial, ServerRequest, TimerConfig, TransactionLayer,
    TransactionUser, TransportSink, TuItem,
};
use crate::transport::{
    self, Inbound, RefusalObserver, Source, TransportConfig, Transports, WakeupCoalescing,
};

/// Options of `vpbx run` that are not in the config files.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--listen` values; when non-empty they replace the config's `listen`.
    pub listen_overrides: Vec<ListenAddr>,
    /// `--config` directory, watched for reload; `None` for the embedded config.
    pub config_dir: Option<PathBuf>,
    /// The runtime's wake-up coalescing, when the caller installed it
    /// (its counters go into the stop report).
    pub coalescing: Option<Arc<WakeupCoalescing>>,
}

/// Methods this daemon handles, in the order listed in `Allow`: the ones
/// that create or end calls, OPTIONS, and those the B2BUA relays inside a
/// dialog (the same list as [`crate::b2bua::ALLOW`]).
pub const ALLOWED_METHODS: &[Method] = &[
    Method::Invite,
    Method::Ack,
    Method::Cancel,
    Method::Bye,
    Method::Options,
    Method::Prack,
    Method::Update,
    Method::Info,
    Method::Message,
    Method::Notify,
];

/// Option tags we support (`Supported`; any other tag in `Require` is 420):
/// reliable provisionals (RFC 3262, PRACK relayed end to end) and session
/// timers (RFC 4028, Session-Expires/Min-SE relayed, refreshes relayed in
/// the dialog). The B2BUA passes `Require` on to the callee.
pub const SUPPORTED_OPTION_TAGS: &[&str] = &["100rel", "timer"];

/// Body types we accept in an INVITE and answer with (`Accept`).
pub const SESSION_BODY_TYPES: &[&str] = &["application/sdp"];

/// `Server` header value of generated responses.
const SERVER: &str = concat!("vpbx/", env!("CARGO_PKG_VERSION"));

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    // Before the sockets are announced: a SIGTERM sent as soon as a client
    // sees them must drain, not kill the process (the default action).
    let mut termination = Termination::new()?;
    let listen = if opts.listen_overrides.is_empty() {
        &config.daemon.listen
    } else {
        &opts.listen_overrides
    };
    // Before the sockets: INVITEs the transport and the transaction layer
    // refuse on their own get a CDR line too.
    let cdr = CdrWriter::spawn(
        &config.daemon.cdr.path,
        WriterOptions::from_config(&config.daemon.cdr),
    )
    .await
    .context("cannot open the CDR file")?;
    let refusals: Arc<dyn RefusalObserver> = Arc::new(RefusedCalls::new(cdr.sink()));
    let (transports, inbound) = Transports::bind(
        listen,
        TransportConfig {
            refusals: Some(Arc::clone(&refusals)),
            ..transport_config(&config.daemon)
        },
    )
    .await
    .context("cannot start the SIP transports")?;
    announce(&transports);

    let routes = Arc::new(Routes::new(
        RoutingTable::from_config(&config).context("invalid routing table")?,
    ));
    // Reload: file changes and SIGHUP, only with a config directory. The
    // embedded config never changes, but SIGHUP must not kill the process.
    let _watch = match &opts.config_dir {
        Some(dir) => {
            let routes = Arc::clone(&routes);
            Some(
                // The table is in effect when `watch` logs "config reloaded".
                config::watch(dir.clone(), config.daemon.reload.debounce, move |new| {
                    RoutingTable::from_config(&new).map(|table| routes.store(table))
                })
                .context("cannot watch the config directory")?,
            )
        }
        None => None,
    };
    let ignore_hup = if opts.config_dir.is_none() {
        Some(ignore_sighup()?)
    } else {
        None
    };

    let sink: Arc<dyn TransportSink> = Arc::new(transports.clone());
    let (layer, incoming) = TransactionLayer::new(
        sink,
        LayerConfig {
            refusals: Some(Arc::clone(&refusals)),
            ..layer_config(&config.daemon)
        },
    );
    let uas = Uas::new(Arc::clone(&routes)).with_refusals(refusals);
    let workers = usize::from(config.daemon.worker_threads);
    // One thread: the layer hands the B2BUA's client events to its user
    // (below); more: the B2BUA's own client-event task takes them.
    let start: fn(_, _, _, _, _) -> B2bua = if workers <= 1 {
        B2bua::for_user
    } else {
        B2bua::new
    };
    let b2bua = start(
        b2bua_config(&config.daemon),
        layer.clone(),
        transports.clone(),
        Arc::clone(&routes),
        Some(cdr.sink()),
    );
    let mut drain = Drain::new();
    {
        let b2bua = b2bua.clone();
        drain.register("calls", async move { b2bua.drained().await });
    }

    let mut lane_task = None;
    // The transports keep the handler weakly: kept here until the end.
    let mut udp_input = None;
    // As the transaction layer its user (kept weakly by the layer).
    let mut user = None;
    let tu = if workers <= 1 {
        // The layer hands its items to the TU directly, from the step
        // that makes them: no TU task, no channel.
        let (input, lane) = user_input(
            layer.clone(),
            uas.clone(),
            b2bua.clone(),
            layer_config(&config.daemon).tu_queue,
        );
        layer.set_user(&input);
        user = Some(input);
        drop(incoming);
        tokio::spawn(lane)
    } else {
        tokio::spawn(tu_loop(layer.clone(), uas.clone(), b2bua.clone(), incoming))
    };
    if workers <= 1 {
        // Before the first await: no datagram has been read yet.
        let (input, lane) = LayerInput::new(
            transports.clone(),
            layer.clone(),
            uas.clone(),
            transport_config(&config.daemon).inbound_queue,
        );
        let input: Arc<dyn transport::InboundHandler> = Arc::new(input);
        transports.set_udp_handler(&input);
        udp_input = Some(input);
        lane_task = Some(tokio::spawn(lane));
    }
    let pump = spawn_pumps(
        transports.clone(),
        layer.clone(),
        uas.clone(),
        inbound,
        workers,
    );
    tracing::info!(
        pbxs = config.pbxs.len(),
        numbers = routes.load().len(),
        "vpbx running"
    );
    termination.wait().await;
    // From here on new calls are refused (503); logged once in effect.
    b2bua.start_draining();
    tracing::info!("draining: new calls refused");

    // Requests keep flowing while draining, so calls in progress can end.
    // The drain time bounds the whole stop: the last part of it is kept
    // for hanging up the calls still up, and what is left after that is
    // only recorded, so the exit follows the drain time by no more than
    // the CDR flush (however many calls an overload left behind).
    let (wait_time, hang_up_time) = split_drain_time(config.daemon.shutdown.drain_time);
    let second_signal = termination.wait();
    drain.run_until(wait_time, second_signal).await;
    b2bua.hang_up_all(hang_up_time).await;
    tracing::info!("shutting down: no longer receiving");
    transports.shutdown().await;
    pump.abort();
    if let Some(lane) = lane_task {
        lane.abort();
    }
    drop(udp_input);
    tu.abort();
    let tu_panics = user.as_ref().map_or(0, |u| u.panics());
    drop(user);
    if let Some(task) = ignore_hup {
        task.abort();
    }
    if let Err(e) = cdr.shutdown().await {
        tracing::error!(error = %e, "CDR flush failed");
    }
    let coalescing = opts
        .coalescing
        .as_ref()
        .map_or_else(|| "off".to_owned(), |c| c.metrics().to_string());
    report(&format!(
        "b2bua calls: active={} legs={}\ntransport counters: {}\ntransaction counters: {} tu_panics={}\nwakeup coalescing: {}",
        b2bua.active_calls(),
        b2bua.leg_entries(),
        transports.metrics(),
        layer.metrics(),
        tu_panics,
        coalescing
    ));
    tracing::info!("stopped");
    Ok(())
}

/// Most of a stop's drain time kept for hanging up the calls left.
const MAX_HANG_UP_TIME: Duration = Duration::from_secs(1);

/// The drain time as (waiting for calls to end, hanging up those left):
/// a fifth of it, at most [`MAX_HANG_UP_TIME`], for the hang-up.
fn split_drain_time(drain_time: Duration) -> (Duration, Duration) {
    let hang_up = (drain_time / 5).min(MAX_HANG_UP_TIME);
    (drain_time.saturating_sub(hang_up), hang_up)
}

fn layer_config(daemon: &DaemonConfig) -> LayerConfig {
    LayerConfig {
        timers: TimerConfig {
            t1: daemon.timers.t1,
            t2: daemon.timers.t2,
            t4: daemon.timers.t4,
        },
        // The B2BUA drops them: its calls keep their own timers.
        terminated_events: false,
        expected_cps: daemon.limits.expected_cps,
        ..LayerConfig::default()
    }
}

fn b2bua_config(daemon: &DaemonConfig) -> B2buaConfig {
    B2buaConfig {
        calls: CallSettings {
            t1: daemon.timers.t1,
            t2: daemon.timers.t2,
            max_duration: Some(daemon.limits.max_call_duration),
        },
        limits: admission::Limits {
            max_calls: usize::try_from(daemon.limits.max_calls).unwrap_or(usize::MAX),
            max_cps: daemon.limits.max_cps,
            retry_after: OVERLOAD_RETRY_AFTER,
        },
        advertised_host: daemon.advertised_address.clone(),
        expected_cps: daemon.limits.expected_cps,
    }
}

/// `Retry-After` of the B2BUA's overload and drain 503s.
const OVERLOAD_RETRY_AFTER: Duration = Duration::from_secs(5);

fn transport_config(daemon: &DaemonConfig) -> TransportConfig {
    let defaults = TransportConfig::default();
    TransportConfig {
        limits: crate::sip::Limits {
            max_message_size: daemon.limits.max_message_size,
            ..defaults.limits.clone()
        },
        max_connections: usize::try_from(daemon.limits.max_tcp_connections).unwrap_or(usize::MAX),
        idle_timeout: daemon.limits.tcp_idle_timeout,
        connect_timeout: daemon.limits.tcp_connect_timeout,
        udp_receive_buffer: daemon.limits.udp_receive_buffer,
        // Timer B: as long as a caller retransmits an INVITE.
        refused_invite_memory: daemon.timers.t1.saturating_mul(64),
        ..defaults
    }
}

/// `listening PROTO ADDR` per bound socket, on stdout, flushed.
fn announce(transports: &Transports) {
    let lines: Vec<String> = transports
        .local_addrs()
        .into_iter()
        .map(|l| {
            tracing::info!(protocol = %l.protocol, addr = %l.addr, "listening");
            format!("listening {} {}", l.protocol, l.addr)
        })
        .collect();
    report(&lines.join("\n"));
}

/// A machine-readable line (or lines) on stdout, flushed. A closed or full
/// stdout is not a reason to stop serving calls: the failure is only logged.
fn report(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "cannot write to stdout");
    }
}

fn ignore_sighup() -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP ignored: running on the embedded config (no --config)");
        }
    }))
}

/// SIGTERM and SIGINT, listened for from the start of `run`.
struct Termination {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Termination {
    fn new() -> anyhow::Result<Termination> {
        Ok(Termination {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        })
    }

    /// Returns on the next SIGTERM or SIGINT.
    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM"),
            _ = self.int.recv() => tracing::info!("SIGINT"),
        }
    }
}

/// Capacity of each pump worker's queue.
const PUMP_QUEUE: usize = 1024;

/// Transport → transaction layer. With one worker thread, one task takes
/// the transport's messages straight from its queue (the TCP ones: UDP
/// messages go to [`LayerInput`], which refuses with 503 what its lane has
/// no room for, as the transport does for a full queue). With more, messages
/// are spread over one worker per thread by Call-ID, so those of one call
/// leg stay in order while different calls are matched and answered in
/// parallel; the returned task dispatches, and aborting it ends the workers
/// once their queues are empty. A full worker queue holds the dispatcher
/// back, which fills the transport's inbound queue, which answers 503
/// (never a silent drop).
fn spawn_pumps(
    transports: Transports,
    layer: TransactionLayer,
    uas: Uas,
    mut inbound: mpsc::Receiver<Inbound>,
    workers: usize,
) -> tokio::task::JoinHandle<()> {
    if workers <= 1 {
        return tokio::spawn(pump(transports, layer, uas, inbound));
    }
    let queues: Vec<mpsc::Sender<Inbound>> = (0..workers)
        .map(|_| {
            let (tx, rx) = mpsc::channel(PUMP_QUEUE);
            tokio::spawn(pump(transports.clone(), layer.clone(), uas.clone(), rx));
            tx
        })
        .collect();
    tokio::spawn(async move {
        while let Some(inbound) = inbound.recv().await {
            let shard = shard_of(&inbound, queues.len());
            if queues[shard].send(inbound).await.is_err() {
                return;
            }
        }
    })
}

/// The worker for a message. Over TCP, the connection's: a stream's
/// messages are handled in the order they came. Over UDP, a hash (FNV-1a)
/// of the Call-ID, so every message of a call leg goes to the same worker;
/// 0 without a Call-ID.
fn shard_of(inbound: &Inbound, shards: usize) -> usize {
    let shards = shards.max(1) as u64;
    if let Some(conn) = inbound.source.conn {
        return usize::try_from(conn.get() % shards).unwrap_or(0);
    }
    let headers = match &inbound.message {
        Message::Request(r) => &r.headers,
        Message::Response(r) => &r.headers,
    };
    let Some(call_id) = headers.get(&HeaderName::CallId) else {
        return 0;
    };
    let hash = call_id
        .trim_ascii()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    usize::try_from(hash % shards).unwrap_or(0)
}

/// Transport → transaction layer, one worker. A request the layer cannot
/// key (no Via branch or sent-by, no CSeq: RFC 3261 §17.2.3) comes back
/// from it untouched and is answered statelessly; the validator names what
/// is missing.
async fn pump(
    transports: Transports,
    layer: TransactionLayer,
    uas: Uas,
    mut inbound: mpsc::Receiver<Inbound>,
) {
    while let Some(Inbound { message, source }) = inbound.recv().await {
        if let Err(refused) = layer.receive(message, source).await {
            answer_refused(&transports, &uas, refused, &source).await;
        }
    }
}

/// Answers statelessly a request the transaction layer refused because it
/// cannot key it (never an ACK); anything else it refused is only logged.
async fn answer_refused(transports: &Transports, uas: &Uas, refused: Refused, source: &Source) {
    match refused {
        Refused::Unkeyed { request, .. } if request.method != Method::Ack => {
            if let Some(response) = uas.answer(&request, |_| false) {
                uas.note_refusal(&request, &response);
                // Not waiting for a connect: this task steps other messages.
                if let Err(e) = transports.queue_response(&response, source).await {
                    tracing::debug!(error = %e, "cannot send response");
                }
            }
        }
        e => {
            tracing::debug!(error = %e, peer = %source.peer, "message refused by the transaction layer");
        }
    }
}

/// The UDP receive loop's way into the transaction layer with one worker
/// thread (see [`Transports::set_udp_handler`]): each message is matched
/// and stepped as it is read, as [`pump`] does it, without the hop through
/// the inbound queue and the pump task, as long as nothing is waiting.
///
/// What has to wait (a send the transport could not take at once: a
/// datagram with the UDP outbox and the socket buffer full, while a TCP
/// send never waits, not even for a connect, see `transport::Sent`; and
/// the stateless answer to a request the layer cannot key) goes to the
/// lane, one task that runs it in order; from then on every message goes
/// to the lane too, behind it, until the lane has run all it was given
/// (so a step's events never overtake those of the step before: a 486
/// reaches the TU before what the next datagram brings). The lane holds
/// at most its capacity; a message it has no room for is handed back to
/// the transport, which answers 503 as for a full inbound queue. The
/// check on the direct path is one load of the lane's count.
struct LayerInput {
    layer: TransactionLayer,
    lane: mpsc::Sender<LaneWork>,
    /// Work given to the lane and not yet finished by it.
    pending: Arc<AtomicUsize>,
}

/// What [`LayerInput`] gives its lane.
enum LaneWork {
    /// The sends of a step that had to wait.
    Deferred(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// A request the layer refused to key, to answer statelessly.
    Refused(Box<(Refused, Source)>),
    /// A message that came while the lane was busy.
    Message(Box<Inbound>),
}

impl LayerInput {
    /// The handler, and its lane's task (to run until shutdown), holding
    /// at most `capacity` messages.
    fn new(
        transports: Transports,
        layer: TransactionLayer,
        uas: Uas,
        capacity: usize,
    ) -> (LayerInput, impl Future<Output = ()> + Send + 'static) {
        let (lane, work) = mpsc::channel(capacity.max(1));
        let pending = Arc::new(AtomicUsize::new(0));
        let task = run_lane(transports, layer.clone(), uas, work, Arc::clone(&pending));
        (
            LayerInput {
                layer,
                lane,
                pending,
            },
            task,
        )
    }

    /// Room in the lane for one more piece of work, counted as pending;
    /// none if the lane is full or gone.
    fn reserve(&self) -> Option<mpsc::Permit<'_, LaneWork>> {
        let permit = self.lane.try_reserve().ok()?;
        self.pending.fetch_add(1, Ordering::Release);
        Some(permit)
    }
}

impl transport::InboundHandler for LayerInput {
    fn handle(&self, inbound: Inbound) -> Option<Inbound> {
        if self.pending.load(Ordering::Acquire) != 0 {
            let Some(permit) = self.reserve() else {
                return Some(inbound);
            };
            permit.send(LaneWork::Message(Box::new(inbound)));
            return None;
        }
        let Inbound { message, source } = inbound;
        let waiting = match self.layer.receive_now(message, source) {
            Ok(None) => return None,
            Ok(Some(deferred)) => LaneWork::Deferred(Box::pin(deferred)),
            Err(Refused::Unkeyed { request, error }) if request.method != Method::Ack => {
                LaneWork::Refused(Box::new((Refused::Unkeyed { request, error }, source)))
            }
            Err(refused) => {
                tracing::debug!(error = %refused, peer = %source.peer, "message refused by the transaction layer");
                return None;
            }
        };
        // Nothing is pending, so the lane has room unless it is gone
        // (shutdown): then what was waiting is dropped.
        match self.reserve() {
            Some(permit) => permit.send(waiting),
            None => tracing::debug!(peer = %source.peer, "lane closed: dropped"),
        }
        None
    }
}

/// Runs what [`LayerInput`] gives its lane, in order, one at a time.
async fn run_lane(
    transports: Transports,
    layer: TransactionLayer,
    uas: Uas,
    mut work: mpsc::Receiver<LaneWork>,
    pending: Arc<AtomicUsize>,
) {
    while let Some(item) = work.recv().await {
        match item {
            LaneWork::Deferred(sends) => sends.await,
            LaneWork::Refused(refused) => {
                let (refused, source) = *refused;
                answer_refused(&transports, &uas, refused, &source).await;
            }
            LaneWork::Message(inbound) => {
                let Inbound { message, source } = *inbound;
                if let Err(refused) = layer.receive(message, source).await {
                    answer_refused(&transports, &uas, refused, &source).await;
                }
            }
        }
        pending.fetch_sub(1, Ordering::Release);
    }
}

/// The transaction user with more than one worker thread: the task that
/// reads the layer's channel (the B2BUA's client events have their own).
async fn tu_loop(
    layer: TransactionLayer,
    uas: Uas,
    b2bua: B2bua,
    mut incoming: mpsc::Receiver<Incoming>,
) {
    while let Some(event) = incoming.recv().await {
        on_incoming(&layer, &uas, &b2bua, event).await;
    }
}

/// The transaction user with one worker thread: the layer hands it its
/// items (and the B2BUA's client events) directly, each handled at once
/// unless one before it is still waiting ([`Serial`]), at most `capacity`
/// queued (then new requests are answered 503 by the layer, as for a full
/// channel). Returns the user (kept weakly by the layer: hold it until
/// shutdown) and its lane, to run in a task.
fn user_input(
    layer: TransactionLayer,
    uas: Uas,
    b2bua: B2bua,
    capacity: usize,
) -> (
    Arc<dyn TransactionUser>,
    impl Future<Output = ()> + Send + 'static,
) {
    let tu = Arc::new((layer, uas, b2bua));
    let serial = Serial::new(capacity, move |item: TuItem| {
        let tu = Arc::clone(&tu);
        async move {
            let (layer, uas, b2bua) = &*tu;
            match item {
                TuItem::Incoming(event) => on_incoming(layer, uas, b2bua, event).await,
                TuItem::Client(event) => b2bua.client_event(event).await,
            }
        }
    });
    let lane = Arc::clone(&serial).lane();
    (serial, lane)
}

/// What the transaction user does with an item of the layer: refuses what
/// the validator refuses, gives the B2BUA its part (new INVITEs, in-dialog
/// requests, CANCEL, 2xx ACKs, stray responses) and answers the rest with
/// [`Uas`].
async fn on_incoming(layer: &TransactionLayer, uas: &Uas, b2bua: &B2bua, event: Incoming) {
    if let Incoming::Request(sr) = &event {
        if let Some(response) = uas.reject(&sr.request) {
            tracing::debug!(status = response.status.as_u16(), "refused");
            uas.note_refusal(&sr.request, &response);
            if let Err(e) = sr.tx.respond(response).await {
                tracing::debug!(error = %e, "cannot respond");
            }
            return;
        }
    }
    let Some(sr) = b2bua.handle(event).await else {
        return;
    };
    let ServerRequest {
        request,
        source,
        tx,
    } = *sr;
    let span = tracing::debug_span!(
        "request",
        method = %request.method,
        call_id = request.call_id().map(|c| c.to_string()).unwrap_or_default(),
        peer = %source.peer,
    );
    // Instrumented, not entered: the respond may be Pending, and a guard
    // held across it would leave the span entered while the caller (the
    // layer's step, the receive loop) goes on with other requests.
    async {
        let Some(response) = uas.answer(&request, |cancel| layer.find_invite(cancel).is_some())
        else {
            return;
        };
        tracing::debug!(status = response.status.as_u16(), "answer");
        if let Err(e) = tx.respond(response).await {
            tracing::debug!(error = %e, "cannot respond");
        }
    }
    .instrument(span)
    .await;
}

/// Work that must finish before the process exits, run on SIGTERM/SIGINT
/// while requests still flow, bounded by the drain time. The B2BUA (calls
/// in progress) registers here.
#[derive(Default)]
pub struct Drain {
    tasks: Vec<(&'static str, DrainTask)>,
}

type DrainTask = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Drain {
    /// Nothing to drain.
    pub fn new() -> Self {
        Drain::default()
    }

    /// Adds a task (named for the log).
    pub fn register(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.tasks.push((name, Box::pin(task)));
    }

    /// [`Drain::run`], cut short when `interrupt` completes (a second
    /// SIGTERM/SIGINT). Logs what did not finish.
    pub async fn run_until<T>(self, limit: Duration, interrupt: impl Future<Output = T>) {
        tokio::select! {
            unfinished = self.run(limit) => {
                if !unfinished.is_empty() {
                    tracing::warn!(?unfinished, "drain time over");
                }
            }
            _ = interrupt => tracing::warn!("second signal: drain cut short"),
        }
    }

    /// Runs all tasks concurrently; returns when all are done or `limit`
    /// has passed. Returns the names of the tasks that did not finish.
    pub async fn run(self, limit: Duration) -> Vec<&'static str> {
        let mut set = tokio::task::JoinSet::new();
        let names: Vec<&'static str> = self.tasks.iter().map(|(n, _)| *n).collect();
        for (i, (_, task)) in self.tasks.into_iter().enumerate() {
            set.spawn(async move {
                task.await;
                i
            });
        }
        let mut done = vec![false; names.len()];
        let all = async {
            while let Some(result) = set.join_next().await {
                if let Ok(i) = result {
                    done[i] = true;
                }
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(?limit, "drain time over");
        }
        names
            .into_iter()
            .zip(done)
            .filter(|(_, d)| !d)
            .map(|(n, _)| n)
            .collect()
    }
}

/// The daemon's user-agent server: decides the answer to each request in
/// its current role (a UAS / B2BUA endpoint, not a proxy or registrar).
///
/// Role decisions for the RFC 4475 cases whose answer depends on the role
/// (`tests/it/torture.rs` asserts all of `EXPECTED.tsv`):
///
/// | case | answer | why |
/// |---|---|---|
/// | zeromf (OPTIONS, Max-Forwards 0) | 200 | an endpoint answers; 483 is a proxy's (INVITE with 0 is 483: the B2BUA would forward it) |
/// | intmeth, esc02 (unknown methods) | 501 + Allow | RFC 3261 §8.2.1 |
/// | mismatch02 (unknown method, CSeq INVITE) | 501 | the method is the real problem; preferred by the RFC |
/// | badbranch (branch = bare magic cookie) | 400 | refused statelessly, the preferred answer |
/// | novelsc, unkscm (other URI schemes) | 416 | we never route on them |
/// | bext01 (Require unknown) | 420 + Unsupported | UAS role: Require (Proxy-Require is a proxy's) |
/// | invut (INVITE body application/unknownformat) | 415 + Accept | endpoint role |
/// | sdp01 (Accept without application/sdp) | 406 + Warning 399 | we answer only with SDP |
/// | unksm2 (REGISTER To isbn:) | 400 | the validator refuses a non-SIP AOR |
/// | regaut01, REGISTER in general | 405 + Allow | not a registrar (yet) |
/// | BYE/in-dialog requests without a dialog | 481 | RFC 3261 §12.2.2 |
/// | responses (bcast, scalarlg, unreason, ...) | never answered | stray ones are dropped (§17.1.3) |
#[derive(Clone)]
pub struct Uas {
    routes: Arc<Routes>,
    refusals: Option<Arc<dyn RefusalObserver>>,
}

impl Uas {
    /// A UAS answering INVITEs from `routes`.
    pub fn new(routes: Arc<Routes>) -> Self {
        Uas {
            routes,
            refusals: None,
        }
    }

    /// Tells `refusals` of the requests this UAS refuses (see
    /// [`Uas::note_refusal`]).
    pub fn with_refusals(self, refusals: Arc<dyn RefusalObserver>) -> Self {
        Uas {
            refusals: Some(refusals),
            ..self
        }
    }

    /// Tells the observer (if any) that `request` was answered with the
    /// final failure `response` (a refused INVITE gets its CDR line there).
    pub fn note_refusal(&self, request: &Request, response: &Response) {
        if let Some(refusals) = &self.refusals {
            if response.status.as_u16() >= 300 {
                refusals.refused(request, response.status);
            }
        }
    }

    /// The answer to a request, or `None` for ACK (never answered, RFC 3261
    /// §17.2.1). Order: the validator (505, 400, 416, 420, and for INVITE
    /// 415/406), then the method. `invite_exists` tells whether a CANCEL
    /// matches an INVITE server transaction (RFC 3261 §9.2).
    pub fn answer(
        &self,
        req: &Request,
        invite_exists: impl FnOnce(&Request) -> bool,
    ) -> Option<Response> {
        if req.method == Method::Ack {
            return None;
        }
        Some(
            self.reject(req)
                .unwrap_or_else(|| finish(self.by_method(req, invite_exists))),
        )
    }

    /// The validator's refusal of `req` (505, 400, 416, 420, and for INVITE
    /// 415/406), ready to send; `None` when the request is valid (or an ACK,
    /// which is never answered).
    pub fn reject(&self, req: &Request) -> Option<Response> {
        if req.method == Method::Ack {
            return None;
        }
        let invite = req.method == Method::Invite;
        let policy = Policy {
            supported: SUPPORTED_OPTION_TAGS,
            accept: invite.then_some(SESSION_BODY_TYPES),
            produces: invite.then_some(SESSION_BODY_TYPES),
        };
        let response = match validate_request_with(req, &policy) {
            Ok(()) => return None,
            // RFC 4475 §3.1.2.18: an unknown method whose CSeq disagrees is
            // better answered 501 than 400 (the method is the real problem).
            Err(rej)
                if rej.status == StatusCode::BAD_REQUEST
                    && matches!(req.method, Method::Other(_))
                    && req.version.is_sip_2_0() =>
            {
                with_allow(Response::for_request(req, StatusCode::NOT_IMPLEMENTED))
            }
            Err(rej) => {
                let mut r = rej.response_to(req);
                if rej.status == StatusCode::NOT_ACCEPTABLE {
                    // RFC 4475 §3.3.15: say why in a Warning (399 = miscellaneous).
                    r.headers.push(
                        HeaderName::Warning,
                        Bytes::from_static(
                            b"399 vpbx \"Only application/sdp session descriptions are produced\"",
                        ),
                    );
                }
                r
            }
        };
        Some(finish(response))
    }

    /// The answer to a valid request, by method.
    fn by_method(&self, req: &Request, invite_exists: impl FnOnce(&Request) -> bool) -> Response {
        match &req.method {
            Method::Options => options_response(req),
            Method::Invite => self.invite(req),
            // RFC 3261 §9.2: 200 when the INVITE exists (its final answer,
            // if already sent, stands), else 481.
            Method::Cancel if invite_exists(req) => Response::for_request(req, StatusCode::OK),
            // No dialogs yet (RFC 3261 §15.1.2).
            Method::Bye | Method::Cancel => {
                Response::for_request(req, StatusCode::CALL_OR_TRANSACTION_DOES_NOT_EXIST)
            }
            // RFC 3261 §8.2.1: an unknown method is 501, a known one we do
            // not serve is 405; both list what we allow.
            Method::Other(_) => with_allow(Response::for_request(req, StatusCode::NOT_IMPLEMENTED)),
            _ => with_allow(Response::for_request(req, StatusCode::METHOD_NOT_ALLOWED)),
        }
    }

    /// INVITE answered without a call: the daemon gives every INVITE that
    /// has a server transaction to the B2BUA, so this answers only one the
    /// transaction layer could not key, statelessly. Max-Forwards 0 is 483
    /// (we would have to forward the call, SPEC §3), an unknown number 404
    /// and a disabled one 480 (SPEC §2.2), and a routed number 480 (no call
    /// is set up without a transaction).
    pub fn invite(&self, req: &Request) -> Response {
        if matches!(req.max_forwards(), Ok(Some(0))) {
            return Response::for_request(req, StatusCode::TOO_MANY_HOPS);
        }
        let table = self.routes.load();
        match dialed_number(req).and_then(|n| table.lookup(&n)) {
            None => Response::for_request(req, StatusCode::NOT_FOUND),
            Some(_) => Response::for_request(req, StatusCode::TEMPORARILY_UNAVAILABLE),
        }
    }
}

pub use crate::b2bua::dialed_number;

/// Adds our To tag and Server to a response of ours.
fn finish(mut response: Response) -> Response {
    response.set_to_tag(&transport::new_tag());
    response
        .headers
        .push(HeaderName::Server, Bytes::from_static(SERVER.as_bytes()));
    response
}

fn allow_value() -> Bytes {
    let names: Vec<&str> = ALLOWED_METHODS.iter().map(Method::as_str).collect();
    Bytes::from(names.join(", "))
}

fn with_allow(mut r: Response) -> Response {
    r.headers.push(HeaderName::Allow, allow_value());
    r
}

/// 200 to OPTIONS with our capabilities (RFC 3261 §11.2).
fn options_response(req: &Request) -> Response {
    let mut r = with_allow(Response::for_request(req, StatusCode::OK));
    r.headers.push(
        HeaderName::Accept,
        Bytes::from(SESSION_BODY_TYPES.join(", ")),
    );
    r.headers.push(
        HeaderName::Supported,
        Bytes::from(SUPPORTED_OPTION_TAGS.join(", ")),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_datagram, Limits};

    /// `answer` for requests that are not a CANCEL of a live INVITE.
    trait AnswerPlain {
        fn answer_plain(&self, req: &Request) -> Option<Response>;
    }

    impl AnswerPlain for Uas {
        fn answer_plain(&self, req: &Request) -> Option<Response> {
            self.answer(req, |_| false)
        }
    }

    fn udp(message: Message) -> Inbound {
        Inbound {
            message,
            source: transport::Source {
                protocol: transport::Protocol::Udp,
                peer: "192.0.2.1:5060".parse().unwrap(),
                local: "192.0.2.2:5060".parse().unwrap(),
                conn: None,
            },
        }
    }

    #[test]
    fn messages_of_one_call_go_to_one_pump_worker() {
        let a = udp(Message::Request(request("OPTIONS sip:a@example.com", "")));
        // The same Call-ID in compact form, on a response.
        let b = parse_datagram(
            Bytes::from_static(
                b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
                  f: <sip:b@example.com>;tag=1\r\nt: <sip:a@example.com>;tag=2\r\n\
                  i: c1\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n",
            ),
            &Limits::default(),
        )
        .unwrap();
        assert!(matches!(b, Message::Response(_)));
        let b = udp(b);
        for shards in 1..8 {
            assert_eq!(shard_of(&a, shards), shard_of(&b, shards));
            assert!(shard_of(&a, shards) < shards);
        }
        // Different calls spread over the workers.
        let spread: std::collections::HashSet<usize> = (0..64)
            .map(|i| {
                let mut r = request("OPTIONS sip:a@example.com", "");
                r.headers
                    .set(HeaderName::CallId, Bytes::from(format!("call-{i}@host")));
                shard_of(&udp(Message::Request(r)), 4)
            })
            .collect();
        assert_eq!(spread.len(), 4);
        // Over TCP the connection decides, whatever the Call-ID.
        let on_conn = |call_id: &str| {
            let mut r = request("OPTIONS sip:a@example.com", "");
            r.headers
                .set(HeaderName::CallId, Bytes::from(call_id.to_owned()));
            let mut inbound = udp(Message::Request(r));
            inbound.source.protocol = transport::Protocol::Tcp;
            inbound.source.conn = Some(transport::ConnectionId(7));
            shard_of(&inbound, 4)
        };
        assert!((0..16).all(|i| on_conn(&format!("c{i}")) == 7 % 4));
    }

    #[test]
    fn allow_is_the_same_list_the_b2bua_sends() {
        assert_eq!(allow_value().as_ref(), crate::b2bua::ALLOW);
    }

    #[test]
    fn cancel_of_a_live_invite_is_200_else_481() {
        let req = request("CANCEL sip:a@example.com", "");
        assert_eq!(status(&uas().answer(&req, |_| true)), 200);
        assert_eq!(status(&uas().answer(&req, |_| false)), 481);
    }

    fn uas() -> Uas {
        let config = config::embedded().expect("embedded config");
        Uas::new(Arc::new(Routes::new(
            RoutingTable::from_config(&config).unwrap(),
        )))
    }

    fn request(start: &str, extra: &str) -> Request {
        let method = start.split(' ').next().unwrap();
        let text = format!(
            "{start} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c1\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse_datagram(Bytes::from(text), &Limits::default()) {
            Ok(Message::Request(r)) => r,
            other => panic!("fixture does not parse: {other:?}"),
        }
    }

    fn status(r: &Option<Response>) -> u16 {
        r.as_ref().expect("an answer").status.as_u16()
    }

    #[test]
    fn options_gets_200_with_capabilities_and_a_to_tag() {
        let r = uas()
            .answer_plain(&request("OPTIONS sip:a@example.com", ""))
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.allow().unwrap(), ALLOWED_METHODS);
        assert_eq!(
            r.headers.get(&HeaderName::Accept).unwrap().as_ref(),
            b"application/sdp"
        );
        assert_eq!(r.supported().unwrap(), SUPPORTED_OPTION_TAGS);
        assert!(r.to().unwrap().tag().is_some());
    }

    #[test]
    fn options_with_max_forwards_zero_is_answered_not_483() {
        let mut req = request("OPTIONS sip:a@example.com", "");
        req.headers
            .set(HeaderName::MaxForwards, Bytes::from_static(b"0"));
        assert_eq!(status(&uas().answer_plain(&req)), 200);
    }

    #[test]
    fn invite_with_max_forwards_zero_is_483() {
        let mut req = request("INVITE sip:+74951234567@example.com", "");
        req.headers
            .set(HeaderName::MaxForwards, Bytes::from_static(b"0"));
        assert_eq!(status(&uas().answer_plain(&req)), 483);
    }

    #[test]
    fn invite_is_answered_from_the_routing_table() {
        let u = uas();
        // Unknown number (and no number at all): 404.
        assert_eq!(
            status(&u.answer_plain(&request("INVITE sip:+74950000000@example.com", ""))),
            404
        );
        assert_eq!(
            status(&u.answer_plain(&request("INVITE sip:alice@example.com", ""))),
            404
        );
        // Routed (demo config), written differently: 480 until the B2BUA connects calls.
        assert_eq!(
            status(&u.answer_plain(&request("INVITE sip:84951234567@example.com", ""))),
            480
        );
        assert_eq!(
            status(&u.answer_plain(&request("INVITE tel:+7-495-123-45-67", ""))),
            480
        );
        // Disabled number: 480.
        assert_eq!(
            status(&u.answer_plain(&request("INVITE sip:+79160000001@example.com", ""))),
            480
        );
    }

    #[test]
    fn ack_is_never_answered() {
        assert!(uas()
            .answer_plain(&request("ACK sip:a@example.com", ""))
            .is_none());
    }

    #[test]
    fn methods_by_role() {
        let u = uas();
        assert_eq!(
            status(&u.answer_plain(&request("BYE sip:a@example.com", ""))),
            481
        );
        assert_eq!(
            status(&u.answer_plain(&request("CANCEL sip:a@example.com", ""))),
            481
        );
        let r = u
            .answer_plain(&request("REGISTER sip:example.com", ""))
            .unwrap();
        assert_eq!(r.status.as_u16(), 405);
        assert_eq!(r.allow().unwrap(), ALLOWED_METHODS);
        let r = u
            .answer_plain(&request("FROBNICATE sip:a@example.com", ""))
            .unwrap();
        assert_eq!(r.status.as_u16(), 501);
        assert_eq!(r.allow().unwrap(), ALLOWED_METHODS);
    }

    #[test]
    fn unknown_required_extension_is_420_with_unsupported() {
        let r = uas()
            .answer_plain(&request(
                "OPTIONS sip:a@example.com",
                "Require: nobody-knows\r\n",
            ))
            .unwrap();
        assert_eq!(r.status, StatusCode::BAD_EXTENSION);
        assert_eq!(r.unsupported().unwrap(), ["nobody-knows"]);
    }

    #[test]
    fn invite_requiring_what_the_b2bua_relays_is_not_refused() {
        let req = request(
            "INVITE sip:+74951234567@example.com",
            "Require: 100rel, timer\r\nSession-Expires: 1800\r\n",
        );
        assert!(uas().reject(&req).is_none());
    }

    #[test]
    fn invite_accepting_no_sdp_is_406_with_a_warning() {
        let r = uas()
            .answer_plain(&request(
                "INVITE sip:+74951234567@example.com",
                "Accept: text/nobody\r\n",
            ))
            .unwrap();
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
        assert!(r
            .headers
            .get(&HeaderName::Warning)
            .unwrap()
            .starts_with(b"399 "));
    }

    #[test]
    fn the_hang_up_time_comes_out_of_the_drain_time() {
        let s = Duration::from_secs;
        assert_eq!(split_drain_time(s(30)), (s(29), s(1)));
        assert_eq!(split_drain_time(s(5)), (s(4), s(1)));
        assert_eq!(
            split_drain_time(s(1)),
            (Duration::from_millis(800), Duration::from_millis(200))
        );
        assert_eq!(split_drain_time(s(0)), (s(0), s(0)));
    }

    /// A sink whose sends wait, while `wait` is set, until the test lets
    /// them through (one permit a message).
    struct GateSink {
        wait: std::sync::atomic::AtomicBool,
        gate: tokio::sync::Semaphore,
        sent: std::sync::Mutex<Vec<Bytes>>,
    }

    impl GateSink {
        fn send(&self, data: Bytes) -> crate::transaction::SendFuture<'_> {
            Box::pin(async move {
                self.gate.acquire().await.unwrap().forget();
                self.sent.lock().unwrap().push(data);
                Ok(())
            })
        }

        fn try_send(&self, data: Bytes) -> crate::transaction::TrySend {
            if self.wait.load(Ordering::Relaxed) {
                return crate::transaction::TrySend::WouldWait(data);
            }
            self.sent.lock().unwrap().push(data);
            crate::transaction::TrySend::Done(Ok(()))
        }
    }

    impl TransportSink for GateSink {
        fn send_request(
            &self,
            data: Bytes,
            _dest: transport::Destination,
        ) -> crate::transaction::SendFuture<'_> {
            self.send(data)
        }

        fn send_response(
            &self,
            data: Bytes,
            _source: Source,
            _dest: transport::Destination,
        ) -> crate::transaction::SendFuture<'_> {
            self.send(data)
        }

        fn try_send_request(
            &self,
            data: Bytes,
            _dest: transport::Destination,
        ) -> crate::transaction::TrySend {
            self.try_send(data)
        }

        fn try_send_response(
            &self,
            data: Bytes,
            _source: Source,
            _dest: transport::Destination,
        ) -> crate::transaction::TrySend {
            self.try_send(data)
        }
    }

    fn options_from(call_id: &str, branch: &str) -> Inbound {
        let text = format!(
            "OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch={branch}\r\n\
             From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        udp(parse_datagram(Bytes::from(text), &Limits::default()).unwrap())
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    /// An INVITE client transaction given a 486 sends the ACK, then hands
    /// the 486 to the TU. When the ACK has to wait (a full outbox), what
    /// the following datagrams bring must wait behind it, in a lane of
    /// bounded size; once the lane has emptied, messages are handled at
    /// once again.
    #[tokio::test]
    async fn messages_after_a_step_that_waits_keep_their_order_within_a_bound() {
        use transport::InboundHandler as _;
        let sink = Arc::new(GateSink {
            wait: false.into(),
            gate: tokio::sync::Semaphore::new(0),
            sent: std::sync::Mutex::default(),
        });
        let (layer, mut incoming) = TransactionLayer::new(sink.clone(), LayerConfig::default());
        let listen: ListenAddr = "udp:127.0.0.1:0".parse().unwrap();
        let (transports, _inbound) = Transports::bind(&[listen], TransportConfig::default())
            .await
            .unwrap();
        let (input, lane) = LayerInput::new(transports, layer.clone(), uas(), 2);
        let lane = tokio::spawn(lane);

        let invite = request("INVITE sip:a@example.com", "");
        let callee = transport::Destination::udp("192.0.2.9:5060".parse().unwrap());
        let mut client = layer.send_request(invite.clone(), callee).await.unwrap();
        sink.wait.store(true, Ordering::Relaxed);

        let mut busy = Response::for_request(&invite, StatusCode::BUSY_HERE);
        busy.set_to_tag("callee");
        assert!(input.handle(udp(Message::Response(busy))).is_none());
        assert!(input.handle(options_from("next", "z9hG4bKnext")).is_none());
        // The lane holds the ACK's step and the OPTIONS: full.
        let refused = input.handle(options_from("over", "z9hG4bKover"));
        assert!(refused.is_some(), "a third message is handed back (503)");

        settle().await;
        assert!(
            incoming.try_recv().is_err(),
            "the OPTIONS overtook the 486 waiting for its ACK"
        );
        sink.gate.add_permits(1);
        let Some(Incoming::Request(next)) = incoming.recv().await else {
            panic!("the OPTIONS never reached the TU");
        };
        assert_eq!(next.request.call_id().unwrap().to_string(), "next");
        let event = tokio::time::timeout(Duration::ZERO, client.recv())
            .await
            .expect("the 486 was delivered before the OPTIONS")
            .unwrap();
        assert!(matches!(
            event.event,
            crate::transaction::ClientEventKind::Response(ref r) if r.status == StatusCode::BUSY_HERE
        ));
        assert_eq!(sink.sent.lock().unwrap().len(), 2, "INVITE and ACK");

        // Drained: the next message is handled as it is handed over.
        settle().await;
        assert!(input
            .handle(options_from("direct", "z9hG4bKdirect"))
            .is_none());
        let Ok(Incoming::Request(direct)) = incoming.try_recv() else {
            panic!("not handled at once once the lane drained");
        };
        assert_eq!(direct.request.call_id().unwrap().to_string(), "direct");
        lane.abort();
    }

    /// A response the layer cannot key is only logged: no task, nothing
    /// for the lane.
    #[tokio::test]
    async fn an_unkeyed_response_is_dropped_without_a_task() {
        use transport::InboundHandler as _;
        let sink = Arc::new(GateSink {
            wait: false.into(),
            gate: tokio::sync::Semaphore::new(0),
            sent: std::sync::Mutex::default(),
        });
        let (layer, _incoming) = TransactionLayer::new(sink, LayerConfig::default());
        let listen: ListenAddr = "udp:127.0.0.1:0".parse().unwrap();
        let (transports, _inbound) = Transports::bind(&[listen], TransportConfig::default())
            .await
            .unwrap();
        let (input, _lane) = LayerInput::new(transports, layer, uas(), 2);
        let metrics = tokio::runtime::Handle::current().metrics();
        let tasks = metrics.num_alive_tasks();
        let invite = request("INVITE sip:a@example.com", "");
        let mut stray = Response::for_request(&invite, StatusCode::BUSY_HERE);
        // No Via: it cannot be matched to a transaction (RFC 3261 §17.1.3).
        stray.headers.remove_all(&HeaderName::Via);
        assert!(input.handle(udp(Message::Response(stray))).is_none());
        assert_eq!(metrics.num_alive_tasks(), tasks, "a task was spawned");
        assert_eq!(input.pending.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_cuts_the_drain_short() {
        let mut drain = Drain::new();
        drain.register("call", tokio::time::sleep(Duration::from_secs(60)));
        let start = tokio::time::Instant::now();
        drain
            .run_until(
                Duration::from_secs(30),
                tokio::time::sleep(Duration::from_secs(2)),
            )
            .await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // Without the interrupt, the limit ends it.
        let mut drain = Drain::new();
        drain.register("call", tokio::time::sleep(Duration::from_secs(60)));
        let start = tokio::time::Instant::now();
        drain
            .run_until(Duration::from_secs(30), std::future::pending::<()>())
            .await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_tasks_up_to_the_limit() {
        let mut drain = Drain::new();
        drain.register("quick", tokio::time::sleep(Duration::from_secs(1)));
        drain.register("slow", tokio::time::sleep(Duration::from_secs(60)));
        let start = tokio::time::Instant::now();
        let unfinished = drain.run(Duration::from_secs(10)).await;
        assert_eq!(unfinished, ["slow"]);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[test]
    fn the_tcp_timeouts_of_the_config_reach_the_transport() {
        let mut daemon = DaemonConfig::default();
        daemon.limits.tcp_connect_timeout = Duration::from_secs(30);
        daemon.limits.tcp_idle_timeout = Duration::from_secs(60);
        let t = transport_config(&daemon);
        assert_eq!(t.connect_timeout, Duration::from_secs(30));
        assert_eq!(t.idle_timeout, Duration::from_secs(60));
        let defaults = transport_config(&DaemonConfig::default());
        assert_eq!(defaults.connect_timeout, transport::CONNECT_TIMEOUT);
    }
}
