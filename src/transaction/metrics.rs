//! Transaction layer counters: plain atomics, for the admin `/metrics`
//! endpoint and the shutdown log.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of what the transaction layer created, absorbed, retransmitted
/// and gave up on. Each only goes up; `Relaxed` is enough (nothing
/// synchronises on them).
#[derive(Debug, Default)]
pub struct TransactionMetrics {
    /// Client transactions started.
    pub client_transactions: AtomicU64,
    /// Server transactions created.
    pub server_transactions: AtomicU64,
    /// Requests retransmitted by Timer A or E (unreliable transports).
    pub request_retransmissions: AtomicU64,
    /// Responses retransmitted by Timer G or the 2xx retransmission.
    pub response_retransmissions: AtomicU64,
    /// Request retransmissions (Timer A or E) held back because the
    /// transport had not drained its receive side since the request was
    /// last sent (each time the timer is re-armed counts; one is held back
    /// at most its own interval).
    pub request_retransmissions_deferred: AtomicU64,
    /// Response retransmissions (Timer G, the 2xx retransmission, the TU's
    /// 2xx retransmissions) held back likewise, until the ACK is read or
    /// the bound is reached.
    pub response_retransmissions_deferred: AtomicU64,
    /// Retransmitted requests absorbed by their server transaction.
    pub retransmissions_absorbed: AtomicU64,
    /// ACKs for non-2xx finals absorbed by their INVITE server transaction.
    pub acks_absorbed: AtomicU64,
    /// 100 (Trying) sent by the layer because the TU had not answered.
    pub trying_sent: AtomicU64,
    /// Transactions ended by a timeout (Timers B, F, H, Cancelled,
    /// Unanswered, unacknowledged 2xx).
    pub timeouts: AtomicU64,
    /// Transactions ended by a transport error.
    pub transport_errors: AtomicU64,
    /// Responses that matched no client transaction.
    pub stray_responses: AtomicU64,
    /// Responses discarded because their top Via sent-by is none we put in
    /// our requests (RFC 3261 §18.1.2).
    pub foreign_sent_by: AtomicU64,
    /// New requests answered 503 because the TU queue was full.
    pub overload_rejected: AtomicU64,
    /// Deliveries to a full TU channel (dropped if droppable, else queued).
    pub tu_queue_full: AtomicU64,
    /// Gauge, not a counter: timers pending (scheduled, neither fired nor
    /// cancelled) when the metrics were last read through
    /// [`crate::transaction::TransactionLayer::metrics`].
    pub pending_timers: AtomicU64,
}

impl TransactionMetrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy of all counters for reporting.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("client_transactions", get(&self.client_transactions)),
            ("server_transactions", get(&self.server_transactions)),
            (
                "request_retransmissions",
                get(&self.request_retransmissions),
            ),
            (
                "response_retransmissions",
                get(&self.response_retransmissions),
            ),
            (
                "request_retransmissions_deferred",
                get(&self.request_retransmissions_deferred),
            ),
            (
                "response_retransmissions_deferred",
                get(&self.response_retransmissions_deferred),
            ),
            (
                "retransmissions_absorbed",
                get(&self.retransmissions_absorbed),
            ),
            ("acks_absorbed", get(&self.acks_absorbed)),
            ("trying_sent", get(&self.trying_sent)),
            ("timeouts", get(&self.timeouts)),
            ("transport_errors", get(&self.transport_errors)),
            ("stray_responses", get(&self.stray_responses)),
            ("foreign_sent_by", get(&self.foreign_sent_by)),
            ("overload_rejected", get(&self.overload_rejected)),
            ("tu_queue_full", get(&self.tu_queue_full)),
            ("pending_timers", get(&self.pending_timers)),
        ]
    }
}

/// `name=value` pairs separated by spaces, as logged at shutdown.
impl fmt::Display for TransactionMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::transport::metrics::write_counters(f, &self.snapshot())
    }
}
