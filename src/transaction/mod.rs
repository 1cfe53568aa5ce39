//! The SIP transaction layer of RFC 3261 §17 (with the RFC 6026 corrections
//! for 2xx responses to INVITE).
//!
//! This module owns:
//! - [`TimerConfig`] and the timers of Table 4 ([`Timer`]),
//! - [`TransactionKey`]: matching of responses to client transactions
//!   (§17.1.3) and of requests to server transactions (§17.2.3, including the
//!   RFC 2543 fallback),
//! - four sans-IO state machines, one type each: [`InviteClient`],
//!   [`NonInviteClient`], [`InviteServer`], [`NonInviteServer`]. They take
//!   events (a received message, a TU response, a timer that fired, a
//!   transport error) and return [`Actions`]; they never touch sockets,
//!   clocks or tasks,
//! - compact sans-IO records that replace a machine once it only lingers
//!   after its final response (Timers D, I, J, K, L, M), keeping just what
//!   answering a retransmission needs (`lingering`),
//! - the thin tokio shell [`TransactionLayer`] that holds the transaction
//!   tables, drives the machines with tokio timers and hands messages to the
//!   transport through [`TransportSink`].
//!
//! It must not contain socket code: the transport sends what the shell gives
//! it. Dialog and call logic (2xx ACKs, CANCEL decisions) belong to the TU
//! (`b2bua`); see [`TransactionLayer`] for what the TU must do itself.
//!
//! # Flow
//! - Inbound: the daemon passes every message from the transport to
//!   [`TransactionLayer::on_message`]. Retransmissions are absorbed there; a
//!   new request creates a server transaction and reaches the TU as
//!   [`Incoming::Request`] (answer with [`ServerTransaction::respond`]);
//!   responses whose top Via sent-by is none we put in our requests are
//!   discarded and counted (RFC 3261 §18.1.2, `foreign_sent_by`), the
//!   others go to their client transaction's channel; the rest (2xx
//!   ACKs, stray responses, Timer H / transport errors of server
//!   transactions) reaches the TU on the same [`Incoming`] channel.
//! - Outbound: [`TransactionLayer::send_request`] (or `send_request_with`
//!   for one channel per call) starts a client transaction; its responses,
//!   timeout (treat as 408) and transport error (treat as 503) arrive as
//!   [`ClientEvent`]s.
//! - Timers: all transactions share one timer queue and one tokio task; a
//!   transaction's timers are cancelled when its machine no longer wants
//!   them and when it terminates. The timers that end a lingering
//!   transaction (D, I, J, K, L, M: "wait at least" timers) are rounded up
//!   to a multiple of [`TimerConfig::ending_slack`], so that expiries share
//!   wake-ups, and the last one removes its record from the table without
//!   a step. Time is tokio's, so tests use `tokio::time::pause`. A retransmission timer (A, E, G, 2xx) due
//!   while the transport has not read everything that arrived since the
//!   message went out ([`TransportSink::drained_since`]) holds the
//!   retransmission back and looks again [`TimerConfig::deferral`] later:
//!   the answer may be queued unread, and resending it would only add
//!   load when the daemon is behind. The hold is bounded: at most one
//!   interval of the timer's own ([`TimerConfig::deferrals_within`]), then
//!   the retransmission goes out drained or not (of the TU's 2xx
//!   retransmissions through an Accepted transaction, at most every other
//!   one is skipped). RFC 3261 §17.1.1.2, §17.1.2.2 and §17.2.1 want it
//!   sent when the timer fires; holding it back is local overload
//!   behaviour, and the bound keeps a lost datagram recovered when the
//!   socket never drains. The timeouts (B, F, H) keep their time.
//! - Sends: the shell carries out a step's actions synchronously through
//!   [`TransportSink::try_send_request`] / `try_send_response` (UDP); only a
//!   send that must wait (TCP, a full socket buffer) continues in a boxed
//!   future, which the async entry points await.

mod invite_client;
mod invite_server;
mod key;
mod layer;
mod lingering;
mod metrics;
mod non_invite_client;
mod non_invite_server;
mod sent_by;
mod sink;
mod timers;
mod user;
mod via_prefix;
pub(crate) mod wheel;

