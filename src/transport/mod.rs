//! SIP transport layer (RFC 3261 §18, RFC 3581): UDP and TCP sockets on IPv4
//! and IPv6, framing into [`crate::sip`] messages, the TCP connection table,
//! and where responses and requests are sent.
//!
//! Owns: sockets, per-connection buffers (bounded by the message size limit),
//! the `received`/`rport` parameters of inbound requests, stateless answers
//! to malformed requests (400) and to overload (503), and the transport
//! counters. Does not own: transaction matching, retransmissions or any
//! request semantics (the layers above).
//!
//! Inbound messages go to the layer above through one bounded channel of
//! [`Inbound`]; when it is full, requests are answered 503 with Retry-After
//! (never a silent drop) and responses are dropped and counted.
//!
//! `maddr` in a Via is ignored when routing responses: we never send to
//! multicast groups, and honouring an arbitrary `maddr` from the wire would
//! let anyone reflect our responses at a third party.

mod addr;
mod coalescing;
pub(crate) mod metrics;
mod refused;
mod routing;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::sip::{Limits, Message, Request, Response};

pub use addr::{AddrParseError, ConnectionId, Destination, ListenAddr, Protocol, Source};
pub use coalescing::{CoalescingMetrics, WakeupCoalescing};
pub use metrics::TransportMetrics;
pub(crate) use routing::new_tag;
pub use routing::response_destination;
pub use tcp::PendingSend;

/// Takes the messages of the UDP receive loops straight from them, in
/// place of the inbound queue (see [`Transports::set_udp_handler`]).
pub trait InboundHandler: Send + Sync {
    /// Handles `inbound` without waiting: it is called from a receive
    /// loop, which reads nothing more until this returns. Returns `None`
    /// when it took the message; hands it back when it cannot take it now
    /// (its own bounded backlog is full), and the transport refuses it as
    /// it does when the inbound queue is full: 503 to a request other
    /// than ACK, anything else dropped.
    fn handle(&self, inbound: Inbound) -> Option<Inbound>;
}

/// A message received from the network, with where it came from.
#[derive(Debug)]
pub struct Inbound {
    /// The parsed message. Requests already carry `received`/`rport` in
    /// their top Via (RFC 3261 §18.2.1, RFC 3581 §4), which they keep
    /// parsed ([`crate::sip::Headers::top_via_ref`]).
    pub message: Message,
    /// Where it came from; pass it back to [`Transports::send_response`].
    pub source: Source,
}

/// Told of each request that a lower layer (the transport, the transaction
/// layer) refuses on its own, e.g. 503 when its queue to the layer above is
/// full, so that refused call attempts are accounted for (a CDR line per
/// refused INVITE, SPEC §2.5) by the daemon without those layers knowing of
/// calls. Called on the receive path: it must be quick and never block.
pub trait RefusalObserver: std::fmt::Debug + Send + Sync + 'static {
    /// `request` was answered `status` and goes no further.
    fn refused(&self, request: &Request, status: crate::sip::StatusCode);
}

/// Default receive buffer of each UDP socket, in octets (`[limits]
/// udp_receive_buffer`): 4 MiB.
///
/// Bounded on purpose. A datagram waiting in the queue is a request or a
/// response that its sender retransmits when no answer came within T1
/// (500 ms), so when the daemon is overloaded a queue that holds more than
/// a fraction of T1 of its work saves no message: every message waits
/// longer, the retransmissions arrive behind them, the load they add keeps
/// the queue full, and the daemon ends up answering mostly copies (a
/// retransmission collapse: with 32 MiB, queues of 55–63 MiB and INVITE
/// to 200 delays of 1–7 s, docs/performance.md, sessions 6 and 7). So a
/// full queue should take at most ~100 ms to drain at the daemon's
/// capacity. The kernel charges each queued datagram its buffer's true
/// size (on loopback 2,304 octets for a datagram of 700–1,200 octets, 1,280
/// for one of 300) against twice the size asked for, so 4 MiB holds ~3,600
/// typical SIP datagrams. One core serves ~15,000 calls/s of ~7 inbound
/// datagrams each (~105,000 datagrams/s), so a full queue drains in
/// ~35 ms, in ~70 ms on half a core, and in ~125 ms on half a core with
/// short datagrams only; the same buffer absorbs a stall of ~35 ms at full
/// load. Past that the kernel drops datagrams (the `drops` column of
/// `/proc/net/udp`), each of which costs its sender one retransmission
/// after T1. 32 MiB (the default before) took ~0.6 s to drain on half a
/// core: past T1. The buffer does not make sustained overload harmless
/// (drops hit the messages of accepted calls too); it keeps the delay it
/// adds bounded.
pub const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Default timeout of an outbound TCP connect. Linux sends an unanswered
/// SYN again 1, 3, 7 … s after the first (1, 2, 3, 4, 5, 7 … s since 6.7,
/// `net.ipv4.tcp_syn_linear_timeouts`), so this tries three SYNs (five).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Tunables of the transport layer. `Default` gives production values.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Parser limits; `max_message_size` also bounds every receive buffer.
    pub limits: Limits,
    /// Capacity of the inbound channel to the layer above.
    pub inbound_queue: usize,
    /// Kernel receive buffer asked for on each UDP socket, in octets (see
    /// [`UDP_RECEIVE_BUFFER`]); forced past `net.core.rmem_max` when the
    /// process has CAP_NET_ADMIN, else capped by it.
    pub udp_receive_buffer: usize,
    /// Most TCP connections open at once (accepted + opened by us).
    pub max_connections: usize,
    /// A TCP connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// A TCP connection whose started message is still incomplete after
    /// this long is closed (slow senders cannot pin a connection slot).
    pub message_timeout: Duration,
    /// Timeout of an outbound TCP connect.
    pub connect_timeout: Duration,
    /// After a failed outbound connect, sends to that address fail at once
    /// for this long (a dead peer stalls one sender, not every one).
    pub connect_backoff: Duration,
    /// Capacity (in messages) of each TCP connection's send queue.
    pub connection_send_queue: usize,
    /// Which port UDP responses go to when the request did not ask for
    /// `rport` (see [`ResponsePort`]).
    pub response_port: ResponsePort,
    /// `Retry-After` seconds in the 503 sent when the inbound queue is full.
    pub overload_retry_after: u32,
    /// How long an INVITE answered 503 because the inbound queue was full
    /// is remembered, so that its retransmissions are answered 503 again
    /// and reported once: 64×T1, the time a caller retransmits (Timer B).
    pub refused_invite_memory: Duration,
    /// Told of each request answered 503 because the inbound queue is full
    /// (once per INVITE, not again for its retransmissions).
    pub refusals: Option<Arc<dyn RefusalObserver>>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            limits: Limits::default(),
            inbound_queue: 4096,
            udp_receive_buffer: UDP_RECEIVE_BUFFER,
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(120),
            message_timeout: Duration::from_secs(30),
            connect_timeout: CONNECT_TIMEOUT,
            connect_backoff: Duration::from_secs(10),
            connection_send_queue: 256,
            response_port: ResponsePort::default(),
            overload_retry_after: 5,
            refused_invite_memory: Duration::from_secs(32),
            refusals: None,
        }
    }
}

