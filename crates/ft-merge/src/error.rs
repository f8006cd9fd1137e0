//! Errors of the LoRA merge. Every message names the file and, where there is
//! one, the tensor or key, and says what to do.

use std::path::PathBuf;

/// Everything that can stop a merge.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    // ---- files -------------------------------------------------------------
    /// A file or directory the merge needs is not there.
    #[error("{what} `{path}` not found; {help}")]
    MissingFile {
        /// What the file is ("adapter config", "base model weights" …).
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// What to do about it.
        help: &'static str,
    },
    /// An I/O operation failed.
    #[error("{op} `{path}`: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An atomic write (ft-core) failed.
    #[error(transparent)]
    Core(#[from] ft_core::Error),
    /// A JSON file could not be parsed or has the wrong shape.
    #[error("`{path}` is not valid JSON of the expected form ({source}); {help}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
        /// What to do about it.
        help: &'static str,
    },
    /// A safetensors file has an invalid header.
    #[error("`{path}` is not a valid safetensors file ({source}); re-save it with `safetensors`")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// `model.safetensors.index.json` names a tensor that is not in its shard,
    /// or a tensor appears in two shards.
    #[error("`{path}`: {problem}; re-save the base model with `save_pretrained`")]
    BadIndex {
        /// The index file (or shard) involved.
        path: PathBuf,
        /// What is inconsistent, naming the tensor.
        problem: String,
    },

    /// Reading a GGUF base model failed (the message names the file and the
    /// tensor or metadata key).
    #[error("GGUF base model: {0}")]
    Gguf(#[from] ft_gguf::Error),
    /// A GGUF base model has something the merge cannot turn into an HF
    /// model (an unmapped tensor, a type ft cannot dequantize).
    #[error("GGUF base model `{path}`: {problem}; {help}")]
    GgufBase {
        /// The GGUF file.
        path: PathBuf,
        /// What is wrong, naming the tensor or key.
        problem: String,
        /// What to do about it.
        help: &'static str,
    },

    // ---- the adapter -------------------------------------------------------
    /// `adapter_config.json` asks for a PEFT feature this merge does not do.
    #[error("`{path}`: unsupported PEFT option `{option}` = {value}; {help}")]
    UnsupportedPeftOption {
        /// The adapter config file.
        path: PathBuf,
        /// The option key.
        option: &'static str,
        /// Its value, as JSON.
        value: String,
        /// What to do instead.
        help: &'static str,
    },
    /// A key of `adapter_model.safetensors` is not a LoRA A/B matrix.
    #[error(
        "`{path}`: tensor `{tensor}` is not a LoRA `lora_A`/`lora_B` weight; only plain LoRA \
         adapters (no DoRA, embeddings LoRA, biases or modules_to_save) can be merged"
    )]
    UnexpectedAdapterTensor {
        /// The adapter weights file.
        path: PathBuf,
        /// The offending key.
        tensor: String,
    },
    /// A module has `lora_A` but no `lora_B`, or the other way round.
    #[error(
        "`{path}`: module `{module}` has `{present}` but no `{missing}`; the adapter is incomplete, save it again"
    )]
    MissingLoraHalf {
        /// The adapter weights file.
        path: PathBuf,
        /// The module (`model.layers.0.self_attn.q_proj`).
        module: String,
        /// The half that is there.
        present: &'static str,
        /// The half that is missing.
        missing: &'static str,
    },
    /// `lora_A` is `[r, in]` and `lora_B` `[out, r]`; their `r` differ, or
    /// differ from the config's `r`.
    #[error(
        "`{path}`: rank mismatch in module `{module}`: lora_A is {a_shape:?} ([r, in]), lora_B is \
         {b_shape:?} ([out, r]), adapter_config.json r = {config_r}; the adapter is corrupt or \
         was saved with a rank_pattern, save it again"
    )]
    RankMismatch {
        /// The adapter weights file.
        path: PathBuf,
        /// The module.
        module: String,
        /// Shape of `lora_A`.
        a_shape: Vec<usize>,
        /// Shape of `lora_B`.
        b_shape: Vec<usize>,
        /// `r` from `adapter_config.json`.
        config_r: usize,
    },
    /// The adapter targets a module whose weight the base does not have.
    #[error(
        "adapter `{adapter}` targets module `{module}`, but the base model `{base}` has no tensor \
         `{tensor}`; merge the adapter into the base model it was trained on"
    )]
    ModuleNotInBase {
        /// The adapter weights file.
        adapter: PathBuf,
        /// The module.
        module: String,
        /// The base tensor that was looked for.
        tensor: String,
        /// The base model directory.
        base: PathBuf,
    },
    /// `B·A` has a different shape from the base weight.
    #[error(
        "shape mismatch for `{tensor}`: the base model `{base}` has {base_shape:?}, the adapter \
         `{adapter}` gives lora_B·lora_A = {lora_shape:?}; merge the adapter into the base model \
         it was trained on"
    )]
    ShapeMismatch {
        /// The base tensor.
        tensor: String,
        /// The base model directory.
        base: PathBuf,
        /// The adapter weights file.
        adapter: PathBuf,
        /// Shape of the base weight.
        base_shape: Vec<usize>,
        /// `[out, in]` from the adapter.
        lora_shape: Vec<usize>,
    },

    // ---- tensors -----------------------------------------------------------
    /// A tensor that must be converted or merged has a dtype other than
    /// f32/f16/bf16.
    #[error(
        "`{path}`: tensor `{tensor}` has dtype {dtype}, but only F32, F16 and BF16 can be merged \
         or converted; use `dtype: auto` to copy it unchanged, or convert the model first"
    )]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its dtype, as safetensors names it.
        dtype: String,
    },
    /// NF4 quantization of a base weight failed (e.g. a NaN in it).
    #[error(
        "NF4 quantization of `{tensor}` from `{path}` failed ({source}); fix the base weights or \
         use `base: original`"
    )]
    Nf4 {
        /// The base file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The reference quantizer's error.
        #[source]
        source: Box<ft_kernels::KernelError>,
    },
    /// The output directory is, or contains, the base model or the adapter,
    /// which the atomic swap would delete.
    #[error(
        "output directory `{output}` is or contains the {which} directory `{input}`, which \
         replacing it would delete; write the merged model to a new directory"
    )]
    OutputOverlapsInput {
        /// The output directory.
        output: PathBuf,
        /// "base model" or "adapter".
        which: &'static str,
        /// That input directory.
        input: PathBuf,
    },
    /// `max_shard_size` is zero or not a size.
    #[error("`merge.max_shard_size` must be a size of at least 1 byte; use e.g. `5GB` or `500MB`")]
    ZeroShardSize,
}

/// `Result` with [`MergeError`].
pub type Result<T, E = MergeError> = std::result::Result<T, E>;

impl MergeError {
    /// Wraps an I/O error with the operation and path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
