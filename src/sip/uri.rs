//! URIs: SIP/SIPS (RFC 3261 §19.1, IPv6 references per RFC 5118), `tel:`
//! (RFC 3966) and any other absolute URI kept opaque so that it can be
//! answered with 416.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{Bytes, BytesMut};

use super::bytestr::ByteStr;
use super::grammar::{
    escapes_valid, find_byte, is_hnv, is_host, is_paramchar, is_password, is_uric, is_user,
    parse_u64, sub, sub_str, unescape,
};
use super::params::Params;

/// Why a URI did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// No `scheme:` prefix.
    #[error("missing or invalid URI scheme")]
    Scheme,
    /// Bad characters or escapes in the user part.
    #[error("invalid user part")]
    User,
    /// Bad characters or escapes in the password.
    #[error("invalid password")]
    Password,
    /// Host missing or not a host name, IPv4 address or IPv6 reference.
    #[error("invalid host")]
    Host,
    /// Port not a number in 0..=65535.
    #[error("invalid port")]
    Port,
    /// Bad URI parameter.
    #[error("invalid URI parameter")]
    Param,
    /// Bad `?header=value` part.
    #[error("invalid URI header")]
    Header,
    /// Characters after the end of the URI.
    #[error("unexpected character in URI")]
    Trailing,
    /// An absolute URI of another scheme with a character that is not
    /// uric (`<`, `>`, `"`, `#`, non-ASCII, ...) or a bad `%` escape.
    #[error("invalid character or escape in an absolute URI")]
    Opaque,
    /// A `tel:` URI without a number.
    #[error("invalid telephone number")]
    Number,
}

/// What [`Uri::scan`] tells about a URI, kept or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UriShape {
    /// A `sip:` or `sips:` URI.
    pub(crate) sip: bool,
    /// A SIP URI with `?headers`.
    pub(crate) headers: bool,
}

/// A host: domain name, IPv4 address or IPv6 address (written in brackets).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A host name as written.
    Domain(ByteStr),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address (the URI form is `[addr]`).
    Ipv6(Ipv6Addr),
}

impl Host {
    /// The IP address, when the host is one.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Host::Ipv4(a) => Some((*a).into()),
            Host::Ipv6(a) => Some((*a).into()),
            Host::Domain(_) => None,
        }
    }
}

