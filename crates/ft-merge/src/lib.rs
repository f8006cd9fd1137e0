//! `ft-merge`: merging a trained LoRA adapter into its base model.
//!
//! This crate owns the `merge` section of `train.yml` ([`MergeConfig`]).
//! When the section is present, `ft run` merges after training; `ft
//! merge-lora` runs the merge alone.
//!
//! [`merge_lora`] folds a PEFT LoRA adapter into an HF safetensors model (or
//! a GGUF file, written out as the HF model it stands for),
//! `W' = W + scale · B·A` in `f32`, streaming one tensor at a time into
//! shards named and split as transformers' `save_pretrained` does, so peak
//! memory stays near one shard however large the model. With
//! [`BaseWeights::Dequantized`] the adapter is added to the NF4 round trip of
//! the base (what QLoRA trained against) and the [`MergeReport`] records how
//! far that moves each weight.
//!
//! ```no_run
//! use ft_merge::{MergeOptions, merge_lora};
//! let report = merge_lora(&MergeOptions::new("base/", "adapter/", "merged/"))?;
//! println!("{} shards, {} bytes", report.shards.len(), report.total_size);
//! # Ok::<(), ft_merge::MergeError>(())
//! ```
#![warn(missing_docs)]

pub mod adapter;
mod base;
pub mod config;
pub mod error;
pub mod merge;
mod st;

pub use adapter::{LoraSettings, read_config as read_adapter_config};
pub use config::{MergeBase, MergeConfig, MergeDtype, parse_size};
pub use error::MergeError;
pub use merge::{
    BaseWeights, MergeOptions, MergeReport, ShardReport, TOKENIZER_FILES, TensorReport, merge_lora,
};
