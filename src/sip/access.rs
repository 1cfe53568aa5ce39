//! Typed, lazily parsed access to header values. Values stay raw [`Bytes`]
//! in [`Headers`]; these accessors parse them on demand.

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};

use super::bytestr::ByteStr;
use super::grammar::{parse_u32, parse_u64, token, trim};
use super::header::{HeaderName, Headers};
use super::method::Method;
use super::name_addr::{saturating_u32, Contact, NameAddr};
use super::values::{CSeq, Challenge, Credentials, MediaType, RAck};
use super::via::Via;

/// Why a typed header value could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// A mandatory header is absent.
    #[error("missing {0} header")]
    Missing(HeaderName),
    /// A single-valued header appears more than once.
    #[error("more than one {0} header")]
    Duplicate(HeaderName),
    /// The value does not follow the grammar.
    #[error("invalid {name} header: {reason}")]
    Invalid {
        /// The header.
        name: HeaderName,
        /// What is wrong.
        reason: &'static str,
    },
}

impl HeaderError {
    /// The header concerned.
    pub fn name(&self) -> &HeaderName {
        match self {
            HeaderError::Missing(n) | HeaderError::Duplicate(n) => n,
            HeaderError::Invalid { name, .. } => name,
        }
    }
}

/// The value in `slot`, parsed by `parse` on first access.
#[inline]
fn cached<T>(
    slot: &OnceLock<Result<T, HeaderError>>,
    parse: impl FnOnce() -> Result<T, HeaderError>,
) -> Result<&T, HeaderError> {
    slot.get_or_init(parse).as_ref().map_err(Clone::clone)
}

fn invalid(name: HeaderName) -> impl FnOnce(&'static str) -> HeaderError {
    move |reason| HeaderError::Invalid { name, reason }
}

/// A single-valued field as one pass over the list found it: its first
/// value and whether it is repeated.
#[derive(Clone, Copy, Default)]
pub(crate) struct Single<'a> {
    first: Option<&'a Bytes>,
    repeated: bool,
}

impl<'a> Single<'a> {
    #[inline]
    fn see(&mut self, v: &'a Bytes) {
        if self.first.is_some() {
            self.repeated = true;
        } else {
            self.first = Some(v);
        }
    }

    /// As [`Headers::get_single`] gives it.
    #[inline]
    pub(crate) fn get(self, name: HeaderName) -> Result<Option<&'a Bytes>, HeaderError> {
        if self.repeated {
            Err(HeaderError::Duplicate(name))
        } else {
            Ok(self.first)
        }
    }

    /// As `Headers::required` gives it.
    #[inline]
    pub(crate) fn required(self, name: HeaderName) -> Result<&'a Bytes, HeaderError> {
        match self.get(name.clone())? {
            Some(v) => Ok(v),
            None => Err(HeaderError::Missing(name)),
        }
    }
}

/// The fields the request validator reads, found in one pass over the
/// list instead of one pass per field (each pass compares every field's
/// name): each single-valued field's first value and whether it repeats,
/// the first Date, and whether each list field is present at all.
#[derive(Default)]
pub(crate) struct Found<'a> {
    pub(crate) from: Single<'a>,
    pub(crate) to: Single<'a>,
    pub(crate) call_id: Single<'a>,
    pub(crate) cseq: Single<'a>,
    pub(crate) max_forwards: Single<'a>,
    pub(crate) content_type: Single<'a>,
    pub(crate) expires: Single<'a>,
    pub(crate) date: Option<&'a Bytes>,
    pub(crate) contact: bool,
    pub(crate) route: bool,
    pub(crate) require: bool,
    pub(crate) proxy_require: bool,
    pub(crate) accept: bool,
}

