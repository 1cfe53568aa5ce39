//! Where messages go: response routing (RFC 3261 §18.2.2, RFC 3581 §4),
//! the `received`/`rport` stamp on inbound requests (RFC 3261 §18.2.1),
//! stateless answers built from what a malformed request left us, and the
//! hand-off of parsed messages to the layer above.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

use super::refused::RefusalKey;
use super::{
    Destination, Inbound, InboundHandler, Protocol, ResponsePort, Sent, Shared, Source,
    TransportError,
};
use crate::sip::{
    ByteStr, HeaderName, Headers, Host, Message, Method, ParseError, Request, Response, StatusCode,
};

/// The default SIP port (RFC 3261 §18.2.2: "using port 5060 if none is
/// specified explicitly").
const DEFAULT_PORT: u16 = 5060;

/// Where a response to a request from `source` goes when it cannot use the
/// request's TCP connection (RFC 3261 §18.2.2 with RFC 3581 §4). The
/// transaction layer calls this too, so responses are routed one way.
///
/// The address is always the request's source IP: RFC 3261 §18.2.1 has the
/// server add `received` whenever the sent-by host is not that IP, so
/// "the received address, else the sent-by host" is the source IP either
/// way. The port is the source port when the top Via has `rport`, else as
/// `policy` says (see [`ResponsePort`]); the sent-by port defaults to 5060.
/// `maddr` is ignored (see the module docs). A response whose Via cannot be
/// read is sent back to the source address.
pub fn response_destination(
    response: &Response,
    source: &Source,
    policy: ResponsePort,
) -> Destination {
    let port = match response.headers.top_via_ref() {
        Ok(via) => {
            // rport is a UDP matter (RFC 3581); over TCP this address is
            // only used to reconnect, to the sent-by port.
            let symmetric = source.protocol == Protocol::Udp
                && (via.rport().is_some()
                    || match policy {
                        ResponsePort::SentBy => false,
                        ResponsePort::SourceWhenTranslated => {
                            via.received().is_some() || !host_is(&via.host, source.peer.ip())
                        }
                        ResponsePort::Source => true,
                    });
            if symmetric {
                source.peer.port()
            } else {
                via.port.unwrap_or(DEFAULT_PORT)
            }
        }
        Err(_) => source.peer.port(),
    };
    Destination {
        protocol: source.protocol,
        addr: SocketAddr::new(source.peer.ip(), port),
    }
}

pub(crate) async fn send_response_bytes(
    shared: &Arc<Shared>,
    bytes: Bytes,
    response: &Response,
    to: &Source,
) -> Result<(), TransportError> {
    let dest = response_destination(response, to, shared.config.response_port);
    send_reply(shared, bytes, to, dest).await
}

