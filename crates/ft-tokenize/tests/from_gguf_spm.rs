//! The SentencePiece (`tokenizer.ggml.model = llama`) path against a
//! committed fixture: a small Llama-2-style SentencePiece BPE model, its
//! vocab-only GGUF written by gguf-py, and the ids the python `tokenizers`
//! package gives for the Llama-2-style tokenizer.json (itself checked
//! against SentencePiece). Generator: `tests/fixtures/gen/gguf_spm_tokenizer.py`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use ft_tokenize::from_gguf::GgufVocab;
use ft_tokenize::tokenizer_from_gguf;
use tokenizers::Tokenizer;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizers/spm_tiny")
}

#[test]
fn spm_gguf_tokenizer_matches_reference_ids() {
    let built = tokenizer_from_gguf(&fixture().join("tiny_spm.gguf")).unwrap();
    assert_eq!(built.vocab, GgufVocab::Llama);
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).unwrap()).unwrap();
    let tk = &built.tokenizer;
    let cases = expected["cases"].as_array().unwrap();
    assert!(cases.len() > 40);
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
            .collect()
    };
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let with = tk.encode(text, true).unwrap();
        assert_eq!(with.get_ids(), ids(&case["ids"]), "ids for {text:?}");
        let plain = tk.encode(text, false).unwrap();
        assert_eq!(
            plain.get_ids(),
            ids(&case["ids_no_special"]),
            "ids for {text:?}"
        );
        assert_eq!(
            tk.decode(plain.get_ids(), false).unwrap(),
            case["decode"].as_str().unwrap(),
            "decode of {text:?}"
        );
        assert_eq!(
            tk.decode(with.get_ids(), true).unwrap(),
            case["decode_skip_special"].as_str().unwrap(),
            "decode (skip special) of {text:?}"
        );
    }

    // Special tokens and template as the GGUF states them.
    assert_eq!(
        built.chat_template.as_deref(),
        expected["chat_template"].as_str()
    );
    assert_eq!(
        built.bos.as_ref().map(|t| t.content.as_str()),
        expected["bos_token"].as_str()
    );
    assert_eq!(
        built.eos.as_ref().map(|t| t.content.as_str()),
        expected["eos_token"].as_str()
    );
    assert_eq!(
        built.unk.as_ref().map(|t| t.content.as_str()),
        expected["unk_token"].as_str()
    );
    assert!(built.add_bos && !built.add_eos);
    assert_eq!(built.model_max_length, Some(4096));
}

#[test]
fn spm_gguf_tokenizer_matches_reference_vocab() {
    let built = tokenizer_from_gguf(&fixture().join("tiny_spm.gguf")).unwrap();
    let reference = Tokenizer::from_file(fixture().join("tokenizer.json")).unwrap();
    assert_eq!(built.tokenizer.get_vocab(true), reference.get_vocab(true));
    let specials = |t: &Tokenizer| {
        let mut v: Vec<_> = t
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, a)| a.special)
            .map(|(id, a)| (id, a.content))
            .collect();
        v.sort();
        v
    };
    assert_eq!(specials(&built.tokenizer), specials(&reference));
}
