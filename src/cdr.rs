//! Call detail records (SPEC §2.5): one JSON object per line (JSONL), written
//! when a call ends.
//!
//! This module owns the record type ([`CdrRecord`]), the fixed list of finish
//! reasons ([`FinishReason`]) and the writer task ([`CdrWriter`]) that appends
//! records to the CDR file. It does not decide *which* reason a call ended
//! with; the B2BUA does, and hands a finished record to a [`CdrSink`].
//!
//! # Durability and backpressure
//! Losing a CDR is not acceptable (it is what customers are billed from), so
//! the queue between call tasks and the writer is bounded but large, and
//! [`CdrSink::write`] *waits* for room instead of dropping the record. Waiting
//! happens in the finished call's own task, after the caller already got its
//! final response, so a slow disk delays only the clean-up of ended calls, not
//! signalling. Records are buffered in memory and flushed when the queue has
//! been idle for [`WriterOptions::idle_flush`] or at the latest
//! [`WriterOptions::max_flush_delay`] after the first unflushed record.
//! [`CdrWriter::shutdown`] drains the queue, flushes and fsyncs, and returns
//! only once the data is on disk.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Why a call ended: the fixed list of SPEC §2.5, written in snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The call was answered (by the target, or by an IVR node that connects).
    Answered,
    /// The caller hung up (CANCEL) before the call was answered.
    CallerHangup,
    /// No target answered within the dial timeout.
    NoAnswer,
    /// The target was busy (486 / 600).
    Busy,
    /// The target was unreachable: offline, 408 / 480 / 503, transport error.
    Unavailable,
    /// The dialed number is not in the routing table (404).
    NotFound,
    /// The target refused the call with another 4xx/5xx/6xx final response,
    /// or the number is disabled.
    Rejected,
    /// The call ended in voicemail.
    Voicemail,
    /// A voice prompt was played and the call hung up (`on_failure = prompt`).
    PromptPlayed,
    /// A call scenario passed more transitions than allowed.
    MaxTransitionCountExceeded,
    /// vpbx refused the call because of its own limits (503, Retry-After).
    Overload,
    /// An internal error ended the call.
    Error,
}

impl FinishReason {
    /// Every reason, in the order of SPEC §2.5.
    pub const ALL: [FinishReason; 12] = [
        FinishReason::Answered,
        FinishReason::CallerHangup,
        FinishReason::NoAnswer,
        FinishReason::Busy,
        FinishReason::Unavailable,
        FinishReason::NotFound,
        FinishReason::Rejected,
        FinishReason::Voicemail,
        FinishReason::PromptPlayed,
        FinishReason::MaxTransitionCountExceeded,
        FinishReason::Overload,
        FinishReason::Error,
    ];

    /// The name written in the CDR (and used as a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Answered => "answered",
            FinishReason::CallerHangup => "caller_hangup",
            FinishReason::NoAnswer => "no_answer",
            FinishReason::Busy => "busy",
            FinishReason::Unavailable => "unavailable",
            FinishReason::NotFound => "not_found",
            FinishReason::Rejected => "rejected",
            FinishReason::Voicemail => "voicemail",
            FinishReason::PromptPlayed => "prompt_played",
            FinishReason::MaxTransitionCountExceeded => "max_transition_count_exceeded",
            FinishReason::Overload => "overload",
            FinishReason::Error => "error",
        }
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One target the call was offered to, and how that attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetAttempt {
    /// The target as written in the routing config, e.g. `external:office`.
    pub target: String,
    /// Final SIP status the target answered with; `None` when it sent no
    /// final response (transport error, no answer before the dial timeout
    /// when even the CANCEL got no 487, caller hung up first).
    pub status: Option<u16>,
}

/// Start, answer and end of a call, as wall-clock times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimes {
    /// When the INVITE arrived.
    pub start: SystemTime,
    /// When the call was answered (2xx relayed to the caller), if it was.
    pub answer: Option<SystemTime>,
    /// When the call ended (final non-2xx sent, or BYE completed).
    pub end: SystemTime,
}

/// One call detail record: a line of the CDR file.
///
/// Times are RFC 3339 UTC with milliseconds (`2026-11-27T06:24:26.123Z`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdrRecord {
    /// Call-ID of the caller's (inbound) leg.
    pub call_id: String,
    /// When the INVITE arrived.
    #[serde(with = "rfc3339_ms")]
    pub start: SystemTime,
    /// When the call was answered; absent when it never was.
    #[serde(
        with = "rfc3339_ms_opt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub answer: Option<SystemTime>,
    /// When the call ended.
    #[serde(with = "rfc3339_ms")]
    pub end: SystemTime,
    /// Calling party: the URI of the caller's `From`.
    pub caller: String,
    /// Dialed number: normalized E.164 when it parsed, else as received.
    pub dialed: String,
    /// PBX (tenant) that owns the number; absent when no route matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pbx: Option<String>,
    /// Targets tried, in order.
    pub targets: Vec<TargetAttempt>,
    /// Final status sent to the caller (200 when answered).
    pub status: u16,
    /// Whole call, `start` to `end`, in milliseconds.
    pub duration_ms: u64,
    /// Talk time, `answer` to `end`, in milliseconds (0 when not answered).
    pub talk_ms: u64,
    /// Why the call ended.
    pub reason: FinishReason,
}

