//! Reading a PEFT LoRA adapter directory (`adapter_config.json` +
//! `adapter_model.safetensors`) for merging.
//!
//! Keys are `base_model.model.<module>.lora_A.weight` (`[r, in]`) and
//! `base_model.model.<module>.lora_B.weight` (`[out, r]`); PEFT's in-memory
//! form with the adapter name infix (`lora_A.default.weight`) is accepted
//! too. The merged weight is `<module>.weight` of the base.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::TensorInfo;
use serde_json::Value;

use crate::error::{MergeError, Result};
use crate::st;

/// The adapter config file name PEFT writes.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter weights file name PEFT writes.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The prefix PEFT's `PeftModelForCausalLM` puts before module paths.
const PEFT_PREFIX: &str = "base_model.model.";

/// The parts of `adapter_config.json` the merge reads.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSettings {
    /// Rank `r`.
    pub r: usize,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// `use_rslora`: scale by `alpha / sqrt(r)` instead of `alpha / r`.
    pub use_rslora: bool,
}

impl LoraSettings {
    /// The factor `B·A` is multiplied by: `alpha / r`, or `alpha / sqrt(r)`
    /// with rsLoRA. Computed in `f64` and rounded once to `f32`, as torch does
    /// when a Python float multiplies an `f32` tensor.
    pub fn scale(&self) -> f32 {
        let r = self.r as f64;
        let s = if self.use_rslora {
            self.lora_alpha / r.sqrt()
        } else {
            self.lora_alpha / r
        };
        s as f32
    }
}

/// One adapted module: the names of its two matrices in the adapter file.
#[derive(Debug, Clone)]
pub(crate) struct LoraPair {
    /// `lora_A` (`[r, in]`).
    pub a: (String, TensorInfo),
    /// `lora_B` (`[out, r]`).
    pub b: (String, TensorInfo),
}

impl LoraPair {
    /// `[out, in]` of `B·A`.
    pub fn merged_shape(&self) -> Vec<usize> {
        vec![
            self.b.1.shape.first().copied().unwrap_or(0),
            self.a.1.shape.get(1).copied().unwrap_or(0),
        ]
    }

    /// The rank (rows of `A`).
    pub fn rank(&self) -> usize {
        self.a.1.shape.first().copied().unwrap_or(0)
    }
}

/// An opened PEFT adapter: settings, and the A/B pairs keyed by the base
/// tensor they modify (`model.layers.0.self_attn.q_proj.weight`).
pub(crate) struct Adapter {
    /// `adapter_model.safetensors`.
    pub weights_path: PathBuf,
    /// Rank and scale settings.
    pub settings: LoraSettings,
    /// Base tensor name → its LoRA pair, in name order.
    pub pairs: BTreeMap<String, LoraPair>,
    map: Mmap,
    data_start: usize,
}

impl Adapter {
    /// Opens and validates the adapter in `dir` (config options, key names,
    /// A/B pairing and ranks). Reads no weights.
    pub fn open(dir: &Path) -> Result<Self> {
        let config_path = dir.join(ADAPTER_CONFIG);
        if !config_path.is_file() {
            return Err(MergeError::MissingFile {
                what: "adapter config",
                path: config_path,
                help: "the adapter must be a PEFT directory written by `save_pretrained` \
                       (adapter_config.json + adapter_model.safetensors)",
            });
        }
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        if !weights_path.is_file() {
            return Err(MergeError::MissingFile {
                what: "adapter weights",
                path: weights_path,
                help: if dir.join("adapter_model.bin").is_file() {
                    "only safetensors adapters are supported: re-save with \
                     `save_pretrained(safe_serialization=True)`"
                } else {
                    "the adapter must be a PEFT directory written by `save_pretrained` \
                     (adapter_config.json + adapter_model.safetensors)"
                },
            });
        }
        let settings = read_config(&config_path)?;
        let map = st::map_file(&weights_path)?;
        let (data_start, infos) = st::read_header(&weights_path, &map)?;
        let pairs = pair_tensors(&weights_path, infos, settings.r)?;
        Ok(Self {
            weights_path,
            settings,
            pairs,
            map,
            data_start,
        })
    }

