//! Transactions that linger after their final response: the states of
//! RFC 3261 §17 and RFC 6026 §7 in which a transaction only absorbs
//! retransmissions until its last timer, as compact sans-IO records.
//!
//! At 10,000 calls per second a call's transactions linger 32 s (Timers
//! J, L, M, D), hundreds of thousands at once; the layer replaces each full
//! machine by one of these as soon as it enters such a state, keeping only
//! what answering and matching a retransmission need:
//! - [`ServerLinger::Completed`]: a non-INVITE server transaction after its
//!   final response (§17.2.2, Timer J) resends that response, as encoded,
//!   on every retransmitted request;
//! - [`ServerLinger::Confirmed`]: an INVITE server transaction after the
//!   ACK for its non-2xx (§17.2.1, Timer I) absorbs ACKs;
//! - [`ServerLinger::Accepted`]: an INVITE server transaction after a 2xx
//!   (RFC 6026 §7.1, Timer L) absorbs INVITE retransmissions, passes the
//!   TU's 2xx retransmissions and hands matching ACKs to the TU;
//! - [`ClientLinger::Completed`]: a client transaction after a final
//!   response (§17.1.1.2 Timer D, §17.1.2.2 Timer K) absorbs
//!   retransmissions of it, the INVITE one ACKing each again;
//! - [`ClientLinger::Accepted`]: an INVITE client transaction after a 2xx
//!   (RFC 6026 §7.2, Timer M) passes further 2xx to the TU for ACKing.
//!
//! Each behaves exactly as the full machine does in that state (the
//! machines hand out their record with `linger`); the key, the
//! destination and the pending timer stay with the layer.

use bytes::Bytes;

use super::{encode_response, Action, Actions, Timer, TuEvent, TxError};
use crate::sip::{Method, Request, Response};

/// What every lingering record does with its timers: it waits for one
/// last timer, which terminates the transaction; earlier ones are spent.
pub(crate) trait Linger {
    /// The timer that ends this record.
    fn last_timer(&self) -> Timer;

    /// Whether `timer` still does something (only the last one does).
    fn wants_timer(&self, timer: Timer) -> bool {
        timer == self.last_timer()
    }

    /// A timer fired: the last one terminates the transaction (the layer
    /// uses [`Self::on_timer_into`]).
    #[cfg(test)]
    fn on_timer(&mut self, timer: Timer) -> Actions {
        let mut out = Actions::default();
        self.on_timer_into(timer, &mut out);
        out
    }

    /// A timer fired: the last one terminates the transaction; appends
    /// the actions to `out`.
    fn on_timer_into(&mut self, timer: Timer, out: &mut Actions) {
        if self.wants_timer(timer) {
            out.push(Action::Terminate);
        }
    }
}

/// A server transaction that lingers after its final response.
#[derive(Debug)]
pub(crate) enum ServerLinger {
    /// Non-INVITE, Completed (§17.2.2): until Timer J, retransmitted
    /// requests get `last`, the final response as sent.
    Completed {
        /// The encoded final response, copied into an allocation of its
        /// own size when the transaction starts to linger: the encoded
        /// buffer, which the send shares (through a `bytes` header made
        /// when it took its clone), is freed then, while it is warm, and
        /// the record's end, 64*T1 later, frees this one block without
        /// first reading a cold header. A retransmitted request (rare) is
        /// answered with a copy of it.
        last: Box<[u8]>,
    },
    /// INVITE, Confirmed (§17.2.1): until Timer I, ACKs (and INVITEs) are
    /// absorbed.
    Confirmed,
    /// INVITE, Accepted (RFC 6026 §7.1), with no 2xx awaiting its ACK
    /// here: until Timer L, INVITE retransmissions are absorbed, the TU's
    /// 2xx retransmissions are sent, matching ACKs go to the TU.
    Accepted {
        /// A transport error was reported to the TU already (it is told
        /// once).
        transport_error_reported: bool,
        /// The transport's receive drain count when the 2xx was last sent
        /// (see [`ServerLinger::resend_2xx`]); set by the layer.
        drains: u32,
        /// The TU's last 2xx retransmission was held back: the next one
        /// goes out whatever the count (set by the layer).
        skipped: bool,
    },
}

