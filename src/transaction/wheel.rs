//! The shell's timer queue: one binary heap of deadlines for all
//! transactions, served by a single tokio task. Scheduling is a heap push
//! under a short mutex; nothing is spawned per timer, and a timer whose
//! transaction is gone simply finds nothing when it fires.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A due timer of type `T` (what the layer needs to find its transaction).
struct Entry<T> {
    at: Instant,
    seq: u64,
    target: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Heap<T> {
    entries: BinaryHeap<Reverse<Entry<T>>>,
    /// Tie-breaker keeping timers with equal deadlines in schedule order.
    seq: u64,
}

/// Deadlines of all transactions of one layer.
pub(crate) struct Wheel<T> {
    heap: Mutex<Heap<T>>,
    /// Wakes the timer task when an earlier deadline arrives or on shutdown.
    notify: Notify,
    closed: AtomicBool,
}

impl<T> Wheel<T> {
    pub(crate) fn new() -> Self {
        Self {
            heap: Mutex::new(Heap {
                entries: BinaryHeap::new(),
                seq: 0,
            }),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Heap<T>> {
        // A panic while holding this lock cannot leave the heap inconsistent
        // (push/pop are atomic from our point of view), so poisoning is moot.
        self.heap.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fires `target` at `at`.
    pub(crate) fn schedule(&self, at: Instant, target: T) {
        let earliest = {
            let mut heap = self.lock();
            heap.seq += 1;
            let seq = heap.seq;
            let earliest = heap.entries.peek().map_or(true, |Reverse(e)| at < e.at);
            heap.entries.push(Reverse(Entry { at, seq, target }));
            earliest
        };
        if earliest {
            self.notify.notify_one();
        }
    }

    /// Removes and returns every target due at `now`, earliest first.
    pub(crate) fn pop_due(&self, now: Instant, out: &mut Vec<T>) {
        let mut heap = self.lock();
        while heap.entries.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(e)) = heap.entries.pop() {
                out.push(e.target);
            }
        }
        // Give back what a load peak left behind, with slack so a steady
        // load does not reallocate.
        let (len, cap) = (heap.entries.len(), heap.entries.capacity());
        if cap > 4096 && len < cap / 4 {
            heap.entries.shrink_to(len * 2);
        }
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.lock().entries.peek().map(|Reverse(e)| e.at)
    }

    /// Number of pending timers (stale ones included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Waits until the earliest deadline or until woken by an earlier one.
    pub(crate) async fn wait(&self) {
        match self.next_deadline() {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = self.notify.notified() => {}
                }
            }
            None => self.notify.notified().await,
        }
    }

    /// Ends the timer task.
    pub(crate) fn close(&self) {
        self.closed.store(true, AtomicOrdering::Release);
        self.notify.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(AtomicOrdering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_due_timers_in_deadline_order() {
        let wheel = Wheel::new();
        let t0 = Instant::now();
        wheel.schedule(t0 + Duration::from_millis(30), "c");
        wheel.schedule(t0 + Duration::from_millis(10), "a");
        wheel.schedule(t0 + Duration::from_millis(10), "b");
        wheel.schedule(t0 + Duration::from_millis(50), "d");
        let mut due = Vec::new();
        wheel.pop_due(t0 + Duration::from_millis(30), &mut due);
        assert_eq!(due, ["a", "b", "c"]);
        assert_eq!(wheel.next_deadline(), Some(t0 + Duration::from_millis(50)));
        assert_eq!(wheel.len(), 1);
    }
}
