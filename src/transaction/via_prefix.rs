//! The branch of our own requests' top Via, read without parsing the Via.
//!
//! A TU writes the same top Via into every request it sends from one
//! address but for the branch, e.g. `SIP/2.0/UDP 192.0.2.1:5060;branch=`,
//! a new branch, `;rport`. The client transaction is keyed by the branch
//! (§17.1.3) and §18.1.2 needs the sent-by; both come from a full parse of
//! the first such Via, and [`ViaPrefixes`] then remembers the bytes of the
//! value before the branch. A later value starting with the same bytes has
//! the same sent-protocol, sent-by and parameters before `branch` (the
//! grammar reads left to right), so its sent-by is one already learned and
//! only its branch needs reading: the token after the prefix, ending the
//! value or followed by `;` or `,`. Anything else (LWS, a quoted or empty
//! branch, another prefix) is parsed in full. Parameters after the branch
//! are not read on this path: none of them is part of the key.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::sip::Via;

/// The most prefixes remembered: one per address (and transport) the TU
/// sends from; more are parsed in full.
pub(crate) const MAX_PREFIXES: usize = 8;

/// What precedes the branch value in a prefix.
const BRANCH_EQ: &[u8] = b";branch=";

/// RFC 3261 §25.1 token characters (alphanumerics and `-.!%*_+`'~`),
/// as a table: the branch is read a byte at a time on every message.
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let extra = b"-.!%*_+`'~";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// Whether `c` may appear in a branch written without quotes.
fn is_token(c: u8) -> bool {
    TOKEN[usize::from(c)]
}

/// The length of the token at the start of `rest` when it is a whole
/// parameter value: non-empty and followed by nothing, `;` or `,`.
fn token_value_len(rest: &[u8]) -> Option<usize> {
    let len = rest
        .iter()
        .position(|&c| !is_token(c))
        .unwrap_or(rest.len());
    match rest.get(len) {
        _ if len == 0 => None,
        None | Some(b';' | b',') => Some(len),
        Some(_) => None,
    }
}

/// Remembered Via prefixes of our requests (see the module docs).
///
/// Read on every request we send and every response we receive, learned
/// once per address: the prefixes fill the slots from the first, each set
/// once, so a reader walks the set ones without taking a reference count
/// or a lock.
#[derive(Debug, Default)]
pub(crate) struct ViaPrefixes {
    known: [OnceLock<Bytes>; MAX_PREFIXES],
}

impl ViaPrefixes {
    /// The prefixes learned so far, in the order they were learned (the
    /// slots are filled from the first: the first empty one ends them).
    fn known(&self) -> impl Iterator<Item = &Bytes> {
        self.known.iter().map_while(OnceLock::get)
    }

