//! A forking callee (RFC 3261 §12.1.2, §13.2.2.4; RFC 6026 §7.2): the test
//! UA plays a proxy in front of the external PBX that forked our INVITE,
//! so two branches answer it, each with its own To tag, Contact and
//! Record-Route. The first 2xx is the call's; the other is ACKed in its
//! own dialog and BYEd, its retransmission gets its own ACK again, a
//! request of its own gets 481, the caller sees nothing of it, and the call
//! and its CDR line are the first fork's alone.

use std::net::SocketAddr;

use vpbx::sip::{HeaderName, Method, Request};

use crate::calls::{
    assert_cdrs, in_dialog_ok, invite, recv_final_to, CallerDialog, Rig, Setup, CALL_WAIT, ROUTED,
};
use crate::ua::{response_to, UdpUa, SILENCE_WAIT};

/// The next request the callee gets, which must be a `method`.
fn next_request(callee: &UdpUa, method: Method, rig: &Rig) -> Request {
    let (req, _) = callee.recv_request(CALL_WAIT).unwrap_or_else(|| {
        panic!(
            "no {} reached the callee; vpbx:\n{}",
            method.as_str(),
            rig.daemon().stderr_text()
        )
    });
    assert_eq!(req.method, method, "{req:?}");
    req
}

fn header(req: &Request, name: HeaderName) -> String {
    let v = req.headers.get(&name).expect("header in the request");
    std::str::from_utf8(v).unwrap().trim().to_owned()
}

/// The request is in fork `tag`'s dialog: its To tag, its Contact as the
/// Request-URI, its Record-Route (if any) as Route.
fn assert_in_dialog_of(req: &Request, tag: &str, contact_uri: &str, route: Option<&str>) {
    assert_eq!(req.to().unwrap().tag(), Some(tag), "{req:?}");
    assert_eq!(req.uri.to_string(), contact_uri, "{req:?}");
    let routes: Vec<String> = req
        .route()
        .unwrap()
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(routes, route.into_iter().collect::<Vec<_>>(), "{req:?}");
}

