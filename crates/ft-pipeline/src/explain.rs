//! JSON Schema violations → [`Problem`]s a person can act on.
//!
//! The validator reports facts ("additional property", "not one of enum");
//! this module turns each into what was expected, what was found, and a fix:
//! "did you mean `lora_alpha`?" for near-miss keys and values, "this key
//! belongs under `adapter:`" for keys written in the wrong section (as
//! axolotl's flat files put them), and for a `type:`-tagged list entry it
//! reports only the errors of the variant the entry names.

use ft_core::problem::{KeyPath, Problem};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

use crate::config::SECTIONS;
use crate::schema::{deref, node_at, tag_of};

/// The closest candidate to `word`, if it is close enough to be a likely
/// typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        // Edit distance relative to length: catches typos and swapped
        // letters, not mere shared prefixes (`field_messages` vs `field`).
        let score = strsim::normalized_damerau_levenshtein(&w, &c.to_ascii_lowercase());
        if score >= 0.7 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// A short rendering of a found value for messages.
pub fn show(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn type_name(t: &str) -> &str {
    match t {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "true or false",
        "null" => "nothing (null)",
        other => other,
    }
}

fn expected_types(kind: &TypeKind) -> String {
    let names: Vec<String> = match kind {
        TypeKind::Single(t) => vec![t.to_string()],
        TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect(),
    };
    let names: Vec<&str> = names
        .iter()
        .map(|n| type_name(n))
        .filter(|n| *n != "nothing (null)")
        .collect();
    names.join(" or ")
}

fn pointer_get<'a>(instance: &'a Value, path: &KeyPath) -> Option<&'a Value> {
    use ft_core::problem::Seg;
    let mut v = instance;
    for s in &path.0 {
        v = match s {
            Seg::Key(k) => v.get(k)?,
            Seg::Index(i) => v.get(*i)?,
        };
    }
    Some(v)
}

/// Explains one validation error as one or more problems.
pub fn explain(
    root: &Value,
    instance: &Value,
    err: &jsonschema::ValidationError<'_>,
) -> Vec<Problem> {
    let path = KeyPath::from_json_pointer(err.instance_path().as_str());
    let found = pointer_get(instance, &path);
    let mut out = Vec::new();
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed: Vec<String> = node_at(root, instance, &path)
                .and_then(|n| n.get("properties"))
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for key in unexpected {
                let mut p = Problem::new(path.key(key), format!("unknown key `{key}`"));
                let this_tag = found.and_then(|v| v.get("type")).and_then(Value::as_str);
                let other_variants = variants_with_key(root, key);
                if let Some(s) = did_you_mean(key, allowed.iter().map(String::as_str)) {
                    p = p.with_help(format!("did you mean `{s}`?"));
                } else if let (Some(tag), false) = (this_tag, other_variants.is_empty()) {
                    p = p.with_help(format!(
                        "`{key}` is a key of `type: {}` entries, not `type: {tag}`",
                        other_variants.join("` / `type: ")
                    ));
                } else if let Some(section) =
                    home_section(root, key).filter(|s| Some(*s) != section_of(&path))
                {
                    p = p.with_help(format!(
                        "`{key}` belongs in the `{section}:` section; move it there"
                    ));
                } else if !allowed.is_empty() {
                    p = p.with_help(format!("allowed keys here: {}", allowed.join(", ")));
                }
                out.push(p);
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or("?");
            let p = if path.is_root() {
                Problem::new(KeyPath::keys(&[name]), format!("missing required section `{name}`"))
                    .with_help(format!("add a `{name}:` section; `ft schema` lists its keys and examples/quickstart.yml shows one"))
            } else {
                Problem::new(path.clone(), format!("missing required key `{name}`"))
                    .with_help(format!("add `{name}:` here"))
            };
            out.push(p);
        }
        ValidationErrorKind::Type { kind } => {
            let expected = expected_types(kind);
            let found_s = found
                .map(|v| format!("{} {}", json_type(v), show(v)))
                .unwrap_or_default();
            let mut p = Problem::new(
                path.clone(),
                format!("expected {expected}, found {found_s}"),
            );
            if path.0.len() == 1 && expected == "a mapping" {
                let sec = path.to_string();
                p = p.with_help(if sec == "adapter" {
                    "in ft, `adapter` is a section: write `adapter:` then indented `type: qlora`, `lora_r: 16` …".to_string()
                } else {
                    format!("`{sec}` is a section: write its keys indented below `{sec}:` (`ft schema` lists them)")
                });
            } else if found
                .and_then(Value::as_str)
                .is_some_and(|t| t.trim().parse::<f64>().is_ok())
                && (expected.contains("number") || expected.contains("integer"))
            {
                p = p.with_help("write the number without quotes");
            }
            out.push(p);
        }
        ValidationErrorKind::Enum { options } => {
            let opts: Vec<&str> = options
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let f = found.map(show).unwrap_or_default();
            let mut p = Problem::new(
                path.clone(),
                format!("{f} is not one of: {}", opts.join(", ")),
            );
            if let Some(s) = found
                .and_then(Value::as_str)
                .and_then(|w| did_you_mean(w, opts.iter().copied()))
            {
                p = p.with_help(format!("did you mean `{s}`?"));
            }
            out.push(p);
        }
        ValidationErrorKind::Constant { expected_value } => {
            out.push(Problem::new(
                path.clone(),
                format!("expected {}", show(expected_value)),
            ));
        }
        ValidationErrorKind::Minimum { limit } => {
            out.push(bound(path, found, limit, "small", "≥", "least"))
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            out.push(bound(path, found, limit, "small", ">", "least"))
        }
        ValidationErrorKind::Maximum { limit } => {
            out.push(bound(path, found, limit, "large", "≤", "most"))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            out.push(bound(path, found, limit, "large", "<", "most"))
        }
        ValidationErrorKind::MinItems { limit } => {
            out.push(
                Problem::new(
                    path.clone(),
                    format!(
                        "needs at least {limit} entr{}",
                        if *limit == 1 { "y" } else { "ies" }
                    ),
                )
                .with_help("add an entry"),
            );
        }
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            out.extend(explain_branches(root, instance, &path, found, context));
        }
        _ => out.push(Problem::new(path.clone(), err.to_string())),
    }
    out
}

