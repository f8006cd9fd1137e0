//! Q6_K: super-blocks of 256 weights in 16 sub-blocks of 16, symmetric.
//!
//! `x ≈ d·sc·(q − 32)` with an int8 scale `sc` per sub-block and `q` in
//! 0..=63. Per 128-element half: `ql[l]` holds elements `l` (low nibble) and
//! `l + 64` (high), `ql[l + 32]` elements `l + 32` and `l + 96`; `qh[l]` holds
//! the two high bits of elements `l`, `l + 32`, `l + 64`, `l + 96` at bit
//! offsets 0, 2, 4, 6.
//! Reference: ggml `quantize_row_q6_K_ref` / `dequantize_row_q6_K`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::k_common::{GROUP_MAX_EPS, make_qx_quants_rmse1, nearest_int};
use super::{Block, f16_from_f32};
use crate::types::{GgmlType, QK_K};

/// One Q6_K block (`block_q6_K`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low 4 bits.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}

const _: () = assert!(size_of::<BlockQ6K>() == 210);

impl Block for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const N: usize = QK_K;

    fn quantize(x: &[f32]) -> Self {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let mut max_scale = 0f32;
        let mut max_abs_scale = 0f32;
        for ib in 0..QK_K / 16 {
            let scale =
                make_qx_quants_rmse1(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = scale;
            let abs_scale = scale.abs();
            if abs_scale > max_abs_scale {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            return Self::zeroed();
        }

        let iscale = -128.0 / max_scale;
        let d = f16_from_f32(1.0 / iscale);
        let mut sc = [0i8; QK_K / 16];
        for (s, &scale) in sc.iter_mut().zip(&scales) {
            // C: int8_t = MIN(127, nearest_int(...)); the value is ≥ -128.
            *s = nearest_int(iscale * scale).min(127) as i8;
        }
        for j in 0..QK_K / 16 {
            let dj = d.to_f32() * f32::from(sc[j]);
            if dj == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / dj).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }

        let mut ql = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 4];
        for h in 0..2 {
            let lh = &l[128 * h..128 * h + 128];
            for i in 0..32 {
                let b = |k: usize| lh[i + 32 * k] as u8;
                ql[64 * h + i] = (b(0) & 0xF) | ((b(2) & 0xF) << 4);
                ql[64 * h + i + 32] = (b(1) & 0xF) | ((b(3) & 0xF) << 4);
                qh[32 * h + i] =
                    (b(0) >> 4) | ((b(1) >> 4) << 2) | ((b(2) >> 4) << 4) | ((b(3) >> 4) << 6);
            }
        }
        Self {
            ql,
            qh,
            scales: sc,
            d,
        }
    }

    fn dequantize(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for h in 0..2 {
            let ql = &self.ql[64 * h..64 * h + 64];
            let qh = &self.qh[32 * h..32 * h + 32];
            let sc = &self.scales[8 * h..8 * h + 8];
            let out = &mut y[128 * h..128 * h + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = i16::from((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                let q2 = i16::from((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                let q3 = i16::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                let q4 = i16::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                out[l] = d * f32::from(sc[is]) * f32::from(q1);
                out[l + 32] = d * f32::from(sc[is + 2]) * f32::from(q2);
                out[l + 64] = d * f32::from(sc[is + 4]) * f32::from(q3);
                out[l + 96] = d * f32::from(sc[is + 6]) * f32::from(q4);
            }
        }
    }
}
