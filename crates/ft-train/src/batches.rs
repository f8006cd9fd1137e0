//! Which rows go into which micro-batch and optimizer step, and the
//! next-token targets of a micro-batch.
//!
//! Every epoch visits the training rows in a fresh order drawn from `seed`
//! and the epoch number (Fisher–Yates over a SplitMix64 stream), cut into
//! micro-batches of `micro_batch_size` rows; an optimizer step takes
//! `gradient_accumulation_steps` consecutive micro-batches (the last step of
//! an epoch may take fewer). A step's rows are therefore a pure function of
//! `(seed, step)`, which is what makes resuming exact: the data-loader
//! cursor is the step number.

use ft_model::arch::layers::splitmix64;
use ft_tokenize::PackedRow;

/// The plan of one run over `rows` training rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Training rows.
    pub rows: usize,
    /// Rows per micro-batch.
    pub micro_batch_size: usize,
    /// Micro-batches per optimizer step.
    pub accumulation: usize,
    /// Shuffle seed.
    pub seed: u64,
}

impl Plan {
    /// Micro-batches per epoch.
    pub fn micro_batches_per_epoch(&self) -> usize {
        self.rows.div_ceil(self.micro_batch_size.max(1))
    }

    /// Optimizer steps per epoch (at least 1).
    pub fn steps_per_epoch(&self) -> u64 {
        (self
            .micro_batches_per_epoch()
            .div_ceil(self.accumulation.max(1)) as u64)
            .max(1)
    }

    /// The row order of `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.rows).collect();
        let mut state = splitmix64(self.seed ^ splitmix64(epoch.wrapping_add(0x5eed)));
        for i in (1..idx.len()).rev() {
            state = splitmix64(state);
            let j = (state % (i as u64 + 1)) as usize;
            idx.swap(i, j);
        }
        idx
    }

    /// The micro-batches (row indices) of optimizer step `step` (0-based),
    /// and its epoch.
    pub fn step_batches(&self, step: u64) -> (u64, Vec<Vec<usize>>) {
        let spe = self.steps_per_epoch();
        let epoch = step / spe;
        let j = (step % spe) as usize;
        let order = self.order(epoch);
        let mbs = self.micro_batch_size.max(1);
        let nmb = self.micro_batches_per_epoch();
        let first = j * self.accumulation;
        let last = ((j + 1) * self.accumulation).min(nmb);
        let batches = (first..last)
            .map(|m| order[m * mbs..((m + 1) * mbs).min(self.rows)].to_vec())
            .collect();
        (epoch, batches)
    }
}

/// Next-token targets of a micro-batch laid out `[rows, width]` row-major:
/// the flat positions whose next token is trained, and those tokens.
/// Targets never cross a sample boundary; a row's padding has none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Targets {
    /// Flat indices `row * width + position` of the predicting positions.
    pub positions: Vec<i64>,
    /// The token each of them must predict.
    pub tokens: Vec<i64>,
}

/// The targets of `rows` padded to `width`.
pub fn targets(rows: &[&PackedRow], width: usize) -> Targets {
    let mut t = Targets::default();
    for (r, row) in rows.iter().enumerate() {
        let mut start = 0usize;
        for &len in &row.seq_lens {
            let len = len as usize;
            for p in start..start + len.saturating_sub(1) {
                if row.mask[p + 1] {
                    t.positions.push((r * width + p) as i64);
                    t.tokens.push(i64::from(row.ids[p + 1]));
                }
            }
            start += len;
        }
    }
    t
}

/// Trained-token count of a set of rows (what the loss is divided by).
pub fn trained_tokens(rows: &[&PackedRow]) -> usize {
    targets(rows, rows.iter().map(|r| r.ids.len()).max().unwrap_or(0))
        .tokens
        .len()
}

/// The rows as sequences, as `ft_model::PackedBatch::from_rows` takes them.
pub fn as_sequences(rows: &[&PackedRow]) -> Vec<Vec<Vec<u32>>> {
    rows.iter()
        .map(|row| {
            let mut out = Vec::with_capacity(row.seq_lens.len());
            let mut start = 0usize;
            for &len in &row.seq_lens {
                out.push(row.ids[start..start + len as usize].to_vec());
                start += len as usize;
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_once_per_epoch_and_deterministic() {
        let plan = Plan {
            rows: 23,
            micro_batch_size: 2,
            accumulation: 3,
            seed: 7,
        };
        // 12 micro-batches (the last holds one row), 3 per step.
        assert_eq!(plan.steps_per_epoch(), 4);
        let mut seen = Vec::new();
        for step in 0..4 {
            let (epoch, batches) = plan.step_batches(step);
            assert_eq!(epoch, 0);
            seen.extend(batches.into_iter().flatten());
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..23).collect::<Vec<_>>());
        assert_eq!(plan.step_batches(3), plan.step_batches(3));
        assert_eq!(plan.step_batches(4).0, 1);
        assert_ne!(plan.order(0), plan.order(1));
    }

    #[test]
    fn targets_stay_inside_samples() {
        let row = PackedRow {
            ids: vec![10, 11, 12, 20, 21],
            mask: vec![false, true, true, true, true],
            seq_lens: vec![3, 2],
        };
        let t = targets(&[&row], 6);
        // 0→11, 1→12; position 2 would predict 20 across the boundary: no;
        // 3→21.
        assert_eq!(t.positions, vec![0, 1, 3]);
        assert_eq!(t.tokens, vec![11, 12, 21]);
    }
}
