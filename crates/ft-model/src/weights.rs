//! Reading checkpoint tensors by their Hugging Face names.
//!
//! A [`TensorSource`] hands out one tensor at a time as f32, by HF name
//! (`model.layers.0.self_attn.q_proj.weight`), whatever the file stores:
//!
//! * [`SafetensorsDir`]: an HF model directory with `model.safetensors`, or
//!   `model.safetensors.index.json` plus its shards. Every file is
//!   memory-mapped (`memmap2`) and its header parsed once (`safetensors`);
//!   a tensor's bytes are read (`pread`, not through the map, so the file's
//!   pages never count towards the process's memory) and converted from
//!   bf16/f16/f32 to f32 only when it is asked for, so peak memory is the
//!   model in f32 plus one tensor.
//! * [`crate::gguf::GgufSource`]: a GGUF file, dequantized tensor by tensor.
//!
//! [`VarBuilder`] scopes names the way the module tree nests them
//! (`vb.pp("model").pp("layers").pp(0)`), as candle's `VarBuilder` does, and
//! checks every shape against what the module expects, so module
//! construction reads as a walk over the checkpoint's names.
//!
//! File format: <https://huggingface.co/docs/safetensors> (8-byte
//! little-endian header length, JSON header, raw little-endian data).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::tensor::{Device, Tensor, TensorData};
use ft_kernels::nf4::Nf4Tensor;
use ft_kernels::nf4::reference::BLOCKSIZE as NF4_BLOCKSIZE;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::ModelError;
use crate::nf4_cache::Nf4CacheSession;

/// A tensor as it comes out of a source: its shape and its values in f32,
/// row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape, outermost dimension first (as in the checkpoint).
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// Something that yields checkpoint tensors by HF name.
pub trait TensorSource {
    /// Whether a tensor of that name exists.
    fn contains(&self, name: &str) -> bool;

    /// The tensor `name` as f32, or [`ModelError::MissingTensor`].
    fn load(&self, name: &str) -> Result<HostTensor, ModelError>;

    /// Where the tensors come from, for error messages.
    fn origin(&self) -> &Path;

    /// The files the tensors are read from, each with its header (the
    /// bytes that describe its tensors), for keying caches of what is
    /// derived from them ([`crate::nf4_cache`]). Empty, the default, means
    /// nothing derived from this source is cached.
    fn weight_files(&self) -> Vec<WeightFile<'_>> {
        Vec::new()
    }
}

/// A file a [`TensorSource`] reads, as [`TensorSource::weight_files`]
/// names it.
#[derive(Debug, Clone, Copy)]
pub struct WeightFile<'a> {
    /// The file, as opened (not canonicalized).
    pub path: &'a Path,
    /// Its header: a safetensors file's JSON header, a GGUF file's
    /// metadata and tensor infos.
    pub header: &'a [u8],
}

/// A tensor's bytes as stored, with its dtype and shape.
pub(crate) struct RawTensor {
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) bytes: Vec<u8>,
}

/// One memory-mapped `.safetensors` file with its parsed header.
pub(crate) struct MappedFile {
    path: PathBuf,
    file: File,
    mmap: Mmap,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
    /// name → (dtype, shape, start, end) relative to `data_start`.
    infos: HashMap<String, (Dtype, Vec<usize>, usize, usize)>,
    /// The header's `__metadata__` (string to string), empty when absent.
    metadata: HashMap<String, String>,
}

impl MappedFile {
    pub(crate) fn open(path: &Path) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only and private to this process. A file
        // truncated or rewritten by another process while mapped is outside
        // what any mmap-based loader can defend against (transformers and
        // candle map the same way); the header parse below validates offsets
        // against the length at open time.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| ModelError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("not a valid safetensors file: {e}"),
            })?;
        let infos = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (start, end) = info.data_offsets;
                (name, (info.dtype, info.shape.clone(), start, end))
            })
            .collect();
        let metadata = metadata.metadata().clone().unwrap_or_default();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            mmap,
            data_start: 8 + header_len,
            infos,
            metadata,
        })
    }

    /// The header's `__metadata__` entries.
    pub(crate) fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The JSON header (without the 8-byte length before it).
    fn header(&self) -> &[u8] {
        self.mmap.get(8..self.data_start).unwrap_or_default()
    }

    /// The stored bytes of tensor `name` with its dtype and shape, as they
    /// are in the file; `None` when the file has no such tensor.
    pub(crate) fn raw(&self, name: &str) -> Result<Option<RawTensor>, ModelError> {
        let Some((dtype, shape, start, end)) = self.infos.get(name) else {
            return Ok(None);
        };
        let (from, to) = (self.data_start + start, self.data_start + end);
        if from > to || to > self.mmap.len() {
            return Err(ModelError::Corrupt {
                path: self.path.clone(),
                reason: format!("tensor `{name}` lies outside the file"),
            });
        }
        // Read, not borrowed from the map: pages touched through the map
        // stay in this process's resident set until it is unmapped, which
        // for a model loaded shard by shard means the whole checkpoint on
        // top of the model (1B bf16 → f32: 1.56× the f32 weights instead of
        // ~1.1×).
        let mut bytes = vec![0u8; to - from];
        read_exact_at(&self.file, &mut bytes, from as u64).map_err(|source| ModelError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(Some(RawTensor {
            dtype: *dtype,
            shape: shape.clone(),
            bytes,
        }))
    }

    fn load(&self, name: &str) -> Result<Option<HostTensor>, ModelError> {
        let Some(RawTensor {
            dtype,
            shape,
            bytes,
        }) = self.raw(name)?
        else {
            return Ok(None);
        };
        let corrupt = |reason: String| ModelError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let n: usize = shape.iter().product();
        let data = decode(&bytes, dtype).ok_or_else(|| ModelError::UnsupportedDtype {
            name: name.to_string(),
            dtype: format!("{dtype:?}"),
            path: self.path.clone(),
        })?;
        if data.len() != n {
            return Err(corrupt(format!(
                "tensor `{name}` has {} values for shape {shape:?}",
                data.len()
            )));
        }
        Ok(Some(HostTensor { shape, data }))
    }
}

