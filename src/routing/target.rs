//! Where a number's calls go ([`Target`]) and what happens when that fails
//! ([`OnFailure`]), as resolved from the PBX files.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::number::Number;
use crate::sip::{ByteStr, Host, SipUri, Uri};
use crate::transport::{Destination, Protocol};

/// Identifier of a virtual PBX (tenant); the stem of its `config/pbx/<id>.toml`.
pub type PbxId = Arc<str>;

/// Digest credentials (RFC 3261 §22) used when the external PBX challenges us.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    /// Digest `username`.
    pub username: String,
    /// Digest password.
    pub password: String,
}

impl fmt::Debug for DigestCredentials {
    // The password stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A customer's own PBX reached over SIP (SPEC §1 "External PBX").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalPbx {
    /// The PBX (tenant) this external PBX belongs to.
    pub pbx: PbxId,
    /// Its id inside that PBX, as used in `forward = "external:<id>"`.
    pub id: Arc<str>,
    /// Where calls are sent: the Request-URI of the outbound INVITE.
    pub uri: SipUri,
    /// Transport used to reach it.
    pub transport: Protocol,
    /// Credentials to answer its digest challenges, if it sends any.
    pub credentials: Option<DigestCredentials>,
    /// How long to wait for an answer before the call counts as not answered.
    pub dial_timeout: Duration,
    /// Numbers this external PBX uses (e.g. as caller ID); a number listed here
    /// cannot be disconnected while it stays listed (SPEC §7).
    pub numbers: Vec<Number>,
}

impl ExternalPbx {
    /// Where to send to it when its URI's host is an IP address: that
    /// address, the URI's port or 5060 (5061 for `sips:`, RFC 3261 §19.1.2),
    /// over [`ExternalPbx::transport`]. `None` for a domain name, which
    /// needs RFC 3263 resolution first.
    pub fn destination(&self) -> Option<Destination> {
        let ip = match &self.uri.host {
            Host::Ipv4(a) => IpAddr::V4(*a),
            Host::Ipv6(a) => IpAddr::V6(*a),
            Host::Domain(_) => return None,
        };
        let default_port = if self.uri.secure { 5061 } else { 5060 };
        Some(Destination {
            protocol: self.transport,
            addr: SocketAddr::new(ip, self.uri.port.unwrap_or(default_port)),
        })
    }

    /// The Request-URI of the outbound INVITE for a call to `dialed`: the
    /// configured URI, with the dialed number (E.164) as user part when the
    /// URI names no user (`sip:10.0.0.1:5080` → `sip:+74951234567@10.0.0.1:5080`);
    /// a URI with a user part is used as written.
    pub fn request_uri(&self, dialed: Number) -> Uri {
        let mut uri = self.uri.clone();
        if uri.user.is_none() {
            uri.user = Some(ByteStr::from(dialed.to_e164()));
        }
        Uri::Sip(uri)
    }
}

/// The forward target of a number (SPEC §7 "Per number").
///
/// Only [`Target::External`] is routed today; the others are parsed so the
/// files can name them, and `vpbx check` reports them as not yet supported.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// `external:<id>`: a customer's own PBX.
    External(Arc<ExternalPbx>),
    /// `employee:<id>`: an employee's phones.
    Employee(Arc<str>),
    /// `department:<id>`: a department's members.
    Department(Arc<str>),
    /// `scenario:<id>`: a call scenario (IVR).
    Scenario(Arc<str>),
    /// `pbx:<id>`: another virtual PBX on the platform.
    Pbx(PbxId),
}

/// The kind of a forward target, as written before the `:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// `external:`
    External,
    /// `employee:`
    Employee,
    /// `department:`
    Department,
    /// `scenario:`
    Scenario,
    /// `pbx:`
    Pbx,
}

impl TargetKind {
    /// The prefix as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::External => "external",
            TargetKind::Employee => "employee",
            TargetKind::Department => "department",
            TargetKind::Scenario => "scenario",
            TargetKind::Pbx => "pbx",
        }
    }
}

/// A `forward` value split into kind and id, before the id is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetSpec<'a> {
    /// What kind of target.
    pub kind: TargetKind,
    /// The id after the `:`.
    pub id: &'a str,
}

