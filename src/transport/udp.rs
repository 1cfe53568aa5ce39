//! UDP: binding (IPv6 sockets are v6-only so `0.0.0.0` and `[::]` can both
//! be bound on one port), one receive loop per socket, and one sender per
//! socket that writes the datagrams queued during a turn of the runtime
//! with one `sendmmsg` call.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use super::routing::{deliver, reply_to_parse_error, stateless_reply};
use super::{Protocol, Shared, Source};
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
    outbox: Mutex<Vec<(Bytes, SocketAddr)>>,
    wake: Notify,
}

impl UdpEndpoint {
    pub(crate) fn new(socket: UdpSocket) -> Arc<Self> {
        Arc::new(Self {
            socket: Arc::new(socket),
            outbox: Mutex::new(Vec::new()),
            wake: Notify::new(),
        })
    }

    /// Queues `data` for `to`; gives it back when the outbox is full (the
    /// caller then sends it itself).
    pub(crate) fn queue(&self, data: Bytes, to: SocketAddr) -> Result<(), Bytes> {
        let mut outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        if outbox.len() >= OUTBOX_LIMIT {
            return Err(data);
        }
        let was_empty = outbox.is_empty();
        outbox.push((data, to));
        drop(outbox);
        if was_empty {
            self.wake.notify_one();
        }
        Ok(())
    }

    fn take(&self, into: &mut Vec<(Bytes, SocketAddr)>) {
        let mut outbox = self.outbox.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *outbox, into);
    }
}

/// Writes out what is queued in `endpoint`'s outbox until shutdown, then
/// what is left.
pub(crate) async fn send_loop(endpoint: Arc<UdpEndpoint>, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut batch = Vec::new();
    loop {
        let down = tokio::select! {
            () = endpoint.wake.notified() => false,
            _ = shutdown.wait_for(|down| *down) => true,
        };
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

/// One `sendmmsg(2)` of `chunk`; the number of datagrams sent.
fn sendmmsg(socket: &UdpSocket, chunk: &[(Bytes, SocketAddr)]) -> std::io::Result<usize> {
    let addrs: Vec<SocketAddrAny> = chunk.iter().map(|(_, to)| (*to).into()).collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(data, _)| [IoSlice::new(data)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = chunk
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
        .collect();
    rustix::net::sendmmsg(socket, &mut msgs, SendFlags::empty()).map_err(std::io::Error::from)
}

/// Datagrams read in one go before the loop yields to other tasks.
const RECV_BATCH: usize = 32;

/// Kernel receive buffer we ask for, so bursts survive while the loop is
/// busy or descheduled: at 10,000 calls/s about 70,000 datagrams/s arrive,
/// and a 100 ms stall (one SCHED_RR time slice of another process) needs
/// ~16 MiB of buffer (the kernel counts about 2.3 KiB per queued datagram).
const RECV_BUFFER_BYTES: usize = 32 << 20;

pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    set_recv_buffer(&socket, RECV_BUFFER_BYTES);
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

/// Receives datagrams until shutdown. Each datagram is at most
/// `max_message_size` bytes: a larger one is counted as oversize and
/// answered 513 when its headers can be read, else dropped.
///
/// Each datagram is copied out of the receive buffer into its own
/// allocation of its exact size, and parsed zero-copy from there: parsed
/// values are slices that may live as long as a call, and a slice of a
/// shared receive buffer would keep the whole buffer alive.
///
/// The loop reads what the socket holds without waiting (up to
/// [`RECV_BATCH`] datagrams), and waits for readiness only when it is
/// empty; after a full batch it yields, so the layers above can work off
/// what it handed them before it reads more.
pub(crate) async fn receive_loop(sock: Arc<UdpSocket>, local: SocketAddr, shared: Arc<Shared>) {
    let max = shared.config.limits.max_message_size;
    let mut shutdown = shared.shutdown.clone();
    // One octet more than the limit: a datagram that fills it is too large.
    let mut buf = vec![0u8; max.saturating_add(1)];
    let mut batch = 0;
    loop {
        if batch >= RECV_BATCH {
            batch = 0;
            tokio::task::yield_now().await;
            if *shutdown.borrow() {
                break;
            }
        }
        let received = match sock.try_recv_from(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                batch = 0;
                tokio::select! {
                    r = sock.readable() => {
                        if let Err(e) = r {
                            tracing::warn!(%local, error = %e, "udp socket failed");
                            break;
                        }
                        continue;
                    }
                    _ = shutdown.wait_for(|down| *down) => break,
                }
            }
            r => r,
        };
        batch += 1;
        let (len, peer) = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some
                // systems; they say nothing about the next datagram.
                tracing::debug!(%local, error = %e, "udp receive error");
                continue;
            }
        };
        let datagram = Bytes::copy_from_slice(&buf[..len.min(max)]);
        shared
            .metrics
            .udp_datagrams_received
            .fetch_add(1, Ordering::Relaxed);
        let source = Source {
            protocol: Protocol::Udp,
            peer,
            local,
            conn: None,
        };
        let reply = if len > max {
            shared.metrics.oversize.fetch_add(1, Ordering::Relaxed);
            oversize_reply(datagram, &shared)
        } else {
            on_datagram(datagram, source, &shared)
        };
        if let Some(reply) = reply {
            let _ = super::routing::send_response_bytes(&shared, reply.to_bytes(), &reply, &source)
                .await;
        }
    }
}

/// Parses one datagram and hands it on; returns a stateless answer to send
/// (400 for a malformed request, 503 on overload).
fn on_datagram(datagram: bytes::Bytes, source: Source, shared: &Shared) -> Option<Response> {
    // CRLF keep-alives (RFC 5626 §3.5.1 style, sent by many phones over UDP
    // too) are not malformed messages: ignore them without counting.
    if is_keepalive(&datagram) {
        shared.metrics.keepalives.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    match sip::parse_datagram(datagram, &shared.config.limits) {
        Ok(message) => deliver(shared, message, source),
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
    use super::*;

    #[tokio::test]
    async fn receive_buffer_is_as_large_as_allowed() {
        let sock = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let got = socket2::SockRef::from(&sock).recv_buffer_size().unwrap() / 2;
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Forced past rmem_max when privileged, else capped by it.
        assert!(
            got >= RECV_BUFFER_BYTES || got >= rmem_max,
            "got {got}, rmem_max {rmem_max}"
        );
    }
}
