//! Call flows of SPEC §3, one test each, driven with wire messages and an
//! explicit clock.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::sip::{parse_datagram, Limits, Message};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

const INVITE: &str = "INVITE sip:+74951234567@vpbx.example.net SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKcaller1;rport\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKinner\r\n\
Record-Route: <sip:proxy.carrier.example;lr>\r\n\
From: \"Alice A\" <sip:+79161234567@carrier.example>;tag=caller-tag\r\n\
To: <sip:+74951234567@vpbx.example.net>\r\n\
Call-ID: inbound-call-1@carrier.example\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:alice@198.51.100.7:5060>\r\n\
Max-Forwards: 10\r\n\
Supported: timer\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 10\r\n\
\r\n\
v=0\r\no=x\r\n";

fn parse(text: &str) -> Message {
    parse_bytes(&Bytes::copy_from_slice(text.as_bytes()))
}

fn parse_bytes(bytes: &Bytes) -> Message {
    parse_datagram(bytes.clone(), &Limits::default()).unwrap()
}

fn request(text: &str) -> Request {
    match parse(text) {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

fn roundtrip_request(r: &Request) -> Request {
    match parse_datagram(Message::Request(r.clone()).to_bytes(), &Limits::default()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

fn roundtrip_response(r: &Response) -> Response {
    match parse_datagram(Message::Response(r.clone()).to_bytes(), &Limits::default()).unwrap() {
        Message::Response(r) => r,
        Message::Request(_) => panic!("not a response"),
    }
}

fn settings(max_duration: Option<Duration>) -> CallSettings {
    CallSettings {
        t1: T1,
        t2: T2,
        max_duration,
    }
}

fn plan() -> Plan {
    Plan {
        request_uri: Uri::parse("sip:+74951234567@127.0.0.1:5080").unwrap(),
        request_user: None,
        dial_timeout: Duration::from_secs(30),
        outbound: std::sync::Arc::new(LegTransport::new("127.0.0.1", 5060, "udp")),
        credentials: None,
    }
}

struct Harness {
    call: Call,
    now: Instant,
    out: Vec<Action>,
    /// The outbound INVITE as the callee received it.
    invite_b: Request,
    to_tag_b: &'static str,
}

impl Harness {
    /// The callee's 200 to our BYE: the call ends, answered.
    fn callee_answers_our_bye(&mut self, bye: &Request) {
        self.call.on_response(
            Leg::Outbound,
            response_to(bye, 200),
            self.now,
            &mut self.out,
        );
        assert!(self.call.is_finished());
        assert_eq!(
            self.call.outcome(),
            Some(Outcome {
                reason: FinishReason::Answered,
                status: 200
            })
        );
    }

    fn new() -> Harness {
        Harness::with(
            settings(None),
            std::sync::Arc::new(LegTransport::new("203.0.113.5", 5060, "udp")),
        )
    }

    fn with(settings: CallSettings, inbound: std::sync::Arc<LegTransport>) -> Harness {
        let now = Instant::now();
        let mut out = Vec::new();
        let call = Call::new(
            7,
            request(INVITE),
            inbound,
            plan(),
            &settings,
            now,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        let invite_b = match out.pop() {
            Some(Action::Request {
                leg: Leg::Outbound,
                request,
                ..
            }) => roundtrip_request(&request),
            other => panic!("expected the outbound INVITE, got {other:?}"),
        };
        Harness {
            call: *call,
            now,
            out,
            invite_b,
            to_tag_b: "callee-tag",
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.call.handle_timeout(self.now, &mut self.out);
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// The callee answers our INVITE with `status`.
    fn callee_responds(&mut self, status: u16, body: &str) {
        let mut r = Response::for_request(&self.invite_b, StatusCode::new(status).unwrap());
        if status > 100 {
            r.set_to_tag(self.to_tag_b);
        }
        if status > 100 && status < 300 {
            r.headers.push(
                HeaderName::Contact,
                Bytes::from_static(b"<sip:callee@127.0.0.1:5080>"),
            );
        }
        if !body.is_empty() {
            r.headers.push(
                HeaderName::ContentType,
                Bytes::from_static(b"application/sdp"),
            );
            r.body = Bytes::copy_from_slice(body.as_bytes());
        }
        let r = roundtrip_response(&r);
        self.call
            .on_response(Leg::Outbound, r, self.now, &mut self.out);
    }

    fn caller_sends(&mut self, text: &str) {
        let r = request(text);
        self.call
            .on_request(Leg::Inbound, r, self.now, &mut self.out);
    }

    /// The caller's CANCEL of its INVITE.
    fn caller_cancels(&mut self) {
        self.caller_sends(
            &INVITE
                .replace("INVITE sip", "CANCEL sip")
                .replace("10 INVITE", "10 CANCEL"),
        );
    }

    /// Caller's ACK / BYE in the dialog (To tag = ours).
    fn caller_in_dialog(&mut self, method: &str, seq: u32, body: &str) {
        let tag = self.call.inbound_local_tag().to_string();
        let ct = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_owned()
        };
        let text = format!(
            "{method} sip:vpbx@203.0.113.5:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKc{seq}{method}\r\n\
From: \"Alice A\" <sip:+79161234567@carrier.example>;tag=caller-tag\r\n\
To: <sip:+74951234567@vpbx.example.net>;tag={tag}\r\n\
Call-ID: inbound-call-1@carrier.example\r\n\
CSeq: {seq} {method}\r\n\
Max-Forwards: 70\r\n\
{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.caller_sends(&text);
    }

    /// Callee's request in the outbound dialog.
    fn callee_in_dialog(&mut self, method: &str, seq: u32) {
        let from_tag = self.invite_b.from().unwrap().tag().unwrap().to_owned();
        let call_id = self.invite_b.call_id().unwrap().to_string();
        let text = format!(
            "{method} sip:vpbx@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKb{seq}\r\n\
From: <sip:+74951234567@127.0.0.1:5080>;tag={}\r\n\
To: <sip:+79161234567@127.0.0.1>;tag={from_tag}\r\n\
Call-ID: {call_id}\r\n\
CSeq: {seq} {method}\r\n\
Max-Forwards: 70\r\n\
Content-Length: 0\r\n\r\n",
            self.to_tag_b
        );
        self.call
            .on_request(Leg::Outbound, request(&text), self.now, &mut self.out);
    }

    fn answer(&mut self) {
        self.callee_responds(180, "");
        self.callee_responds(200, "v=0\r\no=callee\r\n");
        self.caller_in_dialog("ACK", 10, "");
        self.take();
    }
}

fn responses(actions: &[Action], leg: Leg) -> Vec<u16> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Respond {
                leg: l,
                seq,
                method,
                response,
            } if *l == leg => {
                // The shell finds the server transaction by these: they
                // must be the answered request's.
                let cseq = response.cseq().unwrap();
                assert_eq!((cseq.seq, &cseq.method), (*seq, method), "{response:?}");
                Some(response.status.as_u16())
            }
            _ => None,
        })
        .collect()
}

fn requests(actions: &[Action], leg: Leg) -> Vec<Request> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Request {
                leg: l, request, ..
            } if *l == leg => Some(roundtrip_request(request)),
            _ => None,
        })
        .collect()
}

fn transmitted(actions: &[Action], leg: Leg) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Retransmit {
                leg: l,
                seq,
                response,
            } if *l == leg => {
                assert_eq!(response.cseq().unwrap().seq, *seq, "{response:?}");
                Some(Message::Response(response.clone()))
            }
            Action::Ack { leg: l, bytes } if *l == leg => Some(parse_bytes(bytes)),
            _ => None,
        })
        .collect()
}

fn response_to(req: &Request, status: u16) -> Response {
    roundtrip_response(&Response::for_request(
        req,
        StatusCode::new(status).unwrap(),
    ))
}

#[test]
fn outbound_invite_hides_the_inbound_topology() {
    let h = Harness::new();
    let b = &h.invite_b;
    assert_eq!(b.uri.to_string(), "sip:+74951234567@127.0.0.1:5080");
    let vias = b.via().unwrap();
    assert_eq!(vias.len(), 1);
    let branch = vias[0].branch().unwrap();
    assert!(branch.starts_with("z9hG4bKvpbx"));
    assert_eq!(
        ids::parse_branch(branch.as_bytes()),
        Some((7, Leg::Outbound, 1))
    );
    assert_eq!(vias[0].port, Some(5060));
    assert_ne!(b.call_id().unwrap(), "inbound-call-1@carrier.example");
    let from = b.from().unwrap();
    assert_ne!(from.tag().unwrap(), "caller-tag");
    assert_eq!(from.display_name.as_deref(), Some("Alice A"));
    match &from.uri {
        Uri::Sip(u) => {
            assert_eq!(u.user.as_deref(), Some("+79161234567"));
            assert_eq!(u.host.to_string(), "127.0.0.1");
        }
        other => panic!("From URI {other}"),
    }
    assert!(b.to().unwrap().tag().is_none());
    assert_eq!(b.cseq().unwrap().seq, 1);
    assert_eq!(b.max_forwards().unwrap(), Some(9));
    assert!(b.record_route().unwrap().is_empty());
    let contact = b.headers.get(&HeaderName::Contact).unwrap();
    assert_eq!(&contact[..], b"<sip:vpbx@127.0.0.1:5060>");
    assert_eq!(&b.body[..], b"v=0\r\no=x\r\n");
    assert_eq!(
        b.headers.get(&HeaderName::ContentType).map(|v| &v[..]),
        Some(&b"application/sdp"[..])
    );
    assert_eq!(b.supported().unwrap().len(), 1);
    let wire = Message::Request(b.clone()).to_bytes();
    for leak in [
        "198.51.100.7",
        "10.0.0.1",
        "carrier.example",
        "caller-tag",
        "proxy.carrier",
    ] {
        assert!(
            !wire.windows(leak.len()).any(|w| w == leak.as_bytes()),
            "{leak} leaked"
        );
    }
}