impl CdrRecord {
    /// A record with the given identity, times, final status and reason; the
    /// durations are computed from `times`. Fill `caller`, `dialed`, `pbx` and
    /// `targets` afterwards (they start empty).
    pub fn new(
        call_id: impl Into<String>,
        times: CallTimes,
        status: u16,
        reason: FinishReason,
    ) -> Self {
        let (duration_ms, talk_ms) = times.durations_ms();
        CdrRecord {
            call_id: call_id.into(),
            start: times.start,
            answer: times.answer,
            end: times.end,
            caller: String::new(),
            dialed: String::new(),
            pbx: None,
            targets: Vec::new(),
            status,
            duration_ms,
            talk_ms,
            reason,
        }
    }

    /// The record as one JSON line, newline included.
    ///
    /// Written by hand (the same bytes as `serde_json` with the derived
    /// `Serialize`, which the tests check): it runs once per call, and the
    /// generic path costs several times more.
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_json_line(&mut out);
        out
    }

    /// [`CdrRecord::to_json_line`] appended to `out` (a buffer reused from
    /// record to record).
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        let targets = self
            .targets
            .iter()
            .map(|t| ([t.target.as_str(), ""], t.status));
        let fields = LineFields {
            call_id: &self.call_id,
            start: self.start,
            answer: self.answer,
            end: self.end,
            caller: &self.caller,
            dialed: &self.dialed,
            pbx: self.pbx.as_deref(),
            status: self.status,
            duration_ms: self.duration_ms,
            talk_ms: self.talk_ms,
            reason: self.reason,
        };
        fields.write(targets, out);
    }
}

impl CallTimes {
    /// The whole call (`start` to `end`) and the talk time (`answer` to
    /// `end`, 0 when not answered), in milliseconds; 0 for an end before
    /// its start.
    fn durations_ms(&self) -> (u64, u64) {
        let ms = |from: SystemTime| {
            self.end
                .duration_since(from)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        (ms(self.start), self.answer.map_or(0, ms))
    }
}

/// One target of a [`CdrLine`]: its text is `kind` then `id` (e.g.
/// `external:` and `office`), written without being put together first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTarget<'a> {
    /// First part of the target's text, e.g. `external:`.
    pub kind: &'a str,
    /// Rest of the target's text, e.g. the external PBX's id.
    pub id: &'a str,
    /// As [`TargetAttempt::status`].
    pub status: Option<u16>,
}

/// A call's CDR line from borrowed pieces: the same line as a
/// [`CdrRecord`] with these values (whose `targets` is the one target, if
/// any, and whose durations come from `times`), without the record's owned
/// strings, so a finished call formats its line from what it keeps.
#[derive(Debug, Clone, Copy)]
pub struct CdrLine<'a> {
    /// As [`CdrRecord::call_id`].
    pub call_id: &'a str,
    /// Start, answer and end.
    pub times: CallTimes,
    /// As [`CdrRecord::caller`].
    pub caller: &'a str,
    /// As [`CdrRecord::dialed`].
    pub dialed: &'a str,
    /// As [`CdrRecord::pbx`].
    pub pbx: Option<&'a str>,
    /// The target tried, if any.
    pub target: Option<LineTarget<'a>>,
    /// As [`CdrRecord::status`].
    pub status: u16,
    /// As [`CdrRecord::reason`].
    pub reason: FinishReason,
}

impl CdrLine<'_> {
    /// The JSON line, newline included, appended to `out`: byte for byte
    /// what [`CdrRecord::write_json_line`] writes for the same values.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        let (duration_ms, talk_ms) = self.times.durations_ms();
        let fields = LineFields {
            call_id: self.call_id,
            start: self.times.start,
            answer: self.times.answer,
            end: self.times.end,
            caller: self.caller,
            dialed: self.dialed,
            pbx: self.pbx,
            status: self.status,
            duration_ms,
            talk_ms,
            reason: self.reason,
        };
        let targets = self.target.map(|t| ([t.kind, t.id], t.status));
        fields.write(targets.into_iter(), out);
    }

    /// [`CdrLine::write_json_line`] into a new buffer of about its size.
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_json_line(&mut out);
        out
    }
}

/// What a line holds but its targets, borrowed.
struct LineFields<'a> {
    call_id: &'a str,
    start: SystemTime,
    answer: Option<SystemTime>,
    end: SystemTime,
    caller: &'a str,
    dialed: &'a str,
    pbx: Option<&'a str>,
    status: u16,
    duration_ms: u64,
    talk_ms: u64,
    reason: FinishReason,
}

