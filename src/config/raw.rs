//! The files as written: serde shapes with spans on every value that
//! validation may reject, so each error points at its line. Leaves that can
//! be wrong in many places at once (numbers, durations, targets, URIs) are
//! read as strings and checked in `validate`, which reports all of them;
//! serde itself reports only the first structural problem of a file
//! (syntax, unknown key, wrong type).
//!
//! The meaning of each key is documented on the typed config in `mod.rs`
//! and in docs/config.md.

use serde::Deserialize;
use toml::Spanned;

/// `vpbx.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    /// See [`super::DaemonConfig::listen`].
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    /// See [`super::DaemonConfig::domain`].
    pub domain: Option<Spanned<String>>,
    /// See [`super::DaemonConfig::advertised_address`].
    pub advertised_address: Option<Spanned<String>>,
    /// See [`super::DaemonConfig::worker_threads`].
    pub worker_threads: Option<Spanned<i64>>,
    /// See [`super::DaemonConfig::wakeup_coalescing`].
    pub wakeup_coalescing: RawDuration,
    /// `[timers]`.
    #[serde(default)]
    pub timers: RawTimers,
    /// `[limits]`.
    #[serde(default)]
    pub limits: RawLimits,
    /// `[cdr]`.
    #[serde(default)]
    pub cdr: RawCdr,
    /// `[shutdown]`.
    #[serde(default)]
    pub shutdown: RawShutdown,
    /// `[reload]`.
    #[serde(default)]
    pub reload: RawReload,
}

/// A duration as written (`"500ms"`), parsed in validation.
pub(super) type RawDuration = Option<Spanned<String>>;

/// `[timers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimers {
    /// RFC 3261 T1.
    pub t1: RawDuration,
    /// RFC 3261 T2.
    pub t2: RawDuration,
    /// RFC 3261 T4.
    pub t4: RawDuration,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    /// See [`super::Limits::max_calls`].
    pub max_calls: Option<Spanned<i64>>,
    /// See [`super::Limits::max_cps`].
    pub max_cps: Option<Spanned<i64>>,
    /// See [`super::Limits::max_call_duration`].
    pub max_call_duration: RawDuration,
    /// See [`super::Limits::max_message_size`].
    pub max_message_size: Option<Spanned<i64>>,
    /// See [`super::Limits::max_tcp_connections`].
    pub max_tcp_connections: Option<Spanned<i64>>,
    /// See [`super::Limits::tcp_idle_timeout`].
    pub tcp_idle_timeout: RawDuration,
    /// See [`super::Limits::tcp_connect_timeout`].
    pub tcp_connect_timeout: RawDuration,
    /// See [`super::Limits::udp_receive_buffer`].
    pub udp_receive_buffer: Option<Spanned<i64>>,
    /// See [`super::Limits::expected_cps`].
    pub expected_cps: Option<Spanned<i64>>,
}

/// `[cdr]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCdr {
    /// See [`super::CdrConfig::path`].
    pub path: Option<String>,
    /// See [`super::CdrConfig::flush_interval`].
    pub flush_interval: RawDuration,
}

/// `[shutdown]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShutdown {
    /// See [`super::ShutdownConfig::drain_time`].
    pub drain_time: RawDuration,
}

/// `[reload]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReload {
    /// See [`super::ReloadConfig::debounce`].
    pub debounce: RawDuration,
}

/// `pbx/<id>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPbx {
    /// See [`super::PbxConfig::id`].
    pub id: Spanned<String>,
    /// See [`super::PbxConfig::name`].
    pub name: Option<String>,
    /// `[[number]]` tables.
    #[serde(default)]
    pub number: Vec<RawNumber>,
    /// `[[external]]` tables.
    #[serde(default)]
    pub external: Vec<RawExternal>,
    /// `[[number_block]]` tables.
    #[serde(default)]
    pub number_block: Vec<RawNumberBlock>,
}

/// One `[[number_block]]`: many numbers sharing one route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNumberBlock {
    /// One number per line; `#` starts a comment.
    pub numbers: Spanned<String>,
    /// See [`super::NumberConfig::forward`].
    pub forward: Spanned<String>,
    /// See [`super::NumberConfig::on_failure`].
    pub on_failure: Option<Spanned<toml::Value>>,
    /// See [`super::NumberConfig::enabled`].
    pub enabled: Option<bool>,
    /// See [`super::NumberConfig::comment`].
    pub comment: Option<String>,
}

/// One `[[number]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNumber {
    /// See [`super::NumberConfig::number`].
    pub number: Spanned<String>,
    /// See [`super::NumberConfig::forward`].
    pub forward: Spanned<String>,
    /// See [`super::NumberConfig::on_failure`]: a string or `{ prompt = "…" }`.
    pub on_failure: Option<Spanned<toml::Value>>,
    /// See [`super::NumberConfig::enabled`].
    pub enabled: Option<bool>,
    /// See [`super::NumberConfig::comment`].
    pub comment: Option<String>,
}

/// One `[[external]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExternal {
    /// See [`crate::routing::ExternalPbx::id`].
    pub id: Spanned<String>,
    /// See [`crate::routing::ExternalPbx::uri`].
    pub uri: Spanned<String>,
    /// See [`crate::routing::ExternalPbx::transport`].
    pub transport: Option<Spanned<String>>,
    /// Digest username.
    pub username: Option<Spanned<String>>,
    /// Digest password.
    pub password: Option<Spanned<String>>,
    /// See [`crate::routing::ExternalPbx::dial_timeout`].
    pub dial_timeout: RawDuration,
    /// See [`crate::routing::ExternalPbx::numbers`].
    pub numbers: Option<Vec<Spanned<String>>>,
}
