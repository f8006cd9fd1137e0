//! The JSON Schemas of the config, as checked into `schemas/`.
//!
//! `ft.schema.json` describes the whole file (editors use it through the
//! `# yaml-language-server: $schema=...` line at the top of each example);
//! one file per section describes that section alone. All are generated from
//! the Rust types by schemars, so doc comments become editor tooltips, and a
//! test fails when the checked-in files are stale (`FT_UPDATE_SCHEMAS=1`
//! rewrites them).

use std::path::Path;

use ft_core::stage::StageConfig;
use schemars::{JsonSchema, generate::SchemaSettings};
use serde_json::Value;

use crate::FtConfig;

/// Name of the combined schema file.
pub const COMBINED: &str = "ft.schema.json";

fn generate<T: JsonSchema>() -> Value {
    let gen_ = SchemaSettings::draft2020_12().into_generator();
    gen_.into_root_schema_for::<T>().to_value()
}

/// The schema of the whole config.
pub fn combined() -> Value {
    generate::<FtConfig>()
}

fn section<T: StageConfig>() -> (String, Value) {
    (format!("{}.schema.json", T::SECTION), generate::<T>())
}

/// Every schema file: `(file name, schema)`, combined first.
pub fn all() -> Vec<(String, Value)> {
    vec![
        (COMBINED.to_string(), combined()),
        section::<ft_model::ModelConfig>(),
        section::<ft_data::DataConfig>(),
        section::<ft_template::TemplateConfig>(),
        section::<ft_tokenize::TokenizeConfig>(),
        section::<ft_model::AdapterConfig>(),
        section::<ft_train::TrainConfig>(),
        section::<ft_merge::MergeConfig>(),
        section::<ft_export::ExportConfig>(),
    ]
}

/// Pretty JSON with a trailing newline, as written to disk.
pub fn render(schema: &Value) -> String {
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_default();
    s.push('\n');
    s
}

/// Writes every schema into `dir` (atomically, file by file).
pub fn write_all(dir: &Path) -> ft_core::Result<Vec<String>> {
    let mut written = Vec::new();
    for (name, schema) in all() {
        ft_core::atomic::write_file(dir.join(&name), render(&schema).as_bytes())?;
        written.push(name);
    }
    Ok(written)
}

/// Files in `dir` that differ from what [`write_all`] would write.
pub fn stale(dir: &Path) -> Vec<String> {
    all()
        .into_iter()
        .filter(|(name, schema)| {
            std::fs::read_to_string(dir.join(name)).ok().as_deref() != Some(render(schema).as_str())
        })
        .map(|(name, _)| name)
        .collect()
}

/// The schema node that describes the value at `path` inside `instance`,
/// following `$ref`s and choosing the branch of a `type:`-tagged `oneOf` by
/// the instance's `type`. Used to list the allowed keys at a place.
pub fn node_at<'a>(
    root: &'a Value,
    instance: &Value,
    path: &ft_core::problem::KeyPath,
) -> Option<&'a Value> {
    use ft_core::problem::Seg;
    let mut node = deref(root, root);
    let mut inst = Some(instance);
    for seg in &path.0 {
        node = pick_branch(root, node, inst);
        node = match seg {
            Seg::Key(k) => node.get("properties")?.get(k)?,
            Seg::Index(_) => node.get("items")?,
        };
        node = deref(root, node);
        inst = inst.and_then(|v| match seg {
            Seg::Key(k) => v.get(k),
            Seg::Index(i) => v.get(*i),
        });
    }
    Some(pick_branch(root, node, inst))
}

/// Follows a local `$ref` (`#/$defs/Name`).
pub fn deref<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut n = node;
    for _ in 0..16 {
        match n.get("$ref").and_then(Value::as_str) {
            Some(r) => match r
                .strip_prefix("#/$defs/")
                .and_then(|name| root.get("$defs")?.get(name))
            {
                Some(t) => n = t,
                None => return n,
            },
            None => return n,
        }
    }
    n
}

/// For `oneOf`/`anyOf` nodes: the branch matching the instance's `type` tag,
/// else the first non-null branch.
fn pick_branch<'a>(root: &'a Value, node: &'a Value, inst: Option<&Value>) -> &'a Value {
    let Some(branches) = node
        .get("oneOf")
        .or_else(|| node.get("anyOf"))
        .and_then(Value::as_array)
    else {
        return node;
    };
    let tag = inst.and_then(|v| v.get("type")).and_then(Value::as_str);
    let resolved: Vec<&Value> = branches.iter().map(|b| deref(root, b)).collect();
    if let Some(tag) = tag
        && let Some(b) = resolved.iter().find(|b| tag_of(b) == Some(tag))
    {
        return b;
    }
    resolved
        .into_iter()
        .find(|b| b.get("type").and_then(Value::as_str) != Some("null"))
        .unwrap_or(node)
}

/// The `const` of a branch's `type` property (a tagged-enum variant's tag).
pub fn tag_of(branch: &Value) -> Option<&str> {
    branch
        .get("properties")?
        .get("type")?
        .get("const")?
        .as_str()
}
