//! Learning-rate schedules, as transformers defines them
//! (`transformers.optimization`): linear warmup from 0, then constant,
//! linear decay to 0, or half a cosine down to `min_lr_ratio × lr`.

use crate::config::LrScheduler;

/// A schedule over `total` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// What follows warmup.
    pub kind: LrScheduler,
    /// Peak learning rate.
    pub base_lr: f64,
    /// Warmup steps.
    pub warmup: u64,
    /// Total optimizer steps.
    pub total: u64,
    /// Cosine floor as a fraction of `base_lr` (0: transformers'
    /// `get_cosine_schedule_with_warmup`; above 0:
    /// `get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=…)`).
    pub min_lr_ratio: f64,
}

impl Schedule {
    /// The learning rate of step `step` (0-based): the value transformers'
    /// `LambdaLR` gives the optimizer for its `step`-th update.
    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.factor(step)
    }

    fn factor(&self, step: u64) -> f64 {
        let (s, w, t) = (step as f64, self.warmup as f64, self.total as f64);
        if step < self.warmup {
            return s / w.max(1.0);
        }
        match self.kind {
            LrScheduler::Constant => 1.0,
            LrScheduler::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
            LrScheduler::Cosine => {
                let progress = (s - w) / (t - w).max(1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * 2.0 * 0.5 * progress).cos());
                if self.min_lr_ratio > 0.0 {
                    (cos * (1.0 - self.min_lr_ratio) + self.min_lr_ratio).max(0.0)
                } else {
                    cos.max(0.0)
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// transformers' schedulers, recorded by tests/fixtures/gen/train_reference.py.
    #[test]
    fn matches_transformers_schedules() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/train/schedules.json"
        );
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let base = d["base_lr"].as_f64().unwrap();
        let mut checked = 0;
        for case in d["cases"].as_array().unwrap() {
            let (kind, min) = match case["schedule"].as_str().unwrap() {
                "constant" => (LrScheduler::Constant, 0.0),
                "linear" => (LrScheduler::Linear, 0.0),
                "cosine" => (LrScheduler::Cosine, 0.0),
                "cosine_with_min_lr" => (LrScheduler::Cosine, 0.1),
                other => panic!("unknown schedule {other}"),
            };
            let s = Schedule {
                kind,
                base_lr: base,
                warmup: case["warmup"].as_u64().unwrap(),
                total: case["total"].as_u64().unwrap(),
                min_lr_ratio: min,
            };
            for (k, want) in case["lrs"].as_array().unwrap().iter().enumerate() {
                let want = want.as_f64().unwrap();
                let got = s.lr(k as u64);
                assert!(
                    (got - want).abs() <= 1e-12 * base.max(1.0),
                    "{case}: step {k}: {got} vs {want}"
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} values checked");
    }
}
