//! The UDP receive path (src/app.rs, `LayerInput`; docs/architecture.md)
//! with the real binary, a UDP caller and a real TCP callee (the test's own
//! socket on the routed port) whose connect waits.
//!
//! A UDP message whose step sends over TCP does not wait for the
//! connection: the message is queued on the connection being opened (one
//! per destination, written in order once connected), so the messages
//! behind it are handled at once, and what they send to that callee goes
//! out behind it. Here the step is the ACK of a non-2xx final response to
//! an INVITE sent over TCP that comes back as a datagram (RFC 3261
//! §17.1.1.3: the ACK goes where the INVITE went); it needs a new
//! connection, and the callee's accept queue is full, so the connect waits
//! until the test makes room: long enough to send and answer thousands of
//! datagrams behind it. (Steps that do wait, a UDP send with the outbox
//! and the socket buffer full, go to the ordered lane: its unit test is in
//! src/app.rs.)
//!
//! Timing: the kernel drops the daemon's SYNs while the accept queue is
//! full, and room made in the queue is seen by the next SYN only. Linux
//! sends an unanswered SYN again 1, 3, 7, 15, 31 s after the first (the
//! timeout starts at 1 s and doubles); since 6.7 the first few go 1 s
//! apart (`net.ipv4.tcp_syn_linear_timeouts`, default 4): 1, 2, 3, 4, 5,
//! 7, 11, 19, 35 s. Long timeouts fire up to an eighth late (the timer
//! wheel). With the default connect timeout (5 s) the last SYN goes at
//! 3 s (4 s since 6.7): a flood answered that slowly (a loaded machine;
//! 0.4 s on an idle one) left no SYN before the connect gave up, and the
//! ACK and call 2 queued on it were dropped. So the test gives the daemon
//! a longer connect timeout ([`LIMITS`]) and makes room within
//! [`RELEASE_BY`] of the 486.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use vpbx::sip::{HeaderName, Request, Response};

use crate::calls::{cdr_ends, invite, transaction_counter, Rig, Setup, CALL_WAIT, ROUTED};
use crate::ua::{response_to, TcpPeer, UdpUa, ANSWER_WAIT};

/// The lane's capacity: the transport's inbound queue (`TransportConfig`'s
/// default, which the daemon keeps).
const LANE: usize = 4096;
/// OPTIONS sent while the connect waits: more than the lane would hold.
const FLOOD: u32 = LANE as u32 + 300;

/// The daemon's `[limits]`: room for the whole burst while the daemon
/// reads it, and a connect timeout of 30 s, within which the last SYN goes
/// 15 s after the first (19 s since Linux 6.7; the next, at 31 or 35 s,
/// would be too late).
const LIMITS: &str = "udp_receive_buffer = 16777216\ntcp_connect_timeout = \"30s\"\n";
/// Room made in the callee's accept queue later than this after the 486
/// could come after the last SYN within the connect timeout ([`LIMITS`]).
/// After a connect at 15–21 s (19 s and a late timer), call 2's INVITE
/// still has its Timer B (64·T1 = 32 s) and dial timeout
/// ([`DIAL_TIMEOUT`]) to run.
const RELEASE_BY: Duration = Duration::from_secs(15);
/// The callee's `dial_timeout`: longer than [`RELEASE_BY`] plus the
/// exchange that follows.
const DIAL_TIMEOUT: &str = "30s";

/// A listener on the routed port whose accept queue holds one connection
/// (backlog 0): with one connection queued unaccepted, the kernel drops
/// further SYNs, and the connecting side sends its SYN again later (see
/// the module doc).
fn callee_listener(port: u16) -> TcpListener {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_reuse_address(true).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    sock.listen(0).unwrap();
    sock.into()
}

fn header(req: &Request, name: HeaderName) -> String {
    let v = req.headers.get(&name).expect("header in the request");
    std::str::from_utf8(v).unwrap().trim().to_owned()
}

/// The CANCEL of [`invite`] number `i` (RFC 3261 §9.1: its Via, Call-ID,
/// From, To and CSeq number).
fn cancel(number: &str, ua: &UdpUa, i: u32) -> String {
    let local = ua.local();
    format!(
        "CANCEL sip:{number}@{server} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKov{i};rport\r\n\
         From: <sip:load@{local}>;tag=ov{i}\r\n\
         To: <sip:{number}@{server}>\r\n\
         Call-ID: overload-{i}@{local}\r\n\
         CSeq: 1 CANCEL\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        server = ua.server
    )
}

