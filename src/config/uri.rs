//! The check applied to external PBX URIs: `sip:`/`sips:` with a host that
//! is an IP address or a domain name and an optional port.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Why an external PBX URI is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// Not `sip:` or `sips:`.
    #[error("scheme must be sip: or sips:")]
    Scheme,
    /// Nothing where the host should be.
    #[error("missing host")]
    MissingHost,
    /// A host that is not an IP address or a domain name.
    #[error("bad host {0:?}")]
    BadHost(String),
    /// A port that is not 1..=65535.
    #[error("bad port {0:?}")]
    BadPort(String),
    /// An empty user part (`sip:@host`).
    #[error("empty user part before '@'")]
    EmptyUser,
}

/// Checks a `sip:`/`sips:` URI (RFC 3261 §19.1.1) far enough to send to it.
pub(crate) fn check_sip_uri(uri: &str) -> Result<(), UriError> {
    let rest = strip_prefix_ci(uri, "sip:")
        .or_else(|| strip_prefix_ci(uri, "sips:"))
        .ok_or(UriError::Scheme)?;
    // userinfo ends at the last '@' before any parameter or header.
    let end = rest.find(['?', ';']).unwrap_or(rest.len());
    let hostport = match rest[..end].rfind('@') {
        Some(0) => return Err(UriError::EmptyUser),
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    let hostport = &hostport[..hostport.find([';', '?']).unwrap_or(hostport.len())];
    if hostport.is_empty() {
        return Err(UriError::MissingHost);
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let close = v6
            .find(']')
            .ok_or_else(|| UriError::BadHost(hostport.into()))?;
        v6[..close]
            .parse::<Ipv6Addr>()
            .map_err(|_| UriError::BadHost(hostport.into()))?;
        let tail = &v6[close + 1..];
        match tail.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None if tail.is_empty() => (None, None),
            None => return Err(UriError::BadHost(hostport.into())),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(hostport), None),
        }
    };
    if let Some(host) = host {
        if !is_host(host) {
            return Err(UriError::BadHost(host.into()));
        }
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err(UriError::BadPort(port.into())),
        }
    }
    Ok(())
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
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
            assert_eq!(check_sip_uri(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_ones() {
        assert_eq!(check_sip_uri("http://x"), Err(UriError::Scheme));
        assert_eq!(check_sip_uri("sip:"), Err(UriError::MissingHost));
        assert_eq!(check_sip_uri("sip:@host"), Err(UriError::EmptyUser));
        assert_eq!(
            check_sip_uri("sip:a b"),
            Err(UriError::BadHost("a b".into()))
        );
        assert_eq!(
            check_sip_uri("sip:1.2.3.4.5"),
            Err(UriError::BadHost("1.2.3.4.5".into()))
        );
        assert_eq!(
            check_sip_uri("sip:host:0"),
            Err(UriError::BadPort("0".into()))
        );
        assert_eq!(
            check_sip_uri("sip:host:99999"),
            Err(UriError::BadPort("99999".into()))
        );
        assert_eq!(
            check_sip_uri("sip:[::1"),
            Err(UriError::BadHost("[::1".into()))
        );
    }
}
