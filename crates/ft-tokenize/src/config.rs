//! The `tokenize` section of `train.yml`.

use std::path::PathBuf;

use ft_core::problem::Problems;
use ft_core::stage::{CheckContext, StageConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to do with a sample longer than `sequence_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExcessLengthStrategy {
    /// Drop it and count it in the preprocess report.
    #[default]
    Drop,
    /// Keep its first `sequence_len` tokens.
    Truncate,
    /// Stop with an error naming the dataset and row.
    Raise,
}

fn default_sequence_len() -> usize {
    2048
}
fn default_true() -> bool {
    true
}

/// `tokenize`: sequence length, packing and the prepared-data cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TokenizeConfig {
    /// Tokens per training row. Default: 2048.
    #[serde(default = "default_sequence_len")]
    #[schemars(range(min = 16, max = 1048576))]
    pub sequence_len: usize,
    /// Pack several samples into each row; attention stays within each
    /// sample (block-diagonal) and positions restart at 0. Default: true.
    #[serde(default = "default_true")]
    pub sample_packing: bool,
    /// What to do with samples longer than `sequence_len`. Default: drop.
    #[serde(default)]
    pub excess_length_strategy: ExcessLengthStrategy,
    /// Where prepared (tokenized, masked, packed) data is cached. Relative
    /// to this config file. Default: `<output_dir>/prepared`.
    #[serde(default)]
    pub dataset_prepared_path: Option<PathBuf>,
}

impl Default for TokenizeConfig {
    fn default() -> Self {
        Self {
            sequence_len: default_sequence_len(),
            sample_packing: true,
            excess_length_strategy: ExcessLengthStrategy::default(),
            dataset_prepared_path: None,
        }
    }
}

impl StageConfig for TokenizeConfig {
    const SECTION: &'static str = "tokenize";

    fn check(&self, ctx: &CheckContext, problems: &mut Problems) {
        if let Some(p) = &self.dataset_prepared_path {
            let p = ctx.resolve(p);
            if p.is_file() {
                problems
                    .at(
                        Self::path("dataset_prepared_path"),
                        format!("`{}` is a file; a directory is needed", p.display()),
                    )
                    .help("point it at a directory (it is created if missing)");
            }
        }
    }
}
