//! The training loop: LoRA/QLoRA adapters on a frozen base, AdamW with a
//! schedule, gradient accumulation normalised over the trained tokens of
//! the whole accumulated batch, clipping, evaluation, sample generations,
//! checkpoints that resume exactly, and the PEFT adapter at the end.
//!
//! ```text
//! for step in start..total:
//!     rows of the step = plan(seed, step)                   (batches.rs)
//!     N = trained tokens of all its micro-batches
//!     for each micro-batch: loss_i = Σ CE(trained positions) / N; backward; grads += ∇loss_i
//!     clip(grads, max_grad_norm); AdamW(lr(step)) on the f32 master copies; write back
//!     log / eval / samples / checkpoint
//! ```
//!
//! Gradients, their sum over micro-batches, the clipping and the AdamW
//! state stay on the training device ([`DeviceAdamW`]); a step reads back
//! the loss of each micro-batch and the gradient norm, and checkpoints read
//! the optimizer state back to write it.
//!
//! The loss projects only the trained positions' hidden states to the
//! vocabulary, `LOGIT_CHUNK` tokens at a time, so the full
//! `[batch, seq, vocab]` logits never exist.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use ft_core::atomic::{AtomicDir, write_file};
use ft_model::arch::layers::{DropoutState, splitmix64};
use ft_model::lora::{self, LoraSpec};
use ft_model::{CausalLm, PackedBatch, heads};
use ft_tokenize::PackedRow;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::adamw::{AdamW, AdamWConfig, DeviceAdamW, clip_coefficient, device_global_norm};
use crate::batches::{Plan, as_sequences, targets, trained_tokens};
use crate::config::{ResumeFrom, TrainConfig};
use crate::error::TrainError;
use crate::recompute::{micro_batch_grads, micro_batch_grads_recompute};
use crate::schedule::Schedule;

/// Version of the checkpoint layout.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// Everything the loop needs besides the model.
pub struct TrainSetup<'a> {
    /// The `train:` section.
    pub train: &'a TrainConfig,
    /// The adapter to train.
    pub spec: LoraSpec,
    /// Run seed (adapter init, shuffling, dropout).
    pub seed: u64,
    /// Where metrics, checkpoints and the adapter go.
    pub output_dir: PathBuf,
    /// Written into `adapter_config.json` as `base_model_name_or_path`.
    pub base_model: String,
    /// Training rows.
    pub rows: &'a [PackedRow],
    /// Validation rows (may be empty).
    pub eval_rows: &'a [PackedRow],
    /// Padding id.
    pub pad_id: u32,
    /// The device the base model lives on (without autodiff).
    pub device: Device,
    /// Files written next to the adapter (tokenizer, chat template).
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// Set (e.g. by Ctrl-C) to save a checkpoint and stop.
    pub stop: Option<Arc<AtomicBool>>,
    /// Describes the run in `run_summary.json` (model, quantization, …).
    pub summary: serde_json::Map<String, serde_json::Value>,
}

/// One logged optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Optimizer steps done (1-based).
    pub step: u64,
    /// Fractional epoch.
    pub epoch: f64,
    /// Mean loss per trained token of this step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Trained tokens of this step.
    pub trained_tokens: usize,
    /// Input tokens of this step (padding excluded).
    pub tokens: usize,
    /// Input tokens per second over this step.
    pub tokens_per_s: f64,
    /// Seconds since the start of this run (or resume).
    pub elapsed_s: f64,
}

/// One evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// After this many steps.
    pub step: u64,
    /// Mean loss per trained token.
    pub eval_loss: f64,
    /// `exp(eval_loss)`.
    pub eval_ppl: f64,
}

/// Watches a run: progress display and sample generation.
pub trait Observer {
    /// Before the first step (`start` > 0 when resumed).
    fn on_start(&mut self, _start: u64, _total: u64) {}
    /// After every optimizer step.
    fn on_step(&mut self, _rec: &StepRecord) {}
    /// After an evaluation.
    fn on_eval(&mut self, _rec: &EvalRecord) {}
    /// Generates from the configured sample prompts with the model as it
    /// is now: `(prompt, output)` pairs. The default generates nothing.
    fn sample(&mut self, _model: &CausalLm) -> Vec<(String, String)> {
        Vec::new()
    }
    /// After sample generations.
    fn on_samples(&mut self, _step: u64, _samples: &[(String, String)]) {}
}