    /// The values of one adapter tensor as `f32`.
    pub fn load(&self, tensor: &(String, TensorInfo)) -> Result<Vec<f32>> {
        let (name, info) = tensor;
        if !st::is_float(info.dtype) {
            return Err(MergeError::UnsupportedDtype {
                path: self.weights_path.clone(),
                tensor: name.clone(),
                dtype: info.dtype.to_string(),
            });
        }
        let (s, e) = info.data_offsets;
        let bytes = self
            .map
            .get(self.data_start + s..self.data_start + e)
            .ok_or_else(|| MergeError::BadIndex {
                path: self.weights_path.clone(),
                problem: format!("tensor `{name}` lies outside the file"),
            })?;
        Ok(st::to_f32(info.dtype, bytes))
    }

    /// Size of `adapter_model.safetensors` in bytes.
    pub fn file_size(&self) -> u64 {
        self.map.len() as u64
    }
}

/// Parses `adapter_config.json`, rejecting every option that changes what a
/// plain `W + scale·B·A` merge would compute.
pub fn read_config(path: &Path) -> Result<LoraSettings> {
    let text = std::fs::read_to_string(path).map_err(|e| MergeError::io("reading", path, e))?;
    let json: Value = serde_json::from_str(&text).map_err(|source| MergeError::Json {
        path: path.to_path_buf(),
        source,
        help: "expected the adapter_config.json PEFT's save_pretrained writes",
    })?;
    let unsupported = |option: &'static str, value: &Value, help: &'static str| {
        MergeError::UnsupportedPeftOption {
            path: path.to_path_buf(),
            option,
            value: value.to_string(),
            help,
        }
    };
    let get = |k: &str| json.get(k).unwrap_or(&Value::Null);

    let peft_type = get("peft_type");
    if !(peft_type.is_null() || peft_type == "LORA") {
        return Err(unsupported(
            "peft_type",
            peft_type,
            "only LoRA adapters (peft_type \"LORA\") can be merged",
        ));
    }
    if get("use_dora") == &Value::Bool(true) {
        return Err(unsupported(
            "use_dora",
            get("use_dora"),
            "DoRA's magnitude vector is not merged by ft; merge with PEFT's merge_and_unload()",
        ));
    }
    let bias = get("bias");
    if !(bias.is_null() || bias == "none") {
        return Err(unsupported(
            "bias",
            bias,
            "trained biases are not merged by ft; train with `bias: \"none\"` or merge with PEFT",
        ));
    }
    if get("lora_bias") == &Value::Bool(true) {
        return Err(unsupported(
            "lora_bias",
            get("lora_bias"),
            "lora_B biases are not merged by ft; merge with PEFT",
        ));
    }
    if get("fan_in_fan_out") == &Value::Bool(true) {
        return Err(unsupported(
            "fan_in_fan_out",
            get("fan_in_fan_out"),
            "transposed (Conv1D/GPT-2 style) weights are not supported; the architectures ft \
             trains use nn.Linear",
        ));
    }
    let mts = get("modules_to_save");
    if !(mts.is_null() || mts.as_array().is_some_and(Vec::is_empty)) {
        return Err(unsupported(
            "modules_to_save",
            mts,
            "fully trained modules saved beside the adapter are not merged by ft; merge with PEFT",
        ));
    }
    for (option, help) in [
        (
            "rank_pattern",
            "per-module ranks are not supported; use one `r` for every module",
        ),
        (
            "alpha_pattern",
            "per-module alphas are not supported; use one `lora_alpha` for every module",
        ),
    ] {
        let v = get(option);
        if !(v.is_null() || v.as_object().is_some_and(serde_json::Map::is_empty)) {
            return Err(unsupported(option, v, help));
        }
    }
    let layer_replication = get("layer_replication");
    if !layer_replication.is_null() {
        return Err(unsupported(
            "layer_replication",
            layer_replication,
            "replicated layers are not supported; merge with PEFT",
        ));
    }

    let missing_key = |key: &'static str| MergeError::UnsupportedPeftOption {
        path: path.to_path_buf(),
        option: key,
        value: get(key).to_string(),
        help: "a positive number is required; save the adapter again with PEFT",
    };
    let r = get("r")
        .as_u64()
        .filter(|&r| r > 0)
        .ok_or_else(|| missing_key("r"))? as usize;
    let lora_alpha = get("lora_alpha")
        .as_f64()
        .ok_or_else(|| missing_key("lora_alpha"))?;
    let use_rslora = get("use_rslora").as_bool().unwrap_or(false);
    Ok(LoraSettings {
        r,
        lora_alpha,
        use_rslora,
    })
}