impl From<std::net::IpAddr> for Host {
    fn from(ip: std::net::IpAddr) -> Self {
        match ip {
            std::net::IpAddr::V4(a) => Host::Ipv4(a),
            std::net::IpAddr::V6(a) => Host::Ipv6(a),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Parses the inside of an IPv6 reference. RFC 5118 §4.10: the RFC 3261
/// ABNF admits `2001:db8:::192.0.2.1` (three colons); tolerate it.
pub(crate) fn parse_ipv6(s: &[u8]) -> Option<Ipv6Addr> {
    let text = std::str::from_utf8(s).ok()?;
    text.parse().ok().or_else(|| {
        if text.contains(":::") {
            text.replacen(":::", "::", 1).parse().ok()
        } else {
            None
        }
    })
}

/// Parses a dotted-quad IPv4 address with the rules of `Ipv4Addr`'s
/// `FromStr` (four decimal octets of one to three digits, each at most 255,
/// no leading zeros), without going through `str`.
pub(crate) fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split(|&c| c == b'.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || (p.len() > 1 && p[0] == b'0') {
            return None;
        }
        let mut v: u16 = 0;
        for &c in p {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u16::from(c - b'0');
        }
        *o = u8::try_from(v).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// Parses `host` at the start of `s`: `[IPv6]`, IPv4 or a host name.
/// Returns the host and the rest.
pub(crate) fn parse_host<'a>(src: &Bytes, s: &'a [u8]) -> Result<(Host, &'a [u8]), UriError> {
    scan_host(s).map(|(h, rest)| (h.into_host(src), rest))
}

/// A host read by [`scan_host`]: an address, or the slice holding a host
/// name, which becomes a [`Host::Domain`] only when the host is kept.
enum HostAt<'a> {
    Ip(Host),
    Domain(&'a [u8]),
}

impl HostAt<'_> {
    #[inline]
    fn into_host(self, src: &Bytes) -> Host {
        match self {
            HostAt::Ip(h) => h,
            // Host characters are ASCII.
            HostAt::Domain(d) => Host::Domain(ByteStr::from_ascii(sub(src, d))),
        }
    }
}

/// [`parse_host`] without keeping the host: the same verdicts and rest.
#[inline]
fn scan_host(s: &[u8]) -> Result<(HostAt<'_>, &[u8]), UriError> {
    // Most hosts on the wire (Via sent-by, Contact) are IPv4 addresses.
    if let Some((ip, n)) = dotted_quad_prefix(s) {
        return Ok((HostAt::Ip(Host::Ipv4(ip)), &s[n..]));
    }
    scan_host_general(s)
}

/// A dotted-quad IPv4 address (as [`parse_ipv4`] accepts it) that is the
/// whole host at the start of `s`, i.e. not followed by another host
/// character, read in one pass; its length. `None` for anything else,
/// which [`parse_host_general`] then reads (or rejects).
#[inline]
fn dotted_quad_prefix(s: &[u8]) -> Option<(Ipv4Addr, usize)> {
    /// The digit at `i`, if any.
    #[inline(always)]
    fn digit(s: &[u8], i: usize) -> Option<u8> {
        match s.get(i) {
            Some(&c) if c.is_ascii_digit() => Some(c - b'0'),
            _ => None,
        }
    }
    /// One decimal octet at `i`: 1 to 3 digits, no leading zero, at most
    /// 255; its value and the position after it.
    #[inline(always)]
    fn octet(s: &[u8], i: usize) -> Option<(u8, usize)> {
        let d0 = digit(s, i)?;
        let Some(d1) = digit(s, i + 1) else {
            return Some((d0, i + 1));
        };
        if d0 == 0 {
            return None;
        }
        // Two digits: at most 99.
        let v = d0 * 10 + d1;
        let Some(d2) = digit(s, i + 2) else {
            return Some((v, i + 2));
        };
        let v = u8::try_from(u16::from(v) * 10 + u16::from(d2)).ok()?;
        Some((v, i + 3))
    }
    #[inline(always)]
    fn dot(s: &[u8], i: usize) -> Option<usize> {
        (s.get(i) == Some(&b'.')).then_some(i + 1)
    }
    let (a, i) = octet(s, 0)?;
    let (b, i) = octet(s, dot(s, i)?)?;
    let (c, i) = octet(s, dot(s, i)?)?;
    let (d, i) = octet(s, dot(s, i)?)?;
    // A fourth digit, another label or any other host character: not a
    // whole dotted quad (the general reading decides).
    match s.get(i) {
        Some(&c) if is_host(c) => None,
        _ => Some((Ipv4Addr::new(a, b, c, d), i)),
    }
}

/// [`scan_host`] for every host form.
fn scan_host_general(s: &[u8]) -> Result<(HostAt<'_>, &[u8]), UriError> {
    if s.first() == Some(&b'[') {
        let end = find_byte(b']', s).ok_or(UriError::Host)?;
        let ip = parse_ipv6(&s[1..end]).ok_or(UriError::Host)?;
        return Ok((HostAt::Ip(Host::Ipv6(ip)), &s[end + 1..]));
    }
    // One pass: the extent of the host, whether it looks like an IPv4
    // address, and whether a label is empty (a single trailing dot, as in
    // an FQDN, is allowed).
    let mut n = 0;
    let mut dotted_digits = true;
    let mut after_dot = true;
    let mut empty_label = false;
    while let Some(&c) = s.get(n) {
        if !is_host(c) {
            break;
        }
        if c == b'.' {
            empty_label |= after_dot;
            after_dot = true;
        } else {
            after_dot = false;
            dotted_digits &= c.is_ascii_digit();
        }
        n += 1;
    }
    let (h, rest) = s.split_at(n);
    if h.is_empty() {
        return Err(UriError::Host);
    }
    if dotted_digits {
        let ip = parse_ipv4(h).ok_or(UriError::Host)?;
        return Ok((HostAt::Ip(Host::Ipv4(ip)), rest));
    }
    if empty_label {
        return Err(UriError::Host);
    }
    Ok((HostAt::Domain(h), rest))
}

/// The common shape of a SIP URI at the start of `s`, read in one pass:
/// `sip:` then [`common_hier`]; the rest after the port. `None` for any
/// other shape. Whatever follows, the URI ends there when the next
/// character is none of the user, host and port characters; [`Uri::scan`]
/// accepts every URI of this shape so ended (a proptest compares them).
#[inline]
pub(crate) fn common_sip_uri(s: &[u8]) -> Option<&[u8]> {
    common_hier(s.strip_prefix(b"sip:")?).map(|(_, _, _, rest)| rest)
}

/// What [`common_hier`] reads: user, host, port and the rest.
type CommonHier<'a> = (&'a [u8], HostAt<'a>, Option<u16>, &'a [u8]);

