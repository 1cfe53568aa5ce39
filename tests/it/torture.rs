//! Every RFC 4475 and RFC 5118 torture message sent to the real daemon over
//! UDP and over TCP, answered as `EXPECTED.tsv` says.
//!
//! `EXPECTED.tsv` gives a status (or `a|b` alternatives), `-` (process
//! normally) or `drop`. "Normally" is what the daemon does with that method
//! in its current role (see [`normal_answer`]). Over TCP the framing cases
//! follow RFC 3261 §18.3 instead (see [`tcp_framing_override`]).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use vpbx::sip::{self, Limits, Message, Response};
use vpbx::transaction::ServerKey;

use crate::daemon::Daemon;
use crate::ua::{TcpEvent, TcpUa, UdpUa, ANSWER_WAIT, SILENCE_WAIT};

/// One fixture and what must happen to it.
struct Case {
    file: String,
    bytes: Vec<u8>,
    /// Allowed final statuses; empty = must not be answered.
    allowed: Vec<u16>,
    /// Whether not answering at all is allowed too (`drop` in the table).
    may_drop: bool,
    /// Whether the request parsed (so its top Via must come back stamped).
    parsed: Option<sip::Request>,
}

/// Several fixtures share a branch and sent-by, so to the daemon the second
/// one is a retransmission of the first (RFC 3261 §17.2.3) and gets the
/// first one's answer, sent to the first one's source. Each fixture is
/// meant on its own: a fresh daemon takes over when a key repeats.
struct Daemons {
    listen: &'static str,
    current: Daemon,
    keys: HashSet<ServerKey>,
}

impl Daemons {
    fn new(listen: &'static str) -> Daemons {
        Daemons {
            listen,
            current: Daemon::start(&[listen]),
            keys: HashSet::new(),
        }
    }

    /// The daemon to send `case` to.
    fn for_case(&mut self, case: &Case) -> &Daemon {
        if let Some(key) = case
            .parsed
            .as_ref()
            .and_then(|r| ServerKey::for_request(r).ok())
        {
            if !self.keys.insert(key.clone()) {
                self.current = Daemon::start(&[self.listen]);
                self.keys.clear();
                self.keys.insert(key);
            }
        }
        &self.current
    }
}

fn fixture_dir(set: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(set)
}

/// The daemon's answer to a well-formed request of this method, in its
/// current role (a UAS / B2BUA without registrar): OPTIONS 200; INVITE to a
/// number not in the routing table 404 (481 when its To tag names a dialog
/// that does not exist, RFC 3261 §12.2.2); BYE/CANCEL outside any dialog 481;
/// methods it knows but does not serve (REGISTER, MESSAGE, ...) 405;
/// unknown methods 501 (RFC 3261 §8.2.1).
fn normal_answer(method: &str) -> Vec<u16> {
    match method {
        "OPTIONS" => vec![200],
        "INVITE" => vec![404, 481],
        "BYE" | "CANCEL" => vec![481],
        "REGISTER" | "MESSAGE" | "INFO" | "UPDATE" | "PRACK" | "SUBSCRIBE" | "NOTIFY" | "REFER"
        | "PUBLISH" => vec![405],
        _ => vec![501],
    }
}

fn load_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for set in ["rfc4475", "rfc5118"] {
        let dir = fixture_dir(set);
        let tsv = std::fs::read_to_string(dir.join("EXPECTED.tsv")).unwrap();
        for line in tsv.lines().skip(1) {
            let cols: Vec<&str> = line.split('\t').collect();
            let (file, expected) = (cols[0], cols[3]);
            let bytes = std::fs::read(dir.join(file)).unwrap();
            let start_line = bytes.split(|&b| b == b'\r').next().unwrap();
            let start_line = String::from_utf8_lossy(start_line);
            let is_response = start_line.starts_with("SIP/");
            let method = start_line.split(' ').next().unwrap().to_owned();
            let parsed =
                match sip::parse_datagram(sip::Bytes::from(bytes.clone()), &Limits::default()) {
                    Ok(Message::Request(r)) => Some(r),
                    _ => None,
                };
            let mut allowed = Vec::new();
            let mut may_drop = is_response;
            if !is_response {
                for alt in expected.split('|') {
                    match alt {
                        "drop" => may_drop = true,
                        "-" => allowed.extend(normal_answer(&method)),
                        code => allowed.push(code.parse().unwrap()),
                    }
                }
            }
            cases.push(Case {
                file: file.to_owned(),
                bytes,
                allowed,
                may_drop,
                parsed,
            });
        }
    }
    assert_eq!(cases.len(), 50 + 12, "fixture count changed");
    cases
}

/// Checks a final response against the case; returns a failure text.
fn check_response(case: &Case, r: &Response, stamped_from: Option<SocketAddr>) -> Option<String> {
    let status = r.status.as_u16();
    if !case.allowed.contains(&status) {
        return Some(format!(
            "{}: got {} {}, expected one of {:?}",
            case.file, status, r.reason, case.allowed
        ));
    }
    if status == 400 && r.reason.len() <= "Bad Request".len() {
        return Some(format!(
            "{}: 400 reason phrase {:?} does not name the problem",
            case.file, r.reason
        ));
    }
    if let Some(req) = &case.parsed {
        if let (Ok(want), Ok(got)) = (req.call_id(), r.call_id()) {
            if want != got {
                return Some(format!("{}: Call-ID {got} != {want}", case.file));
            }
        }
        // RFC 3261 §18.2.1: every fixture's sent-by is not 127.0.0.1, so
        // the top Via must come back with received=127.0.0.1.
        if let (Some(peer), Ok(via)) = (stamped_from, r.top_via()) {
            if req.top_via().is_ok() && via.received() != Some(&peer.ip().to_string()) {
                return Some(format!(
                    "{}: top Via {via} lacks received={}",
                    case.file,
                    peer.ip()
                ));
            }
        }
    }
    None
}

