//! The `vpbx` binary: parse the command line, load the config, run.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use vpbx::app::{self, RunOptions};
use vpbx::config::{self, Config, ConfigErrors};
use vpbx::transport::WakeupCoalescing;

mod cli;

/// mimalloc: the daemon allocates and frees small buffers for every SIP
/// message; glibc malloc's bins and consolidation showed up at 9-19 % of the
/// load profile (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_level.as_deref()) {
        eprintln!("vpbx: {e:#}");
        return ExitCode::FAILURE;
    }
    match cli.command {
        Command::Check { config } => check(config.as_deref()),
        Command::Run { config, listen } => match run(config, listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vpbx: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`).
///
/// mimalloc asks for huge pages on its arenas (`MADV_HUGEPAGE`), so every
/// first touch of 2 MiB of heap faulted in a whole zeroed huge page
/// (synchronously compacted under the usual `defrag = madvise`), and its
/// purges of 64 KiB ranges split them again. The daemon's heap is many
/// small objects with lifetimes of seconds, which gains little from large
/// TLB entries: at 3,000 calls/s page faults took 9.8 % of the daemon's
/// samples with huge pages and 3.0 % without (docs/performance.md). Best
/// effort: a kernel without the flag keeps its default.
fn disable_transparent_huge_pages() {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %e, "cannot turn transparent huge pages off");
    }
}

fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => {
            EnvFilter::try_new(level).with_context(|| format!("bad --log-level {level:?}"))?
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

fn load(dir: Option<&std::path::Path>) -> Result<Config, ConfigErrors> {
    match dir {
        Some(dir) => config::load(dir),
        None => config::embedded(),
    }
}

/// `vpbx check`: every error on its own line, exit status 1 if any.
fn check(dir: Option<&std::path::Path>) -> ExitCode {
    match load(dir) {
        Ok(config) => {
            let externals: usize = config.pbxs.iter().map(|p| p.externals.len()).sum();
            let listen: Vec<String> = config
                .daemon
                .listen
                .iter()
                .map(ToString::to_string)
                .collect();
            println!(
                "config OK: {} PBX(s), {} number(s), {} external PBX(s); listen {}",
                config.pbxs.len(),
                config.number_count(),
                externals,
                listen.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors.errors() {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.errors().len());
            ExitCode::FAILURE
        }
    }
}

fn run(dir: Option<std::path::PathBuf>, listen: Vec<config::ListenAddr>) -> anyhow::Result<()> {
    disable_transparent_huge_pages();
    let config = match load(dir.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            for e in errors.errors() {
                tracing::error!(error = %e, "invalid config");
            }
            anyhow::bail!("invalid config: {} error(s)", errors.errors().len());
        }
    };
    // One thread: a message is received, matched, routed and relayed with
    // no hand-off between threads (see `worker_threads`).
    let mut builder = if config.daemon.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(config.daemon.worker_threads));
        b
    };
    // Under dense traffic the thread sleeps once per interval instead of
    // once per burst of arrivals (`wakeup_coalescing`).
    let coalescing = WakeupCoalescing::new(config.daemon.wakeup_coalescing);
    if let Some(c) = &coalescing {
        c.install(&mut builder);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(app::run(
        config,
        RunOptions {
            listen_overrides: listen,
            config_dir: dir,
            coalescing,
        },
    ))
}
