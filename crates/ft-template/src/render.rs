//! Rendering chat templates the way transformers does, on minijinja.
//!
//! transformers compiles templates with Jinja2 `trim_blocks=True,
//! lstrip_blocks=True`, the `loopcontrols` extension, a `tojson` that does
//! not HTML-escape (`json.dumps(x, ensure_ascii=False, indent=…)`), and the
//! globals `raise_exception` and `strftime_now`; the special-token strings
//! (`bos_token`, `eos_token` …) and `apply_chat_template`'s keyword
//! arguments are template variables. [`ChatTemplate`] sets minijinja up the
//! same way, with `minijinja_contrib::pycompat` for Python string/dict
//! methods (`.startswith`, `.split`, `.items` …).
//!
//! `{% generation %}…{% endgeneration %}` (transformers' marker of assistant
//! text for `return_assistant_tokens_mask`) is not minijinja syntax. Before
//! compiling, each tag is rewritten into plain `if` blocks that print a
//! reserved marker character, keeping the tag's whitespace control:
//! `{%- generation %}` becomes `{%- if true %}{{ GEN_OPEN }}{% if true %}`
//! (the first tag inherits the left trim, the last the right trim). After
//! rendering the markers are cut out and their positions kept as spans.

use std::collections::BTreeMap;
use std::ops::Range;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};

use crate::date::FixedDate;
use crate::error::TemplateError;
use crate::source::SpecialTokens;

/// Opens a `{% generation %}` span in rendered text (a Unicode
/// noncharacter: never valid in interchanged text).
pub const GEN_OPEN: char = '\u{FDD0}';
/// Closes a `{% generation %}` span.
pub const GEN_CLOSE: char = '\u{FDD1}';
/// Opens a message-content marker (followed by the message index and
/// [`MARK_SEP`]).
pub const MARK_OPEN: char = '\u{FDD2}';
/// Ends the index of a content marker.
pub const MARK_SEP: char = '\u{FDD3}';
/// Closes a content marker.
pub const MARK_CLOSE: char = '\u{FDD4}';

/// Every reserved marker character.
pub const RESERVED: [char; 5] = [GEN_OPEN, GEN_CLOSE, MARK_OPEN, MARK_SEP, MARK_CLOSE];

/// A message as the template sees it: `role`, `content`, then any extra
/// keys, in that order.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateMessage {
    /// The role.
    pub role: String,
    /// The content.
    pub content: String,
    /// Extra keys (e.g. `reasoning_content`).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl TemplateMessage {
    /// A message without extra keys.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            extra: serde_json::Map::new(),
        }
    }

    fn to_value(&self, content: &str) -> Value {
        let mut pairs: Vec<(String, Value)> = vec![
            ("role".into(), Value::from(self.role.as_str())),
            ("content".into(), Value::from(content)),
        ];
        for (k, v) in &self.extra {
            pairs.push((k.clone(), Value::from(minijinja::value::Serde(v))));
        }
        Value::from_pairs(pairs)
    }
}

/// Rewrites `{% generation %}` / `{% endgeneration %}` tags into plain
/// blocks that print [`GEN_OPEN`] / [`GEN_CLOSE`]. Returns the new source
/// and whether any tag was found.
pub fn rewrite_generation_tags(src: &str) -> (String, bool) {
    let mut out = String::with_capacity(src.len() + 64);
    let mut rest = src;
    let mut found = false;
    while let Some(pos) = rest.find("{%") {
        out.push_str(&rest[..pos]);
        let tag = &rest[pos..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return (out, found);
        };
        let inner = &tag[2..end];
        let (left, body) = match inner.chars().next() {
            Some(c @ ('-' | '+')) => (c.to_string(), &inner[1..]),
            _ => (String::new(), inner),
        };
        let (body, right) = match body.chars().last() {
            Some(c @ ('-' | '+')) => (&body[..body.len() - 1], c.to_string()),
            _ => (body, String::new()),
        };
        match body.trim() {
            "generation" => {
                found = true;
                out.push_str(&format!(
                    "{{%{left} if true %}}{{{{ \"{GEN_OPEN}\" }}}}{{% if true {right}%}}"
                ));
            }
            "endgeneration" => {
                found = true;
                out.push_str(&format!(
                    "{{%{left} endif %}}{{{{ \"{GEN_CLOSE}\" }}}}{{% endif {right}%}}"
                ));
            }
            _ => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    (out, found)
}

/// Python `json.dumps(value, ensure_ascii=False, indent=…, sort_keys=…)`.
fn py_json(
    v: &Value,
    indent: Option<usize>,
    sort_keys: bool,
    level: usize,
    out: &mut String,
) -> Result<(), Error> {
    use minijinja::value::ValueKind;
    let nl = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(i) = v.as_i64() {
                out.push_str(&i.to_string());
            } else {
                let f = f64::try_from(v.clone())
                    .map_err(|_| Error::new(ErrorKind::InvalidOperation, "bad number"))?;
                out.push_str(&serde_json::to_string(&f).unwrap_or_else(|_| "NaN".into()));
            }
        }
        ValueKind::String => {
            let s = v.as_str().unwrap_or_default();
            out.push_str(
                &serde_json::to_string(s)
                    .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?,
            );
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                nl(out, level + 1);
                py_json(item, indent, sort_keys, level + 1, out)?;
            }
            nl(out, level);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                nl(out, level + 1);
                let ks = k
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| k.to_string());
                out.push_str(&serde_json::to_string(&ks).unwrap_or_default());
                out.push_str(": ");
                py_json(&v.get_item(k)?, indent, sort_keys, level + 1, out)?;
            }
            nl(out, level);
            out.push('}');
        }
        _ => {
            out.push_str(&serde_json::to_string(&v.to_string()).unwrap_or_default());
        }
    }
    Ok(())
}

