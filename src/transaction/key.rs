//! Transaction matching: RFC 3261 §17.1.3 (responses to client transactions)
//! and §17.2.3 (requests to server transactions, with the RFC 2543 fallback
//! for branches without the magic cookie).

use std::fmt::Write as _;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, LazyLock};

use rand::Rng;

use crate::sip::{
    ByteStr, HeaderError, Headers, Host, Method, Request, Response, Via, MAGIC_COOKIE,
};

/// Why a message yields no transaction key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A header the key is made of is missing or malformed.
    #[error("no usable {header} header")]
    Header {
        /// The header's name.
        header: &'static str,
        /// What was wrong with it.
        #[source]
        source: HeaderError,
    },
    /// The top Via has no (RFC 3261) branch, so the response matches no
    /// transaction (§17.1.3).
    #[error("the top Via has no RFC 3261 branch parameter")]
    NoBranch,
}

fn header<T>(header: &'static str, r: Result<T, HeaderError>) -> Result<T, KeyError> {
    r.map_err(|source| KeyError::Header { header, source })
}

/// A new branch for a request this element originates: the magic cookie
/// followed by 96 random bits.
pub fn generate_branch() -> ByteStr {
    let mut rng = rand::thread_rng();
    let (a, b): (u64, u32) = (rng.gen(), rng.gen());
    let mut s = String::with_capacity(MAGIC_COOKIE.len() + 24);
    s.push_str(MAGIC_COOKIE);
    // Writing to a String cannot fail.
    let _ = write!(s, "{a:016x}{b:08x}");
    ByteStr::from(s)
}

/// A new To/From tag (§19.3): 64 random bits in hex.
pub fn generate_tag() -> ByteStr {
    let n: u64 = rand::thread_rng().gen();
    ByteStr::from(format!("{n:016x}"))
}

fn branch_of(via: &Via) -> Option<Branch> {
    via.params.get("branch").flatten().map(|b| Branch::new(b))
}

/// The longest branch a key holds inline, in its own allocation: ours
/// (`z9hG4bKvpbx-<call>-<leg><cseq>-<random>`, ~36 bytes), SIPp's and the
/// usual UAs' (a cookie and a UUID: 43-45 bytes) fit; a longer one is
/// boxed.
const BRANCH_INLINE: usize = 46;

/// A Via branch as keys hold it: a copy, inline in the key when it is at
/// most [`BRANCH_INLINE`] bytes long, else boxed. Keys outlive the message
/// they come from (a server transaction is kept for 64*T1 after its final
/// response over UDP): a slice of it would keep the whole received
/// datagram alive that long, and a copy of its own would be one more
/// allocation per lingering transaction, written at its start and freed,
/// cold, when it ends. A look-up key copies the few bytes too, instead
/// of counting the datagram's buffer up and down.
#[derive(Clone, PartialEq, Eq)]
enum Branch {
    /// The branch's `len` bytes, then zeros (so that equal branches are
    /// equal arrays).
    Inline { len: u8, bytes: [u8; BRANCH_INLINE] },
    /// A branch longer than [`BRANCH_INLINE`].
    Boxed(Box<str>),
}

impl Branch {
    /// A copy of `branch`.
    fn new(branch: &str) -> Self {
        Self::of_token(branch.as_bytes())
    }

    /// A copy of `branch`, token characters read from a Via field (ASCII,
    /// see `super::via_prefix`): not checked again as UTF-8 unless it is
    /// too long to be held inline (a boxed branch is a `str`; bytes that
    /// are not UTF-8, which a token cannot have, would be replaced).
    fn of_token(branch: &[u8]) -> Self {
        match u8::try_from(branch.len()) {
            Ok(len) if branch.len() <= BRANCH_INLINE => {
                let mut bytes = [0; BRANCH_INLINE];
                bytes[..branch.len()].copy_from_slice(branch);
                Self::Inline { len, bytes }
            }
            _ => Self::Boxed(String::from_utf8_lossy(branch).into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Self::Boxed(b) => b.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied from a `str` or a token whole: always UTF-8.
            Self::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Self::Boxed(b) => b,
        }
    }
}

impl std::fmt::Debug for Branch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<&str> for Branch {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// Identifies a client transaction (§17.1.3): the branch of the top Via the
/// client inserted, and the request method (CANCEL shares the INVITE's
/// branch but is its own transaction).
#[derive(Debug, Clone, Eq)]
pub struct ClientKey {
    /// The branch and method hashed as one seeded `u64`, when the key is
    /// made: a look-up by the table's own key (the TU's responses, timers)
    /// does not hash the branch again.
    hash: u64,
    branch: Branch,
    method: KeyMethod,
}

/// The same key (a look-up by the table's own `Arc`: no byte compare), or
/// the same hash, branch and method.
impl PartialEq for ClientKey {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
            || (self.hash == other.hash
                && self.branch == other.branch
                && self.method == other.method)
    }
}

/// Writes the key's hash (see [`Slot`]).
impl std::hash::Hash for ClientKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl ClientKey {
    /// The key of `branch` and `method`, hashed.
    fn of(branch: Branch, method: KeyMethod) -> Self {
        Self {
            hash: KEY_SEED.hash_one((branch.as_bytes(), &method)),
            branch,
            method,
        }
    }

