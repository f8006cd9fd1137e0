//! `ft-export`: writing the trained model as GGUF for llama.cpp and Ollama.
//!
//! This crate owns the `export` section of `train.yml` ([`ExportConfig`]).
//! When the section is present, `ft run` exports after training (and
//! merging); `ft export` runs the export alone.
//!
//! * [`export_gguf`]: an HF model directory (config.json, safetensors,
//!   tokenizer files) to one GGUF file that llama.cpp loads, matching what
//!   llama.cpp's `convert_hf_to_gguf.py` writes for `--outtype
//!   f32|f16|bf16|q8_0` (names, q/k permutation, hyperparameters, tokenizer
//!   metadata, tensor bytes) and `llama-quantize`'s per-tensor type choices
//!   for the 4/5/6-bit types ([`tensors`] lists the rules and deviations);
//!   optionally an Ollama `Modelfile` ([`modelfile`]).
//! * [`export_lora_gguf`]: a PEFT adapter directory to a GGUF LoRA adapter
//!   for `llama-cli --lora`, as llama.cpp's `convert_lora_to_gguf.py` writes.
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod export;
pub mod hf;
pub mod lora;
pub mod modelfile;
pub mod pre_hashes;
pub mod tensors;
pub mod vocab;

pub use config::{ExportConfig, GgufType};
pub use error::ExportError;
pub use export::{ExportOptions, ExportReport, PROVENANCE_KEYS, export_gguf};
pub use lora::{LoraExportOptions, LoraExportReport, export_lora_gguf};
pub use modelfile::ModelfileOptions;
