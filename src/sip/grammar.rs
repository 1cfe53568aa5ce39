//! Lexical building blocks of RFC 3261 §25.1 over `&[u8]`, written with `nom`.
//!
//! Typed header values are parsed from header values in which folding has
//! already been replaced by SP, so linear white space here is `*(SP / HTAB)`.
//! Sub-slices are turned back into zero-copy [`Bytes`] with [`sub`].

use bytes::Bytes;
use nom::bytes::complete::{take_while, take_while1};
use nom::character::complete::char as ch;
use nom::sequence::delimited;
use nom::IResult;

use super::bytestr::ByteStr;

const fn class_table(extra: &[u8], alnum: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        if alnum && c.is_ascii_alphanumeric() {
            t[i] = true;
        }
        i += 1;
    }
    let mut j = 0;
    while j < extra.len() {
        t[extra[j] as usize] = true;
        j += 1;
    }
    t
}

/// token characters (RFC 3261 §25.1).
static TOKEN: [bool; 256] = class_table(b"-.!%*_+`'~", true);
/// user = 1*( unreserved / escaped / user-unreserved ).
static USER: [bool; 256] = class_table(b"-_.!~*'()%&=+$,;?/", true);
/// password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," ).
static PASSWORD: [bool; 256] = class_table(b"-_.!~*'()%&=+$,", true);
/// paramchar = param-unreserved / unreserved / escaped.
static PARAMCHAR: [bool; 256] = class_table(b"-_.!~*'()%[]/:&+$", true);
/// hname / hvalue characters = hnv-unreserved / unreserved / escaped.
static HNV: [bool; 256] = class_table(b"-_.!~*'()%[]/?:+$", true);
/// The user characters of the common address shape: alphanumerics and
/// `-_.!~*'` (no escapes, none of the other user-unreserved marks).
static COMMON_USER: [bool; 256] = class_table(b"-_.!~*'", true);
/// The characters of an absoluteURI's hier-part / opaque-part (RFC 3261
/// §25.1): uric = reserved / unreserved / escaped, and `[` `]` of an
/// IPv6reference in its net-path.
static URIC: [bool; 256] = class_table(b";/?:@&=+$,-_.!~*'()%[]", true);
/// Characters of a host name, an IPv4 address or the inside of an IPv6 reference.
static HOST: [bool; 256] = class_table(b"-._", true);
/// gen-value characters: token, host (incl. bracketed or bare IPv6).
static GEN_VALUE: [bool; 256] = class_table(b"-.!%*_+`'~:[]", true);

#[inline]
pub(crate) fn is_token(c: u8) -> bool {
    TOKEN[c as usize]
}
#[inline]
pub(crate) fn is_common_user(c: u8) -> bool {
    COMMON_USER[c as usize]
}
#[inline]
pub(crate) fn is_user(c: u8) -> bool {
    USER[c as usize]
}
#[inline]
pub(crate) fn is_password(c: u8) -> bool {
    PASSWORD[c as usize]
}
#[inline]
pub(crate) fn is_paramchar(c: u8) -> bool {
    PARAMCHAR[c as usize]
}
#[inline]
pub(crate) fn is_hnv(c: u8) -> bool {
    HNV[c as usize]
}
#[inline]
pub(crate) fn is_uric(c: u8) -> bool {
    URIC[c as usize]
}
#[inline]
pub(crate) fn is_host(c: u8) -> bool {
    HOST[c as usize]
}
#[inline]
pub(crate) fn is_wsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Position of `b` in `s`. SIP tokens and URI parts are short and the byte
/// sought is usually near the start, where a plain loop beats `memchr`'s
/// SIMD set-up; long inputs still go to `memchr`.
#[inline]
pub(crate) fn find_byte(b: u8, s: &[u8]) -> Option<usize> {
    if s.len() < 48 {
        s.iter().position(|&c| c == b)
    } else {
        memchr::memchr(b, s)
    }
}

/// True when every `%` in `s` starts a `% HEXDIG HEXDIG` escape.
pub(crate) fn escapes_valid(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = find_byte(b'%', &s[i..]) {
        let at = i + p;
        match s.get(at + 1..at + 3) {
            Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => i = at + 3,
            _ => return false,
        }
    }
    true
}

