//! The pre-norm decoder-only transformer that Llama, Mistral, Qwen2 and
//! Qwen3 share, parameterised by a [`DecoderSpec`] that each architecture's
//! file derives from its `config.json`.
//!
//! ```text
//! input_ids [b, s] ─ embed_tokens ─▶ h [b, s, hidden]
//! for each of the num_hidden_layers layers:
//!     h = h + o_proj(attention(rope(q), rope(k), v, mask))   on input_layernorm(h)
//!     h = h + down_proj(silu(gate_proj(x)) · up_proj(x))      on x = post_attention_layernorm(h)
//! logits [b, s, vocab] = lm_head(norm(h))     (lm_head = embed_tokensᵀ when tied)
//! ```
//!
//! Attention heads: q has `num_attention_heads` heads of `head_dim`, k and v
//! `num_key_value_heads` (grouped-query attention, Ainslie et al. 2023,
//! <https://arxiv.org/abs/2305.13245>); each k/v head serves
//! `heads / kv_heads` query heads. Qwen3 RMS-normalises each q and k head
//! before RoPE (`q_norm`, `k_norm`). Architecture paper: Touvron et al.
//! 2023, Llama 2, <https://arxiv.org/abs/2307.09288>; the reference code is
//! transformers' `modeling_llama.py` / `modeling_qwen3.py`.
//!
//! Batches are packed ([`PackedBatch`]): one row may hold several
//! sequences, each with positions starting at 0, and attention is causal
//! within a sequence and blocked across sequences, so a packed row gives
//! exactly the logits of its sequences run one by one.
//!
//! Generation runs incrementally ([`CausalLm::forward_cached`]): the keys
//! and values of earlier tokens are kept per layer in a [`KvCache`]
//! (after RoPE, before the GQA repeat), so each new token costs one row of
//! every projection and one attention row instead of a rerun of the whole
//! sequence. Both paths go through the same [`Attention::forward_with_kv`].
//!
//! Module fields carry the HF checkpoint names: the parameter
//! `model.layers.1.self_attn.q_proj.weight` is
//! `CausalLm.model.layers[1].self_attn.q_proj.weight`.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Bool, DType, Device, Int, Tensor};
use ft_arch::Arch;

use super::PackedBatch;
use super::layers::{
    Embedding, Linear, Mlp, RmsNorm, Rope, RopeScaling, packed_causal_mask, to_dtype,
};
use crate::error::ModelError;
use crate::weights::VarBuilder;

/// Everything that distinguishes one decoder from another: sizes and the
/// architecture's choices (biases, q/k norm, window, RoPE).
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderSpec {
    /// Which architecture this is.
    pub arch: Arch,
    /// Vocabulary size (rows of `embed_tokens`).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP inner width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads; divides `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE frequency scaling.
    pub rope_scaling: RopeScaling,
    /// q/k/v projections carry biases (Qwen2).
    pub qkv_bias: bool,
    /// o_proj carries a bias.
    pub o_bias: bool,
    /// MLP projections carry biases.
    pub mlp_bias: bool,
    /// Per-head RMSNorm on q and k before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Attend only to the last `w` tokens of the own sequence (Mistral).
    pub sliding_window: Option<usize>,
    /// `lm_head` is `embed_tokens`.
    pub tie_word_embeddings: bool,
    /// Layers that apply no RoPE ("NoPE", SmolLM3): `nope_layers[i]` for
    /// layer `i`; empty when every layer rotates q and k.
    pub nope_layers: Vec<bool>,
}

impl DecoderSpec {
    /// Whether layer `i` rotates q and k by position.
    pub fn layer_uses_rope(&self, i: usize) -> bool {
        !self.nope_layers.get(i).copied().unwrap_or(false)
    }
}

/// Self-attention with GQA and RoPE (`self_attn`).
#[derive(Module, Debug)]
pub struct Attention {
    /// `[heads·head_dim, hidden]`.
    pub q_proj: Linear,
    /// `[kv_heads·head_dim, hidden]`.
    pub k_proj: Linear,
    /// `[kv_heads·head_dim, hidden]`.
    pub v_proj: Linear,
    /// `[hidden, heads·head_dim]`.
    pub o_proj: Linear,
    /// Qwen3: RMSNorm over each query head (`[head_dim]`).
    pub q_norm: Option<RmsNorm>,
    /// Qwen3: RMSNorm over each key head (`[head_dim]`).
    pub k_norm: Option<RmsNorm>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Whether q and k are rotated by position (false: a NoPE layer).
    pub use_rope: bool,
}

