//! Transport addressing: which protocol, where a message came from, where one
//! goes, and the `udp:ADDR:PORT` listen syntax.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A SIP transport protocol this daemon speaks (RFC 3261 §18). TLS comes later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Unreliable datagrams (RFC 3261 §18, UDP).
    Udp,
    /// Reliable stream (RFC 3261 §18, TCP); framing by Content-Length.
    Tcp,
}

impl Protocol {
    /// Lower-case name as used in `--listen` and config (`udp`, `tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        }
    }

    /// Upper-case token used in the Via `sent-protocol` (`UDP`, `TCP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Protocol::Udp => "UDP",
            Protocol::Tcp => "TCP",
        }
    }

    /// Whether the protocol is reliable (RFC 3261 §17: no retransmissions,
    /// responses go back over the same connection).
    pub fn is_reliable(self) -> bool {
        matches!(self, Protocol::Tcp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("udp") {
            Ok(Protocol::Udp)
        } else if s.eq_ignore_ascii_case("tcp") {
            Ok(Protocol::Tcp)
        } else {
            Err(AddrParseError::UnknownProtocol(s.to_owned()))
        }
    }
}

/// Identifies one TCP connection in the connection table for its lifetime.
/// Never reused while the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub(crate) u64);

impl ConnectionId {
    /// The numeric value (for logs).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Where an inbound message came from: the information RFC 3261 §18.2.2
/// needs to send the response back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// Protocol the message arrived over.
    pub protocol: Protocol,
    /// Remote address (packet source / TCP peer).
    pub peer: SocketAddr,
    /// Local address that received it (the listening UDP socket, or the
    /// local end of the TCP connection).
    pub local: SocketAddr,
    /// The TCP connection it arrived on; `None` for UDP.
    pub conn: Option<ConnectionId>,
}

/// Where to send a request (the result of RFC 3263 resolution, done by the
/// caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Protocol to use.
    pub protocol: Protocol,
    /// Remote address.
    pub addr: SocketAddr,
}

impl Destination {
    /// A UDP destination.
    pub fn udp(addr: SocketAddr) -> Self {
        Destination {
            protocol: Protocol::Udp,
            addr,
        }
    }

    /// A TCP destination.
    pub fn tcp(addr: SocketAddr) -> Self {
        Destination {
            protocol: Protocol::Tcp,
            addr,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.addr)
    }
}

/// A listening address: `udp:127.0.0.1:5060`, `tcp:[::1]:0`.
///
/// This is the syntax of `--listen` and of the config's `listen` list; port
/// 0 asks the OS for a free port (see [`crate::transport::Transports::local_addrs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    /// Protocol to listen on.
    pub protocol: Protocol,
    /// Address and port to bind.
    pub addr: SocketAddr,
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.addr)
    }
}

/// Why a `proto:addr:port` string is not a [`ListenAddr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrParseError {
    /// No `proto:` prefix.
    #[error("expected PROTO:ADDR:PORT (e.g. udp:0.0.0.0:5060), got {0:?}")]
    MissingProtocol(String),
    /// The protocol is not `udp` or `tcp`.
    #[error("unknown transport protocol {0:?} (expected udp or tcp)")]
    UnknownProtocol(String),
    /// The address part is not `IPv4:PORT` or `[IPv6]:PORT`.
    #[error("invalid socket address {0:?} (expected IPv4:PORT or [IPv6]:PORT)")]
    BadAddress(String),
}

impl FromStr for ListenAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, addr) = s
            .split_once(':')
            .ok_or_else(|| AddrParseError::MissingProtocol(s.to_owned()))?;
        let protocol = proto.parse()?;
        let addr = addr
            .parse()
            .map_err(|_| AddrParseError::BadAddress(addr.to_owned()))?;
        Ok(ListenAddr { protocol, addr })
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_parses_ipv4_and_ipv6() {
        let a: ListenAddr = "udp:127.0.0.1:5060".parse().unwrap();
        assert_eq!(a.protocol, Protocol::Udp);
        assert_eq!(a.addr, "127.0.0.1:5060".parse().unwrap());
        let b: ListenAddr = "TCP:[::1]:0".parse().unwrap();
        assert_eq!(b.protocol, Protocol::Tcp);
        assert_eq!(b.addr, "[::1]:0".parse().unwrap());
        assert_eq!(b.to_string(), "tcp:[::1]:0");
    }

    #[test]
    fn listen_addr_rejects_bad_input_with_a_reason() {
        assert_eq!(
            "127.0.0.1:5060".parse::<ListenAddr>(),
            Err(AddrParseError::UnknownProtocol("127.0.0.1".into()))
        );
        assert_eq!(
            "sctp:127.0.0.1:5060".parse::<ListenAddr>(),
            Err(AddrParseError::UnknownProtocol("sctp".into()))
        );
        assert_eq!(
            "udp:localhost:5060".parse::<ListenAddr>(),
            Err(AddrParseError::BadAddress("localhost:5060".into()))
        );
        assert_eq!(
            "udp".parse::<ListenAddr>(),
            Err(AddrParseError::MissingProtocol("udp".into()))
        );
    }

    #[test]
    fn listen_addr_round_trips_through_serde() {
        let a: ListenAddr = "tcp:[::1]:5070".parse().unwrap();
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"tcp:[::1]:5070\"");
        let back: ListenAddr = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }
}
