//! From the files as written (`raw`) to a validated [`Config`], collecting
//! every error instead of stopping at the first.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, ConfigErrorKind as K, ConfigErrors, SourceFile};
use super::raw::{RawDaemon, RawDuration, RawExternal, RawNumberBlock, RawPbx};
use super::uri::{is_host, parse_sip_uri};
use super::{
    CdrConfig, Config, DaemonConfig, Limits, ListenAddr, NumberConfig, PbxConfig, ReloadConfig,
    ShutdownConfig, Timers, DEFAULT_DIAL_TIMEOUT,
};
use crate::routing::NumberHashBuilder;
use crate::routing::{
    is_valid_id, DigestCredentials, ExternalPbx, Number, OnFailure, Target, TargetKind, TargetSpec,
};
use crate::transport::Protocol;

/// Collects errors for one file.
struct Ctx<'a> {
    src: &'a SourceFile,
    errors: &'a mut Vec<ConfigError>,
}

impl Ctx<'_> {
    fn err(&mut self, span: Range<usize>, kind: K) {
        self.errors.push(self.src.error(span, kind));
    }

    fn duration(&mut self, raw: &RawDuration) -> Option<Duration> {
        let raw = raw.as_ref()?;
        match humantime_serde::re::humantime::parse_duration(raw.get_ref().trim()) {
            Ok(d) => Some(d),
            Err(source) => {
                self.err(
                    raw.span(),
                    K::BadDuration {
                        text: raw.get_ref().clone(),
                        source,
                    },
                );
                None
            }
        }
    }

    /// A duration within `min..=max`, else an error and the default.
    fn duration_in(
        &mut self,
        raw: &RawDuration,
        default: Duration,
        key: &'static str,
        min: Duration,
        max: Duration,
        allowed: &'static str,
    ) -> Duration {
        let Some(d) = self.duration(raw) else {
            return default;
        };
        if d < min || d > max {
            if let Some(raw) = raw {
                self.err(
                    raw.span(),
                    K::OutOfRange {
                        key,
                        value: format!("{:?}", raw.get_ref()),
                        allowed,
                    },
                );
            }
            return default;
        }
        d
    }

    /// An integer within `min..=max`, else an error and the default.
    fn int_in<T: TryFrom<i64>>(
        &mut self,
        raw: &Option<Spanned<i64>>,
        default: T,
        key: &'static str,
        (min, max): (i64, i64),
        allowed: &'static str,
    ) -> T {
        let Some(raw) = raw else { return default };
        let v = *raw.get_ref();
        match T::try_from(v) {
            Ok(t) if (min..=max).contains(&v) => t,
            _ => {
                self.err(
                    raw.span(),
                    K::OutOfRange {
                        key,
                        value: v.to_string(),
                        allowed,
                    },
                );
                default
            }
        }
    }

    fn number(&mut self, raw: &Spanned<String>) -> Option<Number> {
        self.number_at(raw.get_ref(), raw.span())
    }

    fn number_at(&mut self, text: &str, span: Range<usize>) -> Option<Number> {
        match Number::parse(text) {
            Ok(n) => Some(n),
            Err(source) => {
                self.err(
                    span,
                    K::BadNumber {
                        text: text.to_owned(),
                        source,
                    },
                );
                None
            }
        }
    }
}

