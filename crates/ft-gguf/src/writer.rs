//! Streaming GGUF writer.
//!
//! All tensor infos are declared up front ([`TensorSpec`]: name, ggml-order
//! shape, type); their byte sizes, and so every data offset, follow from
//! shape and type, so the header is written once, never patched, and tensor
//! data then streams through tensor by tensor: a whole model never sits in
//! memory. Output goes through [`ft_core::atomic::AtomicFile`], so a crash
//! leaves the previous file or none.
//!
//! Byte layout, identical to gguf-py's `GGUFWriter` for the same content:
//!
//! ```text
//! "GGUF" | u32 version=3 | u64 n_tensors | u64 n_kv
//! n_kv × (string key | u32 value type | value)
//! n_tensors × (string name | u32 n_dims | n_dims × u64 ne | u32 ggml type | u64 offset)
//! zero padding to a multiple of the alignment          <- data section starts here
//! n_tensors × (data | zero padding to a multiple of the alignment)
//! ```
//!
//! A string is `u64 byte length | UTF-8 bytes`; an array is `u32 element type |
//! u64 count | elements` (nested arrays repeat that header per element). Each
//! tensor offset is relative to the data section and equals the sum of the
//! padded sizes of the tensors before it. The padding after the last tensor is
//! written too, as gguf-py does.

use std::io::Write;
use std::path::{Path, PathBuf};

use ft_core::atomic::AtomicFile;

use crate::error::{Error, Result, WriteError};
use crate::reader::{
    ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, MAX_DIMS, MAX_TENSOR_NAME, pad_to,
};
use crate::types::GgmlType;
use crate::value::{Array, Metadata, Value};

/// Bytes buffered before a write to the file.
const BUF_CAP: usize = 1 << 20;

/// Deepest array nesting the writer emits (what the reader accepts by default).
const MAX_DEPTH: u32 = 4;

/// A tensor to be written: its name, shape in ggml order (`shape[0]` is the
/// row length, the reverse of the PyTorch shape) and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name.
    pub name: String,
    /// ggml-order dimensions (1 to 4).
    pub shape: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
}

impl TensorSpec {
    /// A spec from its parts.
    pub fn new(name: impl Into<String>, shape: impl Into<Vec<u64>>, ty: GgmlType) -> Self {
        Self {
            name: name.into(),
            shape: shape.into(),
            ty,
        }
    }

    /// Bytes of data, or `None` if the shape is not whole blocks or overflows.
    pub fn n_bytes(&self) -> Option<u64> {
        let n = self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
        if n > i64::MAX as u64 {
            return None;
        }
        self.ty.bytes_for(n)
    }
}

struct Planned {
    spec: TensorSpec,
    n_bytes: u64,
}

/// Writes one GGUF file; see the [module docs](self).
pub struct GgufWriter {
    path: PathBuf,
    file: AtomicFile,
    buf: Vec<u8>,
    tensors: Vec<Planned>,
    next: usize,
    alignment: u64,
    /// Set when a tensor's data was partly written and then failed: the file
    /// can no longer be completed.
    failed: Option<String>,
}

/// Receives one tensor's bytes in pieces (see [`GgufWriter::write_tensor_with`]).
pub struct TensorSink<'a> {
    w: &'a mut GgufWriter,
    written: u64,
}

impl TensorSink<'_> {
    /// Appends bytes to the tensor's data.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.w.put(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

