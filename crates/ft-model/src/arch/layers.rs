//! Building blocks shared by the decoder architectures: a linear layer in
//! the checkpoint's `[out, in]` layout, RMSNorm, token embedding, rotary
//! position embedding, and the block-diagonal causal mask of a packed batch.
//!
//! Field names are the last component of the HF tensor names (`weight`,
//! `bias`), so a module's parameters are found by walking its path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use burn::module::{Module, Param};
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData, activation};

/// `t` as `dtype`; the same tensor when it already is (mixed precision: bf16 activations,
/// `f32` norms and adapters).
pub fn to_dtype<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}

use crate::error::ModelError;
use crate::weights::VarBuilder;

/// `y = x Wᵀ + b (+ s · dropout(x) Aᵀ Bᵀ)` with `W` stored `[out, in]` as
/// in PyTorch checkpoints (burn-nn's `Linear` stores `[in, out]`; keeping
/// the checkpoint layout makes loading a copy and saving/merging a plain
/// write-back).
///
/// The base weight is either dense (`weight`) or NF4-quantized (`nf4`,
/// QLoRA), and frozen in both cases; an optional [`LoraAdapter`] adds the
/// trainable low-rank update (Hu et al. 2021, <https://arxiv.org/abs/2106.09685>;
/// over NF4: Dettmers et al. 2023, <https://arxiv.org/abs/2305.14314>).
#[derive(Module, Debug)]
pub struct Linear {
    /// `[out_features, in_features]`; `None` when the base is NF4.
    pub weight: Option<Param<Tensor<2>>>,
    /// `[out_features]`, when the layer has a bias.
    pub bias: Option<Param<Tensor<1>>>,
    /// The LoRA update, when this module is adapted.
    pub lora: Option<LoraAdapter>,
    /// The NF4 base weight (QLoRA), dequantized just in time per forward.
    #[module(skip)]
    pub nf4: Option<Nf4Weight>,
}

impl Linear {
    /// Loads `{scope}.weight` (`[out, in]`) and, with `bias`, `{scope}.bias`.
    /// When the builder quantizes ([`VarBuilder::with_nf4`]) the weight goes
    /// straight from the checkpoint to NF4.
    pub fn load(
        vb: &VarBuilder<'_>,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self, ModelError> {
        let (weight, nf4) = match vb.nf4() {
            None => (
                Some(Param::from_tensor(
                    vb.get([out_features, in_features], "weight")?,
                )),
                None,
            ),
            Some(_) => {
                let q = vb.get_nf4(&[out_features, in_features], "weight")?;
                let w = Nf4Weight::upload(&q, vb.device()).map_err(|e| ModelError::Quantize {
                    name: vb.full_name("weight"),
                    message: e.to_string(),
                })?;
                (None, Some(w))
            }
        };
        let bias = if bias {
            Some(Param::from_tensor(vb.get([out_features], "bias")?))
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            lora: None,
            nf4,
        })
    }

    /// Replaces an NF4 base weight by its dequantization, stored dense: the
    /// same products as the NF4 forward (which dequantizes per call)
    /// without the per-call cost. For generation with the base a QLoRA
    /// adapter was trained on.
    pub fn densify(&mut self) {
        if let Some(q) = self.nf4.take() {
            self.weight = Some(Param::from_tensor(q.dequantize().detach()));
        }
    }

    /// `[out, in]` of the base weight.
    pub fn shape(&self) -> [usize; 2] {
        match (&self.weight, &self.nf4) {
            (Some(w), _) => w.val().dims(),
            (None, Some(q)) => q.shape(),
            (None, None) => [0, 0],
        }
    }

    /// The base weight as a dense `[out, in]` tensor: the stored one, or the
    /// NF4 weight dequantized now (bitsandbytes' `dequantize_4bit`).
    pub fn base_weight(&self) -> Tensor<2> {
        match (&self.weight, &self.nf4) {
            (Some(w), _) => w.val(),
            (None, Some(q)) => q.dequantize(),
            // `load` always sets one of the two.
            (None, None) => Tensor::empty([0, 0], &Device::default()),
        }
    }

    /// `[..., in] -> [..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // Flatten to 2-D rows first: a 3-D input times a transposed weight
        // view makes the flex backend copy the whole weight on every call.
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let x2: Tensor<2> = x.reshape([rows, dims[D - 1]]);
        let y = match (&self.weight, &self.nf4) {
            // The NF4 op dequantizes per call and again in its backward, so no
            // layer's dense weight outlives its own product.
            (None, Some(q)) => q.forward(x2.clone()),
            // `x · Wᵀ`: cuBLAS on CUDA, burn's matmul elsewhere.
            _ => ft_kernels::gemm::matmul(x2.clone(), self.base_weight(), false, true),
        };
        let y = match &self.bias {
            Some(b) => y + b.val().unsqueeze_dim(0),
            None => y,
        };
        let y = match &self.lora {
            Some(lora) => y + lora.forward(x2),
            None => y,
        };
        let mut out = dims;
        out[D - 1] = y.dims()[1];
        y.reshape(out)
    }
}

