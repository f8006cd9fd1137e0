//! Attention whose backward recomputes the attention weights a block of queries at a time
//! instead of keeping them.
//!
//! ```text
//! forward   out = softmax(q·kᵀ/√d, masked) · v          the backend's own attention
//!                                                        (CubeCL's flash kernel on wgpu/CUDA),
//!                                                        or per block of query rows through
//!                                                        [`crate::gemm`] (cuBLAS on CUDA)
//! backward  D = rowsum(dout ∘ out)                       [b, h, s, 1]
//!           for each block of query rows i:
//!             P_i  = softmax(q_i·kᵀ/√d, masked)          recomputed, [b, h, rows, t]
//!             dv  += P_iᵀ · dout_i
//!             dS_i = P_i ∘ (dout_i · vᵀ − D_i)
//!             dq_i = dS_i · k / √d,   dk += dS_iᵀ · q_i / √d
//! ```
//!
//! burn 0.22's autodiff runs attention as its decomposition (`attention_fallback`) and keeps
//! the scores and the softmax of every layer until the backward: `batch × heads × seq²` floats
//! twice per layer (at 4 × 2048 tokens and 32 heads, 2 GiB per copy per layer). Here the
//! backward keeps `q`, `k`, `v`, the mask and `out`, and its peak is one block's weights.
//! Fully masked rows give zero weights, as in burn's NaN-safe softmax.
//!
//! Every product of the backward, and of the blocked forward, is a batched [`GemmBackend::gemm`]
//! with the transposes as flags: on CUDA strided-batched cuBLAS, so training runs no burn matmul
//! there — each new matmul shape would otherwise be autotuned, compiling a set of candidate
//! kernels through NVRTC in the middle of the first backward. Which forward runs is
//! [`AttentionForward`]: [`set_forward`] sets the process default (ft picks `Gemm` on CUDA), and
//! `FT_ATTENTION=backend|gemm` in the environment overrides it.

mod autodiff;

#[cfg(test)]
mod tests;

use burn::backend::{
    Backend, Dispatch, TensorMetadata, backend_extension,
    ops::AttentionModuleOptions,
    tensor::{BoolTensor, FloatTensor},
};
use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::{Bool, Scalar, Slice, Tensor};

use crate::gemm::GemmBackend;

/// Which forward [`attention`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionForward {
    /// The backend's own attention (burn's; CubeCL's flash kernel on wgpu/CUDA).
    Backend,
    /// Per block of query rows: `softmax(q_i·kᵀ/√d) · v` with the two products through
    /// [`crate::gemm`] (cuBLAS on CUDA); a block's weights are the only `s × t` memory.
    Gemm,
}

/// 0: not set (backend), 1: backend, 2: gemm.
static FORWARD: AtomicU8 = AtomicU8::new(0);

/// Sets the forward [`attention`] runs in this process (unless `FT_ATTENTION` overrides it).
pub fn set_forward(forward: AttentionForward) {
    FORWARD.store(
        match forward {
            AttentionForward::Backend => 1,
            AttentionForward::Gemm => 2,
        },
        Ordering::Relaxed,
    );
}

/// The forward [`attention`] runs: `FT_ATTENTION` (`backend` or `gemm`) when set, else what
/// [`set_forward`] chose, else [`AttentionForward::Backend`].
pub fn forward_mode() -> AttentionForward {
    match std::env::var("FT_ATTENTION").ok().as_deref().map(str::trim) {
        Some("gemm") => return AttentionForward::Gemm,
        Some("backend") => return AttentionForward::Backend,
        _ => {}
    }
    match FORWARD.load(Ordering::Relaxed) {
        2 => AttentionForward::Gemm,
        _ => AttentionForward::Backend,
    }
}

/// Attention with a recomputing backward (see the module docs).
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Fusion: cfg(feature = "fusion"),
    Autodiff
)]
pub trait AttentionBackend: Backend + GemmBackend {
    /// `softmax(q·kᵀ/√d + mask) · v` for `q` `[b, h, s, d]`, `k`, `v` `[b, h, t, d]` and `mask`
    /// `[b, h, s, t]` (`true` = not attended): the backend's own attention, or with
    /// `gemm_block = Some(rows)` `rows` query rows at a time through [`GemmBackend::gemm`].
    #[fusion(default)]
    fn attention_recompute(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        gemm_block: Option<usize>,
    ) -> FloatTensor<Self> {
        let Some(block) = gemm_block else {
            return Self::attention(q, k, v, Some(mask), None, AttentionModuleOptions::default());
        };
        let [b, h, s, d] = dims4(&q);
        let t = dims4(&k)[2];
        let scale = Scalar::from(1.0 / (d as f64).sqrt());
        let block = block.max(1);
        let mut out = Vec::new();
        for start in (0..s).step_by(block) {
            let end = (start + block).min(s);
            let q_i = Self::float_slice(q.clone(), &rows4(b, h, start..end, d));
            let mask_i = Self::bool_slice(mask.clone(), &rows4(b, h, start..end, t));
            let scores = Self::float_mul_scalar(Self::gemm(q_i, k.clone(), false, true), scale);
            let p = masked_softmax::<Self>(scores, mask_i);
            out.push(Self::gemm(p, v.clone(), false, false));
        }
        if out.len() == 1 {
            return out.remove(0);
        }
        Self::float_cat(out, 2)
    }

