//! A tiny test UA: sends raw bytes over UDP or TCP and reads the responses,
//! parsed with the crate's own parser.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use vpbx::sip::{self, HeaderName, Limits, Message, Request, Response, StreamParser};

/// How long to wait for a response that must come.
pub const ANSWER_WAIT: Duration = Duration::from_secs(3);
/// How long to wait to be reasonably sure nothing comes.
pub const SILENCE_WAIT: Duration = Duration::from_millis(400);

/// A UDP client socket bound to a free loopback port of `server`'s family.
pub struct UdpUa {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

impl UdpUa {
    pub fn new(server: SocketAddr) -> UdpUa {
        let bind = if server.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let sock = UdpSocket::bind(bind).unwrap();
        UdpUa { sock, server }
    }

    /// A UA on a given loopback address, e.g. the callee's port of a
    /// routing config; `server` is where [`UdpUa::send`] goes.
    pub fn bind(local: SocketAddr, server: SocketAddr) -> UdpUa {
        UdpUa {
            sock: UdpSocket::bind(local).unwrap(),
            server,
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    pub fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).unwrap();
    }

    /// The next response within `wait`, or `None`. Non-responses are a failure.
    pub fn recv(&self, wait: Duration) -> Option<Response> {
        if wait.is_zero() {
            return None;
        }
        let mut buf = vec![0u8; 70_000];
        self.sock.set_read_timeout(Some(wait)).unwrap();
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let bytes = sip::Bytes::copy_from_slice(&buf[..n]);
                match sip::parse_datagram(bytes, &Limits::default()) {
                    Ok(Message::Response(r)) => Some(r),
                    Ok(Message::Request(r)) => panic!("expected a response, got {:?}", r.method),
                    Err(e) => panic!(
                        "unparseable response ({e}):\n{}",
                        String::from_utf8_lossy(&buf[..n])
                    ),
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("udp receive: {e}"),
        }
    }

    /// The next request within `wait` and where it came from, or `None`.
    /// Responses are a failure.
    pub fn recv_request(&self, wait: Duration) -> Option<(Request, SocketAddr)> {
        let mut buf = vec![0u8; 70_000];
        self.sock.set_read_timeout(Some(wait)).unwrap();
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let bytes = sip::Bytes::copy_from_slice(&buf[..n]);
                match sip::parse_datagram(bytes, &Limits::default()) {
                    Ok(Message::Request(r)) => Some((r, from)),
                    Ok(Message::Response(r)) => panic!("expected a request, got {}", r.status),
                    Err(e) => panic!(
                        "unparseable request ({e}):\n{}",
                        String::from_utf8_lossy(&buf[..n])
                    ),
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("udp receive: {e}"),
        }
    }

    /// Sends to another address than the server's.
    pub fn send_to(&self, bytes: &[u8], to: SocketAddr) {
        self.sock.send_to(bytes, to).unwrap();
    }

