use bytes::Bytes;

use super::*;
use crate::sip::{parse_datagram, Limits, Message, StatusCode};

fn request(text: &str) -> Request {
    match parse_datagram(Bytes::copy_from_slice(text.as_bytes()), &Limits::default()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

fn reparse(r: &Request) -> Request {
    match parse_datagram(Message::Request(r.clone()).to_bytes(), &Limits::default()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 2 INVITE\r\n\
Contact: <sip:alice@client.atlanta.example.com>\r\n\
Content-Length: 0\r\n\r\n";

/// The id of the UAS dialog made from [`INVITE`] with our tag `ourtag`.
fn atlanta_uas_id() -> DialogId {
    DialogId {
        call_id: "3848276298220188511@atlanta.example.com".into(),
        local_tag: "ourtag".into(),
        remote_tag: "9fxced76sl".into(),
    }
}

#[test]
fn uas_dialog_takes_target_routes_and_tags_from_the_invite() {
    let mut d = Dialog::new_uas(&request(INVITE), ByteStr::from("ourtag")).unwrap();
    assert_eq!(d.id(), atlanta_uas_id());
    let bye = reparse(&d.new_request(Method::Bye));
    assert_eq!(bye.uri.to_string(), "sip:alice@client.atlanta.example.com");
    let routes: Vec<String> = bye
        .route()
        .unwrap()
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(
        routes,
        ["sip:p2.example.com;lr", "sip:p1.example.com;lr"],
        "UAS keeps Record-Route order"
    );
    assert_eq!(bye.from().unwrap().tag(), Some("ourtag"));
    assert_eq!(
        bye.from().unwrap().uri.to_string(),
        "sip:bob@biloxi.example.com"
    );
    assert_eq!(bye.to().unwrap().tag(), Some("9fxced76sl"));
    assert_eq!(bye.cseq().unwrap().seq, 1);
    assert_eq!(reparse(&d.new_request(Method::Info)).cseq().unwrap().seq, 2);
}

#[test]
fn remote_cseq_must_grow() {
    let mut d = Dialog::new_uas(&request(INVITE), ByteStr::from("ourtag")).unwrap();
    let bye = INVITE
        .replace("INVITE sip", "BYE sip")
        .replace("2 INVITE", "2 BYE");
    assert!(matches!(
        d.on_remote_request(&request(&bye)),
        Err(DialogError::CSeqOutOfOrder { got: 2, last: 2 })
    ));
    let bye3 = bye.replace("2 BYE", "3 BYE");
    assert!(d.on_remote_request(&request(&bye3)).is_ok());
}

#[test]
fn uac_dialog_is_early_on_180_and_confirmed_on_200_with_reversed_routes() {
    let target = Uri::parse("sip:bob@biloxi.example.com").unwrap();
    let to = Bytes::from_static(b"<sip:bob@biloxi.example.com>");
    let mut d = Dialog::new_uac(
        "c1@here".into(),
        "lt".into(),
        b"<sip:alice@here>",
        to,
        target,
        1,
    );
    assert_eq!(d.state(), DialogState::Initial);
    let invite = reparse(&d.request_with_seq(Method::Invite, 1));
    let mut ringing = Response::for_request(&invite, StatusCode::RINGING);
    ringing.set_to_tag("rt");
    ringing.headers.push(
        HeaderName::Contact,
        Bytes::from_static(b"<sip:bob@192.0.2.4>"),
    );
    d.on_uac_response(&ringing).unwrap();
    assert_eq!(d.state(), DialogState::Early);
    assert_eq!(d.remote_tag(), "rt");
    let mut ok = Response::for_request(&invite, StatusCode::OK);
    ok.set_to_tag("rt");
    ok.headers.push(
        HeaderName::Contact,
        Bytes::from_static(b"<sip:bob@192.0.2.5>"),
    );
    ok.headers.push(
        HeaderName::RecordRoute,
        Bytes::from_static(b"<sip:p1.example.com;lr>"),
    );
    ok.headers.push(
        HeaderName::RecordRoute,
        Bytes::from_static(b"<sip:p2.example.com;lr>"),
    );
    d.on_uac_response(&ok).unwrap();
    assert_eq!(d.state(), DialogState::Confirmed);
    let ack = reparse(&d.ack(1));
    assert_eq!(ack.uri.to_string(), "sip:bob@192.0.2.5");
    assert_eq!(ack.cseq().unwrap().seq, 1);
    assert_eq!(ack.cseq().unwrap().method, Method::Ack);
    let routes: Vec<String> = ack
        .route()
        .unwrap()
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(
        routes,
        ["sip:p2.example.com;lr", "sip:p1.example.com;lr"],
        "UAC reverses Record-Route"
    );
    assert_eq!(reparse(&d.new_request(Method::Bye)).cseq().unwrap().seq, 2);
}

#[test]
fn strict_route_goes_into_the_request_uri() {
    let invite = INVITE.replace(
        "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>",
        "Record-Route: <sip:strict.example.com>",
    );
    let mut d = Dialog::new_uas(&request(&invite), ByteStr::from("t")).unwrap();
    let bye = reparse(&d.new_request(Method::Bye));
    assert_eq!(bye.uri.to_string(), "sip:strict.example.com");
    let routes: Vec<String> = bye
        .route()
        .unwrap()
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(routes, ["sip:alice@client.atlanta.example.com"]);
}

#[test]
fn uas_dialog_takes_a_missing_from_tag_as_null() {
    let invite = INVITE.replace(";tag=9fxced76sl", "");
    let mut d = Dialog::new_uas(&request(&invite), ByteStr::from("t")).unwrap();
    assert_eq!(d.remote_tag(), "");
    let bye = reparse(&d.new_request(Method::Bye));
    assert_eq!(bye.to().unwrap().tag(), None);
}

#[test]
fn uac_dialog_follows_the_2xx_tag_and_contact_whatever_the_early_dialog_had() {
    let target = Uri::parse("sip:bob@biloxi.example.com").unwrap();
    let to = Bytes::from_static(b"<sip:bob@biloxi.example.com>");
    let mut d = Dialog::new_uac("c2@here".into(), "lt".into(), b"<sip:a@h>", to, target, 1);
    let invite = reparse(&d.request_with_seq(Method::Invite, 1));
    let answer = |status: StatusCode, tag: &str, contact: &'static [u8]| {
        let mut r = Response::for_request(&invite, status);
        r.set_to_tag(tag);
        r.headers
            .push(HeaderName::Contact, Bytes::from_static(contact));
        match parse_datagram(Message::Response(r).to_bytes(), &Limits::default()).unwrap() {
            Message::Response(r) => r,
            Message::Request(_) => unreachable!(),
        }
    };
    d.on_uac_response(&answer(StatusCode::RINGING, "early", b"<sip:b@192.0.2.4>"))
        .unwrap();
    // The same early dialog again (a 183): nothing changes.
    d.on_uac_response(&answer(
        StatusCode::SESSION_PROGRESS,
        "early",
        b"<sip:b@192.0.2.4>",
    ))
    .unwrap();
    assert_eq!((d.state(), d.remote_tag()), (DialogState::Early, "early"));
    // The 2xx comes from another branch of a fork: its tag and Contact win.
    d.on_uac_response(&answer(StatusCode::OK, "other", b"<sip:b@192.0.2.9>"))
        .unwrap();
    assert_eq!(d.state(), DialogState::Confirmed);
    let ack = reparse(&d.ack(1));
    assert_eq!(ack.to().unwrap().tag(), Some("other"));
    assert_eq!(ack.uri.to_string(), "sip:b@192.0.2.9");

    // Same To and Contact on 180 and 200: the target stays as parsed.
    let target = Uri::parse("sip:bob@biloxi.example.com").unwrap();
    let to = Bytes::from_static(b"<sip:bob@biloxi.example.com>");
    let mut d = Dialog::new_uac("c3@here".into(), "lt".into(), b"<sip:a@h>", to, target, 1);
    d.on_uac_response(&answer(StatusCode::RINGING, "t", b"<sip:b@192.0.2.4>"))
        .unwrap();
    d.on_uac_response(&answer(StatusCode::OK, "t", b"<sip:b@192.0.2.4>"))
        .unwrap();
    assert_eq!(d.state(), DialogState::Confirmed);
    let bye = reparse(&d.new_request(Method::Bye));
    assert_eq!(bye.uri.to_string(), "sip:b@192.0.2.4");
    assert_eq!(bye.to().unwrap().tag(), Some("t"));
}

#[test]
fn cseq_values_are_number_space_method() {
    for (seq, method, want) in [
        (0, Method::Ack, "0 ACK"),
        (7, Method::Invite, "7 INVITE"),
        (10, Method::Bye, "10 BYE"),
        (u32::MAX, Method::Cancel, "4294967295 CANCEL"),
    ] {
        assert_eq!(&cseq_value(seq, &method)[..], want.as_bytes());
    }
}

#[test]
fn uas_remote_target_is_parsed_on_use_with_the_from_uri_as_fallback() {
    // Parsed from the dialog's own copy of Contact each time it is needed.
    let d = Dialog::new_uas(&request(INVITE), ByteStr::from("ourtag")).unwrap();
    assert_eq!(
        d.remote_target().to_string(),
        "sip:alice@client.atlanta.example.com"
    );
    assert_eq!(d.remote_target(), d.remote_target());
    // A Contact that does not parse (the daemon's validator refuses such
    // requests before a dialog exists): the caller's From URI is the target.
    let bad = INVITE.replace(
        "Contact: <sip:alice@client.atlanta.example.com>",
        "Contact: <sip:alice@client.atlanta.example.com",
    );
    let d = Dialog::new_uas(&request(&bad), ByteStr::from("ourtag")).unwrap();
    let bye = reparse(&d.request_with_seq(Method::Bye, 1));
    assert_eq!(bye.uri.to_string(), "sip:alice@atlanta.example.com");
    // Without Contact the From URI is the target from the start.
    let none = INVITE.replace("Contact: <sip:alice@client.atlanta.example.com>\r\n", "");
    let d = Dialog::new_uas(&request(&none), ByteStr::from("ourtag")).unwrap();
    assert_eq!(
        d.remote_target().to_string(),
        "sip:alice@atlanta.example.com"
    );
}

#[test]
fn written_request_is_the_built_request_on_the_wire() {
    let strict = INVITE.replace(
        "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>",
        "Record-Route: <sip:strict.example.com>",
    );
    let no_routes = INVITE.replace(
        "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n",
        "",
    );
    let via = Bytes::from_static(b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKvpbx-1-o1-x;rport");
    let contact = Bytes::from_static(b"<sip:vpbx@192.0.2.1:5060>");
    let ct = Bytes::from_static(b"application/sdp");
    let sdp = Bytes::from_static(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n");
    for invite in [INVITE, &strict, &no_routes] {
        let d = Dialog::new_uas(&request(invite), ByteStr::from("ourtag")).unwrap();
        for (extra, body) in [
            (vec![(HeaderName::Contact, &contact)], Bytes::new()),
            (
                vec![
                    (HeaderName::Contact, &contact),
                    (HeaderName::ContentType, &ct),
                ],
                sdp.clone(),
            ),
        ] {
            for (method, seq) in [(Method::Ack, 2), (Method::Bye, 4_294_967_295)] {
                let mut built =
                    d.request_in(method.clone(), seq, Some(via.clone()), &mut BytesMut::new());
                for (name, value) in &extra {
                    built.headers.push(name.clone(), (*value).clone());
                }
                built.body = body.clone();
                let len = d.request_len(via.len(), &extra, &body);
                let mut out = BytesMut::with_capacity(len);
                d.write_request(&method, seq, |b| b.put_slice(&via), &extra, &body, &mut out);
                assert_eq!(
                    std::str::from_utf8(&out).unwrap(),
                    std::str::from_utf8(&Message::Request(built).to_bytes()).unwrap()
                );
                assert!(out.len() <= len, "{} > {len}", out.len());
            }
        }
    }
}

#[test]
fn route_values_are_written_once_and_sent_as_written() {
    let mut d = Dialog::new_uas(&request(INVITE), ByteStr::from("t")).unwrap();
    let (a, b) = (d.new_request(Method::Bye), d.new_request(Method::Info));
    let values =
        |r: &Request| -> Vec<Bytes> { r.headers.get_all(&HeaderName::Route).cloned().collect() };
    let (va, vb) = (values(&a), values(&b));
    assert_eq!(
        va,
        [&b"<sip:p2.example.com;lr>"[..], b"<sip:p1.example.com;lr>"]
    );
    // The same text each time, not formatted again: the requests share
    // the dialog's copies.
    for (x, y) in va.iter().zip(&vb) {
        assert_eq!(x.as_ptr(), y.as_ptr());
    }
    // As the addresses' own text form.
    let parsed: Vec<String> = reparse(&a)
        .route()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    let raw: Vec<&str> = va.iter().map(|v| std::str::from_utf8(v).unwrap()).collect();
    assert_eq!(parsed, raw);
}

#[test]
fn a_bare_contact_parses_as_the_full_reading_does() {
    for bare in [
        "<sip:bob@192.0.2.5>",
        "<sip:sipp@127.0.0.1:5080>",
        "<sip:bob@192.0.2.5:5080;transport=udp;lr>",
        "<sips:x@[2001:db8::1]:5061;transport=tcp>",
        "<sip:%61lice@host.example.com;maddr=192.0.2.9>",
        "<tel:+74951234567>",
    ] {
        let raw = Bytes::from(bare);
        assert_eq!(
            bare_contact_uri(&raw),
            first_contact_uri(&raw).unwrap(),
            "{bare}"
        );
        assert!(bare_contact_uri(&raw).is_some(), "{bare}");
    }
    for other in [
        "\"Bob\" <sip:bob@192.0.2.5>",
        "Bob <sip:bob@192.0.2.5>",
        "<sip:bob@192.0.2.5>;expires=60",
        "<sip:bob@192.0.2.5>, <sip:bob@192.0.2.6>",
        "<sip:bob@192.0.2.5?subject=x>",
        "sip:bob@192.0.2.5",
        "<>",
        "<sip:bob@192.0.2.5:99999>",
    ] {
        assert_eq!(bare_contact_uri(&Bytes::from(other)), None, "{other}");
    }
}

#[test]
fn uac_request_written_with_the_contact_as_given_is_the_built_one_on_the_wire() {
    let via = Bytes::from_static(b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKvpbx-1-o1-x;rport");
    let contact = Bytes::from_static(b"<sip:vpbx@192.0.2.1:5060>");
    for (callee_contact, bare) in [
        ("<sip:sipp@127.0.0.1:5080>", true),
        ("<sip:bob@192.0.2.5:5080;transport=udp>", true),
        ("\"Bob\" <sip:bob@192.0.2.5:5080>", false),
        ("<sip:bob@192.0.2.5>;expires=60", false),
    ] {
        for record_route in [
            None,
            Some("<sip:p1.example.com;lr>"),
            Some("<sip:strict.example.com>"),
        ] {
            let mut d = Dialog::new_uac(
                "c1@here".into(),
                "lt".into(),
                b"<sip:alice@here>",
                Bytes::from_static(b"<sip:bob@biloxi.example.com>"),
                Uri::parse("sip:bob@biloxi.example.com").unwrap(),
                1,
            );
            let invite = reparse(&d.request_with_seq(Method::Invite, 1));
            let mut ok = Response::for_request(&invite, StatusCode::OK);
            ok.set_to_tag("rt");
            ok.headers
                .push(HeaderName::Contact, Bytes::from(callee_contact));
            if let Some(rr) = record_route {
                ok.headers.push(HeaderName::RecordRoute, Bytes::from(rr));
            }
            d.on_uac_response(&ok).unwrap();
            assert_eq!(d.bare_contact, bare, "{callee_contact}");
            let full = first_contact_uri(&Bytes::from(callee_contact)).unwrap();
            assert_eq!(Some(d.remote_target()), full);
            let extra = [(HeaderName::Contact, &contact)];
            let body = Bytes::new();
            let mut built = d.request_in(Method::Ack, 1, Some(via.clone()), &mut BytesMut::new());
            built.headers.push(HeaderName::Contact, contact.clone());
            let mut out = BytesMut::new();
            d.write_request(
                &Method::Ack,
                1,
                |b| b.put_slice(&via),
                &extra,
                &body,
                &mut out,
            );
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                std::str::from_utf8(&Message::Request(built).to_bytes()).unwrap(),
                "{callee_contact} {record_route:?}"
            );
        }
    }
}

/// A UAC dialog of `sip:a@h` (our tag `lt`, CSeq 1) to `to`, with no
/// remote target of its own yet.
fn uac_from_a(call_id: &'static str, to: Bytes) -> Dialog {
    Dialog::new_uac_with(
        call_id.into(),
        "lt".into(),
        Bytes::from_static(b"<sip:a@h>;tag=lt"),
        to,
        None,
        1,
    )
}

#[test]
fn uac_dialog_without_a_target_reads_it_from_to_until_a_contact() {
    let to = Bytes::from_static(b"<sip:+74951234567@127.0.0.1:5080;transport=udp>");
    let mut d = uac_from_a("c4@here", to);
    assert_eq!(
        d.remote_target(),
        Uri::parse("sip:+74951234567@127.0.0.1:5080;transport=udp").unwrap()
    );
    let invite = reparse(&d.request_with_seq(Method::Invite, 1));
    assert_eq!(
        invite.uri.to_string(),
        "sip:+74951234567@127.0.0.1:5080;transport=udp"
    );
    let mut ok = Response::for_request(&invite, StatusCode::OK);
    ok.set_to_tag("rt");
    ok.headers.push(
        HeaderName::Contact,
        Bytes::from_static(b"<sip:callee@192.0.2.8:5070>"),
    );
    d.on_uac_response(&ok).unwrap();
    assert_eq!(d.remote_target().to_string(), "sip:callee@192.0.2.8:5070");
}

#[test]
fn a_dialog_is_one_text_and_offsets() {
    // Touched again, cold, by the call's BYE: its strings are ranges of
    // one text, the remote target is kept as text.
    let size = std::mem::size_of::<Dialog>();
    assert!(size <= 88, "Dialog is {size} bytes (was 392)");
}

/// A request `method` from the caller of [`INVITE`] in its dialog, with
/// CSeq `seq` and `contact` (if any).
fn in_dialog(method: &str, seq: u32, contact: Option<&str>) -> Request {
    let mut text = INVITE
        .replace("INVITE sip", &format!("{method} sip"))
        .replace("2 INVITE", &format!("{seq} {method}"))
        .replace(
            "To: Bob <sip:bob@biloxi.example.com>",
            "To: Bob <sip:bob@biloxi.example.com>;tag=ourtag",
        );
    text = match contact {
        Some(c) => text.replace("<sip:alice@client.atlanta.example.com>", c),
        None => text.replace("Contact: <sip:alice@client.atlanta.example.com>\r\n", ""),
    };
    request(&text)
}

#[test]
fn a_target_refresh_rewrites_the_target_and_keeps_every_other_piece() {
    let mut d = Dialog::new_uas(&request(INVITE), ByteStr::from("ourtag")).unwrap();
    let before = reparse(&d.new_request(Method::Info));
    // Longer, shorter, not bare, then a request that is no target refresh
    // and one without Contact: each piece stays where the others are read.
    for (seq, method, contact, target, bare) in [
        (
            3,
            "INVITE",
            Some("<sip:alice@a-much-longer-host-name.atlanta.example.com:5070;transport=tcp>"),
            "sip:alice@a-much-longer-host-name.atlanta.example.com:5070;transport=tcp",
            true,
        ),
        (4, "UPDATE", Some("<sip:a@h>"), "sip:a@h", true),
        (
            5,
            "INVITE",
            Some("\"Alice\" <sip:alice@192.0.2.7>;expires=60"),
            "sip:alice@192.0.2.7",
            false,
        ),
        (
            6,
            "INFO",
            Some("<sip:ignored@192.0.2.99>"),
            "sip:alice@192.0.2.7",
            false,
        ),
        (7, "INVITE", None, "sip:alice@192.0.2.7", false),
    ] {
        d.on_remote_request(&in_dialog(method, seq, contact))
            .unwrap();
        assert_eq!(d.remote_target().to_string(), target, "{method} {seq}");
        assert_eq!(d.bare_contact, bare, "{method} {seq}");
        assert_eq!(d.id(), atlanta_uas_id());
        let bye = reparse(&d.new_request(Method::Bye));
        assert_eq!(bye.uri.to_string(), target);
        for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
            assert_eq!(
                bye.headers.get(&name),
                before.headers.get(&name),
                "{name:?}"
            );
        }
        assert_eq!(bye.route().unwrap(), before.route().unwrap());
        // The ACK written as bytes carries the same target and fields.
        let mut out = BytesMut::new();
        let body = Bytes::new();
        d.write_request(
            &Method::Ack,
            1,
            |b| b.put_slice(b"SIP/2.0/UDP h;branch=z9hG4bK1"),
            &[],
            &body,
            &mut out,
        );
        let built = Message::Request(d.request_in(
            Method::Ack,
            1,
            Some(Bytes::from_static(b"SIP/2.0/UDP h;branch=z9hG4bK1")),
            &mut BytesMut::new(),
        ))
        .to_bytes();
        assert_eq!(&out[..], &built[..], "{method} {seq}");
    }
    // A malformed Contact in a refresh is an error and changes nothing.
    let bad = in_dialog("INVITE", 8, Some("<sip:alice@192.0.2.8"));
    assert!(d.on_remote_request(&bad).is_err());
    assert_eq!(d.remote_target().to_string(), "sip:alice@192.0.2.7");
}

#[test]
fn a_uac_dialogs_text_follows_each_response_that_changes_it() {
    let mut d = uac_from_a("c5@here", Bytes::from_static(b"<sip:b@192.0.2.4>"));
    assert_eq!(
        (d.call_id(), d.local_tag(), d.remote_tag()),
        ("c5@here", "lt", "")
    );
    let invite = reparse(&d.request_with_seq(Method::Invite, 1));
    let answer = |status: StatusCode, tag: &str, contact: &str| {
        let mut r = Response::for_request(&invite, status);
        r.set_to_tag(tag);
        r.headers
            .push(HeaderName::Contact, Bytes::from(contact.to_owned()));
        r
    };
    for (status, tag, contact) in [
        (
            StatusCode::RINGING,
            "a-long-early-tag",
            "<sip:callee@192.0.2.4:5080;transport=udp>",
        ),
        (StatusCode::SESSION_PROGRESS, "x", "<sip:c@h>"),
        (StatusCode::OK, "final", "<sip:callee@192.0.2.5>"),
    ] {
        d.on_uac_response(&answer(status, tag, contact)).unwrap();
        assert_eq!(
            (d.call_id(), d.local_tag(), d.remote_tag()),
            ("c5@here", "lt", tag)
        );
        assert_eq!(&d.local_header()[..], b"<sip:a@h>;tag=lt");
        assert_eq!(
            std::str::from_utf8(&d.remote_header()).unwrap(),
            format!("<sip:b@192.0.2.4>;tag={tag}")
        );
        assert_eq!(format!("<{}>", d.remote_target()), contact, "{status:?}");
    }
    let bye = reparse(&d.new_request(Method::Bye));
    assert_eq!(bye.uri.to_string(), "sip:callee@192.0.2.5");
    assert_eq!(bye.to().unwrap().tag(), Some("final"));
    assert_eq!(bye.call_id().unwrap(), "c5@here");
}

#[test]
fn a_2xx_whose_contact_or_record_route_does_not_parse_still_confirms_its_tag() {
    // Review finding (session 10): the remote tag and To of a 2xx were
    // skipped with a bad Contact, so our ACK and BYE left the tag out.
    for (name, value) in [
        (HeaderName::Contact, "<sip:callee@192.0.2.5:5060"),
        (HeaderName::RecordRoute, "<sip:proxy@192.0.2.9;lr"),
    ] {
        let mut d = uac_from_a("c6@here", Bytes::from_static(b"<sip:b@192.0.2.4>"));
        let invite = reparse(&d.request_with_seq(Method::Invite, 1));
        let mut ok = Response::for_request(&invite, StatusCode::OK);
        ok.set_to_tag("t1");
        ok.headers
            .push(name.clone(), Bytes::from_static(value.as_bytes()));
        assert!(d.on_uac_response(&ok).is_err(), "{name:?} reported");
        assert_eq!(d.state(), DialogState::Confirmed, "{name:?}");
        assert_eq!(d.remote_tag(), "t1", "{name:?}");
        // The bad header is taken as absent: the target stays the INVITE's.
        assert_eq!(d.remote_target().to_string(), "sip:b@192.0.2.4", "{name:?}");
        let bye = reparse(&d.new_request(Method::Bye));
        assert_eq!(bye.to().unwrap().tag(), Some("t1"), "{name:?}");
        assert!(bye.headers.get(&HeaderName::Route).is_none(), "{name:?}");
    }
}

/// A response to `invite` with To tag `tag` and `extra` header fields.
fn response_with(
    invite: &Request,
    status: StatusCode,
    tag: &str,
    extra: &[(HeaderName, &'static str)],
) -> Response {
    let mut r = Response::for_request(invite, status);
    r.set_to_tag(tag);
    for (name, value) in extra {
        r.headers
            .push(name.clone(), Bytes::from_static(value.as_bytes()));
    }
    match parse_datagram(Message::Response(r).to_bytes(), &Limits::default()).unwrap() {
        Message::Response(r) => r,
        Message::Request(_) => unreachable!(),
    }
}

#[test]
fn a_response_of_another_fork_keeps_nothing_of_the_early_dialogs_target() {
    // RFC 3261 §12.1.2: another To tag is another dialog. A fork's 2xx
    // (or 18x) without a usable Contact must not be sent requests at the
    // other fork's Contact; its target is its To URI, as before any
    // Contact.
    let to = Bytes::from_static(b"<sip:+74951234567@127.0.0.1:5080>");
    for status in [StatusCode::OK, StatusCode::SESSION_PROGRESS] {
        for contact in [None, Some("<sip:broken@>;;")] {
            let mut d = uac_from_a("c7@here", to.clone());
            let invite = reparse(&d.request_with_seq(Method::Invite, 1));
            d.on_uac_response(&response_with(
                &invite,
                StatusCode::RINGING,
                "fork-a",
                &[
                    (HeaderName::Contact, "<sip:fork-a@192.0.2.1>"),
                    (HeaderName::RecordRoute, "<sip:proxy-a@192.0.2.2;lr>"),
                ],
            ))
            .unwrap();
            assert_eq!(d.remote_target().to_string(), "sip:fork-a@192.0.2.1");
            let extra: Vec<(HeaderName, &'static str)> =
                contact.iter().map(|c| (HeaderName::Contact, *c)).collect();
            let result = d.on_uac_response(&response_with(&invite, status, "fork-b", &extra));
            assert_eq!(result.is_err(), contact.is_some(), "{status:?} {contact:?}");
            assert_eq!(d.remote_tag(), "fork-b");
            assert_eq!(
                d.remote_target().to_string(),
                "sip:+74951234567@127.0.0.1:5080",
                "{status:?} {contact:?}"
            );
            let req = reparse(&d.request_with_seq(Method::Bye, 2));
            assert_eq!(req.uri.to_string(), "sip:+74951234567@127.0.0.1:5080");
            assert!(req.headers.get(&HeaderName::Route).is_none());
            assert_eq!(req.to().unwrap().tag(), Some("fork-b"));
        }
    }
}

#[test]
fn another_forks_dialog_shares_our_side_and_nothing_of_the_remote_one() {
    let to = Bytes::from_static(b"<sip:+74951234567@127.0.0.1:5080>");
    let mut d = uac_from_a("c8@here", to);
    let invite = reparse(&d.request_with_seq(Method::Invite, 1));
    d.on_uac_response(&response_with(
        &invite,
        StatusCode::OK,
        "fork-a",
        &[
            (HeaderName::Contact, "<sip:fork-a@192.0.2.1>"),
            (HeaderName::RecordRoute, "<sip:proxy-a@192.0.2.2;lr>"),
        ],
    ))
    .unwrap();
    let mut b = d.for_other_fork();
    assert_eq!(b.state(), DialogState::Initial);
    b.on_uac_response(&response_with(
        &invite,
        StatusCode::OK,
        "fork-b",
        &[
            (HeaderName::RecordRoute, "<sip:proxy-b@192.0.2.3;lr>"),
            (HeaderName::Contact, "<sip:fork-b@192.0.2.4>"),
        ],
    ))
    .unwrap();
    assert_eq!(b.state(), DialogState::Confirmed);
    assert_eq!(
        b.id(),
        DialogId {
            call_id: "c8@here".into(),
            local_tag: "lt".into(),
            remote_tag: "fork-b".into(),
        }
    );
    let ack = reparse(&b.ack(1));
    assert_eq!(ack.uri.to_string(), "sip:fork-b@192.0.2.4");
    let routes = ack.route().unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].uri.to_string(), "sip:proxy-b@192.0.2.3;lr");
    assert_eq!(ack.from().unwrap().tag(), Some("lt"));
    // The call's dialog is untouched.
    assert_eq!(d.remote_tag(), "fork-a");
    assert_eq!(d.remote_target().to_string(), "sip:fork-a@192.0.2.1");
}
