//! Errors of the tokenize stage and of data preparation as a whole.

use std::path::PathBuf;

use ft_data::{DataError, RowRef};
use ft_template::TemplateError;

/// Errors from tokenizing, packing and the prepared-data cache.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// Reading a dataset failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The chat template could not be found or compiled.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Hashing, manifest or atomic-write failure.
    #[error(transparent)]
    Core(#[from] ft_core::Error),
    /// `tokenizer.json` cannot be loaded.
    #[error(
        "`{path}`: cannot load the tokenizer ({message}); expected a `tokenizer.json` written by HF tokenizers"
    )]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What the tokenizers crate said.
        message: String,
    },
    /// Rebuilding a tokenizer from a GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] crate::from_gguf::GgufTokenizerError),
    /// Encoding a text failed.
    #[error("{at}: tokenizing failed: {message}")]
    Encode {
        /// The row.
        at: RowRef,
        /// What the tokenizers crate said.
        message: String,
    },
    /// The tokenizer lacks a token ft needs.
    #[error("the tokenizer in `{dir}` has no {what}; set it in tokenizer_config.json")]
    MissingToken {
        /// The tokenizer directory.
        dir: PathBuf,
        /// Which token (`eos_token` …).
        what: &'static str,
    },
    /// Where to find the tokenizer is not known.
    #[error("{message}")]
    NoTokenizer {
        /// What is wrong and what to do.
        message: String,
    },
    /// A sample is longer than `sequence_len` with `excess_length_strategy: raise`.
    #[error(
        "{at}: {tokens} tokens, longer than `tokenize.sequence_len` = {max}; raise `sequence_len`, or set `excess_length_strategy: drop` or `truncate`"
    )]
    TooLong {
        /// The row.
        at: RowRef,
        /// Its length in tokens.
        tokens: usize,
        /// `sequence_len`.
        max: usize,
    },
    /// A sample could not be rendered or located (template error on one row).
    #[error("{at}: {source}")]
    Sample {
        /// The row.
        at: RowRef,
        /// The template error.
        #[source]
        source: TemplateError,
    },
    /// Nothing left to train on.
    #[error(
        "no training samples left after preprocessing ({reasons}); check the data and `template.roles_to_train`"
    )]
    NothingToTrain {
        /// Why samples were dropped.
        reasons: String,
    },
    /// A prepared-data file is damaged.
    #[error(
        "prepared data `{path}` is damaged ({message}); delete the directory `{dir}` and rerun `ft preprocess`"
    )]
    CorruptCache {
        /// The file.
        path: PathBuf,
        /// The directory to delete.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
}
