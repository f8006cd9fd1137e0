//! Q5_K: super-blocks of 256 weights, as Q4_K with a fifth bit per weight.
//!
//! `x ≈ d·sc·q − dmin·m` with `q` in 0..=31. The low nibbles are packed as in
//! Q4_K; in `qh[l]`, bit `2c` is the fifth bit of element `64c + l` and bit
//! `2c + 1` that of element `64c + 32 + l`.
//! Reference: ggml `quantize_row_q5_K_ref` / `dequantize_row_q5_K`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::Block;
use super::k_common::{get_scale_min_k4, nearest_int, quantize_scales_mins_k};
use crate::types::{GgmlType, QK_K};

/// One Q5_K block (`block_q5_K`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5K {
    /// Super-block scale for the sub-block scales.
    pub d: f16,
    /// Super-block scale for the sub-block mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed.
    pub scales: [u8; 12],
    /// Fifth bits.
    pub qh: [u8; QK_K / 8],
    /// Low nibbles.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(size_of::<BlockQ5K>() == 176);

impl Block for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const N: usize = QK_K;

    fn quantize(x: &[f32]) -> Self {
        let mut l = [0u8; QK_K];
        let (d, dmin, scales) = quantize_scales_mins_k(x, 31, -0.5, 15, &mut l);
        for j in 0..8 {
            let (sc, m) = get_scale_min_k4(j, &scales);
            let dj = d.to_f32() * f32::from(sc);
            if dj == 0.0 {
                continue;
            }
            let dm = dmin.to_f32() * f32::from(m);
            for ii in 0..32 {
                l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, 31) as u8;
            }
        }
        let mut qh = [0u8; QK_K / 8];
        let mut qs = [0u8; QK_K / 2];
        let (mut m1, mut m2) = (1u8, 2u8);
        for (c, chunk) in l.chunks_exact(64).enumerate() {
            for j in 0..32 {
                let mut l1 = chunk[j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = chunk[j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                qs[32 * c + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
        Self {
            d,
            dmin,
            scales,
            qh,
            qs,
        }
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        let (mut u1, mut u2) = (1u8, 2u8);
        for c in 0..4 {
            let (sc1, m1) = get_scale_min_k4(2 * c, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
            let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
            let ql = &self.qs[32 * c..32 * c + 32];
            let out = &mut y[64 * c..64 * c + 64];
            for l in 0..32 {
                let h1 = if self.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if self.qh[l] & u2 != 0 { 16 } else { 0 };
                out[l] = d1 * f32::from((ql[l] & 0xF) + h1) - m1;
                out[l + 32] = d2 * f32::from((ql[l] >> 4) + h2) - m2;
            }
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}
