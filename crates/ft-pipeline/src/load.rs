//! Loading `train.yml`: every problem at once, each with its place.
//!
//! Order of work:
//! 1. read the file (missing, unreadable and empty files are problems too);
//! 2. parse YAML with serde_yaml (syntax errors and duplicate keys come with
//!    line and column) and convert to JSON values;
//! 3. apply `--set` overrides;
//! 4. validate against the JSON Schema generated from the config types,
//!    collecting **all** violations;
//! 5. deserialize into [`FtConfig`];
//! 6. run each section's own checks and the cross-section checks (files
//!    exist, `qlora` needs a 4-bit base, `sequence_len` fits the model …);
//! 7. attach file, line and column to every problem and sort them.

use std::path::{Path, PathBuf};

use ft_core::problem::{KeyPath, Location, Problem, Problems};
use ft_core::stage::{CheckContext, StageConfig};
use serde_json::Value;

use ft_model::config::BaseModelRef;

use crate::config::{FtConfig, SECTIONS};
use crate::locate::LocationMap;
use crate::{explain, overrides, schema};

/// A loaded, valid config.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The typed config.
    pub config: FtConfig,
    /// The file it came from.
    pub file: PathBuf,
    /// Context for resolving relative paths.
    pub ctx: CheckContext,
}

impl Loaded {
    /// `output_dir`, resolved.
    pub fn output_dir(&self) -> PathBuf {
        self.ctx.resolve(&self.config.output_dir)
    }

    /// `model.base_model` on local disk: a hub id is downloaded into the hub
    /// cache first (or found there; see [`ft_model::hub`]), so the answer is
    /// a local directory or GGUF file.
    pub fn local_base(&self) -> Result<LocalBase, String> {
        self.local(ft_model::hub::Want::Model)
    }

    /// As [`Self::local_base`], but a hub id is fetched without its weights:
    /// the directory has the config, tokenizer and template files.
    pub fn local_tokenizer_base(&self) -> Result<LocalBase, String> {
        self.local(ft_model::hub::Want::Tokenizer)
    }