impl Attention {
    fn load(vb: &VarBuilder<'_>, s: &DecoderSpec, layer: usize) -> Result<Self, ModelError> {
        let (h, q, kv) = (
            s.hidden_size,
            s.num_attention_heads * s.head_dim,
            s.num_key_value_heads * s.head_dim,
        );
        let norm = |name: &str| -> Result<Option<RmsNorm>, ModelError> {
            s.qk_norm
                .then(|| RmsNorm::load(&vb.pp(name), s.head_dim, s.rms_norm_eps))
                .transpose()
        };
        Ok(Self {
            q_proj: Linear::load(&vb.pp("q_proj"), h, q, s.qkv_bias)?,
            k_proj: Linear::load(&vb.pp("k_proj"), h, kv, s.qkv_bias)?,
            v_proj: Linear::load(&vb.pp("v_proj"), h, kv, s.qkv_bias)?,
            o_proj: Linear::load(&vb.pp("o_proj"), q, h, s.o_bias)?,
            q_norm: norm("q_norm")?,
            k_norm: norm("k_norm")?,
            num_heads: s.num_attention_heads,
            num_kv_heads: s.num_key_value_heads,
            head_dim: s.head_dim,
            use_rope: s.layer_uses_rope(layer),
        })
    }

    /// `x [b, s, hidden]`, `cos`/`sin [b, 1, s, head_dim]`, `mask
    /// [b, 1, s, s]` (true = blocked) → `[b, s, hidden]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: Tensor<4>,
        sin: Tensor<4>,
        mask: Tensor<4, Bool>,
    ) -> Tensor<3> {
        self.forward_with_kv(x, cos, sin, mask, None)
    }

    /// [`forward`](Self::forward) that, given a layer's cache, appends this
    /// chunk's keys and values to it and attends over the cache: the `s`
    /// new tokens see the `t - s` cached ones before them. `mask` is then
    /// `[b, 1, s, t]` with `t` the cache length after the append (true =
    /// blocked); `cos`/`sin` hold the new tokens' positions.
    pub fn forward_with_kv(
        &self,
        x: Tensor<3>,
        cos: Tensor<4>,
        sin: Tensor<4>,
        mask: Tensor<4, Bool>,
        cache: Option<&mut LayerKv>,
    ) -> Tensor<3> {
        let [b, s, hidden] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // 1. Project and split into heads: [b, s, n, hd]. The projections
        //    see 2-D rows: for a 3-D input burn's `linear` reshapes the
        //    transposed weight view, which flex answers with a copy of the
        //    whole weight per call.
        let x = x.reshape([b * s, hidden]);
        let q = self.q_proj.forward(x.clone()).reshape([b, s, nh, hd]);
        let k = self.k_proj.forward(x.clone()).reshape([b, s, nkv, hd]);
        let v = self.v_proj.forward(x).reshape([b, s, nkv, hd]);
        // 2. Qwen3: normalise each head.
        let q = match &self.q_norm {
            Some(n) => n.forward(q),
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(k),
            None => k,
        };
        // 3. Heads first ([b, n, s, hd]) and rotate q, k by position
        //    (NoPE layers attend without positions: causality alone).
        let (q, k) = (q.swap_dims(1, 2), k.swap_dims(1, 2));
        let (q, k) = if self.use_rope {
            (
                Rope::apply(q, cos.clone(), sin.clone()),
                Rope::apply(k, cos, sin),
            )
        } else {
            (q, k)
        };
        let v = v.swap_dims(1, 2);
        // 4. With a cache: keys/values of earlier tokens come first
        //    ([b, nkv, t, hd], t = cached + s).
        let (k, v) = match cache {
            Some(c) => c.append(k, v),
            None => (k, v),
        };
        let t = k.dims()[2];
        // 5. GQA: repeat each k/v head for the query heads it serves.
        let k = repeat_kv(k, nh / nkv);
        let v = repeat_kv(v, nh / nkv);
        // 6. softmax(q kᵀ / sqrt(hd) + mask) v, per head.
        //    The backend's attention forward; in training a backward that
        //    recomputes the weights per block of queries instead of keeping
        //    `s × t` scores per head and layer (`ft_kernels::attention`).
        let mask = mask.expand([b, nh, s, t]);
        let out = ft_kernels::attention::attention(q, k, v, mask);
        // 7. Merge heads and project back.
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b * s, nh * hd]))
            .reshape([b, s, hidden])
    }
}

