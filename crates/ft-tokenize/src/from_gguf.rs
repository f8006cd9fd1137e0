//! Rebuilding an HF `tokenizers::Tokenizer` (and the facts of a
//! `tokenizer_config.json`) from a GGUF file's `tokenizer.ggml.*` metadata,
//! so a model that ships only as GGUF can be fine-tuned like an HF
//! checkpoint directory.
//!
//! A GGUF file carries the vocabulary, not a `tokenizer.json`: the token
//! strings by id (`tokenizer.ggml.tokens`), their kinds
//! (`tokenizer.ggml.token_type`), BPE merges or SentencePiece scores, the
//! special-token ids, and a *name* for the pre-tokenizer
//! (`tokenizer.ggml.pre`) that llama.cpp maps to its own regex table in
//! `src/llama-vocab.cpp`. This module maps the same names to the HF
//! pre-tokenizer that the original `tokenizer.json` had (which is what
//! llama.cpp's regexes imitate), so encoding matches the HF tokenizer the
//! model was trained with, byte for byte and id for id.
//!
//! Two vocabulary kinds (`tokenizer.ggml.model`):
//!
//! * `gpt2`: byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM …). Vocabulary
//!   and merges as stored; the pre-tokenizer from [`GptPre`].
//! * `llama`: SentencePiece BPE with byte fallback (Llama 2, Mistral v0.1,
//!   TinyLlama). Merges are derived from the vocabulary and the scores as
//!   `transformers`' `LlamaConverter` does; normalizer
//!   `Prepend("▁") + Replace(" ", "▁")` and the matching decoder, as the
//!   `tokenizer.json` of Llama 2 has them.
//!
//! Token types (llama.cpp `llama_token_type`): 3 (control) and 2 (unknown,
//! `<unk>`) become special added tokens, 4 (user-defined) non-special added
//! tokens; ids are kept.

use std::path::{Path, PathBuf};

use ft_gguf::{Array, GgufFile, Metadata, Value};
use serde_json::{Map, Value as Json, json};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace, Sequence as NormSequence};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::TokenizeError;

/// The GGUF metadata keys read here (gguf-py `Keys.Tokenizer`).
pub mod keys {
    /// `gpt2` or `llama` (others are refused).
    pub const MODEL: &str = "tokenizer.ggml.model";
    /// Pre-tokenizer name (`smollm`, `llama-bpe`, `qwen2` …).
    pub const PRE: &str = "tokenizer.ggml.pre";
    /// Token strings by id.
    pub const TOKENS: &str = "tokenizer.ggml.tokens";
    /// Token kinds by id (see [`TokenType`](super::TokenType)).
    pub const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    /// SentencePiece scores by id.
    pub const SCORES: &str = "tokenizer.ggml.scores";
    /// BPE merges, `"left right"`, highest priority first.
    pub const MERGES: &str = "tokenizer.ggml.merges";
    /// Beginning-of-sequence id.
    pub const BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    /// End-of-sequence id.
    pub const EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    /// End-of-turn id.
    pub const EOT_ID: &str = "tokenizer.ggml.eot_token_id";
    /// Padding id.
    pub const PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    /// Unknown-token id.
    pub const UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    /// Whether to prepend BOS.
    pub const ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    /// Whether to append EOS.
    pub const ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    /// SentencePiece: whether to prepend `▁` to the text.
    pub const ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    /// The default Jinja chat template.
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
}

/// Most tokens accepted in a vocabulary (the largest real ones are ~260k).
const MAX_VOCAB: usize = 1 << 22;

/// The SentencePiece word-boundary marker.
const SPIECE_UNDERLINE: &str = "\u{2581}";

/// A token's kind, as llama.cpp's `llama_token_type` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// 0: not set.
    Undefined,
    /// 1: an ordinary vocabulary entry.
    Normal,
    /// 2: the unknown token.
    Unknown,
    /// 3: a special (control) token: `<|im_start|>`, `<s>` …
    Control,
    /// 4: an added, non-special token.
    UserDefined,
    /// 5: a placeholder that is never produced.
    Unused,
    /// 6: a SentencePiece byte-fallback token (`<0x0A>`).
    Byte,
}