    /// `(dq, dk, dv)` of [`attention_recompute`](Self::attention_recompute) for the upstream
    /// gradient `dout`, recomputing the weights `block` query rows at a time.
    #[fusion(default)]
    #[allow(clippy::too_many_arguments)]
    fn attention_recompute_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        out: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        block: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [b, h, s, d] = dims4(&q);
        let t = dims4(&k)[2];
        let scale = Scalar::from(1.0 / (d as f64).sqrt());
        // D_i = Σ_j dout_ij · out_ij = Σ_j P_ij (dout_i · v_j).
        let big_d = Self::float_sum_dim(Self::float_mul(dout.clone(), out), 3);
        let (mut dk, mut dv) = (None::<FloatTensor<Self>>, None::<FloatTensor<Self>>);
        let mut dq = Vec::new();
        for start in (0..s).step_by(block.max(1)) {
            let end = (start + block.max(1)).min(s);
            let q_i = Self::float_slice(q.clone(), &rows4(b, h, start..end, d));
            let dout_i = Self::float_slice(dout.clone(), &rows4(b, h, start..end, d));
            let mask_i = Self::bool_slice(mask.clone(), &rows4(b, h, start..end, t));
            let d_i = Self::float_slice(big_d.clone(), &rows4(b, h, start..end, 1));
            // Transposes as flags: no transposed copy of k, v, p or dS is made.
            let scores =
                Self::float_mul_scalar(Self::gemm(q_i.clone(), k.clone(), false, true), scale);
            let p = masked_softmax::<Self>(scores, mask_i);
            let dv_i = Self::gemm(p.clone(), dout_i.clone(), true, false);
            let dp = Self::gemm(dout_i, v.clone(), false, true);
            let ds = Self::float_mul(p, Self::float_sub(dp, d_i));
            let ds = Self::float_mul_scalar(ds, scale);
            dq.push(Self::gemm(ds.clone(), k.clone(), false, false));
            let dk_i = Self::gemm(ds, q_i, true, false);
            dk = Some(match dk {
                Some(acc) => Self::float_add(acc, dk_i),
                None => dk_i,
            });
            dv = Some(match dv {
                Some(acc) => Self::float_add(acc, dv_i),
                None => dv_i,
            });
        }
        (
            Self::float_cat(dq, 2),
            dk.expect("attention needs at least one query"),
            dv.expect("attention needs at least one query"),
        )
    }
}

impl AttentionBackend for burn::backend::Flex {}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl AttentionBackend for burn_cubecl::CubeBackend {}

/// The slice `[0..b, 0..h, rows, 0..cols]` of a `[b, h, .., cols]` tensor.
fn rows4(b: usize, h: usize, rows: std::ops::Range<usize>, cols: usize) -> [Slice; 4] {
    [
        Slice::from(0..b),
        Slice::from(0..h),
        Slice::from(rows),
        Slice::from(0..cols),
    ]
}

fn dims4<T: TensorMetadata>(t: &T) -> [usize; 4] {
    let shape = t.shape();
    assert_eq!(
        shape.num_dims(),
        4,
        "attention: expected a 4-D tensor, got {shape:?}"
    );
    [shape[0], shape[1], shape[2], shape[3]]
}

/// burn's NaN-safe masked softmax over the last dimension (`attention_fallback`'s): the row
/// maximum clamped to the dtype's lowest finite value and the sum to its smallest normal, so a
/// fully masked row gives zeros.
fn masked_softmax<B: Backend>(scores: FloatTensor<B>, mask: BoolTensor<B>) -> FloatTensor<B> {
    let finfo = scores.dtype().finfo().expect("scores are a float tensor");
    let scores = B::float_mask_fill(scores, mask, Scalar::from(f32::NEG_INFINITY));
    let max = B::float_clamp_min(B::float_max_dim(scores.clone(), 3), Scalar::from(finfo.min));
    let num = B::float_exp(B::float_sub(scores, max));
    let sum = B::float_clamp_min(
        B::float_sum_dim(num.clone(), 3),
        Scalar::from(finfo.min_positive),
    );
    B::float_div(num, sum)
}

/// Query rows per backward block so that one block's `[b, h, rows, t]` weights stay near
/// 64 MiB of f32.
pub fn default_block(batch: usize, heads: usize, keys: usize) -> usize {
    const BUDGET: usize = 16 << 20;
    (BUDGET / (batch * heads * keys).max(1)).max(1)
}

/// [`AttentionBackend::attention_recompute`] on burn tensors: `q` `[b, h, s, d]`, `k`, `v`
/// `[b, h, t, d]`, `mask` `[b, h, s, t]` (`true` = masked), with the forward of
/// [`forward_mode`]. Differentiable in `q`, `k`, `v`.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4, Bool>) -> Tensor<4> {
    attention_with(q, k, v, mask, forward_mode())
}

/// [`attention`] with the forward named.
pub fn attention_with(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Tensor<4, Bool>,
    forward: AttentionForward,
) -> Tensor<4> {
    let [b, h, _, _] = q.dims();
    let t = k.dims()[2];
    let gemm_block = (forward == AttentionForward::Gemm).then(|| default_block(b, h, t));
    Tensor::from_dispatch(<Dispatch as AttentionBackend>::attention_recompute(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        mask.into_dispatch(),
        gemm_block,
    ))
}
