//! The streaming LoRA merge: `W' = W + scale · B·A`, one tensor at a time.
//!
//! # Steps
//!
//! 1. Open the adapter (config options, A/B pairs, ranks) and the base
//!    (shard headers only) and check every adapted module against the base
//!    (present, `[out, in]` equal to `B·A`, a float dtype) before writing.
//! 2. Plan the output: each tensor's written dtype and size, split into
//!    shards exactly as transformers' `save_pretrained` does.
//! 3. Stream: for each output shard, write the header, then each tensor in
//!    base order — bytes copied unchanged when nothing changes them, else
//!    read as `f32`, merged (rows in parallel with rayon), rounded to the
//!    output dtype (nearest, ties to even) and written. At most one base
//!    shard is mapped at a time.
//! 4. Copy `config.json` (with the written dtype), `generation_config.json`
//!    and the tokenizer files, then swap the directory into place.
//!
//! Peak memory is about one base shard's resident pages plus a few `f32`
//! copies of the largest adapted tensor, independent of the model size.
//!
//! # A GGUF base
//!
//! [`MergeOptions::base_model`] may also be a `.gguf` file (llama.cpp's
//! format, archs `llama`, `qwen2`, `qwen3`). Its tensors are read through
//! [`ft_gguf::HfView`]: renamed to HF names, dequantized to `f32` (F32, F16,
//! BF16, Q8_0, Q4_0, Q4_1, Q5_x, Q4_K, Q5_K, Q6_K), with llama.cpp's q/k row
//! permutation undone for `llama`; a tied model (no `output.weight`) gets no
//! `lm_head.weight`. The output is the HF model the GGUF stands for:
//!
//! * `dtype: auto` writes F32/F16/BF16 tensors in their own dtype and
//!   **quantized matrices as bf16** (the dequantized values are not
//!   representable exactly in any smaller format; bf16 is what the HF
//!   checkpoints GGUFs are made from usually hold). 1-D tensors (norms) stay
//!   as stored (F32 in llama.cpp's files). Tensors stored plainly and not
//!   permuted are copied byte for byte.
//! * `config.json` is rebuilt from the metadata ([`ft_gguf::HfView::hf_config`])
//!   with `dtype`/`torch_dtype` set to the dtype holding most parameters, and
//!   `generation_config.json` carries the bos/eos ids.
//! * Tokenizer files come from the adapter directory only (ft saves them
//!   there); without them the merged directory has none.
//! * `base: dequantized` NF4 round-trips the dequantized values, as QLoRA
//!   on the same GGUF base would have seen them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ft_core::atomic::AtomicDir;
use ft_kernels::nf4::Nf4Tensor;
use ft_kernels::nf4::reference::BLOCKSIZE as NF4_BLOCKSIZE;
use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::tensor::Dtype;
use serde::Serialize;
use serde_json::Value;

use crate::adapter::{Adapter, LoraPair};
use crate::base::{Base, Reader, SrcTensor};
use crate::config::{MergeBase, MergeConfig, MergeDtype, parse_size};
use crate::error::{MergeError, Result};
use crate::st::{self, OutTensor, ShardWriter};

/// Tokenizer files copied into the merged model, from the adapter directory
/// when it has them (ft saves the template used in training there), else
/// from the base (an HF directory; a GGUF base has none to copy).
pub const TOKENIZER_FILES: [&str; 8] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
];

/// Which weights `B·A` is added to, resolved from [`MergeBase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BaseWeights {
    /// The stored base weights.
    Original,
    /// What QLoRA trained against: every decoder-layer projection weight
    /// (`*.layers.N.*_proj.weight`, adapted or not) is replaced by
    /// `dequant(quant_nf4(W))` with bitsandbytes' NF4, block size 64, before
    /// the adapter is added.
    Dequantized {
        /// Whether the per-block absmax was itself 8-bit quantized
        /// (bitsandbytes' `compress_statistics`, ft's `model.double_quant`).
        double_quant: bool,
    },
}

impl BaseWeights {
    /// Resolves the `merge.base` setting: `auto` is [`Self::Dequantized`]
    /// when the adapter was trained as QLoRA (`qlora`), else [`Self::Original`].
    pub fn resolve(base: MergeBase, qlora: bool, double_quant: bool) -> Self {
        match base {
            MergeBase::Original => Self::Original,
            MergeBase::Dequantized => Self::Dequantized { double_quant },
            MergeBase::Auto if qlora => Self::Dequantized { double_quant },
            MergeBase::Auto => Self::Original,
        }
    }
}

