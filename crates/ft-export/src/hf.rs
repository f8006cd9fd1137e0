//! Reading a Hugging Face model directory: `config.json` and the
//! safetensors weights, single file or sharded with an index.
//!
//! Shards are memory-mapped; a tensor is converted to f32 only when it is
//! written, so a model never sits in memory whole. Tensors are listed in the
//! order llama.cpp's converter visits them: shards in file-name order, and
//! within a shard by name (gguf-py's `safe_open(..).keys()` is sorted).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ft_arch::{Arch, HfConfig};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use crate::error::ExportError;

/// One tensor of the checkpoint: where it is and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfTensor {
    /// HF name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Index of its shard in [`HfModel::shards`].
    pub shard: usize,
    /// PyTorch-order shape.
    pub shape: Vec<usize>,
    /// Stored dtype.
    pub dtype: Dtype,
}

/// A memory-mapped safetensors shard.
pub struct Shard {
    /// The file.
    pub path: PathBuf,
    map: Mmap,
}

/// An HF model directory, opened.
pub struct HfModel {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`, typed.
    pub config: HfConfig,
    /// `config.json` as JSON, for keys [`HfConfig`] does not carry.
    pub raw: serde_json::Value,
    /// The architecture.
    pub arch: Arch,
    /// The shards, in file-name order.
    pub shards: Vec<Shard>,
    /// Every tensor, in converter order.
    pub tensors: Vec<HfTensor>,
}

fn map_file(path: &Path) -> Result<Mmap, ExportError> {
    let f = std::fs::File::open(path).map_err(|e| ExportError::io(path, e))?;
    // SAFETY: the file is only read; a concurrent writer could change the
    // bytes under us, which at worst corrupts the export (as it would for
    // any reader), never memory safety of this process's own data.
    unsafe { Mmap::map(&f) }.map_err(|e| ExportError::io(path, e))
}

fn parse<'a>(shard: &'a Shard) -> Result<SafeTensors<'a>, ExportError> {
    SafeTensors::deserialize(&shard.map).map_err(|e| ExportError::BadSafetensors {
        path: shard.path.clone(),
        reason: e.to_string(),
    })
}

/// Shard file names from `model.safetensors.index.json`, sorted and unique.
fn index_shards(index: &Path) -> Result<Vec<String>, ExportError> {
    let bytes = std::fs::read(index).map_err(|e| ExportError::io(index, e))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        ExportError::json(
            index,
            format!("not valid JSON ({e})"),
            "re-save the model with `save_pretrained`",
        )
    })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            ExportError::json(
                index,
                "no `weight_map` object",
                "re-save the model with `save_pretrained`",
            )
        })?;
    let mut files = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            ExportError::json(
                index,
                format!("`weight_map.{tensor}` is not a file name"),
                "re-save the model with `save_pretrained`",
            )
        })?;
        // Shards must sit next to the index: refuse paths that leave the dir.
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(ExportError::json(
                index,
                format!("`weight_map.{tensor}` = `{file}` is not a plain file name"),
                "shards must be in the model directory",
            ));
        }
        files.insert(file.to_owned());
    }
    Ok(files.into_iter().collect())
}

impl HfModel {
    /// Opens `dir`: reads `config.json`, maps the shards and lists their
    /// tensors. Fails on an unsupported `model_type`, a missing or malformed
    /// shard, or a tensor dtype other than F32/F16/BF16.
    pub fn open(dir: &Path) -> Result<Self, ExportError> {
        let config_path = dir.join("config.json");
        let config = HfConfig::read(&config_path)?;
        let arch = config.arch(&config_path)?;
        let raw_bytes =
            std::fs::read(&config_path).map_err(|e| ExportError::io(&config_path, e))?;
        let raw: serde_json::Value = serde_json::from_slice(&raw_bytes).map_err(|e| {
            ExportError::json(
                &config_path,
                format!("not valid JSON ({e})"),
                "fix the file",
            )
        })?;

        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            index_shards(&index)?
                .into_iter()
                .map(|f| dir.join(f))
                .collect()
        } else {
            return Err(ExportError::NoWeights {
                dir: dir.to_path_buf(),
            });
        };

        let mut shards = Vec::with_capacity(files.len());
        for path in files {
            let map = map_file(&path)?;
            shards.push(Shard { path, map });
        }
        let mut tensors = Vec::new();
        for (i, shard) in shards.iter().enumerate() {
            let st = parse(shard)?;
            let mut names: Vec<_> = st.names().into_iter().map(str::to_owned).collect();
            names.sort();
            for name in names {
                let view = st.tensor(&name).map_err(|e| ExportError::BadSafetensors {
                    path: shard.path.clone(),
                    reason: format!("tensor `{name}`: {e}"),
                })?;
                let dtype = view.dtype();
                if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
                    return Err(ExportError::UnsupportedDtype {
                        path: shard.path.clone(),
                        tensor: name,
                        dtype: format!("{dtype:?}"),
                    });
                }
                tensors.push(HfTensor {
                    shape: view.shape().to_vec(),
                    name,
                    shard: i,
                    dtype,
                });
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            raw,
            arch,
            shards,
            tensors,
        })
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&HfTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The shard file holding `t`.
    pub fn path_of(&self, t: &HfTensor) -> &Path {
        &self.shards[t.shard].path
    }

    /// `t`'s values as f32, row-major (F16/BF16 widened exactly).
    pub fn read_f32(&self, t: &HfTensor) -> Result<Vec<f32>, ExportError> {
        let shard = &self.shards[t.shard];
        let st = parse(shard)?;
        let view = st
            .tensor(&t.name)
            .map_err(|e| ExportError::BadSafetensors {
                path: shard.path.clone(),
                reason: format!("tensor `{}`: {e}", t.name),
            })?;
        let data = view.data();
        // Parallel widening: an order-preserving indexed collect.
        Ok(match t.dtype {
            Dtype::F32 => data
                .par_chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .par_chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .par_chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ExportError::UnsupportedDtype {
                    path: shard.path.clone(),
                    tensor: t.name.clone(),
                    dtype: format!("{other:?}"),
                });
            }
        })
    }

    /// A key of `config.json` (top level).
    pub fn hparam(&self, key: &str) -> Option<&serde_json::Value> {
        self.raw.get(key)
    }
}
