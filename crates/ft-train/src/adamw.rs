//! AdamW (Loshchilov & Hutter 2019, <https://arxiv.org/abs/1711.05101>)
//! over f32 master copies of the trainable parameters, step for step as
//! `torch.optim.AdamW(foreach=False)` computes it, plus PyTorch's
//! `clip_grad_norm_`.
//!
//! Two implementations of the same arithmetic: [`AdamW`] on the host
//! (checked against torch; checkpoints are a plain dump of its vectors) and
//! [`DeviceAdamW`], which the trainer runs, with the f32 master copies and
//! moments as tensors on the training device: gradients never leave the
//! device, and a step reads back only the gradient norm (one scalar).

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

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

/// The scalars of update number `step` (from 1), in f32 as torch's
/// single-tensor AdamW applies them; shared by [`AdamW`] and [`DeviceAdamW`]
/// so the two compute the same update.
struct Coefficients {
    /// `lr / (1 - β₁ᵗ)`.
    step_size: f32,
    /// `√(1 - β₂ᵗ)`.
    bc2_sqrt: f32,
    /// `1 - lr · weight_decay`.
    decay: f32,
    /// β₂.
    b2: f32,
    /// ε.
    eps: f32,
    /// `1 - β₁` (the `lerp` weight of the first moment).
    w1: f32,
    /// `1 - β₂`.
    w2: f32,
}

impl Coefficients {
    fn new(cfg: &AdamWConfig, lr: f64, step: u64) -> Self {
        let t = i32::try_from(step).unwrap_or(i32::MAX);
        let bc1 = 1.0 - cfg.beta1.powi(t);
        let bc2 = 1.0 - cfg.beta2.powi(t);
        let (b1, b2) = (cfg.beta1 as f32, cfg.beta2 as f32);
        Self {
            step_size: (lr / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            decay: (1.0 - lr * cfg.weight_decay) as f32,
            b2,
            eps: cfg.eps as f32,
            w1: 1.0 - b1,
            w2: 1.0 - b2,
        }
    }
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
        let Coefficients {
            step_size,
            bc2_sqrt,
            decay,
            b2,
            eps,
            w1,
            w2,
        } = Coefficients::new(cfg, lr, self.step);
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
    if let Some(c) = clip_coefficient(norm, max_norm) {
        for g in grads.values_mut() {
            for x in g.iter_mut() {
                *x *= c;
            }
        }
    }
    norm
}

/// One parameter's master value and moments on the device.
#[derive(Debug, Clone)]
struct DeviceSlot {
    value: Tensor<2>,
    exp_avg: Tensor<2>,
    exp_avg_sq: Tensor<2>,
}

/// [`AdamW`] with its state on a device (the trainer's, without autodiff):
/// the same update, op for op, as burn tensor operations.
#[derive(Debug, Clone)]
pub struct DeviceAdamW {
    slots: BTreeMap<String, DeviceSlot>,
    /// Updates done so far.
    pub step: u64,
}

/// A host vector as a 2-D tensor (`[n]` shapes become `[n, 1]`).
fn upload(shape: &[usize], values: &[f32], device: &Device) -> Tensor<2> {
    let dims = [shape[0], shape.get(1).copied().unwrap_or(1)];
    Tensor::from_data(TensorData::new(values.to_vec(), dims), device)
}

fn download(name: &str, t: &Tensor<2>) -> Result<Vec<f32>, TrainError> {
    crate::trainer::to_host(name, t.clone())
}

impl DeviceAdamW {
    /// Uploads `host`'s masters, moments and step count to `device`.
    pub fn from_host(host: &AdamW, device: &Device) -> Self {
        let slots = host
            .slots
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    DeviceSlot {
                        value: upload(&s.shape, &s.value, device),
                        exp_avg: upload(&s.shape, &s.exp_avg, device),
                        exp_avg_sq: upload(&s.shape, &s.exp_avg_sq, device),
                    },
                )
            })
            .collect();
        Self {
            slots,
            step: host.step,
        }
    }

    /// The state read back into a host [`AdamW`] (for checkpoints); `shapes`
    /// are taken from the tensors.
    pub fn to_host(&self) -> Result<AdamW, TrainError> {
        let mut slots = BTreeMap::new();
        for (name, s) in &self.slots {
            slots.insert(
                name.clone(),
                Slot {
                    shape: s.value.dims().to_vec(),
                    value: download(name, &s.value)?,
                    exp_avg: download(name, &s.exp_avg)?,
                    exp_avg_sq: download(name, &s.exp_avg_sq)?,
                },
            );
        }
        Ok(AdamW {
            slots,
            step: self.step,
        })
    }

    /// The f32 master values, by name, on the optimizer's device.
    pub fn values(&self) -> BTreeMap<String, Tensor<2>> {
        self.slots
            .iter()
            .map(|(k, s)| (k.clone(), s.value.clone()))
            .collect()
    }

    /// [`AdamW::update`] on the device, with every gradient first multiplied
    /// by `grad_scale` when given (gradient clipping's coefficient).
    pub fn update(
        &mut self,
        cfg: &AdamWConfig,
        lr: f64,
        grads: &BTreeMap<String, Tensor<2>>,
        grad_scale: Option<f32>,
    ) {
        self.step += 1;
        let Coefficients {
            step_size,
            bc2_sqrt,
            decay,
            b2,
            eps,
            w1,
            w2,
        } = Coefficients::new(cfg, lr, self.step);
        for (name, slot) in &mut self.slots {
            let Some(g) = grads.get(name) else { continue };
            let g = match grad_scale {
                Some(c) => g.clone() * c,
                None => g.clone(),
            };
            // The host loop's expressions, in its order of operations.
            let p = slot.value.clone() * decay;
            let m = slot.exp_avg.clone() + (g.clone() - slot.exp_avg.clone()) * w1;
            let v = slot.exp_avg_sq.clone() * b2 + (g.clone() * w2) * g;
            let denom = v.clone().sqrt() / bc2_sqrt + eps;
            slot.value = p + (m.clone() / denom) * (-step_size);
            slot.exp_avg = m;
            slot.exp_avg_sq = v;
        }
    }
}

