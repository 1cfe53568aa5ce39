//! Configuration: the daemon file `vpbx.toml` and one file per PBX in
//! `pbx/<id>.toml` (SPEC §8), loaded into a validated [`Config`].
//!
//! [`load`] is a pure function of the directory's contents: it returns a
//! complete config or *every* error found, each with file, line and column.
//! [`embedded`] loads the default config compiled into the binary.
//! [`watch`] reloads on file changes and SIGHUP, keeping the old config when
//! the new one is bad. This module owns no running state: applying a new
//! config (swapping [`crate::routing::Routes`]) is the caller's job.
//!
//! Every key, its default and meaning is listed in docs/config.md; defaults
//! live in the `Default` impls below and nowhere else.

mod error;
mod raw;
mod uri;
mod validate;
pub mod watch;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::transport::{AddrParseError, ListenAddr, Protocol};
pub use error::{ConfigError, ConfigErrorKind, ConfigErrors, Location, Position};
pub use uri::UriError;
pub use watch::{watch, WatchHandle};

use crate::routing::{ExternalPbx, Number, OnFailure, PbxId, Target};
use error::{path_error, SourceFile};

/// The whole configuration: daemon settings and every PBX.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `vpbx.toml`.
    pub daemon: DaemonConfig,
    /// `pbx/*.toml`, in file-name order.
    pub pbxs: Vec<PbxConfig>,
}

impl Config {
    /// Total numbers over all PBXs.
    pub fn number_count(&self) -> usize {
        self.pbxs.iter().map(|p| p.numbers.len()).sum()
    }
}

/// Daemon settings (`vpbx.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Sockets to listen on, `"udp:ADDR:PORT"` / `"tcp:ADDR:PORT"`.
    /// Default: `udp:127.0.0.1:5060` and `tcp:127.0.0.1:5060`.
    pub listen: Vec<ListenAddr>,
    /// SIP domain this daemon serves, for requests it originates itself
    /// (registrations; not used yet). Default: none.
    pub domain: Option<String>,
    /// Host (IP or name) put in Via and Contact of outgoing messages; needed
    /// when listening on a wildcard or behind NAT. Default: the address of
    /// the socket the message leaves on.
    pub advertised_address: Option<String>,
    /// Threads that run the SIP work. 1 (the default) runs everything on
    /// one thread: no hand-off between threads for a message, the least CPU
    /// per call; one core serves well over 10,000 calls/s
    /// (docs/performance.md). More threads spread the work over cores at a
    /// higher CPU cost per call. 1–64.
    pub worker_threads: u16,
    /// Under dense traffic a runtime thread sleeps at most once per this
    /// long instead of once per burst of arrivals, so a message waits at
    /// most this long before it is read
    /// ([`crate::transport::WakeupCoalescing`]). 0 turns it off. Default
    /// 1ms.
    pub wakeup_coalescing: Duration,
    /// RFC 3261 transaction timers.
    pub timers: Timers,
    /// Capacity limits.
    pub limits: Limits,
    /// Call detail records.
    pub cdr: CdrConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Hot reload.
    pub reload: ReloadConfig,
}

/// RFC 3261 §17 timer base values (`[timers]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// T1, RTT estimate. Default 500ms.
    pub t1: Duration,
    /// T2, maximum retransmit interval for non-INVITE requests and INVITE
    /// responses. Default 4s.
    pub t2: Duration,
    /// T4, maximum time a message stays in the network. Default 5s.
    pub t4: Duration,
}

