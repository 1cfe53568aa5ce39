//! Listen addresses: `udp:ADDR:PORT` / `tcp:ADDR:PORT` (IPv6 as `[::1]:5060`).

use std::fmt;
use std::net::{AddrParseError, SocketAddr};
use std::str::FromStr;

use crate::routing::{Protocol, ProtocolError};

/// A socket the daemon listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    /// UDP or TCP.
    pub protocol: Protocol,
    /// Local address and port (port 0 picks a free port).
    pub addr: SocketAddr,
}

/// Why a listen address cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenAddrError {
    /// No `udp:` / `tcp:` prefix.
    #[error("expected udp:ADDR:PORT or tcp:ADDR:PORT")]
    MissingProtocol,
    /// A prefix other than udp/tcp.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The address part is not `IP:PORT` / `[IPv6]:PORT`.
    #[error("bad socket address: {0}")]
    Addr(#[from] AddrParseError),
}

impl FromStr for ListenAddr {
    type Err = ListenAddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (protocol, addr) = s
            .trim()
            .split_once(':')
            .ok_or(ListenAddrError::MissingProtocol)?;
        Ok(ListenAddr {
            protocol: protocol.parse()?,
            addr: addr.parse()?,
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6() {
        let a: ListenAddr = "udp:127.0.0.1:5060".parse().unwrap();
        assert_eq!(a.protocol, Protocol::Udp);
        assert_eq!(a.addr, "127.0.0.1:5060".parse().unwrap());
        let b: ListenAddr = "tcp:[::1]:0".parse().unwrap();
        assert_eq!(b.protocol, Protocol::Tcp);
        assert_eq!(b.to_string(), "tcp:[::1]:0");
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            "127.0.0.1".parse::<ListenAddr>(),
            Err(ListenAddrError::MissingProtocol)
        );
        assert!(matches!(
            "tls:127.0.0.1:5061".parse::<ListenAddr>(),
            Err(ListenAddrError::Protocol(_))
        ));
        assert!(matches!(
            "udp:127.0.0.1".parse::<ListenAddr>(),
            Err(ListenAddrError::Addr(_))
        ));
    }
}
