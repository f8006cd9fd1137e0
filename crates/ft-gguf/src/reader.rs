//! GGUF reader with explicit caps for untrusted files.
//!
//! [`Gguf::parse`] decodes the header, metadata and tensor infos from a byte
//! slice and validates every tensor's data range against the slice length;
//! [`GgufFile::open`] memory-maps a file and parses it, after which
//! [`GgufFile::tensor_data`] hands out zero-copy slices by tensor name.
//!
//! Every count and length read from the file is checked against a cap in
//! [`Limits`] *and* against the bytes that remain before anything is
//! allocated, so a 40-byte hostile file cannot make the reader reserve
//! gigabytes. Errors name the file, the byte offset, the key or tensor being
//! read, and what was expected ([`Error::Malformed`]).
//!
//! What is accepted (a superset of llama.cpp's `gguf.cpp` checks):
//! * version 2 or 3, little-endian;
//! * at most [`MAX_DIMS`] dimensions, element count within `i64`, first
//!   dimension a whole number of blocks of the tensor type;
//! * `general.alignment`, if present, a non-zero power-of-two `u32`;
//! * tensor offsets multiples of the alignment, data inside the file, no two
//!   tensors overlapping (llama.cpp further requires them packed in order;
//!   this reader does not need that);
//! * unique metadata keys and tensor names, tensor names under 64 bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Malformed, Result};
use crate::types::{GgmlType, ValueType};
use crate::value::{Array, Metadata, Value};

/// The four magic bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The version this crate writes.
pub const GGUF_VERSION: u32 = 3;
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Metadata key holding a custom alignment (`u32`).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most dimensions a ggml tensor has (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Longest tensor name llama.cpp accepts, in bytes (`GGML_MAX_NAME` - 1).
pub const MAX_TENSOR_NAME: u64 = 63;

/// Caps on counts and lengths read from a file. The defaults admit every
/// real model seen so far (150k-token vocabularies, 100 kB chat templates,
/// tens of thousands of tensors) with a wide margin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest string, in bytes. Default 16 MiB.
    pub max_string_len: u64,
    /// Most elements in one array. Default 2^24 (16.7 M).
    pub max_array_len: u64,
    /// Most metadata entries. Default 65 536.
    pub max_kv_count: u64,
    /// Most tensors. Default 2^20 (1 M).
    pub max_tensor_count: u64,
    /// Deepest array nesting (an array of scalars is depth 1). Default 4.
    pub max_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_string_len: 16 << 20,
            max_array_len: 1 << 24,
            max_kv_count: 1 << 16,
            max_tensor_count: 1 << 20,
            max_depth: 4,
        }
    }
}

/// One tensor's entry in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name (`blk.0.attn_q.weight` …).
    pub name: String,
    /// Dimensions in ggml order: `shape[0]` is the fastest-varying (row
    /// length), i.e. the reverse of the numpy/PyTorch shape.
    pub shape: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (1 for a tensor with no dimensions).
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Bytes of data (validated at parse time not to overflow).
    pub fn n_bytes(&self) -> u64 {
        self.ty.bytes_for(self.n_elements()).unwrap_or(u64::MAX)
    }
}

/// A parsed GGUF header: everything but the tensor data.
#[derive(Clone, Debug, PartialEq)]
pub struct Gguf {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Metadata,
    /// Tensor infos in file order (read-only: [`Gguf::tensor`] looks names
    /// up through an index built with them).
    tensors: Vec<TensorInfo>,
    /// Data alignment (`general.alignment` or 32).
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Tensor name → index into `tensors`.
    index: HashMap<String, usize>,
}