/// A value outside a numeric bound: "5 is too large: must be ≤ 1".
fn bound(
    path: KeyPath,
    found: Option<&Value>,
    limit: &Value,
    size: &str,
    op: &str,
    extreme: &str,
) -> Problem {
    let f = found.map(show).unwrap_or_default();
    Problem::new(path, format!("{f} is too {size}: must be {op} {limit}"))
        .with_help(format!("use a value of at {extreme} {limit}"))
}

/// Tags of the `type:`-tagged variants that have `key` as a property.
fn variants_with_key(root: &Value, key: &str) -> Vec<String> {
    root.get("$defs")
        .and_then(Value::as_object)
        .map(|defs| {
            defs.values()
                .flat_map(|d| {
                    let branches: Vec<&Value> = match d.get("oneOf").and_then(Value::as_array) {
                        Some(b) => b.iter().map(|b| deref(root, b)).collect(),
                        None => vec![d],
                    };
                    branches
                        .into_iter()
                        .filter(|b| b.get("properties").and_then(|p| p.get(key)).is_some())
                        .filter_map(|b| tag_of(b).map(str::to_string))
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The top-level section a path is in.
fn section_of(path: &KeyPath) -> Option<&str> {
    match path.0.first() {
        Some(ft_core::problem::Seg::Key(k)) => Some(k.as_str()),
        _ => None,
    }
}

/// The section whose keys include `key` (for keys written in the wrong
/// place, e.g. axolotl's flat `lora_r` at the top level).
fn home_section(root: &Value, key: &str) -> Option<&'static str> {
    let props = root.get("properties")?;
    SECTIONS.into_iter().find(|s| {
        props
            .get(*s)
            .map(|n| {
                let n = resolve_nonnull(root, n);
                n.get("properties").and_then(|p| p.get(key)).is_some()
            })
            .unwrap_or(false)
    })
}

fn resolve_nonnull<'a>(root: &'a Value, n: &'a Value) -> &'a Value {
    let n = deref(root, n);
    if let Some(branches) = n
        .get("anyOf")
        .or_else(|| n.get("oneOf"))
        .and_then(Value::as_array)
    {
        for b in branches {
            let b = deref(root, b);
            if b.get("type").and_then(Value::as_str) != Some("null") {
                return b;
            }
        }
    }
    n
}

fn explain_branches(
    root: &Value,
    instance: &Value,
    path: &KeyPath,
    found: Option<&Value>,
    context: &[Vec<jsonschema::ValidationError<'static>>],
) -> Vec<Problem> {
    let node = node_at(root, instance, &path.parent())
        .and_then(|parent| match path.0.last() {
            Some(ft_core::problem::Seg::Key(k)) => parent.get("properties")?.get(k),
            Some(ft_core::problem::Seg::Index(_)) => parent.get("items"),
            None => Some(root),
        })
        .map(|n| deref(root, n));
    let branches: Vec<&Value> = node
        .and_then(|n| n.get("oneOf").or_else(|| n.get("anyOf")))
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|b| deref(root, b)).collect())
        .unwrap_or_default();
    let tags: Vec<&str> = branches.iter().filter_map(|b| tag_of(b)).collect();

    // A documented enum: schemars writes one `const` branch per variant.
    let consts: Vec<&str> = branches
        .iter()
        .filter_map(|b| b.get("const").and_then(Value::as_str))
        .collect();
    if !consts.is_empty() && consts.len() == branches.len() {
        let f = found.map(show).unwrap_or_default();
        let mut p = Problem::new(
            path.clone(),
            format!("{f} is not one of: {}", consts.join(", ")),
        );
        if let Some(s) = found
            .and_then(Value::as_str)
            .and_then(|w| did_you_mean(w, consts.iter().copied()))
        {
            p = p.with_help(format!("did you mean `{s}`?"));
        }
        return vec![p];
    }

    // A `type:`-tagged enum: report against the variant the entry names.
    if !tags.is_empty() && tags.len() == branches.len() {
        let Some(obj) = found.filter(|v| v.is_object()) else {
            let f = found
                .map(|v| format!("{} {}", json_type(v), show(v)))
                .unwrap_or_default();
            return vec![Problem::new(
                path.clone(),
                format!("expected a mapping with `type:`, found {f}"),
            )];
        };
        return match obj.get("type") {
            None => vec![
                Problem::new(path.clone(), "missing `type:`")
                    .with_help(format!("add `type:` with one of: {}", tags.join(", "))),
            ],
            Some(t) => match t.as_str().and_then(|t| tags.iter().position(|x| *x == t)) {
                Some(i) => context
                    .get(i)
                    .map(|errs| {
                        errs.iter()
                            .flat_map(|e| explain(root, instance, e))
                            .collect()
                    })
                    .unwrap_or_default(),
                None => {
                    let mut p = Problem::new(
                        path.key("type"),
                        format!("{} is not one of: {}", show(t), tags.join(", ")),
                    );
                    if let Some(s) = t
                        .as_str()
                        .and_then(|w| did_you_mean(w, tags.iter().copied()))
                    {
                        p = p.with_help(format!("did you mean `{s}`?"));
                    }
                    vec![p]
                }
            },
        };
    }

    // Untagged alternatives (e.g. `true` or a path): use the one branch whose
    // errors lie deeper than this value, i.e. whose shape matched.
    let deeper: Vec<usize> = context
        .iter()
        .enumerate()
        .filter(|(_, errs)| {
            !errs.is_empty()
                && errs.iter().all(|e| {
                    KeyPath::from_json_pointer(e.instance_path().as_str())
                        .0
                        .len()
                        > path.0.len()
                })
        })
        .map(|(i, _)| i)
        .collect();
    if let [i] = deeper.as_slice() {
        return context[*i]
            .iter()
            .flat_map(|e| explain(root, instance, e))
            .collect();
    }
    let mut expected: Vec<String> = branches
        .iter()
        .map(|b| {
            match (
                b.get("type").and_then(Value::as_str),
                b.get("description").and_then(Value::as_str),
            ) {
                (Some(t), _) => type_name(t).to_string(),
                (None, Some(d)) => d.to_string(),
                (None, None) => "another shape".to_string(),
            }
        })
        .filter(|t| t != "nothing (null)")
        .collect();
    expected.dedup();
    let f = found
        .map(|v| format!("{} {}", json_type(v), show(v)))
        .unwrap_or_default();
    vec![Problem::new(
        path.clone(),
        format!("expected {}, found {f}", expected.join(" or ")),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_typos_not_strangers() {
        let keys = ["lora_r", "lora_alpha", "lora_dropout", "type"];
        assert_eq!(did_you_mean("lora_alfa", keys), Some("lora_alpha"));
        assert_eq!(did_you_mean("lora_dropuot", keys), Some("lora_dropout"));
        assert_eq!(did_you_mean("completely_else", keys), None);
    }
}
