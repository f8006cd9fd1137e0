//! The `model` and `adapter` sections of `train.yml`.

use std::path::{Path, PathBuf};

use ft_core::problem::{KeyPath, Problems};
use ft_core::stage::{CheckContext, StageConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::device::DeviceChoice;

/// Dtype the model computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComputeDtype {
    /// bf16 on CUDA, f32 elsewhere.
    #[default]
    Auto,
    /// bfloat16: weights, activations and products in bf16; norms, softmax,
    /// the loss and the LoRA adapters in f32.
    Bf16,
    /// float16 (not implemented: computes in f32, with a warning).
    F16,
    /// float32.
    F32,
}

fn default_true() -> bool {
    true
}

/// `model`: the base model and how it is held in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ModelConfig {
    /// The base model: a local Hugging Face model directory (`config.json`,
    /// safetensors, tokenizer files), a local `.gguf` file, or a Hugging Face
    /// hub id such as `HuggingFaceTB/SmolLM2-135M-Instruct` (downloaded on
    /// first use). Relative paths are resolved against this config file's
    /// directory.
    pub base_model: String,
    /// Hub revision (branch, tag or commit) when `base_model` is a hub id.
    #[serde(default)]
    pub revision: Option<String>,
    /// A directory holding `tokenizer.json` (and `tokenizer_config.json`) to
    /// use instead of the base model's own tokenizer.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Hold the frozen base weights as 4-bit NF4 (bitsandbytes layout), as
    /// QLoRA does. Required by `adapter.type: qlora`. Default: false.
    #[serde(default)]
    pub load_in_4bit: bool,
    /// With `load_in_4bit`, also quantize the per-block scales to 8 bits
    /// (QLoRA's double quantization; saves ~0.37 bits per weight).
    /// Default: true.
    #[serde(default = "default_true")]
    pub double_quant: bool,
    /// Dtype for computation and for the unquantized base weights.
    /// Default: auto (bf16 on CUDA, f32 on the CPU and wgpu). `bf16` keeps
    /// weights and activations in bf16 with norms, softmax, loss and the LoRA
    /// adapters in f32, as transformers + PEFT do (on the CPU it is emulated
    /// and slower than f32). `f16` is accepted with a warning and computes
    /// in f32.
    #[serde(default)]
    pub dtype: ComputeDtype,
    /// Where to run. Default: auto (CUDA if built with it and present,
    /// else the CPU).
    #[serde(default)]
    pub device: DeviceChoice,
}

/// How `base_model` names its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseModelRef {
    /// A local HF directory.
    HfDir(PathBuf),
    /// A local GGUF file.
    Gguf(PathBuf),
    /// A Hugging Face hub id, fetched on first use.
    Hub(String),
}

impl ModelConfig {
    /// Classifies `base_model`: existing directories and `.gguf` files are
    /// local; a string of the form `org/name` that is not a local path is a
    /// hub id; anything else is a local path that does not exist.
    pub fn base_ref(&self, ctx: &CheckContext) -> Result<BaseModelRef, String> {
        let raw = self.base_model.trim();
        let local = ctx.resolve(Path::new(raw));
        if local.is_dir() {
            return Ok(BaseModelRef::HfDir(local));
        }
        if local.is_file() {
            if local
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
            {
                return Ok(BaseModelRef::Gguf(local));
            }
            return Err(format!(
                "`{}` is a file but not a .gguf file; give a model directory (with config.json) or a .gguf file",
                local.display()
            ));
        }
        if is_hub_id(raw) {
            return Ok(BaseModelRef::Hub(raw.to_string()));
        }
        Err(format!("`{}` does not exist", local.display()))
    }
}

/// `org/name` with the characters the hub allows, and not path-like.
fn is_hub_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    ok(org) && ok(name) && !s.ends_with(".gguf")
}

impl StageConfig for ModelConfig {
    const SECTION: &'static str = "model";

    fn check(&self, ctx: &CheckContext, problems: &mut Problems) {
        if let Err(msg) = self.base_ref(ctx) {
            problems.at(Self::path("base_model"), msg).help(
                "point `base_model` at a local HF model directory or .gguf file (relative to this config file), or use a hub id like `org/name`",
            );
        }
        if let Some(tok) = &self.tokenizer {
            let p = ctx.resolve(tok);
            if !p.join("tokenizer.json").is_file() {
                problems
                    .at(Self::path("tokenizer"), format!("`{}` has no tokenizer.json", p.display()))
                    .help("give a directory containing tokenizer.json, or remove the key to use the base model's tokenizer");
            }
        }
        if !self.device.compiled_in() {
            let feature = self.device.feature().unwrap_or("?");
            problems
                .at(
                    Self::path("device"),
                    format!("this ft was built without the `{feature}` feature"),
                )
                .help(format!(
                    "rebuild with `cargo build --release --features {feature}`, or set `model.device: cpu`"
                ));
        }
    }
}

/// Which adapter is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdapterKind {
    /// LoRA over a bf16/f16/f32 base.
    Lora,
    /// LoRA over an NF4-quantized base (needs `model.load_in_4bit: true`).
    Qlora,
}

/// A module LoRA adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// Attention query projection.
    QProj,
    /// Attention key projection.
    KProj,
    /// Attention value projection.
    VProj,
    /// Attention output projection.
    OProj,
    /// MLP gate projection.
    GateProj,
    /// MLP up projection.
    UpProj,
    /// MLP down projection.
    DownProj,
    /// Every linear layer except `lm_head` (PEFT's `all-linear`).
    #[serde(rename = "all-linear")]
    AllLinear,
}

