//! Errors from reading datasets, each naming the file, the row and the field.

use std::fmt;
use std::path::PathBuf;

/// Where in a dataset file something was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRef {
    /// The file.
    pub file: PathBuf,
    /// For jsonl: the 1-based line number; for parquet: the 0-based row
    /// index within the file (as pandas and `datasets` count them).
    pub row: usize,
    /// Which of the two numbering schemes `row` uses.
    pub kind: RowKind,
}

/// How [`RowRef::row`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// A 1-based line of a JSON-lines file.
    Line,
    /// A 0-based row of a parquet file.
    Row,
}

impl fmt::Display for RowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            RowKind::Line => write!(f, "`{}` line {}", self.file.display(), self.row),
            RowKind::Row => write!(f, "`{}` row {}", self.file.display(), self.row),
        }
    }
}

/// Errors from loading datasets.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory could not be read.
    #[error("reading `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A dataset directory holds no usable file.
    #[error("`{path}` holds no .parquet or .jsonl file{}; put data files there or point `path` at a file", split.as_ref().map(|s| format!(" whose name starts with `{s}`")).unwrap_or_default())]
    NoFiles {
        /// The directory.
        path: PathBuf,
        /// The split prefix that was looked for.
        split: Option<String>,
    },
    /// A file has an extension ft cannot read.
    #[error("`{path}` is neither .parquet nor .jsonl; convert it to one of them")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A JSON-lines line is not one JSON object (truncated file, stray text).
    #[error(
        "{at}: not a JSON object ({message}); expected one complete JSON object per line — fix or delete this line"
    )]
    BadJsonLine {
        /// The line.
        at: RowRef,
        /// What the JSON parser said.
        message: String,
    },
    /// A parquet file could not be opened or decoded.
    #[error(
        "`{path}`: cannot read as parquet ({message}); the file is corrupt or not parquet — re-export it (e.g. `pandas.DataFrame.to_parquet`)"
    )]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the parquet reader said.
        message: String,
    },
    /// A parquet column has a type ft does not convert.
    #[error(
        "`{path}`: column `{column}` has type {found}, which ft cannot read; expected strings, numbers, booleans, lists or structs of them"
    )]
    UnsupportedColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// Its Arrow type.
        found: String,
    },
    /// A required field (column or message key) is absent.
    #[error(
        "{at}: missing field `{field}` (found {available}); set the dataset's field mapping (e.g. `field_messages`, `message_field_role`) to the name your data uses"
    )]
    MissingField {
        /// The row.
        at: RowRef,
        /// The field that was looked for (a path such as `messages[2].role`).
        field: String,
        /// The fields present there.
        available: String,
    },
    /// A field has the wrong JSON/Arrow type.
    #[error(
        "{at}: field `{field}` should be {expected}, found {found}; fix the row (ft does not convert types) or point the field mapping at the right field"
    )]
    WrongType {
        /// The row.
        at: RowRef,
        /// The field.
        field: String,
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// A conversation without messages.
    #[error(
        "{at}: field `{field}` is an empty conversation; every row needs at least one message — remove the row"
    )]
    EmptyConversation {
        /// The row.
        at: RowRef,
        /// The messages field.
        field: String,
    },
    /// A message role that is neither canonical nor a configured alias.
    #[error(
        "{at}: field `{field}` has unknown role `{role}`; known roles: {known}; map it with the dataset's `roles:` (e.g. `roles: {{assistant: [{role}]}}`)"
    )]
    UnknownRole {
        /// The row.
        at: RowRef,
        /// The field (e.g. `messages[1].role`).
        field: String,
        /// The role found.
        role: String,
        /// The names accepted.
        known: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
