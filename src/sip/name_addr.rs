//! name-addr / addr-spec values (RFC 3261 §20.10, §20.20, §20.39): From,
//! To, Contact, Route, Record-Route.

use std::fmt;

use bytes::Bytes;

use super::bytestr::ByteStr;
use super::grammar::{
    find_byte, is_token, is_wsp, quote_escape, quoted_string, sws, token, unquote,
};
use super::params::{find_semi, parse_semi, skip_semi, Params};
use super::uri::{common_sip_uri, Uri, UriShape};

/// `[display-name] <uri> *(;param)` or `addr-spec *(;param)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name as written: the inside of the quotes with
    /// quoted-pairs still escaped, or the token form. See
    /// [`NameAddr::display_name_unescaped`].
    pub display_name: Option<ByteStr>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters after the URI (`tag`, `expires`, `q`, ...).
    pub params: Params,
}

impl NameAddr {
    /// A name-addr without display name and parameters.
    pub fn new(uri: Uri) -> Self {
        NameAddr {
            display_name: None,
            uri,
            params: Params::new(),
        }
    }

    /// Sets the display name from plain text (escaping `"` and `\`).
    pub fn set_display_name(&mut self, name: &str) {
        self.display_name = Some(ByteStr::from(quote_escape(name).into_owned()));
    }

    /// The display name with quoted-pairs resolved.
    pub fn display_name_unescaped(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.display_name.as_deref().map(unquote)
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    /// Sets the `tag` parameter.
    pub fn set_tag(&mut self, tag: impl Into<ByteStr>) {
        self.params.set("tag", Some(tag.into()));
    }

    /// The Contact `q` parameter (0.0 to 1.0).
    pub fn q(&self) -> Option<f32> {
        self.params
            .value("q")
            .and_then(|q| q.parse::<f32>().ok())
            .filter(|q| (0.0..=1.0).contains(q))
    }

    /// The Contact `expires` parameter in seconds (saturating at `u32::MAX`).
    pub fn expires(&self) -> Option<u32> {
        self.params
            .value("expires")
            .and_then(|e| saturating_u32(e.as_bytes()))
    }

    /// Parses one name-addr or addr-spec at the start of `i` (a slice of `src`).
    #[inline]
    pub(crate) fn parse_one<'a>(
        src: &Bytes,
        i: &'a [u8],
    ) -> Result<(NameAddr, &'a [u8]), &'static str> {
        match Self::scan_one::<true>(src, i)? {
            (Some(na), _, rest) => Ok((na, rest)),
            // A kept scan always gives the address.
            (None, _, _) => Err("malformed address"),
        }
    }

    /// [`NameAddr::parse_one`] when `KEEP`; else only checks the address
    /// (the same verdicts and rest, nothing allocated or counted) and
    /// gives `None`. With the [`UriShape`] of its URI either way.
    #[inline]
    fn scan_one<'a, const KEEP: bool>(
        src: &Bytes,
        i: &'a [u8],
    ) -> Result<(Option<NameAddr>, UriShape, &'a [u8]), &'static str> {
        let (i, _) = sws(i).map_err(|_| "malformed address")?;
        if !KEEP {
            if let Some(rest) = common_address(i) {
                // Only the header parameters are left, read as below.
                let (rest, _) = sws(skip_semi(rest)?).map_err(|_| "malformed address")?;
                let shape = UriShape {
                    sip: true,
                    headers: false,
                };
                return Ok((None, shape, rest));
            }
        }
        let (display_name, angle) = match i.first() {
            Some(b'"') => {
                let (rest, q) = quoted_string(i).map_err(|_| "unterminated quoted display name")?;
                let (rest, _) = sws(rest).map_err(|_| "malformed address")?;
                if rest.first() != Some(&b'<') {
                    return Err("quoted display name not followed by <URI>");
                }
                let inner = &q[1..q.len() - 1];
                let name = if inner.is_ascii() {
                    KEEP.then(|| ByteStr::from_ascii(super::grammar::sub(src, inner)))
                } else if KEEP {
                    Some(
                        ByteStr::from_utf8(super::grammar::sub(src, inner))
                            .map_err(|_| "display name is not UTF-8")?,
                    )
                } else {
                    std::str::from_utf8(inner).map_err(|_| "display name is not UTF-8")?;
                    None
                };
                (name, Some(rest))
            }
            Some(b'<') => (None, Some(i)),
            _ => {
                // *(token LWS) followed by "<" is a token display name
                // (RFC 4475 §3.1.1.6: LWS before "<" may be missing).
                let mut j = i;
                while let Ok((r, _)) = token(j) {
                    j = sws(r).map(|(r, _)| r).unwrap_or(r);
                }
                if j.first() == Some(&b'<') && j.len() < i.len() {
                    let name = super::grammar::trim(&i[..i.len() - j.len()]);
                    if !name.is_ascii() {
                        return Err("malformed display name");
                    }
                    (
                        KEEP.then(|| ByteStr::from_ascii(super::grammar::sub(src, name))),
                        Some(j),
                    )
                } else {
                    (None, None)
                }
            }
        };
        let (uri, shape, rest) = match angle {
            Some(a) => {
                let end = find_byte(b'>', a).ok_or("missing > after URI")?;
                let inner = &a[1..end];
                let (uri, shape) =
                    Uri::scan::<KEEP>(src, inner).map_err(|_| "malformed URI in <>")?;
                (uri, shape, &a[end + 1..])
            }
            None => {
                let end = i
                    .iter()
                    .position(|&c| c == b';' || c == b',' || is_wsp(c))
                    .unwrap_or(i.len());
                let (uri, shape) = Uri::scan::<KEEP>(src, &i[..end]).map_err(|_| {
                    if find_byte(b'<', i).is_some() {
                        "display name with non-token characters is not quoted"
                    } else {
                        "malformed addr-spec"
                    }
                })?;
                if shape.headers {
                    return Err("URI with headers must be enclosed in <>");
                }
                (uri, shape, &i[end..])
            }
        };
        let (params, rest) = if KEEP {
            parse_semi(src, rest)?
        } else {
            (Params::new(), skip_semi(rest)?)
        };
        let (rest, _) = sws(rest).map_err(|_| "malformed address")?;
        let na = uri.map(|uri| NameAddr {
            display_name,
            uri,
            params,
        });
        Ok((na, shape, rest))
    }

    /// Parses a value that holds exactly one address (From, To).
    #[inline]
    pub(crate) fn parse_single(src: &Bytes) -> Result<NameAddr, &'static str> {
        let (na, rest) = NameAddr::parse_one(src, src)?;
        if rest.is_empty() {
            Ok(na)
        } else {
            Err("unexpected characters after address")
        }
    }