impl Headers {
    /// The fields the request validator reads, in one pass (see [`Found`]).
    pub(crate) fn find_for_validation(&self) -> Found<'_> {
        let mut f = Found::default();
        for h in self.iter() {
            let v = &h.value;
            match h.name {
                HeaderName::From => f.from.see(v),
                HeaderName::To => f.to.see(v),
                HeaderName::CallId => f.call_id.see(v),
                HeaderName::CSeq => f.cseq.see(v),
                HeaderName::MaxForwards => f.max_forwards.see(v),
                HeaderName::ContentType => f.content_type.see(v),
                HeaderName::Expires => f.expires.see(v),
                HeaderName::Date if f.date.is_none() => f.date = Some(v),
                HeaderName::Contact => f.contact = true,
                HeaderName::Route => f.route = true,
                HeaderName::Require => f.require = true,
                HeaderName::ProxyRequire => f.proxy_require = true,
                HeaderName::Accept => f.accept = true,
                _ => {}
            }
        }
        f
    }

    /// The only value of `name`; `Duplicate` if repeated.
    pub fn get_single(&self, name: &HeaderName) -> Result<Option<&Bytes>, HeaderError> {
        let mut first = None;
        for h in self.iter().filter(|h| h.name == *name) {
            if first.is_some() {
                return Err(HeaderError::Duplicate(name.clone()));
            }
            first = Some(&h.value);
        }
        Ok(first)
    }

    fn required(&self, name: HeaderName) -> Result<&Bytes, HeaderError> {
        match self.get_single(&name)? {
            Some(v) => Ok(v),
            None => Err(HeaderError::Missing(name)),
        }
    }

    /// All Via values of all Via lines, in order.
    pub fn via(&self) -> Result<Vec<Via>, HeaderError> {
        let mut out = Vec::with_capacity(2);
        for v in self.get_all(&HeaderName::Via) {
            Via::parse_list(v, &mut out).map_err(invalid(HeaderName::Via))?;
        }
        if out.is_empty() {
            return Err(HeaderError::Missing(HeaderName::Via));
        }
        Ok(out)
    }

    pub(crate) fn parse_top_via(&self) -> Result<(Via, usize), HeaderError> {
        let v = self
            .get(&HeaderName::Via)
            .ok_or(HeaderError::Missing(HeaderName::Via))?;
        Via::parse_first_at(v).map_err(invalid(HeaderName::Via))
    }

    /// The top Via as [`Headers::top_via_ref`] and where the rest of its line starts.
    fn top_via_at(&self) -> Result<&(Via, usize), HeaderError> {
        cached(&self.typed().top_via, || self.parse_top_via())
    }

    /// Replaces the top Via value with `via` (e.g. the transport's stamp of
    /// `received`/`rport`, RFC 3261 §18.2.1), keeping the other values of
    /// its line, and keeps `via` as the parsed top Via, so that the layers
    /// reading the stamped request do not parse it again. Fails, changing
    /// nothing, as [`Headers::top_via_ref`] does.
    pub(crate) fn replace_top_via(&mut self, via: Via) -> Result<(), HeaderError> {
        let after = self.top_via_at()?.1;
        let rest = match self.get(&HeaderName::Via) {
            Some(first) => first.slice(after..),
            None => return Err(HeaderError::Missing(HeaderName::Via)),
        };
        let text = via.to_string();
        let mut value = BytesMut::with_capacity(text.len() + rest.len());
        value.put_slice(text.as_bytes());
        // Empty, or the `,` before the next value and what follows.
        value.put_slice(&rest);
        self.set_top_via_field(value.freeze(), via, text.len());
        Ok(())
    }

    /// Every Via value in order, as [`Headers::via`] gives them (the same
    /// errors), without collecting them; the top one is the cached one.
    pub(crate) fn for_each_via(&self, mut f: impl FnMut(&Via)) -> Result<(), HeaderError> {
        let mut lines = self.get_all(&HeaderName::Via);
        let Some(first) = lines.next() else {
            return Err(HeaderError::Missing(HeaderName::Via));
        };
        let (top, after) = self.top_via_at()?;
        f(top);
        if let Some(rest) = first[*after..].strip_prefix(b",") {
            Via::parse_each(first, rest, |v| f(&v)).map_err(invalid(HeaderName::Via))?;
        }
        for line in lines {
            Via::parse_each(line, line, |v| f(&v)).map_err(invalid(HeaderName::Via))?;
        }
        Ok(())
    }

    /// Checks the Contact header(s) as [`Headers::contacts`] does (the
    /// same errors) without collecting the addresses.
    pub(crate) fn check_contacts(&self) -> Result<(), HeaderError> {
        self.contact_lines(|v| NameAddr::check_each(v)).map(|_| ())
    }

    /// Parses the Contact lines, handing each address to `f`: the number
    /// of lines and whether one was `*`, or the error of [`Headers::contacts`].
    fn scan_contacts(&self, mut f: impl FnMut(NameAddr)) -> Result<(usize, bool), HeaderError> {
        self.contact_lines(|v| NameAddr::parse_each(v, &mut f))
    }

    /// Reads each Contact line that is not `*` with `line`: the number of
    /// lines and whether one was `*`, or the first error (`*` with other
    /// lines is one).
    fn contact_lines(
        &self,
        mut line: impl FnMut(&Bytes) -> Result<(), &'static str>,
    ) -> Result<(usize, bool), HeaderError> {
        let mut star = false;
        let mut lines = 0;
        for v in self.get_all(&HeaderName::Contact) {
            lines += 1;
            if trim(v) == b"*" {
                star = true;
            } else {
                line(v).map_err(invalid(HeaderName::Contact))?;
            }
        }
        if star && lines > 1 {
            return Err(HeaderError::Invalid {
                name: HeaderName::Contact,
                reason: "* mixed with addresses",
            });
        }
        Ok((lines, star))
    }

    /// Checks the Route header(s) as [`Headers::route`] does (the same
    /// errors) without collecting the addresses.
    pub(crate) fn check_route(&self) -> Result<(), HeaderError> {
        for v in self.get_all(&HeaderName::Route) {
            NameAddr::check_each(v).map_err(invalid(HeaderName::Route))?;
        }
        Ok(())
    }

    /// Checks the From header as [`Headers::from_ref`] does (the same
    /// errors) without parsing it into a value, unless one is kept.
    /// `from` looks the field up (in the validator, from one pass over the
    /// list, [`Headers::find_for_validation`]).
    pub(crate) fn check_from<'a>(
        &'a self,
        from: impl FnOnce() -> Result<&'a Bytes, HeaderError>,
    ) -> Result<(), HeaderError> {
        if let Some(kept) = self.typed_if_any().and_then(|t| t.from.get()) {
            return kept.as_ref().map(|_| ()).map_err(Clone::clone);
        }
        NameAddr::check_single(from()?)
            .map(|_| ())
            .map_err(invalid(HeaderName::From))
    }

    /// Checks the To header as [`Headers::to_ref`] does (the same errors)
    /// without parsing it into a value, unless one is kept: whether its
    /// URI is a SIP or SIPS URI.
    /// `to` looks the field up, as for [`Headers::check_from`].
    pub(crate) fn check_to<'a>(
        &'a self,
        to: impl FnOnce() -> Result<&'a Bytes, HeaderError>,
    ) -> Result<bool, HeaderError> {
        if let Some(kept) = self.typed_if_any().and_then(|t| t.to.get()) {
            return kept
                .as_ref()
                .map(|to| matches!(to.uri, super::uri::Uri::Sip(_)))
                .map_err(Clone::clone);
        }
        NameAddr::check_single(to()?)
            .map(|shape| shape.sip)
            .map_err(invalid(HeaderName::To))
    }

    pub(crate) fn parse_from(&self) -> Result<NameAddr, HeaderError> {
        NameAddr::parse_single(self.required(HeaderName::From)?).map_err(invalid(HeaderName::From))
    }

    /// [`Headers::from_ref`] with the field found by one pass (`from`).
    pub(crate) fn keep_from(&self, from: Single<'_>) -> Result<&NameAddr, HeaderError> {
        cached(&self.typed().from, || {
            NameAddr::parse_single(from.required(HeaderName::From)?)
                .map_err(invalid(HeaderName::From))
        })
    }

    /// [`Headers::cseq_ref`] with the field found by one pass (`cseq`).
    pub(crate) fn keep_cseq(&self, cseq: Single<'_>) -> Result<&CSeq, HeaderError> {
        cached(&self.typed().cseq, || {
            CSeq::parse(cseq.required(HeaderName::CSeq)?).map_err(invalid(HeaderName::CSeq))
        })
    }

    pub(crate) fn parse_to(&self) -> Result<NameAddr, HeaderError> {
        NameAddr::parse_single(self.required(HeaderName::To)?).map_err(invalid(HeaderName::To))
    }

    pub(crate) fn parse_cseq(&self) -> Result<CSeq, HeaderError> {
        CSeq::parse(self.required(HeaderName::CSeq)?).map_err(invalid(HeaderName::CSeq))
    }

    /// The topmost Via value (parses only that one), parsed once per
    /// message (see [`Headers`]).
    pub fn top_via_ref(&self) -> Result<&Via, HeaderError> {
        self.top_via_at().map(|(v, _)| v)
    }

    /// The From header (exactly one), parsed once per message.
    pub fn from_ref(&self) -> Result<&NameAddr, HeaderError> {
        cached(&self.typed().from, || self.parse_from())
    }

    /// The To header (exactly one), parsed once per message.
    pub fn to_ref(&self) -> Result<&NameAddr, HeaderError> {
        cached(&self.typed().to, || self.parse_to())
    }

    /// The CSeq (exactly one), parsed once per message.
    pub fn cseq_ref(&self) -> Result<&CSeq, HeaderError> {
        cached(&self.typed().cseq, || self.parse_cseq())
    }

    /// The topmost Via value: a copy of the one [`Headers::top_via_ref`]
    /// keeps, or parsed (and not kept) if none is kept.
    pub fn top_via(&self) -> Result<Via, HeaderError> {
        match self.typed_if_any().and_then(|t| t.top_via.get()) {
            Some(kept) => kept.as_ref().map(|(v, _)| v.clone()).map_err(Clone::clone),
            None => self.parse_top_via().map(|(v, _)| v),
        }
    }

    /// The From header: a copy of the one [`Headers::from_ref`] keeps, or
    /// parsed (and not kept) if none is kept.
    pub fn from(&self) -> Result<NameAddr, HeaderError> {
        match self.typed_if_any().and_then(|t| t.from.get()) {
            Some(kept) => kept.clone(),
            None => self.parse_from(),
        }
    }

    /// The To header: a copy of the one [`Headers::to_ref`] keeps, or
    /// parsed (and not kept) if none is kept.
    pub fn to(&self) -> Result<NameAddr, HeaderError> {
        match self.typed_if_any().and_then(|t| t.to.get()) {
            Some(kept) => kept.clone(),
            None => self.parse_to(),
        }
    }

    /// The Call-ID (exactly one; `word ["@" word]`, no white space).
    pub fn call_id(&self) -> Result<ByteStr, HeaderError> {
        Self::call_id_of(self.required(HeaderName::CallId)?)
    }

    /// [`Headers::call_id`] of the value `v`.
    pub(crate) fn call_id_of(v: &Bytes) -> Result<ByteStr, HeaderError> {
        // Common case in one pass: printable ASCII only (`!`..=`~`). A fold
        // without an early exit, which the compiler turns into vector code.
        let printable = v
            .iter()
            .fold(true, |ok, &c| ok & (c.wrapping_sub(b'!') <= b'~' - b'!'));
        if !v.is_empty() && printable {
            return Ok(ByteStr::from_ascii(v.clone()));
        }
        if v.is_empty() || v.iter().any(|&c| c <= b' ' || c == 0x7f) {
            return Err(HeaderError::Invalid {
                name: HeaderName::CallId,
                reason: "empty or contains white space",
            });
        }
        ByteStr::from_utf8(v.clone()).map_err(|_| HeaderError::Invalid {
            name: HeaderName::CallId,
            reason: "not UTF-8",
        })
    }

    /// Checks a Call-ID value as [`Headers::call_id_of`] reads it (the same
    /// errors) without building the value (the validator keeps nothing).
    pub(crate) fn check_call_id(v: &[u8]) -> Result<(), HeaderError> {
        let printable = v
            .iter()
            .fold(true, |ok, &c| ok & (c.wrapping_sub(b'!') <= b'~' - b'!'));
        if !v.is_empty() && printable {
            return Ok(());
        }
        if v.is_empty() || v.iter().any(|&c| c <= b' ' || c == 0x7f) {
            return Err(HeaderError::Invalid {
                name: HeaderName::CallId,
                reason: "empty or contains white space",
            });
        }
        std::str::from_utf8(v)
            .map(|_| ())
            .map_err(|_| HeaderError::Invalid {
                name: HeaderName::CallId,
                reason: "not UTF-8",
            })
    }

    /// The CSeq: a copy of [`Headers::cseq_ref`] (kept: layers read it
    /// several times per message, and the copy is cheap).
    pub fn cseq(&self) -> Result<CSeq, HeaderError> {
        self.cseq_ref().cloned()
    }

    /// Max-Forwards (0..=255), if present.
    pub fn max_forwards(&self) -> Result<Option<u32>, HeaderError> {
        Self::max_forwards_of(self.get_single(&HeaderName::MaxForwards)?)
    }

    /// [`Headers::max_forwards`] of the value found (if any).
    pub(crate) fn max_forwards_of(v: Option<&Bytes>) -> Result<Option<u32>, HeaderError> {
        let Some(v) = v else {
            return Ok(None);
        };
        let n = parse_u32(trim(v)).ok_or(HeaderError::Invalid {
            name: HeaderName::MaxForwards,
            reason: "not a number",
        })?;
        if n > 255 {
            return Err(HeaderError::Invalid {
                name: HeaderName::MaxForwards,
                reason: "greater than 255",
            });
        }
        Ok(Some(n))
    }

    /// The Contact header(s): `*` or all addresses of all lines, if present.
    pub fn contacts(&self) -> Result<Option<Contact>, HeaderError> {
        let mut addrs = Vec::new();
        match self.scan_contacts(|a| addrs.push(a))? {
            (0, _) => Ok(None),
            (_, true) => Ok(Some(Contact::Star)),
            _ => Ok(Some(Contact::Addrs(addrs))),
        }
    }

    fn name_addrs(&self, name: HeaderName) -> Result<Vec<NameAddr>, HeaderError> {
        let mut out = Vec::new();
        for v in self.get_all(&name) {
            NameAddr::parse_list(v, &mut out).map_err(invalid(name.clone()))?;
        }
        Ok(out)
    }

    /// Route values in order.
    pub fn route(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.name_addrs(HeaderName::Route)
    }

    /// Record-Route values in order.
    pub fn record_route(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.name_addrs(HeaderName::RecordRoute)
    }

    /// Content-Length, if present.
    pub fn content_length(&self) -> Result<Option<usize>, HeaderError> {
        let Some(v) = self.get_single(&HeaderName::ContentLength)? else {
            return Ok(None);
        };
        let n = parse_u64(trim(v))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(HeaderError::Invalid {
                name: HeaderName::ContentLength,
                reason: "not a number",
            })?;
        Ok(Some(n))
    }

    /// Content-Type, if present.
    pub fn content_type(&self) -> Result<Option<MediaType>, HeaderError> {
        Self::content_type_of(self.get_single(&HeaderName::ContentType)?)
    }

    /// [`Headers::content_type`] of the value found (if any).
    pub(crate) fn content_type_of(v: Option<&Bytes>) -> Result<Option<MediaType>, HeaderError> {
        match v {
            None => Ok(None),
            Some(v) => MediaType::parse(v)
                .map(Some)
                .map_err(invalid(HeaderName::ContentType)),
        }
    }

    /// Accept entries of all Accept lines; `None` if there is no Accept header.
    pub fn accept(&self) -> Result<Option<Vec<MediaType>>, HeaderError> {
        if !self.contains(&HeaderName::Accept) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for v in self.get_all(&HeaderName::Accept) {
            MediaType::parse_list(v, &mut out).map_err(invalid(HeaderName::Accept))?;
        }
        Ok(Some(out))
    }

    fn delta_seconds(&self, name: HeaderName) -> Result<Option<u32>, HeaderError> {
        let v = self.get_single(&name)?;
        Self::delta_seconds_of(name, v)
    }

    /// A delta-seconds field (Expires, Min-Expires) `name` of the value found (if any).
    pub(crate) fn delta_seconds_of(
        name: HeaderName,
        v: Option<&Bytes>,
    ) -> Result<Option<u32>, HeaderError> {
        match v {
            None => Ok(None),
            // Larger than 2^32-1 saturates (RFC 4475 §3.1.2.4 allows either this or 400).
            Some(v) => saturating_u32(trim(v))
                .map(Some)
                .ok_or(HeaderError::Invalid {
                    name,
                    reason: "not a number of seconds",
                }),
        }
    }

    /// Expires in seconds, if present.
    pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
        self.delta_seconds(HeaderName::Expires)
    }

    /// Min-Expires in seconds, if present.
    pub fn min_expires(&self) -> Result<Option<u32>, HeaderError> {
        self.delta_seconds(HeaderName::MinExpires)
    }

    fn challenges(&self, name: HeaderName) -> Result<Vec<Challenge>, HeaderError> {
        self.get_all(&name)
            .map(|v| Challenge::parse(v).map_err(invalid(name.clone())))
            .collect()
    }

    fn credentials(&self, name: HeaderName) -> Result<Vec<Credentials>, HeaderError> {
        self.get_all(&name)
            .map(|v| Credentials::parse(v).map_err(invalid(name.clone())))
            .collect()
    }

    /// WWW-Authenticate challenges.
    pub fn www_authenticate(&self) -> Result<Vec<Challenge>, HeaderError> {
        self.challenges(HeaderName::WwwAuthenticate)
    }

    /// Proxy-Authenticate challenges.
    pub fn proxy_authenticate(&self) -> Result<Vec<Challenge>, HeaderError> {
        self.challenges(HeaderName::ProxyAuthenticate)
    }

    /// Authorization credentials.
    pub fn authorization(&self) -> Result<Vec<Credentials>, HeaderError> {
        self.credentials(HeaderName::Authorization)
    }

    /// Proxy-Authorization credentials.
    pub fn proxy_authorization(&self) -> Result<Vec<Credentials>, HeaderError> {
        self.credentials(HeaderName::ProxyAuthorization)
    }

    /// Allow: the methods listed.
    pub fn allow(&self) -> Result<Vec<Method>, HeaderError> {
        let mut out = Vec::new();
        for v in self.get_all(&HeaderName::Allow) {
            let list = Headers::split_tokens(v).ok_or(HeaderError::Invalid {
                name: HeaderName::Allow,
                reason: "not a method list",
            })?;
            for m in list {
                out.push(
                    Method::from_slice(&m, &m).map_err(|_| HeaderError::Invalid {
                        name: HeaderName::Allow,
                        reason: "not a method list",
                    })?,
                );
            }
        }
        Ok(out)
    }

    fn split_tokens(v: &Bytes) -> Option<Vec<Bytes>> {
        let t = trim(v);
        if t.is_empty() {
            return Some(Vec::new());
        }
        t.split(|&c| c == b',')
            .map(|item| {
                let item = trim(item);
                match token(item) {
                    Ok((b"", tok)) => Some(super::grammar::sub(v, tok)),
                    _ => None,
                }
            })
            .collect()
    }

    fn option_tags(&self, name: HeaderName) -> Result<Vec<ByteStr>, HeaderError> {
        let mut out = Vec::new();
        for v in self.get_all(&name) {
            let list = Headers::split_tokens(v).ok_or_else(|| HeaderError::Invalid {
                name: name.clone(),
                reason: "not a comma-separated token list",
            })?;
            out.extend(list.into_iter().map(ByteStr::from_utf8_lossy));
        }
        Ok(out)
    }

    /// Supported option tags.
    pub fn supported(&self) -> Result<Vec<ByteStr>, HeaderError> {
        self.option_tags(HeaderName::Supported)
    }

    /// Require option tags.
    pub fn require(&self) -> Result<Vec<ByteStr>, HeaderError> {
        self.option_tags(HeaderName::Require)
    }

    /// Proxy-Require option tags.
    pub fn proxy_require(&self) -> Result<Vec<ByteStr>, HeaderError> {
        self.option_tags(HeaderName::ProxyRequire)
    }

    /// Unsupported option tags.
    pub fn unsupported(&self) -> Result<Vec<ByteStr>, HeaderError> {
        self.option_tags(HeaderName::Unsupported)
    }

    /// RSeq (RFC 3262), if present.
    pub fn rseq(&self) -> Result<Option<u32>, HeaderError> {
        match self.get_single(&HeaderName::RSeq)? {
            None => Ok(None),
            Some(v) => parse_u32(trim(v)).map(Some).ok_or(HeaderError::Invalid {
                name: HeaderName::RSeq,
                reason: "not a number",
            }),
        }
    }

    /// RAck (RFC 3262), if present.
    pub fn rack(&self) -> Result<Option<RAck>, HeaderError> {
        match self.get_single(&HeaderName::RAck)? {
            None => Ok(None),
            Some(v) => RAck::parse(v).map(Some).map_err(invalid(HeaderName::RAck)),
        }
    }
}

