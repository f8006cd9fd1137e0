//! An on-disk cache of the NF4-quantized base (QLoRA), so that the next run
//! on the same base skips quantization.
//!
//! Quantizing reads every weight of the base's linear layers, converts it
//! to f32 and quantizes it; for a GGUF base it dequantizes first. The result only
//! depends on the base's files and two settings, so it is kept, per base and
//! settings, in one safetensors file `<cache base>/nf4/<key16>.safetensors`
//! holding, for every quantized weight `<name>` (its HF name, e.g.
//! `model.layers.0.self_attn.q_proj.weight`):
//!
//! * `<name>.codes` (U8): the packed 4-bit codes;
//! * `<name>.absmax` (F32): one scale per block; or, with double
//!   quantization, `<name>.absmax_codes` (U8), `<name>.absmax_scales` (F32)
//!   and `<name>.absmax_offset` (F32, one value);
//!
//! and in the header's `__metadata__`: `format` ([`FORMAT`]), the full `key`,
//! `blocksize`, `double_quant`, and `<name>.shape` (a JSON array).
//!
//! **Key.** BLAKE3 over [`FORMAT`], the block size, `double_quant` and, for
//! every weight file of the base (each safetensors shard, or the GGUF file):
//! its canonical path, size in bytes, modification time in nanoseconds and
//! header bytes (the safetensors JSON header; the GGUF metadata and tensor
//! infos). Not over the tensor data: hashing a 16 GB base means reading it
//! all, which is most of what quantizing it costs. The trade-off: a file
//! rewritten in place with other values but the same size and header, and
//! its old modification time restored, is not noticed (tools that write
//! checkpoints replace the file, which changes the time). Hub snapshots are
//! symlinks into content-addressed `blobs/<sha256>` files: canonicalizing
//! resolves them, so for a hub base the key follows the content itself.
//! A change to what [`Nf4Tensor::quantize`] produces must bump [`FORMAT`].
//!
//! **Miss.** The weights are quantized as without a cache, and each NF4
//! tensor is spooled to an unnamed temporary file in the cache directory
//! (so the model is not held twice in memory); once the whole model has
//! loaded, the cache file is written atomically ([`ft_core::atomic`]:
//! temporary sibling, then rename). A failed write is a warning, never a
//! failed run.
//!
//! **Hit.** Each NF4 tensor is read from the cache file (`pread`, as the base
//! is read, so the file's pages do not stay in the process's memory) and
//! checked (shape against the model's, part lengths, finite scales); the
//! dense weight is never read. What stays dense (embeddings, norms, biases)
//! still comes from the base. A cache file that fails a check is discarded with a
//! warning: the weights come from the base again and the file is rewritten.
//!
//! **Where.** `$FT_CACHE_DIR/nf4/`, default `~/.cache/ft/nf4/` (where
//! `scripts/fetch-smollm2.sh` puts its downloads); `FT_NF4_CACHE=0` turns
//! the cache off ([`Nf4Cache::from_env`]). Files of bases that have since
//! changed are not removed; deleting the directory is always safe.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use ft_kernels::nf4::Nf4Tensor;
use ft_kernels::nf4::reference::{Absmax, BLOCKSIZE as NF4_BLOCKSIZE};
use safetensors::Dtype;

use crate::weights::{MappedFile, Nf4Load, TensorSource};

/// The cache format; part of the key, so a new format never reads an old
/// file.
pub const FORMAT: &str = "ft-nf4-cache/1";

/// Set to `0` (or `false`, `no`, `off`) to turn the NF4 cache off.
pub const DISABLE_ENV: &str = "FT_NF4_CACHE";

/// The cache base directory (default `~/.cache/ft`).
pub const CACHE_DIR_ENV: &str = "FT_CACHE_DIR";

/// Where NF4 caches are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nf4Cache {
    dir: PathBuf,
}

impl Nf4Cache {
    /// The cache under the cache base `base`: files go to `base/nf4/`.
    pub fn new(base: impl AsRef<Path>) -> Self {
        Self {
            dir: base.as_ref().join("nf4"),
        }
    }

    /// The cache the environment asks for: under `$FT_CACHE_DIR`, else
    /// `$HOME/.cache/ft`; `None` when `FT_NF4_CACHE` is `0`, `false`, `no`
    /// or `off`, or neither directory variable is set.
    pub fn from_env() -> Option<Self> {
        if std::env::var(DISABLE_ENV).is_ok_and(|v| is_off(&v)) {
            tracing::debug!("{DISABLE_ENV} is off: no NF4 cache");
            return None;
        }
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let base = non_empty(CACHE_DIR_ENV)
            .map(PathBuf::from)
            .or_else(|| non_empty("HOME").map(|h| PathBuf::from(h).join(".cache/ft")))?;
        Some(Self::new(base))
    }

