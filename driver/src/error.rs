//! The driver's typed errors. Each names what was wrong and where.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("archive entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },
    #[error("invalid image {source_name}: {reason}")]
    InvalidImage { source_name: String, reason: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("no such {kind}: {name}")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} is ambiguous: {matches} matches")]
    Ambiguous {
        kind: &'static str,
        name: String,
        matches: usize,
    },
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    InUse(String),
    #[error("too many layers: {count} exceed the {limit} this kernel's overlayfs can mount")]
    TooManyLayers { count: usize, limit: usize },
    #[error("mounting {target}: {reason}")]
    Mount { target: PathBuf, reason: String },
    #[error("{0} changed concurrently; try again")]
    Conflict(String),
    /// What a registry did wrong, or refused; never carries credentials.
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("not supported here: {0}")]
    Unsupported(String),
    #[error("corrupt metadata {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Attach what was being done to an I/O error.
pub trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|errno| Error::Io {
            context: context(),
            source: std::io::Error::from(errno),
        })
    }
}

pub fn entry_error(entry: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Entry {
        entry: entry.into(),
        reason: reason.into(),
    }
}