pub use invite_client::{InviteClient, InviteClientState};
pub use invite_server::{InviteServer, InviteServerState};
pub use key::{generate_branch, generate_tag, ClientKey, KeyError, ServerKey, TransactionKey};
pub(crate) use layer::TABLE_SHARDS;
pub use layer::{
    ClientEvent, ClientEventKind, ClientTransaction, Incoming, LayerConfig, Reserve, SendError,
    SendFuture, ServerEvent, ServerRequest, ServerTransaction, TransactionLayer, TransportSink,
    TrySend,
};
pub use metrics::TransactionMetrics;
pub use non_invite_client::{NonInviteClient, NonInviteClientState};
pub use non_invite_server::{NonInviteServer, NonInviteServerState};
pub use timers::{Timer, TimerConfig, TRYING_DELAY, UNANSWERED_INVITE};
pub use user::{Serial, TransactionUser, TuItem, Urgency};

use std::time::Duration;

use bytes::Bytes;

use crate::sip::{Request, Response};

/// What a state machine asks its driver to do.
#[derive(Debug)]
pub enum Action {
    /// Send these bytes (an encoded request or response) to the
    /// transaction's peer.
    Send(Bytes),
    /// Fire `Timer` after `Duration` (relative to the event being handled).
    /// A timer that fires in a state that no longer uses it is ignored by the
    /// machine, so drivers need not cancel timers.
    Schedule(Timer, Duration),
    /// Pass an event up to the transaction user.
    Deliver(TuEvent),
    /// The machine entered Terminated: the driver must forget it.
    Terminate,
}

/// Events a transaction passes to its transaction user (TU).
#[derive(Debug)]
pub enum TuEvent {
    /// A response received by a client transaction (provisional, final,
    /// and, in Accepted, 2xx retransmissions or forked 2xx).
    Response(Response),
    /// An ACK for a 2xx received by an INVITE server transaction in the
    /// Accepted state (RFC 6026 §7.1): it belongs to the TU's dialog.
    /// Boxed: it is rare (a 2xx ACK normally has its own branch and matches
    /// no transaction), and a `Request` would more than double the size of
    /// every [`Action`] and [`Actions`] the layer moves around.
    Ack(Box<Request>),
    /// Timer B or F fired (client: no final response, treat as 408), or
    /// Timer H fired (server: no ACK for a non-2xx final response).
    Timeout,
    /// The transport failed to send a message of this transaction.
    TransportError,
}

/// Most actions one event produces (e.g. send ACK, schedule D, deliver the
/// response).
const MAX_ACTIONS: usize = 4;

/// The actions produced by one event, in order; stored inline so that
/// stepping a machine does not allocate.
#[derive(Debug, Default)]
pub struct Actions {
    items: [Option<Action>; MAX_ACTIONS],
    /// Slots in use, in order; `take_schedules` may have emptied some.
    len: usize,
}

impl Actions {
    // Inlined: the machines push ~19 actions per call, and the call
    // (moving the action through memory) cost about as much as the push.
    #[inline]
    pub(crate) fn push(&mut self, action: Action) {
        // Every machine emits at most MAX_ACTIONS per event (checked by the
        // tests); dropping one would be a bug, hence the debug assertion.
        debug_assert!(self.len < MAX_ACTIONS, "too many actions: {action:?}");
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(action);
            self.len += 1;
        }
    }

    /// Hands every [`Action::Schedule`] to `f` and removes it, keeping the
    /// other actions in order (the shell arms timers while the transaction
    /// is locked, and carries out the rest afterwards). A removed action
    /// leaves an empty slot, which `drain` and `iter` skip: the others stay
    /// where they are rather than being moved down.
    pub(crate) fn take_schedules(&mut self, mut f: impl FnMut(Timer, Duration)) {
        for slot in self.items.iter_mut().take(self.len) {
            if let Some(Action::Schedule(timer, after)) = *slot {
                *slot = None;
                f(timer, after);
            }
        }
    }

    /// Takes the actions out in order, leaving `self` empty, without
    /// moving the whole inline array (as `into_iter` does). Actions the
    /// iterator has not reached when it is dropped are dropped with
    /// `self` or by the next push in their slot.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Action> + '_ {
        let len = std::mem::take(&mut self.len);
        self.items.iter_mut().take(len).filter_map(Option::take)
    }

    /// Number of actions.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True when the event produced nothing to do (e.g. an absorbed
    /// retransmission).
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The actions, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Action> {
        self.items.iter().take(self.len).flatten()
    }
}

