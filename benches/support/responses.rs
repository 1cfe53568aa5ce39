//! Responses built the way the daemon builds them, shared by the parse
//! bench (`benches/parse.rs`) and the allocation test
//! (`tests/sip_allocations.rs`), so both measure the same work.

use bytes::Bytes;
use vpbx::sip::{HeaderName, Request, Response, StatusCode};

/// A UAS answering `req`: a 180 with the request's Via, From, To, Call-ID
/// and CSeq and a To tag, serialised.
pub fn ringing(req: &Request) -> Bytes {
    let mut r = Response::for_request(req, StatusCode::RINGING);
    r.set_to_tag("a6c85cf");
    r.to_bytes()
}

/// A B2BUA's 200 to the caller: the copied headers, our To tag,
/// Record-Route, Contact, the callee's end-to-end headers and SDP.
pub fn relayed_200(req: &Request) -> Bytes {
    let mut r = Response::for_request(req, StatusCode::OK);
    r.set_to_tag("a6c85cf");
    for v in req.headers.get_all(&HeaderName::RecordRoute) {
        r.headers.push(HeaderName::RecordRoute, v.clone());
    }
    r.headers.push(
        HeaderName::Contact,
        Bytes::from_static(b"<sip:pbx@203.0.113.20:5060>"),
    );
    r.headers.push(
        HeaderName::Allow,
        Bytes::from_static(b"INVITE, ACK, CANCEL, BYE"),
    );
    r.headers
        .push(HeaderName::Supported, Bytes::from_static(b"timer"));
    r.headers.push(
        HeaderName::SessionExpires,
        Bytes::from_static(b"1800;refresher=uac"),
    );
    r.headers.push(
        HeaderName::ContentType,
        Bytes::from_static(b"application/sdp"),
    );
    r.body = req.body.clone();
    r.to_bytes()
}
