//! Memory of the INVITEs the transport refused statelessly (503, inbound
//! queue full), so that their retransmissions get the same answer and the
//! refusal is reported once.
//!
//! A stateless 503 leaves no transaction behind. When it is lost (UDP,
//! under exactly the load that caused it), the caller retransmits the
//! INVITE (RFC 3261 §17.1.1.2, until Timer B = 64×T1). Without this memory
//! the retransmission was a new request: refused again it gave the
//! [`RefusalObserver`](super::RefusalObserver) a second report (a second
//! CDR line for one call attempt, SPEC §2.5), and finding room in the queue
//! it became a call although the caller may already hold our 503.
//!
//! A request is recognised by a keyed 64-bit hash of its Call-ID, CSeq and
//! first Via field (branch and sent-by), the parts a retransmission repeats
//! byte for byte; a new transaction has a new branch, a new request in the
//! dialog a new CSeq. The hasher is seeded per process, so nobody outside
//! can aim at another caller's hash; two different INVITEs sharing one
//! among the at most [`CAPACITY`] remembered is a chance of about 2^-48 per
//! INVITE. Entries are forgotten after their lifetime (Timer B, after which
//! no caller retransmits) or, past [`CAPACITY`], oldest first: memory stays
//! bounded (under 3 MiB) however long an overload lasts.
//!
//! The To tag of these 503s is derived from the same hash, so the answers
//! to an INVITE and to its retransmissions are identical, as RFC 3261
//! §8.2.7 asks of a stateless UAS.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::sip::{HeaderName, Request};

/// Most refused INVITEs remembered at once.
pub(crate) const CAPACITY: usize = 65_536;

/// The identity of a request for this memory (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RefusalKey(u64);

/// The refused INVITEs of the last `lifetime`, at most [`CAPACITY`].
#[derive(Debug)]
pub(crate) struct RefusedInvites {
    lifetime: Duration,
    hasher: foldhash::fast::RandomState,
    /// Seeds the To tags; separate from `hasher` so a tag (on the wire)
    /// tells nothing about the keys.
    tag_hasher: foldhash::fast::RandomState,
    /// Whether anything is remembered: the common no-overload case costs
    /// one relaxed load per INVITE, no lock.
    any: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashSet<RefusalKey, foldhash::fast::RandomState>,
    /// Insertion order, for expiry and eviction.
    order: VecDeque<(Instant, RefusalKey)>,
}

impl Inner {
    /// Forgets what is `lifetime` old at `now`.
    fn expire(&mut self, now: Instant, lifetime: Duration) {
        while let Some(&(at, key)) = self.order.front() {
            if now.saturating_duration_since(at) < lifetime {
                break;
            }
            self.forget_oldest(key);
        }
    }

    /// Drops the front entry, whose key is `key`.
    fn forget_oldest(&mut self, key: RefusalKey) {
        self.order.pop_front();
        self.keys.remove(&key);
    }
}

impl RefusedInvites {
    /// A memory whose entries live `lifetime` (64×T1: Timer B).
    pub(crate) fn new(lifetime: Duration) -> Self {
        RefusedInvites {
            lifetime,
            hasher: foldhash::fast::RandomState::default(),
            tag_hasher: foldhash::fast::RandomState::default(),
            any: AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The key of `req`: its Call-ID, CSeq and first Via field as received
    /// (a missing one hashes as empty; such requests are refused anyway).
    pub(crate) fn key(&self, req: &Request) -> RefusalKey {
        let field = |name: &HeaderName| {
            req.headers
                .get(name)
                .map(|v| v.trim_ascii())
                .unwrap_or_default()
        };
        RefusalKey(self.hasher.hash_one((
            field(&HeaderName::CallId),
            field(&HeaderName::CSeq),
            field(&HeaderName::Via),
        )))
    }

    /// The To tag of the 503 answering the request with `key`: the same
    /// for every retransmission (RFC 3261 §8.2.7), 64 bits as §19.3 asks.
    pub(crate) fn to_tag(&self, key: RefusalKey) -> String {
        format!("{:016x}", self.tag_hasher.hash_one(key.0))
    }

    /// Whether anything is remembered (cheap; check it before building a
    /// key for [`RefusedInvites::contains`]).
    pub(crate) fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Relaxed)
    }