impl Linger for ServerLinger {
    fn last_timer(&self) -> Timer {
        match self {
            Self::Completed { .. } => Timer::J,
            Self::Confirmed => Timer::I,
            Self::Accepted { .. } => Timer::L,
        }
    }
}

impl ServerLinger {
    /// The name of the RFC state (for [`TxError::ResponseNotAllowed`]).
    fn name(&self) -> &'static str {
        match self {
            Self::Completed { .. } => "Completed",
            Self::Confirmed => "Confirmed",
            Self::Accepted { .. } => "Accepted",
        }
    }

    /// A request matched the transaction: a retransmission of its request,
    /// or an ACK.
    pub(crate) fn on_request(&mut self, request: Request) -> Actions {
        let mut out = Actions::default();
        match self {
            Self::Completed { last } => out.push(Action::Send(Bytes::copy_from_slice(last))),
            // RFC 6026 §7.1: the ACK for the 2xx belongs to the TU.
            Self::Accepted { .. } if request.method == Method::Ack => {
                out.push(Action::Deliver(TuEvent::Ack(Box::new(request))));
            }
            Self::Confirmed | Self::Accepted { .. } => {}
        }
        out
    }

    /// The TU sends a response: only a 2xx in Accepted (a retransmission of
    /// the TU's own, §13.3.1.4) is allowed.
    pub(crate) fn on_tu_response(&mut self, response: &Response) -> Result<Actions, TxError> {
        match self {
            Self::Accepted { .. } if response.status.is_success() => {
                let mut out = Actions::default();
                out.push(Action::Send(encode_response(response)));
                Ok(out)
            }
            _ => Err(TxError::ResponseNotAllowed {
                status: response.status.as_u16(),
                state: self.name(),
            }),
        }
    }

    /// For a 2xx the TU retransmits in Accepted: the transport's receive
    /// drain count when the 2xx was last sent, for the layer to hold the
    /// retransmission back while the ACK may be queued unread, and to set
    /// anew when it goes out; and whether the previous one was held back
    /// (then this one is not: at most every other one is skipped).
    pub(crate) fn resend_2xx(&mut self, response: &Response) -> Option<(&mut u32, &mut bool)> {
        match self {
            Self::Accepted {
                drains, skipped, ..
            } if response.status.is_success() => Some((drains, skipped)),
            _ => None,
        }
    }

    /// The transport failed to send a response (§17.2.4): Completed ends
    /// and tells the TU; Accepted tells the TU once and goes on absorbing.
    pub(crate) fn on_transport_error(&mut self) -> Actions {
        let mut out = Actions::default();
        match self {
            Self::Completed { .. } => {
                out.push(Action::Deliver(TuEvent::TransportError));
                out.push(Action::Terminate);
            }
            Self::Accepted {
                transport_error_reported,
                ..
            } if !*transport_error_reported => {
                *transport_error_reported = true;
                out.push(Action::Deliver(TuEvent::TransportError));
            }
            Self::Accepted { .. } | Self::Confirmed => {}
        }
        out
    }

    /// Heap bytes the record owns besides itself (the shared response
    /// buffer counted whole).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Self::Completed { last } => last.len(),
            Self::Confirmed | Self::Accepted { .. } => 0,
        }
    }
}

/// A client transaction that lingers after its final response.
#[derive(Debug)]
pub(crate) enum ClientLinger {
    /// Non-INVITE, Completed (§17.1.2.2): until Timer K, retransmissions
    /// of the final response are absorbed.
    Completed,
    /// INVITE, Completed (§17.1.1.2): until Timer D, each retransmission
    /// of the 300-699 response is ACKed again with `ack`.
    CompletedInvite {
        /// The encoded ACK, as sent.
        ack: Bytes,
    },
    /// INVITE, Accepted (RFC 6026 §7.2): until Timer M, 2xx responses go
    /// to the TU, which ACKs them.
    Accepted,
}

impl Linger for ClientLinger {
    fn last_timer(&self) -> Timer {
        match self {
            Self::Completed => Timer::K,
            Self::CompletedInvite { .. } => Timer::D,
            Self::Accepted => Timer::M,
        }
    }
}

