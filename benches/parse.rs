//! Parser benchmark: vpbx's own SIP parser (`vpbx::sip`) against two
//! baselines, `rsip` 0.4 and `rsipstack` 0.7, on the same messages in the
//! same run.
//!
//! Messages: a ~900-byte INVITE with an SDP offer, a 200 OK with an SDP
//! answer, a REGISTER with digest credentials, and the RFC 4475 torture
//! messages whose verdict in `tests/fixtures/rfc4475/EXPECTED.tsv` is `valid`.
//! Each library is benchmarked on the torture messages it accepts (it
//! rejects the others; the counts are printed before the run).
//!
//! Two groups:
//! * `parse`: parse the datagram into the library's message type;
//! * `parse_fields`: parse, then read the fields every transaction and
//!   dialog needs: top Via (branch, sent-by host and port), From (URI, tag),
//!   To (URI, tag), CSeq (number, method) and Call-ID, each through the
//!   library's typed accessors. The values are folded into a checksum that
//!   goes through `black_box`, so none of the work can be optimised away.
//!
//! A `write` group serialises the parsed INVITE with each library (vpbx
//! twice: into a reused buffer, and with `to_bytes` as the transport does).
//! A `daemon` group (vpbx only) times what the daemon does per relayed
//! message: parse, read those fields, `to_bytes`; and a UAS answer: a 180
//! built from the parsed INVITE (`Response::for_request`, `set_to_tag`)
//! and written, and a B2BUA's 200 to the caller (the same plus
//! Record-Route, Contact, end-to-end headers and the SDP).
//!
//! Time is the benchmark thread's CPU time (see [`ThreadCpuTime`]), so the
//! figures hold on a busy machine. Run with `cargo bench --bench parse`;
//! figures are recorded in `docs/performance.md`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Criterion measurement: CPU time of the benchmark thread
/// (`CLOCK_THREAD_CPUTIME_ID`) instead of wall time. The machine the
/// figures come from is shared with other builds; time spent descheduled
/// would otherwise land in whichever benchmark happened to be running.
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuTimeFormatter
    }
}

/// Formats nanoseconds of CPU time and the matching throughputs.
struct CpuTimeFormatter;

impl ValueFormatter for CpuTimeFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical_ns < 1e3 {
            (1.0, "ns")
        } else if typical_ns < 1e6 {
            (1e3, "µs")
        } else if typical_ns < 1e9 {
            (1e6, "ms")
        } else {
            (1e9, "s")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }

    fn scale_throughputs(
        &self,
        typical_ns: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (per_iter, unit) = match throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => (*n as f64, "B/s"),
            Throughput::Elements(n) => (*n as f64, "elem/s"),
        };
        let typical = per_iter * 1e9 / typical_ns;
        let (div, unit) = match (typical, unit) {
            (t, "elem/s") if t >= 1e6 => (1e6, "Melem/s"),
            (t, "elem/s") if t >= 1e3 => (1e3, "Kelem/s"),
            (t, "B/s") if t >= 1e6 => (1e6, "MB/s"),
            (_, u) => (1.0, u),
        };
        values
            .iter_mut()
            .for_each(|v| *v = per_iter * 1e9 / *v / div);
        unit
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// Folds a string into the checksum (length and first byte: cheap, but it
/// needs the string to exist).
fn fold_str(acc: u64, s: &str) -> u64 {
    acc.wrapping_mul(31)
        .wrapping_add(s.len() as u64)
        .wrapping_add(u64::from(s.as_bytes().first().copied().unwrap_or(0)))
}

/// Folds a number into the checksum.
fn fold_num(acc: u64, n: u64) -> u64 {
    acc.wrapping_mul(31).wrapping_add(n)
}

/// Why a library could not process a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The parser rejected the message.
    Parse,
    /// The message parsed but one of the benchmarked fields could not be read.
    Fields,
}

/// The benchmarked fields as plain text, to check that the libraries read
/// the same values (not timed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    via_branch: String,
    via_sent_by: String,
    from: String,
    from_tag: String,
    to: String,
    to_tag: String,
    cseq: String,
    call_id: String,
}

