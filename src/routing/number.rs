//! Dialed numbers: normalization to E.164 (SPEC §2.1).
//!
//! A [`Number`] is always a valid, normalized E.164 number. Its digits are
//! stored as one integer: E.164 has at most 15 digits and a country code
//! never starts with `0`, so the digit string and the integer map one to one,
//! and the routing table hashes a `u64` instead of a string.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use crate::sip::Uri;

/// Most digits an E.164 number may have (ITU-T E.164 §6).
pub const MAX_DIGITS: usize = 15;
/// Fewest digits (country code included) accepted for a `+CC…` number.
pub const MIN_DIGITS: usize = 6;
/// Digits after `+7` in a Russian (zone 7) number.
const RU_NATIONAL_DIGITS: usize = 10;

/// A normalized E.164 number, e.g. `+74951234567`.
///
/// Built by [`Number::parse`] from what operators and carriers write:
/// `8XXXXXXXXXX`, `7XXXXXXXXXX`, `+7XXXXXXXXXX` (Russia, 10 national digits),
/// `+CC…` for other countries, with visual separators (space, `-`, `.`, `(`,
/// `)`) anywhere after the optional leading `+`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Number(NonZeroU64);

/// Why a string is not a number we can route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumberError {
    /// Nothing but whitespace.
    #[error("empty number")]
    Empty,
    /// A character that is neither a digit nor a visual separator.
    #[error("invalid character {ch:?} at position {position} (allowed: digits, a leading '+', and the separators space - . ( ))")]
    InvalidCharacter {
        /// The offending character.
        ch: char,
        /// Its character index in the trimmed input, from 0.
        position: usize,
    },
    /// A `+` that is not the first character.
    #[error("'+' is only allowed as the first character (found at position {position})")]
    MisplacedPlus {
        /// Character index of the `+`, from 0.
        position: usize,
    },
    /// Separators but no digits.
    #[error("no digits")]
    NoDigits,
    /// More digits than E.164 allows.
    #[error("too long: {digits} digits, E.164 allows at most {MAX_DIGITS}")]
    TooLong {
        /// Digits found.
        digits: usize,
    },
    /// Fewer digits than any international number has.
    #[error("too short: {digits} digits after '+', at least {MIN_DIGITS} expected")]
    TooShort {
        /// Digits found.
        digits: usize,
    },
    /// `+0…`: country codes never start with 0.
    #[error("country code cannot start with 0")]
    ZeroCountryCode,
    /// A zone 7 number whose national part is not 10 digits.
    #[error(
        "+7 numbers have {RU_NATIONAL_DIGITS} digits after the country code, found {national}"
    )]
    RussianLength {
        /// Digits found after the `7`.
        national: usize,
    },
    /// No `+` and not one of the Russian 11-digit forms.
    #[error("no country code: write +<country code><number>, or 11 digits starting with 8 or 7 (found {digits} digits)")]
    NoCountryCode {
        /// Digits found.
        digits: usize,
    },
    /// A URI without a user part to read the number from.
    #[error("the URI has no user part")]
    NoUserPart,
    /// A `%` escape in a SIP URI user part that is not `%HH`.
    #[error("bad %-escape in the URI user part")]
    BadEscape,
    /// A URI scheme that carries no number.
    #[error("URI scheme {scheme:?} does not carry a telephone number")]
    UnsupportedScheme {
        /// The scheme seen.
        scheme: String,
    },
}

