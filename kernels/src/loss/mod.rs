//! The LM loss fused with the LM head: `Σ_rows −log softmax(h · Wᵀ)[target]` without the
//! `[rows, vocab]` logits of all rows ever existing at once, forward or backward.
//!
//! ```text
//! forward   for each chunk of rows c:  logits_c = h_c · Wᵀ          [c, vocab]
//!                                      nll += Σ (logsumexp(logits_c) − logits_c[target])
//! backward  for each chunk again:      logits_c = h_c · Wᵀ          (recomputed)
//!                                      dh_c = g · (softmax(logits_c) − onehot(target)) · W
//! ```
//!
//! burn's autodiff through the same composition keeps every chunk's logits and softmax until
//! the backward: at 8 sequences of 2048 tokens and a 128K vocabulary that is 8 GiB per copy in
//! f32. Here the backward keeps `h` (`[rows, hidden]`), `W` (resident anyway) and the targets,
//! and the peak is one chunk's logits. `W` is frozen (the LM head of a LoRA/QLoRA run, or the
//! tied embedding): it gets no gradient.
//!
//! The op is a burn backend extension whose forward and backward are compositions of burn's
//! own primitives, so every backend runs the same code (CubeCL's matmul and reductions on
//! wgpu and CUDA); the `Autodiff` implementation supplies the backward above.

mod autodiff;

#[cfg(test)]
mod tests;

use burn::backend::{
    Backend, Dispatch, TensorMetadata, backend_extension,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{DType, IndexingUpdateOp, Int, Scalar, Shape, Slice, Tensor};

use crate::gemm::{GemmBackend, cast_to};

/// The fused LM head + cross-entropy (see the module docs).
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Fusion: cfg(feature = "fusion"),
    Autodiff
)]
pub trait LinearCrossEntropyBackend: Backend + GemmBackend {
    /// `[1]`, `f32`: the summed negative log-likelihood of `targets` (`[rows]`, int) under
    /// `softmax(h · weightᵀ)`, `h` `[rows, hidden]`, `weight` `[vocab, hidden]` (same dtype as
    /// `h`), computed `chunk` rows at a time; the softmax is in `f32` whatever the dtype.
    #[fusion(default)]
    fn linear_cross_entropy(
        h: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        let [rows, hidden] = dims2(&h);
        let mut total: Option<FloatTensor<Self>> = None;
        for (start, end) in chunks(rows, chunk) {
            let logits = chunk_logits::<Self>(&h, &weight, start, end, hidden);
            let idx = chunk_targets::<Self>(&targets, start, end);
            let lse = logsumexp::<Self>(logits.clone());
            let picked = Self::float_gather(1, logits, idx);
            let nll = Self::float_sum(Self::float_sub(lse, picked));
            total = Some(match total {
                Some(t) => Self::float_add(t, nll),
                None => nll,
            });
        }
        total.expect("linear cross-entropy needs at least one row")
    }

    /// `dh` `[rows, hidden]` of [`linear_cross_entropy`](Self::linear_cross_entropy) for the
    /// upstream gradient `grad` (`[1]`), recomputing each chunk's logits.
    #[fusion(default)]
    fn linear_cross_entropy_backward(
        h: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        let [rows, hidden] = dims2(&h);
        let grad = Self::float_reshape(grad, Shape::new([1, 1]));
        let mut parts = Vec::new();
        for (start, end) in chunks(rows, chunk) {
            let logits = chunk_logits::<Self>(&h, &weight, start, end, hidden);
            let idx = chunk_targets::<Self>(&targets, start, end);
            let lse = logsumexp::<Self>(logits.clone());
            let probs = Self::float_exp(Self::float_sub(logits, lse));
            let minus_one = Self::float_full(
                Shape::new([end - start, 1]),
                Scalar::from(-1.0f32),
                &probs.device(),
                probs.dtype().into(),
            );
            let dlogits = Self::float_scatter(1, probs, idx, minus_one, IndexingUpdateOp::Add);
            let dlogits = Self::float_mul(dlogits, grad.clone());
            let dlogits = cast_to::<Self>(dlogits, weight.dtype());
            parts.push(Self::gemm(dlogits, weight.clone(), false, false));
        }
        Self::float_cat(parts, 0)
    }
}

