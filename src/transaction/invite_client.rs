//! The INVITE client transaction: RFC 3261 §17.1.1 with the Accepted state
//! and Timer M of RFC 6026 §7.2, plus the ACK for non-2xx finals
//! (§17.1.1.3) and the CANCEL it may need (§9.1).
//!
//! Proceeding has no timeout in RFC 3261 (the TU cancels); so that a peer
//! that never sends a final response cannot keep the transaction forever,
//! Timer Unanswered ends it with a timeout after [`UNANSWERED_INVITE`], and
//! Timer Cancelled 64*T1 after a CANCEL. Timer B, armed with the INVITE
//! (64*T1, the period of Timer Unanswered), makes the first of those
//! checks when it fires in Proceeding: the provisional response arms
//! nothing, and Timer B is not cancelled (one timer less to arm and one
//! less to cancel per call); the checks thus count from the INVITE, not
//! from its first provisional response.

use std::time::Duration;

use bytes::Bytes;

use super::lingering::ClientLinger;
use super::timers::UNANSWERED_INVITE;
use super::{encode_request, Action, Actions, Timer, TimerConfig, TuEvent, TxError};
use crate::sip::{HeaderName, Method, Request, Response};

/// States of the INVITE client transaction (RFC 3261 Figure 5, RFC 6026
/// Figure 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteClientState {
    /// INVITE sent, no response yet; Timer A retransmits (unreliable), B
    /// times out.
    Calling,
    /// A provisional response arrived.
    Proceeding,
    /// A 300-699 arrived and was ACKed; Timer D absorbs retransmissions.
    Completed,
    /// A 2xx arrived (RFC 6026): further 2xx go to the TU until Timer M.
    Accepted,
    /// Done; the driver forgets the transaction.
    Terminated,
}

/// An INVITE client transaction (RFC 3261 §17.1.1, RFC 6026 §7.2).
///
/// Created by [`InviteClient::new`] with the INVITE to send; fed with
/// responses, timers and transport errors. The ACK for a 300-699 response is
/// built and sent here; the ACK for a 2xx is the TU's (§13.2.2.4).
#[derive(Debug)]
pub struct InviteClient {
    state: InviteClientState,
    reliable: bool,
    config: TimerConfig,
    /// The INVITE, kept until the final response to build the ACK or CANCEL.
    request: Option<Request>,
    /// The INVITE on the wire, for Timer A retransmissions.
    wire: Option<Bytes>,
    /// The current Timer A interval (doubles, no cap: §17.1.1.2).
    timer_a: Duration,
    /// The ACK sent for the 300-699 response, resent on its retransmissions.
    ack: Option<Bytes>,
    /// The TU asked to cancel while in Calling: send CANCEL on the first
    /// provisional response (§9.1).
    cancel_pending: bool,
    /// A CANCEL was sent; Timer Cancelled runs (§9.1).
    cancelled: bool,
    /// 64*T1 for each check of Timer Unanswered made in Proceeding (the
    /// first by Timer B): about how long the INVITE has waited there.
    proceeding_for: Duration,
}

impl InviteClient {
    /// Starts the transaction: sends the INVITE, schedules Timer A
    /// (unreliable transports only) and Timer B. `reliable` is true for
    /// TCP/TLS.
    pub fn new(request: Request, reliable: bool, config: &TimerConfig) -> (Self, Actions) {
        let mut out = Actions::default();
        let tx = Self::new_into(request, reliable, config, &mut out);
        (tx, out)
    }

    /// [`Self::new`], appending the first actions to `out` (the layer's
    /// list for the step: no copy of a returned list).
    pub(crate) fn new_into(
        request: Request,
        reliable: bool,
        config: &TimerConfig,
        out: &mut Actions,
    ) -> Self {
        let wire = encode_request(&request);
        out.push(Action::Send(wire.clone()));
        if !reliable {
            out.push(Action::Schedule(
                Timer::A,
                config.initial(Timer::A, reliable),
            ));
        }
        out.push(Action::Schedule(
            Timer::B,
            config.initial(Timer::B, reliable),
        ));
        Self {
            state: InviteClientState::Calling,
            reliable,
            config: *config,
            request: Some(request),
            wire: Some(wire),
            timer_a: config.t1,
            ack: None,
            cancel_pending: false,
            cancelled: false,
            proceeding_for: Duration::ZERO,
        }
    }