/// `[b, kv, s, hd]` → `[b, kv·n_rep, s, hd]`, head `i` of the output being
/// input head `i / n_rep` (transformers' `repeat_kv`).
fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kv, s, hd] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, n_rep, s, hd])
        .reshape([b, kv * n_rep, s, hd])
}

/// One pre-norm block (`model.layers.{i}`).
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Attention.
    pub self_attn: Attention,
    /// Feed-forward.
    pub mlp: Mlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn load(vb: &VarBuilder<'_>, s: &DecoderSpec, layer: usize) -> Result<Self, ModelError> {
        Ok(Self {
            self_attn: Attention::load(&vb.pp("self_attn"), s, layer)?,
            mlp: Mlp::load(
                &vb.pp("mlp"),
                s.hidden_size,
                s.intermediate_size,
                s.mlp_bias,
            )?,
            input_layernorm: RmsNorm::load(
                &vb.pp("input_layernorm"),
                s.hidden_size,
                s.rms_norm_eps,
            )?,
            post_attention_layernorm: RmsNorm::load(
                &vb.pp("post_attention_layernorm"),
                s.hidden_size,
                s.rms_norm_eps,
            )?,
        })
    }

    /// `[b, s, hidden] -> [b, s, hidden]`.
    pub fn forward(
        &self,
        h: Tensor<3>,
        cos: Tensor<4>,
        sin: Tensor<4>,
        mask: Tensor<4, Bool>,
    ) -> Tensor<3> {
        self.forward_with_kv(h, cos, sin, mask, None)
    }

    /// [`forward`](Self::forward) with this layer's KV cache (see
    /// [`Attention::forward_with_kv`] for the mask shape).
    pub fn forward_with_kv(
        &self,
        h: Tensor<3>,
        cos: Tensor<4>,
        sin: Tensor<4>,
        mask: Tensor<4, Bool>,
        cache: Option<&mut LayerKv>,
    ) -> Tensor<3> {
        let h = h.clone()
            + self.self_attn.forward_with_kv(
                self.input_layernorm.forward(h),
                cos,
                sin,
                mask,
                cache,
            );
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

/// The transformer body (`model`).
#[derive(Module, Debug)]
pub struct Model {
    /// Token embeddings.
    pub embed_tokens: Embedding,
    /// The decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
}

/// A decoder with its language-model head (HF `*ForCausalLM`).
#[derive(Module, Debug)]
pub struct CausalLm {
    /// The transformer body.
    pub model: Model,
    /// Output projection `[vocab, hidden]`; `None` when tied to
    /// `model.embed_tokens`.
    pub lm_head: Option<Linear>,
    /// The architecture's parameters.
    #[module(skip)]
    pub spec: DecoderSpec,
    /// RoPE frequencies.
    #[module(skip)]
    pub rope: Rope,
}

impl CausalLm {
    /// Builds the model from checkpoint tensors (`model.*`, `lm_head.*`),
    /// checking every shape against `spec`.
    pub fn load(spec: &DecoderSpec, vb: &VarBuilder<'_>) -> Result<Self, ModelError> {
        let body = vb.pp("model");
        let layers = (0..spec.num_hidden_layers)
            .map(|i| DecoderLayer::load(&body.pp("layers").pp(i), spec, i))
            .collect::<Result<Vec<_>, _>>()?;
        let model = Model {
            embed_tokens: Embedding::load(
                &body.pp("embed_tokens"),
                spec.vocab_size,
                spec.hidden_size,
            )?,
            layers,
            norm: RmsNorm::load(&body.pp("norm"), spec.hidden_size, spec.rms_norm_eps)?,
        };
        // Tied checkpoints may still carry a copy of lm_head; it is ignored.
        let lm_head = if spec.tie_word_embeddings {
            None
        } else {
            // Dense even under QLoRA, as bitsandbytes leaves it (transformers
            // skips `lm_head` when converting to `Linear4bit`).
            Some(Linear::load(
                &vb.pp("lm_head").with_nf4(None),
                spec.hidden_size,
                spec.vocab_size,
                false,
            )?)
        };
        Ok(Self {
            model,
            lm_head,
            spec: spec.clone(),
            rope: Rope::new(spec.head_dim, spec.rope_theta, &spec.rope_scaling),
        })
    }

    /// Logits `[batch, seq, vocab]` for a packed batch.
    pub fn forward(&self, batch: &PackedBatch) -> Tensor<3> {
        // 1. Token embeddings.
        let mut h = self.model.embed_tokens.forward(batch.input_ids.clone());
        // 2. RoPE angles from the per-sequence positions, shared by all layers.
        let (cos, sin) = self.rope.cos_sin(batch.position_ids.clone(), self.dtype());
        // 3. Block-diagonal causal mask from the sequence ids.
        let mask = packed_causal_mask(batch.seq_ids.clone(), self.spec.sliding_window);
        // 4. The decoder layers.
        for layer in &self.model.layers {
            h = layer.forward(h, cos.clone(), sin.clone(), mask.clone());
        }
        // 5. Final norm and the LM head.
        self.head(h)
    }

    /// Final norm and the LM head (the embedding matrix when tied):
    /// `[b, s, hidden]` → `[b, s, vocab]`, in f32 (transformers' `logits.float()`).
    fn head(&self, h: Tensor<3>) -> Tensor<3> {
        let [b, s, hidden] = h.dims();
        // 2-D rows, as in the attention projections (no weight copy).
        let h = self.model.norm.forward(h).reshape([b * s, hidden]);
        let logits = crate::heads::lm_logits(self, h);
        let vocab = logits.dims()[1];
        logits.reshape([b, s, vocab])
    }

    /// The dtype the model computes in: that of its embedding table (f32 as
    /// loaded; bf16 after [`cast_params`](Self::cast_params)).
    pub fn dtype(&self) -> DType {
        self.model.embed_tokens.weight.val().dtype()
    }

    /// Casts every float parameter (embeddings, norms, dense weights and
    /// biases, and adapters when attached) to `dtype`; the NF4 weights and
    /// their f32 scales are left as they are. Called on the frozen base,
    /// before adapters are attached, so that the adapters stay f32.
    pub fn cast_params(self, dtype: DType) -> Self {
        struct Cast(DType);
        impl ModuleMapper for Cast {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let dtype = self.0;
                param.map(|t| to_dtype(t, dtype))
            }
        }
        self.map(&mut Cast(dtype))
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.model.layers.len())
    }

    /// Logits `[b, s, vocab]` of `input_ids [b, s]`, the next `s` tokens
    /// of every row after the `cache.len()` tokens already in `cache`,
    /// whose keys and values are appended to it. A prompt goes in as one
    /// chunk (prefill), generated tokens one at a time; the logits equal
    /// those of [`forward`](Self::forward) on the whole sequence.
    ///
    /// Positions continue from `cache.len()`; attention is causal within
    /// the chunk, sees every cached token, and keeps Mistral's sliding
    /// window. Every row of the batch has the same length (no padding).
    pub fn forward_cached(&self, input_ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        let h = self.hidden_cached(input_ids, cache);
        self.head(h)
    }

    /// [`forward_cached`](Self::forward_cached) returning only the logits
    /// after the chunk's last token, `[b, vocab]`: what generation needs,
    /// without the LM head on every prompt position.
    pub fn forward_cached_last(&self, input_ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<2> {
        let h = self.hidden_cached(input_ids, cache);
        let [b, s, _] = h.dims();
        let logits = self.head(h.narrow(1, s - 1, 1));
        let v = logits.dims()[2];
        logits.reshape([b, v])
    }

    /// The decoder body over a chunk with the cache: `[b, s, hidden]`
    /// before the final norm.
    fn hidden_cached(&self, input_ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        let device = input_ids.device();
        let [b, s] = input_ids.dims();
        let past = cache.len();
        // 1. Token embeddings.
        let mut h = self.model.embed_tokens.forward(input_ids);
        // 2. RoPE angles for positions past..past+s.
        let positions = Tensor::<1, Int>::arange(past as i64..(past + s) as i64, &device)
            .reshape([1, s])
            .expand([b, s]);
        let (cos, sin) = self.rope.cos_sin(positions, self.dtype());
        // 3. Causal (and windowed) mask of the new queries over all keys.
        let mask = cached_causal_mask(past, s, self.spec.sliding_window, &device);
        // 4. The decoder layers, each appending to its cache.
        for (layer, kv) in self.model.layers.iter().zip(cache.layers.iter_mut()) {
            h = layer.forward_with_kv(h, cos.clone(), sin.clone(), mask.clone(), Some(kv));
        }
        cache.len += s;
        h
    }

    /// Greedy next token after each row's last position: `[batch]` ids.
    pub fn next_token_greedy(&self, batch: &PackedBatch) -> Tensor<1, Int> {
        let logits = self.forward(batch);
        let [b, s, v] = logits.dims();
        logits
            .narrow(1, s - 1, 1)
            .reshape([b, v])
            .argmax(1)
            .reshape([b])
    }
}

