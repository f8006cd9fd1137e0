//! Hugging Face hub ids as `base_model`: download once into the hub cache,
//! then load from the local snapshot directory.
//!
//! The files land where `huggingface_hub` (Python) puts them,
//! `$HF_HOME/hub/models--{org}--{name}/snapshots/{commit}/` (default
//! `~/.cache/huggingface`), through the `hf-hub` crate, so a model
//! downloaded by either tool is found by the other. What is fetched: the
//! model's `config.json`, its safetensors weights (`model.safetensors`, or the
//! index and every shard it names) and the tokenizer and template files
//! that exist (`tokenizer.json`, `tokenizer_config.json`,
//! `special_tokens_map.json`, `chat_template.jinja`, `generation_config.json`).
//! Every file comes from one commit: the repository's newest when asked, so
//! a snapshot never mixes revisions.
//!
//! The environment works as for the Python tools: `HF_HOME` (cache
//! location), `HF_ENDPOINT` (a mirror), `HF_TOKEN` (or the token file that
//! `huggingface-cli login` writes) for gated models, and `HF_HUB_OFFLINE=1`
//! to use only what is already cached.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

/// Files fetched when the repository has them.
const OPTIONAL_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
];

const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";

/// Why a hub model could not be made local.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// `HF_HUB_OFFLINE` is set and the cache lacks a file.
    #[error(
        "`{id}`: `{file}` is not in the hub cache `{cache}` and HF_HUB_OFFLINE is set; \
         unset HF_HUB_OFFLINE to download it, or point `model.base_model` at a local directory"
    )]
    NotCached {
        /// The hub id.
        id: String,
        /// The missing file.
        file: String,
        /// The cache directory searched.
        cache: PathBuf,
    },
    /// The hub could not be asked or a download failed.
    #[error(
        "`{id}`: downloading `{what}` from {endpoint} failed: {reason}; check the id and the \
         network (a gated model needs HF_TOKEN or `huggingface-cli login`; HF_ENDPOINT sets a \
         mirror, HF_HUB_OFFLINE=1 uses only the cache)"
    )]
    Download {
        /// The hub id.
        id: String,
        /// The file, or `the file list`.
        what: String,
        /// The hub endpoint.
        endpoint: String,
        /// The transport's message.
        reason: String,
    },
    /// The repository has no weights ft reads.
    #[error(
        "`{id}` has no model.safetensors or {INDEX} (files: {files}); ft reads safetensors \
         checkpoints, or a .gguf file downloaded and given as a path"
    )]
    NoWeights {
        /// The hub id.
        id: String,
        /// The repository's files, comma-separated.
        files: String,
    },
    /// The repository has no `tokenizer.json`.
    #[error(
        "`{id}` has no tokenizer.json; set `model.tokenizer` to a directory with the model's \
         tokenizer.json and tokenizer_config.json"
    )]
    NoTokenizer {
        /// The hub id.
        id: String,
    },
    /// A downloaded file is unreadable or the index malformed.
    #[error("`{id}`: `{path}`: {reason}")]
    Corrupt {
        /// The hub id.
        id: String,
        /// The local file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Where the hub is reached and the cache lives, from the environment.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// The hub cache (`$HF_HOME/hub`).
    pub cache: PathBuf,
    /// The endpoint (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// Use only the cache (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// A token for gated models (`HF_TOKEN`, else the login token file).
    pub token: Option<String>,
    /// Show download progress bars.
    pub progress: bool,
}

impl HubSettings {
    /// The settings the Python tools would use in this environment.
    pub fn from_env() -> Self {
        let cache = Cache::from_env();
        let truthy = |v: String| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes");
        Self {
            cache: cache.path().clone(),
            endpoint: std::env::var("HF_ENDPOINT")
                .unwrap_or_else(|_| "https://huggingface.co".to_string()),
            offline: std::env::var("HF_HUB_OFFLINE").is_ok_and(truthy),
            token: std::env::var("HF_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .or_else(|| cache.token()),
            progress: true,
        }
    }
}

/// What of a hub model to make local.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Config, weights, tokenizer and template files.
    Model,
    /// Config, tokenizer and template files only (`ft preprocess`).
    Tokenizer,
}

/// The local snapshot directory of hub model `id`, downloading what is
/// missing (see the module docs).
pub fn fetch_model(id: &str, settings: &HubSettings) -> Result<PathBuf, HubError> {
    fetch(id, settings, Want::Model)
}

