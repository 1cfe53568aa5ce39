//! Fresh identifiers for our side of a call: tags, branches and Call-IDs
//! (RFC 3261 §19.3: globally unique, cryptographically random).

use std::fmt::Write;

use super::call::Leg;
use crate::sip::ByteStr;

/// Prefix of every Via branch we create: the magic cookie of RFC 3261
/// §8.1.1.7 plus our marker, so an INVITE that comes back to us carrying one
/// of our own branches is recognized as a loop.
pub const BRANCH_PREFIX: &str = "z9hG4bKvpbx";

fn hex(n: usize, prefix: &str, suffix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 2 * n + suffix.len());
    s.push_str(prefix);
    for _ in 0..n / 8 {
        let _ = write!(s, "{:016x}", rand::random::<u64>());
    }
    s.push_str(suffix);
    s
}

/// A From/To tag (64 random bits).
pub fn tag() -> ByteStr {
    ByteStr::from(hex(8, "", ""))
}

/// A Via branch with the magic cookie and our marker, naming the call, the
/// leg and the CSeq number of the request it goes on, plus 64 random bits
/// for uniqueness: `z9hG4bKvpbx-<call>-<i|o><cseq>-<random>`.
pub fn branch_for(call: u64, leg: Leg, seq: u32) -> ByteStr {
    let l = match leg {
        Leg::Inbound => 'i',
        Leg::Outbound => 'o',
    };
    ByteStr::from(hex(8, &format!("{BRANCH_PREFIX}-{call:x}-{l}{seq}-"), ""))
}

/// The call, leg and CSeq number a branch of ours names ([`branch_for`]).
pub fn parse_branch(branch: &str) -> Option<(u64, Leg, u32)> {
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

/// A Call-ID `<128 random bits>@host`.
pub fn call_id(host: &str) -> ByteStr {
    let mut s = hex(16, "", "@");
    s.push_str(host);
    ByteStr::from(s)
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
        assert_eq!(parse_branch(&b), Some((0x1f, Leg::Inbound, 12)));
        assert_ne!(b, branch_for(0x1f, Leg::Inbound, 12));
        assert_eq!(parse_branch("z9hG4bKother"), None);
        assert_eq!(parse_branch("z9hG4bKvpbx-zz-o1-0"), None);
        let id = call_id("192.0.2.1");
        assert!(id.ends_with("@192.0.2.1"));
        assert_eq!(id.len(), 32 + 1 + 9);
    }
}
