//! safetensors I/O for the merge: a lazily memory-mapped reader of HF model
//! directories (single file or sharded with an index) and a streaming,
//! hand-written shard writer.
//!
//! # On-disk format (safetensors)
//!
//! ```text
//! [u64 LE: n] [n bytes of JSON header, space-padded to a multiple of 8] [data]
//! header = {"__metadata__": {"format": "pt"},
//!           "<name>": {"dtype": "BF16", "shape": [out, in], "data_offsets": [start, end]}, ...}
//! ```
//!
//! Offsets are relative to the start of the data section, contiguous and in
//! file order. Because the merge knows every output tensor's dtype and shape
//! before it reads a single weight, the writer emits the complete header
//! first and then streams tensor bytes in, never holding more than one tensor.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorInfo};

use crate::error::{MergeError, Result};

/// Name of a single-file HF checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the index of a sharded HF checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Elements converted per rayon task.
const CONVERT_CHUNK: usize = 1 << 16;

/// Memory-maps `path` read-only.
pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| MergeError::io("opening", path, e))?;
    // SAFETY: the map is read-only and lives no longer than this merge; like
    // every safetensors loader we rely on nobody truncating the file while
    // it is mapped (a concurrent writer would be a user error, and the
    // atomic writers in ft never modify a file in place).
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }.map_err(|e| MergeError::io("memory-mapping", path, e))?;
    Ok(map)
}

/// Parses the header of a mapped safetensors file: (data start, tensors in
/// file order).
pub(crate) fn read_header(path: &Path, bytes: &[u8]) -> Result<(usize, Vec<(String, TensorInfo)>)> {
    let (n, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|source| {
        MergeError::Safetensors {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let infos = meta.tensors();
    let tensors = meta
        .offset_keys()
        .into_iter()
        .filter_map(|name| {
            let info = infos.get(&name).map(|i| (*i).clone());
            info.map(|i| (name, i))
        })
        .collect();
    Ok((8 + n, tensors))
}

/// One tensor of the base model: where it lives and what it is.
#[derive(Debug, Clone)]
pub(crate) struct BaseTensor {
    /// HF name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// Index into [`BaseModel::shards`].
    pub shard: usize,
    /// dtype, shape and offsets within the shard's data section.
    pub info: TensorInfo,
}

/// A base HF model directory: its shards and every tensor's location, in
/// shard order and, within a shard, file order. No weights are read here.
#[derive(Debug)]
pub(crate) struct BaseModel {
    /// Absolute shard paths.
    pub shards: Vec<PathBuf>,
    /// Start of each shard's data section.
    pub data_start: Vec<usize>,
    /// Every tensor, in streaming order.
    pub tensors: Vec<BaseTensor>,
}

impl BaseModel {
    /// Reads the shard list and headers of the HF model in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join(INDEX_FILE);
        let single = dir.join(SINGLE_FILE);
        let (shards, weight_map) = if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| MergeError::io("reading", &index_path, e))?;
            let index: IndexFile =
                serde_json::from_str(&text).map_err(|source| MergeError::Json {
                    path: index_path.clone(),
                    source,
                    help: "expected {\"metadata\": {...}, \"weight_map\": {tensor: shard file}}",
                })?;
            // Shards in name order (model-00001-of-…, model-00002-of-…).
            let mut files: Vec<String> = index.weight_map.values().cloned().collect();
            files.sort();
            files.dedup();
            let shards: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
            (shards, Some((index_path.clone(), index.weight_map)))
        } else if single.is_file() {
            (vec![single], None)
        } else {
            return Err(MergeError::MissingFile {
                what: "base model weights",
                path: single,
                help: "the base must be a Hugging Face model directory with `model.safetensors` \
                       or `model.safetensors.index.json` and its shards (`.bin` checkpoints are \
                       not supported: re-save with `save_pretrained(safe_serialization=True)`)",
            });
        };

        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        let mut data_start = Vec::with_capacity(shards.len());
        for (shard_idx, shard) in shards.iter().enumerate() {
            if !shard.is_file() {
                return Err(MergeError::MissingFile {
                    what: "base model shard",
                    path: shard.clone(),
                    help: "the index names this shard; copy the complete model directory",
                });
            }
            let map = map_file(shard)?;
            let (start, infos) = read_header(shard, &map)?;
            data_start.push(start);
            for (name, info) in infos {
                if let Some((index_path, weight_map)) = &weight_map {
                    let expected = weight_map.get(&name).map(|f| dir.join(f));
                    if expected.as_deref() != Some(shard.as_path()) {
                        return Err(MergeError::BadIndex {
                            path: index_path.clone(),
                            problem: format!(
                                "tensor `{name}` is in shard `{}` but the index maps it to {:?}",
                                shard.display(),
                                weight_map.get(&name)
                            ),
                        });
                    }
                }
                if by_name.insert(name.clone(), tensors.len()).is_some() {
                    return Err(MergeError::BadIndex {
                        path: shard.clone(),
                        problem: format!("tensor `{name}` appears in more than one shard"),
                    });
                }
                tensors.push(BaseTensor {
                    name,
                    shard: shard_idx,
                    info,
                });
            }
        }
        if let Some((index_path, weight_map)) = &weight_map
            && let Some(name) = weight_map.keys().find(|k| !by_name.contains_key(*k))
        {
            return Err(MergeError::BadIndex {
                path: index_path.clone(),
                problem: format!(
                    "tensor `{name}` is listed in the index but not found in shard `{}`",
                    weight_map.get(name).map(String::as_str).unwrap_or_default()
                ),
            });
        }
        Ok(Self {
            shards,
            data_start,
            tensors,
        })
    }
}

