//! Small typed header values: [`CSeq`] (RFC 3261 §20.16), [`RAck`]
//! (RFC 3262 §7.2), [`MediaType`] (§20.15), [`Challenge`] and
//! [`Credentials`] (§20.44, §20.7, §22.4).

use std::fmt;

use bytes::Bytes;
use nom::bytes::complete::take_while1;

use super::bytestr::ByteStr;
use super::grammar::{
    digits, is_wsp, parse_u32, quoted_string, sep, sub, sub_str, sws, token, trim, unquote,
};
use super::method::Method;
use super::params::Params;

/// `CSeq: 4711 INVITE`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CSeq {
    /// The sequence number.
    pub seq: u32,
    /// The method.
    pub method: Method,
}

fn lws(i: &[u8]) -> Result<&[u8], &'static str> {
    take_while1::<_, _, nom::error::Error<&[u8]>>(is_wsp)(i)
        .map(|(r, _)| r)
        .map_err(|_| "missing white space")
}

fn number(i: &[u8]) -> Result<(u32, &[u8]), &'static str> {
    let (r, d) = digits(i).map_err(|_| "missing number")?;
    Ok((parse_u32(d).ok_or("number out of range")?, r))
}

fn method_at<'a>(src: &Bytes, i: &'a [u8]) -> Result<(Method, &'a [u8]), &'static str> {
    let (r, m) = token(i).map_err(|_| "missing method")?;
    Ok((Method::from_slice(src, m).map_err(|_| "invalid method")?, r))
}

impl CSeq {
    pub(crate) fn parse(src: &Bytes) -> Result<CSeq, &'static str> {
        match CSeq::common(src) {
            Some(cseq) => Ok(cseq),
            None => CSeq::parse_general(src),
        }
    }

    /// The shape nearly every CSeq has, read in one pass: 1 to 9 digits
    /// (no overflow possible), one SP and a known method, nothing before
    /// or after. `None` for anything else, which [`CSeq::parse_general`]
    /// reads; it accepts all this accepts, with the same value (a proptest
    /// compares them).
    #[inline]
    fn common(v: &[u8]) -> Option<CSeq> {
        let mut seq: u32 = 0;
        let mut n = 0;
        while let Some(&c) = v.get(n) {
            if !c.is_ascii_digit() {
                break;
            }
            if n == 9 {
                return None;
            }
            seq = seq * 10 + u32::from(c - b'0');
            n += 1;
        }
        if n == 0 || v.get(n) != Some(&b' ') {
            return None;
        }
        let method = Method::known(&v[n + 1..])?;
        Some(CSeq { seq, method })
    }

    /// `CSeq = 1*DIGIT LWS Method`, the value trimmed.
    fn parse_general(src: &Bytes) -> Result<CSeq, &'static str> {
        let i = trim(src);
        let (seq, i) = number(i)?;
        let i = lws(i)?;
        let (method, i) = method_at(src, i)?;
        if !i.is_empty() {
            return Err("unexpected characters after method");
        }
        Ok(CSeq { seq, method })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// `RAck: 776656 1 INVITE` (RFC 3262).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RAck {
    /// The RSeq of the acknowledged provisional response.
    pub rseq: u32,
    /// The CSeq number of the request it belongs to.
    pub cseq: u32,
    /// The CSeq method.
    pub method: Method,
}

impl RAck {
    pub(crate) fn parse(src: &Bytes) -> Result<RAck, &'static str> {
        let i = trim(src);
        let (rseq, i) = number(i)?;
        let (cseq, i) = number(lws(i)?)?;
        let (method, i) = method_at(src, lws(i)?)?;
        if !i.is_empty() {
            return Err("unexpected characters after method");
        }
        Ok(RAck { rseq, cseq, method })
    }
}

impl fmt::Display for RAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.rseq, self.cseq, self.method)
    }
}

/// `type/subtype;param=value` (Content-Type, Accept entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaType {
    /// The type, e.g. `application`.
    pub mtype: ByteStr,
    /// The subtype, e.g. `sdp`.
    pub subtype: ByteStr,
    /// Parameters (values as written).
    pub params: Params,
}

impl MediaType {
    /// True if `type/subtype` matches `essence` (e.g. "application/sdp"),
    /// case-insensitively, with `*` wildcards on this side (Accept ranges).
    pub fn matches(&self, essence: &str) -> bool {
        // On the bytes: `as_str` would check UTF-8 again on every call.
        let (t, s) = essence.split_once('/').unwrap_or((essence, ""));
        let (mtype, subtype) = (self.mtype.as_bytes(), self.subtype.as_bytes());
        (mtype == "*" || mtype.eq_ignore_ascii_case(t.as_bytes()))
            && (subtype == "*" || subtype.eq_ignore_ascii_case(s.as_bytes()))
    }

