//! TCP: listeners, the connection table, and one task per connection that
//! frames the byte stream with [`crate::sip::StreamParser`] (RFC 3261 §18.3:
//! Content-Length is mandatory; partial reads and several messages per read
//! are normal).
//!
//! A framing error is answered 400 when the header section was readable and
//! the connection is then closed: after a bad Content-Length we no longer
//! know where the next message starts. Connections idle in both directions
//! for `idle_timeout` are closed; at most `max_connections` are open.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::routing::{deliver, reply_to_parse_error};
use super::{ConnectionId, Destination, Protocol, Sent, Shared, Source, TransportError};
use crate::sip::StreamParser;

/// Bytes read from a socket at a time (the stream parser buffers across reads).
const READ_CHUNK: usize = 16 * 1024;

/// How long a connection stays writable after reading stopped because of
/// a framing error or the peer's FIN.
const LINGER: Duration = Duration::from_millis(500);

/// Backlog of pending connections per listener.
const LISTEN_BACKLOG: i32 = 1024;

pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// One connection, open or (outbound) being opened, as seen by senders.
/// Only the table and the reader (or the connect task) hold it: when both
/// let go, the send queue closes and the writer ends.
struct Connection {
    peer: SocketAddr,
    tx: mpsc::Sender<Bytes>,
    activity: Arc<Activity>,
    /// Of an outbound connection: how its connect ended, `None` while it
    /// runs (what was queued meanwhile is written once it succeeded, in
    /// order, and dropped if it failed). `None` for an accepted one.
    connect: Option<watch::Receiver<Option<ConnectOutcome>>>,
}

/// How an outbound connect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectOutcome {
    /// Connected: the queue is being written.
    Connected,
    /// No answer within `connect_timeout`.
    TimedOut,
    /// Refused, unreachable, ... (the OS error's kind).
    Failed(std::io::ErrorKind),
}

/// A message queued on a connection still being opened (see
/// [`super::Sent::Connecting`]): waits for the connect's outcome.
#[derive(Debug)]
pub struct PendingSend {
    addr: SocketAddr,
    outcome: watch::Receiver<Option<ConnectOutcome>>,
}

impl PendingSend {
    /// Whether the message went out on the connection: `Ok` once the
    /// connect succeeded (the message is then in the connection's queue,
    /// behind what was queued before it); the connect's failure otherwise
    /// (the message was dropped, RFC 3261 §18.4: a transport error).
    pub async fn outcome(mut self) -> Result<(), TransportError> {
        let addr = self.addr;
        let outcome = match self.outcome.wait_for(Option::is_some).await {
            Ok(outcome) => *outcome,
            // The connect task ended without an outcome: shutdown.
            Err(_) => return Err(TransportError::Shutdown),
        };
        match outcome {
            Some(ConnectOutcome::Connected) => Ok(()),
            Some(ConnectOutcome::TimedOut) => Err(TransportError::ConnectTimeout(addr)),
            Some(ConnectOutcome::Failed(kind)) => Err(TransportError::Io {
                dest: Destination::tcp(addr),
                source: kind.into(),
            }),
            None => Err(TransportError::Shutdown),
        }
    }
}

/// When a connection last read or wrote, shared by its reader and writer.
struct Activity {
    /// Milliseconds since `epoch` of the last read or write.
    last: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// Open connections by [`ConnectionId`] and by peer address (the latest
/// connection to a peer wins, for reuse when sending requests).
#[derive(Default)]
pub(crate) struct ConnectionTable {
    by_id: DashMap<ConnectionId, Arc<Connection>>,
    by_peer: DashMap<SocketAddr, ConnectionId>,
    /// When an outbound connect to an address last failed.
    failed: DashMap<SocketAddr, Instant>,
}

/// Most addresses remembered as unreachable; beyond it the memory is reset.
const MAX_FAILED_ADDRESSES: usize = 10_000;

impl ConnectionTable {
    fn recently_failed(&self, addr: SocketAddr, backoff: Duration) -> bool {
        self.failed
            .get(&addr)
            .is_some_and(|at| at.elapsed() < backoff)
    }

    fn connect_failed(&self, addr: SocketAddr) {
        if self.failed.len() >= MAX_FAILED_ADDRESSES {
            self.failed.clear();
        }
        self.failed.insert(addr, Instant::now());
    }