    /// Responses until a final one (skipping 1xx), or `None` if none in time.
    pub fn recv_final(&self, wait: Duration) -> Option<Response> {
        let deadline = Instant::now() + wait;
        loop {
            let r = self.recv(deadline.saturating_duration_since(Instant::now()))?;
            if !r.status.is_provisional() {
                return Some(r);
            }
        }
    }
}

/// What happened on a TCP connection while waiting.
#[derive(Debug)]
pub enum TcpEvent {
    Response(Box<Response>),
    Closed,
    Silence,
}

/// A TCP client connection with stream framing of what comes back.
pub struct TcpUa {
    pub stream: TcpStream,
    parser: StreamParser,
    closed: bool,
}

impl TcpUa {
    pub fn connect(server: SocketAddr) -> TcpUa {
        let stream = TcpStream::connect_timeout(&server, ANSWER_WAIT).unwrap();
        stream.set_nodelay(true).unwrap();
        TcpUa {
            stream,
            parser: StreamParser::new(Limits::default()),
            closed: false,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// The next response, the peer closing, or silence for `wait`.
    pub fn next(&mut self, wait: Duration) -> TcpEvent {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.parser.next_message() {
                Ok(Some(Message::Response(r))) => return TcpEvent::Response(Box::new(r)),
                Ok(Some(Message::Request(r))) => panic!("expected a response, got {:?}", r.method),
                Ok(None) => {}
                Err(e) => panic!("unparseable response stream: {e}"),
            }
            if self.closed {
                return TcpEvent::Closed;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return TcpEvent::Silence;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.parser.feed(&buf[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return TcpEvent::Silence
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => self.closed = true,
                Err(e) => panic!("tcp read: {e}"),
            }
        }
    }

    /// The next final response (skipping 1xx) or what ended the wait.
    pub fn next_final(&mut self, wait: Duration) -> TcpEvent {
        let deadline = Instant::now() + wait;
        loop {
            match self.next(deadline.saturating_duration_since(Instant::now())) {
                TcpEvent::Response(r) if r.status.is_provisional() => continue,
                other => return other,
            }
        }
    }
}

/// An OPTIONS request with a fresh branch, Call-ID and tag.
pub fn options(
    target: SocketAddr,
    via_transport: &str,
    via_sent_by: SocketAddr,
    tag: &str,
) -> String {
    let host = match target {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    format!(
        "OPTIONS sip:{host}:{port} SIP/2.0\r\n\
         Via: SIP/2.0/{via_transport} {via_sent_by};branch=z9hG4bK-{tag}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@example.com>;tag={tag}\r\n\
         To: <sip:{host}:{port}>\r\n\
         Call-ID: {tag}@test\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        port = target.port()
    )
}

/// A response to `req` as a callee writes it: its From, Call-ID and CSeq,
/// its To with `to_tag`, `via` as the (only) Via (e.g. the request's own or
/// a forged one), and `extra` header lines (each ending in CRLF).
pub fn response_to(req: &Request, status: &str, via: &str, to_tag: &str, extra: &str) -> String {
    let header = |name| {
        let v = req.headers.get(&name).expect("header in the request");
        std::str::from_utf8(v).unwrap().trim().to_owned()
    };
    format!(
        "SIP/2.0 {status}\r\n\
         Via: {via}\r\n\
         From: {from}\r\n\
         To: {to};tag={to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq}\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n",
        from = header(HeaderName::From),
        to = header(HeaderName::To),
        call_id = header(HeaderName::CallId),
        cseq = header(HeaderName::CSeq),
    )
}

/// The far end of a TCP connection the daemon opened (e.g. to a callee):
/// reads the requests that come on it and writes answers.
pub struct TcpPeer {
    pub stream: TcpStream,
    parser: StreamParser,
}

impl TcpPeer {
    /// The next connection `listener` accepts within `wait`, or `None`.
    pub fn accept(listener: &std::net::TcpListener, wait: Duration) -> Option<TcpPeer> {
        let deadline = Instant::now() + wait;
        listener.set_nonblocking(true).unwrap();
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream.set_nodelay(true).unwrap();
                    return Some(TcpPeer {
                        stream,
                        parser: StreamParser::new(Limits::default()),
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("tcp accept: {e}"),
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Reads until the next message or the end of the wait; `Err(true)`
    /// when the daemon closed the connection, `Err(false)` on silence.
    fn next_message(&mut self, wait: Duration) -> Result<Message, bool> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.parser.next_message() {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => panic!("unparseable stream from the daemon: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(false);
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(true),
                Ok(n) => self.parser.feed(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(false)
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Err(true),
                Err(e) => panic!("tcp read: {e}"),
            }
        }
    }

    /// The next request within `wait`, or `None`. Responses are a failure.
    pub fn recv_request(&mut self, wait: Duration) -> Option<Request> {
        match self.next_message(wait) {
            Ok(Message::Request(r)) => Some(r),
            Ok(Message::Response(r)) => panic!("expected a request, got {}", r.status),
            Err(_) => None,
        }
    }

    /// Whether the daemon closes the connection within `wait` (anything it
    /// sends meanwhile is a failure).
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        match self.next_message(wait) {
            Ok(m) => panic!("expected the end of the connection, got {m:?}"),
            Err(closed) => closed,
        }
    }
}
