//! Tokenizer metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`) from
//! `tokenizer.json` and `tokenizer_config.json`, as llama.cpp's converter
//! writes it.
//!
//! Two vocabulary paths, as in `convert_hf_to_gguf.py`:
//!
//! * **gpt2** (`TextModel._set_vocab_gpt2`, byte-level BPE: Llama 3,
//!   SmolLM2, Qwen2/3): `vocab_size` tokens from the tokenizer's vocabulary
//!   and added tokens (ids it lacks become `[PAD{i}]`, type UNUSED), added
//!   tokens CONTROL when special (or when they look special, `<|…|>`) else
//!   USER_DEFINED, the rest NORMAL; merges; `tokenizer.ggml.pre` from the
//!   pre-tokenizer hash ([`crate::pre_hashes`]).
//! * **llama** (`_set_vocab_llama_hf`, gguf-py's `LlamaHfVocab`: a BPE
//!   `tokenizer.json` with `byte_fallback` and a `Sequence` decoder, for
//!   `llama`/`mistral` models): base tokens with score −1000, `<0xXX>` tokens
//!   BYTE, special tokens CONTROL, then added tokens past the base vocabulary;
//!   `tokenizer.ggml.pre = "default"`, no merges.
//!
//! Special token ids, `add_{bos,eos,sep}_token` and the chat template follow
//! gguf-py's `SpecialVocab` (tokenizer_config.json first, then the
//! tokenizer's post-processor, then `config.json`'s `*_token_id`).
//!
//! Deviations: a SentencePiece `tokenizer.model` is not read (the converter
//! prefers it when present; `tokenizer.json` is used instead, which for
//! Llama 2 / Mistral gives the same tokens but scores of −1000); added tokens
//! marked `normalized: false` are not round-tripped through the tokenizer;
//! `all_special_ids` is approximated by the named special tokens of
//! `tokenizer_config.json`, its `additional_special_tokens` and the added
//! tokens marked special; normalizer flags (BERT) are not written; a list of
//! named chat templates contributes only its `default` entry.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ft_arch::Arch;
use ft_gguf::{Array, Metadata};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::error::ExportError;
use crate::hf::HfModel;
use crate::pre_hashes::{CHKTXT, PRE_HASHES};

/// llama.cpp token types (`enum llama_token_type`).
pub mod token_type {
    /// An ordinary token.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A control (special) token.
    pub const CONTROL: i32 = 3;
    /// A user-defined added token.
    pub const USER_DEFINED: i32 = 4;
    /// A padding slot no token uses.
    pub const UNUSED: i32 = 5;
    /// A byte-fallback token `<0xXX>`.
    pub const BYTE: i32 = 6;
}

/// What the rest of the export needs to know about the vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabInfo {
    /// `tokenizer.ggml.model` (`gpt2` or `llama`).
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: String,
    /// The tokens.
    pub tokens: Vec<String>,
    /// Their types ([`token_type`]).
    pub types: Vec<i32>,
    /// Special token ids by kind (`bos`, `eos`, `eot`, `pad` …).
    pub special_ids: BTreeMap<String, u32>,
    /// The chat template written, if any.
    pub chat_template: Option<String>,
}

struct Files {
    tokenizer_path: PathBuf,
    tokenizer: Json,
    config: Option<serde_json::Map<String, Json>>,
}

fn read_json(path: &Path) -> Result<Json, ExportError> {
    let bytes = std::fs::read(path).map_err(|e| ExportError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| ExportError::Tokenizer {
        path: path.to_path_buf(),
        what: format!("not valid JSON ({e})"),
        help: "copy the file from the base model again".into(),
    })
}

fn tok_err(path: &Path, what: impl Into<String>) -> ExportError {
    ExportError::Tokenizer {
        path: path.to_path_buf(),
        what: what.into(),
        help: "copy tokenizer.json and tokenizer_config.json from the base model into the model directory"
            .into(),
    }
}

/// A token entry of tokenizer_config.json: a string or `{content: …}`.
fn token_content(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_owned),
        _ => None,
    }
}

/// `TextModel.does_token_look_special`.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

#[derive(Debug, Clone)]
struct Added {
    id: u32,
    content: String,
    special: bool,
}