/// An NF4-quantized, frozen base weight in bitsandbytes' layout, on the
/// model's device: the NF4 linear of `ft-kernels` (a burn backend
/// extension: the CubeCL dequantization kernel on wgpu/CUDA, the reference
/// on the CPU).
pub use ft_kernels::nf4::Nf4Weight;

/// The trainable low-rank update of a [`Linear`]: `s · dropout(x) Aᵀ Bᵀ`,
/// `A` `[r, in]` and `B` `[out, r]`, named as PEFT names them (`lora_A`,
/// `lora_B`).
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// `[r, in_features]`.
    pub lora_a: Param<Tensor<2>>,
    /// `[out_features, r]`.
    pub lora_b: Param<Tensor<2>>,
    /// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    #[module(skip)]
    pub scale: f64,
    /// Dropout on the adapter's input while training (`None`: no dropout).
    #[module(skip)]
    pub dropout: Option<Dropout>,
}

impl LoraAdapter {
    /// `[rows, in] -> [rows, out]`: the scaled low-rank update alone, computed in the
    /// adapter's dtype (`f32`) and returned in `x`'s, as PEFT casts `x` to `lora_A`'s dtype and
    /// the update back.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let dtype = x.dtype();
        let a = self.lora_a.val();
        let x = to_dtype(x, a.dtype());
        let x = match &self.dropout {
            Some(d) => d.apply(x),
            None => x,
        };
        // `(x · Aᵀ) · Bᵀ`, transposes as flags (cuBLAS on CUDA).
        let h = ft_kernels::gemm::matmul(x, a, false, true);
        to_dtype(
            ft_kernels::gemm::matmul(h, self.lora_b.val(), false, true) * self.scale,
            dtype,
        )
    }
}

/// Inverted dropout whose masks come from a seeded counter-based generator
/// on the host, so a run (and its resumption) draws the same masks: the
/// trainer sets the stream for each micro-batch with [`Dropout::reseed`].
/// While `training` is off (evaluation, generation) it is the identity.
#[derive(Debug, Clone)]
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f64,
    /// Shared with the trainer: (stream seed, draws so far, training on).
    pub state: Arc<DropoutState>,
}

/// The shared state of every [`Dropout`] of a model.
#[derive(Debug, Default)]
pub struct DropoutState {
    seed: AtomicU64,
    draws: AtomicU64,
    training: AtomicBool,
}

impl DropoutState {
    /// Starts the mask stream for one micro-batch and turns training on.
    pub fn reseed(&self, seed: u64) {
        self.seed.store(seed, Ordering::SeqCst);
        self.draws.store(0, Ordering::SeqCst);
        self.training.store(true, Ordering::SeqCst);
    }

    /// Turns dropout off (evaluation) or on.
    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::SeqCst);
    }

    /// Masks drawn so far in this micro-batch's stream.
    pub fn draws(&self) -> u64 {
        self.draws.load(Ordering::SeqCst)
    }

    /// Rewinds (or advances) the stream to mask number `draws`, so that a
    /// recomputed forward draws the masks the first forward drew.
    pub fn set_draws(&self, draws: u64) {
        self.draws.store(draws, Ordering::SeqCst);
    }
}

impl Dropout {
    fn apply<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.p <= 0.0 || !self.state.training.load(Ordering::SeqCst) {
            return x;
        }
        let dims = x.dims();
        let n: usize = dims.iter().product();
        let seed = self.state.seed.load(Ordering::SeqCst);
        let draw = self.state.draws.fetch_add(1, Ordering::SeqCst);
        let keep = 1.0 - self.p;
        let scale = (1.0 / keep) as f32;
        let stream = splitmix64(seed ^ splitmix64(draw.wrapping_add(0x9e37_79b9)));
        let mask: Vec<f32> = (0..n as u64)
            .map(|i| {
                let u = (splitmix64(stream.wrapping_add(i)) >> 11) as f64 / (1u64 << 53) as f64;
                if u < keep { scale } else { 0.0 }
            })
            .collect();
        let mask = Tensor::<D>::from_data(TensorData::new(mask, dims), &x.device().inner());
        x * mask
    }
}