impl LineFields<'_> {
    /// Writes the line (as `serde_json` writes a [`CdrRecord`]) with
    /// `targets`: each one's text in two pieces, and its status.
    fn write<'t>(
        &self,
        targets: impl Iterator<Item = ([&'t str; 2], Option<u16>)> + Clone,
        out: &mut Vec<u8>,
    ) {
        let strings = self.call_id.len()
            + self.caller.len()
            + self.dialed.len()
            + self.pbx.map_or(0, str::len)
            + targets
                .clone()
                .map(|([a, b], _)| a.len() + b.len() + 24)
                .sum::<usize>();
        out.reserve(256 + strings);
        out.extend_from_slice(b"{\"call_id\":");
        json::string(out, self.call_id);
        out.extend_from_slice(b",\"start\":");
        // The times of a line often fall in one second: its text is
        // written once.
        let mut second = None;
        json::time_in(out, self.start, &mut second);
        if let Some(answer) = self.answer {
            out.extend_from_slice(b",\"answer\":");
            json::time_in(out, answer, &mut second);
        }
        out.extend_from_slice(b",\"end\":");
        json::time_in(out, self.end, &mut second);
        out.extend_from_slice(b",\"caller\":");
        json::string(out, self.caller);
        out.extend_from_slice(b",\"dialed\":");
        json::string(out, self.dialed);
        if let Some(pbx) = self.pbx {
            out.extend_from_slice(b",\"pbx\":");
            json::string(out, pbx);
        }
        out.extend_from_slice(b",\"targets\":[");
        for (i, (text, status)) in targets.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"target\":");
            json::string_of(out, &text);
            out.extend_from_slice(b",\"status\":");
            match status {
                Some(status) => json::number(out, u64::from(status)),
                None => out.extend_from_slice(b"null"),
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"status\":");
        json::number(out, u64::from(self.status));
        out.extend_from_slice(b",\"duration_ms\":");
        json::number(out, self.duration_ms);
        out.extend_from_slice(b",\"talk_ms\":");
        json::number(out, self.talk_ms);
        out.extend_from_slice(b",\"reason\":\"");
        out.extend_from_slice(self.reason.as_str().as_bytes());
        out.extend_from_slice(b"\"}\n");
    }
}

/// The pieces of [`CdrRecord::to_json_line`], written as `serde_json`
/// writes them.
mod json {
    use std::time::{SystemTime, UNIX_EPOCH};

    const HEX: &[u8; 16] = b"0123456789abcdef";

    /// A JSON string: `"` and `\\` escaped, control characters as `\\n`,
    /// `\\t`, … or `\\u00XX`; everything else (UTF-8 included) as is.
    pub(super) fn string(out: &mut Vec<u8>, s: &str) {
        string_of(out, &[s]);
    }

    /// [`string`] of the pieces written one after the other.
    pub(super) fn string_of(out: &mut Vec<u8>, pieces: &[&str]) {
        out.push(b'"');
        for s in pieces {
            escaped(out, s);
        }
        out.push(b'"');
    }

    /// The inside of [`string`].
    fn escaped(out: &mut Vec<u8>, s: &str) {
        let bytes = s.as_bytes();
        // Most strings need no escape: one pass without branches (the
        // compiler vectorizes it), then one copy.
        let plain = bytes
            .iter()
            .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
        if plain {
            out.extend_from_slice(bytes);
            return;
        }
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                0x00..=0x1f => b"",
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..i]);
            if escape.is_empty() {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            } else {
                out.extend_from_slice(escape);
            }
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
    }

    /// An unsigned integer in decimal.
    pub(super) fn number(out: &mut Vec<u8>, n: u64) {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// `n % 100` as two digits into `out[at..at + 2]`.
    fn two(out: &mut [u8], at: usize, n: u64) {
        out[at] = b'0' + (n / 10 % 10) as u8;
        out[at + 1] = b'0' + (n % 10) as u8;
    }

    /// A second since the epoch and its text up to the milliseconds
    /// (`"YYYY-MM-DDTHH:MM:SS.`, then `000Z"` to be overwritten).
    pub(super) type Second = Option<(u64, [u8; 26])>;

    /// A time as a JSON string, RFC 3339 UTC with milliseconds (truncated),
    /// as `humantime::format_rfc3339_millis` writes it. A clock set before
    /// 1970 or after 9999 (which humantime cannot write: it panics or
    /// fails) is clamped to those years, so the record is still written.
    /// The text of `second` is reused when `t` falls in it; else the
    /// second's text is written and kept there.
    pub(super) fn time_in(out: &mut Vec<u8>, t: SystemTime, second: &mut Second) {
        const LAST_MS: u64 = 253_402_300_799_999;
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let since = if since.as_secs() > LAST_MS / 1000 {
            std::time::Duration::from_millis(LAST_MS)
        } else {
            since
        };
        let secs = since.as_secs();
        let mut s = match second {
            Some((at, text)) if *at == secs => *text,
            _ => {
                let (year, month, day) = civil_from_days(secs / 86_400);
                let of_day = secs % 86_400;
                // Written in place, then copied once.
                let mut s = *b"\"0000-00-00T00:00:00.000Z\"";
                two(&mut s, 1, year / 100);
                two(&mut s, 3, year % 100);
                two(&mut s, 6, month);
                two(&mut s, 9, day);
                two(&mut s, 12, of_day / 3600);
                two(&mut s, 15, of_day / 60 % 60);
                two(&mut s, 18, of_day % 60);
                *second = Some((secs, s));
                s
            }
        };
        let ms = u64::from(since.subsec_millis());
        s[21] = b'0' + (ms / 100) as u8;
        two(&mut s, 22, ms % 100);
        out.extend_from_slice(&s);
    }

    /// Year, month (1-12) and day (1-31) of a day count since 1970-01-01
    /// (H. Hinnant's `civil_from_days`, for days from the epoch on).
    fn civil_from_days(days: u64) -> (u64, u64, u64) {
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        (year, month, day)
    }
}

/// RFC 3339 UTC timestamps with milliseconds for `SystemTime` fields.
mod rfc3339_ms {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(D::Error::custom)
    }
}

