//! `ft-arch`: what `ft` knows about each decoder architecture, without burn.
//!
//! [`HfConfig`] reads the parts of a Hugging Face `config.json` every stage
//! needs (architecture, sizes, context length, RoPE), accepting both the
//! classic `rope_theta` key and transformers 5's `rope_parameters` object.
//! [`Arch`] is the closed set of architectures `ft` supports.
//! [`gguf_names`] maps tensor names between HF checkpoints and GGUF files.
#![warn(missing_docs)]

pub mod gguf_names;

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors reading a model's `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// The file could not be read.
    #[error("reading `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON or lacks a required key.
    #[error("`{path}` is not a usable HF config.json: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error (names the missing or mistyped key).
        #[source]
        source: serde_json::Error,
    },
    /// `model_type` names an architecture `ft` does not implement.
    #[error(
        "`{path}`: model_type `{found}` is not supported; supported: {}",
        Arch::ALL.iter().map(|a| a.model_type()).collect::<Vec<_>>().join(", ")
    )]
    UnsupportedArch {
        /// The file.
        path: PathBuf,
        /// The `model_type` found.
        found: String,
    },
}

/// A decoder architecture `ft` supports, by HF `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Llama 2, Llama 3.x, TinyLlama, SmolLM2 (`model_type: llama`).
    Llama,
    /// Mistral (`model_type: mistral`).
    Mistral,
    /// Qwen2 / Qwen2.5, with q/k/v biases (`model_type: qwen2`).
    Qwen2,
    /// Qwen3, with q/k RMSNorm (`model_type: qwen3`).
    Qwen3,
    /// SmolLM3, with NoPE layers (`model_type: smollm3`).
    SmolLm3,
}

impl Arch {
    /// Every supported architecture.
    pub const ALL: [Arch; 5] = [
        Arch::Llama,
        Arch::Mistral,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::SmolLm3,
    ];

    /// The HF `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::SmolLm3 => "smollm3",
        }
    }

    /// Looks up an architecture by HF `model_type`.
    pub fn from_model_type(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.model_type() == s)
    }
}

/// RoPE parameters as transformers 5 writes them (`rope_parameters`), or
/// the older `rope_scaling` object (which spells `rope_type` as `type` in
/// some configs and carries no `rope_theta`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RopeParameters {
    /// Base frequency.
    pub rope_theta: Option<f64>,
    /// Scaling kind (`default`, `llama3`, `linear`, `yarn` …).
    #[serde(alias = "type")]
    pub rope_type: Option<String>,
    /// Scaling factor (`linear`, `llama3`, `yarn`).
    pub factor: Option<f64>,
    /// `llama3`: wavelengths above `original_max_position_embeddings /
    /// low_freq_factor` are divided by `factor`.
    pub low_freq_factor: Option<f64>,
    /// `llama3`: wavelengths below `original_max_position_embeddings /
    /// high_freq_factor` are kept; those between are interpolated.
    pub high_freq_factor: Option<f64>,
    /// `llama3`, `yarn`: the context length the model was pre-trained with.
    pub original_max_position_embeddings: Option<usize>,
}

impl RopeParameters {
    /// The scaling kind, `default` when absent.
    pub fn kind(&self) -> &str {
        self.rope_type.as_deref().unwrap_or("default")
    }
}

/// The fields of an HF `config.json` that `ft` reads. Unknown keys are
/// ignored (HF configs carry many that do not matter here).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HfConfig {
    /// Architecture name.
    pub model_type: String,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); equals the query heads when absent.
    pub num_key_value_heads: Option<usize>,
    /// Per-head size when not `hidden_size / num_attention_heads` (Qwen3).
    pub head_dim: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest context the model was trained for.
    pub max_position_embeddings: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: Option<f64>,
    /// RoPE base (transformers < 5).
    pub rope_theta: Option<f64>,
    /// RoPE parameters (transformers ≥ 5).
    pub rope_parameters: Option<RopeParameters>,
    /// RoPE scaling (transformers < 5; transformers 5 folds it into
    /// `rope_parameters`).
    pub rope_scaling: Option<RopeParameters>,
    /// Whether `lm_head` shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Whether q/k/v/o projections carry biases (Llama, Mistral; Qwen2's
    /// q/k/v always do).
    pub attention_bias: Option<bool>,
    /// Whether the MLP projections carry biases (Llama).
    pub mlp_bias: Option<bool>,
    /// MLP activation (`silu` for every supported architecture).
    pub hidden_act: Option<String>,
    /// Sliding attention window in tokens (Mistral; Qwen2/3 only with
    /// `use_sliding_window`).
    pub sliding_window: Option<usize>,
    /// Qwen2/3, SmolLM3: whether `sliding_window` applies at all.
    pub use_sliding_window: Option<bool>,
    /// SmolLM3: per layer, 1 when the layer applies RoPE, 0 for a NoPE
    /// layer. Absent: every `no_rope_layer_interval`-th layer is NoPE.
    pub no_rope_layers: Option<Vec<u8>>,
    /// SmolLM3: the NoPE period when `no_rope_layers` is absent (default 4).
    pub no_rope_layer_interval: Option<usize>,
    /// Stored weight dtype as transformers 4 names the key.
    pub torch_dtype: Option<String>,
    /// Stored weight dtype as transformers 5 names the key (configs written
    /// for both carry both keys).
    pub dtype: Option<String>,
}