/// Everything one merge needs.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeOptions {
    /// The base model: an HF model directory (`config.json` +
    /// safetensors) or a `.gguf` file (see the [module docs](self)).
    pub base_model: PathBuf,
    /// The PEFT adapter directory.
    pub adapter: PathBuf,
    /// The directory to write; replaced atomically if it exists.
    pub output: PathBuf,
    /// Written dtype. Default: auto (each tensor's own; bf16 for quantized
    /// GGUF tensors).
    pub dtype: MergeDtype,
    /// Largest shard in bytes (transformers' rule). Default: 5 GB.
    pub max_shard_size: u64,
    /// The weights the adapter is added to. Default: original.
    pub base_weights: BaseWeights,
}

impl MergeOptions {
    /// Options with the defaults: dtype auto, 5 GB shards, original base.
    pub fn new(
        base_model: impl Into<PathBuf>,
        adapter: impl Into<PathBuf>,
        output: impl Into<PathBuf>,
    ) -> Self {
        Self {
            base_model: base_model.into(),
            adapter: adapter.into(),
            output: output.into(),
            dtype: MergeDtype::Auto,
            max_shard_size: 5_000_000_000,
            base_weights: BaseWeights::Original,
        }
    }

    /// Options from the `merge:` section. `qlora` and `double_quant` say how
    /// the adapter was trained (they resolve `base: auto`).
    pub fn from_config(
        config: &MergeConfig,
        base_model: impl Into<PathBuf>,
        adapter: impl Into<PathBuf>,
        output: impl Into<PathBuf>,
        qlora: bool,
        double_quant: bool,
    ) -> Result<Self> {
        let max_shard_size = parse_size(&config.max_shard_size).ok_or(MergeError::ZeroShardSize)?;
        Ok(Self {
            dtype: config.dtype,
            max_shard_size,
            base_weights: BaseWeights::resolve(config.base, qlora, double_quant),
            ..Self::new(base_model, adapter, output)
        })
    }
}

/// What a merge wrote. Serialises to JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergeReport {
    /// The base model directory or GGUF file.
    pub base_model: PathBuf,
    /// The adapter directory.
    pub adapter: PathBuf,
    /// The output directory.
    pub output: PathBuf,
    /// LoRA rank.
    pub rank: usize,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// Whether rsLoRA scaling was used.
    pub use_rslora: bool,
    /// The factor `B·A` was multiplied by.
    pub scale: f32,
    /// The weights the adapter was added to.
    pub base_weights: BaseWeights,
    /// The requested dtype (`auto`, `bf16`, `f16`, `f32`).
    pub dtype: MergeDtype,
    /// The shards written, in order.
    pub shards: Vec<ShardReport>,
    /// Bytes of tensor data (the index's `metadata.total_size`).
    pub total_size: u64,
    /// Number of tensors written.
    pub num_tensors: usize,
    /// Tensors copied byte for byte from the base.
    pub copied_tensors: usize,
    /// Size of `adapter_model.safetensors`.
    pub adapter_bytes: u64,
    /// Every tensor whose values changed (adapted, or NF4 round-tripped), in
    /// write order.
    pub tensors: Vec<TensorReport>,
    /// Non-weight files written (config, tokenizer, index).
    pub files: Vec<String>,
}

impl MergeReport {
    /// The largest [`TensorReport::max_abs_vs_f32_merge`] over all tensors.
    pub fn max_abs_vs_f32_merge(&self) -> f32 {
        self.tensors
            .iter()
            .map(|t| t.max_abs_vs_f32_merge)
            .fold(0.0, f32::max)
    }
}

/// One output shard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardReport {
    /// File name inside the output directory.
    pub file: String,
    /// Number of tensors in it.
    pub tensors: usize,
    /// Bytes of tensor data in it (excluding the header).
    pub bytes: u64,
}

/// One tensor whose values the merge changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorReport {
    /// HF name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Written dtype, as safetensors names it (`BF16`).
    pub dtype: String,
    /// The shard it was written to.
    pub shard: String,
    /// Whether the adapter modifies it (else it was only NF4 round-tripped).
    pub adapted: bool,
    /// Largest `|scale · (B·A)|` entry (0 when not adapted).
    pub max_abs_lora_delta: f32,
    /// Largest `|written − (W + scale·B·A)|`, the reference being the merge
    /// on the original base computed in `f32`: the output rounding plus, with
    /// a dequantized base, the NF4 error.
    pub max_abs_vs_f32_merge: f32,
    /// With a dequantized base: largest `|merge on dequant(quant(W)) − merge
    /// on W|`, both in `f32` (the NF4 error the adapter was trained against).
    pub max_abs_dequantized_vs_original: Option<f32>,
}

