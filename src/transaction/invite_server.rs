//! The INVITE server transaction: RFC 3261 §17.2.1 with the Accepted state
//! and Timer L of RFC 6026 §7.1, plus (opt-in) the UAS core's 2xx
//! retransmission of §13.3.1.4.

use std::time::Duration;

use bytes::Bytes;

use super::key::generate_tag;
use super::lingering::ServerLinger;
use super::timers::UNANSWERED_INVITE;
use super::{encode_response, Action, Actions, Timer, TimerConfig, TuEvent, TxError};
use crate::sip::{HeaderName, Headers, Method, Request, Response, StatusCode};

/// States of the INVITE server transaction (RFC 3261 Figure 7, RFC 6026
/// Figure 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    /// INVITE received; the TU may send provisional responses.
    Proceeding,
    /// A 300-699 was sent; Timer G retransmits it (unreliable), H waits for
    /// the ACK.
    Completed,
    /// The ACK arrived; Timer I absorbs its retransmissions.
    Confirmed,
    /// A 2xx was sent (RFC 6026): INVITE retransmissions are absorbed, the
    /// TU's 2xx retransmissions pass, ACKs go to the TU, until Timer L.
    Accepted,
    /// Done; the driver forgets the transaction.
    Terminated,
}

impl InviteServerState {
    fn name(self) -> &'static str {
        match self {
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Confirmed => "Confirmed",
            Self::Accepted => "Accepted",
            Self::Terminated => "Terminated",
        }
    }
}

/// An INVITE server transaction (RFC 3261 §17.2.1, RFC 6026 §7.1).
///
/// Created with the INVITE (which the driver passes to the TU); fed with
/// retransmitted INVITEs and ACKs, the TU's responses, timers and transport
/// errors. Sends 100 (Trying) itself when the TU has sent no provisional
/// response 200 ms after the INVITE arrived.
///
/// The transaction itself never retransmits a 2xx (RFC 6026 §7.1): that is
/// the UAS core's job (§13.3.1.4). A UA-type TU may hand that job over with
/// [`InviteServer::retransmit_2xx`]: in Accepted the latest 2xx is then
/// resent at T1, 2*T1, … capped at T2 until [`InviteServer::on_2xx_ack`],
/// and Timer L without an ACK is reported as [`TuEvent::Timeout`] (the
/// session should be ended with BYE).
#[derive(Debug)]
pub struct InviteServer {
    state: InviteServerState,
    reliable: bool,
    config: TimerConfig,
    /// What the INVITE's 100 (Trying) is made of, kept while in
    /// Proceeding to send it (on Timer Trying) or our own 408 (on Timer
    /// Unanswered).
    template: Option<Copied>,
    /// No provisional response sent yet: Timer Trying sends 100.
    trying_due: bool,
    /// How long the INVITE has waited for a final response, in whole
    /// Timer Unanswered periods.
    unanswered_for: Duration,
    /// The most recent provisional (Proceeding) or the final (Completed)
    /// response, resent on INVITE retransmissions and Timer G.
    last: Option<Bytes>,
    /// The current Timer G interval (doubles up to T2).
    timer_g: Duration,
    /// Whether this transaction retransmits 2xx for the UAS core.
    retransmit_2xx: bool,
    /// The latest 2xx while it awaits its ACK (retransmit mode only).
    unacked_2xx: Option<Bytes>,
    /// The current 2xx retransmission interval (doubles up to T2).
    timer_2xx: Duration,
    /// A transport error in Accepted was reported to the TU already.
    transport_error_reported: bool,
}

impl InviteServer {
    /// Creates the transaction for a received INVITE and schedules the
    /// 200 ms Trying timer (§17.2.1) and Timer Unanswered.
    pub fn new(invite: &Request, reliable: bool, config: &TimerConfig) -> (Self, Actions) {
        let mut out = Actions::default();
        let tx = Self::new_into(invite, reliable, config, &mut out);
        (tx, out)
    }