#[test]
fn dialed_number_becomes_the_user_of_a_request_uri_without_one() {
    let plan = Plan {
        request_uri: Uri::parse("sip:127.0.0.1:5080;transport=udp").unwrap(),
        request_user: Some(crate::routing::Number::parse("+74951234567").unwrap()),
        ..plan()
    };
    let mut out = Vec::new();
    let mut call = Call::new(
        7,
        request(INVITE),
        std::sync::Arc::new(LegTransport::new("203.0.113.5", 5060, "udp")),
        plan,
        &settings(None),
        Instant::now(),
        &mut out,
    )
    .unwrap();
    let Some(Action::Request { request, .. }) = out.pop() else {
        panic!("expected the outbound INVITE, got {out:?}");
    };
    let wire = Message::Request(request).to_bytes();
    let text = std::str::from_utf8(&wire).unwrap();
    assert!(
        text.starts_with("INVITE sip:+74951234567@127.0.0.1:5080;transport=udp SIP/2.0\r\n"),
        "{text}"
    );
    assert!(
        text.contains("\r\nTo: <sip:+74951234567@127.0.0.1:5080;transport=udp>\r\n"),
        "{text}"
    );
    // The CANCEL names the same Request-URI (RFC 3261 §9.1).
    let b = roundtrip_request(&match parse_bytes(&wire) {
        Message::Request(r) => r,
        Message::Response(_) => unreachable!(),
    });
    let mut ringing = response_to(&b, 180);
    ringing.set_to_tag("callee-tag");
    call.on_response(Leg::Outbound, ringing, Instant::now(), &mut out);
    call.terminate(Instant::now(), &mut out);
    let cancel = requests(&out, Leg::Outbound)
        .into_iter()
        .find(|r| r.method == Method::Cancel)
        .expect("a CANCEL");
    assert_eq!(
        cancel.uri.to_string(),
        "sip:+74951234567@127.0.0.1:5080;transport=udp"
    );
}

#[test]
fn basic_call_relays_180_and_200_and_acks_each_leg() {
    let mut h = Harness::new();
    h.callee_responds(100, "");
    assert!(h.take().is_empty(), "100 is hop by hop");

    h.callee_responds(180, "");
    let out = h.take();
    assert_eq!(responses(&out, Leg::Inbound), vec![180]);
    let Action::Respond {
        response: ringing, ..
    } = &out[0]
    else {
        panic!()
    };
    let ringing = roundtrip_response(ringing);
    let our_tag = ringing.to().unwrap().tag().unwrap().to_owned();
    assert_eq!(our_tag, h.call.inbound_local_tag());
    assert_eq!(
        ringing.via().unwrap().len(),
        2,
        "all Vias of the caller's INVITE"
    );
    assert_eq!(ringing.record_route().unwrap().len(), 1);
    assert_eq!(ringing.cseq().unwrap().seq, 10);
    assert!(!Message::Response(ringing.clone())
        .to_bytes()
        .windows(6)
        .any(|w| w == b"callee"));

    h.callee_responds(200, "v=0\r\no=callee\r\n");
    let out = h.take();
    assert_eq!(responses(&out, Leg::Inbound), vec![200]);
    let Action::Respond { response: ok, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(&ok.body[..], b"v=0\r\no=callee\r\n");
    assert_eq!(ok.to().unwrap().tag(), Some(our_tag.as_str()));
    assert!(h.call.answered_at().is_some());

    h.caller_in_dialog("ACK", 10, "");
    let out = h.take();
    let acks = transmitted(&out, Leg::Outbound);
    assert_eq!(acks.len(), 1);
    let Message::Request(ack) = &acks[0] else {
        panic!()
    };
    let ack = roundtrip_request(ack);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(ack.to().unwrap().tag(), Some("callee-tag"));
    assert_eq!(ack.uri.to_string(), "sip:callee@127.0.0.1:5080");
    assert_eq!(ack.call_id().unwrap(), h.invite_b.call_id().unwrap());

    h.caller_in_dialog("BYE", 11, "");
    let out = h.take();
    assert_eq!(responses(&out, Leg::Inbound), vec![200]);
    let byes = requests(&out, Leg::Outbound);
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].method, Method::Bye);
    assert_eq!(byes[0].cseq().unwrap().seq, 2);
    assert!(!h.call.is_finished(), "waits for the callee's 200 to BYE");
    h.callee_answers_our_bye(&byes[0]);
}

#[test]
fn bye_from_callee_is_answered_and_relayed_to_caller() {
    let mut h = Harness::new();
    h.answer();
    h.callee_in_dialog("BYE", 1);
    let out = h.take();
    assert_eq!(responses(&out, Leg::Outbound), vec![200]);
    let byes = requests(&out, Leg::Inbound);
    assert_eq!(byes.len(), 1);
    let bye = &byes[0];
    // Caller's dialog: Request-URI = caller's Contact, Route = its Record-Route,
    // From = our To with our tag, To = caller's From.
    assert_eq!(bye.uri.to_string(), "sip:alice@198.51.100.7:5060");
    assert_eq!(bye.route().unwrap().len(), 1);
    assert_eq!(bye.from().unwrap().tag(), Some(h.call.inbound_local_tag()));
    assert_eq!(bye.to().unwrap().tag(), Some("caller-tag"));
    assert_eq!(bye.call_id().unwrap(), "inbound-call-1@carrier.example");
    assert_eq!(bye.cseq().unwrap().seq, 1);
    h.call
        .on_response(Leg::Inbound, response_to(bye, 200), h.now, &mut h.out);
    assert!(h.call.is_finished());
    assert_eq!(h.call.outcome().unwrap().reason, FinishReason::Answered);
}

#[test]
fn cancel_before_answer_gives_487_on_both_legs() {
    let mut h = Harness::new();
    h.callee_responds(180, "");
    h.take();
    h.caller_cancels();
    let out = h.take();
    assert_eq!(responses(&out, Leg::Inbound), vec![200, 487]);
    let cancels = requests(&out, Leg::Outbound);
    assert_eq!(cancels.len(), 1);
    let c = &cancels[0];
    assert_eq!(c.method, Method::Cancel);
    assert_eq!(
        c.top_via().unwrap().branch(),
        h.invite_b.top_via().unwrap().branch()
    );
    assert_eq!(c.cseq().unwrap().seq, 1);
    assert_eq!(c.uri, h.invite_b.uri);
    assert_eq!(
        h.call.outcome(),
        Some(Outcome {
            reason: FinishReason::CallerHangup,
            status: 487
        })
    );
    assert!(!h.call.is_finished(), "the callee's INVITE is still open");
    h.callee_responds(487, "");
    assert!(h.take().is_empty(), "the callee's 487 is not relayed again");
    assert!(h.call.is_finished());
}

#[test]
fn cancel_before_any_provisional_is_sent_when_one_arrives() {
    let mut h = Harness::new();
    h.caller_cancels();
    let out = h.take();
    assert_eq!(responses(&out, Leg::Inbound), vec![200, 487]);
    assert!(
        requests(&out, Leg::Outbound).is_empty(),
        "RFC 3261 §9.1: not before a provisional"
    );
    h.callee_responds(100, "");
    let out = h.take();
    assert_eq!(requests(&out, Leg::Outbound)[0].method, Method::Cancel);
}

#[test]
fn cancel_200_race_acks_and_byes_the_callee() {
    let mut h = Harness::new();
    h.callee_responds(180, "");
    h.caller_cancels();
    h.take();
    h.callee_responds(200, "v=0\r\n");
    let out = h.take();
    assert!(
        responses(&out, Leg::Inbound).is_empty(),
        "the caller keeps its 487"
    );
    let acks = transmitted(&out, Leg::Outbound);
    assert_eq!(acks.len(), 1);
    let byes = requests(&out, Leg::Outbound);
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].method, Method::Bye);
    assert_eq!(byes[0].to().unwrap().tag(), Some("callee-tag"));
    h.call
        .on_response(Leg::Outbound, response_to(&byes[0], 200), h.now, &mut h.out);
    assert!(h.call.is_finished());
    assert_eq!(h.call.outcome().unwrap().reason, FinishReason::CallerHangup);
}

