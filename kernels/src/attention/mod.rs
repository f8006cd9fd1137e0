//! Attention whose backward recomputes the attention weights a block of queries at a time
//! instead of keeping them.
//!
//! ```text
//! forward   out = softmax(q·kᵀ/√d, masked) · v          the backend's own attention
//!                                                        (CubeCL's flash kernel on wgpu/CUDA),
//!                                                        or per block of query rows through
//!                                                        [`crate::gemm`] (cuBLAS on CUDA)
//! backward  for each block of query rows i:
//!             P_i  = softmax(q_i·kᵀ/√d, masked)          recomputed, [b, h, rows, t]
//!             dv  += P_iᵀ · dout_i
//!             dP_i = dout_i · vᵀ
//!             dS_i = P_i ∘ (dP_i − rowsum(P_i ∘ dP_i))   softmax's backward, in f32
//!             dq_i = dS_i · k / √d,   dk += dS_iᵀ · q_i / √d
//! ```
//!
//! burn 0.22's autodiff runs attention as its decomposition (`attention_fallback`) and keeps
//! the scores and the softmax of every layer until the backward: `batch × heads × seq²` floats
//! twice per layer (at 4 × 2048 tokens and 32 heads, 2 GiB per copy per layer). Here the
//! backward keeps `q`, `k`, `v` and the mask, and its peak is one block's weights. Fully
//! masked rows give zero weights, as in burn's NaN-safe softmax.
//!
//! In bf16 the products take and give bf16 and everything between them is `f32`, rounded to
//! bf16 where transformers' eager attention rounds (the scores before and after the scale, the
//! weights before `· v`, `dS` before and after the scale): ft's bf16 logits and loss then equal
//! transformers' (see `ft-model`'s and `ft-train`'s bf16 fixture tests). The row sums are
//! `rowsum(P ∘ dP)`, the softmax backward autograd computes, not flash attention's equal
//! `rowsum(dout ∘ out)`, which differs once `out` is rounded to bf16.
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

use burn::tensor::{Bool, DType, Scalar, Slice, Tensor};

use crate::gemm::{GemmBackend, cast_to};

/// Which forward [`attention`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionForward {
    /// The backend's own attention (burn's; CubeCL's flash kernel on wgpu/CUDA).
    Backend,
    /// Per block of query rows: `softmax(q_i·kᵀ/√d) · v` with the two products through
    /// [`crate::gemm`] (cuBLAS on CUDA); a block's weights are the only `s × t` memory.
    Gemm,
}

/// 0: not set (by dtype, see [`forward_mode`]), 1: backend, 2: gemm.
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

