//! [`Request`], [`Response`] and [`Message`]: builders and the writer.

use bytes::{BufMut, Bytes, BytesMut};

use super::bytestr::ByteStr;
use super::header::{HeaderName, Headers};
use super::method::{Method, StatusCode, Version};
use super::name_addr::NameAddr;
use super::uri::Uri;
use super::wire::{self, Sink, Written};

/// A SIP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// The version of the Request-Line.
    pub version: Version,
    /// Header fields in order.
    pub headers: Headers,
    /// The body (exactly Content-Length octets when parsed).
    pub body: Bytes,
}

/// A SIP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The version of the Status-Line.
    pub version: Version,
    /// The status code.
    pub status: StatusCode,
    /// The reason phrase (may be empty, may be UTF-8).
    pub reason: ByteStr,
    /// Header fields in order.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

/// A request or a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Request {
    /// A SIP/2.0 request without headers and body.
    pub fn new(method: Method, uri: Uri) -> Self {
        Request {
            method,
            uri,
            version: Version::SIP_2_0,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Serializes the request (see [`Message::write_into`]) into a buffer
    /// of exactly its size.
    pub fn to_bytes(&self) -> Bytes {
        wire::to_exact_bytes(self)
    }

    /// Appends the wire form to `out`.
    pub fn write_into(&self, out: &mut BytesMut) {
        out.reserve(self.size_hint());
        self.put_wire(out);
    }

    fn put_wire(&self, s: &mut impl Sink) {
        s.put(self.method.as_str().as_bytes());
        s.put(b" ");
        wire::put_uri(s, &self.uri);
        s.put(b" ");
        wire::put_version(s, self.version);
        s.put(b"\r\n");
        wire::put_headers_and_body(s, &self.headers, &self.body);
    }

    fn size_hint(&self) -> usize {
        64 + headers_size(&self.headers) + self.body.len()
    }
}

impl Response {
    /// A SIP/2.0 response with the default reason phrase, no headers and no body.
    pub fn new(status: StatusCode) -> Self {
        Response {
            version: Version::SIP_2_0,
            status,
            reason: ByteStr::from_static(status.default_reason()),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Replaces the reason phrase.
    pub fn with_reason(mut self, reason: impl Into<ByteStr>) -> Self {
        self.reason = reason.into();
        self
    }

    /// A response to `req` (RFC 3261 §8.2.6.2): copies all Via values,
    /// From, To, Call-ID and CSeq; the caller adds the To tag with
    /// [`Response::set_to_tag`].
    pub fn for_request(req: &Request, status: StatusCode) -> Self {
        Self::for_headers(&req.headers, status)
    }

    /// Like [`Response::for_request`] from the raw headers of a request,
    /// e.g. those recovered by [`super::ParseError::reply_context`].
    pub fn for_headers(headers: &Headers, status: StatusCode) -> Self {
        let copied = |name: &HeaderName| {
            matches!(
                name,
                HeaderName::Via
                    | HeaderName::From
                    | HeaderName::To
                    | HeaderName::CallId
                    | HeaderName::CSeq
            )
        };
        let n = headers.iter().filter(|f| copied(&f.name)).count();
        let mut r = Response::new(status);
        // Room for what a UAS or B2BUA usually adds (Record-Route, Contact,
        // Allow, Supported, Session-Expires, Content-Type) without growing.
        let mut h = Headers::with_capacity(n + 6);
        for f in headers.iter().filter(|f| copied(&f.name)) {
            h.push_header(f.clone());
        }
        r.headers = h;
        r
    }

    /// Adds `;tag=` to the To header if it has no tag yet (and a To header exists).
    pub fn set_to_tag(&mut self, tag: &str) {
        let Some(to) = self.headers.get(&HeaderName::To) else {
            return;
        };
        // Only the parameters matter here, not the URI.
        if NameAddr::has_tag(to) == Some(true) {
            return;
        }
        let mut v = BytesMut::with_capacity(to.len() + tag.len() + 5);
        v.put_slice(to);
        v.put_slice(b";tag=");
        v.put_slice(tag.as_bytes());
        self.headers.set(HeaderName::To, v.freeze());
    }

    /// Serializes the response (see [`Message::write_into`]) into a buffer
    /// of exactly its size.
    pub fn to_bytes(&self) -> Bytes {
        wire::to_exact_bytes(self)
    }

    /// Appends the wire form to `out`.
    pub fn write_into(&self, out: &mut BytesMut) {
        out.reserve(self.size_hint());
        self.put_wire(out);
    }

    fn put_wire(&self, s: &mut impl Sink) {
        wire::put_version(s, self.version);
        s.put(b" ");
        wire::put_status(s, self.status);
        s.put(b" ");
        s.put(self.reason.as_bytes());
        s.put(b"\r\n");
        wire::put_headers_and_body(s, &self.headers, &self.body);
    }

    fn size_hint(&self) -> usize {
        64 + headers_size(&self.headers) + self.body.len()
    }
}

impl Message {
    /// Serializes the message.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    /// Appends the wire form to `out`. Headers are written in order with
    /// their canonical long names; Content-Length is always written, from
    /// `body.len()`, in place of the first Content-Length field (other
    /// Content-Length fields are dropped) or last if there was none.
    /// Hence `parse(write(m)) == m` whenever `m` has exactly one
    /// Content-Length field equal to its body length (as every parsed
    /// message has after one write).
    pub fn write_into(&self, out: &mut BytesMut) {
        match self {
            Message::Request(r) => r.write_into(out),
            Message::Response(r) => r.write_into(out),
        }
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    /// The headers, mutably.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }
}

impl Written for Request {
    #[inline]
    fn put(&self, s: &mut impl Sink) {
        self.put_wire(s);
    }
}

impl Written for Response {
    #[inline]
    fn put(&self, s: &mut impl Sink) {
        self.put_wire(s);
    }
}

impl From<Request> for Message {
    fn from(r: Request) -> Self {
        Message::Request(r)
    }
}

impl From<Response> for Message {
    fn from(r: Response) -> Self {
        Message::Response(r)
    }
}

fn headers_size(h: &Headers) -> usize {
    h.iter()
        .map(|f| f.name.as_str().len() + f.value.len() + 4)
        .sum::<usize>()
        + 24
}
