//! `ft-gguf`: GGUF v3 files and ggml quantization, without burn.
//!
//! * [`reader`]: [`GgufFile::open`] memory-maps a GGUF file, parses header,
//!   metadata and tensor infos under explicit [`Limits`], and serves tensor
//!   data by name; [`Gguf::parse`] does the same on bytes in memory.
//! * [`writer`]: [`GgufWriter`] writes a GGUF file tensor by tensor through
//!   `ft_core::atomic::AtomicFile`, byte-identical to gguf-py's `GGUFWriter`.
//! * [`quant`]: ggml block types (`#[repr(C)]`, size-asserted) with scalar
//!   reference quantizers and dequantizers for F32, F16, BF16, Q8_0, Q4_0,
//!   Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K, and rayon-parallel whole-tensor
//!   entry points that are byte-identical to the scalar path.
//! * [`hf`]: [`HfView`] reads a GGUF model as a Hugging Face checkpoint:
//!   tensors by HF name, dequantized to `f32`, llama.cpp's q/k row
//!   permutation undone, and the transformers `config.json` rebuilt from
//!   the metadata.
//!
//! # GGUF layout (version 3, little-endian)
//!
//! ```text
//! offset 0   magic "GGUF" (47 47 55 46)
//!        4   u32 version (3; version 2 has the same layout and is accepted)
//!        8   u64 tensor count
//!       16   u64 metadata count
//!       24   metadata: string key, u32 value type, value            (× count)
//!            tensor infos: string name, u32 n_dims, u64 ne[n_dims],
//!                          u32 ggml type, u64 offset                 (× count)
//!            zero padding to `general.alignment` (u32, default 32)
//!            data section: each tensor at `data start + offset`, each offset a
//!                          multiple of the alignment
//! ```
//!
//! Strings are a `u64` byte length and UTF-8 bytes, not NUL-terminated.
//! Value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool (one
//! byte), 8 string, 9 array (`u32` element type, `u64` count, elements;
//! arrays may nest), 10 u64, 11 i64, 12 f64. `ne[0]` is the fastest-varying
//! dimension: a PyTorch `[out, in]` weight is stored with `ne = [in, out]`.
//! The specification is ggml's `docs/gguf.md`; the byte-level reference used
//! for the tests is gguf-py (`tests/fixtures/gen/gguf_quant.py`).
#![warn(missing_docs)]

pub mod error;
pub mod hf;
pub mod quant;
pub mod reader;
pub mod types;
pub mod value;
pub mod writer;

pub use error::{Error, Malformed, QuantError, Result, WriteError};
pub use hf::{HfTensor, HfView, permute_rows, unpermute_rows};
pub use reader::{Gguf, GgufFile, Limits, TensorInfo};
pub use types::{GgmlType, ValueType};
pub use value::{Array, Metadata, Value};
pub use writer::{GgufWriter, TensorSink, TensorSpec};
