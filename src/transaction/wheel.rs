//! The shell's timer queue: the deadlines of all transactions of a layer,
//! served by a single tokio task. Nothing is spawned per timer.
//!
//! Layout, chosen for the load the layer sees (tens of thousands of timers
//! scheduled per second, most of them 64*T1 long):
//! - a slab holds each pending timer's target (what the layer needs to find
//!   its transaction); a [`TimerId`] (slot and generation) names it, so a
//!   timer is cancelled in O(1) and its target is dropped at once;
//! - the deadlines sit in one FIFO *lane* per distinct duration: timers
//!   scheduled with the same duration fall due in the order they were
//!   scheduled, so each lane is sorted by construction and scheduling and
//!   popping are O(1) (plus a scan over the handful of lanes). A deadline
//!   that fits no lane (more distinct durations than lanes, or a clock read
//!   out of order) goes to a small binary heap;
//! - lane and heap entries are 24 bytes (deadline in nanoseconds since the
//!   queue was created, sequence, slot, generation). A cancelled timer's entry stays queued until it reaches
//!   the front of its lane or until the queue is compacted, which happens as
//!   soon as cancelled entries outnumber live timers (and [`COMPACT_MIN`]):
//!   queued entries never exceed twice the live timers plus that constant.
//!
//! - a timer scheduled with a slack ([`Batch::schedule_within`]) has its
//!   deadline rounded up to a multiple of it, so that timers which may fire
//!   a little late fall due together and share a wake-up; they keep to
//!   lanes of their own (per duration and slack), so lanes stay sorted.
//!
//! Timers fall due in (deadline, scheduling order), as with a single heap.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Most distinct durations that get a lane of their own (the RFC 3261
/// timers with doubling retransmission intervals use about ten).
const MAX_LANES: usize = 32;

/// Cancelled entries the queue tolerates before compacting, whatever the
/// number of live timers.
pub(crate) const COMPACT_MIN: usize = 1024;

/// Below this capacity (in entries) `trim` leaves a queue or slab as is.
const TRIM_MIN: usize = 4096;

/// The room a new lane of timers `after` nanoseconds long makes: `per_second`
/// times its duration in seconds, at most `max`.
fn lane_reserve(per_second: usize, after: u64, max: usize) -> usize {
    let entries = (per_second as u128 * u128::from(after)).div_ceil(1_000_000_000);
    usize::try_from(entries).unwrap_or(usize::MAX).min(max)
}

/// `d` in nanoseconds, saturating: 584 years ahead is as good as never.
/// (Cheaper than going through `Duration::as_nanos`' 128 bits.)
fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(u64::from(d.subsec_nanos())))
        .unwrap_or(u64::MAX)
}

/// A deadline: nanoseconds since the wheel was created.
pub(crate) type Tick = u64;

/// The deadline of a timer scheduled at `now` for `after`, rounded up to a
/// multiple of `step` (all in nanoseconds; a step of 0 or 1: not rounded).
fn deadline(now: Tick, after: u64, step: u64) -> Tick {
    let at = now.saturating_add(after);
    if step > 1 {
        at.div_ceil(step).saturating_mul(step)
    } else {
        at
    }
}

/// Names one scheduled timer; stale once the timer fired or was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerId {
    slot: u32,
    generation: u32,
}

/// A deadline in a lane or in the heap.
#[derive(Debug, Clone, Copy)]
struct Queued {
    /// Nanoseconds since `Queue::base`.
    at: u64,
    seq: u64,
    slot: u32,
    generation: u32,
}

impl Queued {
    fn order(&self) -> (u64, u64) {
        (self.at, self.seq)
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order().cmp(&other.order())
    }
}

struct Lane {
    /// The duration of its timers, in nanoseconds.
    after: u64,
    /// The step its deadlines are rounded up to, in nanoseconds (0: not
    /// rounded). Rounded and exact timers of one duration keep to lanes
    /// of their own, so each lane stays sorted.
    step: u64,
    entries: VecDeque<Queued>,
    /// The room made for its entries when it was created, which trimming
    /// keeps.
    reserve: usize,
}

struct Slot<T> {
    /// Bumped each time the slot is freed, so old ids and entries of an
    /// earlier timer in the same slot are recognised as stale.
    generation: u32,
    target: Option<T>,
}

/// Where the earliest queued entry is.
#[derive(Clone, Copy)]
enum Front {
    Lane(usize),
    Heap,
}

struct Queue<T> {
    lanes: Vec<Lane>,
    heap: BinaryHeap<Reverse<Queued>>,
    slots: Vec<Slot<T>>,
    /// Free slots; `schedule` takes the last one.
    free: Vec<u32>,
    /// The generation a slot made anew starts with: past every generation
    /// of the slots `trim` dropped, so no old id names a timer in it.
    fresh: u32,
    /// Timers scheduled and neither fired nor cancelled.
    live: usize,
    /// Queued entries of cancelled timers.
    stale: usize,
    /// Tie-breaker keeping timers with equal deadlines in schedule order.
    seq: u64,
    /// The deadline the timer task last said it would sleep until (`None`:
    /// until woken). Every queued deadline is at or after it, so only an
    /// earlier one needs to wake the task.
    wake_at: Option<u64>,
    /// Deadlines are kept as nanoseconds since this instant.
    base: Instant,
    /// Room made for the slab and the free list at start, which trimming
    /// keeps (see [`Wheel::with_reserve`]).
    reserve: usize,
    /// Timers of one duration expected per second: a new lane makes room
    /// for this many times its duration in seconds (at most `reserve`).
    per_second: usize,
}

