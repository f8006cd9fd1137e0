//! [`export_gguf`]: an HF model directory to one GGUF file (and a Modelfile).
//!
//! Steps:
//! 1. open the directory ([`HfModel::open`]): `config.json`, memory-mapped
//!    shards, tensor list;
//! 2. plan every output tensor ([`tensors::plan`]): GGUF name, type, q/k
//!    permutation, generated `rope_freqs`;
//! 3. metadata in the converter's order: `general.*`, `{arch}.*`
//!    hyperparameters, `general.quantization_version`, tokenizer;
//! 4. stream the tensors through [`GgufWriter`] one at a time: read as f32,
//!    permute, quantize on rayon's pool, write; the file is renamed into place
//!    only when complete;
//! 5. the Modelfile, atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ft_arch::Arch;
use ft_gguf::{GgmlType, GgufWriter, Metadata, TensorSpec};

use crate::config::{ExportConfig, GgufType};
use crate::error::ExportError;
use crate::hf::HfModel;
use crate::modelfile::{self, ModelfileOptions};
use crate::tensors::{self, PlannedTensor, gguf_arch, permute_rows};
use crate::vocab::{self, VocabOptions};

/// Everything [`export_gguf`] needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// The HF model directory (config.json, safetensors, tokenizer files).
    pub model_dir: PathBuf,
    /// The GGUF file to write.
    pub output: PathBuf,
    /// Tensor type of the file.
    pub gguf: GgufType,
    /// `general.name`. Default: the output file's stem.
    pub name: Option<String>,
    /// `general.finetune` (e.g. the run name).
    pub finetune: Option<String>,
    /// `general.base_model.0.name` (with `general.base_model.count = 1`).
    pub base_model: Option<String>,
    /// `general.dataset.{i}.name` (with `general.dataset.count`).
    pub datasets: Vec<String>,
    /// `tokenizer.chat_template`: the exact template used in training. Default:
    /// the tokenizer's (tokenizer_config.json or chat_template.jinja).
    pub chat_template: Option<String>,
    /// `tokenizer.ggml.pre` for a byte-level BPE tokenizer whose pre-tokenizer
    /// hash llama.cpp does not know (e.g. `llama-bpe`, `qwen2`, `smollm`).
    /// Default: detected from the hash, an error when unknown.
    pub tokenizer_pre: Option<String>,
    /// Write an Ollama `Modelfile` next to the GGUF. Default: `None` (no).
    pub modelfile: Option<ModelfileOptions>,
}

impl ExportOptions {
    /// Options with the defaults: no provenance, the tokenizer's own chat
    /// template, no Modelfile.
    pub fn new(model_dir: impl Into<PathBuf>, output: impl Into<PathBuf>, gguf: GgufType) -> Self {
        Self {
            model_dir: model_dir.into(),
            output: output.into(),
            gguf,
            name: None,
            finetune: None,
            base_model: None,
            datasets: Vec::new(),
            chat_template: None,
            tokenizer_pre: None,
            modelfile: None,
        }
    }

    /// Options from the `export` section: its type, name and Modelfile switch.
    pub fn from_config(
        cfg: &ExportConfig,
        model_dir: impl Into<PathBuf>,
        output: impl Into<PathBuf>,
    ) -> Self {
        let mut o = Self::new(model_dir, output, cfg.gguf);
        o.name.clone_from(&cfg.name);
        o.modelfile = cfg.modelfile.then(ModelfileOptions::default);
        o
    }
}

/// What [`export_gguf`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// The GGUF file.
    pub path: PathBuf,
    /// The Modelfile, when written.
    pub modelfile: Option<PathBuf>,
    /// `general.architecture`.
    pub arch: String,
    /// `tokenizer.ggml.model` and `tokenizer.ggml.pre`.
    pub tokenizer: (String, String),
    /// Number of tensors written.
    pub n_tensors: usize,
    /// Tensors per ggml type name.
    pub types: BTreeMap<String, usize>,
    /// Bytes of the GGUF file.
    pub file_bytes: u64,
    /// Tensors whose type fell back from the wanted one (shape reasons).
    pub fallbacks: Vec<String>,
    /// Stop strings written to the Modelfile.
    pub stop_tokens: Vec<String>,
}