impl TokenType {
    /// The type for llama.cpp's number, `None` for an unknown one.
    pub fn from_i64(v: i64) -> Option<Self> {
        Some(match v {
            0 => Self::Undefined,
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }
}

/// The byte-level BPE pre-tokenizers supported, by llama.cpp's
/// `tokenizer.ggml.pre` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GptPre {
    /// `default` (or no `pre` key): llama.cpp's fallback regex cascade.
    Default,
    /// `gpt-2`, `phi-2`, `mpt`, `olmo`: GPT-2's regex.
    Gpt2,
    /// `smollm`, `starcoder`, `refact`: single digits, then GPT-2's regex.
    Smollm,
    /// `llama-bpe`, `llama3`, `llama-v3`, `dbrx`, `smaug-bpe`: Llama 3's
    /// regex (digits in runs of up to three); `ignore_merges`.
    Llama3,
    /// `qwen2`, `deepseek-r1-qwen`: Qwen2's regex (single digits); NFC.
    Qwen2,
}

/// The names accepted in `tokenizer.ggml.pre`, for messages.
pub const SUPPORTED_PRE: &str = "default, gpt-2, phi-2, mpt, olmo, smollm, starcoder, refact, llama-bpe, llama3, llama-v3, dbrx, smaug-bpe, qwen2, deepseek-r1-qwen";

// Regexes from llama.cpp's `llm_tokenizer_bpe` (src/llama-vocab.cpp). Where
// llama.cpp "adapted" a regex for its engine, the original from the model's
// tokenizer.json (quoted in llama.cpp's comments) is used: that is the
// behaviour being reproduced.
/// Llama 3's pattern (tokenizer.json of Meta-Llama-3-8B).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pattern (tokenizer.json of Qwen2-7B).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's `default` cascade: each regex splits the pieces the previous
/// one left (unmatched text stays a piece of its own).
const DEFAULT_REGEXES: [&str; 4] = [
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];

impl GptPre {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "default" => Self::Default,
            "gpt-2" | "phi-2" | "mpt" | "olmo" => Self::Gpt2,
            "smollm" | "starcoder" | "refact" => Self::Smollm,
            "llama-bpe" | "llama3" | "llama-v3" | "dbrx" | "smaug-bpe" => Self::Llama3,
            "qwen2" | "deepseek-r1-qwen" => Self::Qwen2,
            _ => return None,
        })
    }

    /// Whether llama.cpp prepends BOS when the file does not say
    /// (`add_bos` in `llama_vocab::impl::load`).
    fn default_add_bos(self) -> bool {
        matches!(self, Self::Llama3)
    }

    /// llama.cpp's `clean_spaces` (transformers' `clean_up_tokenization_spaces`).
    fn clean_spaces(self) -> bool {
        !matches!(self, Self::Smollm | Self::Qwen2)
    }

    fn ignore_merges(self) -> bool {
        matches!(self, Self::Llama3)
    }

    fn pre_tokenizer(self) -> Result<PreTokenizerWrapper, String> {
        let split = |re: &str| -> Result<PreTokenizerWrapper, String> {
            Split::new(
                SplitPattern::Regex(re.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map(PreTokenizerWrapper::from)
            .map_err(|e| format!("regex `{re}`: {e}"))
        };
        // With `use_regex: false` ByteLevel only maps bytes to its alphabet.
        let bytes_only = PreTokenizerWrapper::from(ByteLevel::new(false, true, false));
        let gpt2 = PreTokenizerWrapper::from(ByteLevel::new(false, true, true));
        Ok(match self {
            Self::Default => {
                let mut seq = DEFAULT_REGEXES
                    .iter()
                    .map(|re| split(re))
                    .collect::<Result<Vec<_>, _>>()?;
                seq.push(bytes_only);
                PreSequence::new(seq).into()
            }
            Self::Gpt2 => gpt2,
            Self::Smollm => PreSequence::new(vec![Digits::new(true).into(), gpt2]).into(),
            Self::Llama3 => PreSequence::new(vec![split(LLAMA3_REGEX)?, bytes_only]).into(),
            Self::Qwen2 => PreSequence::new(vec![split(QWEN2_REGEX)?, bytes_only]).into(),
        })
    }
}

/// Which tokenizer a GGUF file describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufVocab {
    /// `tokenizer.ggml.model = gpt2`: byte-level BPE with this pre-tokenizer.
    Gpt2(GptPre),
    /// `tokenizer.ggml.model = llama`: SentencePiece BPE with byte fallback.
    Llama,
}

/// A special token: its id and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialToken {
    /// The id.
    pub id: u32,
    /// The token's text (`<|im_end|>`).
    pub content: String,
}

/// Errors rebuilding a tokenizer from GGUF metadata. Each names the file and
/// the metadata key.
#[derive(Debug, thiserror::Error)]
pub enum GgufTokenizerError {
    /// The file could not be opened or parsed as GGUF.
    #[error(transparent)]
    Gguf(#[from] ft_gguf::Error),
    /// A required key is absent.
    #[error("`{path}`: metadata key `{key}` is missing; {help}")]
    MissingKey {
        /// The GGUF file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What to do.
        help: &'static str,
    },
    /// A key has another type than expected.
    #[error("`{path}`: metadata key `{key}` should be {expected}, found {found}")]
    WrongType {
        /// The GGUF file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What was expected.
        expected: &'static str,
        /// What the file has.
        found: String,
    },
    /// `tokenizer.ggml.model` names a kind not rebuilt here.
    #[error(
        "`{path}`: `tokenizer.ggml.model` = `{model}` is not supported yet (supported: `gpt2`, `llama`); use the model's HF tokenizer directory instead (`model.tokenizer`)"
    )]
    UnsupportedModel {
        /// The GGUF file.
        path: PathBuf,
        /// The value.
        model: String,
    },
    /// `tokenizer.ggml.pre` names a pre-tokenizer not mapped here.
    #[error(
        "`{path}`: `tokenizer.ggml.pre` = `{pre}` is not supported yet (supported: {supported}); use the model's HF tokenizer directory instead (`model.tokenizer`)"
    )]
    UnsupportedPre {
        /// The GGUF file.
        path: PathBuf,
        /// The value.
        pre: String,
        /// The supported names.
        supported: &'static str,
    },
    /// A per-token array does not have one entry per token.
    #[error(
        "`{path}`: `{key}` has {len} entries but `tokenizer.ggml.tokens` has {expected}; the file is damaged or was written by a broken converter"
    )]
    LengthMismatch {
        /// The GGUF file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// Its length.
        len: usize,
        /// The number of tokens.
        expected: usize,
    },
    /// A value is out of range or malformed.
    #[error("`{path}`: `{key}`: {message}")]
    BadValue {
        /// The GGUF file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What is wrong, with the index.
        message: String,
    },
    /// The same token text appears under two ids, which an HF vocabulary
    /// (a map from text to id) cannot express.
    #[error(
        "`{path}`: `tokenizer.ggml.tokens` has `{token}` at ids {first} and {second}; an HF tokenizer cannot hold one text under two ids"
    )]
    DuplicateToken {
        /// The GGUF file.
        path: PathBuf,
        /// The token.
        token: String,
        /// Its first id.
        first: u32,
        /// Its second id.
        second: u32,
    },
    /// The tokenizers crate refused a part.
    #[error("`{path}`: building the tokenizer failed: {message}")]
    Build {
        /// The GGUF file.
        path: PathBuf,
        /// What the tokenizers crate said.
        message: String,
    },
    /// The target directory holds files other than a tokenizer's.
    #[error(
        "`{dir}` already holds `{file}`, which is not a tokenizer file; the directory is replaced as a whole, so pass an empty or tokenizer-only directory"
    )]
    DirNotEmpty {
        /// The directory.
        dir: PathBuf,
        /// The first foreign entry.
        file: String,
    },
}