#[test]
fn callee_failures_are_mapped_for_the_caller() {
    for (callee, caller, reason) in [
        (486, 486, FinishReason::Busy),
        (600, 486, FinishReason::Busy),
        (503, 480, FinishReason::Unavailable),
        (404, 404, FinishReason::Rejected),
        (502, 500, FinishReason::Rejected),
    ] {
        let mut h = Harness::new();
        h.callee_responds(callee, "");
        let out = h.take();
        assert_eq!(
            responses(&out, Leg::Inbound),
            vec![caller],
            "callee {callee}"
        );
        assert!(h.call.is_finished());
        assert_eq!(
            h.call.outcome(),
            Some(Outcome {
                reason,
                status: caller
            })
        );
    }
}

#[test]
fn callee_timeout_is_unavailable() {
    let mut h = Harness::new();
    h.call
        .on_request_failed(Leg::Outbound, &Method::Invite, 1, h.now, &mut h.out);
    assert_eq!(responses(&h.take(), Leg::Inbound), vec![480]);
    assert!(h.call.is_finished());
    assert_eq!(h.call.outcome().unwrap().reason, FinishReason::Unavailable);
}

#[test]
fn dial_timeout_cancels_the_callee_and_answers_480() {
    let mut h = Harness::new();
    h.callee_responds(180, "");
    h.take();
    assert_eq!(h.call.poll_timeout(), Some(h.now + Duration::from_secs(30)));
    h.advance(Duration::from_secs(29));
    assert!(h.take().is_empty());
    h.advance(Duration::from_secs(1));
    let out = h.take();
    assert_eq!(responses(&out, Leg::Inbound), vec![480]);
    assert_eq!(requests(&out, Leg::Outbound)[0].method, Method::Cancel);
    assert_eq!(
        h.call.outcome(),
        Some(Outcome {
            reason: FinishReason::NoAnswer,
            status: 480
        })
    );
    h.callee_responds(487, "");
    assert!(h.call.is_finished());
}

#[test]
fn ok_is_retransmitted_until_ack_with_doubling_intervals() {
    let mut h = Harness::new();
    h.callee_responds(200, "v=0\r\n");
    let first = h
        .take()
        .into_iter()
        .find_map(|a| match a {
            Action::Respond {
                leg: Leg::Inbound,
                response,
                ..
            } if response.status.is_success() => Some(Message::Response(response).to_bytes()),
            _ => None,
        })
        .expect("the 2xx to the caller");
    let mut gaps = Vec::new();
    let mut last = h.now;
    for _ in 0..5 {
        let next = h.call.poll_timeout().unwrap();
        h.now = next;
        h.call.handle_timeout(next, &mut h.out);
        let again = h
            .take()
            .into_iter()
            .filter_map(|a| match a {
                Action::Retransmit {
                    leg: Leg::Inbound,
                    response,
                    ..
                } => Some(Message::Response(response).to_bytes()),
                _ => None,
            })
            .collect::<Vec<_>>();
        // The same 2xx, byte for byte.
        assert_eq!(again, vec![first.clone()]);
        gaps.push(next - last);
        last = next;
    }
    assert_eq!(gaps, vec![T1, 2 * T1, 4 * T1, T2, T2]);
    h.caller_in_dialog("ACK", 10, "");
    let out = h.take();
    assert_eq!(transmitted(&out, Leg::Outbound).len(), 1);
    h.advance(T2 * 2);
    assert!(h.take().is_empty(), "no retransmission after the ACK");
}

#[test]
fn no_ack_within_64_t1_hangs_up_both_legs() {
    let mut h = Harness::new();
    h.callee_responds(200, "v=0\r\n");
    h.take();
    let start = h.now;
    while h.now < start + 64 * T1 {
        let next = h.call.poll_timeout().unwrap();
        h.now = next;
        h.call.handle_timeout(next, &mut h.out);
    }
    let out = h.take();
    assert_eq!(
        transmitted(&out, Leg::Outbound).len(),
        1,
        "the callee still gets its ACK"
    );
    assert_eq!(requests(&out, Leg::Inbound)[0].method, Method::Bye);
    assert_eq!(requests(&out, Leg::Outbound)[0].method, Method::Bye);
    assert_eq!(h.call.outcome().unwrap().reason, FinishReason::Error);
}

#[test]
fn ok_over_tcp_is_not_retransmitted() {
    let mut h = Harness::with(
        settings(None),
        std::sync::Arc::new(LegTransport::new("203.0.113.5", 5060, "tcp")),
    );
    h.callee_responds(200, "v=0\r\n");
    h.take();
    assert_eq!(h.call.poll_timeout(), Some(h.now + 64 * T1));
}

#[test]
fn retransmitted_2xx_from_callee_gets_the_same_ack() {
    let mut h = Harness::new();
    h.answer();
    h.callee_responds(200, "v=0\r\no=callee\r\n");
    let out = h.take();
    assert!(responses(&out, Leg::Inbound).is_empty());
    let acks = transmitted(&out, Leg::Outbound);
    assert_eq!(acks.len(), 1);
}

#[test]
fn retransmitted_2xx_after_our_bye_still_gets_the_ack() {
    let mut h = Harness::new();
    h.callee_responds(180, "");
    h.callee_responds(200, "v=0\r\no=callee\r\n");
    h.caller_in_dialog("ACK", 10, "");
    let ack = ack_bytes(&h.take());
    assert_eq!(ack.len(), 1);
    let ack = ack[0].clone();
    h.caller_in_dialog("BYE", 11, "");
    let byes = requests(&h.take(), Leg::Outbound);
    assert_eq!(byes.len(), 1, "BYE relayed to the callee");
    // The callee lost our ACK (and maybe the BYE) and retransmits its 2xx.
    h.advance(T1);
    h.take();
    h.callee_responds(200, "v=0\r\no=callee\r\n");
    let again: Vec<Bytes> = h
        .take()
        .into_iter()
        .filter_map(|a| match a {
            Action::Ack {
                leg: Leg::Outbound,
                bytes,
            } => Some(bytes),
            _ => None,
        })
        .collect();
    assert_eq!(again, vec![ack], "the same ACK again");
    // The BYE's transaction still ends the call.
    h.call
        .on_response(Leg::Outbound, response_to(&byes[0], 200), h.now, &mut h.out);
    assert!(h.call.is_finished());
}

