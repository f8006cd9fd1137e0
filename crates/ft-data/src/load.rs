//! Loading every dataset of a [`DataConfig`], shuffling and splitting.

use std::path::{Path, PathBuf};

use crate::config::{DataConfig, DatasetConfig};
use crate::error::DataError;
use crate::format;
use crate::sample::Record;
use crate::source;

/// Training and evaluation rows.
#[derive(Debug, Clone, Default)]
pub struct Splits {
    /// Training rows, shuffled when `shuffle` is on.
    pub train: Vec<Record>,
    /// Evaluation rows: `test_datasets`, or `val_set_size` rows held out.
    pub eval: Vec<Record>,
}

/// Every data file a config reads, named `datasets[i]` /
/// `test_datasets[i]` (with `/file` for directories), for cache keys.
pub fn input_files(
    cfg: &DataConfig,
    config_dir: &Path,
) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut out = Vec::new();
    for (list, ds) in [
        ("datasets", &cfg.datasets),
        ("test_datasets", &cfg.test_datasets),
    ] {
        for (i, d) in ds.iter().enumerate() {
            let path = resolve(config_dir, d.path());
            let files = source::data_files(&path, split_of(d))?;
            let dir = path.is_dir();
            for f in files {
                let name = if dir {
                    format!(
                        "{list}[{i}]/{}",
                        f.file_name()
                            .map(|n| n.to_string_lossy())
                            .unwrap_or_default()
                    )
                } else {
                    format!("{list}[{i}]")
                };
                out.push((name, f));
            }
        }
    }
    Ok(out)
}

fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn split_of(d: &DatasetConfig) -> Option<&str> {
    match d {
        DatasetConfig::ChatTemplate(c) => c.split.as_deref(),
        DatasetConfig::Alpaca(c) => c.split.as_deref(),
        DatasetConfig::Completion(c) => c.split.as_deref(),
        DatasetConfig::InputOutput(c) => c.split.as_deref(),
    }
}

/// Reads all rows of one dataset.
pub fn load_dataset(
    d: &DatasetConfig,
    index: usize,
    config_dir: &Path,
) -> Result<Vec<Record>, DataError> {
    let path = resolve(config_dir, d.path());
    let cols = format::columns(d);
    let origin = format::origin(d);
    let mut out = Vec::new();
    for file in source::data_files(&path, split_of(d))? {
        source::for_each_row(&file, &cols, |at, row| {
            let sample = format::to_sample(d, &at, &row)?;
            out.push(Record {
                at,
                dataset: index,
                origin,
                sample,
            });
            Ok(())
        })?;
    }
    Ok(out)
}

/// Loads `datasets` and `test_datasets`, shuffles the training rows with
/// `seed` (when `shuffle`), and holds out `val_set_size` rows: the last rows
/// after the shuffle.
pub fn load(cfg: &DataConfig, config_dir: &Path, seed: u64) -> Result<Splits, DataError> {
    let mut train = Vec::new();
    for (i, d) in cfg.datasets.iter().enumerate() {
        train.extend(load_dataset(d, i, config_dir)?);
    }
    let mut eval = Vec::new();
    for (i, d) in cfg.test_datasets.iter().enumerate() {
        eval.extend(load_dataset(d, i, config_dir)?);
    }
    if cfg.shuffle {
        shuffle(&mut train, seed);
    }
    let k = cfg.val_set_size.rows(train.len());
    if k > 0 {
        eval = train.split_off(train.len() - k);
    }
    Ok(Splits { train, eval })
}

/// SplitMix64: a tiny, fixed PRNG, so a seed gives the same order on every
/// platform and every version of ft (no dependency whose stream may change).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// Fisher–Yates shuffle driven by [`SplitMix64`].
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}
