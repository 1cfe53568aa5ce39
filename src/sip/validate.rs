//! Request validation: the one place where a semantically unacceptable
//! request is mapped to the SIP status that answers it (RFC 3261 §8.2,
//! RFC 4475 §3.1.2 and §3.3).
//!
//! [`validate_request`] runs the checks that do not depend on what this
//! element supports: 505, 400, 416. [`validate_request_with`] adds those
//! that take a [`Policy`]: 420 (Require), 415 (body type), 406 (Accept).
//! Role-dependent answers (405/501 for a method, 483 for Max-Forwards 0 at
//! a proxy, 401 for authentication) belong to the daemon.

use bytes::Bytes;

use super::access::HeaderError;
use super::header::{HeaderName, Headers};
use super::message::{Request, Response};
use super::method::{Method, StatusCode};
use super::uri::Uri;
use super::via::MAGIC_COOKIE;

/// Why a request is refused, and how to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The status of the answer.
    pub status: StatusCode,
    /// A reason phrase naming the problem.
    pub reason: String,
    /// Extra header fields for the answer (Unsupported for 420, Accept for 415).
    pub headers: Vec<(HeaderName, Bytes)>,
}

impl Rejection {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Rejection {
            status,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    fn bad(reason: impl Into<String>) -> Self {
        Rejection::new(StatusCode::BAD_REQUEST, reason)
    }

    /// The answer to `req`: [`Response::for_request`] with this status,
    /// reason and extra headers (the caller adds the To tag).
    pub fn response_to(&self, req: &Request) -> Response {
        let mut r = Response::for_request(req, self.status).with_reason(self.reason.clone());
        for (n, v) in &self.headers {
            r.headers.push(n.clone(), v.clone());
        }
        r
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

/// What this element supports, for the policy-dependent checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy<'a> {
    /// Option tags this element supports; any other tag in Require gives 420.
    pub supported: &'a [&'a str],
    /// Body types this element understands (`type/subtype`); a request body
    /// of another type gives 415. `None` skips the check (a proxy's view).
    pub accept: Option<&'a [&'a str]>,
    /// Body types this element would answer with; when the request has an
    /// Accept header listing none of them, 406. `None` skips the check.
    pub produces: Option<&'a [&'a str]>,
}

fn header_rejection(e: HeaderError) -> Rejection {
    Rejection::bad(match &e {
        HeaderError::Missing(n) => format!("Missing {n} header"),
        HeaderError::Duplicate(n) => format!("Duplicate {n} header"),
        HeaderError::Invalid { name, reason } => format!("Invalid {name} header ({reason})"),
    })
}

/// Checks that do not depend on local capabilities, in RFC order: SIP
/// version (505), mandatory headers and their syntax (400), CSeq method,
/// Request-URI headers, Date, REGISTER address-of-record, then the
/// Request-URI scheme (416).
pub fn validate_request(req: &Request) -> Result<(), Rejection> {
    check_request(req).map(|_| ())
}

/// What [`validate_request`] parsed that the policy checks read again.
struct Checked {
    require: Vec<super::bytestr::ByteStr>,
    content_type: Option<super::values::MediaType>,
    /// Whether there is an Accept field.
    accept: bool,
}