impl<T> Queue<T> {
    fn tick(&self, t: Instant) -> u64 {
        nanos(t.saturating_duration_since(self.base))
    }

    fn instant(&self, tick: u64) -> Instant {
        let far = self.base + Duration::from_secs(100 * 365 * 86_400);
        self.base
            .checked_add(Duration::from_nanos(tick))
            .unwrap_or(far)
    }

    fn is_live(&self, q: &Queued) -> bool {
        self.slots
            .get(q.slot as usize)
            .is_some_and(|s| s.generation == q.generation && s.target.is_some())
    }

    /// Frees slot `slot` and returns its target, if `generation` is current.
    fn release(&mut self, slot: u32, generation: u32) -> Option<T> {
        let s = self.slots.get_mut(slot as usize)?;
        if s.generation != generation {
            return None;
        }
        let target = s.target.take()?;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
        Some(target)
    }

    /// Drops cancelled entries from the fronts of the lanes and the heap, so
    /// that the earliest front is a live timer.
    fn clean_fronts(&mut self) {
        for i in 0..self.lanes.len() {
            while let Some(q) = self.lanes[i].entries.front().copied() {
                if self.is_live(&q) {
                    break;
                }
                self.lanes[i].entries.pop_front();
                self.stale -= 1;
            }
        }
        while let Some(Reverse(q)) = self.heap.peek().copied() {
            if self.is_live(&q) {
                break;
            }
            self.heap.pop();
            self.stale -= 1;
        }
    }

    /// The earliest queued entry (live or not) and where it is.
    fn front(&self) -> Option<(Queued, Front)> {
        let mut best: Option<(Queued, Front)> = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            if let Some(q) = lane.entries.front() {
                if best.map_or(true, |(b, _)| q < &b) {
                    best = Some((*q, Front::Lane(i)));
                }
            }
        }
        if let Some(Reverse(q)) = self.heap.peek() {
            if best.map_or(true, |(b, _)| q < &b) {
                best = Some((*q, Front::Heap));
            }
        }
        best
    }

    fn next_deadline(&mut self) -> Option<u64> {
        self.clean_fronts();
        self.front().map(|(q, _)| q.at)
    }

    fn pop_front(&mut self, front: Front) {
        match front {
            Front::Lane(i) => {
                self.lanes[i].entries.pop_front();
            }
            Front::Heap => {
                self.heap.pop();
            }
        }
    }

    /// Removes the entries of cancelled timers once they outnumber the live
    /// ones, and gives back what a load peak left behind.
    fn maybe_compact(&mut self) {
        if self.stale <= COMPACT_MIN || self.stale <= self.live {
            return;
        }
        let slots = &self.slots;
        let live = |q: &Queued| {
            slots
                .get(q.slot as usize)
                .is_some_and(|s| s.generation == q.generation && s.target.is_some())
        };
        for lane in &mut self.lanes {
            lane.entries.retain(|q| live(q));
            let (len, cap) = (lane.entries.len(), lane.entries.capacity());
            if cap > TRIM_MIN.max(lane.reserve) && len < cap / 4 {
                lane.entries.shrink_to((len * 2).max(lane.reserve));
            }
        }
        self.heap.retain(|Reverse(q)| live(q));
        self.stale = 0;
    }

    /// See [`Wheel::trim`].
    fn trim(&mut self) {
        for lane in &mut self.lanes {
            let (len, cap) = (lane.entries.len(), lane.entries.capacity());
            if cap > TRIM_MIN.max(lane.reserve) && len < cap / 4 {
                lane.entries.shrink_to((len * 2).max(lane.reserve));
            }
        }
        let (len, cap) = (self.heap.len(), self.heap.capacity());
        if cap > TRIM_MIN && len < cap / 4 {
            self.heap.shrink_to(len * 2);
        }
        let slots = self.slots.capacity();
        if slots <= TRIM_MIN.max(self.reserve) || self.live >= slots / 4 {
            return;
        }
        // Queued entries of cancelled timers may name a dropped slot: with
        // no slot there, or a generation past theirs, they stay stale.
        while let Some(last) = self.slots.last() {
            if last.target.is_some() {
                break;
            }
            self.fresh = self.fresh.max(last.generation);
            self.slots.pop();
        }
        self.slots.shrink_to(self.reserve);
        // Lowest last, so that `schedule` fills the front of the slab and
        // the next trim finds more free slots at its end.
        self.free.clear();
        self.free.extend(
            self.slots
                .iter()
                .enumerate()
                .rev()
                .filter(|(_, s)| s.target.is_none())
                .filter_map(|(i, _)| u32::try_from(i).ok()),
        );
        self.free.shrink_to(self.reserve);
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.lanes.iter().map(|l| l.entries.len()).sum::<usize>() + self.heap.len()
    }
}

