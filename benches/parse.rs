//! Parser benchmark: vpbx's own SIP parser against two baselines, `rsip` 0.4
//! and `rsipstack` 0.7, on the same messages in the same run.
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
//! Run with `cargo bench --bench parse`; figures are recorded in
//! `docs/performance.md`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

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

/// One parser under test: parse alone, and parse plus typed field access.
struct Lib {
    name: &'static str,
    parse: fn(&Bytes) -> Result<(), Failure>,
    parse_fields: fn(&Bytes) -> Result<u64, Failure>,
}

mod with_rsip {
    //! `rsip` 0.4: nom tokenizers; headers are kept as untyped `String`
    //! newtypes and parsed into typed headers on request with `.typed()`,
    //! the crate's public path (its tokenizers are `#[doc(hidden)]`).
    use super::{fold_num, fold_str, Failure};
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
}

mod with_rsipstack {
    //! `rsipstack` 0.7: its own hand-written parser (`sip::parser`, memchr
    //! line splitting, no longer rsip's). Headers are kept as untyped
    //! `String` newtypes; typed headers are parsed from the value with the
    //! public `typed::X::parse(&str)`, which skips the clone `.typed()` makes.
    use super::{fold_num, fold_str, Failure};
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
}

/// The libraries under test, in table order.
fn libs() -> Vec<Lib> {
    vec![
        Lib {
            name: "rsip",
            parse: with_rsip::parse_only,
            parse_fields: with_rsip::parse_fields,
        },
        Lib {
            name: "rsipstack",
            parse: with_rsipstack::parse_only,
            parse_fields: with_rsipstack::parse_fields,
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

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

fn bench(c: &mut Criterion) {
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

    let mut group = c.benchmark_group("parse");
    for (name, m) in &singles {
        group.throughput(Throughput::Elements(1));
        for lib in &libs {
            group.bench_with_input(BenchmarkId::new(lib.name, name), m, |b, m| {
                b.iter(|| (lib.parse)(black_box(m)))
            });
        }
    }
    for (lib, msgs) in libs.iter().zip(&accepted_parse) {
        group.throughput(Throughput::Elements(msgs.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(lib.name, "rfc4475_valid"),
            msgs,
            |b, msgs| {
                b.iter(|| {
                    for m in msgs {
                        let _ = black_box((lib.parse)(black_box(m)));
                    }
                })
            },
        );
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
    for (lib, msgs) in libs.iter().zip(&accepted_fields) {
        group.throughput(Throughput::Elements(msgs.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(lib.name, "rfc4475_valid"),
            msgs,
            |b, msgs| {
                b.iter(|| {
                    let mut acc = 0u64;
                    for m in msgs {
                        acc = acc.wrapping_add((lib.parse_fields)(black_box(m)).unwrap_or(0));
                    }
                    acc
                })
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
