//! Errors building and loading models.

use std::path::PathBuf;

/// Errors reading a model's config or weights.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `config.json` could not be read or parsed, or names an unknown
    /// `model_type`.
    #[error(transparent)]
    Config(#[from] ft_arch::ArchError),
    /// The architecture is known to `ft` but has no burn implementation yet.
    #[error(
        "model_type `{model_type}` is recognised but not implemented by ft-model yet; implemented: llama, mistral, qwen2, qwen3"
    )]
    NotImplemented {
        /// The HF `model_type`.
        model_type: String,
    },
    /// A config value this implementation cannot honour.
    #[error("{origin}: unsupported config: {what}")]
    UnsupportedConfig {
        /// The config file or model file.
        origin: PathBuf,
        /// What is unsupported and why.
        what: String,
    },
    /// A file could not be opened or read.
    #[error("reading `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The directory has neither `model.safetensors` nor an index.
    #[error(
        "`{dir}` has no model.safetensors or model.safetensors.index.json; \
         give an HF model directory saved with safetensors (or a .gguf file)"
    )]
    NoWeights {
        /// The model directory.
        dir: PathBuf,
    },
    /// A weight file is truncated or malformed.
    #[error("`{path}` is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The architecture needs a tensor the checkpoint does not have.
    #[error(
        "tensor `{name}` is missing from `{origin}`; is this checkpoint of the architecture its config names?"
    )]
    MissingTensor {
        /// The HF tensor name.
        name: String,
        /// The model directory or file.
        origin: PathBuf,
    },
    /// A tensor's shape disagrees with the config.
    #[error(
        "tensor `{name}` in `{origin}` has shape {found:?}, but config.json implies {expected:?}"
    )]
    ShapeMismatch {
        /// The HF tensor name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
        /// The model directory or file.
        origin: PathBuf,
    },
    /// A tensor is stored in a dtype the loader does not convert.
    #[error(
        "tensor `{name}` in `{path}` has dtype {dtype}; ft loads f32, f16 and bf16 safetensors"
    )]
    UnsupportedDtype {
        /// The HF tensor name.
        name: String,
        /// The stored dtype.
        dtype: String,
        /// The file.
        path: PathBuf,
    },
    /// Reading a GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] ft_gguf::Error),
    /// Quantizing a weight to NF4 failed (e.g. a non-finite value).
    #[error("quantizing `{name}` to NF4: {message}; check the checkpoint for NaN/Inf weights")]
    Quantize {
        /// The HF tensor name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A LoRA adapter does not fit the model, or its files are unusable.
    #[error("adapter `{path}`: {message}")]
    Adapter {
        /// The adapter directory or file.
        path: PathBuf,
        /// What is wrong, naming the key or tensor, and the fix.
        message: String,
    },
}