/// Generates the typed accessors on a message type by delegating to its headers.
macro_rules! delegate_accessors {
    ($ty:ty) => {
        impl $ty {
            /// All Via values, in order.
            pub fn via(&self) -> Result<Vec<Via>, HeaderError> {
                self.headers.via()
            }
            /// The topmost Via value.
            pub fn top_via(&self) -> Result<Via, HeaderError> {
                self.headers.top_via()
            }
            /// The topmost Via value, parsed once per message.
            pub fn top_via_ref(&self) -> Result<&Via, HeaderError> {
                self.headers.top_via_ref()
            }
            /// The From header, parsed once per message.
            pub fn from_ref(&self) -> Result<&NameAddr, HeaderError> {
                self.headers.from_ref()
            }
            /// The To header, parsed once per message.
            pub fn to_ref(&self) -> Result<&NameAddr, HeaderError> {
                self.headers.to_ref()
            }
            /// The CSeq, parsed once per message.
            pub fn cseq_ref(&self) -> Result<&CSeq, HeaderError> {
                self.headers.cseq_ref()
            }
            /// The From header.
            pub fn from(&self) -> Result<NameAddr, HeaderError> {
                self.headers.from()
            }
            /// The To header.
            pub fn to(&self) -> Result<NameAddr, HeaderError> {
                self.headers.to()
            }
            /// The Call-ID.
            pub fn call_id(&self) -> Result<ByteStr, HeaderError> {
                self.headers.call_id()
            }
            /// The CSeq.
            pub fn cseq(&self) -> Result<CSeq, HeaderError> {
                self.headers.cseq()
            }
            /// Max-Forwards, if present.
            pub fn max_forwards(&self) -> Result<Option<u32>, HeaderError> {
                self.headers.max_forwards()
            }
            /// Contact, if present.
            pub fn contacts(&self) -> Result<Option<Contact>, HeaderError> {
                self.headers.contacts()
            }
            /// Route values.
            pub fn route(&self) -> Result<Vec<NameAddr>, HeaderError> {
                self.headers.route()
            }
            /// Record-Route values.
            pub fn record_route(&self) -> Result<Vec<NameAddr>, HeaderError> {
                self.headers.record_route()
            }
            /// Content-Length, if present.
            pub fn content_length(&self) -> Result<Option<usize>, HeaderError> {
                self.headers.content_length()
            }
            /// Content-Type, if present.
            pub fn content_type(&self) -> Result<Option<MediaType>, HeaderError> {
                self.headers.content_type()
            }
            /// Accept entries, if there is an Accept header.
            pub fn accept(&self) -> Result<Option<Vec<MediaType>>, HeaderError> {
                self.headers.accept()
            }
            /// Expires, if present.
            pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
                self.headers.expires()
            }
            /// Min-Expires, if present.
            pub fn min_expires(&self) -> Result<Option<u32>, HeaderError> {
                self.headers.min_expires()
            }
            /// WWW-Authenticate challenges.
            pub fn www_authenticate(&self) -> Result<Vec<Challenge>, HeaderError> {
                self.headers.www_authenticate()
            }
            /// Proxy-Authenticate challenges.
            pub fn proxy_authenticate(&self) -> Result<Vec<Challenge>, HeaderError> {
                self.headers.proxy_authenticate()
            }
            /// Authorization credentials.
            pub fn authorization(&self) -> Result<Vec<Credentials>, HeaderError> {
                self.headers.authorization()
            }
            /// Proxy-Authorization credentials.
            pub fn proxy_authorization(&self) -> Result<Vec<Credentials>, HeaderError> {
                self.headers.proxy_authorization()
            }
            /// Allow methods.
            pub fn allow(&self) -> Result<Vec<Method>, HeaderError> {
                self.headers.allow()
            }
            /// Supported option tags.
            pub fn supported(&self) -> Result<Vec<ByteStr>, HeaderError> {
                self.headers.supported()
            }
            /// Require option tags.
            pub fn require(&self) -> Result<Vec<ByteStr>, HeaderError> {
                self.headers.require()
            }
            /// Proxy-Require option tags.
            pub fn proxy_require(&self) -> Result<Vec<ByteStr>, HeaderError> {
                self.headers.proxy_require()
            }
            /// Unsupported option tags.
            pub fn unsupported(&self) -> Result<Vec<ByteStr>, HeaderError> {
                self.headers.unsupported()
            }
            /// RSeq, if present.
            pub fn rseq(&self) -> Result<Option<u32>, HeaderError> {
                self.headers.rseq()
            }
            /// RAck, if present.
            pub fn rack(&self) -> Result<Option<RAck>, HeaderError> {
                self.headers.rack()
            }
        }
    };
}