impl Fields {
    /// The fields whose values differ: `name: self vs other`.
    fn differences(&self, other: &Fields) -> Vec<String> {
        let pairs = [
            ("via_branch", &self.via_branch, &other.via_branch),
            ("via_sent_by", &self.via_sent_by, &other.via_sent_by),
            ("from", &self.from, &other.from),
            ("from_tag", &self.from_tag, &other.from_tag),
            ("to", &self.to, &other.to),
            ("to_tag", &self.to_tag, &other.to_tag),
            ("cseq", &self.cseq, &other.cseq),
            ("call_id", &self.call_id, &other.call_id),
        ];
        pairs
            .iter()
            .filter(|(_, a, b)| a != b)
            .map(|(n, a, b)| format!("{n}: {a:?} vs {b:?}"))
            .collect()
    }
}

/// `user@host:port` of a URI, for [`Fields`].
fn addr_text(user: Option<&str>, host: String, port: Option<u16>) -> String {
    let mut s = String::new();
    if let Some(u) = user {
        s.push_str(u);
        s.push('@');
    }
    s.push_str(&host);
    if let Some(p) = port {
        s.push_str(&format!(":{p}"));
    }
    s
}

/// One parser under test: parse alone, and parse plus typed field access.
struct Lib {
    name: &'static str,
    parse: fn(&Bytes) -> Result<(), Failure>,
    parse_fields: fn(&Bytes) -> Result<u64, Failure>,
    fields: fn(&Bytes) -> Option<Fields>,
}

mod with_rsip {
    //! `rsip` 0.4: nom tokenizers; headers are kept as untyped `String`
    //! newtypes and parsed into typed headers on request with `.typed()`,
    //! the crate's public path (its tokenizers are `#[doc(hidden)]`).
    use super::{addr_text, fold_num, fold_str, Failure, Fields};
    use bytes::Bytes;
    use rsip::headers::{ToTypedHeader, UntypedHeader};
    use rsip::prelude::HeadersExt;
    use std::hint::black_box;

    fn parse(buf: &Bytes) -> Result<rsip::SipMessage, Failure> {
        rsip::SipMessage::try_from(&buf[..]).map_err(|_| Failure::Parse)
    }

    pub fn parse_only(buf: &Bytes) -> Result<(), Failure> {
        black_box(parse(buf)?);
        Ok(())
    }

    fn fold_uri(acc: u64, uri: &rsip::Uri) -> u64 {
        let mut acc = acc;
        if let Some(auth) = &uri.auth {
            acc = fold_str(acc, &auth.user);
        }
        acc = fold_host(acc, &uri.host_with_port.host);
        let port = uri.host_with_port.port.map_or(0, |p| u64::from(*p.value()));
        fold_num(acc, port)
    }

    fn fold_host(acc: u64, host: &rsip::Host) -> u64 {
        match host {
            rsip::Host::Domain(d) => fold_str(acc, d.value()),
            rsip::Host::IpAddr(ip) => fold_num(acc, u64::from(ip.is_ipv4())),
        }
    }

    pub fn parse_fields(buf: &Bytes) -> Result<u64, Failure> {
        let msg = parse(buf)?;
        let f = |_| Failure::Fields;
        let via = msg.via_header().map_err(f)?.typed().map_err(f)?;
        let mut acc = 0;
        acc = fold_str(acc, via.branch().map_or("", |b| b.value()));
        acc = fold_uri(acc, &via.uri);
        let from = msg.from_header().map_err(f)?.typed().map_err(f)?;
        acc = fold_uri(acc, &from.uri);
        acc = fold_str(acc, from.tag().map_or("", |t| t.value()));
        let to = msg.to_header().map_err(f)?.typed().map_err(f)?;
        acc = fold_uri(acc, &to.uri);
        acc = fold_str(acc, to.tag().map_or("", |t| t.value()));
        let cseq = msg.cseq_header().map_err(f)?.typed().map_err(f)?;
        acc = fold_num(acc, u64::from(cseq.seq));
        black_box(&cseq.method);
        acc = fold_str(acc, msg.call_id_header().map_err(f)?.value());
        black_box(&msg);
        Ok(acc)
    }

