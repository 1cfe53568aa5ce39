//! Command line: `vpbx run` and `vpbx check`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::ListenAddr;

/// vpbx: SIP B2BUA and call-routing daemon for a hosted virtual PBX.
#[derive(Debug, Parser)]
#[command(name = "vpbx", version, about)]
pub struct Cli {
    /// Log filter (e.g. `info`, `debug`, `vpbx::config=debug`); overrides
    /// RUST_LOG. Default: RUST_LOG, else `info`.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// Config directory (vpbx.toml + pbx/*.toml); default: the embedded
        /// demo config. Watched for changes (and reloaded on SIGHUP).
        #[arg(long, value_name = "DIR")]
        config: Option<PathBuf>,
        /// Listen address `udp:ADDR:PORT` or `tcp:ADDR:PORT`; repeat for
        /// several. Replaces the config's `listen` list.
        #[arg(long, value_name = "PROTO:ADDR:PORT")]
        listen: Vec<ListenAddr>,
    },
    /// Validate the config and print every error as `file:line:col: message`.
    Check {
        /// Config directory; default: the embedded demo config.
        #[arg(long, value_name = "DIR")]
        config: Option<PathBuf>,
    },
}
