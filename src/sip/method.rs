//! Start-line vocabulary: [`Method`] (RFC 3261 §7.1), [`StatusCode`] (§7.2, §21)
//! and [`Version`].

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use super::bytestr::ByteStr;
use super::grammar::is_token;

/// A request method. Methods are case-sensitive tokens (RFC 3261 §7.1);
/// unknown ones are kept in [`Method::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE (RFC 3261).
    Invite,
    /// ACK (RFC 3261).
    Ack,
    /// BYE (RFC 3261).
    Bye,
    /// CANCEL (RFC 3261).
    Cancel,
    /// OPTIONS (RFC 3261).
    Options,
    /// REGISTER (RFC 3261).
    Register,
    /// PRACK (RFC 3262).
    Prack,
    /// UPDATE (RFC 3311).
    Update,
    /// INFO (RFC 6086).
    Info,
    /// SUBSCRIBE (RFC 6665).
    Subscribe,
    /// NOTIFY (RFC 6665).
    Notify,
    /// REFER (RFC 3515).
    Refer,
    /// MESSAGE (RFC 3428).
    Message,
    /// PUBLISH (RFC 3903).
    Publish,
    /// Any other token.
    Other(ByteStr),
}

/// The bytes are not a method token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a method token")]
pub struct InvalidMethod;

/// Every method [`Method`] has a variant for (all but [`Method::Other`]),
/// in declaration order.
pub static NAMED_METHODS: [Method; 14] = [
    Method::Invite,
    Method::Ack,
    Method::Bye,
    Method::Cancel,
    Method::Options,
    Method::Register,
    Method::Prack,
    Method::Update,
    Method::Info,
    Method::Subscribe,
    Method::Notify,
    Method::Refer,
    Method::Message,
    Method::Publish,
];

impl Method {
    /// The method name as on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(s) => s,
        }
    }

    pub(crate) fn known(b: &[u8]) -> Option<Method> {
        Some(match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"PRACK" => Method::Prack,
            b"UPDATE" => Method::Update,
            b"INFO" => Method::Info,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => return None,
        })
    }

    /// Parses a method token (copies only for unknown methods).
    pub fn parse(b: &[u8]) -> Result<Method, InvalidMethod> {
        if b.is_empty() || !b.iter().all(|&c| is_token(c)) {
            return Err(InvalidMethod);
        }
        Ok(Method::known(b)
            .unwrap_or_else(|| Method::Other(ByteStr::from_utf8_lossy(Bytes::copy_from_slice(b)))))
    }

    /// Parses a method token that is the slice `b` of `src`; only an
    /// unknown method is kept, as a zero-copy slice.
    pub(crate) fn from_slice(src: &Bytes, b: &[u8]) -> Result<Method, InvalidMethod> {
        if let Some(m) = Method::known(b) {
            return Ok(m);
        }
        if b.is_empty() || !b.iter().all(|&c| is_token(c)) {
            return Err(InvalidMethod);
        }
        Ok(Method::Other(ByteStr::from_ascii(super::grammar::sub(
            src, b,
        ))))
    }
}

impl FromStr for Method {
    type Err = InvalidMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::parse(s.as_bytes())
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A response status code, 100..=699 (RFC 3261 §7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(u16);

macro_rules! status_codes {
    ($($name:ident = $code:expr, $reason:expr;)*) => {
        impl StatusCode {
            $(
                #[doc = concat!("`", stringify!($code), " ", $reason, "`")]
                pub const $name: StatusCode = StatusCode($code);
            )*

            /// The RFC reason phrase of the code, or a generic one for its class.
            pub fn default_reason(self) -> &'static str {
                match self.0 {
                    $($code => $reason,)*
                    100..=199 => "Provisional",
                    200..=299 => "Success",
                    300..=399 => "Redirection",
                    400..=499 => "Client Error",
                    500..=599 => "Server Error",
                    _ => "Global Failure",
                }
            }
        }
    };
}

status_codes! {
    TRYING = 100, "Trying";
    RINGING = 180, "Ringing";
    CALL_IS_BEING_FORWARDED = 181, "Call Is Being Forwarded";
    QUEUED = 182, "Queued";
    SESSION_PROGRESS = 183, "Session Progress";
    OK = 200, "OK";
    ACCEPTED = 202, "Accepted";
    MULTIPLE_CHOICES = 300, "Multiple Choices";
    MOVED_PERMANENTLY = 301, "Moved Permanently";
    MOVED_TEMPORARILY = 302, "Moved Temporarily";
    USE_PROXY = 305, "Use Proxy";
    ALTERNATIVE_SERVICE = 380, "Alternative Service";
    BAD_REQUEST = 400, "Bad Request";
    UNAUTHORIZED = 401, "Unauthorized";
    PAYMENT_REQUIRED = 402, "Payment Required";
    FORBIDDEN = 403, "Forbidden";
    NOT_FOUND = 404, "Not Found";
    METHOD_NOT_ALLOWED = 405, "Method Not Allowed";
    NOT_ACCEPTABLE = 406, "Not Acceptable";
    PROXY_AUTHENTICATION_REQUIRED = 407, "Proxy Authentication Required";
    REQUEST_TIMEOUT = 408, "Request Timeout";
    GONE = 410, "Gone";
    REQUEST_ENTITY_TOO_LARGE = 413, "Request Entity Too Large";
    REQUEST_URI_TOO_LONG = 414, "Request-URI Too Long";
    UNSUPPORTED_MEDIA_TYPE = 415, "Unsupported Media Type";
    UNSUPPORTED_URI_SCHEME = 416, "Unsupported URI Scheme";
    BAD_EXTENSION = 420, "Bad Extension";
    EXTENSION_REQUIRED = 421, "Extension Required";
    INTERVAL_TOO_BRIEF = 423, "Interval Too Brief";
    TEMPORARILY_UNAVAILABLE = 480, "Temporarily Unavailable";
    CALL_OR_TRANSACTION_DOES_NOT_EXIST = 481, "Call/Transaction Does Not Exist";
    LOOP_DETECTED = 482, "Loop Detected";
    TOO_MANY_HOPS = 483, "Too Many Hops";
    ADDRESS_INCOMPLETE = 484, "Address Incomplete";
    AMBIGUOUS = 485, "Ambiguous";
    BUSY_HERE = 486, "Busy Here";
    REQUEST_TERMINATED = 487, "Request Terminated";
    NOT_ACCEPTABLE_HERE = 488, "Not Acceptable Here";
    REQUEST_PENDING = 491, "Request Pending";
    UNDECIPHERABLE = 493, "Undecipherable";
    SERVER_INTERNAL_ERROR = 500, "Server Internal Error";
    NOT_IMPLEMENTED = 501, "Not Implemented";
    BAD_GATEWAY = 502, "Bad Gateway";
    SERVICE_UNAVAILABLE = 503, "Service Unavailable";
    SERVER_TIMEOUT = 504, "Server Time-out";
    VERSION_NOT_SUPPORTED = 505, "Version Not Supported";
    MESSAGE_TOO_LARGE = 513, "Message Too Large";
    BUSY_EVERYWHERE = 600, "Busy Everywhere";
    DECLINE = 603, "Decline";
    DOES_NOT_EXIST_ANYWHERE = 604, "Does Not Exist Anywhere";
    NOT_ACCEPTABLE_ANYWHERE = 606, "Not Acceptable";
}

impl StatusCode {
    /// A status code, if `code` is in 100..=699.
    pub const fn new(code: u16) -> Option<Self> {
        if code >= 100 && code <= 699 {
            Some(StatusCode(code))
        } else {
            None
        }
    }

    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// 1xx.
    pub const fn is_provisional(self) -> bool {
        self.0 < 200
    }

