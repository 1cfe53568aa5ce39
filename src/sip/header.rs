//! Header fields: [`HeaderName`] (with the compact forms of RFC 3261 §7.3.3),
//! [`Header`] and the ordered list [`Headers`].

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::access::HeaderError;
use super::bytestr::ByteStr;
use super::grammar::is_token;
use super::name_addr::NameAddr;
use super::values::CSeq;
use super::via::Via;

macro_rules! header_names {
    ($($variant:ident => $canon:expr, $canon_bytes:literal, [$($alias:literal),*];)*) => {
        /// A header field name. Known names are variants; compact forms map to
        /// them (`v` is [`HeaderName::Via`]); the rest is kept in
        /// [`HeaderName::Other`] and compared case-insensitively.
        ///
        /// The type is 16 bytes (a [`Header`] 48), so that the header list of
        /// a parsed message is small; an unknown name costs one small shared
        /// allocation, and cloning it only a reference count.
        #[derive(Clone, Debug)]
        pub enum HeaderName {
            $(
                #[doc = concat!("`", $canon, "`")]
                $variant,
            )*
            /// Any other header name, as written.
            Other(Arc<ByteStr>),
        }

        impl HeaderName {
            /// The canonical long form.
            pub fn as_str(&self) -> &str {
                match self {
                    $(HeaderName::$variant => $canon,)*
                    HeaderName::Other(s) => s,
                }
            }

            /// How the writer starts a field of this name: the canonical
            /// name and `": "`, for known names (one copy instead of two).
            #[inline]
            pub(crate) fn wire_prefix(&self) -> Option<&'static [u8]> {
                Some(match self {
                    $(HeaderName::$variant => concat!($canon, ": ").as_bytes(),)*
                    HeaderName::Other(_) => return None,
                })
            }

            /// Recognizes a known name or compact form (lower-case input).
            fn known(lower: &[u8]) -> Option<HeaderName> {
                Some(match lower {
                    $($($alias)|* => HeaderName::$variant,)*
                    _ => return None,
                })
            }

            /// Every known name, for tests.
            #[cfg(test)]
            const ALL: &'static [HeaderName] = &[$(HeaderName::$variant),*];

            /// Recognizes a name written exactly in its canonical case, as
            /// most senders write them (spares the lower-casing).
            #[inline]
            fn known_canonical(name: &[u8]) -> Option<HeaderName> {
                Some(match name {
                    $($canon_bytes => HeaderName::$variant,)*
                    _ => return None,
                })
            }
        }
    };
}

