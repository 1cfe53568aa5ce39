//! The writer's byte-level output: messages, URIs and parameters written
//! straight into a [`Sink`], without `core::fmt`. The same code runs over a
//! [`Length`] sink first, so that [`super::Message::to_bytes`] allocates
//! once, at the exact size (which also spares `bytes` its separate shared
//! header when the buffer is frozen).
//!
//! The output is the same text as the `Display` impls of [`Uri`] and
//! [`Params`] (checked by tests), which stay for logging and `to_string`.

use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{HeaderName, Headers};
use super::method::{StatusCode, Version};
use super::params::Params;
use super::uri::{Host, SipUri, Uri};

/// Where the writer puts octets.
pub(crate) trait Sink {
    /// Appends `b`.
    fn put(&mut self, b: &[u8]);
}

impl Sink for BytesMut {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.put_slice(b);
    }
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// Counts the octets instead of storing them.
#[derive(Default)]
pub(crate) struct Length(pub(crate) usize);

impl Sink for Length {
    #[inline]
    fn put(&mut self, b: &[u8]) {
        self.0 += b.len();
    }
}

/// A copy of `data` whose reference count is made with it
/// ([`Bytes::from_owner`]), for a message that is sliced or cloned: a
/// received datagram (the parser slices every header value out of it),
/// a message we send (the transaction keeps it for retransmission).
///
/// `Bytes::copy_from_slice` makes a buffer that `bytes` promotes on its
/// first clone: it then allocates the shared header and swaps it in, and
/// every later clone and drop first asks which kind it is. Made counted at
/// once, the allocations are the same two (the octets and the count), and
/// each of the ~60 clones of a call's messages costs about half
/// (docs/performance.md, "Session 11"). The octets are never taken back
/// as a `BytesMut` (that would copy them: see `Bytes::from_owner`).
pub fn shared_copy(data: &[u8]) -> Bytes {
    Bytes::from_owner(Box::<[u8]>::from(data))
}

/// Runs the writer once into this thread's scratch buffer and copies what
/// it wrote into a [`Bytes`] of exactly that size ([`shared_copy`])
/// without a counting pass first. Writing
/// over [`Length`] and then again into the final buffer walked every
/// header, URI and parameter twice; one walk and a `memcpy` of the result
/// is cheaper. If the scratch buffer is busy (not expected: writers do not
/// nest) or gone (thread exit), the counting pass is used instead.
pub(crate) fn to_exact_bytes(w: &impl Written) -> Bytes {
    /// A scratch buffer grown above this is not kept for the next message.
    const KEEP: usize = 64 * 1024;
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let scratch = SCRATCH.try_with(|cell| {
        let mut buf = cell.try_borrow_mut().ok()?;
        buf.clear();
        w.put(&mut *buf);
        let out = shared_copy(&buf);
        if buf.capacity() > KEEP {
            *buf = Vec::new();
        }
        Some(out)
    });
    if let Ok(Some(out)) = scratch {
        return out;
    }
    let mut len = Length::default();
    w.put(&mut len);
    let mut b = BytesMut::with_capacity(len.0);
    w.put(&mut b);
    b.freeze()
}

/// Something the writer writes whole (a request or a response).
pub(crate) trait Written {
    /// Writes the wire form into `s`.
    fn put(&self, s: &mut impl Sink);
}

/// Writes `n` in decimal.
#[inline]
pub(crate) fn put_decimal(s: &mut impl Sink, n: u64) {
    s.put(itoa::Buffer::new().format(n).as_bytes());
}

/// `SIP/2.0` (or whatever version the message carries).
#[inline]
pub(crate) fn put_version(s: &mut impl Sink, v: Version) {
    if v.is_sip_2_0() {
        s.put(b"SIP/2.0");
    } else {
        s.put(b"SIP/");
        put_decimal(s, u64::from(v.major));
        s.put(b".");
        put_decimal(s, u64::from(v.minor));
    }
}

/// The three digits of a status code.
#[inline]
pub(crate) fn put_status(s: &mut impl Sink, status: StatusCode) {
    put_decimal(s, u64::from(status.as_u16()));
}

/// A URI as in its `Display` form.
pub(crate) fn put_uri(s: &mut impl Sink, uri: &Uri) {
    match uri {
        Uri::Sip(u) => put_sip_uri(s, u),
        Uri::Tel(t) => {
            s.put(b"tel:");
            s.put(t.number.as_bytes());
            put_params(s, &t.params, b';', b';');
        }
        Uri::Other { scheme, rest } => {
            s.put(scheme.as_bytes());
            s.put(b":");
            s.put(rest.as_bytes());
        }
    }
}

