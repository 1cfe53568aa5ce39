//! Config errors: every one carries the file and, when it is about a value,
//! the line and column, so `vpbx check` can print `file:line:col: message`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::routing::{Number, NumberError, TargetError};
use crate::transport::AddrParseError;

use super::uri::UriError;

/// Line and column (both from 1; column counts characters) in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
}

/// A place in a config file, printed `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file as named to the user.
    pub file: PathBuf,
    /// Where in it, when known.
    pub position: Option<Position>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "{}:{}:{}", self.file.display(), p.line, p.column),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// One problem in the configuration.
#[derive(Debug)]
pub struct ConfigError {
    /// Where it is.
    pub location: Location,
    /// What it is.
    pub kind: ConfigErrorKind,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.kind)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.kind.source_error()
    }
}

/// What is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file or directory cannot be read.
    #[error("cannot read: {0}")]
    Io(#[source] std::io::Error),
    /// The config directory has no `vpbx.toml`.
    #[error("missing daemon config file vpbx.toml")]
    MissingDaemonFile,
    /// TOML syntax, an unknown key, or a value of the wrong type, as the TOML
    /// parser words it.
    #[error("{message}")]
    Toml {
        /// The parser's message.
        message: String,
    },
    /// A phone number that does not normalize to E.164.
    #[error("bad number {text:?}: {source}")]
    BadNumber {
        /// As written.
        text: String,
        /// Why.
        source: NumberError,
    },
    /// A duration humantime cannot read (e.g. `"30s"`, `"500ms"`, `"2h"` are fine).
    #[error("bad duration {text:?}: {source}")]
    BadDuration {
        /// As written.
        text: String,
        /// Why.
        source: humantime_serde::re::humantime::DurationError,
    },
    /// A value outside the range the key allows.
    #[error("{key} = {value} is out of range (allowed: {allowed})")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// The value as written.
        value: String,
        /// The allowed range, in words.
        allowed: &'static str,
    },
    /// Two values that must agree do not.
    #[error("{0}")]
    Inconsistent(&'static str),
    /// A listen address that is not `udp:ADDR:PORT` / `tcp:ADDR:PORT`.
    #[error("bad listen address {text:?}: {source}")]
    BadListen {
        /// As written.
        text: String,
        /// Why.
        source: AddrParseError,
    },
    /// The same listen address twice.
    #[error("listen address {0} is given twice")]
    DuplicateListen(String),
    /// `listen = []`.
    #[error("listen is empty: at least one udp: or tcp: address is needed")]
    NoListen,
    /// A host that is neither an IP address nor a domain name.
    #[error("{key} {text:?} is not an IP address or a domain name")]
    BadHost {
        /// The key.
        key: &'static str,
        /// As written.
        text: String,
    },
    /// An id with characters ids may not have.
    #[error("bad id {0:?}: ids are non-empty, at most 64 characters, and use only letters, digits, '-', '_' and '.'")]
    BadId(String),
    /// A PBX file whose `id` differs from its file name.
    #[error(
        "PBX id {id:?} does not match its file name {stem}.toml (a PBX lives in pbx/<id>.toml)"
    )]
    IdMismatch {
        /// The id in the file.
        id: String,
        /// The file stem.
        stem: String,
    },
    /// Two PBX files with one id.
    #[error("duplicate PBX id {id:?} (also at {other})")]
    DuplicatePbxId {
        /// The id.
        id: String,
        /// The other place.
        other: Location,
    },
    /// Two external PBXs with one id in a PBX.
    #[error("duplicate external PBX id {id:?} (also at {other})")]
    DuplicateExternalId {
        /// The id.
        id: String,
        /// The other place.
        other: Location,
    },
    /// One number routed in two places.
    #[error("duplicate number {number} (also at {other})")]
    DuplicateNumber {
        /// The normalized number.
        number: Number,
        /// The other place.
        other: Location,
    },
    /// A `forward` value that cannot be read.
    #[error("bad forward target: {0}")]
    BadTarget(#[source] TargetError),
    /// `forward = "external:<id>"` naming no `[[external]]` of this PBX.
    #[error("forward target external:{id} is not defined: PBX {pbx:?} has no [[external]] with id = {id:?}")]
    UnknownExternal {
        /// The missing id.
        id: String,
        /// The PBX.
        pbx: String,
    },
    /// A target kind that parses but is not implemented yet.
    #[error("forward to {kind}:<id> is not supported yet (only external:<id> is)")]
    UnsupportedTarget {
        /// The kind (`employee`, `department`, `scenario`, `pbx`).
        kind: &'static str,
    },
    /// An `on_failure` value that is not one of the known forms.
    #[error("bad on_failure: expected \"hangup\", \"voicemail\" or {{ prompt = \"file.wav\" }}")]
    BadOnFailure,
    /// An `on_failure` form that parses but is not implemented yet.
    #[error("on_failure {0} is not supported yet (only \"hangup\" is)")]
    UnsupportedOnFailure(&'static str),
    /// A SIP URI that does not parse.
    #[error("bad SIP URI {text:?}: {source}")]
    BadUri {
        /// As written.
        text: String,
        /// Why.
        source: UriError,
    },
    /// A `sips:` URI: it needs TLS, which vpbx does not speak yet.
    #[error("sips: URIs need TLS, which is not supported yet; use sip: with transport udp or tcp")]
    UnsupportedSips,
    /// A transport other than udp/tcp.
    #[error("bad transport: {0}")]
    BadTransport(#[source] AddrParseError),
    /// `username` without `password` or the reverse.
    #[error("digest username and password must be given together")]
    IncompleteCredentials,
    /// An external PBX listing a number its PBX does not have.
    #[error("number {number} is not a number of PBX {pbx:?} (external PBXs may only list their PBX's numbers)")]
    ForeignNumber {
        /// The number.
        number: Number,
        /// The PBX.
        pbx: String,
    },
}

impl ConfigErrorKind {
    fn source_error(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigErrorKind::Io(e) => Some(e),
            ConfigErrorKind::BadNumber { source, .. } => Some(source),
            ConfigErrorKind::BadDuration { source, .. } => Some(source),
            ConfigErrorKind::BadListen { source, .. } => Some(source),
            ConfigErrorKind::BadTarget(e) => Some(e),
            ConfigErrorKind::BadUri { source, .. } => Some(source),
            ConfigErrorKind::BadTransport(e) => Some(e),
            _ => None,
        }
    }
}

/// Every problem found in one load, in file order.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The text of one config file and its name as shown to the user; turns
/// byte spans from the TOML parser into lines and columns.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub(crate) name: PathBuf,
    pub(crate) text: String,
    line_starts: OnceLock<Vec<usize>>,
}

