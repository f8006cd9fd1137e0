//! ggml quantizers and dequantizers.
//!
//! Each type is one `#[repr(C)]` block struct implementing [`Block`]: a
//! plain scalar `quantize` of one block of f32 and a `dequantize` back. The
//! scalar code *is* the reference: it follows ggml's
//! `quantize_row_*_ref` / `dequantize_row_*` (ggml-quants.c) operation by
//! operation, in f32, without fused multiply-add, so results are
//! byte-identical to ggml and gguf-py (checked against their golden vectors in
//! `tests/fixtures/gguf`).
//!
//! The whole-tensor entry points ([`quantize`], [`dequantize`]) split the data
//! into runs of whole blocks and run them on rayon's pool. Blocks are
//! independent, so the parallel result is byte-identical to the single-thread
//! [`quantize_ref`] / [`dequantize_ref`] (a test checks it). Rows never share
//! a block as long as the row length is a multiple of the block size, which
//! [`quantize_rows`] checks and the GGUF writer requires.
//!
//! | type | block | bytes | layout |
//! |---|---|---|---|
//! | F32 | 1 | 4 | IEEE f32 |
//! | F16 | 1 | 2 | IEEE f16, round to nearest even |
//! | BF16 | 1 | 2 | top half of f32, round to nearest even, NaN kept quiet |
//! | Q8_0 | 32 | 34 | `d: f16`, `qs: [i8; 32]`; x = d·q |
//! | Q4_0 | 32 | 18 | `d: f16`, `qs: [u8; 16]` (element j low nibble, j+16 high); x = d·(q−8) |
//! | Q4_1 | 32 | 20 | `d, m: f16`, `qs: [u8; 16]`; x = d·q + m |
//! | Q5_0 | 32 | 22 | `d: f16`, `qh: u32` (bit j = 5th bit of element j), `qs`; x = d·(q−16) |
//! | Q5_1 | 32 | 24 | `d, m: f16`, `qh`, `qs`; x = d·q + m |
//! | Q4_K | 256 | 144 | `d, dmin: f16`, 8×(6-bit scale, 6-bit min) in 12 bytes, 128 bytes of nibbles |
//! | Q5_K | 256 | 176 | as Q4_K plus 32 bytes of 5th bits |
//! | Q6_K | 256 | 210 | 128 bytes low nibbles, 64 bytes 2-bit highs, 16 × i8 scales, `d: f16` |
//!
//! Adding a type: one new file with its block struct and `Block` impl, one
//! arm in `kernels()` below, one line in the fixture generator.

mod float;
mod k_common;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;

use bytemuck::Pod;
use rayon::prelude::*;

use crate::error::QuantError;
use crate::types::GgmlType;

pub use float::{bf16_from_f32, f16_from_f32};
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4K;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use q8_0::BlockQ8_0;

/// One ggml block: `N` f32 values in, `size_of::<Self>()` bytes out.
pub trait Block: Pod + Send + Sync {
    /// The ggml type this block encodes.
    const TYPE: GgmlType;
    /// Elements per block.
    const N: usize;
    /// Quantizes exactly `N` values (the scalar reference).
    fn quantize(x: &[f32]) -> Self;
    /// Dequantizes into exactly `N` values.
    fn dequantize(&self, y: &mut [f32]);
}

/// Blocks per parallel task: about 16k elements, so tasks are large enough
/// to amortise scheduling and small enough to balance across cores.
const fn blocks_per_task(n: usize) -> usize {
    let b = 16384 / n;
    if b == 0 { 1 } else { b }
}

fn quantize_slice<B: Block>(src: &[f32], dst: &mut [u8]) {
    let size = size_of::<B>();
    for (x, out) in src.chunks_exact(B::N).zip(dst.chunks_exact_mut(size)) {
        out.copy_from_slice(bytemuck::bytes_of(&B::quantize(x)));
    }
}

fn quantize_par<B: Block>(src: &[f32], dst: &mut [u8]) {
    let bpt = blocks_per_task(B::N);
    src.par_chunks(B::N * bpt)
        .zip(dst.par_chunks_mut(size_of::<B>() * bpt))
        .for_each(|(s, d)| quantize_slice::<B>(s, d));
}

fn dequantize_slice<B: Block>(src: &[u8], dst: &mut [f32]) {
    let size = size_of::<B>();
    for (b, y) in src.chunks_exact(size).zip(dst.chunks_exact_mut(B::N)) {
        // Unaligned read: tensor data may sit at any address in a buffer.
        let block: B = bytemuck::pod_read_unaligned(b);
        block.dequantize(y);
    }
}

