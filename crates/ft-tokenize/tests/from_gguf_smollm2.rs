//! The tokenizer rebuilt from the real SmolLM2-135M-Instruct GGUF against
//! the model's own HF `tokenizer.json` / `tokenizer_config.json`
//! (`tests/fixtures/tokenizers/smollm2/`, committed from the HF repo).
//!
//! Needs `examples/models/smollm2-135m-instruct.gguf` (`scripts/fetch-smollm2.sh`;
//! CI runs it first). Without it the tests print why and return.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use ft_template::{ChatTemplate, RenderOptions, TemplateMessage};
use ft_tokenize::{HfTokenizer, tokenizer_from_gguf};
use tokenizers::Tokenizer;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn gguf_path() -> Option<PathBuf> {
    let p = root().join("examples/models/smollm2-135m-instruct.gguf");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: `{}` is absent; run scripts/fetch-smollm2.sh to fetch it",
            p.display()
        );
        None
    }
}

fn reference_dir() -> PathBuf {
    root().join("tests/fixtures/tokenizers/smollm2")
}

/// Every string value in a JSON document.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Conversations of the example datasets as template messages.
fn example_conversations() -> Vec<Vec<TemplateMessage>> {
    let mut convs = Vec::new();
    for entry in std::fs::read_dir(root().join("examples/data")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let msgs = v
                .get("messages")
                .or_else(|| v.get("conversations"))
                .and_then(|m| m.as_array());
            let Some(msgs) = msgs else { continue };
            let conv = msgs
                .iter()
                .map(|m| {
                    let role = m
                        .get("role")
                        .or_else(|| m.get("from"))
                        .and_then(|r| r.as_str())
                        .unwrap_or("user");
                    let role = match role {
                        "human" => "user",
                        "gpt" => "assistant",
                        r => r,
                    };
                    let content = m
                        .get("content")
                        .or_else(|| m.get("value"))
                        .and_then(|c| c.as_str())
                        .unwrap_or("");
                    TemplateMessage::new(role, content)
                })
                .collect();
            convs.push(conv);
        }
    }
    assert!(convs.len() > 100, "expected the example datasets");
    convs
}

fn corpus(template: &str) -> Vec<String> {
    let mut texts: Vec<String> = [
        "Hello, world! How are you doing today?",
        "The quick brown fox jumps over the lazy dog. It's, I'm, you'll, we'd, they've, she's, 'RE 'Ve.",
        "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n    println!(\"{x:?}\");\n}\n",
        "def f(a, b=3):\n\treturn {'k': [a, b]}  # comment\n\n\n",
        "3.14159265358979 1234567890123 0x7fff_ffff 1e-10 -42 +7 1,000,000 2024-05-06T07:08:09Z",
        "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3",
        "🚀 (normal) 😶\u{200d}🌫️ (multiple emojis concatenated) ✅ 🦙🦙 👩‍👩‍👧‍👦",
        "Ünïcödé: naïve café, Straße, Ελληνικά, русский язык, 日本語のテキスト, 中文字符, 한국어, العربية, हिन्दी, ກາ",
        "\u{0301}combining e\u{0301} vs é; ﬁ ligature; Ｆｕｌｌｗｉｄｔｈ; ⅫⅣ; ½ ²³",
        "   leading spaces and trailing   ",
        "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n",
        "tabs\t\tand\r\nwindows\r\nlines\u{a0}nbsp\u{2003}emspace",
        "''''''```````\"\"\"\"......!!!!!!?????? ------======= ~~~ ||| <<>> $$$ %%%",
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n",
        "<|im_start|><|im_end|><|endoftext|><repo_name>x<file_sep>y<|im_start",
        "an <|im_start|> inside text and <|im_end|>trailing",
        "",
        " ",
        "a",
        "<empty_output>",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Long mixed text.
    texts.push(texts.join(" ").repeat(3));

    // Dataset strings, raw and rendered through the (GGUF's) chat template.
    for entry in std::fs::read_dir(root().join("examples/data")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            strings(&v, &mut texts);
        }
    }
    let tpl = ChatTemplate::new(
        "gguf",
        template,
        Default::default(),
        RenderOptions::default(),
    )
    .unwrap();
    for (i, conv) in example_conversations().iter().enumerate() {
        texts.push(tpl.render(conv, i % 2 == 0).unwrap());
    }
    texts
}

