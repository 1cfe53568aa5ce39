//! [`ByteStr`]: UTF-8 text that shares the received buffer.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;

/// UTF-8 text that is a slice of the received buffer (zero-copy).
///
/// The invariant "the bytes are valid UTF-8" is checked when the value is
/// built; without `unsafe` the `str` view re-validates on access, which is
/// cheap for the short ASCII tokens SIP is made of.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteStr(Bytes);

impl ByteStr {
    /// A `ByteStr` over static text, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        ByteStr(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps `bytes` after checking that they are UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(ByteStr(bytes))
    }

    /// Wraps bytes that the grammar guarantees to be ASCII (tokens, hosts,
    /// URI characters), skipping the UTF-8 check.
    #[inline]
    pub(crate) fn from_ascii(bytes: Bytes) -> Self {
        debug_assert!(bytes.is_ascii());
        ByteStr(bytes)
    }

    /// Wraps `bytes`, replacing invalid UTF-8 sequences (copies only then).
    pub fn from_utf8_lossy(bytes: Bytes) -> Self {
        match std::str::from_utf8(&bytes) {
            Ok(_) => ByteStr(bytes),
            Err(_) => ByteStr(Bytes::from(String::from_utf8_lossy(&bytes).into_owned())),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Valid by construction; the fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Gives back the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// ASCII case-insensitive comparison (SIP tokens, header names, schemes).
    pub fn eq_ignore_ascii_case(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other.as_bytes())
    }
}

impl Deref for ByteStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ByteStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for ByteStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

// Hash like `str` so that `Borrow<str>` lookups work in maps: `str`
// hashes through `Hasher::write_str`, whose default (which hashers cannot
// override on stable Rust) is exactly these two calls. Written out, the
// bytes need no UTF-8 check (the transaction tables hash keys of every
// message).
impl Hash for ByteStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0);
        state.write_u8(0xff);
    }
}

impl From<&'static str> for ByteStr {
    fn from(s: &'static str) -> Self {
        ByteStr::from_static(s)
    }
}

impl From<String> for ByteStr {
    fn from(s: String) -> Self {
        ByteStr(Bytes::from(s))
    }
}

impl From<ByteStr> for Bytes {
    fn from(s: ByteStr) -> Bytes {
        s.0
    }
}

impl PartialEq<str> for ByteStr {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for ByteStr {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Display for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    fn same_hash(b: &impl BuildHasher) {
        for text in ["", "z9hG4bK776asdhds", "\u{e4}\u{20ac}", "a\u{0}b"] {
            let s = ByteStr::from(text.to_owned());
            assert_eq!(b.hash_one(&s), b.hash_one(text), "{text:?}");
            assert_eq!(b.hash_one((&s, 7u8)), b.hash_one((text, 7u8)), "{text:?}");
        }
    }

    #[test]
    fn hashes_as_str_does() {
        same_hash(&std::collections::hash_map::RandomState::new());
        same_hash(&foldhash::fast::RandomState::default());
        same_hash(&foldhash::quality::RandomState::default());
        let mut map = std::collections::HashMap::new();
        map.insert(ByteStr::from("branch-1".to_owned()), 1);
        assert_eq!(map.get("branch-1"), Some(&1));
    }

    #[test]
    fn rejects_invalid_utf8_and_compares_case_insensitively() {
        assert!(ByteStr::from_utf8(Bytes::from_static(b"\xff")).is_err());
        let s = ByteStr::from_utf8(Bytes::from_static(b"Branch")).unwrap();
        assert!(s.eq_ignore_ascii_case("BRANCH"));
        assert_eq!(s, "Branch");
        assert_eq!(
            ByteStr::from_utf8_lossy(Bytes::from_static(b"a\xffb")).as_str(),
            "a\u{fffd}b"
        );
    }
}
