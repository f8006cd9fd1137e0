//! Q4_0: blocks of 32 weights, an f16 scale and 4-bit codes with offset 8.
//!
//! The element of largest magnitude `max` (the first one on ties) sets
//! `d = max / -8`; `q = min(15, trunc(x/d + 8.5))`; `x ≈ d·(q − 8)`. Byte `j`
//! holds element `j` in its low nibble and element `j + 16` in its high one.
//! Reference: ggml `quantize_row_q4_0_ref`, gguf-py `Q4_0.quantize_blocks`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{Block, f16_from_f32};
use crate::types::GgmlType;

/// Elements per Q4_0 block (`QK4_0`).
pub const QK4_0: usize = 32;

/// One Q4_0 block (`block_q4_0`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles: element j low, element j+16 high.
    pub qs: [u8; QK4_0 / 2],
}

const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// The signed value of largest magnitude (first on ties), as ggml picks it.
pub(crate) fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

impl Block for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const N: usize = QK4_0;

    fn quantize(x: &[f32]) -> Self {
        let d = signed_absmax(x) / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; QK4_0 / 2];
        for (j, q) in qs.iter_mut().enumerate() {
            // C: MIN(15, (int8_t)(x*id + 8.5f)); the sum lies in [0.5, 16.5].
            let lo = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let hi = ((x[j + QK4_0 / 2] * id + 8.5) as i8).min(15) as u8;
            *q = lo | (hi << 4);
        }
        Self {
            d: f16_from_f32(d),
            qs,
        }
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = f32::from(i16::from(q & 0x0F) - 8) * d;
            y[j + QK4_0 / 2] = f32::from(i16::from(q >> 4) - 8) * d;
        }
    }
}
