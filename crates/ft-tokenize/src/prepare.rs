//! The prepare stage: datasets → rendered, tokenized, masked, packed rows,
//! cached on disk.
//!
//! This stage lives in `ft-tokenize`, which therefore depends on `ft-data`
//! and `ft-template` (they stay independent of each other and of this
//! crate). A separate `ft-prepare` crate would hold only this file; keeping
//! it here avoids a crate whose only job is glue, and `ft-pipeline` still
//! composes it like every other stage.
//!
//! Cache: the output directory is `<dataset_prepared_path>/<key>`, where
//! `key` hashes the stage fingerprint (every preprocessing option, the seed,
//! the template source, the special tokens, the output format version) and
//! the content hashes of every input file (datasets, `tokenizer.json`,
//! `tokenizer_config.json`, `chat_template.jinja`, a template file).
//! `run_cached` adds the `ft` version and checks the manifest again, and
//! commits the directory atomically, so a changed input is never served
//! from a stale cache and an interrupted run leaves nothing half-written.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ft_core::hash::{Digest, fingerprint, hash_bytes};
use ft_core::manifest::{Input, Manifest};
use ft_core::stage::{Freshness, Stage, run_cached};
use ft_data::{DataConfig, Record};
use ft_template::{ChatTemplate, FixedDate, MaskRules, RenderOptions, TemplateConfig, source};
use serde::{Deserialize, Serialize};

use crate::config::TokenizeConfig;
use crate::error::TokenizeError;
use crate::pack::{PackedRow, pack};
use crate::process::{Processor, SplitReport};
use crate::store::{self, META_FILE, PreparedMeta};
use crate::tokenizer::HfTokenizer;

/// Version of the prepared-data layout; part of every cache key.
pub const PREPARED_FORMAT: u32 = 1;

/// The prepare stage's inputs.
#[derive(Debug)]
pub struct PrepareStage {
    /// `data`.
    pub data: DataConfig,
    /// `template`.
    pub template: TemplateConfig,
    /// `tokenize`.
    pub tokenize: TokenizeConfig,
    /// Top-level `seed` (shuffle).
    pub seed: u64,
    /// Directory of the config file.
    pub config_dir: PathBuf,
    /// Directory with tokenizer.json and tokenizer_config.json.
    pub tokenizer_dir: PathBuf,
    inputs: OnceLock<Vec<Input>>,
}

/// Compiles a resolved chat template with the `template:` section's
/// `chat_template_kwargs` and fixed `date_string`, and the tokenizer's
/// special tokens: the template as preparation and generation render it.
pub fn compile_chat_template(
    cfg: &TemplateConfig,
    src: &source::TemplateSource,
    tok: &HfTokenizer,
) -> Result<ChatTemplate, TokenizeError> {
    let date = cfg
        .date_string
        .as_deref()
        .map(FixedDate::parse)
        .transpose()?;
    let options = RenderOptions {
        kwargs: cfg.chat_template_kwargs.clone(),
        date,
    };
    Ok(ChatTemplate::new(
        &src.name,
        &src.source,
        tok.config.special.clone(),
        options,
    )?)
}

/// The whole report of a preprocessing run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrepareReport {
    /// Where the template came from (absent without conversations).
    pub template: Option<String>,
    /// `sequence_len`.
    pub sequence_len: usize,
    /// `sample_packing`.
    pub sample_packing: bool,
    /// Training split.
    pub train: SplitReport,
    /// Evaluation split.
    pub eval: SplitReport,
}

/// A loaded prepared directory.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Where it is.
    pub dir: PathBuf,
    /// `meta.json`.
    pub meta: PreparedMeta,
    /// Training rows.
    pub train: Vec<PackedRow>,
    /// Evaluation rows.
    pub eval: Vec<PackedRow>,
}

impl Prepared {
    /// The report stored with the data.
    pub fn report(&self) -> Option<PrepareReport> {
        serde_json::from_value(self.meta.stats.clone()).ok()
    }
}

#[derive(Serialize)]
struct FingerprintView<'a> {
    format: u32,
    data: &'a DataConfig,
    template: &'a TemplateConfig,
    sequence_len: usize,
    sample_packing: bool,
    excess_length_strategy: crate::config::ExcessLengthStrategy,
    seed: u64,
    template_source: Option<Digest>,
    special_tokens: ft_template::SpecialTokens,
}

fn has_chat(data: &DataConfig) -> bool {
    data.datasets.iter().chain(&data.test_datasets).any(|d| {
        matches!(
            d,
            ft_data::DatasetConfig::ChatTemplate(_) | ft_data::DatasetConfig::Alpaca(_)
        )
    })
}

impl PrepareStage {
    /// A stage for these sections.
    pub fn new(
        data: DataConfig,
        template: TemplateConfig,
        tokenize: TokenizeConfig,
        seed: u64,
        config_dir: PathBuf,
        tokenizer_dir: PathBuf,
    ) -> Self {
        Self {
            data,
            template,
            tokenize,
            seed,
            config_dir,
            tokenizer_dir,
            inputs: OnceLock::new(),
        }
    }