impl ClientLinger {
    /// A response matched the transaction.
    pub(crate) fn on_response(&mut self, response: Response) -> Actions {
        let mut out = Actions::default();
        let status = response.status;
        match self {
            Self::CompletedInvite { ack } if !status.is_provisional() && !status.is_success() => {
                out.push(Action::Send(ack.clone()));
            }
            // Retransmitted or forked 2xx go to the TU for ACKing.
            Self::Accepted if status.is_success() => {
                out.push(Action::Deliver(TuEvent::Response(response)));
            }
            Self::Completed | Self::CompletedInvite { .. } | Self::Accepted => {}
        }
        out
    }

    /// The transport failed to send the ACK (§17.1.4): the transaction
    /// ends; the TU has its final response already and is not told.
    pub(crate) fn on_transport_error(&mut self) -> Actions {
        let mut out = Actions::default();
        if matches!(self, Self::CompletedInvite { .. }) {
            out.push(Action::Terminate);
        }
        out
    }

    /// Heap bytes the record owns besides itself.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Self::CompletedInvite { ack } => ack.len(),
            Self::Completed | Self::Accepted => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::invite_client::build_ack;
    use crate::transaction::test_support::*;
    use crate::transaction::{
        InviteClient, InviteServer, NonInviteClient, NonInviteServer, TimerConfig,
    };

    fn sends(actions: &Actions) -> Vec<Bytes> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    fn terminates(actions: &Actions) -> bool {
        actions.iter().any(|a| matches!(a, Action::Terminate))
    }

    #[test]
    fn completed_server_resends_the_final_response_as_sent_until_timer_j() {
        let config = TimerConfig::default();
        let (mut m, _) = NonInviteServer::new(false, &config);
        let actions = m
            .on_tu_response(response(&options(), 200, Some("t")))
            .unwrap();
        let sent = sends(&actions);
        let mut linger = m.linger().expect("Completed lingers");
        assert_eq!(linger.last_timer(), Timer::J);
        for _ in 0..3 {
            assert_eq!(sends(&linger.on_request(options())), sent);
        }
        assert!(linger.on_timer(Timer::Unanswered).is_empty());
        assert!(matches!(
            linger.on_tu_response(&response(&options(), 500, None)),
            Err(TxError::ResponseNotAllowed {
                status: 500,
                state: "Completed"
            })
        ));
        assert!(terminates(&linger.on_timer(Timer::J)));
    }

    #[test]
    fn completed_server_reports_a_failed_resend_and_ends() {
        let mut linger = ServerLinger::Completed {
            last: Box::from(&b"SIP/2.0 200 OK\r\n\r\n"[..]),
        };
        let out: Vec<Action> = linger.on_transport_error().into_iter().collect();
        assert!(matches!(
            &out[..],
            [Action::Deliver(TuEvent::TransportError), Action::Terminate]
        ));
    }

    #[test]
    fn server_machines_linger_only_when_waiting_for_their_last_timer() {
        let config = TimerConfig::default();
        let (mut m, _) = NonInviteServer::new(false, &config);
        assert!(m.linger().is_none(), "Trying");
        m.on_tu_response(response(&options(), 100, None)).unwrap();
        assert!(m.linger().is_none(), "Proceeding");

        let (mut m, _) = InviteServer::new(&invite(), false, &config);
        assert!(m.linger().is_none(), "Proceeding");
        let busy = response(&invite(), 486, Some("t"));
        m.on_tu_response(busy.clone()).unwrap();
        assert!(m.linger().is_none(), "Completed retransmits its 486");
        m.on_request(build_ack(&invite(), &busy));
        assert!(matches!(m.linger(), Some(ServerLinger::Confirmed)));

        let (mut m, _) = InviteServer::new(&invite(), false, &config);
        m.retransmit_2xx();
        m.on_tu_response(response(&invite(), 200, Some("t")))
            .unwrap();
        assert!(m.linger().is_none(), "a 2xx awaits its ACK");
        m.on_2xx_ack();
        assert!(matches!(m.linger(), Some(ServerLinger::Accepted { .. })));
    }