// RFC 3261 §20 and the extensions a PBX and its trunks commonly carry.
// Compact forms per RFC 3261 §7.3.3 and the IANA header field registry.
header_names! {
    Via => "Via", b"Via", [b"via", b"v"];
    From => "From", b"From", [b"from", b"f"];
    To => "To", b"To", [b"to", b"t"];
    CallId => "Call-ID", b"Call-ID", [b"call-id", b"i"];
    CSeq => "CSeq", b"CSeq", [b"cseq"];
    MaxForwards => "Max-Forwards", b"Max-Forwards", [b"max-forwards"];
    Contact => "Contact", b"Contact", [b"contact", b"m"];
    Route => "Route", b"Route", [b"route"];
    RecordRoute => "Record-Route", b"Record-Route", [b"record-route"];
    ContentLength => "Content-Length", b"Content-Length", [b"content-length", b"l"];
    ContentType => "Content-Type", b"Content-Type", [b"content-type", b"c"];
    ContentEncoding => "Content-Encoding", b"Content-Encoding", [b"content-encoding", b"e"];
    Expires => "Expires", b"Expires", [b"expires"];
    MinExpires => "Min-Expires", b"Min-Expires", [b"min-expires"];
    WwwAuthenticate => "WWW-Authenticate", b"WWW-Authenticate", [b"www-authenticate"];
    ProxyAuthenticate => "Proxy-Authenticate", b"Proxy-Authenticate", [b"proxy-authenticate"];
    Authorization => "Authorization", b"Authorization", [b"authorization"];
    ProxyAuthorization => "Proxy-Authorization", b"Proxy-Authorization", [b"proxy-authorization"];
    Allow => "Allow", b"Allow", [b"allow"];
    Accept => "Accept", b"Accept", [b"accept"];
    Supported => "Supported", b"Supported", [b"supported", b"k"];
    Require => "Require", b"Require", [b"require"];
    ProxyRequire => "Proxy-Require", b"Proxy-Require", [b"proxy-require"];
    Unsupported => "Unsupported", b"Unsupported", [b"unsupported"];
    RSeq => "RSeq", b"RSeq", [b"rseq"];
    RAck => "RAck", b"RAck", [b"rack"];
    Subject => "Subject", b"Subject", [b"subject", b"s"];
    UserAgent => "User-Agent", b"User-Agent", [b"user-agent"];
    Server => "Server", b"Server", [b"server"];
    RetryAfter => "Retry-After", b"Retry-After", [b"retry-after"];
    Date => "Date", b"Date", [b"date"];
    Event => "Event", b"Event", [b"event", b"o"];
    ReferTo => "Refer-To", b"Refer-To", [b"refer-to", b"r"];
    Warning => "Warning", b"Warning", [b"warning"];
    Reason => "Reason", b"Reason", [b"reason"];
    AllowEvents => "Allow-Events", b"Allow-Events", [b"allow-events", b"u"];
    ReferredBy => "Referred-By", b"Referred-By", [b"referred-by", b"b"];
    SessionExpires => "Session-Expires", b"Session-Expires", [b"session-expires", b"x"];
    MinSe => "Min-SE", b"Min-SE", [b"min-se"];
    Identity => "Identity", b"Identity", [b"identity", b"y"];
    IdentityInfo => "Identity-Info", b"Identity-Info", [b"identity-info", b"n"];
    AcceptContact => "Accept-Contact", b"Accept-Contact", [b"accept-contact", b"a"];
    RejectContact => "Reject-Contact", b"Reject-Contact", [b"reject-contact", b"j"];
    RequestDisposition => "Request-Disposition", b"Request-Disposition", [b"request-disposition", b"d"];
    AcceptEncoding => "Accept-Encoding", b"Accept-Encoding", [b"accept-encoding"];
    AcceptLanguage => "Accept-Language", b"Accept-Language", [b"accept-language"];
    AlertInfo => "Alert-Info", b"Alert-Info", [b"alert-info"];
    CallInfo => "Call-Info", b"Call-Info", [b"call-info"];
    ContentDisposition => "Content-Disposition", b"Content-Disposition", [b"content-disposition"];
    ContentLanguage => "Content-Language", b"Content-Language", [b"content-language"];
    ErrorInfo => "Error-Info", b"Error-Info", [b"error-info"];
    AuthenticationInfo => "Authentication-Info", b"Authentication-Info", [b"authentication-info"];
    InReplyTo => "In-Reply-To", b"In-Reply-To", [b"in-reply-to"];
    MimeVersion => "MIME-Version", b"MIME-Version", [b"mime-version"];
    Organization => "Organization", b"Organization", [b"organization"];
    Priority => "Priority", b"Priority", [b"priority"];
    ReplyTo => "Reply-To", b"Reply-To", [b"reply-to"];
    Timestamp => "Timestamp", b"Timestamp", [b"timestamp"];
    Replaces => "Replaces", b"Replaces", [b"replaces"];
    Path => "Path", b"Path", [b"path"];
    ServiceRoute => "Service-Route", b"Service-Route", [b"service-route"];
    HistoryInfo => "History-Info", b"History-Info", [b"history-info"];
    Diversion => "Diversion", b"Diversion", [b"diversion"];
    Privacy => "Privacy", b"Privacy", [b"privacy"];
    PAssertedIdentity => "P-Asserted-Identity", b"P-Asserted-Identity", [b"p-asserted-identity"];
    PPreferredIdentity => "P-Preferred-Identity", b"P-Preferred-Identity", [b"p-preferred-identity"];
    SubscriptionState => "Subscription-State", b"Subscription-State", [b"subscription-state"];
    InfoPackage => "Info-Package", b"Info-Package", [b"info-package"];
    RecvInfo => "Recv-Info", b"Recv-Info", [b"recv-info"];
}

/// The bytes are not a header name token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a header name token")]
pub struct InvalidHeaderName;