/// Timers scheduled and cancelled under one lock (see [`Wheel::batch`]).
/// Dropping it releases the lock and wakes the timer task if a timer is
/// due before the task's deadline.
pub(crate) struct Batch<'a, T> {
    wheel: &'a Wheel<T>,
    queue: Option<std::sync::MutexGuard<'a, Queue<T>>>,
    /// The queue's tick of the instant of the first schedule.
    now: Option<u64>,
    wake: bool,
}

impl<T> Batch<'_, T> {
    /// Fires `target` `after` from the batch's instant.
    pub(crate) fn schedule(&mut self, after: Duration, target: T) -> TimerId {
        self.schedule_by_step(after, 0, target).0
    }

    /// Fires `target` `after` from the batch's instant, or up to `slack`
    /// later: at the next multiple of `slack` (counted from the queue's
    /// creation), so that timers which may as well fire a little late fall
    /// due together, one wake-up of the timer task for all those due in
    /// the same `slack`. A zero `slack` is [`Batch::schedule`].
    pub(crate) fn schedule_within(
        &mut self,
        after: Duration,
        slack: Duration,
        target: T,
    ) -> TimerId {
        self.schedule_by_step(after, nanos(slack), target).0
    }

    /// [`Batch::schedule_within`] that also returns the timer's deadline
    /// (see [`Batch::deadline_within`]).
    pub(crate) fn schedule_within_at(
        &mut self,
        after: Duration,
        slack: Duration,
        target: T,
    ) -> (TimerId, Tick) {
        self.schedule_by_step(after, nanos(slack), target)
    }

    /// Fires `target` `after` from the batch's instant, its deadline in the
    /// heap whatever lanes exist: for a delay that is no duration timers
    /// are scheduled with again and again (e.g. the time left until a
    /// deadline set earlier), which would otherwise hold a lane of its own
    /// for one timer and, once [`MAX_LANES`] such delays were seen, keep
    /// the recurring durations out of the lanes.
    pub(crate) fn schedule_in_heap(&mut self, after: Duration, target: T) -> TimerId {
        self.schedule_into(after, 0, false, target).0
    }

    /// The deadline [`Batch::schedule_within`] gives a timer scheduled
    /// `after` with `slack` in this batch. Timers of one lane (one
    /// duration and slack) with equal deadlines fall due at the same
    /// instant.
    pub(crate) fn deadline_within(&mut self, after: Duration, slack: Duration) -> Tick {
        let now = self.now();
        deadline(now, nanos(after), nanos(slack))
    }

    /// Replaces what pending timer `id` fires with (`f` edits its target
    /// in place); its deadline stays. False, with nothing done, when `id`
    /// already fired or was cancelled.
    pub(crate) fn retarget(&mut self, id: TimerId, f: impl FnOnce(&mut T)) -> bool {
        let wheel = self.wheel;
        let queue = self.queue.get_or_insert_with(|| wheel.lock());
        match queue.slots.get_mut(id.slot as usize) {
            Some(Slot {
                generation,
                target: Some(target),
            }) if *generation == id.generation => {
                f(target);
                true
            }
            _ => false,
        }
    }

    /// The queue's tick of the batch's instant (the clock is read once per
    /// batch).
    fn now(&mut self) -> u64 {
        let wheel = self.wheel;
        let queue = self.queue.get_or_insert_with(|| wheel.lock());
        *self.now.get_or_insert_with(|| queue.tick(Instant::now()))
    }

    /// `schedule_within_at` with the slack in nanoseconds (0: none).
    #[inline]
    fn schedule_by_step(&mut self, after: Duration, step: u64, target: T) -> (TimerId, Tick) {
        self.schedule_into(after, step, true, target)
    }

    #[inline]
    fn schedule_into(
        &mut self,
        after: Duration,
        step: u64,
        laned: bool,
        target: T,
    ) -> (TimerId, Tick) {
        let wheel = self.wheel;
        let queue = self.queue.get_or_insert_with(|| wheel.lock());
        let now = *self.now.get_or_insert_with(|| queue.tick(Instant::now()));
        let (id, at, earliest) = Wheel::schedule_locked(queue, now, after, step, laned, target);
        self.wake |= earliest;
        (id, at)
    }

    /// Cancels every timer of `ids` (see [`Wheel::cancel_all`]).
    pub(crate) fn cancel_all(&mut self, ids: impl IntoIterator<Item = TimerId>) {
        let wheel = self.wheel;
        for id in ids {
            Wheel::cancel_locked(self.queue.get_or_insert_with(|| wheel.lock()), id);
        }
    }
}

impl<T> Drop for Batch<'_, T> {
    fn drop(&mut self) {
        // Unlocked before the task is woken.
        self.queue = None;
        if self.wake {
            self.wheel.notify.notify_one();
        }
    }
}