/// [`rfc3339_ms`] for optional fields.
mod rfc3339_ms_opt {
    use serde::{Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::rfc3339_ms::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        super::rfc3339_ms::deserialize(d).map(Some)
    }
}

/// Errors of the CDR writer.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    /// The CDR file (or its directory) could not be created or opened.
    #[error("cannot open CDR file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing, flushing or syncing the CDR file failed.
    #[error("cannot write CDR file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The writer has shut down; the record was not accepted.
    #[error("CDR writer is shut down")]
    Closed,
    /// [`CdrSink::try_write`] found the queue full; the record was not
    /// accepted.
    #[error("CDR queue is full")]
    Full,
    /// The writer task panicked or was aborted.
    #[error("CDR writer task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Tuning of the writer; [`Default`] is what the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Records that may wait in the queue before [`CdrSink::write`] waits.
    pub queue_capacity: usize,
    /// Flush once no record arrived for this long.
    pub idle_flush: Duration,
    /// Flush at the latest this long after the first unflushed record, even
    /// under steady load.
    pub max_flush_delay: Duration,
    /// Size of the in-memory write buffer, bytes.
    pub buffer_size: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            // ~300 bytes a record: at most ~20 MB queued, 10+ s of calls at 5,000 CPS.
            queue_capacity: 65_536,
            idle_flush: Duration::from_millis(100),
            max_flush_delay: Duration::from_secs(1),
            buffer_size: 64 * 1024,
        }
    }
}

impl WriterOptions {
    /// Options for the daemon's `[cdr]` section: a record reaches the file
    /// at the latest `flush_interval` after it was queued.
    pub fn from_config(cdr: &crate::config::CdrConfig) -> Self {
        WriterOptions {
            max_flush_delay: cdr.flush_interval,
            ..WriterOptions::default()
        }
    }
}

/// What the writer has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records handed to the file (written into the buffer).
    pub records: u64,
    /// Flushes of the buffer to the file.
    pub flushes: u64,
    /// Records that could not be written.
    pub errors: u64,
}

enum Command {
    Record(Box<CdrRecord>),
    /// A record's line, formatted by the sender ([`CdrLine`]).
    Line(Vec<u8>),
    Shutdown(oneshot::Sender<Result<WriterStats, CdrError>>),
}

/// Where finished calls send their record; cheap to clone, one per call task.
#[derive(Debug, Clone)]
pub struct CdrSink {
    tx: mpsc::Sender<Command>,
    /// Buffers of lines the writer is done with, for the next lines.
    spare: Arc<SpareLines>,
}

/// Line buffers handed back by the writer ([`CdrSink::line_buffer`]).
#[derive(Debug, Default)]
struct SpareLines(Mutex<Vec<Vec<u8>>>);

impl SpareLines {
    /// Buffers kept at most (a few hundred bytes each).
    const KEPT: usize = 256;
    /// A buffer that grew beyond this (a huge line) is not kept.
    const MAX_LINE: usize = 4096;

    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give(&self, mut line: Vec<u8>) {
        if line.capacity() > Self::MAX_LINE {
            return;
        }
        line.clear();
        let mut spare = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < Self::KEPT {
            spare.push(line);
        }
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Record(r) => f.debug_tuple("Record").field(&r.call_id).finish(),
            Command::Line(l) => f.debug_tuple("Line").field(&l.len()).finish(),
            Command::Shutdown(_) => f.write_str("Shutdown"),
        }
    }
}

impl CdrSink {
    /// Queue one record. Waits while the queue is full (never drops);
    /// fails only when the writer has shut down.
    pub async fn write(&self, record: CdrRecord) -> Result<(), CdrError> {
        self.tx
            .send(Command::Record(Box::new(record)))
            .await
            .map_err(|_| CdrError::Closed)
    }

    /// An empty buffer for a line to [`CdrSink::write_line`]: one whose
    /// line the writer has written, when there is one, so a steady stream
    /// of lines allocates none.
    pub fn line_buffer(&self) -> Vec<u8> {
        self.spare.take()
    }

    /// Queue one record already formatted as its JSON line (by
    /// [`CdrLine::write_json_line`]; one allocation, the line, instead of
    /// the record's strings and box). Waits while the queue is full, as
    /// [`CdrSink::write`].
    pub async fn write_line(&self, line: Vec<u8>) -> Result<(), CdrError> {
        self.tx
            .send(Command::Line(line))
            .await
            .map_err(|_| CdrError::Closed)
    }

    /// Queue one record without waiting, for callers that must not block
    /// (the receive path refusing requests under overload): fails with
    /// [`CdrError::Full`] when the queue is full.
    pub fn try_write(&self, record: CdrRecord) -> Result<(), CdrError> {
        self.tx
            .try_send(Command::Record(Box::new(record)))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CdrError::Full,
                mpsc::error::TrySendError::Closed(_) => CdrError::Closed,
            })
    }
}

/// The CDR writer task and its handle.
#[derive(Debug)]
pub struct CdrWriter {
    sink: CdrSink,
    task: JoinHandle<()>,
    path: PathBuf,
}

