//! A GGUF file seen as a Hugging Face checkpoint.
//!
//! [`HfView`] serves a GGUF model's tensors under their HF names
//! ([`ft_arch::gguf_names`]), in PyTorch shape order, dequantized to `f32`
//! and with llama.cpp's q/k row permutation undone, and rebuilds the
//! `config.json` / `generation_config.json` transformers would have for the
//! model from the `{arch}.*` and `tokenizer.ggml.*` metadata. It is what a
//! consumer needs to treat a `.gguf` like an HF model directory: the LoRA
//! merge uses it to merge into a GGUF base; the burn model loader can serve
//! its `TensorSource` from it.
//!
//! # Layout differences undone here
//!
//! * **Shapes.** ggml lists dimensions fastest-first (`ne = [in, out]`); HF
//!   `[out, in]` is the reverse.
//! * **Names.** `blk.N.attn_q.weight` ↔ `model.layers.N.self_attn.q_proj.weight`
//!   (the table in [`ft_arch::gguf_names`]). A tied model has no
//!   `output.weight`, hence no `lm_head.weight`.
//! * **RoPE permutation.** For `general.architecture == "llama"` (also what
//!   Mistral checkpoints are converted as) llama.cpp's converter permutes
//!   the rows of q and k (weights and biases) so its RoPE can rotate adjacent
//!   pairs: within each head of size `d`, HF row `t·d/2 + j` (`t ∈ {0, 1}`,
//!   `j < d/2`) is stored at row `2j + t` (`LlamaModel.permute` in
//!   `convert_hf_to_gguf.py`). [`unpermute_rows`] is its inverse,
//!   [`permute_rows`] the converter's direction. Qwen2/3 are not permuted.
//!
//! # config.json
//!
//! [`HfView::hf_config`] maps llama.cpp's keys back to the transformers
//! config of `model_type` `llama`, `qwen2` or `qwen3` (the GGUF archs ft
//! reads; a Mistral GGUF is `llama` and becomes a Llama config, the same
//! network without Mistral's optional sliding window):
//!
//! | config.json               | GGUF                                          |
//! |---------------------------|-----------------------------------------------|
//! | `hidden_size`             | `{arch}.embedding_length`                     |
//! | `intermediate_size`       | `{arch}.feed_forward_length`                  |
//! | `num_hidden_layers`       | `{arch}.block_count`                          |
//! | `num_attention_heads`     | `{arch}.attention.head_count`                 |
//! | `num_key_value_heads`     | `{arch}.attention.head_count_kv` (else heads) |
//! | `head_dim`                | `{arch}.attention.key_length` (else hidden / heads) |
//! | `rms_norm_eps`            | `{arch}.attention.layer_norm_rms_epsilon`     |
//! | `rope_theta`              | `{arch}.rope.freq_base` (else 10000)          |
//! | `rope_scaling`            | `{arch}.rope.scaling.*` (`linear`, `yarn`)    |
//! | `max_position_embeddings` | `{arch}.context_length`                       |
//! | `vocab_size`              | rows of `token_embd.weight`                   |
//! | `tie_word_embeddings`     | no `output.weight`                            |
//! | `{bos,eos,pad}_token_id`  | `tokenizer.ggml.{bos,eos,padding}_token_id`   |
//!
//! Floats stored as GGUF `f32` are written as the shortest decimal that
//! reads back as that `f32` (an `rms_norm_eps` of `1e-5` stays `1e-5`, not
//! `9.999999747378752e-6`). The RoPE settings are written both the
//! transformers 5 way (`rope_parameters`) and the older way (`rope_theta`,
//! `rope_scaling`); transformers 5 reads either.

use std::collections::HashMap;
use std::path::Path;

use ft_arch::gguf_names::{RopeProjection, gguf_to_hf, needs_rope_permutation};
use serde_json::{Map, Value as Json, json};

use crate::error::{Error, Result};
use crate::reader::GgufFile;
use crate::types::GgmlType;
use crate::value::Value;

/// One GGUF tensor that has an HF name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HfTensor {
    /// HF name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// GGUF name (`blk.0.attn_q.weight`).
    pub gguf_name: String,
    /// Shape in PyTorch order (`[out, in]`).
    pub shape: Vec<usize>,
    /// Stored ggml type.
    pub ty: GgmlType,
    /// Whether [`HfView::load`] un-permutes its rows, and with which head
    /// count (llama q/k projections).
    pub rope: Option<RopeProjection>,
}