/// Deadlines of all transactions of one layer.
pub(crate) struct Wheel<T> {
    queue: Mutex<Queue<T>>,
    /// Wakes the timer task when an earlier deadline arrives or on shutdown.
    notify: Notify,
    closed: AtomicBool,
}

impl<T> Wheel<T> {
    pub(crate) fn new() -> Self {
        Self::with_reserve(0, 0)
    }

    /// A queue with room for `timers` pending timers made at start (the
    /// slab and its free list), and in each lane for `per_second` times
    /// its duration in seconds (at most `timers`): growing either copies
    /// it whole in one step. Trimming never gives this room back. Memory
    /// reserved and not yet written costs address space, not RSS.
    pub(crate) fn with_reserve(timers: usize, per_second: usize) -> Self {
        Self {
            queue: Mutex::new(Queue {
                lanes: Vec::with_capacity(MAX_LANES),
                heap: BinaryHeap::new(),
                slots: Vec::with_capacity(timers),
                free: Vec::with_capacity(timers),
                fresh: 0,
                live: 0,
                stale: 0,
                seq: 0,
                wake_at: None,
                base: Instant::now(),
                reserve: timers,
                per_second,
            }),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<T>> {
        // Every method leaves the queue consistent before it can panic
        // (allocation failure aside), so poisoning is moot.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fires `target` `after` from now.
    pub(crate) fn schedule(&self, after: Duration, target: T) -> TimerId {
        let mut batch = self.batch();
        batch.schedule(after, target)
    }

    /// Schedules and cancels several timers under one lock and one reading
    /// of the clock (the timers of one transaction step). The lock is
    /// taken at the first call and held until the batch is dropped: take
    /// no other lock of this wheel meanwhile.
    pub(crate) fn batch(&self) -> Batch<'_, T> {
        Batch {
            wheel: self,
            queue: None,
            now: None,
            wake: false,
        }
    }

    /// `schedule` under the lock, `now` being the queue's tick of the
    /// current instant, the deadline rounded up to a multiple of `step`
    /// (nanoseconds; 0 or 1: not rounded), in its duration's lane if
    /// `laned` (and it fits one), else in the heap. Returns its deadline
    /// and whether the timer task must be woken.
    fn schedule_locked(
        queue: &mut Queue<T>,
        now: u64,
        after: Duration,
        step: u64,
        laned: bool,
        target: T,
    ) -> (TimerId, Tick, bool) {
        let after = nanos(after);
        let step = if step > 1 { step } else { 0 };
        let at = deadline(now, after, step);
        queue.seq += 1;
        let seq = queue.seq;
        // One look-up of the slot, which gives its generation too.
        let (slot, generation) = match queue
            .free
            .pop()
            .and_then(|slot| Some((slot, queue.slots.get_mut(slot as usize)?)))
        {
            Some((slot, s)) => {
                s.target = Some(target);
                (slot, s.generation)
            }
            None => {
                let slot = u32::try_from(queue.slots.len()).unwrap_or(u32::MAX);
                let generation = queue.fresh;
                queue.slots.push(Slot {
                    generation,
                    target: Some(target),
                });
                (slot, generation)
            }
        };
        queue.live += 1;
        let earliest = queue.wake_at.map_or(true, |w| at < w);
        if earliest {
            // The task recomputes its deadline when woken; later
            // deadlines scheduled meanwhile need not wake it again.
            queue.wake_at = Some(at);
        }
        let entry = Queued {
            at,
            seq,
            slot,
            generation,
        };
        let lane = match queue
            .lanes
            .iter()
            .position(|l| l.after == after && l.step == step)
        {
            _ if !laned => None,
            Some(i) => Some(i),
            None if queue.lanes.len() < MAX_LANES => {
                let reserve = lane_reserve(queue.per_second, after, queue.reserve);
                queue.lanes.push(Lane {
                    after,
                    step,
                    entries: VecDeque::with_capacity(reserve),
                    reserve,
                });
                Some(queue.lanes.len() - 1)
            }
            None => None,
        };
        match lane.and_then(|i| queue.lanes.get_mut(i)) {
            Some(Lane { entries, .. }) if entries.back().map_or(true, |b| b.at <= at) => {
                entries.push_back(entry);
            }
            _ => queue.heap.push(Reverse(entry)),
        }
        (TimerId { slot, generation }, at, earliest)
    }

    /// Cancels timer `id`, dropping its target now. Returns false when it
    /// had already fired or been cancelled.
    #[cfg(test)]
    pub(crate) fn cancel(&self, id: TimerId) -> bool {
        let mut queue = self.lock();
        Self::cancel_locked(&mut queue, id)
    }

    /// Cancels every timer of `ids` (see [`Wheel::cancel`]) under one lock.
    pub(crate) fn cancel_all(&self, ids: impl IntoIterator<Item = TimerId>) {
        // Locked only if there is something to cancel.
        let mut queue = None;
        for id in ids {
            Self::cancel_locked(queue.get_or_insert_with(|| self.lock()), id);
        }
    }

    fn cancel_locked(queue: &mut Queue<T>, id: TimerId) -> bool {
        if queue.release(id.slot, id.generation).is_none() {
            return false;
        }
        queue.stale += 1;
        queue.maybe_compact();
        true
    }

    /// Removes every timer due at `now` and appends it to `out`, in
    /// (deadline, scheduling) order.
    pub(crate) fn pop_due(&self, now: Instant, out: &mut Vec<(TimerId, T)>) {
        let mut queue = self.lock();
        let now = queue.tick(now);
        while let Some((q, front)) = queue.front() {
            if q.at > now {
                break;
            }
            queue.pop_front(front);
            match queue.release(q.slot, q.generation) {
                Some(target) => out.push((
                    TimerId {
                        slot: q.slot,
                        generation: q.generation,
                    },
                    target,
                )),
                None => queue.stale -= 1,
            }
        }
        queue.clean_fronts();
        let (len, cap) = (queue.heap.len(), queue.heap.capacity());
        if cap > 4096 && len < cap / 4 {
            queue.heap.shrink_to(len * 2);
        }
    }

    /// The earliest deadline of a live timer, if any.
    #[cfg(test)]
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut queue = self.lock();
        queue.next_deadline().map(|at| queue.instant(at))
    }

    /// Waits until the earliest deadline or until woken by an earlier one.
    pub(crate) async fn wait(&self) {
        // Computed and recorded under one lock, so that a timer scheduled
        // after it wakes the task if it is earlier.
        let deadline = {
            let mut queue = self.lock();
            let next = queue.next_deadline();
            queue.wake_at = next;
            next.map(|at| queue.instant(at))
        };
        match deadline {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = self.notify.notified() => {}
                }
            }
            None => self.notify.notified().await,
        }
    }

    /// Gives back what a load peak left behind once it is mostly unused:
    /// shrinks the lanes and the heap, and, when live timers fill less
    /// than a quarter of the slab, drops the free slots at its end and
    /// hands out the lowest free slots first from then on, so that the
    /// live timers gather at the front and later trims drop more. O(slab)
    /// when it does something; call it now and then (the layer does, about
    /// once a second), not per timer.
    pub(crate) fn trim(&self) {
        self.lock().trim();
    }

    /// Capacity of the slab, in timers (what its memory is proportional
    /// to).
    #[cfg(test)]
    pub(crate) fn slab_capacity(&self) -> usize {
        self.lock().slots.capacity()
    }

    /// Capacity of lane `i` (in order of creation), in entries.
    #[cfg(test)]
    pub(crate) fn lane_capacity(&self, i: usize) -> usize {
        self.lock().lanes[i].entries.capacity()
    }

    /// Lanes in use (one per distinct duration scheduled, at most
    /// [`MAX_LANES`]).
    #[cfg(test)]
    pub(crate) fn lanes(&self) -> usize {
        self.lock().lanes.len()
    }

    /// Timers scheduled and neither fired nor cancelled.
    pub(crate) fn len(&self) -> usize {
        self.lock().live
    }

    /// Entries queued, cancelled ones not yet dropped included (what the
    /// queue's memory is proportional to, with the slab).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lock().queued()
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
    use proptest::prelude::*;

    fn targets(due: Vec<(TimerId, &'static str)>) -> Vec<&'static str> {
        due.into_iter().map(|(_, t)| t).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn pops_due_timers_in_deadline_order() {
        let wheel = Wheel::new();
        let t0 = Instant::now();
        wheel.schedule(Duration::from_millis(30), "c");
        wheel.schedule(Duration::from_millis(10), "a");
        wheel.schedule(Duration::from_millis(10), "b");
        wheel.schedule(Duration::from_millis(50), "d");
        let mut due = Vec::new();
        wheel.pop_due(t0 + Duration::from_millis(30), &mut due);
        assert_eq!(targets(due), ["a", "b", "c"]);
        assert_eq!(wheel.next_deadline(), Some(t0 + Duration::from_millis(50)));
        assert_eq!(wheel.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn heap_timers_take_no_lane_and_fall_due_in_order_with_laned_ones() {
        let wheel = Wheel::new();
        let t0 = Instant::now();
        {
            let mut batch = wheel.batch();
            // More distinct one-off delays than there are lanes.
            for i in (0..2 * MAX_LANES as u64).rev() {
                batch.schedule_in_heap(Duration::from_millis(1000 + 7 * i), 1000 + 7 * i);
            }
            batch.schedule(Duration::from_millis(1003), 1003);
        }
        assert_eq!(wheel.lanes(), 1, "only the recurring duration has a lane");
        // A recurring duration still gets a lane of its own.
        wheel.schedule(Duration::from_millis(2), 2);
        assert_eq!(wheel.lanes(), 2);
        let mut due = Vec::new();
        wheel.pop_due(t0 + Duration::from_secs(5), &mut due);
        let order: Vec<u64> = due.into_iter().map(|(_, t)| t).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order.len(), 2 * MAX_LANES + 2);
        assert_eq!(order, sorted);
    }

    /// A task serving `wheel` as the layer's does, recording when each
    /// target fired.
    fn serve(
        wheel: std::sync::Arc<Wheel<&'static str>>,
    ) -> std::sync::Arc<std::sync::Mutex<Vec<(Duration, &'static str)>>> {
        let fired = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&fired);
        let t0 = Instant::now();
        tokio::spawn(async move {
            let mut due = Vec::new();
            while !wheel.is_closed() {
                wheel.wait().await;
                wheel.pop_due(Instant::now(), &mut due);
                for (_, t) in due.drain(..) {
                    log.lock().unwrap().push((Instant::now() - t0, t));
                }
            }
        });
        fired
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_timer_wakes_the_sleeping_task() {
        let wheel = std::sync::Arc::new(Wheel::new());
        let fired = serve(std::sync::Arc::clone(&wheel));
        wheel.schedule(Duration::from_secs(32), "late");
        tokio::task::yield_now().await; // the task sleeps until 32 s
        wheel.schedule(Duration::from_secs(1), "early");
        wheel.schedule(Duration::from_secs(2), "second");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Scheduled while the task sleeps until 2 s, from 1.5 s: fires at
        // 1.6 s.
        wheel.schedule(Duration::from_millis(100), "third");
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(
            *fired.lock().unwrap(),
            [
                (Duration::from_secs(1), "early"),
                (Duration::from_millis(1600), "third"),
                (Duration::from_secs(2), "second"),
                (Duration::from_secs(32), "late"),
            ]
        );
        wheel.close();
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_schedules_and_cancels_under_one_lock_and_wakes_the_task_once_dropped() {
        let wheel = std::sync::Arc::new(Wheel::new());
        let fired = serve(std::sync::Arc::clone(&wheel));
        let late = wheel.schedule(Duration::from_secs(32), "late");
        tokio::task::yield_now().await; // the task sleeps until 32 s
        {
            let mut batch = wheel.batch();
            batch.cancel_all([late]);
            batch.schedule(Duration::from_secs(2), "b");
            batch.schedule(Duration::from_secs(1), "a");
            let gone = batch.schedule(Duration::from_millis(500), "cancelled");
            batch.cancel_all([gone]);
            // The lock is held while the batch lives.
            assert!(wheel.queue.try_lock().is_err());
        }
        assert_eq!(wheel.len(), 2);
        // An empty batch takes no lock.
        let empty = wheel.batch();
        assert!(wheel.queue.try_lock().is_ok());
        drop(empty);
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(
            *fired.lock().unwrap(),
            [(Duration::from_secs(1), "a"), (Duration::from_secs(2), "b")]
        );
        wheel.close();
    }

    #[test]
    fn nanos_agrees_with_as_nanos_and_saturates() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(500),
            Duration::new(32, 999_999_999),
            Duration::from_secs(u64::MAX / 1_000_000_000),
        ] {
            assert_eq!(u128::from(nanos(d)), d.as_nanos(), "{d:?}");
        }
        // 584 years and more: as good as never.
        assert_eq!(
            nanos(Duration::new(u64::MAX / 1_000_000_000, 999_999_999)),
            u64::MAX
        );
        assert_eq!(nanos(Duration::from_secs(u64::MAX)), u64::MAX);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_beyond_the_clock_range_stays_pending_and_cancels() {
        let wheel = Wheel::new();
        let t0 = Instant::now();
        let never = wheel.schedule(Duration::MAX, "never");
        wheel.schedule(Duration::from_secs(1), "soon");
        // A lane per duration: the far one does not disturb the other.
        let mut due = Vec::new();
        wheel.pop_due(t0 + Duration::from_secs(86_400), &mut due);
        assert_eq!(targets(due), ["soon"]);
        assert_eq!(wheel.len(), 1);
        assert!(wheel.cancel(never));
        assert_eq!(wheel.len(), 0);
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn queued_entries_are_small() {
        // Most of the queue's memory at load: one per pending (or not yet
        // dropped cancelled) timer.
        assert_eq!(std::mem::size_of::<Queued>(), 24);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_timer_never_fires_and_frees_its_target() {
        let wheel = Wheel::new();
        let t0 = Instant::now();
        let target = std::sync::Arc::new(());
        let a = wheel.schedule(Duration::from_millis(10), std::sync::Arc::clone(&target));
        let b = wheel.schedule(Duration::from_millis(20), std::sync::Arc::clone(&target));
        assert_eq!(std::sync::Arc::strong_count(&target), 3);
        assert!(wheel.cancel(a));
        assert!(!wheel.cancel(a), "cancelled twice");
        assert_eq!(std::sync::Arc::strong_count(&target), 2, "dropped at once");
        assert_eq!(wheel.len(), 1);
        assert_eq!(
            wheel.next_deadline(),
            Some(t0 + Duration::from_millis(20)),
            "the cancelled front is skipped"
        );
        let mut due = Vec::new();
        wheel.pop_due(t0 + Duration::from_millis(30), &mut due);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, b);
        assert!(!wheel.cancel(b), "already fired");
        assert_eq!(wheel.queued(), 0);
        // The slot is reused; the old ids do not touch the new timer.
        let c = wheel.schedule(Duration::from_millis(5), std::sync::Arc::clone(&target));
        assert!(!wheel.cancel(a) && !wheel.cancel(b));
        assert_eq!(wheel.len(), 1);
        assert!(wheel.cancel(c));
    }

    #[tokio::test(start_paused = true)]
    async fn trim_gives_back_the_slab_after_a_peak_and_old_ids_stay_stale() {
        let wheel = Wheel::new();
        let t0 = Instant::now();
        let peak: Vec<TimerId> = (0..8192)
            .map(|_| wheel.schedule(Duration::from_secs(32), "peak"))
            .collect();
        // Busy: a trim changes nothing.
        wheel.cancel_all(peak[4096..6000].iter().copied());
        wheel.trim();
        assert!(wheel.slab_capacity() >= 8192);
        // After the peak only the first timer is left.
        wheel.cancel_all(peak[1..4096].iter().chain(&peak[6000..]).copied());
        wheel.trim();
        assert!(wheel.slab_capacity() < 64, "{}", wheel.slab_capacity());
        assert_eq!(wheel.len(), 1);
        // The slots made again start past the old generations: an old id
        // cancels nothing.
        let again: Vec<TimerId> = (0..8191)
            .map(|_| wheel.schedule(Duration::from_secs(1), "again"))
            .collect();
        assert!(again.iter().any(|id| id.slot == peak[8191].slot));
        assert!(peak[1..].iter().all(|&old| !wheel.cancel(old)));
        let mut due = Vec::new();
        wheel.pop_due(t0 + Duration::from_secs(32), &mut due);
        assert_eq!(due.len(), 8192, "every timer fires");
        assert_eq!(targets(due).iter().filter(|&&t| t == "again").count(), 8191);
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn a_lane_makes_room_for_its_duration_of_timers() {
        // 3,000 a second of 32 s timers: 96,000.
        assert_eq!(lane_reserve(3000, 32_000_000_000, 1 << 20), 96_000);
        // Rounded up; at most the queue's reserve.
        assert_eq!(lane_reserve(3, 500_000_000, 100), 2);
        assert_eq!(lane_reserve(3000, 32_000_000_000, 50_000), 50_000);
        assert_eq!(lane_reserve(0, 32_000_000_000, 50_000), 0);
        assert_eq!(lane_reserve(usize::MAX, u64::MAX, 7), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reserved_queue_keeps_its_room_through_a_peak_and_its_trim() {
        let wheel: Wheel<u32> = Wheel::with_reserve(10_000, 100);
        assert!(wheel.slab_capacity() >= 10_000);
        // A 2 s lane has room for 200 timers, a 32 s one for 3,200.
        let first = wheel.schedule(Duration::from_secs(2), 0);
        assert!(wheel.lane_capacity(0) >= 200);
        let ids: Vec<TimerId> = (0..20_000)
            .map(|i| wheel.schedule(Duration::from_secs(32), i))
            .collect();
        assert!(wheel.lane_capacity(1) >= 20_000);
        let peak = wheel.slab_capacity();
        assert!(peak >= 20_001);
        wheel.cancel_all(ids.into_iter().chain([first]));
        wheel.trim();
        let slab = wheel.slab_capacity();
        assert!((10_000..peak).contains(&slab), "{slab} {peak}");
        let mut due = Vec::new();
        wheel.pop_due(Instant::now() + Duration::from_secs(60), &mut due);
        assert!(due.is_empty());
        wheel.trim();
        assert!(wheel.lane_capacity(0) >= 200);
        assert!((3_200..20_000).contains(&wheel.lane_capacity(1)));
        // Without a reserve the same queue gives everything back.
        let plain: Wheel<u32> = Wheel::new();
        let ids: Vec<TimerId> = (0..20_000)
            .map(|i| plain.schedule(Duration::from_secs(32), i))
            .collect();
        plain.cancel_all(ids);
        plain.trim();
        assert!(plain.slab_capacity() < 64);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_trim_the_lowest_free_slots_are_used_first() {
        let wheel = Wheel::new();
        let ids: Vec<TimerId> = (0..8192)
            .map(|_| wheel.schedule(Duration::from_secs(32), "x"))
            .collect();
        // Live at the front and the back: nothing to drop at the end yet.
        let keep = [ids[0], ids[8191]];
        wheel.cancel_all(ids.iter().copied().filter(|id| !keep.contains(id)));
        wheel.trim();
        assert!(wheel.slab_capacity() >= 8192);
        let next = wheel.schedule(Duration::from_secs(1), "y");
        assert_eq!(next.slot, 1, "the lowest free slot");
        // Once the last one is gone the end of the slab goes.
        wheel.cancel(ids[8191]);
        wheel.trim();
        assert!(wheel.slab_capacity() < 64, "{}", wheel.slab_capacity());
    }

    #[tokio::test(start_paused = true)]
    async fn timers_with_slack_fall_due_together_at_a_multiple_of_it() {
        let ms = Duration::from_millis;
        let wheel = Wheel::new();
        let t0 = Instant::now();
        let slack = ms(100);
        tokio::time::advance(ms(30)).await;
        {
            let mut batch = wheel.batch();
            batch.schedule_within(ms(1000), slack, "r1");
            batch.schedule(ms(1000), "e1");
        }
        tokio::time::advance(ms(40)).await;
        {
            let mut batch = wheel.batch();
            batch.schedule_within(ms(1000), slack, "r2");
            batch.schedule_within(ms(1000), Duration::ZERO, "e2");
            // On a multiple already: not moved.
            batch.schedule_within(ms(930), slack, "r3");
        }
        // Exact and rounded timers of one duration keep to their own
        // lanes: none goes to the heap.
        assert_eq!(wheel.lock().heap.len(), 0);
        assert_eq!(wheel.next_deadline(), Some(t0 + ms(1000)));
        let mut due = Vec::new();
        wheel.pop_due(t0 + ms(1099), &mut due);
        assert_eq!(targets(due), ["r3", "e1", "e2"]);
        let mut due = Vec::new();
        wheel.pop_due(t0 + ms(1100), &mut due);
        assert_eq!(
            targets(due),
            ["r1", "r2"],
            "at 1,030 and 1,070: both at 1,100"
        );
        assert_eq!(wheel.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_entries_stay_bounded_by_the_live_timers() {
        let wheel = Wheel::new();
        // One long timer stays live; short-lived ones are scheduled and
        // cancelled (transactions ending before their 64*T1 timer).
        let _keep = wheel.schedule(Duration::from_secs(32), 0u32);
        for i in 0..50_000u32 {
            let id = wheel.schedule(Duration::from_secs(32), i);
            wheel.cancel(id);
            assert!(wheel.queued() <= 2 * wheel.len() + COMPACT_MIN + 1);
        }
        assert_eq!(wheel.len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Schedule(u64),
        /// Duration and slack, ms.
        ScheduleWithin(u64, u64),
        Cancel(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            // Few distinct durations (lanes) and many (the heap): 0..40 ms
            // in steps of 1 ms exceeds MAX_LANES.
            (0u64..40).prop_map(Op::Schedule),
            (0u64..40, 0u64..4).prop_map(|(ms, s)| Op::ScheduleWithin(ms, s * 10)),
            (0usize..64).prop_map(Op::Cancel),
            (0u64..15).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// The queue fires exactly what a sorted list of (deadline,
        /// schedule order) minus the cancelled timers would, in that order.
        #[test]
        fn fires_like_a_sorted_list(ops in proptest::collection::vec(op(), 1..300)) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let wheel = Wheel::new();
                let t0 = Instant::now();
                let mut model: Vec<(Instant, usize, TimerId)> = Vec::new();
                let mut ids = Vec::new();
                let mut fired = Vec::new();
                let mut expected = Vec::new();
                for op in ops {
                    match op {
                        Op::Schedule(ms) => {
                            let n = ids.len();
                            let id = wheel.schedule(Duration::from_millis(ms), n);
                            model.push((Instant::now() + Duration::from_millis(ms), n, id));
                            ids.push(id);
                        }
                        Op::ScheduleWithin(ms, slack) => {
                            let n = ids.len();
                            let after = Duration::from_millis(ms);
                            let id = wheel
                                .batch()
                                .schedule_within(after, Duration::from_millis(slack), n);
                            // Up to the next multiple of the slack since t0.
                            let at = (Instant::now() + after - t0).as_millis() as u64;
                            let at = if slack > 0 { at.div_ceil(slack) * slack } else { at };
                            model.push((t0 + Duration::from_millis(at), n, id));
                            ids.push(id);
                        }
                        Op::Cancel(i) => {
                            if let Some(&id) = ids.get(i) {
                                let pending = model.iter().position(|m| m.2 == id);
                                prop_assert_eq!(wheel.cancel(id), pending.is_some());
                                if let Some(p) = pending {
                                    model.remove(p);
                                }
                            }
                        }
                        Op::Advance(ms) => {
                            tokio::time::advance(Duration::from_millis(ms)).await;
                            let now = Instant::now();
                            let mut due = Vec::new();
                            wheel.pop_due(now, &mut due);
                            fired.extend(due.into_iter().map(|(_, n)| n));
                            model.sort_by_key(|m| (m.0, m.1));
                            let split = model.partition_point(|m| m.0 <= now);
                            expected.extend(model.drain(..split).map(|m| m.1));
                        }
                    }
                    prop_assert_eq!(&fired, &expected);
                    prop_assert_eq!(wheel.len(), model.len());
                    let next = model.iter().map(|m| (m.0, m.1)).min().map(|m| m.0);
                    prop_assert_eq!(wheel.next_deadline(), next);
                }
                Ok(())
            })?;
        }
    }
}
