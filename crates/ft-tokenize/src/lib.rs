//! `ft-tokenize`: tokenization, label masks, packing and the prepared-data
//! cache, and the prepare stage that ties data, template and tokenizer
//! together.
//!
//! This crate owns the `tokenize` section of `train.yml`
//! ([`TokenizeConfig`]).
//!
//! * [`tokenizer`]: HF `tokenizer.json` via the `tokenizers` crate (pure
//!   Rust: `fancy-regex`, no oniguruma), with [`pretok`]'s scanner in place
//!   of the byte-level regex.
//! * [`from_gguf`]: an HF tokenizer rebuilt from a GGUF file's
//!   `tokenizer.ggml.*` metadata.
//! * [`mask`]: trained byte spans → token mask through offsets.
//! * [`process`]: one record → ids + mask, `sequence_len` handling, in
//!   parallel (rayon).
//! * [`pack`](mod@pack): best-fit-decreasing packing, padding, positions and
//!   boundaries for block-diagonal attention.
//! * [`store`]: the on-disk shards.
//! * [`prepare`]: the stage (cache key, atomic output, report).
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod from_gguf;
pub mod mask;
pub mod pack;
pub mod prepare;
pub mod pretok;
pub mod process;
pub mod store;
pub mod tokenizer;

pub use config::{ExcessLengthStrategy, TokenizeConfig};
pub use error::TokenizeError;
pub use from_gguf::{GgufTokenizer, tokenizer_from_gguf};
pub use pack::{PackedRow, PaddedRow};
pub use prepare::{PrepareReport, PrepareStage, Prepared, debug_pieces};
pub use tokenizer::HfTokenizer;
