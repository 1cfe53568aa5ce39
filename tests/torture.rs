//! RFC 4475 and RFC 5118 conformance of the SIP parser and validator, no
//! sockets. Driven by `tests/fixtures/*/EXPECTED.tsv` so that no fixture
//! is forgotten: every file must meet its verdict, and every file has its
//! own assertions on the values that make it tricky (valid ones) or on the
//! reason it is refused (invalid ones).

// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use vpbx::sip::{
    parse_datagram, validate_request_with, validate_response, Bytes, Contact, HeaderName, Host,
    Limits, Message, Method, ParseErrorKind, Policy, Request, Response, StatusCode, StreamParser,
    Transport, Uri,
};

/// What the daemon supports, as far as the fixtures need: no extensions,
/// bodies it understands, and SDP as what it answers with.
const POLICY: Policy<'static> = Policy {
    supported: &[],
    accept: Some(&["application/sdp", "multipart/mixed", "text/plain"]),
    produces: Some(&["application/sdp"]),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `-`: accept and process.
    Accept,
    /// `drop`: discard silently.
    Drop,
    /// A status code.
    Status(u16),
}

struct Case {
    dir: &'static str,
    file: String,
    verdict: String,
    answers: Vec<Answer>,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        let tsv = std::fs::read_to_string(fixtures_dir().join(dir).join("EXPECTED.tsv")).unwrap();
        for line in tsv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let cols: Vec<&str> = line.split('\t').collect();
            let answers = cols[3]
                .split('|')
                .map(|a| match a {
                    "-" => Answer::Accept,
                    "drop" => Answer::Drop,
                    n => Answer::Status(n.parse().unwrap()),
                })
                .collect();
            out.push(Case {
                dir,
                file: cols[0].to_string(),
                verdict: cols[2].to_string(),
                answers,
            });
        }
    }
    out
}

fn load(dir: &str, file: &str) -> Bytes {
    Bytes::from(std::fs::read(fixtures_dir().join(dir).join(file)).unwrap())
}