/// The common shape of what follows `sip:`: a user part of alphanumerics
/// and `-_.!~*'` (no escapes, no password), `@`, a host and an optional
/// port (read by [`scan_host`] and [`parse_port`], as always): the user,
/// host, port and the rest. `None` for any other shape.
#[inline]
fn common_hier(r: &[u8]) -> Option<CommonHier<'_>> {
    let n = r
        .iter()
        .position(|&c| !super::grammar::is_common_user(c))
        .unwrap_or(r.len());
    if n == 0 || r.get(n) != Some(&b'@') {
        return None;
    }
    let (host, rest) = scan_host(&r[n + 1..]).ok()?;
    let (port, rest) = parse_port(rest).ok()?;
    Some((&r[..n], host, port, rest))
}

/// Parses `:port` if present.
pub(crate) fn parse_port(s: &[u8]) -> Result<(Option<u16>, &[u8]), UriError> {
    match s.strip_prefix(b":") {
        None => Ok((None, s)),
        Some(r) => {
            let n = r
                .iter()
                .position(|c| !c.is_ascii_digit())
                .unwrap_or(r.len());
            let port = parse_u64(&r[..n])
                .and_then(|p| u16::try_from(p).ok())
                .ok_or(UriError::Port)?;
            Ok((Some(port), &r[n..]))
        }
    }
}

/// A `sip:` or `sips:` URI (RFC 3261 §19.1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part, kept escaped as written.
    pub user: Option<ByteStr>,
    /// The password, kept escaped as written.
    pub password: Option<ByteStr>,
    /// The host.
    pub host: Host,
    /// The port, if written.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`), escapes kept.
    pub params: Params,
    /// URI headers (`?Subject=x&Priority=urgent`), escapes kept.
    pub headers: Params,
}

impl SipUri {
    /// A `sip:` URI for `host` with nothing else.
    pub fn new(host: Host) -> Self {
        SipUri {
            secure: false,
            user: None,
            password: None,
            host,
            port: None,
            params: Params::new(),
            headers: Params::new(),
        }
    }

    /// The user part with `%` escapes resolved (may contain NUL; never truncated).
    pub fn user_unescaped(&self) -> Option<Vec<u8>> {
        self.user
            .as_ref()
            .map(|u| unescape(u.as_bytes()).into_owned())
    }

    /// The `transport` parameter.
    pub fn transport(&self) -> Option<&str> {
        self.params.value("transport")
    }

    /// True when the URI has the `lr` parameter (loose routing).
    pub fn lr(&self) -> bool {
        self.params.contains("lr")
    }

    /// Reads the part after `sip:` / `sips:`; keeps the URI when `KEEP`
    /// (else only checks it, allocating and counting no references, with
    /// the same verdicts). Also tells whether it has URI headers.
    #[inline]
    fn scan<const KEEP: bool>(
        src: &Bytes,
        s: &[u8],
        secure: bool,
    ) -> Result<(Option<SipUri>, bool), UriError> {
        // The common shape, `user@host[:port]` and nothing more, is read
        // in one pass; [`SipUri::scan_general`] reads it the same way.
        if let Some((user, host, port, rest)) = common_hier(s) {
            if rest.is_empty() {
                let uri = KEEP.then(|| SipUri {
                    secure,
                    // The user class is ASCII.
                    user: Some(ByteStr::from_ascii(sub(src, user))),
                    password: None,
                    host: host.into_host(src),
                    port,
                    params: Params::new(),
                    headers: Params::new(),
                });
                return Ok((uri, false));
            }
        }
        Self::scan_general::<KEEP>(src, s, secure)
    }