    /// The current state.
    pub fn state(&self) -> InviteClientState {
        self.state
    }

    /// The INVITE this transaction sent, until the final response.
    pub fn request(&self) -> Option<&Request> {
        self.request.as_ref()
    }

    /// The compact record that replaces this machine once it only waits
    /// for Timer D (Completed) or Timer M (Accepted), see
    /// [`super::lingering`].
    pub(crate) fn linger(&self) -> Option<ClientLinger> {
        match (self.state, &self.ack) {
            (InviteClientState::Completed, Some(ack)) => {
                Some(ClientLinger::CompletedInvite { ack: ack.clone() })
            }
            (InviteClientState::Accepted, _) => Some(ClientLinger::Accepted),
            _ => None,
        }
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
        use InviteClientState::*;
        let status = response.status;
        match self.state {
            Calling | Proceeding if status.is_provisional() => {
                // Proceeding has no RFC timeout; Timer B, still pending,
                // makes the first check of Timer Unanswered's.
                self.state = Proceeding;
                out.push(Action::Deliver(TuEvent::Response(response)));
            }
            Calling | Proceeding if status.is_success() => {
                // RFC 6026 §7.2: the 2xx goes to the TU, which ACKs it.
                self.state = Accepted;
                self.request = None;
                self.wire = None;
                out.push(Action::Schedule(
                    Timer::M,
                    self.config.initial(Timer::M, self.reliable),
                ));
                out.push(Action::Deliver(TuEvent::Response(response)));
            }
            Calling | Proceeding => {
                let ack = self
                    .request
                    .take()
                    .map(|invite| encode_request(&build_ack(&invite, &response)));
                self.wire = None;
                if let Some(ack) = &ack {
                    out.push(Action::Send(ack.clone()));
                }
                self.ack = ack;
                out.push(Action::Deliver(TuEvent::Response(response)));
                let d = self.config.initial(Timer::D, self.reliable);
                if d.is_zero() {
                    self.state = Terminated;
                    out.push(Action::Terminate);
                } else {
                    self.state = Completed;
                    out.push(Action::Schedule(Timer::D, d));
                }
            }
            // Retransmitted 300-699: ACK again, do not bother the TU.
            Completed if !status.is_provisional() && !status.is_success() => {
                if let Some(ack) = &self.ack {
                    out.push(Action::Send(ack.clone()));
                }
            }
            // RFC 6026: retransmitted or forked 2xx go to the TU for ACKing.
            Accepted if status.is_success() => {
                out.push(Action::Deliver(TuEvent::Response(response)));
            }
            Completed | Accepted | Terminated => {}
        }
    }