/// The global L2 norm of gradients on a device: each tensor's sum of
/// squares on the device, one read back for all of them, summed in f64.
pub fn device_global_norm(grads: &BTreeMap<String, Tensor<2>>) -> Result<f64, TrainError> {
    let sums: Vec<Tensor<1>> = grads
        .values()
        .map(|g| (g.clone() * g.clone()).sum())
        .collect();
    if sums.is_empty() {
        return Ok(0.0);
    }
    let host = crate::trainer::to_host("gradient norm", Tensor::cat(sums, 0))?;
    Ok(host.iter().map(|&x| f64::from(x)).sum::<f64>().sqrt())
}

/// `clip_grad_norm_`'s coefficient for a norm: `Some(max_norm / (norm +
/// 1e-6))` when that is below one, else `None` (no scaling).
pub fn clip_coefficient(norm: f64, max_norm: f64) -> Option<f32> {
    let coef = max_norm / (norm + 1e-6);
    (coef < 1.0).then_some(coef as f32)
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

    /// The hyperparameters and schedule of `tests/fixtures/gen/train_reference.py`'s AdamW run.
    fn torch_setup() -> (AdamWConfig, Schedule) {
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
        (cfg, sched)
    }

    /// `torch.optim.AdamW` with the cosine schedule, with and without
    /// clipping (tests/fixtures/gen/train_reference.py).
    #[test]
    fn matches_torch_adamw() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/train/");
        let bytes = std::fs::read(format!("{dir}adamw.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (cfg, sched) = torch_setup();
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

    /// The torch fixture again, through [`DeviceAdamW`] with the norm and
    /// clipping computed on the device.
    fn device_matches_torch_adamw(device: &Device, tol: f32) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/train/");
        let bytes = std::fs::read(format!("{dir}adamw.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (cfg, sched) = torch_setup();
        for clip in [false, true] {
            let params = (0..3)
                .map(|i| {
                    let v = f32s(&st, &format!("p0.{i}"));
                    (i.to_string(), (vec![v.len()], v))
                })
                .collect();
            let mut opt = DeviceAdamW::from_host(&AdamW::new(params), device);
            let mut worst = 0f32;
            for step in 0..5u64 {
                let grads: BTreeMap<String, Tensor<2>> = (0..3)
                    .map(|i| {
                        let g = f32s(&st, &format!("grad.{step}.{i}"));
                        (i.to_string(), upload(&[g.len()], &g, device))
                    })
                    .collect();
                let scale = if clip {
                    let norm = device_global_norm(&grads).unwrap();
                    let want = f32s(&st, &format!("clip.norm.{step}"))[0];
                    assert!(
                        (norm as f32 - want).abs() <= 1e-5 * want,
                        "{norm} vs {want}"
                    );
                    clip_coefficient(norm, 0.5)
                } else {
                    None
                };
                opt.update(&cfg, sched.lr(step), &grads, scale);
                let values = opt.values();
                for i in 0..3 {
                    let key = if clip {
                        format!("clip.p.{step}.{i}")
                    } else {
                        format!("p.{step}.{i}")
                    };
                    let want = f32s(&st, &key);
                    let got = download("p", &values[&i.to_string()]).unwrap();
                    assert_eq!(got.len(), want.len());
                    for (a, b) in got.iter().zip(&want) {
                        worst = worst.max((a - b).abs());
                    }
                }
            }
            assert!(worst <= tol, "clip={clip}: max |Δp| = {worst}");
        }
    }

    #[test]
    fn device_adamw_matches_torch_on_flex() {
        device_matches_torch_adamw(&Device::flex(), 1e-6);
    }

    /// On wgpu (CI: Mesa lavapipe), through burn's CubeCL kernels and
    /// fusion: the code a CUDA run takes apart from the runtime.
    #[test]
    fn device_adamw_matches_torch_on_wgpu() {
        use ft_kernels::KernelError;
        use ft_kernels::runtime::{Backend, burn_device};
        match burn_device(Backend::Wgpu) {
            Ok(Some(device)) => device_matches_torch_adamw(&device, 1e-6),
            Ok(None) => eprintln!("SKIPPED device_adamw_matches_torch_on_wgpu: no Vulkan device"),
            Err(KernelError::RuntimeNotLinked { .. }) => eprintln!(
                "SKIPPED device_adamw_matches_torch_on_wgpu: built without `--features ft-kernels/wgpu`"
            ),
            Err(e) => panic!("wgpu device: {e}"),
        }
    }

    /// Same updates, same bits: the device optimizer on the CPU against the
    /// host one, over several steps with clipping, and its state read back.
    #[test]
    fn device_adamw_equals_host_adamw_on_flex() {
        let device = Device::flex();
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let value = |n: usize, seed: u32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5
                })
                .collect()
        };
        let params: BTreeMap<String, (Vec<usize>, Vec<f32>)> = [
            ("a".to_string(), (vec![8, 16], value(128, 1))),
            ("b".to_string(), (vec![16, 8], value(128, 2))),
        ]
        .into_iter()
        .collect();
        let mut host = AdamW::new(params.clone());
        let mut dev = DeviceAdamW::from_host(&AdamW::new(params), &device);
        for step in 0..6u32 {
            let mut grads: BTreeMap<String, Vec<f32>> = [
                ("a".to_string(), value(128, 10 + step)),
                ("b".to_string(), value(128, 20 + step)),
            ]
            .into_iter()
            .collect();
            let dgrads: BTreeMap<String, Tensor<2>> = grads
                .iter()
                .map(|(k, g)| (k.clone(), upload(&params_shape(k), g, &device)))
                .collect();
            let norm = clip_grad_norm(&mut grads, 1.0);
            let dnorm = device_global_norm(&dgrads).unwrap();
            assert!((norm - dnorm).abs() <= 1e-6 * norm, "{norm} vs {dnorm}");
            host.update(&cfg, 1e-3, &grads);
            dev.update(&cfg, 1e-3, &dgrads, clip_coefficient(norm, 1.0));
        }
        let back = dev.to_host().unwrap();
        assert_eq!(back.step, host.step);
        for (name, s) in &host.slots {
            let d = &back.slots[name];
            assert_eq!(d.shape, s.shape, "{name}");
            for (what, a, b) in [
                ("value", &d.value, &s.value),
                ("exp_avg", &d.exp_avg, &s.exp_avg),
                ("exp_avg_sq", &d.exp_avg_sq, &s.exp_avg_sq),
            ] {
                let worst = a
                    .iter()
                    .zip(b.iter())
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= 1e-7, "{name} {what}: max |Δ| = {worst}");
            }
        }
    }

    fn params_shape(name: &str) -> Vec<usize> {
        if name == "a" {
            vec![8, 16]
        } else {
            vec![16, 8]
        }
    }
}