/// Why a `forward` value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// No `kind:` prefix.
    #[error("target {0:?} has no kind; write external:<id>, employee:<id>, department:<id>, scenario:<id> or pbx:<id>")]
    MissingKind(String),
    /// A prefix that names no target kind.
    #[error("unknown target kind {0:?}; expected external, employee, department, scenario or pbx")]
    UnknownKind(String),
    /// Nothing after the `:`, or characters ids may not have.
    #[error(
        "bad target id {0:?}: ids are non-empty and use only letters, digits, '-', '_' and '.'"
    )]
    BadId(String),
}

impl<'a> TargetSpec<'a> {
    /// Splits `kind:id`.
    pub fn parse(s: &'a str) -> Result<Self, TargetError> {
        let (kind, id) = s
            .split_once(':')
            .ok_or_else(|| TargetError::MissingKind(s.to_owned()))?;
        let kind = match kind.trim() {
            "external" => TargetKind::External,
            "employee" => TargetKind::Employee,
            "department" => TargetKind::Department,
            "scenario" => TargetKind::Scenario,
            "pbx" => TargetKind::Pbx,
            other => return Err(TargetError::UnknownKind(other.to_owned())),
        };
        let id = id.trim();
        if !is_valid_id(id) {
            return Err(TargetError::BadId(id.to_owned()));
        }
        Ok(TargetSpec { kind, id })
    }
}

/// Ids (of PBXs, external PBXs, employees…) are short ASCII names.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What to do when the forward target fails (SPEC §2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnFailure {
    /// Give the caller a final status that says why (e.g. 480, 486).
    Hangup,
    /// Answer, play this WAV prompt, hang up.
    Prompt(PathBuf),
    /// Greeting, record, deliver to the recipients.
    Voicemail,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_spec_parses_every_kind() {
        for (text, kind, id) in [
            ("external:office", TargetKind::External, "office"),
            ("employee:ivanov", TargetKind::Employee, "ivanov"),
            ("department:sales-2", TargetKind::Department, "sales-2"),
            ("scenario:main_ivr", TargetKind::Scenario, "main_ivr"),
            ("pbx:acme.msk", TargetKind::Pbx, "acme.msk"),
        ] {
            assert_eq!(TargetSpec::parse(text), Ok(TargetSpec { kind, id }));
        }
    }

    #[test]
    fn target_spec_rejects_garbage() {
        assert_eq!(
            TargetSpec::parse("office"),
            Err(TargetError::MissingKind("office".into()))
        );
        assert_eq!(
            TargetSpec::parse("phone:1"),
            Err(TargetError::UnknownKind("phone".into()))
        );
        assert_eq!(
            TargetSpec::parse("external:"),
            Err(TargetError::BadId(String::new()))
        );
        assert_eq!(
            TargetSpec::parse("external:a b"),
            Err(TargetError::BadId("a b".into()))
        );
    }

    fn external(uri: &str) -> ExternalPbx {
        let Ok(Uri::Sip(uri)) = Uri::parse(uri) else {
            panic!("{uri}")
        };
        ExternalPbx {
            pbx: "acme".into(),
            id: "office".into(),
            uri,
            transport: Protocol::Tcp,
            credentials: None,
            dial_timeout: std::time::Duration::from_secs(30),
            numbers: Vec::new(),
        }
    }

    #[test]
    fn request_uri_carries_the_dialed_number_unless_the_uri_has_a_user() {
        let n = Number::parse("84951234567").unwrap();
        assert_eq!(
            external("sip:10.0.0.1:5080").request_uri(n).to_string(),
            "sip:+74951234567@10.0.0.1:5080"
        );
        assert_eq!(
            external("sip:office@pbx.example.com;transport=tcp")
                .request_uri(n)
                .to_string(),
            "sip:office@pbx.example.com;transport=tcp"
        );
    }

    #[test]
    fn destination_of_ip_hosts_only() {
        assert_eq!(
            external("sip:10.0.0.1").destination(),
            Some(Destination::tcp("10.0.0.1:5060".parse().unwrap()))
        );
        assert_eq!(
            external("sips:[2001:db8::1]:5071").destination(),
            Some(Destination::tcp("[2001:db8::1]:5071".parse().unwrap()))
        );
        assert_eq!(external("sip:pbx.example.com").destination(), None);
    }

    #[test]
    fn credentials_debug_hides_password() {
        let c = DigestCredentials {
            username: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