fn tojson(v: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    py_json(&v, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

/// Options that change what a template renders, beyond the messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderOptions {
    /// `chat_template_kwargs` (e.g. `enable_thinking`).
    pub kwargs: BTreeMap<String, serde_json::Value>,
    /// Fixed date for `strftime_now` and the `date_string` variable; `None`
    /// leaves both undefined so templates use their own fallback.
    pub date: Option<FixedDate>,
}

/// A compiled chat template with transformers' environment.
pub struct ChatTemplate {
    env: Environment<'static>,
    name: String,
    has_generation: bool,
    special: SpecialTokens,
    options: RenderOptions,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("name", &self.name)
            .field("has_generation", &self.has_generation)
            .finish()
    }
}

const TEMPLATE_NAME: &str = "chat";

impl ChatTemplate {
    /// Compiles `source` (named `name` in messages).
    pub fn new(
        name: &str,
        source: &str,
        special: SpecialTokens,
        options: RenderOptions,
    ) -> Result<Self, TemplateError> {
        let (rewritten, has_generation) = rewrite_generation_tags(source);
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TemplateError::Syntax {
                name: name.to_string(),
                message: e.to_string(),
            })?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("the template raised: {msg}"),
            ))
        });
        if let Some(date) = options.date {
            env.add_function("strftime_now", move |fmt: String| -> Result<Value, Error> {
                Ok(Value::from(date.strftime(&fmt)))
            });
        }
        env.add_template_owned(TEMPLATE_NAME, rewritten)
            .map_err(|e| TemplateError::Syntax {
                name: name.to_string(),
                message: format!("{e:#}"),
            })?;
        Ok(Self {
            env,
            name: name.to_string(),
            has_generation,
            special,
            options,
        })
    }

    /// Where the template came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the template marks assistant text with `{% generation %}`.
    pub fn has_generation(&self) -> bool {
        self.has_generation
    }

    /// Renders with each message's content replaced by `content(i, msg)`.
    pub(crate) fn render_raw(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
        content: &dyn Fn(usize, &TemplateMessage) -> String,
    ) -> Result<String, TemplateError> {
        let msgs: Vec<Value> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| m.to_value(&content(i, m)))
            .collect();
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in &self.options.kwargs {
            ctx.insert(k.clone(), Value::from(minijinja::value::Serde(v)));
        }
        if let Some(d) = self.options.date {
            ctx.entry("date_string".into())
                .or_insert_with(|| Value::from(d.strftime("%d %b %Y")));
        }
        let sp = &self.special;
        for (k, v) in [
            ("bos_token", &sp.bos),
            ("eos_token", &sp.eos),
            ("pad_token", &sp.pad),
            ("unk_token", &sp.unk),
        ] {
            if let Some(v) = v {
                ctx.insert(k.into(), Value::from(v.as_str()));
            }
        }
        for (k, v) in &sp.others {
            ctx.insert(k.clone(), Value::from(v.as_str()));
        }
        if !sp.additional.is_empty() {
            ctx.insert(
                "additional_special_tokens".into(),
                Value::from(minijinja::value::Serde(&sp.additional)),
            );
        }
        ctx.insert("messages".into(), Value::from(msgs));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render {
                name: self.name.clone(),
                message: e.to_string(),
            })?;
        tmpl.render(Value::from_pairs(ctx)).map_err(|e| {
            let mut message = e.to_string();
            if let Some(d) = e.detail() {
                message = format!("{message} ({d})");
            }
            TemplateError::Render {
                name: self.name.clone(),
                message,
            }
        })
    }

    /// Renders `messages` exactly as `tokenizer.apply_chat_template(messages,
    /// tokenize=False, add_generation_prompt=…)` would, with any
    /// `{% generation %}` markers removed.
    pub fn render(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let s = self.render_raw(messages, add_generation_prompt, &|_, m| m.content.clone())?;
        Ok(if self.has_generation {
            strip_generation(&s).0
        } else {
            s
        })
    }
}