fn check_request(req: &Request) -> Result<Checked, Rejection> {
    if !req.version.is_sip_2_0() {
        return Err(Rejection::new(
            StatusCode::VERSION_NOT_SUPPORTED,
            "Version Not Supported",
        ));
    }
    // The values read here are parsed once per message: the top Via and
    // CSeq stay with the headers for the layers after this one; lists
    // that nobody reads again are checked, not collected.
    let h = &req.headers;
    let mut bare_cookie = false;
    h.for_each_via(|v| bare_cookie |= v.branch() == Some(MAGIC_COOKIE))
        .map_err(header_rejection)?;
    if bare_cookie {
        return Err(Rejection::bad("Via branch is only the magic cookie"));
    }
    // The other fields are found in one pass over the list (not one pass
    // per field) and checked in the same order as before.
    let f = h.find_for_validation();
    // To, Contact and Route are checked, not kept: the layers after this
    // one read To by its tag alone. So is From, except an INVITE's, which
    // the B2BUA reads whole for a new call: that one is parsed and kept.
    if req.method == Method::Invite {
        h.keep_from(f.from).map(|_| ()).map_err(header_rejection)?;
    } else {
        h.check_from(|| f.from.required(HeaderName::From))
            .map_err(header_rejection)?;
    }
    let to_is_sip = h
        .check_to(|| f.to.required(HeaderName::To))
        .map_err(header_rejection)?;
    Headers::check_call_id(
        f.call_id
            .required(HeaderName::CallId)
            .map_err(header_rejection)?,
    )
    .map_err(header_rejection)?;
    let cseq = h.keep_cseq(f.cseq).map_err(header_rejection)?;
    f.max_forwards
        .get(HeaderName::MaxForwards)
        .and_then(Headers::max_forwards_of)
        .map_err(header_rejection)?;
    // A list that is absent is valid (and empty): read only those present.
    if f.contact {
        h.check_contacts().map_err(header_rejection)?;
    }
    let content_type = f
        .content_type
        .get(HeaderName::ContentType)
        .and_then(Headers::content_type_of)
        .map_err(header_rejection)?;
    let require = if f.require {
        h.require().map_err(header_rejection)?
    } else {
        Vec::new()
    };
    if f.proxy_require {
        h.proxy_require().map_err(header_rejection)?;
    }
    f.expires
        .get(HeaderName::Expires)
        .and_then(|v| Headers::delta_seconds_of(HeaderName::Expires, v))
        .map_err(header_rejection)?;
    if f.route {
        h.check_route().map_err(header_rejection)?;
    }
    // §8.2.6.2 / §17.2.3: CSeq method equals the request method (a CANCEL
    // or ACK carries its own method too).
    if cseq.method != req.method {
        return Err(Rejection::bad(
            "CSeq method does not match the Request-Line",
        ));
    }
    if let Uri::Sip(u) = &req.uri {
        // §19.1.5: headers in a Request-URI are not allowed.
        if !u.headers.is_empty() {
            return Err(Rejection::bad("Request-URI carries header parameters"));
        }
    }
    if let Some(d) = f.date {
        // §20.17: SIP-date is rfc1123-date, always in GMT.
        if !super::grammar::trim(d).ends_with(b" GMT") {
            return Err(Rejection::bad("Date is not in GMT"));
        }
    }
    if req.method == Method::Register {
        // §10.3: the address-of-record in To must be a SIP or SIPS URI.
        if !to_is_sip {
            return Err(Rejection::bad("REGISTER To is not a SIP URI"));
        }
    }
    // §8.2.2.1
    if !matches!(req.uri, Uri::Sip(_) | Uri::Tel(_)) {
        return Err(Rejection::new(
            StatusCode::UNSUPPORTED_URI_SCHEME,
            "Unsupported URI Scheme",
        ));
    }
    Ok(Checked {
        require,
        content_type,
        accept: f.accept,
    })
}

