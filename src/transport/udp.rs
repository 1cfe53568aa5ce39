//! UDP: binding (IPv6 sockets are v6-only so `0.0.0.0` and `[::]` can both
//! be bound on one port), one receive loop per socket, and one sender per
//! socket that writes the datagrams queued during a turn of the runtime
//! with one `sendmmsg` call.

use std::cell::RefCell;
use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
use smallvec::SmallVec;
use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::routing::{deliver, reply_to_parse_error, stateless_reply};
use super::{InboundHandler, Protocol, Shared, Source};
use crate::sip::{self, Message, Response, StatusCode};

/// Datagrams waiting in an outbox beyond which senders write directly.
const OUTBOX_LIMIT: usize = 4096;

/// Datagrams per `sendmmsg` call (the kernel caps it at 1024).
const SEND_BATCH: usize = 64;

/// A bound UDP socket and its outbox.
///
/// Sending a datagram queues it; the socket's [`send_loop`] runs once the
/// tasks that were ready have run, and writes everything queued meanwhile
/// with one `sendmmsg` per [`SEND_BATCH`] datagrams, in order. On loopback
/// and on a busy server the cost of a datagram is mostly the system call
/// and waking the receiver; a batch pays them once.
pub(crate) struct UdpEndpoint {
    pub(crate) socket: Arc<UdpSocket>,
    outbox: Mutex<Outbox>,
    /// How many times the receive loop has found the socket drained (see
    /// [`UdpEndpoint::drains`]).
    drains: AtomicU32,
    /// The receive loop waits for readiness: it read everything queued
    /// then (see [`UdpEndpoint::drained_since`]).
    parked: AtomicBool,
    /// The receive loop hands on a batch whose read found the socket
    /// drained: the bump of `drains` that follows is for a read made
    /// before anything sent meanwhile (see [`UdpEndpoint::drains`]).
    handing_on_drained: AtomicBool,
    /// Set by [`UdpEndpoint::close`]: the send loop writes what is queued
    /// and ends.
    closing: AtomicBool,
    /// Set by [`UdpEndpoint::stop_receiving`]: the receive loop ends once
    /// it has handed on (or answered) the batch in hand.
    stop_receiving: AtomicBool,
    /// The receive loop's waker, kept the first time it waits for
    /// readiness (it is its task's waker, the same for every wait), for
    /// [`UdpEndpoint::stop_receiving`] to wake it with.
    receiver: OnceLock<Waker>,
}

/// Datagrams waiting for the send loop, and its waker while it waits.
#[derive(Default)]
struct Outbox {
    queued: Vec<(Bytes, SocketAddr)>,
    waiter: Option<Waker>,
}

impl UdpEndpoint {
    pub(crate) fn new(socket: UdpSocket) -> Arc<Self> {
        Arc::new(Self {
            socket: Arc::new(socket),
            outbox: Mutex::new(Outbox::default()),
            drains: AtomicU32::new(0),
            parked: AtomicBool::new(false),
            handing_on_drained: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            stop_receiving: AtomicBool::new(false),
            receiver: OnceLock::new(),
        })
    }

    /// Has the receive loop end (shutdown): at once if it waits for
    /// readiness, else once the batch it is handing on is done, every
    /// datagram of it handed on or answered (a stateless answer that waits
    /// for room is sent first), never in the middle of it.
    pub(crate) fn stop_receiving(&self) {
        self.stop_receiving.store(true, Ordering::SeqCst);
        if let Some(waker) = self.receiver.get() {
            waker.wake_by_ref();
        }
    }

    /// Whether [`UdpEndpoint::stop_receiving`] was called.
    pub(crate) fn receiving_stopped(&self) -> bool {
        self.stop_receiving.load(Ordering::SeqCst)
    }

    /// Waits for the socket to be readable; `false` when the loop is to
    /// stop instead ([`UdpEndpoint::stop_receiving`]).
    fn poll_receive(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        if self.receiver.get().is_none() {
            // Once: a stop that read no waker before this sees the flag.
            let _ = self.receiver.set(cx.waker().clone());
        }
        if self.receiving_stopped() {
            return Poll::Ready(Ok(false));
        }
        self.socket.poll_recv_ready(cx).map_ok(|()| true)
    }