/// Fills `buf` from `file` at `offset` without moving a shared cursor.
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Fills `buf` from `file` at `offset` (this platform has no `pread`;
/// loading is single-threaded, so the shared cursor is not raced).
#[cfg(not(unix))]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// Converts little-endian f32/f16/bf16 bytes to f32; `None` for other dtypes.
pub(crate) fn decode(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    let out = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    };
    Some(out)
}

/// The `weight_map` of `model.safetensors.index.json`.
#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// The safetensors weights of an HF model directory.
pub struct SafetensorsDir {
    dir: PathBuf,
    files: Vec<MappedFile>,
    /// Tensor name → index into `files`.
    by_name: HashMap<String, usize>,
}

impl SafetensorsDir {
    /// Opens `dir/model.safetensors`, or the shards named by
    /// `dir/model.safetensors.index.json`, and parses every header.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let mut files = Vec::new();
        let mut by_name = HashMap::new();
        if single.is_file() {
            let f = MappedFile::open(&single)?;
            by_name.extend(f.infos.keys().map(|k| (k.clone(), 0)));
            files.push(f);
        } else if index.is_file() {
            let text = std::fs::read(&index).map_err(|source| ModelError::Io {
                path: index.clone(),
                source,
            })?;
            let idx: ShardIndex =
                serde_json::from_slice(&text).map_err(|e| ModelError::Corrupt {
                    path: index.clone(),
                    reason: format!(
                        "not a valid shard index (expected {{\"weight_map\": {{name: file}}}}): {e}"
                    ),
                })?;
            let mut shard_of: HashMap<String, usize> = HashMap::new();
            for (name, shard) in &idx.weight_map {
                let i = match shard_of.get(shard) {
                    Some(&i) => i,
                    None => {
                        files.push(MappedFile::open(&dir.join(shard))?);
                        shard_of.insert(shard.clone(), files.len() - 1);
                        files.len() - 1
                    }
                };
                if !files[i].infos.contains_key(name) {
                    return Err(ModelError::Corrupt {
                        path: index.clone(),
                        reason: format!("maps `{name}` to `{shard}`, which does not contain it"),
                    });
                }
                by_name.insert(name.clone(), i);
            }
        } else {
            return Err(ModelError::NoWeights {
                dir: dir.to_path_buf(),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            by_name,
        })
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

impl TensorSource for SafetensorsDir {
    fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn load(&self, name: &str) -> Result<HostTensor, ModelError> {
        let missing = || ModelError::MissingTensor {
            name: name.to_string(),
            origin: self.dir.clone(),
        };
        let &i = self.by_name.get(name).ok_or_else(missing)?;
        self.files[i].load(name)?.ok_or_else(missing)
    }

    fn origin(&self) -> &Path {
        &self.dir
    }

    fn weight_files(&self) -> Vec<WeightFile<'_>> {
        self.files
            .iter()
            .map(|f| WeightFile {
                path: &f.path,
                header: f.header(),
            })
            .collect()
    }
}

/// A name-scoped view of a [`TensorSource`] that builds burn tensors on
/// `device` (candle's `VarBuilder`, for burn).
#[derive(Clone)]
pub struct VarBuilder<'a> {
    source: &'a dyn TensorSource,
    prefix: String,
    device: Device,
    /// Full names loaded so far, shared by every scope of one root.
    used: Rc<RefCell<BTreeSet<String>>>,
    /// Quantize the projection weights to NF4 while loading (QLoRA).
    nf4: Option<Nf4Load>,
    /// The on-disk NF4 cache of this load, shared by every scope.
    nf4_cache: Option<Rc<Nf4CacheSession>>,
}