    /// Checks a value as [`NameAddr::parse_single`] reads it (the same
    /// verdicts) without keeping the address: the shape of its URI.
    pub(crate) fn check_single(src: &[u8]) -> Result<UriShape, &'static str> {
        let (_, shape, rest) = NameAddr::scan_one::<false>(&Bytes::new(), src)?;
        if rest.is_empty() {
            Ok(shape)
        } else {
            Err("unexpected characters after address")
        }
    }

    /// Checks a comma-separated list as [`NameAddr::parse_each`] reads it
    /// (the same verdicts) without keeping the addresses.
    pub(crate) fn check_each(src: &[u8]) -> Result<(), &'static str> {
        let mut i = src;
        loop {
            let (_, _, rest) = NameAddr::scan_one::<false>(&Bytes::new(), i)?;
            match rest.split_first() {
                None => return Ok(()),
                Some((b',', r)) => i = r,
                Some(_) => return Err("unexpected characters after address"),
            }
        }
    }

    /// Whether the one address in `src` has a `tag` parameter, without
    /// parsing its URI (only its extent is found): `None` when the value is
    /// not a single name-addr / addr-spec with well-formed parameters. For
    /// every value [`NameAddr::parse_single`] accepts, the answer is that
    /// of its `tag()` (a proptest checks this); it allocates only if the
    /// address has parameters.
    pub(crate) fn has_tag(src: &Bytes) -> Option<bool> {
        Self::header_params(src).map(|p| p.contains("tag"))
    }

    /// The value of the `tag` parameter of a From/To value, read as
    /// [`NameAddr::has_tag`] reads it (the URI is not parsed): `None` when
    /// the value is not a single address with well-formed parameters, else
    /// what `parse_single(src)?.tag()` gives for every value that
    /// `parse_single` accepts.
    pub(crate) fn tag_of(src: &Bytes) -> Option<Option<ByteStr>> {
        // The parameters are scanned, not collected (no allocation).
        let (tag, rest) = find_semi(src, Self::after_address(src)?, "tag").ok()?;
        let (rest, _) = sws(rest).ok()?;
        rest.is_empty().then(|| tag.flatten())
    }

    /// The header parameters (after the address) of a single address.
    fn header_params(src: &Bytes) -> Option<Params> {
        let (params, rest) = parse_semi(src, Self::after_address(src)?).ok()?;
        let (rest, _) = sws(rest).ok()?;
        rest.is_empty().then_some(params)
    }

    /// What follows the one address in `src` (its header parameters and
    /// anything after them), found without parsing the URI.
    fn after_address(src: &Bytes) -> Option<&[u8]> {
        let (i, _) = sws(src).ok()?;
        let after_uri = match i.first() {
            Some(b'"') => {
                let (rest, _) = quoted_string(i).ok()?;
                let (rest, _) = sws(rest).ok()?;
                if rest.first() != Some(&b'<') {
                    return None;
                }
                &rest[find_byte(b'>', rest)? + 1..]
            }
            Some(b'<') => &i[find_byte(b'>', i)? + 1..],
            _ => {
                let mut j = i;
                while let Ok((r, _)) = token(j) {
                    j = sws(r).map(|(r, _)| r).unwrap_or(r);
                }
                if j.first() == Some(&b'<') && j.len() < i.len() {
                    &j[find_byte(b'>', j)? + 1..]
                } else {
                    let end = i
                        .iter()
                        .position(|&c| c == b';' || c == b',' || is_wsp(c))
                        .unwrap_or(i.len());
                    &i[end..]
                }
            }
        };
        Some(after_uri)
    }

    /// Parses a comma-separated list of addresses into `out`.
    pub(crate) fn parse_list(src: &Bytes, out: &mut Vec<NameAddr>) -> Result<(), &'static str> {
        NameAddr::parse_each(src, |na| out.push(na))
    }

    /// Parses a comma-separated list of addresses, handing each to `f`.
    pub(crate) fn parse_each(src: &Bytes, mut f: impl FnMut(NameAddr)) -> Result<(), &'static str> {
        let mut i: &[u8] = src;
        loop {
            let (na, rest) = NameAddr::parse_one(src, i)?;
            f(na);
            match rest.split_first() {
                None => return Ok(()),
                Some((b',', r)) => i = r,
                Some(_) => return Err("unexpected characters after address"),
            }
        }
    }
}

