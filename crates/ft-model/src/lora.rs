//! LoRA adapters on a loaded [`CausalLm`]: attaching them (PEFT's
//! initialisation), listing their parameters under PEFT's names, and
//! saving/loading them in PEFT's on-disk format.
//!
//! PEFT format (what `PeftModel.save_pretrained` writes and
//! `PeftModel.from_pretrained` reads):
//!
//! * `adapter_model.safetensors`: for each adapted module
//!   `base_model.model.<module>.lora_A.weight` `[r, in]` and
//!   `base_model.model.<module>.lora_B.weight` `[out, r]`, where `<module>` is
//!   the HF module path (`model.layers.0.self_attn.q_proj`). Files written by
//!   a live PEFT model may carry the adapter name (`lora_A.default.weight`);
//!   both forms are read.
//! * `adapter_config.json`: `peft_type: "LORA"`, `r`, `lora_alpha`,
//!   `lora_dropout`, `target_modules`, `use_rslora`, `bias: "none"`,
//!   `task_type: "CAUSAL_LM"`, `base_model_name_or_path`.
//!
//! The update of an adapted module is `scale · B A` with `scale = alpha / r`
//! (`alpha / sqrt(r)` with rsLoRA, Kalajdzievski 2023,
//! <https://arxiv.org/abs/2312.03732>).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::arch::CausalLm;
use crate::arch::layers::{Dropout, DropoutState, Linear, LoraAdapter, splitmix64};
use crate::config::{AdapterConfig, LoraInit, LoraTarget};
use crate::error::ModelError;

/// PEFT's prefix of every adapter tensor name.
pub const PEFT_PREFIX: &str = "base_model.model.";
/// The adapter weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The adapter config file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// The LoRA settings an adapter is built with (from the `adapter:` section
/// or a PEFT `adapter_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// Rank.
    pub r: usize,
    /// Alpha.
    pub alpha: f64,
    /// Dropout probability on the adapter input while training.
    pub dropout: f64,
    /// rsLoRA scaling.
    pub use_rslora: bool,
    /// Initialisation of A.
    pub init: LoraInit,
    /// Module names (`q_proj`, …) to adapt.
    pub targets: Vec<String>,
}

impl LoraSpec {
    /// The spec of an `adapter:` section.
    pub fn from_config(cfg: &AdapterConfig) -> Self {
        Self {
            r: cfg.lora_r as usize,
            alpha: cfg.lora_alpha,
            dropout: cfg.lora_dropout,
            use_rslora: cfg.use_rslora,
            init: cfg.init_lora_weights,
            targets: cfg
                .targets()
                .into_iter()
                .map(|t: LoraTarget| t.module_name().to_string())
                .collect(),
        }
    }

    /// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub fn scale(&self) -> f64 {
        let r = self.r as f64;
        if self.use_rslora {
            self.alpha / r.sqrt()
        } else {
            self.alpha / r
        }
    }
}

/// PEFT's `adapter_config.json`, the keys ft writes and reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    /// Always `LORA`.
    pub peft_type: String,
    /// Always `CAUSAL_LM`.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Rank.
    pub r: usize,
    /// Alpha.
    pub lora_alpha: f64,
    /// Dropout.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Adapted module names.
    pub target_modules: serde_json::Value,
    /// rsLoRA.
    #[serde(default)]
    pub use_rslora: bool,
    /// Must be `none`.
    #[serde(default = "none")]
    pub bias: String,
    /// Must be false.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Must be false (DoRA is not supported).
    #[serde(default)]
    pub use_dora: bool,
    /// Must be empty.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Where the base model came from.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// `true` (kaiming), `"gaussian"`, …
    #[serde(default)]
    pub init_lora_weights: serde_json::Value,
    /// Layers the adapter applies to (`None`: all).
    #[serde(default)]
    pub layers_to_transform: Option<serde_json::Value>,
    /// Per-module rank overrides (must be empty).
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, serde_json::Value>,
    /// Per-module alpha overrides (must be empty).
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, serde_json::Value>,
}

fn none() -> String {
    "none".into()
}

/// Host tensors by name: shape and row-major f32 values.
pub type HostTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Every linear layer of the model with its HF module path, in checkpoint
/// order (`model.layers.0.self_attn.q_proj`, …).
pub fn linears_mut(model: &mut CausalLm) -> Vec<(String, &mut Linear)> {
    let mut out = Vec::new();
    for (i, layer) in model.model.layers.iter_mut().enumerate() {
        let a = &mut layer.self_attn;
        let m = &mut layer.mlp;
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.self_attn.q_proj"), &mut a.q_proj));
        out.push((format!("{p}.self_attn.k_proj"), &mut a.k_proj));
        out.push((format!("{p}.self_attn.v_proj"), &mut a.v_proj));
        out.push((format!("{p}.self_attn.o_proj"), &mut a.o_proj));
        out.push((format!("{p}.mlp.gate_proj"), &mut m.gate_proj));
        out.push((format!("{p}.mlp.up_proj"), &mut m.up_proj));
        out.push((format!("{p}.mlp.down_proj"), &mut m.down_proj));
    }
    out
}