/// OPTIONS number `i` (its CSeq) of the probe UA.
fn options(ua: &UdpUa, i: u32) -> String {
    let local = ua.local();
    format!(
        "OPTIONS sip:{server} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bKlane{i};rport\r\n\
         From: <sip:probe@{local}>;tag=lane{i}\r\n\
         To: <sip:{server}>\r\n\
         Call-ID: lane-{i}@{local}\r\n\
         CSeq: {i} OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        server = ua.server
    )
}

/// A kernel receive buffer for a burst of thousands of datagrams (forced
/// past `net.core.rmem_max` when the tests run as root).
fn big_receive_buffer(sock: &UdpSocket) {
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(sock, 16 << 20).is_err() {
        socket2::SockRef::from(sock)
            .set_recv_buffer_size(16 << 20)
            .unwrap();
    }
}

/// The value of `name=` in the daemon's `transport counters:` exit line.
fn transport_counter(stdout: &[String], name: &str) -> u64 {
    let line = stdout
        .iter()
        .find_map(|l| l.strip_prefix("transport counters: "))
        .unwrap_or_else(|| panic!("no transport counters in {stdout:?}"));
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        .parse()
        .unwrap()
}

fn method_of(r: &Response) -> String {
    r.cseq().unwrap().method.as_str().to_owned()
}