    /// [`SipUri::scan`] for every shape.
    fn scan_general<const KEEP: bool>(
        src: &Bytes,
        s: &[u8],
        secure: bool,
    ) -> Result<(Option<SipUri>, bool), UriError> {
        let (user, password, hostport) = match find_byte(b'@', s) {
            Some(at) => {
                let userinfo = &s[..at];
                let (u, p) = match find_byte(b':', userinfo) {
                    Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
                    None => (userinfo, None),
                };
                if u.is_empty() || !u.iter().all(|&c| is_user(c)) || !escapes_valid(u) {
                    return Err(UriError::User);
                }
                match p {
                    Some(p) if p.iter().all(|&c| is_password(c)) && escapes_valid(p) => {}
                    Some(_) => return Err(UriError::Password),
                    None => {}
                }
                (Some(u), p, &s[at + 1..])
            }
            None => (None, None, s),
        };
        let (host, rest) = scan_host(hostport)?;
        let (port, mut rest) = parse_port(rest)?;
        let mut params = Params::new();
        while let Some(r) = rest.strip_prefix(b";") {
            let (name, value, r) = uri_pair(r, is_paramchar, b'=', UriError::Param)?;
            if KEEP {
                // `class` admits ASCII only.
                let value = value.map(|v| ByteStr::from_ascii(sub(src, v)));
                params.push(super::params::param_name(src, name), value);
            }
            rest = r;
        }
        let mut headers = Params::new();
        let mut has_headers = false;
        if let Some(mut r) = rest.strip_prefix(b"?") {
            has_headers = true;
            loop {
                let (name, value, after) = uri_pair(r, is_hnv, b'=', UriError::Header)?;
                if KEEP {
                    let value =
                        value.map_or_else(ByteStr::default, |v| ByteStr::from_ascii(sub(src, v)));
                    headers.push(super::params::param_name(src, name), Some(value));
                }
                match after.strip_prefix(b"&") {
                    Some(a) => r = a,
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
        if !rest.is_empty() {
            return Err(UriError::Trailing);
        }
        if !KEEP {
            return Ok((None, has_headers));
        }
        // The user and password classes are ASCII.
        let text = |t: &[u8]| ByteStr::from_ascii(sub(src, t));
        Ok((
            Some(SipUri {
                secure,
                user: user.map(text),
                password: password.map(text),
                host: host.into_host(src),
                port,
                params,
                headers,
            }),
            has_headers,
        ))
    }
}

/// A URI parameter or header read by [`uri_pair`]: name, value, rest.
type UriPair<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

/// `name[=value]` made of `class` characters, escapes checked: the name,
/// the value and the rest. Generic over `class` so that the character
/// test is inlined.
#[inline]
fn uri_pair(
    s: &[u8],
    class: impl Fn(u8) -> bool,
    eq: u8,
    err: UriError,
) -> Result<UriPair<'_>, UriError> {
    let n = s.iter().position(|&c| !class(c)).unwrap_or(s.len());
    let name = &s[..n];
    if name.is_empty() || !escapes_valid(name) {
        return Err(err);
    }
    let rest = &s[n..];
    match rest.strip_prefix(&[eq]) {
        Some(r) => {
            let m = r.iter().position(|&c| !class(c)).unwrap_or(r.len());
            let v = &r[..m];
            if !escapes_valid(v) {
                return Err(err);
            }
            Ok((name, Some(v), &r[m..]))
        }
        None => Ok((name, None, rest)),
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        self.params.write_sep(f, ';', ';')?;
        self.headers.write_sep(f, '?', '&')
    }
}

/// A `tel:` URI (RFC 3966): the number as written and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelUri {
    /// The telephone-subscriber number, e.g. `+1-201-555-0123` or `7042`.
    pub number: ByteStr,
    /// Parameters such as `phone-context`.
    pub params: Params,
}

impl TelUri {
    fn parse(src: &Bytes, s: &[u8]) -> Result<TelUri, UriError> {
        let n = find_byte(b';', s).unwrap_or(s.len());
        let number = &s[..n];
        if number.is_empty() || !number.iter().all(|&c| is_paramchar(c) || c == b'#') {
            return Err(UriError::Number);
        }
        let mut params = Params::new();
        let mut rest = &s[n..];
        while let Some(r) = rest.strip_prefix(b";") {
            let (name, value, r) = uri_pair(r, is_paramchar, b'=', UriError::Param)?;
            // `is_paramchar` admits ASCII only.
            let value = value.map(|v| ByteStr::from_ascii(sub(src, v)));
            params.push(super::params::param_name(src, name), value);
            rest = r;
        }
        if !rest.is_empty() {
            return Err(UriError::Trailing);
        }
        Ok(TelUri {
            number: sub_str(src, number).ok_or(UriError::Number)?,
            params,
        })
    }
}

impl fmt::Display for TelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tel:{}{}", self.number, self.params)
    }
}