fn toml_error(src: &SourceFile, e: &toml::de::Error) -> ConfigError {
    let kind = K::Toml {
        message: e.message().trim_end().to_owned(),
    };
    match e.span() {
        Some(span) => src.error(span, kind),
        None => src.file_error(kind),
    }
}

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn daemon(src: &SourceFile, errors: &mut Vec<ConfigError>) -> DaemonConfig {
    let defaults = DaemonConfig::default();
    let raw: RawDaemon = match toml::from_str(&src.text) {
        Ok(raw) => raw,
        Err(e) => {
            errors.push(toml_error(src, &e));
            return defaults;
        }
    };
    let mut c = Ctx { src, errors };

    let listen = match &raw.listen {
        None => defaults.listen.clone(),
        Some(list) if list.get_ref().is_empty() => {
            c.err(list.span(), K::NoListen);
            defaults.listen.clone()
        }
        Some(list) => {
            let mut out: Vec<ListenAddr> = Vec::new();
            for item in list.get_ref() {
                match item.get_ref().parse::<ListenAddr>() {
                    Ok(addr) if out.contains(&addr) => {
                        c.err(item.span(), K::DuplicateListen(addr.to_string()));
                    }
                    Ok(addr) => out.push(addr),
                    Err(source) => c.err(
                        item.span(),
                        K::BadListen {
                            text: item.get_ref().clone(),
                            source,
                        },
                    ),
                }
            }
            out
        }
    };

    let host = |c: &mut Ctx<'_>, key: &'static str, raw: &Option<Spanned<String>>, ip_ok: bool| {
        let raw = raw.as_ref()?;
        let text = raw.get_ref().trim();
        let ok = is_host(text) || (ip_ok && text.parse::<IpAddr>().is_ok());
        if ok {
            Some(text.to_owned())
        } else {
            c.err(
                raw.span(),
                K::BadHost {
                    key,
                    text: raw.get_ref().clone(),
                },
            );
            None
        }
    };
    let domain = host(&mut c, "domain", &raw.domain, false);
    let advertised_address = host(&mut c, "advertised_address", &raw.advertised_address, true);

    let worker_threads = c.int_in(
        &raw.worker_threads,
        defaults.worker_threads,
        "worker_threads",
        (1, 64),
        "1 to 64",
    );
    // Zero turns coalescing off; below 100us a sleep's own overshoot (the
    // timer slack, ~50us) is the same size as the interval.
    const COALESCING_RANGE: &str = "0s, or 100us to 100ms";
    let mut wakeup_coalescing = c.duration_in(
        &raw.wakeup_coalescing,
        defaults.wakeup_coalescing,
        "wakeup_coalescing",
        Duration::ZERO,
        100 * MS,
        COALESCING_RANGE,
    );
    if let Some(r) = raw.wakeup_coalescing.as_ref() {
        if !wakeup_coalescing.is_zero() && wakeup_coalescing < Duration::from_micros(100) {
            c.err(
                r.span(),
                K::OutOfRange {
                    key: "wakeup_coalescing",
                    value: format!("{:?}", r.get_ref()),
                    allowed: COALESCING_RANGE,
                },
            );
            wakeup_coalescing = defaults.wakeup_coalescing;
        }
    }

    let d = defaults.timers;
    let before = c.errors.len();
    let t1 = c.duration_in(&raw.timers.t1, d.t1, "timers.t1", MS, MINUTE, "1ms to 1min");
    let t2 = c.duration_in(
        &raw.timers.t2,
        d.t2,
        "timers.t2",
        MS,
        10 * MINUTE,
        "1ms to 10min",
    );
    // Compare only values as written: a bad t1 or t2 was reported already.
    let timers_ok = c.errors.len() == before;
    let t4 = c.duration_in(
        &raw.timers.t4,
        d.t4,
        "timers.t4",
        MS,
        10 * MINUTE,
        "1ms to 10min",
    );
    if timers_ok && t2 < t1 {
        let span = raw
            .timers
            .t2
            .as_ref()
            .or(raw.timers.t1.as_ref())
            .map_or(0..0, |s| s.span());
        c.err(
            span,
            K::Inconsistent("timers.t2 must not be smaller than timers.t1"),
        );
    }

    let l = defaults.limits;
    let rl = &raw.limits;
    let limits = Limits {
        max_calls: c.int_in(
            &rl.max_calls,
            l.max_calls,
            "limits.max_calls",
            (1, 10_000_000),
            "1 to 10000000",
        ),
        max_cps: c.int_in(
            &rl.max_cps,
            l.max_cps,
            "limits.max_cps",
            (1, 1_000_000),
            "1 to 1000000",
        ),
        max_call_duration: c.duration_in(
            &rl.max_call_duration,
            l.max_call_duration,
            "limits.max_call_duration",
            SEC,
            7 * DAY,
            "1s to 7days",
        ),
        max_message_size: c.int_in(
            &rl.max_message_size,
            l.max_message_size,
            "limits.max_message_size",
            (1024, 1 << 20),
            "1024 to 1048576 bytes",
        ),
        max_tcp_connections: c.int_in(
            &rl.max_tcp_connections,
            l.max_tcp_connections,
            "limits.max_tcp_connections",
            (1, 1_000_000),
            "1 to 1000000",
        ),
        tcp_idle_timeout: c.duration_in(
            &rl.tcp_idle_timeout,
            l.tcp_idle_timeout,
            "limits.tcp_idle_timeout",
            SEC,
            DAY,
            "1s to 1day",
        ),
        tcp_connect_timeout: c.duration_in(
            &rl.tcp_connect_timeout,
            l.tcp_connect_timeout,
            "limits.tcp_connect_timeout",
            SEC,
            2 * MINUTE,
            "1s to 2min",
        ),
        udp_receive_buffer: c.int_in(
            &rl.udp_receive_buffer,
            l.udp_receive_buffer,
            "limits.udp_receive_buffer",
            (65_536, 1 << 28),
            "65536 to 268435456 bytes",
        ),
        expected_cps: c.int_in(
            &rl.expected_cps,
            l.expected_cps,
            "limits.expected_cps",
            (0, 100_000),
            "0 to 100000",
        ),
    };

    let cdr = CdrConfig {
        path: raw
            .cdr
            .path
            .as_ref()
            .map_or(defaults.cdr.path.clone(), PathBuf::from),
        flush_interval: c.duration_in(
            &raw.cdr.flush_interval,
            defaults.cdr.flush_interval,
            "cdr.flush_interval",
            MS,
            HOUR,
            "1ms to 1h",
        ),
    };
    let shutdown = ShutdownConfig {
        drain_time: c.duration_in(
            &raw.shutdown.drain_time,
            defaults.shutdown.drain_time,
            "shutdown.drain_time",
            Duration::ZERO,
            DAY,
            "0s to 1day",
        ),
    };
    let reload = ReloadConfig {
        debounce: c.duration_in(
            &raw.reload.debounce,
            defaults.reload.debounce,
            "reload.debounce",
            Duration::ZERO,
            MINUTE,
            "0s to 1min",
        ),
    };

    DaemonConfig {
        listen,
        domain,
        advertised_address,
        worker_threads,
        wakeup_coalescing,
        timers: Timers { t1, t2, t4 },
        limits,
        cdr,
        shutdown,
        reload,
    }
}

