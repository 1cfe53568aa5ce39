//! Property tests: the parser never panics on arbitrary or mutated input,
//! and generated messages survive write → parse unchanged.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

/// Exercises every typed accessor and the validator, so that panics hidden
/// in lazily parsed values are found too.
fn poke(m: &Message) {
    let h = m.headers();
    typed_values_agree(h);
    let _ = (
        h.via(),
        h.top_via(),
        h.from(),
        h.to(),
        h.call_id(),
        h.cseq(),
        h.max_forwards(),
    );
    let _ = (
        h.contacts(),
        h.route(),
        h.record_route(),
        h.content_length(),
        h.content_type(),
        h.accept(),
    );
    let _ = (
        h.expires(),
        h.min_expires(),
        h.www_authenticate(),
        h.proxy_authenticate(),
    );
    let _ = (
        h.authorization(),
        h.proxy_authorization(),
        h.allow(),
        h.supported(),
        h.require(),
    );
    let _ = (h.proxy_require(), h.unsupported(), h.rseq(), h.rack());
    if let Ok(vias) = h.via() {
        for v in vias {
            let _ = (v.to_string(), v.received_ip(), v.rport(), v.ttl());
        }
    }
    if let Ok(f) = h.from() {
        let _ = (
            f.to_string(),
            f.display_name_unescaped(),
            f.q(),
            f.expires(),
        );
        if let Some(u) = f.uri.as_sip() {
            let _ = u.user_unescaped();
        }
    }
    match m {
        Message::Request(r) => {
            let policy = Policy {
                supported: &["100rel"],
                accept: Some(&["application/sdp"]),
                produces: Some(&["application/sdp"]),
            };
            let _ = validate_request_with(r, &policy);
            let mut resp = Response::for_request(r, StatusCode::OK);
            resp.set_to_tag("x");
            let _ = r.uri.to_string();
        }
        Message::Response(r) => {
            let _ = validate_response(r);
        }
    }
    // Whatever parsed can be written, and the written form parses.
    let again = parse_datagram(m.to_bytes(), &Limits::default());
    if let Ok(again) = again {
        let _ = again.to_bytes();
    }
}

/// The values kept with the headers are those a fresh parse gives, and
/// the checks that collect nothing give the verdicts of the accessors that
/// collect.
fn typed_values_agree(h: &Headers) {
    let mut seen = Vec::new();
    let each = h.for_each_via(|v| seen.push(v.clone())).map(|()| seen);
    assert_eq!(each, h.via());
    assert_eq!(h.top_via_ref().cloned(), h.parse_top_via().map(|(v, _)| v));
    assert_eq!(h.top_via(), h.parse_top_via().map(|(v, _)| v));
    assert_eq!(h.from_ref().cloned(), h.parse_from());
    assert_eq!(h.to(), h.parse_to());
    assert_eq!(h.to_ref().cloned(), h.parse_to());
    assert_eq!(h.to(), h.parse_to());
    assert_eq!(h.cseq(), h.parse_cseq());
    assert_eq!(h.check_contacts(), h.contacts().map(|_| ()));
    assert_eq!(h.check_route(), h.route().map(|_| ()));
    // The validator's one pass over the list finds what the per-field
    // lookups find.
    let f = h.find_for_validation();
    for (single, name) in [
        (f.from, HeaderName::From),
        (f.to, HeaderName::To),
        (f.call_id, HeaderName::CallId),
        (f.cseq, HeaderName::CSeq),
        (f.max_forwards, HeaderName::MaxForwards),
        (f.content_type, HeaderName::ContentType),
        (f.expires, HeaderName::Expires),
    ] {
        assert_eq!(single.get(name.clone()), h.get_single(&name));
    }
    assert_eq!(f.date, h.get(&HeaderName::Date));
    if let Ok(Some(v)) = h.get_single(&HeaderName::CallId) {
        assert_eq!(Headers::check_call_id(v), h.call_id().map(|_| ()));
    }
    for (present, name) in [
        (f.contact, HeaderName::Contact),
        (f.route, HeaderName::Route),
        (f.require, HeaderName::Require),
        (f.proxy_require, HeaderName::ProxyRequire),
        (f.accept, HeaderName::Accept),
    ] {
        assert_eq!(present, h.contains(&name));
    }
    // A clone starts without the cached values and reads the same.
    let c = h.clone();
    assert_eq!(&c, h);
    assert_eq!(c.from(), h.from());
    assert_eq!(c.top_via(), h.top_via());
}