fn dequantize_par<B: Block>(src: &[u8], dst: &mut [f32]) {
    let bpt = blocks_per_task(B::N);
    src.par_chunks(size_of::<B>() * bpt)
        .zip(dst.par_chunks_mut(B::N * bpt))
        .for_each(|(s, d)| dequantize_slice::<B>(s, d));
}

/// Quantizes whole blocks of f32 into their bytes.
type QuantizeFn = fn(&[f32], &mut [u8]);
/// Dequantizes whole blocks back to f32.
type DequantizeFn = fn(&[u8], &mut [f32]);

/// The functions for one type.
#[derive(Clone, Copy)]
pub(crate) struct Kernels {
    /// Scalar quantizer over whole blocks, if the type can be quantized.
    pub quantize: Option<QuantizeFn>,
    /// Parallel quantizer.
    pub quantize_par: Option<QuantizeFn>,
    /// Scalar dequantizer.
    pub dequantize: DequantizeFn,
    /// Parallel dequantizer.
    pub dequantize_par: DequantizeFn,
}

const fn kernels_of<B: Block>() -> Kernels {
    Kernels {
        quantize: Some(quantize_slice::<B>),
        quantize_par: Some(quantize_par::<B>),
        dequantize: dequantize_slice::<B>,
        dequantize_par: dequantize_par::<B>,
    }
}

/// The kernels for `ty`, or `None` if this crate does not handle it.
pub(crate) fn kernels(ty: GgmlType) -> Option<Kernels> {
    Some(match ty {
        GgmlType::F32 => kernels_of::<f32>(),
        GgmlType::F16 => kernels_of::<half::f16>(),
        GgmlType::BF16 => kernels_of::<half::bf16>(),
        GgmlType::Q8_0 => kernels_of::<BlockQ8_0>(),
        GgmlType::Q4_0 => kernels_of::<BlockQ4_0>(),
        GgmlType::Q4_1 => kernels_of::<BlockQ4_1>(),
        GgmlType::Q5_0 => kernels_of::<BlockQ5_0>(),
        GgmlType::Q5_1 => kernels_of::<BlockQ5_1>(),
        GgmlType::Q4_K => kernels_of::<BlockQ4K>(),
        GgmlType::Q5_K => kernels_of::<BlockQ5K>(),
        GgmlType::Q6_K => kernels_of::<BlockQ6K>(),
        _ => return None,
    })
}

fn out_len(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    if !n.is_multiple_of(ty.block_size()) {
        return Err(QuantError::PartialBlock {
            ty,
            block: ty.block_size(),
            len: n,
        });
    }
    Ok(n / ty.block_size() * ty.type_size())
}

fn run_quantize(ty: GgmlType, src: &[f32], parallel: bool) -> Result<Vec<u8>, QuantError> {
    let k = kernels(ty).ok_or(QuantError::Unsupported { op: "quantize", ty })?;
    let f = if parallel { k.quantize_par } else { k.quantize };
    let f = f.ok_or(QuantError::Unsupported { op: "quantize", ty })?;
    let mut out = vec![0u8; out_len(ty, src.len())?];
    f(src, &mut out);
    Ok(out)
}

/// Quantizes `src` (a whole number of blocks) to `ty`, in parallel.
pub fn quantize(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    run_quantize(ty, src, true)
}

/// Single-threaded scalar reference of [`quantize`]; byte-identical.
pub fn quantize_ref(ty: GgmlType, src: &[f32]) -> Result<Vec<u8>, QuantError> {
    run_quantize(ty, src, false)
}

/// Quantizes a row-major matrix with rows of `row_len` elements, checking
/// that rows are whole blocks (as ggml requires of `ne[0]`).
pub fn quantize_rows(ty: GgmlType, src: &[f32], row_len: usize) -> Result<Vec<u8>, QuantError> {
    if row_len == 0
        || !row_len.is_multiple_of(ty.block_size())
        || !src.len().is_multiple_of(row_len)
    {
        return Err(QuantError::BadRows {
            ty,
            block: ty.block_size(),
            row_len,
            len: src.len(),
        });
    }
    quantize(ty, src)
}

/// Quantizes into a caller-provided buffer of exactly the right size (for
/// streaming rows into a reused buffer), in parallel.
pub fn quantize_into(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let k = kernels(ty)
        .and_then(|k| k.quantize_par)
        .ok_or(QuantError::Unsupported { op: "quantize", ty })?;
    let need = out_len(ty, src.len())?;
    if dst.len() != need {
        return Err(QuantError::PartialBytes {
            ty,
            type_size: ty.type_size(),
            len: dst.len(),
        });
    }
    k(src, dst);
    Ok(())
}

