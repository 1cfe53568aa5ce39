//! Transaction layer benchmarks: what one call's transactions cost.
//!
//! Run: `cargo bench --bench transaction`. The groups:
//! - `transaction/invite_server_sans_io`: an INVITE server transaction
//!   stepped by hand (create, 180, 200, Timer L): the state machine alone,
//!   encoding of the responses included.
//! - `transaction/layer_uas_invite`: an INVITE through the tokio shell with a
//!   transport that discards (synchronously, as UDP sends that do not
//!   wait): `on_message`, the TU receives it, answers 180
//!   and 200 (tables, timer heap and channels included; parsing not).
//! - `transaction/layer_uac_options`: a non-INVITE client transaction
//!   through the shell: `send_request`, its 200 through `on_message`, the
//!   TU receives it.
//!
//! `TXN_BENCH_ITERS=N` runs the two layer scenarios N times each without
//! criterion (for callgrind; see `fixed_run`).
//!
//! The layer groups run on a current-thread runtime, so all their work
//! (timer task included) is on the bench thread. Every group reports that
//! thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, through `iter_custom`): the
//! machine the figures come from is shared, and wall time would count time
//! spent descheduled. Inputs are built before the clock starts.

// The inputs are constant fixtures: a failure is a bug in the bench.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, Criterion};
use vpbx::sip::{parse_datagram, HeaderName, Limits, Message, Request, Response, StatusCode};
use vpbx::transaction::{
    Incoming, InviteServer, LayerConfig, SendFuture, TimerConfig, TransactionLayer, TransportSink,
    TrySend,
};
use vpbx::transport::{Destination, Protocol, Source};

const INVITE: &str = "INVITE sip:+74951234567@vpbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Caller\" <sip:+74957654321@carrier.example.net>;tag=1928301774\r\n\
To: <sip:+74951234567@vpbx.example.com>\r\n\
Call-ID: a84b4c76e66710@192.0.2.10\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+74957654321@192.0.2.10:5060>\r\n\
Content-Length: 0\r\n\r\n";

const OPTIONS: &str = "OPTIONS sip:peer@192.0.2.20 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKopt\r\n\
Max-Forwards: 70\r\n\
From: <sip:vpbx@192.0.2.1>;tag=77\r\n\
To: <sip:peer@192.0.2.20>\r\n\
Call-ID: opt-1@192.0.2.1\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n";