/// The ACKs among `actions`, as sent (towards the callee).
fn ack_bytes(actions: &[Action]) -> Vec<Bytes> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Ack {
                leg: Leg::Outbound,
                bytes,
            } => Some(bytes.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_retransmitted_2xx_gets_the_same_ack_again_until_64_t1_late_answer_or_not() {
    for answer in ["", "v=0\r\no=late-answer\r\n"] {
        let mut h = Harness::new();
        let offer = if answer.is_empty() {
            "v=0\r\no=callee\r\n"
        } else {
            "v=0\r\no=offer\r\n"
        };
        h.callee_responds(200, offer);
        h.take();
        h.caller_in_dialog("ACK", 10, answer);
        let first = ack_bytes(&h.take());
        assert_eq!(first.len(), 1);
        let Message::Request(ack) = parse_bytes(&first[0]) else {
            panic!("ACK does not parse")
        };
        assert_eq!(&ack.body[..], answer.as_bytes());
        // Only an ACK with a body (rare) is kept; a plain one is written
        // again when needed.
        let late = |call: &Call| call.kept_acks.as_ref().is_some_and(|k| k.late.is_some());
        assert_eq!(late(&h.call), !answer.is_empty());
        // The callee did not get our ACK: its 2xx comes again, twice.
        for _ in 0..2 {
            h.now += T1;
            h.callee_responds(200, offer);
            assert_eq!(ack_bytes(&h.take()), first, "answer {answer:?}");
        }
        // After 64*T1 the callee retransmits no more: nothing is ACKed.
        h.run_timers_until(h.now + 64 * T1);
        assert!(!late(&h.call));
        h.callee_responds(200, offer);
        assert!(ack_bytes(&h.take()).is_empty(), "answer {answer:?}");
    }
}

#[test]
fn late_offer_ack_carries_the_callers_answer() {
    let mut h = Harness::new();
    h.callee_responds(200, "v=0\r\no=offer\r\n");
    h.take();
    h.caller_in_dialog("ACK", 10, "v=0\r\no=answer\r\n");
    let out = h.take();
    let Message::Request(ack) = &transmitted(&out, Leg::Outbound)[0] else {
        panic!()
    };
    assert_eq!(&ack.body[..], b"v=0\r\no=answer\r\n");
}

#[test]
fn reinvite_is_relayed_with_the_other_legs_cseq() {
    let mut h = Harness::new();
    h.answer();
    h.caller_in_dialog("INVITE", 11, "v=0\r\no=hold\r\n");
    let out = h.take();
    let fwd = &requests(&out, Leg::Outbound)[0];
    assert_eq!(fwd.method, Method::Invite);
    assert_eq!(fwd.cseq().unwrap().seq, 2);
    assert_eq!(&fwd.body[..], b"v=0\r\no=hold\r\n");
    assert_eq!(fwd.to().unwrap().tag(), Some("callee-tag"));
    let mut ok = Response::for_request(fwd, StatusCode::OK);
    ok.headers.push(
        HeaderName::ContentType,
        Bytes::from_static(b"application/sdp"),
    );
    ok.body = Bytes::from_static(b"v=0\r\no=held\r\n");
    h.call
        .on_response(Leg::Outbound, roundtrip_response(&ok), h.now, &mut h.out);
    let out = h.take();
    let Action::Respond {
        leg: Leg::Inbound,
        response,
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!(response.status.as_u16(), 200);
    assert_eq!(response.cseq().unwrap().seq, 11);
    assert_eq!(&response.body[..], b"v=0\r\no=held\r\n");
    h.caller_in_dialog("ACK", 11, "");
    let out = h.take();
    let Message::Request(ack) = &transmitted(&out, Leg::Outbound)[0] else {
        panic!()
    };
    assert_eq!(ack.cseq().unwrap().seq, 2);
    assert_eq!(ack.method, Method::Ack);
}

#[test]
fn second_reinvite_while_one_is_pending_gets_491() {
    let mut h = Harness::new();
    h.answer();
    h.caller_in_dialog("INVITE", 11, "v=0\r\n");
    h.take();
    h.callee_in_dialog("INVITE", 5);
    assert_eq!(responses(&h.take(), Leg::Outbound), vec![491]);
}

#[test]
fn info_from_callee_is_relayed_to_caller_and_answered_back() {
    let mut h = Harness::new();
    h.answer();
    h.callee_in_dialog("INFO", 3);
    let out = h.take();
    let fwd = &requests(&out, Leg::Inbound)[0];
    assert_eq!(fwd.method, Method::Info);
    assert_eq!(fwd.call_id().unwrap(), "inbound-call-1@carrier.example");
    h.call
        .on_response(Leg::Inbound, response_to(fwd, 200), h.now, &mut h.out);
    let out = h.take();
    assert_eq!(responses(&out, Leg::Outbound), vec![200]);
    let Action::Respond { response, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(response.cseq().unwrap().seq, 3);
}

#[test]
fn out_of_order_cseq_in_dialog_gets_500() {
    let mut h = Harness::new();
    h.answer();
    h.caller_in_dialog("INFO", 9, "");
    assert_eq!(responses(&h.take(), Leg::Inbound), vec![500]);
}

#[test]
fn options_in_dialog_is_answered_here() {
    let mut h = Harness::new();
    h.answer();
    h.caller_in_dialog("OPTIONS", 12, "");
    let out = h.take();
    assert_eq!(responses(&out, Leg::Inbound), vec![200]);
    assert!(requests(&out, Leg::Outbound).is_empty());
}

#[test]
fn max_duration_hangs_up_both_legs() {
    let mut h = Harness::with(
        settings(Some(Duration::from_secs(60))),
        std::sync::Arc::new(LegTransport::new("203.0.113.5", 5060, "udp")),
    );
    h.answer();
    h.advance(Duration::from_secs(60));
    let out = h.take();
    assert_eq!(requests(&out, Leg::Inbound)[0].method, Method::Bye);
    assert_eq!(requests(&out, Leg::Outbound)[0].method, Method::Bye);
    assert_eq!(h.call.outcome().unwrap().reason, FinishReason::Answered);
}

#[test]
fn reliable_provisional_and_prack_pass_through() {
    let invite = INVITE.replace("Supported: timer", "Supported: 100rel, timer");
    let now = Instant::now();
    let mut out = Vec::new();
    let inbound = std::sync::Arc::new(LegTransport::new("203.0.113.5", 5060, "udp"));
    let mut call = Call::new(
        7,
        request(&invite),
        inbound,
        plan(),
        &settings(None),
        now,
        &mut out,
    )
    .unwrap();
    let Some(Action::Request { request: b, .. }) = out.pop() else {
        panic!()
    };
    let b = roundtrip_request(&b);
    assert!(b.supported().unwrap().iter().any(|t| t == "100rel"));
    let mut p = Response::for_request(&b, StatusCode::SESSION_PROGRESS);
    p.set_to_tag("callee-tag");
    p.headers
        .push(HeaderName::Require, Bytes::from_static(b"100rel"));
    p.headers.push(HeaderName::RSeq, Bytes::from_static(b"7"));
    p.headers.push(
        HeaderName::Contact,
        Bytes::from_static(b"<sip:callee@127.0.0.1:5080>"),
    );
    call.on_response(Leg::Outbound, roundtrip_response(&p), now, &mut out);
    let Some(Action::Respond {
        response: relayed, ..
    }) = out.pop()
    else {
        panic!()
    };
    assert_eq!(relayed.rseq().unwrap(), Some(7));
    assert!(relayed.require().unwrap().iter().any(|t| t == "100rel"));
    let tag = call.inbound_local_tag().to_string();
    let prack = format!(
        "PRACK sip:vpbx@203.0.113.5 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKprack\r\n\
From: <sip:+79161234567@carrier.example>;tag=caller-tag\r\n\
To: <sip:+74951234567@vpbx.example.net>;tag={tag}\r\n\
Call-ID: inbound-call-1@carrier.example\r\n\
CSeq: 11 PRACK\r\n\
RAck: 7 10 INVITE\r\n\
Content-Length: 0\r\n\r\n"
    );
    call.on_request(Leg::Inbound, request(&prack), now, &mut out);
    let Some(Action::Request {
        leg: Leg::Outbound,
        request: fwd,
        ..
    }) = out.pop()
    else {
        panic!()
    };
    let fwd = roundtrip_request(&fwd);
    let rack = fwd.rack().unwrap().unwrap();
    assert_eq!((rack.rseq, rack.cseq), (7, 1));
    assert_eq!(fwd.to().unwrap().tag(), Some("callee-tag"));
    call.on_response(Leg::Outbound, response_to(&fwd, 200), now, &mut out);
    let Some(Action::Respond {
        leg: Leg::Inbound,
        response,
        ..
    }) = out.pop()
    else {
        panic!()
    };
    assert_eq!(response.cseq().unwrap().method, Method::Prack);
}

#[test]
fn callee_that_never_answers_the_cancel_is_given_up_after_64_t1() {
    let mut h = Harness::new();
    h.callee_responds(180, "");
    h.caller_cancels();
    h.take();
    assert!(!h.call.is_finished());
    h.advance(65 * T1);
    assert!(h.call.is_finished());
    assert_eq!(h.call.outcome().unwrap().reason, FinishReason::CallerHangup);
}

#[test]
fn digest_challenge_is_answered_once_with_credentials() {
    let now = Instant::now();
    let mut out = Vec::new();
    let mut p = plan();
    p.credentials = Some(std::sync::Arc::new(crate::b2bua::auth::DigestCredentials {
        username: "office".into(),
        password: "secret".into(),
    }));
    let inbound = std::sync::Arc::new(LegTransport::new("203.0.113.5", 5060, "udp"));
    let mut call = Call::new(
        7,
        request(INVITE),
        inbound,
        p,
        &settings(None),
        now,
        &mut out,
    )
    .unwrap();
    let Some(Action::Request { request: first, .. }) = out.pop() else {
        panic!()
    };
    let first = roundtrip_request(&first);
    let mut challenge = Response::for_request(&first, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    challenge.set_to_tag("x");
    challenge.headers.push(
        HeaderName::ProxyAuthenticate,
        Bytes::from_static(b"Digest realm=\"pbx\", nonce=\"abc\", qop=\"auth\""),
    );
    call.on_response(Leg::Outbound, roundtrip_response(&challenge), now, &mut out);
    assert_eq!(out.len(), 1, "the caller sees nothing: {out:?}");
    let Some(Action::Request {
        leg: Leg::Outbound,
        request: retry,
        ..
    }) = out.pop()
    else {
        panic!()
    };
    let retry = roundtrip_request(&retry);
    assert_eq!(retry.method, Method::Invite);
    assert_eq!(retry.cseq().unwrap().seq, 2);
    assert_eq!(retry.uri, first.uri);
    assert_eq!(retry.call_id().unwrap(), first.call_id().unwrap());
    assert_eq!(retry.from().unwrap().tag(), first.from().unwrap().tag());
    assert_ne!(
        retry.top_via().unwrap().branch(),
        first.top_via().unwrap().branch()
    );
    let creds = retry.proxy_authorization().unwrap().remove(0);
    assert_eq!(creds.param("username").as_deref(), Some("office"));
    assert_eq!(creds.param("realm").as_deref(), Some("pbx"));
    assert_eq!(
        creds.param("uri").as_deref(),
        Some("sip:+74951234567@127.0.0.1:5080")
    );
    assert_eq!(&retry.body[..], &first.body[..]);
    // A second challenge is a failure for the caller.
    let mut again = Response::for_request(&retry, StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    again.set_to_tag("y");
    call.on_response(Leg::Outbound, roundtrip_response(&again), now, &mut out);
    assert_eq!(responses(&out, Leg::Inbound), vec![480]);
    assert_eq!(call.outcome().unwrap().reason, FinishReason::Error);
    assert!(call.is_finished());
}

#[test]
fn challenge_without_credentials_fails_the_call() {
    let mut h = Harness::new();
    h.callee_responds(401, "");
    assert_eq!(responses(&h.take(), Leg::Inbound), vec![480]);
    assert_eq!(h.call.outcome().unwrap().reason, FinishReason::Error);
}

#[test]
fn terminate_hangs_up_an_answered_call_and_finishes_it() {
    let mut h = Harness::new();
    h.answer();
    let now = h.now;
    h.call.terminate(now, &mut h.out);
    let out = h.take();
    assert_eq!(requests(&out, Leg::Inbound)[0].method, Method::Bye);
    assert_eq!(requests(&out, Leg::Outbound)[0].method, Method::Bye);
    assert!(h.call.is_finished());
    assert_eq!(h.call.outcome().unwrap().reason, FinishReason::Answered);
    assert_eq!(h.call.poll_timeout(), None);
}

#[test]
fn terminate_refuses_a_ringing_call_with_503_and_cancels_the_callee() {
    let mut h = Harness::new();
    h.callee_responds(180, "");
    h.take();
    let now = h.now;
    h.call.terminate(now, &mut h.out);
    let out = h.take();
    assert_eq!(responses(&out, Leg::Inbound), vec![503]);
    assert_eq!(requests(&out, Leg::Outbound)[0].method, Method::Cancel);
    assert!(h.call.is_finished());
}

#[test]
fn stray_2xx_gets_an_ack_and_a_bye_in_its_dialog() {
    let h = Harness::new();
    let mut ok = Response::for_request(&h.invite_b, StatusCode::OK);
    ok.set_to_tag("late");
    ok.headers.push(
        HeaderName::Contact,
        Bytes::from_static(b"<sip:callee@127.0.0.1:5080>"),
    );
    let ok = roundtrip_response(&ok);
    let (ack, bye) = ack_and_bye_for_stray_2xx(&ok).unwrap();
    let (ack, bye) = (roundtrip_request(&ack), roundtrip_request(&bye));
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(bye.cseq().unwrap().seq, 2);
    assert_eq!(bye.cseq().unwrap().method, Method::Bye);
    for r in [&ack, &bye] {
        assert_eq!(r.uri.to_string(), "sip:callee@127.0.0.1:5080");
        assert_eq!(r.to().unwrap().tag(), Some("late"));
        assert_eq!(r.call_id().unwrap(), h.invite_b.call_id().unwrap());
        assert_eq!(r.from().unwrap().tag(), h.invite_b.from().unwrap().tag());
    }
    let ringing = roundtrip_response(&Response::for_request(&h.invite_b, StatusCode::RINGING));
    assert!(ack_and_bye_for_stray_2xx(&ringing).is_none());
}

#[test]
fn update_in_the_early_dialog_is_relayed_to_the_callee() {
    let mut h = Harness::new();
    h.callee_responds(183, "v=0\r\no=early\r\n");
    h.take();
    h.caller_in_dialog("UPDATE", 11, "v=0\r\no=upd\r\n");
    let out = h.take();
    let fwd = &requests(&out, Leg::Outbound)[0];
    assert_eq!(fwd.method, Method::Update);
    assert_eq!(fwd.to().unwrap().tag(), Some("callee-tag"));
    assert_eq!(fwd.cseq().unwrap().seq, 2);
    assert_eq!(&fwd.body[..], b"v=0\r\no=upd\r\n");
    assert!(
        fwd.headers.get(&HeaderName::Contact).is_some(),
        "UPDATE is a target refresh"
    );
    h.call
        .on_response(Leg::Outbound, response_to(fwd, 200), h.now, &mut h.out);
    let out = h.take();
    assert_eq!(responses(&out, Leg::Inbound), vec![200]);
    // The INVITE is still ringing: the caller's final answer is yet to come.
    h.callee_responds(200, "v=0\r\n");
    assert_eq!(responses(&h.take(), Leg::Inbound), vec![200]);
}

impl Harness {
    /// The caller re-INVITEs (CSeq 11) and the callee answers the relayed
    /// re-INVITE 200; returns the re-INVITE as the callee got it.
    fn caller_reinvite_answered(&mut self) -> Request {
        self.caller_in_dialog("INVITE", 11, "v=0\r\no=hold\r\n");
        let fwd = requests(&self.take(), Leg::Outbound).remove(0);
        self.call.on_response(
            Leg::Outbound,
            response_to(&fwd, 200),
            self.now,
            &mut self.out,
        );
        let out = self.take();
        assert_eq!(responses(&out, Leg::Inbound), vec![200]);
        fwd
    }

    /// Runs the call's timers up to `until`; returns each instant at which
    /// something was sent, with what was sent.
    fn run_timers_until(&mut self, until: Instant) -> Vec<(Instant, Vec<Action>)> {
        let mut sent = Vec::new();
        while let Some(next) = self.call.poll_timeout().filter(|t| *t <= until) {
            self.now = next;
            self.call.handle_timeout(next, &mut self.out);
            let out = self.take();
            if !out.is_empty() {
                sent.push((next, out));
            }
        }
        self.now = until;
        sent
    }
}

fn transmitted_responses(actions: &[Action], leg: Leg) -> Vec<(u16, u32)> {
    transmitted(actions, leg)
        .into_iter()
        .filter_map(|m| match m {
            Message::Response(r) => Some((r.status.as_u16(), r.cseq().unwrap().seq)),
            Message::Request(_) => None,
        })
        .collect()
}

fn transmitted_acks(actions: &[Action], leg: Leg) -> Vec<Request> {
    transmitted(actions, leg)
        .into_iter()
        .filter_map(|m| match m {
            Message::Request(r) if r.method == Method::Ack => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn reinvite_2xx_is_retransmitted_until_the_ack_and_the_ack_is_relayed() {
    let mut h = Harness::new();
    h.answer();
    h.caller_reinvite_answered();
    let start = h.now;
    let sent = h.run_timers_until(start + 15 * T1);
    let mut last = start;
    let mut gaps = Vec::new();
    for (at, out) in &sent {
        assert_eq!(transmitted_responses(out, Leg::Inbound), vec![(200, 11)]);
        assert!(transmitted(out, Leg::Outbound).is_empty(), "{out:?}");
        gaps.push(*at - last);
        last = *at;
    }
    // RFC 3261 §13.3.1.4: T1, 2*T1, 4*T1, then capped at T2.
    assert_eq!(gaps, vec![T1, 2 * T1, 4 * T1, T2]);

    h.caller_in_dialog("ACK", 11, "v=0\r\no=late-answer\r\n");
    let out = h.take();
    let acks = transmitted_acks(&out, Leg::Outbound);
    assert_eq!(acks.len(), 1, "{out:?}");
    assert_eq!(acks[0].cseq().unwrap().seq, 2);
    assert_eq!(acks[0].to().unwrap().tag(), Some("callee-tag"));
    assert_eq!(&acks[0].body[..], b"v=0\r\no=late-answer\r\n");
    let later = h.run_timers_until(h.now + 64 * T1);
    assert!(later.is_empty(), "nothing after the ACK: {later:?}");
    assert!(h.call.outcome().is_none(), "the call goes on");
}

#[test]
fn reinvite_2xx_never_acked_ends_the_call_after_64_t1() {
    let mut h = Harness::new();
    h.answer();
    h.caller_reinvite_answered();
    let start = h.now;
    let sent = h.run_timers_until(start + 64 * T1);
    let (at, last) = sent.last().unwrap();
    assert_eq!(*at, start + 64 * T1);
    let acks = transmitted_acks(last, Leg::Outbound);
    assert_eq!(acks.len(), 1, "the callee's 2xx is ACKed: {last:?}");
    assert_eq!(acks[0].cseq().unwrap().seq, 2);
    assert_eq!(requests(last, Leg::Inbound)[0].method, Method::Bye);
    assert_eq!(requests(last, Leg::Outbound)[0].method, Method::Bye);
    assert_eq!(h.call.outcome().unwrap().reason, FinishReason::Answered);
    // Every earlier step was a retransmission of our 2xx only.
    for (_, out) in &sent[..sent.len() - 1] {
        assert_eq!(transmitted_responses(out, Leg::Inbound), vec![(200, 11)]);
        assert_eq!(out.len(), 1);
    }
}

#[test]
fn retransmitted_reinvite_2xx_gets_the_relayed_ack_again() {
    let mut h = Harness::new();
    h.answer();
    let fwd = h.caller_reinvite_answered();
    // Before the caller's ACK: nothing to send to the callee yet.
    h.call
        .on_response(Leg::Outbound, response_to(&fwd, 200), h.now, &mut h.out);
    let out = h.take();
    assert!(out.is_empty(), "{out:?}");
    h.caller_in_dialog("ACK", 11, "");
    assert_eq!(transmitted_acks(&h.take(), Leg::Outbound).len(), 1);
    h.call
        .on_response(Leg::Outbound, response_to(&fwd, 200), h.now, &mut h.out);
    let out = h.take();
    let acks = transmitted_acks(&out, Leg::Outbound);
    assert_eq!(acks.len(), 1, "{out:?}");
    assert_eq!(acks[0].cseq().unwrap().seq, 2);
    assert!(responses(&out, Leg::Inbound).is_empty());
}

#[test]
fn reinvite_2xx_over_tcp_is_not_retransmitted_but_still_awaits_its_ack() {
    let mut h = Harness::with(
        settings(None),
        std::sync::Arc::new(LegTransport::new("203.0.113.5", 5060, "tcp")),
    );
    h.answer();
    h.caller_reinvite_answered();
    let start = h.now;
    let sent = h.run_timers_until(start + 64 * T1);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, start + 64 * T1);
    assert_eq!(requests(&sent[0].1, Leg::Inbound)[0].method, Method::Bye);
}

#[test]
fn callee_reinvite_2xx_from_the_caller_side_is_retransmitted_to_the_callee() {
    let mut h = Harness::new();
    h.answer();
    h.callee_in_dialog("INVITE", 5);
    let fwd = requests(&h.take(), Leg::Inbound).remove(0);
    assert_eq!(fwd.method, Method::Invite);
    h.call
        .on_response(Leg::Inbound, response_to(&fwd, 200), h.now, &mut h.out);
    assert_eq!(responses(&h.take(), Leg::Outbound), vec![200]);
    let start = h.now;
    let sent = h.run_timers_until(start + 3 * T1);
    assert_eq!(sent.len(), 2, "{sent:?}");
    for (_, out) in &sent {
        assert_eq!(transmitted_responses(out, Leg::Outbound), vec![(200, 5)]);
    }
    h.callee_in_dialog("ACK", 5);
    let acks = transmitted_acks(&h.take(), Leg::Inbound);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].cseq().unwrap().seq, fwd.cseq().unwrap().seq);
    assert_eq!(acks[0].call_id().unwrap(), "inbound-call-1@carrier.example");
}

#[test]
fn bye_while_a_reinvite_2xx_awaits_its_ack_acks_the_other_leg_first() {
    let mut h = Harness::new();
    h.answer();
    h.caller_reinvite_answered();
    h.caller_in_dialog("BYE", 12, "");
    let out = h.take();
    assert_eq!(responses(&out, Leg::Inbound), vec![200]);
    let acks = transmitted_acks(&out, Leg::Outbound);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].cseq().unwrap().seq, 2);
    let byes = requests(&out, Leg::Outbound);
    assert_eq!(byes[0].method, Method::Bye);
    let sent = h.run_timers_until(h.now + 10 * T1);
    assert!(
        sent.iter()
            .all(|(_, o)| transmitted_responses(o, Leg::Inbound).is_empty()),
        "no 2xx retransmission after the BYE: {sent:?}"
    );
}

#[test]
fn the_call_state_stays_compact() {
    // Touched by every message of the call; the rare re-INVITE state is
    // boxed, the outbound INVITE keeps its Request-URI only as text, and
    // each dialog is one text with offsets (no parsed remote target).
    let size = std::mem::size_of::<Call>();
    assert!(
        size <= 624,
        "Call is {size} bytes (was 1,584, then 1,312, 1,296, 688)"
    );
}

#[test]
fn a_calls_instants_read_back_exactly_as_set() {
    // Deadlines are kept as nanoseconds after the call's start: what is
    // read back is the instant set (so `deadline_set_at` still tells the
    // distance it was set at), and none stays none.
    let start = Instant::now();
    for after in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_millis(500),
        Duration::from_secs(32) + Duration::from_nanos(999_999_999),
        Duration::from_secs(86_400 * 365),
    ] {
        let at = start + after;
        assert_eq!(Since::new(start, at).get(start), Some(at), "{after:?}");
    }
    assert_eq!(Since::NONE.get(start), None);
    assert!(Since::new(start, start + Duration::from_secs(1)) < Since::NONE);
}

#[test]
fn the_outbound_request_uri_is_read_back_from_its_to() {
    for text in [
        "sip:+74951234567@127.0.0.1:5080",
        "sips:office@pbx.example.com;transport=tcp",
        "sip:7042@[2001:db8::1]:5062;user=phone",
        "tel:+74951234567",
    ] {
        let uri = Uri::parse(text).unwrap();
        let mut to = bytes::BytesMut::new();
        to.put_u8(b'<');
        uri.write_into(&mut to);
        to.put_u8(b'>');
        let invite = OutInvite {
            to: to.freeze(),
            via: Bytes::new(),
            max_forwards: Bytes::from_static(b"69"),
        };
        assert_eq!(invite.uri().unwrap(), uri, "{text}");
        assert_eq!(invite.uri().unwrap().to_text(), uri.to_text());
    }
    // Not `<` URI `>`, or no URI in it (not reached: the call writes a
    // parsed URI so): an error, never another URI.
    let read_back = |to: &'static [u8]| {
        OutInvite {
            to: Bytes::from_static(to),
            via: Bytes::new(),
            max_forwards: Bytes::new(),
        }
        .uri()
    };
    for to in [&b""[..], b"sip:x@y", b"<sip:x@y", b"sip:x@y>"] {
        assert!(
            matches!(read_back(to), Err(ReadBackError::NotNameAddr)),
            "{to:?}"
        );
    }
    for to in [&b"<>"[..], b"<sip:bad host>", b"<sip:x@y:99999>"] {
        assert!(
            matches!(read_back(to), Err(ReadBackError::Uri(_))),
            "{to:?}"
        );
    }
}

/// Our INVITE's To made unreadable, as a writer/parser disagreement would.
fn break_out_invite_to(call: &mut Call) {
    call.out_invite.as_mut().unwrap().to = Bytes::from_static(b"<sip:bad host>");
}

#[test]
fn a_cancel_whose_request_uri_does_not_read_back_is_not_sent() {
    // RFC 3261 §9.1: a CANCEL carries the INVITE's Request-URI; one to
    // another (e.g. the callee's Contact of its 180) is not sent.
    let mut h = Harness::new();
    let mut ringing = response_to(&h.invite_b, 180);
    ringing.headers.push(
        HeaderName::Contact,
        Bytes::from_static(b"<sip:elsewhere@192.0.2.99:5062>"),
    );
    h.call.on_response(
        Leg::Outbound,
        roundtrip_response(&ringing),
        h.now,
        &mut h.out,
    );
    h.take();
    break_out_invite_to(&mut h.call);
    h.caller_cancels();
    let out = h.take();
    assert_eq!(responses(&out, Leg::Inbound), vec![200, 487]);
    assert!(requests(&out, Leg::Outbound).is_empty(), "{out:?}");
    // Nor later (the dial timeout wants one too): the INVITE ends by the
    // callee's final response.
    h.advance(Duration::from_secs(120));
    assert!(requests(&h.take(), Leg::Outbound).is_empty());
    h.callee_responds(487, "");
    h.take();
    assert!(h.call.is_finished());
    assert_eq!(h.call.outcome().unwrap().reason, FinishReason::CallerHangup);
}

#[test]
fn a_challenge_is_not_answered_when_the_request_uri_does_not_read_back() {
    let now = Instant::now();
    let mut out = Vec::new();
    let mut p = plan();
    p.credentials = Some(std::sync::Arc::new(crate::b2bua::auth::DigestCredentials {
        username: "office".into(),
        password: "secret".into(),
    }));
    let inbound = std::sync::Arc::new(LegTransport::new("203.0.113.5", 5060, "udp"));
    let mut call = Call::new(
        7,
        request(INVITE),
        inbound,
        p,
        &settings(None),
        now,
        &mut out,
    )
    .unwrap();
    let Some(Action::Request { request: first, .. }) = out.pop() else {
        panic!()
    };
    break_out_invite_to(&mut call);
    let first = roundtrip_request(&first);
    let mut challenge = Response::for_request(&first, StatusCode::UNAUTHORIZED);
    challenge.set_to_tag("x");
    challenge.headers.push(
        HeaderName::WwwAuthenticate,
        Bytes::from_static(b"Digest realm=\"pbx\", nonce=\"abc\", qop=\"auth\""),
    );
    call.on_response(Leg::Outbound, roundtrip_response(&challenge), now, &mut out);
    assert!(requests(&out, Leg::Outbound).is_empty(), "{out:?}");
    // As a challenge without usable credentials.
    assert_eq!(responses(&out, Leg::Inbound), vec![480]);
    assert_eq!(call.outcome().unwrap().reason, FinishReason::Error);
}

/// The call's timer as the shell keeps it ([`crate::b2bua::service`]):
/// cancelled and scheduled anew when the call's next deadline changed.
fn reschedule_in(
    wheel: &crate::transaction::wheel::Wheel<u64>,
    scheduled: &mut Option<(Instant, crate::transaction::wheel::TimerId)>,
    call: &Call,
    id: u64,
    now: Instant,
) {
    let want = call.poll_timeout();
    if want == scheduled.map(|(at, _)| at) {
        return;
    }
    let mut batch = wheel.batch();
    if let Some((_, old)) = scheduled.take() {
        batch.cancel_all([old]);
    }
    if let Some(at) = want {
        let timer = crate::b2bua::service::schedule_call_timer(&mut batch, call, id, at, now);
        *scheduled = Some((at, timer));
    }
}

#[test]
fn deadlines_set_by_an_earlier_step_take_no_lane_of_their_own() {
    let wheel = crate::transaction::wheel::Wheel::new();
    let calls = 40u64;
    for id in 0..calls {
        let mut h = Harness::with(
            settings(Some(Duration::from_secs(3600))),
            std::sync::Arc::new(LegTransport::new("203.0.113.5", 5060, "udp")),
        );
        let mut scheduled = None;
        reschedule_in(&wheel, &mut scheduled, &h.call, id, h.now);
        h.callee_responds(180, "");
        h.callee_responds(200, "v=0\r\no=callee\r\n");
        // The 2xx retransmission (T1), set by this step.
        let at = h.call.poll_timeout().unwrap();
        assert!(h.call.deadline_set_at(at, h.now));
        reschedule_in(&wheel, &mut scheduled, &h.call, id, h.now);
        // The ACK comes a different time after the 2xx in each call, and
        // sets the ACK keep time (64*T1).
        h.now += Duration::from_millis(100 * (id + 1));
        h.caller_in_dialog("ACK", 10, "");
        reschedule_in(&wheel, &mut scheduled, &h.call, id, h.now);
        h.take();
        // Once it is over, the maximum duration (set at the 2xx) is next:
        // a distance from now that no other call's timer has.
        let keep = h.call.poll_timeout().unwrap();
        h.run_timers_until(keep);
        let at = h.call.poll_timeout().unwrap();
        assert!(!h.call.deadline_set_at(at, h.now));
        reschedule_in(&wheel, &mut scheduled, &h.call, id, h.now);
    }
    // The dial timeout, T1 and 64*T1: one lane each, not one per call.
    assert_eq!(wheel.lanes(), 3);
    assert_eq!(wheel.len(), calls as usize);
    // Later calls' ACKs came later after their 2xx: their maximum
    // durations end earlier.
    let mut due = Vec::new();
    let far = tokio::time::Instant::now() + Duration::from_secs(7200);
    wheel.pop_due(far, &mut due);
    let order: Vec<u64> = due.into_iter().map(|(_, id)| id).collect();
    assert_eq!(order, (0..calls).rev().collect::<Vec<_>>());
}

// ---- A forking callee (RFC 3261 §12.1.2, §13.2.2.4; RFC 6026 §7.2) ----
//
// A proxy in front of the external PBX may fork our INVITE: each branch
// answers with its own To tag, i.e. its own (early) dialog, and every 2xx
// reaches us (the INVITE client transaction's Accepted state passes them
// all up). The call keeps one dialog with the callee, that of the first
// 2xx; every other 2xx is ACKed in its own dialog and then BYEd, and the
// caller sees nothing of it.

const FORK_B_CONTACT: &str = "<sip:fork-b@127.0.0.1:5082>";
const FORK_B_ROUTE: &str = "<sip:proxy-b.example.net;lr>";

impl Harness {
    /// A response of the fork with To tag `tag`, with `extra` header
    /// fields (Contact, Record-Route...) and `body` (SDP).
    fn fork_responds(&mut self, status: u16, tag: &str, extra: &[(HeaderName, &str)], body: &str) {
        let mut r = Response::for_request(&self.invite_b, StatusCode::new(status).unwrap());
        r.set_to_tag(tag);
        for (name, value) in extra {
            r.headers
                .push(name.clone(), Bytes::copy_from_slice(value.as_bytes()));
        }
        if !body.is_empty() {
            r.headers.push(
                HeaderName::ContentType,
                Bytes::from_static(b"application/sdp"),
            );
            r.body = Bytes::copy_from_slice(body.as_bytes());
        }
        let r = roundtrip_response(&r);
        self.call
            .on_response(Leg::Outbound, r, self.now, &mut self.out);
    }

    /// The 2xx of the second fork (tag `fork-b`), with its own Contact and
    /// Record-Route.
    fn fork_b_answers(&mut self) {
        self.fork_responds(
            200,
            "fork-b",
            &[
                (HeaderName::RecordRoute, FORK_B_ROUTE),
                (HeaderName::Contact, FORK_B_CONTACT),
            ],
            "v=0\r\no=fork-b\r\n",
        );
    }
}

/// The ACK and the BYE the call sends the second fork (all it sends), checked to be in its
/// dialog: its To tag, its Contact as Request-URI, its Record-Route as
/// Route, our INVITE's Call-ID, From and CSeq number for the ACK (RFC 3261
/// §13.2.2.4, §12.2.1.1).
fn fork_b_ack_and_bye(h: &mut Harness) -> (Bytes, Request) {
    let out = &h.take();
    assert!(
        responses(out, Leg::Inbound).is_empty() && requests(out, Leg::Inbound).is_empty(),
        "the caller sees nothing of another fork: {out:?}"
    );
    let acks = ack_bytes(out);
    assert_eq!(acks.len(), 1, "{out:?}");
    let Message::Request(ack) = parse_bytes(&acks[0]) else {
        panic!("the ACK does not parse")
    };
    let byes = requests(out, Leg::Outbound);
    assert_eq!(byes.len(), 1, "{out:?}");
    let bye = byes[0].clone();
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(bye.method, Method::Bye);
    let invite_seq = h.invite_b.cseq().unwrap().seq;
    assert_eq!(ack.cseq().unwrap().seq, invite_seq);
    assert!(bye.cseq().unwrap().seq > invite_seq);
    for r in [&ack, &bye] {
        assert_eq!(r.to().unwrap().tag(), Some("fork-b"), "{r:?}");
        assert_eq!(r.uri.to_string(), "sip:fork-b@127.0.0.1:5082");
        let routes = r.route().unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].to_string(), FORK_B_ROUTE);
        assert_eq!(r.call_id().unwrap(), h.invite_b.call_id().unwrap());
        assert_eq!(r.from().unwrap().tag(), h.invite_b.from().unwrap().tag());
        let branch = r.via().unwrap()[0].branch().unwrap().to_owned();
        assert!(branch.starts_with("z9hG4bK"), "{branch}");
    }
    (acks[0].clone(), bye)
}