/// A tokenizer rebuilt from GGUF metadata, with what `tokenizer_config.json`
/// would say.
#[derive(Clone)]
pub struct GgufTokenizer {
    /// The tokenizer (ids identical to the GGUF vocabulary).
    pub tokenizer: Tokenizer,
    /// The vocabulary kind and pre-tokenizer.
    pub vocab: GgufVocab,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<SpecialToken>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<SpecialToken>,
    /// `tokenizer.ggml.eot_token_id` (end of turn; not an HF config key).
    pub eot: Option<SpecialToken>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad: Option<SpecialToken>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk: Option<SpecialToken>,
    /// Whether encoding prepends BOS (`tokenizer.ggml.add_bos_token`, else
    /// llama.cpp's default for the vocabulary).
    pub add_bos: bool,
    /// Whether encoding appends EOS (`tokenizer.ggml.add_eos_token`, default
    /// false).
    pub add_eos: bool,
    /// transformers' `clean_up_tokenization_spaces` (llama.cpp's
    /// `clean_spaces`).
    pub clean_up_tokenization_spaces: bool,
    /// `<arch>.context_length`, written as `model_max_length`.
    pub model_max_length: Option<u64>,
    /// The GGUF file.
    pub source: PathBuf,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("source", &self.source)
            .field("vocab", &self.vocab)
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

/// Opens `path` and rebuilds its tokenizer ([`GgufTokenizer::from_metadata`]).
pub fn tokenizer_from_gguf(path: &Path) -> Result<GgufTokenizer, TokenizeError> {
    let file = GgufFile::open(path).map_err(GgufTokenizerError::from)?;
    Ok(GgufTokenizer::from_metadata(file.metadata(), path)?)
}

/// Typed access to the metadata, with errors naming the file.
struct Meta<'a> {
    meta: &'a Metadata,
    path: &'a Path,
}

impl<'a> Meta<'a> {
    fn wrong(&self, key: &'static str, expected: &'static str, v: &Value) -> GgufTokenizerError {
        let found = match v {
            Value::Array(a) => format!("an array of {:?}", a.element_type()),
            other => format!("{:?}", other.value_type()),
        };
        GgufTokenizerError::WrongType {
            path: self.path.to_path_buf(),
            key,
            expected,
            found,
        }
    }

    fn missing(&self, key: &'static str, help: &'static str) -> GgufTokenizerError {
        GgufTokenizerError::MissingKey {
            path: self.path.to_path_buf(),
            key,
            help,
        }
    }

    fn str(&self, key: &'static str) -> Result<Option<&'a str>, GgufTokenizerError> {
        match self.meta.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }

    fn bool(&self, key: &'static str) -> Result<Option<bool>, GgufTokenizerError> {
        match self.meta.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a bool", v)),
        }
    }