    fn uri_text(uri: &rsip::Uri) -> String {
        let host = match &uri.host_with_port.host {
            rsip::Host::Domain(d) => d.value().to_string(),
            rsip::Host::IpAddr(ip) => ip.to_string(),
        };
        let port = uri.host_with_port.port.map(|p| *p.value());
        addr_text(uri.auth.as_ref().map(|a| a.user.as_str()), host, port)
    }

    pub fn fields(buf: &Bytes) -> Option<Fields> {
        let msg = parse(buf).ok()?;
        let via = msg.via_header().ok()?.typed().ok()?;
        let from = msg.from_header().ok()?.typed().ok()?;
        let to = msg.to_header().ok()?.typed().ok()?;
        let cseq = msg.cseq_header().ok()?.typed().ok()?;
        Some(Fields {
            via_branch: via.branch().map_or("", |b| b.value()).to_string(),
            via_sent_by: uri_text(&via.uri),
            from: uri_text(&from.uri),
            from_tag: from.tag().map_or("", |t| t.value()).to_string(),
            to: uri_text(&to.uri),
            to_tag: to.tag().map_or("", |t| t.value()).to_string(),
            cseq: format!("{} {}", cseq.seq, cseq.method),
            call_id: msg.call_id_header().ok()?.value().to_string(),
        })
    }

    pub fn write(msg: &rsip::SipMessage) -> usize {
        msg.to_string().len()
    }

    pub fn parsed(buf: &Bytes) -> Option<rsip::SipMessage> {
        parse(buf).ok()
    }
}

mod with_rsipstack {
    //! `rsipstack` 0.7: its own hand-written parser (`sip::parser`, memchr
    //! line splitting, no longer rsip's). Headers are kept as untyped
    //! `String` newtypes; typed headers are parsed from the value with the
    //! public `typed::X::parse(&str)`, which skips the clone `.typed()` makes.
    use super::{addr_text, fold_num, fold_str, Failure, Fields};
    use bytes::Bytes;
    use rsipstack::sip::prelude::HeadersExt;
    use rsipstack::sip::typed;
    use std::hint::black_box;

    fn parse(buf: &Bytes) -> Result<rsipstack::sip::SipMessage, Failure> {
        rsipstack::sip::parser::parse_message(buf).map_err(|_| Failure::Parse)
    }

    pub fn parse_only(buf: &Bytes) -> Result<(), Failure> {
        black_box(parse(buf)?);
        Ok(())
    }

    fn fold_uri(acc: u64, uri: &rsipstack::sip::Uri) -> u64 {
        let mut acc = acc;
        if let Some(auth) = &uri.auth {
            acc = fold_str(acc, &auth.user);
        }
        acc = fold_host(acc, &uri.host_with_port.host);
        let port = uri
            .host_with_port
            .port
            .as_ref()
            .map_or(0, |p| u64::from(p.value()));
        fold_num(acc, port)
    }

    fn fold_host(acc: u64, host: &rsipstack::sip::Host) -> u64 {
        match host {
            rsipstack::sip::Host::Domain(d) => fold_str(acc, &d.0),
            rsipstack::sip::Host::IpAddr(ip) => fold_num(acc, u64::from(ip.is_ipv4())),
        }
    }

    pub fn parse_fields(buf: &Bytes) -> Result<u64, Failure> {
        let msg = parse(buf)?;
        let f = |_| Failure::Fields;
        // The first value of the first Via line (a line may carry several).
        let top = msg.top_via_header().map_err(f)?;
        let via = typed::Via::parse(top.value()).map_err(f)?;
        let mut acc = 0;
        acc = fold_str(acc, via.branch().map_or("", |b| b.value()));
        acc = fold_uri(acc, &via.uri);
        let from = typed::From::parse(msg.from_header().map_err(f)?.value()).map_err(f)?;
        acc = fold_uri(acc, &from.uri);
        acc = fold_str(acc, from.tag().map_or("", |t| t.value()));
        let to = typed::To::parse(msg.to_header().map_err(f)?.value()).map_err(f)?;
        acc = fold_uri(acc, &to.uri);
        acc = fold_str(acc, to.tag().map_or("", |t| t.value()));
        let cseq = typed::CSeq::parse(msg.cseq_header().map_err(f)?.value()).map_err(f)?;
        acc = fold_num(acc, u64::from(cseq.seq));
        black_box(&cseq.method);
        acc = fold_str(acc, msg.call_id_header().map_err(f)?.value());
        black_box(&msg);
        Ok(acc)
    }