    fn connect_succeeded(&self, addr: SocketAddr) {
        self.failed.remove(&addr);
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Queues bytes on a connection; fails if it is gone or its send queue
    /// is full (the peer does not read).
    pub(crate) fn send(&self, id: ConnectionId, bytes: Bytes) -> Result<(), TransportError> {
        let conn = self
            .by_id
            .get(&id)
            .map(|c| Arc::clone(c.value()))
            .ok_or(TransportError::ConnectionGone(id))?;
        conn.tx.try_send(bytes).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TransportError::Congested(id),
            mpsc::error::TrySendError::Closed(_) => TransportError::ConnectionGone(id),
        })
    }

    /// The latest connection to `peer`, open or being opened.
    fn conn_to(&self, peer: SocketAddr) -> Option<(ConnectionId, Arc<Connection>)> {
        let id = *self.by_peer.get(&peer)?.value();
        let conn = Arc::clone(self.by_id.get(&id)?.value());
        Some((id, conn))
    }

    fn insert(&self, id: ConnectionId, conn: Arc<Connection>) {
        self.by_peer.insert(conn.peer, id);
        self.by_id.insert(id, conn);
    }

    fn remove(&self, id: ConnectionId) {
        if let Some((_, conn)) = self.by_id.remove(&id) {
            self.by_peer.remove_if(&conn.peer, |_, v| *v == id);
        }
    }
}

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|down| *down) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.connections.len() >= shared.config.max_connections {
            shared.metrics.tcp_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, limit = shared.config.max_connections, "tcp connection refused: table full");
            continue;
        }
        shared.metrics.tcp_accepted.fetch_add(1, Ordering::Relaxed);
        start_connection(stream, peer, &shared);
    }
}

/// Registers an accepted connection and spawns its reader and writer.
fn start_connection(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let id = shared.next_connection_id();
    let (tx, rx) = mpsc::channel(shared.config.connection_send_queue.max(1));
    let conn = Arc::new(Connection {
        peer,
        tx,
        activity: Arc::new(Activity {
            last: AtomicU64::new(0),
            epoch: Instant::now(),
        }),
        connect: None,
    });
    shared.connections.insert(id, Arc::clone(&conn));
    run_connection(stream, id, conn, rx, shared);
}

/// Spawns the reader and writer of connection `id`, registered in the
/// table as `conn`; `rx` is its send queue.
fn run_connection(
    stream: TcpStream,
    id: ConnectionId,
    conn: Arc<Connection>,
    rx: mpsc::Receiver<Bytes>,
    shared: &Arc<Shared>,
) {
    let peer = conn.peer;
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::new(peer.ip(), 0));
    conn.activity.touch();
    let (reader, writer) = stream.into_split();
    tokio::spawn(write_loop(writer, rx, Arc::clone(&conn.activity), peer));
    let source = Source {
        protocol: Protocol::Tcp,
        peer,
        local,
        conn: Some(id),
    };
    tokio::spawn(read_loop(reader, source, conn, Arc::clone(shared)));
    tracing::debug!(%peer, %id, "tcp connection open");
}

async fn write_loop(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    activity: Arc<Activity>,
    peer: SocketAddr,
) {
    while let Some(bytes) = rx.recv().await {
        if let Err(e) = writer.write_all(&bytes).await {
            tracing::debug!(%peer, error = %e, "tcp write failed");
            return;
        }
        activity.touch();
    }
    let _ = writer.shutdown().await;
}

/// Why a connection's reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    PeerClosed,
    ReadError,
    Idle,
    Incomplete,
    Framing,
    Shutdown,
}

