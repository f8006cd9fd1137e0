//! The NF4 linear layer `y = x · dequant(W)ᵀ` as a burn backend extension, with its own
//! backward for `dx`.
//!
//! ```text
//! forward   W = dequant(codes, absmax)         [out, in]   (per call, into a fresh buffer)
//!           y = x · Wᵀ                           [rows, out]
//! backward  W = dequant(codes, absmax)         (again: nothing dense is kept for backward)
//!           dx = dy · W                          [rows, in]; no gradient for W
//! ```
//!
//! burn's autodiff through a plain matmul with a constant `W` would keep every layer's dense
//! `W` alive from the forward until its backward ran, i.e. the whole base model dequantized at
//! once. The [`Nf4Backend::nf4_linear`] op of the `Autodiff` backend stores only the packed
//! codes and absmax (already resident) and dequantizes again in the backward.
//!
//! # Backends
//!
//! - `Cube` (wgpu, CUDA; crate features `wgpu`, `cuda`): the dequantization is the CubeCL kernel
//!   of [`nf4::dequant`](crate::nf4::dequant), launched on the tensors' own buffers and stream;
//!   the product is burn's matmul. With `fusion` (burn's kernel fusion) the op is registered
//!   lazily like any other.
//! - `Flex` (burn's pure-Rust CPU backend): the plain-Rust
//!   [`reference`](crate::nf4::reference) dequantization, then burn's matmul.
//! - `Autodiff` over either: the custom backward above.
//!
//! Every burn backend ft runs on is listed; calling the op on another one panics in burn's
//! dispatch.
//!
//! The weight lives in [`Nf4Weight`]: codes as an `Int` tensor of `u32` words (bit patterns in
//! `i32` elements; eight codes per word in bitsandbytes' byte order, see
//! [`dequant`](crate::nf4::dequant)) and absmax as an `f32` tensor, both on the model's device.
//! A double-quantized absmax is recovered on the host once, at upload (exactly as the
//! reference recovers it), so the device keeps `f32` absmax: 0.5 bits per weight instead of
//! about 0.13.

mod autodiff;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube;
mod host;

#[cfg(test)]
mod tests;

use burn::backend::{
    Backend, Dispatch, TensorMetadata, backend_extension,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{DType, Device, Int, Shape, Tensor, TensorCreationOptions, TensorData};

use crate::KernelError;
use crate::gemm::GemmBackend;
use crate::nf4::dequant::padded_to_words;
use crate::nf4::reference::Nf4Tensor;

/// NF4 operations on a burn backend (a backend extension, see the module docs).
#[backend_extension(
    Flex,
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Fusion: cfg(feature = "fusion"),
    Autodiff
)]
pub trait Nf4Backend: Backend + GemmBackend {
    /// The dense `[out_features, in_features]` weight, `f32` (with `bf16`: rounded to `bf16`
    /// by the kernel itself, as bitsandbytes' `dequantize_4bit` to bf16 does): `codes` holds
    /// `numel.div_ceil(8)` `u32` words as `i32`, `absmax` one `f32` per block of `blocksize`.
    #[fusion(dtype = weight_dtype(bf16), shape = weight_shape(out_features, in_features))]
    fn nf4_dequantize(
        codes: IntTensor<Self>,
        absmax: FloatTensor<Self>,
        out_features: usize,
        in_features: usize,
        blocksize: usize,
        bf16: bool,
    ) -> FloatTensor<Self>;

    /// `x · dequant(W)ᵀ` for `x` `[rows, in_features]`: `[rows, out_features]`, in `x`'s dtype
    /// (a `bf16` input gets the weight rounded to `bf16`, bitsandbytes' `dequantize_4bit` to
    /// `bf16`).
    #[fusion(default)]
    fn nf4_linear(
        x: FloatTensor<Self>,
        codes: IntTensor<Self>,
        absmax: FloatTensor<Self>,
        out_features: usize,
        in_features: usize,
        blocksize: usize,
    ) -> FloatTensor<Self> {
        let dtype = x.dtype();
        let bf16 = dtype == DType::BF16;
        let weight =
            Self::nf4_dequantize(codes, absmax, out_features, in_features, blocksize, bf16);
        let weight = crate::gemm::cast_to::<Self>(weight, dtype);
        Self::gemm(x, weight, false, true)
    }
}