    fn uri_text(uri: &rsipstack::sip::Uri) -> String {
        let host = match &uri.host_with_port.host {
            rsipstack::sip::Host::Domain(d) => d.0.clone(),
            rsipstack::sip::Host::IpAddr(ip) => ip.to_string(),
        };
        let port = uri.host_with_port.port.as_ref().map(|p| p.value());
        addr_text(uri.auth.as_ref().map(|a| a.user.as_str()), host, port)
    }

    pub fn fields(buf: &Bytes) -> Option<Fields> {
        let msg = parse(buf).ok()?;
        let via = typed::Via::parse(msg.top_via_header().ok()?.value()).ok()?;
        let from = typed::From::parse(msg.from_header().ok()?.value()).ok()?;
        let to = typed::To::parse(msg.to_header().ok()?.value()).ok()?;
        let cseq = typed::CSeq::parse(msg.cseq_header().ok()?.value()).ok()?;
        Some(Fields {
            via_branch: via.branch().map_or("", |b| b.value()).to_string(),
            via_sent_by: uri_text(&via.uri),
            from: uri_text(&from.uri),
            from_tag: from.tag().map_or("", |t| t.value()).to_string(),
            to: uri_text(&to.uri),
            to_tag: to.tag().map_or("", |t| t.value()).to_string(),
            cseq: format!("{} {}", cseq.seq, cseq.method),
            call_id: msg.call_id_header().ok()?.value().to_string(),
        })
    }

    pub fn write(msg: &rsipstack::sip::SipMessage) -> usize {
        msg.to_bytes().len()
    }

    pub fn parsed(buf: &Bytes) -> Option<rsipstack::sip::SipMessage> {
        parse(buf).ok()
    }
}

#[path = "support/responses.rs"]
mod responses;

mod with_vpbx {
    //! vpbx: `parse_datagram` splits the header section into raw header
    //! values (slices of the datagram); typed values are parsed on access.
    use super::{addr_text, fold_num, fold_str, Failure, Fields};
    use bytes::{Bytes, BytesMut};
    use std::hint::black_box;
    use vpbx::sip::{parse_datagram, Host, Limits, Message, Uri};

    fn parse(buf: &Bytes) -> Result<Message, Failure> {
        parse_datagram(buf.clone(), &Limits::default()).map_err(|_| Failure::Parse)
    }

    pub fn parse_only(buf: &Bytes) -> Result<(), Failure> {
        black_box(parse(buf)?);
        Ok(())
    }

    fn fold_host(acc: u64, host: &Host) -> u64 {
        match host {
            Host::Domain(d) => fold_str(acc, d),
            Host::Ipv4(_) => fold_num(acc, 1),
            Host::Ipv6(_) => fold_num(acc, 0),
        }
    }

    fn fold_uri(acc: u64, uri: &Uri) -> u64 {
        match uri {
            Uri::Sip(u) => {
                let mut acc = acc;
                if let Some(user) = &u.user {
                    acc = fold_str(acc, user);
                }
                acc = fold_host(acc, &u.host);
                fold_num(acc, u64::from(u.port.unwrap_or(0)))
            }
            Uri::Tel(t) => fold_str(acc, &t.number),
            Uri::Other { rest, .. } => fold_str(acc, rest),
        }
    }

    pub fn parse_fields(buf: &Bytes) -> Result<u64, Failure> {
        let msg = parse(buf)?;
        parse_fields_of(&msg)
    }

