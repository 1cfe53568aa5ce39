//! Command line: `vpbx run` and `vpbx check`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::ListenAddr;

/// `vpbx --version`: the package version, plus ", profile-guided build" when
/// the binary was compiled with a training profile, and ", BOLT-optimized"
/// when its layout was then rewritten by BOLT from a second training.
/// scripts/build-pgo sets `VPBX_PGO` (any value) for its `-Cprofile-use` build
/// only, and `VPBX_BOLT` too for the build that BOLT rewrites (the script
/// removes that binary if BOLT fails), so a plain `cargo build` never claims
/// either; recorded benchmark results and the image check (scripts/docker-check)
/// read this line to tell the builds apart.
pub const VERSION: &str = version_text(option_env!("VPBX_PGO"), option_env!("VPBX_BOLT"));

const fn version_text(pgo: Option<&str>, bolt: Option<&str>) -> &'static str {
    match (pgo, bolt) {
        (Some(_), Some(_)) => concat!(
            env!("CARGO_PKG_VERSION"),
            ", profile-guided build, BOLT-optimized"
        ),
        (Some(_), None) => concat!(env!("CARGO_PKG_VERSION"), ", profile-guided build"),
        // BOLT's stage needs the profile-guided build: VPBX_BOLT alone is
        // not a build scripts/build-pgo makes.
        (None, _) => env!("CARGO_PKG_VERSION"),
    }
}

/// vpbx: SIP B2BUA and call-routing daemon for a hosted virtual PBX.
#[derive(Debug, Parser)]
#[command(name = "vpbx", version = VERSION, about)]
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn version_says_profile_guided_only_for_a_pgo_build() {
        assert_eq!(version_text(None, None), env!("CARGO_PKG_VERSION"));
        let pgo = version_text(Some("1"), None);
        assert!(pgo.starts_with(env!("CARGO_PKG_VERSION")), "{pgo}");
        assert!(pgo.ends_with(", profile-guided build"), "{pgo}");
    }

    #[test]
    fn version_says_bolt_optimized_only_on_top_of_pgo() {
        let bolt = version_text(Some("1"), Some("1"));
        assert_eq!(
            bolt,
            concat!(
                env!("CARGO_PKG_VERSION"),
                ", profile-guided build, BOLT-optimized"
            )
        );
        assert_eq!(version_text(None, Some("1")), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn dash_dash_version_prints_the_build_kind() {
        let printed = Cli::command().render_version();
        assert_eq!(printed, format!("vpbx {VERSION}\n"));
        // Test builds are plain unless the builder exported VPBX_PGO.
        assert_eq!(
            printed.contains("profile-guided"),
            option_env!("VPBX_PGO").is_some()
        );
        assert_eq!(
            printed.contains("BOLT-optimized"),
            option_env!("VPBX_PGO").is_some() && option_env!("VPBX_BOLT").is_some()
        );
    }
}