/// Where UDP responses go when the request's top Via has no `rport`.
///
/// RFC 3261 §18.2.2 sends them to the Via sent-by port (5060 if absent).
/// Behind a NAT, or from a UA that sends from another port than it
/// listens on, that port is unreachable; RFC 3581 `rport` fixes this only
/// for UAs that ask for it. Requests that asked for `rport` always get
/// their answer at the source port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponsePort {
    /// RFC 3261 §18.2.2 as written: the sent-by port.
    SentBy,
    /// The source port when the top Via needed a `received` parameter (its
    /// sent-by host is not the source IP: a NAT, or a name we cannot
    /// check), else the sent-by port. What SBCs do for NAT traversal; the
    /// default. The Via gets `rport=PORT` in that case, so the choice is
    /// visible to every layer that routes the response.
    #[default]
    SourceWhenTranslated,
    /// Always the source port, as if every request had `rport` (the Via
    /// gets `rport=PORT` too).
    Source,
}

/// What a send that does not wait ([`Transports::try_send_bytes`]) did.
#[derive(Debug)]
pub enum Sent {
    /// Handed to the socket, its outbox, or an open connection's queue.
    Now,
    /// Queued on a TCP connection still being opened (RFC 3261 §18.1.1:
    /// one per destination, so what is sent to it later goes out after
    /// this): whether it goes out is known once the connect ends.
    Connecting(PendingSend),
}

/// What can go wrong binding or sending.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that failed.
        addr: ListenAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No listen address was given.
    #[error("no listen address configured")]
    NoListener,
    /// No local socket fits the destination (no UDP socket of that address family).
    #[error("no {protocol} socket of the address family of {addr}")]
    NoRoute {
        /// Protocol asked for.
        protocol: Protocol,
        /// Destination address.
        addr: SocketAddr,
    },
    /// Sending failed at the socket.
    #[error("send to {dest} failed: {source}")]
    Io {
        /// Where we tried to send.
        dest: Destination,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An outbound TCP connect did not finish in time.
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// A connect to this address failed moments ago; not retried yet.
    #[error("{0} was unreachable moments ago (connect backoff)")]
    Unreachable(SocketAddr),
    /// The TCP connection table is full.
    #[error("too many TCP connections (limit {0})")]
    TooManyConnections(usize),
    /// The connection is closed.
    #[error("connection {0} is closed")]
    ConnectionGone(ConnectionId),
    /// The connection's send queue is full: the peer does not read.
    #[error("connection {0} is congested (send queue full)")]
    Congested(ConnectionId),
    /// The transports are shutting down.
    #[error("transport is shut down")]
    Shutdown,
}

/// State shared by the socket tasks and the [`Transports`] handles.
pub(crate) struct Shared {
    pub(crate) config: TransportConfig,
    pub(crate) metrics: TransportMetrics,
    pub(crate) inbound: mpsc::Sender<Inbound>,
    /// Bound UDP sockets with their actual local address.
    pub(crate) udp: Vec<(SocketAddr, Arc<udp::UdpEndpoint>)>,
    /// Bound TCP listeners' actual local addresses.
    pub(crate) tcp_listen: Vec<SocketAddr>,
    pub(crate) connections: tcp::ConnectionTable,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// INVITEs refused for overload, for their retransmissions.
    pub(crate) refused: refused::RefusedInvites,
    /// Where UDP messages go instead of [`Shared::inbound`], once set and
    /// while its owner keeps it (weak: the handler holds the transports,
    /// through the transaction layer's sink).
    pub(crate) udp_handler: OnceLock<Weak<dyn InboundHandler>>,
    next_conn_id: AtomicU64,
}

impl Shared {
    pub(crate) fn next_connection_id(&self) -> ConnectionId {
        ConnectionId(self.next_conn_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn udp_socket_for(&self, local: SocketAddr) -> Option<&Arc<udp::UdpEndpoint>> {
        self.udp
            .iter()
            .find(|(addr, _)| *addr == local)
            .map(|(_, s)| s)
    }

    /// The UDP socket to send a request from: the first one of the
    /// destination's address family, so responses come back to a listener.
    pub(crate) fn udp_socket_for_family(&self, dest: SocketAddr) -> Option<&Arc<udp::UdpEndpoint>> {
        self.udp
            .iter()
            .find(|(addr, _)| addr.is_ipv4() == dest.is_ipv4())
            .map(|(_, s)| s)
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Handle to the running UDP and TCP transports. Cheap to clone.
#[derive(Clone)]
pub struct Transports {
    shared: Arc<Shared>,
    shutdown_tx: Arc<watch::Sender<bool>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// The UDP receive loops: stopped first at shutdown, each between two
    /// batches ([`udp::UdpEndpoint::stop_receiving`]).
    receivers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transports")
            .field("listening", &self.local_addrs())
            .finish_non_exhaustive()
    }
}

impl Transports {
    /// Binds every listen address and starts one receive loop per UDP socket
    /// and one accept loop per TCP listener. Port 0 binds a free port; see
    /// [`Transports::local_addrs`] for what was bound. Must be called inside
    /// a tokio runtime.
    pub async fn bind(
        listen: &[ListenAddr],
        config: TransportConfig,
    ) -> Result<(Transports, mpsc::Receiver<Inbound>), TransportError> {
        if listen.is_empty() {
            return Err(TransportError::NoListener);
        }
        let mut udp_sockets = Vec::new();
        let mut tcp_listeners = Vec::new();
        for &la in listen {
            let bind_err = |source| TransportError::Bind { addr: la, source };
            match la.protocol {
                Protocol::Udp => {
                    let sock = udp::bind(la.addr, config.udp_receive_buffer).map_err(bind_err)?;
                    let local = sock.local_addr().map_err(bind_err)?;
                    udp_sockets.push((local, udp::UdpEndpoint::new(sock)));
                }
                Protocol::Tcp => {
                    let listener = tcp::bind(la.addr).map_err(bind_err)?;
                    let local = listener.local_addr().map_err(bind_err)?;
                    tcp_listeners.push((local, listener));
                }
            }
        }
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue.max(1));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            refused: refused::RefusedInvites::new(config.refused_invite_memory),
            config,
            metrics: TransportMetrics::default(),
            inbound: inbound_tx,
            udp: udp_sockets,
            tcp_listen: tcp_listeners.iter().map(|(a, _)| *a).collect(),
            connections: tcp::ConnectionTable::default(),
            shutdown: shutdown_rx,
            udp_handler: OnceLock::new(),
            next_conn_id: AtomicU64::new(1),
        });
        let mut tasks = Vec::new();
        let mut receivers = Vec::new();
        for (local, endpoint) in &shared.udp {
            let receiver = tokio::spawn(udp::receive_loop(
                Arc::clone(endpoint),
                *local,
                Arc::clone(&shared),
            ));
            receivers.push(receiver);
            tasks.push(tokio::spawn(udp::send_loop(
                Arc::clone(endpoint),
                Arc::clone(&shared),
            )));
        }
        for (_, listener) in tcp_listeners {
            tasks.push(tokio::spawn(tcp::accept_loop(
                listener,
                Arc::clone(&shared),
            )));
        }
        Ok((
            Transports {
                shared,
                shutdown_tx: Arc::new(shutdown_tx),
                tasks: Arc::new(Mutex::new(tasks)),
                receivers: Arc::new(Mutex::new(receivers)),
            },
            inbound_rx,
        ))
    }

    /// The addresses actually bound (port 0 resolved), UDP first, in listen order.
    pub fn local_addrs(&self) -> Vec<ListenAddr> {
        let udp = self.shared.udp.iter().map(|(addr, _)| ListenAddr {
            protocol: Protocol::Udp,
            addr: *addr,
        });
        let tcp = self.shared.tcp_listen.iter().map(|addr| ListenAddr {
            protocol: Protocol::Tcp,
            addr: *addr,
        });
        udp.chain(tcp).collect()
    }