/// Any URI: SIP/SIPS, tel, or another absolute URI kept opaque.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` / `sips:`.
    Sip(SipUri),
    /// `tel:`.
    Tel(TelUri),
    /// Another scheme (e.g. `http:`, `urn:`), unparsed.
    Other {
        /// The scheme as written.
        scheme: ByteStr,
        /// Everything after the first `:`.
        rest: ByteStr,
    },
}

impl Uri {
    /// Parses a URI from text (copies it).
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        Self::from_bytes(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// Parses a URI that is a buffer of its own (zero-copy).
    pub fn from_bytes(b: Bytes) -> Result<Uri, UriError> {
        Self::parse_in(&b, &b)
    }

    /// Parses `s`, a slice of `src`, as a whole URI.
    #[inline]
    pub(crate) fn parse_in(src: &Bytes, s: &[u8]) -> Result<Uri, UriError> {
        match Self::scan::<true>(src, s)? {
            (Some(uri), _) => Ok(uri),
            // A kept scan always gives the URI.
            (None, _) => Err(UriError::Scheme),
        }
    }

    /// [`Uri::parse_in`] when `KEEP`; else only checks `s` (the same
    /// verdicts, nothing allocated or counted) and gives `None`. With the
    /// URI's [`UriShape`] either way.
    #[inline]
    pub(crate) fn scan<const KEEP: bool>(
        src: &Bytes,
        s: &[u8],
    ) -> Result<(Option<Uri>, UriShape), UriError> {
        let colon = find_byte(b':', s).ok_or(UriError::Scheme)?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        let valid_scheme = scheme.first().is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'-' || c == b'.');
        if !valid_scheme {
            return Err(UriError::Scheme);
        }
        let secure = if scheme.eq_ignore_ascii_case(b"sip") {
            Some(false)
        } else if scheme.eq_ignore_ascii_case(b"sips") {
            Some(true)
        } else {
            None
        };
        if let Some(secure) = secure {
            let (uri, headers) = SipUri::scan::<KEEP>(src, rest, secure)?;
            return Ok((uri.map(Uri::Sip), UriShape { sip: true, headers }));
        }
        let shape = UriShape {
            sip: false,
            headers: false,
        };
        if scheme.eq_ignore_ascii_case(b"tel") {
            // Rare: checked by parsing it.
            let tel = TelUri::parse(src, rest)?;
            return Ok((KEEP.then_some(Uri::Tel(tel)), shape));
        }
        // absoluteURI = scheme ":" ( hier-part / opaque-part ): uric
        // characters only, so that it ends where a name-addr's `>`, a
        // quote or white space does, and is written back as read.
        if rest.is_empty() || !rest.iter().all(|&c| is_uric(c)) || !escapes_valid(rest) {
            return Err(
                if rest.is_empty() || rest.iter().any(|&c| c <= b' ' || c == 0x7f) {
                    UriError::Trailing
                } else {
                    UriError::Opaque
                },
            );
        }
        if !KEEP {
            return Ok((None, shape));
        }
        let uri = Uri::Other {
            scheme: sub_str(src, scheme).ok_or(UriError::Scheme)?,
            // uric is ASCII.
            rest: ByteStr::from_ascii(sub(src, rest)),
        };
        Ok((Some(uri), shape))
    }

