//! RFC 3261 §17 timer values (Table 4 of RFC 3261, plus Timers L and M of
//! RFC 6026) and the configuration they derive from.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Base timer values of RFC 3261 §17.1.1.1 / Table 4, from which every
/// transaction timer is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimerConfig {
    /// T1: RTT estimate; the first retransmission interval (default 500 ms).
    #[serde(with = "humantime_serde")]
    pub t1: Duration,
    /// T2: the maximum retransmission interval for non-INVITE requests and
    /// INVITE responses (default 4 s).
    #[serde(with = "humantime_serde")]
    pub t2: Duration,
    /// T4: the maximum time a message stays in the network (default 5 s).
    #[serde(with = "humantime_serde")]
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// How long an INVITE server transaction waits for the TU's first
/// provisional response before sending 100 (Trying) itself (§17.2.1).
pub const TRYING_DELAY: Duration = Duration::from_millis(200);

/// How long an INVITE may wait for the TU's final response before its
/// server transaction answers 408 itself (Timer Unanswered, checked every
/// 64*T1, so the answer comes at the first check at or past this). Not in
/// RFC 3261's transaction layer; like a proxy's Timer C (§16.6 step 11,
/// "greater than 3 minutes") it keeps a stuck TU from leaking transactions
/// and callers from ringing forever.
pub const UNANSWERED_INVITE: Duration = Duration::from_secs(180);

/// Timer D's value over unreliable transports: "at least 32 seconds"
/// (§17.1.1.2), the longest a server keeps retransmitting its final response.
const TIMER_D_UNRELIABLE: Duration = Duration::from_secs(32);

impl TimerConfig {
    /// 64*T1: the value of Timers B, F, H, J (unreliable), L and M.
    pub fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// How long a retransmission timer that found the receive side behind
    /// waits before it looks again (see [`Timer::retransmits`]): T1/5,
    /// 100 ms by default.
    pub fn deferral(&self) -> Duration {
        self.t1 / 5
    }

    /// How much later than its value a timer that ends a lingering
    /// transaction ([`Timer::ends_lingering`]: D, I, J, K, L, M) may fire:
    /// T1/5, 100 ms by default. Those timers only bound how long
    /// retransmissions are absorbed (RFC 3261 §17 wants them to last *at
    /// least* their value), so the layer rounds their deadlines up to a
    /// multiple of this, and the expiries of the transactions that ended
    /// within it share one wake-up of the timer task. Timers B and
    /// Unanswered are rounded the same way ([`Timer::may_fire_late`]).
    pub fn ending_slack(&self) -> Duration {
        self.t1 / 5
    }

    /// How many times a retransmission armed `interval` after its
    /// message went out may be held back (each for
    /// [`TimerConfig::deferral`]): as many as fit in `interval`, so it goes
    /// out at most one interval of its own late (at the latest when its
    /// next one would be due), whether or not the receive side has drained.
    /// 0 when the deferral is zero.
    pub fn deferrals_within(&self, interval: Duration) -> u16 {
        let step = self.deferral().as_nanos();
        let n = interval.as_nanos().checked_div(step).unwrap_or(0);
        u16::try_from(n).unwrap_or(u16::MAX)
    }

    /// The duration a timer is first scheduled with, per Table 4.
    /// `reliable` is true for TCP/TLS/SCTP, where the retransmission timers
    /// (A, E, G) are not used and D, I, J, K are zero.
    pub fn initial(&self, timer: Timer, reliable: bool) -> Duration {
        let unless_reliable = |d: Duration| if reliable { Duration::ZERO } else { d };
        match timer {
            Timer::A | Timer::E | Timer::G | Timer::Retransmit2xx => self.t1,
            Timer::B | Timer::F | Timer::H | Timer::L | Timer::M | Timer::Cancelled => self.t1x64(),
            Timer::D => unless_reliable(TIMER_D_UNRELIABLE.max(self.t1x64())),
            Timer::I | Timer::K => unless_reliable(self.t4),
            Timer::J => unless_reliable(self.t1x64()),
            Timer::Trying => TRYING_DELAY,
            // The period of the check (INVITE) / the whole wait (non-INVITE).
            Timer::Unanswered => self.t1x64(),
        }
    }
}