/// `{arch}.*` hyperparameters and `general.file_type`, in the converter's
/// order (`TextModel.set_gguf_parameters` + `LlamaModel.set_gguf_parameters`).
fn write_hparams(model: &HfModel, arch: &str, file: GgufType, meta: &mut Metadata) {
    let cfg = &model.config;
    let k = |s: &str| format!("{arch}.{s}");
    let u32_of = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    meta.set(k("block_count"), u32_of(cfg.num_hidden_layers));
    if let Some(n) = cfg.max_position_embeddings {
        meta.set(k("context_length"), u32_of(n));
    }
    meta.set(k("embedding_length"), u32_of(cfg.hidden_size));
    meta.set(k("feed_forward_length"), u32_of(cfg.intermediate_size));
    meta.set(k("attention.head_count"), u32_of(cfg.num_attention_heads));
    if let Some(n) = cfg.num_key_value_heads {
        meta.set(k("attention.head_count_kv"), u32_of(n));
    }
    let rp = tensors::rope_params(model);
    if let Some(kind) = tensors::rope_type(&rp) {
        let factor = rp.get("factor").and_then(|v| v.as_f64());
        let f32_of = |key: &str| rp.get(key).and_then(|v| v.as_f64()).map(|x| x as f32);
        match (kind.as_str(), factor) {
            ("linear", Some(f)) => {
                meta.set(k("rope.scaling.type"), "linear");
                meta.set(k("rope.scaling.factor"), f as f32);
            }
            ("yarn", Some(f)) => {
                meta.set(k("rope.scaling.type"), "yarn");
                meta.set(k("rope.scaling.factor"), f as f32);
                if let Some(n) = rp
                    .get("original_max_position_embeddings")
                    .and_then(|v| v.as_u64())
                {
                    meta.set(
                        k("rope.scaling.original_context_length"),
                        u32::try_from(n).unwrap_or(u32::MAX),
                    );
                }
                if let Some(x) = f32_of("extrapolation_factor") {
                    meta.set(k("rope.scaling.yarn_ext_factor"), x);
                }
                if let Some(x) = f32_of("attention_factor").or_else(|| f32_of("attn_factor")) {
                    meta.set(k("rope.scaling.yarn_attn_factor"), x);
                }
                if let Some(x) = f32_of("beta_fast") {
                    meta.set(k("rope.scaling.yarn_beta_fast"), x);
                }
                if let Some(x) = f32_of("beta_slow") {
                    meta.set(k("rope.scaling.yarn_beta_slow"), x);
                }
            }
            ("su" | "longrope", _) => {
                meta.set(k("rope.scaling.type"), "longrope");
            }
            _ => {}
        }
    }
    let theta = rp
        .get("rope_theta")
        .and_then(|v| v.as_f64())
        .or(cfg.rope_theta);
    if let Some(t) = theta {
        meta.set(k("rope.freq_base"), t as f32);
    }
    if let Some(eps) = cfg.rms_norm_eps {
        meta.set(k("attention.layer_norm_rms_epsilon"), eps as f32);
    }
    if let Some(d) = cfg.head_dim {
        meta.set(k("attention.key_length"), u32_of(d));
        meta.set(k("attention.value_length"), u32_of(d));
    }
    meta.set("general.file_type", tensors::file_type(file));
    if matches!(model.arch, Arch::Llama | Arch::Mistral) {
        meta.set(k("vocab_size"), u32_of(cfg.vocab_size));
        meta.set(k("rope.dimension_count"), u32_of(cfg.head_dim()));
    }
}

/// `general.*` provenance written by ft (excluded from comparisons with the
/// converter, which derives its own from the directory name).
pub const PROVENANCE_KEYS: &[&str] = &[
    "general.name",
    "general.finetune",
    "general.quantized_by",
    "general.base_model.count",
    "general.base_model.0.name",
    "general.dataset.count",
];

fn write_provenance(opts: &ExportOptions, meta: &mut Metadata) -> Result<(), ExportError> {
    let name = match &opts.name {
        Some(n) if n.trim().is_empty() => {
            return Err(ExportError::BadOption {
                option: "name",
                what: "is empty; give a model name or leave it unset".into(),
            });
        }
        Some(n) => n.clone(),
        None => opts
            .output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
    };
    meta.set("general.name", name.as_str());
    if let Some(f) = &opts.finetune {
        meta.set("general.finetune", f.as_str());
    }
    meta.set("general.quantized_by", "ft");
    if let Some(b) = &opts.base_model {
        meta.set("general.base_model.count", 1u32);
        meta.set("general.base_model.0.name", b.as_str());
    }
    if !opts.datasets.is_empty() {
        meta.set("general.dataset.count", opts.datasets.len() as u32);
        for (i, d) in opts.datasets.iter().enumerate() {
            meta.set(format!("general.dataset.{i}.name"), d.as_str());
        }
    }
    Ok(())
}

