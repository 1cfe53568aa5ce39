//! Parse arbitrary bytes as a UDP datagram and as a TCP stream; every
//! typed accessor and the validator must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpbx::sip::{parse_datagram, validate_request, Bytes, Limits, Message, StreamParser};

fn poke(m: &Message) {
    let h = m.headers();
    let _ = (
        h.via(),
        h.from(),
        h.to(),
        h.call_id(),
        h.cseq(),
        h.max_forwards(),
        h.contacts(),
    );
    let _ = (
        h.route(),
        h.record_route(),
        h.content_type(),
        h.accept(),
        h.expires(),
    );
    let _ = (
        h.www_authenticate(),
        h.authorization(),
        h.allow(),
        h.require(),
        h.rack(),
    );
    if let Message::Request(r) = m {
        let _ = validate_request(r);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = parse_datagram(Bytes::copy_from_slice(data), &Limits::default()) {
        poke(&m);
    }
    // The first byte picks a chunk size, so partial reads are covered too.
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut p = StreamParser::new(Limits::default());
    for piece in data.chunks(chunk) {
        p.feed(piece);
        loop {
            match p.next_message() {
                Ok(Some(m)) => poke(&m),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
