//! `ft-train`: the training loop and its config section.
//!
//! This crate owns the `train` section of `train.yml` ([`TrainConfig`]):
//! batch sizes, optimizer and schedule, how long to train, when to evaluate,
//! log and checkpoint; and the loop itself ([`trainer::train`]) over the
//! prepared rows of `ft-tokenize` and a model of `ft-model`:
//!
//! * [`schedule`]: transformers' learning-rate schedules;
//! * [`adamw`]: `torch.optim.AdamW` and `clip_grad_norm_` on f32 master
//!   copies of the adapter;
//! * [`batches`]: the seeded row order, micro-batches and next-token targets;
//! * [`recompute`]: one micro-batch's gradients, plain or with each decoder
//!   layer recomputed in the backward pass (gradient checkpointing);
//! * [`trainer`]: the loop, evaluation, checkpoints, resume, the PEFT
//!   adapter, `metrics.jsonl` and `run_summary.json`;
//! * [`plot`]: the loss/learning-rate SVG.
#![warn(missing_docs)]

pub mod adamw;
pub mod batches;
pub mod config;
pub mod error;
pub mod fidelity;
pub mod plot;
pub mod recompute;
pub mod schedule;
pub mod trainer;

pub use config::{LrScheduler, Optimizer, ResumeFrom, TrainConfig};
pub use error::TrainError;
pub use trainer::{EvalRecord, Observer, Quiet, StepRecord, TrainReport, TrainSetup, train};
