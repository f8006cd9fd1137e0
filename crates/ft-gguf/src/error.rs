//! Errors of `ft-gguf`, grouped by category: I/O, malformed input files,
//! lookups, quantization arguments, and misuse of the writer.

use std::path::PathBuf;

use crate::types::{GgmlType, ValueType};

/// Every error `ft-gguf` returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed.
    #[error("{op} `{path}`: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Creating or committing an atomic output file failed.
    #[error(transparent)]
    Atomic(#[from] ft_core::Error),

    /// The file is not a valid GGUF file (or exceeds a [`Limits`](crate::Limits) cap).
    #[error("`{path}` is not a valid GGUF file: at byte {offset} ({at}): {kind}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Byte offset where the problem was found.
        offset: u64,
        /// Which part of the file: `"header"`, `"metadata key `x`"`,
        /// `"tensor `y`"` …
        at: String,
        /// What was expected and what was found.
        kind: Malformed,
    },

    /// No tensor of that name in the file.
    #[error("`{path}` has no tensor named `{name}`")]
    TensorNotFound {
        /// The file.
        path: PathBuf,
        /// The requested name.
        name: String,
    },

    /// A metadata key is missing or has another type than the caller needs.
    #[error("`{path}`: metadata key `{key}` {problem}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// "is missing", "is a string, expected u32" …
        problem: String,
    },

    /// The file cannot be read as a Hugging Face checkpoint
    /// ([`HfView`](crate::hf::HfView)): an architecture, tensor or setting
    /// with no HF counterpart.
    #[error("`{path}` cannot be read as a Hugging Face model: {problem}; {help}")]
    NotHf {
        /// The file.
        path: PathBuf,
        /// What has no HF counterpart, naming the key or tensor.
        problem: String,
        /// What to do about it.
        help: &'static str,
    },

    /// A quantization or dequantization request that cannot be served.
    #[error(transparent)]
    Quant(#[from] QuantError),

    /// The writer was used in a way that would produce an invalid file.
    #[error("writing `{path}`: {kind}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// What was wrong.
        kind: WriteError,
    },
}

/// Ways a file can be malformed. Each says what was expected and what was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Malformed {
    /// The file ends before a field does.
    #[error(
        "file ends early: needed {needed} more bytes, {available} left; the file is truncated (re-download or re-export it)"
    )]
    Truncated {
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// The first four bytes are not `GGUF`.
    #[error("bad magic {found:02x?}, expected \"GGUF\" (47 47 55 46); this is not a GGUF file")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// A version other than 2 or 3.
    #[error("unsupported GGUF version {found}, expected 2 or 3")]
    BadVersion {
        /// The version found.
        found: u32,
    },
    /// A count or length above a [`Limits`](crate::Limits) cap.
    #[error(
        "{what} is {found}, above the limit of {max}; raise the limit in `Limits` only for a file you trust"
    )]
    LimitExceeded {
        /// Which count ("string length", "array length", "tensor count" …).
        what: &'static str,
        /// The value in the file.
        found: u64,
        /// The cap.
        max: u64,
    },
    /// A count that the rest of the file cannot possibly hold.
    #[error(
        "{what} is {found}, but only {available} bytes remain (each element needs at least {min_size})"
    )]
    CountPastEof {
        /// Which count.
        what: &'static str,
        /// The count in the file.
        found: u64,
        /// Minimum encoded size of one element.
        min_size: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// A metadata value type id outside 0..=12.
    #[error("unknown metadata value type id {found}, expected 0..=12")]
    UnknownValueType {
        /// The id found.
        found: u32,
    },
    /// A ggml tensor type id that ggml does not define.
    #[error("unknown ggml tensor type id {found}")]
    UnknownTensorType {
        /// The id found.
        found: u32,
    },
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8 ({reason})")]
    InvalidUtf8 {
        /// The decoder's message.
        reason: String,
    },
    /// A bool byte other than 0 or 1.
    #[error("bool byte is {found}, expected 0 or 1")]
    BadBool {
        /// The byte found.
        found: u8,
    },
    /// A key or tensor name that appears twice.
    #[error("duplicate {what} `{name}`")]
    Duplicate {
        /// "metadata key" or "tensor name".
        what: &'static str,
        /// The repeated name.
        name: String,
    },
    /// `general.alignment` is not a non-zero power of two stored as u32.
    #[error("general.alignment must be a non-zero power of two stored as u32, found {found}")]
    BadAlignment {
        /// The value found, formatted.
        found: String,
    },
    /// A tensor with more than 4 or with 0 dimensions.
    #[error("tensor has {found} dimensions, expected 1 to 4")]
    BadDims {
        /// The dimension count found.
        found: u32,
    },
    /// A dimension or element count too large for ggml (`int64_t`).
    #[error("tensor shape {shape:?} has more elements than ggml can address")]
    ShapeOverflow {
        /// The shape.
        shape: Vec<u64>,
    },
    /// A row length that is not a whole number of blocks.
    #[error("first dimension {ne0} is not a multiple of the {ty} block size {block}")]
    PartialBlock {
        /// The first (fastest) dimension.
        ne0: u64,
        /// The tensor type.
        ty: GgmlType,
        /// Its block size.
        block: usize,
    },
    /// A tensor offset that is not a multiple of the alignment.
    #[error("tensor data offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned {
        /// The offset (relative to the data section).
        offset: u64,
        /// The alignment.
        alignment: u64,
    },
    /// A tensor whose data extends past the end of the file.
    #[error("tensor data [{start}, {end}) extends past the end of the file ({file_len} bytes)")]
    DataPastEof {
        /// Absolute start of the data.
        start: u64,
        /// Absolute end of the data.
        end: u64,
        /// File length.
        file_len: u64,
    },
    /// Two tensors whose data ranges overlap.
    #[error(
        "tensor data overlaps tensor `{other}`: [{start}, {end}) vs [{other_start}, {other_end})"
    )]
    Overlap {
        /// The other tensor.
        other: String,
        /// This tensor's data range start (relative).
        start: u64,
        /// This tensor's data range end (relative).
        end: u64,
        /// The other tensor's start.
        other_start: u64,
        /// The other tensor's end.
        other_end: u64,
    },
    /// Nested arrays deeper than the cap.
    #[error("arrays nested {found} deep, above the limit of {max}")]
    TooDeep {
        /// Depth reached.
        found: u32,
        /// The cap.
        max: u32,
    },
    /// A tensor name that llama.cpp cannot hold (`GGML_MAX_NAME` = 64 with NUL).
    #[error("tensor name is {found} bytes long, llama.cpp allows at most 63")]
    NameTooLong {
        /// The name's length in bytes.
        found: u64,
    },
}