impl LinearCrossEntropyBackend for burn::backend::Flex {}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl LinearCrossEntropyBackend for burn_cubecl::CubeBackend {}

fn dims2<T: TensorMetadata>(t: &T) -> [usize; 2] {
    let shape = t.shape();
    assert_eq!(
        shape.num_dims(),
        2,
        "linear cross-entropy: expected a 2-D tensor, got {shape:?}"
    );
    [shape[0], shape[1]]
}

/// `(start, end)` of each chunk of at most `chunk` rows.
fn chunks(rows: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    let chunk = chunk.max(1);
    (0..rows)
        .step_by(chunk)
        .map(move |start| (start, (start + chunk).min(rows)))
}

/// `h[start..end] · weightᵀ`: `[end - start, vocab]`, in `f32` (a `bf16` product is widened
/// before the softmax, as transformers widens the logits before its loss).
fn chunk_logits<B: GemmBackend>(
    h: &FloatTensor<B>,
    weight: &FloatTensor<B>,
    start: usize,
    end: usize,
    hidden: usize,
) -> FloatTensor<B> {
    let rows = B::float_slice(
        h.clone(),
        &[Slice::from(start..end), Slice::from(0..hidden)],
    );
    cast_to::<B>(B::gemm(rows, weight.clone(), false, true), DType::F32)
}

/// `targets[start..end]` as `[end - start, 1]`, the index shape of a gather along dim 1.
fn chunk_targets<B: Backend>(targets: &IntTensor<B>, start: usize, end: usize) -> IntTensor<B> {
    let t = B::int_slice(targets.clone(), &[Slice::from(start..end)]);
    B::int_reshape(t, Shape::new([end - start, 1]))
}

/// Row-wise `log Σ exp`, `[c, 1]`, shifted by the row maximum.
fn logsumexp<B: Backend>(logits: FloatTensor<B>) -> FloatTensor<B> {
    let max = B::float_max_dim(logits.clone(), 1);
    let shifted = B::float_sub(logits, max.clone());
    let sum = B::float_sum_dim(B::float_exp(shifted), 1);
    B::float_add(B::float_log(sum), max)
}

/// Rows per chunk so that one chunk's `[rows, vocab]` f32 logits stay near 64 MiB.
pub fn default_chunk(vocab: usize) -> usize {
    const LOGIT_BUDGET: usize = 16 << 20;
    (LOGIT_BUDGET / vocab.max(1)).max(1)
}

/// [`LinearCrossEntropyBackend::linear_cross_entropy`] on burn tensors: `h` `[rows, hidden]`,
/// `weight` `[vocab, hidden]` (frozen), `targets` `[rows]`. Differentiable in `h`.
///
/// # Panics
///
/// When `rows` is 0 or the shapes disagree.
pub fn linear_cross_entropy(
    h: Tensor<2>,
    weight: Tensor<2>,
    targets: Tensor<1, Int>,
    chunk: usize,
) -> Tensor<1> {
    let [rows, hidden] = h.dims();
    let [_, w_hidden] = weight.dims();
    assert!(rows > 0, "linear cross-entropy: no rows");
    assert_eq!(
        hidden, w_hidden,
        "linear cross-entropy: h and weight disagree on hidden"
    );
    assert_eq!(
        targets.dims()[0],
        rows,
        "linear cross-entropy: one target per row"
    );
    Tensor::from_dispatch(
        <Dispatch as LinearCrossEntropyBackend>::linear_cross_entropy(
            h.into_dispatch(),
            weight.into_dispatch(),
            targets.into_dispatch(),
            chunk,
        ),
    )
}