/// A validated PBX plus the spans needed for cross-file checks.
struct CheckedPbx {
    config: PbxConfig,
    id_span: Range<usize>,
    /// Span of each entry of `config.numbers`, same order.
    number_spans: Vec<Range<usize>>,
}

fn pbx(src: &SourceFile, errors: &mut Vec<ConfigError>) -> Option<CheckedPbx> {
    let raw: RawPbx = match toml::from_str(&src.text) {
        Ok(raw) => raw,
        Err(e) => {
            errors.push(toml_error(src, &e));
            return None;
        }
    };
    let mut c = Ctx { src, errors };

    let id_text = raw.id.get_ref().trim();
    if !is_valid_id(id_text) {
        c.err(raw.id.span(), K::BadId(raw.id.get_ref().clone()));
    } else {
        let stem = src
            .name
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if stem != id_text {
            c.err(
                raw.id.span(),
                K::IdMismatch {
                    id: id_text.to_owned(),
                    stem,
                },
            );
        }
    }
    let pbx_id: Arc<str> = Arc::from(id_text);

    // External PBXs first: numbers refer to them.
    let mut externals: Vec<Arc<ExternalPbx>> = Vec::with_capacity(raw.external.len());
    let mut external_ids: HashMap<String, (Range<usize>, usize)> = HashMap::new();
    let mut listed_numbers: Vec<(Number, Range<usize>)> = Vec::new();
    for ext in &raw.external {
        if let Some(e) = external(&mut c, &pbx_id, ext, &mut listed_numbers) {
            let id = e.id.to_string();
            match external_ids.entry(id.clone()) {
                Entry::Occupied(first) => {
                    let other = src.location(Some(first.get().0.clone()));
                    c.err(ext.id.span(), K::DuplicateExternalId { id, other });
                }
                Entry::Vacant(v) => {
                    v.insert((ext.id.span(), externals.len()));
                    externals.push(Arc::new(e));
                }
            }
        }
    }

    let targets = Targets {
        pbx_id: &pbx_id,
        externals: &externals,
        external_ids: &external_ids,
    };
    let mut numbers = Vec::with_capacity(raw.number.len());
    let mut number_spans = Vec::with_capacity(raw.number.len());
    // Numbers that parsed, whatever else was wrong with their entry.
    let mut declared = Vec::new();
    for n in &raw.number {
        let number = c.number(&n.number);
        declared.extend(number);
        let route = route(&mut c, &targets, &n.forward, n.on_failure.as_ref());
        if let (Some(number), Some((forward, on_failure))) = (number, route) {
            numbers.push(NumberConfig {
                number,
                forward,
                on_failure,
                enabled: n.enabled.unwrap_or(true),
                comment: n.comment.as_deref().map(Arc::from),
            });
            number_spans.push(n.number.span());
        }
    }
    for block in &raw.number_block {
        number_block(
            &mut c,
            &targets,
            block,
            &mut numbers,
            &mut number_spans,
            &mut declared,
        );
    }

    if !listed_numbers.is_empty() {
        let own: HashSet<Number> = numbers.iter().map(|n| n.number).collect();
        // A number whose own entry failed was reported already.
        let failed: HashSet<Number> = declared.into_iter().collect();
        for (n, span) in listed_numbers {
            if !own.contains(&n) && !failed.contains(&n) {
                c.err(
                    span,
                    K::ForeignNumber {
                        number: n,
                        pbx: pbx_id.to_string(),
                    },
                );
            }
        }
    }

    Some(CheckedPbx {
        config: PbxConfig {
            id: pbx_id,
            name: raw.name,
            numbers,
            externals,
            file: src.name.clone(),
        },
        id_span: raw.id.span(),
        number_spans,
    })
}