/// `model.safetensors.index.json`.
#[derive(serde::Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

/// Keeps at most one base shard mapped, so resident memory is bounded by a
/// shard rather than the model: moving to the next shard unmaps the previous.
pub(crate) struct ShardCursor<'a> {
    base: &'a BaseModel,
    current: Option<(usize, Mmap)>,
}

impl<'a> ShardCursor<'a> {
    /// A cursor with nothing mapped yet.
    pub fn new(base: &'a BaseModel) -> Self {
        Self {
            base,
            current: None,
        }
    }

    /// The raw bytes of `t`.
    pub fn bytes(&mut self, t: &BaseTensor) -> Result<&[u8]> {
        if self.current.as_ref().map(|(i, _)| *i) != Some(t.shard) {
            // Unmap first: two shards are never resident together.
            self.current = None;
            let map = map_file(&self.base.shards[t.shard])?;
            let _ = map.advise(memmap2::Advice::Sequential);
            self.current = Some((t.shard, map));
        }
        let start = self.base.data_start[t.shard];
        let (s, e) = t.info.data_offsets;
        let path = &self.base.shards[t.shard];
        match &self.current {
            Some((_, map)) => map
                .get(start + s..start + e)
                .ok_or_else(|| MergeError::BadIndex {
                    path: path.clone(),
                    problem: format!("tensor `{}` lies outside the file", t.name),
                }),
            None => Err(MergeError::BadIndex {
                path: path.clone(),
                problem: format!("tensor `{}` could not be mapped", t.name),
            }),
        }
    }
}

