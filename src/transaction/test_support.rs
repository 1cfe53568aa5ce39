//! Helpers for the transaction tests: wire fixtures and a virtual clock
//! that drives a sans-IO machine through its timers.

use std::time::Duration;

use bytes::Bytes;

use super::{Action, Actions, Timer, TuEvent};
use crate::sip::{parse_datagram, Limits, Message, Request, Response, StatusCode};

/// Parses a message written with `\n` line ends.
pub(crate) fn parse(text: &str) -> Message {
    let wire = text.trim_start().replace('\n', "\r\n");
    parse_datagram(Bytes::from(wire), &Limits::default()).unwrap()
}

pub(crate) fn request(text: &str) -> Request {
    match parse(text) {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

pub(crate) fn parse_bytes(b: &Bytes) -> Message {
    parse_datagram(b.clone(), &Limits::default()).unwrap()
}

pub(crate) fn parse_request(b: &Bytes) -> Request {
    match parse_bytes(b) {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

pub(crate) fn parse_response(b: &Bytes) -> Response {
    match parse_bytes(b) {
        Message::Response(r) => r,
        Message::Request(_) => panic!("not a response"),
    }
}

pub(crate) const INVITE: &str = "
INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc123;rport
Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKupstream
Max-Forwards: 70
Route: <sip:proxy1.example.com;lr>
Route: <sip:proxy2.example.com;lr>
From: Alice <sip:alice@example.com>;tag=1928301774
To: Bob <sip:bob@example.com>
Call-ID: a84b4c76e66710@10.0.0.1
CSeq: 314159 INVITE
Contact: <sip:alice@10.0.0.1>
Content-Type: application/sdp
Content-Length: 4

v=0
";

pub(crate) const OPTIONS: &str = "
OPTIONS sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKopt42
Max-Forwards: 70
From: <sip:alice@example.com>;tag=77
To: <sip:bob@example.com>
Call-ID: opt-1@10.0.0.1
CSeq: 7 OPTIONS
Content-Length: 0

";

pub(crate) fn invite() -> Request {
    request(INVITE)
}

pub(crate) fn options() -> Request {
    request(OPTIONS)
}

/// A response to `req` with `code`, To-tagged when `tag` is given.
pub(crate) fn response(req: &Request, code: u16, tag: Option<&str>) -> Response {
    let mut r = Response::for_request(req, StatusCode::new(code).unwrap());
    if let Some(tag) = tag {
        r.set_to_tag(tag);
    }
    r
}

/// What a machine did at a virtual time.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Did {
    Send(Bytes),
    Deliver(TuEvent),
    Terminate,
}

/// A virtual clock: records scheduled timers and fires them in order.
#[derive(Default)]
pub(crate) struct Clock {
    pub now: Duration,
    pending: Vec<(Duration, u64, Timer)>,
    seq: u64,
    pub log: Vec<(Duration, Did)>,
}

impl Clock {
    /// Records `actions` as happening now.
    pub fn absorb(&mut self, actions: Actions) {
        assert!(actions.len() <= 4);
        for a in actions {
            match a {
                Action::Send(b) => self.log.push((self.now, Did::Send(b))),
                Action::Deliver(e) => self.log.push((self.now, Did::Deliver(e))),
                Action::Terminate => self.log.push((self.now, Did::Terminate)),
                Action::Schedule(t, d) => {
                    self.seq += 1;
                    self.pending.push((self.now + d, self.seq, t));
                }
            }
        }
    }

    /// Fires every timer due up to `until`, in order, through `fire`.
    pub fn run_until(&mut self, until: Duration, mut fire: impl FnMut(Timer) -> Actions) {
        loop {
            self.pending.sort_by_key(|&(at, seq, _)| (at, seq));
            match self.pending.first() {
                Some(&(at, _, timer)) if at <= until => {
                    self.pending.remove(0);
                    self.now = at;
                    let actions = fire(timer);
                    self.absorb(actions);
                }
                _ => break,
            }
        }
        self.now = until;
    }

    /// The times at which something was sent.
    pub fn send_times(&self) -> Vec<Duration> {
        self.log
            .iter()
            .filter(|(_, d)| matches!(d, Did::Send(_)))
            .map(|(t, _)| *t)
            .collect()
    }

    /// The bytes sent, in order.
    pub fn sent(&self) -> Vec<Bytes> {
        self.log
            .iter()
            .filter_map(|(_, d)| match d {
                Did::Send(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    /// When the machine terminated.
    pub fn terminated_at(&self) -> Option<Duration> {
        self.log
            .iter()
            .find(|(_, d)| matches!(d, Did::Terminate))
            .map(|(t, _)| *t)
    }

    /// Events delivered to the TU, with their times.
    pub fn delivered(&self) -> Vec<(Duration, &TuEvent)> {
        self.log
            .iter()
            .filter_map(|(t, d)| match d {
                Did::Deliver(e) => Some((*t, e)),
                _ => None,
            })
            .collect()
    }

    /// Timers still pending (stale ones included).
    pub fn pending(&self) -> Vec<(Duration, Timer)> {
        let mut p: Vec<_> = self.pending.iter().map(|&(at, _, t)| (at, t)).collect();
        p.sort_by_key(|&(at, _)| at);
        p
    }
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
