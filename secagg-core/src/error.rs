//! The one error type of `secagg-core`, its kinds and their process exit codes.
//!
//! Every error carries a lowercase message without a trailing period that says what went wrong and
//! where, and optionally a hint that says what to do. [`Error::kind`] classifies it; the CLI maps
//! each [`ErrorKind`] to the exit code returned by [`ErrorKind::exit_code`] (documented in the README).

use std::fmt;
use std::path::Path;

/// Convenience alias for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, plus an optional hint for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    /// What went wrong and where, lowercase, no trailing period.
    pub message: String,
    /// What the user can do about it, if anything useful can be said.
    pub hint: Option<String>,
    /// The other party whose failure this is, when it is one (see [`Origin`]).
    pub origin: Option<Origin>,
}

/// The party a failure started at, carried as data from the party that saw it to every party
/// told about it (in the native protocol's `Abort` frames), so that nobody has to read a name
/// back out of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The party's id.
    pub party: String,
    /// Its own words, when it reported the failure itself (its abort); `None` when another
    /// party saw it fail (it closed the connection, broke the protocol, presented the wrong
    /// certificate).
    pub reason: Option<String>,
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Errors returned by `secagg-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input given by the user or found in a file is malformed or refused by validation.
    #[error("{0}")]
    InvalidInput(Detail),
    /// Something the operation needs does not exist (identity, registered peer, context).
    #[error("{0}")]
    NotFound(Detail),
    /// The operation would overwrite or duplicate something that exists.
    #[error("{0}")]
    Conflict(Detail),
    /// A peer could not be reached, broke the protocol, aborted or disconnected.
    #[error("{0}")]
    PeerFailure(Detail),
    /// A deadline expired.
    #[error("{0}")]
    Timeout(Detail),
    /// A peer presented a certificate other than the one registered for its party id, or TLS
    /// authentication failed otherwise.
    #[error("{0}")]
    Authentication(Detail),
    /// An external program (MP-SPDZ, `wg`, `docker`, `openssl`) is missing or failed.
    #[error("{0}")]
    ExternalTool(Detail),
    /// A computed result failed its consistency check (for example the shares do not lie on one
    /// polynomial, or a server key does not cancel the user keys).
    #[error("{0}")]
    Verification(Detail),
    /// A peer reports that its own storage failed (its disk is full, its store cannot be
    /// written): a storage failure, of that party, not of this one.
    #[error("{0}")]
    PeerStorage(Detail),
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. "while writing `identity/key.pem`".
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The SQLite store failed.
    #[error("{context}: {source}")]
    Store {
        /// What was being done, e.g. "while opening store `store.sqlite`".
        context: String,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A bug or an impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The classification of an [`Error`], one per exit code.
///
/// This is the single source of the exit-code table: the CLI's `--help` is generated from
/// [`exit_codes`], and a test checks the README's "Exit codes" table against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::InvalidInput`].
    InvalidInput,
    /// See [`Error::NotFound`].
    NotFound,
    /// See [`Error::Conflict`].
    Conflict,
    /// See [`Error::PeerFailure`].
    PeerFailure,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::Authentication`].
    Authentication,
    /// See [`Error::ExternalTool`].
    ExternalTool,
    /// See [`Error::Verification`].
    Verification,
    /// See [`Error::Io`] and [`Error::Store`].
    Storage,
    /// See [`Error::Internal`].
    Internal,
}

/// Exit code of a successful command.
pub const EXIT_SUCCESS: i32 = 0;
/// Exit code of a usage error (unknown option, missing argument), reported by argument parsing
/// before any [`Error`] can exist.
pub const EXIT_USAGE: i32 = 2;

impl ErrorKind {
    /// Every kind, in exit-code order.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Internal,
        ErrorKind::InvalidInput,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::PeerFailure,
        ErrorKind::Timeout,
        ErrorKind::Authentication,
        ErrorKind::ExternalTool,
        ErrorKind::Storage,
        ErrorKind::Verification,
    ];

    /// The process exit code the CLI uses for this kind (0 is success, 2 is a usage error).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Internal => 1,
            ErrorKind::InvalidInput => 3,
            ErrorKind::NotFound => 4,
            ErrorKind::Conflict => 5,
            ErrorKind::PeerFailure => 6,
            ErrorKind::Timeout => 7,
            ErrorKind::Authentication => 8,
            ErrorKind::ExternalTool => 9,
            ErrorKind::Storage => 10,
            ErrorKind::Verification => 11,
        }
    }

    /// The kind whose exit code is `code`, if any.
    pub fn from_exit_code(code: i32) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.exit_code() == code)
    }

    /// A stable snake_case name, used in JSON error output.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PeerFailure => "peer_failure",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Authentication => "authentication",
            ErrorKind::ExternalTool => "external_tool",
            ErrorKind::Verification => "verification",
            ErrorKind::Storage => "storage",
            ErrorKind::Internal => "internal",
        }
    }

    /// What the exit code means, in one line (the CLI's `--help` and the README show it).
    pub fn description(self) -> &'static str {
        match self {
            ErrorKind::Internal => "unexpected (internal) error",
            ErrorKind::InvalidInput => {
                "invalid input (malformed or refused certificate, id, address, port, file)"
            }
            ErrorKind::NotFound => {
                "not found (no identity in the home, party not registered, file missing)"
            }
            ErrorKind::Conflict => {
                "conflict (identity exists, party already registered, certificate registered under another id)"
            }
            ErrorKind::PeerFailure => {
                "peer failure (unreachable, aborted, disconnected, protocol violation)"
            }
            ErrorKind::Timeout => "timeout",
            ErrorKind::Authentication => {
                "authentication failure (fingerprint mismatch, peer presented another certificate)"
            }
            ErrorKind::ExternalTool => "external tool missing or failed",
            ErrorKind::Storage => "storage or file-system error",
            ErrorKind::Verification => "verification failed (a negotiated key or a decrypted round is inconsistent)",
        }
    }
}

/// Every exit code of the `secagg` binary with its one-line meaning, in order: success, the
/// usage error of argument parsing, and one per [`ErrorKind`].
pub fn exit_codes() -> Vec<(i32, &'static str)> {
    let mut codes = vec![
        (EXIT_SUCCESS, "success"),
        (EXIT_USAGE, "usage error (unknown option, missing argument)"),
    ];
    codes.extend(
        ErrorKind::ALL
            .iter()
            .map(|k| (k.exit_code(), k.description())),
    );
    codes.sort_by_key(|(code, _)| *code);
    codes
}

/// A failure as data: what a process run with `--error-format json` writes on stderr (one JSON
/// document on one line) so that whoever started it learns the kind without parsing prose.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorReport {
    /// The kind (`peer_failure`, …).
    pub kind: ErrorKind,
    /// The process exit code of that kind.
    pub exit_code: i32,
    /// What went wrong (the text after `error: ` in the human form).
    pub message: String,
    /// What to do about it, if anything useful can be said.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hint: Option<String>,
    /// The party the failure started at, when it is another party's ([`Origin::party`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub origin: Option<String>,
}

impl ErrorReport {
    /// A report of `kind` with `message` and `hint`.
    pub fn new(kind: ErrorKind, message: impl Into<String>, hint: Option<String>) -> Self {
        ErrorReport {
            kind,
            exit_code: kind.exit_code(),
            message: message.into(),
            hint,
            origin: None,
        }
    }

    /// The report of `err`.
    pub fn of(err: &Error) -> Self {
        ErrorReport {
            origin: err.origin().map(|o| o.party.clone()),
            ..ErrorReport::new(err.kind(), err.to_string(), err.hint().map(str::to_owned))
        }
    }

    /// The report in `stderr`: its last line that is an error report, if any (lines before it
    /// may be warnings).
    pub fn find_in(stderr: &str) -> Option<Self> {
        stderr
            .lines()
            .rev()
            .filter(|l| l.trim_start().starts_with('{'))
            .find_map(|l| serde_json::from_str(l).ok())
    }
}

impl fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn detail(message: impl Into<String>) -> Detail {
    Detail {
        message: message.into(),
        hint: None,
        origin: None,
    }
}

impl Error {
    /// An [`Error::InvalidInput`] with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput(detail(message))
    }
    /// An [`Error::NotFound`] with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(detail(message))
    }
    /// An [`Error::Conflict`] with `message`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict(detail(message))
    }
    /// An [`Error::PeerFailure`] with `message`.
    pub fn peer(message: impl Into<String>) -> Self {
        Error::PeerFailure(detail(message))
    }
    /// An [`Error::Timeout`] with `message`.
    pub fn timeout(message: impl Into<String>) -> Self {
        Error::Timeout(detail(message))
    }
    /// An [`Error::Authentication`] with `message`.
    pub fn authentication(message: impl Into<String>) -> Self {
        Error::Authentication(detail(message))
    }
    /// An [`Error::ExternalTool`] with `message`.
    pub fn external(message: impl Into<String>) -> Self {
        Error::ExternalTool(detail(message))
    }
    /// An [`Error::Verification`] with `message`.
    pub fn verification(message: impl Into<String>) -> Self {
        Error::Verification(detail(message))
    }
    /// An [`Error::PeerStorage`] with `message` (which names the party).
    pub fn peer_storage(message: impl Into<String>) -> Self {
        Error::PeerStorage(detail(message))
    }
    /// An [`Error::Internal`] with `message` (a bug or an impossible state).
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }
    /// An [`Error::Io`] for an operation described by `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
    /// An [`Error::Io`] whose context is "while {doing} `{path}`".
    pub fn io_path(doing: &str, path: &Path, source: std::io::Error) -> Self {
        Error::io(format!("while {doing} `{}`", path.display()), source)
    }
    /// An [`Error::Store`] for an operation described by `context`.
    pub fn store(context: impl Into<String>, source: rusqlite::Error) -> Self {
        Error::Store {
            context: context.into(),
            source,
        }
    }

    /// Attaches a hint (what the user can do); a no-op on kinds that carry none.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        if let Some(d) = self.detail_mut() {
            d.hint = Some(hint.into());
        }
        self
    }

    /// Prefixes the message with `context` (`while reading x.pem: ` before the message).
    pub fn context(self, context: impl fmt::Display) -> Self {
        match self {
            Error::Io { context: c, source } => Error::Io {
                context: format!("{context}: {c}"),
                source,
            },
            Error::Store { context: c, source } => Error::Store {
                context: format!("{context}: {c}"),
                source,
            },
            Error::Internal(m) => Error::Internal(format!("{context}: {m}")),
            mut other => {
                if let Some(d) = other.detail_mut() {
                    d.message = format!("{context}: {}", d.message);
                }
                other
            }
        }
    }

    /// Marks `party` as the party this failure started at, with its own words if it reported
    /// them (see [`Origin`]). Kept by [`Error::context`] and [`Error::with_hint`].
    pub fn with_origin(mut self, party: impl Into<String>, reason: Option<String>) -> Self {
        if let Some(d) = self.detail_mut() {
            d.origin = Some(Origin {
                party: party.into(),
                reason,
            });
        }
        self
    }

    /// The party this failure started at, when it is another party's.
    pub fn origin(&self) -> Option<&Origin> {
        self.detail().and_then(|d| d.origin.as_ref())
    }

    fn detail(&self) -> Option<&Detail> {
        match self {
            Error::InvalidInput(d)
            | Error::NotFound(d)
            | Error::Conflict(d)
            | Error::PeerFailure(d)
            | Error::Timeout(d)
            | Error::Authentication(d)
            | Error::ExternalTool(d)
            | Error::Verification(d)
            | Error::PeerStorage(d) => Some(d),
            Error::Io { .. } | Error::Store { .. } | Error::Internal(_) => None,
        }
    }

    fn detail_mut(&mut self) -> Option<&mut Detail> {
        match self {
            Error::InvalidInput(d)
            | Error::NotFound(d)
            | Error::Conflict(d)
            | Error::PeerFailure(d)
            | Error::Timeout(d)
            | Error::Authentication(d)
            | Error::ExternalTool(d)
            | Error::Verification(d)
            | Error::PeerStorage(d) => Some(d),
            Error::Io { .. } | Error::Store { .. } | Error::Internal(_) => None,
        }
    }

    /// The hint attached to this error, if any.
    pub fn hint(&self) -> Option<&str> {
        if let Some(d) = self.detail() {
            return d.hint.as_deref();
        }
        match self {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                Some("check the ownership and permissions of the secagg home directory")
            }
            Error::Store { .. } => Some(
                "another secagg process may hold the store; if the file is damaged, restore it from a backup",
            ),
            _ => None,
        }
    }

    /// The kind of this error, which decides the exit code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::PeerFailure(_) => ErrorKind::PeerFailure,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Authentication(_) => ErrorKind::Authentication,
            Error::ExternalTool(_) => ErrorKind::ExternalTool,
            Error::Verification(_) => ErrorKind::Verification,
            Error::Io { .. } | Error::Store { .. } | Error::PeerStorage(_) => ErrorKind::Storage,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_message_and_keeps_kind_and_hint() {
        let e = Error::invalid("not a certificate")
            .with_hint("give a PEM file")
            .context("while reading certificate `x.pem`");
        assert_eq!(
            e.to_string(),
            "while reading certificate `x.pem`: not a certificate"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(e.hint(), Some("give a PEM file"));
    }

    #[test]
    fn exit_codes_are_distinct() {
        let mut codes: Vec<i32> = exit_codes().iter().map(|(c, _)| *c).collect();
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len() + 2);
        let kinds: Vec<i32> = ErrorKind::ALL.iter().map(|k| k.exit_code()).collect();
        assert!(!kinds.contains(&EXIT_SUCCESS) && !kinds.contains(&EXIT_USAGE));
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_exit_code(k.exit_code()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
    }

    /// The README's "Exit codes" table is the documentation users read; it must say what
    /// [`exit_codes`] says, row for row.
    #[test]
    fn readme_exit_code_table_matches_the_kinds() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let section = readme
            .split("\n## Exit codes\n")
            .nth(1)
            .expect("README has an `## Exit codes` section");
        let rows: Vec<(i32, String)> = section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                Some((cells[0].parse().ok()?, cells[1].to_owned()))
            })
            .collect();
        let expected: Vec<(i32, String)> = exit_codes()
            .into_iter()
            .map(|(c, d)| (c, d.to_owned()))
            .collect();
        assert_eq!(
            rows, expected,
            "README.md's exit-code table differs from ErrorKind"
        );
    }

    #[test]
    fn an_error_report_round_trips_through_one_line_of_json() {
        let e = Error::peer("party node_a disconnected").with_hint("check node_a's log");
        let r = ErrorReport::of(&e);
        assert_eq!(r.exit_code, 6);
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        let stderr = format!("warning: something\n{line}\n");
        assert_eq!(ErrorReport::find_in(&stderr), Some(r));
        assert_eq!(ErrorReport::find_in("error: not json\n"), None);
    }
}