/// One layer's cached keys and values, `[b, kv_heads, t, head_dim]` each
/// (keys after RoPE), or nothing before the first chunk.
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    kv: Option<(Tensor<4>, Tensor<4>)>,
}

impl LayerKv {
    /// Appends `k`, `v` (`[b, kv_heads, s, head_dim]`) along the sequence
    /// and returns the whole cache.
    fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let kv = match self.kv.take() {
            Some((ck, cv)) => (Tensor::cat(vec![ck, k], 2), Tensor::cat(vec![cv, v], 2)),
            None => (k, v),
        };
        self.kv = Some(kv.clone());
        kv
    }

    /// The cached keys and values, if any.
    pub fn get(&self) -> Option<&(Tensor<4>, Tensor<4>)> {
        self.kv.as_ref()
    }
}

/// Keys and values of every layer for the tokens seen so far, so that
/// [`CausalLm::forward_cached`] only computes the new ones.
///
/// Grows by `Tensor::cat` per chunk (one copy of the cache per generated
/// token: cheap next to the projections at chat lengths). The whole
/// history is kept even with a sliding window, where the mask hides what
/// is out of reach.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
}

impl KvCache {
    /// An empty cache for a model with `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); num_layers],
            len: 0,
        }
    }

    /// Tokens cached per row.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The cache of each layer.
    pub fn layers(&self) -> &[LayerKv] {
        &self.layers
    }

    /// Keeps the first `len` tokens (no-op when `len >= self.len()`): a chat
    /// that re-renders its conversation keeps the prefix it shares with
    /// the previous prompt and recomputes only the rest.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for layer in &mut self.layers {
            layer.kv = if len == 0 {
                None
            } else {
                layer
                    .kv
                    .take()
                    .map(|(k, v)| (k.narrow(2, 0, len), v.narrow(2, 0, len)))
            };
        }
        self.len = len;
    }
}