impl SourceFile {
    pub(crate) fn new(name: PathBuf, text: String) -> Self {
        SourceFile {
            name,
            text,
            line_starts: OnceLock::new(),
        }
    }

    /// Line and column of a byte offset. Line starts are computed once, the
    /// first time an error needs them (a valid file never pays for it).
    pub(crate) fn position(&self, offset: usize) -> Position {
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let offset = offset.min(self.text.len());
        let line = starts.partition_point(|&s| s <= offset);
        let start = starts.get(line.saturating_sub(1)).copied().unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Position { line, column }
    }

    pub(crate) fn location(&self, span: Option<Range<usize>>) -> Location {
        Location {
            file: self.name.clone(),
            position: span.map(|s| self.position(s.start)),
        }
    }

    pub(crate) fn error(&self, span: Range<usize>, kind: ConfigErrorKind) -> ConfigError {
        ConfigError {
            location: self.location(Some(span)),
            kind,
        }
    }

    pub(crate) fn file_error(&self, kind: ConfigErrorKind) -> ConfigError {
        ConfigError {
            location: self.location(None),
            kind,
        }
    }
}

/// An error about a whole file (cannot read it), with no position.
pub(crate) fn path_error(path: &Path, kind: ConfigErrorKind) -> ConfigError {
    ConfigError {
        location: Location {
            file: path.to_path_buf(),
            position: None,
        },
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let f = SourceFile::new("x.toml".into(), "a = 1\nбв = \"x\"\n\nz".into());
        assert_eq!(f.position(0), Position { line: 1, column: 1 });
        assert_eq!(f.position(4), Position { line: 1, column: 5 });
        assert_eq!(f.position(6), Position { line: 2, column: 1 });
        // "бв = " is 7 bytes but 5 characters.
        assert_eq!(f.position(6 + 7), Position { line: 2, column: 6 });
        assert_eq!(f.position(f.text.len()), Position { line: 4, column: 2 });
    }
}
