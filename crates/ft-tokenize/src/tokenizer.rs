//! Loading an HF tokenizer directory: `tokenizer.json` (the `tokenizers`
//! crate, pure-Rust `fancy-regex` backend) plus `tokenizer_config.json`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use ft_template::HfTokenizerConfig;

use crate::error::TokenizeError;
use crate::pretok::FastTokenizer;

/// A tokenizer with the facts preprocessing needs.
pub struct HfTokenizer {
    /// The tokenizer (the `tokenizers` crate's, with the byte-level regex
    /// replaced by [`crate::pretok`]'s scanner: the same encodings).
    pub inner: FastTokenizer,
    /// What `tokenizer_config.json` says (special tokens, chat template).
    pub config: HfTokenizerConfig,
    /// The directory it was read from.
    pub dir: PathBuf,
    /// Contents of every special added token, longest first.
    pub specials: Vec<String>,
    /// Ids of every special added token.
    pub special_ids: HashSet<u32>,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("dir", &self.dir)
            .field("specials", &self.specials.len())
            .finish()
    }
}

impl HfTokenizer {
    /// Files in `dir` whose bytes decide the tokenization and the template.
    pub fn files(dir: &Path) -> Vec<PathBuf> {
        [
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
        ]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.is_file())
        .collect()
    }

    /// Loads `dir/tokenizer.json` and `dir/tokenizer_config.json`.
    pub fn load(dir: &Path) -> Result<Self, TokenizeError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(TokenizeError::NoTokenizer {
                message: format!(
                    "`{}` has no tokenizer.json; point `model.tokenizer` at a directory with the model's tokenizer.json and tokenizer_config.json",
                    dir.display()
                ),
            });
        }
        let inner = FastTokenizer::from_file(&path).map_err(|e| TokenizeError::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if inner
            .get_pre_tokenizer()
            .is_some_and(|p| p.is_accelerated())
        {
            crate::pretok::warm_up();
        }
        let config = HfTokenizerConfig::read_dir(dir)?;
        let mut specials: Vec<String> = Vec::new();
        let mut special_ids = HashSet::new();
        for (id, t) in inner.get_added_tokens_decoder() {
            if t.special {
                special_ids.insert(id);
                specials.push(t.content.clone());
            }
        }
        for s in &config.special_added {
            if let Some(id) = inner.token_to_id(s) {
                special_ids.insert(id);
            }
            specials.push(s.clone());
        }
        specials.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        specials.dedup();
        Ok(Self {
            inner,
            config,
            dir: dir.to_path_buf(),
            specials,
            special_ids,
        })
    }

    /// The EOS token's id (`eos_token` of tokenizer_config.json).
    pub fn eos_id(&self) -> Option<u32> {
        self.config
            .special
            .eos
            .as_deref()
            .and_then(|s| self.inner.token_to_id(s))
    }

    /// The padding id: `pad_token`, else `eos_token`, else 0.
    pub fn pad_id(&self) -> u32 {
        self.config
            .special
            .pad
            .as_deref()
            .and_then(|s| self.inner.token_to_id(s))
            .or_else(|| self.eos_id())
            .unwrap_or(0)
    }
}
