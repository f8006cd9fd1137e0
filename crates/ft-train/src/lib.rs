//! `ft-train`: the training loop and its config section.
//!
//! This crate owns the `train` section of `train.yml` ([`TrainConfig`]):
//! batch sizes, optimizer and schedule, how long to train, when to evaluate,
//! log and checkpoint.
#![warn(missing_docs)]

pub mod config;

pub use config::{LrScheduler, Optimizer, ResumeFrom, TrainConfig};