/// How one output tensor is produced.
struct Planned {
    /// Index into the base's tensor list ([`SrcTensor`]s).
    base: usize,
    /// Written dtype.
    dtype: Dtype,
    /// The LoRA pair, when adapted.
    lora: Option<LoraPair>,
    /// Whether to NF4 round-trip the base weight first.
    nf4: bool,
}

/// Merges the adapter into the base and writes a standalone HF model
/// directory (see the [module docs](self)).
pub fn merge_lora(opts: &MergeOptions) -> Result<MergeReport> {
    if opts.max_shard_size == 0 {
        return Err(MergeError::ZeroShardSize);
    }
    check_output(opts)?;
    let (base, src) = Base::open(&opts.base_model)?;
    let adapter = Adapter::open(&opts.adapter)?;
    let plan = plan(opts, &adapter, &src)?;

    let sizes: Vec<usize> = plan
        .iter()
        .map(|p| out_nbytes(&base, &src[p.base], p.dtype))
        .collect();
    let shards = st::plan_shards(&sizes, opts.max_shard_size);
    let n_shards = shards.len();

    let dir = AtomicDir::create(&opts.output)?;
    let mut reader = Reader::new(&base);
    let mut report = MergeReport {
        base_model: opts.base_model.clone(),
        adapter: opts.adapter.clone(),
        output: opts.output.clone(),
        rank: adapter.settings.r,
        lora_alpha: adapter.settings.lora_alpha,
        use_rslora: adapter.settings.use_rslora,
        scale: adapter.settings.scale(),
        base_weights: opts.base_weights,
        dtype: opts.dtype,
        shards: Vec::with_capacity(n_shards),
        total_size: sizes.iter().map(|&s| s as u64).sum(),
        num_tensors: plan.len(),
        copied_tensors: 0,
        adapter_bytes: adapter.file_size(),
        tensors: Vec::new(),
        files: Vec::new(),
    };
    let mut weight_map = serde_json::Map::new();
    for (shard_idx, members) in shards.iter().enumerate() {
        let file = st::shard_name(shard_idx, n_shards);
        let layout: Vec<OutTensor> = members
            .iter()
            .map(|&i| {
                let t = &src[plan[i].base];
                OutTensor {
                    name: t.name.clone(),
                    dtype: plan[i].dtype,
                    shape: t.shape.clone(),
                    nbytes: sizes[i],
                }
            })
            .collect();
        let mut writer = ShardWriter::create(dir.path().join(&file), layout)?;
        for &i in members {
            let p = &plan[i];
            let t = &src[p.base];
            weight_map.insert(t.name.clone(), Value::String(file.clone()));
            if p.lora.is_none() && !p.nf4 && t.plain_dtype() == Some(p.dtype) {
                writer.write(&t.name, reader.bytes(t)?)?;
                report.copied_tensors += 1;
                continue;
            }
            let w = reader.f32(t)?;
            let (values, tensor_report) = transform(opts, &adapter, t, p, w, &file)?;
            writer.write(&t.name, &st::from_f32(p.dtype, &values))?;
            report.tensors.extend(tensor_report);
        }
        writer.finish()?;
        report.shards.push(ShardReport {
            file,
            tensors: members.len(),
            bytes: members.iter().map(|&i| sizes[i] as u64).sum(),
        });
    }
    drop(reader);

    if n_shards > 1 {
        let total_parameters: usize = plan
            .iter()
            .map(|p| src[p.base].shape.iter().product::<usize>())
            .sum();
        let index = serde_json::json!({
            "metadata": {"total_parameters": total_parameters, "total_size": report.total_size},
            "weight_map": weight_map,
        });
        write_json(dir.path(), st::INDEX_FILE, &index)?;
        report.files.push(st::INDEX_FILE.to_string());
    }
    write_config(opts, &base, &src, &plan, dir.path())?;
    report.files.push("config.json".to_string());
    report
        .files
        .extend(copy_extra_files(opts, &base, dir.path())?);
    dir.commit()?;
    Ok(report)
}

