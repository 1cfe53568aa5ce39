//! Admission of new INVITEs before any call state exists: Max-Forwards
//! (483), loops (482), overload (max concurrent calls, max calls per second)
//! and drain (503 with Retry-After). Never a silent drop.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sip::{Request, StatusCode};

use super::ids::BRANCH_PREFIX;
use super::FinishReason;

/// Why a new INVITE is refused, with the status to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Max-Forwards is 0 (RFC 3261 §16.3 item 2 applied to our UAS): 483.
    #[error("Max-Forwards exhausted")]
    TooManyHops,
    /// The INVITE carries a Via branch of ours, or repeats a call we already
    /// have under a new branch (RFC 3261 §8.2.2.2 merged request): 482.
    #[error("loop detected")]
    Loop,
    /// Too many calls at once: 503.
    #[error("too many concurrent calls")]
    TooManyCalls,
    /// Calls per second above the limit: 503.
    #[error("call rate above the limit")]
    RateLimited,
    /// The daemon is draining for shutdown: 503.
    #[error("shutting down")]
    Draining,
}

impl Refusal {
    /// The status to answer.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::TooManyHops => StatusCode::TOO_MANY_HOPS,
            Refusal::Loop => StatusCode::LOOP_DETECTED,
            Refusal::TooManyCalls | Refusal::RateLimited | Refusal::Draining => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The CDR finish reason.
    pub fn finish_reason(self) -> FinishReason {
        match self {
            Refusal::TooManyHops | Refusal::Loop => FinishReason::Rejected,
            _ => FinishReason::Overload,
        }
    }
}

/// Checks that depend only on the INVITE: Max-Forwards and our own branch
/// in its Via list (the INVITE went out through us and came back).
pub fn check_invite(invite: &Request) -> Result<(), Refusal> {
    if matches!(invite.max_forwards(), Ok(Some(0))) {
        return Err(Refusal::TooManyHops);
    }
    // Our marker must appear in the raw Via text for any branch to carry
    // it: the usual case (it does not) needs no Via parsed.
    let marked = invite
        .headers
        .get_all(&crate::sip::HeaderName::Via)
        .any(|v| memchr::memmem::find(v, BRANCH_PREFIX.as_bytes()).is_some());
    if !marked {
        return Ok(());
    }
    if let Ok(vias) = invite.via() {
        if vias
            .iter()
            .any(|v| v.branch().is_some_and(|b| b.starts_with(BRANCH_PREFIX)))
        {
            return Err(Refusal::Loop);
        }
    }
    Ok(())
}

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Limits for new calls.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most calls alive at once.
    pub max_calls: usize,
    /// Most new calls per second (0: no limit).
    pub max_cps: u32,
    /// Retry-After of our 503s.
    pub retry_after: Duration,
}

/// Counts live calls and new calls per second; shared by all calls.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    active: Arc<AtomicUsize>,
    bucket: Option<Mutex<TokenBucket>>,
    draining: AtomicBool,
}