    /// [`Self::new`], appending the first actions to `out` (the layer's
    /// list for the step: no copy of a returned list).
    pub(crate) fn new_into(
        invite: &Request,
        reliable: bool,
        config: &TimerConfig,
        out: &mut Actions,
    ) -> Self {
        let template = Some(Copied::of(invite));
        out.push(Action::Schedule(
            Timer::Trying,
            config.initial(Timer::Trying, reliable),
        ));
        // Checked every 64*T1 rather than scheduled once for 3 minutes, so
        // that the timer of an answered INVITE does not linger in the
        // driver's queue long after the transaction is gone.
        out.push(Action::Schedule(Timer::Unanswered, config.t1x64()));
        Self {
            state: InviteServerState::Proceeding,
            reliable,
            config: *config,
            template,
            trying_due: true,
            unanswered_for: Duration::ZERO,
            last: None,
            timer_g: config.t1,
            retransmit_2xx: false,
            unacked_2xx: None,
            timer_2xx: config.t1,
            transport_error_reported: false,
        }
    }

    /// Takes on the UAS core's 2xx retransmission (§13.3.1.4) for this
    /// transaction; see the type's docs.
    pub fn retransmit_2xx(&mut self) {
        self.retransmit_2xx = true;
    }

    /// The current state.
    pub fn state(&self) -> InviteServerState {
        self.state
    }

    /// The compact record that replaces this machine once it only waits
    /// for Timer I (Confirmed) or Timer L (Accepted, with no 2xx of its own
    /// awaiting an ACK), see [`super::lingering`].
    pub(crate) fn linger(&self) -> Option<ServerLinger> {
        match self.state {
            InviteServerState::Confirmed => Some(ServerLinger::Confirmed),
            InviteServerState::Accepted if self.unacked_2xx.is_none() => {
                Some(ServerLinger::Accepted {
                    transport_error_reported: self.transport_error_reported,
                    // The layer's to fill in (it knows the transport).
                    drains: 0,
                    skipped: false,
                })
            }
            _ => None,
        }
    }

    /// The TU sends a response on this transaction.
    ///
    /// Proceeding accepts any status; Accepted accepts further 2xx (the TU
    /// retransmits its 2xx itself, §13.3.1.4); anything else is
    /// [`TxError::ResponseNotAllowed`].
    pub fn on_tu_response(&mut self, response: Response) -> Result<Actions, TxError> {
        let mut out = Actions::default();
        self.on_tu_response_into(&response, &mut out)?;
        Ok(out)
    }

    /// [`Self::on_tu_response`], appending the actions to `out` (the
    /// layer's list for the step: no copy of a returned list). The
    /// response is only encoded, so it is borrowed (the TU's stays where
    /// it is).
    pub(crate) fn on_tu_response_into(
        &mut self,
        response: &Response,
        out: &mut Actions,
    ) -> Result<(), TxError> {
        use InviteServerState::*;
        let status = response.status;
        match self.state {
            Proceeding if status.is_provisional() => {
                let wire = encode_response(response);
                self.trying_due = false;
                self.last = Some(wire.clone());
                out.push(Action::Send(wire));
            }
            Proceeding if status.is_success() => {
                self.template = None;
                self.last = None;
                self.state = Accepted;
                let wire = encode_response(response);
                if self.retransmit_2xx {
                    self.unacked_2xx = Some(wire.clone());
                    out.push(Action::Schedule(Timer::Retransmit2xx, self.timer_2xx));
                }
                out.push(Action::Send(wire));
                out.push(Action::Schedule(
                    Timer::L,
                    self.config.initial(Timer::L, self.reliable),
                ));
            }
            Proceeding => self.complete(encode_response(response), out),
            Accepted if status.is_success() => {
                let wire = encode_response(response);
                if self.unacked_2xx.is_some() {
                    self.unacked_2xx = Some(wire.clone());
                }
                out.push(Action::Send(wire));
            }
            state => {
                return Err(TxError::ResponseNotAllowed {
                    status: status.as_u16(),
                    state: state.name(),
                })
            }
        }
        Ok(())
    }