impl LoraTarget {
    /// The seven projections of a Llama-style decoder layer.
    pub const PROJECTIONS: [LoraTarget; 7] = [
        LoraTarget::QProj,
        LoraTarget::KProj,
        LoraTarget::VProj,
        LoraTarget::OProj,
        LoraTarget::GateProj,
        LoraTarget::UpProj,
        LoraTarget::DownProj,
    ];

    /// The HF module name (`q_proj` …), as PEFT writes in `target_modules`.
    pub fn module_name(self) -> &'static str {
        match self {
            LoraTarget::QProj => "q_proj",
            LoraTarget::KProj => "k_proj",
            LoraTarget::VProj => "v_proj",
            LoraTarget::OProj => "o_proj",
            LoraTarget::GateProj => "gate_proj",
            LoraTarget::UpProj => "up_proj",
            LoraTarget::DownProj => "down_proj",
            LoraTarget::AllLinear => "all-linear",
        }
    }
}

/// Initialisation of the LoRA A matrix (B always starts at zero, so the
/// adapter starts as the identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoraInit {
    /// Kaiming-uniform, as PEFT's default (`init_lora_weights=True`).
    #[default]
    Kaiming,
    /// Gaussian with std 1/r (PEFT's `gaussian`).
    Gaussian,
}

fn default_r() -> u32 {
    16
}
fn default_alpha() -> f64 {
    32.0
}
fn default_targets() -> Vec<LoraTarget> {
    LoraTarget::PROJECTIONS.to_vec()
}

/// `adapter`: the LoRA adapter to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct AdapterConfig {
    /// `lora` or `qlora` (LoRA over an NF4 base; needs
    /// `model.load_in_4bit: true`).
    #[serde(rename = "type")]
    pub kind: AdapterKind,
    /// LoRA rank r. Default: 16.
    #[serde(default = "default_r")]
    #[schemars(range(min = 1, max = 4096))]
    pub lora_r: u32,
    /// LoRA alpha; the update is scaled by alpha/r (alpha/sqrt(r) with
    /// rsLoRA). Default: 32.
    #[serde(default = "default_alpha")]
    #[schemars(range(min = 0.0))]
    pub lora_alpha: f64,
    /// Dropout on the LoRA input during training, in [0, 1). Default: 0.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 0.99))]
    pub lora_dropout: f64,
    /// Modules to adapt: any of q_proj, k_proj, v_proj, o_proj, gate_proj,
    /// up_proj, down_proj, or `all-linear` for every linear layer except
    /// lm_head. Default: all seven projections.
    #[serde(default = "default_targets")]
    #[schemars(length(min = 1))]
    pub lora_target_modules: Vec<LoraTarget>,
    /// Scale by alpha/sqrt(r) instead of alpha/r (rank-stabilised LoRA).
    /// Default: false.
    #[serde(default)]
    pub use_rslora: bool,
    /// Initialisation of A. Default: kaiming.
    #[serde(default)]
    pub init_lora_weights: LoraInit,
}

impl AdapterConfig {
    /// The scale applied to `B·A`.
    pub fn scale(&self) -> f64 {
        let r = f64::from(self.lora_r);
        if self.use_rslora {
            self.lora_alpha / r.sqrt()
        } else {
            self.lora_alpha / r
        }
    }

    /// The targeted modules, with `all-linear` expanded.
    pub fn targets(&self) -> Vec<LoraTarget> {
        if self.lora_target_modules.contains(&LoraTarget::AllLinear) {
            return LoraTarget::PROJECTIONS.to_vec();
        }
        let mut out = Vec::new();
        for t in &self.lora_target_modules {
            if !out.contains(t) {
                out.push(*t);
            }
        }
        out
    }
}

impl StageConfig for AdapterConfig {
    const SECTION: &'static str = "adapter";

    fn check(&self, _ctx: &CheckContext, problems: &mut Problems) {
        let mut seen = Vec::new();
        for (i, t) in self.lora_target_modules.iter().enumerate() {
            if seen.contains(t) {
                problems
                    .at(
                        KeyPath::keys(&["adapter", "lora_target_modules"]).index(i),
                        format!("`{}` is listed twice", t.module_name()),
                    )
                    .help("remove the duplicate entry");
            }
            seen.push(*t);
        }
        if self.lora_target_modules.contains(&LoraTarget::AllLinear)
            && self.lora_target_modules.len() > 1
        {
            problems
                .at(
                    Self::path("lora_target_modules"),
                    "`all-linear` already includes every projection; other entries are redundant",
                )
                .help("use either `[all-linear]` or a list of module names");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        assert!(is_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct"));
        assert!(is_hub_id("Qwen/Qwen3-4B"));
        assert!(!is_hub_id("models/smol/x"));
        assert!(!is_hub_id("./models/x"));
        assert!(!is_hub_id("../x"));
        assert!(!is_hub_id("x.gguf"));
        assert!(!is_hub_id("a/b.gguf"));
        assert!(!is_hub_id("plain"));
    }

    #[test]
    fn scale_follows_rslora() {
        let mut a: AdapterConfig =
            serde_json::from_str(r#"{"type":"lora","lora_r":16,"lora_alpha":32}"#).unwrap();
        assert_eq!(a.scale(), 2.0);
        a.use_rslora = true;
        assert_eq!(a.scale(), 8.0);
        assert_eq!(a.targets().len(), 7);
    }
}