/// Sends an encoded response to the request that came from `to`: on its
/// TCP connection while open, else to `dest` (see [`response_destination`]);
/// over UDP from the socket that received the request.
pub(crate) async fn send_reply(
    shared: &Arc<Shared>,
    bytes: Bytes,
    to: &Source,
    dest: Destination,
) -> Result<(), TransportError> {
    match to.protocol {
        Protocol::Tcp => {
            if let Some(id) = to.conn {
                match shared.connections.send(id, bytes.clone()) {
                    Ok(()) => {
                        shared.metrics.sent.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    // A new connection would not make the peer read faster.
                    Err(e @ TransportError::Congested(_)) => {
                        shared.metrics.send_errors.fetch_add(1, Ordering::Relaxed);
                        return Err(e);
                    }
                    Err(_) => {}
                }
            }
            // §18.2.2: the connection is gone; open one to the received
            // address and the sent-by port.
            super::tcp::send(shared, bytes, dest.addr).await
        }
        Protocol::Udp => {
            let sock = shared
                .udp_socket_for(to.local)
                .or_else(|| shared.udp_socket_for_family(dest.addr))
                .ok_or(TransportError::NoRoute {
                    protocol: Protocol::Udp,
                    addr: dest.addr,
                })?;
            udp_send(shared, sock, bytes, dest).await
        }
    }
}

/// [`send_reply`] without waiting: over UDP, queued in the socket's outbox
/// (or, when that is full, when the socket takes the datagram at once);
/// over TCP, queued on the request's connection while it is open, else on
/// the one to `dest` (open, being opened, or new: see [`super::tcp::queue`]).
/// `None` when the send would have to wait (a full outbox and socket
/// buffer).
pub(crate) fn try_send_reply(
    shared: &Arc<Shared>,
    bytes: &Bytes,
    to: &Source,
    dest: Destination,
) -> Option<Result<Sent, TransportError>> {
    match to.protocol {
        Protocol::Tcp => {
            if let Some(id) = to.conn {
                match shared.connections.send(id, bytes.clone()) {
                    Ok(()) => {
                        shared.metrics.sent.fetch_add(1, Ordering::Relaxed);
                        return Some(Ok(Sent::Now));
                    }
                    // As in `send_reply`.
                    Err(e @ TransportError::Congested(_)) => {
                        shared.metrics.send_errors.fetch_add(1, Ordering::Relaxed);
                        return Some(Err(e));
                    }
                    Err(_) => {}
                }
            }
            Some(super::tcp::queue(shared, bytes.clone(), dest.addr))
        }
        Protocol::Udp => match shared
            .udp_socket_for(to.local)
            .or_else(|| shared.udp_socket_for_family(dest.addr))
        {
            Some(sock) => try_udp_send(shared, sock, bytes, dest).map(|r| r.map(|()| Sent::Now)),
            None => Some(Err(TransportError::NoRoute {
                protocol: Protocol::Udp,
                addr: dest.addr,
            })),
        },
    }
}

/// [`send_to_destination`] without waiting (see [`try_send_reply`]).
pub(crate) fn try_send_to_destination(
    shared: &Arc<Shared>,
    bytes: &Bytes,
    to: &Destination,
) -> Option<Result<Sent, TransportError>> {
    match to.protocol {
        Protocol::Tcp => Some(super::tcp::queue(shared, bytes.clone(), to.addr)),
        Protocol::Udp => match shared.udp_socket_for_family(to.addr) {
            Some(sock) => try_udp_send(shared, sock, bytes, *to).map(|r| r.map(|()| Sent::Now)),
            None => Some(Err(TransportError::NoRoute {
                protocol: Protocol::Udp,
                addr: to.addr,
            })),
        },
    }
}

pub(crate) async fn send_to_destination(
    shared: &Arc<Shared>,
    bytes: Bytes,
    to: &Destination,
) -> Result<(), TransportError> {
    match to.protocol {
        Protocol::Udp => {
            let sock = shared
                .udp_socket_for_family(to.addr)
                .ok_or(TransportError::NoRoute {
                    protocol: Protocol::Udp,
                    addr: to.addr,
                })?;
            udp_send(shared, sock, bytes, *to).await
        }
        Protocol::Tcp => super::tcp::send(shared, bytes, to.addr).await,
    }
}

/// Sends a datagram: queued in the socket's outbox, which its sender task
/// writes out with one `sendmmsg` per batch ([`super::udp::send_loop`]);
/// sent at once when the outbox is full. A queued datagram that the kernel
/// refuses is counted in `send_errors` and logged, not reported to the
/// caller: UDP gives no delivery report anyway, and the transactions'
/// timers cover a lost datagram.
async fn udp_send(
    shared: &Shared,
    endpoint: &super::udp::UdpEndpoint,
    bytes: Bytes,
    dest: Destination,
) -> Result<(), TransportError> {
    let Err(bytes) = endpoint.queue(bytes, dest.addr) else {
        return Ok(());
    };
    match endpoint.socket.send_to(&bytes, dest.addr).await {
        Ok(_) => {
            shared.metrics.sent.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(source) => {
            shared.metrics.send_errors.fetch_add(1, Ordering::Relaxed);
            Err(TransportError::Io { dest, source })
        }
    }
}

fn try_udp_send(
    shared: &Shared,
    endpoint: &super::udp::UdpEndpoint,
    bytes: &Bytes,
    dest: Destination,
) -> Option<Result<(), TransportError>> {
    if endpoint.queue(bytes.clone(), dest.addr).is_ok() {
        return Some(Ok(()));
    }
    match endpoint.socket.try_send_to(bytes, dest.addr) {
        Ok(_) => {
            shared.metrics.sent.fetch_add(1, Ordering::Relaxed);
            Some(Ok(()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(source) => {
            shared.metrics.send_errors.fetch_add(1, Ordering::Relaxed);
            Some(Err(TransportError::Io { dest, source }))
        }
    }
}

/// Whether a Via sent-by host is this IP address (a name never is: we do
/// not resolve names on the receive path).
fn host_is(host: &Host, ip: IpAddr) -> bool {
    match host {
        Host::Ipv4(h) => IpAddr::V4(*h) == ip,
        Host::Ipv6(h) => IpAddr::V6(*h) == ip,
        Host::Domain(_) => false,
    }
}

/// RFC 3261 §18.2.1 and RFC 3581 §4: add `received` to the top Via when the
/// sent-by host is not the source IP, and when `rport` is present (or the
/// policy asks for the source port, see [`ResponsePort`]), set it to the
/// source port and always add `received`. A request whose top Via does not parse is left
/// alone (the validator answers it 400). The top Via is parsed once, here:
/// the request keeps it parsed (stamped or not) for the layers above.
pub(crate) fn stamp_top_via(request: &mut Request, source: &Source, policy: ResponsePort) {
    let Ok(via) = request.headers.top_via_ref() else {
        return;
    };
    let src_ip = source.peer.ip();
    let translated = !host_is(&via.host, src_ip);
    // The policy's choice is written into the Via as `rport=PORT`, so every
    // layer that routes the response (the transaction layer too) agrees.
    // RFC 3581 §4 fills a requested rport on any transport; the policy
    // adds one only for UDP (TCP answers use the connection).
    let wants_rport = via.rport().is_some()
        || (source.protocol == Protocol::Udp
            && match policy {
                ResponsePort::SentBy => false,
                ResponsePort::SourceWhenTranslated => translated,
                ResponsePort::Source => true,
            });
    if !translated && !wants_rport {
        return;
    }
    let mut via = via.clone();
    via.params
        .set("received", Some(ByteStr::from(src_ip.to_string())));
    if wants_rport {
        via.params
            .set("rport", Some(ByteStr::from(source.peer.port().to_string())));
    }
    // Cannot fail: the top Via parsed above.
    let _ = request.headers.replace_top_via(via);
}

/// A random token for To tags of locally generated responses (RFC 3261
/// §19.3: at least 32 bits of randomness).
pub(crate) fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A response built from the raw headers of a request (RFC 3261 §8.2.6.2
/// copies Via, From, To, Call-ID, CSeq; a To tag is added). Returns `None`
/// when there is no Via to answer to, or when the request is an ACK (never
/// answered).
pub(crate) fn stateless_reply(
    headers: &Headers,
    status: StatusCode,
    reason: String,
) -> Option<Response> {
    headers.get(&HeaderName::Via)?;
    if let Some(cseq) = headers.get(&HeaderName::CSeq) {
        let method = cseq.trim_ascii().rsplit(|b| b.is_ascii_whitespace()).next();
        if method == Some(b"ACK".as_slice()) {
            return None;
        }
    }
    let mut response = Response::for_headers(headers, status).with_reason(reason);
    response.set_to_tag(&new_tag());
    Some(response)
}

/// The answer to bytes that did not parse: 400 (513 when too large) with a
/// reason phrase naming the problem, if the request's headers were readable.
pub(crate) fn reply_to_parse_error(err: &ParseError) -> Option<Response> {
    stateless_reply(err.reply_context()?, err.status(), err.reason_phrase())
}

/// Hands a parsed message to the layer above: to `handler` if given (the
/// UDP receive loops pass the one set with
/// [`super::Transports::set_udp_handler`], while it lives), else into the
/// inbound queue; answers a request 503 when the queue is full or the
/// handler cannot take it (returns that answer for the caller to send).
/// An INVITE refused so is remembered: its retransmissions get the same 503
/// whether or not the queue has room again, and are not reported to the
/// refusal observer a second time (see [`super::refused`]).
pub(crate) fn deliver(
    shared: &Shared,
    handler: Option<&dyn InboundHandler>,
    mut message: Message,
    source: Source,
) -> Option<Response> {
    if let Message::Request(req) = &mut message {
        stamp_top_via(req, &source, shared.config.response_port);
        if req.method == Method::Invite && !shared.refused.is_empty() {
            let key = shared.refused.key(req);
            if shared.refused.contains(key, Instant::now()) {
                shared
                    .metrics
                    .overload_rejected_again
                    .fetch_add(1, Ordering::Relaxed);
                return Some(overload_response(shared, req, key));
            }
        }
    }
    let inbound = Inbound { message, source };
    let handed_back = match handler {
        Some(handler) => handler.handle(inbound),
        _ => match shared.inbound.try_send(inbound) {
            Ok(()) => None,
            Err(TrySendError::Full(inbound) | TrySendError::Closed(inbound)) => Some(inbound),
        },
    };
    match handed_back {
        None => {
            shared
                .metrics
                .messages_delivered
                .fetch_add(1, Ordering::Relaxed);
            None
        }
        Some(Inbound { message, .. }) => match message {
            Message::Request(req) if req.method != Method::Ack => {
                shared
                    .metrics
                    .overload_rejected
                    .fetch_add(1, Ordering::Relaxed);
                let key = shared.refused.key(&req);
                if req.method == Method::Invite {
                    shared.refused.insert(key, Instant::now());
                }
                if let Some(refusals) = &shared.config.refusals {
                    refusals.refused(&req, StatusCode::SERVICE_UNAVAILABLE);
                }
                Some(overload_response(shared, &req, key))
            }
            _ => {
                shared
                    .metrics
                    .overload_dropped
                    .fetch_add(1, Ordering::Relaxed);
                None
            }
        },
    }
}

/// The 503 with Retry-After refusing `req` (whose key is `key`) for
/// overload; the same for each retransmission of `req` (RFC 3261 §8.2.7).
fn overload_response(shared: &Shared, req: &Request, key: RefusalKey) -> Response {
    let mut resp = Response::for_request(req, StatusCode::SERVICE_UNAVAILABLE);
    resp.set_to_tag(&shared.refused.to_tag(key));
    resp.headers.push(
        HeaderName::RetryAfter,
        Bytes::from(shared.config.overload_retry_after.to_string()),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Via;

    fn request(via: &str) -> Request {
        let text = format!(
            "OPTIONS sip:a@example.com SIP/2.0\r\nVia: {via}\r\nFrom: <sip:b@example.com>;tag=1\r\n\
             To: <sip:a@example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match crate::sip::parse_datagram(Bytes::from(text), &crate::sip::Limits::default()) {
            Ok(Message::Request(r)) => r,
            other => panic!("fixture does not parse: {other:?}"),
        }
    }

    fn udp_source(peer: &str) -> Source {
        Source {
            protocol: Protocol::Udp,
            peer: peer.parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        }
    }

    fn stamped(via: &str, peer: &str, policy: ResponsePort) -> (Via, Destination) {
        let mut req = request(via);
        let source = udp_source(peer);
        stamp_top_via(&mut req, &source, policy);
        let resp = Response::for_request(&req, StatusCode::OK);
        let top = req.top_via().unwrap();
        // What the layers above read without parsing it again is what the
        // stamped field says (a clone parses afresh).
        assert_eq!(req.clone().top_via().unwrap(), top, "{via}");
        (top, response_destination(&resp, &source, policy))
    }

    #[test]
    fn sent_by_equal_to_source_gets_no_received_and_the_sent_by_port() {
        let (via, dest) = stamped(
            "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1",
            "192.0.2.1:40000",
            ResponsePort::SourceWhenTranslated,
        );
        assert_eq!(via.received(), None);
        assert_eq!(dest.addr, "192.0.2.1:5070".parse().unwrap());
    }

    #[test]
    fn sent_by_without_port_means_5060() {
        let (_, dest) = stamped(
            "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
            "192.0.2.1:40000",
            ResponsePort::SentBy,
        );
        assert_eq!(dest.addr, "192.0.2.1:5060".parse().unwrap());
    }

    #[test]
    fn translated_sent_by_gets_received_and_per_policy_port() {
        let via = "SIP/2.0/UDP pc33.example.com:5070;branch=z9hG4bK1";
        let (v, dest) = stamped(via, "192.0.2.9:40000", ResponsePort::SourceWhenTranslated);
        assert_eq!(v.received(), Some("192.0.2.9"));
        assert_eq!(v.rport(), Some(Some(40000)));
        assert_eq!(dest.addr, "192.0.2.9:40000".parse().unwrap());
        // RFC 3261 §18.2.2 as written: received address, sent-by port.
        let (v, dest) = stamped(via, "192.0.2.9:40000", ResponsePort::SentBy);
        assert_eq!(v.rport(), None);
        assert_eq!(dest.addr, "192.0.2.9:5070".parse().unwrap());
    }

    #[test]
    fn rport_is_filled_and_received_always_added() {
        // RFC 3581 §4: received even though it equals the sent-by host.
        let (v, dest) = stamped(
            "SIP/2.0/UDP 192.0.2.1:5070;rport;branch=z9hG4bK1",
            "192.0.2.1:40000",
            ResponsePort::SentBy,
        );
        assert_eq!(v.rport(), Some(Some(40000)));
        assert_eq!(v.received(), Some("192.0.2.1"));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(dest.addr, "192.0.2.1:40000".parse().unwrap());
    }

    #[test]
    fn source_policy_adds_rport_to_every_request() {
        let (v, dest) = stamped(
            "SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1",
            "192.0.2.1:40000",
            ResponsePort::Source,
        );
        assert_eq!(v.rport(), Some(Some(40000)));
        assert_eq!(dest.addr, "192.0.2.1:40000".parse().unwrap());
    }

    #[test]
    fn only_the_top_via_value_is_stamped() {
        let mut req = request("SIP/2.0/UDP h1.example.com;branch=z9hG4bK1, SIP/2.0/UDP h2.example.com;branch=z9hG4bK2");
        stamp_top_via(
            &mut req,
            &udp_source("[2001:db8::1]:5062"),
            ResponsePort::SentBy,
        );
        let vias = req.via().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(req.top_via_ref().unwrap(), &vias[0]);
        assert_eq!(vias[0].received(), Some("2001:db8::1"));
        assert_eq!(vias[1].received(), None);
        assert_eq!(vias[1].branch(), Some("z9hG4bK2"));
    }

    #[test]
    fn a_stray_comma_after_the_top_via_is_kept_and_rejected() {
        // The stamp rewrites the top Via value only: the empty element after
        // the comma stays as written, and the validator answers it.
        let mut req = request("SIP/2.0/UDP h1.example.com;branch=z9hG4bK1,");
        assert!(crate::sip::validate_request(&req).is_err());
        stamp_top_via(
            &mut req,
            &udp_source("192.0.2.9:40000"),
            ResponsePort::Source,
        );
        assert_eq!(req.top_via_ref().unwrap().received(), Some("192.0.2.9"));
        assert!(req.headers.get(&HeaderName::Via).unwrap().ends_with(b","));
        assert!(crate::sip::validate_request(&req).is_err());
    }

    #[test]
    fn a_top_via_that_does_not_parse_is_left_alone() {
        let mut req = request("SIP/2.0/UDP h1.example.com;branch=z9hG4bK1");
        req.headers
            .set(HeaderName::Via, Bytes::from_static(b"SIP/2.0/UDP ;;"));
        let before = req.clone();
        stamp_top_via(
            &mut req,
            &udp_source("192.0.2.9:40000"),
            ResponsePort::Source,
        );
        assert_eq!(req, before);
    }

    #[test]
    fn stateless_reply_never_answers_ack_and_needs_a_via() {
        let mut req = request("SIP/2.0/UDP h1.example.com;branch=z9hG4bK1");
        let reply = stateless_reply(
            &req.headers,
            StatusCode::BAD_REQUEST,
            "Bad Request (x)".into(),
        )
        .expect("a reply");
        assert_eq!(reply.reason.to_string(), "Bad Request (x)");
        assert!(reply.to().unwrap().tag().is_some());
        req.headers
            .set(HeaderName::CSeq, Bytes::from_static(b"1 ACK"));
        assert!(stateless_reply(&req.headers, StatusCode::BAD_REQUEST, String::new()).is_none());
        req.headers.remove_all(&HeaderName::Via);
        req.headers
            .set(HeaderName::CSeq, Bytes::from_static(b"1 OPTIONS"));
        assert!(stateless_reply(&req.headers, StatusCode::BAD_REQUEST, String::new()).is_none());
    }
}