    /// A request matched this transaction: a retransmitted INVITE or an ACK.
    pub fn on_request(&mut self, request: Request) -> Actions {
        use InviteServerState::*;
        let mut out = Actions::default();
        match (&request.method, self.state) {
            // Retransmitted INVITE: resend the latest provisional or the
            // final response; absorbed in Accepted (RFC 6026) and Confirmed.
            (Method::Invite, Proceeding | Completed) => {
                if let Some(last) = &self.last {
                    out.push(Action::Send(last.clone()));
                }
            }
            (Method::Ack, Completed) => {
                let i = self.config.initial(Timer::I, self.reliable);
                if i.is_zero() {
                    self.state = Terminated;
                    out.push(Action::Terminate);
                } else {
                    self.state = Confirmed;
                    out.push(Action::Schedule(Timer::I, i));
                }
                self.last = None;
            }
            // RFC 6026 §7.1: the ACK for the 2xx belongs to the TU.
            (Method::Ack, Accepted) => {
                self.unacked_2xx = None;
                out.push(Action::Deliver(TuEvent::Ack(Box::new(request))));
            }
            _ => {}
        }
        out
    }

    /// Whether `timer` may still do something when it fires, now or later:
    /// false only when [`Self::on_timer`] ignores it in this state and in
    /// every state reachable from it, so that a driver may cancel it.
    pub fn wants_timer(&self, timer: Timer) -> bool {
        use InviteServerState::*;
        match timer {
            // Once answered (or sent), the 100 is never due again.
            Timer::Trying => self.state == Proceeding && self.trying_due,
            Timer::Unanswered => self.state == Proceeding,
            Timer::G | Timer::H => matches!(self.state, Proceeding | Completed),
            Timer::Retransmit2xx | Timer::L => matches!(self.state, Proceeding | Accepted),
            Timer::I => matches!(self.state, Proceeding | Completed | Confirmed),
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
        use InviteServerState::*;
        match (self.state, timer) {
            (Proceeding, Timer::Trying) => {
                if let (true, Some(copied)) = (self.trying_due, &self.template) {
                    self.trying_due = false;
                    let wire = encode_response(&copied.response(StatusCode::TRYING));
                    self.last = Some(wire.clone());
                    out.push(Action::Send(wire));
                }
            }
            (Proceeding, Timer::Unanswered) => {
                self.unanswered_for += self.config.t1x64();
                if self.unanswered_for < UNANSWERED_INVITE {
                    out.push(Action::Schedule(Timer::Unanswered, self.config.t1x64()));
                    return;
                }
                // The TU never answered: end the INVITE for the caller (whose
                // client transaction has no timeout in Proceeding).
                if let Some(copied) = self.template.take() {
                    let mut timeout = copied.response(StatusCode::REQUEST_TIMEOUT);
                    timeout.set_to_tag(&generate_tag());
                    self.complete(encode_response(&timeout), out);
                }
                out.push(Action::Deliver(TuEvent::Timeout));
            }
            (Completed, Timer::G) => {
                if let Some(last) = &self.last {
                    out.push(Action::Send(last.clone()));
                }
                self.timer_g = self.timer_g.saturating_mul(2).min(self.config.t2);
                out.push(Action::Schedule(Timer::G, self.timer_g));
            }
            (Completed, Timer::H) => {
                self.state = Terminated;
                self.last = None;
                out.push(Action::Deliver(TuEvent::Timeout));
                out.push(Action::Terminate);
            }
            (Accepted, Timer::Retransmit2xx) => {
                if let Some(wire) = &self.unacked_2xx {
                    out.push(Action::Send(wire.clone()));
                    self.timer_2xx = self.timer_2xx.saturating_mul(2).min(self.config.t2);
                    out.push(Action::Schedule(Timer::Retransmit2xx, self.timer_2xx));
                }
            }
            (Accepted, Timer::L) => {
                self.state = Terminated;
                if self.unacked_2xx.take().is_some() {
                    // §13.3.1.4: no ACK within 64*T1.
                    out.push(Action::Deliver(TuEvent::Timeout));
                }
                out.push(Action::Terminate);
            }
            (Confirmed, Timer::I) => {
                self.state = Terminated;
                out.push(Action::Terminate);
            }
            _ => {}
        }
    }

    /// Sends a 300-699 final response and enters Completed.
    fn complete(&mut self, wire: Bytes, out: &mut Actions) {
        self.template = None;
        self.last = Some(wire.clone());
        self.state = InviteServerState::Completed;
        out.push(Action::Send(wire));
        if !self.reliable {
            out.push(Action::Schedule(Timer::G, self.timer_g));
        }
        out.push(Action::Schedule(
            Timer::H,
            self.config.initial(Timer::H, self.reliable),
        ));
    }

    /// The ACK for the 2xx arrived (matched by its dialog, since it is a
    /// transaction of its own): stop retransmitting the 2xx.
    pub fn on_2xx_ack(&mut self) {
        self.unacked_2xx = None;
    }

    /// The transport failed to send a response (§17.2.4).
    pub fn on_transport_error(&mut self) -> Actions {
        use InviteServerState::*;
        let mut out = Actions::default();
        match self.state {
            Proceeding | Completed => {
                self.state = Terminated;
                self.template = None;
                self.last = None;
                out.push(Action::Deliver(TuEvent::TransportError));
                out.push(Action::Terminate);
            }
            // The TU owns the 2xx (and its retransmissions); tell it once,
            // and keep absorbing INVITE retransmissions until Timer L.
            Accepted if !self.transport_error_reported => {
                self.transport_error_reported = true;
                out.push(Action::Deliver(TuEvent::TransportError));
            }
            Accepted => {}
            Confirmed | Terminated => {}
        }
        out
    }
}

/// What a response of the transaction's own (100 Trying, 408) copies from
/// the INVITE (§8.2.6.2: every Via, From, To, Call-ID and CSeq), kept as
/// the INVITE's header values rather than as a prebuilt response: nearly
/// every INVITE is answered by the TU before Timer Trying fires, so the
/// response is built only when it is sent. The values share the INVITE's
/// datagram, as a prebuilt response's would.
// The usual variant is the one nearly every INVITE takes: boxing it would
// bring back the allocation this type exists to avoid.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Copied {
    /// At most [`USUAL_VIAS`] Via lines and at most one of each other
    /// header (nearly every INVITE): no allocation.
    Usual {
        vias: [Option<Bytes>; USUAL_VIAS],
        from: Option<Bytes>,
        to: Option<Bytes>,
        call_id: Option<Bytes>,
        cseq: Option<Bytes>,
    },
    /// Anything else, as [`Response::for_request`] copies it.
    Other(Box<Headers>),
}