    /// The directory the cache files are in (`<base>/nf4`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file_of_key(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{}.safetensors", &key[..16]))
    }

    /// Starts the cache's part in loading `source` with `settings`: opens
    /// the cache file when there is a valid one. `None` when the source
    /// cannot be keyed (said in a warning).
    pub(crate) fn session(
        &self,
        source: &dyn TensorSource,
        settings: Nf4Load,
    ) -> Option<Nf4CacheSession> {
        let key = match cache_key(source, settings, NF4_BLOCKSIZE) {
            Ok(k) => k,
            Err(reason) => {
                tracing::warn!("no NF4 cache for `{}`: {reason}", source.origin().display());
                return None;
            }
        };
        let path = self.file_of_key(&key);
        let mut state = State::default();
        if path.exists() {
            match open_reader(&path, &key, settings, NF4_BLOCKSIZE) {
                Ok(reader) => state.reader = Some(reader),
                Err(reason) => {
                    tracing::warn!(
                        "ignoring the NF4 cache file `{}` ({reason}); quantizing the base again \
                         and rewriting it",
                        path.display()
                    );
                    state.discarded = Some(reason);
                }
            }
        }
        Some(Nf4CacheSession {
            path,
            dir: self.dir.clone(),
            key,
            settings,
            blocksize: NF4_BLOCKSIZE,
            state: RefCell::new(state),
        })
    }
}

fn is_off(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "0" | "false" | "no" | "off"
    )
}