    /// The scheme, lower-case for the known ones.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other { scheme, .. } => scheme,
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// Appends the URI's text (its `Display` form) to `out`, written by
    /// the message writer instead of `core::fmt` (several times cheaper).
    pub fn write_into(&self, out: &mut BytesMut) {
        let mut len = super::wire::Length::default();
        super::wire::put_uri(&mut len, self);
        out.reserve(len.0);
        super::wire::put_uri(out, self);
    }

    /// The URI's text, as `to_string()` gives it, without `core::fmt`.
    pub fn to_text(&self) -> String {
        let mut len = super::wire::Length::default();
        super::wire::put_uri(&mut len, self);
        let mut v = Vec::with_capacity(len.0);
        super::wire::put_uri(&mut v, self);
        // Every piece is ASCII or was UTF-8 when parsed: never lossy.
        String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

impl From<SipUri> for Uri {
    fn from(u: SipUri) -> Self {
        Uri::Sip(u)
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(t) => t.fmt(f),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s).unwrap() {
            Uri::Sip(u) => u,
            other => panic!("not sip: {other:?}"),
        }
    }

    #[test]
    fn sip_uri_with_everything() {
        let u =
            sip("sips:alice:secret@example.com:5061;transport=tcp;lr?Subject=hi&Priority=urgent");
        assert!(u.secure);
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, Host::Domain("example.com".into()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.lr());
        assert_eq!(u.headers.value("priority"), Some("urgent"));
        assert_eq!(
            u.to_string(),
            "sips:alice:secret@example.com:5061;transport=tcp;lr?Subject=hi&Priority=urgent"
        );
    }

    #[test]
    fn ipv6_references_rfc5118() {
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.host, Host::Ipv6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port, Some(5070));
        let u = sip("sip:[2001:db8::10:5070]");
        assert_eq!(u.host, Host::Ipv6("2001:db8::10:5070".parse().unwrap()));
        assert_eq!(u.port, None);
        let u = sip("sip:[2001:db8:::192.0.2.1]");
        assert_eq!(u.host, Host::Ipv6("2001:db8::c000:201".parse().unwrap()));
        assert!(Uri::parse("sip:2001:db8::10").is_err());
    }

