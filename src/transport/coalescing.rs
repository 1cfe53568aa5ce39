//! Wake-up coalescing: under dense traffic the runtime's thread sleeps at
//! most once per interval instead of once per burst of arrivals.
//!
//! A thread with nothing to do parks in `epoll_wait`, and every datagram or
//! TCP segment that arrives while it is parked wakes it again: a context
//! switch out and back in for each burst, which at thousands of calls per
//! second costs more CPU than the SIP work of the few messages each wake-up
//! finds (docs/performance.md, "Session 10: kernel work per call"). When the
//! thread's last park was shorter than the interval (wake-ups come denser
//! than one per interval), it first waits out the rest of the interval since
//! it woke in a plain sleep, which arrivals do not interrupt, and parks after:
//! by then what arrived is queued, `epoll_wait` returns at once, and the
//! receive loops read it in a few large batches. As soon as a park lasts the
//! whole interval (traffic has thinned out), the next one is not delayed.
//!
//! The cost is latency: under dense traffic a message waits at most one
//! interval (default 1 ms, `wakeup_coalescing` in vpbx.toml) before it is
//! read, far below what SIP's timers notice (T1 = 500 ms). Timers and
//! sends are not delayed beyond that: the sleep starts only when the thread
//! has no task to run, so whatever was queued for sending went out first.
//! This is interrupt moderation (NAPI, NIC interrupt coalescing) done by the
//! application: the kernel would deliver each datagram as soon as it came.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The policy and its counters, shared by the hooks of every runtime thread.
#[derive(Debug)]
pub struct WakeupCoalescing {
    interval: Duration,
    /// Parks that were delayed.
    pauses: AtomicU64,
    /// Their total delay, in microseconds.
    paused_us: AtomicU64,
}

/// One thread's last park and wake-up (the hooks run on the thread that
/// parks, so each thread of a multi-thread runtime keeps its own).
#[derive(Debug, Clone, Copy, Default)]
struct ParkTimes {
    parked_at: Option<Instant>,
    woke_at: Option<Instant>,
    /// Whether the last park lasted less than the interval.
    dense: bool,
}

thread_local! {
    static PARK_TIMES: Cell<ParkTimes> = const {
        Cell::new(ParkTimes { parked_at: None, woke_at: None, dense: false })
    };
}

impl WakeupCoalescing {
    /// The policy for `interval`; `None` when it is zero (coalescing off).
    pub fn new(interval: Duration) -> Option<Arc<Self>> {
        (!interval.is_zero()).then(|| {
            Arc::new(WakeupCoalescing {
                interval,
                pauses: AtomicU64::new(0),
                paused_us: AtomicU64::new(0),
            })
        })
    }

    /// Registers the hooks on a runtime about to be built.
    pub fn install(self: &Arc<Self>, builder: &mut tokio::runtime::Builder) {
        let park = Arc::clone(self);
        let unpark = Arc::clone(self);
        builder
            .on_thread_park(move || park.before_park())
            .on_thread_unpark(move || unpark.after_unpark());
    }

    /// The runtime's thread has no task left and is about to park: wait out
    /// the rest of the interval first when wake-ups are dense.
    fn before_park(&self) {
        let mut times = PARK_TIMES.with(Cell::get);
        if times.dense {
            if let Some(woke_at) = times.woke_at {
                if let Some(rest) = pause(self.interval, woke_at.elapsed()) {
                    std::thread::sleep(rest);
                    self.pauses.fetch_add(1, Relaxed);
                    let us = u64::try_from(rest.as_micros()).unwrap_or(u64::MAX);
                    self.paused_us.fetch_add(us, Relaxed);
                }
            }
        }
        times.parked_at = Some(Instant::now());
        PARK_TIMES.with(|t| t.set(times));
    }

    /// The thread woke from its park.
    fn after_unpark(&self) {
        let now = Instant::now();
        let mut times = PARK_TIMES.with(Cell::get);
        times.dense = times
            .parked_at
            .is_some_and(|p| is_dense(self.interval, now.saturating_duration_since(p)));
        times.woke_at = Some(now);
        PARK_TIMES.with(|t| t.set(times));
    }