/// Whether the merge can convert this dtype to and from `f32`.
pub(crate) fn is_float(d: Dtype) -> bool {
    matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// Bytes per element of a float dtype the merge writes.
pub(crate) fn float_size(d: Dtype) -> usize {
    match d {
        Dtype::F16 | Dtype::BF16 => 2,
        _ => 4,
    }
}

/// Little-endian `bytes` of dtype `d` (F32/F16/BF16) as `f32`, exactly.
pub(crate) fn to_f32(d: Dtype, bytes: &[u8]) -> Vec<f32> {
    let size = float_size(d);
    let n = bytes.len() / size;
    let mut out = vec![0f32; n];
    out.par_chunks_mut(CONVERT_CHUNK)
        .zip(bytes.par_chunks(CONVERT_CHUNK * size))
        .for_each(|(o, b)| match d {
            Dtype::F16 => o
                .iter_mut()
                .zip(b.chunks_exact(2))
                .for_each(|(o, b)| *o = f16::from_le_bytes([b[0], b[1]]).to_f32()),
            Dtype::BF16 => o
                .iter_mut()
                .zip(b.chunks_exact(2))
                .for_each(|(o, b)| *o = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            _ => o
                .iter_mut()
                .zip(b.chunks_exact(4))
                .for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        });
    out
}

/// `values` as little-endian bytes of dtype `d` (F32/F16/BF16), rounding to
/// nearest, ties to even, as torch's `.to(dtype)` does.
pub(crate) fn from_f32(d: Dtype, values: &[f32]) -> Vec<u8> {
    let size = float_size(d);
    let mut out = vec![0u8; values.len() * size];
    out.par_chunks_mut(CONVERT_CHUNK * size)
        .zip(values.par_chunks(CONVERT_CHUNK))
        .for_each(|(o, v)| match d {
            Dtype::F16 => o
                .chunks_exact_mut(2)
                .zip(v)
                .for_each(|(o, v)| o.copy_from_slice(&f16::from_f32(*v).to_le_bytes())),
            Dtype::BF16 => o
                .chunks_exact_mut(2)
                .zip(v)
                .for_each(|(o, v)| o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes())),
            _ => o
                .chunks_exact_mut(4)
                .zip(v)
                .for_each(|(o, v)| o.copy_from_slice(&v.to_le_bytes())),
        });
    out
}

/// One entry of an output shard's header.
#[derive(Debug, Clone)]
pub(crate) struct OutTensor {
    /// Tensor name.
    pub name: String,
    /// Written dtype.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Bytes of data.
    pub nbytes: usize,
}

/// The safetensors header for `tensors` written back to back, with
/// `__metadata__ = {"format": "pt"}`, space-padded to a multiple of 8 bytes
/// (what the `safetensors` crate and Python package write).
pub(crate) fn header_bytes(tensors: &[OutTensor]) -> Vec<u8> {
    let mut json = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut offset = 0usize;
    for t in tensors {
        let info = TensorInfo {
            dtype: t.dtype,
            shape: t.shape.clone(),
            data_offsets: (offset, offset + t.nbytes),
        };
        offset += t.nbytes;
        json.push(',');
        // Serialising a String and a plain struct cannot fail.
        json.push_str(&serde_json::to_string(&t.name).unwrap_or_default());
        json.push(':');
        json.push_str(&serde_json::to_string(&info).unwrap_or_default());
    }
    json.push('}');
    let mut bytes = json.into_bytes();
    let pad = (8 - bytes.len() % 8) % 8;
    bytes.extend(std::iter::repeat_n(b' ', pad));
    bytes
}

/// Streams one shard: the header first (all shapes are known up front), then
/// each tensor's bytes in header order.
pub(crate) struct ShardWriter {
    path: PathBuf,
    out: BufWriter<File>,
    expected: Vec<OutTensor>,
    next: usize,
}

impl ShardWriter {
    /// Creates `path` and writes the header for `tensors`.
    pub fn create(path: PathBuf, tensors: Vec<OutTensor>) -> Result<Self> {
        let file = File::create(&path).map_err(|e| MergeError::io("creating", &path, e))?;
        let mut out = BufWriter::with_capacity(8 << 20, file);
        let header = header_bytes(&tensors);
        out.write_all(&(header.len() as u64).to_le_bytes())
            .and_then(|()| out.write_all(&header))
            .map_err(|e| MergeError::io("writing", &path, e))?;
        Ok(Self {
            path,
            out,
            expected: tensors,
            next: 0,
        })
    }

    /// Appends the data of the next tensor in header order.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(exp) = self.expected.get(self.next) else {
            return Err(MergeError::BadIndex {
                path: self.path.clone(),
                problem: format!("internal: tensor `{name}` written past the planned shard end"),
            });
        };
        if exp.name != name || exp.nbytes != bytes.len() {
            return Err(MergeError::BadIndex {
                path: self.path.clone(),
                problem: format!(
                    "internal: wrote `{name}` ({} bytes) where the plan has `{}` ({} bytes)",
                    bytes.len(),
                    exp.name,
                    exp.nbytes
                ),
            });
        }
        self.next += 1;
        self.out
            .write_all(bytes)
            .map_err(|e| MergeError::io("writing", &self.path, e))
    }

    /// Flushes and closes the shard; every planned tensor must be written.
    pub fn finish(self) -> Result<()> {
        let Self {
            path,
            out,
            expected,
            next,
        } = self;
        if next != expected.len() {
            return Err(MergeError::BadIndex {
                path,
                problem: format!(
                    "internal: {} of {} planned tensors written",
                    next,
                    expected.len()
                ),
            });
        }
        let file = out
            .into_inner()
            .map_err(|e| MergeError::io("writing", &path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| MergeError::io("flushing", &path, e))
    }
}