    /// The key of the transaction with this branch (read from the
    /// request's top Via; the key keeps a copy) and method.
    #[cfg(test)]
    pub(crate) fn new(branch: &str, method: Method) -> Self {
        Self::of(Branch::new(branch), KeyMethod::new(method))
    }

    /// The key of the transaction with this branch, token characters read
    /// from the request's top Via (see `super::via_prefix`; the key keeps a
    /// copy, not checked again as UTF-8), and method.
    pub(crate) fn of_token(branch: &[u8], method: Method) -> Self {
        Self::of(Branch::of_token(branch), KeyMethod::new(method))
    }

    /// The key of a request about to be sent (its top Via carries our branch).
    pub fn for_request(req: &Request) -> Result<Self, KeyError> {
        Self::for_request_with_via(req).map(|(key, _)| key)
    }

    /// [`ClientKey::for_request`] and the top Via it was read from (the
    /// request's own parsed value).
    pub(crate) fn for_request_with_via(req: &Request) -> Result<(Self, &Via), KeyError> {
        let via = header("Via", req.headers.top_via_ref())?;
        let branch = branch_of(via).ok_or(KeyError::NoBranch)?;
        let key = Self::of(branch, KeyMethod::new(req.method.clone()));
        Ok((key, via))
    }

    /// The key a received response matches: top Via branch and CSeq method.
    pub fn for_response(resp: &Response) -> Result<Self, KeyError> {
        Self::for_response_with_via(resp).map(|(key, _)| key)
    }

    /// [`ClientKey::for_response`] and the top Via it was read from.
    pub(crate) fn for_response_with_via(resp: &Response) -> Result<(Self, &Via), KeyError> {
        let via = header("Via", resp.headers.top_via_ref())?;
        let branch = via
            .params
            .get("branch")
            .flatten()
            .map(|b| Branch::new(b))
            .ok_or(KeyError::NoBranch)?;
        let cseq = header("CSeq", resp.headers.cseq_ref())?;
        let key = Self::of(branch, KeyMethod::new(cseq.method.clone()));
        Ok((key, via))
    }

    /// The key a received response matches when its top Via branch was
    /// read without parsing the Via (see `super::via_prefix`): `branch`
    /// and the CSeq method.
    pub(crate) fn for_response_with_branch(
        branch: &[u8],
        resp: &Response,
    ) -> Result<Self, KeyError> {
        let cseq = header("CSeq", resp.headers.cseq_ref())?;
        Ok(Self::of(
            Branch::of_token(branch),
            KeyMethod::new(cseq.method.clone()),
        ))
    }

    /// The key of the transaction with this branch and another method (the
    /// INVITE a CANCEL belongs to).
    pub(crate) fn with_method(&self, method: Method) -> Self {
        Self::of(self.branch.clone(), KeyMethod::new(method))
    }

    /// The branch parameter.
    pub fn branch(&self) -> &str {
        self.branch.as_str()
    }

    /// The branch parameter's bytes (what [`ClientKey::branch`] reads,
    /// without the UTF-8 check).
    pub fn branch_bytes(&self) -> &[u8] {
        self.branch.as_bytes()
    }

    /// The method of the request that created the transaction.
    pub fn method(&self) -> &Method {
        self.method.get()
    }
}

// The methods `Method` names, in the order of `KeyMethod::new`'s indices.
use crate::sip::NAMED_METHODS as KNOWN_METHODS;

/// A method as keys hold it: a named one as its index in
/// [`KNOWN_METHODS`], any other boxed, so that a key does not carry a
/// [`Method`] (40 bytes, for the rare extension method's text) inline.
/// Equal exactly when the methods are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyMethod {
    Known(u8),
    Other(Box<Method>),
}

impl KeyMethod {
    fn new(method: Method) -> Self {
        let i = match method {
            Method::Invite => 0,
            Method::Ack => 1,
            Method::Bye => 2,
            Method::Cancel => 3,
            Method::Options => 4,
            Method::Register => 5,
            Method::Prack => 6,
            Method::Update => 7,
            Method::Info => 8,
            Method::Subscribe => 9,
            Method::Notify => 10,
            Method::Refer => 11,
            Method::Message => 12,
            Method::Publish => 13,
            Method::Other(_) => return KeyMethod::Other(Box::new(method)),
        };
        KeyMethod::Known(i)
    }

    fn get(&self) -> &Method {
        match self {
            // `new` writes indices of KNOWN_METHODS only: the fallback is
            // never taken.
            KeyMethod::Known(i) => KNOWN_METHODS
                .get(usize::from(*i))
                .unwrap_or(&Method::Invite),
            KeyMethod::Other(m) => m,
        }
    }
}

