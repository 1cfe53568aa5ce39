//! The non-INVITE server transaction: RFC 3261 §17.2.2.

use bytes::Bytes;

use super::lingering::ServerLinger;
use super::{encode_response, Action, Actions, Timer, TimerConfig, TuEvent, TxError};
use crate::sip::Response;

/// States of the non-INVITE server transaction (RFC 3261 Figure 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteServerState {
    /// Request received, nothing sent yet: retransmissions are absorbed.
    Trying,
    /// A provisional response was sent; retransmissions get it again.
    Proceeding,
    /// The final response was sent; Timer J keeps answering
    /// retransmissions with it.
    Completed,
    /// Done; the driver forgets the transaction.
    Terminated,
}

impl NonInviteServerState {
    fn name(self) -> &'static str {
        match self {
            Self::Trying => "Trying",
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Terminated => "Terminated",
        }
    }
}

/// A non-INVITE server transaction (RFC 3261 §17.2.2).
#[derive(Debug)]
pub struct NonInviteServer {
    state: NonInviteServerState,
    reliable: bool,
    config: TimerConfig,
    /// The latest response sent, resent on request retransmissions.
    last: Option<Bytes>,
}

impl NonInviteServer {
    /// Creates the transaction for a received request (the driver passes the
    /// request to the TU) and schedules Timer Unanswered (64*T1: by then the
    /// client has given up with Timer F, so an unanswered request is dropped).
    pub fn new(reliable: bool, config: &TimerConfig) -> (Self, Actions) {
        let mut out = Actions::default();
        let tx = Self::new_into(reliable, config, &mut out);
        (tx, out)
    }

    /// [`Self::new`], appending the first actions to `out` (the layer's
    /// list for the step: no copy of a returned list).
    pub(crate) fn new_into(reliable: bool, config: &TimerConfig, out: &mut Actions) -> Self {
        let tx = Self {
            state: NonInviteServerState::Trying,
            reliable,
            config: *config,
            last: None,
        };
        out.push(Action::Schedule(
            Timer::Unanswered,
            config.initial(Timer::Unanswered, reliable),
        ));
        tx
    }

    /// The current state.
    pub fn state(&self) -> NonInviteServerState {
        self.state
    }

    /// The compact record that replaces this machine once it only waits
    /// for Timer J (Completed), see [`super::lingering`].
    pub(crate) fn linger(&self) -> Option<ServerLinger> {
        match (self.state, &self.last) {
            (NonInviteServerState::Completed, Some(last)) => Some(ServerLinger::Completed {
                last: Box::from(&last[..]),
            }),
            _ => None,
        }
    }

    /// The TU sends a response; after a final response any other is
    /// [`TxError::ResponseNotAllowed`].
    pub fn on_tu_response(&mut self, response: Response) -> Result<Actions, TxError> {
        let mut out = Actions::default();
        self.on_tu_response_into(&response, &mut out)?;
        Ok(out)
    }

    /// [`Self::on_tu_response`], appending the actions to `out` (the
    /// layer's list for the step: no copy of a returned list).
    pub(crate) fn on_tu_response_into(
        &mut self,
        response: &Response,
        out: &mut Actions,
    ) -> Result<(), TxError> {
        use NonInviteServerState::*;
        match self.state {
            Trying | Proceeding => {
                let wire = encode_response(response);
                out.push(Action::Send(wire.clone()));
                if response.status.is_provisional() {
                    self.state = Proceeding;
                    self.last = Some(wire);
                } else {
                    let j = self.config.initial(Timer::J, self.reliable);
                    if j.is_zero() {
                        self.state = Terminated;
                        self.last = None;
                        out.push(Action::Terminate);
                    } else {
                        self.state = Completed;
                        self.last = Some(wire);
                        out.push(Action::Schedule(Timer::J, j));
                    }
                }
                Ok(())
            }
            state => Err(TxError::ResponseNotAllowed {
                status: response.status.as_u16(),
                state: state.name(),
            }),
        }
    }

    /// A retransmission of the request arrived.
    pub fn on_request(&mut self) -> Actions {
        let mut out = Actions::default();
        if let Some(last) = &self.last {
            out.push(Action::Send(last.clone()));
        }
        out
    }