    /// The chat template this stage renders with (`None` without conversations).
    pub fn template_source(&self) -> Result<Option<source::TemplateSource>, TokenizeError> {
        if !has_chat(&self.data) {
            return Ok(None);
        }
        let hf = ft_template::HfTokenizerConfig::read_dir(&self.tokenizer_dir)?;
        Ok(Some(source::resolve(
            &self.template,
            &hf,
            &self.tokenizer_dir,
            &self.config_dir,
        )?))
    }

    fn compile_template(&self, tok: &HfTokenizer) -> Result<Option<ChatTemplate>, TokenizeError> {
        let Some(src) = self.template_source()? else {
            return Ok(None);
        };
        Ok(Some(compile_chat_template(&self.template, &src, tok)?))
    }

    fn input_list(&self) -> Result<Vec<Input>, TokenizeError> {
        if let Some(v) = self.inputs.get() {
            return Ok(v.clone());
        }
        let mut v = Vec::new();
        for (name, path) in ft_data::input_files(&self.data, &self.config_dir)? {
            v.push(Input::file(name, &path)?);
        }
        for p in HfTokenizer::files(&self.tokenizer_dir) {
            let name = format!(
                "tokenizer/{}",
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
            v.push(Input::file(name, &p)?);
        }
        if let Some(src) = self.template_source()?
            && let Some(f) = src.file
        {
            v.push(Input::file("template_file", &f)?);
        }
        let _ = self.inputs.set(v.clone());
        Ok(v)
    }

    /// The cache key: fingerprint and input digests together.
    pub fn key(&self) -> Result<Digest, TokenizeError> {
        let mut s = self.fingerprint()?;
        for i in self.input_list()? {
            s.push_str(&format!("\n{}={}", i.name, i.digest));
        }
        Ok(hash_bytes(s.as_bytes()))
    }

    /// `<base>/<first 16 hex digits of the key>`.
    pub fn cache_dir(&self, base: &Path) -> Result<PathBuf, TokenizeError> {
        Ok(base.join(&self.key()?[..16]))
    }

    /// Prepares into `base/<key>` unless that is already done.
    pub fn run_or_reuse(
        &self,
        base: &Path,
    ) -> Result<(Prepared, Freshness, Manifest), TokenizeError> {
        run_cached(self, &self.cache_dir(base)?)
    }

    /// Prepares everything in memory: the rows and the report.
    pub fn prepare(
        &self,
    ) -> Result<(Vec<PackedRow>, Vec<PackedRow>, PrepareReport, u32), TokenizeError> {
        // Reading the data and building the tokenizer are independent and
        // both serial: overlap them.
        let (tok, splits) = rayon::join(
            || HfTokenizer::load(&self.tokenizer_dir),
            || ft_data::load(&self.data, &self.config_dir, self.seed),
        );
        let (tok, splits) = (tok?, splits?);
        let template = self.compile_template(&tok)?;
        let proc = Processor {
            tokenizer: &tok,
            template: template.as_ref(),
            rules: MaskRules {
                roles_to_train: self.template.roles_to_train.clone(),
                train_on_eos: self.template.train_on_eos,
            },
            train_on_inputs: self.template.train_on_inputs,
            tokenize: &self.tokenize,
        };
        let seq = self.tokenize.sequence_len;
        let run = |records: &[Record]| -> Result<(SplitReport, Vec<PackedRow>), TokenizeError> {
            let outcomes = proc.process_all(records)?;
            let (mut report, kept) = SplitReport::collect(records, outcomes);
            let mut rows = if self.tokenize.sample_packing {
                pack(kept, seq)
            } else {
                kept.into_iter().map(PackedRow::single).collect()
            };
            // Packing opens rows longest-first; shuffle them again so batches
            // do not go from long to short samples.
            if self.tokenize.sample_packing && self.data.shuffle {
                ft_data::shuffle(&mut rows, self.seed);
            }
            report.rows = rows.len();
            report.packing_efficiency = if rows.is_empty() {
                0.0
            } else {
                report.tokens as f64 / (rows.len() * seq) as f64
            };
            Ok((report, rows))
        };
        let (train_report, train_rows) = run(&splits.train)?;
        let (eval_report, eval_rows) = run(&splits.eval)?;
        if train_rows.is_empty() {
            let reasons: Vec<String> = train_report
                .dropped
                .iter()
                .map(|(r, t)| format!("{} dropped: {}", t.count, r.describe()))
                .collect();
            return Err(TokenizeError::NothingToTrain {
                reasons: if reasons.is_empty() {
                    "no rows".into()
                } else {
                    reasons.join(", ")
                },
            });
        }
        let report = PrepareReport {
            template: template.as_ref().map(|t| t.name().to_string()),
            sequence_len: seq,
            sample_packing: self.tokenize.sample_packing,
            train: train_report,
            eval: eval_report,
        };
        Ok((train_rows, eval_rows, report, tok.pad_id()))
    }
}

impl Stage for PrepareStage {
    const NAME: &'static str = "prepare";
    type Output = Prepared;
    type Error = TokenizeError;