/// The host and port of a Via's sent-by, with domain names compared
/// case-insensitively (held lower-case).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SentBy {
    host: KeyHost,
    port: Option<u16>,
}

/// A sent-by host as keys hold it: a domain name in a box of its own size
/// rather than a [`Host`] (40 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyHost {
    Ipv4(std::net::Ipv4Addr),
    Ipv6(std::net::Ipv6Addr),
    Domain(Box<str>),
}

impl SentBy {
    fn of(via: &Via) -> Self {
        let host = match &via.host {
            Host::Domain(d) => KeyHost::Domain(d.to_ascii_lowercase().into_boxed_str()),
            Host::Ipv4(a) => KeyHost::Ipv4(*a),
            Host::Ipv6(a) => KeyHost::Ipv6(*a),
        };
        Self {
            host,
            port: via.port,
        }
    }
}

/// The fields of an RFC 2543 request that identify its transaction when the
/// branch lacks the magic cookie (§17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Rfc2543Key {
    request_uri: String,
    /// None for INVITE transactions: an ACK carries the To tag of the
    /// response, the INVITE none, so the INVITE's tag is not part of the key;
    /// the layer checks the ACK's To tag against the response sent instead.
    to_tag: Option<ByteStr>,
    from_tag: Option<ByteStr>,
    call_id: ByteStr,
    cseq: u32,
    method: Method,
    top_via: String,
}

/// Identifies a server transaction (§17.2.3): built by the RFC 3261 rules
/// when the top Via branch carries the magic cookie, by the RFC 2543
/// fallback otherwise.
#[derive(Debug, Clone, Eq)]
pub struct ServerKey(ServerKeyKind, u64);

/// The same key (a look-up by the table's own `Arc`: no byte compare), or
/// the same hash and fields.
impl PartialEq for ServerKey {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other) || (self.1 == other.1 && self.0 == other.0)
    }
}

/// Writes the key's hash, computed when it is made (see
/// [`ServerKey::of`]; a look-up by the table's own key, e.g. the TU's
/// responses, does not hash the branch again).
impl std::hash::Hash for ServerKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.1);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ServerKeyKind {
    /// Branch, sent-by and method (INVITE for an ACK).
    Rfc3261 {
        branch: Branch,
        sent_by: SentBy,
        method: KeyMethod,
    },
    /// Request-URI, tags, Call-ID, CSeq and top Via.
    Rfc2543(Box<Rfc2543Key>),
}

impl ServerKey {
    /// The key of `kind`, hashed. An RFC 3261 key hashes by its branch and
    /// method kind only: the branch is unique per transaction but for the
    /// INVITE/CANCEL pair (told apart by the method) and for a stolen
    /// branch (told apart by the sent-by, which equality compares,
    /// §17.2.3). Keys that are equal hash the same. One seeded `u64` (see
    /// [`Slot`]).
    fn of(kind: ServerKeyKind) -> Self {
        let hash = match &kind {
            ServerKeyKind::Rfc3261 { branch, method, .. } => {
                KEY_SEED.hash_one((branch.as_bytes(), std::mem::discriminant(method.get())))
            }
            ServerKeyKind::Rfc2543(k) => KEY_SEED.hash_one(k),
        };
        Self(kind, hash)
    }

    /// The key of the server transaction a received request belongs to
    /// (creates or matches). An ACK maps to its INVITE transaction.
    pub fn for_request(req: &Request) -> Result<Self, KeyError> {
        let via = header("Via", req.headers.top_via_ref())?;
        Self::for_request_via(req, via)
    }

    /// [`ServerKey::for_request`] with the request's top Via already parsed.
    pub(crate) fn for_request_via(req: &Request, via: &Via) -> Result<Self, KeyError> {
        let method = match req.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        Self::with_method(req, via, method)
    }

    /// The key of the server transaction a response answers, for RFC 3261
    /// branches: top Via branch and sent-by, CSeq method. A response cannot
    /// rebuild an RFC 2543 key (no Request-URI): [`KeyError::NoBranch`].
    pub fn for_response(resp: &Response) -> Result<Self, KeyError> {
        let via = header("Via", resp.headers.top_via_ref())?;
        match branch_of(via) {
            Some(branch) if branch.as_str().starts_with(MAGIC_COOKIE) => {
                Ok(Self::of(ServerKeyKind::Rfc3261 {
                    branch,
                    sent_by: SentBy::of(via),
                    method: KeyMethod::new(header("CSeq", resp.headers.cseq_ref())?.method.clone()),
                }))
            }
            _ => Err(KeyError::NoBranch),
        }
    }

    /// The key of the INVITE server transaction a CANCEL cancels (§9.2):
    /// the same matching rules, with the method INVITE.
    pub fn invite_for_cancel(cancel: &Request) -> Result<Self, KeyError> {
        let via = header("Via", cancel.headers.top_via_ref())?;
        Self::with_method(cancel, via, Method::Invite)
    }

