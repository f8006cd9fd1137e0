//! `ft-data`: where training examples come from and what shape they have.
//!
//! This crate owns the `data` section of `train.yml` ([`DataConfig`]): the
//! list of datasets (local parquet or jsonl files), each with a `type:` that
//! says how its rows become conversations, plus the validation split.
//!
//! * [`source`]: streaming readers for JSON lines and parquet (row groups in
//!   record batches, only the needed columns), rows as JSON objects.
//! * [`format`]: `type:` → [`Sample`] (a conversation or labelled segments).
//! * [`load`](mod@load): every dataset of a config, deterministic shuffle,
//!   validation split.
//!
//! Every error names the file, the row (jsonl: 1-based line; parquet:
//! 0-based row) and the field, and says what to do.
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod format;
pub mod load;
pub mod sample;
pub mod source;

pub use config::{DataConfig, DatasetConfig, ValSetSize};
pub use error::{DataError, RowKind, RowRef};
pub use load::{Splits, input_files, load, shuffle};
pub use sample::{Message, Origin, Record, Sample, Segment};