impl HeaderName {
    /// Recognizes `name`; `make_other` is called only for unknown names.
    #[inline]
    fn recognize(
        name: &[u8],
        make_other: impl FnOnce() -> ByteStr,
    ) -> Result<Self, InvalidHeaderName> {
        if name.is_empty() || !name.iter().all(|&c| is_token(c)) {
            return Err(InvalidHeaderName);
        }
        Ok(Self::recognize_token(name, make_other))
    }

    /// [`HeaderName::recognize`] for a slice already known to be a token.
    #[inline]
    fn recognize_token(name: &[u8], make_other: impl FnOnce() -> ByteStr) -> Self {
        if let Some(h) = HeaderName::known_canonical(name) {
            return h;
        }
        let mut buf = [0u8; 20];
        if name.len() <= buf.len() {
            let lower = &mut buf[..name.len()];
            lower.copy_from_slice(name);
            lower.make_ascii_lowercase();
            if let Some(h) = HeaderName::known(lower) {
                return h;
            }
        }
        HeaderName::Other(Arc::new(make_other()))
    }

    /// Recognizes the name of a header line that starts with one of the
    /// names most messages carry, written in its canonical case (or as its
    /// compact form) and followed at once by the colon: the name and the
    /// position of the colon. `None` for anything else (the general path,
    /// token scan and [`HeaderName::from_token_slice`], gives the same
    /// name for every line this accepts). One dispatch on the first byte
    /// and a fixed-size compare replace the token scan and the name match.
    #[inline]
    pub(crate) fn common_at_line_start(line: &[u8]) -> Option<(HeaderName, usize)> {
        macro_rules! try_name {
            ($($lit:literal => $variant:ident),+) => {
                {
                    $(
                        if line.starts_with($lit) {
                            return Some((HeaderName::$variant, $lit.len() - 1));
                        }
                    )+
                }
            };
        }
        match line.first()? {
            b'V' => try_name!(b"Via:" => Via),
            b'F' => try_name!(b"From:" => From),
            b'T' => try_name!(b"To:" => To),
            b'C' => try_name!(
                b"Call-ID:" => CallId,
                b"CSeq:" => CSeq,
                b"Contact:" => Contact,
                b"Content-Length:" => ContentLength,
                b"Content-Type:" => ContentType
            ),
            b'M' => try_name!(b"Max-Forwards:" => MaxForwards),
            b'R' => try_name!(b"Record-Route:" => RecordRoute, b"Route:" => Route),
            b'S' => try_name!(
                b"Subject:" => Subject,
                b"Supported:" => Supported,
                b"Server:" => Server,
                b"Session-Expires:" => SessionExpires
            ),
            b'A' => try_name!(b"Allow:" => Allow),
            b'U' => try_name!(b"User-Agent:" => UserAgent),
            b'E' => try_name!(b"Expires:" => Expires),
            b'v' => try_name!(b"v:" => Via),
            b'f' => try_name!(b"f:" => From),
            b't' => try_name!(b"t:" => To),
            b'i' => try_name!(b"i:" => CallId),
            b'm' => try_name!(b"m:" => Contact),
            b'l' => try_name!(b"l:" => ContentLength),
            b'c' => try_name!(b"c:" => ContentType),
            _ => {}
        }
        None
    }

    /// Parses a header name (copies only unknown names).
    pub fn parse(name: &[u8]) -> Result<Self, InvalidHeaderName> {
        Self::recognize(name, || {
            ByteStr::from_utf8_lossy(Bytes::copy_from_slice(name))
        })
    }

    /// Parses a header name that is the slice `name` of `src`; only an
    /// unknown name is kept, as a zero-copy slice.
    /// `name` must be a non-empty token.
    pub(crate) fn from_token_slice(src: &Bytes, name: &[u8]) -> Self {
        debug_assert!(!name.is_empty() && name.iter().all(|&c| is_token(c)));
        Self::recognize_token(name, || ByteStr::from_ascii(super::grammar::sub(src, name)))
    }
}

