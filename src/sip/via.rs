//! The Via header (RFC 3261 §20.42, §18.2.1; RFC 3581 rport; RFC 5118 IPv6).

use std::fmt;

use bytes::Bytes;
use nom::bytes::complete::take_while1;
use nom::character::complete::char as ch;

use super::bytestr::ByteStr;
use super::grammar::{digits, is_wsp, sep, sub_str, sws, token};
use super::method::Version;
use super::params::{parse_semi, Params};
use super::uri::{parse_host, parse_ipv6, Host};

/// The transport of a Via `sent-protocol`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS.
    Tls,
    /// SCTP.
    Sctp,
    /// WebSocket (RFC 7118).
    Ws,
    /// Secure WebSocket (RFC 7118).
    Wss,
    /// Another token, as written.
    Other(ByteStr),
}

impl Transport {
    /// Recognizes a transport token (case-insensitive).
    pub(crate) fn from_token(src: &Bytes, t: &[u8]) -> Option<Transport> {
        Some(if t.eq_ignore_ascii_case(b"UDP") {
            Transport::Udp
        } else if t.eq_ignore_ascii_case(b"TCP") {
            Transport::Tcp
        } else if t.eq_ignore_ascii_case(b"TLS") {
            Transport::Tls
        } else if t.eq_ignore_ascii_case(b"SCTP") {
            Transport::Sctp
        } else if t.eq_ignore_ascii_case(b"WS") {
            Transport::Ws
        } else if t.eq_ignore_ascii_case(b"WSS") {
            Transport::Wss
        } else {
            Transport::Other(sub_str(src, t)?)
        })
    }

