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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
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

impl ErrorKind {
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
}

fn detail(message: impl Into<String>) -> Detail {
    Detail {
        message: message.into(),
        hint: None,
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

    /// Prefixes the message with `context` ("while reading `x.pem`: <message>").
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

    fn detail_mut(&mut self) -> Option<&mut Detail> {
        match self {
            Error::InvalidInput(d)
            | Error::NotFound(d)
            | Error::Conflict(d)
            | Error::PeerFailure(d)
            | Error::Timeout(d)
            | Error::Authentication(d)
            | Error::ExternalTool(d)
            | Error::Verification(d) => Some(d),
            Error::Io { .. } | Error::Store { .. } | Error::Internal(_) => None,
        }
    }

    /// The hint attached to this error, if any.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::InvalidInput(d)
            | Error::NotFound(d)
            | Error::Conflict(d)
            | Error::PeerFailure(d)
            | Error::Timeout(d)
            | Error::Authentication(d)
            | Error::ExternalTool(d)
            | Error::Verification(d) => d.hint.as_deref(),
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
            Error::Io { .. } | Error::Store { .. } => ErrorKind::Storage,
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
        let kinds = [
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
        let mut codes: Vec<i32> = kinds.iter().map(|k| k.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&0) && !codes.contains(&2));
    }
}