/// Reads, transforms and encodes one planned tensor.
fn tensor_bytes(model: &HfModel, t: &PlannedTensor) -> Result<Vec<u8>, ExportError> {
    let data = match (&t.generated, t.source) {
        (Some(g), _) => g.clone(),
        (None, Some(i)) => {
            let src = &model.tensors[i];
            let data = model.read_f32(src)?;
            match t.permute_heads {
                Some(h) => permute_rows(&data, src.shape[0], h),
                None => data,
            }
        }
        (None, None) => Vec::new(),
    };
    let row = t.shape.first().copied().unwrap_or(1) as usize;
    ft_gguf::quant::quantize_rows(t.ty, &data, row.max(1)).map_err(|source| ExportError::Quant {
        tensor: t.name.clone(),
        ty: t.ty,
        source,
    })
}

/// Exports the HF model in `opts.model_dir` to the GGUF file `opts.output`
/// (see the [module docs](self)); writes the Modelfile when asked.
pub fn export_gguf(opts: &ExportOptions) -> Result<ExportReport, ExportError> {
    if opts.output.is_dir() {
        return Err(ExportError::BadOption {
            option: "output",
            what: format!(
                "`{}` is a directory; give the path of the .gguf file to write",
                opts.output.display()
            ),
        });
    }
    let model = HfModel::open(&opts.model_dir)?;
    let plan = tensors::plan(&model, opts.gguf)?;
    let arch = gguf_arch(model.arch).unwrap_or("llama");

    let mut meta = Metadata::new();
    meta.set("general.architecture", arch);
    meta.set("general.type", "model");
    write_provenance(opts, &mut meta)?;
    write_hparams(&model, arch, opts.gguf, &mut meta);
    meta.set("general.quantization_version", 2u32);
    let vocab = vocab::write_vocab(
        &model,
        &mut meta,
        &VocabOptions {
            tokenizer_pre: opts.tokenizer_pre.as_deref(),
            chat_template: opts.chat_template.as_deref(),
        },
    )?;

    let specs: Vec<TensorSpec> = plan
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), t.shape.clone(), t.ty))
        .collect();
    let mut w = GgufWriter::create(&opts.output, &meta, specs)?;
    for t in &plan {
        let bytes = tensor_bytes(&model, t)?;
        w.write_tensor(&t.name, &bytes)?;
    }
    let path = w.finish()?;
    let file_bytes = std::fs::metadata(&path)
        .map_err(|e| ExportError::io(&path, e))?
        .len();

    let mut types = BTreeMap::new();
    for t in &plan {
        *types.entry(t.ty.name().to_owned()).or_insert(0) += 1;
    }
    let mut report = ExportReport {
        path,
        modelfile: None,
        arch: arch.to_owned(),
        tokenizer: (vocab.model.clone(), vocab.pre.clone()),
        n_tensors: plan.len(),
        types,
        file_bytes,
        fallbacks: plan.iter().filter_map(|t| t.fallback.clone()).collect(),
        stop_tokens: Vec::new(),
    };
    if let Some(mf) = &opts.modelfile {
        let file_name = opts
            .output
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = modelfile::render(&file_name, &vocab, mf, &model.dir);
        let mf_path = modelfile_path(&opts.output);
        ft_core::atomic::write_file(&mf_path, text.as_bytes())?;
        report.stop_tokens = modelfile::stop_tokens(&vocab);
        report.modelfile = Some(mf_path);
    }
    Ok(report)
}

/// `Modelfile` in the GGUF's directory.
fn modelfile_path(gguf: &Path) -> PathBuf {
    gguf.parent()
        .map(|p| p.join("Modelfile"))
        .unwrap_or_else(|| PathBuf::from("Modelfile"))
}

/// The ggml type every matrix of a file type gets before per-tensor rules.
pub fn base_ggml_type(t: GgufType) -> GgmlType {
    tensors::base_type(t)
}