/// Refuses an output directory that is, or contains, an input.
fn check_output(opts: &MergeOptions) -> Result<()> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let out = match (opts.output.parent(), opts.output.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => canon(parent).join(name),
        _ => canon(&opts.output),
    };
    for (which, input) in [("base model", &opts.base_model), ("adapter", &opts.adapter)] {
        if canon(input).starts_with(&out) {
            return Err(MergeError::OutputOverlapsInput {
                output: opts.output.clone(),
                which,
                input: input.clone(),
            });
        }
    }
    Ok(())
}

/// Bytes a tensor takes when written in `dtype`.
fn out_nbytes(base: &Base, t: &SrcTensor, dtype: Dtype) -> usize {
    if t.plain_dtype() == Some(dtype) {
        base.stored_nbytes(t)
    } else {
        t.shape.iter().product::<usize>() * st::float_size(dtype)
    }
}

/// Whether QLoRA held this base tensor in NF4: the 2-D projection weights of
/// the decoder layers (ft's loader quantizes exactly those `Linear`s; the
/// embeddings, norms, biases and `lm_head` stay full precision).
fn is_quantized_linear(name: &str, shape: &[usize]) -> bool {
    shape.len() == 2 && name.contains(".layers.") && name.ends_with("_proj.weight")
}

/// Checks the adapter against the base and decides each tensor's treatment.
fn plan(opts: &MergeOptions, adapter: &Adapter, src: &[SrcTensor]) -> Result<Vec<Planned>> {
    let by_name: std::collections::HashMap<&str, usize> = src
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    for (tensor, pair) in &adapter.pairs {
        let module = tensor.trim_end_matches(".weight").to_string();
        let Some(&i) = by_name.get(tensor.as_str()) else {
            return Err(MergeError::ModuleNotInBase {
                adapter: adapter.weights_path.clone(),
                module,
                tensor: tensor.clone(),
                base: opts.base_model.clone(),
            });
        };
        let shape = &src[i].shape;
        if *shape != pair.merged_shape() {
            return Err(MergeError::ShapeMismatch {
                tensor: tensor.clone(),
                base: opts.base_model.clone(),
                adapter: adapter.weights_path.clone(),
                base_shape: shape.clone(),
                lora_shape: pair.merged_shape(),
            });
        }
    }
    let dequantize = matches!(opts.base_weights, BaseWeights::Dequantized { .. });
    src.iter()
        .enumerate()
        .map(|(i, t)| {
            let lora = adapter.pairs.get(&t.name).cloned();
            let nf4 = dequantize && is_quantized_linear(&t.name, &t.shape);
            let float = t.is_float();
            let plain = t.plain_dtype();
            let dtype = match (opts.dtype, plain) {
                (_, Some(d)) if !float => d,
                (MergeDtype::Auto, _) => t.auto_dtype(),
                (MergeDtype::Bf16, _) => Dtype::BF16,
                (MergeDtype::F16, _) => Dtype::F16,
                (MergeDtype::F32, _) => Dtype::F32,
            };
            if !float && plain.is_none() {
                // A GGUF type ft-gguf cannot dequantize: it cannot even be copied.
                return Err(MergeError::GgufBase {
                    path: t.origin.clone(),
                    problem: format!(
                        "tensor `{}` is stored as {}, which ft cannot dequantize",
                        t.name,
                        t.stored_name()
                    ),
                    help: "re-quantize the GGUF to F16, Q8_0, Q4_K or another type ft reads, \
                           or merge into the Hugging Face model",
                });
            }
            if (lora.is_some() || nf4) && !float {
                return Err(MergeError::UnsupportedDtype {
                    path: t.origin.clone(),
                    tensor: t.name.clone(),
                    dtype: t.stored_name(),
                });
            }
            Ok(Planned {
                base: i,
                dtype,
                lora,
                nf4,
            })
        })
        .collect()
}

/// `x` as the output dtype would store it, back in `f32`.
fn round_trip(dtype: Dtype, x: f32) -> f32 {
    match dtype {
        Dtype::BF16 => bf16::from_f32(x).to_f32(),
        Dtype::F16 => f16::from_f32(x).to_f32(),
        _ => x,
    }
}

/// Per-row maxima, reduced over rows.
#[derive(Clone, Copy, Default)]
struct Maxima {
    lora: f32,
    vs_f32_merge: f32,
    dequantized_vs_original: f32,
}

impl Maxima {
    fn max(self, o: Self) -> Self {
        Self {
            lora: self.lora.max(o.lora),
            vs_f32_merge: self.vs_f32_merge.max(o.vs_f32_merge),
            dequantized_vs_original: self.dequantized_vs_original.max(o.dequantized_vs_original),
        }
    }
}