impl HfTensor {
    /// Number of elements.
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the stored bytes are this tensor's HF values as they are:
    /// a plain float type (F32, F16, BF16, little-endian row-major, as in
    /// safetensors) and not row-permuted.
    pub fn is_plain_float(&self) -> bool {
        self.rope.is_none() && matches!(self.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }
}

/// A GGUF model file read as an HF checkpoint (see the [module docs](self)).
#[derive(Debug)]
pub struct HfView {
    file: GgufFile,
    /// `general.architecture`.
    arch: String,
    /// Query heads.
    n_head: usize,
    /// Key/value heads.
    n_head_kv: usize,
    /// HF-named tensors, in file order.
    tensors: Vec<HfTensor>,
    /// HF name → index into `tensors`.
    by_name: HashMap<String, usize>,
    /// GGUF tensors without an HF name, in file order.
    unmapped: Vec<String>,
}

impl HfView {
    /// Opens `path` (memory-mapped; tensor data is read lazily).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::new(GgufFile::open(path)?)
    }

    /// Wraps an opened file: reads the architecture and head counts and
    /// maps every tensor name.
    pub fn new(file: GgufFile) -> Result<Self> {
        let arch = file.architecture()?.to_string();
        let n_head = usize_of(file.require_u64(&format!("{arch}.attention.head_count"))?);
        let kv_key = format!("{arch}.attention.head_count_kv");
        let n_head_kv = match file.metadata().get(&kv_key) {
            None => n_head,
            Some(v) => usize_of(v.as_u64().ok_or_else(|| Error::Metadata {
                path: file.path().to_path_buf(),
                key: kv_key.clone(),
                problem: format!(
                    "is {}, expected a non-negative integer (per-layer head counts are not supported)",
                    v.value_type()
                ),
            })?),
        };
        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        let mut unmapped = Vec::new();
        for info in file.tensors() {
            let Some(name) = gguf_to_hf(&info.name) else {
                unmapped.push(info.name.clone());
                continue;
            };
            let rope = needs_rope_permutation(&arch, &name);
            by_name.insert(name.clone(), tensors.len());
            tensors.push(HfTensor {
                rope,
                name,
                gguf_name: info.name.clone(),
                shape: info.shape.iter().rev().map(|&d| usize_of(d)).collect(),
                ty: info.ty,
            });
        }
        Ok(Self {
            file,
            arch,
            n_head,
            n_head_kv,
            tensors,
            by_name,
            unmapped,
        })
    }

    /// The underlying file (metadata, tokenizer keys, raw tensor bytes).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// `general.architecture` (`llama`, `qwen2`, `qwen3` …).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// (query heads, key/value heads).
    pub fn head_counts(&self) -> (usize, usize) {
        (self.n_head, self.n_head_kv)
    }

    /// The tensors that have an HF name, in file order.
    pub fn tensors(&self) -> &[HfTensor] {
        &self.tensors
    }

    /// The tensor with HF name `name`.
    pub fn tensor(&self, name: &str) -> Option<&HfTensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// GGUF tensors with no HF counterpart (`rope_freqs.weight`, MoE
    /// experts …), in file order. A consumer that must reproduce the whole
    /// model should refuse a file where this is not empty.
    pub fn unmapped(&self) -> &[String] {
        &self.unmapped
    }

    /// Whether the LM head shares the embedding matrix (no `output.weight`).
    pub fn tie_word_embeddings(&self) -> bool {
        !self.by_name.contains_key("lm_head.weight")
    }

    /// Tensor `name` (HF name) as HF stores it: dequantized to `f32`,
    /// row-major in [`HfTensor::shape`], q/k rows un-permuted.
    pub fn load(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor(name).ok_or_else(|| Error::TensorNotFound {
            path: self.path().to_path_buf(),
            name: format!(
                "{name} (GGUF `{}`)",
                ft_arch::gguf_names::hf_to_gguf(name).unwrap_or_else(|| "?".into())
            ),
        })?;
        let data = self.file.dequantize(&t.gguf_name)?;
        let Some(which) = t.rope else {
            return Ok(data);
        };
        let heads = match which {
            RopeProjection::Query => self.n_head,
            RopeProjection::Key => self.n_head_kv,
        };
        let rows = t.shape.first().copied().unwrap_or(0);
        unpermute_rows(&data, rows, heads).ok_or_else(|| Error::NotHf {
            path: self.path().to_path_buf(),
            problem: format!(
                "tensor `{}` has {rows} rows, not a multiple of 2 × {heads} heads, so llama.cpp's \
                 q/k row permutation cannot be undone",
                t.gguf_name
            ),
            help: "the file's head counts do not match its tensors; re-convert the model",
        })
    }