    /// Whether `timer` may still do something when it fires, now or later:
    /// false only when [`Self::on_timer`] ignores it in this state and in
    /// every state reachable from it, so that a driver may cancel it.
    pub fn wants_timer(&self, timer: Timer) -> bool {
        use NonInviteServerState::*;
        match timer {
            Timer::Unanswered => matches!(self.state, Trying | Proceeding),
            Timer::J => matches!(self.state, Trying | Proceeding | Completed),
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
        use NonInviteServerState::*;
        match (self.state, timer) {
            (Completed, Timer::J) => {
                self.state = Terminated;
                self.last = None;
                out.push(Action::Terminate);
            }
            (Trying | Proceeding, Timer::Unanswered) => {
                self.state = Terminated;
                self.last = None;
                out.push(Action::Deliver(TuEvent::Timeout));
                out.push(Action::Terminate);
            }
            _ => {}
        }
    }

    /// The transport failed to send a response (§17.2.4).
    pub fn on_transport_error(&mut self) -> Actions {
        use NonInviteServerState::*;
        let mut out = Actions::default();
        if matches!(self.state, Proceeding | Completed) {
            self.state = Terminated;
            self.last = None;
            out.push(Action::Deliver(TuEvent::TransportError));
            out.push(Action::Terminate);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::test_support::*;

    fn start(reliable: bool) -> (NonInviteServer, Clock) {
        let (tx, actions) = NonInviteServer::new(reliable, &TimerConfig::default());
        let mut clock = Clock::default();
        clock.absorb(actions);
        (tx, clock)
    }

    #[test]
    fn trying_absorbs_retransmissions() {
        let (mut tx, _) = start(false);
        assert!(tx.on_request().is_empty());
        assert_eq!(tx.state(), NonInviteServerState::Trying);
    }

    #[test]
    fn proceeding_answers_retransmissions_with_the_provisional() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(tx.on_tu_response(response(&options(), 100, None)).unwrap());
        assert_eq!(tx.state(), NonInviteServerState::Proceeding);
        clock.absorb(tx.on_request());
        let sent = clock.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0], sent[1]);
        assert_eq!(parse_response(&sent[1]).status.as_u16(), 100);
    }

    #[test]
    fn completed_answers_retransmissions_with_the_final_until_timer_j() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(
            tx.on_tu_response(response(&options(), 200, Some("t")))
                .unwrap(),
        );
        assert_eq!(tx.state(), NonInviteServerState::Completed);
        clock.run_until(secs(10), |t| tx.on_timer(t));
        clock.absorb(tx.on_request());
        assert_eq!(clock.send_times(), vec![ms(0), secs(10)]);
        assert_eq!(parse_response(&clock.sent()[1]).status.as_u16(), 200);
        assert!(matches!(
            tx.on_tu_response(response(&options(), 500, Some("t"))),
            Err(TxError::ResponseNotAllowed {
                status: 500,
                state: "Completed"
            })
        ));
        clock.run_until(secs(40), |t| tx.on_timer(t));
        assert_eq!(clock.terminated_at(), Some(secs(32)), "J = 64*T1 over UDP");
        assert_eq!(tx.state(), NonInviteServerState::Terminated);
        assert!(tx.on_request().is_empty());
    }

    #[test]
    fn proceeding_moves_to_completed_on_the_final() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(tx.on_tu_response(response(&options(), 180, None)).unwrap());
        clock.absorb(tx.on_tu_response(response(&options(), 182, None)).unwrap());
        assert_eq!(tx.state(), NonInviteServerState::Proceeding);
        clock.absorb(
            tx.on_tu_response(response(&options(), 200, Some("t")))
                .unwrap(),
        );
        assert_eq!(tx.state(), NonInviteServerState::Completed);
        clock.absorb(tx.on_request());
        let statuses: Vec<_> = clock
            .sent()
            .iter()
            .map(|b| parse_response(b).status.as_u16())
            .collect();
        assert_eq!(statuses, vec![180, 182, 200, 200]);
    }

    #[test]
    fn final_over_tcp_terminates_at_once() {
        let (mut tx, mut clock) = start(true);
        clock.absorb(tx.on_tu_response(response(&options(), 100, None)).unwrap());
        clock.absorb(
            tx.on_tu_response(response(&options(), 200, Some("t")))
                .unwrap(),
        );
        assert_eq!(tx.state(), NonInviteServerState::Terminated);
        assert_eq!(clock.terminated_at(), Some(ms(0)));
        assert_eq!(clock.sent().len(), 2);
        assert!(tx.on_request().is_empty(), "no stale 100 after Terminated");
    }

    #[test]
    fn a_request_the_tu_never_answers_is_dropped_after_64_t1() {
        let (mut tx, mut clock) = start(false);
        clock.run_until(secs(40), |t| tx.on_timer(t));
        assert_eq!(tx.state(), NonInviteServerState::Terminated);
        assert!(clock.sent().is_empty());
        assert!(matches!(clock.delivered()[..], [(t, TuEvent::Timeout)] if t == secs(32)));
        assert_eq!(clock.terminated_at(), Some(secs(32)));
    }

    #[test]
    fn transport_error_terminates_and_informs_tu() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(tx.on_tu_response(response(&options(), 180, None)).unwrap());
        clock.absorb(tx.on_transport_error());
        assert_eq!(tx.state(), NonInviteServerState::Terminated);
        assert!(matches!(
            clock.delivered()[..],
            [(_, TuEvent::TransportError)]
        ));
    }
}