impl PartialEq for HeaderName {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Eq for HeaderName {}

impl Hash for HeaderName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        if let HeaderName::Other(s) = self {
            for b in s.as_bytes().iter() {
                state.write_u8(b.to_ascii_lowercase());
            }
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header field. `value` is raw: trimmed, folding replaced by SP, and
/// (for received messages) a slice of the received buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The name.
    pub name: HeaderName,
    /// The raw value.
    pub value: Bytes,
}

/// The header fields of a message, in wire order. Repeated fields and
/// several values on one line are kept as received; typed accessors join them.
///
/// The typed values that several layers read (top Via, From, To, CSeq)
/// are parsed once per message and kept with the fields when read through
/// the `*_ref` accessors (CSeq also through [`Headers::cseq`]); the owned
/// accessors copy a kept value or, if there is none, parse without keeping
/// (a value read once costs no more than before). Any change to the fields
/// drops them. A clone starts without them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>, TypedCache);

/// The typed values of the header fields that several layers read, each
/// parsed and kept on first access through a `*_ref` accessor. The request
/// validator keeps the top Via and CSeq here, and an INVITE's From (the
/// B2BUA reads it whole); To, and a non-INVITE's From, it only checks
/// without keeping them (`check_to`, `check_from`), so they are parsed
/// here only when a later layer reads them. Errors are kept too, so a
/// field that does not parse is not re-parsed.
#[derive(Default)]
pub(crate) struct Typed {
    /// The top Via and where the rest of its line starts (see
    /// [`Via::parse_first_at`]).
    pub(crate) top_via: OnceLock<Result<(Via, usize), HeaderError>>,
    pub(crate) from: OnceLock<Result<NameAddr, HeaderError>>,
    pub(crate) to: OnceLock<Result<NameAddr, HeaderError>>,
    pub(crate) cseq: OnceLock<Result<CSeq, HeaderError>>,
}

/// [`Typed`], allocated on the first typed access. Not part of a
/// message's value: clones start empty and comparisons ignore it.
#[derive(Default)]
struct TypedCache(OnceLock<Box<Typed>>);

impl Clone for TypedCache {
    fn clone(&self) -> Self {
        TypedCache::default()
    }
}

impl PartialEq for TypedCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for TypedCache {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Headers").field(&self.0).finish()
    }
}

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Headers(Vec::new(), TypedCache::default())
    }

    /// An empty list with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Headers(Vec::with_capacity(n), TypedCache::default())
    }

    /// The typed values, allocated empty on first use.
    #[inline]
    pub(crate) fn typed(&self) -> &Typed {
        self.1 .0.get_or_init(Box::default)
    }

    /// The typed values, if one was read through a `*_ref` accessor (or CSeq).
    #[inline]
    pub(crate) fn typed_if_any(&self) -> Option<&Typed> {
        self.1 .0.get().map(|b| &**b)
    }

    /// Drops the typed values (the fields are about to change).
    #[inline]
    fn changed(&mut self) {
        if self.1 .0.get().is_some() {
            self.1 .0.take();
        }
    }

    /// The value of the first field named `name`.
    pub fn get(&self, name: &HeaderName) -> Option<&Bytes> {
        self.0.iter().find(|h| h.name == *name).map(|h| &h.value)
    }

    /// The values of all fields named `name`, in order.
    pub fn get_all<'a>(&'a self, name: &HeaderName) -> impl Iterator<Item = &'a Bytes> + 'a {
        let name = name.clone();
        self.0
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| &h.value)
    }

    /// True if a field named `name` is present.
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.0.iter().any(|h| h.name == *name)
    }

    /// Appends a field.
    // Inlined: ~28 fields per call are pushed into the messages the B2BUA
    // writes, and the call (moving the name and the value through memory)
    // cost about as much as the push.
    #[inline]
    pub fn push(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        self.changed();
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    /// Inserts a field before all others (e.g. a new top Via).
    pub fn push_front(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        self.changed();
        self.0.insert(
            0,
            Header {
                name,
                value: value.into(),
            },
        );
    }

    /// Removes every field named `name`.
    pub fn remove_all(&mut self, name: &HeaderName) {
        self.changed();
        self.0.retain(|h| h.name != *name);
    }

    /// Removes the first field named `name` and returns its value.
    pub fn remove_first(&mut self, name: &HeaderName) -> Option<Bytes> {
        self.changed();
        let i = self.0.iter().position(|h| h.name == *name)?;
        Some(self.0.remove(i).value)
    }

    /// Replaces all fields named `name` by one field with `value`, at the
    /// position of the first one (or at the end).
    pub fn set(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        let value = value.into();
        self.changed();
        match self.0.iter().position(|h| h.name == name) {
            Some(i) => {
                self.0[i].value = value;
                let mut k = 0;
                self.0.retain(|h| {
                    let keep = k <= i || h.name != name;
                    k += 1;
                    keep
                });
            }
            None => self.push(name, value),
        }
    }

    /// All fields in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no field.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The list of a freshly parsed message: `fields` in wire order,
    /// nothing kept yet.
    #[inline]
    pub(crate) fn from_fields(fields: Vec<Header>) -> Self {
        Headers(fields, TypedCache::default())
    }

    pub(crate) fn push_header(&mut self, h: Header) {
        self.changed();
        self.0.push(h);
    }

    /// Replaces the value of the first Via field with `value`, whose first
    /// via-parm is `via` and whose next one (if any) starts at `after` (as
    /// [`Via::parse_first_at`] reads it), and keeps `via` as the parsed top
    /// Via; the other typed values stay. See [`Headers::replace_top_via`].
    pub(crate) fn set_top_via_field(&mut self, value: Bytes, via: Via, after: usize) {
        let Some(field) = self.0.iter_mut().find(|h| h.name == HeaderName::Via) else {
            return;
        };
        field.value = value;
        let top_via = OnceLock::from(Ok((via, after)));
        match self.1 .0.get_mut() {
            Some(typed) => typed.top_via = top_via,
            None => {
                let typed = Typed {
                    top_via,
                    ..Typed::default()
                };
                self.1 = TypedCache(OnceLock::from(Box::new(typed)));
            }
        }
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromIterator<Header> for Headers {
    fn from_iter<I: IntoIterator<Item = Header>>(iter: I) -> Self {
        Headers(iter.into_iter().collect(), TypedCache::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_odd_case_names_are_recognized() {
        assert_eq!(HeaderName::parse(b"v").unwrap(), HeaderName::Via);
        assert_eq!(
            HeaderName::parse(b"MaX-fOrWaRdS").unwrap(),
            HeaderName::MaxForwards
        );
        assert_eq!(HeaderName::parse(b"i").unwrap(), HeaderName::CallId);
        assert_eq!(HeaderName::parse(b"l").unwrap(), HeaderName::ContentLength);
        assert_eq!(HeaderName::parse(b"k").unwrap(), HeaderName::Supported);
        assert_eq!(
            HeaderName::parse(b"u").unwrap(),
            HeaderName::parse(b"Allow-Events").unwrap()
        );
        assert_eq!(
            HeaderName::parse(b"C%6Fntact").unwrap().as_str(),
            "C%6Fntact"
        );
        assert_ne!(
            HeaderName::parse(b"C%6Fntact").unwrap(),
            HeaderName::Contact
        );
        assert!(HeaderName::parse(b"Foo bar").is_err());
        assert_eq!(
            HeaderName::parse(b"X-Foo").unwrap(),
            HeaderName::parse(b"x-foo").unwrap()
        );
    }

    #[test]
    fn extension_names_and_their_compact_forms_are_known() {
        for (compact, long) in [
            (&b"u"[..], HeaderName::AllowEvents),
            (b"b", HeaderName::ReferredBy),
            (b"x", HeaderName::SessionExpires),
            (b"y", HeaderName::Identity),
            (b"n", HeaderName::IdentityInfo),
            (b"a", HeaderName::AcceptContact),
            (b"j", HeaderName::RejectContact),
            (b"d", HeaderName::RequestDisposition),
        ] {
            assert_eq!(HeaderName::parse(compact).unwrap(), long);
            assert_eq!(HeaderName::parse(long.as_str().as_bytes()).unwrap(), long);
        }
        assert_eq!(
            HeaderName::parse(b"p-asserted-IDENTITY").unwrap().as_str(),
            "P-Asserted-Identity"
        );
        assert_eq!(HeaderName::parse(b"MIN-SE").unwrap(), HeaderName::MinSe);
        // Unknown single letters stay unknown, as written.
        let z = HeaderName::parse(b"z").unwrap();
        assert!(matches!(&z, HeaderName::Other(s) if **s == "z"));
    }

    #[test]
    fn every_known_name_is_recognized_in_any_case() {
        assert!(HeaderName::ALL.len() > 60);
        for name in HeaderName::ALL {
            let canonical = name.as_str();
            assert!(
                canonical.len() <= 20,
                "{canonical} is longer than the lower-case buffer"
            );
            for text in [
                canonical.to_owned(),
                canonical.to_ascii_lowercase(),
                canonical.to_ascii_uppercase(),
            ] {
                let parsed = HeaderName::parse(text.as_bytes()).unwrap();
                assert_eq!(&parsed, name, "{text}");
                assert!(!matches!(parsed, HeaderName::Other(_)), "{text}");
            }
        }
    }

    #[test]
    fn the_writer_prefix_is_the_canonical_name_and_a_colon() {
        for name in HeaderName::ALL {
            let prefix = name.wire_prefix().unwrap();
            assert_eq!(prefix, format!("{}: ", name.as_str()).as_bytes());
        }
        assert_eq!(HeaderName::parse(b"X-Foo").unwrap().wire_prefix(), None);
    }

    /// The line-start shortcut gives, for every line it accepts, the name
    /// and colon the general path (token scan, then the name) gives.
    #[test]
    fn the_common_name_shortcut_agrees_with_the_general_path() {
        let general = |line: &[u8]| -> Option<(HeaderName, usize)> {
            let n = line
                .iter()
                .position(|&c| !is_token(c))
                .unwrap_or(line.len());
            if n == 0 || line.get(n) != Some(&b':') {
                return None;
            }
            Some((HeaderName::parse(&line[..n]).unwrap(), n))
        };
        let mut names: Vec<String> = HeaderName::ALL
            .iter()
            .flat_map(|h| {
                let c = h.as_str();
                [c.to_owned(), c.to_ascii_lowercase(), c.to_ascii_uppercase()]
            })
            .collect();
        for c in b'a'..=b'z' {
            names.push(char::from(c).to_string());
            names.push(char::from(c.to_ascii_uppercase()).to_string());
        }
        names.extend(["Via-X", "Vias", "Fro", "Call-Id", "X-Foo", "Contact-X"].map(String::from));
        let mut accepted = 0;
        for name in &names {
            for rest in [":", ": x", ":x;y", " : x", "x: y", "", ";", "\t: x"] {
                let line = format!("{name}{rest}");
                let fast = HeaderName::common_at_line_start(line.as_bytes());
                if let Some(found) = &fast {
                    accepted += 1;
                    assert_eq!(Some(found), general(line.as_bytes()).as_ref(), "{line:?}");
                    assert!(!matches!(found.0, HeaderName::Other(_)), "{line:?}");
                }
            }
        }
        // The 18 names of the shortcut and 7 compact forms, each with the
        // three rests that put the colon right after the name.
        assert_eq!(accepted, 3 * 25);
        for line in [
            &b"Via: x"[..],
            b"CSeq:1 INVITE",
            b"l:0",
            b"Content-Type: a/b",
        ] {
            assert!(HeaderName::common_at_line_start(line).is_some());
        }
    }

    #[test]
    fn unknown_names_hash_and_compare_case_insensitively() {
        use std::collections::HashSet;
        let a = HeaderName::parse(b"X-Custom-Header").unwrap();
        let b = HeaderName::parse(b"x-custom-header").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "X-Custom-Header");
        let set: HashSet<HeaderName> = [a.clone(), b, HeaderName::Via].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert!(set.contains(&HeaderName::parse(b"X-CUSTOM-HEADER").unwrap()));
        assert_ne!(a, HeaderName::parse(b"X-Custom-Headers").unwrap());
    }

    #[test]
    fn header_is_small() {
        // The header list of every parsed message is a vector of these.
        assert_eq!(std::mem::size_of::<HeaderName>(), 16);
        assert_eq!(std::mem::size_of::<Header>(), 48);
    }

    #[test]
    fn set_replaces_all_in_place() {
        let mut h = Headers::new();
        h.push(HeaderName::Via, "a");
        h.push(HeaderName::To, "t");
        h.push(HeaderName::Via, "b");
        h.set(HeaderName::Via, "c");
        let names: Vec<_> = h
            .iter()
            .map(|x| (x.name.as_str(), x.value.clone()))
            .collect();
        assert_eq!(
            names,
            vec![("Via", Bytes::from("c")), ("To", Bytes::from("t"))]
        );
        h.push_front(HeaderName::Via, "top");
        assert_eq!(h.get(&HeaderName::Via).unwrap(), "top");
        assert_eq!(h.remove_first(&HeaderName::Via).unwrap(), "top");
        h.remove_all(&HeaderName::Via);
        assert_eq!(h.len(), 1);
    }
}