fn request(text: &str) -> Request {
    match parse_datagram(Bytes::copy_from_slice(text.as_bytes()), &Limits::default()) {
        Ok(Message::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn response(req: &Request, code: u16) -> Response {
    let mut r = Response::for_request(req, StatusCode::new(code).unwrap());
    r.set_to_tag("bench");
    r
}

/// A request with a branch of its own (a new transaction each time).
fn with_branch(base: &Request, n: u64, host: &str) -> Request {
    let mut r = base.clone();
    r.headers.set(
        HeaderName::Via,
        format!("SIP/2.0/UDP {host}:5060;branch=z9hG4bK{n:x};rport"),
    );
    r
}

fn thread_cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// A transport that drops everything.
struct Discard;

impl TransportSink for Discard {
    fn send_request(&self, data: Bytes, _dest: Destination) -> SendFuture<'_> {
        black_box(data);
        Box::pin(async { Ok(()) })
    }

    fn send_response(&self, data: Bytes, _source: Source, _dest: Destination) -> SendFuture<'_> {
        black_box(data);
        Box::pin(async { Ok(()) })
    }

    fn try_send_request(&self, data: Bytes, _dest: Destination) -> TrySend {
        black_box(data);
        TrySend::Done(Ok(()))
    }

    fn try_send_response(&self, data: Bytes, _source: Source, _dest: Destination) -> TrySend {
        black_box(data);
        TrySend::Done(Ok(()))
    }
}

fn source() -> Source {
    let peer: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    Source {
        protocol: Protocol::Udp,
        peer,
        local: "192.0.2.1:5060".parse().unwrap(),
        conn: None,
    }
}

fn bench(c: &mut Criterion) {
    let invite = request(INVITE);
    let ringing = response(&invite, 180);
    let ok = response(&invite, 200);
    let timers = TimerConfig::default();
    c.bench_function("transaction/invite_server_sans_io", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu_now();
            for _ in 0..iters {
                let (mut tx, a) = InviteServer::new(&invite, false, &timers);
                black_box(a);
                black_box(tx.on_tu_response(ringing.clone()).ok());
                black_box(tx.on_tu_response(ok.clone()).ok());
                black_box(tx.on_timer(vpbx::transaction::Timer::L));
            }
            thread_cpu_now().saturating_sub(start)
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (layer, mut rx) =
        rt.block_on(async { TransactionLayer::new(Arc::new(Discard), LayerConfig::default()) });
    let counter = AtomicU64::new(0);
    c.bench_function("transaction/layer_uas_invite", |b| {
        b.iter_custom(|iters| {
            let invites = uas_inputs(&invite, &counter, iters);
            let start = thread_cpu_now();
            rt.block_on(uas_invite(&layer, &mut rx, invites));
            thread_cpu_now().saturating_sub(start)
        })
    });

    let options = request(OPTIONS);
    c.bench_function("transaction/layer_uac_options", |b| {
        b.iter_custom(|iters| {
            let pairs = uac_inputs(&options, &counter, iters);
            let start = thread_cpu_now();
            rt.block_on(uac_options(&layer, pairs));
            thread_cpu_now().saturating_sub(start)
        })
    });
}

fn uas_inputs(invite: &Request, counter: &AtomicU64, iters: u64) -> Vec<Request> {
    (0..iters)
        .map(|_| {
            with_branch(
                invite,
                counter.fetch_add(1, Ordering::Relaxed),
                "192.0.2.10",
            )
        })
        .collect()
}

fn uac_inputs(options: &Request, counter: &AtomicU64, iters: u64) -> Vec<(Request, Response)> {
    (0..iters)
        .map(|_| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let req = with_branch(options, n, "192.0.2.1");
            let ok = response(&req, 200);
            (req, ok)
        })
        .collect()
}

/// One `layer_uas_invite` iteration per INVITE. Not inlined, so that
/// `valgrind --tool=callgrind --toggle-collect='*uas_invite*'` counts it
/// alone.
#[inline(never)]
async fn uas_invite(
    layer: &TransactionLayer,
    rx: &mut tokio::sync::mpsc::Receiver<Incoming>,
    invites: Vec<Request>,
) {
    for inv in invites {
        layer.on_message(inv.into(), source()).await.unwrap();
        let Some(Incoming::Request(sr)) = rx.recv().await else {
            panic!("no request");
        };
        sr.tx.respond(response(&sr.request, 180)).await.unwrap();
        sr.tx.respond(response(&sr.request, 200)).await.unwrap();
    }
}

/// One `layer_uac_options` iteration per pair (see `uas_invite`).
#[inline(never)]
async fn uac_options(layer: &TransactionLayer, pairs: Vec<(Request, Response)>) {
    let dest = Destination::udp("192.0.2.20:5060".parse().unwrap());
    for (req, ok) in pairs {
        let mut tx = layer.send_request(req, dest).await.unwrap();
        layer.on_message(ok.into(), source()).await.unwrap();
        black_box(tx.recv().await);
    }
}

/// `TXN_BENCH_ITERS=N`: run one layer scenario (`TXN_BENCH_ONLY=uas` or
/// `uac`, default `uas`) N times without criterion and exit, for a fixed
/// amount of work under callgrind, which then counts the scenario alone:
///
/// ```text
/// TXN_BENCH_ITERS=20000 TXN_BENCH_ONLY=uas valgrind --tool=callgrind \
///     --toggle-collect='*Runtime::block_on*' target/release/deps/transaction-<hash>
/// ```
///
/// (callgrind cannot run `thread_cpu_now`: rustix's vDSO lookup faults
/// under valgrind; the time printed is wall time.)
fn fixed_run(iters: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Outside `block_on`, so that callgrind's toggle leaves it out.
    let _guard = rt.enter();
    let (layer, mut rx) = TransactionLayer::new(Arc::new(Discard), LayerConfig::default());
    let counter = AtomicU64::new(0);
    if std::env::var("TXN_BENCH_ONLY").is_ok_and(|v| v == "uac") {
        let pairs = uac_inputs(&request(OPTIONS), &counter, iters);
        let start = std::time::Instant::now();
        rt.block_on(uac_options(&layer, pairs));
        report("layer_uac_options", iters, start.elapsed());
    } else {
        let invites = uas_inputs(&request(INVITE), &counter, iters);
        let start = std::time::Instant::now();
        rt.block_on(uas_invite(&layer, &mut rx, invites));
        report("layer_uas_invite", iters, start.elapsed());
    }
}

fn report(name: &str, iters: u64, wall: Duration) {
    let per = wall / u32::try_from(iters).unwrap();
    println!("{name}: {iters} iterations, {per:?} (wall) per iteration");
}

criterion_group!(benches, bench);

fn main() {
    if let Some(iters) = std::env::var("TXN_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        fixed_run(iters);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