    #[test]
    fn confirmed_server_absorbs_acks_and_invites_until_timer_i() {
        let mut linger = ServerLinger::Confirmed;
        let busy = response(&invite(), 486, Some("t"));
        assert!(linger.on_request(build_ack(&invite(), &busy)).is_empty());
        assert!(linger.on_request(invite()).is_empty());
        assert!(linger.on_transport_error().is_empty());
        assert!(linger.on_timer(Timer::L).is_empty());
        assert!(terminates(&linger.on_timer(Timer::I)));
    }

    #[test]
    fn accepted_server_passes_2xx_and_acks_and_absorbs_invites_until_timer_l() {
        let config = TimerConfig::default();
        let (mut m, _) = InviteServer::new(&invite(), false, &config);
        let ok = response(&invite(), 200, Some("t"));
        m.on_tu_response(ok.clone()).unwrap();
        let mut linger = m.linger().expect("Accepted lingers");
        assert_eq!(linger.last_timer(), Timer::L);
        assert!(linger.on_request(invite()).is_empty());
        let again = linger.on_tu_response(&ok).unwrap();
        assert_eq!(sends(&again), vec![ok.to_bytes()]);
        assert!(matches!(
            linger.on_tu_response(&response(&invite(), 486, None)),
            Err(TxError::ResponseNotAllowed {
                status: 486,
                state: "Accepted"
            })
        ));
        let ack: Vec<Action> = linger
            .on_request(build_ack(&invite(), &ok))
            .into_iter()
            .collect();
        assert!(matches!(&ack[..], [Action::Deliver(TuEvent::Ack(a))] if a.method == Method::Ack));
        // A transport error is reported once.
        assert_eq!(linger.on_transport_error().len(), 1);
        assert!(linger.on_transport_error().is_empty());
        assert!(!terminates(&linger.on_timer(Timer::Retransmit2xx)));
        assert!(terminates(&linger.on_timer(Timer::L)));
    }

    #[test]
    fn completed_invite_client_acks_each_retransmitted_final_response_with_the_same_ack() {
        let config = TimerConfig::default();
        let (mut m, _) = InviteClient::new(invite(), false, &config);
        let busy = response(&invite(), 486, Some("t"));
        let first = sends(&m.on_response(busy.clone()));
        assert_eq!(first.len(), 1, "the ACK");
        let mut linger = m.linger().expect("Completed lingers");
        assert_eq!(linger.last_timer(), Timer::D);
        assert_eq!(sends(&linger.on_response(busy.clone())), first);
        assert_eq!(sends(&linger.on_response(busy)), first);
        assert!(linger
            .on_response(response(&invite(), 180, None))
            .is_empty());
        assert!(terminates(&linger.on_transport_error()));
        assert!(terminates(&linger.on_timer(Timer::D)));
    }

    #[test]
    fn completed_non_invite_client_absorbs_until_timer_k() {
        let config = TimerConfig::default();
        let (mut m, _) = NonInviteClient::new(&options(), false, &config);
        assert!(m.linger().is_none(), "Trying");
        m.on_response(response(&options(), 200, Some("t")));
        let mut linger = m.linger().expect("Completed lingers");
        assert_eq!(linger.last_timer(), Timer::K);
        assert!(linger
            .on_response(response(&options(), 200, Some("t")))
            .is_empty());
        assert!(linger.on_transport_error().is_empty());
        assert!(!terminates(&linger.on_timer(Timer::D)));
        assert!(terminates(&linger.on_timer(Timer::K)));
    }

    #[test]
    fn accepted_invite_client_passes_2xx_to_the_tu_until_timer_m() {
        let config = TimerConfig::default();
        let (mut m, _) = InviteClient::new(invite(), false, &config);
        assert!(m.linger().is_none(), "Calling");
        m.on_response(response(&invite(), 180, None));
        assert!(m.linger().is_none(), "Proceeding");
        let ok = response(&invite(), 200, Some("t"));
        m.on_response(ok.clone());
        let mut linger = m.linger().expect("Accepted lingers");
        assert_eq!(linger.last_timer(), Timer::M);
        let out: Vec<Action> = linger.on_response(ok).into_iter().collect();
        assert!(
            matches!(&out[..], [Action::Deliver(TuEvent::Response(r))] if r.status.as_u16() == 200)
        );
        assert!(linger
            .on_response(response(&invite(), 486, Some("t")))
            .is_empty());
        assert!(terminates(&linger.on_timer(Timer::M)));
    }
}
