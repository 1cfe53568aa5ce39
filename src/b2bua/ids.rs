//! Fresh identifiers for our side of a call: tags, branches and Call-IDs
//! (RFC 3261 §19.3: globally unique, cryptographically random).

use bytes::{BufMut, BytesMut};

use super::call::Leg;
use crate::routing::Number;
use crate::sip::ByteStr;

/// Prefix of every Via branch we create: the magic cookie of RFC 3261
/// §8.1.1.7 plus our marker, so an INVITE that comes back to us carrying one
/// of our own branches is recognized as a loop.
pub const BRANCH_PREFIX: &str = "z9hG4bKvpbx";

/// `v` in lower-case hex, all 16 digits, computed on whole words
/// (each nibble spread to a byte, then turned into its digit without a
/// table lookup per digit).
fn hex64(v: u64) -> [u8; 16] {
    /// The 8 nibbles of `x` one per byte, the most significant first
    /// once written big-endian.
    fn spread(x: u32) -> u64 {
        let x = u64::from(x);
        let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
        let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
        (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f
    }
    /// Each byte (0..=15) as its hex digit: `0`-`9` are `0x30 + b`,
    /// `a`-`f` 39 further on (bytes above 9 carry into bit 4 with 6 added).
    fn digits(x: u64) -> u64 {
        let above9 = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        x + 0x3030_3030_3030_3030 + above9 * 0x27
    }
    let mut out = [0u8; 16];
    // The halves: truncation intended.
    out[..8].copy_from_slice(&digits(spread((v >> 32) as u32)).to_be_bytes());
    out[8..].copy_from_slice(&digits(spread(v as u32)).to_be_bytes());
    out
}

/// Appends `v` in lower-case hex, all 16 digits.
fn put_hex64(out: &mut BytesMut, v: u64) {
    out.put_slice(&hex64(v));
}

/// Appends `v` in lower-case hex without leading zeros.
fn put_hex(out: &mut BytesMut, v: u64) {
    let digits = (64 - v.leading_zeros()).div_ceil(4).max(1) as usize;
    out.put_slice(&hex64(v)[16 - digits..]);
}

fn leg_char(leg: Leg) -> u8 {
    match leg {
        Leg::Inbound => b'i',
        Leg::Outbound => b'o',
    }
}

/// A From/To tag (64 random bits).
pub fn tag() -> ByteStr {
    let mut b = BytesMut::with_capacity(16);
    put_hex64(&mut b, rand::random());
    ByteStr::from_ascii(b.freeze())
}

/// Our tag in the dialog of `leg` of `call`, naming both (so that an
/// in-dialog request finds its call by its To tag, [`parse_tag`]), plus 64
/// random bits: `<call hex><i|o><16 hex>`.
pub fn tag_for(call: u64, leg: Leg) -> ByteStr {
    let mut b = BytesMut::with_capacity(TAG_LEN);
    put_tag_for(&mut b, call, leg);
    ByteStr::from_ascii(b.freeze())
}

/// The longest tag [`tag_for`] writes.
pub(crate) const TAG_LEN: usize = 16 + 1 + 16;

/// Appends [`tag_for`]`(call, leg)` to `out`.
pub(crate) fn put_tag_for(out: &mut BytesMut, call: u64, leg: Leg) {
    put_hex(out, call);
    out.put_u8(leg_char(leg));
    put_hex64(out, rand::random());
}

/// The call and leg a tag of ours names ([`tag_for`]).
pub fn parse_tag(tag: &str) -> Option<(u64, Leg)> {
    let at = tag.find(['i', 'o'])?;
    if at == 0 || at > 16 || tag.len() != at + 17 {
        return None;
    }
    let call = u64::from_str_radix(&tag[..at], 16).ok()?;
    let leg = if tag.as_bytes()[at] == b'i' {
        Leg::Inbound
    } else {
        Leg::Outbound
    };
    Some((call, leg))
}

/// A Via branch with the magic cookie and our marker, naming the call, the
/// leg and the CSeq number of the request it goes on, plus 64 random bits
/// for uniqueness: `z9hG4bKvpbx-<call>-<i|o><cseq>-<random>`.
pub fn branch_for(call: u64, leg: Leg, seq: u32) -> ByteStr {
    let mut b = BytesMut::with_capacity(BRANCH_LEN);
    put_branch(&mut b, call, leg, seq);
    ByteStr::from_ascii(b.freeze())
}

/// The longest branch [`branch_for`] writes.
pub(crate) const BRANCH_LEN: usize = BRANCH_PREFIX.len() + 3 + 16 + 1 + 10 + 16;

/// Appends [`branch_for`]`(call, leg, seq)` to `out`.
pub(crate) fn put_branch(out: &mut BytesMut, call: u64, leg: Leg, seq: u32) {
    put_branch_with(out, call, leg, seq, rand::random());
}

/// [`put_branch`] with `nonce` as its random part: the same branch again
/// for the same `nonce` (an ACK written again, see `Call::write_callee_ack`).
pub(crate) fn put_branch_with(out: &mut BytesMut, call: u64, leg: Leg, seq: u32, nonce: u64) {
    out.put_slice(BRANCH_PREFIX.as_bytes());
    out.put_u8(b'-');
    put_hex(out, call);
    out.put_u8(b'-');
    out.put_u8(leg_char(leg));
    out.put_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.put_u8(b'-');
    put_hex64(out, nonce);
}

/// The call, leg and CSeq number a branch of ours names ([`branch_for`]).
/// Read byte by byte (it runs for every response to our requests), as
/// `u64::from_str_radix(_, 16)` and `u32::from_str` read the numbers.
/// Takes the branch's bytes: a client key's branch is read as token
/// characters and not checked as UTF-8 (`ClientKey::branch_bytes`).
pub fn parse_branch(branch: &[u8]) -> Option<(u64, Leg, u32)> {
    let rest = branch
        .strip_prefix(BRANCH_PREFIX.as_bytes())?
        .strip_prefix(b"-")?;
    let dash = rest.iter().position(|&b| b == b'-')?;
    let call = parse_number(&rest[..dash], 16)?;
    let rest = &rest[dash + 1..];
    let end = rest.iter().position(|&b| b == b'-').unwrap_or(rest.len());
    let (&leg, seq) = rest[..end].split_first()?;
    let leg = match leg {
        b'i' => Leg::Inbound,
        b'o' => Leg::Outbound,
        _ => return None,
    };
    let seq = u32::try_from(parse_number(seq, 10)?).ok()?;
    Some((call, leg, seq))
}

/// An unsigned number in `radix` (10 or 16, either case), with an optional
/// leading `+`, as the standard library reads one; `None` when empty, not
/// a number or beyond `u64`.
fn parse_number(digits: &[u8], radix: u64) -> Option<u64> {
    let digits = digits.strip_prefix(b"+").unwrap_or(digits);
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' if radix == 16 => b - b'a' + 10,
            b'A'..=b'F' if radix == 16 => b - b'A' + 10,
            _ => return None,
        };
        n = n.checked_mul(radix)?.checked_add(u64::from(d))?;
    }
    Some(n)
}