    /// Parses one media type at the start of `i`.
    pub(crate) fn parse_one<'a>(
        src: &Bytes,
        i: &'a [u8],
    ) -> Result<(MediaType, &'a [u8]), &'static str> {
        let bad = |_| "malformed media type";
        let (i, _) = sws(i).map_err(bad)?;
        let (i, t) = token(i).map_err(bad)?;
        let (i, _) = sep('/')(i).map_err(bad)?;
        let (i, s) = token(i).map_err(bad)?;
        let (i, params) = auth_like_params(src, i, ';')?;
        Ok((
            MediaType {
                mtype: sub_str(src, t).ok_or("malformed media type")?,
                subtype: sub_str(src, s).ok_or("malformed media type")?,
                params,
            },
            i,
        ))
    }

    pub(crate) fn parse(src: &Bytes) -> Result<MediaType, &'static str> {
        let (m, rest) = MediaType::parse_one(src, src)?;
        if trim(rest).is_empty() {
            Ok(m)
        } else {
            Err("unexpected characters after media type")
        }
    }

    /// Parses a comma-separated list (Accept); empty is allowed.
    pub(crate) fn parse_list(src: &Bytes, out: &mut Vec<MediaType>) -> Result<(), &'static str> {
        if trim(src).is_empty() {
            return Ok(());
        }
        let mut i: &[u8] = src;
        loop {
            let (m, rest) = MediaType::parse_one(src, i)?;
            out.push(m);
            let rest = trim_start(rest);
            match rest.split_first() {
                None => return Ok(()),
                Some((b',', r)) => i = r,
                Some(_) => return Err("unexpected characters after media type"),
            }
        }
    }
}

fn trim_start(i: &[u8]) -> &[u8] {
    let n = i.iter().position(|&c| !is_wsp(c)).unwrap_or(i.len());
    &i[n..]
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.mtype, self.subtype, self.params)
    }
}

/// `name=value` pairs with `separator` before each (`;` for media types)
/// or between them (`,` for auth params, `first` handled by the caller).
fn auth_like_params<'a>(
    src: &Bytes,
    mut i: &'a [u8],
    separator: char,
) -> Result<(&'a [u8], Params), &'static str> {
    let mut params = Params::new();
    loop {
        let Ok((r, _)) = sep(separator)(i) else {
            return Ok((i, params));
        };
        let (r, p) = param(src, r)?;
        params.push(p.0, p.1);
        i = r;
    }
}

type ParsedParam = (ByteStr, Option<ByteStr>);

/// token [EQUAL (token / quoted-string)].
fn param<'a>(src: &Bytes, i: &'a [u8]) -> Result<(&'a [u8], ParsedParam), &'static str> {
    let bad = |_| "malformed parameter";
    let (i, n) = token(i).map_err(bad)?;
    let name = sub_str(src, n).ok_or("malformed parameter")?;
    match sep('=')(i) {
        Ok((r, _)) => {
            let (r, v) = if r.first() == Some(&b'"') {
                quoted_string(r).map_err(|_| "unterminated quoted string")?
            } else {
                // token68 style values (base64 '=' and '/') are accepted too.
                take_while1(|c: u8| {
                    super::grammar::is_token(c) || c == b'/' || c == b'=' || c == b':'
                })(r)
                .map_err(bad)?
            };
            let value = ByteStr::from_utf8(sub(src, v)).map_err(|_| "parameter is not UTF-8")?;
            Ok((r, (name, Some(value))))
        }
        Err(_) => Ok((i, (name, None))),
    }
}

/// An authentication challenge: `Digest realm="x", nonce="y", ...`
/// (WWW-Authenticate, Proxy-Authenticate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, e.g. `Digest`.
    pub scheme: ByteStr,
    /// The auth-params; quoted values keep their quotes (see [`Challenge::param`]).
    pub params: Params,
}

/// Credentials: `Digest username="a", realm="x", response="..."`
/// (Authorization, Proxy-Authorization).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The scheme, e.g. `Digest`.
    pub scheme: ByteStr,
    /// The auth-params; quoted values keep their quotes (see [`Credentials::param`]).
    pub params: Params,
}

fn parse_auth(src: &Bytes) -> Result<(ByteStr, Params), &'static str> {
    let i = trim(src);
    let (i, s) = token(i).map_err(|_| "missing auth scheme")?;
    let scheme = sub_str(src, s).ok_or("malformed auth scheme")?;
    let mut params = Params::new();
    if i.is_empty() {
        return Ok((scheme, params));
    }
    let mut i = lws(i)?;
    loop {
        let (r, p) = param(src, i)?;
        params.push(p.0, p.1);
        match sep(',')(r) {
            Ok((r, _)) => i = r,
            Err(_) if r.is_empty() => return Ok((scheme, params)),
            Err(_) => return Err("unexpected characters in auth parameters"),
        }
    }
}

fn unquoted<'a>(p: &'a Params, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let v = p.value(name)?;
    Some(
        match v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
            Some(inner) => unquote(inner),
            None => std::borrow::Cow::Borrowed(v),
        },
    )
}

