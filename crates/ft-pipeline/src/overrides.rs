//! `--set key.path=value` command-line overrides.
//!
//! Each override is applied to the parsed document *before* validation, so
//! it is checked exactly like a value written in the file, and a problem in
//! it is reported as coming from `--set`. Paths use dots for keys and
//! `[i]` (or `.i`) for list items: `train.learning_rate=1e-4`,
//! `data.datasets[0].path=other.jsonl`. Values are YAML: `true`, `16`,
//! `[q_proj, v_proj]`, `"quoted string"`.

use ft_core::problem::{KeyPath, Problem, Seg};
use serde_json::Value;

/// One parsed override.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Where it goes.
    pub path: KeyPath,
    /// The value, parsed as YAML.
    pub value: Value,
    /// The text as given, for messages.
    pub raw: String,
}

/// Parses `key.path=value`.
pub fn parse(raw: &str) -> Result<Override, Problem> {
    let bad = |msg: &str| {
        Problem::new(KeyPath::root(), format!("--set `{raw}`: {msg}")).with_help(
            "write it as `--set section.key=value`, e.g. `--set train.learning_rate=1e-4`",
        )
    };
    let (lhs, rhs) = raw.split_once('=').ok_or_else(|| bad("missing `=`"))?;
    let mut segs = Vec::new();
    for part in lhs.trim().split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() && rest.is_empty() {
            return Err(bad("empty key in path"));
        }
        if !name.is_empty() {
            match name.parse::<usize>() {
                Ok(i) => segs.push(Seg::Index(i)),
                Err(_) => segs.push(Seg::Key(name.to_string())),
            }
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("unclosed `[`"))?;
            let i = r[..end]
                .parse::<usize>()
                .map_err(|_| bad("list index must be a number"))?;
            segs.push(Seg::Index(i));
            rest = &r[end + 1..];
        }
        if !rest.is_empty() {
            return Err(bad("unexpected text after `]`"));
        }
    }
    let value: Value = if rhs.trim().is_empty() {
        Value::Null
    } else {
        serde_yaml::from_str(rhs).map_err(|e| bad(&format!("value is not valid YAML: {e}")))?
    };
    Ok(Override {
        path: KeyPath(segs),
        value,
        raw: raw.to_string(),
    })
}

/// Sets `ov.value` at `ov.path` in `doc`, creating mappings on the way.
pub fn apply(doc: &mut Value, ov: &Override) -> Result<(), Problem> {
    let mut cur = doc;
    for (i, seg) in ov.path.0.iter().enumerate() {
        let last = i + 1 == ov.path.0.len();
        let here = KeyPath(ov.path.0[..i].to_vec());
        cur = match seg {
            Seg::Key(k) => {
                if cur.is_null() {
                    *cur = Value::Object(Default::default());
                }
                let Value::Object(map) = cur else {
                    return Err(Problem::new(
                        here,
                        format!("--set `{}`: not a mapping, cannot set key `{k}`", ov.raw),
                    ));
                };
                if last {
                    map.insert(k.clone(), ov.value.clone());
                    return Ok(());
                }
                map.entry(k.clone()).or_insert(Value::Null)
            }
            Seg::Index(n) => {
                let Value::Array(items) = cur else {
                    return Err(Problem::new(
                        here,
                        format!("--set `{}`: not a list, cannot index [{n}]", ov.raw),
                    ));
                };
                let len = items.len();
                let Some(item) = items.get_mut(*n) else {
                    return Err(Problem::new(
                        here,
                        format!(
                            "--set `{}`: index [{n}] is past the end of the list ({len} entries)",
                            ov.raw
                        ),
                    ));
                };
                if last {
                    *item = ov.value.clone();
                    return Ok(());
                }
                item
            }
        };
    }
    *cur = ov.value.clone();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_and_apply() {
        let mut doc =
            json!({"train": {"learning_rate": 0.1}, "data": {"datasets": [{"path": "a"}]}});
        for raw in [
            "train.learning_rate=1e-4",
            "data.datasets[0].path=b.jsonl",
            "adapter.lora_target_modules=[q_proj, v_proj]",
        ] {
            apply(&mut doc, &parse(raw).unwrap()).unwrap();
        }
        assert_eq!(doc["train"]["learning_rate"], json!(1e-4));
        assert_eq!(doc["data"]["datasets"][0]["path"], json!("b.jsonl"));
        assert_eq!(
            doc["adapter"]["lora_target_modules"],
            json!(["q_proj", "v_proj"])
        );
        assert!(parse("novalue").is_err());
        let e = apply(&mut doc, &parse("data.datasets[3].path=x").unwrap()).unwrap_err();
        assert!(e.message.contains("past the end"), "{}", e.message);
    }
}