#[test]
fn a_second_forks_2xx_is_acked_and_byed_in_its_own_dialog_and_the_call_stays_the_firsts() {
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let server = rig.daemon().addr("udp", false);
    let callee = UdpUa::bind(SocketAddr::from(([127, 0, 0, 1], rig.uas_port)), server);
    let caller = UdpUa::new(server);
    let local = callee.local();
    let (uri_a, uri_b) = (format!("sip:fork-a@{local}"), format!("sip:fork-b@{local}"));
    let route_b = format!("sip:proxy-b@{local};lr");
    let contact_a = format!("Contact: <{uri_a}>\r\n");
    let extra_b = format!("Record-Route: <{route_b}>\r\nContact: <{uri_b}>\r\n");

    caller.send(invite(ROUTED, &caller, 1).as_bytes());
    let inv = next_request(&callee, Method::Invite, &rig);
    let via = header(&inv, HeaderName::Via);
    // Both branches ring, then both answer, before the caller's ACK.
    for (status, tag, extra) in [
        ("180 Ringing", "fork-a", &contact_a),
        ("180 Ringing", "fork-b", &extra_b),
        ("200 OK", "fork-a", &contact_a),
        ("200 OK", "fork-b", &extra_b),
    ] {
        callee.send(response_to(&inv, status, &via, tag, extra).as_bytes());
    }

    // Fork B's 2xx: its own ACK (the INVITE's CSeq), then a BYE, in its
    // dialog.
    let ack_b = next_request(&callee, Method::Ack, &rig);
    assert_in_dialog_of(&ack_b, "fork-b", &uri_b, Some(&route_b));
    assert_eq!(ack_b.cseq().unwrap().seq, inv.cseq().unwrap().seq);
    let bye_b = next_request(&callee, Method::Bye, &rig);
    assert_in_dialog_of(&bye_b, "fork-b", &uri_b, Some(&route_b));
    assert_eq!(
        header(&bye_b, HeaderName::CallId),
        header(&inv, HeaderName::CallId)
    );

    // The caller gets one 200 (fork A's, under our tag) and nothing else.
    let ok = recv_final_to(&caller, "INVITE", CALL_WAIT).expect("the caller's 200");
    assert_eq!(ok.status.as_u16(), 200);
    let dialog = CallerDialog::of(&ok, 1);
    caller.send(dialog.request(&caller, "ACK", 1).as_bytes());
    let ack_a = next_request(&callee, Method::Ack, &rig);
    assert_in_dialog_of(&ack_a, "fork-a", &uri_a, None);

    // Fork B's 2xx again (our ACK "lost"): the same ACK again, no BYE.
    callee.send(response_to(&inv, "200 OK", &via, "fork-b", &extra_b).as_bytes());
    let again = next_request(&callee, Method::Ack, &rig);
    assert_in_dialog_of(&again, "fork-b", &uri_b, Some(&route_b));
    assert_eq!(
        header(&again, HeaderName::Via),
        header(&ack_b, HeaderName::Via),
        "the same ACK"
    );
    // Fork B answers its BYE, and sends one of its own (crossing ours):
    // not the call's dialog, 481 (RFC 3261 §12.2.2); nothing of it
    // reaches the caller.
    callee.send(in_dialog_ok(&bye_b).as_bytes());
    let own_bye = format!(
        "BYE {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKforkbbye\r\n\
         From: {to};tag=fork-b\r\n\
         To: {from}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 BYE\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        target = header(&inv, HeaderName::Contact)
            .trim_start_matches('<')
            .trim_end_matches('>'),
        to = header(&inv, HeaderName::To),
        from = header(&inv, HeaderName::From),
        call_id = header(&inv, HeaderName::CallId),
    );
    callee.send(own_bye.as_bytes());
    let refused = callee.recv(CALL_WAIT).expect("an answer to fork B's BYE");
    assert_eq!(refused.status.as_u16(), 481);
    assert_eq!(refused.cseq().unwrap().method, Method::Bye);
    assert!(
        callee.recv_request(SILENCE_WAIT).is_none(),
        "nothing more to the callee"
    );
    if let Some(r) = caller.recv(SILENCE_WAIT) {
        panic!(
            "the caller got {} {:?} from another fork",
            r.status.as_u16(),
            r.cseq().map(|c| c.method)
        );
    }

    // The call is fork A's: the caller's BYE goes to fork A and ends it.
    caller.send(dialog.request(&caller, "BYE", 2).as_bytes());
    let bye_a = next_request(&callee, Method::Bye, &rig);
    assert_in_dialog_of(&bye_a, "fork-a", &uri_a, None);
    assert_ne!(
        header(&bye_a, HeaderName::Via),
        header(&bye_b, HeaderName::Via)
    );
    callee.send(in_dialog_ok(&bye_a).as_bytes());
    let bye_ok = recv_final_to(&caller, "BYE", CALL_WAIT).expect("the caller's 200 to its BYE");
    assert_eq!(bye_ok.status.as_u16(), 200);
    // One CDR line, the answered call's.
    assert_cdrs(&rig.stop(), 1, "answered", 200);
}

/// A request of fork `tag` in its dialog with us (CSeq `seq`, Via branch
/// `branch`), built from our INVITE `inv`.
fn fork_request(
    inv: &Request,
    local: SocketAddr,
    method: &str,
    tag: &str,
    seq: u32,
    branch: &str,
) -> String {
    format!(
        "{method} {target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch={branch}\r\n\
         From: {to};tag={tag}\r\n\
         To: {from}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {seq} {method}\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        target = header(inv, HeaderName::Contact)
            .trim_start_matches('<')
            .trim_end_matches('>'),
        to = header(inv, HeaderName::To),
        from = header(inv, HeaderName::From),
        call_id = header(inv, HeaderName::CallId),
    )
}

