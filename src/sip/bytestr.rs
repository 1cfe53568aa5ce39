//! [`ByteStr`]: UTF-8 text that shares the received buffer.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

/// UTF-8 text that is a slice of the received buffer (zero-copy).
///
/// The bytes are checked to be UTF-8 once, when the value is built; the
/// inner [`ByteString`] keeps that guarantee, so the `str` view is free (no
/// re-validation on every access).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteStr(ByteString);

impl ByteStr {
    /// A `ByteStr` over static text, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        ByteStr(ByteString::from_static(s))
    }

    /// Wraps `bytes` after checking that they are UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        ByteString::try_from(bytes).map(ByteStr)
    }

    /// Wraps bytes that the grammar guarantees to be ASCII (tokens, hosts,
    /// URI characters). Without `unsafe` they are still checked, once (the
    /// ASCII fast path of the UTF-8 check); bytes that are not UTF-8, which
    /// the grammar rules out, would give the empty text.
    #[inline]
    pub(crate) fn from_ascii(bytes: Bytes) -> Self {
        debug_assert!(bytes.is_ascii());
        ByteStr(ByteString::try_from(bytes).unwrap_or_default())
    }

    /// Wraps `bytes`, replacing invalid UTF-8 sequences (copies only then).
    pub fn from_utf8_lossy(bytes: Bytes) -> Self {
        // `ByteString::try_from` drops the bytes on failure, so check first
        // (the valid text is then checked twice: short, rare values only).
        match std::str::from_utf8(&bytes) {
            Ok(_) => ByteStr(ByteString::try_from(bytes).unwrap_or_default()),
            Err(_) => ByteStr(ByteString::from(
                String::from_utf8_lossy(&bytes).into_owned(),
            )),
        }
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        self.0.as_bytes()
    }

    /// Gives back the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }

    /// ASCII case-insensitive comparison (SIP tokens, header names, schemes).
    pub fn eq_ignore_ascii_case(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
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

// Hash like `str` so that `Borrow<str>` lookups work in maps.
impl Hash for ByteStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl From<&'static str> for ByteStr {
    fn from(s: &'static str) -> Self {
        ByteStr::from_static(s)
    }
}

impl From<String> for ByteStr {
    fn from(s: String) -> Self {
        ByteStr(ByteString::from(s))
    }
}

impl From<ByteStr> for Bytes {
    fn from(s: ByteStr) -> Bytes {
        s.0.into_bytes()
    }
}

impl PartialEq<str> for ByteStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ByteStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
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
    fn shares_the_buffer_it_was_built_from() {
        const STATIC: ByteStr = ByteStr::from_static("INVITE");
        assert_eq!(STATIC, "INVITE");
        let buf = Bytes::from(b"SIP/2.0 180 Ringing\xe4".to_vec());
        let reason = ByteStr::from_utf8(buf.slice(12..19)).unwrap();
        assert_eq!(reason.as_str(), "Ringing");
        assert_eq!(reason.as_bytes().as_ptr(), buf[12..].as_ptr());
        let token = ByteStr::from_ascii(buf.slice(0..3));
        assert_eq!(&*token, "SIP");
        let back: Bytes = token.clone().into();
        assert_eq!(back.as_ptr(), buf.as_ptr());
        assert_eq!(token.into_bytes(), back);
        // Valid text is kept as is, invalid text is replaced by a copy.
        let lossy = ByteStr::from_utf8_lossy(buf.slice(12..));
        assert_eq!(lossy.as_str(), "Ringing\u{fffd}");
        let kept = ByteStr::from_utf8_lossy(buf.slice(12..19));
        assert_eq!(kept.as_bytes().as_ptr(), buf[12..].as_ptr());
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
