//! The `train` section of `train.yml`.

use std::path::PathBuf;

use ft_core::problem::Problems;
use ft_core::stage::{CheckContext, StageConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LrScheduler {
    /// Constant.
    Constant,
    /// Linear decay to 0.
    Linear,
    /// Cosine decay to `cosine_min_lr_ratio × learning_rate`.
    #[default]
    Cosine,
}

/// Optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// AdamW with decoupled weight decay (as `torch.optim.AdamW`).
    #[default]
    Adamw,
}

/// Where to resume from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ResumeFrom {
    /// `true`: the newest checkpoint in `output_dir`; `false`: start fresh.
    Latest(bool),
    /// A checkpoint directory.
    Path(PathBuf),
}

fn default_one() -> usize {
    1
}
fn default_epochs() -> f64 {
    1.0
}
fn default_lr() -> f64 {
    2e-4
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_grad_norm() -> f64 {
    1.0
}
fn default_logging() -> u64 {
    10
}

/// `train`: the optimisation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TrainConfig {
    /// Rows per forward/backward pass. Default: 1.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1))]
    pub micro_batch_size: usize,
    /// Micro-batches per optimizer step; the loss is normalised over the
    /// trained tokens of the whole accumulated batch. Default: 1.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1))]
    pub gradient_accumulation_steps: usize,
    /// Passes over the training data (fractions allowed). Ignored when
    /// `max_steps` is set. Default: 1.
    #[serde(default = "default_epochs")]
    #[schemars(range(min = 0.0))]
    pub num_epochs: f64,
    /// Stop after this many optimizer steps.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_steps: Option<u64>,
    /// Peak learning rate. Default: 2e-4.
    #[serde(default = "default_lr")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub learning_rate: f64,
    /// Schedule after warmup. Default: cosine.
    #[serde(default)]
    pub lr_scheduler: LrScheduler,
    /// Linear warmup steps from 0 to `learning_rate`.
    #[serde(default)]
    pub warmup_steps: Option<u64>,
    /// Warmup as a fraction of total steps (instead of `warmup_steps`).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub warmup_ratio: Option<f64>,
    /// With `lr_scheduler: cosine`, the final learning rate as a fraction of
    /// `learning_rate`. Default: 0.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub cosine_min_lr_ratio: Option<f64>,
    /// Optimizer. Default: adamw.
    #[serde(default)]
    pub optimizer: Optimizer,
    /// Decoupled weight decay. Default: 0.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
    /// AdamW beta1. Default: 0.9.
    #[serde(default = "default_beta1")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub adam_beta1: f64,
    /// AdamW beta2. Default: 0.999.
    #[serde(default = "default_beta2")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub adam_beta2: f64,
    /// AdamW epsilon. Default: 1e-8.
    #[serde(default = "default_eps")]
    #[schemars(range(min = 0.0))]
    pub adam_epsilon: f64,
    /// Clip the global gradient norm to this value; 0 disables. Default: 1.
    #[serde(default = "default_grad_norm")]
    #[schemars(range(min = 0.0))]
    pub max_grad_norm: f64,
    /// Recompute each decoder layer's activations in the backward pass
    /// instead of storing them (less memory, ~30% more compute).
    /// Default: false.
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// Log metrics every N steps. Default: 10.
    #[serde(default = "default_logging")]
    #[schemars(range(min = 1))]
    pub logging_steps: u64,
    /// Evaluate on the validation split (and generate `sample_prompts`)
    /// every N steps. Needs validation data (`data.val_set_size` or
    /// `data.test_datasets`).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub eval_steps: Option<u64>,
    /// Save a checkpoint every N steps.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub save_steps: Option<u64>,
    /// Keep at most this many checkpoints (oldest deleted first).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub save_total_limit: Option<u32>,
    /// `true` to continue from the newest checkpoint in `output_dir`, or a
    /// checkpoint directory.
    #[serde(default)]
    pub resume_from_checkpoint: Option<ResumeFrom>,
    /// Prompts generated from (greedily) at the start, every `eval_steps`
    /// and at the end, logged beside the metrics.
    #[serde(default)]
    pub sample_prompts: Vec<String>,
    /// Most tokens generated per sample prompt. Default: 48.
    #[serde(default = "default_sample_tokens")]
    #[schemars(range(min = 1))]
    pub sample_max_new_tokens: u32,
}

fn default_sample_tokens() -> u32 {
    48
}

impl StageConfig for TrainConfig {
    const SECTION: &'static str = "train";

    fn check(&self, ctx: &CheckContext, problems: &mut Problems) {
        if self.warmup_steps.is_some() && self.warmup_ratio.is_some() {
            problems
                .at(
                    Self::path("warmup_ratio"),
                    "both `warmup_steps` and `warmup_ratio` are set",
                )
                .help("keep one of them");
        }
        if self.cosine_min_lr_ratio.is_some() && self.lr_scheduler != LrScheduler::Cosine {
            problems
                .at(
                    Self::path("cosine_min_lr_ratio"),
                    "only applies with `lr_scheduler: cosine`",
                )
                .help("set `lr_scheduler: cosine`, or remove this key");
        }
        if self.max_steps.is_none() && self.num_epochs <= 0.0 {
            problems
                .at(
                    Self::path("num_epochs"),
                    "is 0 and `max_steps` is not set: nothing would be trained",
                )
                .help("set `num_epochs` above 0 or set `max_steps`");
        }
        if self.learning_rate <= 0.0 {
            problems
                .at(Self::path("learning_rate"), "must be above 0")
                .help("QLoRA commonly uses 1e-4 to 2e-4");
        }
        if self.save_total_limit.is_some() && self.save_steps.is_none() {
            problems
                .at(
                    Self::path("save_total_limit"),
                    "has no effect without `save_steps`",
                )
                .help("set `save_steps`, or remove this key");
        }
        if let Some(ResumeFrom::Path(p)) = &self.resume_from_checkpoint {
            let p = ctx.resolve(p);
            if !p.is_dir() {
                problems
                    .at(
                        Self::path("resume_from_checkpoint"),
                        format!("checkpoint `{}` does not exist", p.display()),
                    )
                    .help("give a checkpoint directory, or `true` for the newest in output_dir");
            }
        }
    }
}
