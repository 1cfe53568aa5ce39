//! The non-INVITE client transaction: RFC 3261 §17.1.2.

use std::time::Duration;

use bytes::Bytes;

use super::lingering::ClientLinger;
use super::{encode_request, Action, Actions, Timer, TimerConfig, TuEvent};
use crate::sip::{Request, Response};

/// States of the non-INVITE client transaction (RFC 3261 Figure 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteClientState {
    /// Request sent; Timer E retransmits (unreliable), F times out.
    Trying,
    /// A provisional response arrived; retransmissions every T2.
    Proceeding,
    /// A final response arrived; Timer K absorbs its retransmissions.
    Completed,
    /// Done; the driver forgets the transaction.
    Terminated,
}

/// A non-INVITE client transaction (RFC 3261 §17.1.2).
#[derive(Debug)]
pub struct NonInviteClient {
    state: NonInviteClientState,
    reliable: bool,
    config: TimerConfig,
    /// The request on the wire, for Timer E retransmissions.
    wire: Option<Bytes>,
    /// The current Timer E interval: doubles up to T2 in Trying, T2 in
    /// Proceeding (§17.1.2.2).
    timer_e: Duration,
}

impl NonInviteClient {
    /// Starts the transaction: sends the request, schedules Timer E
    /// (unreliable transports only) and Timer F.
    pub fn new(request: &Request, reliable: bool, config: &TimerConfig) -> (Self, Actions) {
        let mut out = Actions::default();
        let tx = Self::new_into(request, reliable, config, &mut out);
        (tx, out)
    }

    /// [`Self::new`], appending the first actions to `out` (the layer's
    /// list for the step: no copy of a returned list).
    pub(crate) fn new_into(
        request: &Request,
        reliable: bool,
        config: &TimerConfig,
        out: &mut Actions,
    ) -> Self {
        let wire = encode_request(request);
        out.push(Action::Send(wire.clone()));
        if !reliable {
            out.push(Action::Schedule(
                Timer::E,
                config.initial(Timer::E, reliable),
            ));
        }
        out.push(Action::Schedule(
            Timer::F,
            config.initial(Timer::F, reliable),
        ));
        Self {
            state: NonInviteClientState::Trying,
            reliable,
            config: *config,
            wire: Some(wire),
            timer_e: config.t1,
        }
    }

    /// The current state.
    pub fn state(&self) -> NonInviteClientState {
        self.state
    }

    /// The compact record that replaces this machine once it only waits
    /// for Timer K (Completed), see [`super::lingering`].
    pub(crate) fn linger(&self) -> Option<ClientLinger> {
        (self.state == NonInviteClientState::Completed).then_some(ClientLinger::Completed)
    }

    /// A response matched this transaction (§17.1.3).
    pub fn on_response(&mut self, response: Response) -> Actions {
        let mut out = Actions::default();
        self.on_response_into(response, &mut out);
        out
    }

    /// [`Self::on_response`], appending the actions to `out` (the layer's
    /// list for the step: no copy of a returned list).
    pub(crate) fn on_response_into(&mut self, response: Response, out: &mut Actions) {
        use NonInviteClientState::*;
        match self.state {
            Trying | Proceeding if response.status.is_provisional() => {
                self.state = Proceeding;
                out.push(Action::Deliver(TuEvent::Response(response)));
            }
            Trying | Proceeding => {
                self.wire = None;
                out.push(Action::Deliver(TuEvent::Response(response)));
                let k = self.config.initial(Timer::K, self.reliable);
                if k.is_zero() {
                    self.state = Terminated;
                    out.push(Action::Terminate);
                } else {
                    self.state = Completed;
                    out.push(Action::Schedule(Timer::K, k));
                }
            }
            // Retransmissions of the final response are absorbed.
            Completed | Terminated => {}
        }
    }

    /// Whether `timer` may still do something when it fires, now or later:
    /// false only when [`Self::on_timer`] ignores it in this state and in
    /// every state reachable from it, so that a driver may cancel it.
    pub fn wants_timer(&self, timer: Timer) -> bool {
        use NonInviteClientState::*;
        match timer {
            Timer::E | Timer::F => matches!(self.state, Trying | Proceeding),
            Timer::K => matches!(self.state, Trying | Proceeding | Completed),
            _ => false,
        }
    }

    /// A timer scheduled by this transaction fired.
    pub fn on_timer(&mut self, timer: Timer) -> Actions {
        let mut out = Actions::default();
        self.on_timer_into(timer, &mut out);
        out
    }

    /// [`Self::on_timer`], appending the actions to `out` (the layer's
    /// list for the step: no copy of a returned list).
    pub(crate) fn on_timer_into(&mut self, timer: Timer, out: &mut Actions) {
        use NonInviteClientState::*;
        match (self.state, timer) {
            (Trying | Proceeding, Timer::E) => {
                if let Some(wire) = &self.wire {
                    out.push(Action::Send(wire.clone()));
                }
                self.timer_e = if self.state == Trying {
                    self.timer_e.saturating_mul(2).min(self.config.t2)
                } else {
                    self.config.t2
                };
                out.push(Action::Schedule(Timer::E, self.timer_e));
            }
            (Trying | Proceeding, Timer::F) => {
                self.state = Terminated;
                self.wire = None;
                out.push(Action::Deliver(TuEvent::Timeout));
                out.push(Action::Terminate);
            }
            (Completed, Timer::K) => {
                self.state = Terminated;
                out.push(Action::Terminate);
            }
            _ => {}
        }
    }

