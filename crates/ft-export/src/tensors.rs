//! Which tensors go into the GGUF, under which names, in which ggml type,
//! and the two transformations on the way: llama.cpp's q/k row permutation
//! and the Llama 3 `rope_freqs` tensor.
//!
//! # Type policy
//!
//! * `f32`, `f16`, `bf16`, `q8_0` follow `convert_hf_to_gguf.py --outtype`
//!   (`ModelBase.prepare_tensors`): tensors with at most one dimension and
//!   every `*_norm.weight` stay F32, so do tensors whose name does not end in
//!   `.weight` (biases); every other tensor, `token_embd` and `output`
//!   included, gets the file's type. A Q8_0 tensor whose rows are not whole
//!   blocks of 32 falls back to F16, as gguf-py's `QuantError` path does.
//! * `q4_0`, `q4_1`, `q5_0`, `q5_1`, `q4_k_m`, `q5_k_m`, `q6_k` follow
//!   `llama-quantize` (`llama_tensor_get_type_impl` in `src/llama-quant.cpp`):
//!   only 2-D+ `*.weight` tensors are quantized (everything else stays F32);
//!   `output.weight`, and `token_embd.weight` when the embeddings are tied,
//!   become Q6_K (Q8_0 when the row length is not a multiple of the base
//!   type's block); for the `_m` mixes `attn_v` and `ffn_down` of the layers
//!   picked by `use_more_bits` become Q6_K; a type whose block does not divide
//!   the row length falls back as `tensor_type_fallback` does (Q4_K → Q5_0,
//!   Q5_K → Q5_1, Q6_K → Q8_0, then F16).
//!
//! Deviations from a `convert … --outtype f16 && llama-quantize` pipeline:
//! the quantizers see the source values (f32, or f16/bf16 widened), not an
//! intermediate F16 file, so a BF16/F32 model quantizes from slightly more
//! precise inputs; the 70B-only rule (attn_v Q3_K/Q4_K → Q5_K) and the
//! MoE/Falcon rules do not apply to the supported architectures and are not
//! implemented; no importance matrix is used.

use ft_arch::Arch;
use ft_arch::gguf_names::{RopeProjection, hf_to_gguf, needs_rope_permutation};
use ft_gguf::GgmlType;

use crate::config::GgufType;
use crate::error::ExportError;
use crate::hf::HfModel;

/// One tensor of the output file.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// GGUF name.
    pub name: String,
    /// Index into [`HfModel::tensors`], or `None` for a generated tensor.
    pub source: Option<usize>,
    /// ggml-order shape (`shape[0]` is the row length).
    pub shape: Vec<u64>,
    /// Output type.
    pub ty: GgmlType,
    /// Head count for llama.cpp's q/k row permutation, when it applies.
    pub permute_heads: Option<usize>,
    /// Data of a generated tensor (`rope_freqs.weight`).
    pub generated: Option<Vec<f32>>,
    /// Why the type differs from the file's base type, when it falls back.
    pub fallback: Option<String>,
}

/// The GGUF `general.architecture` of an HF architecture, as llama.cpp's
/// converter writes it (Mistral converts as `llama`).
pub fn gguf_arch(arch: Arch) -> Option<&'static str> {
    match arch {
        Arch::Llama | Arch::Mistral => Some("llama"),
        Arch::Qwen2 => Some("qwen2"),
        Arch::Qwen3 => Some("qwen3"),
        Arch::SmolLm3 => Some("smollm3"),
    }
}

/// `general.file_type` (`enum llama_ftype`).
pub fn file_type(t: GgufType) -> u32 {
    match t {
        GgufType::F32 => 0,
        GgufType::F16 => 1,
        GgufType::Q4_0 => 2,
        GgufType::Q4_1 => 3,
        GgufType::Q8_0 => 7,
        GgufType::Q5_0 => 8,
        GgufType::Q5_1 => 9,
        GgufType::Q4KM => 15,
        GgufType::Q5KM => 17,
        GgufType::Q6K => 18,
        GgufType::Bf16 => 32,
    }
}