    /// The listening address to advertise in Via/Contact for messages sent to
    /// `dest`: a listener of the same protocol and address family.
    pub fn sent_by_for(&self, dest: &Destination) -> Option<SocketAddr> {
        let same_family = |a: &&SocketAddr| a.is_ipv4() == dest.addr.is_ipv4();
        match dest.protocol {
            Protocol::Udp => self.shared.udp.iter().map(|(a, _)| a).find(same_family),
            Protocol::Tcp => self.shared.tcp_listen.iter().find(same_family),
        }
        .copied()
    }

    /// A count of the times the UDP socket that receives what `dest`
    /// answers has been drained by its receive loop: the socket bound to
    /// `local` when given (where a request came in, so where the ACK for
    /// its response comes), else the one requests to `dest` are sent from
    /// (where their responses come). It changes each time the loop has
    /// read everything that was queued in the socket and handed it on, and
    /// stays the same while the loop is behind; compare two readings to
    /// know whether every datagram that arrived before the first has been
    /// read. `None` over TCP (nothing is retransmitted) or when there is no
    /// such socket.
    pub fn receive_drains(&self, local: Option<SocketAddr>, dest: &Destination) -> Option<u32> {
        Some(self.receive_socket(local, dest)?.drains())
    }

    /// Whether that socket (see [`Transports::receive_drains`]) has read
    /// every datagram that arrived before its count was `drains`: the count
    /// moved since, or the receive loop waits for readiness with nothing
    /// queued (an idle socket is drained; this costs one `ioctl`). False
    /// while the loop is behind. True when there is no such socket.
    pub fn drained_since(
        &self,
        local: Option<SocketAddr>,
        dest: &Destination,
        drains: u32,
    ) -> bool {
        self.receive_socket(local, dest)
            .map_or(true, |endpoint| endpoint.drained_since(drains))
    }

    fn receive_socket(
        &self,
        local: Option<SocketAddr>,
        dest: &Destination,
    ) -> Option<&Arc<udp::UdpEndpoint>> {
        if dest.protocol != Protocol::Udp {
            return None;
        }
        match local {
            Some(local) => self.shared.udp_socket_for(local),
            None => self.shared.udp_socket_for_family(dest.addr),
        }
    }

    /// Counters of this transport.
    pub fn metrics(&self) -> &TransportMetrics {
        &self.shared.metrics
    }

    /// Number of open TCP connections.
    pub fn connection_count(&self) -> usize {
        self.shared.connections.len()
    }

    /// Sends a response to the request that arrived from `to`, per RFC 3261
    /// §18.2.2 and RFC 3581: over the same TCP connection while it is open,
    /// else to the request's source address with the port from `rport` or
    /// the Via sent-by (see [`response_destination`]).
    pub async fn send_response(
        &self,
        response: &Response,
        to: &Source,
    ) -> Result<(), TransportError> {
        routing::send_response_bytes(&self.shared, response.to_bytes(), response, to).await
    }

    /// Sends an already-encoded response (e.g. a retransmission) to the
    /// request that came from `to`: on its TCP connection while open, else
    /// to `dest` (normally [`response_destination`] of the response).
    pub async fn send_encoded_response(
        &self,
        bytes: Bytes,
        to: &Source,
        dest: Destination,
    ) -> Result<(), TransportError> {
        routing::send_reply(&self.shared, bytes, to, dest).await
    }

    /// Sends a request: over UDP from a listening socket of the destination's
    /// address family (so responses come back to it); over TCP on an open
    /// connection to that address, or a new one.
    pub async fn send_request(
        &self,
        request: &Request,
        to: &Destination,
    ) -> Result<(), TransportError> {
        self.send_bytes(request.to_bytes(), to).await
    }

    /// Sends already-encoded bytes like [`Transports::send_bytes`] if that
    /// needs no waiting: over UDP when the socket takes the datagram at
    /// once; over TCP always (queued on the connection to that address,
    /// which may still be being opened: [`Sent::Connecting`]). `None`: it
    /// would have to wait (a full UDP outbox and socket buffer); use
    /// `send_bytes`.
    pub fn try_send_bytes(
        &self,
        bytes: &Bytes,
        to: &Destination,
    ) -> Option<Result<Sent, TransportError>> {
        routing::try_send_to_destination(&self.shared, bytes, to)
    }

    /// [`Transports::send_encoded_response`] if that needs no waiting (see
    /// [`Transports::try_send_bytes`]).
    pub fn try_send_encoded_response(
        &self,
        bytes: &Bytes,
        to: &Source,
        dest: Destination,
    ) -> Option<Result<Sent, TransportError>> {
        routing::try_send_reply(&self.shared, bytes, to, dest)
    }

    /// Sends a response like [`Transports::send_response`] without waiting
    /// for a TCP connection being opened (the request's is gone): as
    /// [`Transports::queue_bytes`]. For stateless answers, which nothing
    /// retransmits on a failure anyway.
    pub async fn queue_response(
        &self,
        response: &Response,
        to: &Source,
    ) -> Result<(), TransportError> {
        let dest = response_destination(response, to, self.shared.config.response_port);
        let bytes = response.to_bytes();
        match routing::try_send_reply(&self.shared, &bytes, to, dest) {
            Some(sent) => sent.map(|_| ()),
            None => routing::send_reply(&self.shared, bytes, to, dest).await,
        }
    }

    /// Sends already-encoded bytes like [`Transports::send_bytes`] without
    /// waiting for a TCP connection being opened: the message is queued on
    /// it, and a failed connect is only counted (`send_errors`) and logged,
    /// as a queued datagram's failure is. For messages whose loss the
    /// caller's timers cover (e.g. an ACK).
    pub async fn queue_bytes(&self, bytes: Bytes, to: &Destination) -> Result<(), TransportError> {
        match routing::try_send_to_destination(&self.shared, &bytes, to) {
            Some(sent) => sent.map(|_| ()),
            None => routing::send_to_destination(&self.shared, bytes, to).await,
        }
    }

    /// Sends already-encoded bytes (e.g. a retransmission) to a destination.
    pub async fn send_bytes(&self, bytes: Bytes, to: &Destination) -> Result<(), TransportError> {
        routing::send_to_destination(&self.shared, bytes, to).await
    }

    /// Has the UDP receive loops hand every message they parse to
    /// `handler`, at once, instead of queuing it for the receiver that
    /// [`Transports::bind`] returned (TCP messages still go there). The
    /// hand-off through the queue costs a task wake-up, a channel receive
    /// and two moves of the message; a handler that does its work without
    /// waiting (the transaction layer matches and steps a message at once)
    /// needs none of that. The handler bounds what it keeps waiting: what
    /// it hands back is refused as a full queue's messages are (503 to a
    /// request other than ACK). Only the first handler set is kept;
    /// returns whether this one was. Set it before the first datagram
    /// arrives, or the messages queued before go to the receiver first.
    /// The transports keep only a weak reference (a handler that holds
    /// them would otherwise keep both alive for ever): the caller keeps
    /// the handler for as long as it is to be used; once it is dropped,
    /// UDP messages go to the queue again.
    pub fn set_udp_handler(&self, handler: &Arc<dyn InboundHandler>) -> bool {
        self.shared.udp_handler.set(Arc::downgrade(handler)).is_ok()
    }