/// Splits tensors (with their output sizes) into shards exactly as
/// `huggingface_hub.split_torch_state_dict_into_shards` does (what
/// transformers' `save_pretrained` uses): in order, a new shard starts when
/// the next tensor would push the current one past `max`; a tensor larger
/// than `max` gets a shard of its own, placed before the shard being filled.
pub(crate) fn plan_shards(sizes: &[usize], max: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_size = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        let size = size as u64;
        if size > max {
            shards.push(vec![i]);
            continue;
        }
        if current_size + size > max {
            shards.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current.push(i);
        current_size += size;
    }
    if !current.is_empty() {
        shards.push(current);
    }
    shards
}

/// The file name of shard `i` (0-based) of `n`, as transformers names them;
/// a single shard is `model.safetensors`.
pub(crate) fn shard_name(i: usize, n: usize) -> String {
    if n == 1 {
        SINGLE_FILE.to_string()
    } else {
        format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_plan_matches_huggingface_hub() {
        // The docstring example of split_state_dict_into_shards_factory:
        // [6, 6, 2, 6, 2, 2] with max 10 -> [6], [6+2], [6+2+2].
        let plan = plan_shards(&[6, 6, 2, 6, 2, 2], 10);
        assert_eq!(plan, vec![vec![0], vec![1, 2], vec![3, 4, 5]]);
        // An oversized tensor gets its own shard before the one being filled.
        let plan = plan_shards(&[3, 20, 3], 10);
        assert_eq!(plan, vec![vec![1], vec![0, 2]]);
        assert_eq!(shard_name(0, 1), "model.safetensors");
        assert_eq!(shard_name(1, 3), "model-00002-of-00003.safetensors");
    }

    #[test]
    fn writer_output_reads_back_with_the_safetensors_crate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.safetensors");
        let a = from_f32(Dtype::BF16, &[1.0, -2.5, 3.0]);
        let b = from_f32(Dtype::F32, &[0.5]);
        let plan = vec![
            OutTensor {
                name: "a".into(),
                dtype: Dtype::BF16,
                shape: vec![3],
                nbytes: a.len(),
            },
            OutTensor {
                name: "b\"q".into(),
                dtype: Dtype::F32,
                shape: vec![1, 1],
                nbytes: b.len(),
            },
        ];
        let mut w = ShardWriter::create(path.clone(), plan).expect("create");
        w.write("a", &a).expect("a");
        w.write("b\"q", &b).expect("b");
        w.finish().expect("finish");
        let bytes = std::fs::read(&path).expect("read");
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8")) as usize;
        assert_eq!(n % 8, 0);
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid");
        let ta = st.tensor("a").expect("a");
        assert_eq!(ta.dtype(), Dtype::BF16);
        assert_eq!(to_f32(Dtype::BF16, ta.data()), vec![1.0, -2.5, 3.0]);
        assert_eq!(st.tensor("b\"q").expect("b").shape(), &[1, 1]);
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("meta");
        assert_eq!(
            meta.metadata()
                .as_ref()
                .and_then(|m| m.get("format"))
                .map(String::as_str),
            Some("pt")
        );
    }

    #[test]
    fn rounding_is_nearest_even() {
        // 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (1.0).
        let halfway = 1.0 + f32::powi(2.0, -8);
        let b = from_f32(Dtype::BF16, &[halfway]);
        assert_eq!(to_f32(Dtype::BF16, &b), vec![1.0]);
        // 1 + 3·2^-8 is halfway too; the even neighbour is 1 + 2^-6.
        let b = from_f32(Dtype::BF16, &[1.0 + 3.0 * f32::powi(2.0, -8)]);
        assert_eq!(to_f32(Dtype::BF16, &b), vec![1.0 + f32::powi(2.0, -6)]);
    }
}