#[test]
fn a_second_forks_2xx_after_the_ack_gets_an_ack_and_a_bye_of_its_own() {
    let mut h = Harness::new();
    h.answer();
    let ack_a = {
        h.callee_responds(200, "v=0\r\no=callee\r\n");
        ack_bytes(&h.take())
    };
    assert_eq!(ack_a.len(), 1);

    h.fork_b_answers();
    let (ack_b, bye_b) = fork_b_ack_and_bye(&mut h);
    assert_ne!(ack_b, ack_a[0]);

    // Its 2xx again (our ACK got lost): its own ACK again, no second BYE.
    h.now += T1;
    h.fork_b_answers();
    let out = h.take();
    assert_eq!(ack_bytes(&out), vec![ack_b.clone()], "{out:?}");
    assert!(requests(&out, Leg::Outbound).is_empty(), "{out:?}");
    // The first fork's 2xx still gets the first fork's ACK.
    h.callee_responds(200, "v=0\r\no=callee\r\n");
    assert_eq!(ack_bytes(&h.take()), ack_a);

    // Whatever the fork answers to the BYE, the call goes on.
    h.call
        .on_response(Leg::Outbound, response_to(&bye_b, 481), h.now, &mut h.out);
    h.call
        .on_response(Leg::Outbound, response_to(&bye_b, 200), h.now, &mut h.out);
    assert!(h.take().is_empty());
    assert!(!h.call.is_finished());
    assert!(h.call.outcome().is_none());

    // The call's dialog with the callee is the first fork's.
    h.caller_in_dialog("BYE", 11, "");
    let out = h.take();
    assert_eq!(responses(&out, Leg::Inbound), vec![200]);
    let byes = requests(&out, Leg::Outbound);
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].to().unwrap().tag(), Some("callee-tag"));
    assert_eq!(byes[0].uri.to_string(), "sip:callee@127.0.0.1:5080");
    assert_ne!(byes[0].cseq().unwrap().seq, bye_b.cseq().unwrap().seq);
    h.callee_answers_our_bye(&byes[0]);
}

