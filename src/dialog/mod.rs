//! Dialogs (RFC 3261 §12): the peer-to-peer state one leg of a call keeps
//! between an INVITE and the BYE that ends it.
//!
//! A [`Dialog`] owns the dialog identifiers (Call-ID, local and remote tag),
//! the local and remote CSeq numbers, the remote target and the route set,
//! and builds the in-dialog requests (BYE, re-INVITE, UPDATE, INFO, PRACK,
//! ACK for a 2xx) of RFC 3261 §12.2.1.1. It is pure: no I/O and no clock.
//! It does not add a Via (that needs the transport and a fresh branch) nor a
//! Contact: the B2BUA adds both, since they depend on the leg's transport.
//!
//! The header values From/To of our requests are kept as raw bytes, copied
//! once when the dialog is set up (so the received datagram is not kept
//! alive for the whole call); building a request copies no text.

use std::borrow::Cow;
use std::cell::OnceCell;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::sip::{
    ByteStr, HeaderError, HeaderName, Headers, Method, NameAddr, Request, Response, Uri,
};

/// Why a message could not set up or update a dialog.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DialogError {
    /// A header the dialog needs is missing or malformed.
    #[error("dialog header: {0}")]
    Header(#[from] HeaderError),
    /// The remote party's To of a 2xx (UAC) carries no tag.
    #[error("the remote party's {0} header has no tag")]
    MissingTag(&'static str),
    /// A request with a CSeq lower than or equal to the last one seen
    /// (RFC 3261 §12.2.2: answer 500).
    #[error("CSeq {got} is not above the last remote CSeq {last}")]
    CSeqOutOfOrder {
        /// CSeq number of the request.
        got: u32,
        /// Highest CSeq number seen from the remote party.
        last: u32,
    },
}

/// Identifies a dialog (RFC 3261 §12): Call-ID plus local and remote tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID of the dialog.
    pub call_id: ByteStr,
    /// Our tag (From of our requests).
    pub local_tag: ByteStr,
    /// The peer's tag; empty while a UAC dialog has no response with a tag.
    pub remote_tag: ByteStr,
}

/// Dialog state (RFC 3261 §12): early after a 1xx with a To tag, confirmed
/// after a 2xx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogState {
    /// A UAC dialog whose INVITE has no response with a tag yet.
    Initial,
    /// Created by a provisional response.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
}

/// One dialog, seen from our side.
#[derive(Clone, Debug)]
pub struct Dialog {
    call_id: ByteStr,
    local_tag: ByteStr,
    remote_tag: ByteStr,
    /// From of our requests (with our tag).
    local_header: Bytes,
    /// To of our requests (with the remote tag once known).
    remote_header: Bytes,
    local_seq: u32,
    remote_seq: Option<u32>,
    /// Parsed from `remote_contact` when first needed for a UAS dialog
    /// (see [`Dialog::remote_target`]), at once for a UAC one.
    remote_target: OnceCell<Uri>,
    /// The Contact value `remote_target` is parsed from (a copy), to skip
    /// parsing the same value again.
    remote_contact: Bytes,
    /// Route set in the order the Route headers of our requests list it,
    /// each with its text (the Route value), written once.
    route_set: Vec<RouteEntry>,
    state: DialogState,
    /// `remote_target` was parsed from `remote_contact`, which is one
    /// `<URI>` and nothing else (see [`bare_contact_uri`]): the text
    /// between the brackets is the remote target as written, and a request
    /// written to bytes copies it instead of writing the URI again.
    bare_contact: bool,
}

impl Dialog {
    /// The UAS side of a dialog created by `request` (an INVITE) answered
    /// with `local_tag` (RFC 3261 §12.1.1): remote target from Contact
    /// (parsed on first use, see [`Dialog::remote_target`]), route set from
    /// Record-Route in order, remote CSeq from the request.
    pub fn new_uas(request: &Request, local_tag: ByteStr) -> Result<Dialog, DialogError> {
        Dialog::new_uas_from(request, &request.from()?, local_tag)
    }

    /// [`Dialog::new_uas`] with the request's From already parsed.
    pub fn new_uas_from(
        request: &Request,
        from: &NameAddr,
        local_tag: ByteStr,
    ) -> Result<Dialog, DialogError> {
        Dialog::new_uas_in(request, from, local_tag, &mut BytesMut::new())
    }

