//! Heap allocations of one whole B2BUA call, counted with dhat's global
//! allocator (its own test binary, so no other test pays for it): the
//! call of `benches/support/call_rig.rs` (INVITE, 180 and 200 relayed,
//! ACK, BYE from the caller, CDR) through the transaction layer, the
//! B2BUA and the CDR writer. The rig's own work is counted too (it parses
//! what the recording transport got and formats the next message), so
//! the bound is on the whole, measured when it was set (see
//! docs/performance.md, "Allocations per call"): a change that adds
//! allocations on a call's path fails here and has to say why.

// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "../benches/support/call_rig.rs"]
mod call_rig;

use call_rig::Rig;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Calls before counting: the tables, channels and per-thread lists have
/// grown to their working size by then.
const WARM_UP: u64 = 200;
/// Calls counted.
const CALLS: u64 = 500;

/// Allocations per call at most (measured: see the module doc). 102.1
/// before the transaction layer boxed what it hands the TU
/// (`transaction::Incoming`: the INVITE, the BYE and the ACK, 3 boxes per
/// call) to save the 392-byte copies of the item on its way through the
/// TU's async calls; 105.1 then, 106.1 since the call state (1.6 kB) is
/// boxed where it is made instead of copied into its table entry's
/// wrappers (docs/performance.md, "Session 5: B2BUA allocations and
/// instructions").
const MAX_PER_CALL: u64 = 107;

// One test function: dhat allows one profiler at a time.
#[test]
fn one_call_allocates_at_most_the_pinned_count() {
    // VPBX_DHAT_FILE=path: also write dhat's per-site profile there (view
    // it with dhat's viewer, or group its frames), for finding who allocates.
    let _profiler = match std::env::var_os("VPBX_DHAT_FILE") {
        Some(path) => dhat::Profiler::builder().file_name(path).build(),
        None => dhat::Profiler::builder().testing().build(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rig = rt.block_on(Rig::new());
    rt.block_on(async {
        for _ in 0..WARM_UP {
            rig.call().await;
        }
    });
    let before = dhat::HeapStats::get().total_blocks;
    rt.block_on(async {
        for _ in 0..CALLS {
            rig.call().await;
        }
    });
    let per_call = (dhat::HeapStats::get().total_blocks - before) as f64 / CALLS as f64;
    println!("allocations per call: {per_call:.1}");
    assert!(
        per_call <= MAX_PER_CALL as f64,
        "{per_call:.1} allocations per call, more than the {MAX_PER_CALL} pinned"
    );
}
