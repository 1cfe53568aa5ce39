//! Message framing and parsing (RFC 3261 §7, §18.3): start line, header
//! fields (folding, compact forms), body by Content-Length; UDP datagrams
//! and TCP streams. Zero-copy: every value is a slice of the input buffer.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::bytestr::ByteStr;
use super::grammar::{find_byte, is_token, is_wsp, parse_u64, sub, trim};
use super::header::{Header, HeaderName, Headers};
use super::message::{Message, Request, Response};
use super::method::{Method, StatusCode, Version};
use super::uri::{Uri, UriError};

/// Size limits applied while parsing; each has its own error kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted message (start line + headers + body), in octets.
    pub max_message_size: usize,
    /// Most header fields accepted in one message.
    pub max_headers: usize,
    /// Longest accepted physical line of the start line or header section.
    pub max_line_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 65535,
            max_headers: 256,
            max_line_length: 8192,
        }
    }
}

/// What went wrong while parsing a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// Nothing but empty lines.
    #[error("empty message")]
    Empty,
    /// The message exceeds [`Limits::max_message_size`].
    #[error("message of {size} octets exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Octets seen (at least).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More header fields than [`Limits::max_headers`].
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// A line longer than [`Limits::max_line_length`].
    #[error("line {line} is longer than {limit} octets")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// The Request-Line is malformed.
    #[error("malformed Request-Line: {0}")]
    RequestLine(&'static str),
    /// The Request-URI does not parse.
    #[error("malformed Request-URI: {0}")]
    RequestUri(UriError),
    /// The Status-Line is malformed.
    #[error("malformed Status-Line: {0}")]
    StatusLine(&'static str),
    /// A header line is malformed.
    #[error("malformed header field on line {line}: {reason}")]
    HeaderLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Content-Length is not a number.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Several Content-Length fields disagree.
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// Content-Length is missing on a stream transport.
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// The datagram holds fewer body octets than Content-Length says.
    #[error("Content-Length {expected} exceeds the {available} body octets received")]
    TruncatedBody {
        /// Content-Length.
        expected: usize,
        /// Octets present.
        available: usize,
    },
}

/// A parse failure: what and where, plus the headers recovered when the
/// start line was (or looked like) a request line, so that the transport can
/// answer 400 (RFC 3261 §21.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    kind: ParseErrorKind,
    context: Option<Box<Headers>>,
}