    fn u64(&self, key: &'static str) -> Result<Option<u64>, GgufTokenizerError> {
        match self.meta.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer", v)),
        }
    }

    fn array(&self, key: &'static str) -> Result<Option<&'a Array>, GgufTokenizerError> {
        match self.meta.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "an array", v)),
        }
    }

    fn strings(&self, key: &'static str) -> Result<Option<&'a [String]>, GgufTokenizerError> {
        match self.array(key)? {
            None => Ok(None),
            Some(Array::String(v)) => Ok(Some(v)),
            Some(_) => Err(self.wrong(
                key,
                "an array of strings",
                self.meta.get(key).unwrap_or(&Value::Bool(false)),
            )),
        }
    }

    fn check_len(
        &self,
        key: &'static str,
        len: usize,
        expected: usize,
    ) -> Result<(), GgufTokenizerError> {
        if len == expected {
            Ok(())
        } else {
            Err(GgufTokenizerError::LengthMismatch {
                path: self.path.to_path_buf(),
                key,
                len,
                expected,
            })
        }
    }

    /// `tokenizer.ggml.token_type`, any integer element type (gguf-py
    /// writes i32); absent: every token normal.
    fn token_types(&self, n: usize) -> Result<Vec<TokenType>, GgufTokenizerError> {
        let Some(arr) = self.array(keys::TOKEN_TYPE)? else {
            return Ok(vec![TokenType::Normal; n]);
        };
        let raw: Vec<i64> = match arr {
            Array::I32(v) => v.iter().map(|&x| x.into()).collect(),
            Array::U32(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I8(v) => v.iter().map(|&x| x.into()).collect(),
            Array::U8(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I16(v) => v.iter().map(|&x| x.into()).collect(),
            Array::U16(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I64(v) => v.clone(),
            _ => {
                return Err(GgufTokenizerError::WrongType {
                    path: self.path.to_path_buf(),
                    key: keys::TOKEN_TYPE,
                    expected: "an array of integers",
                    found: format!("an array of {:?}", arr.element_type()),
                });
            }
        };
        self.check_len(keys::TOKEN_TYPE, raw.len(), n)?;
        raw.iter()
            .enumerate()
            .map(|(i, &t)| {
                TokenType::from_i64(t).ok_or_else(|| GgufTokenizerError::BadValue {
                    path: self.path.to_path_buf(),
                    key: keys::TOKEN_TYPE,
                    message: format!("token {i} has type {t}, expected 0..=6"),
                })
            })
            .collect()
    }

    /// `tokenizer.ggml.scores` as f64 (gguf-py writes f32).
    fn scores(&self, n: usize) -> Result<Vec<f64>, GgufTokenizerError> {
        let arr = self.array(keys::SCORES)?.ok_or_else(|| {
            self.missing(
                keys::SCORES,
                "a SentencePiece (`llama`) vocabulary needs its scores to derive the merges",
            )
        })?;
        let v: Vec<f64> = match arr {
            Array::F32(v) => v.iter().map(|&x| x.into()).collect(),
            Array::F64(v) => v.clone(),
            _ => {
                return Err(GgufTokenizerError::WrongType {
                    path: self.path.to_path_buf(),
                    key: keys::SCORES,
                    expected: "an array of f32",
                    found: format!("an array of {:?}", arr.element_type()),
                });
            }
        };
        self.check_len(keys::SCORES, v.len(), n)?;
        Ok(v)
    }

    /// A special-token id key, checked against the vocabulary.
    fn special(
        &self,
        key: &'static str,
        tokens: &[String],
    ) -> Result<Option<SpecialToken>, GgufTokenizerError> {
        let Some(id) = self.u64(key)? else {
            return Ok(None);
        };
        // llama.cpp writes -1 as u32::MAX for "none" in some converters.
        if id == u64::from(u32::MAX) {
            return Ok(None);
        }
        let content = usize::try_from(id)
            .ok()
            .and_then(|i| tokens.get(i))
            .ok_or_else(|| GgufTokenizerError::BadValue {
                path: self.path.to_path_buf(),
                key,
                message: format!("id {id} is past the vocabulary ({} tokens)", tokens.len()),
            })?;
        Ok(Some(SpecialToken {
            id: u32::try_from(id).unwrap_or(u32::MAX),
            content: content.clone(),
        }))
    }
}

impl GgufTokenizer {
    /// Rebuilds the tokenizer from `meta`; `path` names the file in errors.
    pub fn from_metadata(meta: &Metadata, path: &Path) -> Result<Self, GgufTokenizerError> {
        let m = Meta { meta, path };
        let build = |message: String| GgufTokenizerError::Build {
            path: path.to_path_buf(),
            message,
        };
        let model = m.str(keys::MODEL)?.ok_or_else(|| {
            m.missing(
                keys::MODEL,
                "the file has no tokenizer; use the model's HF tokenizer directory (`model.tokenizer`)",
            )
        })?;
        let vocab = match model {
            "gpt2" => {
                let pre = match m.str(keys::PRE)? {
                    None => {
                        tracing::warn!(
                            "`{}` has no `{}`; using llama.cpp's `default` pre-tokenizer, which may not match the original tokenizer",
                            path.display(),
                            keys::PRE
                        );
                        GptPre::Default
                    }
                    Some(name) => GptPre::from_name(name).ok_or_else(|| {
                        GgufTokenizerError::UnsupportedPre {
                            path: path.to_path_buf(),
                            pre: name.to_owned(),
                            supported: SUPPORTED_PRE,
                        }
                    })?,
                };
                GgufVocab::Gpt2(pre)
            }
            "llama" => GgufVocab::Llama,
            other => {
                return Err(GgufTokenizerError::UnsupportedModel {
                    path: path.to_path_buf(),
                    model: other.to_owned(),
                });
            }
        };

        let tokens = m.strings(keys::TOKENS)?.ok_or_else(|| {
            m.missing(
                keys::TOKENS,
                "the file has no vocabulary; use the model's HF tokenizer directory (`model.tokenizer`)",
            )
        })?;
        if tokens.is_empty() || tokens.len() > MAX_VOCAB {
            return Err(GgufTokenizerError::BadValue {
                path: path.to_path_buf(),
                key: keys::TOKENS,
                message: format!(
                    "{} tokens; expected between 1 and {MAX_VOCAB}",
                    tokens.len()
                ),
            });
        }
        let types = m.token_types(tokens.len())?;

        // Text → id; every id must be reachable from its text.
        let mut map = Vocab::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            if let Some(first) = map.insert(t.clone(), id) {
                return Err(GgufTokenizerError::DuplicateToken {
                    path: path.to_path_buf(),
                    token: t.clone(),
                    first,
                    second: id,
                });
            }
        }

        let bos = m.special(keys::BOS_ID, tokens)?;
        let eos = m.special(keys::EOS_ID, tokens)?;
        let eot = m.special(keys::EOT_ID, tokens)?;
        let pad = m.special(keys::PAD_ID, tokens)?;
        let unk = m.special(keys::UNK_ID, tokens)?;
        let add_eos = m.bool(keys::ADD_EOS)?.unwrap_or(false);

        let (mut tokenizer, add_bos, clean) = match vocab {
            GgufVocab::Gpt2(pre) => {
                let merges = m.strings(keys::MERGES)?.ok_or_else(|| {
                    m.missing(
                        keys::MERGES,
                        "a byte-level BPE (`gpt2`) vocabulary needs its merges",
                    )
                })?;
                let merges = split_merges(merges, path)?;
                let bpe = BPE::builder()
                    .vocab_and_merges(map, merges)
                    .ignore_merges(pre.ignore_merges())
                    .build()
                    .map_err(|e| build(e.to_string()))?;
                let mut tk = Tokenizer::new(bpe);
                tk.with_pre_tokenizer(Some(pre.pre_tokenizer().map_err(build)?));
                if pre == GptPre::Qwen2 {
                    tk.with_normalizer(Some(NFC));
                }
                tk.with_decoder(Some(DecoderWrapper::from(ByteLevel::default())));
                let add_bos = m.bool(keys::ADD_BOS)?.unwrap_or(pre.default_add_bos());
                (tk, add_bos, pre.clean_spaces())
            }
            GgufVocab::Llama => {
                let scores = m.scores(tokens.len())?;
                let merges = spm_merges(tokens, &scores, &map);
                let unk_text = unk
                    .as_ref()
                    .map(|u| u.content.clone())
                    .unwrap_or_else(|| "<unk>".to_owned());
                let bpe = BPE::builder()
                    .vocab_and_merges(map, merges)
                    .unk_token(unk_text)
                    .fuse_unk(true)
                    .byte_fallback(true)
                    .build()
                    .map_err(|e| build(e.to_string()))?;
                let mut tk = Tokenizer::new(bpe);
                let space_prefix = m.bool(keys::ADD_SPACE_PREFIX)?.unwrap_or(true);
                let replace =
                    Replace::new(" ", SPIECE_UNDERLINE).map_err(|e| build(e.to_string()))?;
                let normalizer: NormalizerWrapper = if space_prefix {
                    NormSequence::new(vec![
                        Prepend::new(SPIECE_UNDERLINE.to_owned()).into(),
                        replace.into(),
                    ])
                    .into()
                } else {
                    replace.into()
                };
                tk.with_normalizer(Some(normalizer));
                let mut decoders: Vec<DecoderWrapper> = vec![
                    Replace::new(SPIECE_UNDERLINE, " ")
                        .map_err(|e| build(e.to_string()))?
                        .into(),
                    ByteFallback::new().into(),
                    Fuse::new().into(),
                ];
                if space_prefix {
                    decoders.push(Strip::new(' ', 1, 0).into());
                }
                tk.with_decoder(Some(DecoderSequence::new(decoders)));
                let add_bos = m.bool(keys::ADD_BOS)?.unwrap_or(true);
                (tk, add_bos, false)
            }
        };

        // Added tokens, in id order: control and unknown → special (as
        // Llama 2's tokenizer.json has `<unk>`), user-defined → not.
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter_map(|(t, ty)| match ty {
                TokenType::Control | TokenType::Unknown => {
                    Some(AddedToken::from(t.clone(), true).normalized(false))
                }
                TokenType::UserDefined => Some(AddedToken::from(t.clone(), false)),
                _ => None,
            })
            .collect();
        for a in added {
            if a.special {
                tokenizer.add_special_tokens(std::slice::from_ref(&a));
            } else {
                tokenizer.add_tokens(std::slice::from_ref(&a));
            }
        }

        tokenizer.with_post_processor(post_processor(
            vocab,
            add_bos.then_some(bos.as_ref()).flatten(),
            add_eos.then_some(eos.as_ref()).flatten(),
            path,
        )?);

        let arch_ctx = m
            .str("general.architecture")?
            .map(|a| format!("{a}.context_length"));
        let model_max_length = match arch_ctx {
            Some(k) => meta.get(&k).and_then(Value::as_u64),
            None => None,
        };

        Ok(Self {
            tokenizer,
            vocab,
            chat_template: m.str(keys::CHAT_TEMPLATE)?.map(str::to_owned),
            bos,
            eos,
            eot,
            pad,
            unk,
            add_bos,
            add_eos,
            clean_up_tokenization_spaces: clean,
            model_max_length,
            source: path.to_path_buf(),
        })
    }

    /// The `tokenizer_config.json` an HF directory would have: special
    /// tokens, `add_bos_token`/`add_eos_token`, `chat_template`,
    /// `added_tokens_decoder`.
    pub fn tokenizer_config(&self) -> Json {
        let mut o = Map::new();
        let mut decoder = Map::new();
        let mut added: Vec<_> = self
            .tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .collect();
        added.sort_by_key(|(id, _)| *id);
        for (id, t) in &added {
            decoder.insert(
                id.to_string(),
                json!({
                    "content": t.content,
                    "lstrip": t.lstrip,
                    "normalized": t.normalized,
                    "rstrip": t.rstrip,
                    "single_word": t.single_word,
                    "special": t.special,
                }),
            );
        }
        o.insert("added_tokens_decoder".into(), Json::Object(decoder));
        o.insert("add_bos_token".into(), Json::Bool(self.add_bos));
        o.insert("add_eos_token".into(), Json::Bool(self.add_eos));
        let tok = |t: &Option<SpecialToken>| match t {
            Some(t) => Json::String(t.content.clone()),
            None => Json::Null,
        };
        o.insert("bos_token".into(), tok(&self.bos));
        o.insert("eos_token".into(), tok(&self.eos));
        o.insert("pad_token".into(), tok(&self.pad));
        o.insert("unk_token".into(), tok(&self.unk));
        if let Some(t) = &self.chat_template {
            o.insert("chat_template".into(), Json::String(t.clone()));
        }
        o.insert(
            "clean_up_tokenization_spaces".into(),
            Json::Bool(self.clean_up_tokenization_spaces),
        );
        if let Some(n) = self.model_max_length {
            o.insert("model_max_length".into(), json!(n));
        }
        o.insert(
            "tokenizer_class".into(),
            Json::String("PreTrainedTokenizerFast".into()),
        );
        Json::Object(o)
    }

    /// The tokenizer serialised as `tokenizer.json`.
    pub fn tokenizer_json(&self) -> Result<String, GgufTokenizerError> {
        self.tokenizer
            .to_string(false)
            .map_err(|e| GgufTokenizerError::Build {
                path: self.source.clone(),
                message: format!("serialising tokenizer.json: {e}"),
            })
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`,
    /// atomically as a pair: the directory is built aside and swapped in
    /// ([`ft_core::atomic::AtomicDir`]). Because the swap replaces the
    /// whole directory, an existing `dir` may only hold tokenizer files
    /// (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`,
    /// `chat_template.jinja`); anything else is refused rather than lost.
    pub fn write_dir(&self, dir: &Path) -> Result<PathBuf, TokenizeError> {
        const OURS: [&str; 4] = [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "chat_template.jinja",
        ];
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !OURS.contains(&name.as_str()) {
                    return Err(GgufTokenizerError::DirNotEmpty {
                        dir: dir.to_path_buf(),
                        file: name,
                    }
                    .into());
                }
            }
        }
        let json = self.tokenizer_json()?;
        let config = serde_json::to_string_pretty(&self.tokenizer_config()).map_err(|e| {
            GgufTokenizerError::Build {
                path: self.source.clone(),
                message: format!("serialising tokenizer_config.json: {e}"),
            }
        })?;
        let out = ft_core::atomic::AtomicDir::create(dir)?;
        ft_core::atomic::write_file(out.path().join("tokenizer.json"), json.as_bytes())?;
        ft_core::atomic::write_file(out.path().join("tokenizer_config.json"), config.as_bytes())?;
        Ok(out.commit()?)
    }
}

/// Splits `"left right"` merges (gguf-py writes them joined by one space;
/// byte-level tokens never contain a plain space).
fn split_merges(
    merges: &[String],
    path: &Path,
) -> Result<Vec<(String, String)>, GgufTokenizerError> {
    merges
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.split_once(' ')
                .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| GgufTokenizerError::BadValue {
                    path: path.to_path_buf(),
                    key: keys::MERGES,
                    message: format!(
                        "merge {i} is `{s}`, expected two tokens separated by one space"
                    ),
                })
        })
        .collect()
}