/// Produces the values to write for an adapted and/or NF4 round-tripped (or
/// merely dtype-converted) tensor, and its report line.
fn transform(
    opts: &MergeOptions,
    adapter: &Adapter,
    t: &SrcTensor,
    p: &Planned,
    mut w: Vec<f32>,
    shard: &str,
) -> Result<(Vec<f32>, Option<TensorReport>)> {
    if p.lora.is_none() && !p.nf4 {
        return Ok((w, None));
    }
    let shape = &t.shape;
    let cols = shape.get(1).copied().unwrap_or(1).max(1);
    // The weights B·A is added to (None: the original, in `w`).
    let quantized = if p.nf4 {
        let double_quant = matches!(
            opts.base_weights,
            BaseWeights::Dequantized { double_quant: true }
        );
        let q =
            Nf4Tensor::quantize(&w, shape, NF4_BLOCKSIZE).map_err(|source| MergeError::Nf4 {
                path: t.origin.clone(),
                tensor: t.name.clone(),
                source: Box::new(source),
            })?;
        let q = if double_quant {
            q.with_double_quant()
        } else {
            q
        };
        Some(q.dequantize())
    } else {
        None
    };
    let lora = match &p.lora {
        Some(pair) => Some((adapter.load(&pair.a)?, adapter.load(&pair.b)?, pair.rank())),
        None => None,
    };
    let scale = adapter.settings.scale();
    let dtype = p.dtype;

    let maxima = w
        .par_chunks_mut(cols)
        .enumerate()
        .map(|(o, row)| {
            let mut m = Maxima::default();
            // delta = (B·A)[o, :] in f32, k ascending, then × scale, as PEFT's
            // get_delta_weight computes `(B @ A) * scaling`.
            let mut delta = vec![0f32; row.len()];
            if let Some((a, b, r)) = &lora {
                for k in 0..*r {
                    let bk = b[o * r + k];
                    let a_row = &a[k * cols..(k + 1) * cols];
                    delta.iter_mut().zip(a_row).for_each(|(d, &x)| *d += bk * x);
                }
                delta.iter_mut().for_each(|d| *d *= scale);
            }
            let q_row = quantized.as_ref().map(|q| &q[o * cols..(o + 1) * cols]);
            for (i, (x, d)) in row.iter_mut().zip(&delta).enumerate() {
                let reference = *x + d;
                let used = match q_row {
                    Some(q) => q[i] + d,
                    None => reference,
                };
                *x = used;
                m.lora = m.lora.max(d.abs());
                m.vs_f32_merge = m
                    .vs_f32_merge
                    .max((round_trip(dtype, used) - reference).abs());
                m.dequantized_vs_original = m.dequantized_vs_original.max((used - reference).abs());
            }
            m
        })
        .reduce(Maxima::default, Maxima::max);

    let report = TensorReport {
        name: t.name.clone(),
        shape: shape.clone(),
        dtype: dtype.to_string(),
        shard: shard.to_string(),
        adapted: p.lora.is_some(),
        max_abs_lora_delta: maxima.lora,
        max_abs_vs_f32_merge: maxima.vs_f32_merge,
        max_abs_dequantized_vs_original: p.nf4.then_some(maxima.dequantized_vs_original),
    };
    Ok((w, Some(report)))
}

/// The `torch_dtype` name of a safetensors dtype.
fn torch_name(d: Dtype) -> Option<&'static str> {
    match d {
        Dtype::F32 => Some("float32"),
        Dtype::F16 => Some("float16"),
        Dtype::BF16 => Some("bfloat16"),
        _ => None,
    }
}