fn external(
    c: &mut Ctx<'_>,
    pbx_id: &Arc<str>,
    raw: &RawExternal,
    listed: &mut Vec<(Number, Range<usize>)>,
) -> Option<ExternalPbx> {
    let mut ok = true;
    let id = raw.id.get_ref().trim();
    if !is_valid_id(id) {
        c.err(raw.id.span(), K::BadId(raw.id.get_ref().clone()));
        ok = false;
    }
    let uri = match parse_sip_uri(raw.uri.get_ref().trim()) {
        Ok(uri) => Some(uri),
        Err(source) => {
            c.err(
                raw.uri.span(),
                K::BadUri {
                    text: raw.uri.get_ref().clone(),
                    source,
                },
            );
            None
        }
    };
    let transport = match &raw.transport {
        None => None,
        Some(t) => match t.get_ref().parse::<Protocol>() {
            Ok(p) => Some(p),
            Err(e) => {
                c.err(t.span(), K::BadTransport(e));
                ok = false;
                None
            }
        },
    };
    // The URI may say `;transport=…` itself (RFC 3261 §19.1.1); it must
    // agree with `transport`, and stands in for it when that is absent.
    let uri_transport = match uri.as_ref().and_then(|u| u.transport()) {
        None => None,
        Some(param) => match param.parse::<Protocol>() {
            Ok(p) => Some(p),
            Err(e) => {
                c.err(raw.uri.span(), K::BadTransport(e));
                ok = false;
                None
            }
        },
    };
    if let (Some(key), Some(param), Some(t)) = (transport, uri_transport, &raw.transport) {
        if key != param {
            c.err(
                t.span(),
                K::Inconsistent("transport disagrees with the URI's ;transport= parameter"),
            );
            ok = false;
        }
    }
    if uri.as_ref().is_some_and(|u| u.secure) {
        c.err(raw.uri.span(), K::UnsupportedSips);
        ok = false;
    }
    let transport = transport.or(uri_transport).unwrap_or(Protocol::Udp);
    let credentials = match (&raw.username, &raw.password) {
        (Some(u), Some(p)) => Some(DigestCredentials {
            username: u.get_ref().clone(),
            password: p.get_ref().clone(),
        }),
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => {
            c.err(one.span(), K::IncompleteCredentials);
            ok = false;
            None
        }
    };
    let dial_timeout = c.duration_in(
        &raw.dial_timeout,
        DEFAULT_DIAL_TIMEOUT,
        "dial_timeout",
        SEC,
        Duration::from_secs(100),
        "1s to 100s",
    );
    let mut numbers = Vec::new();
    for n in raw.numbers.iter().flatten() {
        if let Some(num) = c.number(n) {
            numbers.push(num);
            listed.push((num, n.span()));
        }
    }
    let uri = uri?;
    ok.then(|| ExternalPbx {
        pbx: pbx_id.clone(),
        id: Arc::from(id),
        uri,
        transport,
        credentials,
        dial_timeout,
        numbers,
    })
}

