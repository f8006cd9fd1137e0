//! `ft-merge`: merging a trained LoRA adapter into its base model.
//!
//! This crate owns the `merge` section of `train.yml` ([`MergeConfig`]).
//! When the section is present, `ft run` merges after training; `ft
//! merge-lora` runs the merge alone.
#![warn(missing_docs)]

pub mod config;

pub use config::{MergeBase, MergeConfig, MergeDtype, parse_size};