/// Appends `bytes` to the hash, length first, so fields cannot run into
/// each other.
fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The cache key of `source` quantized with `settings` and `blocksize` (see
/// the module docs), as 64 hex digits.
fn cache_key(
    source: &dyn TensorSource,
    settings: Nf4Load,
    blocksize: usize,
) -> Result<String, String> {
    let files = source.weight_files();
    if files.is_empty() {
        return Err("the source names no weight files to key a cache by".to_string());
    }
    let mut h = blake3::Hasher::new();
    field(&mut h, FORMAT.as_bytes());
    field(&mut h, &(blocksize as u64).to_le_bytes());
    field(&mut h, &[u8::from(settings.double_quant)]);
    for f in files {
        let shown = f.path.display();
        // Canonical: the same file under two names is one cache entry, and a
        // hub snapshot's symlink resolves to its content-addressed blob.
        let canon = std::fs::canonicalize(f.path).map_err(|e| format!("`{shown}`: {e}"))?;
        let meta = std::fs::metadata(&canon).map_err(|e| format!("`{shown}`: {e}"))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .ok_or_else(|| format!("`{shown}` has no modification time"))?;
        field(&mut h, canon.as_os_str().as_encoded_bytes());
        field(&mut h, &meta.len().to_le_bytes());
        field(&mut h, &mtime.as_nanos().to_le_bytes());
        field(&mut h, f.header);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Opens the cache file at `path` and checks that it is one for `key` and
/// these settings.
fn open_reader(
    path: &Path,
    key: &str,
    settings: Nf4Load,
    blocksize: usize,
) -> Result<MappedFile, String> {
    let file = MappedFile::open(path).map_err(|e| e.to_string())?;
    for (name, want) in file_metadata(key, settings, blocksize) {
        match file.metadata().get(&name) {
            Some(found) if *found == want => {}
            Some(found) => return Err(format!("its `{name}` is `{found}`, not `{want}`")),
            None => return Err(format!("it has no `{name}` entry")),
        }
    }
    Ok(file)
}

/// The file-wide `__metadata__` entries of a cache file.
fn file_metadata(key: &str, settings: Nf4Load, blocksize: usize) -> [(String, String); 4] {
    [
        ("format".to_string(), FORMAT.to_string()),
        ("key".to_string(), key.to_string()),
        ("blocksize".to_string(), blocksize.to_string()),
        (
            "double_quant".to_string(),
            settings.double_quant.to_string(),
        ),
    ]
}

/// What the cache did for one load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nf4CacheReport {
    /// The cache file.
    pub path: PathBuf,
    /// Hit, written, or not written.
    pub status: Nf4CacheStatus,
    /// NF4 tensors read from the cache (hit) or written to it.
    pub tensors: usize,
    /// Why an existing cache file was not used (it was then rewritten).
    pub discarded: Option<String>,
}

/// Whether a load was served by the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nf4CacheStatus {
    /// Every NF4 weight came from the cache file.
    Hit,
    /// The weights were quantized from the base, and the cache file
    /// written.
    Written,
    /// The weights were quantized from the base; the cache file could not
    /// be written (the reason).
    NotWritten(String),
}

/// The cache's part in one load: a [`crate::weights::VarBuilder`] asks it
/// for each NF4 weight ([`Self::lookup`]) and hands it the ones it had to
/// quantize ([`Self::record`]); [`Self::finish`] writes the file once the
/// model has loaded.
pub(crate) struct Nf4CacheSession {
    path: PathBuf,
    dir: PathBuf,
    key: String,
    settings: Nf4Load,
    blocksize: usize,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// The valid cache file being served from (hit); `None` on a miss.
    reader: Option<MappedFile>,
    /// Names and shapes served from `reader` so far.
    served: Vec<(String, Vec<usize>)>,
    /// The tensors of the file to write (miss).
    spool: Option<Spool>,
    /// Writing is off for this load (the spool failed).
    no_write: Option<String>,
    /// Why the existing cache file was discarded.
    discarded: Option<String>,
}

impl State {
    /// Adds `q` to the file to be written, starting it when needed; a
    /// failure turns writing off for this load, with a warning.
    fn record(&mut self, dir: &Path, name: &str, q: &Nf4Tensor) {
        if self.reader.is_some() || self.no_write.is_some() {
            return;
        }
        let spool = match &mut self.spool {
            Some(s) => s,
            None => match Spool::create(dir) {
                Ok(s) => self.spool.insert(s),
                Err(e) => {
                    self.stop_writing(format!(
                        "cannot create a temporary file in `{}`: {e}",
                        dir.display()
                    ));
                    return;
                }
            },
        };
        if let Err(e) = spool.add(name, q) {
            self.stop_writing(format!("spooling `{name}`: {e}"));
        }
    }

    fn stop_writing(&mut self, reason: String) {
        tracing::warn!("the NF4 cache will not be written this time: {reason}");
        self.spool = None;
        self.no_write = Some(reason);
    }
}

impl Nf4CacheSession {
    /// The quantization settings this cache file is for.
    pub(crate) fn settings(&self) -> Nf4Load {
        self.settings
    }

    /// The block size this cache file is for.
    pub(crate) fn blocksize(&self) -> usize {
        self.blocksize
    }

    /// The cached NF4 tensor `name` of shape `dims`, when the cache file is
    /// valid and holds it. A tensor that fails its checks discards the file:
    /// this and the remaining weights come from the base, and the tensors
    /// already served are spooled again so the file is rewritten whole.
    pub(crate) fn lookup(&self, name: &str, dims: &[usize]) -> Option<Nf4Tensor> {
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        let reader = st.reader.as_ref()?;
        let reason = match read_entry(reader, name, Some(dims), self.settings, self.blocksize) {
            Ok(q) => {
                st.served.push((name.to_string(), dims.to_vec()));
                return Some(q);
            }
            Err(reason) => reason,
        };
        tracing::warn!(
            "ignoring the NF4 cache file `{}` ({reason}); quantizing the base again and \
             rewriting it",
            self.path.display()
        );
        let reader = st.reader.take()?;
        st.discarded = Some(reason);
        for (served, shape) in std::mem::take(&mut st.served) {
            match read_entry(
                &reader,
                &served,
                Some(&shape),
                self.settings,
                self.blocksize,
            ) {
                Ok(q) => st.record(&self.dir, &served, &q),
                Err(e) => st.stop_writing(format!("rereading `{served}`: {e}")),
            }
        }
        None
    }

    /// Hands over `q`, quantized from the base, for the file to be written.
    pub(crate) fn record(&self, name: &str, q: &Nf4Tensor) {
        self.state.borrow_mut().record(&self.dir, name, q);
    }

    /// Ends the load: on a miss, writes the cache file (a failure is a
    /// warning). Logs one line either way.
    pub(crate) fn finish(&self) -> Nf4CacheReport {
        let mut st = self.state.borrow_mut();
        let shown = self.path.display();
        let (status, tensors) = if let Some(spool) = st.spool.take() {
            let n = spool.weights;
            let meta = file_metadata(&self.key, self.settings, self.blocksize);
            match spool.commit(&self.path, meta) {
                Ok(()) => {
                    tracing::info!("NF4 base quantized and cached at {shown} ({n} tensors)");
                    (Nf4CacheStatus::Written, n)
                }
                Err(reason) => {
                    tracing::warn!(
                        "could not write the NF4 cache {shown}: {reason}; the next run \
                         quantizes again"
                    );
                    (Nf4CacheStatus::NotWritten(reason), 0)
                }
            }
        } else if st.reader.is_some() {
            let n = st.served.len();
            tracing::info!("NF4 base from cache {shown} ({n} tensors)");
            (Nf4CacheStatus::Hit, n)
        } else {
            let reason = st
                .no_write
                .clone()
                .unwrap_or_else(|| "no weight was quantized".to_string());
            (Nf4CacheStatus::NotWritten(reason), 0)
        };
        Nf4CacheReport {
            path: self.path.clone(),
            status,
            tensors,
            discarded: st.discarded.clone(),
        }
    }
}

/// Reads and checks the cached tensor `name` (against `dims` when given).
fn read_entry(
    file: &MappedFile,
    name: &str,
    dims: Option<&[usize]>,
    settings: Nf4Load,
    blocksize: usize,
) -> Result<Nf4Tensor, String> {
    let shape_key = format!("{name}.shape");
    let shape: Vec<usize> = file
        .metadata()
        .get(&shape_key)
        .ok_or_else(|| format!("it has no entry for `{name}`"))
        .and_then(|s| serde_json::from_str(s).map_err(|e| format!("`{shape_key}`: {e}")))?;
    if let Some(dims) = dims
        && shape != dims
    {
        return Err(format!(
            "`{name}` has shape {shape:?} there, the model expects {dims:?}"
        ));
    }
    let codes = stored(file, &format!("{name}.codes"), Dtype::U8)?;
    let absmax = if settings.double_quant {
        let offset = f32s(&stored(file, &format!("{name}.absmax_offset"), Dtype::F32)?);
        let [offset] = offset[..] else {
            return Err(format!("`{name}.absmax_offset` is not one value"));
        };
        Absmax::DoubleQuant {
            codes: stored(file, &format!("{name}.absmax_codes"), Dtype::U8)?,
            scales: f32s(&stored(file, &format!("{name}.absmax_scales"), Dtype::F32)?),
            offset,
        }
    } else {
        Absmax::F32(f32s(&stored(file, &format!("{name}.absmax"), Dtype::F32)?))
    };
    Nf4Tensor::from_parts(codes, absmax, &shape, blocksize).map_err(|e| format!("`{name}`: {e}"))
}

/// The bytes of tensor `name`, which must be stored as `dtype`.
fn stored(file: &MappedFile, name: &str, dtype: Dtype) -> Result<Vec<u8>, String> {
    match file.raw(name) {
        Ok(Some(t)) if t.dtype == dtype => Ok(t.bytes),
        Ok(Some(t)) => Err(format!("`{name}` is {:?}, not {dtype:?}", t.dtype)),
        Ok(None) => Err(format!("it has no tensor `{name}`")),
        Err(e) => Err(e.to_string()),
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// One tensor of the data section: its name, safetensors dtype name,
/// (one-dimensional) shape, and byte range.
struct SpoolEntry {
    name: String,
    dtype: &'static str,
    shape: [usize; 1],
    start: u64,
    end: u64,
}

/// The data section of a cache file being written: tensor bytes appended to
/// an unnamed temporary file (gone with the process, however it ends), and
/// their places.
struct Spool {
    out: BufWriter<File>,
    len: u64,
    entries: Vec<SpoolEntry>,
    /// `<weight>.shape` → JSON array.
    shapes: BTreeMap<String, String>,
    /// NF4 weights added.
    weights: usize,
}

impl Spool {
    fn create(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = tempfile::tempfile_in(dir)?;
        Ok(Self {
            out: BufWriter::with_capacity(1 << 20, file),
            len: 0,
            entries: Vec::new(),
            shapes: BTreeMap::new(),
            weights: 0,
        })
    }

    fn push(&mut self, name: String, dtype: &'static str, bytes: &[u8]) -> std::io::Result<()> {
        let elem = if dtype == "F32" { 4 } else { 1 };
        self.out.write_all(bytes)?;
        let start = self.len;
        self.len += bytes.len() as u64;
        self.entries.push(SpoolEntry {
            name,
            dtype,
            shape: [bytes.len() / elem],
            start,
            end: self.len,
        });
        Ok(())
    }

    fn add(&mut self, name: &str, q: &Nf4Tensor) -> std::io::Result<()> {
        self.push(format!("{name}.codes"), "U8", q.codes())?;
        match q.absmax() {
            Absmax::F32(values) => {
                self.push(format!("{name}.absmax"), "F32", &f32_bytes(values))?
            }
            Absmax::DoubleQuant {
                codes,
                scales,
                offset,
            } => {
                self.push(format!("{name}.absmax_codes"), "U8", codes)?;
                self.push(format!("{name}.absmax_scales"), "F32", &f32_bytes(scales))?;
                self.push(
                    format!("{name}.absmax_offset"),
                    "F32",
                    &offset.to_le_bytes(),
                )?;
            }
        }
        let shape = serde_json::to_string(q.shape()).map_err(std::io::Error::other)?;
        self.shapes.insert(format!("{name}.shape"), shape);
        self.weights += 1;
        Ok(())
    }

    /// Writes the cache file to `path` atomically: header, then the spooled
    /// data.
    fn commit(self, path: &Path, meta: [(String, String); 4]) -> Result<(), String> {
        let mut data = self.out.into_inner().map_err(|e| e.error().to_string())?;
        data.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
        let metadata: serde_json::Map<String, serde_json::Value> = meta
            .into_iter()
            .chain(self.shapes)
            .map(|(k, v)| (k, v.into()))
            .collect();
        let mut header = serde_json::Map::new();
        for e in self.entries {
            header.insert(
                e.name,
                serde_json::json!({
                    "dtype": e.dtype,
                    "shape": e.shape,
                    "data_offsets": [e.start, e.end],
                }),
            );
        }
        header.insert(
            "__metadata__".to_string(),
            serde_json::Value::Object(metadata),
        );
        let mut header = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
        // Pad to 8 bytes, as safetensors' own writer does.
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut out = ft_core::atomic::AtomicFile::create(path).map_err(|e| e.to_string())?;
        let io = |e: std::io::Error| format!("writing `{}`: {e}", path.display());
        {
            let f = out.file();
            f.write_all(&(header.len() as u64).to_le_bytes())
                .map_err(io)?;
            f.write_all(&header).map_err(io)?;
            let copied = std::io::copy(&mut data, f).map_err(io)?;
            if copied != self.len {
                return Err(format!(
                    "copied {copied} of {} spooled bytes into `{}`",
                    self.len,
                    path.display()
                ));
            }
        }
        out.commit().map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::cell::RefCell;
    use std::path::Path;
    use std::rc::Rc;
    use std::time::{Duration, SystemTime};

    use burn::tensor::Device;
    use ft_arch::HfConfig;

    use super::*;
    use crate::arch::testing::{copy_with_config, fixture_dir};
    use crate::arch::{CausalLm, spec_for};
    use crate::error::ModelError;
    use crate::load::{load_model, load_model_cached};
    use crate::weights::{HostTensor, SafetensorsDir, VarBuilder, WeightFile};
    use crate::{PackedBatch, lora};

    fn nf4(double_quant: bool) -> Nf4Load {
        Nf4Load { double_quant }
    }

    /// Loads `dir` through `cache`.
    fn load(dir: &Path, dq: bool, cache: &Nf4Cache) -> (CausalLm, Nf4CacheReport) {
        let (m, r) = load_model_cached(dir, &Device::flex(), Some(nf4(dq)), Some(cache)).unwrap();
        (m, r.unwrap())
    }

    /// Every entry of the cache directory.
    fn listing(cache: &Nf4Cache) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(cache.dir()) else {
            return Vec::new();
        };
        let mut v: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Only finished cache files, no temporaries.
    fn assert_clean(cache: &Nf4Cache) {
        for name in listing(cache) {
            let stem = name.strip_suffix(".safetensors").unwrap_or("");
            assert!(
                stem.len() == 16 && stem.bytes().all(|b| b.is_ascii_hexdigit()),
                "stray file in the cache: {name}"
            );
        }
    }

    /// The tensors of a cache file, by weight name.
    fn cached(path: &Path, dq: bool) -> BTreeMap<String, Nf4Tensor> {
        let f = MappedFile::open(path).unwrap();
        f.metadata()
            .keys()
            .filter_map(|k| k.strip_suffix(".shape"))
            .map(|name| {
                let q = read_entry(&f, name, None, nf4(dq), NF4_BLOCKSIZE).unwrap();
                (name.to_string(), q)
            })
            .collect()
    }

    /// `name` of the base quantized directly, without any cache.
    fn quantized(base: &SafetensorsDir, name: &str, dq: bool) -> Nf4Tensor {
        let t = base.load(name).unwrap();
        let q = Nf4Tensor::quantize(&t.data, &t.shape, NF4_BLOCKSIZE).unwrap();
        if dq { q.with_double_quant() } else { q }
    }

    /// The base weight of every linear layer (dequantized for NF4), as bits.
    fn linear_bits(m: &CausalLm) -> Vec<(String, Vec<u32>)> {
        let head = m.lm_head.as_ref().map(|l| ("lm_head".to_string(), l));
        lora::linears(m)
            .into_iter()
            .chain(head)
            .map(|(n, l)| {
                let v: Vec<f32> = l.base_weight().into_data().try_to_vec().unwrap();
                (n, v.into_iter().map(f32::to_bits).collect())
            })
            .collect()
    }

    fn logits(m: &CausalLm) -> Vec<f32> {
        let batch =
            PackedBatch::from_rows(&[vec![vec![5, 9, 200, 3], vec![17, 4]]], 0, &Device::flex());
        m.forward(&batch).into_data().try_to_vec().unwrap()
    }

    fn mtime(path: &Path) -> SystemTime {
        std::fs::metadata(path).unwrap().modified().unwrap()
    }

    fn set_mtime(path: &Path, t: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    /// Negates every value of a safetensors file in place (same size, same
    /// header): a different model the key cannot tell from the old one.
    fn negate_values(path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        let (n, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let infos: Vec<(Dtype, usize, usize)> = meta
            .tensors()
            .values()
            .map(|i| (i.dtype, i.data_offsets.0, i.data_offsets.1))
            .collect();
        for (dtype, start, end) in infos {
            let size = dtype.bitsize() / 8;
            for at in (8 + n + start..8 + n + end).step_by(size) {
                bytes[at + size - 1] ^= 0x80;
            }
        }
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn miss_then_hit_gives_the_same_nf4_tensors() {
        // Single file and shards, plain and double quantization.
        for (fixture, dq) in [
            ("llama", false),
            ("llama", true),
            ("mistral_sharded", false),
            ("mistral_sharded", true),
        ] {
            let dir = fixture_dir(fixture);
            let tmp = tempfile::tempdir().unwrap();
            let cache = Nf4Cache::new(tmp.path());
            let (first, miss) = load(&dir, dq, &cache);
            assert_eq!(miss.status, Nf4CacheStatus::Written, "{fixture}");
            assert_eq!(miss.discarded, None);
            // The projections; an untied lm_head stays dense (as in bitsandbytes).
            let n = lora::linears(&first).len();
            assert_eq!(miss.tensors, n, "{fixture}");
            assert_eq!(miss.path.parent(), Some(cache.dir()));

            // The file holds exactly what quantizing the base gives.
            let base = SafetensorsDir::open(&dir).unwrap();
            let stored = cached(&miss.path, dq);
            assert_eq!(stored.len(), n);
            for (name, q) in &stored {
                assert_eq!(q, &quantized(&base, name, dq), "{fixture} {name}");
                assert_eq!(
                    matches!(q.absmax(), Absmax::DoubleQuant { .. }),
                    dq,
                    "{name}"
                );
            }

            let (second, hit) = load(&dir, dq, &cache);
            assert_eq!(
                hit,
                Nf4CacheReport {
                    status: Nf4CacheStatus::Hit,
                    ..miss.clone()
                },
                "{fixture}"
            );
            // Hit, miss and no cache at all: the same weights, bit for bit.
            let uncached = load_model(&dir, &Device::flex(), Some(nf4(dq))).unwrap();
            assert_eq!(linear_bits(&second), linear_bits(&uncached), "{fixture}");
            assert_eq!(linear_bits(&first), linear_bits(&uncached), "{fixture}");
            assert_eq!(logits(&second), logits(&uncached), "{fixture}");
            // The hit goes through the builder's own path too.
            let vb = VarBuilder::new(&base, &Device::flex()).with_nf4(Some(nf4(dq)));
            let session = Rc::new(cache.session(&base, nf4(dq)).unwrap());
            let vb = vb.with_nf4_cache(Some(Rc::clone(&session)));
            for (name, q) in &stored {
                let got = vb.get_nf4(q.shape(), name).unwrap();
                assert_eq!(&got, q, "{name}");
            }
            assert_eq!(session.finish().status, Nf4CacheStatus::Hit);
            // Plain and double quantization are two files.
            let (_, other) = load(&dir, !dq, &cache);
            assert_eq!(other.status, Nf4CacheStatus::Written);
            assert_ne!(other.path, miss.path);
            assert_clean(&cache);
        }
    }

    /// A GGUF base (the real SmolLM2-135M, Q4_1/Q8_0: dequantized, then
    /// quantized to NF4), when `scripts/fetch-smollm2.sh` has fetched it.
    #[test]
    fn a_gguf_base_is_cached_too() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/models/smollm2-135m-instruct.gguf");
        if !path.is_file() {
            eprintln!(
                "SKIPPED a_gguf_base_is_cached_too: {} is absent (run scripts/fetch-smollm2.sh)",
                path.display()
            );
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let cache = Nf4Cache::new(tmp.path());
        let (first, miss) = load(&path, true, &cache);
        assert_eq!(miss.status, Nf4CacheStatus::Written);
        assert_eq!(miss.tensors, lora::linears(&first).len());
        let (second, hit) = load(&path, true, &cache);
        assert_eq!(hit.status, Nf4CacheStatus::Hit);
        assert_eq!((hit.tensors, &hit.path), (miss.tensors, &miss.path));
        assert_eq!(linear_bits(&second), linear_bits(&first));
        assert_clean(&cache);
    }

    /// A source that records which tensors are read.
    struct Recording<'a> {
        inner: &'a SafetensorsDir,
        read: RefCell<Vec<String>>,
    }

    impl TensorSource for Recording<'_> {
        fn contains(&self, name: &str) -> bool {
            self.inner.contains(name)
        }
        fn load(&self, name: &str) -> Result<HostTensor, ModelError> {
            self.read.borrow_mut().push(name.to_string());
            self.inner.load(name)
        }
        fn origin(&self) -> &Path {
            self.inner.origin()
        }
        fn weight_files(&self) -> Vec<WeightFile<'_>> {
            self.inner.weight_files()
        }
    }

    /// Builds the model of `dir` from `source` through `cache`.
    fn build(dir: &Path, source: &Recording<'_>, cache: &Nf4Cache) -> (CausalLm, Nf4CacheReport) {
        let config = dir.join("config.json");
        let spec = spec_for(&HfConfig::read(&config).unwrap(), &config).unwrap();
        let session = Rc::new(cache.session(source, nf4(true)).unwrap());
        let vb = VarBuilder::new(source, &Device::flex())
            .with_nf4(Some(nf4(true)))
            .with_nf4_cache(Some(Rc::clone(&session)));
        let model = CausalLm::load(&spec, &vb).unwrap();
        (model, session.finish())
    }

    #[test]
    fn a_hit_reads_no_dense_weight_of_a_quantized_layer() {
        // Untied: lm_head stays dense, so it is read on a hit too.
        let dir = fixture_dir("mistral_sharded");
        let base = SafetensorsDir::open(&dir).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let cache = Nf4Cache::new(tmp.path());

        let miss = Recording {
            inner: &base,
            read: RefCell::default(),
        };
        let (_, report) = build(&dir, &miss, &cache);
        assert_eq!(report.status, Nf4CacheStatus::Written);
        let quantized: Vec<String> = cached(&report.path, true).into_keys().collect();
        assert_eq!(quantized.len(), report.tensors);
        assert!(
            !quantized.iter().any(|n| n == "lm_head.weight"),
            "{quantized:?}"
        );
        let read = miss.read.take();
        assert!(quantized.iter().all(|n| read.contains(n)), "{read:?}");

        let hit = Recording {
            inner: &base,
            read: RefCell::default(),
        };
        let (_, report) = build(&dir, &hit, &cache);
        assert_eq!(report.status, Nf4CacheStatus::Hit);
        let read = hit.read.take();
        assert!(
            !read.iter().any(|n| quantized.contains(n)),
            "read on a hit: {read:?}"
        );
        // Embeddings and norms still come from the base.
        assert!(
            read.iter().any(|n| n == "model.embed_tokens.weight"),
            "{read:?}"
        );
        assert!(read.iter().any(|n| n.ends_with("norm.weight")), "{read:?}");
    }

    /// The documented trade-off of a metadata key: values rewritten in
    /// place with the same size and header, and the old modification time
    /// put back, are not noticed.
    #[test]
    fn the_key_does_not_see_values_rewritten_with_size_and_mtime_kept() {
        let tmp_model = copy_with_config("llama", |_| {});
        let dir = tmp_model.path();
        let tmp = tempfile::tempdir().unwrap();
        let cache = Nf4Cache::new(tmp.path());
        let (first, report) = load(dir, false, &cache);
        assert_eq!(report.status, Nf4CacheStatus::Written);

        let weights = dir.join("model.safetensors");
        let (size, t) = (std::fs::metadata(&weights).unwrap().len(), mtime(&weights));
        negate_values(&weights);
        set_mtime(&weights, t);
        assert_eq!(std::fs::metadata(&weights).unwrap().len(), size);
        assert_eq!(mtime(&weights), t);

        // The base really is another model now ...
        let fresh = load_model(dir, &Device::flex(), Some(nf4(false))).unwrap();
        assert_ne!(linear_bits(&fresh), linear_bits(&first));
        // ... but the cache serves the codes of the old one.
        let (stale, report) = load(dir, false, &cache);
        assert_eq!(report.status, Nf4CacheStatus::Hit);
        assert_eq!(linear_bits(&stale), linear_bits(&first));
    }

    #[test]
    fn a_changed_base_file_misses() {
        let tmp_model = copy_with_config("llama", |_| {});
        let dir = tmp_model.path();
        let weights = dir.join("model.safetensors");
        let tmp = tempfile::tempdir().unwrap();
        let cache = Nf4Cache::new(tmp.path());
        let (_, first) = load(dir, false, &cache);
        assert_eq!(first.status, Nf4CacheStatus::Written);
        assert_eq!(load(dir, false, &cache).1.status, Nf4CacheStatus::Hit);

        // Touched: same bytes, a new modification time.
        let t = mtime(&weights);
        set_mtime(&weights, t + Duration::from_secs(1));
        let (_, touched) = load(dir, false, &cache);
        assert_eq!(touched.status, Nf4CacheStatus::Written);
        assert_ne!(touched.path, first.path);

        // Resized (8 more bytes of header padding), modification time kept.
        let t = mtime(&weights);
        let bytes = std::fs::read(&weights).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut grown = (n as u64 + 8).to_le_bytes().to_vec();
        grown.extend_from_slice(&bytes[8..8 + n]);
        grown.extend_from_slice(b"        ");
        grown.extend_from_slice(&bytes[8 + n..]);
        std::fs::write(&weights, grown).unwrap();
        set_mtime(&weights, t);
        let (_, resized) = load(dir, false, &cache);
        assert_eq!(resized.status, Nf4CacheStatus::Written);
        assert!(resized.path != touched.path && resized.path != first.path);

        // The same bytes under another path: another entry too.
        let elsewhere = copy_with_config("llama", |_| {});
        let (_, moved) = load(elsewhere.path(), false, &cache);
        assert_eq!(moved.status, Nf4CacheStatus::Written);
        assert_eq!(listing(&cache).len(), 4);
        assert_clean(&cache);
    }

    #[test]
    fn a_corrupt_cache_file_is_discarded_and_rewritten() {
        let dir = fixture_dir("llama");
        let base = SafetensorsDir::open(&dir).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let cache = Nf4Cache::new(tmp.path());
        let (_, first) = load(&dir, false, &cache);
        let path = first.path.clone();
        let good = std::fs::read(&path).unwrap();
        let check_rewritten = |report: &Nf4CacheReport, why: &str| {
            assert_eq!(report.status, Nf4CacheStatus::Written, "{why}");
            assert_eq!(report.tensors, first.tensors, "{why}");
            let reason = report.discarded.as_deref().unwrap_or_default();
            assert!(reason.contains(why), "{why}: {reason}");
            for (name, q) in cached(&path, false) {
                assert_eq!(q, quantized(&base, &name, false), "{name}");
            }
            let (_, again) = load(&dir, false, &cache);
            assert_eq!(again.status, Nf4CacheStatus::Hit, "{why}");
        };

        // Truncated: not a safetensors file any more.
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let (_, report) = load(&dir, false, &cache);
        check_rewritten(&report, "safetensors");

        // Another file under this name (the double-quantized one).
        let (_, dq) = load(&dir, true, &cache);
        std::fs::copy(&dq.path, &path).unwrap();
        let (_, report) = load(&dir, false, &cache);
        check_rewritten(&report, "key");

        // A valid file with one bad tensor half-way through the model: the
        // tensors served before it are carried over into the new file.
        let mut bad = good.clone();
        let (n, meta) = safetensors::SafeTensors::read_metadata(&bad).unwrap();
        let name = "model.layers.1.self_attn.q_proj.weight.absmax";
        let start = 8 + n + meta.info(name).unwrap().data_offsets.0;
        bad[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&path, &bad).unwrap();
        let (model, report) = load(&dir, false, &cache);
        check_rewritten(&report, "absmax");
        let uncached = load_model(&dir, &Device::flex(), Some(nf4(false))).unwrap();
        assert_eq!(linear_bits(&model), linear_bits(&uncached));
        assert_eq!(std::fs::read(&path).unwrap(), good);
        assert_clean(&cache);
    }

    #[test]
    fn no_temporary_files_are_left_and_a_failed_write_is_not_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Nf4Cache::new(tmp.path());
        // A load that fails half-way writes nothing.
        let wrong = copy_with_config("qwen3", |c| c["intermediate_size"] = 96.into());
        let e = load_model_cached(
            wrong.path(),
            &Device::flex(),
            Some(nf4(false)),
            Some(&cache),
        );
        assert!(matches!(e, Err(ModelError::ShapeMismatch { .. })));
        assert!(listing(&cache).is_empty(), "{:?}", listing(&cache));
        // Miss and hit leave only the cache file.
        let dir = fixture_dir("qwen3");
        load(&dir, false, &cache);
        load(&dir, false, &cache);
        assert_eq!(listing(&cache).len(), 1);
        assert_clean(&cache);

        // A cache directory that cannot be created: the load still works.
        let blocked = tmp.path().join("a-file");
        std::fs::write(&blocked, b"").unwrap();
        let (model, report) = load(&dir, false, &Nf4Cache::new(&blocked));
        assert!(
            matches!(report.status, Nf4CacheStatus::NotWritten(_)),
            "{report:?}"
        );
        let uncached = load_model(&dir, &Device::flex(), Some(nf4(false))).unwrap();
        assert_eq!(linear_bits(&model), linear_bits(&uncached));
    }

    #[test]
    fn no_cache_without_nf4_and_off_values() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Nf4Cache::new(tmp.path());
        let (_, report) =
            load_model_cached(&fixture_dir("llama"), &Device::flex(), None, Some(&cache)).unwrap();
        assert_eq!(report, None);
        assert!(!cache.dir().exists());
        for v in ["0", "false", "No", " off "] {
            assert!(is_off(v), "{v}");
        }
        for v in ["1", "", "yes", "on"] {
            assert!(!is_off(v), "{v}");
        }
    }
}
