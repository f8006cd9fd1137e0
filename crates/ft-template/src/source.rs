//! Where a chat template comes from, and the tokenizer facts templates need.
//!
//! Order for `chat_template: tokenizer_default` (as transformers 4.43+):
//! `chat_template.jinja` in the tokenizer directory, else `chat_template` in
//! `tokenizer_config.json` (a string, or a list of `{name, template}` of
//! which `default` is used).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::{BuiltinTemplate, ChatTemplateChoice, TemplateConfig};
use crate::error::TemplateError;

/// The built-in templates, byte-identical to the models' own (see
/// `templates/README.md` for where each came from).
pub fn builtin_source(b: BuiltinTemplate) -> &'static str {
    match b {
        BuiltinTemplate::Chatml => include_str!("../templates/chatml.jinja"),
        BuiltinTemplate::Llama3 => include_str!("../templates/llama3.jinja"),
        BuiltinTemplate::Qwen3 => include_str!("../templates/qwen3.jinja"),
    }
}

/// Every built-in, for completeness tests.
pub const BUILTINS: [BuiltinTemplate; 3] = [
    BuiltinTemplate::Chatml,
    BuiltinTemplate::Llama3,
    BuiltinTemplate::Qwen3,
];

/// The special-token strings a tokenizer exposes to templates (the
/// `special_tokens_map` of transformers).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpecialTokens {
    /// `bos_token`.
    pub bos: Option<String>,
    /// `eos_token`.
    pub eos: Option<String>,
    /// `pad_token`.
    pub pad: Option<String>,
    /// `unk_token`.
    pub unk: Option<String>,
    /// `sep_token`, `cls_token`, `mask_token` when set, as
    /// `(variable name, token)`.
    pub others: Vec<(String, String)>,
    /// `additional_special_tokens`.
    pub additional: Vec<String>,
}

/// What ft reads from `tokenizer_config.json`.
#[derive(Debug, Clone, Default)]
pub struct HfTokenizerConfig {
    /// The special tokens.
    pub special: SpecialTokens,
    /// The default chat template, if any.
    pub chat_template: Option<String>,
    /// Contents of every added token marked `special: true`
    /// (`added_tokens_decoder`).
    pub special_added: Vec<String>,
}

fn token_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl HfTokenizerConfig {
    /// Reads `dir/tokenizer_config.json` (absent: empty) and
    /// `dir/chat_template.jinja` (takes precedence for the template).
    pub fn read_dir(dir: &Path) -> Result<Self, TemplateError> {
        let path = dir.join("tokenizer_config.json");
        let mut cfg = match std::fs::read(&path) {
            Ok(bytes) => Self::parse(&bytes, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(source) => return Err(TemplateError::Io { path, source }),
        };
        let jinja = dir.join("chat_template.jinja");
        match std::fs::read_to_string(&jinja) {
            Ok(s) => cfg.chat_template = Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(TemplateError::Io {
                    path: jinja,
                    source,
                });
            }
        }
        Ok(cfg)
    }

    /// Parses the bytes of a `tokenizer_config.json`.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, TemplateError> {
        let bad = |message: String| TemplateError::TokenizerConfig {
            path: path.to_path_buf(),
            message,
        };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON ({e})")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let get = |k: &str| obj.get(k).and_then(token_string);
        let mut special = SpecialTokens {
            bos: get("bos_token"),
            eos: get("eos_token"),
            pad: get("pad_token"),
            unk: get("unk_token"),
            others: Vec::new(),
            additional: Vec::new(),
        };
        for k in ["sep_token", "cls_token", "mask_token"] {
            if let Some(s) = get(k) {
                special.others.push((k.to_string(), s));
            }
        }
        if let Some(Value::Array(items)) = obj.get("additional_special_tokens") {
            special.additional = items.iter().filter_map(token_string).collect();
        }
        let chat_template = match obj.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => {
                let named = |name: &str| {
                    list.iter().find_map(|t| {
                        (t.get("name").and_then(Value::as_str) == Some(name))
                            .then(|| {
                                t.get("template")
                                    .and_then(Value::as_str)
                                    .map(str::to_string)
                            })
                            .flatten()
                    })
                };
                Some(named("default").ok_or_else(|| {
                    bad("`chat_template` is a list without a `default` entry".into())
                })?)
            }
            Some(_) => return Err(bad("`chat_template` is neither a string nor a list".into())),
        };
        let mut special_added = Vec::new();
        if let Some(Value::Object(dec)) = obj.get("added_tokens_decoder") {
            for t in dec.values() {
                if t.get("special").and_then(Value::as_bool) == Some(true)
                    && let Some(c) = t.get("content").and_then(Value::as_str)
                {
                    special_added.push(c.to_string());
                }
            }
        }
        Ok(Self {
            special,
            chat_template,
            special_added,
        })
    }
}

/// A resolved template: its source text and a name for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSource {
    /// Where it came from (`builtin:qwen3`, a file path, `tokenizer_config.json`).
    pub name: String,
    /// The Jinja source.
    pub source: String,
    /// A file the template was read from (for cache inputs), if any.
    pub file: Option<PathBuf>,
}

/// Picks the template the config asks for. `tokenizer_dir` is where the
/// tokenizer files live (for `tokenizer_default`); `config_dir` resolves
/// `chat_template_file`.
pub fn resolve(
    cfg: &TemplateConfig,
    tokenizer: &HfTokenizerConfig,
    tokenizer_dir: &Path,
    config_dir: &Path,
) -> Result<TemplateSource, TemplateError> {
    if let Some(b) = cfg.builtin() {
        let name = match b {
            BuiltinTemplate::Chatml => "chatml",
            BuiltinTemplate::Llama3 => "llama3",
            BuiltinTemplate::Qwen3 => "qwen3",
        };
        return Ok(TemplateSource {
            name: format!("builtin:{name}"),
            source: builtin_source(b).to_string(),
            file: None,
        });
    }
    match cfg.chat_template {
        ChatTemplateChoice::Jinja => {
            if let Some(s) = &cfg.chat_template_jinja {
                return Ok(TemplateSource {
                    name: "template.chat_template_jinja".into(),
                    source: s.clone(),
                    file: None,
                });
            }
            let f = cfg.chat_template_file.as_deref().unwrap_or(Path::new(""));
            let path = if f.is_absolute() {
                f.to_path_buf()
            } else {
                config_dir.join(f)
            };
            let source = std::fs::read_to_string(&path).map_err(|source| TemplateError::Io {
                path: path.clone(),
                source,
            })?;
            Ok(TemplateSource {
                name: path.display().to_string(),
                source,
                file: Some(path),
            })
        }
        _ => {
            let s = tokenizer
                .chat_template
                .clone()
                .ok_or_else(|| TemplateError::NoTemplate {
                    dir: tokenizer_dir.to_path_buf(),
                })?;
            let jinja = tokenizer_dir.join("chat_template.jinja");
            let (name, file) = if jinja.is_file() {
                (jinja.display().to_string(), Some(jinja))
            } else {
                (
                    tokenizer_dir
                        .join("tokenizer_config.json")
                        .display()
                        .to_string(),
                    None,
                )
            };
            Ok(TemplateSource {
                name,
                source: s,
                file,
            })
        }
    }
}
