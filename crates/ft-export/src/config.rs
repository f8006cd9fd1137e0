//! The `export` section of `train.yml`.

use ft_core::problem::Problems;
use ft_core::stage::{CheckContext, StageConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// GGUF file type, named as `llama-quantize` names them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
pub enum GgufType {
    /// 32-bit floats.
    #[serde(rename = "f32")]
    #[value(name = "f32")]
    F32,
    /// 16-bit floats.
    #[serde(rename = "f16")]
    #[value(name = "f16")]
    F16,
    /// bfloat16.
    #[serde(rename = "bf16")]
    #[value(name = "bf16")]
    Bf16,
    /// 8-bit blocks of 32 (f16 scale). Near-lossless.
    #[default]
    #[serde(rename = "q8_0")]
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32 (f16 scale).
    #[serde(rename = "q4_0")]
    #[value(name = "q4_0")]
    Q4_0,
    /// 4-bit blocks of 32 (f16 scale and min).
    #[serde(rename = "q4_1")]
    #[value(name = "q4_1")]
    Q4_1,
    /// 5-bit blocks of 32 (f16 scale).
    #[serde(rename = "q5_0")]
    #[value(name = "q5_0")]
    Q5_0,
    /// 5-bit blocks of 32 (f16 scale and min).
    #[serde(rename = "q5_1")]
    #[value(name = "q5_1")]
    Q5_1,
    /// llama.cpp's Q4_K_M mix (Q4_K with Q6_K for some tensors).
    #[serde(rename = "q4_k_m")]
    #[value(name = "q4_k_m")]
    Q4KM,
    /// llama.cpp's Q5_K_M mix (Q5_K with Q6_K for some tensors).
    #[serde(rename = "q5_k_m")]
    #[value(name = "q5_k_m")]
    Q5KM,
    /// 6-bit K-quant.
    #[serde(rename = "q6_k")]
    #[value(name = "q6_k")]
    Q6K,
}

fn default_true() -> bool {
    true
}

/// `export`: write a GGUF file (and an Ollama Modelfile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ExportConfig {
    /// GGUF tensor type. Default: q8_0.
    #[serde(default)]
    pub gguf: GgufType,
    /// Also write the adapter alone as a GGUF LoRA for `llama-cli --lora`.
    /// Default: false.
    #[serde(default)]
    pub lora_gguf: bool,
    /// Write an Ollama `Modelfile` next to the GGUF. Default: true.
    #[serde(default = "default_true")]
    pub modelfile: bool,
    /// `general.name` in the GGUF. Default: the output directory's name.
    #[serde(default)]
    pub name: Option<String>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            gguf: GgufType::default(),
            lora_gguf: false,
            modelfile: true,
            name: None,
        }
    }
}

impl StageConfig for ExportConfig {
    const SECTION: &'static str = "export";

    fn check(&self, _ctx: &CheckContext, problems: &mut Problems) {
        if let Some(n) = &self.name
            && n.trim().is_empty()
        {
            problems
                .at(Self::path("name"), "is empty")
                .help("give a model name, or remove the key");
        }
    }
}
