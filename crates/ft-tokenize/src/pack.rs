//! Rows of `sequence_len` tokens: packed (several samples per row,
//! block-diagonal attention) or one padded sample per row.

use serde::{Deserialize, Serialize};

use crate::mask::Tokenized;

/// One training row: concatenated samples and their boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PackedRow {
    /// Token ids, unpadded.
    pub ids: Vec<u32>,
    /// `true` where the token carries loss.
    pub mask: Vec<bool>,
    /// Length of each sample in the row, in order; they sum to `ids.len()`.
    pub seq_lens: Vec<u32>,
}

/// A row padded to `sequence_len`, in the shapes a trainer consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedRow {
    /// `[sequence_len]` ids, padded with `pad_id`.
    pub input_ids: Vec<u32>,
    /// `[sequence_len]` labels: the id where trained, -100 elsewhere
    /// (padding included). Shift by one inside each sample for next-token
    /// loss; never across a boundary.
    pub labels: Vec<i64>,
    /// `[sequence_len]` positions, restarting at 0 for every sample
    /// (padding continues the last sample's count).
    pub position_ids: Vec<u32>,
    /// Cumulative sample boundaries `[0, l0, l0+l1, …, n]` (FlashAttention's
    /// `cu_seqlens`); attention is block-diagonal over them. Padding is
    /// outside the last boundary.
    pub cu_seqlens: Vec<u32>,
    /// `[sequence_len]` 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<u8>,
}

/// The ignore index of HF-style labels.
pub const IGNORE_INDEX: i64 = -100;

impl PackedRow {
    /// A row holding one sample.
    pub fn single(t: Tokenized) -> Self {
        let n = t.ids.len() as u32;
        Self {
            ids: t.ids,
            mask: t.mask,
            seq_lens: vec![n],
        }
    }

    /// Number of trained tokens.
    pub fn trainable(&self) -> usize {
        self.mask.iter().filter(|m| **m).count()
    }

    /// The samples of the row, as `(ids, mask)` slices.
    pub fn samples(&self) -> Vec<(&[u32], &[bool])> {
        let mut out = Vec::with_capacity(self.seq_lens.len());
        let mut at = 0usize;
        for &l in &self.seq_lens {
            let l = l as usize;
            out.push((&self.ids[at..at + l], &self.mask[at..at + l]));
            at += l;
        }
        out
    }

    /// Pads to `len` (≥ the row length) with `pad_id`.
    pub fn padded(&self, len: usize, pad_id: u32) -> PaddedRow {
        let n = self.ids.len();
        let mut input_ids = self.ids.clone();
        input_ids.resize(len.max(n), pad_id);
        let mut labels: Vec<i64> = self
            .ids
            .iter()
            .zip(&self.mask)
            .map(|(&id, &m)| if m { i64::from(id) } else { IGNORE_INDEX })
            .collect();
        labels.resize(len.max(n), IGNORE_INDEX);
        let mut position_ids = Vec::with_capacity(len.max(n));
        let mut cu = vec![0u32];
        for &l in &self.seq_lens {
            position_ids.extend(0..l);
            cu.push(cu.last().copied().unwrap_or(0) + l);
        }
        let mut p = self.seq_lens.last().copied().unwrap_or(0);
        while position_ids.len() < len.max(n) {
            position_ids.push(p);
            p += 1;
        }
        let mut attention_mask = vec![1u8; n];
        attention_mask.resize(len.max(n), 0);
        PaddedRow {
            input_ids,
            labels,
            position_ids,
            cu_seqlens: cu,
            attention_mask,
        }
    }
}

/// Packs samples into rows of at most `capacity` tokens by best-fit
/// decreasing (deterministic: ties keep input order). Every sample must be
/// ≤ `capacity`. Rows come out in the order they were opened.
pub fn pack(samples: Vec<Tokenized>, capacity: usize) -> Vec<PackedRow> {
    use std::collections::BTreeSet;
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(samples[i].ids.len()));
    // (remaining capacity, row index), searched for the tightest fit.
    let mut free: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut fill: Vec<usize> = Vec::new();
    for i in order {
        let len = samples[i].ids.len();
        let fit = free.range((len, 0)..).next().copied();
        let r = match fit {
            Some(key) => {
                free.remove(&key);
                key.1
            }
            None => {
                rows.push(Vec::new());
                fill.push(0);
                rows.len() - 1
            }
        };
        rows[r].push(i);
        fill[r] += len;
        if fill[r] < capacity {
            free.insert((capacity - fill[r], r));
        }
    }
    let mut slots: Vec<Option<Tokenized>> = samples.into_iter().map(Some).collect();
    rows.into_iter()
        .map(|members| {
            let mut row = PackedRow::default();
            for i in members {
                if let Some(t) = slots[i].take() {
                    row.seq_lens.push(t.ids.len() as u32);
                    row.ids.extend(t.ids);
                    row.mask.extend(t.mask);
                }
            }
            row
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(n: usize, seed: u32) -> Tokenized {
        Tokenized {
            ids: (0..n as u32).map(|i| i * 7 + seed).collect(),
            mask: (0..n)
                .map(|i| !(i + seed as usize).is_multiple_of(3))
                .collect(),
        }
    }

    #[test]
    fn packed_masks_equal_unpacked_sample_by_sample() {
        let lens = [5, 9, 3, 16, 1, 7, 7, 12, 2, 4];
        let samples: Vec<Tokenized> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| sample(n, i as u32))
            .collect();
        let rows = pack(samples.clone(), 16);
        // Every row fits, and the packing is tight enough to matter.
        assert!(rows.iter().all(|r| r.ids.len() <= 16));
        assert!(rows.len() < samples.len());
        let mut seen: Vec<(Vec<u32>, Vec<bool>)> = rows
            .iter()
            .flat_map(|r| r.samples())
            .map(|(i, m)| (i.to_vec(), m.to_vec()))
            .collect();
        let mut want: Vec<(Vec<u32>, Vec<bool>)> =
            samples.into_iter().map(|t| (t.ids, t.mask)).collect();
        seen.sort();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn padded_row_positions_restart_and_labels_ignore_padding() {
        let row = PackedRow {
            ids: vec![10, 11, 12, 20, 21],
            mask: vec![false, true, true, false, true],
            seq_lens: vec![3, 2],
        };
        let p = row.padded(8, 0);
        assert_eq!(p.input_ids, [10, 11, 12, 20, 21, 0, 0, 0]);
        assert_eq!(p.labels, [-100, 11, 12, -100, 21, -100, -100, -100]);
        assert_eq!(p.position_ids, [0, 1, 2, 0, 1, 2, 3, 4]);
        assert_eq!(p.cu_seqlens, [0, 3, 5]);
        assert_eq!(p.attention_mask, [1, 1, 1, 1, 1, 0, 0, 0]);
    }
}