#[test]
fn a_second_forks_2xx_before_the_callers_ack_is_acked_and_byed_not_relayed() {
    let mut h = Harness::new();
    h.callee_responds(180, "");
    h.callee_responds(200, "v=0\r\no=callee\r\n");
    assert_eq!(responses(&h.take(), Leg::Inbound), vec![180, 200]);

    h.fork_b_answers();
    let (ack_b, _) = fork_b_ack_and_bye(&mut h);

    // The caller's ACK is the first fork's.
    h.caller_in_dialog("ACK", 10, "");
    let acks = ack_bytes(&h.take());
    assert_eq!(acks.len(), 1);
    assert_ne!(acks[0], ack_b);
    let Message::Request(ack) = parse_bytes(&acks[0]) else {
        panic!()
    };
    assert_eq!(ack.to().unwrap().tag(), Some("callee-tag"));
    assert_eq!(ack.uri.to_string(), "sip:callee@127.0.0.1:5080");
    assert!(ack.route().unwrap().is_empty());
}

#[test]
fn a_second_forks_2xx_after_the_cancel_200_race_is_acked_and_byed_too() {
    let mut h = Harness::new();
    h.callee_responds(180, "");
    h.caller_cancels();
    h.take();
    h.callee_responds(200, "v=0\r\n");
    let byes = requests(&h.take(), Leg::Outbound);
    assert_eq!(byes.len(), 1);
    h.fork_b_answers();
    let (_, bye_b) = fork_b_ack_and_bye(&mut h);
    // The fork's BYE is not what the call waits for: the first fork's is.
    h.call
        .on_response(Leg::Outbound, response_to(&bye_b, 200), h.now, &mut h.out);
    assert!(!h.call.is_finished());
    h.call
        .on_response(Leg::Outbound, response_to(&byes[0], 200), h.now, &mut h.out);
    assert!(h.call.is_finished());
    assert_eq!(h.call.outcome().unwrap().reason, FinishReason::CallerHangup);
}

