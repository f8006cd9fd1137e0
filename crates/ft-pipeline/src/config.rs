//! [`FtConfig`]: the whole `train.yml`.

use std::path::PathBuf;

use ft_data::DataConfig;
use ft_export::ExportConfig;
use ft_merge::MergeConfig;
use ft_model::{AdapterConfig, ModelConfig};
use ft_template::TemplateConfig;
use ft_tokenize::TokenizeConfig;
use ft_train::TrainConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_seed() -> u64 {
    42
}

/// An `ft` run: one section per pipeline stage.
///
/// Sections run in order: `data` (load) → `template` (render) → `tokenize`
/// (tokenize, mask, pack) → `train` (with `model` and `adapter`) → `merge`
/// and `export` when present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
#[schemars(title = "ft config")]
pub struct FtConfig {
    /// Directory every stage writes into (prepared data, checkpoints, the
    /// adapter, the merged model, the GGUF). Relative to this config file.
    pub output_dir: PathBuf,
    /// Seed for shuffling, LoRA initialisation, dropout and sampling; the
    /// same seed and inputs give the same adapter. Default: 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The base model and how it is held.
    pub model: ModelConfig,
    /// Datasets and the validation split.
    pub data: DataConfig,
    /// Chat template and which turns are trained.
    #[serde(default)]
    pub template: TemplateConfig,
    /// Sequence length, packing and the prepared-data cache.
    #[serde(default)]
    pub tokenize: TokenizeConfig,
    /// The LoRA / QLoRA adapter.
    pub adapter: AdapterConfig,
    /// The optimisation run.
    pub train: TrainConfig,
    /// Present: merge the adapter into the base after training
    /// (`merge: {}` for the defaults).
    #[serde(default)]
    pub merge: Option<MergeConfig>,
    /// Present: export a GGUF after training (`export: {}` for the
    /// defaults: q8_0).
    #[serde(default)]
    pub export: Option<ExportConfig>,
}

/// The top-level sections, in pipeline order, for messages and schemas.
pub const SECTIONS: [&str; 8] = [
    "model", "data", "template", "tokenize", "adapter", "train", "merge", "export",
];
