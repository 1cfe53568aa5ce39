//! The back-to-back user agent (SPEC §3): a call is two independent legs,
//! the inbound leg (we are the caller's UAS) and the outbound leg (we are the
//! UAC towards the external PBX), and the rules that relay between them.
//!
//! This module owns the call state machine ([`call`], sans-IO), admission of
//! new INVITEs (Max-Forwards, loops, overload; [`admission`]), the call
//! table, and the CDR record of every call. It does not own transactions
//! (retransmissions, 100 Trying, ACK of non-2xx: `transaction`), sockets
//! (`transport`) or the routing data (`routing`): a call takes one routing
//! snapshot when it is set up and keeps it, so a reload never changes a
//! routed call.
//!
//! A 401/407 from the callee is answered once with digest credentials when
//! the external PBX has them configured ([`auth`]).
//!
//! Topology hiding: the outbound leg has its own Call-ID, tags, CSeq, Via
//! and Contact; only the body, its Content-Type, the caller ID (display name
//! and user of From) and a short list of end-to-end headers (Supported,
//! Require, Allow, Session-Expires, …) cross from one leg to the other.
//!
//! # Failure mapping
//!
//! A final failure of the outbound INVITE is answered to the caller (with the
//! `hangup` on-failure action) as follows; the CDR gets the finish reason:
//!
//! | callee's outcome                         | to the caller        | finish reason |
//! |------------------------------------------|----------------------|---------------|
//! | 486 Busy Here, 600 Busy Everywhere       | 486 Busy Here        | `busy`        |
//! | no answer within the dial timeout        | 480 (we CANCEL it)   | `no_answer`   |
//! | 408, 480, 503, Timer B, transport error  | 480                  | `unavailable` |
//! | 3xx (redirects are not followed)         | 480                  | `unavailable` |
//! | 401/407 (no usable credentials, or a second challenge) | 480    | `error`       |
//! | other 5xx                                | 500                  | `rejected`    |
//! | other 4xx, other 6xx (603, 604, 606)     | the same status      | `rejected`    |
//!
//! Of the number's `on_failure` actions only `hangup` exists without media;
//! `prompt` and `voicemail` need media anchoring (a later issue) and act as
//! `hangup` until then.
//!
//! 503 is never passed on: towards a carrier it would say that *we* are
//! overloaded and divert its traffic away from us. Our own refusals: unknown
//! number 404 (`not_found`), disabled number 480 (`rejected`), a number whose
//! target cannot be reached (not an external PBX yet, or its host does not
//! resolve) 480 (`unavailable`), overload and drain 503 with Retry-After
//! (`overload`), Max-Forwards 0 483, loops 482 and an INVITE that cannot
//! set up a dialog 400 (`rejected`). INVITEs refused before they reach the
//! B2BUA get their CDR too ([`refused`]). A caller's CANCEL (or BYE on the early dialog) gives 487 and
//! `caller_hangup`; an answered call ends `answered` whoever hangs up, also
//! when the maximum call duration ends it; a 2xx never ACKed by the caller
//! within 64*T1 ends it with `error`. A 2xx to a relayed re-INVITE is
//! retransmitted until its ACK too, and the ACK relayed to the other leg;
//! no ACK within 64*T1 hangs up both legs (the call stays `answered`).

pub mod admission;
pub mod auth;
pub mod call;
pub mod ids;
pub mod refused;
mod service;

pub use refused::RefusedCalls;
pub use service::{dialed_number, B2bua, B2buaConfig};

pub use crate::cdr::FinishReason;
use crate::sip::StatusCode;

/// `Allow` of our responses.
pub const ALLOW: &[u8] = b"INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, MESSAGE, NOTIFY";

/// The status for the caller and the finish reason of a final failure of
/// the outbound INVITE (the table in the module doc).
pub fn failure_for_status(status: StatusCode) -> (StatusCode, FinishReason) {
    match status.as_u16() {
        486 | 600 => (StatusCode::BUSY_HERE, FinishReason::Busy),
        408 | 480 | 503 | 300..=399 => (
            StatusCode::TEMPORARILY_UNAVAILABLE,
            FinishReason::Unavailable,
        ),
        401 | 407 => (StatusCode::TEMPORARILY_UNAVAILABLE, FinishReason::Error),
        500..=599 => (StatusCode::SERVER_INTERNAL_ERROR, FinishReason::Rejected),
        _ => (status, FinishReason::Rejected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(code: u16) -> (u16, FinishReason) {
        let (s, r) = failure_for_status(StatusCode::new(code).unwrap());
        (s.as_u16(), r)
    }

    #[test]
    fn failures_map_as_the_module_table_says() {
        assert_eq!(map(486), (486, FinishReason::Busy));
        assert_eq!(map(600), (486, FinishReason::Busy));
        assert_eq!(map(408), (480, FinishReason::Unavailable));
        assert_eq!(map(480), (480, FinishReason::Unavailable));
        assert_eq!(map(503), (480, FinishReason::Unavailable));
        assert_eq!(map(302), (480, FinishReason::Unavailable));
        assert_eq!(map(407), (480, FinishReason::Error));
        assert_eq!(map(500), (500, FinishReason::Rejected));
        assert_eq!(map(502), (500, FinishReason::Rejected));
        assert_eq!(map(404), (404, FinishReason::Rejected));
        assert_eq!(map(488), (488, FinishReason::Rejected));
        assert_eq!(map(603), (603, FinishReason::Rejected));
    }
}