/// Which half of a LoRA pair a key is.
#[derive(Clone, Copy, PartialEq)]
enum Half {
    A,
    B,
}

/// Splits `base_model.model.<module>.lora_{A,B}[.<adapter>].weight` into
/// (`<module>`, half).
fn parse_key(key: &str) -> Option<(&str, Half)> {
    let rest = key.strip_prefix(PEFT_PREFIX)?;
    let rest = rest.strip_suffix(".weight")?;
    for (marker, half) in [(".lora_A", Half::A), (".lora_B", Half::B)] {
        if let Some(pos) = rest.rfind(marker) {
            let after = &rest[pos + marker.len()..];
            // `.lora_A` alone, or `.lora_A.<adapter name>` with no further dots.
            if after.is_empty() || (after.starts_with('.') && !after[1..].contains('.')) {
                return Some((&rest[..pos], half));
            }
        }
    }
    None
}

/// Groups the adapter's tensors into A/B pairs and checks their ranks.
fn pair_tensors(
    path: &Path,
    infos: Vec<(String, TensorInfo)>,
    config_r: usize,
) -> Result<BTreeMap<String, LoraPair>> {
    type Halves = (Option<(String, TensorInfo)>, Option<(String, TensorInfo)>);
    let mut halves: BTreeMap<String, Halves> = BTreeMap::new();
    for (name, info) in infos {
        let Some((module, half)) = parse_key(&name) else {
            return Err(MergeError::UnexpectedAdapterTensor {
                path: path.to_path_buf(),
                tensor: name,
            });
        };
        let entry = halves.entry(module.to_string()).or_default();
        let slot = if half == Half::A {
            &mut entry.0
        } else {
            &mut entry.1
        };
        if slot.is_some() {
            return Err(MergeError::UnexpectedAdapterTensor {
                path: path.to_path_buf(),
                tensor: name,
            });
        }
        *slot = Some((name, info));
    }
    let mut pairs = BTreeMap::new();
    for (module, (a, b)) in halves {
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (Some(_), None) => {
                return Err(MergeError::MissingLoraHalf {
                    path: path.to_path_buf(),
                    module,
                    present: "lora_A",
                    missing: "lora_B",
                });
            }
            _ => {
                return Err(MergeError::MissingLoraHalf {
                    path: path.to_path_buf(),
                    module,
                    present: "lora_B",
                    missing: "lora_A",
                });
            }
        };
        let (sa, sb) = (&a.1.shape, &b.1.shape);
        if sa.len() != 2 || sb.len() != 2 || sa[0] != sb[1] || sa[0] != config_r {
            return Err(MergeError::RankMismatch {
                path: path.to_path_buf(),
                module,
                a_shape: sa.clone(),
                b_shape: sb.clone(),
                config_r,
            });
        }
        pairs.insert(format!("{module}.weight"), LoraPair { a, b });
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_forms() {
        let m = "model.layers.0.self_attn.q_proj";
        assert!(matches!(
            parse_key(&format!("base_model.model.{m}.lora_A.weight")),
            Some((x, Half::A)) if x == m
        ));
        assert!(matches!(
            parse_key(&format!("base_model.model.{m}.lora_B.default.weight")),
            Some((x, Half::B)) if x == m
        ));
        assert!(parse_key(&format!("base_model.model.{m}.lora_magnitude_vector")).is_none());
        assert!(parse_key(&format!("base_model.model.{m}.base_layer.weight")).is_none());
        assert!(parse_key("model.embed_tokens.weight").is_none());
    }

    #[test]
    fn scales() {
        let s = LoraSettings {
            r: 4,
            lora_alpha: 8.0,
            use_rslora: false,
        };
        assert_eq!(s.scale(), 2.0);
        let s = LoraSettings {
            r: 16,
            lora_alpha: 8.0,
            use_rslora: true,
        };
        assert_eq!(s.scale(), 2.0);
    }
}