/// Capacity limits (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent calls; beyond it new INVITEs get 503. Default 100000.
    pub max_calls: u32,
    /// New calls per second; beyond it 503 with Retry-After. Default 5000.
    pub max_cps: u32,
    /// A call is ended (BYE both legs) after this long. Default 4h.
    pub max_call_duration: Duration,
    /// Largest SIP message accepted, in bytes. Default 65535.
    pub max_message_size: usize,
    /// Concurrent inbound TCP connections. Default 10000.
    pub max_tcp_connections: u32,
    /// A TCP connection with no traffic for this long is closed. Default 5min.
    pub tcp_idle_timeout: Duration,
    /// An outbound TCP connect not established within this long fails.
    /// Default 5s ([`crate::transport::CONNECT_TIMEOUT`]).
    pub tcp_connect_timeout: Duration,
    /// Kernel receive buffer of each UDP socket, in bytes. Default 4 MiB
    /// ([`crate::transport::UDP_RECEIVE_BUFFER`]: a full queue drains well
    /// within T1, so overload drops datagrams instead of piling up
    /// retransmissions).
    pub udp_receive_buffer: usize,
    /// The call rate the transaction tables and timer queue are sized for
    /// at start, calls per second (0: they start empty and grow). Default
    /// 0. See [`crate::transaction::Reserve::for_rate`].
    pub expected_cps: u32,
}

/// Call detail records (`[cdr]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrConfig {
    /// JSONL file CDRs are appended to; a relative path is relative to the
    /// daemon's working directory. Default `vpbx-cdr.jsonl`.
    pub path: PathBuf,
    /// Buffered records are written out at least this often. Default 1s.
    pub flush_interval: Duration,
}

/// Graceful shutdown (`[shutdown]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// On SIGTERM/SIGINT, how long the stop may take: calls in progress
    /// are waited for, then (in the last fifth, at most 1s) the ones left
    /// are hung up; any still left then are only recorded. The CDR flush
    /// follows. Default 30s.
    pub drain_time: Duration,
}

/// Hot reload (`[reload]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Quiet time after the last file change before reloading. Default 500ms.
    pub debounce: Duration,
}

/// Default SIP port (RFC 3261 §19.1.2).
const SIP_PORT: u16 = 5060;

impl Default for DaemonConfig {
    fn default() -> Self {
        let local = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, SIP_PORT));
        DaemonConfig {
            listen: vec![
                ListenAddr {
                    protocol: Protocol::Udp,
                    addr: local,
                },
                ListenAddr {
                    protocol: Protocol::Tcp,
                    addr: local,
                },
            ],
            domain: None,
            advertised_address: None,
            worker_threads: 1,
            wakeup_coalescing: Duration::from_millis(1),
            timers: Timers::default(),
            limits: Limits::default(),
            cdr: CdrConfig::default(),
            shutdown: ShutdownConfig::default(),
            reload: ReloadConfig::default(),
        }
    }
}

impl Default for Timers {
    fn default() -> Self {
        // RFC 3261 §17.1.1.1 recommended values.
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_calls: 100_000,
            max_cps: 5_000,
            max_call_duration: Duration::from_secs(4 * 3600),
            max_message_size: 65_535,
            max_tcp_connections: 10_000,
            tcp_idle_timeout: Duration::from_secs(300),
            tcp_connect_timeout: crate::transport::CONNECT_TIMEOUT,
            udp_receive_buffer: crate::transport::UDP_RECEIVE_BUFFER,
            expected_cps: 0,
        }
    }
}

impl Default for CdrConfig {
    fn default() -> Self {
        CdrConfig {
            path: PathBuf::from("vpbx-cdr.jsonl"),
            flush_interval: Duration::from_secs(1),
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_time: Duration::from_secs(30),
        }
    }
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            debounce: Duration::from_millis(500),
        }
    }
}

/// Default dial timeout of an external PBX (SPEC §1: 60 s like the anchor service).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(60);

/// One virtual PBX (`pbx/<id>.toml`).
#[derive(Debug, Clone)]
pub struct PbxConfig {
    /// Its id; equals the file name without `.toml`.
    pub id: PbxId,
    /// Display name. Default: none.
    pub name: Option<String>,
    /// Its numbers (`[[number]]`).
    pub numbers: Vec<NumberConfig>,
    /// Its external PBXs (`[[external]]`).
    pub externals: Vec<Arc<ExternalPbx>>,
    /// The file it was loaded from, as shown in messages.
    pub file: PathBuf,
}

/// One number of a PBX (`[[number]]`).
#[derive(Debug, Clone)]
pub struct NumberConfig {
    /// The number, normalized to E.164.
    pub number: Number,
    /// Where its calls go (`forward = "external:<id>"`).
    pub forward: Target,
    /// What to do when that fails. Default `hangup`.
    pub on_failure: OnFailure,
    /// A disabled number is answered 480. Default true.
    pub enabled: bool,
    /// Free-text comment. Default: none.
    pub comment: Option<Arc<str>>,
}

