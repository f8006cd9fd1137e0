//! Ollama `Modelfile` next to the GGUF.
//!
//! ```text
//! FROM ./model.gguf
//! PARAMETER stop "<|im_end|>"
//! PARAMETER temperature 0.7
//! ```
//!
//! `TEMPLATE` is omitted by default: Ollama reads `tokenizer.chat_template`
//! from the GGUF and maps known Jinja templates to its own. A Go template can
//! be passed to include one. The stop strings are the end-of-turn control
//! tokens the chat template uses (`<|im_end|>`, `<|eot_id|>`, `<|end|>`,
//! `<end_of_turn>` …) plus the EOS token when the template emits it.

use std::path::Path;

use crate::vocab::{VocabInfo, token_type};

/// What goes into the Modelfile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelfileOptions {
    /// A Go template for `TEMPLATE`; `None` leaves it to Ollama (it reads the
    /// GGUF's chat template). Default: `None`.
    pub template: Option<String>,
    /// `PARAMETER temperature`; `None` takes `temperature` from
    /// `generation_config.json`, else 0.7.
    pub temperature: Option<f32>,
}

/// Whether a control token reads like an end of turn or of text.
fn ends_turn(t: &str) -> bool {
    let l = t.to_ascii_lowercase();
    let ending = l.contains("end") || l.contains("eot") || l.contains("eom") || l == "</s>";
    let structural = l.contains("start") || l.contains("header") || l.contains("begin");
    ending && !structural
}

/// The stop strings: control tokens that end a turn and appear in the chat
/// template, in the order they first appear there; the EOS token when the
/// template contains it.
pub fn stop_tokens(vocab: &VocabInfo) -> Vec<String> {
    let Some(template) = vocab.chat_template.as_deref() else {
        return vocab
            .special_ids
            .get("eos")
            .and_then(|&i| vocab.tokens.get(i as usize))
            .cloned()
            .into_iter()
            .collect();
    };
    let eos = vocab
        .special_ids
        .get("eos")
        .and_then(|&i| vocab.tokens.get(i as usize));
    let eot = vocab
        .special_ids
        .get("eot")
        .and_then(|&i| vocab.tokens.get(i as usize));
    let mut found: Vec<(usize, String)> = vocab
        .tokens
        .iter()
        .zip(&vocab.types)
        .filter(|(t, ty)| {
            **ty == token_type::CONTROL
                && !t.is_empty()
                && (ends_turn(t) || Some(*t) == eos || Some(*t) == eot)
        })
        .filter_map(|(t, _)| template.find(t.as_str()).map(|p| (p, t.clone())))
        .collect();
    found.sort();
    found.dedup_by(|a, b| a.1 == b.1);
    found.into_iter().map(|(_, t)| t).collect()
}

/// Escapes a string for a Modelfile `"…"` value.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The Modelfile text for `gguf_file` (a file name next to the Modelfile).
pub fn render(
    gguf_file: &str,
    vocab: &VocabInfo,
    opts: &ModelfileOptions,
    model_dir: &Path,
) -> String {
    let mut out = format!("FROM ./{gguf_file}\n");
    if let Some(t) = &opts.template {
        out.push_str(&format!("TEMPLATE \"\"\"{t}\"\"\"\n"));
    }
    for s in stop_tokens(vocab) {
        out.push_str(&format!("PARAMETER stop {}\n", quote(&s)));
    }
    let temperature = opts.temperature.or_else(|| {
        let p = model_dir.join("generation_config.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
        v.get("temperature")?.as_f64().map(|t| t as f32)
    });
    out.push_str(&format!(
        "PARAMETER temperature {}\n",
        temperature.unwrap_or(0.7)
    ));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vocab(tokens: &[&str], template: &str, eos: u32) -> VocabInfo {
        VocabInfo {
            model: "gpt2".into(),
            pre: "gpt-2".into(),
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
            types: tokens
                .iter()
                .map(|t| {
                    if t.starts_with('<') {
                        token_type::CONTROL
                    } else {
                        token_type::NORMAL
                    }
                })
                .collect(),
            special_ids: BTreeMap::from([("eos".to_string(), eos)]),
            chat_template: Some(template.into()),
        }
    }

    #[test]
    fn stops_are_the_end_of_turn_tokens_the_template_uses() {
        let v = vocab(
            &["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a"],
            "{{ '<|im_start|>' + m + '<|im_end|>' }}",
            0,
        );
        assert_eq!(stop_tokens(&v), ["<|im_end|>"]);
        let v = vocab(
            &[
                "<|begin_of_text|>",
                "<|end_header_id|>",
                "<|eot_id|>",
                "<|start_header_id|>",
            ],
            "{{ bos_token }}<|start_header_id|>x<|end_header_id|>y<|eot_id|>",
            2,
        );
        assert_eq!(stop_tokens(&v), ["<|eot_id|>"]);
        let text = render(
            "m.gguf",
            &v,
            &ModelfileOptions::default(),
            Path::new("/nonexistent"),
        );
        assert_eq!(
            text,
            "FROM ./m.gguf\nPARAMETER stop \"<|eot_id|>\"\nPARAMETER temperature 0.7\n"
        );
    }
}
