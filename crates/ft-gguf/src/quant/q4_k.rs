//! Q4_K: super-blocks of 256 weights in 8 sub-blocks of 32.
//!
//! Each sub-block has a 6-bit scale and a 6-bit min, themselves scaled by the
//! super-block's f16 `d` and `dmin`: `x ≈ d·sc·q − dmin·m` with `q` in 0..=15.
//! The 12 scale bytes pack the pairs as [`get_scale_min_k4`] reads them; the
//! 128 `qs` bytes hold, per 64-element chunk, element `l` in the low nibble
//! and element `l + 32` in the high nibble of byte `l`.
//! Reference: ggml `quantize_row_q4_K_ref` / `dequantize_row_q4_K`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::Block;
use super::k_common::{get_scale_min_k4, nearest_int, quantize_scales_mins_k};
use crate::types::{GgmlType, QK_K};

/// One Q4_K block (`block_q4_K`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4K {
    /// Super-block scale for the sub-block scales.
    pub d: f16,
    /// Super-block scale for the sub-block mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed.
    pub scales: [u8; 12],
    /// 4-bit codes.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(size_of::<BlockQ4K>() == 144);

impl Block for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const N: usize = QK_K;

    fn quantize(x: &[f32]) -> Self {
        let mut l = [0u8; QK_K];
        let (d, dmin, scales) = quantize_scales_mins_k(x, 15, -1.0, 20, &mut l);
        // Re-quantize every sub-block against its 6-bit scale and min.
        for j in 0..8 {
            let (sc, m) = get_scale_min_k4(j, &scales);
            let dj = d.to_f32() * f32::from(sc);
            if dj == 0.0 {
                continue;
            }
            let dm = dmin.to_f32() * f32::from(m);
            for ii in 0..32 {
                l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, 15) as u8;
            }
        }
        let mut qs = [0u8; QK_K / 2];
        for (c, chunk) in l.chunks_exact(64).enumerate() {
            for i in 0..32 {
                qs[32 * c + i] = chunk[i] | (chunk[i + 32] << 4);
            }
        }
        Self {
            d,
            dmin,
            scales,
            qs,
        }
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for c in 0..4 {
            let (sc1, m1) = get_scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
            let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
            let q = &self.qs[32 * c..32 * c + 32];
            let out = &mut y[64 * c..64 * c + 64];
            for i in 0..32 {
                out[i] = d1 * f32::from(q[i] & 0xF) - m1;
                out[i + 32] = d2 * f32::from(q[i] >> 4) - m2;
            }
        }
    }
}
