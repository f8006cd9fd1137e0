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
//! Module fields carry the HF checkpoint names: the parameter
//! `model.layers.1.self_attn.q_proj.weight` is
//! `CausalLm.model.layers[1].self_attn.q_proj.weight`.

use burn::module::Module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor};
use ft_arch::Arch;

use super::PackedBatch;
use super::layers::{Embedding, Linear, Mlp, RmsNorm, Rope, RopeScaling, packed_causal_mask};
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
}

impl Attention {
    fn load(vb: &VarBuilder<'_>, s: &DecoderSpec) -> Result<Self, ModelError> {
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
        let [b, s, _] = x.dims();
        let (nh, nkv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // 1. Project and split into heads: [b, s, n, hd].
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
        // 3. Heads first ([b, n, s, hd]) and rotate q, k by position.
        let q = Rope::apply(q.swap_dims(1, 2), cos.clone(), sin.clone());
        let k = Rope::apply(k.swap_dims(1, 2), cos, sin);
        let v = v.swap_dims(1, 2);
        // 4. GQA: repeat each k/v head for the query heads it serves.
        let k = repeat_kv(k, nh / nkv);
        let v = repeat_kv(v, nh / nkv);
        // 5. softmax(q kᵀ / sqrt(hd) + mask) v, per head.
        let mask = mask.expand([b, nh, s, s]);
        let out = burn::tensor::module::attention(
            q,
            k,
            v,
            Some(mask),
            None,
            AttentionModuleOptions::default(),
        );
        // 6. Merge heads and project back.
        self.o_proj
            .forward(out.swap_dims(1, 2).reshape([b, s, nh * hd]))
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
    fn load(vb: &VarBuilder<'_>, s: &DecoderSpec) -> Result<Self, ModelError> {
        Ok(Self {
            self_attn: Attention::load(&vb.pp("self_attn"), s)?,
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
        let h = h.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(h), cos, sin, mask);
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
            .map(|i| DecoderLayer::load(&body.pp("layers").pp(i), spec))
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
            Some(Linear::load(
                &vb.pp("lm_head"),
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
        let (cos, sin) = self.rope.cos_sin(batch.position_ids.clone());
        // 3. Block-diagonal causal mask from the sequence ids.
        let mask = packed_causal_mask(batch.seq_ids.clone(), self.spec.sliding_window);
        // 4. The decoder layers.
        for layer in &self.model.layers {
            h = layer.forward(h, cos.clone(), sin.clone(), mask.clone());
        }
        // 5. Final norm and the LM head (the embedding matrix when tied).
        let h = self.model.norm.forward(h);
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => burn::tensor::module::linear(
                h,
                self.model.embed_tokens.weight.val().transpose(),
                None,
            ),
        }
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