    /// Has the send loop write out what is queued and end (shutdown).
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
        let waiter = self.lock_outbox().waiter.take();
        if let Some(waker) = waiter {
            waker.wake();
        }
    }

    fn lock_outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A count (wrapping) of the times the socket's receive loop found it
    /// drained, bumped once every datagram read before was handed on: a
    /// value that differs from one read earlier means that everything that
    /// arrived before that earlier reading has been read since. It stays
    /// the same while the loop is behind (each `recvmmsg` fills its batch).
    ///
    /// Read while the loop hands on a batch whose read found the socket
    /// drained (a message sent from that hand-on: with one worker thread
    /// the transaction layer and its TU answer there), it is the count
    /// after that batch's bump: the read it stands for came before the
    /// send, so it says nothing of the answer, and only a later drained
    /// read may move the count past it.
    pub(crate) fn drains(&self) -> u32 {
        let pending = u32::from(self.handing_on_drained.load(Ordering::Relaxed));
        self.drains.load(Ordering::Relaxed).wrapping_add(pending)
    }

    /// Whether every datagram that arrived before [`UdpEndpoint::drains`]
    /// read `drains` has been read since: the count moved, or it did not
    /// because the loop has had nothing to read (it waits for readiness and
    /// the socket holds no datagram: one `FIONREAD`, only in that case).
    /// False while the loop is behind, and while it waits but a datagram
    /// is queued (it has not run yet, e.g. after a stall).
    pub(crate) fn drained_since(&self, drains: u32) -> bool {
        if self.drains.load(Ordering::Relaxed) != drains {
            return true;
        }
        if !self.parked.load(Ordering::Relaxed) {
            return false;
        }
        // A datagram of zero octets reads as none: it is never SIP.
        rustix::io::ioctl_fionread(&*self.socket).map_or(true, |queued| queued == 0)
    }

    /// Queues `data` for `to`; gives it back when the outbox is full or the
    /// endpoint is closing (the caller then sends it itself: the socket
    /// stays open after shutdown, while the send loop may have ended and
    /// would never write it out).
    pub(crate) fn queue(&self, data: Bytes, to: SocketAddr) -> Result<(), Bytes> {
        let mut outbox = self.lock_outbox();
        // Read under the lock: the send loop reads `closing` under it too
        // before its last `take`, so a datagram queued here while the flag
        // still reads false is taken by that last `take`.
        if outbox.queued.len() >= OUTBOX_LIMIT || self.closing.load(Ordering::Acquire) {
            return Err(data);
        }
        outbox.queued.push((data, to));
        let waiter = outbox.waiter.take();
        drop(outbox);
        if let Some(waker) = waiter {
            waker.wake();
        }
        Ok(())
    }

    /// Ready when datagrams are queued or the endpoint is closing (then
    /// with `true`); else the send loop's waker is left with the outbox
    /// for the next [`UdpEndpoint::queue`] (or [`UdpEndpoint::close`]).
    fn poll_queued(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut outbox = self.lock_outbox();
        let closing = self.closing.load(Ordering::Acquire);
        if !outbox.queued.is_empty() || closing {
            return Poll::Ready(closing);
        }
        match &outbox.waiter {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => outbox.waiter = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn take(&self, into: &mut Vec<(Bytes, SocketAddr)>) {
        std::mem::swap(&mut self.lock_outbox().queued, into);
    }
}

/// Writes out what is queued in `endpoint`'s outbox until shutdown, then
/// what is left.
pub(crate) async fn send_loop(endpoint: Arc<UdpEndpoint>, shared: Arc<Shared>) {
    let mut batch = Vec::new();
    loop {
        // Shutdown wakes the loop too (`UdpEndpoint::close`), so it waits
        // on one future: a `select!` with the shutdown watch polled the
        // watch as well on every wait (~120 instructions). The waker is
        // kept with the outbox, under the lock a queued datagram takes
        // anyway: a `Notify` cost ~320 instructions per wake-up (its
        // waiter list, a `notified` future polled twice).
        let down = std::future::poll_fn(|cx| endpoint.poll_queued(cx)).await;
        loop {
            endpoint.take(&mut batch);
            if batch.is_empty() {
                break;
            }
            send_batch(&endpoint.socket, &batch, &shared).await;
            batch.clear();
        }
        if down {
            return;
        }
    }
}

/// Sends `batch` in order, [`SEND_BATCH`] datagrams per system call,
/// waiting while the socket's send buffer is full. A datagram the kernel
/// refuses is counted, logged and skipped.
async fn send_batch(socket: &UdpSocket, batch: &[(Bytes, SocketAddr)], shared: &Shared) {
    let mut start = 0;
    while start < batch.len() {
        let chunk = &batch[start..batch.len().min(start + SEND_BATCH)];
        let sent = socket.try_io(Interest::WRITABLE, || sendmmsg(socket, chunk));
        match sent {
            Ok(n) if n > 0 => {
                shared.metrics.sent.fetch_add(n as u64, Ordering::Relaxed);
                shared
                    .metrics
                    .udp_datagrams_batched
                    .fetch_add(n as u64, Ordering::Relaxed);
                shared
                    .metrics
                    .udp_send_batches
                    .fetch_add(1, Ordering::Relaxed);
                start += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(e) = socket.writable().await {
                    tracing::warn!(error = %e, "udp socket failed");
                    return;
                }
            }
            // The first datagram of the chunk failed (an error is reported
            // only when nothing was sent).
            other => {
                shared.metrics.send_errors.fetch_add(1, Ordering::Relaxed);
                let error = other.err().map(|e| e.to_string()).unwrap_or_default();
                tracing::debug!(dest = %chunk[0].1, %error, "udp send failed");
                start += 1;
            }
        }
    }
}

/// Datagrams of a batch whose `sendmmsg(2)` headers are built on the stack;
/// a larger batch puts them on the heap (its allocations then pay for
/// themselves over that many datagrams).
const SEND_INLINE: usize = 8;

/// One `sendmmsg(2)` of `chunk` (one `sendto(2)` when it holds a single
/// datagram, the usual case below a few thousand calls per second); the
/// number of datagrams sent. Builds its message headers without allocating
/// up to [`SEND_INLINE`] datagrams: four vectors per call were ~18 heap
/// allocations per call at 100 calls/s.
fn sendmmsg(socket: &UdpSocket, chunk: &[(Bytes, SocketAddr)]) -> std::io::Result<usize> {
    if let [(data, to)] = chunk {
        return rustix::net::sendto(socket, data, SendFlags::empty(), to)
            .map(|_| 1)
            .map_err(std::io::Error::from);
    }
    let addrs: SmallVec<[SocketAddrAny; SEND_INLINE]> =
        chunk.iter().map(|(_, to)| (*to).into()).collect();
    let iovs: SmallVec<[[IoSlice<'_>; 1]; SEND_INLINE]> =
        chunk.iter().map(|(data, _)| [IoSlice::new(data)]).collect();
    let mut controls: SmallVec<[SendAncillaryBuffer<'_, '_, '_>; SEND_INLINE]> = chunk
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: SmallVec<[MMsgHdr<'_>; SEND_INLINE]> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
        .collect();
    rustix::net::sendmmsg(socket, &mut msgs, SendFlags::empty()).map_err(std::io::Error::from)
}

/// Binds a UDP socket on `addr` with a receive buffer of `recv_buffer`
/// octets (see [`crate::transport::UDP_RECEIVE_BUFFER`]).
pub(crate) fn bind(addr: SocketAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    set_recv_buffer(&socket, recv_buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Asks for a `bytes` receive buffer: beyond `net.core.rmem_max` when the
/// process may (CAP_NET_ADMIN: `SO_RCVBUFFORCE`), else as much as
/// `rmem_max` allows (`SO_RCVBUF`). Best effort: a smaller buffer only means
/// earlier drops under bursts, so the size obtained is logged, not enforced.
fn set_recv_buffer(socket: &Socket, bytes: usize) {
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(socket, bytes).is_err() {
        let _ = socket.set_recv_buffer_size(bytes);
    }
    match socket.recv_buffer_size() {
        // Linux reports twice the size asked for (bookkeeping overhead).
        Ok(got) if got / 2 < bytes => tracing::info!(
            asked = bytes,
            got = got / 2,
            "UDP receive buffer capped (raise net.core.rmem_max or grant CAP_NET_ADMIN)"
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "cannot read the UDP receive buffer size"),
    }
}

/// Most datagrams read with one `recvmmsg(2)`; after a full batch the
/// receive loop yields to other tasks before it reads more.
const RECV_BATCH: usize = 32;

/// Fewest slots one `recvmmsg(2)` offers (see [`RecvSlots::recv`]).
const RECV_MIN: usize = 4;

/// One datagram that [`RecvSlots::recv`] placed in a slot.
#[derive(Debug, Clone, Copy)]
struct Received {
    /// Which slot holds it.
    slot: usize,
    /// Octets placed in the slot (the slot's size when `truncated`).
    len: usize,
    /// Who sent it.
    peer: SocketAddr,
    /// The datagram did not fit the slot and was cut (`MSG_TRUNC`).
    truncated: bool,
}

/// The receive buffer of one UDP socket: [`RECV_BATCH`] slots of `slot`
/// octets, filled by one `recvmmsg(2)` per batch.
struct RecvSlots {
    buf: Vec<u8>,
    slot: usize,
    got: Vec<Received>,
    /// The socket is IPv6 (which `recvmmsg` headers to use, see
    /// [`RECV_HEADERS`]).
    ipv6: bool,
    /// Slots the next `recvmmsg` offers, [`RECV_MIN`] to [`RECV_BATCH`].
    offer: usize,
    /// The last `recvmmsg` filled every slot it offered.
    filled: bool,
}

impl RecvSlots {
    /// [`RECV_BATCH`] slots of `slot` octets (at least one), for a socket
    /// bound to an address of `local`'s family.
    fn new(slot: usize, local: SocketAddr) -> Self {
        let slot = slot.max(1);
        RecvSlots {
            buf: vec![0; slot.saturating_mul(RECV_BATCH)],
            slot,
            got: Vec::with_capacity(RECV_BATCH),
            ipv6: local.is_ipv6(),
            offer: RECV_MIN,
            filled: false,
        }
    }

    /// Whether the last [`RecvSlots::recv`] filled every slot it offered,
    /// so more datagrams may be queued; when it did not, the kernel had no
    /// more (the socket is drained).
    fn filled(&self) -> bool {
        self.filled
    }

    /// What the last [`RecvSlots::recv`] received, in arrival order.
    fn received(&self) -> &[Received] {
        &self.got
    }

    /// The octets of `r` (at most the slot's size).
    fn data(&self, r: &Received) -> &[u8] {
        let start = r.slot * self.slot;
        &self.buf[start..start + r.len.min(self.slot)]
    }

    /// One non-blocking `recvmmsg(2)`: replaces what the slots held with up
    /// to [`RECV_BATCH`] datagrams the socket had queued, in arrival order;
    /// returns how many the kernel handed over (a datagram without an IP
    /// source would be among them but not kept). `WouldBlock` when none was
    /// queued.
    ///
    /// It offers the kernel only as many slots as recent reads needed:
    /// [`RECV_MIN`] at first, twice as many after a read that filled them
    /// all (up to [`RECV_BATCH`]), half as many after one that filled
    /// less than a quarter. Each slot offered costs a header and an I/O
    /// vector written per call whether the kernel fills it or not; at a
    /// light load a read finds one or two datagrams, and offering all
    /// [`RECV_BATCH`] slots every time cost ~230 instructions more per read
    /// (callgrind, `scripts/load -B -I 1000 -r 100`).
    fn recv(&mut self, socket: &impl AsRawFd) -> std::io::Result<usize> {
        let ipv6 = self.ipv6;
        self.got.clear();
        self.filled = false;
        let slot = self.slot;
        let offer = self.offer;
        let buf = &mut self.buf;
        let got = &mut self.got;
        let count = RECV_HEADERS.with_borrow_mut(|headers| {
            let headers = headers[usize::from(ipv6)]
                .get_or_insert_with(|| MultiHeaders::preallocate(RECV_BATCH, None));
            let mut iovs: [[IoSliceMut<'_>; 1]; RECV_BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(&mut [])]);
            for (iov, chunk) in iovs.iter_mut().zip(buf.chunks_mut(slot)).take(offer) {
                *iov = [IoSliceMut::new(chunk)];
            }
            let results = recvmmsg(
                socket.as_raw_fd(),
                headers,
                iovs[..offer].iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(std::io::Error::from)?;
            let mut count = 0;
            for (slot, msg) in results.enumerate() {
                count += 1;
                // A UDP socket's sources are IP addresses; anything else
                // could not be answered.
                let Some(peer) = msg.address.as_ref().and_then(ip_source) else {
                    continue;
                };
                got.push(Received {
                    slot,
                    len: msg.bytes,
                    peer,
                    truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
                });
            }
            Ok::<_, std::io::Error>(count)
        })?;
        self.filled = count >= offer;
        self.offer = if self.filled {
            offer.saturating_mul(2).min(RECV_BATCH)
        } else if count < offer / 4 {
            (offer / 2).max(RECV_MIN)
        } else {
            offer
        };
        Ok(count)
    }
}

thread_local! {
    /// The `recvmmsg(2)` headers of this thread's receive loops, one set
    /// per address family (index: IPv6), made on first use and kept: making
    /// them for every call cost two allocations and writing 32 headers,
    /// about 900 instructions per `recvmmsg`. They live here because the
    /// headers hold raw pointers (not `Send`), so a receive loop could not
    /// keep them across an await. One set per family because the kernel
    /// overwrites each header's address length with the length of the
    /// address it wrote, which nix does not reset: a socket of one family
    /// (IPv6 sockets are v6-only, see [`bind`]) only ever gets sources of
    /// that family's length, so a header set of one family always has room
    /// for the next source. A call borrows its set only for the system call
    /// and the copy of the results, so the loops of one thread never
    /// contend.
    static RECV_HEADERS: RefCell<[Option<MultiHeaders<SockaddrStorage>>; 2]> =
        const { RefCell::new([None, None]) };
}

/// The IPv4 or IPv6 address in `addr`.
fn ip_source(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

/// Receives datagrams until shutdown. Each datagram is at most
/// `max_message_size` bytes: a larger one is counted as oversize and
/// answered 513 when its headers can be read, else dropped.
///
/// One `recvmmsg(2)` reads up to [`RECV_BATCH`] datagrams into slots of
/// `max_message_size + 1` octets (a datagram that fills a slot, or that
/// the kernel marks `MSG_TRUNC`, is too large). Each datagram is then
/// copied out of its slot into its own allocation of its exact size, and
/// parsed zero-copy from there: parsed values are slices that may live as
/// long as a call, and a slice of a shared receive buffer would keep the
/// whole buffer alive.
///
/// The loop waits for readiness only once the socket is drained: a batch
/// that came back short of the slots offered means the kernel had no more
/// queued, so the readiness is cleared then and there (a datagram that
/// arrives meanwhile raises a new edge) instead of by one more system call
/// that finds nothing. After a full batch the loop lets the tasks that are
/// ready run ([`YieldToReady`]), so the layers above can work off what it
/// handed them before it reads more.
///
/// Each time it finds the socket drained, once the datagrams read before
/// are handed on, the loop bumps the socket's [`UdpEndpoint::drains`]:
/// the transaction layer holds back a retransmission while the socket has
/// not been drained since the message was last sent, as the answer may be
/// among the datagrams still queued.
///
/// (Reading again directly after every batch that found datagrams, instead
/// of asking epoll, was tried: at 5,500 calls/s under `scripts/load -Q 0.5`
/// it made twice the `recvmmsg` calls, most of them finding nothing, and
/// more `sendmmsg` calls of smaller batches, for the same CPU per call.)
pub(crate) async fn receive_loop(
    endpoint: Arc<UdpEndpoint>,
    local: SocketAddr,
    shared: Arc<Shared>,
) {
    let sock = &endpoint.socket;
    let max = shared.config.limits.max_message_size;
    // Shutdown (`Transports::shutdown`) has the loop end between batches
    // (`UdpEndpoint::stop_receiving`): a batch is handed on or answered
    // whole, also when a stateless answer in it waits for room in the
    // outbox (`on_received`), and the send loop, closed after this one
    // ends, writes its answers. The stop is a flag read once per batch and
    // a waker kept once, not a `select!` with the shutdown watch on every
    // wait (~120 instructions, ~7 waits per call at 100 calls/s). Datagrams
    // still in the socket's receive buffer are dropped.
    // One octet more than the limit: a datagram that fills a slot is too large.
    let mut slots = RecvSlots::new(max.saturating_add(1), local);
    loop {
        let read = sock.try_io(Interest::READABLE, || {
            slots.recv(&**sock)?;
            if !slots.filled() {
                // Drained: let tokio clear the readiness.
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        let drained = match read {
            Ok(()) => false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some
                // systems; they say nothing about the next datagram.
                tracing::debug!(%local, error = %e, "udp receive error");
                false
            }
        };
        if !slots.received().is_empty() {
            shared
                .metrics
                .udp_recv_batches
                .fetch_add(1, Ordering::Relaxed);
            // Once a batch (the transports keep it weakly).
            let handler = shared.udp_handler.get().and_then(Weak::upgrade);
            if drained {
                endpoint.handing_on_drained.store(true, Ordering::Relaxed);
            }
            for r in slots.received() {
                on_received(&slots, r, local, &shared, handler.as_deref()).await;
            }
        }
        if drained {
            // Everything that arrived before the read is handed on: the
            // transaction layer's retransmission timers go by this (see
            // `UdpEndpoint::drains`).
            endpoint.drains.fetch_add(1, Ordering::Relaxed);
            endpoint.handing_on_drained.store(false, Ordering::Relaxed);
            endpoint.parked.store(true, Ordering::Relaxed);
            // The socket's one receive-readiness waker slot (this loop is
            // its only reader), not a `readable()` future: that one joins
            // and leaves the socket's waiter list on every wait.
            match std::future::poll_fn(|cx| endpoint.poll_receive(cx)).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(%local, error = %e, "udp socket failed");
                    break;
                }
            }
            endpoint.parked.store(false, Ordering::Relaxed);
        } else {
            YieldToReady::default().await;
            if endpoint.receiving_stopped() {
                break;
            }
        }
    }
}

/// Lets the other tasks that are ready run once before the task goes on.
/// Unlike [`tokio::task::yield_now`], which has the runtime poll its I/O
/// driver (an `epoll_wait`) before the task runs again, this wakes the task
/// at once, so it runs again after the tasks already queued: the runtime
/// still polls the driver every few dozen tasks, and whenever it runs out
/// of tasks.
#[derive(Default)]
struct YieldToReady {
    yielded: bool,
}

impl std::future::Future for YieldToReady {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.yielded {
            return std::task::Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Handles one received datagram: copied out of its slot, parsed and
/// handed on, or answered (400, 503, 513) statelessly.
async fn on_received(
    slots: &RecvSlots,
    r: &Received,
    local: SocketAddr,
    shared: &Arc<Shared>,
    handler: Option<&dyn InboundHandler>,
) {
    let max = shared.config.limits.max_message_size;
    let data = slots.data(r);
    let datagram = crate::sip::shared_copy(&data[..data.len().min(max)]);
    shared
        .metrics
        .udp_datagrams_received
        .fetch_add(1, Ordering::Relaxed);
    let source = Source {
        protocol: Protocol::Udp,
        peer: r.peer,
        local,
        conn: None,
    };
    let reply = if r.truncated || r.len > max {
        shared.metrics.oversize.fetch_add(1, Ordering::Relaxed);
        oversize_reply(datagram, shared)
    } else {
        on_datagram(datagram, source, shared, handler)
    };
    if let Some(reply) = reply {
        let _ =
            super::routing::send_response_bytes(shared, reply.to_bytes(), &reply, &source).await;
    }
}

/// Parses one datagram and hands it on; returns a stateless answer to send
/// (400 for a malformed request, 503 on overload).
fn on_datagram(
    datagram: bytes::Bytes,
    source: Source,
    shared: &Shared,
    handler: Option<&dyn InboundHandler>,
) -> Option<Response> {
    // CRLF keep-alives (RFC 5626 §3.5.1 style, sent by many phones over UDP
    // too) are not malformed messages: ignore them without counting.
    if is_keepalive(&datagram) {
        shared.metrics.keepalives.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    match sip::parse_datagram(datagram, &shared.config.limits) {
        Ok(message) => deliver(shared, handler, message, source),
        Err(err) => {
            let reply = reply_to_parse_error(&err);
            if reply.is_some() {
                shared
                    .metrics
                    .malformed_answered
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                shared
                    .metrics
                    .malformed_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(peer = %source.peer, error = %err, answered = reply.is_some(), "malformed datagram");
            reply
        }
    }
}

/// A datagram of nothing but CR/LF (a keep-alive).
pub(crate) fn is_keepalive(data: &[u8]) -> bool {
    !data.is_empty() && data.iter().all(|&b| b == b'\r' || b == b'\n')
}

/// 513 Message Too Large (RFC 3261 §21.5.14) from the first `max` bytes, if
/// they hold a readable request header section.
fn oversize_reply(head: bytes::Bytes, shared: &Shared) -> Option<Response> {
    let headers = match sip::parse_datagram(head, &shared.config.limits) {
        Ok(Message::Request(req)) => req.headers,
        Ok(Message::Response(_)) => return None,
        Err(err) => err.reply_context()?.clone(),
    };
    let reason = format!(
        "Message Too Large (datagram exceeds the limit of {} octets)",
        shared.config.limits.max_message_size
    );
    stateless_reply(&headers, StatusCode::MESSAGE_TOO_LARGE, reason)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::sip::Limits;
    use crate::transport::{
        Destination, Inbound, ListenAddr, TransportConfig, Transports, UDP_RECEIVE_BUFFER,
    };

    fn options(call_id: &str) -> String {
        format!(
            "OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP client.example.com;branch=z9hG4bK{call_id}\r\n\
             From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// Binds `addr` for sending with the standard library, or `None` when
    /// the box has no such address (IPv6 off).
    fn std_socket(addr: &str) -> Option<std::net::UdpSocket> {
        std::net::UdpSocket::bind(addr).ok()
    }

    async fn transports(
        listen: &str,
        config: TransportConfig,
    ) -> (Transports, mpsc::Receiver<Inbound>) {
        let listen: ListenAddr = listen.parse().unwrap();
        Transports::bind(&[listen], config).await.unwrap()
    }

    /// Reads until `slots` says the socket is drained; the datagrams of
    /// each read in order, and how many each read returned.
    fn read_all(
        slots: &mut RecvSlots,
        sock: &tokio::net::UdpSocket,
    ) -> (Vec<Received>, Vec<Vec<u8>>, Vec<usize>) {
        let (mut got, mut data, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            counts.push(slots.recv(sock).unwrap());
            for r in slots.received() {
                got.push(*r);
                data.push(slots.data(r).to_vec());
            }
            if !slots.filled() {
                return (got, data, counts);
            }
        }
    }

    #[tokio::test]
    async fn one_recvmmsg_reads_datagrams_of_several_sources_in_order() {
        let sock = bind("127.0.0.1:0".parse().unwrap(), UDP_RECEIVE_BUFFER).unwrap();
        let server = sock.local_addr().unwrap();
        let clients: Vec<_> = (0..3).map(|_| std_socket("127.0.0.1:0").unwrap()).collect();
        // Loopback queues a datagram at the receiver before send_to returns.
        for i in 0..10 {
            for (c, client) in clients.iter().enumerate() {
                client
                    .send_to(format!("c{c} d{i}").as_bytes(), server)
                    .unwrap();
            }
        }
        let mut slots = RecvSlots::new(100, sock.local_addr().unwrap());
        // The slots offered grow from RECV_MIN while reads fill them all.
        let (received, data, counts) = read_all(&mut slots, &sock);
        assert_eq!(counts, [4, 8, 16, 2]);
        assert!(received.iter().all(|r| !r.truncated));
        let got: Vec<(SocketAddr, String)> = received
            .iter()
            .zip(data)
            .map(|(r, d)| (r.peer, String::from_utf8(d).unwrap()))
            .collect();
        assert_eq!(got.len(), 30);
        for (n, (peer, text)) in got.iter().enumerate() {
            let (i, c) = (n / 3, n % 3);
            assert_eq!(*peer, clients[c].local_addr().unwrap());
            assert_eq!(*text, format!("c{c} d{i}"));
        }
        // The socket is drained.
        let err = slots.recv(&sock).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        assert!(slots.received().is_empty());
    }

    #[tokio::test]
    async fn a_batch_holds_at_most_recv_batch_datagrams() {
        let sock = bind("127.0.0.1:0".parse().unwrap(), UDP_RECEIVE_BUFFER).unwrap();
        let client = std_socket("127.0.0.1:0").unwrap();
        let total = RECV_BATCH + 5;
        for i in 0..total {
            client
                .send_to(format!("{i}").as_bytes(), sock.local_addr().unwrap())
                .unwrap();
        }
        let mut slots = RecvSlots::new(16, sock.local_addr().unwrap());
        // Offers 4, 8, 16, 32 (never more): 4 + 8 + 16 = 28, then 9 of 32.
        let (_, data, counts) = read_all(&mut slots, &sock);
        assert_eq!(counts, [4, 8, 16, 9]);
        assert!(counts.iter().all(|&n| n <= RECV_BATCH));
        let want: Vec<_> = (0..total).map(|i| i.to_string().into_bytes()).collect();
        assert_eq!(data, want);
        // A backlog of more than RECV_BATCH at full size: 32 at most.
        for i in 0..total {
            client
                .send_to(format!("{i}").as_bytes(), sock.local_addr().unwrap())
                .unwrap();
        }
        let (_, data, counts) = read_all(&mut slots, &sock);
        assert_eq!(counts, [RECV_BATCH, 5]);
        assert_eq!(data, want);
        // Light traffic: the offer shrinks back to RECV_MIN (16 after the
        // read of 5 of 32, then 8, then 4 with one datagram per read), and
        // a read of 4 fills it.
        for n in 0..4 {
            client.send_to(b"x", sock.local_addr().unwrap()).unwrap();
            let (_, _, counts) = read_all(&mut slots, &sock);
            assert_eq!(counts, [1], "read {n}");
        }
        for _ in 0..RECV_MIN {
            client.send_to(b"y", sock.local_addr().unwrap()).unwrap();
        }
        assert_eq!(slots.recv(&sock).unwrap(), RECV_MIN);
        assert!(slots.filled());
    }

    #[tokio::test]
    async fn ipv6_sources_are_kept_across_batches() {
        let Some(client) = std_socket("[::1]:0") else {
            eprintln!("no IPv6 loopback: skipped");
            return;
        };
        let sock = bind("[::1]:0".parse().unwrap(), UDP_RECEIVE_BUFFER).unwrap();
        let mut slots = RecvSlots::new(64, sock.local_addr().unwrap());
        for round in 0..3 {
            for i in 0..4 {
                client
                    .send_to(
                        format!("r{round} {i}").as_bytes(),
                        sock.local_addr().unwrap(),
                    )
                    .unwrap();
            }
            assert_eq!(slots.recv(&sock).unwrap(), 4);
            assert_eq!(slots.received().len(), 4);
            for (i, r) in slots.received().iter().enumerate() {
                assert_eq!(r.peer, client.local_addr().unwrap());
                assert!(r.peer.is_ipv6());
                assert_eq!(slots.data(r), format!("r{round} {i}").as_bytes());
            }
        }
    }

    #[tokio::test]
    async fn yield_to_ready_runs_the_tasks_already_queued_first() {
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let task = tokio::spawn(async move { flag.store(true, Ordering::Relaxed) });
        // The current-thread test runtime has not polled the task yet.
        assert!(!ran.load(Ordering::Relaxed));
        YieldToReady::default().await;
        assert!(ran.load(Ordering::Relaxed));
        task.await.unwrap();
    }

    /// The headers are kept per thread and reused: sockets of both families
    /// read in turn on one thread each get their sources whole (an IPv4
    /// read shortens a header's address length to 16 octets, too short
    /// for the IPv6 source of a header set shared across families).
    #[test]
    fn headers_reused_across_families_keep_each_source_whole() {
        let Some(client6) = std_socket("[::1]:0") else {
            eprintln!("no IPv6 loopback: skipped");
            return;
        };
        let client4 = std_socket("127.0.0.1:0").unwrap();
        let std4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let std6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let mut slots4 = RecvSlots::new(64, std4.local_addr().unwrap());
        let mut slots6 = RecvSlots::new(64, std6.local_addr().unwrap());
        for round in 0..3 {
            client4
                .send_to(format!("v4 {round}").as_bytes(), std4.local_addr().unwrap())
                .unwrap();
            client6
                .send_to(format!("v6 {round}").as_bytes(), std6.local_addr().unwrap())
                .unwrap();
            assert_eq!(slots4.recv(&std4).unwrap(), 1);
            assert_eq!(slots6.recv(&std6).unwrap(), 1);
            let r4 = slots4.received()[0];
            let r6 = slots6.received()[0];
            assert_eq!(r4.peer, client4.local_addr().unwrap());
            assert_eq!(r6.peer, client6.local_addr().unwrap());
            assert_eq!(slots4.data(&r4), format!("v4 {round}").as_bytes());
            assert_eq!(slots6.data(&r6), format!("v6 {round}").as_bytes());
        }
    }

    #[tokio::test]
    async fn a_datagram_larger_than_its_slot_is_marked_truncated() {
        let sock = bind("127.0.0.1:0".parse().unwrap(), UDP_RECEIVE_BUFFER).unwrap();
        let client = std_socket("127.0.0.1:0").unwrap();
        let server = sock.local_addr().unwrap();
        client.send_to(b"small", server).unwrap();
        client.send_to(&[b'x'; 300], server).unwrap();
        client.send_to(&[b'y'; 10], server).unwrap();
        let mut slots = RecvSlots::new(10, sock.local_addr().unwrap());
        assert_eq!(slots.recv(&sock).unwrap(), 3);
        let got: Vec<(usize, bool)> = slots
            .received()
            .iter()
            .map(|r| (r.len, r.truncated))
            .collect();
        assert_eq!(got, [(5, false), (10, true), (10, false)]);
    }

    #[tokio::test]
    async fn an_oversize_datagram_is_counted_and_dropped_and_its_batch_goes_on() {
        let config = TransportConfig {
            limits: Limits {
                max_message_size: 600,
                ..Limits::default()
            },
            ..TransportConfig::default()
        };
        let (t, mut rx) = transports("udp:127.0.0.1:0", config).await;
        let server = t.local_addrs()[0].addr;
        let client = std_socket("127.0.0.1:0").unwrap();
        // Before the receive loop runs: all three land in one batch. The
        // middle one is 601 octets of no SIP at all: nothing to answer.
        client
            .send_to(options("before").as_bytes(), server)
            .unwrap();
        client.send_to(&[b'z'; 601], server).unwrap();
        client.send_to(options("after").as_bytes(), server).unwrap();
        for want in ["before", "after"] {
            let inbound = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            let crate::sip::Message::Request(req) = inbound.message else {
                panic!("not a request")
            };
            assert_eq!(req.call_id().unwrap().to_string(), want);
        }
        let m = t.metrics();
        assert_eq!(m.oversize.load(Ordering::Relaxed), 1);
        assert_eq!(m.udp_datagrams_received.load(Ordering::Relaxed), 3);
        assert_eq!(m.messages_delivered.load(Ordering::Relaxed), 2);
        assert_eq!(m.udp_recv_batches.load(Ordering::Relaxed), 1);
        assert_eq!(m.sent.load(Ordering::Relaxed), 0, "nothing answered");
        t.shutdown().await;
    }

    #[tokio::test]
    async fn a_burst_of_5000_datagrams_arrives_whole_in_batches() {
        const BURST: usize = 5000;
        let config = TransportConfig {
            inbound_queue: BURST,
            ..TransportConfig::default()
        };
        let (t, mut rx) = transports("udp:127.0.0.1:0", config).await;
        let server = t.local_addrs()[0].addr;
        let clients: Vec<_> = (0..4).map(|_| std_socket("127.0.0.1:0").unwrap()).collect();
        // Sent without yielding: all of it is queued in the socket before
        // the receive loop reads.
        for i in 0..BURST {
            clients[i % clients.len()]
                .send_to(options(&format!("b{i}")).as_bytes(), server)
                .unwrap();
        }
        let mut next = vec![0usize; clients.len()];
        for _ in 0..BURST {
            let inbound = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("datagram lost")
                .unwrap();
            let c = clients
                .iter()
                .position(|s| s.local_addr().unwrap() == inbound.source.peer)
                .unwrap();
            let crate::sip::Message::Request(req) = inbound.message else {
                panic!("not a request")
            };
            // Each source's datagrams in the order sent.
            let i = next[c] * clients.len() + c;
            assert_eq!(req.call_id().unwrap().to_string(), format!("b{i}"));
            next[c] += 1;
        }
        let m = t.metrics();
        assert_eq!(
            m.udp_datagrams_received.load(Ordering::Relaxed),
            BURST as u64
        );
        assert_eq!(m.messages_delivered.load(Ordering::Relaxed), BURST as u64);
        let batches = m.udp_recv_batches.load(Ordering::Relaxed) as usize;
        // 4 + 8 + 16 = 28 while the offer grows, then full batches of 32.
        assert_eq!(
            batches,
            3 + (BURST - 28).div_ceil(RECV_BATCH),
            "{batches} batches"
        );
        t.shutdown().await;
    }

    /// The drain count moves only once the loop has read everything that
    /// was queued: a backlog of 100 datagrams read in batches of 4, 8, 16,
    /// 32, 32 and 8 is one drain, at the end.
    #[tokio::test]
    async fn the_drain_count_moves_once_a_backlog_is_read() {
        const BACKLOG: usize = 100;
        let (t, mut rx) = transports("udp:127.0.0.1:0", TransportConfig::default()).await;
        let server = t.local_addrs()[0].addr;
        let client = std_socket("127.0.0.1:0").unwrap();
        let dest = Destination::udp(client.local_addr().unwrap());
        assert_eq!(t.receive_drains(None, &Destination::tcp(dest.addr)), None);
        assert_eq!(t.receive_drains(Some(dest.addr), &dest), None, "not ours");
        // Warm up: one datagram read, the loop waits for the next.
        client.send_to(options("warm").as_bytes(), server).unwrap();
        rx.recv().await.unwrap();
        let warm = t.receive_drains(None, &dest).unwrap();
        assert_eq!(t.receive_drains(Some(server), &dest), Some(warm));
        // Queued before the loop runs again.
        for i in 0..BACKLOG {
            client
                .send_to(options(&format!("q{i}")).as_bytes(), server)
                .unwrap();
        }
        assert_eq!(t.receive_drains(None, &dest), Some(warm));
        for _ in 0..BACKLOG {
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("datagram lost")
                .unwrap();
        }
        // The loop bumps the count right after handing on its last batch.
        tokio::time::timeout(Duration::from_secs(10), async {
            while t.receive_drains(None, &dest) == Some(warm) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("drained");
        // Five full batches, then one short: one drain.
        let drained = warm.wrapping_add(1);
        assert_eq!(t.receive_drains(None, &dest), Some(drained));
        assert!(t.drained_since(None, &dest, warm));
        let batches = t.metrics().udp_recv_batches.load(Ordering::Relaxed);
        assert_eq!(batches, 1 + 6);
        t.shutdown().await;
    }

    /// An idle socket counts as drained without its count moving; one
    /// with a datagram its loop has not read yet does not.
    #[tokio::test]
    async fn an_idle_socket_is_drained_and_one_with_a_datagram_waiting_is_not() {
        let (t, mut rx) = transports("udp:127.0.0.1:0", TransportConfig::default()).await;
        let server = t.local_addrs()[0].addr;
        let client = std_socket("127.0.0.1:0").unwrap();
        let dest = Destination::udp(client.local_addr().unwrap());
        client.send_to(options("first").as_bytes(), server).unwrap();
        rx.recv().await.unwrap();
        // Let the loop finish its turn and wait for readiness.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let idle = t.receive_drains(None, &dest).unwrap();
        assert!(t.drained_since(None, &dest, idle), "idle: nothing to read");
        // Queued; the loop has not run since.
        client
            .send_to(options("second").as_bytes(), server)
            .unwrap();
        assert_eq!(t.receive_drains(None, &dest), Some(idle));
        assert!(!t.drained_since(None, &dest, idle), "a datagram waits");
        rx.recv().await.unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_ne!(t.receive_drains(None, &dest), Some(idle));
        assert!(t.drained_since(None, &dest, idle));
        // Over TCP nothing is ever held back.
        assert!(t.drained_since(None, &Destination::tcp(dest.addr), idle));
        t.shutdown().await;
    }

    /// The receive buffer size of `sock` (what the kernel reports is
    /// twice the size asked for: its bookkeeping overhead).
    fn recv_buffer_of(sock: &UdpSocket) -> usize {
        socket2::SockRef::from(sock).recv_buffer_size().unwrap() / 2
    }

    fn rmem_max() -> usize {
        std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn receive_buffer_is_the_size_asked_for_or_as_large_as_allowed() {
        for asked in [UDP_RECEIVE_BUFFER, 256 << 10, 12 << 20] {
            let sock = bind("127.0.0.1:0".parse().unwrap(), asked).unwrap();
            let got = recv_buffer_of(&sock);
            // Exactly that when privileged (forced past rmem_max), else
            // capped by rmem_max.
            assert!(
                got == asked || (got < asked && got >= rmem_max().min(asked)),
                "asked {asked}, got {got}, rmem_max {}",
                rmem_max()
            );
        }
    }

    #[tokio::test]
    async fn the_configured_receive_buffer_reaches_the_socket() {
        // A size below any rmem_max, so that it is exact with or without
        // privileges: the configured value, not the default, was asked for.
        let asked = 128 << 10;
        let config = TransportConfig {
            udp_receive_buffer: asked,
            ..TransportConfig::default()
        };
        let (t, _rx) = transports("udp:127.0.0.1:0", config).await;
        let endpoint = &t.shared.udp[0].1;
        assert_eq!(recv_buffer_of(&endpoint.socket), asked);
        t.shutdown().await;
    }
}