#[test]
fn udp_messages_behind_a_tcp_connect_are_not_held_and_the_callee_gets_its_messages_in_order() {
    let mut rig = Rig::start(
        &["udp:127.0.0.1:0", "tcp:127.0.0.1:0"],
        Setup {
            callee_transport: "tcp",
            dial_timeout: DIAL_TIMEOUT,
            limits: LIMITS,
            ..Setup::default()
        },
    );
    let server = rig.daemon().addr("udp", false);
    let listener = callee_listener(rig.uas_port);
    let caller = UdpUa::new(server);
    let probe = UdpUa::new(server);
    big_receive_buffer(&probe.sock);

    // Call 1 reaches the callee over the connection the daemon opens.
    caller.send(invite(ROUTED, &caller, 1).as_bytes());
    let mut first =
        TcpPeer::accept(&listener, CALL_WAIT).expect("the daemon connects to the callee");
    let invite1 = first
        .recv_request(CALL_WAIT)
        .expect("the INVITE reaches the callee");
    assert_eq!(invite1.method.as_str(), "INVITE");
    let via1 = header(&invite1, HeaderName::Via);
    // The callee ends that connection; the daemon closes it once it is
    // out of its table (it stays writable a moment after the peer's FIN).
    first.stream.shutdown(Shutdown::Write).unwrap();
    assert!(
        first.closed_within(ANSWER_WAIT),
        "the daemon kept the connection"
    );
    // The callee's accept queue full: the next connect waits.
    let queued = TcpStream::connect(listener.local_addr().unwrap()).unwrap();

    // The callee's 486 as a datagram: its ACK needs a new connection.
    let callee_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = response_to(&invite1, "486 Busy Here", &via1, "callee1", "");
    // Before the daemon's first SYN, which the 486 starts.
    let busy_sent = Instant::now();
    callee_udp.send_to(busy.as_bytes(), server).unwrap();
    // Behind it: call 2 and its CANCEL, then more OPTIONS than the lane
    // would hold.
    caller.send(invite(ROUTED, &caller, 2).as_bytes());
    caller.send(cancel(ROUTED, &caller, 2).as_bytes());
    let sent = Instant::now();
    for i in 1..=FLOOD {
        probe.send(options(&probe, i).as_bytes());
    }
    // While the connect waits, every OPTIONS is answered, in the order sent.
    let mut answered = Vec::new();
    while answered.len() < FLOOD as usize {
        let r = probe.recv(ANSWER_WAIT).unwrap_or_else(|| {
            panic!(
                "{} of {FLOOD} answered while the connect waited",
                answered.len()
            )
        });
        assert_eq!(r.status.as_u16(), 200, "{r:?}");
        answered.push(r.cseq().unwrap().seq);
    }
    assert!(
        answered.windows(2).all(|w| w[0] < w[1]),
        "OPTIONS answered out of order"
    );
    eprintln!("{FLOOD} OPTIONS answered in {:?}", sent.elapsed());

    // Room in the accept queue: the daemon's next SYN gets through.
    drop(TcpPeer::accept(&listener, ANSWER_WAIT).expect("the queued connection"));
    drop(queued);
    let released = Instant::now();
    let since_486 = released - busy_sent;
    assert!(
        since_486 < RELEASE_BY,
        "room made {since_486:?} after the 486: no SYN left before the connect gives up"
    );
    // Each SYN goes at most 2s + 1 after the first when the one before it
    // went s after it (both schedules in the module doc), and the first
    // goes after `busy_sent`: the next one comes at most `since_486` + 1 s
    // after the release. ANSWER_WAIT more for a late timer (an eighth of
    // at most 8 s) or accept on a loaded machine.
    let syn_wait = since_486 + Duration::from_secs(1) + ANSWER_WAIT;
    let mut second = TcpPeer::accept(&listener, syn_wait).unwrap_or_else(|| {
        panic!("the daemon did not connect again for the ACK within {syn_wait:?} of the room made {since_486:?} after the 486")
    });
    eprintln!(
        "room made {since_486:?} after the 486, the daemon connected {:?} later",
        released.elapsed()
    );
    // In order: the ACK of the 486, then call 2, which came after it.
    let ack = second.recv_request(CALL_WAIT).expect("the ACK of the 486");
    assert_eq!(ack.method.as_str(), "ACK");
    assert_eq!(
        ack.top_via().unwrap().branch(),
        invite1.top_via().unwrap().branch()
    );
    let invite2 = second
        .recv_request(CALL_WAIT)
        .expect("call 2's INVITE, behind the ACK");
    assert_eq!(invite2.method.as_str(), "INVITE");
    let via2 = header(&invite2, HeaderName::Via);
    let contact = format!("Contact: <sip:callee@127.0.0.1:{}>\r\n", rig.uas_port);
    second.send(response_to(&invite2, "180 Ringing", &via2, "callee2", &contact).as_bytes());
    // The caller's CANCEL, which came after its INVITE, follows it.
    let cancel2 = second
        .recv_request(CALL_WAIT)
        .expect("call 2's CANCEL reaches the callee");
    assert_eq!(cancel2.method.as_str(), "CANCEL");
    let via = header(&cancel2, HeaderName::Via);
    second.send(response_to(&cancel2, "200 OK", &via, "callee2", "").as_bytes());
    second.send(response_to(&invite2, "487 Request Terminated", &via2, "callee2", "").as_bytes());
    let ack2 = second.recv_request(CALL_WAIT).expect("the ACK of the 487");
    assert_eq!(ack2.method.as_str(), "ACK");

    eprintln!(
        "the callee's messages came {:?} after the release",
        released.elapsed()
    );

    // The callers: call 1 busy, call 2 cancelled.
    let mut finals = Vec::new();
    while finals.len() < 3 {
        let r = caller
            .recv_final(CALL_WAIT)
            .unwrap_or_else(|| panic!("the callers' answers so far: {finals:?}"));
        finals.push((
            r.call_id().unwrap().to_string(),
            method_of(&r),
            r.status.as_u16(),
        ));
    }
    finals.sort();
    let local = caller.local();
    assert_eq!(
        finals,
        [
            (format!("overload-1@{local}"), "INVITE".to_owned(), 486),
            (format!("overload-2@{local}"), "CANCEL".to_owned(), 200),
            (format!("overload-2@{local}"), "INVITE".to_owned(), 487),
        ]
    );
    let cdrs = rig.stop();
    let ends = cdr_ends(&cdrs);
    assert_eq!(
        ends,
        [("busy".to_owned(), 486), ("caller_hangup".to_owned(), 487)],
        "{cdrs:#?}"
    );
    // Nothing was refused for want of room.
    assert_eq!(transport_counter(&rig.exit_stdout, "overload_rejected"), 0);
    assert_eq!(transaction_counter(&rig, "overload_rejected"), 0);
}