/// What `forward` values of one PBX may refer to.
struct Targets<'a> {
    pbx_id: &'a Arc<str>,
    externals: &'a [Arc<ExternalPbx>],
    external_ids: &'a HashMap<String, (Range<usize>, usize)>,
}

/// Resolves `forward` and `on_failure`; reports both when both are wrong.
fn route(
    c: &mut Ctx<'_>,
    targets: &Targets<'_>,
    forward: &Spanned<String>,
    raw_on_failure: Option<&Spanned<toml::Value>>,
) -> Option<(Target, OnFailure)> {
    let target = match TargetSpec::parse(forward.get_ref()) {
        Err(e) => {
            c.err(forward.span(), K::BadTarget(e));
            None
        }
        Ok(TargetSpec {
            kind: TargetKind::External,
            id,
        }) => match targets.external_ids.get(id) {
            Some(&(_, i)) => targets.externals.get(i).cloned().map(Target::External),
            None => {
                c.err(
                    forward.span(),
                    K::UnknownExternal {
                        id: id.to_owned(),
                        pbx: targets.pbx_id.to_string(),
                    },
                );
                None
            }
        },
        Ok(TargetSpec { kind, .. }) => {
            c.err(
                forward.span(),
                K::UnsupportedTarget {
                    kind: kind.as_str(),
                },
            );
            None
        }
    };
    let on_failure = match raw_on_failure {
        None => Some(OnFailure::Hangup),
        Some(v) => on_failure(c, v),
    };
    Some((target?, on_failure?))
}

/// A `[[number_block]]`: one number per line of `numbers`, all with the
/// block's route. Each bad line is reported at its own line.
fn number_block(
    c: &mut Ctx<'_>,
    targets: &Targets<'_>,
    block: &RawNumberBlock,
    numbers: &mut Vec<NumberConfig>,
    number_spans: &mut Vec<Range<usize>>,
    declared: &mut Vec<Number>,
) {
    let route = route(c, targets, &block.forward, block.on_failure.as_ref());
    let comment: Option<Arc<str>> = block.comment.as_deref().map(Arc::from);
    let enabled = block.enabled.unwrap_or(true);
    let text = block.numbers.get_ref();
    let body = string_body_start(c.src, block.numbers.span(), text);
    let lines = memchr::memchr_iter(b'\n', text.as_bytes()).count() + 1;
    numbers.reserve(lines);
    number_spans.reserve(lines);
    let mut offset = 0;
    for line in text.split('\n') {
        let line_start = offset;
        offset += line.len() + 1;
        let content = line.split('#').next().unwrap_or(line);
        let trimmed = content.trim_start();
        let number_text = trimmed.trim_end();
        if number_text.is_empty() {
            continue;
        }
        // Exact place when the string maps 1:1 onto the file; else the string.
        let span = match body {
            Some(start) => {
                let at = start + line_start + (content.len() - trimmed.len());
                at..at + number_text.len()
            }
            None => block.numbers.span(),
        };
        let Some(number) = c.number_at(number_text, span.clone()) else {
            continue;
        };
        declared.push(number);
        if let Some((forward, on_failure)) = &route {
            numbers.push(NumberConfig {
                number,
                forward: forward.clone(),
                on_failure: on_failure.clone(),
                enabled,
                comment: comment.clone(),
            });
            number_spans.push(span);
        }
    }
}

/// Where the value of a TOML string starts in the file, when the value is
/// the file's text verbatim (no escapes), so offsets in the value are
/// offsets in the file. TOML drops a newline right after `"""`/`'''`.
fn string_body_start(src: &SourceFile, span: Range<usize>, value: &str) -> Option<usize> {
    let raw = src.text.get(span.clone())?;
    let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
        3
    } else if raw.starts_with('"') || raw.starts_with('\'') {
        1
    } else {
        return None;
    };
    let mut body = raw.get(quote..raw.len().checked_sub(quote)?)?;
    let mut start = span.start + quote;
    if quote == 3 {
        for newline in ["\r\n", "\n"] {
            if let Some(rest) = body.strip_prefix(newline) {
                body = rest;
                start += newline.len();
                break;
            }
        }
    }
    (body == value).then_some(start)
}