impl Number {
    /// Parses and normalizes a number as written by a person or a carrier.
    pub fn parse(input: &str) -> Result<Number, NumberError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(NumberError::Empty);
        }
        let mut plus = false;
        let mut value: u64 = 0;
        let mut digits = 0usize;
        let mut first_digit = None;
        for (position, ch) in text.chars().enumerate() {
            match ch {
                '+' if position == 0 => plus = true,
                '+' => return Err(NumberError::MisplacedPlus { position }),
                '0'..='9' => {
                    let d = u64::from(ch as u8 - b'0');
                    first_digit.get_or_insert(d);
                    digits += 1;
                    // Past 15 digits keep counting for the message, stop accumulating.
                    if digits <= MAX_DIGITS {
                        value = value * 10 + d;
                    }
                }
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(NumberError::InvalidCharacter { ch, position }),
            }
        }
        let Some(first) = first_digit else {
            return Err(NumberError::NoDigits);
        };
        Number::from_digits(plus, first, digits, value)
    }

    /// The number of a SIP URI user part of digits alone, with or without
    /// a leading `+` and up to its first `;` (what Request-URIs usually
    /// carry): [`Number::from_sip_user`]'s result for it, read in one pass
    /// over the bytes. `None` for any other user part (separators, white
    /// space, escapes, anything else, or nothing before the `;`), which
    /// [`Number::parse`] reads.
    fn parse_plain(user: &[u8]) -> Option<Result<Number, NumberError>> {
        let (plus, text) = match user {
            [b'+', rest @ ..] => (true, rest),
            _ => (false, user),
        };
        let mut value: u64 = 0;
        let mut digits = 0;
        for &b in text {
            if b == b';' {
                break;
            }
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            value = value.wrapping_mul(10).wrapping_add(u64::from(d));
            digits += 1;
        }
        let &first = text.first().filter(|_| digits > 0)?;
        if digits > MAX_DIGITS {
            return Some(Err(NumberError::TooLong { digits }));
        }
        Some(Number::from_digits(
            plus,
            u64::from(first - b'0'),
            digits,
            value,
        ))
    }

    /// The checks and the normal form shared by [`Number::parse`] and
    /// [`Number::parse_plain`]: `digits` digits (at most [`MAX_DIGITS`]),
    /// the first `first`, read as `value`, after a `+` if `plus`.
    fn from_digits(
        plus: bool,
        first: u64,
        digits: usize,
        mut value: u64,
    ) -> Result<Number, NumberError> {
        if digits > MAX_DIGITS {
            return Err(NumberError::TooLong { digits });
        }
        if plus {
            if first == 0 {
                return Err(NumberError::ZeroCountryCode);
            }
            if first == 7 && digits != RU_NATIONAL_DIGITS + 1 {
                return Err(NumberError::RussianLength {
                    national: digits - 1,
                });
            }
            if digits < MIN_DIGITS {
                return Err(NumberError::TooShort { digits });
            }
        } else if digits == RU_NATIONAL_DIGITS + 1 && (first == 8 || first == 7) {
            // 8XXXXXXXXXX (trunk prefix) and 7XXXXXXXXXX both mean +7XXXXXXXXXX.
            value = 7 * 10u64.pow(RU_NATIONAL_DIGITS as u32)
                + value % 10u64.pow(RU_NATIONAL_DIGITS as u32);
        } else {
            return Err(NumberError::NoCountryCode { digits });
        }
        // `first` is non-zero in every branch that gets here, so `value` is too.
        NonZeroU64::new(value)
            .map(Number)
            .ok_or(NumberError::ZeroCountryCode)
    }

    /// Reads the number from the user part of a `sip:`/`sips:` URI, as it is
    /// written in the message (still %-escaped).
    ///
    /// Parameters inside the user part (`;phone-context=…`, `;isub=…`,
    /// RFC 3966 §5.1) are dropped, then `%HH` escapes are decoded, then the
    /// result is normalized like [`Number::parse`].
    pub fn from_sip_user(user: &str) -> Result<Number, NumberError> {
        if let Some(number) = Number::parse_plain(user.as_bytes()) {
            return number;
        }
        let subscriber = user.split(';').next().unwrap_or(user);
        if subscriber.is_empty() {
            return Err(NumberError::NoUserPart);
        }
        if !subscriber.contains('%') {
            return Number::parse(subscriber);
        }
        let unescaped = unescape(subscriber)?;
        Number::parse(&unescaped)
    }

    /// Reads the number from a `tel:` URI's number (RFC 3966), parameters
    /// such as `;phone-context` already removed or still attached.
    pub fn from_tel(number: &str) -> Result<Number, NumberError> {
        Number::from_sip_user(number)
    }

    /// The number a URI carries: the user part of a `sip:`/`sips:` URI or
    /// the number of a `tel:` URI (SPEC §2.1).
    pub fn from_uri(uri: &Uri) -> Result<Number, NumberError> {
        match uri {
            Uri::Sip(sip) => {
                Number::from_sip_user(sip.user.as_deref().ok_or(NumberError::NoUserPart)?)
            }
            Uri::Tel(tel) => Number::from_tel(&tel.number),
            Uri::Other { scheme, .. } => Err(NumberError::UnsupportedScheme {
                scheme: scheme.to_string(),
            }),
        }
    }

    /// The dialed number of an inbound request (SPEC §2.1): from the
    /// Request-URI, else from the To URI. When neither carries a number the
    /// Request-URI's error is returned.
    pub fn dialed(request_uri: &Uri, to: Option<&Uri>) -> Result<Number, NumberError> {
        match Number::from_uri(request_uri) {
            Ok(n) => Ok(n),
            Err(e) => to.and_then(|to| Number::from_uri(to).ok()).ok_or(e),
        }
    }

    /// The digits as an integer (without the `+`).
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }

    /// The E.164 text, `+` and the digits: what `to_string()` gives,
    /// without `core::fmt` (the B2BUA writes it for every call).
    pub fn to_e164(self) -> String {
        let mut digits = itoa::Buffer::new();
        let d = digits.format(self.0.get());
        let mut s = String::with_capacity(d.len() + 1);
        s.push('+');
        s.push_str(d);
        s
    }
}