impl HfConfig {
    /// The stored weight dtype: `dtype` (transformers 5), else
    /// `torch_dtype`.
    pub fn weight_dtype(&self) -> Option<&str> {
        self.dtype.as_deref().or(self.torch_dtype.as_deref())
    }

    /// Reads and parses `config.json` at `path`.
    pub fn read(path: &Path) -> Result<Self, ArchError> {
        let bytes = std::fs::read(path).map_err(|source| ArchError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| ArchError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The architecture, or an error naming the unsupported `model_type`.
    pub fn arch(&self, path: &Path) -> Result<Arch, ArchError> {
        Arch::from_model_type(&self.model_type).ok_or_else(|| ArchError::UnsupportedArch {
            path: path.to_path_buf(),
            found: self.model_type.clone(),
        })
    }

    /// RoPE base frequency from either key; 10000 when neither is present
    /// (the transformers default).
    pub fn rope_theta(&self) -> f64 {
        self.rope_theta
            .or_else(|| self.rope_parameters.as_ref().and_then(|r| r.rope_theta))
            .unwrap_or(10_000.0)
    }

    /// The RoPE scaling in effect, if any: transformers 5's
    /// `rope_parameters` when its `rope_type` is not `default`, else the
    /// older `rope_scaling` object.
    pub fn rope_scaling(&self) -> Option<&RopeParameters> {
        self.rope_parameters
            .as_ref()
            .filter(|r| r.kind() != "default")
            .or(self.rope_scaling.as_ref().filter(|r| r.kind() != "default"))
    }

    /// Per-head size: `head_dim` when given, else hidden size / heads.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Key/value head count.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// SmolLM3: per layer, whether it applies RoPE, as transformers'
    /// `SmolLM3Config` derives it: `no_rope_layers` when given, else layer
    /// `i` is NoPE when `(i + 1) % no_rope_layer_interval == 0`.
    pub fn smollm3_rope_layers(&self) -> Vec<bool> {
        match &self.no_rope_layers {
            Some(v) => v.iter().map(|&x| x != 0).collect(),
            None => {
                let every = self.no_rope_layer_interval.unwrap_or(4).max(1);
                (0..self.num_hidden_layers)
                    .map(|i| (i + 1) % every != 0)
                    .collect()
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    #[test]
    fn reads_both_rope_forms_and_rejects_unknown_arch() {
        let dir = tempfile::tempdir().unwrap();
        let base = r#""hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100"#;
        let p = write(
            dir.path(),
            &format!(r#"{{"model_type":"llama",{base},"rope_theta":500000.0}}"#),
        );
        let c = HfConfig::read(&p).unwrap();
        assert_eq!(c.rope_theta(), 500000.0);
        assert_eq!(c.arch(&p).unwrap(), Arch::Llama);
        assert_eq!(c.kv_heads(), 4);

        let p = write(
            dir.path(),
            &format!(
                r#"{{"model_type":"qwen3",{base},"rope_parameters":{{"rope_theta":1000000.0,"rope_type":"default"}},"dtype":"bfloat16"}}"#
            ),
        );
        let c = HfConfig::read(&p).unwrap();
        assert_eq!(c.rope_theta(), 1_000_000.0);
        assert_eq!(c.weight_dtype(), Some("bfloat16"));

        // Configs written for transformers 4 and 5 carry both dtype keys.
        let p = write(
            dir.path(),
            &format!(
                r#"{{"model_type":"llama",{base},"dtype":"float32","torch_dtype":"float32"}}"#
            ),
        );
        assert_eq!(HfConfig::read(&p).unwrap().weight_dtype(), Some("float32"));

        assert!(c.rope_scaling().is_none());
        assert_eq!(c.head_dim(), 16);

        let p = write(
            dir.path(),
            &format!(
                r#"{{"model_type":"llama",{base},"rope_theta":500000.0,"rope_scaling":{{"type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}}}"#
            ),
        );
        let c = HfConfig::read(&p).unwrap();
        let r = c.rope_scaling().unwrap();
        assert_eq!(
            (r.kind(), r.factor, r.original_max_position_embeddings),
            ("llama3", Some(8.0), Some(8192))
        );

        let p = write(dir.path(), &format!(r#"{{"model_type":"gpt2",{base}}}"#));
        let err = HfConfig::read(&p)
            .unwrap()
            .arch(&p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("gpt2") && err.contains("qwen3"), "{err}");

        let p = write(dir.path(), r#"{"model_type":"llama"}"#);
        let err = HfConfig::read(&p).unwrap_err().to_string();
        assert!(err.contains("hidden_size"), "{err}");
    }
}