    /// The transformers `config.json` for this model (see the [module
    /// docs](self)), without `dtype`/`torch_dtype` (the caller knows what it
    /// writes).
    pub fn hf_config(&self) -> Result<Map<String, Json>> {
        let path = self.path().to_path_buf();
        let not_hf = |problem: String, help: &'static str| Error::NotHf {
            path: path.clone(),
            problem,
            help,
        };
        let (model_type, architecture) = match self.arch.as_str() {
            "llama" => ("llama", "LlamaForCausalLM"),
            "qwen2" => ("qwen2", "Qwen2ForCausalLM"),
            "qwen3" => ("qwen3", "Qwen3ForCausalLM"),
            "smollm3" => ("smollm3", "SmolLM3ForCausalLM"),
            other => {
                return Err(not_hf(
                    format!(
                        "general.architecture `{other}` has no config.json mapping (supported: llama, qwen2, qwen3, smollm3)"
                    ),
                    "use the model's Hugging Face directory instead of its GGUF",
                ));
            }
        };
        if let Some(name) = self.unmapped.first() {
            let help = if name == "rope_freqs.weight" {
                "per-frequency RoPE factors (Llama 3.1 scaling) cannot be turned back into \
                 config.json's rope_scaling; use the model's Hugging Face directory"
            } else {
                "use the model's Hugging Face directory instead of its GGUF"
            };
            return Err(not_hf(
                format!(
                    "{} tensor(s) have no Hugging Face name, the first being `{name}`",
                    self.unmapped.len()
                ),
                help,
            ));
        }
        let f = &self.file;
        let key = |k: &str| format!("{}.{k}", self.arch);
        let get = |k: &str| f.metadata().get(&key(k));
        let hidden = usize_of(f.require_u64(&key("embedding_length"))?);
        let head_dim = match get("attention.key_length") {
            Some(v) => usize_of(v.as_u64().unwrap_or(0)),
            None => hidden / self.n_head.max(1),
        };
        if let Some(n) = get("rope.dimension_count").and_then(Value::as_u64)
            && usize_of(n) != head_dim
        {
            return Err(not_hf(
                format!(
                    "partial RoPE ({n} of {head_dim} head dimensions) has no `{model_type}` config.json form"
                ),
                "use the model's Hugging Face directory instead of its GGUF",
            ));
        }
        let embed =
            self.tensor("model.embed_tokens.weight")
                .ok_or_else(|| Error::TensorNotFound {
                    path: path.clone(),
                    name: "token_embd.weight".into(),
                })?;
        let vocab_size = embed.shape.first().copied().unwrap_or(0);
        let rope_theta = get("rope.freq_base").and_then(json_f64).unwrap_or(10_000.0);