fn put_sip_uri(s: &mut impl Sink, u: &SipUri) {
    s.put(if u.secure { b"sips:" } else { b"sip:" });
    if let Some(user) = &u.user {
        s.put(user.as_bytes());
        if let Some(p) = &u.password {
            s.put(b":");
            s.put(p.as_bytes());
        }
        s.put(b"@");
    }
    put_host(s, &u.host);
    if let Some(p) = u.port {
        s.put(b":");
        put_decimal(s, u64::from(p));
    }
    put_params(s, &u.params, b';', b';');
    put_params(s, &u.headers, b'?', b'&');
}

/// A host: the name as written, dotted IPv4, `[IPv6]`.
pub(crate) fn put_host(s: &mut impl Sink, host: &Host) {
    match host {
        Host::Domain(d) => s.put(d.as_bytes()),
        Host::Ipv4(a) => put_ipv4(s, *a),
        Host::Ipv6(a) => put_ipv6(s, *a),
    }
}

/// Dotted decimal, formatted on the stack and written with one `put`
/// (four decimal conversions and seven small writes cost ~2.5x more).
fn put_ipv4(s: &mut impl Sink, a: Ipv4Addr) {
    // The longest form, `255.255.255.255`, is 15 octets.
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, o) in a.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    s.put(&buf[..n]);
}

/// Rare on the wire: goes through `Display` (RFC 5952 text) on the stack.
fn put_ipv6(s: &mut impl Sink, a: Ipv6Addr) {
    use std::io::Write;
    // The longest text form is 45 octets (IPv4-mapped with full groups).
    let mut buf = [0u8; 48];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    // Cannot fail: the buffer holds the longest form.
    let _ = write!(cur, "[{a}]");
    let n = usize::try_from(cur.position()).unwrap_or(0);
    s.put(&buf[..n]);
}

/// `first name[=value]` then `sep name[=value]` for each parameter.
pub(crate) fn put_params(s: &mut impl Sink, p: &Params, first: u8, sep: u8) {
    for (i, (n, v)) in p.iter().enumerate() {
        s.put(&[if i == 0 { first } else { sep }]);
        s.put(n.as_bytes());
        if let Some(v) = v {
            s.put(b"=");
            s.put(v.as_bytes());
        }
    }
}

/// Header fields in order with their canonical names, Content-Length from
/// `body` in place of the first Content-Length field (or last), the empty
/// line and the body.
pub(crate) fn put_headers_and_body(s: &mut impl Sink, headers: &Headers, body: &Bytes) {
    let mut wrote_length = false;
    for h in headers.iter() {
        if h.name == HeaderName::ContentLength {
            if !wrote_length {
                put_content_length(s, body.len());
                wrote_length = true;
            }
            continue;
        }
        match h.name.wire_prefix() {
            Some(prefix) => s.put(prefix),
            None => {
                s.put(h.name.as_str().as_bytes());
                s.put(b": ");
            }
        }
        s.put(&h.value);
        s.put(b"\r\n");
    }
    if !wrote_length {
        put_content_length(s, body.len());
    }
    s.put(b"\r\n");
    s.put(body);
}

