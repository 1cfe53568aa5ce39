//! The transaction layer's direct hand-off to its transaction user (TU):
//! instead of a channel and a task that reads it, the layer gives each item
//! to a [`TransactionUser`], which handles it at once on the layer's thread
//! when it can ([`Serial`]).
//!
//! A channel costs the TU's task a wake-up, a poll and a receive (with its
//! semaphore release) per item, ~0.5-0.7k instructions, and ~4.7 items
//! pass per call (docs/performance.md, "Session 9"). [`Serial`] runs each
//! item's future once, inline; only a future that has to wait (a send the
//! transport cannot take at once, a full CDR queue) goes on, boxed, in
//! one lane task, and the items after it wait behind it there.
//!
//! The layer calls [`TransactionUser::take`] with no table lock held (the
//! TU calls back into the layer while it handles an item), from its receive
//! step, its timer task, or a TU's own call into it (e.g. a send that fails
//! at once). An item that arrives while another is being handled (such a
//! nested call, or one while the lane is busy) is queued behind it, so items
//! are handled one at a time, in the order the layer gave them.
//!
//! A panic of the TU while it handles an item (making its future or
//! polling it, inline or in the lane) ends that item only: it is caught,
//! logged and counted ([`Serial::panics`], `tu_panics` in the daemon's exit
//! line), and the runner goes on with the next: the layer's receive loop
//! or timer task that ran the item inline neither unwinds nor stops.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use super::layer::{ClientEvent, Incoming};

/// What the layer hands to its TU: the items of the channel returned by
/// [`super::TransactionLayer::new`] and the events of client transactions
/// started with [`super::TransactionLayer::send_request_to`] without a
/// channel.
#[derive(Debug)]
pub enum TuItem {
    /// A new request, a 2xx ACK, a stray response or a server transaction
    /// event.
    Incoming(Incoming),
    /// An event of a client transaction.
    Client(ClientEvent),
}

/// Whether the TU may refuse an item when it is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// May be refused: a new request (the layer then answers it 503), or
    /// an item the peer retransmits (a provisional response, a 2xx ACK, a
    /// stray response), which the layer then drops.
    Refusable,
    /// Must be taken (queued beyond the bound if need be): a final
    /// response, a timeout or a transport error. Each transaction gives
    /// at most a few, so they are bounded by the transactions alive.
    Must,
}

/// A transaction user that takes the layer's items directly (see
/// [`super::TransactionLayer::set_user`]).
pub trait TransactionUser: Send + Sync {
    /// Takes `item`, or hands it back when full (only if `urgency` is
    /// [`Urgency::Refusable`]). Called with no lock of the layer held; it
    /// must not wait.
    // The item comes back as from a full channel (`TrySendError`), where
    // the caller needs it (a 503 to the request); nothing moves when it is
    // taken.
    #[allow(clippy::result_large_err)]
    fn take(&self, item: TuItem, urgency: Urgency) -> Result<(), TuItem>;

    /// Panics of the TU caught while it handled an item (each item's
    /// handling ended there, the next went on); 0 for a TU that does not
    /// catch them.
    fn panics(&self) -> u64 {
        0
    }
}

/// A future kept pinned in its box between runs (`None` when done), so
/// that an item handled inline needs no allocation.
type Slot<Fut> = Pin<Box<Option<Fut>>>;

/// What waits in a [`Serial`]'s queue.
enum Work<T, Fut> {
    /// An item not yet started.
    Item(T),
    /// An item started inline that has to wait: its future, to go on in
    /// the lane before anything queued.
    Rest(Slot<Fut>),
}

/// Who runs a [`Serial`]'s queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    /// No one: the queue is empty, the next item runs inline.
    Idle,
    /// The caller of [`Serial::take`] that runs an item inline (it runs
    /// what is queued meanwhile before it returns).
    Inline,
    /// The lane task.
    Lane,
}

struct State<T, Fut> {
    runner: Runner,
    queue: VecDeque<Work<T, Fut>>,
    /// The slot the inline runs use, kept between them.
    spare: Option<Slot<Fut>>,
    /// The lane task's waker while it waits for work.
    lane: Option<Waker>,
}

/// Runs items one at a time, in order, each through the future `run`
/// makes of it: inline (polled once in the caller of [`Serial::take`])
/// when nothing is queued or running, else queued. A future that is not
/// done after its inline poll goes to the lane (see [`Serial::lane`]),
/// ahead of what was queued; the lane then runs the queue until it is
/// empty, and items run inline again.
///
/// Refusable items are handed back ([`Urgency`]) once the queue holds
/// `capacity` entries (the rest of a waiting item counted).
pub struct Serial<T, F, Fut> {
    run: F,
    capacity: usize,
    state: Mutex<State<T, Fut>>,
    /// The waker of inline polls: a future not done there goes to the
    /// lane, which polls it again with its own before it waits.
    noop: Waker,
    /// Panics of the TU caught (see [`Serial::guarded`]).
    panics: AtomicU64,
}

struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
    fn wake_by_ref(self: &Arc<Self>) {}
}

impl<T, F, Fut> Serial<T, F, Fut>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// A serial runner of `run` queuing at most `capacity` refusable items.
    /// Start its [`Serial::lane`] in a task.
    pub fn new(capacity: usize, run: F) -> Arc<Self> {
        Arc::new(Serial {
            run,
            capacity: capacity.max(1),
            state: Mutex::new(State {
                runner: Runner::Idle,
                queue: VecDeque::new(),
                spare: None,
                lane: None,
            }),
            noop: Waker::from(Arc::new(NoopWake)),
            panics: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<T, Fut>> {
        // A panic while the state was held (none of the code under the
        // lock panics) leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Items queued and not yet started (the rest of a started one not
    /// counted).
    pub fn queued(&self) -> usize {
        self.lock()
            .queue
            .iter()
            .filter(|w| matches!(w, Work::Item(_)))
            .count()
    }

    /// Runs `item` now, or queues it behind what runs or waits; hands it
    /// back when it is refusable and the queue is full.
    pub fn take(&self, item: T, urgency: Urgency) -> Result<(), T> {
        let mut slot = {
            let mut st = self.lock();
            if st.runner != Runner::Idle {
                if urgency == Urgency::Refusable && st.queue.len() >= self.capacity {
                    return Err(item);
                }
                st.queue.push_back(Work::Item(item));
                return Ok(());
            }
            st.runner = Runner::Inline;
            st.spare.take().unwrap_or_else(|| Box::pin(None))
        };
        let mut next = item;
        loop {
            // A panic in the TU (making the future or polling it) must not
            // unwind into the layer's step (the receive loop, the timer
            // task) nor leave the runner taken: it ends that item only.
            let done = self
                .guarded(|| {
                    slot.set(Some((self.run)(next)));
                    let mut cx = Context::from_waker(&self.noop);
                    match slot.as_mut().as_pin_mut() {
                        Some(fut) => fut.poll(&mut cx).is_ready(),
                        None => true,
                    }
                })
                .unwrap_or(true);
            if done {
                // Dropped before the lock is taken: a future whose drop
                // calls into the layer (which may hand this runner an item)
                // must not find it held.
                self.guarded(|| slot.set(None));
            }
            let mut st = self.lock();
            if !done {
                // The lane goes on with it, then with what is queued.
                st.queue.push_front(Work::Rest(slot));
                st.runner = Runner::Lane;
                let lane = st.lane.take();
                drop(st);
                if let Some(lane) = lane {
                    lane.wake();
                }
                return Ok(());
            }
            match st.queue.pop_front() {
                Some(Work::Item(item)) => next = item,
                Some(rest @ Work::Rest(_)) => {
                    // Only the lane queues a rest; kept first for it.
                    st.queue.push_front(rest);
                    st.runner = Runner::Lane;
                    st.spare = Some(slot);
                    let lane = st.lane.take();
                    drop(st);
                    if let Some(lane) = lane {
                        lane.wake();
                    }
                    return Ok(());
                }
                None => {
                    st.runner = Runner::Idle;
                    st.spare = Some(slot);
                    return Ok(());
                }
            }
        }
    }

    /// Runs `f`, a piece of the TU's work; a panic in it is caught, logged
    /// and counted ([`Serial::panics`]), and gives `None`: the item it
    /// belongs to is over, the runner goes on with the next.
    fn guarded<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        match std::panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => Some(r),
            Err(payload) => {
                self.panics.fetch_add(1, Ordering::Relaxed);
                let what = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(not a string)");
                tracing::error!(panic = what, "transaction user panicked; item dropped");
                None
            }
        }
    }

    /// Panics of the TU caught so far (each ended the item it was handling).
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// The next piece of work handed to the lane; releases the queue to
    /// inline runs when it is empty.
    fn next_for_lane(&self, cx: &mut Context<'_>) -> Poll<Work<T, Fut>> {
        let mut st = self.lock();
        if st.runner == Runner::Lane {
            if let Some(work) = st.queue.pop_front() {
                return Poll::Ready(work);
            }
            st.runner = Runner::Idle;
        }
        st.lane = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The lane: runs, in order, the futures that had to wait and the
    /// items queued behind them. Runs until dropped (abort its task at
    /// shutdown).
    pub async fn lane(self: Arc<Self>) {
        let mut own: Slot<Fut> = Box::pin(None);
        loop {
            let work = std::future::poll_fn(|cx| self.next_for_lane(cx)).await;
            match work {
                Work::Rest(mut rest) => self.run_slot(&mut rest).await,
                Work::Item(item) => {
                    // A panic here leaves the slot empty: run_slot is then
                    // done at once.
                    self.guarded(|| own.set(Some((self.run)(item))));
                    self.run_slot(&mut own).await;
                }
            }
        }
    }

    /// Runs the future in `slot` to its end (or its panic, see
    /// [`Serial::guarded`]) and empties the slot.
    async fn run_slot(&self, slot: &mut Slot<Fut>) {
        std::future::poll_fn(|cx| match slot.as_mut().as_pin_mut() {
            Some(fut) => self.guarded(|| fut.poll(cx)).unwrap_or(Poll::Ready(())),
            None => Poll::Ready(()),
        })
        .await;
        self.guarded(|| slot.set(None));
    }
}

impl<F, Fut> TransactionUser for Serial<TuItem, F, Fut>
where
    F: Fn(TuItem) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn take(&self, item: TuItem, urgency: Urgency) -> Result<(), TuItem> {
        Serial::take(self, item, urgency)
    }

    fn panics(&self) -> u64 {
        Serial::panics(self)
    }
}

impl<T, F, Fut> std::fmt::Debug for Serial<T, F, Fut> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serial")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Weak;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// Items: (number, whether it waits for the gate first).
    type Log = Arc<Mutex<Vec<u32>>>;

    fn serial(capacity: usize, log: &Log, gate: &Arc<Notify>) -> Arc<TestSerial<(u32, bool)>> {
        let (log, gate) = (Arc::clone(log), Arc::clone(gate));
        let run: Run<(u32, bool)> = Box::new(move |(n, wait)| -> BoxFut {
            let (log, gate) = (Arc::clone(&log), Arc::clone(&gate));
            Box::pin(async move {
                if wait {
                    gate.notified().await;
                }
                log.lock().unwrap().push(n);
            })
        });
        Serial::new(capacity, run)
    }

    type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;
    type Run<T> = Box<dyn Fn(T) -> BoxFut + Send + Sync>;
    type TestSerial<T> = Serial<T, Run<T>, BoxFut>;

    fn logged(log: &Log) -> Vec<u32> {
        log.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn items_run_inline_until_one_waits_then_in_order_through_the_lane() {
        let (log, gate) = (Log::default(), Arc::new(Notify::new()));
        let s = serial(3, &log, &gate);
        let lane = tokio::spawn(Arc::clone(&s).lane());
        s.take((1, false), Urgency::Refusable).unwrap();
        assert_eq!(logged(&log), [1], "ran inline, before take returned");
        // 2 waits: it goes to the lane; 3 and 4 queue behind it.
        s.take((2, true), Urgency::Refusable).unwrap();
        s.take((3, false), Urgency::Refusable).unwrap();
        s.take((4, false), Urgency::Refusable).unwrap();
        // The queue (2's rest, 3, 4) is full for refusable items...
        assert_eq!(s.take((5, false), Urgency::Refusable), Err((5, false)));
        // ...but takes what must be taken.
        s.take((6, false), Urgency::Must).unwrap();
        assert_eq!(s.queued(), 3);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(logged(&log), [1], "nothing overtakes the waiting item");
        gate.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(logged(&log), [1, 2, 3, 4, 6]);
        // The lane has emptied its queue: items run inline again.
        s.take((7, false), Urgency::Refusable).unwrap();
        assert_eq!(logged(&log), [1, 2, 3, 4, 6, 7]);
        lane.abort();
    }

    /// An item given while one runs inline (a nested call: the TU calls
    /// into the layer, which hands it something) runs after it, not
    /// inside it.
    #[tokio::test(start_paused = true)]
    async fn an_item_given_while_one_runs_runs_after_it() {
        let log = Log::default();
        let me: Arc<Mutex<Weak<TestSerial<u32>>>> = Arc::default();
        let run: Run<u32> = {
            let (log, me) = (Arc::clone(&log), Arc::clone(&me));
            Box::new(move |n| {
                log.lock().unwrap().push(n * 10);
                if n == 1 {
                    let s = me.lock().unwrap().upgrade().unwrap();
                    s.take(2, Urgency::Refusable).unwrap();
                    s.take(3, Urgency::Refusable).unwrap();
                }
                let log = Arc::clone(&log);
                Box::pin(async move { log.lock().unwrap().push(n) })
            })
        };
        let s = Serial::new(4, run);
        *me.lock().unwrap() = Arc::downgrade(&s);
        let lane = tokio::spawn(Arc::clone(&s).lane());
        s.take(1, Urgency::Refusable).unwrap();
        assert_eq!(logged(&log), [10, 1, 20, 2, 30, 3]);
        lane.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_inline_run_needs_no_allocation_after_the_first() {
        let runs = Arc::new(AtomicUsize::new(0));
        let s = {
            let runs = Arc::clone(&runs);
            Serial::new(1, move |()| {
                runs.fetch_add(1, Ordering::Relaxed);
                async {}
            })
        };
        s.take((), Urgency::Refusable).unwrap();
        let first = s
            .lock()
            .spare
            .as_ref()
            .map(|b| b.as_ref().get_ref() as *const _);
        s.take((), Urgency::Refusable).unwrap();
        let second = s
            .lock()
            .spare
            .as_ref()
            .map(|b| b.as_ref().get_ref() as *const _);
        assert!(first.is_some());
        assert_eq!(first, second, "the same box is reused");
        assert_eq!(runs.load(Ordering::Relaxed), 2);
    }

    /// Items: (number, whether it waits for the gate first, whether it
    /// then panics). Logged when they end without a panic.
    fn panicking(log: &Log, gate: &Arc<Notify>) -> Arc<TestSerial<(u32, bool, bool)>> {
        let (log, gate) = (Arc::clone(log), Arc::clone(gate));
        let run: Run<(u32, bool, bool)> = Box::new(move |(n, wait, panic)| -> BoxFut {
            let (log, gate) = (Arc::clone(&log), Arc::clone(&gate));
            Box::pin(async move {
                if wait {
                    gate.notified().await;
                }
                assert!(!panic, "item {n} panics");
                log.lock().unwrap().push(n);
            })
        });
        Serial::new(8, run)
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_inline_ends_its_item_only() {
        let (log, gate) = (Log::default(), Arc::new(Notify::new()));
        let s = panicking(&log, &gate);
        let lane = tokio::spawn(Arc::clone(&s).lane());
        s.take((1, false, false), Urgency::Refusable).unwrap();
        s.take((2, false, true), Urgency::Refusable).unwrap();
        assert_eq!(s.panics(), 1);
        // Still run inline, before take returns.
        s.take((3, false, false), Urgency::Refusable).unwrap();
        assert_eq!(logged(&log), [1, 3]);
        lane.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_in_the_lane_ends_its_item_only() {
        let (log, gate) = (Log::default(), Arc::new(Notify::new()));
        let s = panicking(&log, &gate);
        let lane = tokio::spawn(Arc::clone(&s).lane());
        // 1 waits, then panics in the lane; 2 panics when the lane starts
        // it; 3 and 4 queue behind them.
        s.take((1, true, true), Urgency::Refusable).unwrap();
        s.take((2, false, true), Urgency::Refusable).unwrap();
        s.take((3, false, false), Urgency::Refusable).unwrap();
        s.take((4, true, false), Urgency::Refusable).unwrap();
        gate.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(s.panics(), 2);
        assert_eq!(logged(&log), [3]);
        gate.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(logged(&log), [3, 4]);
        // The lane emptied its queue: items run inline again.
        s.take((5, false, false), Urgency::Refusable).unwrap();
        assert_eq!(logged(&log), [3, 4, 5]);
        assert!(!lane.is_finished(), "the lane goes on");
        lane.abort();
    }

    /// A future dropped when done may call into the layer, which may hand
    /// the runner an item: it is queued, not a deadlock.
    #[tokio::test(start_paused = true)]
    async fn a_future_dropped_when_done_may_hand_over_an_item() {
        struct OnDrop(Box<dyn FnMut() + Send>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                (self.0)()
            }
        }
        struct Done(#[allow(dead_code)] OnDrop);
        impl Future for Done {
            type Output = ();
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
                Poll::Ready(())
            }
        }
        let log = Log::default();
        let me: Arc<Mutex<Weak<TestSerial<u32>>>> = Arc::default();
        let run: Run<u32> = {
            let (log, me) = (Arc::clone(&log), Arc::clone(&me));
            Box::new(move |n| {
                let me = Arc::clone(&me);
                let guard = OnDrop(Box::new(move || {
                    if n == 1 {
                        let s = me.lock().unwrap().upgrade().unwrap();
                        s.take(2, Urgency::Refusable).unwrap();
                    }
                }));
                log.lock().unwrap().push(n);
                // Ready at once; the guard is dropped with the future
                // (an async block would drop it inside its last poll).
                Box::pin(Done(guard))
            })
        };
        let s = Serial::new(4, run);
        *me.lock().unwrap() = Arc::downgrade(&s);
        let lane = tokio::spawn(Arc::clone(&s).lane());
        s.take(1, Urgency::Refusable).unwrap();
        assert_eq!(logged(&log), [1, 2]);
        lane.abort();
    }
}