/// The base ggml type of a file type (what most matrices get).
pub fn base_type(t: GgufType) -> GgmlType {
    match t {
        GgufType::F32 => GgmlType::F32,
        GgufType::F16 => GgmlType::F16,
        GgufType::Bf16 => GgmlType::BF16,
        GgufType::Q8_0 => GgmlType::Q8_0,
        GgufType::Q4_0 => GgmlType::Q4_0,
        GgufType::Q4_1 => GgmlType::Q4_1,
        GgufType::Q5_0 => GgmlType::Q5_0,
        GgufType::Q5_1 => GgmlType::Q5_1,
        GgufType::Q4KM => GgmlType::Q4_K,
        GgufType::Q5KM => GgmlType::Q5_K,
        GgufType::Q6K => GgmlType::Q6_K,
    }
}

/// Whether the file type follows `convert_hf_to_gguf.py` (else `llama-quantize`).
fn is_convert_type(t: GgufType) -> bool {
    matches!(
        t,
        GgufType::F32 | GgufType::F16 | GgufType::Bf16 | GgufType::Q8_0
    )
}

/// llama-quantize's `use_more_bits`: the first and last eighth of the
/// layers, and every third layer in between.
fn use_more_bits(i_layer: usize, n_layers: usize) -> bool {
    let (i, n) = (i_layer as i64, n_layers as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The block index of a `blk.N.` name.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// llama-quantize's `tensor_type_fallback`.
fn fallback(ty: GgmlType, ne0: u64) -> GgmlType {
    if ne0.is_multiple_of(ty.block_size() as u64) {
        return ty;
    }
    let next = match ty {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if ne0.is_multiple_of(next.block_size() as u64) {
        next
    } else {
        GgmlType::F16
    }
}

/// The output type of tensor `name` with ggml shape `shape` in a file of
/// type `file`; `tied` when the file has no `output.weight`.
pub fn choose_type(
    file: GgufType,
    name: &str,
    shape: &[u64],
    n_layers: usize,
    tied: bool,
) -> GgmlType {
    choose(file, name, shape, n_layers, tied).1
}

/// (intended type, type after the block-size fallback).
fn choose(
    file: GgufType,
    name: &str,
    shape: &[u64],
    n_layers: usize,
    tied: bool,
) -> (GgmlType, GgmlType) {
    let n_dims = shape.len();
    let ne0 = shape.first().copied().unwrap_or(1);
    if is_convert_type(file) {
        if n_dims <= 1 || name.ends_with("_norm.weight") || !name.ends_with(".weight") {
            return (GgmlType::F32, GgmlType::F32);
        }
        let ty = base_type(file);
        // gguf-py raises QuantError for partial blocks; the converter then
        // writes F16.
        return if ne0.is_multiple_of(ty.block_size() as u64) {
            (ty, ty)
        } else {
            (ty, GgmlType::F16)
        };
    }

    // llama-quantize.
    if n_dims < 2 || !name.ends_with("weight") || name == "rope_freqs.weight" {
        return (GgmlType::F32, GgmlType::F32);
    }
    let base = base_type(file);
    let mixed = matches!(file, GgufType::Q4KM | GgufType::Q5KM);
    let mut ty = base;
    if name == "output.weight" || (tied && name == "token_embd.weight") {
        ty = if !ne0.is_multiple_of(base.block_size() as u64) {
            GgmlType::Q8_0
        } else if base != GgmlType::Q8_0 {
            GgmlType::Q6_K
        } else {
            base
        };
    } else if mixed
        && (name.contains("attn_v.weight") || name.contains("ffn_down"))
        && layer_of(name).is_some_and(|i| use_more_bits(i, n_layers))
    {
        ty = GgmlType::Q6_K;
    }
    (ty, fallback(ty, ne0))
}

/// Tensors each layer must have, by architecture (HF suffixes after
/// `model.layers.{i}.`).
fn required_layer_tensors(model: &HfModel) -> Vec<&'static str> {
    let mut v = vec![
        "input_layernorm.weight",
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.o_proj.weight",
        "post_attention_layernorm.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
    ];
    let cfg = &model.config;
    match model.arch {
        Arch::Qwen2 => v.extend([
            "self_attn.q_proj.bias",
            "self_attn.k_proj.bias",
            "self_attn.v_proj.bias",
        ]),
        Arch::Qwen3 => v.extend(["self_attn.q_norm.weight", "self_attn.k_norm.weight"]),
        Arch::Llama | Arch::Mistral | Arch::SmolLm3 => {
            if cfg.attention_bias == Some(true) {
                v.extend([
                    "self_attn.q_proj.bias",
                    "self_attn.k_proj.bias",
                    "self_attn.v_proj.bias",
                    "self_attn.o_proj.bias",
                ]);
            }
            if cfg.mlp_bias == Some(true) {
                v.extend([
                    "mlp.gate_proj.bias",
                    "mlp.up_proj.bias",
                    "mlp.down_proj.bias",
                ]);
            }
        }
    }
    v
}

/// HF tensors the converter drops.
fn ignored(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
        || name.ends_with(".attention.masked_bias")
        || name.ends_with(".attention.bias")
}

/// Llama 3 RoPE frequency factors, computed in f32 as the converter's
/// `LlamaModel.generate_extra_tensors` does with torch.
pub fn llama3_rope_factors(
    base: f64,
    dim: usize,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    old_context_len: f64,
) -> Vec<f32> {
    let low_freq_wavelen = old_context_len / low_freq_factor;
    let high_freq_wavelen = old_context_len / high_freq_factor;
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    (0..dim)
        .step_by(2)
        .map(|i| {
            // freqs = 1 / (base ** (arange(0, dim, 2, f32) / dim))
            let freq = 1.0f32 / (base as f32).powf(i as f32 / dim as f32);
            let wavelen = two_pi / freq;
            if wavelen < high_freq_wavelen as f32 {
                1.0
            } else if wavelen > low_freq_wavelen as f32 {
                factor as f32
            } else {
                let smooth = (old_context_len as f32 / wavelen - low_freq_factor as f32)
                    / (high_freq_factor - low_freq_factor) as f32;
                1.0 / ((1.0 - smooth) / factor as f32 + smooth)
            }
        })
        .collect()
}

/// The RoPE parameters object as the converter sees it: `rope_parameters`,
/// else `rope_scaling`, else empty.
pub(crate) fn rope_params(model: &HfModel) -> serde_json::Map<String, serde_json::Value> {
    let obj = model
        .hparam("rope_parameters")
        .or_else(|| model.hparam("rope_scaling"))
        .and_then(|v| v.as_object())
        .cloned()
        .unwrap_or_default();
    // Nested per-attention-type parameters (`full_attention`) win.
    match obj.get("full_attention").and_then(|v| v.as_object()) {
        Some(full) => full.clone(),
        None => obj,
    }
}

/// The RoPE scaling kind (`rope_type`, or `type` in older configs).
pub(crate) fn rope_type(p: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    p.get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

fn f64_of(p: &serde_json::Map<String, serde_json::Value>, key: &str, default: f64) -> f64 {
    p.get(key).and_then(|v| v.as_f64()).unwrap_or(default)
}

/// Plans every tensor of the output file, in the converter's order
/// (generated tensors first, then the checkpoint's).
pub fn plan(model: &HfModel, file: GgufType) -> Result<Vec<PlannedTensor>, ExportError> {
    let arch_name = model.arch.model_type();
    let Some(garch) = gguf_arch(model.arch) else {
        return Err(ExportError::BadOption {
            option: "model_dir",
            what: format!(
                "`{}`: model_type `{arch_name}` cannot be exported to GGUF yet (llama, mistral, qwen2, qwen3, smollm3 can)",
                model.dir.join("config.json").display()
            ),
        });
    };
    let cfg = &model.config;
    let n_layers = cfg.num_hidden_layers;
    // llama.cpp's smollm3 graph hard-codes its NoPE layers: every 4th.
    if model.arch == Arch::SmolLm3 {
        let llama_cpp: Vec<bool> = (0..n_layers).map(|i| (i + 1) % 4 != 0).collect();
        if cfg.smollm3_rope_layers() != llama_cpp {
            return Err(ExportError::BadOption {
                option: "model_dir",
                what: format!(
                    "`{}`: this SmolLM3's NoPE layers (no_rope_layers) are not every 4th layer, the only layout llama.cpp's smollm3 architecture runs",
                    model.dir.join("config.json").display()
                ),
            });
        }
    }

    // Every tensor the architecture needs must be there.
    let mut required: Vec<String> = vec![
        "model.embed_tokens.weight".into(),
        "model.norm.weight".into(),
    ];
    if !cfg.tie_word_embeddings {
        required.push("lm_head.weight".into());
    }
    let per_layer = required_layer_tensors(model);
    for i in 0..n_layers {
        required.extend(per_layer.iter().map(|s| format!("model.layers.{i}.{s}")));
    }
    for name in &required {
        if model.tensor(name).is_none() {
            return Err(ExportError::MissingTensor {
                dir: model.dir.clone(),
                tensor: name.clone(),
                arch: arch_name,
                layers: n_layers,
            });
        }
    }

    let mut out = Vec::new();

    // Llama 3 RoPE: the converter's LlamaModel writes the frequency factors.
    let rp = rope_params(model);
    if matches!(model.arch, Arch::Llama | Arch::Mistral)
        && rope_type(&rp).is_some_and(|t| t.eq_ignore_ascii_case("llama3"))
    {
        let base = f64_of(&rp, "rope_theta", cfg.rope_theta());
        let dim = cfg.head_dim();
        let data = llama3_rope_factors(
            base,
            dim,
            f64_of(&rp, "factor", 8.0),
            f64_of(&rp, "low_freq_factor", 1.0),
            f64_of(&rp, "high_freq_factor", 4.0),
            f64_of(&rp, "original_max_position_embeddings", 8192.0),
        );
        out.push(PlannedTensor {
            name: "rope_freqs.weight".into(),
            source: None,
            shape: vec![data.len() as u64],
            ty: GgmlType::F32,
            permute_heads: None,
            generated: Some(data),
            fallback: None,
        });
    }

    let tied = cfg.tie_word_embeddings;
    let n_head = cfg.num_attention_heads;
    let n_kv = cfg.kv_heads();
    for (idx, t) in model.tensors.iter().enumerate() {
        if ignored(&t.name) || (tied && t.name == "lm_head.weight") {
            continue;
        }
        let Some(name) = hf_to_gguf(&t.name) else {
            return Err(ExportError::UnknownTensor {
                path: model.path_of(t).to_path_buf(),
                tensor: t.name.clone(),
                arch: arch_name,
            });
        };
        if t.shape.is_empty() || t.shape.len() > 4 || t.shape.contains(&0) {
            return Err(ExportError::BadShape {
                path: model.path_of(t).to_path_buf(),
                tensor: t.name.clone(),
                found: t.shape.clone(),
                expected: "1 to 4 non-zero dimensions".into(),
                help: "the checkpoint is corrupt; re-save it",
            });
        }
        let permute_heads = match needs_rope_permutation(garch, &t.name) {
            Some(RopeProjection::Query) => Some(n_head),
            Some(RopeProjection::Key) => Some(n_kv),
            None => None,
        };
        if let Some(h) = permute_heads
            && (h == 0 || !t.shape[0].is_multiple_of(2 * h))
        {
            return Err(ExportError::BadShape {
                path: model.path_of(t).to_path_buf(),
                tensor: t.name.clone(),
                found: t.shape.clone(),
                expected: format!("a first dimension divisible by 2 × {h} heads"),
                help: "check num_attention_heads / num_key_value_heads in config.json",
            });
        }
        let shape: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
        let (intended, ty) = choose(file, &name, &shape, n_layers, tied);
        let fallback = (intended != ty).then(|| {
            format!(
                "{name}: {} -> {} (row length {} is not a multiple of {}'s block of {})",
                intended.name(),
                ty.name(),
                shape[0],
                intended.name(),
                intended.block_size()
            )
        });
        out.push(PlannedTensor {
            name,
            source: Some(idx),
            shape,
            ty,
            permute_heads,
            generated: None,
            fallback,
        });
    }
    Ok(out)
}

/// llama.cpp's `LlamaModel.permute` on the rows of a `[rows, cols]`
/// row-major matrix (or a bias, `cols = 1`): within each of `n_head` heads,
/// HF's rotate-half pairs `(j, j + d/2)` become adjacent rows `(2j, 2j + 1)`.
///
/// `reshape(n_head, 2, d/2, cols).swapaxes(1, 2).reshape(rows, cols)`, so
/// output row `h·d + 2j + i` is input row `h·d + i·d/2 + j`.
pub fn permute_rows(data: &[f32], rows: usize, n_head: usize) -> Vec<f32> {
    let cols = data.len() / rows.max(1);
    let d = rows / n_head;
    let half = d / 2;
    let mut out = vec![0.0f32; data.len()];
    for h in 0..n_head {
        for j in 0..half {
            for i in 0..2 {
                let dst = h * d + 2 * j + i;
                let src = h * d + i * half + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_the_converter_reshape() {
        // 2 heads of 4 rows, 1 column: rows [a0 a1 b0 b1 | c0 c1 d0 d1]
        // (halves a/b) become [a0 b0 a1 b1 | c0 d0 c1 d1].
        let x: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(
            permute_rows(&x, 8, 2),
            [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]
        );
        // Columns move with their rows.
        let x: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(
            permute_rows(&x, 4, 1),
            [0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]
        );
    }

    #[test]
    fn llama_quantize_type_rules() {
        let t = |f, name: &str, shape: &[u64], tied| choose_type(f, name, shape, 32, tied);
        // K-quant mixes.
        assert_eq!(
            t(GgufType::Q4KM, "output.weight", &[4096, 32000], false),
            GgmlType::Q6_K
        );
        assert_eq!(
            t(GgufType::Q4KM, "token_embd.weight", &[4096, 32000], false),
            GgmlType::Q4_K
        );
        assert_eq!(
            t(GgufType::Q4KM, "token_embd.weight", &[4096, 32000], true),
            GgmlType::Q6_K
        );
        assert_eq!(
            t(GgufType::Q4KM, "blk.0.attn_v.weight", &[4096, 1024], false),
            GgmlType::Q6_K
        );
        assert_eq!(
            t(GgufType::Q4KM, "blk.4.attn_v.weight", &[4096, 1024], false),
            GgmlType::Q4_K
        );
        assert_eq!(
            t(
                GgufType::Q4KM,
                "blk.6.ffn_down.weight",
                &[14336, 4096],
                false
            ),
            GgmlType::Q6_K
        );
        assert_eq!(
            t(
                GgufType::Q5KM,
                "blk.5.ffn_down.weight",
                &[14336, 4096],
                false
            ),
            GgmlType::Q5_K
        );
        assert_eq!(
            t(GgufType::Q4KM, "blk.0.attn_norm.weight", &[4096], false),
            GgmlType::F32
        );
        // Fallbacks for rows that are not whole 256-blocks.
        assert_eq!(
            t(GgufType::Q4KM, "blk.4.attn_q.weight", &[64, 64], false),
            GgmlType::Q5_0
        );
        assert_eq!(
            t(GgufType::Q5KM, "blk.4.attn_q.weight", &[64, 64], false),
            GgmlType::Q5_1
        );
        assert_eq!(
            t(GgufType::Q6K, "blk.4.attn_q.weight", &[64, 64], false),
            GgmlType::Q8_0
        );
        assert_eq!(
            t(GgufType::Q4KM, "output.weight", &[64, 256], false),
            GgmlType::Q8_0
        );
        assert_eq!(
            t(GgufType::Q4_0, "blk.0.attn_q.weight", &[48, 64], false),
            GgmlType::F16
        );
        // Legacy quants: output Q6_K, the rest the base type.
        assert_eq!(
            t(GgufType::Q4_0, "output.weight", &[4096, 32000], false),
            GgmlType::Q6_K
        );
        assert_eq!(
            t(
                GgufType::Q5_1,
                "blk.0.ffn_down.weight",
                &[4096, 32000],
                false
            ),
            GgmlType::Q5_1
        );
        // Converter types.
        assert_eq!(
            t(GgufType::Q8_0, "token_embd.weight", &[64, 256], true),
            GgmlType::Q8_0
        );
        assert_eq!(
            t(GgufType::Q8_0, "blk.0.attn_q.bias", &[64], false),
            GgmlType::F32
        );
        assert_eq!(
            t(GgufType::F16, "blk.0.attn_q_norm.weight", &[32], false),
            GgmlType::F32
        );
        assert_eq!(
            t(GgufType::Q8_0, "blk.0.attn_q.weight", &[48, 64], false),
            GgmlType::F16
        );
        assert_eq!(
            t(GgufType::Bf16, "output.weight", &[64, 256], false),
            GgmlType::BF16
        );
        assert!(use_more_bits(0, 32) && use_more_bits(31, 32) && use_more_bits(6, 32));
        assert!(!use_more_bits(4, 32));
    }
}