    /// [`Dialog::new_uas_from`] with the copies the dialog keeps (tags,
    /// Call-ID, From, To, Contact) written into `buf` and split off it, so
    /// that they share one allocation with whatever else the caller keeps
    /// there (see [`Dialog::uas_len`] for the room they take).
    pub fn new_uas_in(
        request: &Request,
        from: &NameAddr,
        local_tag: ByteStr,
        buf: &mut BytesMut,
    ) -> Result<Dialog, DialogError> {
        // RFC 3261 §12.1.1: a From without tag (RFC 2543) is a null tag.
        let remote_tag = from.tag().map(|t| own_str(buf, t)).unwrap_or_default();
        let to_raw = request
            .headers
            .get(&HeaderName::To)
            .map_or(&[][..], |v| &v[..]);
        let from_raw = request
            .headers
            .get(&HeaderName::From)
            .map_or(&[][..], |v| &v[..]);
        // The remote target is parsed from the copy only when a request
        // goes to the caller (many calls never send one): the daemon's
        // validator has checked every Contact of the request already.
        let contact = request
            .headers
            .get(&HeaderName::Contact)
            .filter(|raw| raw.trim_ascii() != b"*");
        let (remote_target, remote_contact) = match contact {
            Some(raw) => (OnceCell::new(), own_bytes(buf, raw)),
            None => (OnceCell::from(own_uri(&from.uri)), Bytes::new()),
        };
        let call_id = own_str(buf, request.call_id()?.as_str());
        Ok(Dialog {
            call_id,
            local_header: put_with_tag(buf, to_raw, &local_tag),
            local_tag,
            remote_tag,
            remote_header: own_bytes(buf, from_raw),
            local_seq: 0,
            remote_seq: Some(request.cseq()?.seq),
            remote_target,
            remote_contact,
            route_set: own_routes(request.record_route()?),
            state: DialogState::Confirmed,
            bare_contact: false,
        })
    }

    /// The UAC side of a dialog we are about to create with an INVITE
    /// (RFC 3261 §12.1.2 once a response arrives). `from` is the From value
    /// without tag; `to` the To value; `cseq` the INVITE's CSeq number.
    pub fn new_uac(
        call_id: ByteStr,
        local_tag: ByteStr,
        from: &[u8],
        to: Bytes,
        target: Uri,
        cseq: u32,
    ) -> Dialog {
        let mut buf = BytesMut::with_capacity(from.len() + 5 + local_tag.len());
        let local_header = put_with_tag(&mut buf, from, &local_tag);
        Dialog::new_uac_with(call_id, local_tag, local_header, to, Some(target), cseq)
    }

    /// [`Dialog::new_uac`] with our From already written, tag included
    /// (`local_header`): nothing is copied. Without `target`, the remote
    /// target is the URI of `to`, read from it when first needed (a
    /// response with a Contact usually sets it before: then never).
    pub fn new_uac_with(
        call_id: ByteStr,
        local_tag: ByteStr,
        local_header: Bytes,
        to: Bytes,
        target: Option<Uri>,
        cseq: u32,
    ) -> Dialog {
        Dialog {
            call_id,
            local_header,
            local_tag,
            remote_tag: ByteStr::default(),
            remote_header: to,
            local_seq: cseq,
            remote_seq: None,
            remote_target: target.map_or_else(OnceCell::new, OnceCell::from),
            remote_contact: Bytes::new(),
            route_set: Vec::new(),
            state: DialogState::Initial,
            bare_contact: false,
        }
    }

    /// Updates a UAC dialog from a response to its INVITE: a 1xx with a To
    /// tag makes it early, a 2xx confirms it; the remote target comes from
    /// Contact and the route set from Record-Route in reverse (the 2xx's route
    /// set replaces an early one, RFC 3261 §12.1.2 and §13.2.2.4). A 100 and
    /// failures change nothing.
    pub fn on_uac_response(&mut self, response: &Response) -> Result<(), DialogError> {
        self.on_uac_response_in(response, &mut BytesMut::new())
    }

