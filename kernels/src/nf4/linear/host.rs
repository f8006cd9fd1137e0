//! The `Flex` (CPU) implementation: the reference dequantization (`NF4_TABLE[code] * absmax`,
//! one `f32` multiply per value), read straight from the code words, on all cores.

use burn::backend::{
    Backend, Flex, TensorMetadata,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{TensorData, try_read_sync};
use rayon::prelude::*;

use super::Nf4Backend;
use crate::nf4::dequant::CODES_PER_WORD;
use crate::nf4::reference::NF4_TABLE;

impl Nf4Backend for Flex {
    fn nf4_dequantize(
        codes: IntTensor<Self>,
        absmax: FloatTensor<Self>,
        out_features: usize,
        in_features: usize,
        blocksize: usize,
        bf16: bool,
    ) -> FloatTensor<Self> {
        let w = host_dequantize::<Self>(codes, absmax, out_features, in_features, blocksize);
        // Round-to-nearest-even of each f32 product: what the CubeCL kernel's `bf16_bits` and
        // bitsandbytes do.
        if bf16 {
            crate::gemm::cast_to::<Self>(w, burn::tensor::DType::BF16)
        } else {
            w
        }
    }
}

/// Reads codes and absmax back, dequantizes on the host and uploads the result to the absmax's
/// device. The panics are burn's contract for a backend op, which cannot return an error; each
/// names what broke.
pub(super) fn host_dequantize<B: Backend>(
    codes: IntTensor<B>,
    absmax: FloatTensor<B>,
    out_features: usize,
    in_features: usize,
    blocksize: usize,
) -> FloatTensor<B> {
    let device = absmax.device();
    let numel = out_features * in_features;
    let words = try_read_sync(B::int_into_data(codes))
        .expect("NF4 dequantize: reading the codes needs a blocking read")
        .expect("NF4 dequantize: reading the codes failed")
        .convert::<i32>();
    let words = words
        .as_slice::<i32>()
        .expect("NF4 dequantize: codes converted to i32");
    let absmax = try_read_sync(B::float_into_data(absmax))
        .expect("NF4 dequantize: reading the absmax needs a blocking read")
        .expect("NF4 dequantize: reading the absmax failed")
        .convert::<f32>();
    let absmax = absmax
        .as_slice::<f32>()
        .expect("NF4 dequantize: absmax converted to f32");
    B::float_from_data(
        TensorData::new(
            dequantize_words(words, absmax, numel, blocksize),
            [out_features, in_features],
        ),
        &device,
    )
}

/// `NF4_TABLE[code(i)] * absmax[i / blocksize]` for `i < numel`, codes read from `u32` words in
/// the kernel's layout (word `w` = bytes `4w..4w + 4` little-endian; in each byte the even
/// element is the high nibble). Exactly the reference's values.
pub(crate) fn dequantize_words(
    words: &[i32],
    absmax: &[f32],
    numel: usize,
    blocksize: usize,
) -> Vec<f32> {
    assert!(
        words.len() >= numel.div_ceil(CODES_PER_WORD) && absmax.len() >= numel.div_ceil(blocksize),
        "NF4 dequantize: {} code words and {} absmax for {numel} values in blocks of {blocksize}",
        words.len(),
        absmax.len()
    );
    let mut out = vec![0f32; numel];
    out.par_chunks_mut(blocksize)
        .zip(absmax.par_iter())
        .enumerate()
        .for_each(|(block, (values, &scale))| {
            let first = block * blocksize;
            for (j, v) in values.iter_mut().enumerate() {
                let i = first + j;
                let word = words[i / CODES_PER_WORD] as u32;
                let k = i % CODES_PER_WORD;
                let code = (word >> (8 * (k / 2) + 4 - 4 * (k % 2))) & 0xF;
                *v = NF4_TABLE[code as usize] * scale;
            }
        });
    out
}
