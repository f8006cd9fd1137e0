//! Plain element types: F32, F16, BF16 (a "block" of one element).
//!
//! The conversions are ggml's own (`ggml_compute_fp32_to_fp16`, from the
//! FP16 library, and `ggml_compute_fp32_to_bf16`), written out so that NaN
//! handling matches too: f16 NaN becomes the canonical quiet `0x7E00` with the
//! sign kept, bf16 NaN keeps its top mantissa bits and is forced quiet. Finite
//! values round to nearest, ties to even, in both.

use half::{bf16, f16};

use super::Block;
use crate::types::GgmlType;

/// f32 → f16 exactly as ggml's `GGML_FP32_TO_FP16` (round to nearest even;
/// overflow to ±inf; NaN to a quiet NaN).
pub fn f16_from_f32(f: f32) -> f16 {
    // 2^112 and 2^-110: the product rounds the mantissa to f16 precision.
    let scale_to_inf = f32::from_bits(0x7780_0000);
    let scale_to_zero = f32::from_bits(0x0880_0000);
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);

    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    let h = (sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        };
    f16::from_bits(h as u16)
}

/// f32 → bf16 exactly as ggml's `ggml_compute_fp32_to_bf16` (and gguf-py's
/// `BF16.quantize_blocks`): NaN forced quiet, otherwise round to nearest even.
pub fn bf16_from_f32(f: f32) -> bf16 {
    let u = f.to_bits();
    let bits = if (u & 0x7fff_ffff) > 0x7f80_0000 {
        (u >> 16) | 64
    } else {
        u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16
    };
    bf16::from_bits(bits as u16)
}

impl Block for f32 {
    const TYPE: GgmlType = GgmlType::F32;
    const N: usize = 1;
    fn quantize(x: &[f32]) -> Self {
        x[0]
    }
    fn dequantize(&self, y: &mut [f32]) {
        y[0] = *self;
    }
}

impl Block for f16 {
    const TYPE: GgmlType = GgmlType::F16;
    const N: usize = 1;
    fn quantize(x: &[f32]) -> Self {
        f16_from_f32(x[0])
    }
    fn dequantize(&self, y: &mut [f32]) {
        y[0] = self.to_f32();
    }
}

impl Block for bf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const N: usize = 1;
    fn quantize(x: &[f32]) -> Self {
        bf16_from_f32(x[0])
    }
    fn dequantize(&self, y: &mut [f32]) {
        y[0] = self.to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 2^k-th f32 bit pattern plus the edges: ggml's branch-free f16
    /// conversion agrees with `half`'s for all non-NaN values.
    #[test]
    fn f16_matches_round_to_nearest_even() {
        let edges = [
            0.0f32,
            -0.0,
            65504.0,
            65520.0, // rounds to inf
            65519.996,
            6.1035156e-5, // smallest normal f16
            5.9604645e-8, // smallest subnormal f16
            2.9802322e-8, // half of it: ties to even -> 0
            2.9802326e-8, // just above: rounds up
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.0 + 1.0 / 2048.0, // tie between 1 and 1+2^-10 -> 1
        ];
        let strided = (0..=u32::MAX).step_by(4099).map(f32::from_bits);
        for f in edges.into_iter().chain(strided).filter(|f| !f.is_nan()) {
            assert_eq!(
                f16_from_f32(f).to_bits(),
                f16::from_f32(f).to_bits(),
                "{f:e} ({:#x})",
                f.to_bits()
            );
        }
        assert_eq!(f16_from_f32(f32::NAN).to_bits() & 0x7fff, 0x7E00);
    }

    #[test]
    fn bf16_rounding_and_nan() {
        let strided = (0..=u32::MAX).step_by(4099).map(f32::from_bits);
        for f in strided.filter(|f| !f.is_nan()) {
            assert_eq!(
                bf16_from_f32(f).to_bits(),
                bf16::from_f32(f).to_bits(),
                "{f:e}"
            );
        }
        // Signalling NaN with payload only in the low half: forced quiet.
        let snan = f32::from_bits(0x7f80_0001);
        assert_eq!(bf16_from_f32(snan).to_bits(), 0x7fc0);
        // Ties to even: 1 + 2^-8 sits halfway between 1 and 1 + 2^-7.
        assert_eq!(
            bf16_from_f32(1.0 + 1.0 / 256.0).to_bits(),
            bf16::from_f32(1.0).to_bits()
        );
    }
}