    /// The token, upper-case for the known ones.
    pub fn as_str(&self) -> &str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
            Transport::Other(s) => s,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Via value: `SIP/2.0/UDP host:port;branch=...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// The SIP version of the sent-protocol.
    pub version: Version,
    /// The transport.
    pub transport: Transport,
    /// sent-by host.
    pub host: Host,
    /// sent-by port, if written.
    pub port: Option<u16>,
    /// via-params (branch, received, rport, maddr, ttl and extensions).
    pub params: Params,
}

/// The RFC 3261 magic cookie that starts every compliant branch.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

impl Via {
    /// A SIP/2.0 Via without parameters.
    pub fn new(transport: Transport, host: Host, port: Option<u16>) -> Self {
        Via {
            version: Version::SIP_2_0,
            transport,
            host,
            port,
            params: Params::new(),
        }
    }

    /// Adds (or replaces) the `branch` parameter.
    pub fn with_branch(mut self, branch: impl Into<ByteStr>) -> Self {
        self.params.set("branch", Some(branch.into()));
        self
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// True if the branch starts with the RFC 3261 magic cookie (§8.1.1.7).
    pub fn has_magic_cookie(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE))
    }

    /// The `received` parameter as written (may be a bracketed IPv6, RFC 5118 §4.5).
    pub fn received(&self) -> Option<&str> {
        self.params.value("received")
    }

    /// The `received` address, with or without brackets.
    pub fn received_ip(&self) -> Option<std::net::IpAddr> {
        let r = self.received()?;
        let inner = r
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(r);
        match inner.parse::<std::net::Ipv4Addr>() {
            Ok(a) => Some(a.into()),
            Err(_) => parse_ipv6(inner.as_bytes()).map(Into::into),
        }
    }

    /// `rport` (RFC 3581): `None` if absent, `Some(None)` if present without
    /// value, `Some(Some(port))` when filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&str> {
        self.params.value("maddr")
    }

    /// The `ttl` parameter.
    pub fn ttl(&self) -> Option<u8> {
        self.params.value("ttl").and_then(|t| t.parse().ok())
    }

    /// Parses one via-parm at the start of `i` (a slice of `src`); returns the rest.
    #[inline]
    pub(crate) fn parse_one<'a>(src: &Bytes, i: &'a [u8]) -> Result<(Via, &'a [u8]), &'static str> {
        Via::scan::<true>(src, i)
    }

    /// `SIP/2.0/UDP ` (or TCP, TLS) with no more white space after it, the
    /// start of nearly every Via: the transport and the rest (the sent-by).
    /// `None` for anything else, which the general grammar reads (giving
    /// the same for all this accepts).
    #[inline]
    fn common_sent_protocol(i: &[u8]) -> Option<(Transport, &[u8])> {
        let rest = i.strip_prefix(b"SIP/2.0/")?;
        let (transport, rest) = match rest.get(..4)? {
            b"UDP " => (Transport::Udp, &rest[4..]),
            b"TCP " => (Transport::Tcp, &rest[4..]),
            b"TLS " => (Transport::Tls, &rest[4..]),
            _ => return None,
        };
        match rest.first() {
            Some(&c) if is_wsp(c) => None,
            _ => Some((transport, rest)),
        }
    }

    /// `:` and 1 to 5 digits right after the sent-by host, at most 65535:
    /// the port and the rest. `None` for anything else (white space, no
    /// port, more digits), which the general grammar reads.
    #[inline]
    fn common_port(i: &[u8]) -> Option<(u16, &[u8])> {
        let rest = i.strip_prefix(b":")?;
        let n = rest
            .iter()
            .take(6)
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(rest.len().min(6));
        if n == 0 || n > 5 {
            return None;
        }
        let v = rest[..n]
            .iter()
            .fold(0u32, |v, &c| v * 10 + u32::from(c - b'0'));
        Some((u16::try_from(v).ok()?, &rest[n..]))
    }

    /// [`Via::parse_one`]; with `COMMON` the common sent-protocol and port
    /// are read in one pass each when they have that shape (the tests
    /// compare with `COMMON = false`, the grammar alone).
    fn scan<'a, const COMMON: bool>(
        src: &Bytes,
        i: &'a [u8],
    ) -> Result<(Via, &'a [u8]), &'static str> {
        let bad = |_| "malformed sent-protocol";
        let common = if COMMON {
            Via::common_sent_protocol(i)
        } else {
            None
        };
        let (version, transport, i) = match common {
            Some((transport, i)) => (Version::SIP_2_0, transport, i),
            None => Via::sent_protocol(src, i)?,
        };
        let (host, i) = parse_host(src, i).map_err(|_| "malformed sent-by host")?;
        let common = if COMMON { Via::common_port(i) } else { None };
        let (port, i) = match common {
            Some((p, i)) => (Some(p), i),
            None => {
                let (j, _) = sws(i).map_err(bad)?;
                match ch::<_, nom::error::Error<&[u8]>>(':')(j) {
                    Ok((j, _)) => {
                        let (j, _) = sws(j).map_err(bad)?;
                        let (j, d) = digits(j).map_err(|_| "malformed sent-by port")?;
                        let p = super::grammar::parse_u32(d)
                            .and_then(|p| u16::try_from(p).ok())
                            .ok_or("sent-by port out of range")?;
                        (Some(p), j)
                    }
                    Err(_) => (None, i),
                }
            }
        };
        let (params, i) = parse_semi(src, i).map_err(|_| "malformed Via parameter")?;
        Ok((
            Via {
                version,
                transport,
                host,
                port,
                params,
            },
            i,
        ))
    }

    /// The general `sent-protocol LWS` at the start of `i`: version,
    /// transport and the rest (the sent-by).
    fn sent_protocol<'a>(
        src: &Bytes,
        i: &'a [u8],
    ) -> Result<(Version, Transport, &'a [u8]), &'static str> {
        let bad = |_| "malformed sent-protocol";
        let (i, _) = sws(i).map_err(bad)?;
        // Nearly every Via starts `SIP/2.0/`: the general grammar below
        // reads it the same way, with white space allowed around the slashes.
        let (version, i) = match i.strip_prefix(b"SIP/2.0/") {
            Some(rest) => (Version::SIP_2_0, sws(rest).map_err(bad)?.0),
            None => {
                let (i, proto) = token(i).map_err(bad)?;
                if !proto.eq_ignore_ascii_case(b"SIP") {
                    return Err("sent-protocol is not SIP");
                }
                let (i, _) = sep('/')(i).map_err(bad)?;
                let (i, ver) =
                    take_while1(|c: u8| c.is_ascii_digit() || c == b'.')(i).map_err(bad)?;
                let version = Version::parse_number(ver).ok_or("malformed SIP version")?;
                let (i, _) = sep('/')(i).map_err(bad)?;
                (version, i)
            }
        };
        let (i, t) = token(i).map_err(bad)?;
        let transport = Transport::from_token(src, t).ok_or("malformed transport")?;
        let (i, _) = take_while1::<_, _, nom::error::Error<&[u8]>>(is_wsp)(i)
            .map_err(|_| "missing space before sent-by")?;
        Ok((version, transport, i))
    }

    /// Parses every via-parm of one header value into `out`.
    pub(crate) fn parse_list(src: &Bytes, out: &mut Vec<Via>) -> Result<(), &'static str> {
        Via::parse_each(src, src, |v| out.push(v))
    }

    /// Parses the via-parms from `i` (a slice of `src` where a value
    /// starts) to the end of `src`, handing each to `f`.
    pub(crate) fn parse_each(
        src: &Bytes,
        mut i: &[u8],
        mut f: impl FnMut(Via),
    ) -> Result<(), &'static str> {
        loop {
            let (v, rest) = Via::parse_one(src, i)?;
            f(v);
            let (rest, _) = sws(rest).map_err(|_| "malformed Via")?;
            match rest.split_first() {
                None => return Ok(()),
                Some((b',', r)) => i = r,
                Some(_) => return Err("unexpected character after Via value"),
            }
        }
    }

    /// Parses the first via-parm of one header value.
    #[cfg(test)]
    pub(crate) fn parse_first(src: &Bytes) -> Result<Via, &'static str> {
        Via::parse_first_at(src).map(|(v, _)| v)
    }

    /// [`Via::parse_first`], and the offset in `src` of what follows the
    /// value: the end, or the `,` before the next value (which
    /// [`Via::parse_each`] reads on from there, as [`Via::parse_list`] would).
    #[inline]
    pub(crate) fn parse_first_at(src: &Bytes) -> Result<(Via, usize), &'static str> {
        let (v, rest) = Via::parse_one(src, src)?;
        let (rest, _) = sws(rest).map_err(|_| "malformed Via")?;
        match rest.first() {
            None | Some(b',') => Ok((v, src.len() - rest.len())),
            Some(_) => Err("unexpected character after Via value"),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.version, self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        write!(f, "{}", self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vias(s: &'static str) -> Result<Vec<Via>, &'static str> {
        let mut out = Vec::new();
        Via::parse_list(&Bytes::from_static(s.as_bytes()), &mut out).map(|_| out)
    }

    #[test]
    fn parses_params_rport_received() {
        let v =
            vias("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport;received=192.0.2.9").unwrap();
        assert_eq!(v.len(), 1);
        let v = &v[0];
        assert_eq!(v.transport, Transport::Udp);
        assert_eq!(v.host, Host::Ipv4("192.0.2.1".parse().unwrap()));
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bK776"));
        assert!(v.has_magic_cookie());
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received_ip(), Some("192.0.2.9".parse().unwrap()));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport;received=192.0.2.9"
        );
    }

    #[test]
    fn whitespace_everywhere_and_several_values() {
        let v = vias("SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].transport, Transport::Tcp);
        assert_eq!(v[0].branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(v[1].branch(), Some("z9hG4bK30239"));
    }

    #[test]
    fn ipv6_sent_by_and_received_with_and_without_brackets() {
        let v = vias("SIP/2.0/UDP [2001:db8::9:1]:6050;received=[2001:db8::9:255];branch=z9hG4bKa")
            .unwrap();
        assert_eq!(v[0].host, Host::Ipv6("2001:db8::9:1".parse().unwrap()));
        assert_eq!(v[0].port, Some(6050));
        assert_eq!(v[0].received_ip(), Some("2001:db8::9:255".parse().unwrap()));
        let v = vias("SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255").unwrap();
        assert_eq!(v[0].received_ip(), Some("2001:db8::9:255".parse().unwrap()));
    }

    #[test]
    fn sip_2_0_prefix_reads_as_the_general_grammar_does() {
        let fast = vias("SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1").unwrap();
        for other in [
            "SIP / 2.0 / TCP 192.0.2.1:5060;branch=z9hG4bK1",
            "sip/2.0/tcp 192.0.2.1:5060;branch=z9hG4bK1",
            "SIP/02.00/TCP 192.0.2.1:5060;branch=z9hG4bK1",
            "SIP/2.0/ TCP 192.0.2.1:5060;branch=z9hG4bK1",
            "SIP/2.0 /TCP 192.0.2.1:5060;branch=z9hG4bK1",
        ] {
            assert_eq!(vias(other).unwrap(), fast, "{other}");
        }
        assert!(vias("SIP/2.0/  ").is_err());
        assert!(vias("SIP/2.0/UDP192.0.2.1").is_err());
        assert_eq!(
            vias("SIP/2.1/UDP h").unwrap()[0].version,
            Version { major: 2, minor: 1 }
        );
    }

    proptest::proptest! {
        /// With the common sent-protocol and port read in one pass, a Via
        /// reads as the grammar alone reads it: the same value, rest and
        /// error, for prefixes in and out of the shape, ports of 0-7
        /// digits, white space around the colon and what follows.
        #[test]
        fn the_common_via_shape_reads_as_the_general_grammar(
            proto in "(SIP/2\\.0/UDP |SIP/2\\.0/TCP |SIP/2\\.0/TLS |SIP/2\\.0/UDP  |SIP/2\\.0/UDP\t|SIP/2\\.0/udp |SIP/2\\.0/SCTP | SIP/2\\.0/UDP |SIP/2\\.0/UDPX |SIP/2\\.0/UDP|SIP/2\\.0/ UDP |SIP/2\\.1/UDP |SIP/2\\.0/WS )",
            host in "(192\\.0\\.2\\.1|h\\.example\\.com|\\[::1\\]|)",
            colon in "( ?: ?|)",
            port in "[0-9]{0,7}",
            tail in "(;branch=z9hG4bK1;rport|;|,SIP/2\\.0/UDP h| x|)",
        ) {
            let text = format!("{proto}{host}{colon}{port}{tail}");
            let src = Bytes::from(text.clone());
            let fast = Via::scan::<true>(&src, &src).map(|(v, rest)| (v, rest.len()));
            let general = Via::scan::<false>(&src, &src).map(|(v, rest)| (v, rest.len()));
            proptest::prop_assert_eq!(fast, general, "{:?}", text);
        }
    }

    #[test]
    fn the_common_via_shortcuts_take_only_what_they_should() {
        assert!(Via::common_sent_protocol(b"SIP/2.0/UDP 1.2.3.4").is_some());
        for s in [
            "SIP/2.0/UDP  h",
            "SIP/2.0/UDP\th",
            "SIP/2.0/udp h",
            "SIP/2.0/UDPh",
            "SIP/2.0/UDP",
        ] {
            assert!(Via::common_sent_protocol(s.as_bytes()).is_none(), "{s:?}");
        }
        assert_eq!(Via::common_port(b":5060;x"), Some((5060, &b";x"[..])));
        assert_eq!(Via::common_port(b":65535"), Some((65535, &b""[..])));
        for s in [":65536", ":000005060", ": 5060", ":", "5060", " :5060"] {
            assert_eq!(Via::common_port(s.as_bytes()), None, "{s:?}");
        }
    }

    #[test]
    fn extraneous_separators_are_errors() {
        assert!(vias("SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
        assert!(vias("SIP/2.0/UDP 192.0.2.15,").is_err());
        assert!(vias("SIP/2.0/UDP").is_err());
        assert!(vias("SIP/7.0/UDP 192.0.2.15").unwrap()[0].version.major == 7);
        assert!(
            matches!(&vias("SIP/2.0/UNKNOWN 192.0.2.15").unwrap()[0].transport, Transport::Other(t) if t == "UNKNOWN")
        );
    }
}