    /// Stops receiving and accepting. Each UDP receive loop ends between
    /// two batches: what it read is handed on or answered; then the send
    /// loops write out what is queued (those answers too) and end. A
    /// receive loop still in a batch [`RECEIVE_STOP_WAIT`] after the stop
    /// (a stateless answer the socket never takes) is aborted and counted
    /// (`udp_receive_loops_aborted`). Accept loops end; open TCP
    /// connections are closed after their queued output is written.
    pub async fn shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
        for (_, endpoint) in &self.shared.udp {
            endpoint.stop_receiving();
        }
        let receivers = match self.receivers.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let deadline = tokio::time::Instant::now() + RECEIVE_STOP_WAIT;
        for mut receiver in receivers {
            if tokio::time::timeout_at(deadline, &mut receiver)
                .await
                .is_err()
            {
                receiver.abort();
                self.shared
                    .metrics
                    .udp_receive_loops_aborted
                    .fetch_add(1, Ordering::Relaxed);
                let _ = receiver.await;
            }
        }
        for (_, endpoint) in &self.shared.udp {
            endpoint.close();
        }
        let tasks = match self.tasks.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// How long [`Transports::shutdown`] waits for the UDP receive loops to
/// finish the batches in hand before it aborts them. A batch is handed on
/// without waiting but for a stateless answer that finds the outbox full
/// and the socket not writable: a second is many socket buffers' worth.
pub const RECEIVE_STOP_WAIT: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UdpSocket};

    use super::*;
    use crate::sip::{parse_datagram, Method, StatusCode};

    #[tokio::test]
    async fn udp_sends_are_batched_and_keep_their_order() {
        let (t, _rx) = bind(&["udp:127.0.0.1:0"], TransportConfig::default()).await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Room for the whole burst: the test reads only after queuing all.
        socket2::SockRef::from(&peer)
            .set_recv_buffer_size(4 << 20)
            .unwrap();
        let to = Destination {
            protocol: Protocol::Udp,
            addr: peer.local_addr().unwrap(),
        };
        const N: usize = 300;
        // Queued without yielding: the sender task writes them afterwards.
        for i in 0..N {
            t.send_bytes(Bytes::from(format!("datagram {i}")), &to)
                .await
                .unwrap();
        }
        let mut buf = [0u8; 64];
        for i in 0..N {
            let (n, from) = tokio::time::timeout(Duration::from_secs(10), peer.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("datagram {i} did not arrive"))
                .unwrap();
            assert_eq!(from, addr_of(&t, Protocol::Udp));
            assert_eq!(&buf[..n], format!("datagram {i}").as_bytes());
        }
        let m = t.metrics();
        assert_eq!(m.sent.load(Ordering::Relaxed), N as u64);
        assert_eq!(m.udp_datagrams_batched.load(Ordering::Relaxed), N as u64);
        let batches = m.udp_send_batches.load(Ordering::Relaxed);
        assert!(
            (N as u64).div_ceil(64) <= batches && batches < N as u64 / 10,
            "{batches} sendmmsg calls for {N} datagrams"
        );
    }

    /// One datagram goes out with `sendto`, a few with one `sendmmsg`
    /// whose headers are on the stack (more than 8 take the heap path,
    /// above).
    #[tokio::test]
    async fn a_single_datagram_and_a_small_batch_go_out_in_one_call_each() {
        for n in [1_usize, 2, 8] {
            let (t, _rx) = bind(&["udp:127.0.0.1:0"], TransportConfig::default()).await;
            let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let to = Destination {
                protocol: Protocol::Udp,
                addr: peer.local_addr().unwrap(),
            };
            for i in 0..n {
                t.send_bytes(Bytes::from(format!("datagram {i} of {n}")), &to)
                    .await
                    .unwrap();
            }
            let mut buf = [0u8; 64];
            for i in 0..n {
                let (len, from) =
                    tokio::time::timeout(Duration::from_secs(10), peer.recv_from(&mut buf))
                        .await
                        .unwrap_or_else(|_| panic!("datagram {i} of {n} did not arrive"))
                        .unwrap();
                assert_eq!(from, addr_of(&t, Protocol::Udp));
                assert_eq!(&buf[..len], format!("datagram {i} of {n}").as_bytes());
            }
            let m = t.metrics();
            assert_eq!(m.sent.load(Ordering::Relaxed), n as u64);
            assert_eq!(
                m.udp_send_batches.load(Ordering::Relaxed),
                1,
                "{n} datagrams"
            );
        }
    }

    /// A send loop waiting with nothing queued ends at shutdown
    /// (`Transports::shutdown` waits for it), and one woken for a datagram
    /// goes back to waiting for the next.
    #[tokio::test]
    async fn an_idle_send_loop_sends_each_datagram_and_ends_at_shutdown() {
        let (t, _rx) = bind(&["udp:127.0.0.1:0"], TransportConfig::default()).await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = Destination {
            protocol: Protocol::Udp,
            addr: peer.local_addr().unwrap(),
        };
        let mut buf = [0u8; 64];
        for i in 0..3 {
            // The loop has sent the previous one and waits again.
            tokio::task::yield_now().await;
            t.send_bytes(Bytes::from(format!("one {i}")), &to)
                .await
                .unwrap();
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("datagram {i} not sent"))
                .unwrap();
            assert_eq!(&buf[..n], format!("one {i}").as_bytes());
        }
        assert_eq!(t.metrics().udp_send_batches.load(Ordering::Relaxed), 3);
        tokio::time::timeout(Duration::from_secs(5), t.shutdown())
            .await
            .expect("the send loop did not end");
    }

    #[tokio::test]
    async fn queued_udp_datagrams_are_sent_on_shutdown() {
        let (t, _rx) = bind(&["udp:127.0.0.1:0"], TransportConfig::default()).await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = Destination {
            protocol: Protocol::Udp,
            addr: peer.local_addr().unwrap(),
        };
        t.send_bytes(Bytes::from_static(b"last words"), &to)
            .await
            .unwrap();
        t.shutdown().await;
        let mut buf = [0u8; 64];
        let (n, _) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"last words");
    }

    /// A datagram sent after shutdown ended the send loop is not left in an
    /// outbox nobody reads: it goes out directly on the still-open socket
    /// and is counted.
    #[tokio::test]
    async fn a_udp_send_after_shutdown_goes_out_directly() {
        let (t, _rx) = bind(&["udp:127.0.0.1:0"], TransportConfig::default()).await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = Destination {
            protocol: Protocol::Udp,
            addr: peer.local_addr().unwrap(),
        };
        t.shutdown().await;
        t.send_bytes(Bytes::from_static(b"too late"), &to)
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf))
            .await
            .expect("the datagram sent after shutdown was kept, not sent")
            .unwrap();
        assert_eq!(&buf[..n], b"too late");
        assert_eq!(from, addr_of(&t, Protocol::Udp));
        assert_eq!(t.metrics().sent.load(Ordering::Relaxed), 1);
    }

    fn options(via: &str, call_id: &str) -> String {
        format!(
            "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: {via};branch=z9hG4bK{call_id}\r\n\
             From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    }

    async fn bind(
        listen: &[&str],
        config: TransportConfig,
    ) -> (Transports, mpsc::Receiver<Inbound>) {
        let listen: Vec<ListenAddr> = listen.iter().map(|l| l.parse().unwrap()).collect();
        Transports::bind(&listen, config).await.unwrap()
    }

    fn addr_of(t: &Transports, protocol: Protocol) -> SocketAddr {
        t.local_addrs()
            .into_iter()
            .find(|l| l.protocol == protocol)
            .unwrap()
            .addr
    }

    #[tokio::test]
    async fn udp_request_arrives_with_its_source() {
        let (t, mut rx) = bind(&["udp:127.0.0.1:0"], TransportConfig::default()).await;
        let server = addr_of(&t, Protocol::Udp);
        assert_ne!(server.port(), 0);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(
                options("SIP/2.0/UDP client.example.com", "u1").as_bytes(),
                server,
            )
            .await
            .unwrap();
        let inbound = rx.recv().await.unwrap();
        assert_eq!(inbound.source.protocol, Protocol::Udp);
        assert_eq!(inbound.source.peer, client.local_addr().unwrap());
        assert_eq!(inbound.source.local, server);
        let Message::Request(req) = inbound.message else {
            panic!("not a request")
        };
        assert_eq!(req.method, Method::Options);
        assert_eq!(req.top_via().unwrap().received(), Some("127.0.0.1"));
        // The answer goes back to the source (the sent-by is a name).
        let resp = Response::for_request(&req, StatusCode::OK);
        t.send_response(&resp, &inbound.source).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(from, server);
        let Ok(Message::Response(r)) =
            parse_datagram(Bytes::copy_from_slice(&buf[..n]), &Limits::default())
        else {
            panic!("not a response")
        };
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(t.metrics().messages_delivered.load(Ordering::Relaxed), 1);
    }

    /// Remembers the Call-ID and status of each refusal it is told of.
    #[derive(Debug, Default)]
    struct Refused(Mutex<Vec<(String, u16)>>);

    impl RefusalObserver for Refused {
        fn refused(&self, request: &Request, status: crate::sip::StatusCode) {
            let call_id = request.call_id().unwrap().to_string();
            self.0.lock().unwrap().push((call_id, status.as_u16()));
        }
    }

    #[tokio::test]
    async fn full_inbound_queue_answers_503_with_retry_after() {
        let refused = Arc::new(Refused::default());
        let config = TransportConfig {
            inbound_queue: 1,
            refusals: Some(refused.clone()),
            ..TransportConfig::default()
        };
        let (t, _rx) = bind(&["udp:127.0.0.1:0"], config).await;
        let server = addr_of(&t, Protocol::Udp);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let via = format!("SIP/2.0/UDP {};rport", client.local_addr().unwrap());
        for id in ["q1", "q2"] {
            client
                .send_to(options(&via, id).as_bytes(), server)
                .await
                .unwrap();
        }
        let mut buf = vec![0u8; 4096];
        let (n, _) = client.recv_from(&mut buf).await.unwrap();
        let Ok(Message::Response(r)) =
            parse_datagram(Bytes::copy_from_slice(&buf[..n]), &Limits::default())
        else {
            panic!("not a response")
        };
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.call_id().unwrap().to_string(), "q2");
        assert!(r.headers.get(&crate::sip::HeaderName::RetryAfter).is_some());
        assert_eq!(t.metrics().overload_rejected.load(Ordering::Relaxed), 1);
        assert_eq!(*refused.0.lock().unwrap(), vec![("q2".to_owned(), 503)]);
    }

    /// Passes on what the receive loops hand it.
    struct Collect(mpsc::UnboundedSender<Inbound>);

    impl InboundHandler for Collect {
        fn handle(&self, inbound: Inbound) -> Option<Inbound> {
            self.0.send(inbound).unwrap();
            None
        }
    }

    #[tokio::test]
    async fn udp_messages_go_to_the_handler_and_tcp_ones_to_the_queue() {
        // A queue of one: a second UDP message queued would be refused 503.
        let config = TransportConfig {
            inbound_queue: 1,
            ..TransportConfig::default()
        };
        let (t, mut rx) = bind(&["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], config).await;
        let (handed_tx, mut handed_rx) = mpsc::unbounded_channel();
        let handler: Arc<dyn InboundHandler> = Arc::new(Collect(handed_tx.clone()));
        assert!(t.set_udp_handler(&handler));
        let second: Arc<dyn InboundHandler> = Arc::new(Collect(handed_tx));
        assert!(!t.set_udp_handler(&second), "set once");
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let via = format!("SIP/2.0/UDP {};rport", client.local_addr().unwrap());
        for id in ["h1", "h2", "h3"] {
            client
                .send_to(options(&via, id).as_bytes(), addr_of(&t, Protocol::Udp))
                .await
                .unwrap();
        }
        let mut tcp = TcpStream::connect(addr_of(&t, Protocol::Tcp))
            .await
            .unwrap();
        let tcp_via = format!("SIP/2.0/TCP {}", tcp.local_addr().unwrap());
        tcp.write_all(options(&tcp_via, "t1").as_bytes())
            .await
            .unwrap();
        let queued = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(queued.source.protocol, Protocol::Tcp);
        let mut handed = Vec::new();
        for _ in 0..3 {
            let inbound = tokio::time::timeout(Duration::from_secs(5), handed_rx.recv())
                .await
                .expect("UDP message not handed on")
                .unwrap();
            handed.push(inbound);
        }
        let ids: Vec<String> = handed
            .iter()
            .map(|i| match &i.message {
                Message::Request(r) => r.call_id().unwrap().to_string(),
                Message::Response(_) => panic!("a response"),
            })
            .collect();
        assert_eq!(ids, ["h1", "h2", "h3"], "in the order they came");
        assert!(handed.iter().all(|i| i.source.protocol == Protocol::Udp));
        // Stamped like a queued request (RFC 3581 rport).
        let Message::Request(r) = &handed[0].message else {
            unreachable!()
        };
        assert!(r
            .headers
            .top_via_ref()
            .unwrap()
            .rport()
            .is_some_and(|p| p.is_some()));
        let m = t.metrics();
        assert_eq!(m.messages_delivered.load(Ordering::Relaxed), 4);
        assert_eq!(m.overload_rejected.load(Ordering::Relaxed), 0);
    }

    /// Hands every message back, as a handler with a full backlog does.
    struct HandBack;

    impl InboundHandler for HandBack {
        fn handle(&self, inbound: Inbound) -> Option<Inbound> {
            Some(inbound)
        }
    }

    #[tokio::test]
    async fn a_message_the_udp_handler_hands_back_is_refused_503() {
        let (t, mut rx) = bind(&["udp:127.0.0.1:0"], TransportConfig::default()).await;
        let handler: Arc<dyn InboundHandler> = Arc::new(HandBack);
        assert!(t.set_udp_handler(&handler));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let via = format!("SIP/2.0/UDP {};rport", client.local_addr().unwrap());
        client
            .send_to(options(&via, "b1").as_bytes(), addr_of(&t, Protocol::Udp))
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        let Ok(Message::Response(r)) =
            parse_datagram(Bytes::copy_from_slice(&buf[..n]), &Limits::default())
        else {
            panic!("not a response")
        };
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            rx.try_recv().is_err(),
            "not queued behind the handler's back"
        );
        let m = t.metrics();
        assert_eq!(m.overload_rejected.load(Ordering::Relaxed), 1);
        assert_eq!(m.messages_delivered.load(Ordering::Relaxed), 0);
    }

    /// A handler that holds the transports, as the app's does (through
    /// the transaction layer's sink).
    struct HoldsTransports(#[allow(dead_code)] Transports);

    impl InboundHandler for HoldsTransports {
        fn handle(&self, inbound: Inbound) -> Option<Inbound> {
            Some(inbound)
        }
    }

    #[tokio::test]
    async fn a_handler_holding_the_transports_does_not_keep_them_alive() {
        let (t, _rx) = bind(&["udp:127.0.0.1:0"], TransportConfig::default()).await;
        let shared = Arc::downgrade(&t.shared);
        let handler: Arc<dyn InboundHandler> = Arc::new(HoldsTransports(t.clone()));
        assert!(t.set_udp_handler(&handler));
        t.shutdown().await;
        drop(t);
        drop(handler);
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(shared.upgrade().is_none(), "a reference cycle");
    }

    /// A handler that, on the first message of a batch, waits (up to 5 s)
    /// until a shutdown has told the loop to stop, then hands every
    /// message back (503): the shutdown comes while the loop is in the
    /// middle of a batch.
    struct RefuseOnceStopped {
        endpoint: Arc<udp::UdpEndpoint>,
        in_batch: std::sync::mpsc::SyncSender<()>,
        handled: AtomicU64,
    }

    impl InboundHandler for RefuseOnceStopped {
        fn handle(&self, inbound: Inbound) -> Option<Inbound> {
            if self.handled.fetch_add(1, Ordering::Relaxed) == 0 {
                let _ = self.in_batch.try_send(());
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !self.endpoint.receiving_stopped() && std::time::Instant::now() < deadline {
                    std::thread::yield_now();
                }
            }
            Some(inbound)
        }
    }

    /// A shutdown that begins while a receive loop hands on a batch (here
    /// from another worker thread) lets it finish: every datagram it read
    /// is answered (503, handed back) and the answers are written before
    /// the send loop ends; the loop ends by itself, between batches.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shutdown_in_the_middle_of_a_batch_lets_the_loop_answer_all_of_it() {
        let (t, _rx) = bind(&["udp:127.0.0.1:0"], TransportConfig::default()).await;
        let (in_batch, entered) = std::sync::mpsc::sync_channel(1);
        let handler = Arc::new(RefuseOnceStopped {
            endpoint: Arc::clone(&t.shared.udp[0].1),
            in_batch,
            handled: AtomicU64::new(0),
        });
        let dyn_handler: Arc<dyn InboundHandler> = handler.clone();
        assert!(t.set_udp_handler(&dyn_handler));
        let server = addr_of(&t, Protocol::Udp);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        const SENT: u64 = 10;
        for i in 0..SENT {
            let via = format!("SIP/2.0/UDP {}", client.local_addr().unwrap());
            let text = options(&via, &format!("stop{i}"));
            client.send_to(text.as_bytes(), server).await.unwrap();
        }
        tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(5)))
            .await
            .unwrap()
            .expect("the loop reads the datagrams");
        t.shutdown().await;
        let m = t.metrics();
        let read = m.udp_datagrams_received.load(Ordering::Relaxed);
        assert_eq!(handler.handled.load(Ordering::Relaxed), read);
        assert!((1..=SENT).contains(&read), "{read}");
        assert_eq!(m.udp_receive_loops_aborted.load(Ordering::Relaxed), 0);
        // Every one read is answered; nothing more comes.
        let mut answered = 0;
        let mut buf = vec![0u8; 4096];
        while let Ok(got) =
            tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf)).await
        {
            let (n, _) = got.unwrap();
            let r = match parse_datagram(Bytes::copy_from_slice(&buf[..n]), &Limits::default()) {
                Ok(Message::Response(r)) => r,
                other => panic!("not a response: {other:?}"),
            };
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
            answered += 1;
        }
        assert_eq!(answered, read, "answers of the last batch were lost");
    }

    /// A receive loop waiting for readiness ends at once when the
    /// transports shut down: woken, not cut off (paused time: a loop that
    /// did not end would be aborted at once, its wait auto-advanced).
    #[tokio::test(start_paused = true)]
    async fn a_waiting_receive_loop_ends_by_itself_at_shutdown() {
        let (t, mut rx) = bind(&["udp:127.0.0.1:0"], TransportConfig::default()).await;
        let server = addr_of(&t, Protocol::Udp);
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let text = options("SIP/2.0/UDP 127.0.0.1:9", "parked");
        client.send_to(text.as_bytes(), server).unwrap();
        // Read: the loop then waits for readiness again.
        assert!(rx.recv().await.is_some());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        t.shutdown().await;
        assert_eq!(
            t.metrics()
                .udp_receive_loops_aborted
                .load(Ordering::Relaxed),
            0
        );
    }

    fn invite(via: &str, call_id: &str) -> String {
        format!(
            "INVITE sip:+74951234567@127.0.0.1 SIP/2.0\r\nVia: {via};branch=z9hG4bK{call_id}\r\n\
             From: <sip:b@example.com>;tag=1\r\nTo: <sip:+74951234567@127.0.0.1>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// The next response `client` receives (fails after 5 s of silence).
    async fn next_response(client: &UdpSocket) -> Response {
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("no response within 5 s")
            .unwrap();
        match parse_datagram(Bytes::copy_from_slice(&buf[..n]), &Limits::default()) {
            Ok(Message::Response(r)) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_retransmitted_refused_invite_is_refused_again_and_reported_once() {
        let refused = Arc::new(Refused::default());
        let config = TransportConfig {
            inbound_queue: 1,
            refusals: Some(refused.clone()),
            ..TransportConfig::default()
        };
        let (t, mut rx) = bind(&["udp:127.0.0.1:0"], config).await;
        let server = addr_of(&t, Protocol::Udp);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let via = format!("SIP/2.0/UDP {};rport", client.local_addr().unwrap());
        let send = |text: String| {
            let client = &client;
            async move { client.send_to(text.as_bytes(), server).await.unwrap() }
        };
        // The first INVITE fills the queue, the second is refused.
        send(invite(&via, "fill")).await;
        send(invite(&via, "r1")).await;
        let first = next_response(&client).await;
        assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(first.call_id().unwrap().to_string(), "r1");
        // Its retransmission (the 503 was lost) gets the same 503 ...
        send(invite(&via, "r1")).await;
        let again = next_response(&client).await;
        assert_eq!(again.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(again.call_id().unwrap().to_string(), "r1");
        let tag = |r: &Response| r.to().unwrap().tag().map(str::to_owned);
        assert!(tag(&first).is_some());
        assert_eq!(tag(&again), tag(&first), "RFC 3261 §8.2.7: same To tag");
        // ... and so does a later one when the queue has room again: the
        // caller may hold our 503, the INVITE must not become a call now.
        let Message::Request(filled) = rx.recv().await.unwrap().message else {
            panic!("not a request")
        };
        assert_eq!(filled.call_id().unwrap().to_string(), "fill");
        send(invite(&via, "r1")).await;
        assert_eq!(
            next_response(&client).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(rx.try_recv().is_err(), "the retransmission went up");
        // A new INVITE is not affected.
        send(invite(&via, "r2")).await;
        let Message::Request(fresh) = rx.recv().await.unwrap().message else {
            panic!("not a request")
        };
        assert_eq!(fresh.call_id().unwrap().to_string(), "r2");
        // One report (one CDR line) for the refused INVITE.
        assert_eq!(*refused.0.lock().unwrap(), vec![("r1".to_owned(), 503)]);
        let m = t.metrics();
        assert_eq!(m.overload_rejected.load(Ordering::Relaxed), 1);
        assert_eq!(m.overload_rejected_again.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tcp_connection_is_closed() {
        let config = TransportConfig {
            idle_timeout: Duration::from_secs(30),
            ..TransportConfig::default()
        };
        let (t, _rx) = bind(&["tcp:127.0.0.1:0"], config).await;
        let mut client = TcpStream::connect(addr_of(&t, Protocol::Tcp))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        // EOF once the daemon gives up on the silent connection.
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(n, 0);
        assert_eq!(t.metrics().tcp_idle_closed.load(Ordering::Relaxed), 1);
        assert_eq!(t.connection_count(), 0);
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_refused() {
        let config = TransportConfig {
            max_connections: 1,
            ..TransportConfig::default()
        };
        let (t, mut rx) = bind(&["tcp:127.0.0.1:0"], config).await;
        let server = addr_of(&t, Protocol::Tcp);
        let mut first = TcpStream::connect(server).await.unwrap();
        first
            .write_all(options("SIP/2.0/TCP client.example.com", "c1").as_bytes())
            .await
            .unwrap();
        rx.recv().await.unwrap();
        let mut second = TcpStream::connect(server).await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            second.read(&mut buf).await.unwrap(),
            0,
            "second connection not closed"
        );
        assert_eq!(t.metrics().tcp_rejected.load(Ordering::Relaxed), 1);
        assert_eq!(t.connection_count(), 1);
    }

    #[tokio::test]
    async fn tcp_requests_to_one_destination_share_a_connection() {
        let (t, mut rx) = bind(&["tcp:127.0.0.1:0"], TransportConfig::default()).await;
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dest = Destination::tcp(peer.local_addr().unwrap());
        let sent_by = t.sent_by_for(&dest).unwrap();
        for id in ["r1", "r2"] {
            let text = options(&format!("SIP/2.0/TCP {sent_by}"), id);
            let Ok(Message::Request(req)) = parse_datagram(Bytes::from(text), &Limits::default())
            else {
                panic!("fixture")
            };
            t.send_request(&req, &dest).await.unwrap();
        }
        let (mut conn, _) = peer.accept().await.unwrap();
        let mut parser = crate::sip::StreamParser::new(Limits::default());
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while got.len() < 2 {
            let n = conn.read(&mut buf).await.unwrap();
            assert_ne!(n, 0);
            parser.feed(&buf[..n]);
            while let Some(Message::Request(r)) = parser.next_message().unwrap() {
                got.push(r.call_id().unwrap().to_string());
            }
        }
        assert_eq!(got, ["r1", "r2"]);
        assert_eq!(t.connection_count(), 1);
        assert_eq!(t.metrics().tcp_connected.load(Ordering::Relaxed), 1);
        // A response on that connection comes up tagged with it.
        let Ok(Message::Request(req)) = parse_datagram(
            Bytes::from(options(&format!("SIP/2.0/TCP {sent_by}"), "r1")),
            &Limits::default(),
        ) else {
            panic!("fixture")
        };
        conn.write_all(&Response::for_request(&req, StatusCode::OK).to_bytes())
            .await
            .unwrap();
        let inbound = rx.recv().await.unwrap();
        assert_eq!(inbound.source.protocol, Protocol::Tcp);
        assert!(inbound.source.conn.is_some());
        assert!(matches!(inbound.message, Message::Response(_)));
    }

    #[tokio::test]
    async fn shutdown_closes_listeners_and_open_connections() {
        let (t, _rx) = bind(&["tcp:127.0.0.1:0"], TransportConfig::default()).await;
        let tcp = addr_of(&t, Protocol::Tcp);
        let mut open = TcpStream::connect(tcp).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while t.connection_count() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("connection accepted");
        t.shutdown().await;
        assert!(
            TcpStream::connect(tcp).await.is_err(),
            "listener still accepting"
        );
        let mut buf = [0u8; 16];
        assert_eq!(
            open.read(&mut buf).await.unwrap(),
            0,
            "open connection not closed"
        );
    }

    #[tokio::test]
    async fn crlf_keepalives_are_not_malformed_and_tcp_pings_get_a_pong() {
        let (t, mut rx) = bind(
            &["udp:127.0.0.1:0", "tcp:127.0.0.1:0"],
            TransportConfig::default(),
        )
        .await;
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        udp.send_to(b"\r\n\r\n", addr_of(&t, Protocol::Udp))
            .await
            .unwrap();
        let mut tcp = TcpStream::connect(addr_of(&t, Protocol::Tcp))
            .await
            .unwrap();
        tcp.write_all(b"\r\n\r\n").await.unwrap();
        let mut pong = [0u8; 2];
        tcp.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"\r\n");
        // A request after the ping is framed normally.
        tcp.write_all(options("SIP/2.0/TCP client.example.com", "k1").as_bytes())
            .await
            .unwrap();
        assert!(matches!(
            rx.recv().await.unwrap().message,
            Message::Request(_)
        ));
        tokio::time::timeout(Duration::from_secs(5), async {
            while t.metrics().keepalives.load(Ordering::Relaxed) < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("both keep-alives counted");
        assert_eq!(t.metrics().malformed_dropped.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn response_after_the_connection_closed_opens_one_to_the_sent_by_port() {
        let (t, mut rx) = bind(&["tcp:127.0.0.1:0"], TransportConfig::default()).await;
        // The client listens for the reconnect on its sent-by port.
        let client_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (req, source) = request_of_a_closed_connection(&t, &mut rx, &client_listener).await;
        t.send_response(&Response::for_request(&req, StatusCode::OK), &source)
            .await
            .unwrap();
        let (mut back, _) = client_listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = back.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"SIP/2.0 200 "));
    }

    /// A stateless answer whose request's connection is gone does not wait
    /// for the new connection: it is queued on it.
    #[tokio::test]
    async fn a_queued_response_does_not_wait_for_the_reconnect() {
        let (t, mut rx) = bind(&["tcp:127.0.0.1:0"], TransportConfig::default()).await;
        let client_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (req, source) = request_of_a_closed_connection(&t, &mut rx, &client_listener).await;
        let response = Response::for_request(&req, StatusCode::SERVICE_UNAVAILABLE);
        // Ready when first polled: the connect task has not even run.
        let mut queued = std::pin::pin!(t.queue_response(&response, &source));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let std::task::Poll::Ready(queued) = std::future::Future::poll(queued.as_mut(), &mut cx)
        else {
            panic!("waited for the connect");
        };
        queued.unwrap();
        let (mut back, _) = client_listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = back.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"SIP/2.0 503 "));
    }

    /// A request that came over a connection the client then closed, with
    /// `listener`'s address as its Via sent-by; once the connection is out
    /// of the table.
    async fn request_of_a_closed_connection(
        t: &Transports,
        rx: &mut mpsc::Receiver<Inbound>,
        listener: &TcpListener,
    ) -> (Request, Source) {
        let sent_by = listener.local_addr().unwrap();
        let mut conn = TcpStream::connect(addr_of(t, Protocol::Tcp)).await.unwrap();
        conn.write_all(options(&format!("SIP/2.0/TCP {sent_by};rport"), "gone").as_bytes())
            .await
            .unwrap();
        let inbound = rx.recv().await.unwrap();
        drop(conn);
        tokio::time::timeout(Duration::from_secs(5), async {
            while t.connection_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("connection removed");
        let Message::Request(req) = inbound.message else {
            panic!("not a request")
        };
        (req, inbound.source)
    }

    #[tokio::test]
    async fn oversize_datagram_is_answered_513() {
        let config = TransportConfig {
            limits: Limits {
                max_message_size: 600,
                ..Limits::default()
            },
            ..TransportConfig::default()
        };
        let (t, _rx) = bind(&["udp:127.0.0.1:0"], config).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let via = format!("SIP/2.0/UDP {};rport", client.local_addr().unwrap());
        let big = options(&via, "big").replacen(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\nX-Pad: {}\r\n", "p".repeat(700)),
            1,
        );
        client
            .send_to(big.as_bytes(), addr_of(&t, Protocol::Udp))
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = client.recv_from(&mut buf).await.unwrap();
        let Ok(Message::Response(r)) =
            parse_datagram(Bytes::copy_from_slice(&buf[..n]), &Limits::default())
        else {
            panic!("not a response")
        };
        assert_eq!(r.status, StatusCode::MESSAGE_TOO_LARGE);
        assert_eq!(r.call_id().unwrap().to_string(), "big");
        assert_eq!(t.metrics().oversize.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_trickled_too_slowly_closes_the_connection() {
        let config = TransportConfig {
            idle_timeout: Duration::from_secs(60),
            message_timeout: Duration::from_secs(10),
            ..TransportConfig::default()
        };
        let (t, _rx) = bind(&["tcp:127.0.0.1:0"], config).await;
        let mut client = TcpStream::connect(addr_of(&t, Protocol::Tcp))
            .await
            .unwrap();
        let msg = options("SIP/2.0/TCP client.example.com", "slow");
        let start = tokio::time::Instant::now();
        // One octet every 5 s: never idle, never complete.
        let mut buf = [0u8; 16];
        for b in msg.as_bytes() {
            client.write_all(&[*b]).await.unwrap();
            match tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await {
                Err(_) => continue,
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => panic!("unexpected {n} octets"),
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "closed after {:?}",
            start.elapsed()
        );
        assert_eq!(t.metrics().tcp_incomplete_closed.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_connect_makes_the_next_sends_fail_fast_for_a_while() {
        let (t, _rx) = bind(&["tcp:127.0.0.1:0"], TransportConfig::default()).await;
        // A port nobody listens on: connect is refused.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let dest = Destination::tcp(closed);
        let bytes = Bytes::from_static(b"OPTIONS sip:x SIP/2.0\r\n\r\n");
        assert!(matches!(
            t.send_bytes(bytes.clone(), &dest).await,
            Err(TransportError::Io { .. })
        ));
        assert!(matches!(
            t.send_bytes(bytes.clone(), &dest).await,
            Err(TransportError::Unreachable(a)) if a == closed
        ));
        tokio::time::advance(Duration::from_secs(11)).await;
        // Tried again after the backoff.
        assert!(matches!(
            t.send_bytes(bytes, &dest).await,
            Err(TransportError::Io { .. })
        ));
        assert_eq!(t.metrics().send_errors.load(Ordering::Relaxed), 3);
    }
    /// Sends to a peer whose connection is being opened do not wait: they
    /// are queued, at most `connection_send_queue` of them (one more is an
    /// error, not growth), and written in the order sent once connected;
    /// what is sent after the connect goes out behind them.
    #[tokio::test]
    async fn sends_queued_while_connecting_go_out_in_order_within_the_bound() {
        let config = TransportConfig {
            connection_send_queue: 3,
            ..TransportConfig::default()
        };
        let (t, _rx) = bind(&["tcp:127.0.0.1:0"], config).await;
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dest = Destination::tcp(peer.local_addr().unwrap());
        // No await in between: the connect has not even started.
        let mut pending = Vec::new();
        for m in ["one ", "two ", "three "] {
            match t.try_send_bytes(&Bytes::from_static(m.as_bytes()), &dest) {
                Some(Ok(Sent::Connecting(p))) => pending.push(p),
                other => panic!("{m}: {other:?}"),
            }
        }
        assert!(matches!(
            t.try_send_bytes(&Bytes::from_static(b"four "), &dest),
            Some(Err(TransportError::Congested(_)))
        ));
        assert_eq!(t.connection_count(), 1, "one connection per peer");
        let (mut stream, _) = peer.accept().await.unwrap();
        for p in pending {
            p.outcome().await.unwrap();
        }
        t.send_bytes(Bytes::from_static(b"five"), &dest)
            .await
            .unwrap();
        let mut got = [0u8; 18];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two three five");
        assert_eq!(t.metrics().send_errors.load(Ordering::Relaxed), 1);
    }

    /// Messages queued on a connect still hanging at shutdown are dropped
    /// with it, each counted in `send_errors` (they were counted in `sent`
    /// when queued), and their senders learn of the shutdown.
    #[tokio::test(start_paused = true)]
    async fn messages_queued_on_a_connect_ended_by_shutdown_are_counted_failed() {
        let (t, _rx) = bind(&["tcp:127.0.0.1:0"], TransportConfig::default()).await;
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        sock.listen(0).unwrap();
        let full: std::net::TcpListener = sock.into();
        let addr = full.local_addr().unwrap();
        let _queued = std::net::TcpStream::connect(addr).unwrap();
        let dest = Destination::tcp(addr);
        let mut pending = Vec::new();
        for m in ["INVITE", "CANCEL"] {
            match t.try_send_bytes(&Bytes::from_static(m.as_bytes()), &dest) {
                Some(Ok(Sent::Connecting(p))) => pending.push(p),
                other => panic!("{m}: {other:?}"),
            }
        }
        let start = tokio::time::Instant::now();
        t.shutdown().await;
        for p in pending {
            assert!(matches!(p.outcome().await, Err(TransportError::Shutdown)));
        }
        assert!(
            start.elapsed() < t.shared.config.connect_timeout,
            "ended by shutdown"
        );
        assert_eq!(t.connection_count(), 0);
        let m = t.metrics();
        assert_eq!(m.sent.load(Ordering::Relaxed), 2);
        assert_eq!(m.send_errors.load(Ordering::Relaxed), 2);
    }

    /// A connect that hangs (the peer's accept queue is full: its SYNs are
    /// dropped) holds no sender: each send returns at once, and the
    /// messages queued are reported failed when `connect_timeout` ends it.
    /// The connection being opened counts against `max_connections`.
    #[tokio::test(start_paused = true)]
    async fn messages_queued_on_a_connect_that_times_out_are_reported_failed() {
        let config = TransportConfig {
            max_connections: 1,
            ..TransportConfig::default()
        };
        let timeout = config.connect_timeout;
        let (t, _rx) = bind(&["tcp:127.0.0.1:0"], config).await;
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        sock.listen(0).unwrap();
        let full: std::net::TcpListener = sock.into();
        let addr = full.local_addr().unwrap();
        let _queued = std::net::TcpStream::connect(addr).unwrap();
        let dest = Destination::tcp(addr);
        let start = tokio::time::Instant::now();
        let mut pending = Vec::new();
        for m in ["INVITE", "CANCEL"] {
            match t.try_send_bytes(&Bytes::from_static(m.as_bytes()), &dest) {
                Some(Ok(Sent::Connecting(p))) => pending.push(p),
                other => panic!("{m}: {other:?}"),
            }
        }
        let other = Destination::tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 9)));
        assert!(matches!(
            t.try_send_bytes(&Bytes::from_static(b"x"), &other),
            Some(Err(TransportError::TooManyConnections(1)))
        ));
        for p in pending {
            assert!(matches!(
                p.outcome().await,
                Err(TransportError::ConnectTimeout(a)) if a == addr
            ));
        }
        assert_eq!(start.elapsed(), timeout);
        assert_eq!(t.connection_count(), 0, "the slot is free again");
        // 1 for `other`, 2 dropped.
        assert_eq!(t.metrics().send_errors.load(Ordering::Relaxed), 3);
        assert!(matches!(
            t.try_send_bytes(&Bytes::from_static(b"again"), &dest),
            Some(Err(TransportError::Unreachable(a))) if a == addr
        ));
    }
}
