//! `ft preprocess`: the prepare stage wired to the whole config.
//!
//! The tokenizer comes from `model.tokenizer` when set, else from
//! `model.base_model` when that is a local HF model directory. A GGUF base
//! carries its tokenizer as `tokenizer.ggml.*` metadata, rebuilt into an HF
//! tokenizer directory under `output_dir` ([`gguf_tokenizer_dir`]). For a
//! hub id, this stage fetches the config, tokenizer and template files only,
//! not the weights.

use std::path::{Path, PathBuf};

use ft_core::stage::Freshness;
pub use ft_tokenize::{
    HfTokenizer, PrepareReport, PrepareStage, Prepared, TokenizeError, debug_pieces,
};

use crate::load::{Loaded, LocalBase};

/// The directory holding `tokenizer.json` for this config.
pub fn tokenizer_dir(loaded: &Loaded) -> Result<PathBuf, TokenizeError> {
    let model = &loaded.config.model;
    if let Some(t) = &model.tokenizer {
        return Ok(loaded.ctx.resolve(t));
    }
    match loaded.local_tokenizer_base() {
        Ok(LocalBase::Gguf(p)) => gguf_tokenizer_dir(loaded, &p),
        Ok(LocalBase::HfDir(d)) => Ok(d),
        Err(msg) => Err(TokenizeError::NoTokenizer { message: msg }),
    }
}

/// The tokenizer of a GGUF base, rebuilt from its `tokenizer.ggml.*`
/// metadata into `<output_dir>/tokenizer-from-gguf/` (tokenizer.json and
/// tokenizer_config.json with the chat template), reused while the GGUF is
/// unchanged (size and modification time recorded beside it).
pub fn gguf_tokenizer_dir(loaded: &Loaded, gguf: &Path) -> Result<PathBuf, TokenizeError> {
    let dir = loaded.output_dir().join("tokenizer-from-gguf");
    let stamp = std::fs::metadata(gguf)
        .map(|m| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}\n{}\n{mtime}\n", gguf.display(), m.len())
        })
        .unwrap_or_default();
    let stamp_file = loaded.output_dir().join("tokenizer-from-gguf.source");
    let fresh = dir.join("tokenizer.json").is_file()
        && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp);
    if !fresh {
        let tok = ft_tokenize::tokenizer_from_gguf(gguf)?;
        tok.write_dir(&dir)?;
        let _ = ft_core::atomic::write_file(&stamp_file, stamp.as_bytes());
        tracing::info!(gguf = %gguf.display(), dir = %dir.display(), "rebuilt the tokenizer from GGUF metadata");
    }
    Ok(dir)
}

/// Where prepared data goes: `tokenize.dataset_prepared_path`, else
/// `<output_dir>/prepared`.
pub fn prepared_base(loaded: &Loaded) -> PathBuf {
    match &loaded.config.tokenize.dataset_prepared_path {
        Some(p) => loaded.ctx.resolve(p),
        None => loaded.output_dir().join("prepared"),
    }
}

/// The prepare stage for this config.
pub fn stage(loaded: &Loaded) -> Result<PrepareStage, TokenizeError> {
    let c = &loaded.config;
    Ok(PrepareStage::new(
        c.data.clone(),
        c.template.clone(),
        c.tokenize.clone(),
        c.seed,
        loaded.ctx.config_dir.clone(),
        tokenizer_dir(loaded)?,
    ))
}

/// Runs (or reuses) the prepare stage; returns the data, whether it was
/// reused, and the report.
pub fn preprocess(loaded: &Loaded) -> Result<(Prepared, Freshness, PrepareReport), TokenizeError> {
    let st = stage(loaded)?;
    let (prepared, fresh, _) = st.run_or_reuse(&prepared_base(loaded))?;
    let report = prepared.report().unwrap_or_default();
    Ok((prepared, fresh, report))
}