/// The mask of `s` new queries at positions `past..past+s` over the
/// `past + s` keys: `true` (blocked) where the key comes after the query
/// or, with a window `w`, lies `w` or more positions before it (the rule of
/// [`packed_causal_mask`] for one sequence). `[1, 1, s, past + s]`.
fn cached_causal_mask(
    past: usize,
    s: usize,
    sliding_window: Option<usize>,
    device: &Device,
) -> Tensor<4, Bool> {
    let t = past + s;
    let q_pos = Tensor::<1, Int>::arange(past as i64..t as i64, device)
        .reshape([s, 1])
        .expand([s, t]);
    let k_pos = Tensor::<1, Int>::arange(0..t as i64, device)
        .reshape([1, t])
        .expand([s, t]);
    let mut mask = k_pos.clone().greater(q_pos.clone());
    if let Some(w) = sliding_window {
        mask = mask.bool_or((q_pos - k_pos).greater_equal_elem(w as i64));
    }
    mask.reshape([1, 1, s, t])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;
    use crate::arch::testing::{copy_with_config, fixture_dir};

    /// Cached logits must equal the full forward's to this absolute error
    /// (both are f32; only the matmul shapes, hence summation orders, differ).
    const MAX_ABS_ERR: f32 = 1e-5;

    const IDS: [i64; 12] = [1, 17, 101, 42, 200, 3, 99, 250, 7, 7, 128, 64];

    fn ids(v: &[i64], device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), device)
    }

    /// Logits of [`IDS`] from one full forward, and from a 5-token prefill
    /// followed by 7 single-token steps through a [`KvCache`].
    fn full_and_cached(model: &CausalLm) -> (Vec<f32>, Vec<f32>) {
        let device = Device::flex();
        let batch =
            PackedBatch::from_rows(&[vec![IDS.iter().map(|&t| t as u32).collect()]], 0, &device);
        let full: Vec<f32> = model.forward(&batch).try_into_vec_as().unwrap();
        let mut cache = model.new_cache();
        let mut cached: Vec<f32> = model
            .forward_cached(ids(&IDS[..5], &device), &mut cache)
            .try_into_vec_as()
            .unwrap();
        assert_eq!(cache.len(), 5);
        for k in 5..IDS.len() {
            let step: Vec<f32> = model
                .forward_cached(ids(&IDS[k..=k], &device), &mut cache)
                .try_into_vec_as()
                .unwrap();
            cached.extend(step);
        }
        assert_eq!(cache.len(), IDS.len());
        let (k, _) = cache.layers()[0].get().unwrap();
        assert_eq!(
            k.dims(),
            [1, model.spec.num_key_value_heads, 12, model.spec.head_dim]
        );
        (full, cached)
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn check(name: &str, model: &CausalLm) -> f32 {
        let (full, cached) = full_and_cached(model);
        let err = max_abs_diff(&full, &cached);
        eprintln!("{name}: cached vs full max abs err {err:.1e}");
        assert!(err <= MAX_ABS_ERR, "{name}: {err:e}");
        err
    }

    #[test]
    fn cached_logits_equal_full_forward() {
        // llama3 carries Llama 3.1 RoPE scaling; qwen3 q/k norms; qwen2
        // biases; smollm3 a NoPE layer.
        for name in ["llama", "llama3", "mistral", "qwen2", "qwen3", "smollm3"] {
            let model = crate::load_hf_dir(&fixture_dir(name), &Device::flex()).unwrap();
            check(name, &model);
        }
    }

    /// With a window of 4 (shorter than the 12 tokens), the cached path
    /// masks like the packed one, and the window does change the logits.
    #[test]
    fn cached_logits_keep_the_sliding_window() {
        let dir = copy_with_config("mistral", |c| c["sliding_window"] = 4.into());
        let windowed = crate::load_hf_dir(dir.path(), &Device::flex()).unwrap();
        assert_eq!(windowed.spec.sliding_window, Some(4));
        check("mistral, window 4", &windowed);
        let plain = crate::load_hf_dir(&fixture_dir("mistral"), &Device::flex()).unwrap();
        let (with_window, _) = full_and_cached(&windowed);
        let (without, _) = full_and_cached(&plain);
        assert!(max_abs_diff(&with_window, &without) > 1e-3);
    }

    #[test]
    fn last_logits_and_truncate() {
        let device = Device::flex();
        let model = crate::load_hf_dir(&fixture_dir("qwen3"), &device).unwrap();
        let (full, _) = full_and_cached(&model);
        let vocab = model.spec.vocab_size;
        let row = |k: usize| &full[k * vocab..(k + 1) * vocab];
        // Only the last position's logits.
        let mut cache = model.new_cache();
        let last: Vec<f32> = model
            .forward_cached_last(ids(&IDS[..8], &device), &mut cache)
            .try_into_vec_as()
            .unwrap();
        assert!(max_abs_diff(&last, row(7)) <= MAX_ABS_ERR);
        // Truncating to 3 tokens and continuing from there.
        cache.truncate(3);
        assert_eq!(cache.len(), 3);
        let next: Vec<f32> = model
            .forward_cached_last(ids(&IDS[3..6], &device), &mut cache)
            .try_into_vec_as()
            .unwrap();
        assert!(max_abs_diff(&next, row(5)) <= MAX_ABS_ERR);
        cache.truncate(0);
        assert!(cache.is_empty() && cache.layers()[0].get().is_none());
    }

    #[test]
    fn cached_mask_is_causal_and_windowed() {
        let device = Device::flex();
        let allowed = |past, s, w| -> Vec<Vec<usize>> {
            let m: Vec<bool> = cached_causal_mask(past, s, w, &device)
                .try_into_vec_as()
                .unwrap();
            let t = past + s;
            (0..s)
                .map(|i| (0..t).filter(|&j| !m[i * t + j]).collect())
                .collect()
        };
        assert_eq!(allowed(2, 2, None), vec![vec![0, 1, 2], vec![0, 1, 2, 3]]);
        assert_eq!(allowed(3, 1, Some(2)), vec![vec![2, 3]]);
    }
}
