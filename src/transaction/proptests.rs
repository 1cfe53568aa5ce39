//! Property tests: any sequence of events keeps every machine within its
//! contract (at most `MAX_ACTIONS` per step, Terminated is final, the TU
//! hears of at most one final outcome of a client transaction).

use proptest::prelude::*;

use super::test_support::*;
use super::{
    Action, Actions, InviteClient, InviteClientState, InviteServer, InviteServerState,
    NonInviteClient, NonInviteClientState, NonInviteServer, NonInviteServerState, Timer,
    TimerConfig, TuEvent,
};
use crate::transaction::invite_client::build_ack;

const TIMERS: [Timer; 16] = [
    Timer::A,
    Timer::B,
    Timer::D,
    Timer::E,
    Timer::F,
    Timer::G,
    Timer::H,
    Timer::I,
    Timer::J,
    Timer::K,
    Timer::L,
    Timer::M,
    Timer::Trying,
    Timer::Cancelled,
    Timer::Retransmit2xx,
    Timer::Unanswered,
];

const CODES: [u16; 8] = [100, 180, 183, 200, 302, 404, 486, 603];

#[derive(Debug, Clone)]
enum Event {
    Timer(Timer),
    Status(u16),
    TransportError,
    Cancel,
    Retransmission,
    Ack,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0..TIMERS.len()).prop_map(|i| Event::Timer(TIMERS[i])),
        (0..CODES.len()).prop_map(|i| Event::Status(CODES[i])),
        Just(Event::TransportError),
        Just(Event::Cancel),
        Just(Event::Retransmission),
        Just(Event::Ack),
    ]
}

/// Checks one step's actions against what happened before.
#[derive(Default)]
struct Contract {
    terminated: bool,
    /// Failure outcomes (non-2xx final, timeout, transport error) a client
    /// delivered: at most one.
    finals: usize,
    /// Server events: at most one of each kind.
    timeouts: usize,
    transport_errors: usize,
    server: bool,
}

impl Contract {
    fn step(&mut self, actions: Actions) -> Result<(), TestCaseError> {
        prop_assert!(actions.len() <= 4);
        if self.terminated {
            prop_assert!(actions.is_empty(), "acted after Terminated: {actions:?}");
        }
        for a in actions {
            match a {
                Action::Terminate => self.terminated = true,
                Action::Deliver(TuEvent::Response(r))
                    if !r.status.is_provisional() && !r.status.is_success() =>
                {
                    self.finals += 1
                }
                Action::Deliver(TuEvent::Timeout) if self.server => self.timeouts += 1,
                Action::Deliver(TuEvent::TransportError) if self.server => {
                    self.transport_errors += 1
                }
                Action::Deliver(TuEvent::Timeout | TuEvent::TransportError) => self.finals += 1,
                _ => {}
            }
        }
        prop_assert!(self.finals <= 1, "more than one failure outcome");
        prop_assert!(self.timeouts <= 1 && self.transport_errors <= 1);
        Ok(())
    }
}

/// Checks `wants_timer`: a timer it calls unwanted stays unwanted, and
/// firing it does nothing (so the layer may cancel it).
#[derive(Default)]
struct Wanted {
    dead: Vec<Timer>,
}

impl Wanted {
    /// Before an event: records the unwanted timers, checks none came back.
    fn before(&mut self, wants: impl Fn(Timer) -> bool) -> Result<(), TestCaseError> {
        for t in TIMERS {
            let dead = self.dead.contains(&t);
            prop_assert!(!(dead && wants(t)), "{t:?} wanted again");
            if !dead && !wants(t) {
                self.dead.push(t);
            }
        }
        Ok(())
    }

    /// After `event` produced `actions` and moved the state from `before`
    /// to `after`: an unwanted timer did nothing.
    fn after<S: PartialEq + std::fmt::Debug>(
        &self,
        event: &Event,
        actions: &Actions,
        before: S,
        after: S,
    ) -> Result<(), TestCaseError> {
        if let Event::Timer(t) = event {
            if self.dead.contains(t) {
                prop_assert!(actions.is_empty(), "unwanted {t:?} acted: {actions:?}");
                prop_assert_eq!(before, after, "unwanted {:?} changed the state", t);
            }
        }
        Ok(())
    }
}

fn reliable_and_events() -> impl Strategy<Value = (bool, Vec<Event>)> {
    (any::<bool>(), prop::collection::vec(event(), 0..40))
}