    /// The key of the INVITE transaction an ACK would match, for looking it
    /// up (most ACKs, those for 2xx, match nothing and are dropped at
    /// once); the same key as [`ServerKey::for_request`]'s.
    pub(crate) fn for_ack_lookup(ack: &Request, via: &Via) -> Result<Self, KeyError> {
        Self::with_method(ack, via, Method::Invite)
    }

    fn with_method(req: &Request, via: &Via, method: Method) -> Result<Self, KeyError> {
        match via.params.get("branch").flatten() {
            Some(b) if b.starts_with(MAGIC_COOKIE) => Ok(Self::of(ServerKeyKind::Rfc3261 {
                branch: Branch::new(b),
                sent_by: SentBy::of(via),
                method: KeyMethod::new(method),
            })),
            _ => {
                let to_tag = if method == Method::Invite {
                    None
                } else {
                    header("To", req.headers.to_ref())?.tag().map(owned)
                };
                Ok(Self::of(ServerKeyKind::Rfc2543(Box::new(Rfc2543Key {
                    request_uri: req.uri.to_string(),
                    to_tag,
                    from_tag: header("From", req.headers.from_ref())?.tag().map(owned),
                    call_id: header("Call-ID", req.call_id())?,
                    cseq: header("CSeq", req.headers.cseq_ref())?.seq,
                    method,
                    top_via: via.to_string(),
                }))))
            }
        }
    }

    /// True for keys built by the RFC 2543 fallback; an ACK matching such a
    /// key must also carry the To tag of the response that was sent.
    pub fn is_rfc2543(&self) -> bool {
        matches!(self.0, ServerKeyKind::Rfc2543(_))
    }

    /// The method of the request that created the transaction.
    pub fn method(&self) -> &Method {
        match &self.0 {
            ServerKeyKind::Rfc3261 { method, .. } => method.get(),
            ServerKeyKind::Rfc2543(k) => &k.method,
        }
    }
}

/// What a 2xx to INVITE and its ACK share although the ACK is a transaction
/// of its own (§13.2.2.4, §12.2.1.1): Call-ID, CSeq number and the tags.
/// Lets the layer stop the UAS core's 2xx retransmissions when the ACK
/// arrives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AckKey {
    call_id: ByteStr,
    cseq: u32,
    from_tag: Option<ByteStr>,
    to_tag: Option<ByteStr>,
}

impl AckKey {
    /// The key of a 2xx response or of an ACK (`None` when the headers are
    /// unusable: such an ACK matches nothing).
    pub(crate) fn of(headers: &Headers) -> Option<Self> {
        Some(Self {
            call_id: headers.call_id().ok()?,
            cseq: headers.cseq_ref().ok()?.seq,
            from_tag: headers.from_ref().ok()?.tag().map(owned),
            to_tag: headers.to_ref().ok()?.tag().map(owned),
        })
    }
}

/// Either side's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    /// A client transaction (§17.1.3).
    Client(ClientKey),
    /// A server transaction (§17.2.3).
    Server(ServerKey),
}

fn owned(s: &str) -> ByteStr {
    ByteStr::from(s.to_owned())
}

/// The seed of the transaction keys' hashes. Keys are partly chosen by
/// peers (the branch), so the hash is seeded per process (foldhash's
/// `RandomState`), which is cheaper than the default SipHash on these
/// short keys (hashing a `ServerKey` took about 2.5 times fewer
/// instructions under callgrind).
static KEY_SEED: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// A transaction table's key: the shared key and its hash, computed once
/// when the transaction is created.
///
/// A table that grows, or that fills with deleted slots as transactions
/// come and go, rehashes every entry; with the hash in the slot that is a
/// read of the slot, not a walk to the key behind its `Arc` (a cache miss
/// per entry, hundreds of thousands of entries with the lingering
/// transactions of a busy minute) and a hash of its branch. [`ClientKey`]
/// and [`ServerKey`] hash as that one `u64`, so a table of slots is looked
/// up by a borrowed key ([`Borrow`](std::borrow::Borrow)) with
/// [`SlotHasher`], which passes the `u64` through.
#[derive(Debug, Clone)]
pub(crate) struct Slot<K> {
    hash: u64,
    key: Arc<K>,
}

impl<K: Hash> Slot<K> {
    /// The slot of `key`.
    pub(crate) fn new(key: Arc<K>) -> Self {
        let mut hasher = SlotHasher::default();
        key.hash(&mut hasher);
        Self {
            hash: hasher.finish(),
            key,
        }
    }
}

impl<K> Slot<K> {
    /// The shared key.
    pub(crate) fn key(&self) -> &Arc<K> {
        &self.key
    }
}

impl<K> Hash for Slot<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl<K: Eq> PartialEq for Slot<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl<K: Eq> Eq for Slot<K> {}

impl<K> std::borrow::Borrow<K> for Slot<K> {
    fn borrow(&self) -> &K {
        &self.key
    }
}