/// One admitted call's place in the concurrent-call count, given back when
/// dropped (so every end path, including a panic unwinding, frees it).
#[derive(Debug)]
pub struct CallSlot(Arc<AtomicUsize>);

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// Admission with these limits.
    pub fn new(limits: Limits, now: Instant) -> Admission {
        let bucket = (limits.max_cps > 0).then(|| {
            let rate = f64::from(limits.max_cps);
            // One tenth of a second of burst absorbs SIPp's send granularity.
            Mutex::new(TokenBucket::new(rate, (rate / 10.0).max(1.0), now))
        });
        Admission {
            limits,
            active: Arc::new(AtomicUsize::new(0)),
            bucket,
            draining: AtomicBool::new(false),
        }
    }

    /// Retry-After of our 503s.
    pub fn retry_after(&self) -> Duration {
        self.limits.retry_after
    }

    /// Calls alive now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Refuse every new call from now on (SIGTERM drain).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Takes a slot for a new call, or says why not.
    pub fn admit(&self, now: Instant) -> Result<CallSlot, Refusal> {
        if self.draining.load(Ordering::Acquire) {
            return Err(Refusal::Draining);
        }
        let prev = self.active.fetch_add(1, Ordering::AcqRel);
        let slot = CallSlot(Arc::clone(&self.active));
        if prev >= self.limits.max_calls {
            return Err(Refusal::TooManyCalls);
        }
        if let Some(bucket) = &self.bucket {
            let ok = match bucket.lock() {
                Ok(mut b) => b.try_take(now),
                Err(poisoned) => poisoned.into_inner().try_take(now),
            };
            if !ok {
                return Err(Refusal::RateLimited);
            }
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_calls: usize, max_cps: u32) -> Limits {
        Limits {
            max_calls,
            max_cps,
            retry_after: Duration::from_secs(5),
        }
    }

    #[test]
    fn concurrent_calls_are_capped_and_slots_come_back() {
        let now = Instant::now();
        let a = Admission::new(limits(2, 0), now);
        let s1 = a.admit(now).unwrap();
        let _s2 = a.admit(now).unwrap();
        assert_eq!(a.admit(now).unwrap_err(), Refusal::TooManyCalls);
        assert_eq!(a.active(), 2);
        drop(s1);
        assert_eq!(a.active(), 1);
        assert!(a.admit(now).is_ok());
    }

    #[test]
    fn call_rate_is_a_token_bucket() {
        let now = Instant::now();
        let a = Admission::new(limits(1000, 20), now);
        // Burst of 2 (a tenth of a second), then one more every 50 ms.
        let mut slots = vec![a.admit(now).unwrap(), a.admit(now).unwrap()];
        assert_eq!(a.admit(now).unwrap_err(), Refusal::RateLimited);
        slots.push(a.admit(now + Duration::from_millis(50)).unwrap());
        assert_eq!(
            a.admit(now + Duration::from_millis(50)).unwrap_err(),
            Refusal::RateLimited
        );
        assert_eq!(a.active(), 3);
    }

    fn invite(max_forwards: u32, extra_via: &str) -> Request {
        let text = format!(
            "INVITE sip:+74951234567@h SIP/2.0\r\n{extra_via}\
             Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nMax-Forwards: {max_forwards}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match crate::sip::parse_datagram(text.into(), &crate::sip::Limits::default()).unwrap() {
            crate::sip::Message::Request(r) => r,
            crate::sip::Message::Response(_) => panic!("not a request"),
        }
    }

    #[test]
    fn max_forwards_zero_is_483_and_our_own_branch_is_a_loop() {
        assert_eq!(check_invite(&invite(70, "")), Ok(()));
        assert_eq!(check_invite(&invite(0, "")), Err(Refusal::TooManyHops));
        assert_eq!(Refusal::TooManyHops.status().as_u16(), 483);
        let ours = format!(
            "Via: SIP/2.0/UDP 192.0.2.9;branch={}\r\n",
            super::super::ids::branch_for(3, super::super::call::Leg::Outbound, 1)
        );
        assert_eq!(check_invite(&invite(69, &ours)), Err(Refusal::Loop));
        assert_eq!(Refusal::Loop.status().as_u16(), 482);
        // Our branch as the second value of a combined Via line.
        let combined = format!(
            "Via: SIP/2.0/UDP 192.0.2.8;branch=z9hG4bKx, {}",
            ours.trim_start_matches("Via: ")
        );
        assert_eq!(check_invite(&invite(69, &combined)), Err(Refusal::Loop));
        // The marker text elsewhere than at the start of a branch is no loop.
        let elsewhere =
            "Via: SIP/2.0/UDP 192.0.2.8;branch=z9hG4bKxz9hG4bKvpbx-1-o1-0;x=z9hG4bKvpbx\r\n";
        assert_eq!(check_invite(&invite(69, elsewhere)), Ok(()));
    }

    #[test]
    fn draining_refuses_everything() {
        let now = Instant::now();
        let a = Admission::new(limits(10, 0), now);
        a.start_draining();
        let r = a.admit(now).unwrap_err();
        assert_eq!(r, Refusal::Draining);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.finish_reason(), FinishReason::Overload);
        assert_eq!(a.active(), 0);
    }
}