impl CdrWriter {
    /// Open (create, append) `path`, creating its directory, and start the
    /// writer task on the current tokio runtime.
    pub async fn spawn(
        path: impl AsRef<Path>,
        options: WriterOptions,
    ) -> Result<CdrWriter, CdrError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| CdrError::Open {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(open_err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(open_err)?;
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let spare = Arc::new(SpareLines::default());
        let task = Task {
            out: BufWriter::with_capacity(options.buffer_size, file),
            line: Vec::new(),
            spare: Arc::clone(&spare),
            path: path.clone(),
            options,
            stats: WriterStats::default(),
        };
        let task = tokio::spawn(task.run(rx));
        Ok(CdrWriter {
            sink: CdrSink { tx, spare },
            task,
            path,
        })
    }

    /// A sink to hand to call tasks.
    pub fn sink(&self) -> CdrSink {
        self.sink.clone()
    }

    /// The CDR file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop accepting records, write every record queued so far, flush and
    /// fsync. Returns once the data is on disk (or with the error that
    /// prevented it). Records sent by other sinks after this call fail with
    /// [`CdrError::Closed`].
    pub async fn shutdown(self) -> Result<WriterStats, CdrError> {
        let (reply, done) = oneshot::channel();
        let sent = self.sink.tx.send(Command::Shutdown(reply)).await;
        drop(self.sink);
        let result = match sent {
            Ok(()) => done.await.unwrap_or(Err(CdrError::Closed)),
            Err(_) => Err(CdrError::Closed),
        };
        match self.task.await {
            Ok(()) => result,
            Err(e) => Err(CdrError::Task(e)),
        }
    }
}

struct Task {
    out: BufWriter<File>,
    /// The JSON line of the record being written, reused.
    line: Vec<u8>,
    /// Where written lines' buffers go back to the sinks.
    spare: Arc<SpareLines>,
    path: PathBuf,
    options: WriterOptions,
    stats: WriterStats,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // Deadlines of the pending flush: `first` bounds the delay under steady
        // load, `idle` flushes soon after traffic stops.
        let mut first: Option<Instant> = None;
        let mut idle = Instant::now();
        // One timer for the flush, moved to each new deadline: a new
        // `sleep_until` per line registered a timer and removed it again
        // (~500 instructions a line); moving an armed timer later only
        // updates its deadline.
        let flush_timer = tokio::time::sleep_until(idle);
        tokio::pin!(flush_timer);
        let mut armed: Option<Instant> = None;
        loop {
            let deadline = first.map(|f| (f + self.options.max_flush_delay).min(idle));
            let cmd = match deadline {
                Some(at) => {
                    if armed != Some(at) {
                        flush_timer.as_mut().reset(at);
                        armed = Some(at);
                    }
                    tokio::select! {
                        cmd = rx.recv() => cmd,
                        () = flush_timer.as_mut() => {
                            self.flush().await;
                            first = None;
                            armed = None;
                            continue;
                        }
                    }
                }
                None => rx.recv().await,
            };
            match cmd {
                Some(cmd @ (Command::Record(_) | Command::Line(_))) => {
                    self.write(&cmd).await;
                    self.recycle(cmd);
                    let now = Instant::now();
                    first.get_or_insert(now);
                    idle = now + self.options.idle_flush;
                }
                Some(Command::Shutdown(reply)) => {
                    // Refuse new records, then write what is already queued.
                    rx.close();
                    while let Some(cmd) = rx.recv().await {
                        match cmd {
                            Command::Record(_) | Command::Line(_) => {
                                self.write(&cmd).await;
                                self.recycle(cmd);
                            }
                            Command::Shutdown(other) => {
                                let _ = other.send(Err(CdrError::Closed));
                            }
                        }
                    }
                    let _ = reply.send(self.sync().await);
                    return;
                }
                None => {
                    // Every sink is gone without a shutdown: still persist.
                    if let Err(e) = self.sync().await {
                        tracing::error!(error = %e, "CDR final sync failed");
                    }
                    return;
                }
            }
        }
    }

    /// Writes the line of a record or a line (other commands: nothing).
    async fn write(&mut self, cmd: &Command) {
        let line = match cmd {
            Command::Record(record) => {
                self.line.clear();
                record.write_json_line(&mut self.line);
                &self.line
            }
            Command::Line(line) => line,
            Command::Shutdown(_) => return,
        };
        match self.out.write_all(line).await {
            Ok(()) => self.stats.records += 1,
            Err(e) => {
                self.stats.errors += 1;
                // The line starts with the call's Call-ID.
                let start = String::from_utf8_lossy(&line[..line.len().min(120)]);
                tracing::error!(line = %start, path = %self.path.display(), error = %e,
                    "CDR write failed");
            }
        }
    }

    /// Hands a written line's buffer back to the sinks.
    fn recycle(&self, cmd: Command) {
        if let Command::Line(line) = cmd {
            self.spare.give(line);
        }
    }

    async fn flush(&mut self) {
        match self.out.flush().await {
            Ok(()) => self.stats.flushes += 1,
            Err(e) => tracing::error!(path = %self.path.display(), error = %e, "CDR flush failed"),
        }
    }