    fn parse_fields_of(msg: &Message) -> Result<u64, Failure> {
        let h = msg.headers();
        let f = |_| Failure::Fields;
        let via = h.top_via().map_err(f)?;
        let mut acc = 0;
        acc = fold_str(acc, via.branch().unwrap_or(""));
        acc = fold_host(acc, &via.host);
        acc = fold_num(acc, u64::from(via.port.unwrap_or(0)));
        let from = h.from().map_err(f)?;
        acc = fold_uri(acc, &from.uri);
        acc = fold_str(acc, from.tag().unwrap_or(""));
        let to = h.to().map_err(f)?;
        acc = fold_uri(acc, &to.uri);
        acc = fold_str(acc, to.tag().unwrap_or(""));
        let cseq = h.cseq().map_err(f)?;
        acc = fold_num(acc, u64::from(cseq.seq));
        black_box(&cseq.method);
        acc = fold_str(acc, &h.call_id().map_err(f)?);
        black_box(msg);
        Ok(acc)
    }

    fn host_text(host: &Host) -> String {
        match host {
            Host::Domain(d) => d.to_string(),
            Host::Ipv4(a) => a.to_string(),
            Host::Ipv6(a) => a.to_string(),
        }
    }

    fn uri_text(uri: &Uri) -> String {
        match uri {
            Uri::Sip(u) => addr_text(u.user.as_deref(), host_text(&u.host), u.port),
            other => other.to_string(),
        }
    }

    pub fn fields(buf: &Bytes) -> Option<Fields> {
        let msg = parse(buf).ok()?;
        let h = msg.headers();
        let via = h.top_via().ok()?;
        let from = h.from().ok()?;
        let to = h.to().ok()?;
        let cseq = h.cseq().ok()?;
        Some(Fields {
            via_branch: via.branch().unwrap_or("").to_string(),
            via_sent_by: addr_text(None, host_text(&via.host), via.port),
            from: uri_text(&from.uri),
            from_tag: from.tag().unwrap_or("").to_string(),
            to: uri_text(&to.uri),
            to_tag: to.tag().unwrap_or("").to_string(),
            cseq: format!("{} {}", cseq.seq, cseq.method.as_str()),
            call_id: h.call_id().ok()?.to_string(),
        })
    }

    pub fn parsed(buf: &Bytes) -> Option<Message> {
        parse(buf).ok()
    }

    /// Serialises into a reused buffer.
    pub fn write(msg: &Message, out: &mut BytesMut) -> usize {
        out.clear();
        msg.write_into(out);
        out.len()
    }

    /// Serialises into a buffer of its own (the transport's pattern:
    /// `to_bytes()` per message sent).
    #[inline(never)]
    pub fn to_bytes(msg: &Message) -> Bytes {
        msg.to_bytes()
    }

    /// A UAS answering the parsed request: a 180 with the request's Via,
    /// From, To, Call-ID and CSeq, a To tag, serialised.
    #[inline(never)]
    pub fn respond(msg: &Message) -> Bytes {
        match msg {
            Message::Request(req) => super::responses::ringing(req),
            Message::Response(_) => Bytes::new(),
        }
    }

    /// A B2BUA's 200 to the caller: the copied headers, our To tag,
    /// Record-Route, Contact, the callee's end-to-end headers and SDP.
    #[inline(never)]
    pub fn relay_200(msg: &Message) -> Bytes {
        match msg {
            Message::Request(req) => super::responses::relayed_200(req),
            Message::Response(_) => Bytes::new(),
        }
    }

    #[inline(never)]
    pub fn daemon(buf: &Bytes) -> Result<u64, Failure> {
        let msg = parse(buf)?;
        let acc = parse_fields_of(&msg)?;
        let wire = msg.to_bytes();
        Ok(acc.wrapping_add(wire.len() as u64))
    }
}

/// The libraries under test, in table order.
fn libs() -> Vec<Lib> {
    vec![
        Lib {
            name: "vpbx",
            parse: with_vpbx::parse_only,
            parse_fields: with_vpbx::parse_fields,
            fields: with_vpbx::fields,
        },
        Lib {
            name: "rsip",
            parse: with_rsip::parse_only,
            parse_fields: with_rsip::parse_fields,
            fields: with_rsip::fields,
        },
        Lib {
            name: "rsipstack",
            parse: with_rsipstack::parse_only,
            parse_fields: with_rsipstack::parse_fields,
            fields: with_rsipstack::fields,
        },
    ]
}