/// The hasher of a table of [`Slot`]s: passes the key's one seeded `u64`
/// through. Anything written otherwise (not done by the keys here) is
/// folded in with foldhash's mixing so the hasher stays a valid one.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = KEY_SEED.hash_one((self.0, bytes));
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = if self.0 == 0 {
            value
        } else {
            KEY_SEED.hash_one((self.0, value))
        };
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`SlotHasher`]s.
pub(crate) type SlotHashing = BuildHasherDefault<SlotHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{HeaderName, Request};
    use crate::transaction::invite_client::{build_ack, build_cancel};
    use crate::transaction::test_support::*;

    fn with_via(mut req: Request, via: &'static str) -> Request {
        req.headers.remove_first(&HeaderName::Via);
        req.headers.push_front(HeaderName::Via, via);
        req
    }

    #[test]
    fn a_slot_hashes_as_its_key_so_a_borrowed_key_finds_it() {
        let key = |req: &Request| ServerKey::for_request(req).unwrap();
        let a = with_via(invite(), "SIP/2.0/UDP Host.Example.com;branch=z9hG4bKx");
        let a_again = with_via(invite(), "SIP/2.0/UDP host.example.com;branch=z9hG4bKx");
        let slot = Slot::new(Arc::new(key(&a)));
        let hashing = SlotHashing::default();
        assert_eq!(hashing.hash_one(&slot), hashing.hash_one(key(&a_again)));
        assert_eq!(slot.hash, hashing.hash_one(key(&a)));
        // Keys that differ (branch, method) hash apart.
        let b = with_via(invite(), "SIP/2.0/UDP host.example.com;branch=z9hG4bKy");
        assert_ne!(slot.hash, hashing.hash_one(key(&b)));
        let cancel = build_cancel(&a);
        assert_ne!(slot.hash, hashing.hash_one(key(&cancel)));
        // Equality still compares the keys, not only the hashes.
        assert_eq!(slot, Slot::new(Arc::new(key(&a_again))));
        let other_host = with_via(invite(), "SIP/2.0/UDP other.example.com;branch=z9hG4bKx");
        assert_ne!(slot, Slot::new(Arc::new(key(&other_host))));
    }

    #[test]
    fn a_table_of_slots_finds_its_keys_through_growth_and_churn() {
        let table: dashmap::DashMap<Slot<ClientKey>, usize, SlotHashing> = Default::default();
        let key = |i: usize| ClientKey::new(&ByteStr::from(format!("z9hG4bK{i}")), Method::Bye);
        // Grow through many resizes, remove every other key (deleted
        // slots), then insert more so the table rehashes again.
        for i in 0..20_000 {
            assert!(table.insert(Slot::new(Arc::new(key(i))), i).is_none());
        }
        for i in (0..20_000).step_by(2) {
            assert_eq!(table.remove(&key(i)).map(|(_, v)| v), Some(i));
        }
        for i in 20_000..40_000 {
            assert!(table.insert(Slot::new(Arc::new(key(i))), i).is_none());
        }
        table.shrink_to_fit();
        for i in 0..40_000 {
            let found = table.get(&key(i)).map(|e| *e.value());
            let expected = (i >= 20_000 || i % 2 == 1).then_some(i);
            assert_eq!(found, expected, "key {i}");
        }
        assert_eq!(
            table
                .get(&ClientKey::new(&ByteStr::from("z9hG4bK1"), Method::Invite))
                .map(|e| *e),
            None
        );
    }

    #[test]
    fn server_keys_that_are_equal_hash_the_same_and_sent_by_still_tells_keys_apart() {
        use std::collections::HashMap;
        use std::hash::BuildHasher;
        let hasher = std::collections::hash_map::RandomState::new();
        let key = |req: &Request| ServerKey::for_request(req).unwrap();
        let a = with_via(
            invite(),
            "SIP/2.0/UDP Host.Example.com:5060;branch=z9hG4bKsame",
        );
        let a_again = with_via(
            invite(),
            "SIP/2.0/UDP host.example.COM:5060;branch=z9hG4bKsame",
        );
        let other_host = with_via(
            invite(),
            "SIP/2.0/UDP other.example.com:5060;branch=z9hG4bKsame",
        );
        let other_port = with_via(
            invite(),
            "SIP/2.0/UDP host.example.com:5070;branch=z9hG4bKsame",
        );
        let cancel = build_cancel(&a);
        let ack = build_ack(&a, &response(&a, 486, Some("t")));
        assert_eq!(key(&a), key(&a_again));
        assert_eq!(hasher.hash_one(key(&a)), hasher.hash_one(key(&a_again)));
        assert_eq!(key(&a), key(&ack));
        assert_eq!(hasher.hash_one(key(&a)), hasher.hash_one(key(&ack)));
        let mut table = HashMap::new();
        for (i, req) in [&a, &other_host, &other_port, &cancel]
            .into_iter()
            .enumerate()
        {
            assert_eq!(table.insert(key(req), i), None, "{req:?}");
        }
        assert_eq!(table.get(&key(&a_again)), Some(&0));
        assert_eq!(table.get(&key(&ack)), Some(&0));
        assert_eq!(table.get(&key(&other_port)), Some(&2));
        assert_eq!(table.get(&key(&cancel)), Some(&3));
        // RFC 2543 keys hash all their fields.
        let old = with_via(invite(), "SIP/2.0/UDP 10.0.0.1:5060;branch=1");
        assert_eq!(
            hasher.hash_one(key(&old)),
            hasher.hash_one(key(&old.clone()))
        );
        assert_ne!(key(&old), key(&a));
    }

    /// Whether `text` points into `buf`.
    fn inside(text: &str, buf: &bytes::Bytes) -> bool {
        buf.as_ptr_range().contains(&text.as_ptr())
    }

    #[test]
    fn keys_do_not_keep_the_received_datagram_alive() {
        let wire = with_via(
            invite(),
            "SIP/2.0/UDP Proxy.Example.com:5060;branch=z9hG4bKabc123",
        )
        .to_bytes();
        let crate::sip::Message::Request(req) =
            crate::sip::parse_datagram(wire.clone(), &crate::sip::Limits::default()).unwrap()
        else {
            panic!("not a request");
        };
        let via = req.top_via().unwrap();
        assert!(inside(via.params.get("branch").flatten().unwrap(), &wire));
        let ServerKeyKind::Rfc3261 {
            branch, sent_by, ..
        } = ServerKey::for_request(&req).unwrap().0
        else {
            panic!("not an RFC 3261 key");
        };
        assert_eq!(branch, "z9hG4bKabc123");
        assert!(matches!(branch, Branch::Inline { .. }));
        assert!(!inside(branch.as_str(), &wire));
        let KeyHost::Domain(host) = &sent_by.host else {
            panic!("sent-by is a domain");
        };
        assert_eq!(&**host, "proxy.example.com");
        assert!(!inside(host, &wire));
        let ckey = ClientKey::for_request(&req).unwrap();
        assert!(!inside(ckey.branch(), &wire));
        // Responses: the public key and the layer's lookup key alike.
        let wire = crate::sip::Response::for_request(&req, crate::sip::StatusCode::OK).to_bytes();
        let crate::sip::Message::Response(resp) =
            crate::sip::parse_datagram(wire.clone(), &crate::sip::Limits::default()).unwrap()
        else {
            panic!("not a response");
        };
        assert!(!inside(
            ClientKey::for_response(&resp).unwrap().branch(),
            &wire
        ));
        let (lookup, _) = ClientKey::for_response_with_via(&resp).unwrap();
        assert!(!inside(lookup.branch(), &wire));
        assert_eq!(lookup, ClientKey::for_response(&resp).unwrap());
        // An ACK's lookup key finds the INVITE's.
        let mut ack = req.clone();
        ack.method = Method::Ack;
        let wire = ack.to_bytes();
        let crate::sip::Message::Request(ack) =
            crate::sip::parse_datagram(wire.clone(), &crate::sip::Limits::default()).unwrap()
        else {
            panic!("not a request");
        };
        let via = ack.top_via().unwrap();
        let lookup = ServerKey::for_ack_lookup(&ack, &via).unwrap();
        let ServerKeyKind::Rfc3261 { branch, .. } = &lookup.0 else {
            panic!("not an RFC 3261 key");
        };
        assert!(!inside(branch.as_str(), &wire));
        assert_eq!(lookup, ServerKey::for_request(&req).unwrap());
        assert_eq!(lookup, ServerKey::for_request(&ack).unwrap());
    }

    #[test]
    fn branches_up_to_the_inline_length_are_held_in_the_key_longer_ones_boxed() {
        // The B2BUA's (`b2bua::ids::branch_for`): a call id of 9 hex
        // digits, a CSeq of 6 digits, 64 random bits.
        let ours = "z9hG4bKvpbx-fffffffff-i999999-0123456789abcdef";
        let uuid = "z9hG4bKPj01234567-89ab-cdef-0123-456789abcdef";
        let longest = format!("z9hG4bK{}", "x".repeat(BRANCH_INLINE - 7));
        let long = format!("{longest}y");
        for (branch, inline) in [
            ("z9hG4bK-12345-1-0", true),
            (uuid, true),
            (ours, true),
            (&*longest, true),
            (&*long, false),
            ("", true),
        ] {
            let b = Branch::new(branch);
            assert_eq!(matches!(b, Branch::Inline { .. }), inline, "{branch}");
            assert_eq!(b.as_str(), branch);
            assert_eq!(b.as_bytes(), branch.as_bytes());
            assert_eq!(b, Branch::new(branch));
            assert_eq!(format!("{b:?}"), format!("{branch:?}"));
            // The same key (and hash) whichever way it was made.
            let key = ClientKey::new(branch, Method::Bye);
            assert_eq!(key.branch(), branch);
            let again = ClientKey::new(&ByteStr::from(branch.to_owned()), Method::Bye);
            assert_eq!(key, again);
            assert_eq!(key.hash, again.hash);
            // Read as token bytes (our requests' branches, responses to
            // them): the same key, and the same bytes back.
            let token = ClientKey::of_token(branch.as_bytes(), Method::Bye);
            assert_eq!(key, token);
            assert_eq!(key.hash, token.hash);
            assert_eq!(token.branch_bytes(), branch.as_bytes());
            assert_eq!(token.branch(), branch);
        }
        // Bytes that are not UTF-8 (not a token: the grammar rules them
        // out) give no panic, inline or boxed.
        let odd = ClientKey::of_token(b"z9hG4bK\xff", Method::Bye);
        assert_eq!(odd.branch_bytes(), b"z9hG4bK\xff");
        assert_eq!(odd.branch(), "");
        let long_odd = [0xffu8; BRANCH_INLINE + 1];
        assert_eq!(
            ClientKey::of_token(&long_odd, Method::Bye).branch(),
            "\u{fffd}".repeat(BRANCH_INLINE + 1)
        );
        // Branches that share a prefix, or differ only in length, differ.
        assert_ne!(Branch::new("z9hG4bKa"), Branch::new("z9hG4bKab"));
        assert_ne!(Branch::new(&longest), Branch::new(&long));
        assert_ne!(Branch::new("z9hG4bKa"), Branch::new("z9hG4bKa\0"));
        assert_eq!(std::mem::size_of::<Branch>(), 48);
    }

    #[test]
    fn client_key_matches_responses_by_branch_and_cseq_method() {
        let inv = invite();
        let key = ClientKey::for_request(&inv).unwrap();
        assert_eq!(key.branch(), "z9hG4bKabc123");
        assert_eq!(key.method(), &Method::Invite);
        assert_eq!(
            ClientKey::for_response(&response(&inv, 180, None)).unwrap(),
            key
        );
        // CANCEL shares the branch but is another transaction (§9.1).
        let cancel = build_cancel(&inv);
        let ckey = ClientKey::for_request(&cancel).unwrap();
        assert_ne!(ckey, key);
        assert_eq!(
            ClientKey::for_response(&response(&cancel, 200, None)).unwrap(),
            ckey
        );
        // Another branch: no match.
        let other = with_via(inv, "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKother");
        assert_ne!(
            ClientKey::for_response(&response(&other, 180, None)).unwrap(),
            key
        );
    }

    #[test]
    fn client_key_needs_a_branch() {
        let inv = with_via(invite(), "SIP/2.0/UDP 10.0.0.1:5060");
        assert!(matches!(
            ClientKey::for_request(&inv),
            Err(KeyError::NoBranch)
        ));
        let mut inv = invite();
        inv.headers.remove_all(&HeaderName::Via);
        assert!(matches!(
            ClientKey::for_response(&response(&inv, 200, None)),
            Err(KeyError::Header { header: "Via", .. })
        ));
    }

    #[test]
    fn server_key_per_rfc_3261_branch_sent_by_and_method_with_ack_as_invite() {
        let inv = invite();
        let key = ServerKey::for_request(&inv).unwrap();
        assert!(!key.is_rfc2543());
        assert_eq!(key.method(), &Method::Invite);
        assert_eq!(
            ServerKey::for_request(&invite()).unwrap(),
            key,
            "retransmission"
        );
        let ack = build_ack(&inv, &response(&inv, 486, Some("x")));
        assert_eq!(
            ServerKey::for_request(&ack).unwrap(),
            key,
            "ACK matches the INVITE"
        );
        // CANCEL: its own transaction, and it finds the INVITE (§9.2).
        let cancel = build_cancel(&inv);
        assert_ne!(ServerKey::for_request(&cancel).unwrap(), key);
        assert_eq!(ServerKey::invite_for_cancel(&cancel).unwrap(), key);
        // Same branch from another sent-by is another transaction.
        let spoof = with_via(invite(), "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKabc123");
        assert_ne!(ServerKey::for_request(&spoof).unwrap(), key);
        let port = with_via(invite(), "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc123");
        assert_ne!(ServerKey::for_request(&port).unwrap(), key);
        // Host names compare case-insensitively.
        let a = with_via(
            invite(),
            "SIP/2.0/UDP PC33.Example.COM;branch=z9hG4bKabc123",
        );
        let b = with_via(
            invite(),
            "SIP/2.0/UDP pc33.example.com;branch=z9hG4bKabc123",
        );
        assert_eq!(
            ServerKey::for_request(&a).unwrap(),
            ServerKey::for_request(&b).unwrap()
        );
    }

    #[test]
    fn server_key_from_a_response_matches_its_request() {
        let inv = invite();
        let key = ServerKey::for_request(&inv).unwrap();
        assert_eq!(
            ServerKey::for_response(&response(&inv, 180, Some("t"))).unwrap(),
            key
        );
        let old = with_via(invite(), "SIP/2.0/UDP 10.0.0.1:5060;branch=old");
        assert!(matches!(
            ServerKey::for_response(&response(&old, 180, None)),
            Err(KeyError::NoBranch)
        ));
    }

    #[test]
    fn server_key_falls_back_to_rfc_2543_without_the_magic_cookie() {
        let via = "SIP/2.0/UDP 10.0.0.1:5060;branch=oldstyle1";
        let inv = with_via(invite(), via);
        let key = ServerKey::for_request(&inv).unwrap();
        assert!(key.is_rfc2543());
        assert_eq!(
            ServerKey::for_request(&with_via(invite(), via)).unwrap(),
            key
        );
        // The ACK carries the response's To tag, yet maps to the INVITE; the
        // layer then checks that tag against the response it sent.
        let ack = build_ack(&inv, &response(&inv, 486, Some("x")));
        assert_eq!(ServerKey::for_request(&ack).unwrap(), key);
        let cancel = build_cancel(&inv);
        assert_eq!(ServerKey::invite_for_cancel(&cancel).unwrap(), key);
        assert_ne!(ServerKey::for_request(&cancel).unwrap(), key);
        // Each identifying field matters.
        let mut other_cseq = inv.clone();
        other_cseq.headers.set(HeaderName::CSeq, "314160 INVITE");
        assert_ne!(ServerKey::for_request(&other_cseq).unwrap(), key);
        let mut other_from = inv.clone();
        other_from
            .headers
            .set(HeaderName::From, "Alice <sip:alice@example.com>;tag=other");
        assert_ne!(ServerKey::for_request(&other_from).unwrap(), key);
        let mut other_call = inv.clone();
        other_call
            .headers
            .set(HeaderName::CallId, "another@10.0.0.1");
        assert_ne!(ServerKey::for_request(&other_call).unwrap(), key);
        let mut other_uri = inv.clone();
        other_uri.uri = request(
            "
INVITE sip:carol@example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=oldstyle1
From: <sip:a@b>;tag=1
To: <sip:c@d>
Call-ID: x
CSeq: 1 INVITE
Content-Length: 0

",
        )
        .uri;
        assert_ne!(ServerKey::for_request(&other_uri).unwrap(), key);
        let no_branch = with_via(invite(), "SIP/2.0/UDP 10.0.0.1:5060");
        assert!(ServerKey::for_request(&no_branch).unwrap().is_rfc2543());
    }

    #[test]
    fn rfc_2543_non_invite_keys_include_the_to_tag() {
        let mut bye = options();
        bye.headers
            .set(HeaderName::Via, "SIP/2.0/UDP 10.0.0.1:5060");
        bye.headers
            .set(HeaderName::To, "<sip:bob@example.com>;tag=a");
        let a = ServerKey::for_request(&bye).unwrap();
        bye.headers
            .set(HeaderName::To, "<sip:bob@example.com>;tag=b");
        assert_ne!(ServerKey::for_request(&bye).unwrap(), a);
    }

    #[test]
    fn keys_hold_methods_compactly_and_give_them_back_as_they_were() {
        for method in KNOWN_METHODS.iter().cloned().chain([
            Method::Other(ByteStr::from("FOO")),
            Method::Other(ByteStr::from("INVITe")),
        ]) {
            let key = KeyMethod::new(method.clone());
            assert_eq!(key.get(), &method);
            assert_eq!(
                matches!(key, KeyMethod::Other(_)),
                matches!(method, Method::Other(_))
            );
            let client = ClientKey::new(&ByteStr::from("z9hG4bK1"), method.clone());
            assert_eq!(client.method(), &method);
        }
        // Equal exactly when the methods are.
        let all: Vec<Method> = KNOWN_METHODS
            .iter()
            .cloned()
            .chain([Method::Other(ByteStr::from("FOO"))])
            .collect();
        for a in &all {
            for b in &all {
                assert_eq!(
                    KeyMethod::new(a.clone()) == KeyMethod::new(b.clone()),
                    a == b
                );
            }
        }
        // What this buys: keys 56 and 88 bytes with the branch as a
        // `ByteStr` (72 and 120 with a Method and a Host inline); 8 of each
        // are the cached hash. Since session 10 they hold a branch of up to
        // 46 bytes inline (16 bytes more than a `ByteStr`) instead of
        // pointing to a copy of it in an allocation of its own.
        assert!(std::mem::size_of::<ClientKey>() <= 72, "was 56");
        assert!(std::mem::size_of::<ServerKey>() <= 104, "was 88");
    }

    #[test]
    fn generated_branches_carry_the_magic_cookie_and_differ() {
        let a = generate_branch();
        let b = generate_branch();
        assert!(a.starts_with(MAGIC_COOKIE));
        assert_eq!(a.len(), MAGIC_COOKIE.len() + 24);
        assert_ne!(a, b);
    }
}