/// Via lines an INVITE may have for [`Copied::Usual`] (a caller's, and a
/// proxy's in front of it).
const USUAL_VIAS: usize = 2;

impl Copied {
    fn of(invite: &Request) -> Self {
        let mut vias: [Option<Bytes>; USUAL_VIAS] = Default::default();
        let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
        for h in invite.headers.iter() {
            let slot = match h.name {
                HeaderName::Via => vias.iter_mut().find(|v| v.is_none()),
                HeaderName::From => Some(&mut from),
                HeaderName::To => Some(&mut to),
                HeaderName::CallId => Some(&mut call_id),
                HeaderName::CSeq => Some(&mut cseq),
                _ => continue,
            };
            match slot {
                Some(slot @ None) => *slot = Some(h.value.clone()),
                _ => {
                    let all = Response::for_request(invite, StatusCode::TRYING).headers;
                    return Copied::Other(Box::new(all));
                }
            }
        }
        Copied::Usual {
            vias,
            from,
            to,
            call_id,
            cseq,
        }
    }

    /// A response with `status` and the copied headers (no To tag).
    fn response(&self, status: StatusCode) -> Response {
        let mut r = Response::new(status);
        match self {
            Copied::Usual {
                vias,
                from,
                to,
                call_id,
                cseq,
            } => {
                let fields = vias.iter().map(|v| (HeaderName::Via, v)).chain([
                    (HeaderName::From, from),
                    (HeaderName::To, to),
                    (HeaderName::CallId, call_id),
                    (HeaderName::CSeq, cseq),
                ]);
                let mut headers = Headers::with_capacity(USUAL_VIAS + 4);
                for (name, value) in fields {
                    if let Some(value) = value {
                        headers.push(name, value.clone());
                    }
                }
                r.headers = headers;
            }
            Copied::Other(headers) => r.headers = Headers::clone(headers),
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::HeaderName;
    use crate::transaction::test_support::*;

    fn start(reliable: bool) -> (InviteServer, Clock) {
        let (tx, actions) = InviteServer::new(&invite(), reliable, &TimerConfig::default());
        let mut clock = Clock::default();
        clock.absorb(actions);
        (tx, clock)
    }

    fn status_of(b: &Bytes) -> u16 {
        parse_response(b).status.as_u16()
    }

    #[test]
    fn sends_100_trying_when_the_tu_is_silent_for_200_ms() {
        let (mut tx, mut clock) = start(false);
        clock.run_until(ms(199), |t| tx.on_timer(t));
        assert!(clock.sent().is_empty());
        clock.run_until(ms(300), |t| tx.on_timer(t));
        assert_eq!(clock.send_times(), vec![ms(200)]);
        let trying = parse_response(&clock.sent()[0]);
        let inv = invite();
        assert_eq!(trying.status.as_u16(), 100);
        assert_eq!(trying.via().unwrap(), inv.via().unwrap(), "all Vias copied");
        assert_eq!(trying.from().unwrap(), inv.from().unwrap());
        assert_eq!(trying.to().unwrap(), inv.to().unwrap());
        assert_eq!(trying.call_id().unwrap(), inv.call_id().unwrap());
        assert_eq!(trying.cseq().unwrap(), inv.cseq().unwrap());
        // A retransmitted INVITE now gets the 100 again.
        clock.absorb(tx.on_request(invite()));
        assert_eq!(clock.sent().len(), 2);
        assert_eq!(status_of(&clock.sent()[1]), 100);
    }

    /// The 100 (Trying) the machine sends at 200 ms for `invite`.
    fn trying_for(invite: &Request) -> Bytes {
        let (mut tx, actions) = InviteServer::new(invite, false, &TimerConfig::default());
        let mut clock = Clock::default();
        clock.absorb(actions);
        clock.run_until(ms(300), |t| tx.on_timer(t));
        assert_eq!(clock.send_times(), vec![ms(200)]);
        clock.sent()[0].clone()
    }

    #[test]
    fn the_100_is_built_when_sent_with_what_for_request_copies() {
        // Two Via lines, one of everything else: kept without a template.
        let inv = invite();
        assert!(matches!(Copied::of(&inv), Copied::Usual { .. }));
        let expected = Response::for_request(&inv, StatusCode::TRYING).to_bytes();
        assert_eq!(trying_for(&inv), expected);
        // More Via lines, compact forms, a header written twice, headers in
        // another order: still everything for_request copies, in order.
        let unusual = request(
            "
INVITE sip:bob@example.com SIP/2.0
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc123;rport
f: Alice <sip:alice@example.com>;tag=1928301774
Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKp1, SIP/2.0/UDP 10.0.0.8;branch=z9hG4bKp2
Via: SIP/2.0/TCP 10.0.0.7;branch=z9hG4bKp3
t: Bob <sip:bob@example.com>
i: a84b4c76e66710@10.0.0.1
CSeq: 314159 INVITE
Content-Length: 0

",
        );
        assert!(matches!(Copied::of(&unusual), Copied::Other(_)));
        let expected = Response::for_request(&unusual, StatusCode::TRYING).to_bytes();
        let sent = trying_for(&unusual);
        assert_eq!(sent, expected);
        assert_eq!(parse_response(&sent).via().unwrap().len(), 4);
        // One Via, From after it: the usual form, nothing missing.
        let one = options_as_invite();
        assert!(matches!(Copied::of(&one), Copied::Usual { .. }));
        let trying = parse_response(&trying_for(&one));
        assert_eq!(trying.via().unwrap(), one.via().unwrap());
        assert_eq!(trying.from().unwrap(), one.from().unwrap());
        assert_eq!(trying.to().unwrap(), one.to().unwrap());
        assert_eq!(trying.call_id().unwrap(), one.call_id().unwrap());
        assert_eq!(trying.cseq().unwrap(), one.cseq().unwrap());
        let names: Vec<_> = trying.headers.iter().map(|h| h.name.clone()).collect();
        assert_eq!(
            names,
            [
                HeaderName::Via,
                HeaderName::From,
                HeaderName::To,
                HeaderName::CallId,
                HeaderName::CSeq,
                HeaderName::ContentLength
            ],
            "the copied headers and the Content-Length written with them"
        );
    }

    /// An INVITE with a single Via and no Route or body.
    fn options_as_invite() -> Request {
        request(
            "
INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKone
Max-Forwards: 70
To: <sip:bob@example.com>
From: <sip:alice@example.com>;tag=77
Call-ID: one@10.0.0.1
CSeq: 1 INVITE
Content-Length: 0

",
        )
    }

    #[test]
    fn no_100_trying_when_the_tu_answered_first() {
        let (mut tx, mut clock) = start(false);
        clock.run_until(ms(50), |t| tx.on_timer(t));
        clock.absorb(
            tx.on_tu_response(response(&invite(), 180, Some("u")))
                .unwrap(),
        );
        clock.run_until(secs(1), |t| tx.on_timer(t));
        assert_eq!(clock.send_times(), vec![ms(50)]);
        assert_eq!(status_of(&clock.sent()[0]), 180);
    }

    #[test]
    fn retransmitted_invite_resends_the_latest_provisional_or_is_absorbed() {
        let (mut tx, mut clock) = start(false);
        assert!(
            tx.on_request(invite()).is_empty(),
            "nothing sent yet: absorbed"
        );
        clock.absorb(
            tx.on_tu_response(response(&invite(), 180, Some("u")))
                .unwrap(),
        );
        clock.absorb(
            tx.on_tu_response(response(&invite(), 183, Some("u")))
                .unwrap(),
        );
        clock.absorb(tx.on_request(invite()));
        let sent = clock.sent();
        assert_eq!(sent.len(), 3);
        assert_eq!(status_of(&sent[2]), 183);
        assert_eq!(tx.state(), InviteServerState::Proceeding);
    }

    #[test]
    fn failure_over_udp_retransmits_with_timer_g_to_t2_until_timer_h() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(
            tx.on_tu_response(response(&invite(), 486, Some("u")))
                .unwrap(),
        );
        assert_eq!(tx.state(), InviteServerState::Completed);
        clock.run_until(secs(40), |t| tx.on_timer(t));
        // G: 0.5, 1, 2, then T2 (§17.2.1); H = 64*T1 without an ACK.
        let expected: Vec<_> = [
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
        ]
        .into_iter()
        .map(ms)
        .collect();
        assert_eq!(clock.send_times(), expected);
        assert!(clock.sent().iter().all(|b| status_of(b) == 486));
        assert!(matches!(clock.delivered()[..], [(t, TuEvent::Timeout)] if t == secs(32)));
        assert_eq!(clock.terminated_at(), Some(secs(32)));
        assert_eq!(tx.state(), InviteServerState::Terminated);
    }

    #[test]
    fn failure_over_tcp_is_not_retransmitted_but_h_still_runs() {
        let (mut tx, mut clock) = start(true);
        clock.absorb(
            tx.on_tu_response(response(&invite(), 486, Some("u")))
                .unwrap(),
        );
        clock.run_until(secs(40), |t| tx.on_timer(t));
        assert_eq!(clock.send_times(), vec![ms(0)]);
        assert_eq!(clock.terminated_at(), Some(secs(32)));
    }

    #[test]
    fn completed_resends_the_final_on_invite_retransmission() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(
            tx.on_tu_response(response(&invite(), 404, Some("u")))
                .unwrap(),
        );
        clock.run_until(ms(100), |t| tx.on_timer(t));
        clock.absorb(tx.on_request(invite()));
        assert_eq!(clock.send_times(), vec![ms(0), ms(100)]);
        assert_eq!(status_of(&clock.sent()[1]), 404);
        assert!(matches!(
            tx.on_tu_response(response(&invite(), 200, Some("u"))),
            Err(TxError::ResponseNotAllowed {
                status: 200,
                state: "Completed"
            })
        ));
    }