    /// Counters for the stop report.
    pub fn metrics(&self) -> CoalescingMetrics {
        CoalescingMetrics {
            pauses: self.pauses.load(Relaxed),
            paused_us: self.paused_us.load(Relaxed),
        }
    }
}

/// Whether a park of `parked` means wake-ups come denser than one per
/// `interval`.
fn is_dense(interval: Duration, parked: Duration) -> bool {
    parked < interval
}

/// How long a thread that woke `awake` ago and would park again waits
/// first, under dense wake-ups: the rest of the interval, unless that is
/// under an eighth of it (not worth a sleep of its own).
fn pause(interval: Duration, awake: Duration) -> Option<Duration> {
    interval
        .checked_sub(awake)
        .filter(|rest| *rest >= interval / 8)
}

/// What coalescing did, for the stop report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalescingMetrics {
    /// Parks that were delayed.
    pub pauses: u64,
    /// Their total delay, µs.
    pub paused_us: u64,
}

impl fmt::Display for CoalescingMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pauses={} paused_us={}", self.pauses, self.paused_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_park_shorter_than_the_interval_means_dense_wake_ups() {
        assert!(is_dense(MS, Duration::from_micros(10)));
        assert!(is_dense(MS, Duration::ZERO));
        assert!(!is_dense(MS, MS));
        assert!(!is_dense(MS, Duration::from_millis(7)));
    }

    #[test]
    fn the_pause_is_the_rest_of_the_interval_since_the_wake_up() {
        assert_eq!(pause(MS, Duration::ZERO), Some(MS));
        assert_eq!(
            pause(MS, Duration::from_micros(300)),
            Some(Duration::from_micros(700))
        );
        assert_eq!(
            pause(MS, Duration::from_micros(875)),
            Some(Duration::from_micros(125))
        );
        // Less than an eighth left, or the interval already over: park at once.
        assert_eq!(pause(MS, Duration::from_micros(900)), None);
        assert_eq!(pause(MS, Duration::from_millis(3)), None);
    }

    #[test]
    fn zero_turns_it_off() {
        assert!(WakeupCoalescing::new(Duration::ZERO).is_none());
        assert!(WakeupCoalescing::new(MS).is_some());
    }

    /// A real runtime and a real socket: datagrams every ~100 µs for
    /// ~60 ms. With a 5-ms interval the receiving task wakes at most about
    /// once per 5 ms (plus the first wake-ups, before the traffic counts as
    /// dense), yet reads every datagram; without, it wakes for nearly
    /// every one.
    #[test]
    fn dense_datagrams_wake_the_thread_once_per_interval() {
        const DATAGRAMS: usize = 600;
        let wake_ups = |coalescing: Option<Arc<WakeupCoalescing>>| -> usize {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            if let Some(c) = &coalescing {
                c.install(&mut builder);
            }
            let rt = builder.enable_all().build().expect("runtime");
            rt.block_on(async {
                let rx = tokio::net::UdpSocket::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let to = rx.local_addr().expect("addr");
                let sender = std::thread::spawn(move || {
                    let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
                    for i in 0..DATAGRAMS {
                        tx.send_to(&i.to_be_bytes(), to).expect("send");
                        std::thread::sleep(Duration::from_micros(100));
                    }
                });
                let (mut read, mut wakes) = (0, 0);
                let mut buf = [0u8; 64];
                while read < DATAGRAMS {
                    rx.readable().await.expect("readable");
                    wakes += 1;
                    while rx.try_recv(&mut buf).is_ok() {
                        read += 1;
                    }
                }
                sender.join().expect("sender");
                wakes
            })
        };
        let c = WakeupCoalescing::new(Duration::from_millis(5)).expect("on");
        let coalesced = wake_ups(Some(Arc::clone(&c)));
        let plain = wake_ups(None);
        // ~60 ms of traffic at one wake-up per 5 ms is ~12; leave room for a
        // slow box (a sender that stalls lets a park last the interval).
        assert!(coalesced <= 40, "coalesced: {coalesced} wake-ups");
        assert!(c.metrics().pauses > 0, "{}", c.metrics());
        assert!(
            plain > 2 * coalesced,
            "plain {plain} vs coalesced {coalesced} wake-ups"
        );
    }
}