/// [`validate_request`] plus the policy checks of §8.2.2.3 (420 with an
/// Unsupported header), §8.2.3 (415 with an Accept header) and RFC 3261
/// §21.4.7 (406). ACK and CANCEL never get 420 (§8.2.2.3).
pub fn validate_request_with(req: &Request, policy: &Policy<'_>) -> Result<(), Rejection> {
    let checked = check_request(req)?;
    if !matches!(req.method, Method::Ack | Method::Cancel) {
        let unknown: Vec<String> = checked
            .require
            .iter()
            .filter(|t| !policy.supported.iter().any(|s| t.eq_ignore_ascii_case(s)))
            .map(|t| t.to_string())
            .collect();
        if !unknown.is_empty() {
            let mut r = Rejection::new(StatusCode::BAD_EXTENSION, "Bad Extension");
            r.headers
                .push((HeaderName::Unsupported, Bytes::from(unknown.join(", "))));
            return Err(r);
        }
    }
    if let Some(accept) = policy.accept {
        if !req.body.is_empty() {
            let ok = match checked.content_type {
                Some(ct) => accept.iter().any(|a| ct.matches(a)),
                // §7.4.1: a non-empty body must say its type.
                None => false,
            };
            if !ok {
                let mut r =
                    Rejection::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type");
                r.headers
                    .push((HeaderName::Accept, Bytes::from(accept.join(", "))));
                return Err(r);
            }
        }
    }
    if let (Some(produces), true) = (policy.produces, checked.accept) {
        if let Some(ranges) = req.accept().map_err(header_rejection)? {
            if !ranges.is_empty() && !produces.iter().any(|p| ranges.iter().any(|r| r.matches(p))) {
                return Err(Rejection::new(StatusCode::NOT_ACCEPTABLE, "Not Acceptable"));
            }
        }
    }
    Ok(())
}