    #[test]
    fn user_with_semicolon_and_escapes() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(u.user_unescaped().unwrap(), b"user;par=u@example.net");
        let u = sip("sip:null-%00-null@example.com");
        assert_eq!(u.user_unescaped().unwrap(), b"null-\0-null");
        assert_eq!(Uri::parse("sip:a%zz@example.com"), Err(UriError::User));
    }

    #[test]
    fn tel_and_other_schemes() {
        let t = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        match &t {
            Uri::Tel(t) => {
                assert_eq!(t.number, "+1-201-555-0123");
                assert_eq!(t.params.value("phone-context"), Some("example.com"));
            }
            _ => panic!(),
        }
        assert_eq!(
            t.to_string(),
            "tel:+1-201-555-0123;phone-context=example.com"
        );
        let o = Uri::parse("nobodyKnowsThisScheme:totallyopaquecontent").unwrap();
        assert_eq!(o.scheme(), "nobodyKnowsThisScheme");
        assert_eq!(o.to_string(), "nobodyKnowsThisScheme:totallyopaquecontent");
        assert_eq!(Uri::parse("<sip:a@b>"), Err(UriError::Scheme));
        assert!(Uri::parse("sip:user@example.com; lr").is_err());
    }

    /// Found by the `roundtrip` fuzz target: an opaque URI took any
    /// printable octet, `>` included, and its name-addr written as
    /// `<isbn:name:John_Smith>>` did not parse again.
    #[test]
    fn an_opaque_uri_is_made_of_uric_characters() {
        for ok in [
            "urn:service:sos",
            "http://www.example.com/a?b=c&d=%20e",
            "mailto:a@example.com",
            "http://[2001:db8::1]:8080/",
            "isbn:name:John_Smith",
            "x-a.b+c:-_.!~*'();/?:@&=+$,",
        ] {
            let u = Uri::parse(ok).unwrap();
            assert!(matches!(u, Uri::Other { .. }), "{ok}");
            assert_eq!(u.to_string(), ok);
        }
        for bad in [
            "isbn:name:John_Smith>",
            "urn:a<b",
            "urn:\"quoted\"",
            "urn:a\\b",
            "urn:a{b}",
            "urn:a|b^c`d",
            "urn:a#frag",
            "urn:%zz",
            "urn:a%2",
            "urn:caf\u{e9}",
        ] {
            assert_eq!(Uri::parse(bad), Err(UriError::Opaque), "{bad}");
        }
    }

    #[test]
    fn ipv4_parses_like_std() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "192.0.2.1",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.04",
            "1..3.4",
            ".1.2.3",
            "1.2.3.",
            "1234.1.1.1",
            "1.2.3.4 ",
            "",
            "a.b.c.d",
            "0.00.0.0",
            "10.0.0.255",
        ] {
            assert_eq!(
                parse_ipv4(text.as_bytes()),
                text.parse::<Ipv4Addr>().ok(),
                "{text:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn the_common_shape_reads_as_the_general_grammar(
            user in proptest::prop_oneof![
                "[a-z0-9%!~*'-]{0,6}",
                "[a-zA-Z0-9!~*'()%&=+$,;?/:@<> -]{0,8}",
            ],
            host in proptest::sample::select(vec![
                "127.0.0.1", "1.2.3", "01.2.3.4", "[::1]", "[::1", "example.com", "a..b", "", "-",
            ]),
            port in proptest::option::of("[0-9]{0,6}"),
            after in proptest::sample::select(vec!["", ";lr", "?h=v", ">", " ", "x", ":"]),
        ) {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let src = Bytes::from(format!("{user}@{host}{port}{after}"));
            for secure in [false, true] {
                proptest::prop_assert_eq!(
                    SipUri::scan::<true>(&src, &src, secure),
                    SipUri::scan_general::<true>(&src, &src, secure)
                );
                proptest::prop_assert_eq!(
                    SipUri::scan::<false>(&src, &src, secure),
                    SipUri::scan_general::<false>(&src, &src, secure)
                );
            }
        }

        #[test]
        fn ipv4_agrees_with_std(parts in proptest::collection::vec("[0-9]{0,4}", 1..6)) {
            let text = parts.join(".");
            proptest::prop_assert_eq!(parse_ipv4(text.as_bytes()), text.parse::<Ipv4Addr>().ok());
        }

        #[test]
        fn ipv4_fast_path_agrees_with_the_general_parse(
            parts in proptest::collection::vec("[0-9]{0,4}", 1..6),
            tail in "[.:;a-z0-9>-]{0,3}",
        ) {
            let text = format!("{}{tail}", parts.join("."));
            let src = Bytes::from(text);
            let general = scan_host_general(&src).map(|(h, rest)| (h.into_host(&src), rest));
            if let Some((ip, n)) = dotted_quad_prefix(&src) {
                let (host, rest) = general.clone().map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e:?}")))?;
                proptest::prop_assert_eq!(host, Host::Ipv4(ip));
                proptest::prop_assert_eq!(rest, &src[n..]);
            }
            proptest::prop_assert_eq!(parse_host(&src, &src), general);
        }
    }

    /// The dotted-quad reading before session 8 (digit loop per octet):
    /// the reference for the unrolled one.
    fn dotted_quad_prefix_loop(s: &[u8]) -> Option<(Ipv4Addr, usize)> {
        let mut octets = [0u8; 4];
        let mut i = 0;
        for (k, o) in octets.iter_mut().enumerate() {
            if k > 0 {
                if s.get(i) != Some(&b'.') {
                    return None;
                }
                i += 1;
            }
            let start = i;
            let mut v: u16 = 0;
            while let Some(&c) = s.get(i) {
                if !c.is_ascii_digit() || i - start == 3 {
                    break;
                }
                v = v * 10 + u16::from(c - b'0');
                i += 1;
            }
            let len = i - start;
            if len == 0 || (len > 1 && s[start] == b'0') {
                return None;
            }
            *o = u8::try_from(v).ok()?;
        }
        match s.get(i) {
            Some(&c) if is_host(c) => None,
            _ => Some((Ipv4Addr::from(octets), i)),
        }
    }

    /// Every join of four octet candidates (empty, leading zeros, 255,
    /// 256, four digits ...) with every kind of tail: the unrolled reading
    /// gives the loop's verdict and length.
    #[test]
    fn the_unrolled_dotted_quad_agrees_with_the_digit_loop() {
        let parts = [
            "", "0", "00", "01", "1", "9", "10", "99", "100", "199", "200", "249", "250", "255",
            "256", "299", "300", "999", "1000", "0255",
        ];
        let tails = ["", ":5060", ".", "a", "-", ">", ";lr", "5"];
        let mut accepted = 0;
        for a in parts {
            for b in parts {
                for c in parts {
                    for d in parts {
                        for t in tails {
                            let text = format!("{a}.{b}.{c}.{d}{t}");
                            let got = dotted_quad_prefix(text.as_bytes());
                            assert_eq!(got, dotted_quad_prefix_loop(text.as_bytes()), "{text}");
                            accepted += usize::from(got.is_some());
                        }
                    }
                }
            }
        }
        // 11 valid octets of the 20 and 4 tails that end a host; and the
        // tail "5" completing a last octet of "", "1", "9" or "10".
        assert_eq!(accepted, 11 * 11 * 11 * 11 * 4 + 11 * 11 * 11 * 4);
        for text in ["", "1", "1.2", "1.2.3", "1.2.3.", ".1.2.3.4", "1.2.3.4"] {
            let got = dotted_quad_prefix(text.as_bytes());
            assert_eq!(got, dotted_quad_prefix_loop(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn ipv4_fast_path_takes_only_whole_hosts() {
        let q = |s: &str| dotted_quad_prefix(s.as_bytes()).map(|(ip, n)| (ip.to_string(), n));
        assert_eq!(q("127.0.0.1"), Some(("127.0.0.1".into(), 9)));
        assert_eq!(q("192.0.2.10:5060;lr"), Some(("192.0.2.10".into(), 10)));
        assert_eq!(q("10.0.0.255>"), Some(("10.0.0.255".into(), 10)));
        for s in [
            "1.2.3.4.example.com",
            "1.2.3.4a",
            "1.2.3.04",
            "1.2.3.1234",
            "1.2.3",
            "256.1.1.1",
            "01.2.3.4",
            "1..2.3",
            "a.b.c.d",
            "1.2.3.4-x",
        ] {
            assert_eq!(q(s), None, "{s}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            sip("sip:192.0.2.1").host,
            Host::Ipv4("192.0.2.1".parse().unwrap())
        );
        assert!(Uri::parse("sip:192.0.2.256").is_err());
        assert!(Uri::parse("sip:a..b").is_err());
        assert!(Uri::parse("sip:").is_err());
        assert_eq!(
            sip("sip:example.com.").host,
            Host::Domain("example.com.".into())
        );
        // Empty labels anywhere, and a lone or doubled trailing dot.
        for bad in [
            "sip:.example.com",
            "sip:.",
            "sip:example.com..",
            "sip:a.b..c:5060",
        ] {
            assert_eq!(Uri::parse(bad), Err(UriError::Host), "{bad}");
        }
        // Dotted digits are an IPv4 address or nothing; a digit label in a
        // name is fine.
        assert!(Uri::parse("sip:1.2.3").is_err());
        assert!(Uri::parse("sip:1.2.3.4.").is_err());
        assert_eq!(
            sip("sip:a.1.example:5070").host,
            Host::Domain("a.1.example".into())
        );
        assert_eq!(sip("sip:a.1.example:5070").port, Some(5070));
    }
}