    /// 2xx.
    pub const fn is_success(self) -> bool {
        self.0 >= 200 && self.0 < 300
    }

    /// 300..=699: ends a transaction with a failure or redirect.
    pub const fn is_final_failure(self) -> bool {
        self.0 >= 300
    }

    /// The class digit: 1 to 6.
    pub const fn class(self) -> u8 {
        (self.0 / 100) as u8
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `SIP/major.minor`. Any version parses so that `SIP/7.0` can be answered
/// with 505 (RFC 4475 §3.1.2.16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl Version {
    /// SIP/2.0.
    pub const SIP_2_0: Version = Version { major: 2, minor: 0 };

    /// True for SIP/2.0.
    pub fn is_sip_2_0(self) -> bool {
        self == Self::SIP_2_0
    }

    /// Parses `SIP/1*DIGIT.1*DIGIT` ("SIP" case-insensitive, RFC 3261 §25.1).
    pub fn parse(b: &[u8]) -> Option<Version> {
        // What every start line carries, without the general reading.
        if b == b"SIP/2.0" {
            return Some(Self::SIP_2_0);
        }
        b.get(..4).filter(|p| p.eq_ignore_ascii_case(b"SIP/"))?;
        Self::parse_number(&b[4..])
    }

    /// Parses `1*DIGIT.1*DIGIT`.
    pub(crate) fn parse_number(b: &[u8]) -> Option<Version> {
        let dot = super::grammar::find_byte(b'.', b)?;
        let major = super::grammar::parse_u32(&b[..dot])?;
        let minor = super::grammar::parse_u32(&b[dot + 1..])?;
        Some(Version { major, minor })
    }
}

impl Default for Version {
    fn default() -> Self {
        Self::SIP_2_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_case_sensitive_tokens() {
        assert_eq!(Method::parse(b"INVITE").unwrap(), Method::Invite);
        assert!(matches!(Method::parse(b"invite").unwrap(), Method::Other(s) if s == "invite"));
        assert!(Method::parse(b"IN VITE").is_err());
        assert_eq!(
            Method::parse(b"RE%47IST%45R").unwrap().as_str(),
            "RE%47IST%45R"
        );
    }

    #[test]
    fn status_code_range_and_reason() {
        assert!(StatusCode::new(99).is_none());
        assert!(StatusCode::new(700).is_none());
        let s = StatusCode::new(416).unwrap();
        assert_eq!(s.default_reason(), "Unsupported URI Scheme");
        assert_eq!(s.class(), 4);
        assert!(StatusCode::TRYING.is_provisional());
        assert_eq!(
            StatusCode::new(499).unwrap().default_reason(),
            "Client Error"
        );
    }

    #[test]
    fn version_parses_any_number() {
        assert_eq!(
            Version::parse(b"SIP/7.0"),
            Some(Version { major: 7, minor: 0 })
        );
        assert!(Version::parse(b"SIP/2.0").unwrap().is_sip_2_0());
        assert_eq!(Version::parse(b"SIP/2"), None);
        assert_eq!(Version::parse(b"HTTP/1.1"), None);
    }
}