    /// [`Dialog::on_uac_response`] with the copies the dialog keeps (To
    /// and its tag, Contact) written into `buf` and split off it.
    pub fn on_uac_response_in(
        &mut self,
        response: &Response,
        buf: &mut BytesMut,
    ) -> Result<(), DialogError> {
        let status = response.status;
        if status.as_u16() == 100 || status.as_u16() >= 300 || self.state == DialogState::Confirmed
        {
            return Ok(());
        }
        let raw_to = response.headers.get(&HeaderName::To);
        // The 2xx after a provisional response of the same early dialog
        // carries the same To (tag included): no need to parse it again.
        let same_to = self.state == DialogState::Early
            && raw_to.is_some_and(|raw| raw[..] == self.remote_header[..]);
        let new_tag = if same_to {
            None
        } else {
            // Only the tag is needed: read without parsing To's URI.
            let to = raw_to.ok_or(HeaderError::Missing(HeaderName::To))?;
            let tag = NameAddr::tag_of(to).ok_or(HeaderError::Invalid {
                name: HeaderName::To,
                reason: "not a single address with well-formed parameters",
            })?;
            let Some(tag) = tag else {
                if status.is_success() {
                    return Err(DialogError::MissingTag("To"));
                }
                return Ok(());
            };
            (self.state == DialogState::Initial || self.remote_tag != tag)
                .then(|| own_str(buf, tag.as_str()))
        };
        if new_tag.is_some() || status.is_success() {
            if let Some(tag) = new_tag {
                self.remote_tag = tag;
            }
            if let Some(raw) = raw_to.filter(|raw| raw[..] != self.remote_header[..]) {
                self.remote_header = own_bytes(buf, raw);
            }
            let same_contact = response
                .headers
                .get(&HeaderName::Contact)
                .is_some_and(|raw| raw[..] == self.remote_contact[..]);
            if !same_contact {
                if let Some((uri, raw, bare)) = own_contact_uri(&response.headers, buf)? {
                    self.remote_target = OnceCell::from(uri);
                    self.remote_contact = raw;
                    self.bare_contact = bare;
                }
            }
            let mut routes = response.record_route()?;
            routes.reverse();
            self.route_set = own_routes(routes);
        }
        self.state = if status.is_success() {
            DialogState::Confirmed
        } else {
            DialogState::Early
        };
        Ok(())
    }

    /// Checks and records the CSeq of a request from the remote party
    /// (RFC 3261 §12.2.2), and takes a new remote target from a target
    /// refresh request (re-INVITE, UPDATE) with a Contact.
    pub fn on_remote_request(&mut self, request: &Request) -> Result<(), DialogError> {
        let seq = request.cseq()?.seq;
        if !matches!(request.method, Method::Ack | Method::Cancel) {
            if let Some(last) = self.remote_seq {
                if seq <= last {
                    return Err(DialogError::CSeqOutOfOrder { got: seq, last });
                }
            }
            self.remote_seq = Some(seq);
        }
        if matches!(request.method, Method::Invite | Method::Update) {
            if let Some((uri, raw, bare)) = own_contact_uri(&request.headers, &mut BytesMut::new())?
            {
                self.remote_target = OnceCell::from(uri);
                self.remote_contact = raw;
                self.bare_contact = bare;
            }
        }
        Ok(())
    }

    /// Our side's address with our tag: From of our requests, and for a
    /// UAS dialog the To of our responses to the request that created it.
    pub fn local_header(&self) -> &Bytes {
        &self.local_header
    }

    /// The dialog's identifiers.
    pub fn id(&self) -> DialogId {
        DialogId {
            call_id: self.call_id.clone(),
            local_tag: self.local_tag.clone(),
            remote_tag: self.remote_tag.clone(),
        }
    }

    /// Call-ID of the dialog.
    pub fn call_id(&self) -> &ByteStr {
        &self.call_id
    }

    /// Our tag.
    pub fn local_tag(&self) -> &ByteStr {
        &self.local_tag
    }

    /// The peer's tag (empty before a UAC dialog got one).
    pub fn remote_tag(&self) -> &ByteStr {
        &self.remote_tag
    }

    /// Current state.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// CSeq number of our last request.
    pub fn local_seq(&self) -> u32 {
        self.local_seq
    }

    /// The remote target (Contact of the peer).
    ///
    /// A UAS dialog parses it from its copy of the request's Contact on
    /// first use. Should that copy not parse (a request that bypassed the
    /// daemon's validator), the remote party's address (the copy of its
    /// From or To) is the target instead; that is also the target of a UAC
    /// dialog made without one, until a response gives a Contact.
    pub fn remote_target(&self) -> &Uri {
        self.remote_target.get_or_init(|| {
            first_contact_uri(&self.remote_contact)
                .ok()
                .flatten()
                .or_else(|| {
                    NameAddr::parse_single(&self.remote_header)
                        .ok()
                        .map(|a| a.uri)
                })
                // The remote header parsed when the dialog was set up: not reached.
                .unwrap_or_else(|| Uri::Other {
                    scheme: ByteStr::from_static("sip"),
                    rest: ByteStr::from_static("invalid"),
                })
        })
    }

