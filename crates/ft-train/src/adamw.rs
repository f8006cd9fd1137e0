//! AdamW (Loshchilov & Hutter 2019, <https://arxiv.org/abs/1711.05101>)
//! over f32 master copies of the trainable parameters, step for step as
//! `torch.optim.AdamW(foreach=False)` computes it, plus PyTorch's
//! `clip_grad_norm_`.
//!
//! The adapter is small (LoRA factors), so parameters, moments and the
//! update live on the host in f32: that is the "f32 master copy" of mixed
//! precision, and it makes checkpoints a plain dump of these vectors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

/// One parameter's master value and moments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Slot {
    /// Shape.
    pub shape: Vec<usize>,
    /// The f32 master value.
    pub value: Vec<f32>,
    /// First moment.
    pub exp_avg: Vec<f32>,
    /// Second moment.
    pub exp_avg_sq: Vec<f32>,
}

/// The optimizer state of every parameter, by name, and the step count.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdamW {
    /// Parameters by name.
    pub slots: BTreeMap<String, Slot>,
    /// Updates done so far (torch's per-parameter `step`, shared here).
    pub step: u64,
}

impl AdamW {
    /// Starts from these parameter values, moments zero.
    pub fn new(params: BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Self {
        let slots = params
            .into_iter()
            .map(|(k, (shape, value))| {
                let n = value.len();
                (
                    k,
                    Slot {
                        shape,
                        value,
                        exp_avg: vec![0.0; n],
                        exp_avg_sq: vec![0.0; n],
                    },
                )
            })
            .collect();
        Self { slots, step: 0 }
    }

    /// One update with learning rate `lr` from `grads` (by name; a
    /// parameter without a gradient is skipped, as torch skips `grad=None`).
    pub fn update(&mut self, cfg: &AdamWConfig, lr: f64, grads: &BTreeMap<String, Vec<f32>>) {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - cfg.beta1.powi(t);
        let bc2 = 1.0 - cfg.beta2.powi(t);
        let step_size = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let decay = (1.0 - lr * cfg.weight_decay) as f32;
        let (b1, b2, eps) = (cfg.beta1 as f32, cfg.beta2 as f32, cfg.eps as f32);
        let w1 = 1.0 - b1;
        let w2 = 1.0 - b2;
        for (name, slot) in &mut self.slots {
            let Some(g) = grads.get(name) else { continue };
            let Slot {
                value,
                exp_avg,
                exp_avg_sq,
                ..
            } = slot;
            for (((p, m), v), &gi) in value
                .iter_mut()
                .zip(exp_avg.iter_mut())
                .zip(exp_avg_sq.iter_mut())
                .zip(g)
            {
                // param.mul_(1 - lr * weight_decay)
                let mut pv = *p * decay;
                // exp_avg.lerp_(grad, 1 - beta1): weight < 0.5 → self + w (end - self)
                let mv = *m + w1 * (gi - *m);
                // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                let vv = *v * b2 + w2 * gi * gi;
                // denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
                let denom = vv.sqrt() / bc2_sqrt + eps;
                // param.addcdiv_(exp_avg, denom, value=-step_size)
                pv += -step_size * (mv / denom);
                *p = pv;
                *m = mv;
                *v = vv;
            }
        }
    }
}

/// The global L2 norm of all gradients (f64 accumulation).
pub fn global_norm(grads: &BTreeMap<String, Vec<f32>>) -> f64 {
    grads
        .values()
        .flat_map(|g| g.iter())
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// `torch.nn.utils.clip_grad_norm_(max_norm)`: scales every gradient by
/// `min(1, max_norm / (norm + 1e-6))`; returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut BTreeMap<String, Vec<f32>>, max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = coef as f32;
        for g in grads.values_mut() {
            for x in g.iter_mut() {
                *x *= c;
            }
        }
    }
    norm
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::LrScheduler;
    use crate::schedule::Schedule;
    use safetensors::SafeTensors;

    fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
        let v = st.tensor(name).unwrap();
        v.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// `torch.optim.AdamW` with the cosine schedule, with and without
    /// clipping (tests/fixtures/gen/train_reference.py).
    #[test]
    fn matches_torch_adamw() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/train/");
        let bytes = std::fs::read(format!("{dir}adamw.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let sched = Schedule {
            kind: LrScheduler::Cosine,
            base_lr: 0.01,
            warmup: 2,
            total: 5,
            min_lr_ratio: 0.0,
        };
        for clip in [false, true] {
            let params = (0..3)
                .map(|i| (i.to_string(), (vec![], f32s(&st, &format!("p0.{i}")))))
                .collect();
            let mut opt = AdamW::new(params);
            let mut worst = 0f32;
            for step in 0..5u64 {
                let mut grads: BTreeMap<String, Vec<f32>> = (0..3)
                    .map(|i| (i.to_string(), f32s(&st, &format!("grad.{step}.{i}"))))
                    .collect();
                if clip {
                    let norm = clip_grad_norm(&mut grads, 0.5);
                    let want = f32s(&st, &format!("clip.norm.{step}"))[0];
                    assert!(
                        (norm as f32 - want).abs() <= 1e-5 * want,
                        "{norm} vs {want}"
                    );
                }
                opt.update(&cfg, sched.lr(step), &grads);
                for i in 0..3 {
                    let key = if clip {
                        format!("clip.p.{step}.{i}")
                    } else {
                        format!("p.{step}.{i}")
                    };
                    let want = f32s(&st, &key);
                    for (a, b) in opt.slots[&i.to_string()].value.iter().zip(&want) {
                        worst = worst.max((a - b).abs());
                    }
                }
            }
            assert!(worst <= 1e-6, "clip={clip}: max |Δp| = {worst}");
        }
    }
}