#[test]
fn smollm2_gguf_tokenizer_matches_hf() {
    let Some(gguf) = gguf_path() else { return };
    let built = tokenizer_from_gguf(&gguf).unwrap();
    let reference = Tokenizer::from_file(reference_dir().join("tokenizer.json")).unwrap();
    let ours = &built.tokenizer;

    // Same vocabulary (text → id), added tokens included.
    assert_eq!(ours.get_vocab(true), reference.get_vocab(true));
    let added = |t: &Tokenizer| {
        let mut v: Vec<_> = t
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, a)| (id, a.content, a.special))
            .collect();
        v.sort();
        v
    };
    assert_eq!(added(ours), added(&reference));

    let template = built.chat_template.clone().unwrap();
    let texts = corpus(&template);
    let mut n_tokens = 0;
    for text in &texts {
        for add_special in [false, true] {
            let a = ours.encode(text.as_str(), add_special).unwrap();
            let b = reference.encode(text.as_str(), add_special).unwrap();
            assert_eq!(a.get_ids(), b.get_ids(), "ids differ for {text:?}");
            assert_eq!(
                a.get_offsets(),
                b.get_offsets(),
                "offsets differ for {text:?}"
            );
            n_tokens += a.get_ids().len();
        }
        let ids = reference.encode(text.as_str(), false).unwrap();
        for skip in [false, true] {
            assert_eq!(
                ours.decode(ids.get_ids(), skip).unwrap(),
                reference.decode(ids.get_ids(), skip).unwrap(),
                "decode differs for {text:?}"
            );
        }
    }
    assert!(
        texts.len() > 1000 && n_tokens > 20_000,
        "{} texts, {n_tokens} tokens",
        texts.len()
    );
}

#[test]
fn smollm2_gguf_config_matches_hf() {
    let Some(gguf) = gguf_path() else { return };
    let built = tokenizer_from_gguf(&gguf).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tokenizer");
    built.write_dir(&out).unwrap();

    let ours = HfTokenizer::load(&out).unwrap();
    let reference = HfTokenizer::load(&reference_dir()).unwrap();
    assert_eq!(ours.config.chat_template, reference.config.chat_template);
    assert_eq!(ours.config.special.bos, reference.config.special.bos);
    assert_eq!(ours.config.special.eos, reference.config.special.eos);
    assert_eq!(ours.config.special.pad, reference.config.special.pad);
    assert_eq!(ours.config.special.unk, reference.config.special.unk);
    assert_eq!(ours.specials, reference.specials);
    assert_eq!(ours.special_ids, reference.special_ids);
    assert_eq!(ours.eos_id(), reference.eos_id());
    assert_eq!(ours.pad_id(), reference.pad_id());

    // The raw tokenizer_config.json keys transformers reads.
    let cfg = |d: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join("tokenizer_config.json")).unwrap()).unwrap()
    };
    let (a, b) = (cfg(&out), cfg(&reference_dir()));
    for key in [
        "bos_token",
        "eos_token",
        "pad_token",
        "unk_token",
        "chat_template",
        "clean_up_tokenization_spaces",
        "model_max_length",
    ] {
        assert_eq!(a[key], b[key], "tokenizer_config.json `{key}`");
    }
    // GPT2Tokenizer's default: no BOS (the reference leaves the key out).
    assert_eq!(
        a["add_bos_token"],
        b.get("add_bos_token").cloned().unwrap_or(false.into())
    );
    assert_eq!(built.eot, None);

    // The written tokenizer.json loads and encodes like the in-memory one.
    let text = "<|im_start|>user\nWhat is 4 plus 7?<|im_end|>\n";
    assert_eq!(
        ours.inner.encode(text, true).unwrap().get_ids(),
        built.tokenizer.encode(text, true).unwrap().get_ids()
    );
}
