//! Qwen2 / Qwen2.5 (`model_type: qwen2`).
//!
//! Llama's decoder with biases on the q, k and v projections (not on
//! `o_proj`, not in the MLP), RoPE base 1e6 in released checkpoints, and
//! tied embeddings in the small sizes. Sliding-window attention
//! (`use_sliding_window: true`, applied from layer `max_window_layers` on)
//! is not implemented and rejected. Report: Yang et al. 2024,
//! <https://arxiv.org/abs/2407.10671>; reference code: transformers
//! `models/qwen2/modeling_qwen2.py`.
//!
//! Extra checkpoint names: `model.layers.{i}.self_attn.{q,k,v}_proj.bias`.

use std::path::Path;

use ft_arch::{Arch, HfConfig};

use super::{DecoderSpec, base_spec};
use crate::error::ModelError;

/// The decoder spec of a Qwen2 `config.json`.
pub fn spec(cfg: &HfConfig, origin: &Path) -> Result<DecoderSpec, ModelError> {
    reject_sliding_window(cfg, origin)?;
    Ok(DecoderSpec {
        qkv_bias: true,
        ..base_spec(cfg, Arch::Qwen2, origin)?
    })
}

/// Qwen2/3 configs carry a `sliding_window` value that only applies with
/// `use_sliding_window: true`; that mode is not implemented.
pub(crate) fn reject_sliding_window(cfg: &HfConfig, origin: &Path) -> Result<(), ModelError> {
    if cfg.use_sliding_window == Some(true) {
        return Err(ModelError::UnsupportedConfig {
            origin: origin.to_path_buf(),
            what:
                "use_sliding_window: true (per-layer sliding-window attention is not implemented)"
                    .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::arch::testing::check_fixture;

    /// q/k/v biases, tied, f16 checkpoint, rope_theta 1e6.
    #[test]
    fn qwen2_matches_transformers() {
        check_fixture("qwen2");
    }
}
