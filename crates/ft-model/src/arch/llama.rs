//! Llama (`model_type: llama`): Llama 2, Llama 3.x, TinyLlama, SmolLM2.
//!
//! The plain pre-norm decoder of [`super::decoder`]: RMSNorm, SwiGLU MLP,
//! RoPE in the rotate-half layout, grouped-query attention, no biases unless
//! `attention_bias` / `mlp_bias` say so. Llama 3.1+ configs add the `llama3`
//! RoPE scaling ([`super::RopeScaling::Llama3`]). Paper: Touvron et al.
//! 2023, <https://arxiv.org/abs/2302.13971>; reference code: transformers
//! `models/llama/modeling_llama.py`.
//!
//! Checkpoint names (`*` = `model.layers.{i}`), shapes `[out, in]`:
//! `model.embed_tokens.weight [vocab, hidden]`,
//! `*.self_attn.{q,k,v,o}_proj.weight`, `*.mlp.{gate,up,down}_proj.weight`,
//! `*.input_layernorm.weight`, `*.post_attention_layernorm.weight`,
//! `model.norm.weight`, `lm_head.weight` (absent when tied).

use std::path::Path;

use ft_arch::{Arch, HfConfig};

use super::{DecoderSpec, base_spec};
use crate::error::ModelError;

/// The decoder spec of a Llama `config.json`.
pub fn spec(cfg: &HfConfig, origin: &Path) -> Result<DecoderSpec, ModelError> {
    let bias = cfg.attention_bias.unwrap_or(false);
    Ok(DecoderSpec {
        qkv_bias: bias,
        o_bias: bias,
        mlp_bias: cfg.mlp_bias.unwrap_or(false),
        ..base_spec(cfg, Arch::Llama, origin)?
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::arch::testing::{check_fixture, copy_with_config, fixture_errors};

    /// Tied embeddings, f32 checkpoint, default RoPE.
    #[test]
    fn llama_matches_transformers() {
        check_fixture("llama");
    }

    /// Untied, f16 checkpoint, llama3 RoPE scaling.
    #[test]
    fn llama3_rope_scaling_matches_transformers() {
        check_fixture("llama3");
    }

    /// The llama3 fixture does exercise the scaling: without it the logits
    /// are far off.
    #[test]
    fn llama3_fixture_fails_without_scaling() {
        let dir = copy_with_config("llama3", |c| {
            c["rope_parameters"] =
                serde_json::json!({"rope_type": "default", "rope_theta": 500000.0});
        });
        let (unpacked, packed) = fixture_errors("llama3", dir.path());
        assert!(unpacked > 1e-2 && packed > 1e-2, "{unpacked:e} {packed:e}");
    }
}