#[test]
fn a_2xx_of_another_fork_without_a_usable_contact_keeps_no_target_of_the_early_dialog() {
    // The early dialog is fork A's (its 180 with Contact and Record-Route);
    // the 2xx is fork B's, with no Contact or one that does not parse:
    // nothing of fork A's may be left in the dialog of fork B. Without a
    // Contact the remote target is the To URI (the Request-URI we sent).
    for contact in [None, Some("<sip:broken@>;;")] {
        let mut h = Harness::new();
        h.fork_responds(
            180,
            "fork-a",
            &[
                (HeaderName::RecordRoute, "<sip:proxy-a.example.net;lr>"),
                (HeaderName::Contact, "<sip:fork-a@127.0.0.1:5081>"),
            ],
            "",
        );
        h.take();
        let extra: Vec<(HeaderName, &str)> =
            contact.iter().map(|c| (HeaderName::Contact, *c)).collect();
        h.fork_responds(200, "fork-b", &extra, "v=0\r\no=fork-b\r\n");
        assert_eq!(responses(&h.take(), Leg::Inbound), vec![200]);
        h.caller_in_dialog("ACK", 10, "");
        let acks = ack_bytes(&h.take());
        assert_eq!(acks.len(), 1, "contact {contact:?}");
        let Message::Request(ack) = parse_bytes(&acks[0]) else {
            panic!()
        };
        assert_eq!(ack.to().unwrap().tag(), Some("fork-b"));
        assert_eq!(
            ack.uri.to_string(),
            "sip:+74951234567@127.0.0.1:5080",
            "contact {contact:?}"
        );
        assert!(ack.route().unwrap().is_empty(), "contact {contact:?}");
    }
}