/// Joins a header section and a body into a datagram, adding a correct
/// Content-Length.
fn message(head: &str, body: &str) -> Bytes {
    let mut s = String::with_capacity(head.len() + body.len() + 32);
    for line in head.lines() {
        s.push_str(line.trim_start());
        s.push_str("\r\n");
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.push_str(body);
    Bytes::from(s)
}

/// SDP text with CRLF line ends.
fn sdp(lines: &str) -> String {
    lines
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect()
}

/// A carrier-originated INVITE through one proxy, with an SDP offer.
fn invite() -> Bytes {
    message(
        "INVITE sip:+4930123456789@pbx.example.com;user=phone SIP/2.0
        Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-524287-1-7f3a9c;rport
        Via: SIP/2.0/UDP 192.0.2.10:5060;received=192.0.2.10;branch=z9hG4bK776asdhds
        Record-Route: <sip:198.51.100.7;lr;ftag=1928301774>
        Max-Forwards: 69
        From: \"Alice Example\" <sip:+4940987654321@carrier.example.net;user=phone>;tag=1928301774
        To: <sip:+4930123456789@pbx.example.com;user=phone>
        Call-ID: a84b4c76e66710-3fa1@pc33.carrier.example.net
        CSeq: 314159 INVITE
        Contact: <sip:+4940987654321@192.0.2.10:5060;transport=udp>
        Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE
        Supported: 100rel, timer
        Content-Type: application/sdp",
        &sdp("v=0
            o=- 3724394400 3724394405 IN IP4 192.0.2.10
            s=-
            c=IN IP4 192.0.2.10
            t=0 0
            m=audio 49170 RTP/AVP 8 0 101
            a=rtpmap:8 PCMA/8000
            a=rtpmap:0 PCMU/8000
            a=rtpmap:101 telephone-event/8000
            a=fmtp:101 0-16
            a=ptime:20
            a=sendrecv"),
    )
}

/// The PBX's 200 OK to that INVITE, with an SDP answer.
fn ok200() -> Bytes {
    message(
        "SIP/2.0 200 OK
        Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-524287-1-7f3a9c;rport=5060
        Via: SIP/2.0/UDP 192.0.2.10:5060;received=192.0.2.10;branch=z9hG4bK776asdhds
        Record-Route: <sip:198.51.100.7;lr;ftag=1928301774>
        From: \"Alice Example\" <sip:+4940987654321@carrier.example.net;user=phone>;tag=1928301774
        To: <sip:+4930123456789@pbx.example.com;user=phone>;tag=a6c85cf
        Call-ID: a84b4c76e66710-3fa1@pc33.carrier.example.net
        CSeq: 314159 INVITE
        Contact: <sip:+4930123456789@203.0.113.20:5060>
        Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE
        Supported: timer
        Session-Expires: 1800;refresher=uac
        Server: vpbx
        Content-Type: application/sdp",
        &sdp("v=0
            o=- 81726354 81726354 IN IP4 203.0.113.20
            s=-
            c=IN IP4 203.0.113.20
            t=0 0
            m=audio 30000 RTP/AVP 8 101
            a=rtpmap:8 PCMA/8000
            a=rtpmap:101 telephone-event/8000
            a=fmtp:101 0-16
            a=ptime:20
            a=sendrecv"),
    )
}

/// A phone's REGISTER with digest credentials.
fn register() -> Bytes {
    message(
        "REGISTER sip:pbx.example.com SIP/2.0
        Via: SIP/2.0/UDP 10.0.0.23:5060;branch=z9hG4bKnashds7;rport
        Max-Forwards: 70
        From: \"Desk 204\" <sip:204@pbx.example.com>;tag=456248
        To: \"Desk 204\" <sip:204@pbx.example.com>
        Call-ID: 843817637684230@998sdasdh09
        CSeq: 1826 REGISTER
        Contact: <sip:204@10.0.0.23:5060;transport=udp>;expires=3600;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>\"
        Authorization: Digest username=\"204\", realm=\"pbx.example.com\", nonce=\"ea9c8e88df84f1cec4341ae6cbe5a359\", uri=\"sip:pbx.example.com\", response=\"dfe56131d1958046689d83306477ecc\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"0a4f113b\"
        Expires: 3600
        User-Agent: DeskPhone/7.1",
        "",
    )
}

/// The RFC 4475 messages whose verdict is `valid`, by file name.
fn torture_valid() -> Vec<(String, Bytes)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc4475");
    let expected = std::fs::read_to_string(dir.join("EXPECTED.tsv"))
        .expect("tests/fixtures/rfc4475/EXPECTED.tsv is readable");
    expected
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split('\t');
            let file = cols.next()?;
            let verdict = cols.nth(1)?;
            (verdict == "valid").then(|| file.to_owned())
        })
        .map(|file| {
            let bytes = std::fs::read(dir.join(&file)).expect("torture fixture is readable");
            (file, Bytes::from(bytes))
        })
        .collect()
}

