//! The error type shared by `ft-core`'s helpers.

use std::path::PathBuf;

/// Errors from core I/O helpers (hashing, atomic writes, manifests).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed on a path.
    #[error("{op} `{path}`: {source}")]
    Io {
        /// What was being done ("reading", "writing", "renaming into place" …).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A manifest file exists but cannot be parsed.
    #[error("manifest `{path}` is corrupt ({source}); delete the directory `{dir}` and rerun")]
    CorruptManifest {
        /// The manifest file.
        path: PathBuf,
        /// Its directory (the stage output), which the user may delete.
        dir: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Serialising a value to JSON failed.
    #[error("serialising {what} to JSON: {source}")]
    Json {
        /// What was being serialised.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Wraps an I/O error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