/// SplitMix64 (Steele et al. 2014): a counter-based 64-bit mixer.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Root-mean-square layer norm (Zhang & Sennrich 2019,
/// <https://arxiv.org/abs/1910.07467>): `y = x / sqrt(mean(x²) + eps) · w`,
/// over the last dimension, computed in f32 as transformers' `LlamaRMSNorm`
/// (a bf16 input is widened, normalized, rounded back, then scaled by `w`).
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Per-channel gain `[dim]` (HF name `weight`).
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square before the square root (`rms_norm_eps`).
    pub eps: f64,
}

impl RmsNorm {
    /// Loads `{scope}.weight` of size `dim`.
    pub fn load(vb: &VarBuilder<'_>, dim: usize, eps: f64) -> Result<Self, ModelError> {
        Ok(Self {
            weight: Param::from_tensor(vb.get([dim], "weight")?),
            eps,
        })
    }

    /// `[..., dim] -> [..., dim]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let x = to_dtype(x, DType::F32);
        let variance = x.clone().square().mean_dim(D - 1);
        let normed = to_dtype(x * (variance + self.eps).sqrt().recip(), dtype);
        normed * self.weight.val().unsqueeze()
    }
}

/// Token embedding table (HF `embed_tokens`).
#[derive(Module, Debug)]
pub struct Embedding {
    /// `[vocab_size, hidden_size]`.
    pub weight: Param<Tensor<2>>,
}

impl Embedding {
    /// Loads `{scope}.weight`.
    pub fn load(vb: &VarBuilder<'_>, vocab: usize, hidden: usize) -> Result<Self, ModelError> {
        Ok(Self {
            weight: Param::from_tensor(vb.get([vocab, hidden], "weight")?),
        })
    }

    /// `[batch, seq]` ids → `[batch, seq, hidden]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        burn::tensor::module::embedding(self.weight.val(), ids)
    }
}

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's rule (transformers `_compute_llama3_parameters`):
    /// wavelengths above `original / low_freq_factor` are divided by
    /// `factor`, those below `original / high_freq_factor` kept, and those
    /// between interpolated smoothly.
    Llama3 {
        /// The divisor for long wavelengths.
        factor: f64,
        /// Sets the long-wavelength threshold.
        low_freq_factor: f64,
        /// Sets the short-wavelength threshold.
        high_freq_factor: f64,
        /// Pre-training context length.
        original_max_position_embeddings: f64,
    },
}

/// Rotary position embedding (Su et al. 2021, RoFormer,
/// <https://arxiv.org/abs/2104.09864>) in the "rotate half" layout of HF
/// checkpoints: dimension `i` of a head is paired with `i + head_dim/2`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// `theta^(-2i/head_dim)` for `i < head_dim/2`, after scaling.
    pub inv_freq: Vec<f32>,
}

impl Rope {
    /// Frequencies for `head_dim` and base `theta`, then `scaling`.
    pub fn new(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|i| {
                // transformers computes this in f32; f64 then rounding
                // differs by at most one ulp.
                let f = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
                scaled_frequency(f, scaling) as f32
            })
            .collect();
        Self { inv_freq }
    }

    /// `cos` and `sin` of `position · inv_freq`, duplicated over both
    /// halves: `[batch, seq]` positions → two `[batch, 1, seq, head_dim]`,
    /// computed in f32 and returned in `dtype` (transformers' `cos.to(x.dtype)`).
    pub fn cos_sin(&self, position_ids: Tensor<2, Int>, dtype: DType) -> (Tensor<4>, Tensor<4>) {
        let device = position_ids.device();
        let [batch, seq] = position_ids.dims();
        let half = self.inv_freq.len();
        let inv = Tensor::<1>::from_floats(self.inv_freq.as_slice(), &device).reshape([1, 1, half]);
        // Same operation order as transformers: f32 positions × f32 freqs.
        let freqs = position_ids.float().reshape([batch, seq, 1]) * inv;
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1);
        (
            to_dtype(emb.clone().cos(), dtype),
            to_dtype(emb.sin(), dtype),
        )
    }

    /// Rotates `x` (`[batch, heads, seq, head_dim]`) by the angles in
    /// `cos`/`sin` (`[batch, 1, seq, head_dim]`).
    pub fn apply(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
        let [_, _, _, d] = x.dims();
        let x1 = x.clone().narrow(3, 0, d / 2);
        let x2 = x.clone().narrow(3, d / 2, d - d / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos + rotated * sin
    }
}

/// One frequency after `scaling`.
fn scaled_frequency(f: f64, scaling: &RopeScaling) -> f64 {
    match *scaling {
        RopeScaling::None => f,
        RopeScaling::Linear { factor } => f / factor,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let low_freq_wavelen = old / low_freq_factor;
            let high_freq_wavelen = old / high_freq_factor;
            if wavelen > low_freq_wavelen {
                f / factor
            } else if wavelen < high_freq_wavelen {
                f
            } else {
                let smooth =
                    (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * f / factor + smooth * f
            }
        }
    }
}