/// One config file's text and the name to show in messages.
#[derive(Debug, Clone)]
pub struct Source {
    /// Name used in error messages.
    pub name: PathBuf,
    /// The TOML text.
    pub text: String,
}

/// Loads and validates `dir/vpbx.toml` and `dir/pbx/*.toml`.
///
/// Files in `pbx/` whose name starts with `.` (editor temporaries) or does
/// not end in `.toml` are ignored. A missing `pbx/` directory means no PBXs.
pub fn load(dir: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let daemon_path = dir.join("vpbx.toml");
    let daemon = match std::fs::read_to_string(&daemon_path) {
        Ok(text) => Some(Source {
            name: daemon_path,
            text,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            errors.push(path_error(&daemon_path, ConfigErrorKind::MissingDaemonFile));
            None
        }
        Err(e) => {
            errors.push(path_error(&daemon_path, ConfigErrorKind::Io(e)));
            None
        }
    };
    let pbx_dir = dir.join("pbx");
    let mut pbx_files = Vec::new();
    match std::fs::read_dir(&pbx_dir) {
        Ok(entries) => {
            for entry in entries {
                match entry {
                    Ok(entry) => {
                        let path = entry.path();
                        let name = entry.file_name();
                        let name = name.to_string_lossy();
                        if !name.starts_with('.') && name.ends_with(".toml") && path.is_file() {
                            pbx_files.push(path);
                        }
                    }
                    Err(e) => errors.push(path_error(&pbx_dir, ConfigErrorKind::Io(e))),
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(path_error(&pbx_dir, ConfigErrorKind::Io(e))),
    }
    pbx_files.sort();
    let mut pbxs = Vec::with_capacity(pbx_files.len());
    for path in pbx_files {
        match std::fs::read_to_string(&path) {
            Ok(text) => pbxs.push(Source { name: path, text }),
            Err(e) => errors.push(path_error(&path, ConfigErrorKind::Io(e))),
        }
    }
    let result = load_sources(daemon, pbxs);
    match (result, errors.is_empty()) {
        (Ok(config), true) => Ok(config),
        (Ok(_), false) => Err(ConfigErrors(errors)),
        (Err(ConfigErrors(more)), _) => {
            errors.extend(more);
            Err(ConfigErrors(errors))
        }
    }
}

/// Validates config text already in memory. `daemon: None` means an
/// all-defaults `vpbx.toml`. Each PBX source's name must end in `<id>.toml`.
pub fn load_sources(daemon: Option<Source>, pbxs: Vec<Source>) -> Result<Config, ConfigErrors> {
    let daemon = daemon.map(|s| SourceFile::new(s.name, s.text));
    let pbxs = pbxs
        .into_iter()
        .map(|s| SourceFile::new(s.name, s.text))
        .collect::<Vec<_>>();
    validate::validate(daemon.as_ref(), &pbxs)
}

/// Name prefix of the embedded files in messages.
const EMBEDDED_PREFIX: &str = "<embedded>";

/// The default config compiled into the binary: `config/vpbx.toml` and
/// `config/pbx/*.toml` of the source tree.
pub const EMBEDDED_DAEMON: &str = include_str!("../../config/vpbx.toml");
/// The embedded PBX files, as (file name, text).
pub const EMBEDDED_PBXS: &[(&str, &str)] =
    &[("demo.toml", include_str!("../../config/pbx/demo.toml"))];

/// Loads the embedded default config (what `vpbx run` uses without `--config`).
pub fn embedded() -> Result<Config, ConfigErrors> {
    let base = Path::new(EMBEDDED_PREFIX);
    load_sources(
        Some(Source {
            name: base.join("vpbx.toml"),
            text: EMBEDDED_DAEMON.to_owned(),
        }),
        EMBEDDED_PBXS
            .iter()
            .map(|(name, text)| Source {
                name: base.join("pbx").join(name),
                text: (*text).to_owned(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