delegate_accessors!(super::message::Request);
delegate_accessors!(super::message::Response);

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(fields: &[(&str, &'static str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in fields {
            h.push(HeaderName::parse(n.as_bytes()).unwrap(), *v);
        }
        h
    }

    #[test]
    fn typed_values_are_kept_until_the_fields_change() {
        let mut h = headers(&[
            ("Via", "SIP/2.0/UDP a.example.com;branch=z9hG4bK1"),
            ("From", "<sip:alice@a.example.com>;tag=1"),
            ("To", "<sip:bob@b.example.com>"),
            ("CSeq", "1 INVITE"),
        ]);
        let first: *const Via = h.top_via_ref().unwrap();
        assert!(std::ptr::eq(first, h.top_via_ref().unwrap()));
        assert_eq!(h.top_via().unwrap().branch(), Some("z9hG4bK1"));
        assert_eq!(h.from_ref().unwrap().tag(), Some("1"));
        assert_eq!(h.to_ref().unwrap().tag(), None);
        assert_eq!(h.cseq().unwrap().seq, 1);
        let kept: *const CSeq = h.cseq_ref().unwrap();
        assert!(std::ptr::eq(kept, h.cseq_ref().unwrap()));
        h.push_front(
            HeaderName::Via,
            Bytes::from_static(b"SIP/2.0/TCP p.example.com;branch=z9hG4bK2"),
        );
        assert_eq!(h.top_via_ref().unwrap().branch(), Some("z9hG4bK2"));
        h.set(HeaderName::From, Bytes::from_static(b"<sip:carol@c>;tag=3"));
        assert_eq!(h.from_ref().unwrap().tag(), Some("3"));
        h.set(HeaderName::CSeq, Bytes::from_static(b"2 BYE"));
        assert_eq!(h.cseq().unwrap().method, Method::Bye);
        h.remove_all(&HeaderName::To);
        assert_eq!(h.to_ref(), Err(HeaderError::Missing(HeaderName::To)));
        h.push(HeaderName::To, Bytes::from_static(b"<sip:d@e>;tag=4"));
        assert_eq!(h.to_ref().unwrap().tag(), Some("4"));
        assert_eq!(h.to().unwrap().tag(), Some("4"));
        h.push(HeaderName::To, Bytes::from_static(b"<sip:d@e>"));
        assert_eq!(h.to_ref(), Err(HeaderError::Duplicate(HeaderName::To)));
        assert_eq!(h.remove_first(&HeaderName::To).unwrap(), "<sip:d@e>;tag=4");
        assert_eq!(h.to_ref().unwrap().tag(), None);
    }

    #[test]
    fn a_replaced_top_via_is_kept_as_parsed_and_reads_as_the_new_field() {
        for line in [
            "SIP/2.0/UDP a.example.com:5070;branch=z9hG4bK1",
            "SIP/2.0/udp [2001:db8::1];Branch=z9hG4bK1;rport ,SIP/2.0/TCP b;branch=z9hG4bK2",
            "SIP / 2.0 / TCP 192.0.2.1 ; branch = z9hG4bK1 ; received=192.0.2.7, SIP/2.0/UDP c",
            "SIP/2.0/UDP a;branch=z9hG4bK1;x=\"q;,\", SIP/2.0/UDP b;branch=z9hG4bK2",
        ] {
            let mut h = headers(&[
                ("To", "<sip:x@y>"),
                ("Via", line),
                ("From", "<sip:a@b>;tag=1"),
                ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3"),
            ]);
            let mut vias = h.via().unwrap();
            let from: *const NameAddr = h.from_ref().unwrap();
            let mut via = h.top_via().unwrap();
            via.params.set("received", Some(ByteStr::from("192.0.2.9")));
            via.params.set("rport", Some(ByteStr::from("40000")));
            h.replace_top_via(via.clone()).unwrap();
            assert_eq!(h.top_via_ref().unwrap(), &via, "{line}");
            // The kept value is what the new field reads as, and the rest of
            // the list is untouched.
            let mut fresh = Headers::new();
            fresh.push(HeaderName::Via, h.get(&HeaderName::Via).unwrap().clone());
            fresh.push(HeaderName::Via, "SIP/2.0/UDP c;branch=z9hG4bK3");
            assert_eq!(fresh.top_via_ref().unwrap(), &via, "{line}");
            vias[0] = via;
            assert_eq!(fresh.via().unwrap(), vias, "{line}");
            let mut visited = Vec::new();
            h.for_each_via(|v| visited.push(v.clone())).unwrap();
            assert_eq!(visited, vias, "{line}");
            // The other typed values stay; the field keeps its place.
            assert!(std::ptr::eq(from, h.from_ref().unwrap()));
            assert_eq!(h.iter().nth(1).unwrap().name, HeaderName::Via);
        }
        let mut bad = headers(&[("Via", "SIP/2.0/UDP ;;")]);
        let via = headers(&[("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")])
            .top_via()
            .unwrap();
        assert!(bad.replace_top_via(via.clone()).is_err());
        assert_eq!(bad.get(&HeaderName::Via).unwrap(), "SIP/2.0/UDP ;;");
        assert!(headers(&[]).replace_top_via(via).is_err());
    }

    #[test]
    fn every_via_value_is_visited_once_in_order() {
        let h = headers(&[
            (
                "v",
                "SIP/2.0/UDP a;branch=z9hG4bK1 , SIP/2.0/TCP b;branch=z9hG4bK2",
            ),
            ("To", "<sip:x@y>"),
            ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3"),
        ]);
        let mut branches = Vec::new();
        h.for_each_via(|v| branches.push(v.branch().unwrap().to_owned()))
            .unwrap();
        assert_eq!(branches, ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"]);
        let bad = headers(&[("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP")]);
        assert!(bad.top_via().is_ok());
        assert_eq!(bad.for_each_via(|_| ()), bad.via().map(|_| ()));
        assert!(bad.for_each_via(|_| ()).is_err());
        assert_eq!(
            headers(&[]).for_each_via(|_| ()),
            Err(HeaderError::Missing(HeaderName::Via))
        );
    }

    #[test]
    fn contact_star_and_lists_over_several_lines() {
        assert_eq!(
            headers(&[("Contact", " * ")]).contacts().unwrap(),
            Some(Contact::Star)
        );
        assert!(headers(&[("m", "*"), ("m", "<sip:a@b>")])
            .contacts()
            .is_err());
        let h = headers(&[
            ("m", "<sip:a@b>;expires=0, <sip:c@d>;q=0.7"),
            ("Contact", "sip:e@f"),
        ]);
        let Some(Contact::Addrs(a)) = h.contacts().unwrap() else {
            panic!()
        };
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].expires(), Some(0));
        assert_eq!(a[1].q(), Some(0.7));
        assert_eq!(headers(&[]).contacts().unwrap(), None);
    }

    #[test]
    fn single_valued_headers_reject_duplicates_and_bad_numbers() {
        let h = headers(&[("Call-ID", "a@b"), ("i", "c@d")]);
        assert_eq!(h.call_id(), Err(HeaderError::Duplicate(HeaderName::CallId)));
        assert!(headers(&[("Max-Forwards", "300")]).max_forwards().is_err());
        assert_eq!(
            headers(&[("Max-Forwards", "0068")]).max_forwards().unwrap(),
            Some(68)
        );
        let big = headers(&[("Expires", "10000000000000000000000000")]);
        assert_eq!(big.expires().unwrap(), Some(u32::MAX));
        assert!(headers(&[("Expires", "soon")]).expires().is_err());
        assert_eq!(
            headers(&[]).cseq(),
            Err(HeaderError::Missing(HeaderName::CSeq))
        );
        assert!(headers(&[("Call-ID", "a b")]).call_id().is_err());
    }

    #[test]
    fn call_id_accepts_utf8_and_refuses_controls_and_bad_utf8() {
        let h = |v: &'static [u8]| {
            let mut h = Headers::new();
            h.push(HeaderName::CallId, Bytes::from_static(v));
            h.call_id()
        };
        assert_eq!(
            h(b"a84b4c76e66710@pc33.example.com").unwrap(),
            "a84b4c76e66710@pc33.example.com"
        );
        assert_eq!(h("caf\u{e9}@x".as_bytes()).unwrap(), "caf\u{e9}@x");
        for bad in [&b""[..], b"a\x7fb", b"a\tb", b"a\x00b", b"\xff\xfe"] {
            assert!(
                matches!(
                    h(bad),
                    Err(HeaderError::Invalid {
                        name: HeaderName::CallId,
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn token_lists_and_reliable_provisionals() {
        let h = headers(&[
            ("Allow", "INVITE, ACK,BYE , FOO"),
            ("k", "100rel, timer"),
            ("Supported", ""),
            ("Require", "100rel"),
            ("RSeq", "988789"),
            ("RAck", "988789 1 INVITE"),
            ("Min-Expires", "60"),
        ]);
        assert_eq!(
            h.allow().unwrap(),
            [
                Method::Invite,
                Method::Ack,
                Method::Bye,
                Method::Other("FOO".into())
            ]
        );
        assert_eq!(h.supported().unwrap(), ["100rel", "timer"]);
        assert_eq!(h.require().unwrap(), ["100rel"]);
        assert_eq!(h.rseq().unwrap(), Some(988789));
        assert_eq!(h.rack().unwrap().unwrap().cseq, 1);
        assert_eq!(h.min_expires().unwrap(), Some(60));
        assert!(headers(&[("Require", "a b")]).require().is_err());
        assert!(headers(&[("Require", "a,,b")]).require().is_err());
    }

    #[test]
    fn challenges_and_routes() {
        let h = headers(&[
            (
                "WWW-Authenticate",
                r#"Digest realm="vpbx", nonce="abc", algorithm=MD5, qop="auth""#,
            ),
            (
                "Proxy-Authorization",
                r#"Digest username="u", realm="r", uri="sip:a@b", response="0123""#,
            ),
            (
                "Record-Route",
                "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
            ),
            ("Route", "<sip:p3.example.com;lr>"),
        ]);
        let c = h.www_authenticate().unwrap();
        assert_eq!(c[0].param("nonce").unwrap(), "abc");
        assert_eq!(
            h.proxy_authorization().unwrap()[0].param("uri").unwrap(),
            "sip:a@b"
        );
        assert_eq!(h.record_route().unwrap().len(), 2);
        assert_eq!(
            h.route().unwrap()[0].uri.to_string(),
            "sip:p3.example.com;lr"
        );
        assert!(h.proxy_authenticate().unwrap().is_empty());
    }
}
