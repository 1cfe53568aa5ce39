//! B2BUA shell benchmark: the CPU one whole call costs in the B2BUA and
//! the layers it drives, without the network receive path.
//!
//! One call as `support/call_rig.rs` runs it: the caller's INVITE through
//! the transaction layer to `B2bua::handle`, the outbound INVITE, the
//! callee's 180 and 200 (SDP) relayed, ACK, BYE and its 200, the CDR
//! (see that file). Parsing what the recording transport got, to build
//! the next message, is counted too (a few µs of the total).
//!
//! Everything runs on a current-thread runtime, so the B2BUA's tasks
//! (client events, timers), the transaction layer's and the CDR writer's
//! all run on the bench thread, whose CPU time (`CLOCK_THREAD_CPUTIME_ID`)
//! is what `b2bua/call` reports per call.
//!
//! Run: `cargo bench --bench b2bua`. For a fixed instruction count
//! (callgrind, stable on a shared machine), set `VPBX_BENCH_CALLS=N`: the
//! bench then runs N calls after 200 warm-up calls and exits, e.g.
//! `VPBX_BENCH_CALLS=2000 valgrind --tool=callgrind target/release/deps/b2bua-*`.

// The inputs are constant fixtures: a failure is a bug in the bench.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::Criterion;

#[path = "support/call_rig.rs"]
mod call_rig;
use call_rig::Rig;

fn thread_cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let mut rig = rt.block_on(Rig::new());
    c.bench_function("b2bua/call", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu_now();
            rt.block_on(async {
                for _ in 0..iters {
                    rig.call().await;
                }
            });
            thread_cpu_now().saturating_sub(start)
        })
    });
}

fn main() {
    // As the load runs start the daemon (`--log-level warn`): per-call
    // spans and debug events are disabled callsites, as in production.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::sink)
        .init();
    if let Some(calls) = std::env::var("VPBX_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        // Wall time here: rustix's vDSO clock does not run under valgrind.
        let rt = runtime();
        let mut rig = rt.block_on(Rig::new());
        let start = std::time::Instant::now();
        rt.block_on(async {
            for _ in 0..200 {
                rig.call().await;
            }
        });
        let warm = std::time::Instant::now();
        rt.block_on(async {
            for _ in 0..calls {
                rig.call().await;
            }
        });
        let end = std::time::Instant::now();
        println!(
            "{calls} calls after 200 warm-up: {:?} wall time per call (warm-up {:?} per call)",
            (end - warm) / u32::try_from(calls.max(1)).unwrap_or(u32::MAX),
            (warm - start) / 200,
        );
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
