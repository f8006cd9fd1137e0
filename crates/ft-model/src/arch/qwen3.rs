//! Qwen3 dense models (`model_type: qwen3`).
//!
//! Llama's decoder with an RMSNorm over each query and key head
//! (`q_norm`, `k_norm`, weights `[head_dim]`) applied after the projection
//! and before RoPE, no q/k/v biases (unless `attention_bias`), and a
//! `head_dim` set explicitly in the config that need not be
//! `hidden_size / num_attention_heads` (Qwen3-0.6B: hidden 1024, 16 heads
//! of 128). Report: Yang et al. 2025, <https://arxiv.org/abs/2505.09388>;
//! reference code: transformers `models/qwen3/modeling_qwen3.py`.
//!
//! Extra checkpoint names: `model.layers.{i}.self_attn.{q,k}_norm.weight`.

use std::path::Path;

use ft_arch::{Arch, HfConfig};

use super::qwen2::reject_sliding_window;
use super::{DecoderSpec, base_spec};
use crate::error::ModelError;

/// The decoder spec of a Qwen3 `config.json`.
pub fn spec(cfg: &HfConfig, origin: &Path) -> Result<DecoderSpec, ModelError> {
    reject_sliding_window(cfg, origin)?;
    let bias = cfg.attention_bias.unwrap_or(false);
    Ok(DecoderSpec {
        qk_norm: true,
        qkv_bias: bias,
        o_bias: bias,
        ..base_spec(cfg, Arch::Qwen3, origin)?
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::arch::testing::check_fixture;

    /// q/k norm, head_dim 32 ≠ 64/4, tied, f32 checkpoint.
    #[test]
    fn qwen3_matches_transformers() {
        check_fixture("qwen3");
    }
}