/// Internal parse result: the offset and the problem, to be wrapped with the
/// file path and context by the caller.
type PResult<T> = std::result::Result<T, (u64, Malformed)>;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64) -> PResult<&'a [u8]> {
        let available = self.remaining();
        if n > available {
            return Err((
                self.pos as u64,
                Malformed::Truncated {
                    needed: n,
                    available,
                },
            ));
        }
        // `n <= remaining`, which fits usize.
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self) -> PResult<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> PResult<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// Checks `count` elements of at least `min_size` bytes against a cap and
    /// the remaining bytes. `at` is the offset of the count field.
    fn check_count(
        &self,
        what: &'static str,
        count: u64,
        max: u64,
        min_size: u64,
        at: u64,
    ) -> PResult<()> {
        if count > max {
            return Err((
                at,
                Malformed::LimitExceeded {
                    what,
                    found: count,
                    max,
                },
            ));
        }
        let available = self.remaining();
        if count.saturating_mul(min_size) > available {
            return Err((
                at,
                Malformed::CountPastEof {
                    what,
                    found: count,
                    min_size,
                    available,
                },
            ));
        }
        Ok(())
    }

    fn string_with_cap(&mut self, max: u64, what: &'static str) -> PResult<String> {
        let at = self.pos as u64;
        let len = self.u64()?;
        if len > max {
            return Err((
                at,
                Malformed::LimitExceeded {
                    what,
                    found: len,
                    max,
                },
            ));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            (
                at,
                Malformed::InvalidUtf8 {
                    reason: e.utf8_error().to_string(),
                },
            )
        })
    }

    fn string(&mut self) -> PResult<String> {
        self.string_with_cap(self.limits.max_string_len, "string length")
    }

    fn value_type(&mut self) -> PResult<ValueType> {
        let at = self.pos as u64;
        let id = self.u32()?;
        ValueType::from_id(id).ok_or((at, Malformed::UnknownValueType { found: id }))
    }

    fn bool(&mut self) -> PResult<bool> {
        let at = self.pos as u64;
        match self.array::<1>()?[0] {
            0 => Ok(false),
            1 => Ok(true),
            found => Err((at, Malformed::BadBool { found })),
        }
    }

    fn value(&mut self, ty: ValueType, depth: u32) -> PResult<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>()?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            ValueType::Bool => Value::Bool(self.bool()?),
            ValueType::String => Value::String(self.string()?),
            ValueType::Array => Value::Array(self.array_value(depth + 1)?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
        })
    }

    /// Reads `count` fixed-size little-endian elements in one slice.
    fn fixed<T, const N: usize>(&mut self, count: u64, f: fn([u8; N]) -> T) -> PResult<Vec<T>> {
        let bytes = self.take(count * N as u64)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect())
    }

    /// An array value (element type, count, elements) at nesting `depth` (1 = top).
    fn array_value(&mut self, depth: u32) -> PResult<Array> {
        let start = self.pos as u64;
        if depth > self.limits.max_depth {
            return Err((
                start,
                Malformed::TooDeep {
                    found: depth,
                    max: self.limits.max_depth,
                },
            ));
        }
        let ty = self.value_type()?;
        let count_at = self.pos as u64;
        let count = self.u64()?;
        self.check_count(
            "array length",
            count,
            self.limits.max_array_len,
            ty.min_encoded_size(),
            count_at,
        )?;
        // `check_count` bounded `count` by the remaining bytes: it fits usize.
        let n = count as usize;
        Ok(match ty {
            ValueType::U8 => Array::U8(self.take(count)?.to_vec()),
            ValueType::I8 => Array::I8(self.fixed(count, i8::from_le_bytes)?),
            ValueType::U16 => Array::U16(self.fixed(count, u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(self.fixed(count, i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(self.fixed(count, u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(self.fixed(count, i32::from_le_bytes)?),
            ValueType::F32 => Array::F32(self.fixed(count, f32::from_le_bytes)?),
            ValueType::U64 => Array::U64(self.fixed(count, u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(self.fixed(count, i64::from_le_bytes)?),
            ValueType::F64 => Array::F64(self.fixed(count, f64::from_le_bytes)?),
            ValueType::Bool => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool()?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string()?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

/// Rounds `x` up to a multiple of `align` (a power of two), as `GGML_PAD`.
pub(crate) fn pad_to(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

impl Gguf {
    /// Parses a whole GGUF file held in `bytes`; `path` only labels errors.
    /// Validates every tensor's data range against `bytes.len()`.
    pub fn parse(bytes: &[u8], path: &Path, limits: &Limits) -> Result<Gguf> {
        let mal = |offset: u64, at: String, kind: Malformed| Error::Malformed {
            path: path.to_path_buf(),
            offset,
            at,
            kind,
        };
        let header = |(offset, kind): (u64, Malformed)| mal(offset, "header".into(), kind);
        let mut c = Cursor {
            buf: bytes,
            pos: 0,
            limits,
        };

        // Header: magic, version, tensor count, kv count.
        let magic = c.array::<4>().map_err(header)?;
        if magic != GGUF_MAGIC {
            return Err(mal(
                0,
                "header".into(),
                Malformed::BadMagic { found: magic },
            ));
        }
        let version = c.u32().map_err(header)?;
        if !(2..=3).contains(&version) {
            return Err(mal(
                4,
                "header".into(),
                Malformed::BadVersion { found: version },
            ));
        }
        let n_tensors = c.u64().map_err(header)?;
        let n_kv = c.u64().map_err(header)?;
        // Smallest kv: 8-byte key length + 4-byte type + 1-byte value.
        c.check_count("metadata count", n_kv, limits.max_kv_count, 13, 16)
            .map_err(header)?;

        // Metadata.
        let mut metadata = Metadata::new();
        let mut seen = std::collections::HashSet::new();
        let mut alignment = DEFAULT_ALIGNMENT;
        for i in 0..n_kv {
            let kv_at = c.pos as u64;
            let key = c
                .string()
                .map_err(|(o, k)| mal(o, format!("key of metadata entry {i}"), k))?;
            let ctx = || format!("metadata key `{key}`");
            let ty = c.value_type().map_err(|(o, k)| mal(o, ctx(), k))?;
            let value = c.value(ty, 0).map_err(|(o, k)| mal(o, ctx(), k))?;
            if !seen.insert(key.clone()) {
                return Err(mal(
                    kv_at,
                    ctx(),
                    Malformed::Duplicate {
                        what: "metadata key",
                        name: key,
                    },
                ));
            }
            if key == ALIGNMENT_KEY {
                alignment = match value {
                    Value::U32(a) if a.is_power_of_two() => a.into(),
                    ref other => {
                        return Err(mal(
                            kv_at,
                            ctx(),
                            Malformed::BadAlignment {
                                found: format!("{other:?}"),
                            },
                        ));
                    }
                };
            }
            metadata.push_unchecked(key, value);
        }

        // Tensor infos. Smallest info: 8-byte name length + 4 dims + 4 type + 8 offset.
        c.check_count("tensor count", n_tensors, limits.max_tensor_count, 24, 8)
            .map_err(|(o, k)| mal(o, "header".into(), k))?;
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut info_offsets = Vec::with_capacity(n_tensors as usize);
        let mut index = HashMap::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let info_at = c.pos as u64;
            let name = c
                .string_with_cap(MAX_TENSOR_NAME, "tensor name length")
                .map_err(|(o, k)| {
                    let k = match k {
                        Malformed::LimitExceeded { found, .. } => Malformed::NameTooLong { found },
                        k => k,
                    };
                    mal(o, format!("name of tensor {i}"), k)
                })?;
            let ctx = || format!("tensor `{name}`");
            let dims_at = c.pos as u64;
            let n_dims = c.u32().map_err(|(o, k)| mal(o, ctx(), k))?;
            if n_dims > MAX_DIMS {
                return Err(mal(dims_at, ctx(), Malformed::BadDims { found: n_dims }));
            }
            let mut shape = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                shape.push(c.u64().map_err(|(o, k)| mal(o, ctx(), k))?);
            }
            let ty_at = c.pos as u64;
            let ty_id = c.u32().map_err(|(o, k)| mal(o, ctx(), k))?;
            let ty = GgmlType::from_id(ty_id)
                .ok_or_else(|| mal(ty_at, ctx(), Malformed::UnknownTensorType { found: ty_id }))?;
            let offset = c.u64().map_err(|(o, k)| mal(o, ctx(), k))?;

            let n_elements = shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n <= i64::MAX as u64 && shape.iter().all(|&d| d <= i64::MAX as u64));
            let Some(n_elements) = n_elements else {
                return Err(mal(dims_at, ctx(), Malformed::ShapeOverflow { shape }));
            };
            let ne0 = shape.first().copied().unwrap_or(1);
            if !ne0.is_multiple_of(ty.block_size() as u64) {
                return Err(mal(
                    dims_at,
                    ctx(),
                    Malformed::PartialBlock {
                        ne0,
                        ty,
                        block: ty.block_size(),
                    },
                ));
            }
            if ty.bytes_for(n_elements).is_none() {
                return Err(mal(dims_at, ctx(), Malformed::ShapeOverflow { shape }));
            }
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(mal(
                    info_at,
                    ctx(),
                    Malformed::Duplicate {
                        what: "tensor name",
                        name,
                    },
                ));
            }
            tensors.push(TensorInfo {
                name,
                shape,
                ty,
                offset,
            });
            info_offsets.push(info_at);
        }

        // Data section: aligned start, every tensor aligned, inside the file,
        // and disjoint from every other.
        let data_offset = pad_to(c.pos as u64, alignment).unwrap_or(u64::MAX);
        let file_len = bytes.len() as u64;
        for (t, &at) in tensors.iter().zip(&info_offsets) {
            let ctx = format!("tensor `{}`", t.name);
            if !t.offset.is_multiple_of(alignment) {
                return Err(mal(
                    at,
                    ctx,
                    Malformed::Misaligned {
                        offset: t.offset,
                        alignment,
                    },
                ));
            }
            let start = data_offset.saturating_add(t.offset);
            let end = start.saturating_add(t.n_bytes());
            if t.n_bytes() > 0 && end > file_len {
                return Err(mal(
                    at,
                    ctx,
                    Malformed::DataPastEof {
                        start,
                        end,
                        file_len,
                    },
                ));
            }
        }
        let mut order: Vec<usize> = (0..tensors.len())
            .filter(|&i| tensors[i].n_bytes() > 0)
            .collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for w in order.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            let a_end = a.offset + a.n_bytes();
            if b.offset < a_end {
                return Err(mal(
                    info_offsets[w[1]],
                    format!("tensor `{}`", b.name),
                    Malformed::Overlap {
                        other: a.name.clone(),
                        start: b.offset,
                        end: b.offset + b.n_bytes(),
                        other_start: a.offset,
                        other_end: a_end,
                    },
                ));
            }
        }

        Ok(Gguf {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            index,
        })
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// The data of `info` within the whole-file bytes it was parsed from.
    /// Ranges were validated by [`Gguf::parse`].
    pub fn data_of<'a>(&self, bytes: &'a [u8], info: &TensorInfo) -> &'a [u8] {
        let range = || {
            let start = usize::try_from(self.data_offset.checked_add(info.offset)?).ok()?;
            let end = start.checked_add(usize::try_from(info.n_bytes()).ok()?)?;
            bytes.get(start..end)
        };
        range().unwrap_or(&[])
    }
}

/// A GGUF file opened by memory map: header parsed, tensor data served as
/// zero-copy slices.
pub struct GgufFile {
    path: PathBuf,
    gguf: Gguf,
    map: Option<memmap2::Mmap>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("gguf", &self.gguf)
            .finish_non_exhaustive()
    }
}

impl GgufFile {
    /// Opens and parses `path` with the default [`Limits`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &Limits::default())
    }

    /// Opens and parses `path` with explicit limits.
    pub fn open_with(path: impl AsRef<Path>, limits: &Limits) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| Error::io("opening", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading metadata of", &path, e))?
            .len();
        let map = if len == 0 {
            // mmap of an empty file fails on some platforms; parse reports truncation.
            None
        } else {
            // SAFETY: the map is read-only and private to this value. Like every
            // mmap-based model loader (llama.cpp, candle, safetensors) this
            // relies on the file not being truncated or rewritten while
            // mapped; `ft` writes outputs via temp-then-rename, which never
            // modifies a file in place.
            Some(
                unsafe { memmap2::Mmap::map(&file) }
                    .map_err(|e| Error::io("memory-mapping", &path, e))?,
            )
        };
        let gguf = Gguf::parse(map.as_deref().unwrap_or(&[]), &path, limits)?;
        Ok(Self { path, gguf, map })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header.
    pub fn header(&self) -> &Gguf {
        &self.gguf
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.gguf.metadata
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.gguf.tensors
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The info of tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.gguf.tensor(name).ok_or_else(|| Error::TensorNotFound {
            path: self.path.clone(),
            name: name.to_owned(),
        })
    }

    /// The raw bytes of tensor `name` (zero-copy from the map).
    pub fn tensor_data(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor_info(name)?;
        Ok(self.gguf.data_of(self.bytes(), info))
    }

    /// Tensor `name` dequantized to f32 (row-major, ggml order flattened).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor_info(name)?;
        Ok(crate::quant::dequantize(
            info.ty,
            self.gguf.data_of(self.bytes(), info),
        )?)
    }

    /// Metadata value `key`, which must be present.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.metadata()
            .get(key)
            .ok_or_else(|| Error::wrong_type(self.path.clone(), key, None, "a value"))
    }

    /// String metadata `key`, which must be present and a string.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| {
            Error::wrong_type(self.path.clone(), key, Some(v.value_type()), "string")
        })
    }

    /// Integer metadata `key` (any unsigned or non-negative integer type).
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| {
            Error::wrong_type(
                self.path.clone(),
                key,
                Some(v.value_type()),
                "a non-negative integer",
            )
        })
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.require_str("general.architecture")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Hand-built hostile files. Each test starts from a small valid file and
    //! breaks one thing, so a failure points at one check.
    use super::*;

    /// Little-endian byte builder.
    #[derive(Default, Clone)]
    struct B(Vec<u8>);

    impl B {
        fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
            let mut b = B(b"GGUF".to_vec());
            b.u32(version).u64(n_tensors).u64(n_kv);
            b
        }
        fn u8(&mut self, v: u8) -> &mut Self {
            self.0.push(v);
            self
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.0.extend_from_slice(&v.to_le_bytes());
            self
        }
        fn str(&mut self, s: &str) -> &mut Self {
            self.u64(s.len() as u64);
            self.0.extend_from_slice(s.as_bytes());
            self
        }
        /// A tensor info.
        fn tensor(&mut self, name: &str, shape: &[u64], ty: u32, offset: u64) -> &mut Self {
            self.str(name).u32(shape.len() as u32);
            for &d in shape {
                self.u64(d);
            }
            self.u32(ty).u64(offset)
        }
        /// Zero padding to `align`, then `n` data bytes.
        fn data(&mut self, align: usize, n: usize) -> &mut Self {
            while !self.0.len().is_multiple_of(align) {
                self.0.push(0);
            }
            self.0.extend((0..n).map(|i| i as u8));
            self
        }
    }

    fn parse(b: &B) -> Result<Gguf> {
        Gguf::parse(&b.0, Path::new("hostile.gguf"), &Limits::default())
    }

    fn kind(b: &B) -> Malformed {
        match parse(b) {
            Ok(g) => panic!("parsed a hostile file: {g:?}"),
            Err(e) => e
                .malformed()
                .cloned()
                .unwrap_or_else(|| panic!("not a Malformed error: {e}")),
        }
    }

    /// A valid file: one string kv, one u32 array kv, two f32 tensors.
    fn valid() -> B {
        let mut b = B::header(3, 2, 2);
        b.str("general.architecture").u32(8).str("llama");
        b.str("a.list").u32(9).u32(4).u64(3).u32(1).u32(2).u32(3);
        b.tensor("a", &[4], 0, 0).tensor("b", &[2, 2], 0, 32);
        b.data(32, 16).data(32, 16);
        b
    }

    #[test]
    fn valid_file_parses() {
        let b = valid();
        let g = parse(&b).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.metadata.get_str("general.architecture"), Some("llama"));
        assert_eq!(
            g.metadata.get("a.list"),
            Some(&Value::Array(Array::U32(vec![1, 2, 3])))
        );
        assert_eq!(g.tensors().len(), 2);
        assert_eq!(g.tensors()[1].shape, vec![2, 2]);
        assert_eq!(g.data_offset % 32, 0);
        let data = g.data_of(&b.0, &g.tensors()[1]);
        assert_eq!(data, &(0u8..16).collect::<Vec<_>>()[..]);
        // Version 2 has the same layout.
        let mut v2 = b.clone();
        v2.0[4] = 2;
        assert_eq!(parse(&v2).unwrap().version, 2);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let b = valid();
        for len in 0..b.0.len() {
            let cut = B(b.0[..len].to_vec());
            let k = kind(&cut);
            assert!(
                matches!(
                    k,
                    Malformed::Truncated { .. }
                        | Malformed::DataPastEof { .. }
                        | Malformed::CountPastEof { .. }
                ),
                "cut at {len}: {k:?}"
            );
        }
    }

    #[test]
    fn error_names_file_offset_and_key() {
        let mut b = B::header(3, 0, 1);
        b.str("general.name").u32(13);
        let e = parse(&b).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("hostile.gguf"), "{msg}");
        assert!(msg.contains("at byte 44"), "{msg}");
        assert!(msg.contains("metadata key `general.name`"), "{msg}");
        assert!(msg.contains("unknown metadata value type id 13"), "{msg}");
    }

    #[test]
    fn bad_magic_and_version() {
        let mut b = valid();
        b.0[..4].copy_from_slice(b"GGML");
        assert_eq!(kind(&b), Malformed::BadMagic { found: *b"GGML" });
        for v in [0, 1, 4, 0x0300_0000] {
            let mut b = valid();
            b.0[4..8].copy_from_slice(&u32::to_le_bytes(v));
            assert_eq!(kind(&b), Malformed::BadVersion { found: v });
        }
    }

    #[test]
    fn huge_string_length_is_capped_before_allocation() {
        let mut b = B::header(3, 0, 1);
        b.u64(u64::MAX).u64(0);
        assert!(matches!(
            kind(&b),
            Malformed::LimitExceeded {
                what: "string length",
                found: u64::MAX,
                ..
            }
        ));
        // Under the cap but longer than the file: truncated, still no allocation.
        let mut b = B::header(3, 0, 1);
        b.u64(1 << 20).0.extend_from_slice(b"abcdefgh");
        assert!(matches!(
            kind(&b),
            Malformed::Truncated {
                needed: 1048576,
                available: 8
            }
        ));
        // A string value (not a key) gets the same cap.
        let mut b = B::header(3, 0, 1);
        b.str("k").u32(8).u64(1 << 40);
        assert!(matches!(
            kind(&b),
            Malformed::LimitExceeded {
                what: "string length",
                ..
            }
        ));
    }

    #[test]
    fn huge_array_count_is_capped_before_allocation() {
        let mut b = B::header(3, 0, 1);
        b.str("k").u32(9).u32(0).u64(1 << 40);
        assert!(matches!(
            kind(&b),
            Malformed::LimitExceeded {
                what: "array length",
                found: 1099511627776,
                ..
            }
        ));
        // Under the cap but more than the file can hold (strings need 8 bytes each).
        let mut b = B::header(3, 0, 1);
        b.str("k").u32(9).u32(8).u64(1000).str("x");
        assert!(matches!(
            kind(&b),
            Malformed::CountPastEof {
                what: "array length",
                found: 1000,
                min_size: 8,
                available: 9
            }
        ));
    }

    #[test]
    fn huge_kv_and_tensor_counts() {
        let b = B::header(3, 0, u64::MAX);
        assert!(matches!(
            kind(&b),
            Malformed::LimitExceeded {
                what: "metadata count",
                ..
            }
        ));
        let b = B::header(3, 0, 1000);
        assert!(matches!(
            kind(&b),
            Malformed::CountPastEof {
                what: "metadata count",
                ..
            }
        ));
        let b = B::header(3, u64::MAX, 0);
        assert!(matches!(
            kind(&b),
            Malformed::LimitExceeded {
                what: "tensor count",
                ..
            }
        ));
        let b = B::header(3, 5, 0);
        assert!(matches!(
            kind(&b),
            Malformed::CountPastEof {
                what: "tensor count",
                ..
            }
        ));
    }

    #[test]
    fn unknown_type_ids() {
        let mut b = B::header(3, 0, 1);
        b.str("k").u32(13).u32(0);
        assert_eq!(kind(&b), Malformed::UnknownValueType { found: 13 });
        // Inside an array.
        let mut b = B::header(3, 0, 1);
        b.str("k").u32(9).u32(99).u64(0);
        assert_eq!(kind(&b), Malformed::UnknownValueType { found: 99 });
        // A retired ggml type id (Q4_2 = 4).
        let mut b = B::header(3, 1, 0);
        b.tensor("t", &[32], 4, 0).data(32, 32);
        assert_eq!(kind(&b), Malformed::UnknownTensorType { found: 4 });
    }

    #[test]
    fn tensor_data_past_eof() {
        let mut b = B::header(3, 1, 0);
        b.tensor("t", &[8], 0, 0).data(32, 31);
        assert!(
            matches!(kind(&b), Malformed::DataPastEof { end, file_len, .. } if end == file_len + 1)
        );
        // Offsets that overflow u64 when added to the data start.
        let mut b = B::header(3, 1, 0);
        b.tensor("t", &[8], 0, u64::MAX - 31).data(32, 32);
        assert!(matches!(kind(&b), Malformed::DataPastEof { .. }));
    }

    #[test]
    fn misaligned_offset() {
        let mut b = B::header(3, 1, 0);
        b.tensor("t", &[4], 0, 1).data(32, 64);
        assert_eq!(
            kind(&b),
            Malformed::Misaligned {
                offset: 1,
                alignment: 32
            }
        );
        // With a custom alignment of 64, 32 is misaligned.
        let mut b = B::header(3, 1, 1);
        b.str(ALIGNMENT_KEY).u32(4).u32(64);
        b.tensor("t", &[4], 0, 32).data(64, 64);
        assert_eq!(
            kind(&b),
            Malformed::Misaligned {
                offset: 32,
                alignment: 64
            }
        );
    }

    #[test]
    fn overlapping_tensors() {
        let mut b = B::header(3, 2, 0);
        b.tensor("a", &[16], 0, 0)
            .tensor("b", &[8], 0, 32)
            .data(32, 64);
        match kind(&b) {
            Malformed::Overlap {
                other,
                start,
                other_end,
                ..
            } => {
                assert_eq!((other.as_str(), start, other_end), ("a", 32, 64));
            }
            k => panic!("{k:?}"),
        }
        // Zero-sized tensors overlap nothing.
        let mut b = B::header(3, 2, 0);
        b.tensor("a", &[8], 0, 0)
            .tensor("empty", &[0, 4], 0, 0)
            .data(32, 32);
        assert!(parse(&b).is_ok());
    }

    #[test]
    fn nesting_depth_is_capped() {
        let limits = Limits::default();
        let mut b = B::header(3, 0, 1);
        b.str("deep").u32(9);
        for _ in 0..limits.max_depth {
            b.u32(9).u64(1);
        }
        b.u32(0).u64(0);
        assert!(matches!(kind(&b), Malformed::TooDeep { found: 5, max: 4 }));
        // Exactly at the cap parses.
        let mut b = B::header(3, 0, 1);
        b.str("deep").u32(9);
        for _ in 0..limits.max_depth - 1 {
            b.u32(9).u64(1);
        }
        b.u32(0).u64(2).u8(7).u8(8);
        let g = parse(&b).unwrap();
        let mut a = g.metadata.get("deep").and_then(Value::as_array).unwrap();
        while let Array::Array(inner) = a {
            a = &inner[0];
        }
        assert_eq!(a, &Array::U8(vec![7, 8]));
    }

    #[test]
    fn bad_dims_shape_and_blocks() {
        let mut b = B::header(3, 1, 0);
        b.tensor("t", &[1, 1, 1, 1, 1], 0, 0).data(32, 4);
        assert_eq!(kind(&b), Malformed::BadDims { found: 5 });
        let mut b = B::header(3, 1, 0);
        b.tensor("t", &[1 << 32, 1 << 32], 0, 0);
        assert!(matches!(kind(&b), Malformed::ShapeOverflow { .. }));
        let mut b = B::header(3, 1, 0);
        b.tensor("t", &[u64::MAX], 0, 0);
        assert!(matches!(kind(&b), Malformed::ShapeOverflow { .. }));
        let mut b = B::header(3, 1, 0);
        b.tensor("t", &[48], GgmlType::Q8_0.id(), 0).data(32, 64);
        assert!(matches!(
            kind(&b),
            Malformed::PartialBlock {
                ne0: 48,
                block: 32,
                ..
            }
        ));
    }

    #[test]
    fn duplicates_alignment_utf8_bool_and_names() {
        let mut b = B::header(3, 0, 2);
        b.str("k").u32(4).u32(1).str("k").u32(4).u32(2);
        assert!(matches!(
            kind(&b),
            Malformed::Duplicate {
                what: "metadata key",
                ..
            }
        ));

        let mut b = B::header(3, 2, 0);
        b.tensor("t", &[8], 0, 0)
            .tensor("t", &[8], 0, 32)
            .data(32, 64);
        assert!(matches!(
            kind(&b),
            Malformed::Duplicate {
                what: "tensor name",
                ..
            }
        ));

        for (ty, v) in [(4u32, 3u64), (4, 0), (10, 32)] {
            let mut b = B::header(3, 0, 1);
            b.str(ALIGNMENT_KEY).u32(ty);
            if ty == 4 {
                b.u32(v as u32);
            } else {
                b.u64(v);
            }
            assert!(
                matches!(kind(&b), Malformed::BadAlignment { .. }),
                "type {ty} value {v}"
            );
        }

        let mut b = B::header(3, 0, 1);
        b.u64(2).u8(0xC3).u8(0x28).u32(0).u8(0);
        assert!(matches!(kind(&b), Malformed::InvalidUtf8 { .. }));

        let mut b = B::header(3, 0, 1);
        b.str("flag").u32(7).u8(2);
        assert_eq!(kind(&b), Malformed::BadBool { found: 2 });

        let long = "x".repeat(64);
        let mut b = B::header(3, 1, 0);
        b.tensor(&long, &[8], 0, 0).data(32, 32);
        assert_eq!(kind(&b), Malformed::NameTooLong { found: 64 });
    }

    #[test]
    fn file_level_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.gguf");
        std::fs::write(&p, b"").unwrap();
        let e = GgufFile::open(&p).unwrap_err();
        assert!(matches!(
            e.malformed(),
            Some(Malformed::Truncated {
                needed: 4,
                available: 0
            })
        ));
        assert!(matches!(
            GgufFile::open(dir.path().join("missing.gguf")),
            Err(Error::Io { .. })
        ));

        let p = dir.path().join("ok.gguf");
        std::fs::write(&p, &valid().0).unwrap();
        let f = GgufFile::open(&p).unwrap();
        assert_eq!(f.tensor_data("a").unwrap().len(), 16);
        assert!(matches!(
            f.tensor_data("nope"),
            Err(Error::TensorNotFound { .. })
        ));
        assert_eq!(f.architecture().unwrap(), "llama");
        assert!(matches!(
            f.require_u64("general.architecture"),
            Err(Error::Metadata { .. })
        ));
        assert!(matches!(
            f.require_str("missing.key"),
            Err(Error::Metadata { .. })
        ));
    }
}