/// The common shape of an address, checked in one pass:
/// `[token 1*SP] <sip:user@host[:port]>`, `"name" *SP <sip:user@host[:port]>`
/// (the quoted name of printable ASCII without `\`, as phones and SIPp
/// write it) or `sip:user@host[:port]` (see [`common_sip_uri`]), the
/// addr-spec followed by `;`, `,` or nothing;
/// the rest after it (the header parameters and what follows). `None` for
/// any other shape, which [`NameAddr::scan_one`] reads in full. Every
/// address it takes, the full reading takes with the same rest (a proptest
/// compares them).
#[inline]
fn common_address(i: &[u8]) -> Option<&[u8]> {
    if let Some(quoted) = i.strip_prefix(b"\"") {
        // qdtext without escapes: SP and %x21-7E but `"` and `\`.
        let close = quoted.iter().position(|&c| c == b'"')?;
        let printable = quoted[..close].iter().fold(true, |ok, &c| {
            ok & (c.wrapping_sub(b' ') <= b'~' - b' ') & (c != b'\\')
        });
        if !printable {
            return None;
        }
        let after = &quoted[close + 1..];
        let sp = after.iter().position(|&c| c != b' ').unwrap_or(after.len());
        let rest = common_sip_uri(after[sp..].strip_prefix(b"<")?)?;
        return rest.strip_prefix(b">");
    }
    let n = i.iter().position(|&c| !is_token(c)).unwrap_or(i.len());
    let after = &i[n..];
    let sp = after.iter().position(|&c| c != b' ').unwrap_or(after.len());
    if after.get(sp) == Some(&b'<') && (n == 0 || sp > 0) {
        // name-addr: the URI ends at its `>`.
        let rest = common_sip_uri(&after[sp + 1..])?;
        return rest.strip_prefix(b">");
    }
    // addr-spec: the URI ends at the first `;`, `,` or white space.
    let rest = common_sip_uri(i)?;
    matches!(rest.first(), None | Some(b';') | Some(b',')).then_some(rest)
}