proptest! {
    #[test]
    fn invite_client_keeps_its_contract((reliable, events) in reliable_and_events()) {
        let (mut tx, first) = InviteClient::new(invite(), reliable, &TimerConfig::default());
        let mut c = Contract::default();
        let mut w = Wanted::default();
        c.step(first)?;
        for e in events {
            w.before(|t| tx.wants_timer(t))?;
            let state = tx.state();
            let actions = match e {
                Event::Timer(t) => tx.on_timer(t),
                Event::Status(code) => tx.on_response(response(&invite(), code, Some("t"))),
                Event::TransportError => tx.on_transport_error(),
                Event::Cancel => tx.cancel().map(|(_, a)| a).unwrap_or_default(),
                Event::Retransmission => {
                    tx.take_pending_cancel().map(|(_, a)| a).unwrap_or_default()
                }
                Event::Ack => tx.on_cancel_sent(),
            };
            w.after(&e, &actions, state, tx.state())?;
            c.step(actions)?;
            prop_assert_eq!(c.terminated, tx.state() == InviteClientState::Terminated);
        }
    }

    #[test]
    fn non_invite_client_keeps_its_contract((reliable, events) in reliable_and_events()) {
        let (mut tx, first) = NonInviteClient::new(&options(), reliable, &TimerConfig::default());
        let mut c = Contract::default();
        let mut w = Wanted::default();
        c.step(first)?;
        for e in events {
            w.before(|t| tx.wants_timer(t))?;
            let state = tx.state();
            let actions = match e {
                Event::Timer(t) => tx.on_timer(t),
                Event::Status(code) => tx.on_response(response(&options(), code, Some("t"))),
                Event::TransportError => tx.on_transport_error(),
                _ => Actions::default(),
            };
            w.after(&e, &actions, state, tx.state())?;
            let final_2xx = matches!(
                actions.iter().next(),
                Some(Action::Deliver(TuEvent::Response(r))) if r.status.is_success()
            );
            c.step(actions)?;
            if final_2xx {
                c.finals += 1;
            }
            prop_assert!(c.finals <= 1);
            prop_assert_eq!(c.terminated, tx.state() == NonInviteClientState::Terminated);
        }
    }

    #[test]
    fn invite_server_keeps_its_contract(
        (reliable, events) in reliable_and_events(),
        retransmit_2xx in any::<bool>(),
    ) {
        let (mut tx, first) = InviteServer::new(&invite(), reliable, &TimerConfig::default());
        if retransmit_2xx {
            tx.retransmit_2xx();
        }
        let mut c = Contract { server: true, ..Contract::default() };
        let mut w = Wanted::default();
        c.step(first)?;
        let mut finals_sent = 0;
        for e in events {
            w.before(|t| tx.wants_timer(t))?;
            let state = tx.state();
            let actions = match e {
                Event::Timer(t) => tx.on_timer(t),
                Event::Status(code) => {
                    let before = tx.state();
                    match tx.on_tu_response(response(&invite(), code, Some("t"))) {
                        Ok(a) => {
                            if code >= 200 && before == InviteServerState::Proceeding {
                                finals_sent += 1;
                            }
                            a
                        }
                        Err(_) => {
                            prop_assert!(before != InviteServerState::Proceeding);
                            Actions::default()
                        }
                    }
                }
                Event::TransportError => tx.on_transport_error(),
                Event::Retransmission => tx.on_request(invite()),
                Event::Ack => {
                    tx.on_request(build_ack(&invite(), &response(&invite(), 486, Some("t"))))
                }
                Event::Cancel => {
                    tx.on_2xx_ack();
                    Actions::default()
                }
            };
            w.after(&e, &actions, state, tx.state())?;
            c.step(actions)?;
            prop_assert!(finals_sent <= 1);
            prop_assert_eq!(c.terminated, tx.state() == InviteServerState::Terminated);
        }
    }

    #[test]
    fn non_invite_server_keeps_its_contract((reliable, events) in reliable_and_events()) {
        let (mut tx, first) = NonInviteServer::new(reliable, &TimerConfig::default());
        let mut c = Contract { server: true, ..Contract::default() };
        let mut w = Wanted::default();
        c.step(first)?;
        for e in events {
            w.before(|t| tx.wants_timer(t))?;
            let state = tx.state();
            let actions = match e {
                Event::Timer(t) => tx.on_timer(t),
                Event::Status(code) => tx
                    .on_tu_response(response(&options(), code, Some("t")))
                    .unwrap_or_default(),
                Event::TransportError => tx.on_transport_error(),
                Event::Retransmission => tx.on_request(),
                _ => Actions::default(),
            };
            w.after(&e, &actions, state, tx.state())?;
            c.step(actions)?;
            prop_assert_eq!(c.terminated, tx.state() == NonInviteServerState::Terminated);
        }
    }
}
