//! Mistral (`model_type: mistral`).
//!
//! Llama's decoder ([`super::llama`]) with an optional sliding attention
//! window: a token sees at most the last `sliding_window` tokens of its own
//! sequence (Mistral 7B v0.1 used 4096; later releases set `null`). Paper:
//! Jiang et al. 2023, <https://arxiv.org/abs/2310.06825>; reference code:
//! transformers `models/mistral/modeling_mistral.py`. Checkpoint names are
//! Llama's.

use std::path::Path;

use ft_arch::{Arch, HfConfig};

use super::{DecoderSpec, base_spec};
use crate::error::ModelError;

/// The decoder spec of a Mistral `config.json`.
pub fn spec(cfg: &HfConfig, origin: &Path) -> Result<DecoderSpec, ModelError> {
    Ok(DecoderSpec {
        sliding_window: cfg.sliding_window,
        ..base_spec(cfg, Arch::Mistral, origin)?
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::arch::testing::check_fixture;

    /// Untied, bf16 checkpoint, no window.
    #[test]
    fn mistral_matches_transformers() {
        check_fixture("mistral");
    }
}
