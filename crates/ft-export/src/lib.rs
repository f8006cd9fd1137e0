//! `ft-export`: writing the trained model as GGUF for llama.cpp and Ollama.
//!
//! This crate owns the `export` section of `train.yml` ([`ExportConfig`]).
//! When the section is present, `ft run` exports after training (and
//! merging); `ft export` runs the export alone.
#![warn(missing_docs)]

pub mod config;

pub use config::{ExportConfig, GgufType};