    #[test]
    fn ack_confirms_and_timer_i_absorbs_retransmissions() {
        let (mut tx, mut clock) = start(false);
        let busy = response(&invite(), 486, Some("u"));
        clock.absorb(tx.on_tu_response(busy.clone()).unwrap());
        clock.run_until(secs(1), |t| tx.on_timer(t));
        let ack = crate::transaction::invite_client::build_ack(&invite(), &busy);
        clock.absorb(tx.on_request(ack.clone()));
        assert_eq!(tx.state(), InviteServerState::Confirmed);
        let sends = clock.sent().len();
        // ACK and INVITE retransmissions are absorbed, G is dead.
        clock.absorb(tx.on_request(ack));
        clock.absorb(tx.on_request(invite()));
        clock.run_until(secs(10), |t| tx.on_timer(t));
        assert_eq!(clock.sent().len(), sends);
        assert!(
            clock.delivered().is_empty(),
            "the non-2xx ACK is not the TU's"
        );
        assert_eq!(clock.terminated_at(), Some(secs(6)), "I = T4 after the ACK");
    }

    #[test]
    fn ack_over_tcp_terminates_at_once() {
        let (mut tx, mut clock) = start(true);
        let busy = response(&invite(), 486, Some("u"));
        clock.absorb(tx.on_tu_response(busy.clone()).unwrap());
        clock.absorb(tx.on_request(crate::transaction::invite_client::build_ack(
            &invite(),
            &busy,
        )));
        assert_eq!(tx.state(), InviteServerState::Terminated);
        assert_eq!(clock.terminated_at(), Some(ms(0)));
    }