impl Challenge {
    pub(crate) fn parse(src: &Bytes) -> Result<Challenge, &'static str> {
        parse_auth(src).map(|(scheme, params)| Challenge { scheme, params })
    }

    /// The value of auth-param `name` with quotes removed.
    pub fn param(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        unquoted(&self.params, name)
    }
}

impl Credentials {
    pub(crate) fn parse(src: &Bytes) -> Result<Credentials, &'static str> {
        parse_auth(src).map(|(scheme, params)| Credentials { scheme, params })
    }

    /// The value of auth-param `name` with quotes removed.
    pub fn param(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        unquoted(&self.params, name)
    }
}

fn write_auth(f: &mut fmt::Formatter<'_>, scheme: &ByteStr, params: &Params) -> fmt::Result {
    f.write_str(scheme)?;
    for (i, (n, v)) in params.iter().enumerate() {
        f.write_str(if i == 0 { " " } else { ", " })?;
        f.write_str(n)?;
        if let Some(v) = v {
            write!(f, "={v}")?;
        }
    }
    Ok(())
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_auth(f, &self.scheme, &self.params)
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_auth(f, &self.scheme, &self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn cseq_with_leading_zeros_and_overflow() {
        assert_eq!(
            CSeq::parse(&b("0009 INVITE")).unwrap(),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert!(CSeq::parse(&b("36893488147419103232 REGISTER")).is_err());
        assert!(CSeq::parse(&b("1")).is_err());
        assert!(CSeq::parse(&b("1 INVITE x")).is_err());
    }

    proptest::proptest! {
        /// The one-pass common shape gives, for every value it takes, what
        /// the general reading gives; and `parse` agrees with the general
        /// reading on everything.
        #[test]
        fn the_common_cseq_shape_reads_as_the_general_grammar(
            lead in "[ \t]{0,1}",
            digits in "[0-9]{0,11}",
            gap in "[ \t]{0,2}",
            method in "(INVITE|ACK|BYE|CANCEL|REGISTER|PRACK|PUBLISH|invite|Invite|X-Y|[A-Z]{0,9})",
            tail in "([ \t]{0,1}[a-z]{0,1})",
        ) {
            let text = format!("{lead}{digits}{gap}{method}{tail}");
            let v = Bytes::from(text.clone());
            let general = CSeq::parse_general(&v);
            if let Some(fast) = CSeq::common(&v) {
                proptest::prop_assert_eq!(Ok(fast), general.clone(), "{:?}", text);
            }
            proptest::prop_assert_eq!(CSeq::parse(&v), general, "{:?}", text);
        }
    }

    #[test]
    fn the_common_cseq_shape_takes_only_what_it_should() {
        let fast = |s: &'static str| CSeq::common(s.as_bytes()).map(|c| (c.seq, c.method));
        assert_eq!(fast("1 INVITE"), Some((1, Method::Invite)));
        assert_eq!(fast("314159 BYE"), Some((314159, Method::Bye)));
        assert_eq!(fast("000000009 ACK"), Some((9, Method::Ack)));
        for s in [
            "1234567890 INVITE",
            "1  INVITE",
            "1\tINVITE",
            " 1 INVITE",
            "1 INVITE ",
            "1 invite",
            "1 FOO",
            "INVITE",
            "1 ",
            "",
        ] {
            assert_eq!(fast(s), None, "{s:?}");
        }
    }

    #[test]
    fn rack_parses() {
        let r = RAck::parse(&b("776656 1 INVITE")).unwrap();
        assert_eq!((r.rseq, r.cseq, r.method), (776656, 1, Method::Invite));
    }

    #[test]
    fn media_type_and_accept_list() {
        let m = MediaType::parse(&b("multipart/mixed;boundary=7a9cbec02ceef655")).unwrap();
        assert!(m.matches("multipart/mixed"));
        assert_eq!(m.params.value("boundary"), Some("7a9cbec02ceef655"));
        let mut out = Vec::new();
        MediaType::parse_list(
            &b("application/sdp, application/pkcs7-mime, text/*"),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 3);
        assert!(out[2].matches("text/plain"));
    }

    #[test]
    fn digest_challenge_and_unknown_scheme_credentials() {
        let c = Challenge::parse(&b(r#"Digest realm="atlanta.com", qop="auth,auth-int", nonce="84a4cc6f", stale=FALSE, algorithm=MD5"#)).unwrap();
        assert_eq!(c.scheme, "Digest");
        assert_eq!(c.param("realm").unwrap(), "atlanta.com");
        assert_eq!(c.param("qop").unwrap(), "auth,auth-int");
        assert_eq!(c.param("algorithm").unwrap(), "MD5");
        let cr = Credentials::parse(&b("NoOneKnowsThisScheme opaque-data=here")).unwrap();
        assert_eq!(cr.scheme, "NoOneKnowsThisScheme");
        assert_eq!(cr.param("opaque-data").unwrap(), "here");
    }
}
