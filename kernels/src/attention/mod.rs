//! Attention whose backward recomputes the attention weights a block of queries at a time
//! instead of keeping them.
//!
//! ```text
//! forward   out = softmax(q·kᵀ/√d, masked) · v          the backend's own attention
//!                                                        (CubeCL's flash kernel on wgpu/CUDA)
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

mod autodiff;

#[cfg(test)]
mod tests;

use burn::backend::{
    Backend, Dispatch, TensorMetadata, backend_extension,
    ops::AttentionModuleOptions,
    tensor::{BoolTensor, FloatTensor},
};
use burn::tensor::{Bool, Scalar, Slice, Tensor};

/// Attention with a recomputing backward (see the module docs).
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Fusion: cfg(feature = "fusion"),
    Autodiff
)]
pub trait AttentionBackend: Backend {
    /// `softmax(q·kᵀ/√d + mask) · v` for `q` `[b, h, s, d]`, `k`, `v` `[b, h, t, d]` and `mask`
    /// `[b, h, s, t]` (`true` = not attended): the backend's own attention.
    #[fusion(default)]
    fn attention_recompute(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::attention(q, k, v, Some(mask), None, AttentionModuleOptions::default())
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
        let scale = 1.0 / (d as f64).sqrt();
        // D_i = Σ_j dout_ij · out_ij = Σ_j P_ij (dout_i · v_j).
        let big_d = Self::float_sum_dim(Self::float_mul(dout.clone(), out), 3);
        let kt = Self::float_transpose(k.clone());
        let vt = Self::float_transpose(v);
        let (mut dk, mut dv) = (None::<FloatTensor<Self>>, None::<FloatTensor<Self>>);
        let mut dq = Vec::new();
        for start in (0..s).step_by(block.max(1)) {
            let end = (start + block.max(1)).min(s);
            let rows = [
                Slice::from(0..b),
                Slice::from(0..h),
                Slice::from(start..end),
                Slice::from(0..d),
            ];
            let q_i = Self::float_slice(q.clone(), &rows);
            let dout_i = Self::float_slice(dout.clone(), &rows);
            let mask_i = Self::bool_slice(
                mask.clone(),
                &[
                    Slice::from(0..b),
                    Slice::from(0..h),
                    Slice::from(start..end),
                    Slice::from(0..t),
                ],
            );
            let d_i = Self::float_slice(
                big_d.clone(),
                &[
                    Slice::from(0..b),
                    Slice::from(0..h),
                    Slice::from(start..end),
                    Slice::from(0..1),
                ],
            );
            let scores = Self::float_mul_scalar(
                Self::float_matmul(q_i.clone(), kt.clone()),
                Scalar::from(scale),
            );
            let p = masked_softmax::<Self>(scores, mask_i);
            let dv_i = Self::float_matmul(Self::float_transpose(p.clone()), dout_i.clone());
            let dp = Self::float_matmul(dout_i, vt.clone());
            let ds = Self::float_mul(p, Self::float_sub(dp, d_i));
            let ds = Self::float_mul_scalar(ds, Scalar::from(scale));
            dq.push(Self::float_matmul(ds.clone(), k.clone()));
            let dk_i = Self::float_matmul(Self::float_transpose(ds), q_i);
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
/// `[b, h, t, d]`, `mask` `[b, h, s, t]` (`true` = masked). Differentiable in `q`, `k`, `v`.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4, Bool>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as AttentionBackend>::attention_recompute(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        mask.into_dispatch(),
    ))
}