/// Like [`linears_mut`], shared.
pub fn linears(model: &CausalLm) -> Vec<(String, &Linear)> {
    let mut out = Vec::new();
    for (i, layer) in model.model.layers.iter().enumerate() {
        let a = &layer.self_attn;
        let m = &layer.mlp;
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.self_attn.q_proj"), &a.q_proj));
        out.push((format!("{p}.self_attn.k_proj"), &a.k_proj));
        out.push((format!("{p}.self_attn.v_proj"), &a.v_proj));
        out.push((format!("{p}.self_attn.o_proj"), &a.o_proj));
        out.push((format!("{p}.mlp.gate_proj"), &m.gate_proj));
        out.push((format!("{p}.mlp.up_proj"), &m.up_proj));
        out.push((format!("{p}.mlp.down_proj"), &m.down_proj));
    }
    out
}

fn module_name(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// Uniform `[lo, hi)` values from a seeded counter-based stream.
fn uniform(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let u = (splitmix64(seed.wrapping_add(i)) >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

/// Standard normal values (Box–Muller) from a seeded stream.
fn normal(seed: u64, n: usize, std: f32) -> Vec<f32> {
    let u = uniform(seed, n + n % 2, 0.0, 1.0);
    let mut out = Vec::with_capacity(n + 1);
    for pair in u.chunks(2) {
        let (u1, u2) = (f64::from(pair[0]).max(1e-12), f64::from(pair[1]));
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        out.push((r * t.cos()) as f32 * std);
        out.push((r * t.sin()) as f32 * std);
    }
    out.truncate(n);
    out
}

/// A seed for one module's initialisation, from the run seed and the path.
fn module_seed(seed: u64, path: &str) -> u64 {
    path.bytes()
        .fold(splitmix64(seed), |h, b| splitmix64(h ^ u64::from(b)))
}

/// Stores every NF4 base weight of `model` dense, dequantized
/// ([`Linear::densify`]): the model computes what its NF4 form does, at
/// the speed of a dense one.
pub fn densify_nf4(model: &mut CausalLm) {
    for (_, linear) in linears_mut(model) {
        linear.densify();
    }
}

/// Attaches fresh LoRA adapters to the targeted modules: A from PEFT's
/// default (Kaiming-uniform with `a = sqrt(5)`, i.e. `U(±1/sqrt(in))`) or
/// `N(0, 1/r)` for `gaussian`, B zero, so the adapted model starts equal to
/// the base. The parameters live on `device` with autodiff on (pass the
/// autodiff device) and require gradients. Returns the dropout state shared
/// by the adapters, which the trainer reseeds per micro-batch.
pub fn attach_lora(
    model: &mut CausalLm,
    spec: &LoraSpec,
    seed: u64,
    device: &Device,
) -> Arc<DropoutState> {
    let state = Arc::new(DropoutState::default());
    for (path, linear) in linears_mut(model) {
        if !spec.targets.iter().any(|t| t == module_name(&path)) {
            continue;
        }
        let [out_f, in_f] = linear.shape();
        let s = module_seed(seed, &path);
        let a = match spec.init {
            LoraInit::Kaiming => {
                let bound = 1.0 / (in_f as f32).sqrt();
                uniform(s, spec.r * in_f, -bound, bound)
            }
            LoraInit::Gaussian => normal(s, spec.r * in_f, 1.0 / spec.r as f32),
        };
        let b = vec![0.0f32; out_f * spec.r];
        linear.lora = Some(new_adapter(
            a,
            b,
            [spec.r, in_f],
            [out_f, spec.r],
            spec,
            &state,
            device,
        ));
    }
    state
}

/// A trainable leaf on `device` with autodiff on (and the device's
/// gradient-checkpointing strategy); on a device without autodiff, a plain
/// tensor (evaluation and generation record no graph).
fn leaf(t: Tensor<2>, device: &Device) -> Param<Tensor<2>> {
    let t = t.inner().to_device(&device.clone().inner());
    if !device.is_autodiff() {
        return Param::from_tensor(t);
    }
    let t = t.autodiff();
    let t = match device.gradient_checkpointing_strategy() {
        Some(s) => t.with_gradient_checkpointing_strategy(s),
        None => t,
    };
    Param::from_tensor(t.require_grad())
}

fn trainable(values: Vec<f32>, dims: [usize; 2], device: &Device) -> Param<Tensor<2>> {
    leaf(
        Tensor::from_data(TensorData::new(values, dims), device),
        device,
    )
}

fn new_adapter(
    a: Vec<f32>,
    b: Vec<f32>,
    a_dims: [usize; 2],
    b_dims: [usize; 2],
    spec: &LoraSpec,
    state: &Arc<DropoutState>,
    device: &Device,
) -> LoraAdapter {
    LoraAdapter {
        lora_a: trainable(a, a_dims, device),
        lora_b: trainable(b, b_dims, device),
        scale: spec.scale(),
        dropout: (spec.dropout > 0.0).then(|| Dropout {
            p: spec.dropout,
            state: Arc::clone(state),
        }),
    }
}

/// The adapter parameters under their PEFT names
/// (`base_model.model.<module>.lora_A.weight`), sorted by name.
pub fn lora_params(model: &CausalLm) -> Vec<(String, Tensor<2>)> {
    let mut out = Vec::new();
    for (path, linear) in linears(model) {
        if let Some(l) = &linear.lora {
            out.push((format!("{PEFT_PREFIX}{path}.lora_A.weight"), l.lora_a.val()));
            out.push((format!("{PEFT_PREFIX}{path}.lora_B.weight"), l.lora_b.val()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Replaces adapter parameters by name (as [`lora_params`] names them) with
/// new values, which become fresh trainable leaves on `device`.
pub fn set_lora_params(
    model: &mut CausalLm,
    values: &BTreeMap<String, Tensor<2>>,
    device: &Device,
) {
    for (path, linear) in linears_mut(model) {
        if let Some(l) = &mut linear.lora {
            let a = format!("{PEFT_PREFIX}{path}.lora_A.weight");
            let b = format!("{PEFT_PREFIX}{path}.lora_B.weight");
            if let Some(t) = values.get(&a) {
                l.lora_a = leaf(t.clone(), device);
            }
            if let Some(t) = values.get(&b) {
                l.lora_b = leaf(t.clone(), device);
            }
        }
    }
}

/// Host copies of the adapter parameters: name → (shape, values).
pub fn lora_host(model: &CausalLm) -> Result<HostTensors, String> {
    lora_params(model)
        .into_iter()
        .map(|(k, t)| {
            let dims = t.dims().to_vec();
            let v: Vec<f32> = t
                .inner()
                .into_data()
                .convert::<f32>()
                .try_to_vec()
                .map_err(|e| format!("{k}: {e:?}"))?;
            Ok((k, (dims, v)))
        })
        .collect()
}

/// Serialises f32 tensors as a safetensors file (bytes), names sorted.
pub fn safetensors_bytes(
    tensors: &HostTensors,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, String> {
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, (s, v))| {
            (
                k.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = owned
        .iter()
        .map(|(k, s, b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| format!("{k}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::tensor::serialize(views, metadata).map_err(|e| e.to_string())
}

/// Writes the model's adapter in PEFT's format into `dir` (which must
/// exist; callers write into a temporary directory and rename it).
pub fn save_peft(
    model: &CausalLm,
    spec: &LoraSpec,
    base_model: &str,
    dir: &Path,
) -> Result<(), ModelError> {
    let err = |message: String| ModelError::Adapter {
        path: dir.to_path_buf(),
        message,
    };
    let host = lora_host(model).map_err(err)?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors_bytes(&host, Some(meta)).map_err(err)?;
    let io = |path: &Path, source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let wpath = dir.join(ADAPTER_WEIGHTS);
    std::fs::write(&wpath, bytes).map_err(|e| io(&wpath, e))?;
    let cfg = PeftConfig {
        peft_type: "LORA".into(),
        task_type: Some("CAUSAL_LM".into()),
        r: spec.r,
        lora_alpha: spec.alpha,
        lora_dropout: spec.dropout,
        target_modules: serde_json::json!(spec.targets),
        use_rslora: spec.use_rslora,
        bias: "none".into(),
        fan_in_fan_out: false,
        use_dora: false,
        modules_to_save: None,
        base_model_name_or_path: Some(base_model.to_string()),
        init_lora_weights: match spec.init {
            LoraInit::Kaiming => serde_json::json!(true),
            LoraInit::Gaussian => serde_json::json!("gaussian"),
        },
        layers_to_transform: None,
        rank_pattern: BTreeMap::new(),
        alpha_pattern: BTreeMap::new(),
    };
    let cpath = dir.join(ADAPTER_CONFIG);
    let json = serde_json::to_string_pretty(&cfg).map_err(|e| err(e.to_string()))?;
    std::fs::write(&cpath, json + "\n").map_err(|e| io(&cpath, e))?;
    Ok(())
}

/// Reads a PEFT adapter directory and attaches it to the model (parameters
/// on `device`, trainable), checking every tensor against the model.
pub fn load_peft(
    model: &mut CausalLm,
    dir: &Path,
    device: &Device,
) -> Result<(LoraSpec, Arc<DropoutState>), ModelError> {
    let err = |message: String| ModelError::Adapter {
        path: dir.to_path_buf(),
        message,
    };
    let cpath = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cpath).map_err(|source| ModelError::Io {
        path: cpath.clone(),
        source,
    })?;
    let cfg: PeftConfig = serde_json::from_str(&text).map_err(|e| {
        err(format!(
            "{ADAPTER_CONFIG}: {e}; is this a PEFT LoRA adapter?"
        ))
    })?;
    if cfg.peft_type != "LORA" {
        return Err(err(format!(
            "{ADAPTER_CONFIG}: `peft_type` is `{}`; ft reads LORA adapters",
            cfg.peft_type
        )));
    }
    let unsupported = [
        (cfg.use_dora, "`use_dora: true` (DoRA)"),
        (cfg.bias != "none", "`bias` other than \"none\""),
        (cfg.fan_in_fan_out, "`fan_in_fan_out: true`"),
        (
            cfg.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()),
            "`modules_to_save`",
        ),
        (!cfg.rank_pattern.is_empty(), "`rank_pattern`"),
        (!cfg.alpha_pattern.is_empty(), "`alpha_pattern`"),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(bad, _)| *bad) {
        return Err(err(format!(
            "{ADAPTER_CONFIG}: unsupported PEFT option {what}; ft handles plain LoRA adapters"
        )));
    }
    let wpath = dir.join(ADAPTER_WEIGHTS);
    let bytes = std::fs::read(&wpath).map_err(|source| ModelError::Io {
        path: wpath.clone(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| err(format!("{ADAPTER_WEIGHTS} is corrupt: {e}")))?;
    // Normalise names: drop the adapter name PEFT keeps in memory.
    let mut tensors: HostTensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let key = name
            .replace(".lora_A.default.weight", ".lora_A.weight")
            .replace(".lora_B.default.weight", ".lora_B.weight");
        let values = crate::weights::decode(view.data(), view.dtype()).ok_or_else(|| {
            err(format!(
                "{ADAPTER_WEIGHTS}: tensor `{name}` has dtype {:?}; ft reads f32/f16/bf16",
                view.dtype()
            ))
        })?;
        tensors.insert(key, (view.shape().to_vec(), values));
    }
    let targets: Vec<String> = match &cfg.target_modules {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let spec = LoraSpec {
        r: cfg.r,
        alpha: cfg.lora_alpha,
        dropout: cfg.lora_dropout,
        use_rslora: cfg.use_rslora,
        init: LoraInit::Kaiming,
        targets,
    };
    let state = Arc::new(DropoutState::default());
    let mut used = 0usize;
    for (path, linear) in linears_mut(model) {
        let ka = format!("{PEFT_PREFIX}{path}.lora_A.weight");
        let kb = format!("{PEFT_PREFIX}{path}.lora_B.weight");
        let (a, b) = match (tensors.get(&ka), tensors.get(&kb)) {
            (None, None) => continue,
            (Some(a), Some(b)) => (a, b),
            (Some(_), None) => return Err(err(format!("`{kb}` is missing (its lora_A is there)"))),
            (None, Some(_)) => return Err(err(format!("`{ka}` is missing (its lora_B is there)"))),
        };
        let [out_f, in_f] = linear.shape();
        let r = a.0.first().copied().unwrap_or(0);
        if a.0 != [r, in_f] || b.0 != [out_f, r] {
            return Err(err(format!(
                "`{path}`: lora_A {:?} and lora_B {:?} do not fit the base weight [{out_f}, {in_f}] \
                 (expected [r, {in_f}] and [{out_f}, r]); was it trained on another model?",
                a.0, b.0
            )));
        }
        if r != spec.r {
            return Err(err(format!(
                "`{path}`: rank {r} but `r: {}` in {ADAPTER_CONFIG}",
                spec.r
            )));
        }
        linear.lora = Some(new_adapter(
            a.1.clone(),
            b.1.clone(),
            [r, in_f],
            [out_f, r],
            &spec,
            &state,
            device,
        ));
        used += 2;
    }
    if used != tensors.len() {
        let known: Vec<String> = linears(model)
            .iter()
            .flat_map(|(p, _)| {
                [
                    format!("{PEFT_PREFIX}{p}.lora_A.weight"),
                    format!("{PEFT_PREFIX}{p}.lora_B.weight"),
                ]
            })
            .collect();
        let stray: Vec<&String> = tensors.keys().filter(|k| !known.contains(k)).collect();
        return Err(err(format!(
            "{} adapter tensor(s) match no module of the model, e.g. `{}`; \
             the adapter was trained on another architecture or adapts modules ft does not (e.g. lm_head)",
            stray.len(),
            stray.first().map(|s| s.as_str()).unwrap_or("?")
        )));
    }
    Ok((spec, state))
}
