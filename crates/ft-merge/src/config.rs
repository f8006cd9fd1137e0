//! The `merge` section of `train.yml`.

use ft_core::problem::Problems;
use ft_core::stage::{CheckContext, StageConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Dtype of the merged weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MergeDtype {
    /// The base model's stored dtype.
    #[default]
    Auto,
    /// bfloat16.
    Bf16,
    /// float16.
    F16,
    /// float32.
    F32,
}

/// Which base weights the adapter is added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MergeBase {
    /// For `qlora`: the NF4-dequantized base the adapter was trained
    /// against (faithful); for `lora`: the original weights.
    #[default]
    Auto,
    /// The NF4-dequantized base.
    Dequantized,
    /// The original full-precision base.
    Original,
}

fn default_shard() -> String {
    "5GB".into()
}

/// `merge`: write a standalone HF model with the adapter folded in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct MergeConfig {
    /// Dtype of the merged weights. Default: auto (the base's).
    #[serde(default)]
    pub dtype: MergeDtype,
    /// Largest safetensors shard, e.g. `5GB`, `500MB`. Default: 5GB.
    #[serde(default = "default_shard")]
    pub max_shard_size: String,
    /// Which base weights to add the adapter to. Default: auto.
    #[serde(default)]
    pub base: MergeBase,
    /// Prepared rows (validation split first) on which the fidelity report
    /// compares the merged model's predictions with base + adapter
    /// unmerged (KL divergence, top-1 agreement). 0 skips it. Default: 4.
    #[serde(default = "default_fidelity_rows")]
    pub fidelity_rows: u32,
}

fn default_fidelity_rows() -> u32 {
    4
}

impl Default for MergeConfig {
    fn default() -> Self {
        Self {
            dtype: MergeDtype::Auto,
            max_shard_size: default_shard(),
            base: MergeBase::Auto,
            fidelity_rows: default_fidelity_rows(),
        }
    }
}

/// Parses sizes like `5GB`, `500MB`, `2GiB`, `1000` (bytes). Decimal units
/// are powers of 1000, `i` units powers of 1024, as transformers reads them.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * mult;
    (v >= 1.0 && v.is_finite()).then_some(v as u64)
}

impl StageConfig for MergeConfig {
    const SECTION: &'static str = "merge";

    fn check(&self, _ctx: &CheckContext, problems: &mut Problems) {
        if parse_size(&self.max_shard_size).is_none() {
            problems
                .at(
                    Self::path("max_shard_size"),
                    format!("`{}` is not a size", self.max_shard_size),
                )
                .help("use e.g. `5GB`, `500MB` or `2GiB`");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5GB"), Some(5_000_000_000));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("five"), None);
        assert_eq!(parse_size("5XB"), None);
        assert_eq!(parse_size("0GB"), None);
    }
}
