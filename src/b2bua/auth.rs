//! Digest authentication towards an external PBX that challenges our INVITE
//! (RFC 3261 §22.2 with RFC 2617 / RFC 7616 MD5, `qop=auth` when offered).
//! Pure: takes the challenge and returns the header value.

use std::fmt::Write;

use md5::{Digest, Md5};

pub use crate::routing::DigestCredentials;
use crate::sip::{Challenge, Method};

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    let mut out = String::with_capacity(32);
    for b in h.finalize().iter() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The (Proxy-)Authorization value answering `challenge` for a request
/// `method` to `uri`, or `None` if the challenge is not a Digest MD5 one we
/// can answer. `cnonce` is the client nonce (random per answer).
pub fn answer(
    challenge: &Challenge,
    creds: &DigestCredentials,
    method: &Method,
    uri: &str,
    cnonce: &str,
) -> Option<String> {
    if !challenge.scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let algorithm = challenge.param("algorithm");
    if algorithm
        .as_deref()
        .is_some_and(|a| !a.eq_ignore_ascii_case("MD5"))
    {
        return None;
    }
    let realm = challenge.param("realm").unwrap_or_default();
    let nonce = challenge.param("nonce")?;
    let qop_auth = challenge
        .param("qop")
        .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")));
    let ha1 = md5_hex(&[&creds.username, &realm, &creds.password]);
    let ha2 = md5_hex(&[method.as_str(), uri]);
    let nc = "00000001";
    let response = if qop_auth {
        md5_hex(&[&ha1, &nonce, nc, cnonce, "auth", &ha2])
    } else {
        md5_hex(&[&ha1, &nonce, &ha2])
    };
    let mut v = format!(
        "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5",
        creds.username
    );
    if qop_auth {
        let _ = write!(v, ", qop=auth, nc={nc}, cnonce=\"{cnonce}\"");
    }
    if let Some(opaque) = challenge.param("opaque") {
        let _ = write!(v, ", opaque=\"{opaque}\"");
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse_datagram, Bytes, Limits, Message};

    fn challenge(value: &str) -> Challenge {
        let text = format!(
            "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n\
             To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nWWW-Authenticate: {value}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match parse_datagram(Bytes::from(text), &Limits::default()).unwrap() {
            Message::Response(r) => r.www_authenticate().unwrap().remove(0),
            Message::Request(_) => panic!("not a response"),
        }
    }

    fn creds() -> DigestCredentials {
        DigestCredentials {
            username: "Mufasa".into(),
            password: "Circle Of Life".into(),
        }
    }

    #[test]
    fn rfc_2617_example_response_with_qop_auth() {
        // RFC 2617 §3.5, with the method and URI of its example.
        let c = challenge(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        );
        let v = answer(
            &c,
            &creds(),
            &Method::Other("GET".into()),
            "/dir/index.html",
            "0a4f113b",
        )
        .unwrap();
        assert!(
            v.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{v}"
        );
        assert!(
            v.contains("qop=auth, nc=00000001, cnonce=\"0a4f113b\""),
            "{v}"
        );
        assert!(
            v.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""),
            "{v}"
        );
    }

    #[test]
    fn without_qop_the_rfc_2069_response_is_used() {
        let c = challenge("Digest realm=\"r\", nonce=\"n\"");
        let v = answer(&c, &creds(), &Method::Invite, "sip:1@h", "x").unwrap();
        let ha1 = md5_hex(&["Mufasa", "r", "Circle Of Life"]);
        let ha2 = md5_hex(&["INVITE", "sip:1@h"]);
        assert!(
            v.contains(&format!("response=\"{}\"", md5_hex(&[&ha1, "n", &ha2]))),
            "{v}"
        );
        assert!(!v.contains("qop"));
    }

    #[test]
    fn other_algorithms_and_schemes_are_not_answered() {
        let sha = challenge("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256");
        assert!(answer(&sha, &creds(), &Method::Invite, "sip:1@h", "x").is_none());
        let basic = challenge("Basic realm=\"r\"");
        assert!(answer(&basic, &creds(), &Method::Invite, "sip:1@h", "x").is_none());
    }
}
