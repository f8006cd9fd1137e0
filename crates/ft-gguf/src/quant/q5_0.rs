//! Q5_0: blocks of 32 weights, f16 scale, 5-bit codes with offset 16.
//!
//! `d = max / -16` (signed value of largest magnitude),
//! `q = min(31, trunc(x/d + 16.5))`, `x ≈ d·(q − 16)`. The low nibbles are
//! packed as Q4_0; bit `j` of the little-endian `qh` word is the fifth bit of
//! element `j`.
//! Reference: ggml `quantize_row_q5_0_ref`, gguf-py `Q5_0.quantize_blocks`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q4_0::signed_absmax;
use super::{Block, f16_from_f32};
use crate::types::GgmlType;

/// Elements per Q5_0 block (`QK5_0`).
pub const QK5_0: usize = 32;

/// One Q5_0 block (`block_q5_0`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits, a little-endian u32 (bit j: element j).
    pub qh: [u8; 4],
    /// Low nibbles: element j low, element j+16 high.
    pub qs: [u8; QK5_0 / 2],
}

const _: () = assert!(size_of::<BlockQ5_0>() == 22);

/// Packs 32 five-bit codes into (`qh`, `qs`).
pub(crate) fn pack5(codes: &[u8; 32]) -> ([u8; 4], [u8; 16]) {
    let mut qh = 0u32;
    let mut qs = [0u8; 16];
    for j in 0..16 {
        let (a, b) = (codes[j], codes[j + 16]);
        qs[j] = (a & 0x0F) | ((b & 0x0F) << 4);
        qh |= u32::from((a & 0x10) >> 4) << j;
        qh |= u32::from((b & 0x10) >> 4) << (j + 16);
    }
    (qh.to_le_bytes(), qs)
}

/// Unpacks the 32 five-bit codes.
pub(crate) fn unpack5(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut out = [0u8; 32];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) as u8 & 0x10;
        let h1 = (qh >> (j + 12)) as u8 & 0x10;
        out[j] = (qs[j] & 0x0F) | h0;
        out[j + 16] = (qs[j] >> 4) | h1;
    }
    out
}

impl Block for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const N: usize = QK5_0;

    fn quantize(x: &[f32]) -> Self {
        let d = signed_absmax(x) / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut codes = [0u8; 32];
        for (c, &v) in codes.iter_mut().zip(x) {
            // C: MIN(31, (int8_t)(x*id + 16.5f)); the sum lies in [0.5, 32.5].
            *c = ((v * id + 16.5) as i8).min(31) as u8;
        }
        let (qh, qs) = pack5(&codes);
        Self {
            d: f16_from_f32(d),
            qh,
            qs,
        }
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, c) in y.iter_mut().zip(unpack5(self.qh, &self.qs)) {
            *o = f32::from(i16::from(c) - 16) * d;
        }
    }
}