/// Resolves `% HEXDIG HEXDIG` escapes once (RFC 3261 §19.1.4). Invalid
/// escapes are kept as they are.
pub fn unescape(s: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if find_byte(b'%', s).is_none() {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let Some([a, b]) = s.get(i + 1..i + 3) {
                if let (Some(h), Some(l)) = (hex(*a), hex(*b)) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(s[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Resolves the quoted-pairs of the inside of a quoted-string.
pub fn unquote(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\\') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Makes `s` fit inside a quoted-string (RFC 3261 §25.1): `"`, `\`, DEL
/// and control characters become quoted-pairs; CR and LF, which cannot be
/// quoted, become SP.
pub fn quote_escape(s: &str) -> std::borrow::Cow<'_, str> {
    let needs =
        |c: char| c == '"' || c == '\\' || c == '\u{7f}' || (c.is_ascii_control() && c != '\t');
    if !s.chars().any(needs) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        match c {
            '\r' | '\n' => out.push(' '),
            c if needs(c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A zero-copy [`Bytes`] for `s`, which must lie inside `src` (else copied).
#[inline]
pub(crate) fn sub(src: &Bytes, s: &[u8]) -> Bytes {
    let base = src.as_ptr() as usize;
    let p = s.as_ptr() as usize;
    if s.is_empty() {
        Bytes::new()
    } else if p >= base && p + s.len() <= base + src.len() {
        src.slice(p - base..p - base + s.len())
    } else {
        Bytes::copy_from_slice(s)
    }
}

/// A zero-copy [`ByteStr`] for a sub-slice that the grammar restricts to
/// ASCII (tokens, hosts, URI characters); `None` if it is not ASCII.
#[inline]
pub(crate) fn sub_str(src: &Bytes, s: &[u8]) -> Option<ByteStr> {
    s.is_ascii().then(|| ByteStr::from_ascii(sub(src, s)))
}

/// Trims SP / HTAB on both sides.
#[inline]
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| !is_wsp(c)).unwrap_or(s.len());
    let end = s.iter().rposition(|&c| !is_wsp(c)).map_or(start, |e| e + 1);
    &s[start..end]
}

/// SWS: optional white space.
#[inline]
pub(crate) fn sws(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while(is_wsp)(i)
}

/// 1*token-char.
#[inline]
pub(crate) fn token(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(is_token)(i)
}

/// A separator with optional white space around it (SEMI, COMMA, SLASH, EQUAL, COLON).
pub(crate) fn sep(c: char) -> impl Fn(&[u8]) -> IResult<&[u8], char> {
    move |i| delimited(sws, ch(c), sws)(i)
}

/// quoted-string; returns the whole thing including the quotes.
pub(crate) fn quoted_string(i: &[u8]) -> IResult<&[u8], &[u8]> {
    let (rest, _) = ch('"')(i)?;
    let mut k = 0;
    loop {
        match rest.get(k) {
            None | Some(b'\r') | Some(b'\n') => {
                return Err(nom::Err::Error(nom::error::Error::new(
                    i,
                    nom::error::ErrorKind::Char,
                )))
            }
            Some(b'"') => return Ok((&rest[k + 1..], &i[..k + 2])),
            Some(b'\\') => match rest.get(k + 1) {
                None | Some(b'\r') | Some(b'\n') => {
                    return Err(nom::Err::Error(nom::error::Error::new(
                        i,
                        nom::error::ErrorKind::Escaped,
                    )))
                }
                Some(_) => k += 2,
            },
            Some(_) => k += 1,
        }
    }
}

/// gen-value = token / host / quoted-string (bare IPv6 allowed for `received`, RFC 5118 §4.5).
pub(crate) fn gen_value(i: &[u8]) -> IResult<&[u8], &[u8]> {
    if i.first() == Some(&b'"') {
        quoted_string(i)
    } else {
        take_while1(|c| GEN_VALUE[c as usize])(i)
    }
}

/// A parameter as raw slices: name and optional value.
#[cfg(test)]
pub(crate) type RawParam<'a> = (&'a [u8], Option<&'a [u8]>);

/// generic-param = token [ EQUAL gen-value ] (the reference `nom` form,
/// against which the hand-written parameter parser is tested).
#[cfg(test)]
pub(crate) fn generic_param(i: &[u8]) -> IResult<&[u8], RawParam<'_>> {
    use nom::combinator::opt;
    use nom::sequence::{pair, preceded};
    pair(token, opt(preceded(sep('='), gen_value)))(i)
}

/// Recognizes `1*DIGIT`.
pub(crate) fn digits(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(|c: u8| c.is_ascii_digit())(i)
}

/// Parses 1*DIGIT into a `u64`, failing on overflow.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// Parses 1*DIGIT into a `u32`, failing on overflow.
pub(crate) fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_string_handles_escaped_quotes_and_rejects_unterminated() {
        let (rest, q) = quoted_string(br#""J Rosenberg \\\"" <x>"#).unwrap();
        assert_eq!(q, br#""J Rosenberg \\\"""#);
        assert_eq!(rest, b" <x>");
        assert!(quoted_string(b"\"Mr. J. User <sip:j@x>").is_err());
    }

    #[test]
    fn unescape_resolves_once() {
        assert_eq!(&*unescape(b"n%61me=v%61lue%25%34%31"), b"name=value%41");
        assert_eq!(&*unescape(b"null-%00-null"), b"null-\0-null");
        assert!(escapes_valid(b"a%20b"));
        assert!(!escapes_valid(b"a%2"));
    }

    #[test]
    fn the_common_user_class_is_alphanumerics_and_the_unreserved_marks() {
        for c in 0..=255u8 {
            let expected = c.is_ascii_alphanumeric() || b"-_.!~*'".contains(&c);
            assert_eq!(is_common_user(c), expected, "{c:#04x}");
            // A subset of the full user class.
            assert!(!expected || is_user(c), "{c:#04x}");
        }
    }

    #[test]
    fn numbers_overflow_is_an_error() {
        assert_eq!(parse_u32(b"0009"), Some(9));
        assert_eq!(parse_u32(b"36893488147419103232"), None);
        assert_eq!(parse_u32(b"4294967296"), None);
    }

    #[test]
    fn unquote_and_escape_are_inverse() {
        assert_eq!(unquote(r#"J Rosenberg \\\""#), r#"J Rosenberg \""#);
        assert_eq!(quote_escape(r#"a"b\"#), r#"a\"b\\"#);
        assert_eq!(quote_escape("bel\u{7}\r\n"), "bel\\\u{7}  ");
    }
}