    fn fingerprint(&self) -> Result<Digest, TokenizeError> {
        let src = self.template_source()?;
        let special = ft_template::HfTokenizerConfig::read_dir(&self.tokenizer_dir)?.special;
        Ok(fingerprint(&FingerprintView {
            format: PREPARED_FORMAT,
            data: &self.data,
            template: &self.template,
            sequence_len: self.tokenize.sequence_len,
            sample_packing: self.tokenize.sample_packing,
            excess_length_strategy: self.tokenize.excess_length_strategy,
            seed: self.seed,
            template_source: src.map(|s| hash_bytes(s.source.as_bytes())),
            special_tokens: special,
        })?)
    }

    fn inputs(&self) -> Result<Vec<Input>, TokenizeError> {
        self.input_list()
    }

    fn run(&self, dir: &Path) -> Result<serde_json::Value, TokenizeError> {
        let (train, eval, report, pad_id) = self.prepare()?;
        let stats = serde_json::to_value(&report).map_err(|source| ft_core::Error::Json {
            what: "the preprocess report",
            source,
        })?;
        let meta = PreparedMeta {
            sequence_len: self.tokenize.sequence_len,
            pad_id,
            sample_packing: self.tokenize.sample_packing,
            train: store::write_shards(dir, "train", &train)?,
            eval: store::write_shards(dir, "eval", &eval)?,
            stats: stats.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&meta).map_err(|source| ft_core::Error::Json {
            what: "prepared meta.json",
            source,
        })?;
        ft_core::atomic::write_file(dir.join(META_FILE), &bytes)?;
        Ok(stats)
    }

    fn load(&self, dir: &Path) -> Result<Prepared, TokenizeError> {
        let meta = store::read_meta(dir)?;
        let train = store::read_shards(dir, &meta.train)?;
        let eval = store::read_shards(dir, &meta.eval)?;
        Ok(Prepared {
            dir: dir.to_path_buf(),
            meta,
            train,
            eval,
        })
    }
}

impl fmt::Display for PrepareReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = &self.template {
            writeln!(f, "chat template: {t}")?;
        }
        writeln!(
            f,
            "sequence_len {} · {}",
            self.sequence_len,
            if self.sample_packing {
                "packed (block-diagonal attention)"
            } else {
                "one sample per row, padded"
            }
        )?;
        for (name, s) in [("train", &self.train), ("eval", &self.eval)] {
            if s.samples_read == 0 && name == "eval" {
                writeln!(f, "eval: none")?;
                continue;
            }
            writeln!(
                f,
                "{name}: {} samples read, {} kept",
                s.samples_read, s.samples_kept
            )?;
            for (reason, t) in &s.dropped {
                writeln!(
                    f,
                    "  dropped {} ({}); first: {}",
                    t.count,
                    reason.describe(),
                    t.first.as_deref().unwrap_or("-")
                )?;
            }
            if s.truncated > 0 {
                writeln!(f, "  truncated to sequence_len: {}", s.truncated)?;
            }
            let pct = if s.tokens == 0 {
                0.0
            } else {
                100.0 * s.trainable_tokens as f64 / s.tokens as f64
            };
            writeln!(
                f,
                "  tokens {} · trainable {} ({pct:.1}%)",
                s.tokens, s.trainable_tokens
            )?;
            writeln!(
                f,
                "  rows {} · packing efficiency {:.1}%",
                s.rows,
                100.0 * s.packing_efficiency
            )?;
            if s.rewrites_history.count > 0 {
                writeln!(
                    f,
                    "  warning: the template renders earlier turns differently once later turns exist in {} samples (e.g. Qwen3 drops <think> of earlier turns); trained text differs from what a growing chat shows; first: {}",
                    s.rewrites_history.count,
                    s.rewrites_history.first.as_deref().unwrap_or("-")
                )?;
            }
            if s.eot_missing.count > 0 {
                writeln!(
                    f,
                    "  warning: {} trained turns do not end with a trained end-of-turn token (the model may not learn to stop); first: {}",
                    s.eot_missing.count,
                    s.eot_missing.first.as_deref().unwrap_or("-")
                )?;
            }
        }
        Ok(())
    }
}

/// Text pieces of the first `n` training samples, each flagged trained or
/// not, decoded with the tokenizer (special tokens shown).
pub fn debug_pieces(
    prepared: &Prepared,
    tok: &HfTokenizer,
    n: usize,
) -> Result<Vec<Vec<(String, bool)>>, TokenizeError> {
    let mut out = Vec::new();
    for row in &prepared.train {
        for (ids, mask) in row.samples() {
            if out.len() >= n {
                return Ok(out);
            }
            let mut pieces = Vec::new();
            let mut start = 0;
            for i in 1..=ids.len() {
                if i == ids.len() || mask[i] != mask[start] {
                    let text = tok.inner.decode(&ids[start..i], false).map_err(|e| {
                        TokenizeError::Tokenizer {
                            path: tok.dir.join("tokenizer.json"),
                            message: e.to_string(),
                        }
                    })?;
                    pieces.push((text, mask[start]));
                    start = i;
                }
            }
            out.push(pieces);
        }
    }
    Ok(out)
}
