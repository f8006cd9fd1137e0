//! Q4_1: blocks of 32 weights, f16 scale and minimum, 4-bit codes.
//!
//! `d = (max − min) / 15`, `q = min(15, trunc((x − min)/d + 0.5))`,
//! `x ≈ d·q + min`. Nibble order as Q4_0.
//! Reference: ggml `quantize_row_q4_1_ref`, gguf-py `Q4_1.quantize_blocks`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{Block, f16_from_f32};
use crate::types::GgmlType;

/// Elements per Q4_1 block (`QK4_1`).
pub const QK4_1: usize = 32;

/// One Q4_1 block (`block_q4_1`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Nibbles: element j low, element j+16 high.
    pub qs: [u8; QK4_1 / 2],
}

const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// Minimum and maximum as ggml's loop computes them.
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

impl Block for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const N: usize = QK4_1;

    fn quantize(x: &[f32]) -> Self {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; QK4_1 / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            let lo = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let hi = (((x[j + QK4_1 / 2] - min) * id + 0.5) as i8).min(15) as u8;
            *q = lo | (hi << 4);
        }
        Self {
            d: f16_from_f32(d),
            m: f16_from_f32(min),
            qs,
        }
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = f32::from(q & 0x0F) * d + m;
            y[j + QK4_1 / 2] = f32::from(q >> 4) * d + m;
        }
    }
}