fn config() -> Criterion<ThreadCpuTime> {
    Criterion::default()
        .with_measurement(ThreadCpuTime)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let libs = libs();
    let singles = [
        ("invite", invite()),
        ("ok200_sdp", ok200()),
        ("register", register()),
    ];
    let torture = torture_valid();

    eprintln!("message sizes:");
    for (name, m) in &singles {
        eprintln!("  {name}: {} bytes", m.len());
    }
    for (name, m) in &singles {
        for lib in &libs {
            if let Err(e) = (lib.parse_fields)(m) {
                panic!("{} fails on the {name} benchmark message: {e:?}", lib.name);
            }
        }
    }

    // Which torture messages each library accepts (parse) and can read the
    // benchmarked fields of (parse_fields).
    eprintln!("RFC 4475 valid messages: {}", torture.len());
    let mut accepted_parse: Vec<Vec<Bytes>> = Vec::new();
    let mut accepted_fields: Vec<Vec<Bytes>> = Vec::new();
    for lib in &libs {
        let mut parse_ok = Vec::new();
        let mut fields_ok = Vec::new();
        let mut rejected = Vec::new();
        let mut no_fields = Vec::new();
        for (file, m) in &torture {
            match (lib.parse)(m) {
                Ok(()) => parse_ok.push(m.clone()),
                Err(_) => rejected.push(file.as_str()),
            }
            match (lib.parse_fields)(m) {
                Ok(_) => fields_ok.push(m.clone()),
                Err(Failure::Fields) => no_fields.push(file.as_str()),
                Err(Failure::Parse) => {}
            }
        }
        eprintln!(
            "  {}: parse rejects {} {:?}; parses but fields fail on {} {:?}; parse+fields ok on {}",
            lib.name,
            rejected.len(),
            rejected,
            no_fields.len(),
            no_fields,
            fields_ok.len()
        );
        accepted_parse.push(parse_ok);
        accepted_fields.push(fields_ok);
    }

    // Do the baselines read the same values as vpbx (libs[0])? Printed, not
    // asserted: the point is to know what the figures compare.
    let named = singles
        .iter()
        .map(|(n, m)| ((*n).to_owned(), m.clone()))
        .chain(torture.iter().cloned());
    let reference: Vec<(String, Bytes, Option<Fields>)> = named
        .map(|(n, m)| {
            let f = (libs[0].fields)(&m);
            (n, m, f)
        })
        .collect();
    for lib in &libs[1..] {
        let mut diffs = Vec::new();
        for (name, m, expected) in &reference {
            if let (Some(expected), Some(got)) = (expected, (lib.fields)(m)) {
                let d = got.differences(expected);
                if !d.is_empty() {
                    diffs.push(format!("{name} ({})", d.join(", ")));
                }
            }
        }
        eprintln!(
            "  {} reads other values than {} on {} messages (theirs vs ours): {}",
            lib.name,
            libs[0].name,
            diffs.len(),
            diffs.join(", ")
        );
    }

    // The torture messages every library handles, for a like-for-like figure.
    let common: Vec<Bytes> = torture
        .iter()
        .filter(|(_, m)| libs.iter().all(|lib| (lib.parse_fields)(m).is_ok()))
        .map(|(_, m)| m.clone())
        .collect();
    eprintln!("  accepted by all: {}", common.len());

    let mut group = c.benchmark_group("parse");
    for (name, m) in &singles {
        group.throughput(Throughput::Elements(1));
        for lib in &libs {
            group.bench_with_input(BenchmarkId::new(lib.name, name), m, |b, m| {
                b.iter(|| (lib.parse)(black_box(m)))
            });
        }
    }
    let parse_sets = accepted_parse
        .iter()
        .zip(&libs)
        .map(|(msgs, lib)| (lib, "rfc4475_valid", msgs))
        .chain(libs.iter().map(|lib| (lib, "rfc4475_common", &common)));
    for (lib, set, msgs) in parse_sets {
        group.throughput(Throughput::Elements(msgs.len() as u64));
        group.bench_with_input(BenchmarkId::new(lib.name, set), msgs, |b, msgs| {
            b.iter(|| {
                for m in msgs {
                    let _ = black_box((lib.parse)(black_box(m)));
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("parse_fields");
    for (name, m) in &singles {
        group.throughput(Throughput::Elements(1));
        for lib in &libs {
            group.bench_with_input(BenchmarkId::new(lib.name, name), m, |b, m| {
                b.iter(|| (lib.parse_fields)(black_box(m)))
            });
        }
    }
    let field_sets = accepted_fields
        .iter()
        .zip(&libs)
        .map(|(msgs, lib)| (lib, "rfc4475_valid", msgs))
        .chain(libs.iter().map(|lib| (lib, "rfc4475_common", &common)));
    for (lib, set, msgs) in field_sets {
        group.throughput(Throughput::Elements(msgs.len() as u64));
        group.bench_with_input(BenchmarkId::new(lib.name, set), msgs, |b, msgs| {
            b.iter(|| {
                let mut acc = 0u64;
                for m in msgs {
                    acc = acc.wrapping_add((lib.parse_fields)(black_box(m)).unwrap_or(0));
                }
                acc
            })
        });
    }
    group.finish();

    // Writer: serialise the parsed INVITE.
    let invite = &singles[0].1;
    let mut group = c.benchmark_group("write");
    group.throughput(Throughput::Elements(1));
    if let Some(msg) = with_vpbx::parsed(invite) {
        let mut out = bytes::BytesMut::with_capacity(2048);
        group.bench_function(BenchmarkId::new("vpbx", "invite"), |b| {
            b.iter(|| with_vpbx::write(black_box(&msg), &mut out))
        });
    }
    if let Some(msg) = with_vpbx::parsed(invite) {
        group.bench_function(BenchmarkId::new("vpbx_to_bytes", "invite"), |b| {
            b.iter(|| with_vpbx::to_bytes(black_box(&msg)))
        });
    }
    if let Some(msg) = with_rsip::parsed(invite) {
        group.bench_function(BenchmarkId::new("rsip", "invite"), |b| {
            b.iter(|| with_rsip::write(black_box(&msg)))
        });
    }
    if let Some(msg) = with_rsipstack::parsed(invite) {
        group.bench_function(BenchmarkId::new("rsipstack", "invite"), |b| {
            b.iter(|| with_rsipstack::write(black_box(&msg)))
        });
    }
    group.finish();

    // The daemon's per-message path (vpbx only): parse, read the fields,
    // write a message out with `to_bytes`.
    let mut group = c.benchmark_group("daemon");
    group.throughput(Throughput::Elements(1));
    for (name, m) in &singles {
        group.bench_with_input(BenchmarkId::new("vpbx", name), m, |b, m| {
            b.iter(|| with_vpbx::daemon(black_box(m)))
        });
    }
    // Answering the INVITE: build a 180 from it and write it.
    if let Some(msg) = with_vpbx::parsed(invite) {
        group.bench_function(BenchmarkId::new("vpbx_respond_180", "invite"), |b| {
            b.iter(|| with_vpbx::respond(black_box(&msg)))
        });
        group.bench_function(BenchmarkId::new("vpbx_relay_200", "invite"), |b| {
            b.iter(|| with_vpbx::relay_200(black_box(&msg)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