/// An observer that does nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Steps done in total.
    pub steps: u64,
    /// The step this process started from (0 unless resumed).
    pub resumed_from: u64,
    /// Loss of the last step.
    pub final_loss: Option<f64>,
    /// Last evaluation loss.
    pub final_eval_loss: Option<f64>,
    /// Steps skipped because they had no trained tokens.
    pub skipped_steps: u64,
    /// Seconds per step (this process).
    pub seconds_per_step: f64,
    /// Input tokens per second (this process).
    pub tokens_per_s: f64,
    /// Number of adapter parameters.
    pub lora_params: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TrainerState {
    format: u32,
    step: u64,
    optimizer_step: u64,
    skipped_steps: u64,
    seed: u64,
    total_steps: u64,
    last_loss: Option<f64>,
    last_eval_loss: Option<f64>,
}

/// The total number of optimizer steps of this config over `rows` rows.
pub fn total_steps(train: &TrainConfig, plan: &Plan) -> u64 {
    match train.max_steps {
        Some(n) => n,
        None => ((train.num_epochs * plan.steps_per_epoch() as f64).ceil() as u64).max(1),
    }
}

fn warmup_steps(train: &TrainConfig, total: u64) -> u64 {
    match (train.warmup_steps, train.warmup_ratio) {
        (Some(w), _) => w,
        (None, Some(r)) => (r * total as f64).ceil() as u64,
        (None, None) => 0,
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a tensor back to the host as f32.
pub fn to_host<const D: usize>(name: &str, t: Tensor<D>) -> Result<Vec<f32>, TrainError> {
    t.inner()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| TrainError::Readback {
            name: name.to_string(),
            message: format!("{e:?}"),
        })
}

/// A micro-batch as the model takes it, with the positions whose next token
/// is trained and those tokens.
pub(crate) struct Prepared {
    pub(crate) batch: PackedBatch,
    positions: Tensor<1, Int>,
    tokens: Tensor<1, Int>,
    /// Trained positions.
    pub(crate) n: usize,
}

/// [`Prepared`] for `rows`; `None` when no position is trained.
pub(crate) fn prepare(rows: &[&PackedRow], pad_id: u32, device: &Device) -> Option<Prepared> {
    let seqs = as_sequences(rows);
    let batch = PackedBatch::from_rows(&seqs, pad_id, device);
    let [_, w] = batch.dims();
    let t = targets(rows, w);
    let n = t.tokens.len();
    (n > 0).then(|| Prepared {
        batch,
        positions: Tensor::<1, Int>::from_data(TensorData::new(t.positions, [n]), device),
        tokens: Tensor::<1, Int>::from_data(TensorData::new(t.tokens, [n]), device),
        n,
    })
}

/// The summed next-token cross-entropy of `p`'s trained positions given the
/// final-normed hidden states `h` (`[batch, seq, hidden]`).
pub(crate) fn nll_of_hidden(model: &CausalLm, h: Tensor<3>, p: &Prepared) -> Tensor<1> {
    let [b, w, hidden] = h.dims();
    let h = h.reshape([b * w, hidden]);
    heads::lm_nll_sum(model, h.select(0, p.positions.clone()), p.tokens.clone())
}

/// Sum of the next-token cross-entropy over the trained positions of one
/// micro-batch (a scalar tensor in the autodiff graph), and how many
/// positions it covers.
pub fn micro_batch_loss(
    model: &CausalLm,
    rows: &[&PackedRow],
    pad_id: u32,
    device: &Device,
) -> Option<(Tensor<1>, usize)> {
    let p = prepare(rows, pad_id, device)?;
    let h = heads::final_hidden(model, &p.batch);
    Some((nll_of_hidden(model, h, &p), p.n))
}

/// Mean loss per trained token over `rows` (no gradients kept).
pub fn evaluate(
    model: &CausalLm,
    rows: &[PackedRow],
    micro_batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<Option<f64>, TrainError> {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for chunk in rows.chunks(micro_batch_size.max(1)) {
        let refs: Vec<&PackedRow> = chunk.iter().collect();
        if let Some((loss, k)) = micro_batch_loss(model, &refs, pad_id, device) {
            sum += f64::from(to_host("eval loss", loss)?[0]);
            n += k;
        }
    }
    Ok((n > 0).then(|| sum / n as f64))
}

fn checkpoints_dir(output_dir: &Path) -> PathBuf {
    output_dir.join("checkpoints")
}

/// Checkpoint directories in `output_dir`, oldest first, with their steps.
pub fn list_checkpoints(output_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(checkpoints_dir(output_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join("trainer_state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

fn optimizer_bytes(opt: &AdamW) -> Result<Vec<u8>, TrainError> {
    let mut t = BTreeMap::new();
    for (name, s) in &opt.slots {
        t.insert(format!("master.{name}"), (s.shape.clone(), s.value.clone()));
        t.insert(
            format!("exp_avg.{name}"),
            (s.shape.clone(), s.exp_avg.clone()),
        );
        t.insert(
            format!("exp_avg_sq.{name}"),
            (s.shape.clone(), s.exp_avg_sq.clone()),
        );
    }
    lora::safetensors_bytes(&t, None).map_err(|message| TrainError::Readback {
        name: "optimizer state".into(),
        message,
    })
}

fn read_f32(st: &SafeTensors, name: &str, path: &Path) -> Result<Vec<f32>, TrainError> {
    let v = st.tensor(name).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: format!("optimizer.safetensors lacks `{name}` ({e}); the checkpoint is incomplete or from another adapter"),
    })?;
    Ok(v.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn load_checkpoint(dir: &Path, opt: &mut AdamW) -> Result<TrainerState, TrainError> {
    let spath = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&spath).map_err(io_err(&spath))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        message: format!("trainer_state.json: {e}"),
    })?;
    if state.format != CHECKPOINT_FORMAT {
        return Err(TrainError::Checkpoint {
            path: dir.to_path_buf(),
            message: format!(
                "written in checkpoint format {}, this ft reads {CHECKPOINT_FORMAT}",
                state.format
            ),
        });
    }
    let opath = dir.join("optimizer.safetensors");
    let bytes = std::fs::read(&opath).map_err(io_err(&opath))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        message: format!("optimizer.safetensors is corrupt: {e}"),
    })?;
    for (name, slot) in &mut opt.slots {
        let value = read_f32(&st, &format!("master.{name}"), dir)?;
        if value.len() != slot.value.len() {
            return Err(TrainError::Checkpoint {
                path: dir.to_path_buf(),
                message: format!(
                    "`{name}` has {} values, the adapter {}: was `adapter:` changed since?",
                    value.len(),
                    slot.value.len()
                ),
            });
        }
        slot.value = value;
        slot.exp_avg = read_f32(&st, &format!("exp_avg.{name}"), dir)?;
        slot.exp_avg_sq = read_f32(&st, &format!("exp_avg_sq.{name}"), dir)?;
    }
    opt.step = state.optimizer_step;
    Ok(state)
}

struct Run<'s, 'a> {
    setup: &'s TrainSetup<'a>,
    adam: AdamWConfig,
    schedule: Schedule,
    plan: Plan,
    ad_device: Device,
    dropout: Arc<DropoutState>,
    metrics: PathBuf,
}

impl Run<'_, '_> {
    fn save_checkpoint(
        &self,
        model: &CausalLm,
        opt: &DeviceAdamW,
        state: &TrainerState,
    ) -> Result<PathBuf, TrainError> {
        let dir =
            checkpoints_dir(&self.setup.output_dir).join(format!("checkpoint-{}", state.step));
        let tmp = AtomicDir::create(&dir)?;
        lora::save_peft(model, &self.setup.spec, &self.setup.base_model, tmp.path())?;
        let opath = tmp.path().join("optimizer.safetensors");
        std::fs::write(&opath, optimizer_bytes(&opt.to_host()?)?).map_err(io_err(&opath))?;
        let spath = tmp.path().join("trainer_state.json");
        let json = serde_json::to_string_pretty(state).unwrap_or_default();
        std::fs::write(&spath, json).map_err(io_err(&spath))?;
        let dir = tmp.commit()?;
        if let Some(limit) = self.setup.train.save_total_limit {
            let all = list_checkpoints(&self.setup.output_dir);
            let excess = all.len().saturating_sub(limit as usize);
            for (_, old) in all.into_iter().take(excess) {
                let _ = std::fs::remove_dir_all(old);
            }
        }
        tracing::info!(checkpoint = %dir.display(), "checkpoint saved");
        Ok(dir)
    }

    fn log(&self, value: &serde_json::Value) -> Result<(), TrainError> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.metrics)
            .map_err(io_err(&self.metrics))?;
        writeln!(f, "{value}").map_err(io_err(&self.metrics))
    }

    /// Evaluates and generates with the adapter as plain tensors (burn's
    /// autodiff graph is freed by a backward pass, which evaluation never
    /// runs), then puts the trainable leaves back.
    fn eval_and_sample(
        &self,
        model: &mut CausalLm,
        opt: &DeviceAdamW,
        step: u64,
        obs: &mut dyn Observer,
    ) -> Result<Option<f64>, TrainError> {
        let plain = self.setup.device.clone().inner();
        let values = opt.values();
        lora::set_lora_params(model, &values, &plain);
        let out = self.eval_and_sample_inner(model, step, obs);
        lora::set_lora_params(model, &values, &self.ad_device);
        out
    }

    fn eval_and_sample_inner(
        &self,
        model: &CausalLm,
        step: u64,
        obs: &mut dyn Observer,
    ) -> Result<Option<f64>, TrainError> {
        self.dropout.set_training(false);
        let mut out = None;
        if !self.setup.eval_rows.is_empty()
            && let Some(loss) = evaluate(
                model,
                self.setup.eval_rows,
                self.setup.train.micro_batch_size,
                self.setup.pad_id,
                &self.setup.device,
            )?
        {
            let rec = EvalRecord {
                step,
                eval_loss: loss,
                eval_ppl: loss.exp(),
            };
            self.log(&serde_json::json!({
                "type": "eval", "step": step, "eval_loss": loss, "eval_ppl": rec.eval_ppl
            }))?;
            obs.on_eval(&rec);
            out = Some(loss);
        }
        if !self.setup.train.sample_prompts.is_empty() {
            let samples = obs.sample(model);
            for (prompt, output) in &samples {
                self.log(&serde_json::json!({
                    "type": "sample", "step": step, "prompt": prompt, "output": output
                }))?;
            }
            obs.on_samples(step, &samples);
        }
        Ok(out)
    }
}

