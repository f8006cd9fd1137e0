//! Q5_1: blocks of 32 weights, f16 scale and minimum, 5-bit codes.
//!
//! `d = (max − min) / 31`, `q = trunc((x − min)/d + 0.5)`, `x ≈ d·q + min`;
//! bit packing as Q5_0.
//! Reference: ggml `quantize_row_q5_1_ref`, gguf-py `Q5_1.quantize_blocks`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q4_1::min_max;
use super::q5_0::{pack5, unpack5};
use super::{Block, f16_from_f32};
use crate::types::GgmlType;

/// Elements per Q5_1 block (`QK5_1`).
pub const QK5_1: usize = 32;

/// One Q5_1 block (`block_q5_1`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Fifth bits, a little-endian u32 (bit j: element j).
    pub qh: [u8; 4],
    /// Low nibbles: element j low, element j+16 high.
    pub qs: [u8; QK5_1 / 2],
}

const _: () = assert!(size_of::<BlockQ5_1>() == 24);

impl Block for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const N: usize = QK5_1;

    fn quantize(x: &[f32]) -> Self {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut codes = [0u8; 32];
        for (c, &v) in codes.iter_mut().zip(x) {
            // ggml casts without a clamp; the value never exceeds 31.5, and
            // gguf-py clips to 31, so `min(31)` agrees with both.
            *c = (((v - min) * id + 0.5) as u8).min(31);
        }
        let (qh, qs) = pack5(&codes);
        Self {
            d: f16_from_f32(d),
            m: f16_from_f32(min),
            qh,
            qs,
        }
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (o, c) in y.iter_mut().zip(unpack5(self.qh, &self.qs)) {
            *o = f32::from(c) * d + m;
        }
    }
}