/// Copies `config.json`, setting `dtype` (transformers 5) and `torch_dtype`
/// (older, if present) to the written float dtype when there is one. For a
/// GGUF base, writes the config rebuilt from its metadata with both keys set
/// to the float dtype holding most parameters.
fn write_config(
    opts: &MergeOptions,
    base: &Base,
    src: &[SrcTensor],
    plan: &[Planned],
    out: &Path,
) -> Result<()> {
    if let Base::Gguf(view) = base {
        let mut config = view.hf_config()?;
        let mut params: Vec<(&str, usize)> = Vec::new();
        for p in plan {
            if let Some(name) = torch_name(p.dtype) {
                let n = src[p.base].shape.iter().product::<usize>();
                match params.iter_mut().find(|(d, _)| *d == name) {
                    Some((_, total)) => *total += n,
                    None => params.push((name, n)),
                }
            }
        }
        if let Some((name, _)) = params.iter().max_by_key(|(_, n)| *n) {
            config.insert("dtype".into(), Value::String((*name).to_string()));
            config.insert("torch_dtype".into(), Value::String((*name).to_string()));
        }
        return write_json(out, "config.json", &Value::Object(config));
    }
    let path = opts.base_model.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| MergeError::io("reading", &path, e))?;
    let mut config: Value = serde_json::from_str(&text).map_err(|source| MergeError::Json {
        path: path.clone(),
        source,
        help: "expected the config.json transformers writes",
    })?;
    let written: BTreeSet<&str> = plan.iter().filter_map(|p| torch_name(p.dtype)).collect();
    if let (Some(obj), [only]) = (
        config.as_object_mut(),
        written.iter().collect::<Vec<_>>().as_slice(),
    ) {
        let only = Value::String((**only).to_string());
        if obj.contains_key("torch_dtype") {
            obj.insert("torch_dtype".into(), only.clone());
        }
        obj.insert("dtype".into(), only);
    }
    write_json(out, "config.json", &config)
}

/// Writes pretty JSON with a trailing newline, as transformers does.
fn write_json(dir: &Path, name: &str, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| MergeError::Json {
        path: dir.join(name),
        source,
        help: "internal: the value is plain JSON",
    })?;
    text.push('\n');
    std::fs::write(dir.join(name), text).map_err(|e| MergeError::io("writing", dir.join(name), e))
}

/// Copies `generation_config.json` from the base (rebuilt from the metadata
/// for a GGUF base) and the tokenizer files (adapter directory first).
/// Returns the names written.
fn copy_extra_files(opts: &MergeOptions, base: &Base, out: &Path) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    let copy = |src: PathBuf, name: &str| -> Result<()> {
        std::fs::copy(&src, out.join(name))
            .map(|_| ())
            .map_err(|e| MergeError::io("copying", src, e))
    };
    let generation = opts.base_model.join("generation_config.json");
    if let Base::Gguf(view) = base {
        let g = view.generation_config();
        if !g.is_empty() {
            write_json(out, "generation_config.json", &Value::Object(g))?;
            copied.push("generation_config.json".to_string());
        }
    } else if generation.is_file() {
        copy(generation, "generation_config.json")?;
        copied.push("generation_config.json".to_string());
    }
    // An adapter tokenizer_config.json with an inline chat_template must not
    // be overridden by the base's chat_template.jinja (transformers prefers
    // the .jinja file when both are present).
    let adapter_inline_template =
        std::fs::read_to_string(opts.adapter.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| v.get("chat_template").is_some_and(|t| !t.is_null()));
    for name in TOKENIZER_FILES {
        let from_adapter = opts.adapter.join(name);
        let from_base = opts.base_model.join(name);
        if from_adapter.is_file() {
            copy(from_adapter, name)?;
        } else if from_base.is_file() && !(name == "chat_template.jinja" && adapter_inline_template)
        {
            copy(from_base, name)?;
        } else {
            continue;
        }
        copied.push(name.to_string());
    }
    // A GGUF base with an adapter that brought no tokenizer (e.g. one
    // trained elsewhere): the tokenizer is rebuilt from the GGUF's
    // `tokenizer.ggml.*` metadata, so the merged model is complete. A GGUF
    // without a tokenizer gives a merged model without one, as an HF base
    // without tokenizer files does.
    if let Base::Gguf(view) = base
        && !copied.iter().any(|c| c == "tokenizer.json")
        && view.file().metadata().get("tokenizer.ggml.model").is_some()
    {
        let gguf_err = |e: String| MergeError::GgufBase {
            path: opts.base_model.clone(),
            problem: format!("rebuilding its tokenizer: {e}"),
            help: "put the model's tokenizer.json and tokenizer_config.json into the adapter directory",
        };
        let tok = ft_tokenize::tokenizer_from_gguf(&opts.base_model)
            .map_err(|e| gguf_err(e.to_string()))?;
        let json = tok.tokenizer_json().map_err(|e| gguf_err(e.to_string()))?;
        ft_core::atomic::write_file(out.join("tokenizer.json"), json.as_bytes())?;
        copied.push("tokenizer.json".to_string());
        if !copied.iter().any(|c| c == "tokenizer_config.json") {
            write_json(out, "tokenizer_config.json", &tok.tokenizer_config())?;
            copied.push("tokenizer_config.json".to_string());
        }
    }
    Ok(copied)
}
