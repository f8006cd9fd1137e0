//! Errors of the GGUF export.
//!
//! Every variant names the file it concerns, the tensor or key when there is
//! one, and what to do about it.

use std::path::PathBuf;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    // ---- reading the model directory ----
    /// A file could not be read.
    #[error("reading `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is unusable or names an unsupported architecture.
    #[error(transparent)]
    Config(#[from] ft_arch::ArchError),
    /// A JSON file (index, tokenizer, adapter config) is not what it should be.
    #[error("`{path}`: {what}; {help}")]
    BadJson {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the key).
        what: String,
        /// What to do.
        help: &'static str,
    },
    /// The directory has no weights.
    #[error(
        "`{dir}` has no `model.safetensors` nor `model.safetensors.index.json`; point the export at a Hugging Face model directory (the output of `ft merge-lora` or `save_pretrained`)"
    )]
    NoWeights {
        /// The model directory.
        dir: PathBuf,
    },
    /// A safetensors file is malformed.
    #[error("`{path}` is not a valid safetensors file: {reason}; re-save the model")]
    BadSafetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A tensor has a dtype the exporter does not convert.
    #[error(
        "`{path}`: tensor `{tensor}` has dtype {dtype}; only F32, F16 and BF16 weights can be exported (dequantize or re-save the model in one of them)"
    )]
    UnsupportedDtype {
        /// The safetensors file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its dtype.
        dtype: String,
    },
    /// A tensor the architecture needs is absent.
    #[error(
        "`{dir}`: tensor `{tensor}` is missing (expected for {arch} with {layers} layers); the checkpoint is incomplete or not a {arch} model"
    )]
    MissingTensor {
        /// The model directory.
        dir: PathBuf,
        /// The HF tensor name.
        tensor: String,
        /// The `model_type`.
        arch: &'static str,
        /// `num_hidden_layers`.
        layers: usize,
    },
    /// A tensor has no GGUF name (not part of the supported architectures).
    #[error(
        "`{path}`: tensor `{tensor}` has no GGUF counterpart for {arch}; remove it from the checkpoint (e.g. merge LoRA weights first with `ft merge-lora`)"
    )]
    UnknownTensor {
        /// The safetensors file.
        path: PathBuf,
        /// The HF tensor name.
        tensor: String,
        /// The `model_type`.
        arch: &'static str,
    },
    /// A tensor's shape disagrees with `config.json`.
    #[error("`{path}`: tensor `{tensor}` has shape {found:?}, expected {expected}; {help}")]
    BadShape {
        /// The safetensors file.
        path: PathBuf,
        /// The HF tensor name.
        tensor: String,
        /// The shape found (PyTorch order).
        found: Vec<usize>,
        /// The shape or rule expected.
        expected: String,
        /// What to do.
        help: &'static str,
    },

    // ---- tokenizer ----
    /// The tokenizer files are missing or unusable.
    #[error("`{path}`: {what}; {help}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
        /// What to do.
        help: String,
    },
    /// The pre-tokenizer hash is not in llama.cpp's table.
    #[error(
        "`{path}`: the BPE pre-tokenizer is not one llama.cpp knows (chkhsh {chkhsh}); set `tokenizer_pre` in the export options (the `export.tokenizer_pre` override) to the llama.cpp pre-tokenizer name whose regex this tokenizer uses (e.g. `llama-bpe`, `qwen2`, `smollm`, `gpt-2`)"
    )]
    UnknownPreTokenizer {
        /// `tokenizer.json`.
        path: PathBuf,
        /// The hash of the check text's token ids.
        chkhsh: String,
    },

    // ---- options ----
    /// An option is invalid.
    #[error("export option `{option}`: {what}")]
    BadOption {
        /// The option.
        option: &'static str,
        /// What is wrong and what to do.
        what: String,
    },

    // ---- writing ----
    /// Writing the GGUF failed.
    #[error(transparent)]
    Gguf(#[from] ft_gguf::Error),
    /// Quantizing a tensor failed.
    #[error("quantizing tensor `{tensor}` to {ty}: {source}")]
    Quant {
        /// The GGUF tensor name.
        tensor: String,
        /// The target type.
        ty: ft_gguf::GgmlType,
        /// The quantizer's error.
        #[source]
        source: ft_gguf::QuantError,
    },
    /// Writing a side file (Modelfile) failed.
    #[error(transparent)]
    Write(#[from] ft_core::Error),
}

impl ExportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(
        path: impl Into<PathBuf>,
        what: impl Into<String>,
        help: &'static str,
    ) -> Self {
        Self::BadJson {
            path: path.into(),
            what: what.into(),
            help,
        }
    }
}