/// Problems with a quantization request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// This crate has no (de)quantizer for the type.
    #[error(
        "{op} to/from {ty} is not implemented; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"
    )]
    Unsupported {
        /// "quantize" or "dequantize".
        op: &'static str,
        /// The type asked for.
        ty: GgmlType,
    },
    /// The element count is not a whole number of blocks.
    #[error("{ty} needs a multiple of {block} elements (whole blocks), got {len}")]
    PartialBlock {
        /// The type.
        ty: GgmlType,
        /// Its block size.
        block: usize,
        /// The element count given.
        len: usize,
    },
    /// The byte count is not a whole number of blocks.
    #[error("{ty} data must be a multiple of {type_size} bytes (whole blocks), got {len}")]
    PartialBytes {
        /// The type.
        ty: GgmlType,
        /// Bytes per block.
        type_size: usize,
        /// The byte count given.
        len: usize,
    },
    /// Row length not a multiple of the block size (rows must not share blocks).
    #[error(
        "{ty}: row length {row_len} is not a multiple of the block size {block}, or {len} elements are not whole rows"
    )]
    BadRows {
        /// The type.
        ty: GgmlType,
        /// Block size.
        block: usize,
        /// The row length given.
        row_len: usize,
        /// The element count.
        len: usize,
    },
}

/// Misuse of [`GgufWriter`](crate::GgufWriter).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    /// Two tensors with one name.
    #[error("tensor `{name}` is declared twice")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// A name too long for llama.cpp.
    #[error("tensor name `{name}` is {len} bytes, llama.cpp allows at most 63")]
    NameTooLong {
        /// The name.
        name: String,
        /// Its byte length.
        len: usize,
    },
    /// A shape that is empty, has more than 4 dims, or is not whole blocks.
    #[error("tensor `{name}` has invalid shape {shape:?} for {ty}: {reason}")]
    BadShape {
        /// The name.
        name: String,
        /// The shape (ggml order).
        shape: Vec<u64>,
        /// The type.
        ty: GgmlType,
        /// Why.
        reason: &'static str,
    },
    /// `general.alignment` present but not a power-of-two u32.
    #[error("metadata general.alignment must be a non-zero power-of-two u32, got {found}")]
    BadAlignment {
        /// What was given.
        found: String,
    },
    /// Tensors must be written in declaration order.
    #[error("expected data for tensor `{expected}` next (declaration order), got `{found}`")]
    OutOfOrder {
        /// The next declared tensor.
        expected: String,
        /// The one given.
        found: String,
    },
    /// More tensors written than declared.
    #[error("tensor `{found}` written but all declared tensors are already written")]
    Extra {
        /// The one given.
        found: String,
    },
    /// Wrong byte count for a tensor.
    #[error("tensor `{name}` needs {expected} bytes, got {found}")]
    SizeMismatch {
        /// The name.
        name: String,
        /// Bytes its shape and type need.
        expected: u64,
        /// Bytes given.
        found: u64,
    },
    /// `finish` before every declared tensor was written.
    #[error("finished with {missing} declared tensors unwritten, the first being `{first}`")]
    Missing {
        /// How many.
        missing: usize,
        /// The first unwritten one.
        first: String,
    },
    /// An earlier tensor write failed part-way; the file cannot be completed.
    #[error(
        "writing tensor `{name}` failed part-way; the output is incomplete and will not be committed: start over"
    )]
    Aborted {
        /// The tensor whose write failed.
        name: String,
    },
    /// A metadata value gguf cannot encode (e.g. a nested array deeper than the reader allows).
    #[error("metadata key `{key}`: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The malformation, if this is a [`Error::Malformed`]; handy in tests
    /// and for callers that react to specific problems.
    pub fn malformed(&self) -> Option<&Malformed> {
        match self {
            Error::Malformed { kind, .. } => Some(kind),
            _ => None,
        }
    }

    pub(crate) fn wrong_type(
        path: PathBuf,
        key: &str,
        found: Option<ValueType>,
        expected: &str,
    ) -> Self {
        let problem = match found {
            None => format!("is missing (expected {expected})"),
            Some(t) => format!("is {t}, expected {expected}"),
        };
        Error::Metadata {
            path,
            key: key.to_owned(),
            problem,
        }
    }
}