/// The longest E.164 text [`put_e164`] writes: `+` and the 20 digits of
/// a `u64`.
pub(crate) const E164_LEN: usize = 21;

/// Appends `number` as E.164 text (what [`Number::to_e164`] gives).
pub(crate) fn put_e164(out: &mut BytesMut, number: Number) {
    out.put_slice(e164_text(number, &mut [0; E164_LEN]).as_bytes());
}

/// `number` as E.164 text (what [`Number::to_e164`] gives), written into
/// `buf`.
pub(crate) fn e164_text(number: Number, buf: &mut [u8; E164_LEN]) -> &str {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(number.as_u64()).as_bytes();
    buf[0] = b'+';
    buf[1..=digits.len()].copy_from_slice(digits);
    // A `+` and ASCII digits.
    std::str::from_utf8(&buf[..=digits.len()]).unwrap_or_default()
}

/// A Call-ID `<128 random bits>@host`.
pub fn call_id(host: &str) -> ByteStr {
    let mut b = BytesMut::with_capacity(33 + host.len());
    put_call_id(&mut b, host);
    // Hex digits and `@` before a `str`: UTF-8.
    ByteStr::from_utf8(b.freeze()).unwrap_or_default()
}

/// Appends a [`call_id`] for `host` to `out`.
pub(crate) fn put_call_id(out: &mut BytesMut, host: &str) {
    put_hex64(out, rand::random());
    put_hex64(out, rand::random());
    out.put_u8(b'@');
    out.put_slice(host.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_fresh_and_well_formed() {
        let (a, b) = (tag(), tag());
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        let b = branch_for(0x1f, Leg::Inbound, 12);
        assert!(b.starts_with("z9hG4bKvpbx-1f-i12-"));
        assert_eq!(parse_branch(b.as_bytes()), Some((0x1f, Leg::Inbound, 12)));
        assert_ne!(b, branch_for(0x1f, Leg::Inbound, 12));
        assert_eq!(parse_branch(b"z9hG4bKother"), None);
        assert_eq!(parse_branch(b"z9hG4bKvpbx-zz-o1-0"), None);
        assert!(branch_for(0, Leg::Outbound, 0).starts_with("z9hG4bKvpbx-0-o0-"));
        assert_eq!(
            parse_branch(branch_for(u64::MAX, Leg::Outbound, u32::MAX).as_bytes()),
            Some((u64::MAX, Leg::Outbound, u32::MAX))
        );
        let id = call_id("192.0.2.1");
        assert!(id.ends_with("@192.0.2.1"));
        assert_eq!(id.len(), 32 + 1 + 9);
    }

    /// What `parse_branch` read with `split`, `from_str_radix` and `parse`
    /// before it was written byte by byte.
    fn parse_branch_std(branch: &str) -> Option<(u64, Leg, u32)> {
        let rest = branch.strip_prefix(BRANCH_PREFIX)?.strip_prefix('-')?;
        let mut parts = rest.split('-');
        let call = u64::from_str_radix(parts.next()?, 16).ok()?;
        let leg_seq = parts.next()?;
        let leg = match leg_seq.as_bytes().first()? {
            b'i' => Leg::Inbound,
            b'o' => Leg::Outbound,
            _ => return None,
        };
        let seq = leg_seq.get(1..)?.parse().ok()?;
        Some((call, leg, seq))
    }

    #[test]
    fn branches_are_read_as_the_standard_library_reads_them() {
        for b in [
            "z9hG4bKvpbx-1f-i12-0123456789abcdef",
            "z9hG4bKvpbx-1F-o12",
            "z9hG4bKvpbx-+1f-o+12-x",
            "z9hG4bKvpbx-ffffffffffffffff-o4294967295-0",
            "z9hG4bKvpbx-10000000000000000-o1-0",
            "z9hG4bKvpbx-0000000000000000001-o0001-0",
            "z9hG4bKvpbx-1-o4294967296-0",
            "z9hG4bKvpbx-1-o-0",
            "z9hG4bKvpbx-1-x1-0",
            "z9hG4bKvpbx-1-o1a-0",
            "z9hG4bKvpbx--o1-0",
            "z9hG4bKvpbx-+-o1-0",
            "z9hG4bKvpbx-1-o+-0",
            "z9hG4bKvpbx-1-",
            "z9hG4bKvpbx-1",
            "z9hG4bKvpbx-",
            "z9hG4bKvpbx",
            "z9hG4bKvpbx-1-o1--",
            "z9hG4bKvpbx-g-o1-0",
            "z9hG4bKvpbx-1-i\u{e9}-0",
        ] {
            assert_eq!(parse_branch(b.as_bytes()), parse_branch_std(b), "{b}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_branch_is_read_as_the_standard_library_reads_it(
            rest in "[-+0-9a-gA-GioX]{0,30}",
        ) {
            let b = format!("{BRANCH_PREFIX}-{rest}");
            proptest::prop_assert_eq!(parse_branch(b.as_bytes()), parse_branch_std(&b));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_number_is_written_in_hex_as_format_writes_it(v: u64) {
            let (full, short) = (format!("{v:016x}"), format!("{v:x}"));
            proptest::prop_assert_eq!(&hex64(v)[..], full.as_bytes());
            let mut b = BytesMut::new();
            put_hex(&mut b, v);
            proptest::prop_assert_eq!(&b[..], short.as_bytes());
        }
    }

    #[test]
    fn e164_is_written_as_to_e164_writes_it() {
        for n in ["+12025550123", "+74951234567", "+999999999999999"] {
            let n = Number::parse(n).unwrap();
            let mut b = BytesMut::new();
            put_e164(&mut b, n);
            assert_eq!(&b[..], n.to_e164().as_bytes());
            assert_eq!(e164_text(n, &mut [0; E164_LEN]), n.to_e164());
        }
    }

    #[test]
    fn hex_is_written_as_format_writes_it() {
        for v in [0, 1, 0xf, 0x10, 0x2a, 0xdead_beef, u64::MAX >> 4, u64::MAX] {
            let mut b = BytesMut::new();
            put_hex(&mut b, v);
            assert_eq!(&b[..], format!("{v:x}").as_bytes());
            b.clear();
            put_hex64(&mut b, v);
            assert_eq!(&b[..], format!("{v:016x}").as_bytes());
        }
        // Every nibble value in every position.
        for d in 0..16u64 {
            for pos in 0..16 {
                let v = (d << (4 * pos)) | (0x0123_4567_89ab_cdef & !(0xf << (4 * pos)));
                assert_eq!(&hex64(v)[..], format!("{v:016x}").as_bytes());
            }
        }
        let b = branch_for(u64::MAX, Leg::Outbound, u32::MAX);
        assert_eq!(b.len(), BRANCH_LEN);
    }

    #[test]
    fn tags_name_their_call_and_leg() {
        for (call, leg) in [
            (0, Leg::Inbound),
            (0x2a, Leg::Outbound),
            (u64::MAX, Leg::Inbound),
        ] {
            let t = tag_for(call, leg);
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'i' || b == b'o'));
            assert_eq!(parse_tag(&t), Some((call, leg)), "{t}");
        }
        assert_ne!(tag_for(1, Leg::Inbound), tag_for(1, Leg::Inbound));
        assert_eq!(parse_tag("2ai0123456789abcdef"), Some((0x2a, Leg::Inbound)));
        // Not ours: plain random tags, other UAs' tags.
        assert_eq!(parse_tag(&tag()), None);
        for other in [
            "",
            "i0123456789abcdef",
            "2ai0123",
            "zzo0123456789abcdef",
            "1928301774",
        ] {
            assert_eq!(parse_tag(other), None, "{other}");
        }
    }
}