#[inline]
fn put_content_length(s: &mut impl Sink, n: usize) {
    s.put(b"Content-Length: ");
    put_decimal(s, n as u64);
    s.put(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(uri: &Uri) -> String {
        let mut b = BytesMut::new();
        put_uri(&mut b, uri);
        let mut len = Length::default();
        put_uri(&mut len, uri);
        assert_eq!(len.0, b.len(), "Length counts what is written");
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn uris_are_written_as_displayed() {
        for text in [
            "sip:alice@atlanta.example.com",
            "sips:alice:secret@atlanta.example.com:5061;transport=tls;lr?Subject=x&Priority=urgent",
            "sip:192.0.2.10:5060;user=phone",
            "sip:0.0.0.0",
            "sip:255.255.255.255:65535",
            "sip:[2001:db8::10]:5070;maddr=[::ffff:192.0.2.1]",
            "sip:[::ffff:255.255.255.255]",
            "sip:+4930123456789@pbx.example.com;user=phone",
            "sip:%61lice@example.com;x=%20",
            "tel:+1-201-555-0123;phone-context=example.com",
            "urn:service:sos",
        ] {
            let uri = Uri::parse(text).unwrap();
            assert_eq!(wire(&uri), uri.to_string(), "{text}");
            assert_eq!(wire(&uri), text);
            assert_eq!(uri.to_text(), text);
            let mut b = BytesMut::from(&b"<"[..]);
            uri.write_into(&mut b);
            assert_eq!(&b[1..], text.as_bytes());
        }
    }

    /// Writes a request, and while doing so (scratch buffer busy) the
    /// same request again through `to_exact_bytes`, which must then count.
    struct Nested<'a>(&'a crate::sip::Request, std::cell::RefCell<Option<Bytes>>);

    impl Written for Nested<'_> {
        fn put(&self, s: &mut impl Sink) {
            *self.1.borrow_mut() = Some(to_exact_bytes(self.0));
            self.0.put(s);
        }
    }

    #[test]
    fn exact_bytes_through_the_scratch_buffer_or_by_counting_agree() {
        use crate::sip::{Method, Request};
        let mut req = Request::new(Method::Invite, Uri::parse("sip:bob@example.com").unwrap());
        req.headers.push(HeaderName::CallId, "a@b");
        for body_len in [0, 10, 100_000] {
            req.body = Bytes::from(vec![b'x'; body_len]);
            let mut expected = BytesMut::new();
            req.write_into(&mut expected);
            let nested = Nested(&req, std::cell::RefCell::new(None));
            let outer = to_exact_bytes(&nested);
            let counted = nested.1.borrow_mut().take().unwrap();
            assert_eq!(outer, expected, "scratch buffer, body {body_len}");
            assert_eq!(counted, expected, "counting pass, body {body_len}");
            assert_eq!(req.to_bytes(), expected, "again, body {body_len}");
        }
    }

    #[test]
    fn ipv4_hosts_are_written_as_displayed() {
        let octets = [0u8, 1, 9, 10, 42, 99, 100, 109, 110, 199, 200, 250, 255];
        let mut b = BytesMut::new();
        for &w in &octets {
            for &x in &octets {
                for (y, z) in [(0, 0), (255, 255), (7, 100), (10, 1), (x, w)] {
                    let a = Ipv4Addr::new(w, x, y, z);
                    b.clear();
                    put_host(&mut b, &Host::Ipv4(a));
                    assert_eq!(&b[..], a.to_string().as_bytes());
                    let mut len = Length::default();
                    put_host(&mut len, &Host::Ipv4(a));
                    assert_eq!(len.0, b.len());
                }
            }
        }
    }

    #[test]
    fn decimals_versions_and_status_codes() {
        let mut b = BytesMut::new();
        for n in [0, 7, 10, 65535, u64::MAX] {
            b.clear();
            put_decimal(&mut b, n);
            assert_eq!(&b[..], n.to_string().as_bytes());
        }
        b.clear();
        put_version(
            &mut b,
            Version {
                major: 7,
                minor: 10,
            },
        );
        assert_eq!(&b[..], b"SIP/7.10");
        b.clear();
        put_version(&mut b, Version::SIP_2_0);
        put_status(&mut b, StatusCode::RINGING);
        assert_eq!(&b[..], b"SIP/2.0180");
    }

    #[test]
    fn content_length_replaces_the_first_field_and_is_added_when_missing() {
        let mut h = Headers::new();
        h.push(HeaderName::CallId, "a@b");
        h.push(HeaderName::ContentLength, "99");
        h.push(HeaderName::ContentLength, "98");
        let body = Bytes::from_static(b"v=0\r\n");
        let mut b = BytesMut::new();
        put_headers_and_body(&mut b, &h, &body);
        assert_eq!(&b[..], b"Call-ID: a@b\r\nContent-Length: 5\r\n\r\nv=0\r\n");
        b.clear();
        put_headers_and_body(&mut b, &Headers::new(), &Bytes::new());
        assert_eq!(&b[..], b"Content-Length: 0\r\n\r\n");
    }

    #[test]
    fn a_shared_copy_holds_the_octets_and_its_slices_and_clones_share_them() {
        let data = b"SIP/2.0 180 Ringing\r\nCall-ID: a@b\r\n\r\n";
        let copy = shared_copy(data);
        assert_eq!(&copy[..], data);
        assert_ne!(copy.as_ptr(), data.as_ptr(), "a copy");
        let slice = copy.slice(8..11);
        assert_eq!(&slice[..], b"180");
        assert_eq!(slice.as_ptr(), copy[8..].as_ptr(), "no copy of its own");
        let clone = copy.clone();
        drop(copy);
        assert_eq!(&clone[..], data, "alive while a handle is");
        assert_eq!(&slice[..], b"180");
        assert!(shared_copy(b"").is_empty());
        // A message written and parsed back reads the same.
        let resp = crate::sip::Response::new(StatusCode::RINGING);
        let wire = resp.to_bytes();
        let Ok(crate::sip::Message::Response(back)) =
            crate::sip::parse_datagram(wire, &crate::sip::Limits::default())
        else {
            panic!("written response parses");
        };
        assert_eq!(back.status, StatusCode::RINGING);
    }
}
