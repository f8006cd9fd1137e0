//! How closely two models agree on held-out data: the merge's fidelity
//! report compares the merged model with base + adapter unmerged.
//!
//! [`trained_log_probs`] runs a model over prepared rows and keeps the
//! log-probabilities of the positions that carry loss (the predictions the
//! adapter was trained to make); [`Agreement::of`] compares two such runs:
//! the KL divergence `KL(p_ref ‖ p_other)` per position and whether the
//! top-1 tokens agree.

use burn::tensor::activation;
use burn::tensor::{Device, Int, Tensor, TensorData};
use ft_model::{CausalLm, PackedBatch, heads};
use ft_tokenize::PackedRow;
use serde::Serialize;

use crate::TrainError;
use crate::batches::{as_sequences, targets};
use crate::trainer::to_host;

/// Log-probabilities at the trained positions of `rows`, at most
/// `max_positions` of them, row-major `[n, vocab]`; returns them with `n`.
pub fn trained_log_probs(
    model: &CausalLm,
    rows: &[PackedRow],
    max_positions: usize,
    pad_id: u32,
    device: &Device,
) -> Result<(Vec<f32>, usize), TrainError> {
    let vocab = model.spec.vocab_size;
    let mut out = Vec::new();
    let mut n = 0usize;
    for row in rows {
        if n >= max_positions {
            break;
        }
        let refs = [row];
        let batch = PackedBatch::from_rows(&as_sequences(&refs), pad_id, device);
        let [b, w] = batch.dims();
        let t = targets(&refs, w);
        let take = t.positions.len().min(max_positions - n);
        if take == 0 {
            continue;
        }
        let h = heads::final_hidden(model, &batch);
        let hidden = h.dims()[2];
        let h = h.reshape([b * w, hidden]);
        let pos = Tensor::<1, Int>::from_data(
            TensorData::new(t.positions[..take].to_vec(), [take]),
            device,
        );
        let lp = activation::log_softmax(heads::lm_logits(model, h.select(0, pos)), 1);
        out.extend(to_host("log-probabilities", lp.reshape([take * vocab]))?);
        n += take;
    }
    Ok((out, n))
}

/// Agreement of two models' predictions over the same positions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    /// Positions compared.
    pub positions: usize,
    /// Mean `KL(p_ref ‖ p_other)` in nats.
    pub mean_kl: f64,
    /// Largest per-position KL.
    pub max_kl: f64,
    /// Fraction of positions whose most likely token is the same.
    pub top1_agreement: f64,
}

impl Agreement {
    /// Compares log-probabilities `[n, vocab]` of a reference and another
    /// model (as [`trained_log_probs`] returns them).
    pub fn of(reference: &[f32], other: &[f32], vocab: usize) -> Self {
        let (mut sum, mut max, mut same, mut n) = (0f64, 0f64, 0usize, 0usize);
        for (p, q) in reference
            .chunks_exact(vocab.max(1))
            .zip(other.chunks_exact(vocab.max(1)))
        {
            let kl: f64 = p
                .iter()
                .zip(q)
                .map(|(&lp, &lq)| f64::from(lp).exp() * (f64::from(lp) - f64::from(lq)))
                .sum();
            sum += kl;
            max = max.max(kl);
            same += usize::from(argmax(p) == argmax(q));
            n += 1;
        }
        Self {
            positions: n,
            mean_kl: if n > 0 { sum / n as f64 } else { 0.0 },
            max_kl: max,
            top1_agreement: if n > 0 { same as f64 / n as f64 } else { 1.0 },
        }
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_softmax(v: &[f32]) -> Vec<f32> {
        let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z: f32 = v.iter().map(|x| (x - m).exp()).sum::<f32>().ln() + m;
        v.iter().map(|x| x - z).collect()
    }

    #[test]
    fn identical_predictions_agree_fully() {
        let p: Vec<f32> = [
            log_softmax(&[1.0, 2.0, 0.5]),
            log_softmax(&[0.0, -1.0, 3.0]),
        ]
        .concat();
        let a = Agreement::of(&p, &p, 3);
        assert_eq!(a.positions, 2);
        assert!(a.mean_kl.abs() < 1e-12 && a.max_kl.abs() < 1e-12);
        assert!((a.top1_agreement - 1.0).abs() < 1e-12);
    }

    #[test]
    fn kl_and_top1_of_a_known_pair() {
        // p = (0.5, 0.5), q = (0.25, 0.75): KL = 0.5 ln 2 + 0.5 ln(2/3).
        let p = [0.5f32.ln(), 0.5f32.ln()];
        let q = [0.25f32.ln(), 0.75f32.ln()];
        let a = Agreement::of(&[p, q].concat(), &[q, q].concat(), 2);
        let want = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!((a.max_kl - want).abs() < 1e-6, "{a:?}");
        assert!((a.mean_kl - want / 2.0).abs() < 1e-6, "{a:?}");
        // argmax of p is token 0 (a tie resolves to the first), of q token 1.
        assert!((a.top1_agreement - 0.5).abs() < 1e-12, "{a:?}");
    }
}
