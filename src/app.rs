//! Wires the daemon together and owns its lifetime (shutdown, reload).
//!
//! Placeholder until the transport/app work lands: it logs the config and
//! waits for ctrl-c.

use std::path::PathBuf;

use crate::config::{Config, ListenAddr};

/// Options of `vpbx run` that are not in the config files.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--listen` values; when non-empty they replace the config's `listen`.
    pub listen_overrides: Vec<ListenAddr>,
    /// `--config` directory, watched for reload; `None` for the embedded config.
    pub config_dir: Option<PathBuf>,
}

/// Runs the daemon until ctrl-c.
pub async fn run(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    let listen = if opts.listen_overrides.is_empty() {
        config.daemon.listen.clone()
    } else {
        opts.listen_overrides.clone()
    };
    for addr in &listen {
        tracing::info!(%addr, "listen");
    }
    tracing::info!(
        pbxs = config.pbxs.len(),
        numbers = config.number_count(),
        "vpbx started; ctrl-c to stop"
    );
    tokio::signal::ctrl_c().await?;
    tracing::info!("stopping");
    Ok(())
}