async fn read_loop(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    source: Source,
    conn: Arc<Connection>,
    shared: Arc<Shared>,
) {
    let Some(id) = source.conn else { return };
    let reason = read_messages(&mut reader, source, &conn, &shared).await;
    match reason {
        CloseReason::Idle => {
            shared
                .metrics
                .tcp_idle_closed
                .fetch_add(1, Ordering::Relaxed);
        }
        CloseReason::Incomplete => {
            shared
                .metrics
                .tcp_incomplete_closed
                .fetch_add(1, Ordering::Relaxed);
        }
        CloseReason::Framing => {
            shared
                .metrics
                .tcp_framing_closed
                .fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    tracing::debug!(peer = %source.peer, %id, ?reason, "tcp connection no longer read");
    if matches!(reason, CloseReason::Framing | CloseReason::PeerClosed) {
        // Answers to requests read before the end are still on their way
        // from the layers above; keep the connection writable a moment.
        let mut shutdown = shared.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(LINGER) => {}
            _ = shutdown.wait_for(|down| *down) => {}
        }
    }
    // Dropping the table's and our handle ends the writer once its queue
    // (e.g. a final 400) is written.
    shared.connections.remove(id);
}

async fn read_messages(
    reader: &mut tokio::net::tcp::OwnedReadHalf,
    source: Source,
    conn: &Connection,
    shared: &Shared,
) -> CloseReason {
    let idle = shared.config.idle_timeout;
    let message_timeout = shared.config.message_timeout;
    let mut shutdown = shared.shutdown.clone();
    let mut parser = StreamParser::new(shared.config.limits.clone());
    let mut chunk = vec![0u8; READ_CHUNK];
    // Since when a started message has been waiting for its remaining
    // octets: a peer that trickles a message must not hold a connection
    // slot forever by keeping it non-idle.
    let mut partial_since: Option<Instant> = None;
    loop {
        let mut wait = idle.saturating_sub(conn.activity.idle_for());
        if let Some(since) = partial_since {
            wait = wait.min(message_timeout.saturating_sub(since.elapsed()));
        }
        let read = tokio::select! {
            r = tokio::time::timeout(wait, reader.read(&mut chunk)) => r,
            _ = shutdown.wait_for(|down| *down) => return CloseReason::Shutdown,
        };
        let n = match read {
            Err(_elapsed) => {
                if partial_since.is_some_and(|since| since.elapsed() >= message_timeout) {
                    return CloseReason::Incomplete;
                }
                if conn.activity.idle_for() >= idle {
                    return CloseReason::Idle;
                }
                continue;
            }
            Ok(Err(_)) => return CloseReason::ReadError,
            Ok(Ok(0)) => return CloseReason::PeerClosed,
            Ok(Ok(n)) => n,
        };
        conn.activity.touch();
        // RFC 5626 §4.4.1: a double-CRLF "ping" between messages is
        // answered with a single-CRLF "pong".
        if &chunk[..n] == b"\r\n\r\n" && parser.buffered() == 0 {
            shared.metrics.keepalives.fetch_add(1, Ordering::Relaxed);
            let _ = conn.tx.try_send(Bytes::from_static(b"\r\n"));
            continue;
        }
        // Draining every complete message after each feed keeps the
        // parser's buffer under max_message_size + READ_CHUNK.
        parser.feed(&chunk[..n]);
        loop {
            match parser.next_message() {
                Ok(Some(message)) => {
                    shared
                        .metrics
                        .tcp_messages_received
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(reply) = deliver(shared, None, message, source) {
                        let _ = conn.tx.try_send(reply.to_bytes());
                    }
                }
                Ok(None) => break,
                Err(err) => return framing_error(&err, conn, shared, source),
            }
        }
        partial_since = match (parser.buffered(), partial_since) {
            (0, _) => None,
            (_, Some(since)) => Some(since),
            (_, None) => Some(Instant::now()),
        };
    }
}

fn framing_error(
    err: &crate::sip::ParseError,
    conn: &Connection,
    shared: &Shared,
    source: Source,
) -> CloseReason {
    let reply = reply_to_parse_error(err);
    tracing::debug!(peer = %source.peer, error = %err, answered = reply.is_some(), "tcp framing error, closing");
    match reply {
        Some(reply) => {
            shared
                .metrics
                .malformed_answered
                .fetch_add(1, Ordering::Relaxed);
            let _ = conn.tx.try_send(reply.to_bytes());
        }
        None => {
            shared
                .metrics
                .malformed_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    CloseReason::Framing
}

/// Sends bytes to `addr` over TCP like [`queue`], and waits for the
/// outcome of the connect when one had to be opened.
pub(crate) async fn send(
    shared: &Arc<Shared>,
    bytes: Bytes,
    addr: SocketAddr,
) -> Result<(), TransportError> {
    match queue(shared, bytes, addr)? {
        Sent::Now => Ok(()),
        Sent::Connecting(pending) => pending.outcome().await,
    }
}

/// Queues bytes for `addr` without waiting: on the open connection to that
/// peer, behind what is queued on the one being opened to it, or on a new
/// one (bounded by `max_connections`) whose task connects (within
/// `connect_timeout`) and then writes the queue in order. A full queue is
/// an error, as is a peer whose connect failed within `connect_backoff`.
pub(crate) fn queue(
    shared: &Arc<Shared>,
    bytes: Bytes,
    addr: SocketAddr,
) -> Result<Sent, TransportError> {
    if shared.is_shut_down() {
        return Err(TransportError::Shutdown);
    }
    let sent = queue_on_new_or_open(shared, bytes, addr);
    let counter = match sent {
        Ok(_) => &shared.metrics.sent,
        Err(_) => &shared.metrics.send_errors,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    sent
}

fn queue_on_new_or_open(
    shared: &Arc<Shared>,
    bytes: Bytes,
    addr: SocketAddr,
) -> Result<Sent, TransportError> {
    if let Some((id, conn)) = shared.connections.conn_to(addr) {
        // Taken before queuing: an outcome set after the message was
        // queued is then seen.
        let connecting = match &conn.connect {
            None => None,
            Some(outcome) => match *outcome.borrow() {
                None => Some(outcome.clone()),
                Some(ConnectOutcome::Connected) => None,
                // Failed moments ago; not yet out of the table.
                Some(ConnectOutcome::TimedOut | ConnectOutcome::Failed(_)) => {
                    return Err(TransportError::Unreachable(addr));
                }
            },
        };
        match conn.tx.try_send(bytes) {
            Ok(()) => {
                return Ok(match connecting {
                    None => Sent::Now,
                    Some(outcome) => Sent::Connecting(PendingSend { addr, outcome }),
                });
            }
            // Bounded memory: a connection being opened queues no more
            // than an open one.
            Err(mpsc::error::TrySendError::Full(_)) if connecting.is_some() => {
                return Err(TransportError::Congested(id));
            }
            // Gone or congested: try a new connection.
            Err(mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b)) => {
                return open(shared, b, addr);
            }
        }
    }
    open(shared, bytes, addr)
}

/// Registers a connection to `addr`, queues `bytes` on it and spawns the
/// task that connects.
fn open(shared: &Arc<Shared>, bytes: Bytes, addr: SocketAddr) -> Result<Sent, TransportError> {
    if shared.connections.len() >= shared.config.max_connections {
        return Err(TransportError::TooManyConnections(
            shared.config.max_connections,
        ));
    }
    // After one failure, fail fast for a while instead of queuing every
    // request to a dead peer for another `connect_timeout`.
    if shared
        .connections
        .recently_failed(addr, shared.config.connect_backoff)
    {
        return Err(TransportError::Unreachable(addr));
    }
    let id = shared.next_connection_id();
    let (tx, rx) = mpsc::channel(shared.config.connection_send_queue.max(1));
    let (report, outcome) = watch::channel(None);
    let conn = Arc::new(Connection {
        peer: addr,
        tx,
        activity: Arc::new(Activity {
            last: AtomicU64::new(0),
            epoch: Instant::now(),
        }),
        connect: Some(outcome.clone()),
    });
    // A fresh queue has room for one.
    if conn.tx.try_send(bytes).is_err() {
        return Err(TransportError::ConnectionGone(id));
    }
    shared.connections.insert(id, Arc::clone(&conn));
    tokio::spawn(connect(Arc::clone(shared), id, conn, rx, report));
    Ok(Sent::Connecting(PendingSend { addr, outcome }))
}

/// The task of an outbound connection being opened: connects, then runs
/// it with the queue filled meanwhile; or, if the connect fails or times
/// out, drops the queue and reports the failure to the senders waiting.
async fn connect(
    shared: Arc<Shared>,
    id: ConnectionId,
    conn: Arc<Connection>,
    mut rx: mpsc::Receiver<Bytes>,
    report: watch::Sender<Option<ConnectOutcome>>,
) {
    let addr = conn.peer;
    let mut shutdown = shared.shutdown.clone();
    let connected = tokio::select! {
        r = tokio::time::timeout(shared.config.connect_timeout, TcpStream::connect(addr)) => r,
        // The senders waiting see the report dropped: shutdown.
        _ = shutdown.wait_for(|down| *down) => {
            shared.connections.remove(id);
            drop_queue(&mut rx, &shared);
            return;
        }
    };
    let failure = match connected {
        Ok(Ok(stream)) => {
            shared.connections.connect_succeeded(addr);
            shared.metrics.tcp_connected.fetch_add(1, Ordering::Relaxed);
            run_connection(stream, id, conn, rx, &shared);
            report.send_replace(Some(ConnectOutcome::Connected));
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "tcp connect failed");
            ConnectOutcome::Failed(e.kind())
        }
        Err(_elapsed) => {
            tracing::debug!(%addr, "tcp connect timed out");
            ConnectOutcome::TimedOut
        }
    };
    // Reported before the queue closes: a sender that queued until then
    // learns that its message was dropped.
    shared.connections.connect_failed(addr);
    report.send_replace(Some(failure));
    shared.connections.remove(id);
    drop_queue(&mut rx, &shared);
}

/// Closes the queue of a connection that was never opened and drops what
/// it holds, each message counted in `send_errors`: it was counted in
/// `sent` when queued and did not go out.
fn drop_queue(rx: &mut mpsc::Receiver<Bytes>, shared: &Shared) {
    rx.close();
    let mut dropped = 0;
    while rx.try_recv().is_ok() {
        dropped += 1;
    }
    shared
        .metrics
        .send_errors
        .fetch_add(dropped, Ordering::Relaxed);
}