    #[test]
    fn success_moves_to_accepted_per_rfc_6026() {
        let (mut tx, mut clock) = start(false);
        let ok = response(&invite(), 200, Some("u"));
        clock.absorb(tx.on_tu_response(ok.clone()).unwrap());
        assert_eq!(tx.state(), InviteServerState::Accepted);
        // INVITE retransmissions are absorbed, not answered and not passed up.
        assert!(tx.on_request(invite()).is_empty());
        // The TU retransmits its 2xx through the transaction.
        clock.run_until(ms(500), |t| tx.on_timer(t));
        clock.absorb(tx.on_tu_response(ok.clone()).unwrap());
        assert_eq!(clock.send_times(), vec![ms(0), ms(500)]);
        assert!(tx
            .on_tu_response(response(&invite(), 486, Some("u")))
            .is_err());
        // The ACK for the 2xx goes to the TU.
        let mut ack = crate::transaction::invite_client::build_ack(&invite(), &ok);
        ack.headers.set(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKack2",
        );
        clock.absorb(tx.on_request(ack));
        assert!(matches!(
            clock.delivered()[..],
            [(_, TuEvent::Ack(ref a))] if a.method == Method::Ack
        ));
        clock.run_until(secs(40), |t| tx.on_timer(t));
        assert_eq!(clock.terminated_at(), Some(secs(32)), "Timer L = 64*T1");
        assert_eq!(
            clock.sent().len(),
            2,
            "no 2xx retransmission by the transaction"
        );
    }

