//! Q8_0: blocks of 32 weights, an f16 scale and 32 signed bytes.
//!
//! `d = max|x| / 127`, `q = round(x / d)` (half away from zero), `x ≈ d·q`.
//! Reference: ggml `quantize_row_q8_0_ref`, gguf-py `Q8_0.quantize_blocks`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{Block, f16_from_f32};
use crate::types::GgmlType;

/// Elements per Q8_0 block (`QK8_0`).
pub const QK8_0: usize = 32;

/// One Q8_0 block (`block_q8_0`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quantized values.
    pub qs: [i8; QK8_0],
}

const _: () = assert!(size_of::<BlockQ8_0>() == 34);

impl Block for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const N: usize = QK8_0;

    fn quantize(x: &[f32]) -> Self {
        let amax = x
            .iter()
            .fold(0f32, |a, v| if a > v.abs() { a } else { v.abs() });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK8_0];
        for (q, &v) in qs.iter_mut().zip(x) {
            // `round` rounds half away from zero, like C `roundf`; |v·id| ≤ 127.
            *q = (v * id).round() as i8;
        }
        Self {
            d: f16_from_f32(d),
            qs,
        }
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in y.iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }
}