pub(crate) fn saturating_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(super::grammar::parse_u32(s).unwrap_or(u32::MAX))
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display_name {
            write!(f, "\"{d}\" ")?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// The Contact header: `*` or a list of addresses (RFC 3261 §20.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contact {
    /// `Contact: *` (REGISTER removing all bindings).
    Star,
    /// The addresses, from all Contact lines in order.
    Addrs(Vec<NameAddr>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &'static str) -> Result<NameAddr, &'static str> {
        NameAddr::parse_single(&Bytes::from_static(s.as_bytes()))
    }

    /// The `roundtrip` fuzz target's find: `To: isbn:name:John_Smith>`
    /// parsed as an addr-spec whose opaque URI ended in `>`, written back
    /// as `<isbn:name:John_Smith>>`, which does not parse.
    #[test]
    fn an_opaque_addr_spec_with_a_closing_angle_bracket_is_an_error() {
        assert_eq!(one("isbn:name:John_Smith>"), Err("malformed addr-spec"));
        let n = one("<isbn:name:John_Smith>;tag=1").unwrap();
        let again = NameAddr::parse_single(&Bytes::from(n.to_string())).unwrap();
        assert_eq!(again, n);
    }

    #[test]
    fn quoted_display_name_with_escapes() {
        let n =
            one(r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#).unwrap();
        assert_eq!(n.display_name.as_deref(), Some(r#"J Rosenberg \\\""#));
        assert_eq!(n.display_name_unescaped().unwrap(), r#"J Rosenberg \""#);
        assert_eq!(n.tag(), Some("98asjd8"));
    }

    #[test]
    fn token_display_name_with_and_without_space() {
        let n = one("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("caller"));
        let n = one("token1~` token2'+_ <sip:a@example.com>").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("token1~` token2'+_"));
    }

    #[test]
    fn addr_spec_params_belong_to_the_header() {
        let n = one("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert!(n.params.contains("unknownparam"));
        assert!(n.uri.as_sip().unwrap().params.is_empty());
        let n = one("<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert!(n.params.is_empty());
        assert!(n.uri.as_sip().unwrap().params.contains("unknownparam"));
    }

    #[test]
    fn malformed_addresses() {
        assert!(one(r#""Mr. J. User <sip:j.user@example.com>"#).is_err());
        assert!(one("< sip:t.watson@example.org >").is_err());
        assert!(one("Bell, Alexander <sip:a.g.bell@example.com>;tag=43").is_err());
        assert!(one("sip:user@example.com?Route=%3Csip:sip.example.com%3E").is_err());
        assert!(one(r#""Joe" <sip:joe@example.org>;;;;"#).is_err());
    }

    #[test]
    fn has_tag_reads_only_the_header_parameters() {
        let t = |s: &'static str| NameAddr::has_tag(&Bytes::from_static(s.as_bytes()));
        assert_eq!(t("<sip:a@b>;tag=1"), Some(true));
        assert_eq!(t("<sip:a@b;tag=1>"), Some(false));
        assert_eq!(t("\"A <x>\" <sip:a@b> ; TAG = 2 "), Some(true));
        assert_eq!(t("Bob <sip:b@c;user=phone>;x=1"), Some(false));
        assert_eq!(t("sip:a@b;tag=3"), Some(true));
        assert_eq!(t("sip:a@b"), Some(false));
        assert_eq!(t("<sip:a@b>;tag=1, <sip:c@d>"), None);
        assert_eq!(t("<sip:a@b;;"), None);
        assert_eq!(t("<sip:a@b>;;"), None);
        let tag = |s: &'static str| {
            NameAddr::tag_of(&Bytes::from_static(s.as_bytes())).map(|t| t.map(|t| t.to_string()))
        };
        assert_eq!(tag("<sip:a@b>;tag=1"), Some(Some("1".to_owned())));
        assert_eq!(
            tag("\"A <x>\" <sip:a@b> ; TAG = 2 "),
            Some(Some("2".to_owned()))
        );
        assert_eq!(tag("<sip:a@b;tag=1>"), Some(None));
        assert_eq!(tag("sip:a@b;tag"), Some(None));
        assert_eq!(tag("<sip:a@b>;tag=1, <sip:c@d>"), None);
    }

    #[test]
    fn common_addresses_take_the_short_path_with_the_full_verdicts() {
        let rest = |s: &'static str| common_address(s.as_bytes());
        assert_eq!(
            rest("sipp <sip:sipp@127.0.0.1:5061>;tag=1"),
            Some(&b";tag=1"[..])
        );
        assert_eq!(rest("<sip:service@example.com>"), Some(&b""[..]));
        assert_eq!(
            rest("\"sipp\" <sip:sipp@127.0.0.1:5061>;tag=1"),
            Some(&b";tag=1"[..])
        );
        assert_eq!(rest("\"A b\"<sip:a@b>"), Some(&b""[..]));
        assert_eq!(rest("\"\"  <sip:a@b>,"), Some(&b","[..]));
        assert_eq!(rest("sip:sipp@127.0.0.1:5061"), Some(&b""[..]));
        assert_eq!(rest("sip:a@b;x, sip:c@d"), Some(&b";x, sip:c@d"[..]));
        // Other shapes go the long way: escapes, a quoted name with an
        // escape or a tab, a missing-space token name, other schemes, white
        // space after an addr-spec.
        for s in [
            "<sip:a%41@b>",
            "a<sip:a@b>",
            "\"A\\\"\" <sip:a@b>",
            "\"A\t\" <sip:a@b>",
            "\"A\"\t<sip:a@b>",
            "\"A\" sip:a@b",
            "\"A <sip:a@b>",
            "a\t<sip:a@b>",
            "<sips:a@b>",
            "<sip:b>",
            "sip:a@b ;tag=1",
            "sip:a@b?h=v",
            "<sip:a@b;lr>",
            "<sip:a@b:99999>",
            "<sip:a@1.2.3>",
        ] {
            assert_eq!(rest(s), None, "{s}");
        }
        // Whichever path, the verdicts are those of the parse.
        for s in [
            "sipp <sip:sipp@127.0.0.1:5061>;tag=1",
            "sipp <sip:sipp@127.0.0.1:5061>;;",
            "\"sipp\" <sip:sipp@127.0.0.1:5061>;tag=1",
            "\"\" <sip:a@b>;;",
            "\"a\\\"b\" <sip:a@b>",
            "sip:a@b ;tag=1",
            "<sip:a@b:99999>",
            "<sip:a@[::1>]>",
        ] {
            let v = Bytes::from_static(s.as_bytes());
            assert_eq!(
                NameAddr::check_single(&v).map(|_| ()),
                NameAddr::parse_single(&v).map(|_| ()),
                "{s}"
            );
        }
    }

    #[test]
    fn lists_and_contact_params() {
        let mut out = Vec::new();
        NameAddr::parse_list(
            &Bytes::from_static(b"\"A, B\" <sip:a@x>;q=0.5;expires=60, sip:b@y"),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].q(), Some(0.5));
        assert_eq!(out[0].expires(), Some(60));
        assert_eq!(out[0].to_string(), "\"A, B\" <sip:a@x>;q=0.5;expires=60");
    }
}