    /// Takes the next local CSeq number without building a request (e.g.
    /// for an INVITE resent with credentials).
    pub fn next_seq(&mut self) -> u32 {
        self.local_seq = self.local_seq.wrapping_add(1);
        self.local_seq
    }

    /// A new request in the dialog (RFC 3261 §12.2.1.1) with the next local
    /// CSeq: Request-URI and Route from the remote target and route set,
    /// From/To with tags, Call-ID, CSeq, Max-Forwards 70. ACK and CANCEL are
    /// built by [`Dialog::ack`] and by the B2BUA from the INVITE.
    pub fn new_request(&mut self, method: Method) -> Request {
        self.local_seq = self.local_seq.wrapping_add(1);
        let seq = self.local_seq;
        self.request_with_seq(method, seq)
    }

    /// The ACK for a 2xx to our INVITE with CSeq number `invite_seq`
    /// (RFC 3261 §13.2.2.4): same CSeq number, method ACK.
    pub fn ack(&self, invite_seq: u32) -> Request {
        self.request_with_seq(Method::Ack, invite_seq)
    }

    /// Takes a new remote target from the Contact of a 2xx to a target
    /// refresh request of ours (re-INVITE, UPDATE; RFC 3261 §12.2.1.2).
    pub fn on_refresh_response(&mut self, response: &Response) {
        if let Ok(Some((uri, raw, bare))) = own_contact_uri(&response.headers, &mut BytesMut::new())
        {
            self.remote_target = OnceCell::from(uri);
            self.remote_contact = raw;
            self.bare_contact = bare;
        }
    }

    /// A request in the dialog with an explicit CSeq number: the initial
    /// INVITE of a UAC dialog, the ACK of a 2xx.
    pub fn request_with_seq(&self, method: Method, seq: u32) -> Request {
        self.request_in(method, seq, None, &mut BytesMut::new())
    }

    /// [`Dialog::request_with_seq`] with `via` (ours, when given) as its
    /// first header and the CSeq value written into `buf` and split off it.
    pub fn request_in(
        &self,
        method: Method,
        seq: u32,
        via: Option<Bytes>,
        buf: &mut BytesMut,
    ) -> Request {
        let (uri, routes) = self.request_target();
        let mut request = Request::new(method.clone(), uri.into_owned());
        // Room for these, our Via and Contact, and a few end-to-end ones.
        request.headers = Headers::with_capacity(routes.len() + 10);
        let h = &mut request.headers;
        if let Some(via) = via {
            h.push(HeaderName::Via, via);
        }
        for route in routes {
            h.push(HeaderName::Route, route);
        }
        h.push(HeaderName::From, self.local_header.clone());
        h.push(HeaderName::To, self.remote_header.clone());
        h.push(HeaderName::CallId, self.call_id.as_bytes().clone());
        put_cseq(buf, seq, &method);
        h.push(HeaderName::CSeq, buf.split().freeze());
        h.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
        request
    }