#[test]
fn every_fixture_meets_its_verdict() {
    let cases = cases();
    assert_eq!(cases.len(), 50 + 12, "EXPECTED.tsv rows");
    for case in &cases {
        // Every file in the table exists and every file on disk is in the table.
        let result = parse_datagram(load(case.dir, &case.file), &Limits::default());
        match case.verdict.as_str() {
            "valid" => {
                let msg = result.unwrap_or_else(|e| panic!("{}: valid but: {e}", case.file));
                check_valid_details(&case.file, &msg);
                match &msg {
                    Message::Request(r) => {
                        if let Err(rej) = validate_request_with(r, &POLICY) {
                            panic!("{}: valid but rejected: {rej}", case.file);
                        }
                        // 501 for an unknown method is the daemon's (UAS role) answer.
                        if case.answers == [Answer::Status(501)] {
                            assert!(matches!(r.method, Method::Other(_)), "{}", case.file);
                        } else {
                            assert_eq!(case.answers, [Answer::Accept], "{}", case.file);
                        }
                    }
                    Message::Response(r) => validate_response(r).unwrap(),
                }
            }
            "valid-but-semantic" => {
                let msg = result.unwrap_or_else(|e| panic!("{}: must parse but: {e}", case.file));
                check_semantic_details(&case.file, &msg);
                match &msg {
                    Message::Request(r) => match validate_request_with(r, &POLICY) {
                        Ok(()) => assert!(
                            case.answers.contains(&Answer::Accept),
                            "{}: accepted",
                            case.file
                        ),
                        Err(rej) => {
                            assert!(
                                case.answers.contains(&Answer::Status(rej.status.as_u16())),
                                "{}: got {rej}, want {:?}",
                                case.file,
                                case.answers
                            );
                            assert!(!rej.reason.is_empty());
                        }
                    },
                    // bcast: dropping depends on the role (see check_semantic_details).
                    Message::Response(r) => validate_response(r).unwrap(),
                }
            }
            "invalid" => {
                let why = match result {
                    Err(e) => {
                        match e.reply_context() {
                            // A request: answerable with 400.
                            Some(headers) => {
                                assert!(
                                    case.answers.contains(&Answer::Status(e.status().as_u16())),
                                    "{}",
                                    case.file
                                );
                                let resp = Response::for_headers(headers, e.status())
                                    .with_reason(e.reason_phrase());
                                assert!(resp.reason.contains(&e.kind().to_string()));
                            }
                            None => {
                                assert!(case.answers.contains(&Answer::Drop), "{}: {e}", case.file)
                            }
                        }
                        e.to_string()
                    }
                    Ok(Message::Request(r)) => match validate_request_with(&r, &POLICY) {
                        Ok(()) => panic!("{}: invalid but accepted", case.file),
                        Err(rej) => {
                            assert!(
                                case.answers.contains(&Answer::Status(rej.status.as_u16())),
                                "{}: got {rej}, want {:?}",
                                case.file,
                                case.answers
                            );
                            rej.reason
                        }
                    },
                    Ok(Message::Response(r)) => {
                        assert!(case.answers.contains(&Answer::Drop), "{}", case.file);
                        validate_response(&r).expect_err(&case.file).to_string()
                    }
                };
                let expected = invalid_reason(&case.file);
                assert!(
                    why.to_lowercase().contains(&expected.to_lowercase()),
                    "{}: reason {why:?} does not say {expected:?}",
                    case.file
                );
            }
            other => panic!("{}: unknown verdict {other}", case.file),
        }
    }
    for dir in ["rfc4475", "rfc5118"] {
        for entry in std::fs::read_dir(fixtures_dir().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".dat") || name.ends_with(".sip") {
                assert!(
                    cases.iter().any(|c| c.file == name),
                    "{name} missing from EXPECTED.tsv"
                );
            }
        }
    }
}

/// The words the refusal of each invalid message must contain.
fn invalid_reason(file: &str) -> &'static str {
    match file {
        "badinv01.dat" => "Via",
        "clerr.dat" => "Content-Length 9999 exceeds",
        "ncl.dat" => "invalid Content-Length",
        "scalar02.dat" => "CSeq",
        "scalarlg.dat" => "CSeq",
        "quotbal.dat" => "unterminated quoted",
        "ltgtruri.dat" => "Request-URI",
        "lwsruri.dat" => "white space in the Request-URI",
        "lwsstart.dat" => "more than one SP",
        "trws.dat" => "white space after SIP-Version",
        "escruri.dat" => "Request-URI carries header",
        "baddate.dat" => "Date",
        "regbadct.dat" => "must be enclosed in <>",
        "badaspec.dat" => "To header",
        "baddn.dat" => "not quoted",
        "mismatch01.dat" | "mismatch02.dat" => "CSeq method",
        "bigcode.dat" => "status code",
        "mcl01.dat" => "conflicting Content-Length",
        "test.dat" => "missing SIP-Version",
        "ipv6-bad.sip" => "Request-URI",
        other => panic!("no expected reason for {other}"),
    }
}

fn request(m: &Message) -> &Request {
    match m {
        Message::Request(r) => r,
        Message::Response(_) => panic!("expected a request"),
    }
}

fn response(m: &Message) -> &Response {
    match m {
        Message::Response(r) => r,
        Message::Request(_) => panic!("expected a response"),
    }
}

fn sip_host(uri: &Uri) -> &Host {
    &uri.as_sip().expect("sip uri").host
}

fn v6(s: &str) -> Host {
    Host::Ipv6(s.parse::<Ipv6Addr>().unwrap())
}

fn contacts(r: &Request) -> Vec<vpbx::sip::NameAddr> {
    match r.contacts().unwrap() {
        Some(Contact::Addrs(a)) => a,
        other => panic!("contacts: {other:?}"),
    }
}