#[test]
fn another_forks_request_with_the_cseq_of_one_of_the_callees_is_answered_on_its_own_transaction() {
    // The callee (fork A) sends INFO CSeq 7, relayed to the caller, who
    // has not answered yet; fork B, whose 2xx was ACKed and BYEd, sends an
    // INFO CSeq 7 of its own dialog. Its 481 (RFC 3261 §12.2.2) is the
    // answer to its INFO, not to fork A's: a 481 to fork A's request
    // would tell fork A that the call's dialog is gone (§12.2.1.2). The
    // caller's 200 then reaches fork A.
    let mut rig = Rig::start(&["udp:127.0.0.1:0"], Setup::default());
    let server = rig.daemon().addr("udp", false);
    let callee = UdpUa::bind(SocketAddr::from(([127, 0, 0, 1], rig.uas_port)), server);
    let caller = UdpUa::new(server);
    let local = callee.local();
    let contact_a = format!("Contact: <sip:fork-a@{local}>\r\n");
    let contact_b = format!("Contact: <sip:fork-b@{local}>\r\n");

    caller.send(invite(ROUTED, &caller, 1).as_bytes());
    let inv = next_request(&callee, Method::Invite, &rig);
    let via = header(&inv, HeaderName::Via);
    callee.send(response_to(&inv, "200 OK", &via, "fork-a", &contact_a).as_bytes());
    let ok = recv_final_to(&caller, "INVITE", CALL_WAIT).expect("the caller's 200");
    let dialog = CallerDialog::of(&ok, 1);
    caller.send(dialog.request(&caller, "ACK", 1).as_bytes());
    next_request(&callee, Method::Ack, &rig);
    callee.send(response_to(&inv, "200 OK", &via, "fork-b", &contact_b).as_bytes());
    next_request(&callee, Method::Ack, &rig);
    let bye_b = next_request(&callee, Method::Bye, &rig);
    callee.send(in_dialog_ok(&bye_b).as_bytes());

    callee.send(fork_request(&inv, local, "INFO", "fork-a", 7, "z9hG4bKforkainfo").as_bytes());
    let (relayed, _) = caller
        .recv_request(CALL_WAIT)
        .expect("fork A's INFO relayed to the caller");
    assert_eq!(relayed.method, Method::Info);
    callee.send(fork_request(&inv, local, "INFO", "fork-b", 7, "z9hG4bKforkbinfo").as_bytes());
    let refused = callee.recv(CALL_WAIT).expect("an answer to fork B's INFO");
    assert_eq!(refused.status.as_u16(), 481);
    assert!(
        header_of(&refused, HeaderName::Via).contains("z9hG4bKforkbinfo"),
        "{refused:?}"
    );
    // Fork A's INFO again (Timer E, the caller is slow): its transaction
    // still waits for the caller's answer, so nothing comes back; had the
    // 481 been given to fork A's transaction, its retransmission would get
    // that 481, and fork A would end the call (§12.2.1.2).
    callee.send(fork_request(&inv, local, "INFO", "fork-a", 7, "z9hG4bKforkainfo").as_bytes());
    if let Some(r) = callee.recv(SILENCE_WAIT) {
        panic!(
            "fork A's INFO again got {} {:?}",
            r.status.as_u16(),
            header_of(&r, HeaderName::Via)
        );
    }
    caller.send(in_dialog_ok(&relayed).as_bytes());
    let answered = callee
        .recv(CALL_WAIT)
        .expect("the caller's answer to fork A's INFO");
    assert_eq!(answered.status.as_u16(), 200);
    assert!(
        header_of(&answered, HeaderName::Via).contains("z9hG4bKforkainfo"),
        "{answered:?}"
    );

    caller.send(dialog.request(&caller, "BYE", 2).as_bytes());
    let bye_a = next_request(&callee, Method::Bye, &rig);
    callee.send(in_dialog_ok(&bye_a).as_bytes());
    recv_final_to(&caller, "BYE", CALL_WAIT).expect("the caller's 200 to its BYE");
    assert_cdrs(&rig.stop(), 1, "answered", 200);
}

fn header_of(r: &vpbx::sip::Response, name: HeaderName) -> String {
    let v = r.headers.get(&name).expect("header in the response");
    std::str::from_utf8(v).unwrap().trim().to_owned()
}
