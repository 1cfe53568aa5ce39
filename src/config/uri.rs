//! The check applied to external PBX URIs (a `sip:`/`sips:` URI parsed by
//! [`crate::sip`], with a port that can be dialed) and to host names.

use std::net::Ipv4Addr;

use crate::sip::{SipUri, Uri};

/// Why an external PBX URI is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// Not a URI at all (RFC 3261 §25.1 syntax).
    #[error("{0}")]
    Syntax(#[from] crate::sip::UriError),
    /// A URI, but not `sip:` or `sips:`.
    #[error("scheme must be sip: or sips:, not {0}:")]
    Scheme(String),
    /// Port 0 cannot be dialed.
    #[error("port 0 cannot be dialed")]
    PortZero,
}

/// Parses an external PBX URI (RFC 3261 §19.1.1).
pub(crate) fn parse_sip_uri(text: &str) -> Result<SipUri, UriError> {
    match Uri::parse(text)? {
        Uri::Sip(uri) if uri.port == Some(0) => Err(UriError::PortZero),
        Uri::Sip(uri) => Ok(uri),
        other => Err(UriError::Scheme(other.scheme().to_owned())),
    }
}

/// An IPv4 address or a domain name (RFC 3261 `hostname`).
pub(crate) fn is_host(host: &str) -> bool {
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // A top label of digits only would be a malformed IPv4 address.
        && host
            .rsplit('.')
            .next()
            .is_some_and(|top| !top.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_forms() {
        for ok in [
            "sip:127.0.0.1:5080",
            "sip:pbx.example.com",
            "SIP:office@pbx.example.com:5060;transport=tcp",
            "sips:[2001:db8::1]:5061",
            "sip:[::1]",
            "sip:user:pw@10.0.0.1?subject=x",
        ] {
            assert!(parse_sip_uri(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_ones() {
        assert_eq!(
            parse_sip_uri("http://x"),
            Err(UriError::Scheme("http".into()))
        );
        assert_eq!(
            parse_sip_uri("tel:+74951234567"),
            Err(UriError::Scheme("tel".into()))
        );
        assert_eq!(parse_sip_uri("sip:host:0"), Err(UriError::PortZero));
        assert!(matches!(parse_sip_uri("sip:"), Err(UriError::Syntax(_))));
        assert!(matches!(parse_sip_uri("sip:a b"), Err(UriError::Syntax(_))));
        assert!(matches!(
            parse_sip_uri("sip:host:99999"),
            Err(UriError::Syntax(_))
        ));
        assert!(matches!(
            parse_sip_uri("sip:[::1"),
            Err(UriError::Syntax(_))
        ));
        assert!(matches!(
            parse_sip_uri("noscheme"),
            Err(UriError::Syntax(_))
        ));
    }

    #[test]
    fn host_names() {
        assert!(is_host("pbx.example.com"));
        assert!(is_host("10.0.0.1"));
        assert!(!is_host("1.2.3.4.5"));
        assert!(!is_host("a b"));
        assert!(!is_host("-x.com"));
    }
}