/// The timers of RFC 3261 §17 (Table 4) and RFC 6026, named as there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE request retransmission (client, unreliable only).
    A,
    /// INVITE transaction timeout (client).
    B,
    /// Wait time for response retransmissions in Completed (INVITE client).
    D,
    /// Non-INVITE request retransmission (client, unreliable only).
    E,
    /// Non-INVITE transaction timeout (client).
    F,
    /// INVITE final response retransmission (server, unreliable only).
    G,
    /// Wait time for ACK receipt (INVITE server).
    H,
    /// Wait time for ACK retransmissions in Confirmed (INVITE server).
    I,
    /// Wait time for non-INVITE request retransmissions (server).
    J,
    /// Wait time for response retransmissions (non-INVITE client).
    K,
    /// Wait time for INVITE retransmissions in Accepted (server, RFC 6026).
    L,
    /// Wait time for 2xx retransmissions in Accepted (client, RFC 6026).
    M,
    /// The 200 ms after which an INVITE server transaction sends 100 (Trying)
    /// itself when the TU has not answered (§17.2.1; unnamed in the RFC).
    Trying,
    /// The 64*T1 an INVITE client transaction waits for a final response
    /// after its CANCEL was sent before giving up (§9.1; unnamed in the RFC).
    Cancelled,
    /// The UAS core's 2xx retransmission interval: T1 doubling up to T2
    /// until the ACK arrives (§13.3.1.4; unnamed in the RFC).
    Retransmit2xx,
    /// The longest a server transaction waits for the TU's final response:
    /// [`UNANSWERED_INVITE`] for INVITE (then 408), 64*T1 for non-INVITE
    /// (when the client has given up with Timer F). Not in RFC 3261.
    Unanswered,
}

impl Timer {
    /// A timer that resends a message until the peer's answer arrives:
    /// A and E (requests), G and the 2xx retransmission (responses, until
    /// the ACK). When one is due while the transport has not drained its
    /// receive side since the message was last sent, the answer may be
    /// waiting there unread: the layer then holds the retransmission back
    /// for [`TimerConfig::deferral`] and looks again, at most one interval
    /// of its own ([`TimerConfig::deferrals_within`]).
    pub fn retransmits(self) -> bool {
        matches!(self, Timer::A | Timer::E | Timer::G | Timer::Retransmit2xx)
    }

    /// A timer the layer may fire up to [`TimerConfig::ending_slack`]
    /// late, so that its deadline is rounded up to a multiple of it: the
    /// timers that end lingering transactions ([`Timer::ends_lingering`]),
    /// which only bound how long retransmissions are absorbed, and Timers
    /// B and Unanswered, which bound how long a final response is awaited
    /// (RFC 3261 §17.1.1.2 wants B to fire *after* 64*T1, not exactly
    /// then). A transaction's B or Unanswered, made unwanted by the final
    /// response that arms its D, J, L or M of the same duration, then is
    /// most often due at the same rounded instant, and the layer lets the
    /// new timer take over its queue entry instead of cancelling one and
    /// scheduling the other.
    pub fn may_fire_late(self) -> bool {
        self.ends_lingering() || matches!(self, Timer::B | Timer::Unanswered)
    }

    /// A timer that ends a transaction lingering after its final response
    /// (D, I, J, K, L, M: the last timer of every lingering record).
    pub fn ends_lingering(self) -> bool {
        matches!(
            self,
            Timer::D | Timer::I | Timer::J | Timer::K | Timer::L | Timer::M
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_rfc_values() {
        let c = TimerConfig::default();
        assert_eq!(c.t1, Duration::from_millis(500));
        assert_eq!(c.t2, Duration::from_secs(4));
        assert_eq!(c.t4, Duration::from_secs(5));
        assert_eq!(c.initial(Timer::B, false), Duration::from_secs(32));
        assert_eq!(c.initial(Timer::D, false), Duration::from_secs(32));
        assert_eq!(c.initial(Timer::K, false), Duration::from_secs(5));
    }

    #[test]
    fn a_retransmission_is_held_back_at_most_its_own_interval() {
        let c = TimerConfig::default();
        // 100 ms steps: T1 is 5 of them, T2 40.
        assert_eq!(c.deferrals_within(c.t1), 5);
        assert_eq!(c.deferrals_within(c.t2), 40);
        assert_eq!(c.deferrals_within(Duration::from_millis(250)), 2);
        let tiny = TimerConfig {
            t1: Duration::from_nanos(4),
            ..c
        };
        assert_eq!(tiny.deferrals_within(Duration::from_secs(1)), 0);
        let huge = Duration::from_secs(100_000);
        assert_eq!(c.deferrals_within(huge), u16::MAX);
    }

    #[test]
    fn reliable_transports_zero_the_wait_timers() {
        let c = TimerConfig::default();
        for t in [Timer::D, Timer::I, Timer::J, Timer::K] {
            assert_eq!(c.initial(t, true), Duration::ZERO, "{t:?}");
        }
        assert_eq!(c.initial(Timer::B, true), Duration::from_secs(32));
        assert_eq!(c.initial(Timer::H, true), Duration::from_secs(32));
    }

    #[test]
    fn deserializes_humantime_and_fills_defaults() {
        let c: TimerConfig = toml::from_str("t1 = \"250ms\"").unwrap();
        assert_eq!(c.t1, Duration::from_millis(250));
        assert_eq!(c.t2, Duration::from_secs(4));
        assert_eq!(c.initial(Timer::F, false), Duration::from_secs(16));
        assert!(toml::from_str::<TimerConfig>("t3 = \"1s\"").is_err());
    }
}
