//! Errors of the training stage.

use std::path::PathBuf;

/// Why training stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Loading or using the model or adapter failed.
    #[error(transparent)]
    Model(#[from] ft_model::ModelError),
    /// Writing or reading an output file failed.
    #[error(transparent)]
    Core(#[from] ft_core::Error),
    /// A file could not be read or written.
    #[error("`{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The loss or the gradients stopped being finite.
    #[error(
        "step {step}: {what} is not finite ({value}); training stopped{kept}. \
         Lower `train.learning_rate`, keep `train.max_grad_norm` > 0, or check the data of this step"
    )]
    NonFinite {
        /// The optimizer step (1-based).
        step: u64,
        /// `loss` or `gradient norm`.
        what: &'static str,
        /// The value.
        value: f64,
        /// Which checkpoint was kept, if any.
        kept: String,
    },
    /// No trainable tokens at all.
    #[error(
        "the training data has no trained tokens; check `template.roles_to_train` / `train_on_inputs` (run `ft preprocess --debug 2` to see the masks)"
    )]
    NoTrainedTokens,
    /// A checkpoint cannot be resumed from.
    #[error("checkpoint `{path}`: {message}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong and the fix.
        message: String,
    },
    /// A tensor could not be read back from the device.
    #[error("reading `{name}` back from the device: {message}")]
    Readback {
        /// The tensor.
        name: String,
        /// The backend's message.
        message: String,
    },
    /// Interrupted (Ctrl-C); a checkpoint was saved.
    #[error(
        "interrupted at step {step}; checkpoint saved to `{checkpoint}`; resume with `train.resume_from_checkpoint: true`"
    )]
    Interrupted {
        /// The last completed step.
        step: u64,
        /// Where it was saved.
        checkpoint: PathBuf,
    },
}