/// Checks a received response enough for the transaction layer to use it
/// (RFC 3261 §18.1.2): Via, From, To, Call-ID and CSeq present and well
/// formed. A failing response is dropped, never answered.
pub fn validate_response(resp: &Response) -> Result<(), HeaderError> {
    resp.top_via()?;
    resp.from()?;
    resp.to()?;
    resp.call_id()?;
    resp.cseq()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_datagram, Limits, Message};

    fn req(text: &str) -> Request {
        match parse_datagram(
            bytes::Bytes::from(text.replace('\n', "\r\n")),
            &Limits::default(),
        ) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    const BASE: &str =
        "Via: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\nTo: <sip:c@d>\nCall-ID: x@y\n";

    #[test]
    fn ack_and_cancel_are_never_refused_for_require() {
        let policy = Policy::default();
        let ack = req(&format!(
            "ACK sip:c@d SIP/2.0\n{BASE}CSeq: 1 ACK\nRequire: foo\nl: 0\n\n"
        ));
        assert!(validate_request_with(&ack, &policy).is_ok());
        let inv = req(&format!(
            "INVITE sip:c@d SIP/2.0\n{BASE}CSeq: 1 INVITE\nRequire: foo\nl: 0\n\n"
        ));
        let rej = validate_request_with(&inv, &policy).unwrap_err();
        assert_eq!(rej.status, StatusCode::BAD_EXTENSION);
        let resp = rej.response_to(&inv);
        assert_eq!(resp.unsupported().unwrap(), ["foo"]);
        assert_eq!(resp.call_id().unwrap(), "x@y");
    }

    #[test]
    fn addresses_checked_without_parsing_give_the_parse_errors() {
        let reason = |method: &str, from: &str, to: &str, contact: &str| {
            let r = req(&format!(
                "{method} sip:c@d SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: {from}\n\
                 To: {to}\nCall-ID: x@y\nCSeq: 1 {method}\nContact: {contact}\nl: 0\n\n"
            ));
            validate_request(&r).err().map(|e| e.reason)
        };
        let ok = ("<sip:a@b>;tag=1", "<sip:c@d>", "<sip:a@h>");
        for method in ["INVITE", "BYE", "REGISTER"] {
            assert_eq!(reason(method, ok.0, ok.1, ok.2), None, "{method}");
            assert_eq!(
                reason(method, "<sip:a@b;tag=1", ok.1, ok.2).as_deref(),
                Some("Invalid From header (missing > after URI)"),
                "{method}"
            );
            assert_eq!(
                reason(method, ok.0, "sip:c@d?x=1", ok.2).as_deref(),
                Some("Invalid To header (URI with headers must be enclosed in <>)"),
                "{method}"
            );
            assert_eq!(
                reason(method, ok.0, ok.1, "<sip:a@h>, sip:b@[::1").as_deref(),
                Some("Invalid Contact header (malformed addr-spec)"),
                "{method}"
            );
        }
        // The kind of To URI is still known for REGISTER (RFC 3261 §10.3).
        assert_eq!(
            reason("REGISTER", ok.0, "<tel:+1234>", ok.2).as_deref(),
            Some("REGISTER To is not a SIP URI")
        );
        assert_eq!(reason("BYE", ok.0, "<tel:+1234>", ok.2), None);
    }

    /// The fields found in one pass give the reasons the per-field
    /// lookups gave: missing and repeated fields, in the order of the checks.
    #[test]
    fn missing_and_repeated_fields_are_named_in_check_order() {
        let reason = |method: &str, extra: &str, drop: &str| {
            let text = format!("{method} sip:c@d SIP/2.0\n{BASE}CSeq: 1 {method}\n{extra}l: 0\n\n");
            let text: String = text
                .lines()
                .filter(|l| drop.is_empty() || !l.starts_with(drop))
                .map(|l| format!("{l}\n"))
                .collect();
            validate_request(&req(&text)).err().map(|e| e.reason)
        };
        for method in ["INVITE", "BYE"] {
            assert_eq!(reason(method, "", ""), None);
            for (extra, drop, want) in [
                ("", "From:", "Missing From header"),
                ("", "To:", "Missing To header"),
                ("", "Call-ID:", "Missing Call-ID header"),
                ("", "CSeq:", "Missing CSeq header"),
                ("From: <sip:x@y>;tag=2\n", "", "Duplicate From header"),
                ("To: <sip:x@y>\n", "", "Duplicate To header"),
                ("i: z@y\n", "", "Duplicate Call-ID header"),
                ("CSeq: 2 BYE\n", "", "Duplicate CSeq header"),
                (
                    "Max-Forwards: 70\nMax-Forwards: 69\n",
                    "",
                    "Duplicate Max-Forwards header",
                ),
                (
                    "Max-Forwards: 256\n",
                    "",
                    "Invalid Max-Forwards header (greater than 255)",
                ),
                (
                    "c: a/b\nContent-Type: a/b\n",
                    "",
                    "Duplicate Content-Type header",
                ),
                ("Expires: 1\nExpires: 2\n", "", "Duplicate Expires header"),
                (
                    "Expires: x\n",
                    "",
                    "Invalid Expires header (not a number of seconds)",
                ),
                (
                    "Require: a b\n",
                    "",
                    "Invalid Require header (not a comma-separated token list)",
                ),
                (
                    "Proxy-Require: ,\n",
                    "",
                    "Invalid Proxy-Require header (not a comma-separated token list)",
                ),
                (
                    "Route: <sip:x\n",
                    "",
                    "Invalid Route header (missing > after URI)",
                ),
                (
                    "Date: Sat, 13 Nov 2010 23:29:00 PST\n",
                    "",
                    "Date is not in GMT",
                ),
                // The first failing check wins: To before Max-Forwards.
                (
                    "Max-Forwards: x\nTo: <sip:x@y>\n",
                    "",
                    "Duplicate To header",
                ),
                ("Expires: x\nCSeq: 3 BYE\n", "", "Duplicate CSeq header"),
            ] {
                assert_eq!(
                    reason(method, extra, drop).as_deref(),
                    Some(want),
                    "{method} {extra:?} {drop:?}"
                );
            }
        }
        // A Date in GMT, a second one ignored (only the first is read).
        assert_eq!(
            reason("BYE", "Date: Sat, 13 Nov 2010 23:29:00 GMT\nDate: x\n", ""),
            None
        );
    }

    #[test]
    fn tel_uri_is_accepted_and_body_without_type_is_415() {
        let r = req(&format!(
            "INVITE tel:+4930123 SIP/2.0\n{BASE}CSeq: 1 INVITE\nl: 2\n\nab"
        ));
        assert!(validate_request(&r).is_ok());
        let policy = Policy {
            accept: Some(&["application/sdp"]),
            ..Policy::default()
        };
        assert_eq!(
            validate_request_with(&r, &policy).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