fn write_err(path: &Path, kind: WriteError) -> Error {
    Error::Write {
        path: path.to_path_buf(),
        kind,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_array(out: &mut Vec<u8>, a: &Array, depth: u32) -> std::result::Result<(), &'static str> {
    if depth > MAX_DEPTH {
        return Err("arrays nested deeper than 4 levels");
    }
    out.extend_from_slice(&a.element_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => le!(v),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => {
            for inner in v {
                put_array(out, inner, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Encodes one value (without its type id).
fn put_value(out: &mut Vec<u8>, v: &Value) -> std::result::Result<(), &'static str> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a, 1)?,
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
    Ok(())
}

impl GgufWriter {
    /// Validates the plan, then writes header, metadata, tensor infos and the
    /// padding before the data section. Tensor data follows through
    /// [`write_tensor`](Self::write_tensor) in declaration order.
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &Metadata,
        tensors: Vec<TensorSpec>,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();

        let alignment = match metadata.get(ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(other) => {
                return Err(write_err(
                    &path,
                    WriteError::BadAlignment {
                        found: format!("{other:?}"),
                    },
                ));
            }
        };

        let mut planned = Vec::with_capacity(tensors.len());
        let mut names = std::collections::HashSet::new();
        for spec in tensors {
            if spec.name.len() as u64 > MAX_TENSOR_NAME {
                let len = spec.name.len();
                return Err(write_err(
                    &path,
                    WriteError::NameTooLong {
                        name: spec.name,
                        len,
                    },
                ));
            }
            if !names.insert(spec.name.clone()) {
                return Err(write_err(
                    &path,
                    WriteError::DuplicateTensor { name: spec.name },
                ));
            }
            let bad = |reason| WriteError::BadShape {
                name: spec.name.clone(),
                shape: spec.shape.clone(),
                ty: spec.ty,
                reason,
            };
            if spec.shape.is_empty() || spec.shape.len() > MAX_DIMS as usize {
                return Err(write_err(&path, bad("expected 1 to 4 dimensions")));
            }
            if !spec.shape[0].is_multiple_of(spec.ty.block_size() as u64) {
                return Err(write_err(
                    &path,
                    bad("the first dimension must be a multiple of the block size"),
                ));
            }
            let Some(n_bytes) = spec.n_bytes() else {
                return Err(write_err(&path, bad("too many elements")));
            };
            planned.push(Planned { spec, n_bytes });
        }

        let mut head = Vec::new();
        head.extend_from_slice(&GGUF_MAGIC);
        head.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        head.extend_from_slice(&(planned.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata.iter() {
            put_str(&mut head, key);
            head.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut head, value).map_err(|reason| {
                write_err(
                    &path,
                    WriteError::BadValue {
                        key: key.to_owned(),
                        reason,
                    },
                )
            })?;
        }
        let mut offset = 0u64;
        for p in &planned {
            put_str(&mut head, &p.spec.name);
            head.extend_from_slice(&(p.spec.shape.len() as u32).to_le_bytes());
            for d in &p.spec.shape {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&p.spec.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset = pad_to(offset + p.n_bytes, alignment).unwrap_or(u64::MAX);
        }
        let data_start = pad_to(head.len() as u64, alignment).unwrap_or(u64::MAX);
        head.resize(data_start as usize, 0);

        let file = AtomicFile::create(&path)?;
        let mut w = Self {
            path,
            file,
            buf: Vec::with_capacity(BUF_CAP),
            tensors: planned,
            next: 0,
            alignment,
            failed: None,
        };
        w.put(&head)?;
        Ok(w)
    }

    /// The data alignment in use.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    fn flush_buf(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.file
                .file()
                .write_all(&self.buf)
                .map_err(|e| Error::io("writing", &self.path, e))?;
            self.buf.clear();
        }
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        if self.buf.len() + bytes.len() > BUF_CAP {
            self.flush_buf()?;
        }
        if bytes.len() >= BUF_CAP {
            self.file
                .file()
                .write_all(bytes)
                .map_err(|e| Error::io("writing", &self.path, e))
        } else {
            self.buf.extend_from_slice(bytes);
            Ok(())
        }
    }

    /// Checks that `name` is the next declared tensor and returns its index.
    fn expect_next(&self, name: &str) -> Result<usize> {
        if let Some(t) = &self.failed {
            return Err(write_err(
                &self.path,
                WriteError::Aborted { name: t.clone() },
            ));
        }
        match self.tensors.get(self.next) {
            None => Err(write_err(
                &self.path,
                WriteError::Extra {
                    found: name.to_owned(),
                },
            )),
            Some(p) if p.spec.name != name => Err(write_err(
                &self.path,
                WriteError::OutOfOrder {
                    expected: p.spec.name.clone(),
                    found: name.to_owned(),
                },
            )),
            Some(_) => Ok(self.next),
        }
    }

    fn end_tensor(&mut self, i: usize, written: u64) -> Result<()> {
        let p = &self.tensors[i];
        if written != p.n_bytes {
            return Err(write_err(
                &self.path,
                WriteError::SizeMismatch {
                    name: p.spec.name.clone(),
                    expected: p.n_bytes,
                    found: written,
                },
            ));
        }
        let pad = pad_to(p.n_bytes, self.alignment).unwrap_or(p.n_bytes) - p.n_bytes;
        self.put(&vec![0u8; pad as usize])?;
        self.next += 1;
        Ok(())
    }

    /// Writes the whole data of tensor `name`, which must be the next declared one.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let i = self.expect_next(name)?;
        let expected = self.tensors[i].n_bytes;
        if data.len() as u64 != expected {
            return Err(write_err(
                &self.path,
                WriteError::SizeMismatch {
                    name: name.to_owned(),
                    expected,
                    found: data.len() as u64,
                },
            ));
        }
        let done = self.put(data).and_then(|()| self.end_tensor(i, expected));
        if done.is_err() {
            self.failed = Some(name.to_owned());
        }
        done
    }

    /// Writes tensor `name` in pieces: `fill` receives a [`TensorSink`] and
    /// may call [`TensorSink::write`] any number of times (e.g. once per
    /// quantized row); the total must match the declared size.
    pub fn write_tensor_with(
        &mut self,
        name: &str,
        fill: impl FnOnce(&mut TensorSink<'_>) -> Result<()>,
    ) -> Result<()> {
        let i = self.expect_next(name)?;
        let mut sink = TensorSink {
            w: self,
            written: 0,
        };
        let filled = fill(&mut sink);
        let written = sink.written;
        let done = filled.and_then(|()| self.end_tensor(i, written));
        if done.is_err() {
            self.failed = Some(name.to_owned());
        }
        done
    }

    /// Names of the tensors not yet written, in order.
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        self.tensors[self.next..]
            .iter()
            .map(|p| p.spec.name.as_str())
    }

    /// Checks every tensor was written, flushes, and renames the file into place.
    pub fn finish(mut self) -> Result<PathBuf> {
        if let Some(t) = &self.failed {
            return Err(write_err(
                &self.path,
                WriteError::Aborted { name: t.clone() },
            ));
        }
        if let Some(p) = self.tensors.get(self.next) {
            return Err(write_err(
                &self.path,
                WriteError::Missing {
                    missing: self.tensors.len() - self.next,
                    first: p.spec.name.clone(),
                },
            ));
        }
        self.flush_buf()?;
        Ok(self.file.commit()?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::GgufFile;
    use crate::quant::{dequantize, quantize};

    fn every_value_type() -> Metadata {
        let mut m = Metadata::new();
        m.set("general.architecture", "qwen3")
            .set("u8", 1u8)
            .set("i8", -1i8)
            .set("u16", 2u16)
            .set("i16", -2i16)
            .set("u32", 3u32)
            .set("i32", -3i32)
            .set("f32", 1.5f32)
            .set("bool", true)
            .set("string", "chat {{ template }}\n")
            .set("u64", u64::MAX)
            .set("i64", i64::MIN)
            .set("f64", std::f64::consts::PI)
            .set("tokens", vec!["<s>", "▁hello", ""])
            .set("empty", Array::F32(vec![]))
            .set("bytes", Array::U8(vec![0, 255]))
            .set("i8s", Array::I8(vec![-128, 127]))
            .set("u16s", Array::U16(vec![65535]))
            .set("i16s", Array::I16(vec![-32768]))
            .set("u32s", Array::U32(vec![7]))
            .set("i64s", Array::I64(vec![-7]))
            .set("f64s", Array::F64(vec![0.25]))
            .set("bools", vec![false, true])
            .set(
                "nested",
                Array::Array(vec![
                    Array::String(vec!["a".into()]),
                    Array::Array(vec![Array::U64(vec![1, 2])]),
                ]),
            );
        m
    }

    fn ramp(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect()
    }

    #[test]
    fn round_trip_streams_tensor_by_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let meta = every_value_type();
        let w_norm = ramp(64);
        let w_q4k = ramp(256 * 3);
        let w_q8 = ramp(32 * 5);
        let specs = vec![
            TensorSpec::new("norm.weight", [64], GgmlType::F32),
            TensorSpec::new("blk.0.ffn_down.weight", [256, 3], GgmlType::Q4_K),
            TensorSpec::new("odd", [32, 5], GgmlType::Q8_0),
        ];
        let mut w = GgufWriter::create(&path, &meta, specs.clone()).unwrap();
        assert_eq!(w.alignment(), 32);
        w.write_tensor("norm.weight", bytemuck::cast_slice(&w_norm))
            .unwrap();
        // Row by row, as an exporter streaming a large matrix would.
        w.write_tensor_with("blk.0.ffn_down.weight", |sink| {
            for row in w_q4k.chunks(256) {
                sink.write(&quantize(GgmlType::Q4_K, row)?)?;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(w.pending().collect::<Vec<_>>(), ["odd"]);
        w.write_tensor("odd", &quantize(GgmlType::Q8_0, &w_q8).unwrap())
            .unwrap();
        w.finish().unwrap();

        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.metadata(), &meta);
        let infos: Vec<_> = f
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone(), t.ty))
            .collect();
        let want: Vec<_> = specs
            .iter()
            .map(|s| (s.name.clone(), s.shape.clone(), s.ty))
            .collect();
        assert_eq!(infos, want);
        for t in f.tensors() {
            assert_eq!(
                (f.header().data_offset + t.offset) % 32,
                0,
                "{} aligned",
                t.name
            );
        }
        assert_eq!(f.dequantize("norm.weight").unwrap(), w_norm);
        let q4k = quantize(GgmlType::Q4_K, &w_q4k).unwrap();
        assert_eq!(f.tensor_data("blk.0.ffn_down.weight").unwrap(), &q4k[..]);
        assert_eq!(
            f.dequantize("odd").unwrap(),
            dequantize(GgmlType::Q8_0, f.tensor_data("odd").unwrap()).unwrap()
        );
        // Trailing padding after the last tensor, as gguf-py writes it.
        let last = &f.tensors()[2];
        let end = f.header().data_offset + last.offset + last.n_bytes();
        assert_eq!(f.bytes().len() as u64, pad_to(end, 32).unwrap());
    }

    #[test]
    fn custom_alignment_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.gguf");
        let mut meta = Metadata::new();
        meta.set("general.alignment", 256u32);
        let specs = vec![
            TensorSpec::new("a", [3], GgmlType::F32),
            TensorSpec::new("b", [5], GgmlType::F16),
        ];
        let mut w = GgufWriter::create(&path, &meta, specs).unwrap();
        w.write_tensor("a", &[1; 12]).unwrap();
        w.write_tensor("b", &[2; 10]).unwrap();
        w.finish().unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.header().alignment, 256);
        assert_eq!(f.header().data_offset % 256, 0);
        assert_eq!(f.tensors()[1].offset, 256);
        assert_eq!(f.tensor_data("b").unwrap(), &[2; 10]);
    }

    fn kind(r: Result<impl Sized>) -> WriteError {
        match r {
            Err(Error::Write { kind, .. }) => kind,
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn invalid_plans_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gguf");
        let m = Metadata::new();
        let create = |specs: Vec<TensorSpec>| GgufWriter::create(&p, &m, specs);
        let t = |name: &str, shape: &[u64], ty| TensorSpec::new(name, shape.to_vec(), ty);

        assert!(matches!(
            kind(create(vec![
                t("a", &[4], GgmlType::F32),
                t("a", &[4], GgmlType::F32)
            ])),
            WriteError::DuplicateTensor { .. }
        ));
        assert!(matches!(
            kind(create(vec![t(&"n".repeat(64), &[4], GgmlType::F32)])),
            WriteError::NameTooLong { len: 64, .. }
        ));
        assert!(create(vec![t(&"n".repeat(63), &[4], GgmlType::F32)]).is_ok());
        for shape in [&[][..], &[1, 1, 1, 1, 1], &[48, 2]] {
            assert!(
                matches!(
                    kind(create(vec![t("a", shape, GgmlType::Q8_0)])),
                    WriteError::BadShape { .. }
                ),
                "{shape:?}"
            );
        }
        assert!(matches!(
            kind(create(vec![t("a", &[1 << 40, 1 << 40], GgmlType::F32)])),
            WriteError::BadShape { .. }
        ));
        for bad in [Value::U32(48), Value::U32(0), Value::U64(32)] {
            let mut m = Metadata::new();
            m.set("general.alignment", bad);
            assert!(matches!(
                kind(GgufWriter::create(&p, &m, vec![])),
                WriteError::BadAlignment { .. }
            ));
        }
        let mut deep = Array::U8(vec![1]);
        for _ in 0..4 {
            deep = Array::Array(vec![deep]);
        }
        let mut m = Metadata::new();
        m.set("deep", deep);
        assert!(matches!(
            kind(GgufWriter::create(&p, &m, vec![])),
            WriteError::BadValue { .. }
        ));
        // Nothing was committed by any refused plan.
        assert!(!p.exists());
    }

    #[test]
    fn misuse_while_streaming() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gguf");
        let specs = vec![
            TensorSpec::new("a", [4], GgmlType::F32),
            TensorSpec::new("b", [4], GgmlType::F32),
        ];
        let m = Metadata::new();

        let mut w = GgufWriter::create(&p, &m, specs.clone()).unwrap();
        assert!(matches!(
            kind(w.write_tensor("b", &[0; 16])),
            WriteError::OutOfOrder { .. }
        ));
        assert!(matches!(
            kind(w.write_tensor("a", &[0; 15])),
            WriteError::SizeMismatch {
                expected: 16,
                found: 15,
                ..
            }
        ));
        w.write_tensor("a", &[0; 16]).unwrap();
        assert!(matches!(
            kind(w.finish()),
            WriteError::Missing { missing: 1, .. }
        ));
        assert!(!p.exists(), "an unfinished writer commits nothing");

        let mut w = GgufWriter::create(&p, &m, specs.clone()).unwrap();
        w.write_tensor("a", &[0; 16]).unwrap();
        w.write_tensor("b", &[0; 16]).unwrap();
        assert!(matches!(
            kind(w.write_tensor("c", &[])),
            WriteError::Extra { .. }
        ));
        w.finish().unwrap();
        assert!(p.exists());

        // A chunked write that produces the wrong size poisons the writer.
        let q = dir.path().join("y.gguf");
        let mut w = GgufWriter::create(&q, &m, specs).unwrap();
        let r = w.write_tensor_with("a", |s| s.write(&[0; 8]));
        assert!(matches!(kind(r), WriteError::SizeMismatch { found: 8, .. }));
        assert!(matches!(
            kind(w.write_tensor("a", &[0; 16])),
            WriteError::Aborted { .. }
        ));
        assert!(matches!(kind(w.finish()), WriteError::Aborted { .. }));
        assert!(!q.exists());
    }
}
