//! `ft-model`: decoder models on burn, their config sections, and the choice
//! of compute device.
//!
//! This crate owns two sections of `train.yml`:
//! * `model` ([`ModelConfig`]): which base model, in which dtype, on which
//!   device, quantized to NF4 or not;
//! * `adapter` ([`AdapterConfig`]): the LoRA / QLoRA adapter trained on it.
//!
//! [`device`] maps the configured [`DeviceChoice`] to a burn `Device`
//! (burn 0.22 picks the backend at run time from the device: `flex` on CPU,
//! `cuda` or `wgpu` when built with those features).
//!
//! Models: [`arch`] holds the decoder architectures (Llama, Mistral, Qwen2,
//! Qwen3) as burn modules whose fields carry the HF checkpoint names;
//! [`load_hf_dir`] builds one from a Hugging Face directory through
//! [`weights`] (memory-mapped safetensors, f32/f16/bf16 → f32), and
//! [`load_gguf`] from a llama.cpp GGUF file (dequantized to f32).
#![warn(missing_docs)]

pub mod arch;
pub mod config;
pub mod device;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod heads;
pub mod hub;
pub mod load;
pub mod lora;
pub mod nf4_cache;
pub mod weights;

pub use arch::{CausalLm, DecoderSpec, PackedBatch};
pub use config::{AdapterConfig, AdapterKind, ComputeDtype, LoraInit, LoraTarget, ModelConfig};
pub use device::{DeviceChoice, DeviceError, is_cuda, resolve_device};
pub use error::ModelError;
pub use generate::{GenerateError, GenerateOptions, Generation, KvCache, StopReason, generate};
pub use gguf::load_gguf;
pub use load::{load_hf_dir, load_hf_dir_with_unused, load_model, load_model_cached};
pub use nf4_cache::{Nf4Cache, Nf4CacheReport, Nf4CacheStatus};
pub use weights::Nf4Load;