    /// The wire form of the request [`Dialog::request_in`] builds (with
    /// `via`), followed by `extra` header fields and `body`, written
    /// straight into `out` without building the request: for an ACK of a
    /// 2xx, which goes to the transport as bytes (RFC 3261 §13.2.2.4).
    /// `via` is written by `put_via` at the Via's place.
    pub fn write_request(
        &self,
        method: &Method,
        seq: u32,
        put_via: impl FnOnce(&mut BytesMut),
        extra: &[(HeaderName, &Bytes)],
        body: &Bytes,
        out: &mut BytesMut,
    ) {
        let (uri, routes) = self.request_target();
        // The remote target as the peer wrote it, when the Request-URI is
        // the remote target (no route set, or loose routing).
        let target_text = self
            .bare_contact
            .then(|| self.remote_contact.get(1..self.remote_contact.len() - 1))
            .flatten()
            .filter(|_| self.route_set.first().map_or(true, |r| is_loose(&r.addr)));
        let field = |out: &mut BytesMut, name: HeaderName, value: &[u8]| {
            out.put_slice(name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        };
        out.put_slice(method.as_str().as_bytes());
        out.put_u8(b' ');
        match target_text {
            Some(text) => out.put_slice(text),
            None => uri.write_into(out),
        }
        out.put_slice(b" SIP/2.0\r\n");
        out.put_slice(HeaderName::Via.as_str().as_bytes());
        out.put_slice(b": ");
        put_via(out);
        out.put_slice(b"\r\n");
        for route in &routes {
            field(out, HeaderName::Route, route);
        }
        field(out, HeaderName::From, &self.local_header);
        field(out, HeaderName::To, &self.remote_header);
        field(out, HeaderName::CallId, self.call_id.as_bytes());
        out.put_slice(HeaderName::CSeq.as_str().as_bytes());
        out.put_slice(b": ");
        put_cseq(out, seq, method);
        out.put_slice(b"\r\n");
        field(out, HeaderName::MaxForwards, b"70");
        for (name, value) in extra {
            field(out, name.clone(), value);
        }
        out.put_slice(HeaderName::ContentLength.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.put_slice(b"\r\n\r\n");
        out.put_slice(body);
    }

    /// Room to reserve for [`Dialog::write_request`] with a Via of
    /// `via_len` bytes, `extra` and `body`: an estimate, not a bound (the
    /// Request-URI is counted as the remote Contact's length, at least 64,
    /// and routes exactly; a longer URI makes the buffer grow).
    pub fn request_len(
        &self,
        via_len: usize,
        extra: &[(HeaderName, &Bytes)],
        body: &Bytes,
    ) -> usize {
        let routes: usize = self.route_set.iter().map(|r| r.text.len() + 9).sum();
        let fields = extra
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
        // Request line and the names, separators and numbers of the fixed
        // fields.
        160 + self.remote_contact.len().max(64)
            + routes
            + via_len
            + self.local_header.len()
            + self.remote_header.len()
            + self.call_id.len()
            + fields
            + body.len()
    }

    /// Room [`Dialog::new_uas_in`] takes in its buffer for `request` at
    /// most, with a local tag of `tag_len` bytes.
    pub fn uas_len(request: &Request, tag_len: usize) -> usize {
        let len = |name: HeaderName| request.headers.get(&name).map_or(0, Bytes::len);
        // The From tag is inside From; `;tag=` and ours go after To.
        2 * len(HeaderName::From)
            + len(HeaderName::To)
            + 5
            + tag_len
            + len(HeaderName::CallId)
            + len(HeaderName::Contact)
    }

    /// Request-URI and Route values: loose routing when the first route has
    /// `lr`, else the strict routing of RFC 3261 §12.2.1.1. The remote
    /// target is lent, not copied, unless strict routing makes the first
    /// route the Request-URI.
    fn request_target(&self) -> (Cow<'_, Uri>, Vec<Bytes>) {
        let text = |r: &RouteEntry| r.text.clone();
        match self.route_set.first() {
            None => (Cow::Borrowed(self.remote_target()), Vec::new()),
            Some(first) if is_loose(&first.addr) => (
                Cow::Borrowed(self.remote_target()),
                self.route_set.iter().map(text).collect(),
            ),
            Some(first) => {
                let mut routes: Vec<Bytes> = self.route_set[1..].iter().map(text).collect();
                routes.push(Bytes::from(format!("<{}>", self.remote_target())));
                (Cow::Owned(strip_uri_headers(&first.addr.uri)), routes)
            }
        }
    }
}

/// `CSeq` value `"<seq> <METHOD>"`, in a buffer of its exact size.
pub fn cseq_value(seq: u32, method: &Method) -> Bytes {
    let digits = itoa::Buffer::new().format(seq).len();
    let mut b = BytesMut::with_capacity(digits + 1 + method.as_str().len());
    put_cseq(&mut b, seq, method);
    b.freeze()
}

/// Appends the `CSeq` value `"<seq> <METHOD>"` to `out`.
pub fn put_cseq(out: &mut BytesMut, seq: u32, method: &Method) {
    out.put_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.put_u8(b' ');
    out.put_slice(method.as_str().as_bytes());
}

/// Copies `value` into `buf` and splits it off: the copy shares `buf`'s
/// allocation (and no longer keeps a received datagram alive).
fn own_bytes(buf: &mut BytesMut, value: &[u8]) -> Bytes {
    buf.put_slice(value);
    buf.split().freeze()
}

/// [`own_bytes`] for text.
fn own_str(buf: &mut BytesMut, text: &str) -> ByteStr {
    // A copy of a `str`: the one check passes (an empty text otherwise
    // is not reached).
    ByteStr::from_utf8(own_bytes(buf, text.as_bytes())).unwrap_or_default()
}

/// A URI in a buffer of its own. Dialog state lives as long as the call; a
/// slice of the received message would keep the whole datagram alive.
fn own_uri(uri: &Uri) -> Uri {
    Uri::parse(&uri.to_string()).unwrap_or_else(|_| uri.clone())
}

/// The first Contact address's URI (RFC 3261 §12.1: the remote target),
/// parsed from a copy of the header value, so it owns its buffer (see
/// [`own_uri`]) without formatting and parsing the URI again; with that
/// copy, and whether it is a bare `<URI>` ([`bare_contact_uri`]). `*` has
/// no URI.
fn own_contact_uri(
    headers: &Headers,
    buf: &mut BytesMut,
) -> Result<Option<(Uri, Bytes, bool)>, DialogError> {
    let Some(raw) = headers.get(&HeaderName::Contact) else {
        return Ok(None);
    };
    if raw.trim_ascii() == b"*" {
        return Ok(None);
    }
    let own = own_bytes(buf, raw);
    if let Some(uri) = bare_contact_uri(&own) {
        return Ok(Some((uri, own, true)));
    }
    let first = first_contact_uri(&own).map_err(|reason| {
        DialogError::Header(HeaderError::Invalid {
            name: HeaderName::Contact,
            reason,
        })
    })?;
    Ok(first.map(|uri| (uri, own, false)))
}

/// The URI of a Contact value of the usual shape, one `<URI>` and nothing
/// else (no display name, header parameters, second address or white
/// space; no URI headers), parsed alone: what the full reading of the
/// value ([`first_contact_uri`]) gives for it, with less work. `None` for
/// any other shape or a URI that does not parse (the full reading then
/// says why).
fn bare_contact_uri(raw: &Bytes) -> Option<Uri> {
    let inner = raw.strip_prefix(b"<")?.strip_suffix(b">")?;
    if inner.is_empty()
        || inner.iter().any(|&c| {
            matches!(
                c,
                b'<' | b'>' | b'?' | b',' | b'"' | b' ' | b'\t' | b'\r' | b'\n'
            )
        })
    {
        return None;
    }
    Uri::parse_in(raw, inner).ok()
}

/// The URI of the first address of a Contact value; every address is
/// checked.
fn first_contact_uri(raw: &Bytes) -> Result<Option<Uri>, &'static str> {
    let mut first = None;
    NameAddr::parse_each(raw, |a| {
        first.get_or_insert(a.uri);
    })?;
    Ok(first)
}

/// One route of a dialog's route set: the address, and its text as a
/// Route value (what the address's `Display` writes), kept so that each
/// request copies a handle instead of formatting it again.
#[derive(Clone, Debug)]
struct RouteEntry {
    addr: NameAddr,
    text: Bytes,
}

/// Route set values in buffers of their own (see [`own_uri`]): each
/// address is written once and parsed again from that text, which the
/// entry keeps as its Route value.
fn own_routes(routes: Vec<NameAddr>) -> Vec<RouteEntry> {
    routes
        .into_iter()
        .map(|n| {
            let text = Bytes::from(n.to_string());
            let addr = NameAddr::parse_single(&text).unwrap_or(n);
            RouteEntry { addr, text }
        })
        .collect()
}

/// `value;tag=<tag>`, written into `buf` and split off it.
fn put_with_tag(buf: &mut BytesMut, value: &[u8], tag: &str) -> Bytes {
    buf.put_slice(value);
    buf.put_slice(b";tag=");
    buf.put_slice(tag.as_bytes());
    buf.split().freeze()
}

fn is_loose(route: &NameAddr) -> bool {
    match &route.uri {
        Uri::Sip(u) => u.params.contains("lr"),
        _ => false,
    }
}

/// A Request-URI may not carry URI headers or `method` (RFC 3261 §19.1.5).
fn strip_uri_headers(uri: &Uri) -> Uri {
    let mut uri = uri.clone();
    if let Uri::Sip(u) = &mut uri {
        u.headers = Default::default();
        u.params.remove("method");
    }
    uri
}

#[cfg(test)]
mod tests;