fn added_tokens(files: &Files) -> Result<Vec<Added>, ExportError> {
    let Some(list) = files.tokenizer.get("added_tokens") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| tok_err(&files.tokenizer_path, "`added_tokens` is not a list"))?;
    list.iter()
        .map(|t| {
            let id = t
                .get("id")
                .and_then(Json::as_u64)
                .and_then(|i| u32::try_from(i).ok());
            let content = t.get("content").and_then(Json::as_str);
            match (id, content) {
                (Some(id), Some(c)) => Ok(Added {
                    id,
                    content: c.to_owned(),
                    special: t.get("special").and_then(Json::as_bool).unwrap_or(false),
                }),
                _ => Err(tok_err(
                    &files.tokenizer_path,
                    format!("an `added_tokens` entry lacks `id` or `content`: {t}"),
                )),
            }
        })
        .collect()
}

fn base_vocab(files: &Files) -> Result<HashMap<u32, String>, ExportError> {
    let vocab = files
        .tokenizer
        .pointer("/model/vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| {
            tok_err(
                &files.tokenizer_path,
                "`model.vocab` is missing or not a map",
            )
        })?;
    let mut out = HashMap::with_capacity(vocab.len());
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| {
                tok_err(
                    &files.tokenizer_path,
                    format!("`model.vocab.{tok}` is not a token id"),
                )
            })?;
        out.insert(id, tok.clone());
    }
    Ok(out)
}

/// Merges as gguf-py writes them: `"a b"`, spaces inside a part as U+0120.
fn merges(files: &Files) -> Result<Vec<String>, ExportError> {
    let Some(list) = files
        .tokenizer
        .pointer("/model/merges")
        .and_then(Json::as_array)
    else {
        return Ok(Vec::new());
    };
    let enc = |s: &str| s.replace(' ', "\u{120}");
    list.iter()
        .map(|m| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                (Some(a), Some(b)) => Ok(format!("{} {}", enc(a), enc(b))),
                _ => Err(tok_err(
                    &files.tokenizer_path,
                    format!("merge {m} is not two strings"),
                )),
            },
            _ => Err(tok_err(
                &files.tokenizer_path,
                format!("merge {m} is not a string or a pair"),
            )),
        })
        .collect()
}

/// The converter's `chkhsh`: sha256 of Python's `str()` of the token ids of
/// [`CHKTXT`] encoded with special tokens.
pub fn pre_tokenizer_hash(tokenizer_json: &Path) -> Result<String, ExportError> {
    let tok =
        tokenizers::Tokenizer::from_file(tokenizer_json).map_err(|e| ExportError::Tokenizer {
            path: tokenizer_json.to_path_buf(),
            what: format!("the tokenizers library cannot load it ({e})"),
            help: "set `tokenizer_pre` in the export options to skip the pre-tokenizer detection"
                .into(),
        })?;
    let enc = tok
        .encode(CHKTXT, true)
        .map_err(|e| ExportError::Tokenizer {
            path: tokenizer_json.to_path_buf(),
            what: format!("encoding the pre-tokenizer check text failed ({e})"),
            help: "set `tokenizer_pre` in the export options to skip the pre-tokenizer detection"
                .into(),
        })?;
    let ids: Vec<String> = enc.get_ids().iter().map(u32::to_string).collect();
    let text = format!("[{}]", ids.join(", "));
    let digest = Sha256::digest(text.as_bytes());
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// The `tokenizer.ggml.pre` name of a hash, if llama.cpp knows it.
pub fn pre_tokenizer_name(chkhsh: &str) -> Option<&'static str> {
    // The converter's `if` chain lets the last match win.
    PRE_HASHES
        .iter()
        .rev()
        .find(|(h, _, _)| *h == chkhsh)
        .map(|(_, name, _)| *name)
}

/// gguf-py's `SpecialVocab`, minus merges (handled by the caller).
struct Special {
    ids: Vec<(String, u32)>,
    add: Vec<(String, bool)>,
    chat_template: Option<String>,
}

fn set_add(add: &mut Vec<(String, bool)>, typ: &str, v: bool, only_if_absent: bool) {
    match add.iter_mut().find(|(k, _)| k == typ) {
        Some(slot) if !only_if_absent => slot.1 = v,
        Some(_) => {}
        None => add.push((typ.to_owned(), v)),
    }
}

