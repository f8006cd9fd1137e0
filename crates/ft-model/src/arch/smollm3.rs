//! SmolLM3 (`model_type: smollm3`).
//!
//! Llama's decoder in which some layers apply no rotary position embedding
//! ("NoPE"): `no_rope_layers[i]` is 1 for a layer that rotates q and k and
//! 0 for one that attends by content and causality alone; without the key,
//! every `no_rope_layer_interval`-th layer (default 4) is NoPE. GQA, tied
//! embeddings, no biases by default. Reference code: transformers
//! `models/smollm3/modeling_smollm3.py` (`SmolLM3Attention.use_rope`).
//!
//! Checkpoint names are Llama's.

use std::path::Path;

use ft_arch::{Arch, HfConfig};

use super::qwen2::reject_sliding_window;
use super::{DecoderSpec, base_spec};
use crate::error::ModelError;

/// The decoder spec of a SmolLM3 `config.json`.
pub fn spec(cfg: &HfConfig, origin: &Path) -> Result<DecoderSpec, ModelError> {
    reject_sliding_window(cfg, origin)?;
    let rope = cfg.smollm3_rope_layers();
    if rope.len() != cfg.num_hidden_layers {
        return Err(ModelError::UnsupportedConfig {
            origin: origin.to_path_buf(),
            what: format!(
                "no_rope_layers has {} entries for {} layers (num_hidden_layers)",
                rope.len(),
                cfg.num_hidden_layers
            ),
        });
    }
    Ok(DecoderSpec {
        qkv_bias: cfg.attention_bias.unwrap_or(false),
        o_bias: cfg.attention_bias.unwrap_or(false),
        mlp_bias: cfg.mlp_bias.unwrap_or(false),
        nope_layers: rope.iter().map(|&r| !r).collect(),
        ..base_spec(cfg, Arch::SmolLm3, origin)?
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use ft_arch::HfConfig;

    use crate::arch::testing::check_fixture;

    /// Layers 0-2 rotate, layer 3 is NoPE (the default interval 4).
    #[test]
    fn smollm3_matches_transformers() {
        check_fixture("smollm3");
    }

    fn config(extra: &str) -> HfConfig {
        serde_json::from_str(&format!(
            r#"{{"model_type": "smollm3", "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2,
                "vocab_size": 256 {extra}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn nope_layers_follow_transformers_defaults_and_lists() {
        let s = super::spec(&config(""), Path::new("c.json")).unwrap();
        // (i + 1) % 4 == 0 → NoPE: layers 3 and 7.
        assert_eq!(
            s.nope_layers,
            [false, false, false, true, false, false, false, true]
        );
        assert!(s.layer_uses_rope(2) && !s.layer_uses_rope(3));
        let s = super::spec(
            &config(r#", "no_rope_layers": [1, 0, 1, 1, 1, 1, 1, 0]"#),
            Path::new("c.json"),
        )
        .unwrap();
        assert_eq!(
            s.nope_layers,
            [false, true, false, false, false, false, false, true]
        );
        let e = super::spec(
            &config(r#", "no_rope_layers": [1, 0]"#),
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no_rope_layers has 2 entries for 8 layers"),
            "{e}"
        );
        let e = super::spec(
            &config(r#", "use_sliding_window": true, "sliding_window": 16"#),
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("use_sliding_window"), "{e}");
    }
}