/// Decodes `%HH` escapes (RFC 3261 §25.1 `escaped`).
fn unescape(s: &str) -> Result<String, NumberError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(NumberError::BadEscape)?;
            let hi = hex_value(hex[0]).ok_or(NumberError::BadEscape)?;
            let lo = hex_value(hex[1]).ok_or(NumberError::BadEscape)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // A non-UTF-8 escape cannot be a digit or separator anyway; say where it is.
    String::from_utf8(out).map_err(|_| NumberError::BadEscape)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Number(+{})", self.0)
    }
}

impl FromStr for Number {
    type Err = NumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Number::parse(s)
    }
}

impl serde::Serialize for Number {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Number::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        let cases = [
            ("+74951234567", "+74951234567"),
            ("84951234567", "+74951234567"),
            ("74951234567", "+74951234567"),
            ("8 (495) 123-45-67", "+74951234567"),
            ("+7 495 123 45 67", "+74951234567"),
            ("+7.495.123.45.67", "+74951234567"),
            ("  +7-(495)-123-45-67  ", "+74951234567"),
            ("8-800-555-35-35", "+78005553535"),
            ("89161234567", "+79161234567"),
            ("+44 20 7946 0958", "+442079460958"),
            ("+1 (212) 555-0100", "+12125550100"),
            ("+375 17 123 45 67", "+375171234567"),
            ("+999999999999999", "+999999999999999"),
        ];
        for (input, want) in cases {
            let got = Number::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got.to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn rejection_table() {
        use NumberError::*;
        let cases = [
            ("", Empty),
            ("   ", Empty),
            ("--", NoDigits),
            ("+", NoDigits),
            (
                "+7 495 abc",
                InvalidCharacter {
                    ch: 'a',
                    position: 7,
                },
            ),
            (
                "8495#1234567",
                InvalidCharacter {
                    ch: '#',
                    position: 4,
                },
            ),
            ("7+4951234567", MisplacedPlus { position: 1 }),
            ("+7495123456", RussianLength { national: 9 }),
            ("+749512345678", RussianLength { national: 11 }),
            ("4951234567", NoCountryCode { digits: 10 }),
            ("94951234567", NoCountryCode { digits: 11 }),
            ("849512345678", NoCountryCode { digits: 12 }),
            ("+0441234567", ZeroCountryCode),
            ("+4412", TooShort { digits: 4 }),
            ("+1234567890123456", TooLong { digits: 16 }),
            ("+12345678901234567890123", TooLong { digits: 23 }),
        ];
        for (input, want) in cases {
            assert_eq!(Number::parse(input), Err(want), "input {input:?}");
        }
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        let e = Number::parse("+7 495 abc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid character 'a' at position 7 (allowed: digits, a leading '+', and the separators space - . ( ))"
        );
        let e = Number::parse("+7495123456").unwrap_err();
        assert_eq!(
            e.to_string(),
            "+7 numbers have 10 digits after the country code, found 9"
        );
    }

    #[test]
    fn sip_user_part_params_and_escapes() {
        let want = Number::parse("+74951234567").unwrap();
        assert_eq!(Number::from_sip_user("+74951234567"), Ok(want));
        assert_eq!(Number::from_sip_user("84951234567"), Ok(want));
        assert_eq!(
            Number::from_sip_user("+74951234567;phone-context=example.com"),
            Ok(want)
        );
        assert_eq!(Number::from_sip_user("%2B74951234567"), Ok(want));
        assert_eq!(Number::from_sip_user("%2b7%20495%201234567"), Ok(want));
        assert_eq!(Number::from_sip_user("+7-495-123-45-67;isub=12"), Ok(want));
        assert_eq!(Number::from_sip_user(""), Err(NumberError::NoUserPart));
        assert_eq!(Number::from_sip_user(";x=1"), Err(NumberError::NoUserPart));
        assert_eq!(Number::from_sip_user("%2"), Err(NumberError::BadEscape));
        assert_eq!(Number::from_sip_user("%zz1"), Err(NumberError::BadEscape));
        assert_eq!(
            Number::from_sip_user("alice"),
            Err(NumberError::InvalidCharacter {
                ch: 'a',
                position: 0
            })
        );
        assert_eq!(Number::from_tel("+7-495-123-45-67"), Ok(want));
    }

    fn uri(s: &str) -> Uri {
        Uri::parse(s).unwrap()
    }

    #[test]
    fn from_request_uri_sip_and_tel() {
        let want = Number::parse("+74951234567").unwrap();
        for u in [
            "sip:+74951234567@vpbx.example.com",
            "sip:84951234567@10.0.0.1:5060;user=phone",
            "sips:+7-495-123-45-67;phone-context=+7@example.com",
            "sip:%2B74951234567@[::1]",
            "tel:+7-495-123-45-67",
            "tel:+74951234567;phone-context=+7",
        ] {
            assert_eq!(Number::from_uri(&uri(u)), Ok(want), "{u}");
        }
        assert_eq!(
            Number::from_uri(&uri("sip:vpbx.example.com")),
            Err(NumberError::NoUserPart)
        );
        assert_eq!(
            Number::from_uri(&uri("urn:service:sos")),
            Err(NumberError::UnsupportedScheme {
                scheme: "urn".into()
            })
        );
    }

    #[test]
    fn dialed_falls_back_to_to() {
        let want = Number::parse("+74951234567").unwrap();
        let to = uri("sip:+74951234567@example.com");
        // Request-URI without a user part (e.g. routed by host): To decides.
        assert_eq!(Number::dialed(&uri("sip:10.0.0.1"), Some(&to)), Ok(want));
        // A Request-URI number wins over To.
        let other = Number::parse("+74957654321").unwrap();
        assert_eq!(
            Number::dialed(&uri("sip:+74957654321@10.0.0.1"), Some(&to)),
            Ok(other)
        );
        // Neither: the Request-URI's reason.
        assert_eq!(
            Number::dialed(&uri("sip:alice@10.0.0.1"), Some(&uri("sip:bob@x"))),
            Err(NumberError::InvalidCharacter {
                ch: 'a',
                position: 0
            })
        );
        assert_eq!(
            Number::dialed(&uri("sip:10.0.0.1"), None),
            Err(NumberError::NoUserPart)
        );
    }

    #[test]
    fn integer_form_round_trips_through_display() {
        let n = Number::parse("+442079460958").unwrap();
        assert_eq!(n.as_u64(), 442079460958);
        assert_eq!(Number::parse(&n.to_string()), Ok(n));
    }

    #[test]
    fn serde_uses_the_normalized_string() {
        #[derive(serde::Deserialize)]
        struct T {
            n: Number,
        }
        let t: T = toml::from_str("n = \"8 (495) 123-45-67\"").unwrap();
        assert_eq!(t.n.to_string(), "+74951234567");
        assert!(toml::from_str::<T>("n = \"12\"").is_err());
    }

    /// [`Number::from_sip_user`] without its digits-only fast path
    /// ([`Number::parse_plain`]): what it must give for every input.
    fn from_sip_user_by_parse(user: &str) -> Result<Number, NumberError> {
        let subscriber = user.split(';').next().unwrap_or(user);
        if subscriber.is_empty() {
            return Err(NumberError::NoUserPart);
        }
        if !subscriber.contains('%') {
            return Number::parse(subscriber);
        }
        Number::parse(&unescape(subscriber)?)
    }

    #[test]
    fn digits_only_users_read_as_parse_reads_them() {
        for user in [
            "74951234567",
            "84951234567",
            "+74951234567",
            "+7495123456",
            "+442079460958",
            "+0123456",
            "+12345",
            "12345",
            "0",
            "+",
            "1234567890123456",
            "+1234567890123456789012",
            "74951234567;phone-context=+7",
            "+74951234567;isub=1",
            "7495123456x",
            "749512345678901234567x",
        ] {
            assert_eq!(
                Number::from_sip_user(user),
                from_sip_user_by_parse(user),
                "{user}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn the_digits_only_fast_path_agrees_with_parse(
            user in "\\+?[0-9]{0,18}(;[a-z=+0-9]{0,6})?|[+0-9;% ().x-]{0,20}|\\PC{0,12}",
        ) {
            proptest::prop_assert_eq!(Number::from_sip_user(&user), from_sip_user_by_parse(&user));
        }

        #[test]
        fn parse_never_panics_and_normal_form_is_stable(s in "\\PC{0,24}") {
            if let Ok(n) = Number::parse(&s) {
                proptest::prop_assert_eq!(Number::parse(&n.to_string()), Ok(n));
                proptest::prop_assert_eq!(n.to_e164(), n.to_string());
            }
            let _ = Number::from_sip_user(&s);
        }

        #[test]
        fn separators_never_change_the_number(
            digits in "[1-9][0-9]{9,13}",
            seps in proptest::collection::vec("[ .()-]{0,2}", 15),
        ) {
            let plain = Number::parse(&format!("+{digits}"));
            let mut spaced = String::from("+");
            for (d, sep) in digits.chars().zip(&seps) {
                spaced.push(d);
                spaced.push_str(sep);
            }
            proptest::prop_assert_eq!(Number::parse(&spaced), plain);
        }
    }
}