    async fn sync(&mut self) -> Result<WriterStats, CdrError> {
        let write_err = |source| CdrError::Write {
            path: self.path.clone(),
            source,
        };
        self.out.flush().await.map_err(write_err)?;
        self.stats.flushes += 1;
        self.out.get_ref().sync_all().await.map_err(write_err)?;
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms)
    }

    fn record(i: u64) -> CdrRecord {
        let times = CallTimes {
            start: at(1_795_760_000 + i, 0),
            answer: Some(at(1_795_760_001 + i, 250)),
            end: at(1_795_760_031 + i, 5),
        };
        let mut r = CdrRecord::new(format!("call-{i}"), times, 200, FinishReason::Answered);
        r.caller = "sip:sipp@127.0.0.1:5090".into();
        r.dialed = "+74951234567".into();
        r.pbx = Some("acme".into());
        r.targets = vec![TargetAttempt {
            target: "external:office".into(),
            status: Some(200),
        }];
        r
    }

    fn read_lines(path: &Path) -> Vec<CdrRecord> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "last line not terminated"
        );
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn finish_reasons_serialize_as_the_spec_list() {
        let names: Vec<String> = FinishReason::ALL
            .iter()
            .map(|r| {
                serde_json::to_value(r)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "answered",
                "caller_hangup",
                "no_answer",
                "busy",
                "unavailable",
                "not_found",
                "rejected",
                "voicemail",
                "prompt_played",
                "max_transition_count_exceeded",
                "overload",
                "error"
            ]
        );
        for r in FinishReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn record_is_one_json_line_with_rfc3339_millisecond_times() {
        let line = record(0).to_json_line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["call_id"], "call-0");
        assert_eq!(v["start"], "2026-11-27T06:13:20.000Z");
        assert_eq!(v["answer"], "2026-11-27T06:13:21.250Z");
        assert_eq!(v["end"], "2026-11-27T06:13:51.005Z");
        assert_eq!(v["duration_ms"], 31_005);
        assert_eq!(v["talk_ms"], 29_755);
        assert_eq!(v["reason"], "answered");
        assert_eq!(v["status"], 200);
        assert_eq!(v["pbx"], "acme");
        assert_eq!(v["targets"][0]["target"], "external:office");
        assert_eq!(v["targets"][0]["status"], 200);
    }

    #[test]
    fn unanswered_call_has_no_answer_time_and_zero_talk_time() {
        let times = CallTimes {
            start: at(100, 0),
            answer: None,
            end: at(160, 500),
        };
        let mut r = CdrRecord::new("x", times, 480, FinishReason::NoAnswer);
        r.targets = vec![TargetAttempt {
            target: "external:office".into(),
            status: None,
        }];
        let v: serde_json::Value = serde_json::from_slice(&r.to_json_line()).unwrap();
        assert!(v.get("answer").is_none());
        assert!(v.get("pbx").is_none());
        assert_eq!(v["talk_ms"], 0);
        assert_eq!(v["duration_ms"], 60_500);
        assert_eq!(v["reason"], "no_answer");
        assert!(v["targets"][0]["status"].is_null());
        let back: CdrRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn end_before_start_gives_zero_durations_not_a_panic() {
        let times = CallTimes {
            start: at(200, 0),
            answer: Some(at(300, 0)),
            end: at(100, 0),
        };
        let r = CdrRecord::new("clock-step", times, 200, FinishReason::Answered);
        assert_eq!((r.duration_ms, r.talk_ms), (0, 0));
    }

    /// What the derived `Serialize` writes: the reference for the
    /// hand-written line.
    fn serde_line(r: &CdrRecord) -> Vec<u8> {
        let mut line = serde_json::to_vec(r).unwrap();
        line.push(b'\n');
        line
    }

    #[test]
    fn hand_written_line_is_what_serde_writes() {
        let mut odd = record(3);
        odd.call_id = "quote\"back\\slash/\u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f}é漢🙂".into();
        odd.caller = String::new();
        odd.pbx = None;
        odd.answer = None;
        odd.targets = vec![
            TargetAttempt {
                target: "external:a".into(),
                status: None,
            },
            TargetAttempt {
                target: "external:b".into(),
                status: Some(486),
            },
        ];
        odd.reason = FinishReason::MaxTransitionCountExceeded;
        let mut none = record(4);
        none.targets.clear();
        // Leap day, end of year, the epoch, far future, before the epoch.
        let times = [
            at(0, 0),
            at(951_782_400, 999),
            at(1_704_067_199, 1),
            at(1_709_164_800, 10),
            at(4_102_444_800, 500),
            at(253_402_300_799, 999),
        ];
        let mut records = vec![record(0), odd, none];
        for t in times {
            let mut r = record(1);
            r.start = t;
            r.answer = Some(t);
            r.end = t;
            records.push(r);
        }
        for r in &records {
            assert_eq!(
                String::from_utf8(r.to_json_line()).unwrap(),
                String::from_utf8(serde_line(r)).unwrap()
            );
        }
    }

    #[test]
    fn times_a_broken_clock_gives_are_clamped_not_a_panic() {
        let mut r = record(2);
        r.start = SystemTime::UNIX_EPOCH - Duration::from_millis(1500);
        r.end = SystemTime::UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        let v: serde_json::Value = serde_json::from_slice(&r.to_json_line()).unwrap();
        assert_eq!(v["start"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["end"], "9999-12-31T23:59:59.999Z");
    }

    proptest::proptest! {
        /// Times within a second of each other: the line writes a second's
        /// text once and reuses it (and must not across a second).
        #[test]
        fn close_times_are_written_as_serde_writes_them(
            start in 0u64..253_402_300_790_000,
            answer_after in proptest::option::of(0u64..2_500),
            end_after in 0u64..2_500,
            nanos in 0u32..1_000_000_000,
        ) {
            let start = SystemTime::UNIX_EPOCH + Duration::from_millis(start) + Duration::from_nanos(u64::from(nanos));
            let answer = answer_after.map(|a| start + Duration::from_millis(a));
            let times = CallTimes {
                start,
                answer,
                end: answer.unwrap_or(start) + Duration::from_millis(end_after),
            };
            let r = CdrRecord::new("c", times, 200, FinishReason::Answered);
            proptest::prop_assert_eq!(r.to_json_line(), serde_line(&r));
        }
    }

    proptest::proptest! {
        #[test]
        fn hand_written_line_matches_serde_for_any_record(
            call_id in ".*",
            caller in ".*",
            pbx in proptest::option::of(".*"),
            start in 0u64..253_402_300_799_000,
            answer_after in proptest::option::of(0u64..10_000_000),
            end_after in 0u64..10_000_000,
            status in 100u16..700,
            target_status in proptest::option::of(100u16..700),
            nanos in 0u32..1_000_000,
        ) {
            let start = SystemTime::UNIX_EPOCH + Duration::from_millis(start) + Duration::from_nanos(u64::from(nanos));
            let times = CallTimes {
                start,
                answer: answer_after.map(|a| start + Duration::from_millis(a)),
                end: start + Duration::from_millis(end_after),
            };
            let mut r = CdrRecord::new(call_id, times, status, FinishReason::Busy);
            r.caller = caller;
            r.pbx = pbx;
            r.targets = vec![TargetAttempt { target: "external:x".into(), status: target_status }];
            proptest::prop_assert_eq!(r.to_json_line(), serde_line(&r));
        }
    }

    proptest::proptest! {
        #[test]
        fn line_of_borrowed_pieces_is_the_records_line(
            call_id in ".*",
            caller in ".*",
            dialed in "\\+[0-9]{1,20}",
            pbx in proptest::option::of(".*"),
            target in proptest::option::of(("[a-z:]*", ".*", proptest::option::of(100u16..700))),
            start in 0u64..253_402_300_799_000,
            answer_after in proptest::option::of(0u64..10_000_000),
            end_after in 0u64..10_000_000,
            status in 100u16..700,
        ) {
            let start = SystemTime::UNIX_EPOCH + Duration::from_millis(start);
            let times = CallTimes {
                start,
                answer: answer_after.map(|a| start + Duration::from_millis(a)),
                end: start + Duration::from_millis(end_after),
            };
            let line = CdrLine {
                call_id: &call_id,
                times,
                caller: &caller,
                dialed: &dialed,
                pbx: pbx.as_deref(),
                target: target.as_ref().map(|(kind, id, status)| LineTarget { kind, id, status: *status }),
                status,
                reason: FinishReason::NoAnswer,
            };
            let mut r = CdrRecord::new(call_id.clone(), times, status, FinishReason::NoAnswer);
            r.caller = caller.clone();
            r.dialed = dialed.clone();
            r.pbx = pbx.clone();
            r.targets = target
                .iter()
                .map(|(kind, id, status)| TargetAttempt { target: format!("{kind}{id}"), status: *status })
                .collect();
            proptest::prop_assert_eq!(line.to_json_line(), serde_line(&r));
        }
    }

    #[test]
    fn record_round_trips_through_json() {
        let r = record(7);
        let back: CdrRecord = serde_json::from_slice(&r.to_json_line()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn config_flush_interval_bounds_the_flush_delay() {
        let cdr = crate::config::CdrConfig {
            flush_interval: Duration::from_secs(3),
            ..Default::default()
        };
        let options = WriterOptions::from_config(&cdr);
        assert_eq!(options.max_flush_delay, Duration::from_secs(3));
        assert_eq!(
            options.queue_capacity,
            WriterOptions::default().queue_capacity
        );
    }

    #[tokio::test]
    async fn lines_and_records_are_written_in_the_order_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let writer = CdrWriter::spawn(&path, WriterOptions::default())
            .await
            .unwrap();
        let sink = writer.sink();
        for i in 0..100 {
            if i % 2 == 0 {
                sink.write_line(record(i).to_json_line()).await.unwrap();
            } else {
                sink.write(record(i)).await.unwrap();
            }
        }
        let stats = writer.shutdown().await.unwrap();
        assert_eq!(stats.records, 100);
        let lines = read_lines(&path);
        assert_eq!(lines, (0..100).map(record).collect::<Vec<_>>());
        // The written lines' buffers come back, empty, for the next lines.
        let spare = sink.line_buffer();
        assert!(spare.is_empty() && spare.capacity() > 0);
        assert!(matches!(
            sink.write_line(record(9).to_json_line()).await,
            Err(CdrError::Closed)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_writes_every_record_sent_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let writer = CdrWriter::spawn(&path, WriterOptions::default())
            .await
            .unwrap();
        let sink = writer.sink();
        for i in 0..5_000 {
            sink.write(record(i)).await.unwrap();
        }
        let stats = writer.shutdown().await.unwrap();
        assert_eq!(stats.records, 5_000);
        assert_eq!(stats.errors, 0);
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 5_000);
        for (i, r) in lines.iter().enumerate() {
            assert_eq!(*r, record(i as u64));
        }
        // The sink outlived the writer: it is refused, not silently dropped.
        assert!(matches!(sink.write(record(9)).await, Err(CdrError::Closed)));
    }

    #[tokio::test(start_paused = true)]
    async fn try_write_refuses_a_full_queue_at_once_and_keeps_what_it_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let options = WriterOptions {
            queue_capacity: 2,
            ..WriterOptions::default()
        };
        let writer = CdrWriter::spawn(&path, options).await.unwrap();
        let sink = writer.sink();
        // The writer task does not run until this task yields.
        sink.try_write(record(0)).unwrap();
        sink.try_write(record(1)).unwrap();
        assert!(matches!(sink.try_write(record(2)), Err(CdrError::Full)));
        let stats = writer.shutdown().await.unwrap();
        assert_eq!(stats.records, 2);
        assert_eq!(read_lines(&path), vec![record(0), record(1)]);
        assert!(matches!(sink.try_write(record(3)), Err(CdrError::Closed)));
    }

    #[tokio::test(start_paused = true)]
    async fn every_accepted_record_survives_a_shutdown_racing_the_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let options = WriterOptions {
            queue_capacity: 8,
            ..WriterOptions::default()
        };
        let writer = CdrWriter::spawn(&path, options).await.unwrap();
        let mut senders = Vec::new();
        for t in 0..4 {
            let sink = writer.sink();
            senders.push(tokio::spawn(async move {
                let mut accepted = Vec::new();
                for i in 0..10_000 {
                    let r = record(t * 100_000 + i);
                    let id = r.call_id.clone();
                    match sink.write(r).await {
                        Ok(()) => accepted.push(id),
                        Err(CdrError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                accepted
            }));
        }
        // Let the writers get going, then shut down while they still send.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        let stats = writer.shutdown().await.unwrap();
        let mut accepted = Vec::new();
        for s in senders {
            accepted.extend(s.await.unwrap());
        }
        assert!(
            !accepted.is_empty() && accepted.len() < 40_000,
            "{} accepted",
            accepted.len()
        );
        let mut written: Vec<String> = read_lines(&path).into_iter().map(|r| r.call_id).collect();
        accepted.sort();
        written.sort();
        assert_eq!(stats.records as usize, written.len());
        assert_eq!(written, accepted);
    }

    #[tokio::test(start_paused = true)]
    async fn small_queue_backpressures_instead_of_dropping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let options = WriterOptions {
            queue_capacity: 2,
            buffer_size: 64,
            ..WriterOptions::default()
        };
        let writer = CdrWriter::spawn(&path, options).await.unwrap();
        let mut senders = Vec::new();
        for t in 0..4 {
            let sink = writer.sink();
            senders.push(tokio::spawn(async move {
                for i in 0..100 {
                    sink.write(record(t * 1000 + i)).await.unwrap();
                }
            }));
        }
        for s in senders {
            s.await.unwrap();
        }
        let stats = writer.shutdown().await.unwrap();
        assert_eq!(stats.records, 400);
        let mut ids: Vec<String> = read_lines(&path).into_iter().map(|r| r.call_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 400);
    }

    #[tokio::test(start_paused = true)]
    async fn reopening_appends_to_the_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let w = CdrWriter::spawn(&path, WriterOptions::default())
            .await
            .unwrap();
        for i in 0..3 {
            w.sink().write(record(i)).await.unwrap();
        }
        w.shutdown().await.unwrap();
        let w = CdrWriter::spawn(&path, WriterOptions::default())
            .await
            .unwrap();
        for i in 3..5 {
            w.sink().write(record(i)).await.unwrap();
        }
        w.shutdown().await.unwrap();
        let ids: Vec<String> = read_lines(&path).into_iter().map(|r| r.call_id).collect();
        assert_eq!(ids, ["call-0", "call-1", "call-2", "call-3", "call-4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn creates_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/lib/vpbx/cdr.jsonl");
        let w = CdrWriter::spawn(&path, WriterOptions::default())
            .await
            .unwrap();
        w.sink().write(record(1)).await.unwrap();
        w.shutdown().await.unwrap();
        assert_eq!(read_lines(&path).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unwritable_path_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        let err = CdrWriter::spawn(dir.path(), WriterOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, CdrError::Open { .. }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_queue_is_flushed_without_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let options = WriterOptions::default();
        let w = CdrWriter::spawn(&path, options).await.unwrap();
        w.sink().write(record(1)).await.unwrap();
        // Still in the buffer right after the write...
        tokio::task::yield_now().await;
        assert_eq!(std::fs::read(&path).unwrap().len(), 0);
        // ...on disk once the queue was idle for `idle_flush`.
        tokio::time::sleep(options.idle_flush * 2).await;
        assert_eq!(read_lines(&path).len(), 1);
        w.shutdown().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn steady_load_is_flushed_within_max_flush_delay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdr.jsonl");
        let options = WriterOptions {
            idle_flush: Duration::from_millis(100),
            max_flush_delay: Duration::from_millis(500),
            ..WriterOptions::default()
        };
        let w = CdrWriter::spawn(&path, options).await.unwrap();
        // One record every 50 ms never leaves the queue idle for 100 ms.
        for i in 0..12 {
            w.sink().write(record(i)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let on_disk = read_lines(&path).len();
        assert!(
            (9..12).contains(&on_disk),
            "{on_disk} records flushed after 600 ms"
        );
        w.shutdown().await.unwrap();
        assert_eq!(read_lines(&path).len(), 12);
    }
}