fn on_failure(c: &mut Ctx<'_>, raw: &Spanned<toml::Value>) -> Option<OnFailure> {
    let parsed = match raw.get_ref() {
        toml::Value::String(s) if s == "hangup" => Some(OnFailure::Hangup),
        toml::Value::String(s) if s == "voicemail" => Some(OnFailure::Voicemail),
        toml::Value::Table(t) if t.len() == 1 => match t.get("prompt") {
            Some(toml::Value::String(file)) if !file.is_empty() => {
                Some(OnFailure::Prompt(PathBuf::from(file)))
            }
            _ => None,
        },
        _ => None,
    };
    match parsed {
        None => {
            c.err(raw.span(), K::BadOnFailure);
            None
        }
        Some(OnFailure::Hangup) => Some(OnFailure::Hangup),
        // Parsed so the files can say it; the media layer that plays prompts
        // and records voicemail does not exist yet.
        Some(OnFailure::Prompt(_)) => {
            c.err(raw.span(), K::UnsupportedOnFailure("{ prompt = … }"));
            None
        }
        Some(_) => {
            c.err(raw.span(), K::UnsupportedOnFailure("\"voicemail\""));
            None
        }
    }
}

/// Validates everything; see [`super::load`].
pub(super) fn validate(
    daemon_src: Option<&SourceFile>,
    pbx_srcs: &[SourceFile],
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let daemon = match daemon_src {
        Some(src) => daemon(src, &mut errors),
        None => DaemonConfig::default(),
    };

    let checked: Vec<(usize, CheckedPbx)> = pbx_srcs
        .iter()
        .enumerate()
        .filter_map(|(i, src)| pbx(src, &mut errors).map(|p| (i, p)))
        .collect();

    // PBX ids: reported at both places.
    let mut ids: HashMap<&str, (usize, usize)> = HashMap::new();
    for (k, (file, p)) in checked.iter().enumerate() {
        match ids.entry(&p.config.id) {
            Entry::Occupied(first) => {
                let (first_file, first_k) = *first.get();
                let first_span = checked[first_k].1.id_span.clone();
                let here = &pbx_srcs[*file];
                let there = &pbx_srcs[first_file];
                errors.push(here.error(
                    p.id_span.clone(),
                    K::DuplicatePbxId {
                        id: p.config.id.to_string(),
                        other: there.location(Some(first_span.clone())),
                    },
                ));
                errors.push(there.error(
                    first_span,
                    K::DuplicatePbxId {
                        id: p.config.id.to_string(),
                        other: here.location(Some(p.id_span.clone())),
                    },
                ));
            }
            Entry::Vacant(v) => {
                v.insert((*file, k));
            }
        }
    }

    // Numbers: unique across all PBXs, reported at both places.
    let total: usize = checked.iter().map(|(_, p)| p.config.numbers.len()).sum();
    let mut seen: HashMap<Number, (usize, usize, bool), NumberHashBuilder> =
        HashMap::with_capacity_and_hasher(total, NumberHashBuilder);
    for (k, (file, p)) in checked.iter().enumerate() {
        for (j, n) in p.config.numbers.iter().enumerate() {
            match seen.entry(n.number) {
                Entry::Vacant(v) => {
                    v.insert((k, j, false));
                }
                Entry::Occupied(mut first) => {
                    let (fk, fj, reported) = *first.get();
                    let (first_file, first_pbx) = &checked[fk];
                    let there = &pbx_srcs[*first_file];
                    let there_span = first_pbx.number_spans[fj].clone();
                    let here = &pbx_srcs[*file];
                    let here_span = p.number_spans[j].clone();
                    errors.push(here.error(
                        here_span.clone(),
                        K::DuplicateNumber {
                            number: n.number,
                            other: there.location(Some(there_span.clone())),
                        },
                    ));
                    if !reported {
                        errors.push(there.error(
                            there_span,
                            K::DuplicateNumber {
                                number: n.number,
                                other: here.location(Some(here_span)),
                            },
                        ));
                        first.get_mut().2 = true;
                    }
                }
            }
        }
    }

    if errors.is_empty() {
        Ok(Config {
            daemon,
            pbxs: checked.into_iter().map(|(_, p)| p.config).collect(),
        })
    } else {
        // File order first, then position, so `check` reads top to bottom.
        let order: HashMap<PathBuf, usize> = daemon_src
            .into_iter()
            .chain(pbx_srcs)
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        errors.sort_by_key(|e| {
            (
                order.get(&e.location.file).copied().unwrap_or(0),
                e.location.position.map(|p| (p.line, p.column)),
            )
        });
        Err(ConfigErrors(errors))
    }
}