impl ParseError {
    fn new(kind: ParseErrorKind) -> Self {
        ParseError {
            kind,
            context: None,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> &ParseErrorKind {
        &self.kind
    }

    /// The header fields of a request that failed to parse, when there are
    /// enough of them to consider an answer; `None` for responses and garbage.
    pub fn reply_context(&self) -> Option<&Headers> {
        self.context.as_deref()
    }

    /// The status an answer to this error should carry: 513 for an
    /// oversized message, 400 otherwise.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ParseErrorKind::MessageTooLarge { .. } => StatusCode::MESSAGE_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// A reason phrase naming the problem, e.g. `Bad Request (invalid Content-Length)`.
    pub fn reason_phrase(&self) -> String {
        format!("{} ({})", self.status().default_reason(), self.kind)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for ParseError {}

impl From<ParseErrorKind> for ParseError {
    fn from(kind: ParseErrorKind) -> Self {
        ParseError::new(kind)
    }
}

enum StartLine {
    Request {
        method: Method,
        uri: Uri,
        version: Version,
    },
    Response {
        version: Version,
        status: StatusCode,
        reason: ByteStr,
    },
}

/// The parsed start line and header section of a message.
struct Head {
    start: StartLine,
    headers: Headers,
    /// Offset of the body in the buffer.
    body_start: usize,
    /// Content-Length from all its fields.
    content_length: Result<Option<usize>, ParseErrorKind>,
}

/// Parses one SIP message from a UDP datagram (RFC 3261 §18.3): the body is
/// Content-Length octets, the rest of the datagram when Content-Length is
/// absent; octets after the body are ignored.
pub fn parse_datagram(buf: Bytes, limits: &Limits) -> Result<Message, ParseError> {
    if buf.len() > limits.max_message_size {
        return Err(ParseErrorKind::MessageTooLarge {
            size: buf.len(),
            limit: limits.max_message_size,
        }
        .into());
    }
    let head = parse_head(&buf, limits)?;
    let available = buf.len() - head.body_start;
    let body = match head.content_length.clone() {
        Ok(Some(n)) if n <= available => buf.slice(head.body_start..head.body_start + n),
        Ok(Some(n)) => {
            return Err(with_context(
                ParseErrorKind::TruncatedBody {
                    expected: n,
                    available,
                },
                head,
            ));
        }
        Ok(None) => buf.slice(head.body_start..),
        Err(kind) => return Err(with_context(kind, head)),
    };
    Ok(finish(head, body))
}

fn with_context(kind: ParseErrorKind, head: Head) -> ParseError {
    let context = match head.start {
        StartLine::Request { .. } => Some(Box::new(head.headers)),
        StartLine::Response { .. } => None,
    };
    ParseError { kind, context }
}

fn finish(head: Head, body: Bytes) -> Message {
    match head.start {
        StartLine::Request {
            method,
            uri,
            version,
        } => Message::Request(Request {
            method,
            uri,
            version,
            headers: head.headers,
            body,
        }),
        StartLine::Response {
            version,
            status,
            reason,
        } => Message::Response(Response {
            version,
            status,
            reason,
            headers: head.headers,
            body,
        }),
    }
}

/// Folds one Content-Length field into the running result: each must be
/// 1*DIGIT and all must be equal (RFC 4475 §3.3.9).
fn fold_content_length(found: &mut Result<Option<usize>, ParseErrorKind>, v: &[u8]) {
    let Ok(prev) = *found else { return };
    *found = match parse_u64(v).and_then(|n| usize::try_from(n).ok()) {
        None => Err(ParseErrorKind::InvalidContentLength),
        Some(n) if prev.is_some_and(|m| m != n) => Err(ParseErrorKind::ConflictingContentLength),
        Some(n) => Ok(Some(n)),
    };
}

/// Splits off the next line of `buf` from `pos`: returns the line without
/// its CRLF (or bare LF) and the position after it. The last line may lack
/// a line end.
#[inline]
fn next_line(buf: &[u8], pos: usize) -> (&[u8], usize) {
    match memchr::memchr(b'\n', &buf[pos..]) {
        Some(n) => {
            let line = &buf[pos..pos + n];
            (line.strip_suffix(b"\r").unwrap_or(line), pos + n + 1)
        }
        None => (&buf[pos..], buf.len()),
    }
}

/// Parses start line and header section. Errors in the start line or a
/// header line are reported after the whole section has been read, so that
/// the headers of a request can be returned with the error.
fn parse_head(buf: &Bytes, limits: &Limits) -> Result<Head, ParseError> {
    let mut pos = 0;
    // RFC 3261 §7.5: CRLFs before the start line are ignored.
    while pos < buf.len() && (buf[pos] == b'\r' || buf[pos] == b'\n') {
        pos += 1;
    }
    if pos == buf.len() {
        return Err(ParseErrorKind::Empty.into());
    }
    let (line, next) = next_line(buf, pos);
    if line.len() > limits.max_line_length {
        return Err(ParseErrorKind::LineTooLong {
            line: 1,
            limit: limits.max_line_length,
        }
        .into());
    }
    let start = parse_start_line(buf, line);
    let is_request = !line.starts_with(b"SIP/");
    pos = next;

    // The fields go straight into a vector (no kept values to drop per
    // push); it becomes the message's `Headers` at the end.
    let mut headers: Vec<Header> = Vec::with_capacity(16);
    let mut first_error: Option<ParseErrorKind> = None;
    let mut line_no = 1;
    // A field whose line was followed by a continuation line: name and
    // value so far (RFC 3261 §7.3.1 folding), pushed when the next field
    // or the end of the section is reached.
    let mut folded: Option<(HeaderName, Vec<u8>)> = None;
    let mut body_start = buf.len();
    let mut content_length = Ok(None);
    while pos < buf.len() {
        let (line, next) = next_line(buf, pos);
        line_no += 1;
        if line.len() > limits.max_line_length {
            return Err(ParseErrorKind::LineTooLong {
                line: line_no,
                limit: limits.max_line_length,
            }
            .into());
        }
        pos = next;
        let Some(&first) = line.first() else {
            body_start = pos;
            break;
        };
        if is_wsp(first) {
            // Obsolete line folding (RFC 3261 §7.3.1): continue the field with one SP.
            match folded.as_mut() {
                Some((_, value)) => {
                    let more = trim(line);
                    if !more.is_empty() {
                        if !value.is_empty() {
                            value.push(b' ');
                        }
                        value.extend_from_slice(more);
                    }
                }
                None => {
                    first_error.get_or_insert(ParseErrorKind::HeaderLine {
                        line: line_no,
                        reason: "continuation line without a header field",
                    });
                }
            }
            continue;
        }
        if let Some((name, value)) = folded.take() {
            push_field(
                &mut headers,
                &mut content_length,
                name,
                Bytes::from(value),
                limits,
            )?;
        }
        let (name, colon) = match HeaderName::common_at_line_start(line) {
            Some(known) => known,
            None => {
                // field-name HCOLON: a token, optional white space, ':'.
                let n = line
                    .iter()
                    .position(|&c| !is_token(c))
                    .unwrap_or(line.len());
                let mut colon = n;
                if line.get(colon) != Some(&b':') {
                    while line.get(colon).is_some_and(|&c| is_wsp(c)) {
                        colon += 1;
                    }
                }
                if n == 0 || line.get(colon) != Some(&b':') {
                    first_error.get_or_insert(ParseErrorKind::HeaderLine {
                        line: line_no,
                        reason: if n == 0 {
                            "invalid header name"
                        } else {
                            "no colon after header name"
                        },
                    });
                    continue;
                }
                (HeaderName::from_token_slice(buf, &line[..n]), colon)
            }
        };
        let value = trim(&line[colon + 1..]);
        if buf.get(pos).is_some_and(|&c| is_wsp(c)) {
            // The next line continues this field: assemble it in a copy.
            folded = Some((name, value.to_vec()));
            continue;
        }
        // `value` is a sub-slice of `buf`: slice it by its offset.
        let value = if value.is_empty() {
            Bytes::new()
        } else {
            let start = value.as_ptr() as usize - buf.as_ptr() as usize;
            buf.slice(start..start + value.len())
        };
        push_field(&mut headers, &mut content_length, name, value, limits)?;
    }
    if let Some((name, value)) = folded.take() {
        push_field(
            &mut headers,
            &mut content_length,
            name,
            Bytes::from(value),
            limits,
        )?;
    }
    let headers = Headers::from_fields(headers);
    let fail = |kind: ParseErrorKind, headers: Headers| ParseError {
        kind,
        context: if is_request {
            Some(Box::new(headers))
        } else {
            None
        },
    };
    let start = match start {
        Ok(s) => s,
        Err(kind) => return Err(fail(kind, headers)),
    };
    if let Some(kind) = first_error {
        return Err(fail(kind, headers));
    }
    Ok(Head {
        start,
        headers,
        body_start,
        content_length,
    })
}

#[inline(always)]
fn push_field(
    headers: &mut Vec<Header>,
    content_length: &mut Result<Option<usize>, ParseErrorKind>,
    name: HeaderName,
    value: Bytes,
    limits: &Limits,
) -> Result<(), ParseError> {
    if headers.len() >= limits.max_headers {
        return Err(ParseErrorKind::TooManyHeaders {
            limit: limits.max_headers,
        }
        .into());
    }
    if name == HeaderName::ContentLength {
        fold_content_length(content_length, &value);
    }
    headers.push(Header { name, value });
    Ok(())
}

fn parse_start_line(buf: &Bytes, line: &[u8]) -> Result<StartLine, ParseErrorKind> {
    if line.starts_with(b"SIP/") {
        return parse_status_line(buf, line);
    }
    use ParseErrorKind::RequestLine as E;
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly one SP
    // between elements and none after (RFC 4475 §3.1.2.8-10 may be rejected).
    let sp1 = find_byte(b' ', line).ok_or(E("missing SP after method"))?;
    let method = Method::from_slice(buf, &line[..sp1]).map_err(|_| E("method is not a token"))?;
    let rest = &line[sp1 + 1..];
    if rest.first().is_some_and(|&c| is_wsp(c)) {
        return Err(E("more than one SP between method and Request-URI"));
    }
    let sp2 = find_byte(b' ', rest).ok_or(E("missing SIP-Version"))?;
    let raw_uri = &rest[..sp2];
    let raw_version = &rest[sp2 + 1..];
    if raw_uri.is_empty() || raw_uri.contains(&b'\t') {
        return Err(E("white space in the Request-URI"));
    }
    let version = match Version::parse(raw_version) {
        Some(v) => v,
        None if raw_version.first().is_some_and(|&c| is_wsp(c)) => {
            return Err(E("more than one SP between Request-URI and SIP-Version"))
        }
        None if Version::parse(trim(raw_version)).is_some() => {
            return Err(E("white space after SIP-Version"))
        }
        None if memchr::memchr(b' ', raw_version).is_some() => {
            return Err(E("white space in the Request-URI"))
        }
        None => return Err(E("malformed SIP-Version")),
    };
    let uri = Uri::parse_in(buf, raw_uri).map_err(ParseErrorKind::RequestUri)?;
    Ok(StartLine::Request {
        method,
        uri,
        version,
    })
}

fn parse_status_line(buf: &Bytes, line: &[u8]) -> Result<StartLine, ParseErrorKind> {
    use ParseErrorKind::StatusLine as E;
    let sp = find_byte(b' ', line).ok_or(E("missing SP after SIP-Version"))?;
    let version = Version::parse(&line[..sp]).ok_or(E("malformed SIP-Version"))?;
    let rest = &line[sp + 1..];
    let code = rest.get(..3).ok_or(E("status code is not 3 digits"))?;
    if !code.iter().all(u8::is_ascii_digit) {
        return Err(E("status code is not 3 digits"));
    }
    let reason = match rest.get(3) {
        None => &rest[3..],
        Some(b' ') => &rest[4..],
        Some(_) => return Err(E("status code is not 3 digits")),
    };
    let status = parse_u64(code)
        .and_then(|c| u16::try_from(c).ok())
        .and_then(StatusCode::new)
        .ok_or(E("status code out of range"))?;
    if reason.iter().any(|&c| c == b'\r' || c == 0) {
        return Err(E("control character in reason phrase"));
    }
    // Most responses carry the default phrase of their code (`OK`,
    // `Ringing`): keep the static text, no slice of the buffer nor UTF-8 check.
    let default = status.default_reason();
    let reason = if reason == default.as_bytes() {
        ByteStr::from_static(default)
    } else {
        ByteStr::from_utf8_lossy(sub(buf, reason))
    };
    Ok(StartLine::Response {
        version,
        status,
        reason,
    })
}

/// Frames messages on a stream transport (TCP, RFC 3261 §18.3): feed
/// octets as they arrive, take complete messages out. Content-Length is
/// mandatory. The buffer is bounded: a message whose header section or
/// total size exceeds [`Limits::max_message_size`] is an error, after
/// which the stream cannot be resynchronized and should be closed.
///
/// Each message owns only its own octets: its header section and body are
/// copied out of the read buffer (one copy, as a UDP datagram gets), so a
/// message kept for a whole call never pins a read block, nor the messages
/// that arrived with it; and the read buffer, never shared, is reused in
/// place.
#[derive(Debug)]
pub struct StreamParser {
    buf: BytesMut,
    limits: Limits,
    /// Bytes of `buf` already searched for the end of the header section.
    scanned: usize,
    /// A parsed header section waiting for its body.
    pending: Option<(PendingHead, usize)>,
}

struct PendingHead(Head);

impl fmt::Debug for PendingHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingHead")
    }
}

impl StreamParser {
    /// A parser with the given limits.
    pub fn new(limits: Limits) -> Self {
        StreamParser {
            buf: BytesMut::new(),
            limits,
            scanned: 0,
            pending: None,
        }
    }

    /// Appends received octets. Call [`StreamParser::next_message`] until it
    /// returns `Ok(None)` after each feed; that keeps the buffer bounded.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Octets buffered and not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` if more octets are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, ParseError> {
        if self.pending.is_none() {
            // Skip CRLF keep-alives (RFC 5626 §3.5.1) and CRLFs before a start line.
            let skip = self
                .buf
                .iter()
                .position(|&c| c != b'\r' && c != b'\n')
                .unwrap_or(self.buf.len());
            if skip > 0 {
                self.buf.advance(skip);
                self.scanned = 0;
            }
            let Some(end) = self.find_head_end() else {
                if self.buf.len() > self.limits.max_message_size {
                    return Err(ParseErrorKind::MessageTooLarge {
                        size: self.buf.len(),
                        limit: self.limits.max_message_size,
                    }
                    .into());
                }
                return Ok(None);
            };
            self.scanned = 0;
            if end > self.limits.max_message_size {
                return Err(ParseErrorKind::MessageTooLarge {
                    size: end,
                    limit: self.limits.max_message_size,
                }
                .into());
            }
            let head_bytes = Bytes::copy_from_slice(&self.buf[..end]);
            self.buf.advance(end);
            let head = parse_head(&head_bytes, &self.limits)?;
            let n = match head.content_length.clone() {
                Ok(Some(n)) => n,
                Ok(None) => return Err(with_context(ParseErrorKind::MissingContentLength, head)),
                Err(kind) => return Err(with_context(kind, head)),
            };
            if end.saturating_add(n) > self.limits.max_message_size {
                return Err(with_context(
                    ParseErrorKind::MessageTooLarge {
                        size: end.saturating_add(n),
                        limit: self.limits.max_message_size,
                    },
                    head,
                ));
            }
            self.pending = Some((PendingHead(head), n));
        }
        match &self.pending {
            Some((_, n)) if self.buf.len() >= *n => {
                let n = *n;
                let Some((PendingHead(head), _)) = self.pending.take() else {
                    return Ok(None);
                };
                let body = if n == 0 {
                    Bytes::new()
                } else {
                    Bytes::copy_from_slice(&self.buf[..n])
                };
                self.buf.advance(n);
                Ok(Some(finish(head, body)))
            }
            _ => Ok(None),
        }
    }

    /// The offset just after the empty line that ends the header section.
    fn find_head_end(&mut self) -> Option<usize> {
        let from = self.scanned.saturating_sub(3);
        let hay = &self.buf[from..];
        let mut i = 0;
        while let Some(p) = memchr::memchr(b'\n', &hay[i..]) {
            let at = i + p;
            match hay.get(at + 1) {
                Some(b'\n') => return Some(from + at + 2),
                Some(b'\r') => match hay.get(at + 2) {
                    Some(b'\n') => return Some(from + at + 3),
                    Some(_) => {}
                    None => break,
                },
                Some(_) => {}
                None => break,
            }
            i = at + 1;
        }
        self.scanned = self.buf.len();
        None
    }
}

impl Default for StreamParser {
    fn default() -> Self {
        StreamParser::new(Limits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Contact, Host, Transport};

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\r";

    fn req(m: Message) -> Request {
        match m {
            Message::Request(r) => r,
            Message::Response(_) => panic!("expected a request"),
        }
    }

    #[test]
    fn parses_an_ordinary_invite() {
        let r = req(parse_datagram(Bytes::from_static(INVITE), &Limits::default()).unwrap());
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri.to_string(), "sip:bob@biloxi.example.com");
        assert_eq!(r.body, &b"v=0\r"[..]);
        let via = r.top_via().unwrap();
        assert_eq!(via.transport, Transport::Udp);
        assert_eq!(via.host, Host::Domain("pc33.atlanta.example.com".into()));
        assert_eq!(via.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(r.from().unwrap().tag(), Some("1928301774"));
        assert_eq!(r.to().unwrap().display_name.as_deref(), Some("Bob"));
        assert_eq!(
            r.call_id().unwrap(),
            "a84b4c76e66710@pc33.atlanta.example.com"
        );
        assert_eq!(r.cseq().unwrap().seq, 314159);
        assert_eq!(r.max_forwards().unwrap(), Some(70));
        assert!(matches!(r.contacts().unwrap(), Some(Contact::Addrs(a)) if a.len() == 1));
        assert!(r
            .content_type()
            .unwrap()
            .unwrap()
            .matches("application/sdp"));
    }

    #[test]
    fn write_then_parse_is_identity() {
        let m = parse_datagram(Bytes::from_static(INVITE), &Limits::default()).unwrap();
        let again = parse_datagram(m.to_bytes(), &Limits::default()).unwrap();
        assert_eq!(m, again);
    }

    #[test]
    fn response_builder_copies_headers_and_adds_tag() {
        let r = req(parse_datagram(Bytes::from_static(INVITE), &Limits::default()).unwrap());
        let mut resp = Response::for_request(&r, StatusCode::RINGING);
        resp.set_to_tag("abc");
        resp.set_to_tag("ignored");
        assert_eq!(resp.to().unwrap().tag(), Some("abc"));
        assert_eq!(resp.headers.len(), 5);
        let wire = resp.to_bytes();
        assert!(wire.starts_with(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP pc33"));
        assert!(wire.ends_with(b"Content-Length: 0\r\n\r\n"));
        let back = parse_datagram(wire, &Limits::default()).unwrap();
        assert!(
            matches!(back, Message::Response(r) if r.status == StatusCode::RINGING && r.call_id().is_ok())
        );
    }

    #[test]
    fn stream_parser_handles_partial_and_batched_input() {
        let mut p = StreamParser::default();
        let mut two = INVITE.to_vec();
        two.extend_from_slice(b"\r\n");
        two.extend_from_slice(INVITE);
        for chunk in two.chunks(7) {
            p.feed(chunk);
        }
        assert!(p.next_message().unwrap().is_some());
        assert!(p.next_message().unwrap().is_some());
        assert!(p.next_message().unwrap().is_none());
        assert_eq!(p.buffered(), 0);

        let mut p = StreamParser::default();
        for (i, chunk) in INVITE.chunks(5).enumerate() {
            p.feed(chunk);
            let got = p.next_message().unwrap();
            assert_eq!(got.is_some(), (i + 1) * 5 >= INVITE.len(), "chunk {i}");
        }
    }

    /// The allocation `b` keeps alive, from its first octet on: the
    /// capacity it has back as a `BytesMut`; `None` while the allocation is
    /// still shared with anything else.
    fn retained(b: Bytes) -> Option<usize> {
        b.try_into_mut().ok().map(|m| m.capacity())
    }

    #[test]
    fn stream_message_retains_only_its_own_octets() {
        // One read block: a small MESSAGE with a body, then the start of a
        // big one whose body is still coming.
        let small: &[u8] = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
              Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 5\r\n\r\nhello";
        let mut block = small.to_vec();
        block.extend_from_slice(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 40000\r\n\r\n");
        block.resize(block.len() + 30_000, b'x');
        let mut p = StreamParser::default();
        p.feed(&block);
        let Some(Message::Request(req)) = p.next_message().unwrap() else {
            panic!("the small message is complete");
        };
        assert!(p.next_message().unwrap().is_none());
        assert_eq!(p.buffered(), 30_000);
        let call_id = req.headers.get(&HeaderName::CallId).unwrap().clone();
        let body = req.body.clone();
        drop(req);
        // The parser (and the big message it buffers) lives on, as on a
        // connection: the small message's parts still own only themselves.
        assert_eq!(body.as_ref(), b"hello");
        let kept = retained(body).expect("the body shares no allocation");
        assert!(kept <= 5, "body keeps {kept} octets alive");
        let kept = retained(call_id).expect("the header section shares no allocation");
        assert!(
            kept <= small.len(),
            "a header value keeps {kept} octets alive"
        );
        // The big message completes and is framed as usual.
        p.feed(&vec![b'y'; 10_000]);
        let Some(Message::Request(big)) = p.next_message().unwrap() else {
            panic!("the big message is complete");
        };
        assert_eq!(big.body.len(), 40_000);
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn stream_requires_content_length_and_bounds_buffer() {
        let mut p = StreamParser::default();
        p.feed(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n");
        let e = p.next_message().unwrap_err();
        assert_eq!(e.kind(), &ParseErrorKind::MissingContentLength);
        assert!(e.reply_context().is_some());

        let limits = Limits {
            max_message_size: 100,
            ..Limits::default()
        };
        let mut p = StreamParser::new(limits);
        p.feed(&[b'A'; 150]);
        assert!(matches!(
            p.next_message().unwrap_err().kind(),
            ParseErrorKind::MessageTooLarge { .. }
        ));
    }

    #[test]
    fn limits_have_their_own_errors() {
        let l = Limits {
            max_message_size: 10,
            ..Limits::default()
        };
        let e = parse_datagram(Bytes::from_static(INVITE), &l).unwrap_err();
        assert!(matches!(e.kind(), ParseErrorKind::MessageTooLarge { .. }));
        assert_eq!(e.status(), StatusCode::MESSAGE_TOO_LARGE);
        let l = Limits {
            max_headers: 3,
            ..Limits::default()
        };
        let e = parse_datagram(Bytes::from_static(INVITE), &l).unwrap_err();
        assert_eq!(e.kind(), &ParseErrorKind::TooManyHeaders { limit: 3 });
        let l = Limits {
            max_line_length: 40,
            ..Limits::default()
        };
        let e = parse_datagram(Bytes::from_static(INVITE), &l).unwrap_err();
        assert_eq!(
            e.kind(),
            &ParseErrorKind::LineTooLong { line: 1, limit: 40 }
        );
    }

    #[test]
    fn folded_header_is_joined_with_one_space() {
        let m = parse_datagram(
            Bytes::from_static(
                b"OPTIONS sip:a@b SIP/2.0\r\nSubject: one\r\n  two\r\n\tthree\r\nl: 0\r\n\r\n",
            ),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            m.headers().get(&HeaderName::Subject).unwrap(),
            "one two three"
        );
    }
}