fn special_vocab(
    files: &Files,
    model: &HfModel,
    added: &[Added],
    n_vocab: Option<usize>,
) -> Special {
    let mut types: Vec<&str> = vec!["bos", "eos", "unk", "sep", "pad", "cls", "mask"];
    let mut add: Vec<(String, bool)> = Vec::new();
    let mut tc = files.config.clone();
    let get = |tc: &Option<serde_json::Map<String, Json>>, k: &str| {
        tc.as_ref().and_then(|m| token_content(m.get(k)))
    };
    let tc_truthy =
        |tc: &Option<serde_json::Map<String, Json>>| tc.as_ref().is_some_and(|m| !m.is_empty());

    let mut bos = get(&tc, "bos_token");
    let mut cls = get(&tc, "cls_token");
    let mut eos = get(&tc, "eos_token");
    let sep = get(&tc, "sep_token");
    if bos.is_none() && cls.is_some() && tc_truthy(&tc) {
        bos.clone_from(&cls);
        if let Some(m) = tc.as_mut() {
            m.insert("bos_token".into(), Json::from(bos.clone()));
        }
    }
    if eos.is_none() && sep.is_some() && tc_truthy(&tc) {
        eos.clone_from(&sep);
        if let Some(m) = tc.as_mut() {
            m.insert("eos_token".into(), Json::from(eos.clone()));
        }
    }
    if let Some(pp) = files
        .tokenizer
        .get("post_processor")
        .filter(|p| !p.is_null())
    {
        let procs: Vec<&Json> = match pp.get("processors").and_then(Json::as_array) {
            Some(list) => list.iter().collect(),
            None => vec![pp],
        };
        for p in procs {
            let special_id = |e: &Json| {
                e.pointer("/SpecialToken/id")
                    .and_then(Json::as_str)
                    .map(str::to_owned)
            };
            match p.get("type").and_then(Json::as_str) {
                Some("ByteLevel") => {
                    set_add(&mut add, "bos", false, true);
                    set_add(&mut add, "eos", false, true);
                }
                Some("RobertaProcessing") => {
                    set_add(&mut add, "bos", true, false);
                    set_add(&mut add, "eos", true, false);
                    set_add(&mut add, "sep", true, false);
                }
                Some("TemplateProcessing") => {
                    let single: Vec<Json> = p
                        .get("single")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let pair: Vec<Json> = p
                        .get("pair")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let mut first = None;
                    let mut last = None;
                    if single.len() > 1 {
                        first = special_id(&single[0]);
                        if let Some(f) = &first {
                            if !tc_truthy(&tc) {
                                bos = Some(f.clone());
                            } else if Some(f) != bos.as_ref() && Some(f) != cls.as_ref() {
                                if bos.is_none() {
                                    bos = Some(f.clone());
                                }
                                if cls.is_none() {
                                    cls = Some(f.clone());
                                }
                            }
                            let v = Some(f) == bos.as_ref() || Some(f) == cls.as_ref();
                            set_add(&mut add, "bos", v, false);
                        }
                        last = single.last().and_then(special_id);
                        if let Some(l) = &last {
                            if !tc_truthy(&tc) {
                                eos = Some(l.clone());
                            } else if Some(l) != eos.as_ref() {
                                if !types.contains(&"eot") {
                                    types.push("eot");
                                    if let Some(m) = tc.as_mut() {
                                        m.insert("eot_token".into(), Json::from(eos.clone()));
                                    }
                                } else if !types.contains(&"eom") {
                                    types.push("eom");
                                    if let Some(m) = tc.as_mut() {
                                        m.insert("eom_token".into(), Json::from(eos.clone()));
                                    }
                                }
                                eos = Some(l.clone());
                                if let Some(m) = tc.as_mut() {
                                    m.insert("eos_token".into(), Json::from(l.clone()));
                                }
                            }
                            let v = Some(l) == eos.as_ref();
                            set_add(&mut add, "eos", v, false);
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(
                            first.is_some() && pair.first().and_then(special_id) == first,
                        );
                        let stop_trim = last.is_some() && pair.last().and_then(special_id) == last;
                        let end = if stop_trim {
                            pair.len().saturating_sub(1)
                        } else {
                            pair.len()
                        };
                        let mid: &[Json] = if start < end { &pair[start..end] } else { &[] };
                        if !mid.is_empty() {
                            let seq = |e: &Json| {
                                e.pointer("/Sequence/id")
                                    .and_then(Json::as_str)
                                    .map(str::to_owned)
                            };
                            let a = seq(&mid[0]);
                            let b = mid.last().and_then(seq);
                            if a.as_deref() == Some("A")
                                && b.as_deref() == Some("B")
                                && mid.len() > 2
                            {
                                let inner = &mid[1..mid.len() - 1];
                                let mut add_sep = false;
                                if let Some(e) = special_id(&inner[0])
                                    && (Some(&e) == sep.as_ref() || Some(&e) == eos.as_ref())
                                    && last.is_none()
                                {
                                    add_sep = true;
                                }
                                if inner.len() == 2
                                    && let Some(e) = special_id(&inner[1])
                                    && (Some(&e) == sep.as_ref() || Some(&e) == eos.as_ref())
                                {
                                    add_sep = true;
                                }
                                set_add(&mut add, "sep", add_sep, false);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    let mut ids: Vec<(String, u32)> = Vec::new();
    let set_id = |ids: &mut Vec<(String, u32)>, typ: &str, id: u32| {
        if n_vocab.is_some_and(|n| id as usize >= n) || ids.iter().any(|(k, _)| k == typ) {
            return;
        }
        ids.push((typ.to_owned(), id));
    };
    let mut chat_template = None;
    if let Some(cfg) = tc.as_ref().filter(|m| !m.is_empty()) {
        let jinja = model.dir.join("chat_template.jinja");
        let json = model.dir.join("chat_template.json");
        let alt = if jinja.is_file() {
            std::fs::read_to_string(&jinja).ok()
        } else if json.is_file() {
            read_json(&json)
                .ok()
                .and_then(|v| v.get("chat_template").cloned())
                .and_then(|v| template_string(&v))
        } else {
            None
        };
        chat_template = cfg.get("chat_template").and_then(template_string).or(alt);
        for typ in &types {
            if let Some(b) = cfg.get(&format!("add_{typ}_token")).and_then(Json::as_bool) {
                set_add(&mut add, typ, b, true);
            }
            let Some(content) = token_content(cfg.get(&format!("{typ}_token"))) else {
                continue;
            };
            if let Some(a) = added.iter().find(|a| a.content == content) {
                set_id(&mut ids, typ, a.id);
            }
        }
    }
    for typ in &types {
        if let Some(id) = model
            .hparam(&format!("{typ}_token_id"))
            .and_then(Json::as_u64)
            .and_then(|i| u32::try_from(i).ok())
        {
            set_id(&mut ids, typ, id);
        }
    }
    Special {
        ids,
        add,
        chat_template,
    }
}

fn template_string(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => list.iter().find_map(|t| {
            (t.get("name").and_then(Json::as_str) == Some("default"))
                .then(|| t.get("template").and_then(Json::as_str).map(str::to_owned))
                .flatten()
        }),
        _ => None,
    }
}

/// The GGUF key of a special token id kind.
fn id_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.bos_token_id",
        "eos" => "tokenizer.ggml.eos_token_id",
        "unk" => "tokenizer.ggml.unknown_token_id",
        "sep" => "tokenizer.ggml.seperator_token_id",
        "pad" => "tokenizer.ggml.padding_token_id",
        "cls" => "tokenizer.ggml.cls_token_id",
        "mask" => "tokenizer.ggml.mask_token_id",
        "eot" => "tokenizer.ggml.eot_token_id",
        "eom" => "tokenizer.ggml.eom_token_id",
        _ => return None,
    })
}

/// Options of the tokenizer metadata.
#[derive(Debug, Clone, Default)]
pub struct VocabOptions<'a> {
    /// `tokenizer.ggml.pre` to write instead of detecting it.
    pub tokenizer_pre: Option<&'a str>,
    /// Chat template to write instead of the tokenizer's.
    pub chat_template: Option<&'a str>,
}

/// Adds the tokenizer metadata of `model` to `meta`.
pub fn write_vocab(
    model: &HfModel,
    meta: &mut Metadata,
    opts: &VocabOptions<'_>,
) -> Result<VocabInfo, ExportError> {
    let tokenizer_path = model.dir.join("tokenizer.json");
    if !tokenizer_path.is_file() {
        return Err(tok_err(
            &tokenizer_path,
            "not found (a GGUF needs the tokenizer; the export does not read tokenizer.model alone)",
        ));
    }
    let config_path = model.dir.join("tokenizer_config.json");
    let config = if config_path.is_file() {
        match read_json(&config_path)? {
            Json::Object(m) => Some(m),
            _ => return Err(tok_err(&config_path, "not a JSON object")),
        }
    } else {
        None
    };
    let files = Files {
        tokenizer: read_json(&tokenizer_path)?,
        tokenizer_path,
        config,
    };
    let model_type = files
        .tokenizer
        .pointer("/model/type")
        .and_then(Json::as_str)
        .unwrap_or("");
    if model_type != "BPE" {
        return Err(ExportError::Tokenizer {
            path: files.tokenizer_path.clone(),
            what: format!("tokenizer model type `{model_type}` is not supported (BPE is)"),
            help: "export a model with a BPE tokenizer.json (Llama, Mistral, Qwen, SmolLM)".into(),
        });
    }
    let byte_fallback = files
        .tokenizer
        .pointer("/model/byte_fallback")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let seq_decoder = files
        .tokenizer
        .pointer("/decoder/type")
        .and_then(Json::as_str)
        == Some("Sequence");
    let is_llama_model = matches!(model.arch, Arch::Llama | Arch::Mistral);
    let llama_hf = is_llama_model && byte_fallback && seq_decoder;

    let added = added_tokens(&files)?;
    let base = base_vocab(&files)?;
    let cfg_obj = files.config.as_ref();

    if is_llama_model
        && let Some(b) = cfg_obj
            .and_then(|c| c.get("add_prefix_space"))
            .and_then(Json::as_bool)
    {
        meta.set("tokenizer.ggml.add_space_prefix", b);
    }

    let (info, special) = if llama_hf {
        // LlamaHfVocab.
        let n_base = base.len() as u32;
        let mut special_texts: Vec<String> = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"]
            .iter()
            .filter_map(|k| cfg_obj.and_then(|c| token_content(c.get(&format!("{k}_token")))))
            .collect();
        if let Some(list) = cfg_obj
            .and_then(|c| c.get("additional_special_tokens"))
            .and_then(Json::as_array)
        {
            special_texts.extend(list.iter().filter_map(|v| token_content(Some(v))));
        }
        special_texts.extend(
            added
                .iter()
                .filter(|a| a.special)
                .map(|a| a.content.clone()),
        );
        let mut all: HashMap<u32, String> = base.clone();
        for a in &added {
            all.insert(a.id, a.content.clone());
        }
        let text_to_id: HashMap<&str, u32> = all.iter().map(|(i, t)| (t.as_str(), *i)).collect();
        let special_ids: std::collections::HashSet<u32> = special_texts
            .iter()
            .filter_map(|t| text_to_id.get(t.as_str()).copied())
            .collect();
        let mut tokens = Vec::new();
        let mut types = Vec::new();
        let mut extra: Vec<&Added> = added.iter().filter(|a| a.id >= n_base).collect();
        extra.sort_by_key(|a| a.id);
        for id in 0..n_base {
            if extra.iter().any(|a| a.id == id) {
                continue;
            }
            let text = all.get(&id).cloned().ok_or_else(|| {
                tok_err(
                    &files.tokenizer_path,
                    format!("token id {id} is missing from `model.vocab`"),
                )
            })?;
            let is_byte = text.len() == 6
                && text.starts_with("<0x")
                && text.ends_with('>')
                && text[3..5].chars().all(|c| c.is_ascii_hexdigit());
            types.push(if is_byte {
                token_type::BYTE
            } else if special_ids.contains(&id) {
                token_type::CONTROL
            } else {
                token_type::NORMAL
            });
            tokens.push(text);
        }
        for a in extra {
            tokens.push(a.content.clone());
            types.push(if special_ids.contains(&a.id) {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            });
        }
        let scores = vec![-1000.0f32; tokens.len()];
        meta.set("tokenizer.ggml.model", "llama");
        meta.set("tokenizer.ggml.pre", "default");
        meta.set("tokenizer.ggml.tokens", Array::String(tokens.clone()));
        meta.set("tokenizer.ggml.scores", Array::F32(scores));
        meta.set("tokenizer.ggml.token_type", Array::I32(types.clone()));
        let n = tokens.len();
        let info = VocabInfo {
            model: "llama".into(),
            pre: "default".into(),
            tokens,
            types,
            special_ids: BTreeMap::new(),
            chat_template: None,
        };
        (info, special_vocab(&files, model, &added, Some(n)))
    } else {
        // TextModel.get_vocab_base + _set_vocab_gpt2.
        let vocab_size = model.config.vocab_size;
        let mut all: HashMap<u32, String> = base;
        for a in &added {
            all.insert(a.id, a.content.clone());
        }
        if let Some(max) = all.keys().max()
            && *max as usize >= vocab_size
        {
            return Err(ExportError::Tokenizer {
                path: files.tokenizer_path.clone(),
                what: format!(
                    "token id {max} is out of range for vocab_size {vocab_size} in config.json"
                ),
                help: "the tokenizer does not belong to this model; copy the model's own tokenizer files".into(),
            });
        }
        let added_by_id: HashMap<u32, &Added> = added.iter().map(|a| (a.id, a)).collect();
        let mut tokens = Vec::with_capacity(vocab_size);
        let mut types = Vec::with_capacity(vocab_size);
        for i in 0..vocab_size as u32 {
            match all.get(&i) {
                None => {
                    tokens.push(format!("[PAD{i}]"));
                    types.push(token_type::UNUSED);
                }
                Some(t) => match added_by_id.get(&i) {
                    Some(a) if a.special || looks_special(t) => {
                        tokens.push(t.clone());
                        types.push(token_type::CONTROL);
                    }
                    Some(_) => {
                        tokens.push(t.replace('\u{2581}', " "));
                        types.push(token_type::USER_DEFINED);
                    }
                    None => {
                        tokens.push(t.clone());
                        types.push(token_type::NORMAL);
                    }
                },
            }
        }
        let pre = match opts.tokenizer_pre {
            Some(p) => p.to_owned(),
            None => {
                let h = pre_tokenizer_hash(&files.tokenizer_path)?;
                pre_tokenizer_name(&h)
                    .ok_or_else(|| ExportError::UnknownPreTokenizer {
                        path: files.tokenizer_path.clone(),
                        chkhsh: h.clone(),
                    })?
                    .to_owned()
            }
        };
        meta.set("tokenizer.ggml.model", "gpt2");
        meta.set("tokenizer.ggml.pre", pre.as_str());
        meta.set("tokenizer.ggml.tokens", Array::String(tokens.clone()));
        meta.set("tokenizer.ggml.token_type", Array::I32(types.clone()));
        let m = merges(&files)?;
        if !m.is_empty() {
            meta.set("tokenizer.ggml.merges", Array::String(m));
        }
        let info = VocabInfo {
            model: "gpt2".into(),
            pre,
            tokens,
            types,
            special_ids: BTreeMap::new(),
            chat_template: None,
        };
        (info, special_vocab(&files, model, &added, None))
    };

    let mut info = info;
    for (typ, id) in &special.ids {
        if let Some(key) = id_key(typ) {
            meta.set(key, *id);
            info.special_ids.insert(typ.clone(), *id);
        }
    }
    for (typ, v) in &special.add {
        if matches!(typ.as_str(), "bos" | "eos" | "sep") {
            meta.set(format!("tokenizer.ggml.add_{typ}_token"), *v);
        }
    }
    let template = opts
        .chat_template
        .map(str::to_owned)
        .or(special.chat_template);
    if let Some(t) = &template {
        meta.set("tokenizer.chat_template", t.as_str());
    }
    info.chat_template = template;
    // LlamaModel.set_vocab: "Apply to granite small models only" (it also
    // catches SmolLM/SmolLM2, whose vocabulary has the same size).
    if is_llama_model && model.config.vocab_size == 49152 {
        meta.set("tokenizer.ggml.add_bos_token", false);
    }
    Ok(info)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hash_table_lookup_lets_the_last_match_win() {
        for (i, (h, _, _)) in PRE_HASHES.iter().enumerate() {
            assert_eq!(h.len(), 64);
            let last = PRE_HASHES.iter().rposition(|(h2, _, _)| h2 == h).unwrap();
            assert!(last >= i);
            assert_eq!(pre_tokenizer_name(h), Some(PRE_HASHES[last].1));
        }
        // Upstream lists this hash twice; its `if` chain keeps the second.
        assert_eq!(
            pre_tokenizer_name("0876d13b50744004aa9aeae05e7b0647eac9d801b5ba4668afc01e709c15e19f"),
            Some("jina-v2-en")
        );
        assert_eq!(
            pre_tokenizer_name("855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"),
            Some("smollm")
        );
        assert!(looks_special("<|im_end|>") && !looks_special("hello"));
    }

    #[test]
    fn smollm2_tokenizer_hashes_to_smollm() {
        // The same hash transformers gives (checked with
        // `sha256(str(AutoTokenizer.from_pretrained(dir).encode(chktxt)))`).
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizers/smollm2");
        let h = pre_tokenizer_hash(&dir.join("tokenizer.json")).unwrap();
        assert_eq!(
            h,
            "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"
        );
        assert_eq!(pre_tokenizer_name(&h), Some("smollm"));
    }
}
