//! What `ft run` shows while training: a progress bar with loss, learning
//! rate, gradient norm, tokens/s and ETA; eval results and sample
//! generations as lines above it.

use ft_pipeline::ft_train::{EvalRecord, Observer, StepRecord};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress;

/// Generates `(prompt, output)` pairs from the model as it is now.
pub type Sampler = Box<dyn FnMut(&ft_model::CausalLm) -> Vec<(String, String)>>;

/// The training display.
pub struct TrainUi {
    bar: ProgressBar,
    sampler: Option<Sampler>,
}

impl TrainUi {
    /// A hidden bar when stdout is not a terminal (lines still print).
    pub fn new(sampler: Option<Sampler>) -> Self {
        let target = if progress::visible() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        if let Ok(style) =
            ProgressStyle::with_template("train {bar:30} {pos}/{len} [{elapsed} < {eta}] {msg}")
        {
            bar.set_style(style);
        }
        Self { bar, sampler }
    }

    /// A line above the bar (plain stdout when the bar is hidden).
    fn line(&self, text: String) {
        if self.bar.is_hidden() {
            println!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for TrainUi {
    fn on_start(&mut self, start: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(start);
        if start > 0 {
            self.line(format!("resumed at step {start}/{total}"));
        }
    }

    fn on_step(&mut self, r: &StepRecord) {
        self.bar.set_position(r.step);
        self.bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  grad-norm {:.3}  {:.0} tok/s",
            r.loss, r.lr, r.grad_norm, r.tokens_per_s
        ));
        if !progress::visible() {
            println!(
                "step {:>5}  loss {:.4}  lr {:.2e}  grad-norm {:.3}  {:.0} tok/s",
                r.step, r.loss, r.lr, r.grad_norm, r.tokens_per_s
            );
        }
    }

    fn on_eval(&mut self, e: &EvalRecord) {
        self.line(format!(
            "eval @ step {:>5}: loss {:.4}  ppl {:.2}",
            e.step, e.eval_loss, e.eval_ppl
        ));
    }

    fn sample(&mut self, model: &ft_model::CausalLm) -> Vec<(String, String)> {
        match &mut self.sampler {
            Some(f) => f(model),
            None => Vec::new(),
        }
    }

    fn on_samples(&mut self, step: u64, samples: &[(String, String)]) {
        for (p, o) in samples {
            self.line(format!("sample @ step {step}: {p:?} → {:?}", o.trim()));
        }
    }
}