#[test]
fn early_dialogs_of_several_forks_are_relayed_on_the_callers_single_leg() {
    // Each fork's 183 (its own To tag and SDP) reaches the caller as a
    // 183 of the caller's one early dialog (our To tag), with that fork's
    // SDP: the caller takes the last as the early media (RFC 3261
    // §13.2.2.4 has a UAC see each fork as its own early dialog; behind a
    // B2BUA they are one).
    let mut h = Harness::new();
    let mut relayed = Vec::new();
    for (tag, contact, sdp) in [
        (
            "fork-a",
            "<sip:fork-a@127.0.0.1:5081>",
            "v=0\r\no=fork-a\r\n",
        ),
        ("fork-b", FORK_B_CONTACT, "v=0\r\no=fork-b\r\n"),
    ] {
        h.fork_responds(183, tag, &[(HeaderName::Contact, contact)], sdp);
        let out = h.take();
        assert_eq!(responses(&out, Leg::Inbound), vec![183]);
        let Some(Action::Respond { response, .. }) = out.into_iter().next() else {
            panic!()
        };
        let r = roundtrip_response(&response);
        relayed.push((r.to().unwrap().tag().unwrap().to_owned(), r.body.clone()));
    }
    let ours = h.call.inbound_local_tag().to_owned();
    assert_eq!(
        relayed,
        vec![
            (ours.clone(), Bytes::from_static(b"v=0\r\no=fork-a\r\n")),
            (ours, Bytes::from_static(b"v=0\r\no=fork-b\r\n")),
        ]
    );
    // The fork that answers first is the call's, whichever rang last.
    h.fork_responds(
        200,
        "fork-a",
        &[(HeaderName::Contact, "<sip:fork-a@127.0.0.1:5081>")],
        "v=0\r\no=fork-a\r\n",
    );
    assert_eq!(responses(&h.take(), Leg::Inbound), vec![200]);
    h.caller_in_dialog("ACK", 10, "");
    let Message::Request(ack) = parse_bytes(&ack_bytes(&h.take())[0]) else {
        panic!()
    };
    assert_eq!(ack.to().unwrap().tag(), Some("fork-a"));
    assert_eq!(ack.uri.to_string(), "sip:fork-a@127.0.0.1:5081");
}

#[test]
fn a_2xx_without_a_to_tag_after_the_answer_is_no_dialog_and_gets_nothing() {
    // No tag, no dialog to ACK or end it in (RFC 3261 §12.1.2): not taken
    // for a retransmission of the call's 2xx either.
    let mut h = Harness::new();
    h.answer();
    let mut ok = Response::for_request(&h.invite_b, StatusCode::OK);
    ok.headers.push(
        HeaderName::Contact,
        Bytes::from_static(b"<sip:fork-c@127.0.0.1:5083>"),
    );
    let ok = roundtrip_response(&ok);
    assert!(ok.to().unwrap().tag().is_none());
    h.call.on_response(Leg::Outbound, ok, h.now, &mut h.out);
    assert!(h.take().is_empty());
    assert!(!h.call.is_finished());
}

#[test]
fn a_request_in_another_forks_dialog_gets_481_and_the_call_goes_on() {
    // Fork B, whose 2xx we ACKed and BYEd, sends a BYE of its own (crossing
    // ours) or a re-INVITE: not the call's dialog (RFC 3261 §12.2.2), even
    // though its Call-ID and To tag (ours) are the call's.
    let mut h = Harness::new();
    h.answer();
    h.fork_b_answers();
    h.take();
    h.to_tag_b = "fork-b";
    for method in ["BYE", "INVITE", "INFO"] {
        h.callee_in_dialog(method, 5);
        let out = h.take();
        assert_eq!(responses(&out, Leg::Outbound), vec![481], "{method}");
        assert_eq!(out.len(), 1, "{method}: {out:?}");
    }
    h.callee_in_dialog("ACK", 5);
    assert!(h.take().is_empty());
    assert!(!h.call.is_finished() && h.call.outcome().is_none());
    // The call's callee (fork A) still hangs up the call.
    h.to_tag_b = "callee-tag";
    h.callee_in_dialog("BYE", 6);
    let out = h.take();
    assert_eq!(responses(&out, Leg::Outbound), vec![200]);
    assert_eq!(requests(&out, Leg::Inbound).len(), 1, "BYE to the caller");
}

#[test]
fn a_flood_of_2xx_with_new_to_tags_starts_a_bounded_number_of_byes() {
    // Each BYE is a client transaction that lives 64*T1 and, over UDP, is
    // sent up to 11 times: one per 2xx with a tag never seen (or seen
    // beyond the forks the call keeps) would make a callee that sends 2xx
    // with ever new To tags (or a ninth fork's retransmissions) start as
    // many BYEs as it sends 2xx. At most one per fork the call keeps.
    let mut h = Harness::new();
    h.answer();
    let (mut acks, mut byes) = (0, 0);
    for round in 0..2 {
        for i in 0..20 {
            h.now += Duration::from_millis(10);
            h.fork_responds(
                200,
                &format!("flood-{i}"),
                &[(HeaderName::Contact, "<sip:flood@127.0.0.1:5090>")],
                "",
            );
            let out = h.take();
            assert!(
                responses(&out, Leg::Inbound).is_empty() && requests(&out, Leg::Inbound).is_empty(),
                "round {round}, fork {i}: {out:?}"
            );
            acks += ack_bytes(&out).len();
            byes += requests(&out, Leg::Outbound).len();
        }
    }
    assert_eq!(byes, 8, "BYEs for 40 2xx of 20 forks");
    // The forks the call keeps get their ACK again; the others none: a
    // UAS that gets no ACK ends its dialog itself (RFC 3261 §13.3.1.4),
    // with a BYE the call answers 481.
    assert_eq!(acks, 16, "ACKs for 40 2xx of 20 forks");
    assert!(!h.call.is_finished() && h.call.outcome().is_none());
}
