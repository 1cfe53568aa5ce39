//! Whatever parses must survive write → parse, and a second write must
//! be identical to the first (the writer is a fixed point after one pass).
//! The typed values the B2BUA writes into the messages it builds (Via,
//! From/To, Contact, Route, CSeq, Content-Type, RAck, credentials,
//! challenges, Request-URI) must do the same on their own.
#![no_main]

use std::fmt::Display;

use libfuzzer_sys::fuzz_target;
use vpbx::sip::{
    parse_datagram, Bytes, Contact, HeaderError, HeaderName, Headers, Limits, Message, Uri,
};

/// `v` written as the value of a `name` field parses again with `get`, and
/// writing that gives the same text.
fn typed<T: Display + std::fmt::Debug>(
    name: HeaderName,
    v: &T,
    get: impl Fn(&Headers) -> Result<Vec<T>, HeaderError>,
) {
    let once = v.to_string();
    let mut h = Headers::new();
    h.push(name.clone(), Bytes::from(once.clone()));
    let again = match get(&h) {
        Ok(again) => again,
        Err(e) => panic!("written {name} {once:?} (from {v:?}) does not parse: {e}"),
    };
    assert_eq!(
        again.len(),
        1,
        "written {name} {once:?} parses as {again:?}"
    );
    assert_eq!(
        again[0].to_string(),
        once,
        "{name} {v:?} -> {once:?} -> {:?}",
        again[0]
    );
}

/// An optional value as a list of none or one.
fn opt<T>(r: Result<Option<T>, HeaderError>) -> Result<Vec<T>, HeaderError> {
    r.map(|o| o.into_iter().collect())
}

fn typed_values(m: &Message) {
    let h = m.headers();
    for v in h.via().unwrap_or_default() {
        typed(HeaderName::Via, &v, |h| h.via());
    }
    if let Ok(v) = h.from() {
        typed(HeaderName::From, &v, |h| h.from().map(|v| vec![v]));
    }
    if let Ok(v) = h.to() {
        typed(HeaderName::To, &v, |h| h.to().map(|v| vec![v]));
    }
    if let Ok(v) = h.cseq() {
        typed(HeaderName::CSeq, &v, |h| h.cseq().map(|v| vec![v]));
    }
    if let Ok(Some(Contact::Addrs(list))) = h.contacts() {
        for v in list {
            typed(HeaderName::Contact, &v, |h| match h.contacts() {
                Ok(Some(Contact::Addrs(l))) => Ok(l),
                Ok(_) => Ok(Vec::new()),
                Err(e) => Err(e),
            });
        }
    }
    for v in h.route().unwrap_or_default() {
        typed(HeaderName::Route, &v, |h| h.route());
    }
    for v in h.record_route().unwrap_or_default() {
        typed(HeaderName::RecordRoute, &v, |h| h.record_route());
    }
    for v in opt(h.content_type()).unwrap_or_default() {
        typed(HeaderName::ContentType, &v, |h| opt(h.content_type()));
    }
    for v in opt(h.rack()).unwrap_or_default() {
        typed(HeaderName::RAck, &v, |h| opt(h.rack()));
    }
    for v in h.www_authenticate().unwrap_or_default() {
        typed(HeaderName::WwwAuthenticate, &v, |h| h.www_authenticate());
    }
    for v in h.authorization().unwrap_or_default() {
        typed(HeaderName::Authorization, &v, |h| h.authorization());
    }
    if let Message::Request(r) = m {
        let once = r.uri.to_string();
        match Uri::parse(&once) {
            Ok(again) => assert_eq!(again.to_string(), once, "Request-URI {:?}", r.uri),
            Err(e) => panic!("written Request-URI {once:?} does not parse: {e}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(m) = parse_datagram(Bytes::copy_from_slice(data), &limits) else {
        return;
    };
    let once = m.to_bytes();
    let Ok(again) = parse_datagram(once.clone(), &limits) else {
        panic!(
            "written message does not parse: {:?}",
            String::from_utf8_lossy(&once)
        );
    };
    assert_eq!(again.body(), m.body());
    assert_eq!(again.to_bytes(), once);
    let third = parse_datagram(again.to_bytes(), &limits).ok();
    assert_eq!(third.as_ref(), Some(&again));
    typed_values(&m);
});