    fn local(&self, want: ft_model::hub::Want) -> Result<LocalBase, String> {
        match self.config.model.base_ref(&self.ctx)? {
            BaseModelRef::HfDir(d) => Ok(LocalBase::HfDir(d)),
            BaseModelRef::Gguf(p) => Ok(LocalBase::Gguf(p)),
            BaseModelRef::Hub(id) => {
                let mut settings = ft_model::hub::HubSettings::from_env();
                settings.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
                tracing::info!(
                    "base_model `{id}`: fetching from the hub cache or {}",
                    settings.endpoint
                );
                ft_model::hub::fetch(&id, &settings, want)
                    .map(LocalBase::HfDir)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// The base model on local disk (see [`Loaded::local_base`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalBase {
    /// An HF model directory (given, or the hub snapshot of a hub id).
    HfDir(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
}

impl LocalBase {
    /// The directory or file.
    pub fn path(&self) -> &Path {
        match self {
            Self::HfDir(p) | Self::Gguf(p) => p,
        }
    }
}

/// Loads and checks the config at `path` with `--set` overrides.
pub fn load_file(path: &Path, set: &[String]) -> Result<Loaded, Problems> {
    let located = |msg: String, help: &str| {
        let mut p = Problem::new(KeyPath::root(), msg).with_help(help);
        p.file = Some(path.to_path_buf());
        Problems(vec![p])
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(located(
                "file not found".into(),
                "check the path; `ft validate examples/quickstart.yml` shows a working config",
            ));
        }
        Err(e) => {
            return Err(located(
                format!("cannot read the file: {e}"),
                "check its permissions",
            ));
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Err(located(
                format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
                "save the file as UTF-8",
            ));
        }
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    load_str(&text, path, &dir, set)
}

/// Loads and checks config `text` as if read from `file`, resolving relative
/// paths against `config_dir`.
pub fn load_str(
    text: &str,
    file: &Path,
    config_dir: &Path,
    set: &[String],
) -> Result<Loaded, Problems> {
    let ctx = CheckContext {
        config_dir: config_dir.to_path_buf(),
    };
    let locations = LocationMap::build(text);
    let mut problems = Problems::new();
    let finish = |mut problems: Problems, overridden: &[overrides::Override]| -> Problems {
        for p in &mut problems.0 {
            if let Some(ov) = overridden.iter().rev().find(|o| {
                p.path.0.starts_with(&o.path.0)
                    || o.path.0.starts_with(&p.path.0) && !p.path.is_root()
            }) {
                p.file = Some(PathBuf::from(format!("--set {}", ov.raw)));
                p.location = None;
            } else {
                p.file = Some(file.to_path_buf());
                if p.location.is_none() {
                    p.location = locations.locate(&p.path);
                }
            }
        }
        problems.0.sort_by_key(|p| p.location);
        problems
    };

    // 2. YAML → JSON.
    let yaml: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            if let Some(p) = duplicate_key(&e, &locations) {
                problems.push(p);
                return Err(finish(problems, &[]));
            }
            let mut p = Problem::new(KeyPath::root(), yaml_message(&e)).with_help(
                "fix the YAML syntax (indent with spaces, `key: value`, lists with `- `); `ft schema` lists the keys",
            );
            p.location = e.location().map(|l| Location {
                line: l.line(),
                column: l.column(),
            });
            problems.push(p);
            return Err(finish(problems, &[]));
        }
    };
    let mut doc = match to_json(&yaml, &KeyPath::root()) {
        Ok(v) => v,
        Err(p) => {
            problems.push(p);
            return Err(finish(problems, &[]));
        }
    };
    if doc.is_null() {
        problems.push(
            Problem::new(KeyPath::root(), "the file is empty")
                .with_help("start from examples/quickstart.yml; `ft schema` prints every key"),
        );
        return Err(finish(problems, &[]));
    }
    if !doc.is_object() {
        problems.push(
            Problem::new(
                KeyPath::root(),
                format!(
                    "expected a mapping of sections (model:, data:, …), found {}",
                    explain::show(&doc)
                ),
            )
            .with_help(
                "the top level is `key: value` pairs: output_dir, model, data, adapter, train …",
            ),
        );
        return Err(finish(problems, &[]));
    }

    // 3. Overrides.
    let mut applied = Vec::new();
    for raw in set {
        match overrides::parse(raw).and_then(|ov| overrides::apply(&mut doc, &ov).map(|()| ov)) {
            Ok(ov) => applied.push(ov),
            Err(mut p) => {
                p.file = Some(PathBuf::from(format!("--set {raw}")));
                problems.push(p);
            }
        }
    }

    // A section written as `merge:` with nothing after it is null, which
    // would silently mean "absent"; say so instead.
    if let Value::Object(map) = &doc {
        for s in SECTIONS {
            if map.get(s).is_some_and(Value::is_null) {
                problems.push(
                    Problem::new(KeyPath::keys(&[s]), format!("`{s}:` has no value"))
                        .with_help(format!("write `{s}: {{}}` to use its defaults, add its keys indented below it, or remove the line")),
                );
            }
        }
    }

    // 4. Schema.
    let root = schema::combined();
    let validator = match jsonschema::validator_for(&root) {
        Ok(v) => v,
        Err(e) => {
            problems.push(Problem::new(
                KeyPath::root(),
                format!("internal error: ft's own schema does not compile: {e}"),
            ));
            return Err(finish(problems, &applied));
        }
    };
    for err in validator.iter_errors(&doc) {
        for p in explain::explain(&root, &doc, &err) {
            if !problems.0.contains(&p) {
                problems.push(p);
            }
        }
    }
    if !problems.is_empty() {
        return Err(finish(problems, &applied));
    }

    // 5. Typed.
    let config: FtConfig = match serde_json::from_value(doc.clone()) {
        Ok(c) => c,
        Err(e) => {
            problems.push(Problem::new(KeyPath::root(), format!("{e}")));
            return Err(finish(problems, &applied));
        }
    };

    // 6. Section and cross-section checks.
    config.model.check(&ctx, &mut problems);
    config.data.check(&ctx, &mut problems);
    config.template.check(&ctx, &mut problems);
    config.tokenize.check(&ctx, &mut problems);
    config.adapter.check(&ctx, &mut problems);
    config.train.check(&ctx, &mut problems);
    if let Some(m) = &config.merge {
        m.check(&ctx, &mut problems);
    }
    if let Some(e) = &config.export {
        e.check(&ctx, &mut problems);
    }
    cross_checks(&config, &ctx, &mut problems);

    if problems.is_empty() {
        Ok(Loaded {
            config,
            file: file.to_path_buf(),
            ctx,
        })
    } else {
        Err(finish(problems, &applied))
    }
}

/// Checks that involve more than one section, or facts about the model.
pub fn cross_checks(cfg: &FtConfig, ctx: &CheckContext, problems: &mut Problems) {
    use ft_model::AdapterKind;
    let out = ctx.resolve(&cfg.output_dir);
    if out.is_file() {
        problems
            .at(
                KeyPath::keys(&["output_dir"]),
                format!("`{}` is a file; a directory is needed", out.display()),
            )
            .help("choose a directory path (it is created if missing)");
    }
    match (cfg.adapter.kind, cfg.model.load_in_4bit) {
        (AdapterKind::Qlora, false) => {
            problems
                .at(KeyPath::keys(&["adapter", "type"]), "`qlora` trains over a 4-bit base, but `model.load_in_4bit` is false")
                .help("set `model.load_in_4bit: true`, or use `adapter.type: lora` for a full-precision base");
        }
        (AdapterKind::Lora, true) => {
            problems
                .at(
                    KeyPath::keys(&["model", "load_in_4bit"]),
                    "a 4-bit base is trained with `adapter.type: qlora`, not `lora`",
                )
                .help("set `adapter.type: qlora`, or `model.load_in_4bit: false`");
        }
        _ => {}
    }
    if cfg.train.eval_steps.is_some() && !cfg.data.has_eval() {
        problems
            .at(KeyPath::keys(&["train", "eval_steps"]), "evaluation is scheduled but there is no validation data")
            .help("set `data.val_set_size` (e.g. 0.05) or `data.test_datasets`, or remove `eval_steps`");
    }
    // Facts about the model, when it is a local HF directory.
    if let Ok(ft_model::config::BaseModelRef::HfDir(dir)) = cfg.model.base_ref(ctx) {
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            problems
                .at(KeyPath::keys(&["model", "base_model"]), format!("`{}` has no config.json", dir.display()))
                .help("point `base_model` at a Hugging Face model directory (config.json + *.safetensors + tokenizer.json)");
            return;
        }
        match ft_arch::HfConfig::read(&cfg_path) {
            Ok(hf) => {
                if let Err(e) = hf.arch(&cfg_path) {
                    problems.at(KeyPath::keys(&["model", "base_model"]), e.to_string());
                }
                if let Some(ctx_len) = hf.max_position_embeddings
                    && cfg.tokenize.sequence_len > ctx_len
                {
                    problems
                        .at(
                            KeyPath::keys(&["tokenize", "sequence_len"]),
                            format!(
                                "{} is longer than the model's context ({ctx_len} tokens, from {})",
                                cfg.tokenize.sequence_len,
                                cfg_path.display()
                            ),
                        )
                        .help(format!("use `sequence_len: {ctx_len}` or less"));
                }
            }
            Err(e) => {
                problems.at(KeyPath::keys(&["model", "base_model"]), e.to_string());
            }
        }
    }
}

/// serde_yaml reports a duplicate key as `a.b: duplicate entry with key
/// "k"` at the enclosing mapping; point at the repeated key itself (the
/// location map keeps the last occurrence of a path).
fn duplicate_key(e: &serde_yaml::Error, locations: &LocationMap) -> Option<Problem> {
    let msg = yaml_message(e);
    let (prefix, rest) = match msg.split_once(": duplicate entry with key ") {
        Some((p, r)) => (Some(p), r),
        None => (None, msg.strip_prefix("duplicate entry with key ")?),
    };
    let key = rest.trim_matches('"');
    let mut path = KeyPath::root();
    for seg in prefix.into_iter().flat_map(|p| p.split('.')) {
        path = match seg
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|i| i.parse().ok())
        {
            Some(i) => path.index(i),
            None => path.key(seg),
        };
    }
    let path = path.key(key);
    let mut p = Problem::new(path.clone(), format!("`{key}` is given twice"))
        .with_help("remove one of them (other YAML readers silently keep the last one)");
    p.location = locations.get(&path).and_then(|n| n.key);
    Some(p)
}

/// serde_yaml's message without its trailing " at line X column Y" (the
/// location is printed in front instead).
fn yaml_message(e: &serde_yaml::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn to_json(v: &serde_yaml::Value, path: &KeyPath) -> Result<Value, Problem> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match serde_json::Number::from_f64(f) {
                    Some(n) => Value::Number(n),
                    None => {
                        return Err(Problem::new(
                            path.clone(),
                            format!("`{f}` is not a finite number"),
                        )
                        .with_help("use a finite number"));
                    }
                }
            }
        }
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                out.push(to_json(it, &path.index(i))?);
            }
            Value::Array(out)
        }
        Y::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, val) in m {
                let key = match k {
                    Y::String(s) => s.clone(),
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => {
                        return Err(Problem::new(
                            path.clone(),
                            format!("keys must be plain names, found {other:?}"),
                        )
                        .with_help("write keys as plain words: `key: value`"));
                    }
                };
                let child = path.key(&key);
                let jv = to_json(val, &child)?;
                out.insert(key, jv);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            return Err(Problem::new(
                path.clone(),
                format!("YAML tags are not supported (found `{}`)", t.tag),
            )
            .with_help("remove the `!tag`"));
        }
    })
}
