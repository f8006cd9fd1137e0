//! `ft run`: prepare (or reuse) the data, load the base (NF4 for QLoRA),
//! train the adapter, and write it with the tokenizer and chat template
//! that produced the training tokens.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::tensor::DType;
use ft_model::lora::LoraSpec;
use ft_model::{
    AdapterKind, CausalLm, ComputeDtype, Nf4Cache, Nf4Load, is_cuda, load_model_cached,
    resolve_device,
};
use ft_train::{Observer, TrainReport, TrainSetup, train};

use crate::load::Loaded;
use crate::prepare;

/// Why `ft run` failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Preparing the data failed.
    #[error(transparent)]
    Prepare(#[from] ft_tokenize::TokenizeError),
    /// Loading the model failed.
    #[error(transparent)]
    Model(#[from] ft_model::ModelError),
    /// Picking the device failed.
    #[error(transparent)]
    Device(#[from] ft_model::DeviceError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] ft_train::TrainError),
    /// Merging failed.
    #[error(transparent)]
    Merge(#[from] ft_merge::MergeError),
    /// Exporting failed.
    #[error(transparent)]
    Export(#[from] ft_export::ExportError),
    /// Writing an output failed.
    #[error(transparent)]
    Core(#[from] ft_core::Error),
    /// The config cannot be run as it is.
    #[error("{0}")]
    Config(String),
    /// Reading a file failed.
    #[error("`{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The base model's location on disk.
pub fn base_path(loaded: &Loaded) -> Result<PathBuf, RunError> {
    loaded
        .local_base()
        .map(|b| b.path().to_path_buf())
        .map_err(RunError::Config)
}

/// Loads the base model of the config on its device, NF4-quantized for
/// `adapter.type: qlora`.
pub fn load_base(loaded: &Loaded) -> Result<(CausalLm, burn::tensor::Device), RunError> {
    let c = &loaded.config;
    let device = resolve_device(c.model.device)?;
    let qlora = c.adapter.kind == AdapterKind::Qlora;
    let nf4 = (qlora || c.model.load_in_4bit).then_some(Nf4Load {
        double_quant: c.model.double_quant,
    });
    let dtype = match c.model.dtype {
        ComputeDtype::Auto if is_cuda(&device) => DType::BF16,
        ComputeDtype::Auto | ComputeDtype::F32 => DType::F32,
        ComputeDtype::Bf16 => DType::BF16,
        ComputeDtype::F16 => {
            // Said, not silently ignored: configs imported from fp16 GPU runs.
            tracing::warn!(
                "model.dtype: f16 is not implemented: ft computes in f32 here (use bf16 for \
                 half precision)"
            );
            DType::F32
        }
    };
    // The NF4 base comes from the on-disk cache when an earlier run
    // quantized this base with these settings (`FT_NF4_CACHE=0`: never).
    let cache = nf4.and_then(|_| Nf4Cache::from_env());
    let (model, _) = load_model_cached(&base_path(loaded)?, &device, nf4, cache.as_ref())?;
    // Before the adapters are attached: they are created in f32 and stay so.
    let model = if dtype == DType::F32 {
        model
    } else {
        tracing::info!(
            ?dtype,
            "computing in {dtype:?} (norms, softmax, loss, adapters in f32)"
        );
        model.cast_params(dtype)
    };
    Ok((model, device))
}

/// The files written next to the adapter: the tokenizer and the exact chat
/// template used to render the training data.
fn extra_files(loaded: &Loaded) -> Result<Vec<(String, Vec<u8>)>, RunError> {
    let mut out = Vec::new();
    let dir = prepare::tokenizer_dir(loaded)?;
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        let p = dir.join(name);
        if p.is_file() {
            let bytes = std::fs::read(&p).map_err(|source| RunError::Io { path: p, source })?;
            out.push((name.to_string(), bytes));
        }
    }
    if let Some(t) = prepare::stage(loaded)?.template_source()? {
        out.push(("chat_template.jinja".to_string(), t.source.into_bytes()));
    }
    Ok(out)
}

/// Runs preparation and training; returns the report. `stop` (set by
/// Ctrl-C) saves a checkpoint and stops.
pub fn run_training(
    loaded: &Loaded,
    obs: &mut dyn Observer,
    stop: Option<Arc<AtomicBool>>,
) -> Result<TrainReport, RunError> {
    let c = &loaded.config;
    let adapter = &c.adapter;
    let (prepared, fresh, _report) = prepare::preprocess(loaded)?;
    tracing::info!(
        rows = prepared.train.len(),
        eval_rows = prepared.eval.len(),
        reused = ?fresh,
        "prepared data"
    );
    let (mut model, device) = load_base(loaded)?;
    let base = base_path(loaded)?;
    let mut summary = serde_json::Map::new();
    summary.insert("model".into(), c.model.base_model.clone().into());
    summary.insert("arch".into(), format!("{:?}", model.spec.arch).into());
    summary.insert(
        "adapter".into(),
        match adapter.kind {
            AdapterKind::Lora => "lora",
            AdapterKind::Qlora => "qlora",
        }
        .into(),
    );
    summary.insert(
        "quantization".into(),
        if model
            .model
            .layers
            .first()
            .is_some_and(|l| l.self_attn.q_proj.nf4.is_some())
        {
            "nf4"
        } else {
            "none"
        }
        .into(),
    );
    summary.insert(
        "attention".into(),
        "burn attention (block-diagonal mask)".into(),
    );
    summary.insert("device".into(), format!("{:?}", c.model.device).into());
    summary.insert("sequence_len".into(), prepared.meta.sequence_len.into());
    summary.insert("sample_packing".into(), prepared.meta.sample_packing.into());
    summary.insert("train_rows".into(), prepared.train.len().into());
    let setup = TrainSetup {
        train: &c.train,
        spec: LoraSpec::from_config(adapter),
        seed: c.seed,
        output_dir: loaded.output_dir(),
        base_model: base.display().to_string(),
        rows: &prepared.train,
        eval_rows: &prepared.eval,
        pad_id: prepared.meta.pad_id,
        device,
        extra_files: extra_files(loaded)?,
        stop,
        summary,
    };
    Ok(train(&mut model, &setup, obs)?)
}