    #[test]
    fn uas_2xx_retransmission_runs_until_the_ack() {
        let (mut tx, mut clock) = start(false);
        tx.retransmit_2xx();
        clock.absorb(
            tx.on_tu_response(response(&invite(), 200, Some("u")))
                .unwrap(),
        );
        clock.run_until(secs(10), |t| tx.on_timer(t));
        // §13.3.1.4: T1, doubling, capped at T2.
        let expected: Vec<_> = [0, 500, 1500, 3500, 7500].into_iter().map(ms).collect();
        assert_eq!(clock.send_times(), expected);
        assert!(clock.sent().iter().all(|b| status_of(b) == 200));
        tx.on_2xx_ack();
        clock.run_until(secs(40), |t| tx.on_timer(t));
        assert_eq!(clock.send_times().len(), 5, "stopped by the ACK");
        assert!(clock.delivered().is_empty());
        assert_eq!(clock.terminated_at(), Some(secs(32)));
    }

    #[test]
    fn uas_2xx_without_ack_times_out_with_timer_l() {
        let (mut tx, mut clock) = start(false);
        tx.retransmit_2xx();
        clock.absorb(
            tx.on_tu_response(response(&invite(), 200, Some("u")))
                .unwrap(),
        );
        clock.run_until(secs(40), |t| tx.on_timer(t));
        assert_eq!(clock.send_times().len(), 11);
        assert!(matches!(clock.delivered()[..], [(t, TuEvent::Timeout)] if t == secs(32)));
        assert_eq!(clock.terminated_at(), Some(secs(32)));
    }

