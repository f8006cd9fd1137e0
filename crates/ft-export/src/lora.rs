//! [`export_lora_gguf`]: a PEFT LoRA adapter directory to a GGUF LoRA
//! adapter (`llama-cli -m base.gguf --lora adapter.gguf`), as llama.cpp's
//! `convert_lora_to_gguf.py` writes it.
//!
//! * metadata: `general.architecture`, `general.type = "adapter"`,
//!   `adapter.type = "lora"`, `general.name` (and ft's provenance),
//!   `adapter.lora.alpha` (f32), `general.quantization_version`;
//! * per adapted matrix `W` (GGUF name `blk.N.attn_q.weight` …) two tensors:
//!   `….weight.lora_a` = PEFT `lora_A.weight` (`[r, in]`, ggml `[in, r]`) and
//!   `….weight.lora_b` = PEFT `lora_B.weight` (`[out, r]`, ggml `[r, out]`);
//!   for `llama` files the rows of q/k `lora_B` get the same permutation as
//!   the base weights (B·A then permutes like W);
//! * tensors sorted by PEFT name, as the converter's `load_file` yields them.
//!
//! The base model directory gives the architecture and head counts; its
//! weights are not read. Not supported (the converter has them): adapters
//! with embedding (`lora_embedding_A`) or layer-norm tensors, aLoRA
//! invocation tokens. Unlike the converter, which ignores `use_rslora` (and
//! so writes a file llama.cpp applies with the wrong scale), an rsLoRA
//! adapter gets `alpha·sqrt(r)`; a non-empty `alpha_pattern` is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ft_arch::gguf_names::{RopeProjection, hf_to_gguf, needs_rope_permutation};
use ft_arch::{Arch, HfConfig};
use ft_gguf::{GgmlType, GgufWriter, Metadata, TensorSpec};
use safetensors::{Dtype, SafeTensors};

use crate::config::GgufType;
use crate::error::ExportError;
use crate::tensors::{gguf_arch, permute_rows};

/// Inputs of [`export_lora_gguf`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoraExportOptions {
    /// The PEFT adapter directory (`adapter_config.json`,
    /// `adapter_model.safetensors`).
    pub adapter_dir: PathBuf,
    /// The base model directory (its `config.json` is read).
    pub base_model_dir: PathBuf,
    /// The GGUF file to write.
    pub output: PathBuf,
    /// Tensor type: `f32` (the converter's default), `f16`, `bf16` or `q8_0`.
    pub gguf: GgufType,
    /// `general.name`. Default: the output file's stem.
    pub name: Option<String>,
}

/// What [`export_lora_gguf`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraExportReport {
    /// The GGUF file.
    pub path: PathBuf,
    /// Adapted matrices (pairs of tensors).
    pub n_adapted: usize,
    /// `adapter.lora.alpha` as written (`lora_alpha`, times `sqrt(r)` for
    /// rsLoRA so that llama.cpp's `alpha / r` gives rsLoRA's `alpha / sqrt(r)`).
    pub alpha: f32,
    /// The rank `r`.
    pub rank: usize,
}

fn read_f32(
    st: &SafeTensors<'_>,
    path: &Path,
    name: &str,
) -> Result<(Vec<usize>, Vec<f32>), ExportError> {
    let v = st.tensor(name).map_err(|e| ExportError::BadSafetensors {
        path: path.to_path_buf(),
        reason: format!("tensor `{name}`: {e}"),
    })?;
    let d = v.data();
    let data: Vec<f32> = match v.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(ExportError::UnsupportedDtype {
                path: path.to_path_buf(),
                tensor: name.to_owned(),
                dtype: format!("{other:?}"),
            });
        }
    };
    Ok((v.shape().to_vec(), data))
}

/// Splits a PEFT key into (HF base weight name, is `lora_A`).
fn split_key(key: &str) -> Option<(String, bool)> {
    let rest = key.strip_prefix("base_model.model.").unwrap_or(key);
    for (suffix, is_a) in [
        (".lora_A.weight", true),
        (".lora_B.weight", false),
        (".lora_A.default.weight", true),
        (".lora_B.default.weight", false),
    ] {
        if let Some(stem) = rest.strip_suffix(suffix) {
            return Some((format!("{stem}.weight"), is_a));
        }
    }
    None
}