fn fixtures() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if matches!(p.extension().and_then(|x| x.to_str()), Some("dat" | "sip")) {
                if let Ok(b) = std::fs::read(&p) {
                    out.push(b);
                }
            }
        }
    }
    out.sort();
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            prop::sample::select(b"\r\n :;,<>\"\\[]@%=/0".to_vec())
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    if buf.is_empty() {
        return;
    }
    let n = buf.len();
    match *m {
        Mutation::Flip(i, b) => buf[i % n] = b,
        Mutation::Insert(i, b) => buf.insert(i % (n + 1), b),
        Mutation::Delete(i) => {
            buf.remove(i % n);
        }
        Mutation::Truncate(i) => buf.truncate(i % n),
        Mutation::Duplicate(i, len) => {
            let s = i % n;
            let e = (s + len).min(n);
            let piece = buf[s..e].to_vec();
            buf.splice(s..s, piece);
        }
    }
}

fn stream_parse_all(data: &[u8], chunk: usize) {
    let mut p = StreamParser::new(Limits {
        max_message_size: 4096,
        ..Limits::default()
    });
    for piece in data.chunks(chunk.max(1)) {
        p.feed(piece);
        loop {
            match p.next_message() {
                Ok(Some(m)) => poke(&m),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(p.buffered() <= 4096 + chunk.max(1));
    }
}

// --- generators for the round trip -------------------------------------

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!%*_+`'~.-]{1,12}"
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9]{0,8}){0,3}".prop_map(|d| Host::Domain(d.into())),
        any::<[u8; 4]>().prop_map(|o| Host::Ipv4(o.into())),
        any::<[u16; 8]>().prop_map(|s| Host::Ipv6(s.into())),
    ]
}

fn params(name: &'static str) -> impl Strategy<Value = Params> {
    prop::collection::vec((name, prop::option::of("[a-zA-Z0-9.-]{1,10}")), 0..4).prop_map(|v| {
        let mut p = Params::new();
        for (n, val) in v {
            if !p.contains(&n) {
                p.set(ByteStr::from(n), val.map(ByteStr::from));
            }
        }
        p
    })
}

fn uri() -> impl Strategy<Value = Uri> {
    prop_oneof![
        4 => (any::<bool>(), prop::option::of("[a-zA-Z0-9_.!~*'()&=+$,;?/-]{1,12}"), host(), prop::option::of(any::<u16>()), params("[a-z][a-z0-9-]{0,8}"))
            .prop_map(|(secure, user, host, port, params)| {
                let mut u = SipUri::new(host);
                u.secure = secure;
                u.user = user.map(ByteStr::from);
                u.port = port;
                u.params = params;
                Uri::Sip(u)
            }),
        1 => ("\\+?[0-9]{1,15}", params("[a-z][a-z-]{0,8}")).prop_map(|(n, params)| Uri::Tel(TelUri { number: n.into(), params })),
        1 => ("[a-z][a-z0-9+.-]{0,8}", "[a-zA-Z0-9/:.?=&-]{1,20}").prop_filter_map("known scheme", |(s, r)| {
            (!matches!(s.as_str(), "sip" | "sips" | "tel")).then(|| Uri::Other { scheme: s.into(), rest: r.into() })
        }),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        prop::sample::select(NAMED_METHODS.to_vec()),
        token().prop_map(|t| Method::parse(t.as_bytes()).unwrap_or(Method::Invite)),
    ]
}

/// Header values as the parser stores them: no CR/LF, trimmed.
fn header_value() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,30}[!-~])?|"
}

fn headers(body_len: usize) -> impl Strategy<Value = Headers> {
    (
        prop::collection::vec(
            (host(), prop::option::of(any::<u16>()), "[a-zA-Z0-9]{1,10}"),
            1..4,
        ),
        uri(),
        uri(),
        "[a-zA-Z0-9]{1,8}",
        any::<u32>(),
        method(),
        prop::collection::vec(("X-[A-Za-z0-9-]{1,10}", header_value()), 0..5),
    )
        .prop_map(move |(vias, from, to, tag, seq, m, ext)| {
            let mut h = Headers::new();
            for (host, port, branch) in vias {
                let via =
                    Via::new(Transport::Udp, host, port).with_branch(format!("z9hG4bK{branch}"));
                h.push(HeaderName::Via, via.to_string());
            }
            let mut f = NameAddr::new(from);
            f.set_tag(ByteStr::from(tag));
            h.push(HeaderName::From, f.to_string());
            h.push(HeaderName::To, NameAddr::new(to).to_string());
            h.push(HeaderName::CallId, "abc@host");
            h.push(HeaderName::CSeq, CSeq { seq, method: m }.to_string());
            for (n, v) in ext {
                h.push(
                    HeaderName::parse(n.as_bytes()).unwrap_or(HeaderName::Subject),
                    v,
                );
            }
            h.push(HeaderName::ContentLength, body_len.to_string());
            h
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop::collection::vec(any::<u8>(), 0..200).prop_flat_map(|body| {
        let body = Bytes::from(body);
        let n = body.len();
        prop_oneof![
            (method(), uri(), headers(n), Just(body.clone())).prop_map(
                |(method, uri, headers, body)| {
                    let mut r = Request::new(method, uri);
                    r.headers = headers;
                    r.body = body;
                    Message::Request(r)
                }
            ),
            (100u16..700, "[^\r\n\u{0}]{0,20}", headers(n), Just(body)).prop_map(
                |(code, reason, headers, body)| {
                    let mut r = Response::new(StatusCode::new(code).unwrap_or(StatusCode::OK))
                        .with_reason(reason);
                    r.headers = headers;
                    r.body = body;
                    Message::Response(r)
                }
            ),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600), chunk in 1usize..64) {
        if let Ok(m) = parse_datagram(Bytes::from(data.clone()), &Limits::default()) {
            poke(&m);
        }
        stream_parse_all(&data, chunk);
    }

    #[test]
    fn sip_shaped_bytes_never_panic(data in "(INVITE|SIP/2\\.0|[A-Za-z:;,<>@\"\\\\\\[\\]%=/ .0-9]|\r\n){0,80}") {
        let mut bytes = data.clone().into_bytes();
        bytes.extend_from_slice(b"\r\n\r\n");
        if let Ok(m) = parse_datagram(Bytes::from(bytes.clone()), &Limits::default()) {
            poke(&m);
        }
        stream_parse_all(&bytes, 13);
    }

    #[test]
    fn mutated_fixtures_never_panic(pick in any::<prop::sample::Index>(), muts in prop::collection::vec(mutation(), 1..6), chunk in 1usize..200) {
        let all = fixtures();
        prop_assume!(!all.is_empty());
        let mut buf = pick.get(&all).clone();
        for m in &muts {
            apply(&mut buf, m);
        }
        if let Ok(m) = parse_datagram(Bytes::from(buf.clone()), &Limits::default()) {
            poke(&m);
        }
        stream_parse_all(&buf, chunk);
    }

    #[test]
    fn generated_messages_round_trip(m in message()) {
        let wire = m.to_bytes();
        let parsed = parse_datagram(wire.clone(), &Limits::default());
        prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed, String::from_utf8_lossy(&wire));
        prop_assert_eq!(parsed.as_ref().ok(), Some(&m));
        let mut sp = StreamParser::default();
        sp.feed(&wire);
        let streamed = sp.next_message().ok().flatten();
        prop_assert_eq!(streamed.as_ref(), Some(&m));
        // The typed values survive too.
        let h = m.headers();
        prop_assert!(h.via().is_ok() && h.from().is_ok() && h.to().is_ok() && h.cseq().is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn display_names_and_tags_round_trip(name in "[ -~äр\u{7f}]{0,16}", tag in "[A-Za-z0-9.!%*_+`'~-]{1,12}", u in uri()) {
        let mut na = NameAddr::new(u);
        na.set_display_name(&name);
        na.set_tag(ByteStr::from(tag.clone()));
        let mut h = Headers::new();
        h.push(HeaderName::From, na.to_string());
        let back = h.from();
        prop_assert!(back.is_ok(), "{:?} -> {:?}", na.to_string(), back);
        if let Ok(back) = back {
            let unescaped = back.display_name_unescaped().map(|d| d.into_owned());
            prop_assert_eq!(unescaped, Some(name.clone()));
            prop_assert_eq!(back.tag(), Some(tag.as_str()));
            prop_assert_eq!(back, na);
        }
    }

    #[test]
    fn has_tag_agrees_with_the_full_parse(name in prop::option::of("[ -~ä]{0,12}"), tag in prop::option::of("[a-z0-9]{1,8}"), angle in any::<bool>(), extra in prop::option::of("[a-z]{1,6}"), u in uri()) {
        let mut na = NameAddr::new(u);
        if let Some(name) = &name {
            na.set_display_name(name);
        }
        if let Some(tag) = &tag {
            na.set_tag(ByteStr::from(tag.clone()));
        }
        if let Some(extra) = extra {
            na.params.set(ByteStr::from(extra), Some("1".into()));
        }
        let mut text = na.to_string();
        if !angle && name.is_none() {
            // addr-spec form, when the URI allows it.
            text = text.replacen('<', "", 1).replacen('>', "", 1);
        }
        let value = Bytes::from(text);
        let parsed = NameAddr::parse_single(&value).ok();
        if let Some(parsed) = parsed {
            prop_assert_eq!(NameAddr::has_tag(&value), Some(parsed.tag().is_some()), "{:?}", value);
            prop_assert_eq!(
                NameAddr::tag_of(&value).map(|t| t.map(|t| t.to_string())),
                Some(parsed.tag().map(str::to_owned)),
                "{:?}", value
            );
        }
    }

    #[test]
    fn checking_an_address_agrees_with_parsing_it(
        parts in prop::collection::vec(prop::sample::select(vec![
            "sip:", "sips:", "tel:", "urn:", "a", "b1", "@", ":", "5060", "1.2.3.4", "[::1]", "[2001:db8:::1]",
            "x.example", ".", "..", "%41", "%4", "?", "h=v", "&", ";", "lr", "tag=7", "=", "<", ">", ",", " ",
            "\t", "\"", "\"q r\"", "\"\u{e4}\"", "\u{e4}", "~", "*", "+1-201", "#", "/",
            "sipp", "127.0.0.1", "'", "!", "example.com", "<sip:", "SIP:", "sip:alice@10.0.0.1:5060", "65536",
        ]), 0..14),
        u in uri(),
        name in prop::option::of("[ -~ä]{0,8}"),
        addr_spec in any::<bool>(),
    ) {
        // Random joins of address pieces (mostly invalid), and valid
        // addresses written from generated URIs (some made invalid by the
        // addr-spec form).
        let mut na = NameAddr::new(u);
        if let Some(name) = &name {
            na.set_display_name(name);
        }
        let mut written = na.to_string();
        if addr_spec && name.is_none() {
            written = written.replacen('<', "", 1).replacen('>', "", 1);
        }
        for text in [parts.concat(), written] {
            let value = Bytes::from(text);
            let parsed = NameAddr::parse_single(&value);
            let checked = NameAddr::check_single(&value);
            prop_assert_eq!(
                checked.map(|shape| shape.sip),
                parsed.as_ref().map(|na| matches!(na.uri, Uri::Sip(_))).map_err(|e| *e),
                "{:?}", value
            );
            let mut n = 0;
            let listed = NameAddr::parse_each(&value, |_| n += 1);
            prop_assert_eq!(NameAddr::check_each(&value), listed, "{:?}", value);
            let uri = Uri::parse_in(&value, &value);
            let scanned = Uri::scan::<false>(&Bytes::new(), &value);
            prop_assert_eq!(
                scanned.map(|(_, shape)| shape),
                uri.map(|u| uri::UriShape {
                    sip: matches!(u, Uri::Sip(_)),
                    headers: u.as_sip().is_some_and(|s| !s.headers.is_empty()),
                }),
                "{:?}", value
            );
        }
    }

    #[test]
    fn the_common_address_shape_is_checked_as_parsed(
        name in prop::option::of(prop_oneof![
            "[a-z!%*_+`'~.-]{1,6}",
            // Quoted, with quotes, escapes, tabs and non-ASCII inside.
            "\"[ -~\t\u{e9}]{0,6}\"",
        ]),
        spaces in "[ \t]{0,2}",
        user in "[a-zA-Z0-9!~*'()%&=+$,;?/:@<> -]{0,8}",
        host in prop::sample::select(vec![
            "127.0.0.1", "10.0.0.255", "1.2.3", "1.2.3.4.5", "01.2.3.4", "256.1.1.1", "[::1]", "[::1", "[2001:db8:::1]",
            "example.com", "a..b", "a.b.", "", "-", "h_1", "[::1>]",
        ]),
        port in prop::option::of("[0-9]{0,6}"),
        angle in any::<bool>(),
        after in prop::sample::select(vec![
            "", ";tag=1", ";tag=1;x", " ;tag=1", ";", ";;", ",", ", sip:b@c", ">", ">;tag=2", "?h=v", ";tag=\"q\"", " ", "x",
        ]),
    ) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let uri = format!("sip:{user}@{host}{port}");
        let text = match (&name, angle) {
            (Some(name), _) => format!("{name}{spaces}<{uri}>{after}"),
            (None, true) => format!("<{uri}>{after}"),
            (None, false) => format!("{uri}{after}"),
        };
        let value = Bytes::from(text);
        prop_assert_eq!(
            NameAddr::check_single(&value).map(|shape| shape.sip),
            NameAddr::parse_single(&value).map(|na| matches!(na.uri, Uri::Sip(_))),
            "{:?}", value
        );
        prop_assert_eq!(
            NameAddr::check_each(&value),
            NameAddr::parse_each(&value, |_| ()),
            "{:?}", value
        );
    }

    #[test]
    fn wire_writer_matches_display(u in uri()) {
        let mut b = bytes::BytesMut::new();
        super::wire::put_uri(&mut b, &u);
        prop_assert_eq!(String::from_utf8_lossy(&b), u.to_string());
    }
}