        let mut c = Map::new();
        c.insert("architectures".into(), json!([architecture]));
        c.insert("model_type".into(), json!(model_type));
        c.insert("hidden_size".into(), json!(hidden));
        c.insert(
            "intermediate_size".into(),
            json!(usize_of(f.require_u64(&key("feed_forward_length"))?)),
        );
        c.insert(
            "num_hidden_layers".into(),
            json!(usize_of(f.require_u64(&key("block_count"))?)),
        );
        c.insert("num_attention_heads".into(), json!(self.n_head));
        c.insert("num_key_value_heads".into(), json!(self.n_head_kv));
        c.insert("head_dim".into(), json!(head_dim));
        c.insert("hidden_act".into(), json!("silu"));
        if let Some(eps) = get("attention.layer_norm_rms_epsilon").and_then(json_f64) {
            c.insert("rms_norm_eps".into(), json!(eps));
        }
        if let Some(n) = get("context_length").and_then(Value::as_u64) {
            c.insert("max_position_embeddings".into(), json!(n));
        }
        c.insert("vocab_size".into(), json!(vocab_size));
        c.insert(
            "tie_word_embeddings".into(),
            json!(self.tie_word_embeddings()),
        );
        let has = |hf: &str| self.by_name.contains_key(hf);
        match model_type {
            // llama.cpp runs smollm3 with every 4th layer NoPE, which is
            // transformers' default for `no_rope_layer_interval: 4`.
            "smollm3" => {
                c.insert("no_rope_layer_interval".into(), json!(4));
                c.insert("use_sliding_window".into(), json!(false));
                c.insert(
                    "attention_bias".into(),
                    json!(has("model.layers.0.self_attn.q_proj.bias")),
                );
            }
            "llama" => {
                c.insert(
                    "attention_bias".into(),
                    json!(has("model.layers.0.self_attn.q_proj.bias")),
                );
                c.insert(
                    "mlp_bias".into(),
                    json!(has("model.layers.0.mlp.up_proj.bias")),
                );
            }
            "qwen3" => {
                c.insert(
                    "attention_bias".into(),
                    json!(has("model.layers.0.self_attn.q_proj.bias")),
                );
                c.insert("use_sliding_window".into(), json!(false));
            }
            _ => {
                c.insert("use_sliding_window".into(), json!(false));
            }
        }
        for (hf, gguf) in [
            ("bos_token_id", "tokenizer.ggml.bos_token_id"),
            ("eos_token_id", "tokenizer.ggml.eos_token_id"),
            ("pad_token_id", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(id) = f.metadata().get(gguf).and_then(Value::as_u64) {
                c.insert(hf.into(), json!(id));
            }
        }
        let scaling = self.rope_scaling()?;
        let mut parameters = Map::new();
        parameters.insert("rope_theta".into(), json!(rope_theta));
        match &scaling {
            Some(s) => parameters.extend(s.clone()),
            None => {
                parameters.insert("rope_type".into(), json!("default"));
            }
        }
        c.insert("rope_theta".into(), json!(rope_theta));
        c.insert("rope_parameters".into(), Json::Object(parameters));
        if let Some(s) = scaling {
            c.insert("rope_scaling".into(), Json::Object(s));
        }
        Ok(c)
    }

    /// `rope_scaling` from `{arch}.rope.scaling.*`, `None` for none.
    fn rope_scaling(&self) -> Result<Option<Map<String, Json>>> {
        let meta = self.file.metadata();
        let key = |k: &str| format!("{}.rope.scaling.{k}", self.arch);
        let kind = match meta.get_str(&key("type")) {
            None | Some("none") => return Ok(None),
            Some(kind @ ("linear" | "yarn")) => kind,
            Some(other) => {
                return Err(Error::NotHf {
                    path: self.path().to_path_buf(),
                    problem: format!(
                        "RoPE scaling `{other}` (`{}`) has no config.json mapping here (supported: linear, yarn)",
                        key("type")
                    ),
                    help: "use the model's Hugging Face directory instead of its GGUF",
                });
            }
        };
        let mut s = Map::new();
        s.insert("rope_type".into(), json!(kind));
        let factor = meta.get(&key("factor")).and_then(json_f64).unwrap_or(1.0);
        s.insert("factor".into(), json!(factor));
        if kind == "yarn" {
            if let Some(n) = meta
                .get(&key("original_context_length"))
                .and_then(Value::as_u64)
            {
                s.insert("original_max_position_embeddings".into(), json!(n));
            }
            for (hf, g) in [
                ("extrapolation_factor", "yarn_ext_factor"),
                ("attention_factor", "yarn_attn_factor"),
                ("beta_fast", "yarn_beta_fast"),
                ("beta_slow", "yarn_beta_slow"),
            ] {
                if let Some(x) = meta.get(&key(g)).and_then(json_f64) {
                    s.insert(hf.into(), json!(x));
                }
            }
        }
        Ok(Some(s))
    }