fn check_valid_details(file: &str, m: &Message) {
    match file {
        "wsinv.dat" => {
            let r = request(m);
            assert_eq!(r.method, Method::Invite);
            let from = r.from().unwrap();
            assert_eq!(from.display_name_unescaped().unwrap(), r#"J Rosenberg \""#);
            assert_eq!(from.tag(), Some("98asjd8"));
            assert_eq!(r.to().unwrap().tag(), Some("1918181833n"));
            assert_eq!(r.max_forwards().unwrap(), Some(68));
            assert_eq!(r.cseq().unwrap().seq, 9);
            assert_eq!(r.cseq().unwrap().method, Method::Invite);
            let vias = r.via().unwrap();
            assert_eq!(vias.len(), 3);
            assert_eq!(vias[0].branch(), Some("390skdjuw"));
            assert_eq!(vias[1].transport, Transport::Tcp);
            assert_eq!(vias[1].host, Host::Domain("spindle.example.com".into()));
            assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
            assert_eq!(r.headers.get(&HeaderName::Subject).unwrap(), "");
            let fangled = r
                .headers
                .get(&HeaderName::parse(b"NewFangledHeader").unwrap())
                .unwrap();
            assert_eq!(fangled, "newfangled value continued newfangled value");
            let odd = r
                .headers
                .get(&HeaderName::parse(b"UnknownHeaderWithUnusualValue").unwrap())
                .unwrap();
            assert_eq!(odd, ";;,,;;,;");
            assert!(r.route().unwrap()[0].uri.as_sip().unwrap().lr());
            let c = contacts(r);
            assert_eq!(
                c[0].display_name_unescaped().unwrap(),
                r#"Quoted string """#
            );
            assert_eq!(c[0].params.value("newparam"), Some("newvalue"));
            assert!(c[0].params.contains("secondparam"));
            assert_eq!(c[0].q(), Some(0.33));
            assert_eq!(r.body.len(), 150);
            assert!(r.uri.as_sip().unwrap().params.contains("unknownparam"));
        }
        "intmeth.dat" => {
            let r = request(m);
            assert_eq!(
                r.method.as_str(),
                "!interesting-Method0123456789_*+`.%indeed'~"
            );
            assert_eq!(r.cseq().unwrap().method, r.method);
            let u = r.uri.as_sip().unwrap();
            assert_eq!(
                u.user.as_deref(),
                Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
            );
            assert_eq!(
                u.password.as_deref(),
                Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
            );
            let to = r.to().unwrap();
            assert_eq!(
                to.display_name_unescaped().unwrap(),
                "BEL:\u{7} NUL:\0 DEL:\u{7f}"
            );
            let from = r.from().unwrap();
            assert_eq!(
                from.display_name.as_deref(),
                Some("token1~` token2'+_ token3*%!.-")
            );
            assert_eq!(
                from.params.value("fromParam''~+*_!.-%"),
                Some("\"работающий\"")
            );
            assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
            assert_eq!(
                r.call_id().unwrap(),
                "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
            );
            assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK-.!%66*_+`'~"));
            assert_eq!(r.max_forwards().unwrap(), Some(255));
        }
        "esc01.dat" => {
            let r = request(m);
            let u = r.uri.as_sip().unwrap();
            assert_eq!(u.user_unescaped().unwrap(), b"sips:user@example.com");
            assert_eq!(u.host, Host::Domain("example.net".into()));
            let to = r.to().unwrap();
            assert_eq!(to.uri.as_sip().unwrap().user_unescaped().unwrap(), b"user");
            let from = r.from().unwrap();
            assert_eq!(
                from.uri.as_sip().unwrap().user_unescaped().unwrap(),
                b"I have spaces"
            );
            let c = contacts(r);
            let cu = c[0].uri.as_sip().unwrap();
            assert_eq!(cu.user_unescaped().unwrap(), b"caller");
            let (name, value) = cu.params.iter().nth(1).unwrap();
            assert_eq!(&*vpbx::sip::unescape(name.as_bytes()), b"name");
            assert_eq!(
                &*vpbx::sip::unescape(value.unwrap().as_bytes()),
                b"value%41"
            );
            assert_eq!(
                &*vpbx::sip::unescape(cu.params.iter().next().unwrap().0.as_bytes()),
                b"lr"
            );
            assert!(r
                .content_type()
                .unwrap()
                .unwrap()
                .matches("application/sdp"));
            assert_eq!(r.body.len(), 150);
        }
        "escnull.dat" => {
            let r = request(m);
            let aor = r
                .to()
                .unwrap()
                .uri
                .as_sip()
                .unwrap()
                .user_unescaped()
                .unwrap();
            assert_eq!(aor, b"null-\0-null");
            let c = contacts(r);
            assert_eq!(c.len(), 2);
            assert_eq!(c[0].uri.as_sip().unwrap().user_unescaped().unwrap(), b"\0");
            assert_eq!(
                c[1].uri.as_sip().unwrap().user_unescaped().unwrap(),
                b"\0\0"
            );
            assert_ne!(c[0].uri, c[1].uri);
        }
        "esc02.dat" => {
            let r = request(m);
            assert_eq!(r.method, Method::Other("RE%47IST%45R".into()));
            assert_ne!(r.method, Method::Register);
            assert_eq!(r.to().unwrap().display_name.as_deref(), Some("%Z%45"));
            assert_eq!(contacts(r).len(), 2);
            assert_eq!(
                r.headers
                    .get_all(&HeaderName::parse(b"C%6Fntact").unwrap())
                    .count(),
                1
            );
            assert_eq!(r.top_via().unwrap().branch(), Some("z9hG4bK209%fzsnel234"));
        }
        "lwsdisp.dat" => {
            let from = request(m).from().unwrap();
            assert_eq!(from.display_name.as_deref(), Some("caller"));
            assert_eq!(from.tag(), Some("323"));
        }
        "longreq.dat" => {
            let r = request(m);
            assert_eq!(r.via().unwrap().len(), 34);
            let to = r.to().unwrap();
            assert!(to
                .display_name
                .as_deref()
                .unwrap()
                .contains("extremeextreme"));
            let tu = to.uri.as_sip().unwrap();
            assert_eq!(tu.port, Some(6000));
            assert_eq!(tu.params.len(), 3);
            assert!(r.from().unwrap().tag().unwrap().len() > 100);
            assert!(r.call_id().unwrap().len() > 100);
        }
        "dblreq.dat" => {
            let r = request(m);
            assert_eq!(r.method, Method::Register);
            assert!(r.body.is_empty());
            assert_eq!(
                r.call_id().unwrap(),
                "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
            );
            // The trailing INVITE-looking octets are not part of the message.
            assert!(!m.to_bytes().windows(6).any(|w| w == b"INVITE"));
        }
        "semiuri.dat" => {
            let r = request(m);
            let u = r.uri.as_sip().unwrap();
            assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
            assert_eq!(u.user_unescaped().unwrap(), b"user;par=u@example.net");
            assert!(u.params.is_empty());
            assert_eq!(r.accept().unwrap().unwrap().len(), 6);
        }
        "transports.dat" => {
            let t: Vec<Transport> = request(m)
                .via()
                .unwrap()
                .into_iter()
                .map(|v| v.transport)
                .collect();
            assert_eq!(
                t,
                [
                    Transport::Udp,
                    Transport::Sctp,
                    Transport::Tls,
                    Transport::Other("UNKNOWN".into()),
                    Transport::Tcp
                ]
            );
        }
        "mpart01.dat" => {
            let r = request(m);
            assert_eq!(r.method, Method::Message);
            assert_eq!(r.body.len(), 553);
            assert!(r.body.contains(&0));
            let ct = r.content_type().unwrap().unwrap();
            assert!(ct.matches("multipart/mixed"));
            assert_eq!(ct.params.value("boundary"), Some("7a9cbec02ceef655"));
            assert_eq!(
                r.headers
                    .get(&HeaderName::parse(b"y").unwrap())
                    .map(|v| v.len() > 100),
                Some(true)
            );
        }
        "unreason.dat" => {
            let r = response(m);
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(
                &*r.reason,
                "= 2**3 * 5**2 но сто девяносто девять - простое"
            );
            assert_eq!(r.body.len(), 154);
        }
        "noreason.dat" => {
            let r = response(m);
            assert_eq!(r.status, StatusCode::TRYING);
            assert_eq!(&*r.reason, "");
        }
        "zeromf.dat" => assert_eq!(request(m).max_forwards().unwrap(), Some(0)),
        "cparam01.dat" => {
            let c = contacts(request(m));
            assert!(c[0].params.contains("unknownparam"));
            assert!(c[0].uri.as_sip().unwrap().params.is_empty());
            assert_eq!(
                c[0].uri.as_sip().unwrap().user.as_deref(),
                Some("+19725552222")
            );
        }
        "cparam02.dat" => {
            let c = contacts(request(m));
            assert!(c[0].params.is_empty());
            assert!(c[0].uri.as_sip().unwrap().params.contains("unknownparam"));
        }
        "regescrt.dat" => {
            let c = contacts(request(m));
            let u = c[0].uri.as_sip().unwrap();
            assert_eq!(u.headers.value("Route"), Some("%3Csip:sip.example.com%3E"));
            assert_eq!(
                &*vpbx::sip::unescape(b"%3Csip:sip.example.com%3E"),
                b"<sip:sip.example.com>"
            );
        }
        "inv2543.dat" => {
            let r = request(m);
            assert_eq!(r.top_via().unwrap().branch(), None);
            assert_eq!(r.from().unwrap().tag(), None);
            assert_eq!(r.max_forwards().unwrap(), None);
            assert_eq!(r.content_length().unwrap(), None);
            assert_eq!(r.body.len(), 105);
            assert_eq!(r.to().unwrap().params.value("user"), Some("phone"));
        }
        "ipv6-good.sip" => {
            let r = request(m);
            assert_eq!(sip_host(&r.uri), &v6("2001:db8::10"));
            assert_eq!(r.top_via().unwrap().host, v6("2001:db8::9:1"));
            assert_eq!(sip_host(&contacts(r)[0].uri), &v6("2001:db8::1"));
        }
        "port-ambiguous.sip" => {
            let u = request(m).uri.as_sip().unwrap();
            assert_eq!(u.host, v6("2001:db8::10:5070"));
            assert_eq!(u.port, None);
        }
        "port-unambiguous.sip" => {
            let u = request(m).uri.as_sip().unwrap();
            assert_eq!(u.host, v6("2001:db8::10"));
            assert_eq!(u.port, Some(5070));
        }
        "via-received-param-with-delim.sip" | "via-received-param-no-delim.sip" => {
            let via = request(m).top_via().unwrap();
            assert_eq!(via.host, v6("2001:db8::9:1"));
            assert_eq!(
                via.received_ip(),
                Some(IpAddr::V6("2001:db8::9:255".parse().unwrap()))
            );
        }
        "ipv6-in-sdp.sip" => {
            let r = request(m);
            assert_eq!(r.top_via().unwrap().host, v6("2001:db8::20"));
            assert_eq!(r.body.len(), 251);
            assert!(r.body.windows(21).any(|w| w == b"c=IN IP6 2001:db8::20"));
        }
        "mult-ip-in-header.sip" => {
            let vias = request(m).via().unwrap();
            assert_eq!(vias.len(), 3);
            assert_eq!(
                (vias[0].host.clone(), vias[0].port),
                (v6("2001:db8::9:1"), Some(6050))
            );
            assert_eq!(vias[1].host, Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1)));
            assert_eq!(vias[2].host, v6("2001:db8::9:255"));
            assert_eq!(vias[2].transport, Transport::Tcp);
            assert_eq!(
                vias[2].received_ip(),
                Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200)))
            );
        }
        "mult-ip-in-sdp.sip" => {
            let r = request(m);
            assert_eq!(r.body.len(), 189);
            assert_eq!(sip_host(&r.uri), &v6("2001:db8::10"));
        }
        "ipv4-mapped-ipv6.sip" => {
            let r = request(m);
            let vias = r.via().unwrap();
            assert_eq!(
                (vias[0].host.clone(), vias[0].port),
                (v6("::ffff:192.0.2.10"), Some(19823))
            );
            assert_eq!(vias[1].host, v6("::ffff:192.0.2.2"));
            let c = contacts(r);
            assert_eq!(c[0].display_name.as_deref(), Some("T. desk phone"));
            assert_eq!(sip_host(&c[0].uri), &v6("::ffff:192.0.2.2"));
            assert_eq!(r.body.len(), 245);
        }
        "ipv6-bug-abnf-3-colons.sip" | "ipv6-correct-abnf-2-colons.sip" => {
            let r = request(m);
            assert_eq!(sip_host(&r.uri), &v6("2001:db8::192.0.2.1"));
            assert_eq!(sip_host(&r.to().unwrap().uri), &v6("2001:db8::192.0.2.1"));
            // Re-serialized with two colons (RFC 5118 §4.10).
            assert_eq!(r.uri.to_string(), "sip:user@[2001:db8::c000:201]");
        }
        other => panic!("no detail assertions for valid fixture {other}"),
    }
}

fn check_semantic_details(file: &str, m: &Message) {
    match file {
        "badvers.dat" => {
            let r = request(m);
            assert_eq!((r.version.major, r.version.minor), (7, 0));
            assert_eq!(r.top_via().unwrap().version.major, 7);
        }
        "badbranch.dat" => assert_eq!(request(m).top_via().unwrap().branch(), Some("z9hG4bK")),
        "insuf.dat" => {
            let r = request(m);
            assert!(r.call_id().is_err() && r.from().is_err() && r.to().is_err());
            assert!(r.max_forwards().unwrap().is_none());
        }
        "unkscm.dat" => {
            let r = request(m);
            assert!(
                matches!(&r.uri, Uri::Other { scheme, rest } if scheme == "nobodyKnowsThisScheme" && rest == "totallyopaquecontent")
            );
        }
        "novelsc.dat" => assert_eq!(request(m).uri.scheme(), "soap.beep"),
        "unksm2.dat" => {
            let r = request(m);
            assert_eq!(r.to().unwrap().uri.scheme(), "isbn");
            assert_eq!(r.from().unwrap().uri.to_string(), "http://www.example.com");
            assert_eq!(contacts(r)[0].uri.scheme(), "name");
        }
        "bext01.dat" => {
            let r = request(m);
            assert_eq!(
                r.require().unwrap(),
                ["nothingSupportsThis", "nothingSupportsThisEither"]
            );
            assert_eq!(r.proxy_require().unwrap().len(), 2);
            let rej = validate_request_with(r, &POLICY).unwrap_err();
            assert_eq!(rej.headers[0].0, HeaderName::Unsupported);
            assert_eq!(
                rej.headers[0].1,
                "nothingSupportsThis, nothingSupportsThisEither"
            );
            let ok = Policy {
                supported: &["nothingSupportsThis", "nothingSupportsThisEither"],
                ..POLICY
            };
            assert!(validate_request_with(r, &ok).is_ok());
        }
        "invut.dat" => {
            let r = request(m);
            assert!(r
                .content_type()
                .unwrap()
                .unwrap()
                .matches("application/unknownformat"));
            let rej = validate_request_with(r, &POLICY).unwrap_err();
            assert_eq!(rej.headers[0].0, HeaderName::Accept);
        }
        "regaut01.dat" => {
            let creds = request(m).authorization().unwrap();
            assert_eq!(creds[0].scheme, "NoOneKnowsThisScheme");
            assert_eq!(creds[0].param("opaque-data").unwrap(), "here");
        }
        "multi01.dat" => {
            let r = request(m);
            assert!(
                r.call_id().is_err() && r.to().is_err() && r.from().is_err() && r.cseq().is_err()
            );
            assert!(r.max_forwards().is_err());
        }
        "bcast.dat" => {
            // The broadcast check is the daemon's: an endpoint drops a
            // response whose top Via is not its own; a proxy never forwards
            // to 255.255.255.255.
            let vias = response(m).via().unwrap();
            assert_eq!(vias[1].host, Host::Ipv4(Ipv4Addr::BROADCAST));
        }
        "sdp01.dat" => {
            let r = request(m);
            assert!(r.accept().unwrap().unwrap()[0].matches("text/nobodyKnowsThis"));
            assert!(r
                .content_type()
                .unwrap()
                .unwrap()
                .matches("application/sdp"));
        }
        other => panic!("no detail assertions for semantic fixture {other}"),
    }
}

/// The same octets over TCP (a stream fed in small chunks) give the same
/// message as over UDP, for every valid fixture that carries a Content-Length.
#[test]
fn stream_framing_matches_datagram_parsing() {
    for case in cases().iter().filter(|c| c.verdict == "valid") {
        let data = load(case.dir, &case.file);
        let udp = parse_datagram(data.clone(), &Limits::default()).unwrap();
        if udp.headers().get(&HeaderName::ContentLength).is_none() {
            let mut p = StreamParser::default();
            p.feed(&data);
            assert_eq!(
                p.next_message().unwrap_err().kind(),
                &ParseErrorKind::MissingContentLength,
                "{}",
                case.file
            );
            continue;
        }
        for chunk in [1, 7, 512] {
            let mut p = StreamParser::default();
            let mut got = None;
            for piece in data.chunks(chunk) {
                p.feed(piece);
                if got.is_none() {
                    got = p.next_message().unwrap();
                }
            }
            assert_eq!(
                got.as_ref(),
                Some(&udp),
                "{} in chunks of {chunk}",
                case.file
            );
        }
    }
}

/// Every parsable fixture survives write → parse unchanged (after the
/// first write fixes Content-Length and canonical names).
#[test]
fn fixtures_round_trip_through_the_writer() {
    for case in cases() {
        let Ok(m) = parse_datagram(load(case.dir, &case.file), &Limits::default()) else {
            continue;
        };
        let once = parse_datagram(m.to_bytes(), &Limits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", case.file));
        let twice = parse_datagram(once.to_bytes(), &Limits::default()).unwrap();
        assert_eq!(once, twice, "{}", case.file);
        assert_eq!(once.body(), m.body(), "{}", case.file);
        if m.headers().get_all(&HeaderName::ContentLength).count() == 1 {
            assert_eq!(once, m, "{}", case.file);
        }
    }
}

/// A request whose framing is broken still yields the headers needed for a
/// 400 (RFC 4475 §3.1.2.2 clerr).
#[test]
fn broken_request_yields_a_400_with_its_transaction_headers() {
    let e = parse_datagram(load("rfc4475", "clerr.dat"), &Limits::default()).unwrap_err();
    assert_eq!(
        e.kind(),
        &ParseErrorKind::TruncatedBody {
            expected: 9999,
            available: 154
        }
    );
    let mut resp = Response::for_headers(e.reply_context().unwrap(), e.status())
        .with_reason(e.reason_phrase());
    resp.set_to_tag("srv1");
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(resp.top_via().is_ok() && resp.call_id().is_ok() && resp.cseq().is_ok());
    assert_eq!(resp.to().unwrap().tag(), Some("srv1"));
    assert!(resp.reason.starts_with("Bad Request (Content-Length 9999"));
}