/// The output dtype of [`Nf4Backend::nf4_dequantize`] (read by the fusion registration).
#[cfg_attr(not(feature = "fusion"), allow(dead_code))]
fn weight_dtype(bf16: &bool) -> DType {
    if *bf16 { DType::BF16 } else { DType::F32 }
}

/// `[out_features, in_features]`, the output shape of [`Nf4Backend::nf4_dequantize`] (read by
/// the fusion registration).
#[cfg_attr(not(feature = "fusion"), allow(dead_code))]
fn weight_shape(out_features: &usize, in_features: &usize) -> Shape {
    Shape::new([*out_features, *in_features])
}

/// A frozen NF4 weight `[out_features, in_features]` on a burn device, ready for
/// [`Nf4Weight::forward`]. Cloning shares the device buffers.
#[derive(Debug, Clone)]
pub struct Nf4Weight {
    /// Packed codes, `numel.div_ceil(8)` `u32` words stored as `i32`.
    codes: Tensor<1, Int>,
    /// One `f32` per block.
    absmax: Tensor<1>,
    out_features: usize,
    in_features: usize,
    blocksize: usize,
}

impl Nf4Weight {
    /// Copies a quantized `[out, in]` (or 1-D) tensor to `device`.
    pub fn upload(tensor: &Nf4Tensor, device: &Device) -> Result<Self, KernelError> {
        let (out_features, in_features) = match *tensor.shape() {
            [n] => (1, n),
            [o, i] => (o, i),
            ref other => {
                return Err(KernelError::InvalidPart {
                    part: "shape",
                    reason: format!(
                        "an NF4 linear weight is 2-D `[out, in]`, this tensor has shape {other:?}"
                    ),
                });
            }
        };
        let numel = tensor.numel();
        if numel > u32::MAX as usize {
            return Err(KernelError::TooLarge {
                what: "NF4 weight",
                len: numel,
                max: u32::MAX as usize,
            });
        }
        let words: Vec<i32> = padded_to_words(tensor.codes())
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let n_words = words.len();
        let absmax = tensor.absmax_f32().into_owned();
        let n_blocks = absmax.len();
        Ok(Self {
            codes: Tensor::from_data(
                TensorData::new(words, [n_words]),
                TensorCreationOptions::new(device.clone()).with_dtype(DType::I32),
            ),
            absmax: Tensor::from_data(
                TensorData::new(absmax, [n_blocks]),
                TensorCreationOptions::new(device.clone()).with_dtype(DType::F32),
            ),
            out_features,
            in_features,
            blocksize: tensor.blocksize(),
        })
    }

    /// `[out_features, in_features]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.out_features, self.in_features]
    }

    /// The values per absmax block.
    pub fn blocksize(&self) -> usize {
        self.blocksize
    }

    /// The device the buffers live on.
    pub fn device(&self) -> Device {
        self.absmax.device()
    }

    /// The dense weight, `f32` `[out, in]`, dequantized now on the weight's device
    /// (bitsandbytes' `dequantize_4bit`, bit for bit). Not differentiable.
    pub fn dequantize(&self) -> Tensor<2> {
        self.dequantize_as(false)
    }

    /// [`dequantize`](Self::dequantize) straight to `bf16` (`bf16`), as bitsandbytes'
    /// `dequantize_4bit` with a bf16 quant state: each value's `f32` product rounded once.
    pub fn dequantize_bf16(&self) -> Tensor<2> {
        self.dequantize_as(true)
    }

    fn dequantize_as(&self, bf16: bool) -> Tensor<2> {
        Tensor::from_dispatch(<Dispatch as Nf4Backend>::nf4_dequantize(
            self.codes.clone().into_dispatch(),
            self.absmax.clone().into_dispatch(),
            self.out_features,
            self.in_features,
            self.blocksize,
            bf16,
        ))
    }

    /// `x · dequant(W)ᵀ` for `x` `[rows, in_features]`; differentiable in `x` only, with the
    /// weight dequantized again in the backward instead of kept.
    ///
    /// # Panics
    ///
    /// When `x` is not `[rows, in_features]` or not on the weight's device.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [_, in_features] = x.dims();
        assert_eq!(
            in_features, self.in_features,
            "NF4 linear: input has {in_features} features, the weight expects {}",
            self.in_features
        );
        Tensor::from_dispatch(<Dispatch as Nf4Backend>::nf4_linear(
            x.into_dispatch(),
            self.codes.clone().into_dispatch(),
            self.absmax.clone().into_dispatch(),
            self.out_features,
            self.in_features,
            self.blocksize,
        ))
    }
}