/// The forward [`attention`] runs for inputs of `dtype`: `FT_ATTENTION` (`backend` or `gemm`)
/// when set, else what [`set_forward`] chose, else [`AttentionForward::Gemm`] for half-precision
/// inputs (it rounds where transformers' eager attention does: ft's bf16 logits equal
/// transformers' on the fixture models) and [`AttentionForward::Backend`] for `f32`.
pub fn forward_mode(dtype: DType) -> AttentionForward {
    match std::env::var("FT_ATTENTION").ok().as_deref().map(str::trim) {
        Some("gemm") => return AttentionForward::Gemm,
        Some("backend") => return AttentionForward::Backend,
        _ => {}
    }
    match FORWARD.load(Ordering::Relaxed) {
        1 => AttentionForward::Backend,
        2 => AttentionForward::Gemm,
        _ if dtype == DType::F32 => AttentionForward::Backend,
        _ => AttentionForward::Gemm,
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
        let dtype = q.dtype();
        let mut out = Vec::new();
        for start in (0..s).step_by(block) {
            let rows = start..(start + block).min(s);
            let (_, p) = block_weights::<Self>(&q, &k, &mask, rows, [b, h, d, t], scale);
            let p = cast_to::<Self>(p, dtype);
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
    fn attention_recompute_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        dout: FloatTensor<Self>,
        block: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [b, h, s, d] = dims4(&q);
        let t = dims4(&k)[2];
        let scale = Scalar::from(1.0 / (d as f64).sqrt());
        // Products in the inputs' dtype; softmax, dS and the dk/dv sums in f32.
        let dtype = q.dtype();
        let f32 = |t| cast_to::<Self>(t, DType::F32);
        let (mut dk, mut dv) = (None::<FloatTensor<Self>>, None::<FloatTensor<Self>>);
        let mut dq = Vec::new();
        for start in (0..s).step_by(block.max(1)) {
            let rows = start..(start + block.max(1)).min(s);
            let dout_i = Self::float_slice(dout.clone(), &rows4(b, h, rows.clone(), d));
            // Transposes as flags: no transposed copy of k, v, p or dS is made.
            let (q_i, p) = block_weights::<Self>(&q, &k, &mask, rows, [b, h, d, t], scale);
            let dv_i = f32(Self::gemm(
                cast_to::<Self>(p.clone(), dtype),
                dout_i.clone(),
                true,
                false,
            ));
            let dp = f32(Self::gemm(dout_i, v.clone(), false, true));
            let d_i = Self::float_sum_dim(Self::float_mul(p.clone(), dp.clone()), 3);
            let ds = Self::float_mul(p, Self::float_sub(dp, d_i));
            let ds = scaled_scores::<Self>(cast_to::<Self>(ds, dtype), scale);
            dq.push(Self::gemm(ds.clone(), k.clone(), false, false));
            let dk_i = f32(Self::gemm(ds, q_i, true, false));
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
            cast_to::<Self>(dk.expect("attention needs at least one query"), dtype),
            cast_to::<Self>(dv.expect("attention needs at least one query"), dtype),
        )
    }
}

impl AttentionBackend for burn::backend::Flex {}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl AttentionBackend for burn_cubecl::CubeBackend {}

/// Query rows `rows` of `q` (`[b, h, rows, d]`) and their attention weights
/// `softmax(q_rows·kᵀ · scale, masked)` in `f32` (`[b, h, rows, t]`), the step the forward and
/// the backward share.
fn block_weights<B: AttentionBackend>(
    q: &FloatTensor<B>,
    k: &FloatTensor<B>,
    mask: &BoolTensor<B>,
    rows: std::ops::Range<usize>,
    [b, h, d, t]: [usize; 4],
    scale: Scalar,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let q_i = B::float_slice(q.clone(), &rows4(b, h, rows.clone(), d));
    let mask_i = B::bool_slice(mask.clone(), &rows4(b, h, rows, t));
    let scores = scaled_scores::<B>(B::gemm(q_i.clone(), k.clone(), false, true), scale);
    (q_i, masked_softmax::<B>(scores, mask_i))
}

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

/// `scores · scale`, multiplied in `f32` and rounded once to the scores' dtype, as torch
/// multiplies a bf16 tensor by a Python float (burn's scalar op on bf16 rounds the scale to
/// bf16 first, which for `1/√32` is off by 0.2%). Also `dS · scale` in the backward.
fn scaled_scores<B: Backend>(scores: FloatTensor<B>, scale: Scalar) -> FloatTensor<B> {
    let dtype = scores.dtype();
    cast_to::<B>(
        B::float_mul_scalar(cast_to::<B>(scores, DType::F32), scale),
        dtype,
    )
}

/// burn's NaN-safe masked softmax over the last dimension (`attention_fallback`'s), in `f32`
/// whatever the scores' dtype (as flash attention keeps its softmax in `f32`): the row maximum
/// clamped to the lowest finite value and the sum to the smallest normal, so a fully masked row
/// gives zeros.
fn masked_softmax<B: Backend>(scores: FloatTensor<B>, mask: BoolTensor<B>) -> FloatTensor<B> {
    let scores = cast_to::<B>(scores, DType::F32);
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

/// Query rows per block so that one block's `[b, h, rows, t]` `f32` weights stay near
/// `FT_ATTENTION_BLOCK_MIB` MiB (default 256). A block holds about four such tensors at its
/// peak (scores, weights, `dP`, `dS`), so the default costs about 1 GiB of transient memory.
/// Every block is about eight launches forward and fifteen backward (products and
/// elementwise kernels), each a few microseconds of host time: at the Llama-3.2-1B benchmark
/// shape (4 × 2048 tokens, 32 heads) 64 MiB blocks meant ~16,000 launches per step with
/// layer recomputation, enough for the host to fall behind a large GPU; 256 MiB blocks need
/// a quarter of them.
pub fn default_block(batch: usize, heads: usize, keys: usize) -> usize {
    let mib = std::env::var("FT_ATTENTION_BLOCK_MIB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&m| m > 0)
        .unwrap_or(256);
    let budget = (mib << 20) / size_of::<f32>();
    (budget / (batch * heads * keys).max(1)).max(1)
}

/// [`AttentionBackend::attention_recompute`] on burn tensors: `q` `[b, h, s, d]`, `k`, `v`
/// `[b, h, t, d]`, `mask` `[b, h, s, t]` (`true` = masked), with the forward of
/// [`forward_mode`]. Differentiable in `q`, `k`, `v`.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4, Bool>) -> Tensor<4> {
    let mode = forward_mode(q.dtype());
    attention_with(q, k, v, mask, mode)
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