    /// Whether `timer` may still do something when it fires, now or later:
    /// false only when [`Self::on_timer`] ignores it in this state and in
    /// every state reachable from it, so that a driver may cancel it.
    pub fn wants_timer(&self, timer: Timer) -> bool {
        use InviteClientState::*;
        match timer {
            Timer::A => self.state == Calling,
            Timer::B | Timer::Cancelled | Timer::Unanswered => {
                matches!(self.state, Calling | Proceeding)
            }
            Timer::D => matches!(self.state, Calling | Proceeding | Completed),
            Timer::M => matches!(self.state, Calling | Proceeding | Accepted),
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
        use InviteClientState::*;
        match (self.state, timer) {
            (Calling, Timer::A) => {
                if let Some(wire) = &self.wire {
                    out.push(Action::Send(wire.clone()));
                }
                self.timer_a = self.timer_a.saturating_mul(2);
                out.push(Action::Schedule(Timer::A, self.timer_a));
            }
            (Calling, Timer::B) => self.time_out(out),
            (Calling | Proceeding, Timer::Cancelled) => self.time_out(out),
            // Timer B in Proceeding: the first check (see the module docs).
            (Proceeding, Timer::Unanswered | Timer::B) => {
                self.proceeding_for += self.config.t1x64();
                if self.proceeding_for < UNANSWERED_INVITE {
                    out.push(Action::Schedule(Timer::Unanswered, self.config.t1x64()));
                } else {
                    self.time_out(out);
                }
            }
            (Completed, Timer::D) | (Accepted, Timer::M) => {
                self.state = Terminated;
                out.push(Action::Terminate);
            }
            _ => {}
        }
    }

    fn time_out(&mut self, out: &mut Actions) {
        self.state = InviteClientState::Terminated;
        self.request = None;
        self.wire = None;
        out.push(Action::Deliver(TuEvent::Timeout));
        out.push(Action::Terminate);
    }

    /// The transport failed to send the INVITE or the ACK (§17.1.4).
    pub fn on_transport_error(&mut self) -> Actions {
        use InviteClientState::*;
        let mut out = Actions::default();
        match self.state {
            Calling | Proceeding => {
                self.state = Terminated;
                self.request = None;
                self.wire = None;
                out.push(Action::Deliver(TuEvent::TransportError));
                out.push(Action::Terminate);
            }
            // The ACK could not be sent. Figure 5 has the TU informed, but it
            // already has the final response and nothing left to do; a
            // second outcome for one transaction would only mislead it.
            Completed => {
                self.state = Terminated;
                self.ack = None;
                out.push(Action::Terminate);
            }
            // The 2xx ACK is the TU's; nothing of ours is on the wire.
            Accepted | Terminated => {}
        }
        out
    }

    /// The TU wants to cancel the INVITE (§9.1). Returns the CANCEL to send
    /// as its own non-INVITE client transaction when a provisional response
    /// has arrived; in Calling the CANCEL must wait for one, so it is
    /// remembered and handed out by [`InviteClient::take_pending_cancel`]
    /// after the first provisional response. Once a CANCEL is out, Timer
    /// Cancelled (64*T1) ends the transaction with a timeout if no final
    /// response arrives (§9.1).
    pub fn cancel(&mut self) -> Result<(Option<Request>, Actions), TxError> {
        use InviteClientState::*;
        match self.state {
            Calling => {
                self.cancel_pending = true;
                Ok((None, Actions::default()))
            }
            Proceeding if !self.cancelled => Ok(self.start_cancel()),
            Proceeding => Ok((None, Actions::default())),
            Completed | Accepted | Terminated => Err(TxError::NothingToCancel),
        }
    }

    /// The TU sent a CANCEL for this INVITE itself (as its own client
    /// transaction): start waiting 64*T1 for the final response (§9.1), as
    /// [`InviteClient::cancel`] does.
    pub fn on_cancel_sent(&mut self) -> Actions {
        let mut out = Actions::default();
        let open = matches!(
            self.state,
            InviteClientState::Calling | InviteClientState::Proceeding
        );
        if open && !self.cancelled {
            self.cancelled = true;
            self.cancel_pending = false;
            out.push(Action::Schedule(
                Timer::Cancelled,
                self.config.initial(Timer::Cancelled, self.reliable),
            ));
        }
        out
    }

    /// The CANCEL requested in Calling, once a provisional response moved
    /// the transaction to Proceeding; `None` otherwise.
    pub fn take_pending_cancel(&mut self) -> Option<(Request, Actions)> {
        if self.state != InviteClientState::Proceeding || !self.cancel_pending {
            return None;
        }
        self.cancel_pending = false;
        match self.start_cancel() {
            (Some(cancel), out) => Some((cancel, out)),
            (None, _) => None,
        }
    }

    fn start_cancel(&mut self) -> (Option<Request>, Actions) {
        let mut out = Actions::default();
        let Some(invite) = &self.request else {
            return (None, out);
        };
        self.cancelled = true;
        out.push(Action::Schedule(
            Timer::Cancelled,
            self.config.initial(Timer::Cancelled, self.reliable),
        ));
        (Some(build_cancel(invite)), out)
    }
}

/// The ACK for a 300-699 response (§17.1.1.3): the INVITE's Request-URI,
/// Call-ID, From, CSeq number and top Via (only), the response's To (with its
/// tag), the INVITE's Route set, Max-Forwards 70 and no body.
pub(crate) fn build_ack(invite: &Request, response: &Response) -> Request {
    let mut ack = derived_request(invite, Method::Ack);
    if let Some(to) = response.headers.get(&HeaderName::To) {
        ack.headers.set(HeaderName::To, to.clone());
    }
    ack
}

/// The CANCEL for an INVITE (§9.1): the INVITE's Request-URI, Call-ID, To,
/// From, CSeq number, top Via (so the same branch) and Route set.
pub(crate) fn build_cancel(invite: &Request) -> Request {
    derived_request(invite, Method::Cancel)
}

/// A request that shares the INVITE's transaction identity: ACK or CANCEL.
fn derived_request(invite: &Request, method: Method) -> Request {
    let mut req = Request::new(method.clone(), invite.uri.clone());
    let h = &invite.headers;
    if let Some(via) = first_via_value(invite) {
        req.headers.push(HeaderName::Via, via);
    }
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        if let Some(v) = h.get(&name) {
            req.headers.push(name, v.clone());
        }
    }
    let seq = invite.headers.cseq_ref().map(|c| c.seq).unwrap_or_default();
    req.headers
        .push(HeaderName::CSeq, format!("{seq} {}", method.as_str()));
    req.headers
        .push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
    for route in h.get_all(&HeaderName::Route) {
        req.headers.push(HeaderName::Route, route.clone());
    }
    req
}