/// The local snapshot directory of hub model `id` with its config,
/// tokenizer and template files, without the weights.
pub fn fetch_tokenizer(id: &str, settings: &HubSettings) -> Result<PathBuf, HubError> {
    fetch(id, settings, Want::Tokenizer)
}

/// [`fetch_model`] or [`fetch_tokenizer`].
pub fn fetch(id: &str, settings: &HubSettings, want: Want) -> Result<PathBuf, HubError> {
    if settings.offline {
        return cached(id, &settings.cache, want);
    }
    let download_err = |what: &str, e: ApiError| HubError::Download {
        id: id.to_string(),
        what: what.to_string(),
        endpoint: settings.endpoint.clone(),
        reason: e.to_string(),
    };
    let api = ApiBuilder::from_cache(Cache::new(settings.cache.clone()))
        .with_endpoint(settings.endpoint.clone())
        .with_token(settings.token.clone())
        .with_progress(settings.progress)
        .build()
        .map_err(|e| download_err("the file list", e))?;
    let info = api
        .model(id.to_string())
        .info()
        .map_err(|e| download_err("the file list", e))?;
    let present: BTreeSet<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    // Pin the commit the file list describes: every file of one snapshot.
    let repo = api.repo(Repo::with_revision(
        id.to_string(),
        RepoType::Model,
        info.sha.clone(),
    ));
    let get = |file: &str| repo.get(file).map_err(|e| download_err(file, e));
    let config = get("config.json")?;
    let dir = config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| settings.cache.clone());
    for f in OPTIONAL_FILES {
        if present.contains(f) {
            get(f)?;
        }
    }
    if want == Want::Tokenizer {
        if !present.contains("tokenizer.json") {
            return Err(HubError::NoTokenizer { id: id.to_string() });
        }
    } else if !get_weights(id, |f| present.contains(f), get)? {
        return Err(HubError::NoWeights {
            id: id.to_string(),
            files: present.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    // What was asked for is here: `main` now means this commit (offline
    // runs and the Python tools read that ref; an offline run that needs
    // weights a tokenizer-only fetch left out says which file is missing).
    Cache::new(settings.cache.clone())
        .model(id.to_string())
        .create_ref(&info.sha)
        .map_err(|e| HubError::Corrupt {
            id: id.to_string(),
            path: settings.cache.clone(),
            reason: format!("writing the `main` ref: {e}"),
        })?;
    Ok(dir)
}

/// The snapshot of `id` already in `cache` (the `main` ref), checked to hold
/// the config and every weight file.
pub fn cached_model(id: &str, cache: &Path) -> Result<PathBuf, HubError> {
    cached(id, cache, Want::Model)
}

/// The snapshot of `id` already in `cache`, checked to hold what `want`
/// names.
pub fn cached(id: &str, cache: &Path, want: Want) -> Result<PathBuf, HubError> {
    let repo = Cache::new(cache.to_path_buf()).model(id.to_string());
    let need = |file: &str| {
        repo.get(file).ok_or_else(|| HubError::NotCached {
            id: id.to_string(),
            file: file.to_string(),
            cache: cache.to_path_buf(),
        })
    };
    let config = need("config.json")?;
    if want == Want::Tokenizer {
        need("tokenizer.json")?;
    } else if !get_weights(id, |f| repo.get(f).is_some(), need)? {
        need(SINGLE)?;
    }
    Ok(config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cache.to_path_buf()))
}

/// Makes the weights local through `get`: the index and every shard it
/// names, or the single file, whichever `has` sees. False when neither.
fn get_weights(
    id: &str,
    has: impl Fn(&str) -> bool,
    get: impl Fn(&str) -> Result<PathBuf, HubError>,
) -> Result<bool, HubError> {
    if has(INDEX) {
        let index = get(INDEX)?;
        for shard in shards(id, &index)? {
            get(&shard)?;
        }
        Ok(true)
    } else if has(SINGLE) {
        get(SINGLE)?;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// The shard files a safetensors index names, each once, in order.
fn shards(id: &str, index: &Path) -> Result<Vec<String>, HubError> {
    let corrupt = |reason: String| HubError::Corrupt {
        id: id.to_string(),
        path: index.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|e| corrupt(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| corrupt("no `weight_map` object".to_string()))?;
    let mut out: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| corrupt(format!("`weight_map.{tensor}` is not a file name")))?;
        // A shard name is a plain file of the snapshot, never a path out.
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(corrupt(format!(
                "`weight_map.{tensor}` names `{file}`, not a file of the repository"
            )));
        }
        if !out.iter().any(|f| f == file) {
            out.push(file.to_string());
        }
    }
    Ok(out)
}