fn run_dequantize(ty: GgmlType, src: &[u8], parallel: bool) -> Result<Vec<f32>, QuantError> {
    let k = kernels(ty).ok_or(QuantError::Unsupported {
        op: "dequantize",
        ty,
    })?;
    if !src.len().is_multiple_of(ty.type_size()) {
        return Err(QuantError::PartialBytes {
            ty,
            type_size: ty.type_size(),
            len: src.len(),
        });
    }
    let mut out = vec![0f32; src.len() / ty.type_size() * ty.block_size()];
    if parallel {
        (k.dequantize_par)(src, &mut out);
    } else {
        (k.dequantize)(src, &mut out);
    }
    Ok(out)
}

/// Dequantizes whole blocks of `ty` to f32, in parallel.
pub fn dequantize(ty: GgmlType, src: &[u8]) -> Result<Vec<f32>, QuantError> {
    run_dequantize(ty, src, true)
}

/// Single-threaded scalar reference of [`dequantize`].
pub fn dequantize_ref(ty: GgmlType, src: &[u8]) -> Result<Vec<f32>, QuantError> {
    run_dequantize(ty, src, false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values (xorshift), some large, some zero.
    pub(crate) fn sample(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                if i % 97 == 0 {
                    0.0
                } else if i % 89 == 0 {
                    u * 50.0
                } else {
                    u
                }
            })
            .collect()
    }

    const SUPPORTED: [GgmlType; 11] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    #[test]
    fn parallel_is_byte_identical_to_scalar() {
        // Large enough to span many rayon tasks, with a ragged last task.
        let x = sample(256 * 300 + 256 * 7, 1);
        for ty in SUPPORTED {
            let par = quantize(ty, &x).unwrap();
            let re = quantize_ref(ty, &x).unwrap();
            assert_eq!(par, re, "{ty}");
            let dp = dequantize(ty, &par).unwrap();
            let dr = dequantize_ref(ty, &par).unwrap();
            assert_eq!(
                dp.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                dr.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{ty}"
            );
        }
    }

    #[test]
    fn round_trip_error_is_bounded() {
        // Max error relative to the block's absolute max, generous per type;
        // catches layout mistakes (wrong nibble order gives errors of ~1.0).
        // No outliers here: a K-quant super-block with an outlier has coarse
        // 6-bit sub-block scales by design.
        let x: Vec<f32> = sample(256 * 16, 2)
            .into_iter()
            .map(|v| v.clamp(-0.5, 0.5))
            .collect();
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (ty, tol) in [
            (GgmlType::F32, 0.0),
            (GgmlType::F16, 1e-3),
            (GgmlType::BF16, 1e-2),
            (GgmlType::Q8_0, 0.01),
            (GgmlType::Q4_0, 0.15),
            (GgmlType::Q4_1, 0.1),
            (GgmlType::Q5_0, 0.08),
            (GgmlType::Q5_1, 0.05),
            (GgmlType::Q4_K, 0.1),
            (GgmlType::Q5_K, 0.05),
            (GgmlType::Q6_K, 0.03),
        ] {
            let y = dequantize(ty, &quantize(ty, &x).unwrap()).unwrap();
            // Compare within 32-blocks so one outlier does not hide errors elsewhere.
            for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
                let bmax = xb.iter().fold(0f32, |a, v| a.max(v.abs())).max(amax / 64.0);
                for (a, b) in xb.iter().zip(yb) {
                    assert!(
                        (a - b).abs() <= tol * bmax,
                        "{ty}: {a} vs {b} (block max {bmax})"
                    );
                }
            }
        }
    }

    #[test]
    fn rejects_partial_blocks_and_unsupported_types() {
        assert_eq!(
            quantize(GgmlType::Q8_0, &[0.0; 33]),
            Err(QuantError::PartialBlock {
                ty: GgmlType::Q8_0,
                block: 32,
                len: 33
            })
        );
        assert!(matches!(
            dequantize(GgmlType::Q4_K, &[0u8; 145]),
            Err(QuantError::PartialBytes { .. })
        ));
        assert!(matches!(
            quantize(GgmlType::IQ2_XXS, &[0.0; 256]),
            Err(QuantError::Unsupported { .. })
        ));
        assert!(matches!(
            quantize_rows(GgmlType::Q4_0, &[0.0; 96], 48),
            Err(QuantError::BadRows { .. })
        ));
        assert_eq!(
            quantize_rows(GgmlType::Q4_0, &[0.0; 96], 32).unwrap().len(),
            54
        );
        let mut buf = vec![0u8; 34];
        quantize_into(GgmlType::Q8_0, &[1.0; 32], &mut buf).unwrap();
        assert_eq!(buf, quantize_ref(GgmlType::Q8_0, &[1.0; 32]).unwrap());
        assert!(GgmlType::Q6_K.can_quantize() && GgmlType::Q6_K.can_dequantize());
        assert!(!GgmlType::Q2_K.can_dequantize());
    }
}