    /// The branch of `value` (the first Via field of a request we send, or
    /// of a response to one) when it starts with a remembered prefix: a
    /// slice of `value` (a key keeps a copy), token characters only, so
    /// ASCII (not checked again as UTF-8: it runs for every message).
    pub(crate) fn branch<'a>(&self, value: &'a Bytes) -> Option<&'a [u8]> {
        let start = self.known().find(|p| value.starts_with(p))?.len();
        let len = token_value_len(value.get(start..)?)?;
        value.get(start..start + len)
    }

    /// Remembers the part of `value` before its branch, given `via`, its
    /// parse, when the branch is written as [`ViaPrefixes::branch`] reads
    /// it. The caller has learned `via`'s sent-by already.
    pub(crate) fn learn(&self, value: &Bytes, via: &Via) {
        let Some(branch) = via.params.get("branch").flatten() else {
            return;
        };
        // Where the parsed branch lies in `value` (the parser shares the
        // field's bytes; a copy, e.g. of an escaped value, is not used).
        let Some(start) = (branch.as_ptr() as usize).checked_sub(value.as_ptr() as usize) else {
            return;
        };
        let (Some(prefix), Some(rest)) = (value.get(..start), value.get(start..)) else {
            return;
        };
        if !prefix.ends_with(BRANCH_EQ) || token_value_len(rest) != Some(branch.len()) {
            return;
        }
        if self.known().any(|p| p == prefix) {
            return;
        }
        let prefix = Bytes::copy_from_slice(prefix);
        // The first empty slot, unless another thread fills it first (then
        // the next one, or none if that thread learned this prefix).
        for slot in &self.known {
            match slot.get() {
                Some(p) if *p == prefix => return,
                Some(_) => {}
                None => match slot.set(prefix.clone()) {
                    Ok(()) => return,
                    Err(_) if slot.get() == Some(&prefix) => return,
                    Err(_) => {}
                },
            }
        }
    }

    /// How many prefixes are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.known().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{HeaderName, Headers};

    fn parsed(value: &'static str) -> (Bytes, Via) {
        let mut h = Headers::new();
        h.push(HeaderName::Via, value);
        let via = h.top_via().unwrap();
        (h.get(&HeaderName::Via).unwrap().clone(), via)
    }

    #[test]
    fn a_known_prefix_gives_the_branch_a_full_parse_gives() {
        let table = ViaPrefixes::default();
        let (first, via) = parsed("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKvpbx-1-o1-aa;rport");
        assert_eq!(table.branch(&first), None, "nothing learned yet");
        table.learn(&first, &via);
        for value in [
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKvpbx-2-o1-bb;rport",
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK.x!%*_+`'~",
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKlast",
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa,SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKb",
        ] {
            let (bytes, via) = parsed(value);
            let branch = table.branch(&bytes).expect(value);
            assert_eq!(Some(branch), via.branch().map(str::as_bytes), "{value}");
            // It shares the field's bytes.
            assert!(bytes.as_ptr_range().contains(&branch.as_ptr()));
        }
    }

    #[test]
    fn the_token_table_holds_exactly_the_rfc_3261_token_characters() {
        for c in 0..=255u8 {
            let token = c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c);
            assert_eq!(is_token(c), token, "{c:#04x}");
        }
    }

    #[test]
    fn anything_else_is_left_to_the_full_parse() {
        let table = ViaPrefixes::default();
        let (first, via) = parsed("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1");
        table.learn(&first, &via);
        for value in [
            // Another sent-by, transport or parameter before the branch.
            "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK2",
            "SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK2",
            "SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK2",
            // A branch not written as a bare token ending the parameter.
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK2 ;rport",
            "SIP/2.0/UDP 192.0.2.1:5060;branch=\"z9hG4bK2\"",
            "SIP/2.0/UDP 192.0.2.1:5060;branch=",
            "SIP/2.0/UDP 192.0.2.1:5060;branch=;rport",
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK2=3",
            "SIP/2.0/UDP 192.0.2.1:5060;branch=[::1]",
        ] {
            assert_eq!(
                table.branch(&Bytes::from_static(value.as_bytes())),
                None,
                "{value}"
            );
        }
    }

    #[test]
    fn only_prefixes_ending_in_the_branch_as_written_are_learned() {
        for value in [
            "SIP/2.0/UDP 192.0.2.1:5060;Branch=z9hG4bK1",
            "SIP/2.0/UDP 192.0.2.1:5060;branch = z9hG4bK1",
            "SIP/2.0/UDP 192.0.2.1:5060;branch=\"z9hG4bK1\"",
            "SIP/2.0/UDP 192.0.2.1:5060;rport",
        ] {
            let table = ViaPrefixes::default();
            let (bytes, via) = parsed(value);
            table.learn(&bytes, &via);
            assert_eq!(table.len(), 0, "{value}");
        }
        // A parse of other bytes than the field's teaches nothing.
        let table = ViaPrefixes::default();
        let (_, via) = parsed("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1");
        table.learn(
            &Bytes::copy_from_slice(b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1"),
            &via,
        );
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn prefixes_learned_at_once_by_several_threads_are_kept_once_each() {
        let table = ViaPrefixes::default();
        let values: Vec<(Bytes, Via)> = (0..MAX_PREFIXES)
            .map(|i| {
                let value = format!("SIP/2.0/UDP 192.0.2.{i}:5060;branch=z9hG4bK1");
                let mut h = Headers::new();
                h.push(HeaderName::Via, value);
                let via = h.top_via().unwrap();
                (h.get(&HeaderName::Via).unwrap().clone(), via)
            })
            .collect();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for (bytes, via) in &values {
                        table.learn(bytes, via);
                    }
                });
            }
        });
        assert_eq!(table.len(), MAX_PREFIXES);
        for i in 0..MAX_PREFIXES {
            let value = format!("SIP/2.0/UDP 192.0.2.{i}:5060;branch=z9hG4bKx{i}");
            let value = Bytes::from(value);
            let branch = table.branch(&value).unwrap();
            assert_eq!(branch, format!("z9hG4bKx{i}").as_bytes());
        }
    }

    #[test]
    fn at_most_max_prefixes_are_kept() {
        let table = ViaPrefixes::default();
        for port in 0..MAX_PREFIXES + 2 {
            let value = format!("SIP/2.0/UDP 192.0.2.1:{};branch=z9hG4bK1", 6000 + port);
            let mut h = Headers::new();
            h.push(HeaderName::Via, value);
            table.learn(h.get(&HeaderName::Via).unwrap(), &h.top_via().unwrap());
            // The same one again is not added twice.
            table.learn(h.get(&HeaderName::Via).unwrap(), &h.top_via().unwrap());
        }
        assert_eq!(table.len(), MAX_PREFIXES);
    }
}
