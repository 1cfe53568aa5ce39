//! RFC 3261 §18.1.2: "When a response is received, the client transport
//! examines the top Via header field value. If the value of the 'sent-by'
//! parameter in that header field value does not correspond to a value that
//! the client transport is configured to insert into requests, the response
//! MUST be silently discarded."
//!
//! The values we insert are the ones in the top Via of the requests this
//! layer sends: [`SentByTable`] learns each one as a client transaction
//! starts, so it holds exactly what our TU put there (the advertised host,
//! or the socket's address, and the socket's port), and nothing has to be
//! configured twice. A response is then ours only if its top Via sent-by is
//! one of them; the check runs before matching, so it covers stray
//! responses too (a forged stray 2xx would otherwise be ACKed and BYEd).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::sip::{ByteStr, Host, Transport, Via};

/// The most distinct sent-by values remembered. A TU puts one per local
/// socket (and host name) in its requests; far more means it writes
/// something else there, and then the check is switched off rather than
/// discarding responses to requests we did send.
pub(crate) const MAX_SENT_BY: usize = 64;

/// A Via sent-by as compared by §18.1.2: domain names without regard to
/// case, a missing port as the transport's default (5061 for TLS, 80 and
/// 443 for WS and WSS as in RFC 7118, else 5060).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentBy {
    host: Host,
    port: u16,
}

impl SentBy {
    /// The sent-by of `via`.
    pub(crate) fn of(via: &Via) -> SentBy {
        let host = match &via.host {
            Host::Domain(d) if d.bytes().any(|b| b.is_ascii_uppercase()) => {
                Host::Domain(ByteStr::from(d.to_ascii_lowercase()))
            }
            h => h.clone(),
        };
        let port = via.port.unwrap_or(match via.transport {
            Transport::Tls => 5061,
            Transport::Ws => 80,
            Transport::Wss => 443,
            _ => 5060,
        });
        SentBy { host, port }
    }

    /// The same value in its own allocation: a remembered host name must
    /// not keep the request it was read from alive.
    fn detached(&self) -> SentBy {
        let host = match &self.host {
            Host::Domain(d) => Host::Domain(ByteStr::from(d.as_str().to_owned())),
            h => h.clone(),
        };
        SentBy {
            host,
            port: self.port,
        }
    }
}

impl std::fmt::Display for SentBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Ipv6(a) => write!(f, "[{a}]:{}", self.port),
            Host::Ipv4(a) => write!(f, "{a}:{}", self.port),
            Host::Domain(d) => write!(f, "{d}:{}", self.port),
        }
    }
}

/// The sent-by values this layer has put in requests (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct SentByTable {
    known: ArcSwap<Vec<SentBy>>,
    /// More than [`MAX_SENT_BY`] values were seen: every sent-by passes.
    overflowed: AtomicBool,
}

impl SentByTable {
    /// Remembers the sent-by of a request we are sending.
    pub(crate) fn learn(&self, sent_by: SentBy) {
        if self.known.load().contains(&sent_by) || self.overflowed.load(Ordering::Relaxed) {
            return;
        }
        let sent_by = sent_by.detached();
        let mut overflow = false;
        self.known.rcu(|known| {
            overflow = false;
            if known.contains(&sent_by) {
                return Arc::clone(known);
            }
            if known.len() >= MAX_SENT_BY {
                overflow = true;
                return Arc::clone(known);
            }
            let mut more = Vec::with_capacity(known.len() + 1);
            more.extend(known.iter().cloned());
            more.push(sent_by.clone());
            Arc::new(more)
        });
        if overflow && !self.overflowed.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit = MAX_SENT_BY,
                "more distinct Via sent-by values in our requests than remembered: \
                 responses are no longer checked against them (RFC 3261 §18.1.2)"
            );
        }
    }

    /// Whether a response with this top Via sent-by answers one of our
    /// requests as far as §18.1.2 can tell.
    pub(crate) fn is_ours(&self, sent_by: &SentBy) -> bool {
        self.overflowed.load(Ordering::Relaxed) || self.known.load().contains(sent_by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_by(via: &str) -> SentBy {
        SentBy::of(&Via::parse_first(&bytes::Bytes::from(via.to_owned())).unwrap())
    }

    #[test]
    fn only_the_values_we_inserted_are_ours() {
        let table = SentByTable::default();
        let ours = sent_by("SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK1;rport");
        assert!(!table.is_ours(&ours), "nothing sent yet");
        table.learn(ours.clone());
        table.learn(sent_by("SIP/2.0/TCP PBX.example.com;branch=z9hG4bK2"));
        assert!(table.is_ours(&ours));
        // Another branch, received/rport added: still the same sent-by.
        assert!(table.is_ours(&sent_by(
            "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKx;received=192.0.2.9;rport=1"
        )));
        // Host names without regard to case; no port is the default port.
        assert!(table.is_ours(&sent_by("SIP/2.0/TCP pbx.EXAMPLE.com:5060;branch=z9hG4bK3")));
        // Another port, another host: not ours.
        assert!(!table.is_ours(&sent_by("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1")));
        assert!(!table.is_ours(&sent_by("SIP/2.0/UDP 192.0.2.2:5062;branch=z9hG4bK1")));
        assert!(!table.is_ours(&sent_by("SIP/2.0/TLS pbx.example.com;branch=z9hG4bK1")));
    }

    #[test]
    fn ipv6_addresses_compare_as_addresses() {
        let table = SentByTable::default();
        table.learn(sent_by("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1"));
        assert!(table.is_ours(&sent_by(
            "SIP/2.0/UDP [2001:DB8:0:0::1]:5060;branch=z9hG4bK9"
        )));
        assert_eq!(
            sent_by("SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK1").to_string(),
            "[2001:db8::1]:5060"
        );
    }

    #[test]
    fn too_many_values_switch_the_check_off_instead_of_dropping_answers() {
        let table = SentByTable::default();
        for port in 0..MAX_SENT_BY {
            table.learn(sent_by(&format!(
                "SIP/2.0/UDP 192.0.2.1:{};branch=z9hG4bK1",
                6000 + port
            )));
        }
        assert!(!table.is_ours(&sent_by("SIP/2.0/UDP 192.0.2.1:7000;branch=z9hG4bK1")));
        // One more: a request of ours now carries a value not remembered.
        table.learn(sent_by("SIP/2.0/UDP 192.0.2.1:7001;branch=z9hG4bK1"));
        assert!(table.is_ours(&sent_by("SIP/2.0/UDP 192.0.2.1:7001;branch=z9hG4bK1")));
        assert!(table.is_ours(&sent_by("SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK1")));
    }
}
