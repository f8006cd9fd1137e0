//! The `Cube` (wgpu, CUDA) implementation: the CubeCL dequantization kernel on the tensors'
//! own buffers, so no data leaves the device.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape};
use burn_cubecl::{CubeBackend, kernel::into_contiguous, tensor::CubeTensor};

use super::Nf4Backend;
use crate::nf4::dequant::dequantize_handles;

impl Nf4Backend for CubeBackend {
    fn nf4_dequantize(
        codes: IntTensor<Self>,
        absmax: FloatTensor<Self>,
        out_features: usize,
        in_features: usize,
        blocksize: usize,
        bf16: bool,
    ) -> FloatTensor<Self> {
        assert!(
            matches!(codes.dtype, DType::I32 | DType::U32),
            "NF4 dequantize: codes must be 32-bit words, found {:?}",
            codes.dtype
        );
        assert_eq!(
            absmax.dtype,
            DType::F32,
            "NF4 dequantize: absmax must be f32"
        );
        let codes = into_contiguous(codes);
        let absmax = into_contiguous(absmax);
        let numel = out_features * in_features;
        let out = dequantize_handles(
            &absmax.client,
            codes.handle.clone(),
            absmax.handle.clone(),
            numel,
            blocksize,
            bf16,
        );
        // With `bf16`, `numel.div_ceil(2)` words of little-endian bf16 pairs: the bytes of a
        // contiguous bf16 tensor (plus one padding half when `numel` is odd).
        CubeTensor::new_contiguous(
            absmax.client.clone(),
            absmax.device.clone(),
            Shape::new([out_features, in_features]),
            out,
            if bf16 { DType::BF16 } else { DType::F32 },
        )
    }
}
