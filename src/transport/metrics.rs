//! Transport counters: plain atomics, read by the admin `/metrics` endpoint and
//! logged at shutdown.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what the transport layer received, answered, dropped and sent.
///
/// Each counter only goes up; `Relaxed` ordering is enough because nothing
/// synchronises on them.
#[derive(Debug, Default)]
pub struct TransportMetrics {
    /// UDP datagrams received (any content).
    pub udp_datagrams_received: AtomicU64,
    /// `recvmmsg` calls that returned UDP datagrams (see
    /// `udp_datagrams_received` for how many they carried).
    pub udp_recv_batches: AtomicU64,
    /// SIP messages framed on TCP connections.
    pub tcp_messages_received: AtomicU64,
    /// Messages parsed and handed to the layer above.
    pub messages_delivered: AtomicU64,
    /// Malformed requests answered with a 4xx/5xx built from the recovered headers.
    pub malformed_answered: AtomicU64,
    /// Input that could not be answered (garbage, malformed responses) and was dropped.
    pub malformed_dropped: AtomicU64,
    /// CRLF keep-alives received (RFC 5626 §4.4.1); TCP pings are answered.
    pub keepalives: AtomicU64,
    /// Messages over the size limit (datagrams truncated, TCP buffers overflowing).
    pub oversize: AtomicU64,
    /// Requests answered 503 because the inbound queue was full.
    pub overload_rejected: AtomicU64,
    /// Retransmissions of INVITEs answered 503 for overload, answered 503
    /// again (not counted in `overload_rejected`: one per refused INVITE).
    pub overload_rejected_again: AtomicU64,
    /// Messages dropped because the inbound queue was full (responses, ACKs).
    pub overload_dropped: AtomicU64,
    /// TCP connections accepted.
    pub tcp_accepted: AtomicU64,
    /// TCP connections opened by us.
    pub tcp_connected: AtomicU64,
    /// TCP connections refused because the table was full.
    pub tcp_rejected: AtomicU64,
    /// TCP connections closed after the idle timeout.
    pub tcp_idle_closed: AtomicU64,
    /// TCP connections closed because a started message did not complete
    /// within the message timeout.
    pub tcp_incomplete_closed: AtomicU64,
    /// TCP connections closed because of a framing error.
    pub tcp_framing_closed: AtomicU64,
    /// Messages sent (over TCP: queued on a connection; one queued on a
    /// connection whose connect then failed counts in `send_errors` too).
    pub sent: AtomicU64,
    /// Sends that failed (socket error, no route, connection gone).
    pub send_errors: AtomicU64,
    /// `sendmmsg` calls that sent queued UDP datagrams (see
    /// `udp_datagrams_batched` for how many datagrams they carried).
    pub udp_send_batches: AtomicU64,
    /// UDP datagrams sent through the outbox, in batches.
    pub udp_datagrams_batched: AtomicU64,
    /// UDP receive loops a shutdown aborted in the middle of a batch (one
    /// that did not end within `RECEIVE_STOP_WAIT` of the stop): the rest
    /// of that batch was dropped.
    pub udp_receive_loops_aborted: AtomicU64,
}

impl TransportMetrics {
    /// A consistent-enough copy of all counters for reporting.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("udp_datagrams_received", get(&self.udp_datagrams_received)),
            ("udp_recv_batches", get(&self.udp_recv_batches)),
            ("tcp_messages_received", get(&self.tcp_messages_received)),
            ("messages_delivered", get(&self.messages_delivered)),
            ("malformed_answered", get(&self.malformed_answered)),
            ("malformed_dropped", get(&self.malformed_dropped)),
            ("keepalives", get(&self.keepalives)),
            ("oversize", get(&self.oversize)),
            ("overload_rejected", get(&self.overload_rejected)),
            (
                "overload_rejected_again",
                get(&self.overload_rejected_again),
            ),
            ("overload_dropped", get(&self.overload_dropped)),
            ("tcp_accepted", get(&self.tcp_accepted)),
            ("tcp_connected", get(&self.tcp_connected)),
            ("tcp_rejected", get(&self.tcp_rejected)),
            ("tcp_idle_closed", get(&self.tcp_idle_closed)),
            ("tcp_incomplete_closed", get(&self.tcp_incomplete_closed)),
            ("tcp_framing_closed", get(&self.tcp_framing_closed)),
            ("sent", get(&self.sent)),
            ("send_errors", get(&self.send_errors)),
            ("udp_send_batches", get(&self.udp_send_batches)),
            ("udp_datagrams_batched", get(&self.udp_datagrams_batched)),
            (
                "udp_receive_loops_aborted",
                get(&self.udp_receive_loops_aborted),
            ),
        ]
    }
}

/// `name=value` pairs separated by spaces, as logged at shutdown.
impl fmt::Display for TransportMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_counters(f, &self.snapshot())
    }
}

/// Writes counters as `name=value` pairs separated by spaces (the form of
/// the exit report; shared by every layer's metrics).
pub(crate) fn write_counters(
    f: &mut fmt::Formatter<'_>,
    counters: &[(&'static str, u64)],
) -> fmt::Result {
    for (i, (name, value)) in counters.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{name}={value}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_every_counter() {
        let m = TransportMetrics::default();
        m.malformed_dropped.fetch_add(2, Ordering::Relaxed);
        let text = m.to_string();
        assert!(text.contains("malformed_dropped=2"), "{text}");
        assert!(text.contains("udp_datagrams_received=0"), "{text}");
        assert_eq!(text.split(' ').count(), m.snapshot().len());
    }
}