/// The attention mask of a packed batch: `true` where query `i` may NOT
/// attend key `j`, i.e. where `seq_ids[i] != seq_ids[j]`, `j > i`, or (with
/// a sliding window `w`) `i - j >= w`. `[batch, seq]` → `[batch, 1, seq, seq]`.
///
/// Sequences must be contiguous within a row (packing concatenates them);
/// padding gets its own id so that no row is fully masked.
pub fn packed_causal_mask(
    seq_ids: Tensor<2, Int>,
    sliding_window: Option<usize>,
) -> Tensor<4, Bool> {
    let device = seq_ids.device();
    let [batch, seq] = seq_ids.dims();
    let q_seq = seq_ids
        .clone()
        .reshape([batch, seq, 1])
        .expand([batch, seq, seq]);
    let k_seq = seq_ids.reshape([batch, 1, seq]).expand([batch, seq, seq]);
    let other_sequence = q_seq.not_equal(k_seq);
    let idx = Tensor::<1, Int>::arange(0..seq as i64, &device);
    let q_idx = idx.clone().reshape([1, seq, 1]).expand([batch, seq, seq]);
    let k_idx = idx.reshape([1, 1, seq]).expand([batch, seq, seq]);
    let future = k_idx.clone().greater(q_idx.clone());
    let mut mask = other_sequence.bool_or(future);
    if let Some(w) = sliding_window {
        let too_far = (q_idx - k_idx).greater_equal_elem(w as i64);
        mask = mask.bool_or(too_far);
    }
    mask.unsqueeze_dim(1)
}

/// SwiGLU feed-forward (Shazeer 2020, <https://arxiv.org/abs/2002.05202>):
/// `down_proj(silu(gate_proj(x)) · up_proj(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `[intermediate, hidden]`.
    pub gate_proj: Linear,
    /// `[intermediate, hidden]`.
    pub up_proj: Linear,
    /// `[hidden, intermediate]`.
    pub down_proj: Linear,
}

impl Mlp {
    /// Loads `{scope}.{gate,up,down}_proj`.
    pub fn load(
        vb: &VarBuilder<'_>,
        hidden: usize,
        intermediate: usize,
        bias: bool,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            gate_proj: Linear::load(&vb.pp("gate_proj"), hidden, intermediate, bias)?,
            up_proj: Linear::load(&vb.pp("up_proj"), hidden, intermediate, bias)?,
            down_proj: Linear::load(&vb.pp("down_proj"), intermediate, hidden, bias)?,
        })
    }

    /// `[..., hidden] -> [..., hidden]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // SiLU evaluated in f32 and rounded once, as torch evaluates it on bf16 (burn's
        // `x · sigmoid(x)` on bf16 rounds twice).
        let gate = self.gate_proj.forward(x.clone());
        let dtype = gate.dtype();
        let gate = to_dtype(activation::silu(to_dtype(gate, DType::F32)), dtype);
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn mask_is_block_diagonal_and_causal() {
        let d = Device::flex();
        let ids = Tensor::<2, Int>::from_ints([[0, 0, 1, 1, 1]], &d);
        let m: Vec<bool> = packed_causal_mask(ids, None)
            .into_data()
            .try_to_vec()
            .unwrap();
        let allowed: Vec<Vec<usize>> = (0..5)
            .map(|i| (0..5).filter(|&j| !m[i * 5 + j]).collect())
            .collect();
        assert_eq!(
            allowed,
            vec![vec![0], vec![0, 1], vec![2], vec![2, 3], vec![2, 3, 4]]
        );

        let ids = Tensor::<2, Int>::from_ints([[0, 0, 0, 0]], &d);
        let m: Vec<bool> = packed_causal_mask(ids, Some(2))
            .into_data()
            .try_to_vec()
            .unwrap();
        let allowed: Vec<Vec<usize>> = (0..4)
            .map(|i| (0..4).filter(|&j| !m[i * 4 + j]).collect())
            .collect();
        assert_eq!(allowed, vec![vec![0], vec![0, 1], vec![1, 2], vec![2, 3]]);
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let s = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        };
        // wavelength 2π < 16: kept; wavelength 2π·1000 > 64: divided by 8.
        assert_eq!(scaled_frequency(1.0, &s), 1.0);
        assert!((scaled_frequency(1e-3, &s) - 1.25e-4).abs() < 1e-12);
        // wavelength 32 sits between: strictly between f/8 and f.
        let f = 2.0 * std::f64::consts::PI / 32.0;
        let g = scaled_frequency(f, &s);
        assert!(g < f && g > f / 8.0);
    }
}