/// The top Via as one value: the raw first Via line when it holds a single
/// value, else the typed top Via written out.
fn first_via_value(req: &Request) -> Option<Bytes> {
    let raw = req.headers.get(&HeaderName::Via)?;
    if !raw.contains(&b',') {
        return Some(raw.clone());
    }
    req.headers
        .top_via_ref()
        .ok()
        .map(|v| Bytes::from(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::HeaderName;
    use crate::transaction::test_support::*;

    fn start(reliable: bool) -> (InviteClient, Clock) {
        let (tx, actions) = InviteClient::new(invite(), reliable, &TimerConfig::default());
        let mut clock = Clock::default();
        clock.absorb(actions);
        (tx, clock)
    }

    #[test]
    fn calling_over_udp_retransmits_with_timer_a_doubling_until_timer_b() {
        let (mut tx, mut clock) = start(false);
        clock.run_until(secs(40), |t| tx.on_timer(t));
        // Timer A: 0.5 s doubling without a T2 cap (§17.1.1.2) until B at 64*T1.
        let expected: Vec<_> = [0, 500, 1500, 3500, 7500, 15500, 31500]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(clock.send_times(), expected);
        let sent = clock.sent();
        assert!(
            sent.iter().all(|b| b == &sent[0]),
            "retransmissions are identical"
        );
        assert_eq!(parse_request(&sent[0]).method, Method::Invite);
        let delivered = clock.delivered();
        assert_eq!(delivered.len(), 1);
        assert!(matches!(delivered[0], (t, TuEvent::Timeout) if t == secs(32)));
        assert_eq!(clock.terminated_at(), Some(secs(32)));
        assert_eq!(tx.state(), InviteClientState::Terminated);
    }

    #[test]
    fn calling_over_tcp_sends_once_and_times_out_with_timer_b() {
        let (mut tx, mut clock) = start(true);
        clock.run_until(secs(40), |t| tx.on_timer(t));
        assert_eq!(clock.send_times(), vec![ms(0)]);
        assert_eq!(clock.terminated_at(), Some(secs(32)));
        assert!(matches!(clock.delivered()[..], [(_, TuEvent::Timeout)]));
    }

    #[test]
    fn provisional_moves_to_proceeding_stops_retransmissions_and_timer_b() {
        let (mut tx, mut clock) = start(false);
        clock.run_until(ms(600), |t| tx.on_timer(t));
        clock.absorb(tx.on_response(response(&invite(), 180, Some("b1"))));
        assert_eq!(tx.state(), InviteClientState::Proceeding);
        clock.run_until(secs(100), |t| tx.on_timer(t));
        assert_eq!(clock.send_times(), vec![ms(0), ms(500)]);
        assert_eq!(
            tx.state(),
            InviteClientState::Proceeding,
            "B only fires in Calling"
        );
        assert!(matches!(
            clock.delivered()[..],
            [(_, TuEvent::Response(ref r))] if r.status.as_u16() == 180
        ));
        clock.absorb(tx.on_response(response(&invite(), 183, Some("b1"))));
        assert_eq!(
            clock.delivered().len(),
            2,
            "every provisional goes to the TU"
        );
    }

    #[test]
    fn success_moves_to_accepted_and_passes_every_2xx_until_timer_m() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(tx.on_response(response(&invite(), 200, Some("b1"))));
        assert_eq!(tx.state(), InviteClientState::Accepted);
        assert!(tx.request().is_none());
        assert!(clock.pending().contains(&(secs(32), Timer::M)));
        clock.run_until(secs(1), |t| tx.on_timer(t));
        // A retransmitted 2xx and a forked one go to the TU (RFC 6026 §7.2).
        clock.absorb(tx.on_response(response(&invite(), 200, Some("b1"))));
        clock.absorb(tx.on_response(response(&invite(), 200, Some("fork2"))));
        // A late provisional or a non-2xx are not for the TU any more.
        clock.absorb(tx.on_response(response(&invite(), 180, Some("b1"))));
        clock.absorb(tx.on_response(response(&invite(), 500, Some("b1"))));
        assert_eq!(clock.delivered().len(), 3);
        assert_eq!(
            clock.send_times(),
            vec![ms(0)],
            "no retransmission, no ACK from us"
        );
        clock.run_until(secs(40), |t| tx.on_timer(t));
        assert_eq!(clock.terminated_at(), Some(secs(32)));
        assert_eq!(tx.state(), InviteClientState::Terminated);
    }

    #[test]
    fn failure_is_acked_per_17_1_1_3_and_retransmissions_reacked_until_timer_d() {
        let (mut tx, mut clock) = start(false);
        clock.run_until(ms(700), |t| tx.on_timer(t));
        let busy = response(&invite(), 486, Some("xyz"));
        clock.absorb(tx.on_response(busy.clone()));
        assert_eq!(tx.state(), InviteClientState::Completed);
        let sent = clock.sent();
        assert_eq!(sent.len(), 3, "INVITE, one retransmission, ACK");
        let ack = parse_request(&sent[2]);
        let inv = invite();
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.uri, inv.uri);
        let vias = ack.via().unwrap();
        assert_eq!(vias.len(), 1, "only the top Via");
        assert_eq!(vias[0].branch(), Some("z9hG4bKabc123"));
        assert_eq!(ack.from().unwrap(), inv.from().unwrap());
        assert_eq!(ack.to().unwrap().tag(), Some("xyz"));
        assert_eq!(ack.to().unwrap().uri, inv.to().unwrap().uri);
        assert_eq!(ack.call_id().unwrap(), inv.call_id().unwrap());
        let cseq = ack.cseq().unwrap();
        assert_eq!((cseq.seq, cseq.method), (314159, Method::Ack));
        assert_eq!(ack.route().unwrap(), inv.route().unwrap());
        assert_eq!(ack.route().unwrap().len(), 2);
        assert_eq!(ack.max_forwards().unwrap(), Some(70));
        assert!(ack.body.is_empty());
        assert!(ack.headers.get(&HeaderName::Contact).is_none());
        assert!(matches!(
            clock.delivered()[..],
            [(_, TuEvent::Response(ref r))] if r.status.as_u16() == 486
        ));

        // The 486 retransmitted: ACK again, TU not bothered.
        clock.run_until(secs(2), |t| tx.on_timer(t));
        clock.absorb(tx.on_response(busy));
        assert_eq!(clock.sent().len(), 4);
        assert_eq!(clock.sent()[3], sent[2]);
        assert_eq!(clock.delivered().len(), 1);
        assert_eq!(clock.send_times().len(), 4, "Timer A is dead in Completed");

        clock.run_until(secs(60), |t| tx.on_timer(t));
        assert_eq!(clock.terminated_at(), Some(ms(700) + secs(32)));
    }

    #[test]
    fn proceeding_moves_to_completed_or_accepted_on_the_final() {
        for (code, state) in [
            (404, InviteClientState::Completed),
            (200, InviteClientState::Accepted),
        ] {
            let (mut tx, mut clock) = start(false);
            clock.absorb(tx.on_response(response(&invite(), 183, Some("e"))));
            clock.absorb(tx.on_response(response(&invite(), code, Some("e"))));
            assert_eq!(tx.state(), state);
            let acks = clock.sent().len() - 1;
            assert_eq!(acks, usize::from(code == 404), "ACK only for the non-2xx");
            assert_eq!(clock.delivered().len(), 2);
        }
    }

    #[test]
    fn failure_over_tcp_is_acked_and_terminates_at_once() {
        let (mut tx, mut clock) = start(true);
        clock.absorb(tx.on_response(response(&invite(), 603, Some("d"))));
        assert_eq!(tx.state(), InviteClientState::Terminated);
        assert_eq!(clock.sent().len(), 2);
        assert_eq!(parse_request(&clock.sent()[1]).method, Method::Ack);
        assert_eq!(clock.terminated_at(), Some(ms(0)));
        assert_eq!(clock.delivered().len(), 1);
    }

    #[test]
    fn transport_error_terminates_and_informs_tu() {
        for state_setup in [false, true] {
            let (mut tx, mut clock) = start(false);
            if state_setup {
                clock.absorb(tx.on_response(response(&invite(), 100, None)));
                assert_eq!(tx.state(), InviteClientState::Proceeding);
            }
            clock.absorb(tx.on_transport_error());
            assert_eq!(tx.state(), InviteClientState::Terminated);
            assert!(matches!(
                clock.delivered().last(),
                Some((_, TuEvent::TransportError))
            ));
            assert_eq!(clock.terminated_at(), Some(ms(0)));
        }
        // In Completed (the ACK failed) the TU, which has its final
        // response, hears nothing more.
        let (mut tx, mut clock) = start(false);
        clock.absorb(tx.on_response(response(&invite(), 486, Some("t"))));
        clock.absorb(tx.on_transport_error());
        assert_eq!(tx.state(), InviteClientState::Terminated);
        assert_eq!(clock.delivered().len(), 1);
        assert_eq!(clock.terminated_at(), Some(ms(0)));
        // In Accepted nothing of ours is on the wire.
        let (mut tx, mut clock) = start(false);
        clock.absorb(tx.on_response(response(&invite(), 200, Some("t"))));
        assert!(tx.on_transport_error().is_empty());
        assert_eq!(tx.state(), InviteClientState::Accepted);
    }

    #[test]
    fn cancel_in_proceeding_builds_the_9_1_cancel_and_gives_up_64_t1_later() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(tx.on_response(response(&invite(), 180, Some("r"))));
        clock.run_until(secs(10), |t| tx.on_timer(t));
        let (cancel, actions) = tx.cancel().unwrap();
        clock.absorb(actions);
        let cancel = cancel.unwrap();
        let inv = invite();
        assert_eq!(cancel.method, Method::Cancel);
        assert_eq!(cancel.uri, inv.uri);
        let vias = cancel.via().unwrap();
        assert_eq!(vias.len(), 1);
        assert_eq!(vias[0].branch(), Some("z9hG4bKabc123"));
        assert_eq!(
            cancel.to().unwrap(),
            inv.to().unwrap(),
            "To without the response's tag"
        );
        assert_eq!(cancel.from().unwrap(), inv.from().unwrap());
        assert_eq!(cancel.call_id().unwrap(), inv.call_id().unwrap());
        let cseq = cancel.cseq().unwrap();
        assert_eq!((cseq.seq, cseq.method), (314159, Method::Cancel));
        assert_eq!(cancel.route().unwrap().len(), 2);
        // A second cancel sends nothing new.
        assert!(matches!(tx.cancel(), Ok((None, _))));
        // No final response within 64*T1 of the CANCEL: give up (§9.1).
        clock.run_until(secs(60), |t| tx.on_timer(t));
        assert_eq!(clock.terminated_at(), Some(secs(42)));
        assert!(matches!(
            clock.delivered().last(),
            Some((_, TuEvent::Timeout))
        ));
    }

    #[test]
    fn a_cancel_sent_by_the_tu_starts_the_64_t1_wait() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(tx.on_response(response(&invite(), 180, Some("r"))));
        clock.run_until(secs(5), |t| tx.on_timer(t));
        clock.absorb(tx.on_cancel_sent());
        assert!(tx.on_cancel_sent().is_empty(), "once");
        clock.run_until(secs(60), |t| tx.on_timer(t));
        assert_eq!(clock.terminated_at(), Some(secs(37)));
        assert!(matches!(
            clock.delivered().last(),
            Some((_, TuEvent::Timeout))
        ));
    }

    #[test]
    fn proceeding_without_a_final_ends_after_timer_unanswered() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(tx.on_response(response(&invite(), 180, Some("r"))));
        clock.run_until(secs(191), |t| tx.on_timer(t));
        assert_eq!(tx.state(), InviteClientState::Proceeding);
        clock.run_until(secs(200), |t| tx.on_timer(t));
        assert_eq!(tx.state(), InviteClientState::Terminated);
        assert_eq!(clock.terminated_at(), Some(secs(192)));
        assert!(matches!(
            clock.delivered().last(),
            Some((_, TuEvent::Timeout))
        ));
    }

    #[test]
    fn timer_b_makes_the_first_unanswered_check_counted_from_the_invite() {
        let (mut tx, mut clock) = start(false);
        clock.run_until(secs(10), |t| tx.on_timer(t));
        let step = tx.on_response(response(&invite(), 180, Some("r")));
        assert!(
            !step.iter().any(|a| matches!(a, Action::Schedule(..))),
            "the provisional arms nothing: Timer B is still pending"
        );
        assert!(tx.wants_timer(Timer::B) && !tx.wants_timer(Timer::A));
        clock.absorb(step);
        // Checks at 32, 64, ... 192 s after the INVITE (not the 180).
        clock.run_until(secs(191), |t| tx.on_timer(t));
        assert_eq!(tx.state(), InviteClientState::Proceeding);
        clock.run_until(secs(200), |t| tx.on_timer(t));
        assert_eq!(clock.terminated_at(), Some(secs(192)));
        assert!(!tx.wants_timer(Timer::B), "Terminated");
    }

    #[test]
    fn cancel_in_calling_waits_for_a_provisional_response() {
        let (mut tx, mut clock) = start(false);
        let (cancel, actions) = tx.cancel().unwrap();
        assert!(cancel.is_none() && actions.is_empty());
        assert!(tx.take_pending_cancel().is_none(), "still Calling");
        clock.absorb(tx.on_response(response(&invite(), 100, None)));
        let (cancel, _) = tx.take_pending_cancel().unwrap();
        assert_eq!(cancel.method, Method::Cancel);
        assert!(tx.take_pending_cancel().is_none(), "handed out once");
    }

    #[test]
    fn cancel_after_a_final_response_is_refused() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(tx.on_response(response(&invite(), 200, Some("t"))));
        assert!(matches!(tx.cancel(), Err(TxError::NothingToCancel)));
    }
}