/// Cuts [`GEN_OPEN`]/[`GEN_CLOSE`] out of `s`; returns the text and the byte
/// spans that were inside generation blocks.
pub fn strip_generation(s: &str) -> (String, Vec<Range<usize>>) {
    let mut out = String::with_capacity(s.len());
    let mut spans = Vec::new();
    let mut open: Option<usize> = None;
    for c in s.chars() {
        match c {
            GEN_OPEN => open = Some(out.len()),
            GEN_CLOSE => {
                if let Some(start) = open.take()
                    && start < out.len()
                {
                    spans.push(start..out.len());
                }
            }
            _ => out.push(c),
        }
    }
    (out, spans)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tpl(src: &str) -> ChatTemplate {
        ChatTemplate::new("t", src, SpecialTokens::default(), RenderOptions::default()).unwrap()
    }

    #[test]
    fn generation_tags_keep_whitespace_control() {
        let src = "{% for m in messages %}{{ m.role }}:\n{%- generation -%}\n  {{ m.content }}\n{%- endgeneration %}\n|{% endfor %}";
        let t = tpl(src);
        assert!(t.has_generation());
        let plain = "{% for m in messages %}{{ m.role }}:\n{%- if true -%}\n  {{ m.content }}\n{%- endif %}\n|{% endfor %}";
        let msgs = [
            TemplateMessage::new("user", "hi"),
            TemplateMessage::new("assistant", "yo"),
        ];
        assert_eq!(
            t.render(&msgs, false).unwrap(),
            tpl(plain).render(&msgs, false).unwrap()
        );
        let raw = t
            .render_raw(&msgs, false, &|_, m| m.content.clone())
            .unwrap();
        let (text, spans) = strip_generation(&raw);
        assert_eq!(text, "user:hi|assistant:yo|");
        assert_eq!(
            spans.iter().map(|r| &text[r.clone()]).collect::<Vec<_>>(),
            ["hi", "yo"]
        );
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let t = tpl("{{ messages[0] | tojson }}|{{ x | tojson(indent=2) }}|{{ '<&>' | tojson }}");
        let mut m = TemplateMessage::new("user", "é\"");
        m.extra
            .insert("n".into(), serde_json::json!([1, 2.5, null, true]));
        let mut t2 = t;
        t2.options
            .kwargs
            .insert("x".into(), serde_json::json!({"a": [], "b": {"c": 1}}));
        let out = t2.render(&[m], false).unwrap();
        assert_eq!(
            out,
            "{\"role\": \"user\", \"content\": \"é\\\"\", \"n\": [1, 2.5, null, true]}|{\n  \"a\": [],\n  \"b\": {\n    \"c\": 1\n  }\n}|\"<&>\""
        );
    }

    #[test]
    fn raise_exception_and_python_methods() {
        let t = tpl(
            "{% if messages[0].content.startswith('x') %}{{ raise_exception('no x please') }}{% endif %}{{ messages[0].content.split(',')[1].strip() }}",
        );
        assert_eq!(
            t.render(&[TemplateMessage::new("user", "a, b ")], false)
                .unwrap(),
            "b"
        );
        let err = t
            .render(&[TemplateMessage::new("user", "x,y")], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no x please"), "{err}");
    }

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        let t = tpl(
            "{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}",
        );
        assert_eq!(
            t.render(&[TemplateMessage::new("user", "a")], false)
                .unwrap(),
            "a\n"
        );
    }

    #[test]
    fn loop_controls() {
        let t = tpl(
            "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}{{ m.content }}{% endfor %}",
        );
        let msgs = [
            TemplateMessage::new("system", "s"),
            TemplateMessage::new("user", "u"),
        ];
        assert_eq!(t.render(&msgs, false).unwrap(), "u");
    }
}
