//! Tensor names: Hugging Face checkpoint ↔ GGUF (llama.cpp's
//! `gguf-py/gguf/tensor_mapping.py` for the decoder architectures `ft`
//! supports).
//!
//! | HF                                                | GGUF                         |
//! |---------------------------------------------------|------------------------------|
//! | `model.embed_tokens.weight`                       | `token_embd.weight`          |
//! | `model.norm.weight`                               | `output_norm.weight`         |
//! | `lm_head.weight`                                  | `output.weight`              |
//! | `model.layers.{i}.input_layernorm.weight`         | `blk.{i}.attn_norm.weight`   |
//! | `model.layers.{i}.self_attn.{q,k,v}_proj.{w,b}`   | `blk.{i}.attn_{q,k,v}.{w,b}` |
//! | `model.layers.{i}.self_attn.o_proj.weight`        | `blk.{i}.attn_output.weight` |
//! | `model.layers.{i}.self_attn.{q,k}_norm.weight`    | `blk.{i}.attn_{q,k}_norm.weight` |
//! | `model.layers.{i}.post_attention_layernorm.weight`| `blk.{i}.ffn_norm.weight`    |
//! | `model.layers.{i}.mlp.{gate,up,down}_proj.weight` | `blk.{i}.ffn_{gate,up,down}.weight` |
//!
//! For `llama`-arch files llama.cpp's converter also permutes the rows of
//! the q and k projections (see [`needs_rope_permutation`]).

/// Per-layer module paths: (HF suffix after `model.layers.{i}.`, GGUF
/// suffix after `blk.{i}.`), without the `.weight` / `.bias` ending.
const LAYER: [(&str, &str); 11] = [
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// Whole-model tensors: (HF, GGUF), without the ending.
const GLOBAL: [(&str, &str); 3] = [
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("lm_head", "output"),
];

/// Splits `x.weight` / `x.bias` into (`x`, `.weight`).
fn split_ending(name: &str) -> Option<(&str, &str)> {
    [".weight", ".bias"]
        .into_iter()
        .find_map(|e| name.strip_suffix(e).map(|stem| (stem, e)))
}

/// The GGUF name of an HF tensor name, or `None` if it has no GGUF
/// counterpart.
pub fn hf_to_gguf(name: &str) -> Option<String> {
    let (stem, ending) = split_ending(name)?;
    if let Some((_, g)) = GLOBAL.iter().find(|(h, _)| *h == stem) {
        return Some(format!("{g}{ending}"));
    }
    let rest = stem.strip_prefix("model.layers.")?;
    let (layer, module) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, g) = LAYER.iter().find(|(h, _)| *h == module)?;
    Some(format!("blk.{layer}.{g}{ending}"))
}

/// The HF name of a GGUF tensor name, or `None` if it has no HF
/// counterpart.
pub fn gguf_to_hf(name: &str) -> Option<String> {
    let (stem, ending) = split_ending(name)?;
    if let Some((h, _)) = GLOBAL.iter().find(|(_, g)| *g == stem) {
        return Some(format!("{h}{ending}"));
    }
    let rest = stem.strip_prefix("blk.")?;
    let (layer, module) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (h, _) = LAYER.iter().find(|(_, g)| *g == module)?;
    Some(format!("model.layers.{layer}.{h}{ending}"))
}

/// Whether llama.cpp's converter permuted this tensor's rows for RoPE:
/// q and k projections (weights and biases) of `llama`-arch files (HF's
/// rotate-half pairs `(j, j + d/2)` become adjacent pairs `(2j, 2j + 1)`).
/// Only `general.architecture` `llama` and `smollm3` are permuted
/// (Mistral checkpoints are converted as `llama` and permuted too; the
/// converter's SmolLM3 class inherits Llama's permutation; Qwen2/3 are not).
pub fn needs_rope_permutation(gguf_arch: &str, hf_name: &str) -> Option<RopeProjection> {
    if gguf_arch != "llama" && gguf_arch != "smollm3" {
        return None;
    }
    let (stem, _) = split_ending(hf_name)?;
    if stem.ends_with(".self_attn.q_proj") {
        Some(RopeProjection::Query)
    } else if stem.ends_with(".self_attn.k_proj") {
        Some(RopeProjection::Key)
    } else {
        None
    }
}

/// Which projection a permuted tensor belongs to (q uses the query head
/// count, k the key/value head count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeProjection {
    /// `q_proj`.
    Query,
    /// `k_proj`.
    Key,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for hf in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.11.self_attn.k_proj.bias",
            "model.layers.3.self_attn.k_norm.weight",
            "model.layers.29.mlp.down_proj.weight",
            "model.layers.2.post_attention_layernorm.weight",
        ] {
            let g = hf_to_gguf(hf).unwrap();
            assert_eq!(gguf_to_hf(&g).as_deref(), Some(hf), "{g}");
        }
        assert_eq!(
            hf_to_gguf("model.layers.1.self_attn.o_proj.weight").unwrap(),
            "blk.1.attn_output.weight"
        );
        assert_eq!(hf_to_gguf("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(gguf_to_hf("rope_freqs.weight"), None);
        assert_eq!(
            needs_rope_permutation("llama", "model.layers.0.self_attn.k_proj.weight"),
            Some(RopeProjection::Key)
        );
        assert_eq!(
            needs_rope_permutation("qwen2", "model.layers.0.self_attn.q_proj.weight"),
            None
        );
    }
}
