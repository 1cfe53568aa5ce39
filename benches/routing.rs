//! Routing table benchmarks (SPEC §9: 1,000,000 numbers load in < 1 s,
//! look up in < 1 µs).
//!
//! Run: `cargo bench --bench routing`. The groups:
//! - `routing/build_1m`: `RoutingTable::from_config` over 1,000,000 numbers.
//! - `routing/lookup_hit_1m`, `routing/lookup_miss_1m`: one lookup in that table.
//! - `routing/parse_number`: normalizing a written number.
//! - `config/load_*`: parsing and validating a PBX file of 10,000 numbers
//!   (the size of the load-test routes) as `[[number]]` tables and as one
//!   `[[number_block]]` (what scripts/routes-from-csv writes), and of
//!   1,000,000 numbers in a block, alone and with the table build.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use vpbx::config::{self, Config, NumberConfig, PbxConfig, Protocol, Source};
use vpbx::routing::{ExternalPbx, Number, OnFailure, RoutingTable, Target};

const MILLION: u64 = 1_000_000;

/// Spreads `i` over Moscow numbers so keys are not consecutive integers.
fn number(i: u64) -> Number {
    let digits = 74_950_000_000 + (i.wrapping_mul(2_654_435_761) % 10_000_000);
    Number::parse(&digits.to_string()).unwrap_or_else(|e| panic!("{digits}: {e}"))
}

fn big_config(n: u64) -> Config {
    let external = Arc::new(ExternalPbx {
        pbx: "bench".into(),
        id: "uas".into(),
        uri: match vpbx::sip::Uri::parse("sip:127.0.0.1:5080") {
            Ok(vpbx::sip::Uri::Sip(u)) => u,
            other => panic!("{other:?}"),
        },
        transport: Protocol::Udp,
        credentials: None,
        dial_timeout: Duration::from_secs(30),
        numbers: Vec::new(),
    });
    // 2654435761 is odd and coprime with 10^7, so the first 10^7 are distinct.
    let numbers = (0..n)
        .map(|i| NumberConfig {
            number: number(i),
            forward: Target::External(external.clone()),
            on_failure: OnFailure::Hangup,
            enabled: true,
            comment: None,
        })
        .collect();
    Config {
        daemon: Default::default(),
        pbxs: vec![PbxConfig {
            id: "bench".into(),
            name: None,
            numbers,
            externals: vec![external],
            file: PathBuf::from("bench.toml"),
        }],
    }
}

fn routing(c: &mut Criterion) {
    let config = big_config(MILLION);
    let mut group = c.benchmark_group("routing");
    group.sample_size(10);
    group.bench_function("build_1m", |b| {
        b.iter(|| RoutingTable::from_config(black_box(&config)).map(|t| t.len()))
    });
    group.finish();

    let table = match RoutingTable::from_config(&config) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    let keys: Vec<Number> = (0..MILLION).step_by(7).map(number).collect();
    let misses: Vec<Number> = (0..10_000u64)
        .map(|i| Number::parse(&format!("+4420{:07}", i)).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let mut group = c.benchmark_group("routing");
    let mut i = 0;
    group.bench_function("lookup_hit_1m", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(table.lookup(black_box(&keys[i])).is_some())
        })
    });
    let mut j = 0;
    group.bench_function("lookup_miss_1m", |b| {
        b.iter(|| {
            j = (j + 1) % misses.len();
            black_box(table.lookup(black_box(&misses[j])).is_some())
        })
    });
    group.bench_function("parse_number", |b| {
        b.iter(|| Number::parse(black_box("8 (495) 123-45-67")))
    });
    group.finish();
}

/// A PBX file with one `[[number]]` table per number.
fn pbx_toml_tables(n: u64) -> String {
    let mut text = String::from(
        "id = \"bench\"\n\n[[external]]\nid = \"uas\"\nuri = \"sip:127.0.0.1:5080\"\n",
    );
    for i in 0..n {
        let digits = number(i).to_string();
        text.push_str(&format!(
            "\n[[number]]\nnumber = \"{}\"\nforward = \"external:uas\"\n",
            &digits[1..]
        ));
    }
    text
}

/// A PBX file like scripts/routes-from-csv writes: one `[[number_block]]`.
fn pbx_toml_block(n: u64) -> String {
    let mut text = String::from(
        "id = \"bench\"\n\n[[external]]\nid = \"uas\"\nuri = \"sip:127.0.0.1:5080\"\n\n\
         [[number_block]]\nforward = \"external:uas\"\nnumbers = \"\"\"\n",
    );
    for i in 0..n {
        let digits = number(i).to_string();
        text.push_str(&digits[1..]);
        text.push('\n');
    }
    text.push_str("\"\"\"\n");
    text
}

fn load_text(text: &str) -> Config {
    config::load_sources(
        None,
        vec![Source {
            name: "pbx/bench.toml".into(),
            text: text.to_owned(),
        }],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn load(c: &mut Criterion) {
    let tables = pbx_toml_tables(10_000);
    let block_10k = pbx_toml_block(10_000);
    let block_1m = pbx_toml_block(MILLION);
    let mut group = c.benchmark_group("config");
    group.sample_size(10);
    group.bench_function("load_10k_number_tables", |b| {
        b.iter(|| load_text(&tables).number_count())
    });
    group.bench_function("load_10k_number_block", |b| {
        b.iter(|| load_text(&block_10k).number_count())
    });
    group.bench_function("load_1m_number_block", |b| {
        b.iter(|| load_text(&block_1m).number_count())
    });
    group.bench_function("load_and_build_1m_number_block", |b| {
        b.iter(|| RoutingTable::from_config(&load_text(&block_1m)).map(|t| t.len()))
    });
    group.finish();
}

criterion_group!(benches, routing, load);
criterion_main!(benches);
