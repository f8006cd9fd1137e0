//! Dataset formats (`type:`): how a row's fields become a [`Sample`].
//!
//! Adding a format is one new variant in [`DatasetConfig`], one arm in
//! [`columns`] and one in [`to_sample`], plus a test.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::{AlpacaDataset, ChatTemplateDataset, DatasetConfig};
use crate::error::{DataError, RowRef};
use crate::sample::{Message, Origin, Sample, Segment};

/// Roles every chat dataset accepts under their own name.
pub const CANONICAL_ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// A short name of a JSON value's type, for messages.
pub fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The top-level columns a dataset reads.
pub fn columns(d: &DatasetConfig) -> Vec<&str> {
    match d {
        DatasetConfig::ChatTemplate(c) => vec![c.field_messages.as_str()],
        DatasetConfig::Alpaca(a) => {
            let mut v = vec![
                a.field_instruction.as_str(),
                a.field_input.as_str(),
                a.field_output.as_str(),
            ];
            if let Some(s) = &a.field_system {
                v.push(s.as_str());
            }
            v
        }
        DatasetConfig::Completion(c) => vec![c.field.as_str()],
        DatasetConfig::InputOutput(io) => vec![io.field_segments.as_str()],
    }
}

/// The origin tag of a dataset type.
pub fn origin(d: &DatasetConfig) -> Origin {
    match d {
        DatasetConfig::ChatTemplate(_) => Origin::Chat,
        DatasetConfig::Alpaca(_) => Origin::Alpaca,
        DatasetConfig::Completion(_) => Origin::Completion,
        DatasetConfig::InputOutput(_) => Origin::InputOutput,
    }
}

fn available(map: &Map<String, Value>) -> String {
    if map.is_empty() {
        "no fields".into()
    } else {
        let keys: Vec<String> = map.keys().map(|k| format!("`{k}`")).collect();
        format!("fields {}", keys.join(", "))
    }
}

fn get<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    field: &str,
    at: &RowRef,
) -> Result<&'a Value, DataError> {
    match map.get(key) {
        Some(v) if !v.is_null() => Ok(v),
        _ => Err(DataError::MissingField {
            at: at.clone(),
            field: field.to_string(),
            available: available(map),
        }),
    }
}

fn string<'a>(v: &'a Value, field: &str, at: &RowRef) -> Result<&'a str, DataError> {
    v.as_str().ok_or_else(|| DataError::WrongType {
        at: at.clone(),
        field: field.to_string(),
        expected: "a string",
        found: kind(v),
    })
}

/// Converts a row to a sample according to its dataset's format.
pub fn to_sample(
    d: &DatasetConfig,
    at: &RowRef,
    row: &Map<String, Value>,
) -> Result<Sample, DataError> {
    match d {
        DatasetConfig::ChatTemplate(c) => chat(c, at, row),
        DatasetConfig::Alpaca(a) => alpaca(a, at, row),
        DatasetConfig::Completion(c) => {
            let text = string(get(row, &c.field, &c.field, at)?, &c.field, at)?;
            Ok(Sample::Segments {
                segments: vec![Segment {
                    text: text.to_string(),
                    label: true,
                }],
                add_eos: c.add_eos,
            })
        }
        DatasetConfig::InputOutput(io) => {
            let f = &io.field_segments;
            let v = get(row, f, f, at)?;
            let items = v.as_array().ok_or_else(|| DataError::WrongType {
                at: at.clone(),
                field: f.clone(),
                expected: "a list of {text, label} segments",
                found: kind(v),
            })?;
            let mut segments = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let here = format!("{f}[{i}]");
                let obj = item.as_object().ok_or_else(|| DataError::WrongType {
                    at: at.clone(),
                    field: here.clone(),
                    expected: "an object {text, label}",
                    found: kind(item),
                })?;
                let tf = format!("{here}.text");
                let text = string(get(obj, "text", &tf, at)?, &tf, at)?;
                let lf = format!("{here}.label");
                let label = match obj.get("label") {
                    None | Some(Value::Null) => true,
                    Some(Value::Bool(b)) => *b,
                    Some(other) => {
                        return Err(DataError::WrongType {
                            at: at.clone(),
                            field: lf,
                            expected: "true or false",
                            found: kind(other),
                        });
                    }
                };
                segments.push(Segment {
                    text: text.to_string(),
                    label,
                });
            }
            if segments.is_empty() {
                return Err(DataError::EmptyConversation {
                    at: at.clone(),
                    field: f.clone(),
                });
            }
            Ok(Sample::Segments {
                segments,
                add_eos: false,
            })
        }
    }
}

/// Data role name → canonical role, from the dataset's `roles:` aliases.
pub fn role_map(c: &ChatTemplateDataset) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = CANONICAL_ROLES
        .iter()
        .map(|r| (r.to_string(), r.to_string()))
        .collect();
    for (canon, aliases) in &c.roles {
        m.insert(canon.clone(), canon.clone());
        for a in aliases {
            m.insert(a.clone(), canon.clone());
        }
    }
    m
}

fn chat(
    c: &ChatTemplateDataset,
    at: &RowRef,
    row: &Map<String, Value>,
) -> Result<Sample, DataError> {
    let f = &c.field_messages;
    let v = get(row, f, f, at)?;
    let items = v.as_array().ok_or_else(|| DataError::WrongType {
        at: at.clone(),
        field: f.clone(),
        expected: "a list of messages",
        found: kind(v),
    })?;
    if items.is_empty() {
        return Err(DataError::EmptyConversation {
            at: at.clone(),
            field: f.clone(),
        });
    }
    let roles = role_map(c);
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let here = format!("{f}[{i}]");
        let obj = item.as_object().ok_or_else(|| DataError::WrongType {
            at: at.clone(),
            field: here.clone(),
            expected: "a message object",
            found: kind(item),
        })?;
        let rf = format!("{here}.{}", c.message_field_role);
        let role = string(get(obj, &c.message_field_role, &rf, at)?, &rf, at)?;
        let canon = roles.get(role).ok_or_else(|| DataError::UnknownRole {
            at: at.clone(),
            field: rf.clone(),
            role: role.to_string(),
            known: roles
                .keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let cf = format!("{here}.{}", c.message_field_content);
        let content = string(get(obj, &c.message_field_content, &cf, at)?, &cf, at)?;
        let extra: Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| **k != c.message_field_role && **k != c.message_field_content)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.push(Message {
            role: canon.clone(),
            content: content.to_string(),
            extra,
        });
    }
    Ok(Sample::Chat(out))
}

fn alpaca(a: &AlpacaDataset, at: &RowRef, row: &Map<String, Value>) -> Result<Sample, DataError> {
    let instruction = string(
        get(row, &a.field_instruction, &a.field_instruction, at)?,
        &a.field_instruction,
        at,
    )?;
    let input = match row.get(&a.field_input) {
        None | Some(Value::Null) => "",
        Some(v) => string(v, &a.field_input, at)?,
    };
    let output = string(
        get(row, &a.field_output, &a.field_output, at)?,
        &a.field_output,
        at,
    )?;
    let mut messages = Vec::with_capacity(3);
    if let Some(sf) = &a.field_system
        && let Some(v) = row.get(sf).filter(|v| !v.is_null())
    {
        messages.push(Message::new("system", string(v, sf, at)?));
    }
    let user = if input.is_empty() {
        instruction.to_string()
    } else {
        format!("{instruction}\n\n{input}")
    };
    messages.push(Message::new("user", user));
    messages.push(Message::new("assistant", output));
    Ok(Sample::Chat(messages))
}