    /// The transport failed to send the request (§17.1.4).
    pub fn on_transport_error(&mut self) -> Actions {
        use NonInviteClientState::*;
        let mut out = Actions::default();
        if matches!(self.state, Trying | Proceeding) {
            self.state = Terminated;
            self.wire = None;
            out.push(Action::Deliver(TuEvent::TransportError));
            out.push(Action::Terminate);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Method;
    use crate::transaction::test_support::*;

    fn start(reliable: bool) -> (NonInviteClient, Clock) {
        let (tx, actions) = NonInviteClient::new(&options(), reliable, &TimerConfig::default());
        let mut clock = Clock::default();
        clock.absorb(actions);
        (tx, clock)
    }

    #[test]
    fn trying_over_udp_retransmits_doubling_to_t2_until_timer_f() {
        let (mut tx, mut clock) = start(false);
        clock.run_until(secs(40), |t| tx.on_timer(t));
        // E: 0.5, 1, 2, then T2 = 4 s (§17.1.2.2); F at 64*T1 = 32 s.
        let expected: Vec<_> = [
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
        ]
        .into_iter()
        .map(ms)
        .collect();
        assert_eq!(clock.send_times(), expected);
        assert_eq!(parse_request(&clock.sent()[0]).method, Method::Options);
        assert!(matches!(clock.delivered()[..], [(t, TuEvent::Timeout)] if t == secs(32)));
        assert_eq!(clock.terminated_at(), Some(secs(32)));
        assert_eq!(tx.state(), NonInviteClientState::Terminated);
    }

    #[test]
    fn trying_over_tcp_never_retransmits() {
        let (mut tx, mut clock) = start(true);
        clock.run_until(secs(40), |t| tx.on_timer(t));
        assert_eq!(clock.send_times(), vec![ms(0)]);
        assert_eq!(clock.terminated_at(), Some(secs(32)));
    }

    #[test]
    fn proceeding_retransmits_every_t2() {
        let (mut tx, mut clock) = start(false);
        clock.run_until(ms(600), |t| tx.on_timer(t));
        clock.absorb(tx.on_response(response(&options(), 100, None)));
        assert_eq!(tx.state(), NonInviteClientState::Proceeding);
        clock.run_until(secs(12), |t| tx.on_timer(t));
        // Sent at 0 and 0.5; E (1 s interval) fires at 1.5 in Proceeding,
        // then every T2.
        let expected: Vec<_> = [0, 500, 1500, 5500, 9500].into_iter().map(ms).collect();
        assert_eq!(clock.send_times(), expected);
        assert_eq!(clock.delivered().len(), 1);
    }

    #[test]
    fn final_response_completes_absorbs_retransmissions_until_timer_k() {
        let (mut tx, mut clock) = start(false);
        clock.run_until(secs(1), |t| tx.on_timer(t));
        let ok = response(&options(), 200, Some("t"));
        clock.absorb(tx.on_response(ok.clone()));
        assert_eq!(tx.state(), NonInviteClientState::Completed);
        clock.absorb(tx.on_response(ok));
        assert_eq!(clock.delivered().len(), 1, "retransmitted final absorbed");
        clock.run_until(secs(20), |t| tx.on_timer(t));
        assert_eq!(clock.send_times(), vec![ms(0), ms(500)], "E stopped");
        assert_eq!(
            clock.terminated_at(),
            Some(secs(6)),
            "K = T4 after the final"
        );
    }

    #[test]
    fn proceeding_moves_to_completed_on_the_final() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(tx.on_response(response(&options(), 100, None)));
        clock.absorb(tx.on_response(response(&options(), 180, None)));
        assert_eq!(clock.delivered().len(), 2, "provisionals go to the TU");
        clock.absorb(tx.on_response(response(&options(), 486, Some("t"))));
        assert_eq!(tx.state(), NonInviteClientState::Completed);
        clock.absorb(tx.on_response(response(&options(), 180, None)));
        assert_eq!(clock.delivered().len(), 3, "nothing after the final");
    }

    #[test]
    fn final_response_over_tcp_terminates_at_once() {
        let (mut tx, mut clock) = start(true);
        clock.absorb(tx.on_response(response(&options(), 404, Some("t"))));
        assert_eq!(tx.state(), NonInviteClientState::Terminated);
        assert_eq!(clock.terminated_at(), Some(ms(0)));
        assert!(matches!(
            clock.delivered()[..],
            [(_, TuEvent::Response(ref r))] if r.status.as_u16() == 404
        ));
    }

    #[test]
    fn transport_error_terminates_and_informs_tu() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(tx.on_transport_error());
        assert_eq!(tx.state(), NonInviteClientState::Terminated);
        assert!(matches!(
            clock.delivered()[..],
            [(_, TuEvent::TransportError)]
        ));
        assert!(tx.on_transport_error().is_empty());
    }
}