    #[test]
    fn an_invite_the_tu_never_answers_gets_408_after_timer_unanswered() {
        let (mut tx, mut clock) = start(false);
        // Checked every 64*T1: the first check at or past 3 minutes is 192 s.
        clock.run_until(secs(192) - ms(1), |t| tx.on_timer(t));
        assert_eq!(clock.send_times(), vec![ms(200)], "only the 100 so far");
        assert_eq!(clock.pending().len(), 1, "one Unanswered check pending");
        clock.run_until(secs(193), |t| tx.on_timer(t));
        assert_eq!(tx.state(), InviteServerState::Completed);
        let sent = clock.sent();
        assert_eq!(sent.len(), 3, "100, 408, one Timer G retransmission");
        let timeout = parse_response(&sent[1]);
        assert_eq!(timeout.status.as_u16(), 408);
        assert_eq!(timeout.reason, "Request Timeout");
        assert!(timeout.to().unwrap().tag().is_some());
        assert_eq!(timeout.via().unwrap(), invite().via().unwrap());
        assert!(matches!(clock.delivered()[..], [(t, TuEvent::Timeout)] if t == secs(192)));
        assert!(tx
            .on_tu_response(response(&invite(), 200, Some("late")))
            .is_err());
        let ack = crate::transaction::invite_client::build_ack(&invite(), &timeout);
        clock.absorb(tx.on_request(ack));
        assert_eq!(tx.state(), InviteServerState::Confirmed);
    }

    #[test]
    fn transport_error_terminates_and_informs_tu() {
        let (mut tx, mut clock) = start(false);
        clock.absorb(
            tx.on_tu_response(response(&invite(), 180, Some("u")))
                .unwrap(),
        );
        clock.absorb(tx.on_transport_error());
        assert_eq!(tx.state(), InviteServerState::Terminated);
        assert!(matches!(
            clock.delivered()[..],
            [(_, TuEvent::TransportError)]
        ));
        assert_eq!(clock.terminated_at(), Some(ms(0)));
        assert!(matches!(
            tx.on_tu_response(response(&invite(), 200, Some("u"))),
            Err(TxError::ResponseNotAllowed {
                state: "Terminated",
                ..
            })
        ));
    }
}
