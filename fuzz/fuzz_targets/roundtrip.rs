//! Whatever parses must survive write → parse, and a second write must
//! be identical to the first (the writer is a fixed point after one pass).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vpbx::sip::{parse_datagram, Bytes, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(m) = parse_datagram(Bytes::copy_from_slice(data), &limits) else {
        return;
    };
    let once = m.to_bytes();
    let Ok(again) = parse_datagram(once.clone(), &limits) else {
        panic!("written message does not parse: {:?}", String::from_utf8_lossy(&once));
    };
    assert_eq!(again.body(), m.body());
    assert_eq!(again.to_bytes(), once);
    let third = parse_datagram(again.to_bytes(), &limits).ok();
    assert_eq!(third.as_ref(), Some(&again));
});