    /// Whether the request with `key` was refused within the lifetime
    /// before `now`.
    pub(crate) fn contains(&self, key: RefusalKey, now: Instant) -> bool {
        let mut inner = self.lock();
        inner.expire(now, self.lifetime);
        self.any.store(!inner.order.is_empty(), Ordering::Relaxed);
        inner.keys.contains(&key)
    }

    /// Remembers that the request with `key` was refused at `now`.
    pub(crate) fn insert(&self, key: RefusalKey, now: Instant) {
        let mut inner = self.lock();
        inner.expire(now, self.lifetime);
        if !inner.keys.contains(&key) {
            if inner.order.len() >= CAPACITY {
                if let Some(&(_, oldest)) = inner.order.front() {
                    inner.forget_oldest(oldest);
                }
            }
            inner.keys.insert(key);
            inner.order.push_back((now, key));
        }
        self.any.store(true, Ordering::Relaxed);
    }

    /// How many refusals are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().order.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The set stays consistent even if a holder panicked: every
        // mutation is a single insert/remove pair.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::sip::{parse_datagram, Limits, Message};

    fn invite(branch: &str, call_id: &str, cseq: u32) -> Request {
        let text = format!(
            "INVITE sip:+74951234567@vpbx.example.net SIP/2.0\r\n\
             Via: SIP/2.0/UDP 198.51.100.7:5060;branch={branch}\r\n\
             From: <sip:+79161234567@carrier.example>;tag=a\r\n\
             To: <sip:+74951234567@vpbx.example.net>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} INVITE\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match parse_datagram(Bytes::from(text), &Limits::default()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn a_retransmission_has_the_key_and_tag_of_its_original_and_nothing_else_does() {
        let memory = RefusedInvites::new(Duration::from_secs(32));
        let original = memory.key(&invite("z9hG4bK1", "c1", 1));
        assert_eq!(original, memory.key(&invite("z9hG4bK1", "c1", 1)));
        assert_ne!(original, memory.key(&invite("z9hG4bK2", "c1", 1)));
        assert_ne!(original, memory.key(&invite("z9hG4bK1", "c2", 1)));
        assert_ne!(original, memory.key(&invite("z9hG4bK1", "c1", 2)));
        let tag = memory.to_tag(original);
        assert_eq!(tag.len(), 16);
        assert_eq!(tag, memory.to_tag(memory.key(&invite("z9hG4bK1", "c1", 1))));
        assert_ne!(tag, memory.to_tag(memory.key(&invite("z9hG4bK2", "c1", 1))));
    }

    #[test]
    fn refusals_are_remembered_for_their_lifetime() {
        let memory = RefusedInvites::new(Duration::from_secs(32));
        let t0 = Instant::now();
        let a = memory.key(&invite("z9hG4bKa", "a", 1));
        let b = memory.key(&invite("z9hG4bKb", "b", 1));
        assert!(memory.is_empty());
        assert!(!memory.contains(a, t0));
        memory.insert(a, t0);
        assert!(!memory.is_empty());
        memory.insert(b, t0 + Duration::from_secs(10));
        assert!(memory.contains(a, t0 + Duration::from_millis(31_999)));
        assert!(!memory.contains(a, t0 + Duration::from_secs(32)));
        assert!(memory.contains(b, t0 + Duration::from_secs(32)));
        assert!(!memory.is_empty());
        assert!(!memory.contains(b, t0 + Duration::from_secs(42)));
        assert!(memory.is_empty(), "all expired: back to the lock-free path");
        assert_eq!(memory.len(), 0);
    }

    #[test]
    fn the_memory_is_bounded_and_forgets_the_oldest_first() {
        let memory = RefusedInvites::new(Duration::from_secs(32));
        let now = Instant::now();
        let keys: Vec<RefusalKey> = (0..CAPACITY + 10).map(|i| RefusalKey(i as u64)).collect();
        for &k in &keys {
            memory.insert(k, now);
        }
        assert_eq!(memory.len(), CAPACITY);
        assert!(!memory.contains(keys[9], now));
        assert!(memory.contains(keys[10], now));
        assert!(memory.contains(keys[CAPACITY + 9], now));
        // Remembering one again does not add a second entry.
        memory.insert(keys[CAPACITY + 9], now);
        assert_eq!(memory.len(), CAPACITY);
    }
}
