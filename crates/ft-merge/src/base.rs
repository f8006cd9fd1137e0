//! The base model, whichever form it comes in: an HF safetensors directory
//! or a GGUF file (read through [`ft_gguf::HfView`]: HF names, PyTorch
//! shapes, dequantized to `f32`, llama.cpp's q/k permutation undone).
//!
//! The merge sees both as one list of [`SrcTensor`]s in streaming order and
//! reads them through a [`Reader`], which keeps at most one safetensors shard
//! mapped (a GGUF file is one map, paged in as tensors are read).

use std::path::{Path, PathBuf};

use ft_gguf::{GgmlType, HfView};
use safetensors::tensor::Dtype;

use crate::error::{MergeError, Result};
use crate::st::{self, BaseModel, ShardCursor};

/// Where a tensor's values come from and how they are stored there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// A safetensors tensor: index into [`BaseModel::tensors`], its dtype.
    Safetensors {
        /// Index into the base's tensor list.
        index: usize,
        /// Stored dtype.
        dtype: Dtype,
    },
    /// A GGUF tensor of this ggml type; `permuted` when its rows must be
    /// un-permuted (llama q/k), so its bytes are never copied as they are.
    Gguf {
        /// Stored ggml type.
        ty: GgmlType,
        /// Whether the rows are in llama.cpp's RoPE order.
        permuted: bool,
    },
}

/// One tensor of the base, as the merge plans it.
#[derive(Debug, Clone)]
pub(crate) struct SrcTensor {
    /// HF name.
    pub name: String,
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// Storage.
    pub stored: Stored,
    /// The file it is read from (for error messages).
    pub origin: PathBuf,
}

impl SrcTensor {
    /// The safetensors dtype whose bytes equal the stored bytes, if any:
    /// every safetensors dtype; GGUF F32/F16/BF16 when not permuted.
    pub fn plain_dtype(&self) -> Option<Dtype> {
        match self.stored {
            Stored::Safetensors { dtype, .. } => Some(dtype),
            Stored::Gguf {
                permuted: false,
                ty,
            } => match ty {
                GgmlType::F32 => Some(Dtype::F32),
                GgmlType::F16 => Some(Dtype::F16),
                GgmlType::BF16 => Some(Dtype::BF16),
                _ => None,
            },
            Stored::Gguf { permuted: true, .. } => None,
        }
    }

    /// Whether the merge can read it as `f32` (safetensors F32/F16/BF16; any
    /// GGUF type ft-gguf dequantizes).
    pub fn is_float(&self) -> bool {
        match self.stored {
            Stored::Safetensors { dtype, .. } => st::is_float(dtype),
            Stored::Gguf { ty, .. } => ty.can_dequantize(),
        }
    }

    /// The dtype `dtype: auto` writes: a safetensors tensor's own; for a GGUF
    /// tensor F32/F16/BF16 as stored, a quantized matrix BF16 (the usual
    /// dtype of the HF checkpoints GGUFs are made from, and at least as
    /// precise as any ggml block type), a quantized 1-D tensor F32.
    pub fn auto_dtype(&self) -> Dtype {
        match self.stored {
            Stored::Safetensors { dtype, .. } => dtype,
            Stored::Gguf { ty, .. } => match ty {
                GgmlType::F32 => Dtype::F32,
                GgmlType::F16 => Dtype::F16,
                GgmlType::BF16 => Dtype::BF16,
                _ if self.shape.len() < 2 => Dtype::F32,
                _ => Dtype::BF16,
            },
        }
    }

    /// The stored dtype's name, for error messages.
    pub fn stored_name(&self) -> String {
        match self.stored {
            Stored::Safetensors { dtype, .. } => dtype.to_string(),
            Stored::Gguf { ty, .. } => format!("GGUF {ty}"),
        }
    }
}

/// The opened base model.
#[derive(Debug)]
pub(crate) enum Base {
    /// An HF safetensors directory.
    Safetensors(BaseModel),
    /// A GGUF file.
    Gguf(Box<HfView>),
}