/// Writes the adapter in `opts.adapter_dir` as a GGUF LoRA (see the
/// [module docs](self)).
pub fn export_lora_gguf(opts: &LoraExportOptions) -> Result<LoraExportReport, ExportError> {
    let base_ty = match opts.gguf {
        GgufType::F32 => GgmlType::F32,
        GgufType::F16 => GgmlType::F16,
        GgufType::Bf16 => GgmlType::BF16,
        GgufType::Q8_0 => GgmlType::Q8_0,
        other => {
            return Err(ExportError::BadOption {
                option: "gguf",
                what: format!(
                    "{other:?} is not a LoRA GGUF type; llama.cpp's LoRA converter writes f32, f16, bf16 or q8_0"
                ),
            });
        }
    };
    let cfg_path = opts.base_model_dir.join("config.json");
    let cfg = HfConfig::read(&cfg_path)?;
    let arch: Arch = cfg.arch(&cfg_path)?;
    let Some(garch) = gguf_arch(arch) else {
        return Err(ExportError::BadOption {
            option: "base_model_dir",
            what: format!(
                "model_type `{}` cannot be exported to GGUF yet",
                arch.model_type()
            ),
        });
    };

    let acfg_path = opts.adapter_dir.join("adapter_config.json");
    let acfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&acfg_path).map_err(|e| ExportError::io(&acfg_path, e))?,
    )
    .map_err(|e| {
        ExportError::json(
            &acfg_path,
            format!("not valid JSON ({e})"),
            "re-save the adapter",
        )
    })?;
    let alpha = acfg
        .get("lora_alpha")
        .and_then(|v| v.as_f64())
        .ok_or_else(|| {
            ExportError::json(
                &acfg_path,
                "no numeric `lora_alpha`",
                "re-save the adapter with PEFT",
            )
        })? as f32;
    if acfg
        .get("alpha_pattern")
        .and_then(|v| v.as_object())
        .is_some_and(|m| !m.is_empty())
    {
        return Err(ExportError::json(
            &acfg_path,
            "`alpha_pattern` is not empty: a GGUF LoRA has one alpha for all tensors",
            "merge the adapter (`ft merge-lora`) and export the merged model instead",
        ));
    }
    let rslora = acfg.get("use_rslora").and_then(|v| v.as_bool()) == Some(true);

    let st_path = opts.adapter_dir.join("adapter_model.safetensors");
    let f = std::fs::File::open(&st_path).map_err(|e| ExportError::io(&st_path, e))?;
    // SAFETY: read-only map of a file this process does not modify.
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| ExportError::io(&st_path, e))?;
    let st = SafeTensors::deserialize(&map).map_err(|e| ExportError::BadSafetensors {
        path: st_path.clone(),
        reason: e.to_string(),
    })?;

    // base HF weight name -> (A key, B key)
    let mut pairs: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    for key in &names {
        let Some((base, is_a)) = split_key(key) else {
            return Err(ExportError::UnknownTensor {
                path: st_path.clone(),
                tensor: key.clone(),
                arch: arch.model_type(),
            });
        };
        let slot = pairs.entry(base).or_default();
        if is_a {
            slot.0 = Some(key.clone());
        } else {
            slot.1 = Some(key.clone());
        }
    }

    struct Out {
        name: String,
        shape: Vec<u64>,
        data: Vec<f32>,
        ty: GgmlType,
    }
    let mut outs = Vec::new();
    let mut rank = 0;
    let mut ranks = std::collections::BTreeSet::new();
    for (base, (a, b)) in &pairs {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(ExportError::MissingTensor {
                dir: opts.adapter_dir.clone(),
                tensor: format!("{base} (lora_A and lora_B)"),
                arch: arch.model_type(),
                layers: cfg.num_hidden_layers,
            });
        };
        let gname = hf_to_gguf(base).ok_or_else(|| ExportError::UnknownTensor {
            path: st_path.clone(),
            tensor: a.clone(),
            arch: arch.model_type(),
        })?;
        let (sa, da) = read_f32(&st, &st_path, a)?;
        let (sb, mut db) = read_f32(&st, &st_path, b)?;
        if sa.len() != 2 || sb.len() != 2 || sa[0] != sb[1] {
            return Err(ExportError::BadShape {
                path: st_path.clone(),
                tensor: b.clone(),
                found: sb,
                expected: format!(
                    "[out, r] with r = {} from `{a}` {sa:?}",
                    sa.first().copied().unwrap_or(0)
                ),
                help: "lora_A must be [r, in] and lora_B [out, r]",
            });
        }
        rank = sa[0];
        ranks.insert(rank);
        let heads = match needs_rope_permutation(garch, base) {
            Some(RopeProjection::Query) => Some(cfg.num_attention_heads),
            Some(RopeProjection::Key) => Some(cfg.kv_heads()),
            None => None,
        };
        if let Some(h) = heads {
            if h == 0 || !sb[0].is_multiple_of(2 * h) {
                return Err(ExportError::BadShape {
                    path: st_path.clone(),
                    tensor: b.clone(),
                    found: sb,
                    expected: format!("rows divisible by 2 × {h} heads"),
                    help: "the adapter does not belong to this base model",
                });
            }
            db = permute_rows(&db, sb[0], h);
        }
        let ty_for = |ne0: usize| {
            if ne0.is_multiple_of(base_ty.block_size()) {
                base_ty
            } else {
                GgmlType::F16
            }
        };
        outs.push(Out {
            name: format!("{gname}.lora_a"),
            shape: vec![sa[1] as u64, sa[0] as u64],
            ty: ty_for(sa[1]),
            data: da,
        });
        outs.push(Out {
            name: format!("{gname}.lora_b"),
            shape: vec![sb[1] as u64, sb[0] as u64],
            ty: ty_for(sb[1]),
            data: db,
        });
    }

    // llama.cpp scales by alpha / r (r from each lora_a's shape). rsLoRA
    // scales by alpha / sqrt(r): the same scale is alpha·sqrt(r) / r, so
    // write alpha·sqrt(r) when every tensor has the same rank.
    let alpha = if rslora {
        if ranks.len() != 1 {
            return Err(ExportError::json(
                &acfg_path,
                format!(
                    "rsLoRA with several ranks ({ranks:?}) cannot be expressed as one GGUF alpha"
                ),
                "merge the adapter (`ft merge-lora`) and export the merged model instead",
            ));
        }
        alpha * (rank as f32).sqrt()
    } else {
        alpha
    };

    let mut meta = Metadata::new();
    meta.set("general.architecture", garch);
    meta.set("general.type", "adapter");
    meta.set("adapter.type", "lora");
    let name = opts.name.clone().unwrap_or_else(|| {
        opts.output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "adapter".into())
    });
    meta.set("general.name", name.as_str());
    meta.set("general.quantized_by", "ft");
    meta.set("adapter.lora.alpha", alpha);
    meta.set("general.quantization_version", 2u32);

    let specs = outs
        .iter()
        .map(|o| TensorSpec::new(o.name.clone(), o.shape.clone(), o.ty))
        .collect();
    let mut w = GgufWriter::create(&opts.output, &meta, specs)?;
    for o in &outs {
        let bytes = ft_gguf::quant::quantize_rows(o.ty, &o.data, o.shape[0] as usize).map_err(
            |source| ExportError::Quant {
                tensor: o.name.clone(),
                ty: o.ty,
                source,
            },
        )?;
        w.write_tensor(&o.name, &bytes)?;
    }
    let path = w.finish()?;
    Ok(LoraExportReport {
        path,
        n_adapted: pairs.len(),
        alpha,
        rank,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn peft_keys_split() {
        assert_eq!(
            split_key("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"),
            Some(("model.layers.3.self_attn.q_proj.weight".into(), true))
        );
        assert_eq!(
            split_key("base_model.model.model.layers.0.mlp.down_proj.lora_B.default.weight"),
            Some(("model.layers.0.mlp.down_proj.weight".into(), false))
        );
        assert_eq!(split_key("base_model.model.model.norm.weight"), None);
    }
}