/// Trains a LoRA adapter on `model` (frozen base, loaded on
/// `setup.device`) and writes it to `setup.output_dir` in PEFT format.
pub fn train(
    model: &mut CausalLm,
    setup: &TrainSetup<'_>,
    obs: &mut dyn Observer,
) -> Result<TrainReport, TrainError> {
    let cfg = setup.train;
    let out = &setup.output_dir;
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    if setup.rows.iter().all(|r| r.trainable() == 0) {
        return Err(TrainError::NoTrainedTokens);
    }
    let plan = Plan {
        rows: setup.rows.len(),
        micro_batch_size: cfg.micro_batch_size,
        accumulation: cfg.gradient_accumulation_steps,
        seed: setup.seed,
    };
    let total = total_steps(cfg, &plan);
    // With `gradient_checkpointing`, each decoder layer is recomputed in the
    // backward pass (recompute.rs), so the autodiff graph holds one layer.
    let ad_device = setup.device.clone().autodiff();
    let dropout = lora::attach_lora(model, &setup.spec, setup.seed, &ad_device);
    let mut opt = AdamW::new(
        lora::lora_host(model).map_err(|message| TrainError::Readback {
            name: "adapter".into(),
            message,
        })?,
    );
    let lora_params: usize = opt.slots.values().map(|s| s.value.len()).sum();
    let run = Run {
        setup,
        adam: AdamWConfig {
            beta1: cfg.adam_beta1,
            beta2: cfg.adam_beta2,
            eps: cfg.adam_epsilon,
            weight_decay: cfg.weight_decay,
        },
        schedule: Schedule {
            kind: cfg.lr_scheduler,
            base_lr: cfg.learning_rate,
            warmup: warmup_steps(cfg, total),
            total,
            min_lr_ratio: cfg.cosine_min_lr_ratio.unwrap_or(0.0),
        },
        plan,
        ad_device,
        dropout,
        metrics: out.join("metrics.jsonl"),
    };

    // Resume: master weights, moments and counters from the checkpoint.
    let resume_dir = match &cfg.resume_from_checkpoint {
        None | Some(ResumeFrom::Latest(false)) => None,
        Some(ResumeFrom::Latest(true)) => {
            let latest = list_checkpoints(out).pop().map(|(_, p)| p);
            if latest.is_none() {
                tracing::warn!(
                    "`resume_from_checkpoint: true` but `{}` has no checkpoint; starting fresh",
                    checkpoints_dir(out).display()
                );
            }
            latest
        }
        Some(ResumeFrom::Path(p)) => Some(p.clone()),
    };
    let mut state = TrainerState {
        format: CHECKPOINT_FORMAT,
        step: 0,
        optimizer_step: 0,
        skipped_steps: 0,
        seed: setup.seed,
        total_steps: total,
        last_loss: None,
        last_eval_loss: None,
    };
    if let Some(dir) = &resume_dir {
        state = load_checkpoint(dir, &mut opt)?;
        if state.seed != setup.seed {
            return Err(TrainError::Checkpoint {
                path: dir.clone(),
                message: format!(
                    "saved with seed {} but the config has seed {}; resume with the same config",
                    state.seed, setup.seed
                ),
            });
        }
        state.total_steps = total;
        // Drop metrics logged after the checkpoint (they will be redone).
        if let Ok(text) = std::fs::read_to_string(&run.metrics) {
            let kept: String = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<serde_json::Value>(l)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s <= state.step)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            write_file(&run.metrics, kept.as_bytes())?;
        }
        tracing::info!(checkpoint = %dir.display(), step = state.step, "resumed");
    } else {
        let _ = std::fs::remove_file(&run.metrics);
    }
    // From here on the optimizer state lives on the training device.
    let mut opt = DeviceAdamW::from_host(&opt, &setup.device.clone().inner());
    if resume_dir.is_some() {
        lora::set_lora_params(model, &opt.values(), &run.ad_device);
    }
    let start = state.step;
    obs.on_start(start, total);
    if start == 0 {
        state.last_eval_loss = run
            .eval_and_sample(model, &opt, 0, obs)?
            .or(state.last_eval_loss);
    }

    let clock = Instant::now();
    let mut tokens_seen = 0usize;
    let mut last_ckpt: Option<PathBuf> = resume_dir.clone();
    for step in start..total {
        if setup
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst))
        {
            let ckpt = run.save_checkpoint(model, &opt, &state)?;
            return Err(TrainError::Interrupted {
                step: state.step,
                checkpoint: ckpt,
            });
        }
        let t0 = Instant::now();
        let (epoch, batches) = run.plan.step_batches(step);
        let rows: Vec<Vec<&PackedRow>> = batches
            .iter()
            .map(|b| b.iter().map(|&i| &setup.rows[i]).collect())
            .collect();
        let n_trained: usize = rows.iter().map(|r| trained_tokens(r)).sum();
        state.step = step + 1;
        if n_trained == 0 {
            state.skipped_steps += 1;
            tracing::warn!(step = step + 1, "step has no trained tokens; skipped");
            continue;
        }
        // Forward/backward every micro-batch; sum the gradients (on the device).
        let mut grads: BTreeMap<String, Tensor<2>> = BTreeMap::new();
        let mut loss_sum = 0.0f64;
        let mut tokens = 0usize;
        for (i, micro) in rows.iter().enumerate() {
            run.dropout
                .reseed(splitmix64(setup.seed ^ splitmix64((step << 16) | i as u64)));
            tokens += micro.iter().map(|r| r.ids.len()).sum::<usize>();
            let scale = 1.0 / n_trained as f32;
            let micro_grads = if cfg.gradient_checkpointing {
                micro_batch_grads_recompute(
                    model,
                    micro,
                    setup.pad_id,
                    &setup.device,
                    &run.ad_device,
                    &run.dropout,
                    scale,
                )?
            } else {
                micro_batch_grads(model, micro, setup.pad_id, &setup.device, scale)?
            };
            let Some((loss, micro_grads)) = micro_grads else {
                continue;
            };
            loss_sum += loss;
            for (name, gt) in micro_grads {
                let sum = match grads.remove(&name) {
                    Some(acc) => acc + gt,
                    None => gt,
                };
                grads.insert(name, sum);
            }
        }
        if !loss_sum.is_finite() {
            return Err(non_finite(step + 1, "loss", loss_sum, &last_ckpt));
        }
        let grad_norm = device_global_norm(&grads)?;
        if !grad_norm.is_finite() {
            return Err(non_finite(step + 1, "gradient norm", grad_norm, &last_ckpt));
        }
        let scale = if cfg.max_grad_norm > 0.0 {
            clip_coefficient(grad_norm, cfg.max_grad_norm)
        } else {
            None
        };
        let lr = run.schedule.lr(step);
        opt.update(&run.adam, lr, &grads, scale);
        drop(grads);
        lora::set_lora_params(model, &opt.values(), &run.ad_device);
        state.optimizer_step = opt.step;
        state.last_loss = Some(loss_sum);
        tokens_seen += tokens;
        let dt = t0.elapsed().as_secs_f64();
        let rec = StepRecord {
            step: step + 1,
            epoch: epoch as f64
                + ((step % run.plan.steps_per_epoch()) + 1) as f64
                    / run.plan.steps_per_epoch() as f64,
            loss: loss_sum,
            lr,
            grad_norm,
            trained_tokens: n_trained,
            tokens,
            tokens_per_s: tokens as f64 / dt.max(1e-9),
            elapsed_s: clock.elapsed().as_secs_f64(),
        };
        obs.on_step(&rec);
        if (step + 1) % cfg.logging_steps == 0 || step + 1 == total || step == start {
            let mut v = serde_json::to_value(&rec).unwrap_or_default();
            v["type"] = "train".into();
            run.log(&v)?;
        }
        let last = step + 1 == total;
        if !last && cfg.eval_steps.is_some_and(|e| (step + 1) % e == 0) {
            state.last_eval_loss = run
                .eval_and_sample(model, &opt, step + 1, obs)?
                .or(state.last_eval_loss);
        }
        if cfg.save_steps.is_some_and(|s| (step + 1) % s == 0) || (last && cfg.save_steps.is_some())
        {
            last_ckpt = Some(run.save_checkpoint(model, &opt, &state)?);
        }
    }
    if total > start {
        state.last_eval_loss = run
            .eval_and_sample(model, &opt, total, obs)?
            .or(state.last_eval_loss);
    }

    // The adapter, in PEFT's format, with the tokenizer and template used.
    let staging = AtomicDir::create(out.join("adapter.ft-staging"))?;
    lora::save_peft(model, &setup.spec, &setup.base_model, staging.path())?;
    for name in [lora::ADAPTER_WEIGHTS, lora::ADAPTER_CONFIG] {
        let from = staging.path().join(name);
        let to = out.join(name);
        std::fs::rename(&from, &to).map_err(io_err(&to))?;
    }
    drop(staging);
    for (name, bytes) in &setup.extra_files {
        write_file(out.join(name), bytes)?;
    }
    let steps_here = total.saturating_sub(start).max(1);
    let secs = clock.elapsed().as_secs_f64();
    let report = TrainReport {
        steps: total,
        resumed_from: start,
        final_loss: state.last_loss,
        final_eval_loss: state.last_eval_loss,
        skipped_steps: state.skipped_steps,
        seconds_per_step: secs / steps_here as f64,
        tokens_per_s: tokens_seen as f64 / secs.max(1e-9),
        lora_params,
    };
    let mut summary = setup.summary.clone();
    summary.insert("adapter_r".into(), setup.spec.r.into());
    summary.insert("adapter_alpha".into(), setup.spec.alpha.into());
    summary.insert(
        "target_modules".into(),
        serde_json::json!(setup.spec.targets),
    );
    summary.insert("lora_params".into(), lora_params.into());
    summary.insert(
        "lora_bytes_f32_with_adam".into(),
        (lora_params * 4 * 3).into(),
    );
    summary.insert("steps".into(), total.into());
    summary.insert(
        "final_train_loss".into(),
        serde_json::json!(report.final_loss),
    );
    summary.insert(
        "final_eval_loss".into(),
        serde_json::json!(report.final_eval_loss),
    );
    summary.insert("seconds_per_step".into(), report.seconds_per_step.into());
    summary.insert("tokens_per_s".into(), report.tokens_per_s.into());
    summary.insert("skipped_steps".into(), report.skipped_steps.into());
    summary.insert("peak_rss_mib".into(), serde_json::json!(peak_rss_mib()));
    let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
    write_file(out.join("run_summary.json"), json.as_bytes())?;
    if let Err(e) = crate::plot::plot_metrics(&run.metrics, &out.join("training.svg")) {
        tracing::warn!("could not draw the training plot: {e}");
    }
    Ok(report)
}

fn non_finite(step: u64, what: &'static str, value: f64, kept: &Option<PathBuf>) -> TrainError {
    TrainError::NonFinite {
        step,
        what,
        value,
        kept: match kept {
            Some(p) => format!("; the last good checkpoint is `{}`", p.display()),
            None => String::new(),
        },
    }
}

/// This process's peak resident memory (`VmHWM`) in MiB, on Linux.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