impl Base {
    /// Opens `path`: a `.gguf` file (or any file starting with `GGUF`), else
    /// an HF model directory. Returns the tensors in streaming order.
    pub fn open(path: &Path) -> Result<(Self, Vec<SrcTensor>)> {
        if path.is_file() {
            if !is_gguf(path) {
                return Err(MergeError::MissingFile {
                    what: "base model",
                    path: path.to_path_buf(),
                    help: "the base must be a Hugging Face model directory (config.json + \
                           safetensors) or a `.gguf` file; pass the directory, not a file in it",
                });
            }
            let view = HfView::open(path)?;
            if let Some(first) = view.unmapped().first() {
                return Err(MergeError::GgufBase {
                    path: path.to_path_buf(),
                    problem: format!(
                        "{} tensor(s) have no Hugging Face name, the first being `{first}`",
                        view.unmapped().len()
                    ),
                    help: "merging would drop them; merge into the model's Hugging Face \
                           directory instead",
                });
            }
            let tensors = view
                .tensors()
                .iter()
                .map(|t| SrcTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    stored: Stored::Gguf {
                        ty: t.ty,
                        permuted: t.rope.is_some(),
                    },
                    origin: path.to_path_buf(),
                })
                .collect();
            return Ok((Self::Gguf(Box::new(view)), tensors));
        }
        let config = path.join("config.json");
        if !config.is_file() {
            return Err(MergeError::MissingFile {
                what: "base model config",
                path: config,
                help: "the base must be a Hugging Face model directory (config.json + \
                       safetensors) or a `.gguf` file",
            });
        }
        let model = BaseModel::open(path)?;
        let tensors = model
            .tensors
            .iter()
            .enumerate()
            .map(|(index, t)| SrcTensor {
                name: t.name.clone(),
                shape: t.info.shape.clone(),
                stored: Stored::Safetensors {
                    index,
                    dtype: t.info.dtype,
                },
                origin: model.shards[t.shard].clone(),
            })
            .collect();
        Ok((Self::Safetensors(model), tensors))
    }

    /// Bytes of `t` as stored, when [`SrcTensor::plain_dtype`] is some.
    pub fn stored_nbytes(&self, t: &SrcTensor) -> usize {
        match (self, t.stored) {
            (Self::Safetensors(m), Stored::Safetensors { index, .. }) => {
                let (s, e) = m.tensors[index].info.data_offsets;
                e - s
            }
            _ => t.plain_dtype().map_or(0, st::float_size) * t.shape.iter().product::<usize>(),
        }
    }
}

/// Whether `path` is a GGUF file: named `*.gguf`, or starting with the magic.
fn is_gguf(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return true;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| magic == ft_gguf::reader::GGUF_MAGIC)
}

/// Reads base tensors in streaming order.
pub(crate) struct Reader<'a> {
    base: &'a Base,
    cursor: Option<ShardCursor<'a>>,
}

impl<'a> Reader<'a> {
    /// A reader with nothing mapped yet.
    pub fn new(base: &'a Base) -> Self {
        let cursor = match base {
            Base::Safetensors(m) => Some(ShardCursor::new(m)),
            Base::Gguf(_) => None,
        };
        Self { base, cursor }
    }

    /// The stored bytes of `t` (only meaningful when
    /// [`SrcTensor::plain_dtype`] is some).
    pub fn bytes(&mut self, t: &SrcTensor) -> Result<&[u8]> {
        match (self.base, t.stored, &mut self.cursor) {
            (Base::Safetensors(m), Stored::Safetensors { index, .. }, Some(cursor)) => {
                cursor.bytes(&m.tensors[index])
            }
            (Base::Gguf(view), Stored::Gguf { .. }, _) => {
                let gguf_name = view
                    .tensor(&t.name)
                    .map(|h| h.gguf_name.as_str())
                    .unwrap_or_default();
                Ok(view.file().tensor_data(gguf_name)?)
            }
            _ => Err(internal(t)),
        }
    }

    /// `t` as `f32`, row-major in its PyTorch shape.
    pub fn f32(&mut self, t: &SrcTensor) -> Result<Vec<f32>> {
        match (self.base, t.stored) {
            (Base::Safetensors(_), Stored::Safetensors { dtype, .. }) => {
                let bytes = self.bytes(t)?;
                Ok(st::to_f32(dtype, bytes))
            }
            (Base::Gguf(view), Stored::Gguf { .. }) => Ok(view.load(&t.name)?),
            _ => Err(internal(t)),
        }
    }
}

/// A tensor that does not belong to the base it is read from (a bug).
fn internal(t: &SrcTensor) -> MergeError {
    MergeError::BadIndex {
        path: t.origin.clone(),
        problem: format!(
            "internal: tensor `{}` read from another base than it was planned on",
            t.name
        ),
    }
}
