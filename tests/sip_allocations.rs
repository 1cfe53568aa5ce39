//! Heap allocations of the SIP parser and writer on the daemon's path, per
//! message: parse a datagram, read the fields the transaction layer and
//! the B2BUA need, serialise a message. Counted with dhat's global
//! allocator (its own test binary, so no other test pays for it).
//!
//! The bounds are the counts measured when they were set (see
//! docs/performance.md, "Allocations per message"): a change that adds an
//! allocation on this path fails here and has to say why.

use bytes::{Bytes, BytesMut};
use vpbx::sip::{parse_datagram, validate_request, Limits, Message, Request};

#[path = "../benches/support/responses.rs"]
mod responses;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// The carrier INVITE of `benches/parse.rs` (two Via, Record-Route, SDP).
fn invite() -> Bytes {
    let head = "INVITE sip:+4930123456789@pbx.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-524287-1-7f3a9c;rport\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;received=192.0.2.10;branch=z9hG4bK776asdhds\r\n\
Record-Route: <sip:198.51.100.7;lr;ftag=1928301774>\r\n\
Max-Forwards: 69\r\n\
From: \"Alice Example\" <sip:+4940987654321@carrier.example.net;user=phone>;tag=1928301774\r\n\
To: <sip:+4930123456789@pbx.example.com;user=phone>\r\n\
Call-ID: a84b4c76e66710-3fa1@pc33.carrier.example.net\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+4940987654321@192.0.2.10:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE\r\n\
Supported: 100rel, timer\r\n\
Content-Type: application/sdp\r\n";
    let body = "v=0\r\n\
o=- 3724394400 3724394405 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";
    Bytes::from(format!(
        "{head}Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// Heap blocks allocated so far.
fn blocks() -> u64 {
    dhat::HeapStats::get().total_blocks
}

/// Allocations made by `f` on the input `setup` makes, and its result.
/// The fewest of several runs: the counts are process-wide, and the test
/// harness's own threads may allocate now and then.
fn count_with<S, T>(setup: impl Fn() -> S, f: impl Fn(S) -> T) -> (u64, T) {
    let mut best = None;
    for _ in 0..5 {
        let input = setup();
        let before = blocks();
        let out = f(input);
        let n = blocks() - before;
        match &best {
            Some((m, _)) if *m <= n => {}
            _ => best = Some((n, out)),
        }
    }
    best.expect("ran at least once")
}

/// Allocations made by `f`, and its result (see [`count_with`]).
fn count<T>(f: impl Fn() -> T) -> (u64, T) {
    count_with(|| (), |()| f())
}

// One test function: dhat allows one profiler at a time, and the counts are
// process-wide.
#[test]
fn parse_fields_and_write_allocations_are_bounded() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let datagram = invite();
    let limits = Limits::default();

    // A fresh datagram each time, as the transport hands over.
    let (parse, msg) = count_with(invite, |d| parse_datagram(d, &limits).unwrap());
    let Message::Request(req) = &msg else {
        panic!("expected a request")
    };
    assert_eq!(req.headers.len(), 13);

    let (via, top) = count(|| req.top_via().unwrap());
    assert_eq!(top.branch(), Some("z9hG4bK-524287-1-7f3a9c"));
    let (from, from_addr) = count(|| req.from().unwrap());
    assert_eq!(from_addr.tag(), Some("1928301774"));
    let (to, to_addr) = count(|| req.to().unwrap());
    assert_eq!(to_addr.tag(), None);
    let (cseq, seq) = count(|| req.cseq().unwrap().seq);
    assert_eq!(seq, 314159);
    let (call_id, id) = count(|| req.call_id().unwrap());
    assert_eq!(id, "a84b4c76e66710-3fa1@pc33.carrier.example.net");

    // A fresh message: the first typed reads parse and keep the values
    // (one allocation for the place they are kept); the validator reads
    // them too; after it, reading them again allocates nothing.
    let fresh = || match parse_datagram(invite(), &limits).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => panic!("expected a request"),
    };
    let (first_reads, seq) = count_with(fresh, |r: Request| {
        let _ = (r.top_via_ref().unwrap(), r.from_ref().unwrap());
        let _ = r.to_ref().unwrap();
        r.cseq_ref().unwrap().seq
    });
    assert_eq!(seq, 314159);
    let (validate, validated) = count_with(fresh, |r: Request| {
        validate_request(&r).unwrap();
        r
    });
    let (reads_after_validation, tag) = count(|| {
        let _ = (
            validated.top_via_ref().unwrap(),
            validated.cseq_ref().unwrap(),
        );
        let _ = validated.to_ref().unwrap();
        validated.from_ref().unwrap().tag().map(str::len)
    });
    assert_eq!(tag, Some(10));

    let (to_bytes, wire) = count(|| msg.to_bytes());
    assert_eq!(wire, datagram);
    let (write_into, out) = count_with(
        || BytesMut::with_capacity(4096),
        |mut out| {
            msg.write_into(&mut out);
            out
        },
    );
    assert_eq!(out, datagram);

    // A response built from the request, as a UAS answers (180/200).
    let (response, wire) = count(|| responses::ringing(req));
    assert!(wire.starts_with(b"SIP/2.0 180 Ringing\r\n"));

    // A B2BUA's 200 to the caller: the copied headers, Record-Route,
    // Contact and the callee's end-to-end headers and SDP.
    let (relayed_200, wire) = count(|| responses::relayed_200(req));
    assert!(wire.starts_with(b"SIP/2.0 200 OK\r\n"));

    eprintln!(
        "allocations: parse {parse}, top_via {via}, from {from}, to {to}, cseq {cseq}, \
         call_id {call_id}, to_bytes {to_bytes}, write_into (reused buffer) {write_into}, \
         180 for the request {response}, relayed 200 {relayed_200}, first reads of top Via, \
         From, To, CSeq {first_reads}, validate_request {validate}, the same reads after it \
         {reads_after_validation}"
    );

    // Bounds: the counts measured when they were last set. `parse`
    // includes the `bytes` crate's shared header for the datagram: a
    // `Vec`-backed `Bytes` (as this test makes) allocates it when it is
    // first sliced (the transport's `shared_copy` makes it with the copy).
    // `to_bytes` is the octets and their reference count, made together
    // (`shared_copy`); before, the count was allocated at the first clone,
    // which every message we send gets (its transaction keeps it): the
    // same two allocations, so the 180 and the relayed 200 count one more
    // here than when the count came later.
    assert!(parse <= 2, "parse_datagram: {parse} allocations");
    assert!(via <= 1, "top_via: {via} allocations");
    assert!(from <= 2, "from: {from} allocations");
    assert!(to <= 1, "to: {to} allocations");
    assert_eq!(cseq, 0, "cseq allocates");
    assert_eq!(call_id, 0, "call_id allocates");
    assert!(to_bytes <= 2, "to_bytes: {to_bytes} allocations");
    assert_eq!(
        write_into, 0,
        "write_into into a large enough buffer allocates"
    );
    assert!(response <= 4, "180 for the request: {response} allocations");
    assert!(relayed_200 <= 4, "relayed 200: {relayed_200} allocations");
    assert!(
        first_reads <= 5,
        "first reads of top Via, From, To, CSeq: {first_reads} allocations"
    );
    // 5 since the validator checks To, Contact and Route without building
    // them (7 when it parsed them).
    assert!(validate <= 5, "validate_request: {validate} allocations");
    assert_eq!(
        reads_after_validation, 0,
        "reading what the validator read allocates"
    );
}