    /// `generation_config.json`: the bos/eos (and pad, when the file has
    /// one) token ids, as transformers derives it from the model config.
    pub fn generation_config(&self) -> Map<String, Json> {
        let mut g = Map::new();
        for (hf, gguf) in [
            ("bos_token_id", "tokenizer.ggml.bos_token_id"),
            ("eos_token_id", "tokenizer.ggml.eos_token_id"),
            ("pad_token_id", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(id) = self.file.metadata().get(gguf).and_then(Value::as_u64) {
                g.insert(hf.into(), json!(id));
            }
        }
        g
    }
}

/// A `u64` from the file as `usize` (saturating on 32-bit hosts, where such
/// a model could not be loaded anyway).
fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// A float metadata value for JSON: an `f32` as the shortest decimal that
/// reads back as it (so `1e-5` stays `1e-5`), an `f64` as is.
fn json_f64(v: &Value) -> Option<f64> {
    match *v {
        Value::F32(x) => x.to_string().parse().ok(),
        Value::F64(x) => Some(x),
        _ => v.as_u64().map(|x| x as f64),
    }
}

/// Undoes llama.cpp's q/k row permutation: `data` is `[rows, cols]`
/// row-major (`cols` may be 1, for a bias) with `rows = heads · d`; within
/// each head, stored row `2j + t` goes back to row `t·d/2 + j`. `None` if
/// `rows` is not a multiple of `2·heads` or `data` not a multiple of `rows`.
pub fn unpermute_rows(data: &[f32], rows: usize, heads: usize) -> Option<Vec<f32>> {
    move_rows(data, rows, heads, |half, t, j| (2 * j + t, t * half + j))
}

/// llama.cpp's q/k row permutation (`LlamaModel.permute` in
/// `convert_hf_to_gguf.py`: `reshape(heads, 2, d/2, cols).swapaxes(1, 2)`):
/// within each head, row `t·d/2 + j` goes to row `2j + t`. The inverse of
/// [`unpermute_rows`]; `None` in the same cases.
pub fn permute_rows(data: &[f32], rows: usize, heads: usize) -> Option<Vec<f32>> {
    move_rows(data, rows, heads, |half, t, j| (t * half + j, 2 * j + t))
}

/// Copies whole rows head by head: `map(d/2, t, j)` gives the in-head
/// (source, destination) rows for pair `(t ∈ {0, 1}, j < d/2)`.
fn move_rows(
    data: &[f32],
    rows: usize,
    heads: usize,
    map: impl Fn(usize, usize, usize) -> (usize, usize),
) -> Option<Vec<f32>> {
    if heads == 0
        || rows == 0
        || !rows.is_multiple_of(2 * heads)
        || !data.len().is_multiple_of(rows)
    {
        return None;
    }
    let cols = data.len() / rows;
    let d = rows / heads;
    let half = d / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for t in 0..2 {
            for j in 0..half {
                let (src, dst) = map(half, t, j);
                let (src, dst) = (h * d + src, h * d + dst);
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `LlamaModel.permute` from convert_hf_to_gguf.py on row indices,
    /// written independently: output (h, j, t) reads input (h, t, j).
    fn permute_like_llama_cpp(data: &[f32], rows: usize, heads: usize) -> Vec<f32> {
        let cols = data.len() / rows;
        let (d, half) = (rows / heads, rows / heads / 2);
        let mut out = vec![0.0; data.len()];
        for h in 0..heads {
            for j in 0..half {
                for t in 0..2 {
                    let dst = h * d + j * 2 + t;
                    let src = h * d + t * half + j;
                    out[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&data[src * cols..(src + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn permutation_matches_llama_cpp_and_inverts() {
        for (rows, cols, heads) in [(24, 3, 3), (64, 1, 4), (32, 5, 2)] {
            let data: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let permuted = permute_like_llama_cpp(&data, rows, heads);
            assert_ne!(permuted, data);
            assert_eq!(permute_rows(&data, rows, heads).unwrap(), permuted);
            assert_eq!(unpermute_rows(&permuted, rows, heads).unwrap(), data);
        }
        assert_eq!(unpermute_rows(&[0.0; 30], 10, 3), None);
        assert_eq!(permute_rows(&[], 0, 1), None);
    }

    /// Writes a GGUF with `meta` and F32 tensors `(name, ggml shape)` whose
    /// values are their element indices.
    fn write(dir: &Path, meta: &crate::Metadata, tensors: &[(&str, Vec<u64>)]) -> HfView {
        let path = dir.join("m.gguf");
        let specs = tensors
            .iter()
            .map(|(n, s)| crate::TensorSpec::new(*n, s.clone(), GgmlType::F32))
            .collect();
        let mut w = crate::GgufWriter::create(&path, meta, specs).unwrap();
        for (n, s) in tensors {
            let bytes: Vec<u8> = (0..s.iter().product::<u64>())
                .flat_map(|i| (i as f32).to_le_bytes())
                .collect();
            w.write_tensor(n, &bytes).unwrap();
        }
        w.finish().unwrap();
        HfView::open(&path).unwrap()
    }

    #[test]
    fn qwen2_config_with_yarn_and_an_lm_head() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = crate::Metadata::new();
        meta.set("general.architecture", "qwen2")
            .set("qwen2.block_count", 1u32)
            .set("qwen2.context_length", 32768u32)
            .set("qwen2.embedding_length", 8u32)
            .set("qwen2.feed_forward_length", 16u32)
            .set("qwen2.attention.head_count", 2u32)
            .set("qwen2.attention.head_count_kv", 1u32)
            .set("qwen2.rope.freq_base", 1_000_000f32)
            .set("qwen2.attention.layer_norm_rms_epsilon", 1e-6f32)
            .set("qwen2.rope.scaling.type", "yarn")
            .set("qwen2.rope.scaling.factor", 4f32)
            .set("qwen2.rope.scaling.original_context_length", 8192u32)
            .set("tokenizer.ggml.eos_token_id", 7u32);
        let view = write(
            dir.path(),
            &meta,
            &[
                ("token_embd.weight", vec![8, 10]),
                ("output.weight", vec![8, 10]),
                ("blk.0.attn_q.weight", vec![8, 8]),
                ("blk.0.attn_q.bias", vec![8]),
            ],
        );
        assert!(view.unmapped().is_empty());
        assert!(!view.tie_word_embeddings());
        let q = view
            .tensor("model.layers.0.self_attn.q_proj.weight")
            .unwrap();
        assert_eq!((q.shape.as_slice(), q.rope), ([8, 8].as_slice(), None));
        // Not permuted (qwen2): the stored order.
        let b = view.load("model.layers.0.self_attn.q_proj.bias").unwrap();
        assert_eq!(b, (0..8).map(|i| i as f32).collect::<Vec<_>>());
        let c = Json::Object(view.hf_config().unwrap());
        assert_eq!(c["architectures"], json!(["Qwen2ForCausalLM"]));
        assert_eq!(c["model_type"], "qwen2");
        assert_eq!(c["head_dim"], 4);
        assert_eq!(c["num_key_value_heads"], 1);
        assert_eq!(c["vocab_size"], 10);
        assert_eq!(c["rms_norm_eps"], json!(1e-6));
        assert_eq!(c["tie_word_embeddings"], false);
        assert_eq!(c["eos_token_id"], 7);
        assert!(c.get("bos_token_id").is_none());
        let yarn =
            json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192});
        assert_eq!(c["rope_scaling"], yarn);
        assert_eq!(c["rope_parameters"]["rope_theta"], json!(1e6));
        assert_eq!(c["rope_parameters"]["rope_type"], "yarn");
        assert_eq!(json!(view.generation_config()), json!({"eos_token_id": 7}));
    }

    #[test]
    fn llama_q_is_unpermuted_and_rope_freqs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = crate::Metadata::new();
        meta.set("general.architecture", "llama")
            .set("llama.block_count", 1u32)
            .set("llama.embedding_length", 8u32)
            .set("llama.feed_forward_length", 16u32)
            .set("llama.attention.head_count", 2u32);
        let view = write(
            dir.path(),
            &meta,
            &[
                ("token_embd.weight", vec![8, 10]),
                ("blk.0.attn_q.weight", vec![2, 8]),
                ("rope_freqs.weight", vec![2]),
            ],
        );
        assert_eq!(view.head_counts(), (2, 2));
        let q = view.load("model.layers.0.self_attn.q_proj.weight").unwrap();
        let stored: Vec<f32> = (0..16).map(|i| i as f32).collect();
        assert_eq!(q, unpermute_rows(&stored, 8, 2).unwrap());
        assert_ne!(q, stored);
        assert_eq!(view.unmapped(), ["rope_freqs.weight"]);
        let err = view.hf_config().unwrap_err().to_string();
        assert!(
            err.contains("m.gguf")
                && err.contains("rope_freqs.weight")
                && err.contains("Llama 3.1"),
            "{err}"
        );
        let err = view.load("lm_head.weight").unwrap_err().to_string();
        assert!(
            err.contains("lm_head.weight") && err.contains("output.weight"),
            "{err}"
        );
    }

    #[test]
    fn f32_metadata_becomes_the_short_decimal() {
        assert_eq!(json_f64(&Value::F32(1e-5)), Some(1e-5));
        assert_eq!(json_f64(&Value::F32(1e-6)), Some(1e-6));
        assert_eq!(json_f64(&Value::F32(100_000.0)), Some(100_000.0));
        assert_eq!(json_f64(&Value::F64(0.1)), Some(0.1));
        assert_eq!(json_f64(&Value::String("x".into())), None);
    }
}