#[test]
fn every_torture_message_over_udp_gets_the_rfc_answer() {
    let mut daemons = Daemons::new("udp:127.0.0.1:0");
    let mut failures = Vec::new();
    let mut seen = BTreeMap::new();
    for case in load_cases() {
        let server = daemons.for_case(&case).addr("udp", false);
        let ua = UdpUa::new(server);
        ua.send(&case.bytes);
        if case.allowed.is_empty() {
            if let Some(r) = ua.recv(SILENCE_WAIT) {
                failures.push(format!(
                    "{}: must be dropped, got {}",
                    case.file,
                    r.status.as_u16()
                ));
            }
            seen.insert(case.file.clone(), "drop".to_owned());
            continue;
        }
        match ua.recv_final(if case.may_drop {
            SILENCE_WAIT
        } else {
            ANSWER_WAIT
        }) {
            None if case.may_drop => {
                seen.insert(case.file.clone(), "drop".to_owned());
            }
            None => failures.push(format!("{}: no answer over UDP", case.file)),
            Some(r) => {
                seen.insert(case.file.clone(), r.status.as_u16().to_string());
                failures.extend(check_response(&case, &r, Some(ua.local())));
                // Nothing more than one final answer per request.
                if let Some(extra) = ua.recv(std::time::Duration::from_millis(50)) {
                    if !extra.status.is_provisional() && extra.status != r.status {
                        failures.push(format!(
                            "{}: second final {}",
                            case.file,
                            extra.status.as_u16()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "UDP torture failures:\n{}\nanswers: {seen:?}\nstderr:\n{}",
        failures.join("\n"),
        daemons.current.stderr_text()
    );
}

/// RFC 3261 §18.3 on a stream: the message length comes only from
/// Content-Length, so the framing cases behave differently than in a
/// datagram. Returns what must happen instead of the table's answer.
enum TcpExpect {
    /// The table's answer on an open connection.
    Table,
    /// The message is incomplete on a stream (Content-Length larger than
    /// what was sent, or no empty line ending the headers): the receiver
    /// waits for the rest, so nothing is answered and the connection stays
    /// open.
    WaitsForMore,
    /// Framing error: 400, then the connection is closed.
    BadRequestThenClose,
    /// Two messages and then garbage in the stream: both answered, in
    /// order, then the connection is closed (no way to resynchronize).
    TwoAnswersThenClose(u16, u16),
}

fn tcp_framing_override(file: &str) -> TcpExpect {
    match file {
        "clerr.dat" | "baddn.dat" => TcpExpect::WaitsForMore,
        // Negative or conflicting Content-Length; no Content-Length at all
        // (mandatory on streams, RFC 3261 §18.3 / §20.14).
        "ncl.dat" | "mcl01.dat" | "inv2543.dat" => TcpExpect::BadRequestThenClose,
        // The 450 "trailing" octets are a complete INVITE on a stream,
        // followed by the part of its SDP beyond its Content-Length.
        "dblreq.dat" => TcpExpect::TwoAnswersThenClose(405, 404),
        _ => TcpExpect::Table,
    }
}

#[test]
fn every_torture_message_over_tcp_gets_the_rfc_answer() {
    let mut daemons = Daemons::new("tcp:127.0.0.1:0");
    let mut failures = Vec::new();
    for case in load_cases() {
        let server = daemons.for_case(&case).addr("tcp", false);
        let mut ua = TcpUa::connect(server);
        let local = Some(ua.stream.local_addr().unwrap());
        ua.send(&case.bytes);
        match tcp_framing_override(&case.file) {
            // Dropped: unanswered; an unparseable message also ends the
            // connection (its length is unknown).
            TcpExpect::Table if case.may_drop => match ua.next_final(SILENCE_WAIT) {
                TcpEvent::Silence | TcpEvent::Closed => {}
                TcpEvent::Response(r) if !case.allowed.is_empty() => {
                    failures.extend(check_response(&case, &r, local))
                }
                other => failures.push(format!("{}: must be dropped, got {other:?}", case.file)),
            },
            TcpExpect::Table => match ua.next_final(ANSWER_WAIT) {
                TcpEvent::Response(r) => failures.extend(check_response(&case, &r, local)),
                other => failures.push(format!("{}: no answer over TCP: {other:?}", case.file)),
            },
            TcpExpect::WaitsForMore => match ua.next(SILENCE_WAIT) {
                TcpEvent::Silence => {}
                other => failures.push(format!(
                    "{}: must wait for the body, got {other:?}",
                    case.file
                )),
            },
            TcpExpect::BadRequestThenClose => {
                match ua.next_final(ANSWER_WAIT) {
                    TcpEvent::Response(r) if r.status.as_u16() == 400 => {}
                    other => failures.push(format!("{}: expected 400, got {other:?}", case.file)),
                }
                match ua.next(ANSWER_WAIT) {
                    TcpEvent::Closed => {}
                    other => failures.push(format!("{}: expected close, got {other:?}", case.file)),
                }
            }
            TcpExpect::TwoAnswersThenClose(first, second) => {
                for want in [first, second] {
                    match ua.next_final(ANSWER_WAIT) {
                        TcpEvent::Response(r) if r.status.as_u16() == want => {}
                        other => {
                            failures.push(format!("{}: expected {want}, got {other:?}", case.file))
                        }
                    }
                }
                match ua.next(ANSWER_WAIT) {
                    TcpEvent::Closed => {}
                    other => failures.push(format!("{}: expected close, got {other:?}", case.file)),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "TCP torture failures:\n{}\nstderr:\n{}",
        failures.join("\n"),
        daemons.current.stderr_text()
    );
}