/// How projection weights are quantized while loading (QLoRA): each weight
/// goes from the checkpoint straight to NF4, so the dense model is never
/// held in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Nf4Load {
    /// Compress the absmax vector too (bitsandbytes `compress_statistics`).
    pub double_quant: bool,
}

impl<'a> VarBuilder<'a> {
    /// A builder at the root of `source`.
    pub fn new(source: &'a dyn TensorSource, device: &Device) -> Self {
        Self {
            source,
            prefix: String::new(),
            device: device.clone(),
            used: Rc::default(),
            nf4: None,
            nf4_cache: None,
        }
    }

    /// This builder, quantizing the weights of linear projections to NF4
    /// as they load (`lm_head` and embeddings stay dense, as bitsandbytes
    /// leaves them).
    pub fn with_nf4(mut self, nf4: Option<Nf4Load>) -> Self {
        self.nf4 = nf4;
        self
    }

    /// This builder, taking NF4 weights from (and giving new ones to) the
    /// cache `session` ([`crate::nf4_cache`]).
    pub(crate) fn with_nf4_cache(mut self, session: Option<Rc<Nf4CacheSession>>) -> Self {
        self.nf4_cache = session;
        self
    }

    /// The NF4 setting of this builder.
    pub fn nf4(&self) -> Option<Nf4Load> {
        self.nf4
    }

    /// The builder for the sub-module `name` (`pp` = "push prefix").
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            source: self.source,
            prefix,
            device: self.device.clone(),
            used: Rc::clone(&self.used),
            nf4: self.nf4,
            nf4_cache: self.nf4_cache.clone(),
        }
    }

    /// Every full name loaded through this builder or its scopes, sorted.
    pub fn used_names(&self) -> Vec<String> {
        self.used.borrow().iter().cloned().collect()
    }

    /// The device tensors are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The full name of `name` under this scope.
    pub fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Whether the scoped tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.source.contains(&self.full_name(name))
    }

    /// Loads the scoped tensor `name`, checking it has shape `dims`.
    pub fn get<const D: usize>(
        &self,
        dims: [usize; D],
        name: &str,
    ) -> Result<Tensor<D>, ModelError> {
        let t = self.get_host(&dims, name)?;
        Ok(Tensor::from_data(
            TensorData::new(t.data, dims),
            &self.device,
        ))
    }

    /// Loads the scoped tensor `name` into host memory, checking it has
    /// shape `dims`.
    pub fn get_host(&self, dims: &[usize], name: &str) -> Result<HostTensor, ModelError> {
        let full = self.full_name(name);
        let t = self.source.load(&full)?;
        self.used.borrow_mut().insert(full.clone());
        if t.shape != dims {
            return Err(ModelError::ShapeMismatch {
                name: full,
                expected: dims.to_vec(),
                found: t.shape,
                origin: self.source.origin().to_path_buf(),
            });
        }
        Ok(t)
    }

    /// The scoped weight `name` (shape `dims`) quantized to NF4 with this
    /// builder's settings (plain NF4 when it has none): from the NF4 cache
    /// when this load has one and it holds the tensor (the dense weight is
    /// then never read), else quantized from the checkpoint, bitsandbytes'
    /// way, and handed to the cache.
    pub fn get_nf4(&self, dims: &[usize], name: &str) -> Result<Nf4Tensor, ModelError> {
        let opts = self.nf4.unwrap_or_default();
        let full = self.full_name(name);
        let cache = self
            .nf4_cache
            .as_deref()
            .filter(|c| c.settings() == opts && c.blocksize() == NF4_BLOCKSIZE);
        if let Some(cache) = cache
            && self.source.contains(&full)
            && let Some(q) = cache.lookup(&full, dims)
        {
            self.used.borrow_mut().insert(full);
            return Ok(q);
        }
        let host = self.get_host(dims, name)?;
        let q = Nf4Tensor::quantize(&host.data, &host.shape, NF4_BLOCKSIZE).map_err(|e| {
            ModelError::Quantize {
                name: full.clone(),
                message: e.to_string(),
            }
        })?;
        let q = if opts.double_quant {
            q.with_double_quant()
        } else {
            q
        };
        if let Some(cache) = cache {
            cache.record(&full, &q);
        }
        Ok(q)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decodes_half_types() {
        let b: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        assert_eq!(decode(&b, Dtype::BF16), Some(vec![1.5, -2.0]));
        let h: Vec<u8> = [0.25f32, 3.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        assert_eq!(decode(&h, Dtype::F16), Some(vec![0.25, 3.0]));
        assert_eq!(decode(&[0, 0, 0, 0], Dtype::I32), None);
    }
}