/// Merges of a SentencePiece BPE vocabulary, as transformers'
/// `SentencePieceExtractor.extract(vocab_scores)` derives them for
/// `LlamaConverter`: every split of a piece into two pieces that are both in
/// the vocabulary, ordered by the merged piece's score (highest first; ties
/// keep vocabulary order), and within one piece by the ids of the two parts.
fn spm_merges(tokens: &[String], scores: &[f64], map: &Vocab) -> Vec<(String, String)> {
    // (score, id of merged piece, left id, right id, left, right)
    let mut merges: Vec<(f64, u32, u32, u32, &str, &str)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        let mut local = Vec::new();
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (map.get(l), map.get(r)) {
                local.push((li, ri, l, r));
            }
        }
        local.sort_by_key(|&(li, ri, _, _)| (li, ri));
        let score = scores.get(id as usize).copied().unwrap_or(0.0);
        merges.extend(
            local
                .into_iter()
                .map(|(li, ri, l, r)| (score, id, li, ri, l, r)),
        );
    }
    // Python's sort is stable: equal scores keep the order built above
    // (vocabulary order, then part ids).
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges
        .into_iter()
        .map(|(_, _, _, _, l, r)| (l.to_owned(), r.to_owned()))
        .collect()
}

/// `ByteLevel` offsets handling for byte-level vocabularies, then BOS/EOS
/// insertion (`TemplateProcessing`) when the file asks for it: the shape of
/// the post-processor in Llama 3's and SmolLM2's tokenizer.json.
fn post_processor(
    vocab: GgufVocab,
    bos: Option<&SpecialToken>,
    eos: Option<&SpecialToken>,
    path: &Path,
) -> Result<Option<PostProcessorWrapper>, GgufTokenizerError> {
    let byte_level = PostProcessorWrapper::from(ByteLevel::new(true, false, true));
    if bos.is_none() && eos.is_none() {
        // A SentencePiece vocabulary without BOS/EOS: no post-processor.
        return Ok(match vocab {
            GgufVocab::Gpt2(_) => Some(byte_level),
            GgufVocab::Llama => None,
        });
    }
    // Built through serde: `Template`'s string form splits on `:` and
    // whitespace, which token texts may contain.
    let special = |t: &SpecialToken, type_id: u32| json!({"SpecialToken": {"id": t.content, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let push = |out: &mut Vec<Json>, s: &str, type_id: u32| {
        if let Some(b) = bos {
            out.push(special(b, type_id));
        }
        out.push(seq(s, type_id));
        if let Some(e) = eos {
            out.push(special(e, type_id));
        }
    };
    push(&mut single, "A", 0);
    push(&mut pair, "A", 0);
    push(&mut pair, "B", 1);
    let mut specials = Map::new();
    for t in bos.into_iter().chain(eos) {
        specials.insert(
            t.content.clone(),
            json!({"id": t.content, "ids": [t.id], "tokens": [t.content]}),
        );
    }
    let template = json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": specials,
    });
    let template: PostProcessorWrapper =
        serde_json::from_value(template).map_err(|e| GgufTokenizerError::Build {
            path: path.to_path_buf(),
            message: format!("BOS/EOS template: {e}"),
        })?;
    Ok(Some(match vocab {
        GgufVocab::Gpt2(_) => {
            PostProcessorWrapper::Sequence(tokenizers::processors::sequence::Sequence::new(vec![
                byte_level, template,
            ]))
        }
        GgufVocab::Llama => template,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A tiny byte-level vocabulary: the 256 byte symbols, a few merges, two
    /// control tokens and one user-defined token.
    fn gpt2_meta(pre: &str) -> Metadata {
        let mut tokens: Vec<String> = vec!["<|end|>".into(), "<|start|>".into()];
        let alphabet = {
            let mut a: Vec<char> = ByteLevel::alphabet().into_iter().collect();
            a.sort_unstable();
            a
        };
        tokens.extend(alphabet.iter().map(|c| c.to_string()));
        for t in [
            "he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld", "<custom>",
        ] {
            tokens.push(t.into());
        }
        let n = tokens.len();
        let mut types = vec![1i32; n];
        types[0] = 3;
        types[1] = 3;
        types[n - 1] = 4;
        let merges: Vec<String> = [
            "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut m = Metadata::new();
        m.set(keys::MODEL, "gpt2")
            .set(keys::PRE, pre)
            .set(keys::TOKENS, tokens)
            .set(keys::TOKEN_TYPE, types)
            .set(keys::MERGES, merges)
            .set(keys::BOS_ID, 1u32)
            .set(keys::EOS_ID, 0u32)
            .set(keys::CHAT_TEMPLATE, "{{ messages }}");
        m
    }

    #[test]
    fn unsupported_pre_is_named() {
        let err = GgufTokenizer::from_metadata(&gpt2_meta("tekken"), Path::new("m.gguf"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`tekken`"), "{err}");
        assert!(err.contains("m.gguf"), "{err}");
        assert!(err.contains("smollm"), "{err}");
    }

    #[test]
    fn unsupported_model_is_named() {
        let mut m = gpt2_meta("gpt-2");
        m.set(keys::MODEL, "bert");
        let err = GgufTokenizer::from_metadata(&m, Path::new("m.gguf"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`bert`") && err.contains("not supported"),
            "{err}"
        );
    }

    #[test]
    fn missing_and_mistyped_keys() {
        let mut m = gpt2_meta("gpt-2");
        m.remove(keys::MERGES);
        let err = GgufTokenizer::from_metadata(&m, Path::new("m.gguf")).unwrap_err();
        assert!(
            matches!(
                err,
                GgufTokenizerError::MissingKey {
                    key: keys::MERGES,
                    ..
                }
            ),
            "{err}"
        );

        let mut m = gpt2_meta("gpt-2");
        m.set(keys::TOKEN_TYPE, vec![1i32; 3]);
        let err = GgufTokenizer::from_metadata(&m, Path::new("m.gguf")).unwrap_err();
        assert!(
            matches!(err, GgufTokenizerError::LengthMismatch { len: 3, .. }),
            "{err}"
        );

        let mut m = gpt2_meta("gpt-2");
        m.set(keys::BOS_ID, 100_000u32);
        let err = GgufTokenizer::from_metadata(&m, Path::new("m.gguf")).unwrap_err();
        assert!(err.to_string().contains("past the vocabulary"), "{err}");

        let mut m = gpt2_meta("gpt-2");
        m.set(keys::MERGES, vec!["nospace".to_string()]);
        let err = GgufTokenizer::from_metadata(&m, Path::new("m.gguf")).unwrap_err();
        assert!(err.to_string().contains("merge 0 is `nospace`"), "{err}");

        let mut m = gpt2_meta("gpt-2");
        m.set(keys::PRE, 3u32);
        let err = GgufTokenizer::from_metadata(&m, Path::new("m.gguf")).unwrap_err();
        assert!(
            matches!(err, GgufTokenizerError::WrongType { key: keys::PRE, .. }),
            "{err}"
        );
    }

    #[test]
    fn duplicate_token_is_refused() {
        let mut m = gpt2_meta("gpt-2");
        let Some(Value::Array(Array::String(t))) = m.get(keys::TOKENS).cloned() else {
            panic!()
        };
        let mut t = t;
        let last = t.len() - 1;
        t[last] = "hello".into();
        m.set(keys::TOKENS, t);
        let err = GgufTokenizer::from_metadata(&m, Path::new("m.gguf")).unwrap_err();
        assert!(
            matches!(err, GgufTokenizerError::DuplicateToken { .. }),
            "{err}"
        );
    }

    #[test]
    fn ids_specials_and_added_tokens() {
        let t = GgufTokenizer::from_metadata(&gpt2_meta("gpt-2"), Path::new("m.gguf")).unwrap();
        let tk = &t.tokenizer;
        let enc = tk.encode("<|start|>hello world<custom>", false).unwrap();
        let hello = tk.token_to_id("hello").unwrap();
        let world = tk.token_to_id("Ġworld").unwrap();
        let custom = tk.token_to_id("<custom>").unwrap();
        assert_eq!(enc.get_ids(), &[1, hello, world, custom]);
        assert_eq!(
            tk.decode(enc.get_ids(), false).unwrap(),
            "<|start|>hello world<custom>"
        );
        assert_eq!(
            tk.decode(enc.get_ids(), true).unwrap(),
            "hello world<custom>"
        );
        assert_eq!(t.bos.as_ref().unwrap().content, "<|start|>");
        assert!(!t.add_bos);
        let cfg = t.tokenizer_config();
        assert_eq!(cfg["eos_token"], "<|end|>");
        assert_eq!(cfg["chat_template"], "{{ messages }}");
        assert_eq!(cfg["added_tokens_decoder"]["1"]["special"], true);
        let last = (tk.get_vocab_size(true) - 1).to_string();
        assert_eq!(cfg["added_tokens_decoder"][&last]["special"], false);
    }

    #[test]
    fn add_bos_inserts_bos() {
        let mut m = gpt2_meta("llama-bpe");
        m.set(keys::ADD_BOS, true);
        let t = GgufTokenizer::from_metadata(&m, Path::new("m.gguf")).unwrap();
        let enc = t.tokenizer.encode("hello", true).unwrap();
        assert_eq!(enc.get_ids()[0], 1);
        let enc = t.tokenizer.encode("hello", false).unwrap();
        assert_ne!(enc.get_ids()[0], 1);
    }

    #[test]
    fn every_pre_builds() {
        for name in SUPPORTED_PRE.split(", ") {
            let t = GgufTokenizer::from_metadata(&gpt2_meta(name), Path::new("m.gguf"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let enc = t.tokenizer.encode("hello world 12345!!", false).unwrap();
            assert_eq!(
                t.tokenizer.decode(enc.get_ids(), false).unwrap(),
                "hello world 12345!!",
                "{name}"
            );
        }
    }

    #[test]
    fn llama3_splits_digits_in_threes_and_default_cascade() {
        let pieces = |pre: GptPre, s: &str| {
            use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
            let p = pre.pre_tokenizer().unwrap();
            let mut pts = PreTokenizedString::from(s);
            p.pre_tokenize(&mut pts).unwrap();
            pts.get_splits(OffsetReferential::Original, OffsetType::Byte)
                .into_iter()
                .map(|(s, _, _)| s.to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(pieces(GptPre::Llama3, "1234567"), ["123", "456", "7"]);
        assert_eq!(pieces(GptPre::Qwen2, "123"), ["1", "2", "3"]);
        assert_eq!(pieces(GptPre::Smollm, "a12"), ["a", "1", "2"]);
        // llama.cpp `default`: punctuation runs first, then digit triples.
        assert_eq!(
            pieces(GptPre::Default, "x+=12345"),
            ["x", "+=", "123", "45"]
        );
    }

    #[test]
    fn write_dir_refuses_foreign_files_and_round_trips() {
        let t = GgufTokenizer::from_metadata(&gpt2_meta("gpt-2"), Path::new("m.gguf")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tok");
        t.write_dir(&out).unwrap();
        // Rewriting a tokenizer-only directory is fine.
        t.write_dir(&out).unwrap();
        let loaded = crate::HfTokenizer::load(&out).unwrap();
        assert_eq!(
            loaded.config.chat_template.as_deref(),
            Some("{{ messages }}")
        );
        assert_eq!(loaded.config.special.bos.as_deref(), Some("<|start|>"));
        assert!(loaded.specials.contains(&"<|end|>".to_string()));
        std::fs::write(out.join("model.safetensors"), b"x").unwrap();
        let err = t.write_dir(&out).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        assert!(out.join("model.safetensors").exists());
    }
}