impl IntoIterator for Actions {
    type Item = Action;
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<Action>, MAX_ACTIONS>>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter().flatten()
    }
}

/// Why [`TransactionLayer::receive`] did not take a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// A request the layer cannot key (§17.2.3: no usable top Via, or for
    /// the RFC 2543 fallback no usable To, From, Call-ID or CSeq), handed
    /// back as received so that the caller can answer it statelessly. The
    /// layer did nothing with it.
    #[error("request without a transaction key: {error}")]
    Unkeyed {
        /// The request.
        request: Box<Request>,
        /// What the key lacked.
        #[source]
        error: KeyError,
    },
    /// Any other refusal (a response the layer cannot match).
    #[error(transparent)]
    Tx(#[from] TxError),
}

/// Errors of the transaction layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// The message lacks what a transaction key is made of.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The TU sent a response the transaction's state does not allow (e.g. a
    /// second non-2xx final response, or any response after Terminated).
    #[error("a {status} response is not allowed in state {state}")]
    ResponseNotAllowed {
        /// Status code of the rejected response.
        status: u16,
        /// Name of the state the transaction was in (as in RFC 3261).
        state: &'static str,
    },
    /// The transaction no longer exists (terminated) or never did.
    #[error("no such transaction")]
    NoTransaction,
    /// A transaction with the same key already exists.
    #[error("a transaction with this key already exists")]
    Duplicate,
    /// ACK never starts a client transaction: the ACK for a 2xx is sent by
    /// the TU directly, the ACK for a non-2xx by the INVITE client
    /// transaction.
    #[error("ACK cannot start a client transaction")]
    AckTransaction,
    /// CANCEL asked for an INVITE client transaction that already has a
    /// final response (§9.1: nothing left to cancel).
    #[error("the INVITE has a final response; nothing to cancel")]
    NothingToCancel,
    /// The message could not be encoded or handed to the transport.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// The wire form of a request this layer sends (and may retransmit).
fn encode_request(request: &Request) -> Bytes {
    request.to_bytes()
}

/// The wire form of a response this layer sends (and may retransmit).
fn encode_response(response: &Response) -> Bytes {
    response.to_bytes()
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_takes_the_actions_in_order_and_leaves_none() {
        let mut actions = Actions::default();
        actions.push(Action::Send(Bytes::from_static(b"a")));
        actions.push(Action::Schedule(Timer::A, Duration::from_millis(500)));
        actions.push(Action::Terminate);
        let first: Vec<Action> = actions.drain().take(1).collect();
        assert!(matches!(&first[..], [Action::Send(b)] if b.as_ref() == b"a"));
        assert_eq!(actions.len(), 0);
        actions.push(Action::Deliver(TuEvent::Timeout));
        let rest: Vec<Action> = actions.drain().collect();
        assert!(matches!(&rest[..], [Action::Deliver(TuEvent::Timeout)]));
        assert_eq!(actions.drain().count(), 0);
    }

    #[test]
    fn take_schedules_removes_only_the_timers_in_order() {
        let mut actions = Actions::default();
        actions.push(Action::Send(Bytes::from_static(b"a")));
        actions.push(Action::Schedule(Timer::A, Duration::from_millis(500)));
        actions.push(Action::Terminate);
        actions.push(Action::Schedule(Timer::B, Duration::from_secs(32)));
        let mut armed = Vec::new();
        actions.take_schedules(|t, d| armed.push((t, d)));
        assert_eq!(
            armed,
            [
                (Timer::A, Duration::from_millis(500)),
                (Timer::B, Duration::from_secs(32))
            ]
        );
        assert_eq!(actions.len(), 2);
        let rest: Vec<Action> = actions.into_iter().collect();
        assert!(matches!(&rest[..], [Action::Send(b), Action::Terminate] if b.as_ref() == b"a"));
        // Only timers: nothing is left, and the list takes new actions.
        let mut actions = Actions::default();
        actions.push(Action::Schedule(Timer::E, Duration::from_millis(500)));
        actions.push(Action::Schedule(Timer::F, Duration::from_secs(32)));
        actions.take_schedules(|_, _| {});
        assert!(actions.is_empty());
        assert_eq!(actions.drain().count(), 0);
        actions.push(Action::Terminate);
        assert!(matches!(
            actions.iter().collect::<Vec<_>>()[..],
            [Action::Terminate]
        ));
    }
}
