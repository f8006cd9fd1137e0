//! Matrix products with either operand transposed, `op(A) · op(B)`, as a burn backend extension:
//! cuBLAS on CUDA (on the tensors' own device buffers), burn's matmul everywhere else. Operands
//! of rank 3 or 4 are batches of matrices (the last two dimensions) with equal batch dimensions:
//! attention's per-head products, strided-batched cuBLAS on CUDA.
//!
//! burn 0.22.1's CubeCL matmul reaches 0.28–0.37× of cuBLAS at training shapes on an H200 and
//! fails outright at some (`Tile shape must be non-zero and <= 256` at 8192×8192×2048), so the
//! model's large products — the NF4 linear's forward and backward, the LM head — go through
//! [`matmul`]. On wgpu and the CPU it is burn's `matmul` of the transposed views, which is also
//! the reference the CUDA path is tested against.
//!
//! `f32` products on CUDA use TF32 tensor cores (`CUBLAS_COMPUTE_32F_FAST_TF32`: inputs rounded
//! to a 10-bit mantissa, `f32` accumulation) unless [`set_tf32`] turns that off or the
//! environment sets `FT_CUDA_TF32=0`; `bf16` products accumulate in `f32`.
//!
//! The autodiff backward is the textbook one written with the same op, so gradients also take
//! the cuBLAS path: for `C = op(A) op(B)`, `dA` and `dB` are products of `dC` with the other
//! operand, with the transposes folded into the flags instead of materialized.

mod autodiff;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube;
#[cfg(feature = "cuda")]
mod cublas;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU8, Ordering};

use burn::backend::{Backend, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::tensor::{Shape, Tensor};

/// `op(A) · op(B)` on a burn backend (see the module docs).
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Fusion: cfg(feature = "fusion"),
    Autodiff
)]
pub trait GemmBackend: Backend {
    /// `lhs` is `[.., m, k]` (`[.., k, m]` when `trans_lhs`), `rhs` `[.., k, n]` (`[.., n, k]`
    /// when `trans_rhs`), both with the same leading (batch) dimensions; the result is
    /// `[.., m, n]`.
    #[fusion(dtype = lhs, shape = product_shape(lhs, rhs, trans_lhs, trans_rhs))]
    fn gemm(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        trans_lhs: bool,
        trans_rhs: bool,
    ) -> FloatTensor<Self> {
        burn_matmul::<Self>(lhs, rhs, trans_lhs, trans_rhs)
    }
}

/// `op(lhs) · op(rhs)` by burn's own matmul of the transposed views: the reference and every
/// backend's path except cuBLAS.
fn burn_matmul<B: Backend>(
    lhs: FloatTensor<B>,
    rhs: FloatTensor<B>,
    trans_lhs: bool,
    trans_rhs: bool,
) -> FloatTensor<B> {
    let lhs = if trans_lhs {
        B::float_transpose(lhs)
    } else {
        lhs
    };
    let rhs = if trans_rhs {
        B::float_transpose(rhs)
    } else {
        rhs
    };
    B::float_matmul(lhs, rhs)
}

impl GemmBackend for Flex {}

/// `t` as `dtype` (no op when it already is): the casts around mixed-precision steps (bf16
/// products, `f32` softmax and accumulation).
pub(crate) fn cast_to<B: Backend>(t: FloatTensor<B>, dtype: burn::tensor::DType) -> FloatTensor<B> {
    use burn::backend::TensorMetadata;
    if t.dtype() == dtype {
        return t;
    }
    B::float_cast(t, dtype.into())
}

/// `[.., m, n]` of `op(lhs) · op(rhs)` (read by the fusion registration; the product itself
/// checks that the inner and batch dimensions agree).
#[cfg_attr(not(feature = "fusion"), allow(dead_code))]
fn product_shape(lhs: &Shape, rhs: &Shape, trans_lhs: &bool, trans_rhs: &bool) -> Shape {
    let (a, b) = (lhs.as_slice(), rhs.as_slice());
    let r = a.len();
    let m = if *trans_lhs { a[r - 1] } else { a[r - 2] };
    let n = if *trans_rhs { b[r - 2] } else { b[r - 1] };
    let mut dims = a[..r - 2].to_vec();
    dims.extend([m, n]);
    Shape::from(dims)
}

/// `op(lhs) · op(rhs)`: `lhs` `[.., m, k]` (`[.., k, m]` when `trans_lhs`), `rhs` `[.., k, n]`
/// (`[.., n, k]` when `trans_rhs`), with equal batch dimensions `..` (none for plain matrices);
/// differentiable in both.
///
/// # Panics
///
/// When the inner or batch dimensions differ, `D < 2`, or the operands live on different
/// devices.
pub fn matmul<const D: usize>(
    lhs: Tensor<D>,
    rhs: Tensor<D>,
    trans_lhs: bool,
    trans_rhs: bool,
) -> Tensor<D> {
    assert!(
        D >= 2,
        "matmul: operands need at least 2 dimensions, got {D}"
    );
    let (a, b) = (lhs.dims(), rhs.dims());
    let k_lhs = if trans_lhs { a[D - 2] } else { a[D - 1] };
    let k_rhs = if trans_rhs { b[D - 1] } else { b[D - 2] };
    let t = |on: bool| if on { "ᵀ" } else { "" };
    assert_eq!(
        k_lhs,
        k_rhs,
        "matmul: op(lhs) has {k_lhs} columns but op(rhs) has {k_rhs} rows \
         (lhs {a:?}{}, rhs {b:?}{})",
        t(trans_lhs),
        t(trans_rhs),
    );
    assert_eq!(
        a[..D - 2],
        b[..D - 2],
        "matmul: batch dimensions differ (lhs {a:?}, rhs {b:?}); expand the operands first"
    );
    Tensor::from_dispatch(<Dispatch as GemmBackend>::gemm(
        lhs.into_dispatch(),
        rhs.into_dispatch(),
        trans_lhs,
        trans_rhs,
    ))
}

/// 0: not read yet, 1: TF32 off, 2: TF32 on.
static TF32: AtomicU8 = AtomicU8::new(0);

/// Whether `f32` products on CUDA may use TF32 tensor cores (default on; `FT_CUDA_TF32=0` in
/// the environment turns it off). Has no effect on other backends, which compute in `f32`.
pub fn set_tf32(on: bool) {
    TF32.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// The current TF32 setting (see [`set_tf32`]).
pub fn tf32() -> bool {
    match TF32.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var("FT_CUDA_TF32").map_or(true, |v| v.trim() != "0");
            set_tf32(on);
            on
        }
    }
}
