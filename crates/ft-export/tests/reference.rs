//! ft's GGUF export against llama.cpp's `convert_hf_to_gguf.py`.
//!
//! For each tiny fixture model and outtype f32 / q8_0, the export must have
//! the same tensors (names, order, ggml types, shapes, sha256 of the bytes)
//! and the same metadata (keys, value types, values) as the converter's file,
//! apart from the `general.*` provenance keys. The references are summaries
//! made by `tests/fixtures/gen/convert_reference.py` (llama-cpp-python 0.3.36,
//! gguf 0.19.0); the model dir is assembled the same way: the fixture model's
//! config.json and weights plus the generated tiny tokenizer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use ft_export::{
    ExportError, ExportOptions, GgufType, LoraExportOptions, ModelfileOptions, PROVENANCE_KEYS,
    export_gguf, export_lora_gguf,
};
use ft_gguf::{Array, GgufFile, Value};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fixture model `name` with its tiny tokenizer, in a temporary dir.
fn model_dir(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let models = root().join("tests/fixtures/models").join(name);
    for e in std::fs::read_dir(&models).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "reference.safetensors" {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let tok = root().join("tests/fixtures/export").join(name);
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tok.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A metadata value as the generator's JSON summary writes it:
/// (type name, value).
fn summarize(v: &Value) -> (String, Json) {
    fn arr(a: &Array) -> (String, Json) {
        let (t, v): (&str, Json) = match a {
            Array::String(x) => ("string", x.clone().into()),
            Array::I32(x) => ("int32", x.clone().into()),
            Array::U32(x) => ("uint32", x.clone().into()),
            Array::F32(x) => (
                "float32",
                x.iter().map(|&f| f as f64).collect::<Vec<_>>().into(),
            ),
            Array::Bool(x) => ("bool", x.clone().into()),
            other => panic!("unexpected array {other:?}"),
        };
        (format!("array[{t}]"), v)
    }
    match v {
        Value::U32(x) => ("uint32".into(), (*x).into()),
        Value::I32(x) => ("int32".into(), (*x).into()),
        Value::U64(x) => ("uint64".into(), (*x).into()),
        Value::F32(x) => ("float32".into(), (*x as f64).into()),
        Value::Bool(x) => ("bool".into(), (*x).into()),
        Value::String(s) => ("string".into(), s.clone().into()),
        Value::Array(a) => arr(a),
        other => panic!("unexpected value {other:?}"),
    }
}

fn pre_override(reference: &Json) -> String {
    reference["generator"]["tokenizer_pre_override"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn check(name: &str, outtype: &str, gguf: GgufType) {
    let reference: Json = serde_json::from_slice(
        &std::fs::read(
            root()
                .join("tests/fixtures/export")
                .join(name)
                .join(format!("reference.{outtype}.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let dir = model_dir(name);
    let out = tempfile::tempdir().unwrap();
    let mut opts = ExportOptions::new(dir.path(), out.path().join("m.gguf"), gguf);
    opts.tokenizer_pre = Some(pre_override(&reference));
    opts.base_model = Some("tiny".into());
    opts.datasets = vec!["a".into(), "b".into()];
    opts.finetune = Some("test".into());
    let report = export_gguf(&opts).unwrap();
    let f = GgufFile::open(&report.path).unwrap();

    // Tensors: names, order, types, shapes, bytes.
    let want = reference["tensors"].as_array().unwrap();
    let got: Vec<Json> = f
        .tensors()
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "type": t.ty.name(),
                "shape": t.shape,
                "sha256": hex(f.tensor_data(&t.name).unwrap()),
            })
        })
        .collect();
    assert_eq!(got.len(), want.len(), "{name} {outtype}: tensor count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w, "{name} {outtype}: tensor");
    }

    // Metadata: every reference key with the same type and value, in the
    // same order; nothing else but provenance.
    let want: Vec<(String, (String, Json))> = reference["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let key = m["key"].as_str().unwrap().to_owned();
            let ty = m["type"].as_str().unwrap().to_owned();
            (key, (ty, m["value"].clone()))
        })
        .collect();
    let ours: Vec<(String, (String, Json))> = f
        .metadata()
        .iter()
        .filter(|(k, _)| !PROVENANCE_KEYS.contains(k) && !k.starts_with("general.dataset."))
        .map(|(k, v)| (k.to_owned(), summarize(v)))
        .collect();
    let want_keys: Vec<&String> = want.iter().map(|(k, _)| k).collect();
    let our_keys: Vec<&String> = ours.iter().map(|(k, _)| k).collect();
    assert_eq!(our_keys, want_keys, "{name} {outtype}: metadata keys");
    for ((k, got), (_, want)) in ours.iter().zip(&want) {
        assert_eq!(got, want, "{name} {outtype}: type and value of {k}");
    }

    // Provenance.
    let md = f.metadata();
    assert_eq!(md.get_str("general.name"), Some("m"));
    assert_eq!(md.get_str("general.quantized_by"), Some("ft"));
    assert_eq!(md.get_str("general.base_model.0.name"), Some("tiny"));
    assert_eq!(md.get_str("general.dataset.1.name"), Some("b"));
    assert_eq!(md.get("general.dataset.count"), Some(&Value::U32(2)));
}

macro_rules! reference_tests {
    ($($test:ident: $name:literal, $outtype:literal, $ty:expr;)*) => {$(
        #[test]
        fn $test() {
            check($name, $outtype, $ty);
        }
    )*};
}

reference_tests! {
    llama_f32: "llama", "f32", GgufType::F32;
    llama_q8_0: "llama", "q8_0", GgufType::Q8_0;
    llama3_f32: "llama3", "f32", GgufType::F32;
    llama3_q8_0: "llama3", "q8_0", GgufType::Q8_0;
    qwen2_f32: "qwen2", "f32", GgufType::F32;
    qwen2_q8_0: "qwen2", "q8_0", GgufType::Q8_0;
    qwen3_f32: "qwen3", "f32", GgufType::F32;
    qwen3_q8_0: "qwen3", "q8_0", GgufType::Q8_0;
    mistral_f32: "mistral", "f32", GgufType::F32;
    mistral_q8_0: "mistral", "q8_0", GgufType::Q8_0;
}

#[test]
fn sharded_checkpoint_exports_like_the_single_file() {
    let single = model_dir("mistral");
    let sharded = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(root().join("tests/fixtures/models/mistral_sharded")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, sharded.path().join(p.file_name().unwrap())).unwrap();
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(single.path().join(f), sharded.path().join(f)).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let export = |dir: &Path, file: &str| {
        let mut o = ExportOptions::new(dir, out.path().join(file), GgufType::Q8_0);
        o.tokenizer_pre = Some("gpt-2".into());
        o.name = Some("same".into());
        export_gguf(&o).unwrap()
    };
    let a = export(single.path(), "a.gguf");
    let b = export(sharded.path(), "b.gguf");
    let (fa, fb) = (
        GgufFile::open(&a.path).unwrap(),
        GgufFile::open(&b.path).unwrap(),
    );
    let mut ta: Vec<_> = fa
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), hex(fa.tensor_data(&t.name).unwrap())))
        .collect();
    let mut tb: Vec<_> = fb
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), hex(fb.tensor_data(&t.name).unwrap())))
        .collect();
    ta.sort();
    tb.sort();
    assert_eq!(ta, tb);
}

#[test]
fn modelfile_and_chat_template_override() {
    let dir = model_dir("llama3");
    let out = tempfile::tempdir().unwrap();
    let mut o = ExportOptions::new(dir.path(), out.path().join("tiny.gguf"), GgufType::Q4KM);
    o.tokenizer_pre = Some("llama-bpe".into());
    o.chat_template =
        Some("{{ bos_token }}{% for m in messages %}{{ m.content }}<|eot_id|>{% endfor %}".into());
    o.modelfile = Some(ModelfileOptions::default());
    let r = export_gguf(&o).unwrap();
    let text = std::fs::read_to_string(r.modelfile.as_ref().unwrap()).unwrap();
    assert_eq!(
        text,
        "FROM ./tiny.gguf\nPARAMETER stop \"<|eot_id|>\"\nPARAMETER temperature 0.7\n"
    );
    let f = GgufFile::open(&r.path).unwrap();
    assert_eq!(
        f.metadata().get_str("tokenizer.chat_template"),
        o.chat_template.as_deref()
    );
    assert_eq!(f.metadata().get("general.file_type"), Some(&Value::U32(15)));
    // 64-wide rows cannot hold Q4_K/Q6_K blocks of 256: llama-quantize's
    // fallbacks (Q4_K -> Q5_0, Q6_K -> Q8_0; output -> Q8_0).
    let ty = |n: &str| f.tensor_info(n).unwrap().ty.name();
    assert_eq!(ty("blk.0.attn_q.weight"), "Q5_0");
    // use_more_bits(i, 2 layers) picks layer 1 only.
    assert_eq!(ty("blk.0.attn_v.weight"), "Q5_0");
    assert_eq!(ty("blk.1.attn_v.weight"), "Q8_0");
    assert_eq!(ty("blk.0.ffn_down.weight"), "Q5_0");
    assert_eq!(ty("blk.1.ffn_down.weight"), "Q8_0");
    assert_eq!(ty("output.weight"), "Q8_0");
    assert_eq!(ty("token_embd.weight"), "Q5_0");
    assert_eq!(ty("blk.0.attn_norm.weight"), "F32");
    assert!(!r.fallbacks.is_empty());
    // Every quantized tensor dequantizes close to the source.
    assert!(
        f.dequantize("blk.0.ffn_up.weight")
            .unwrap()
            .iter()
            .all(|x| x.is_finite())
    );
}

fn err(opts: &ExportOptions) -> String {
    let e: ExportError = export_gguf(opts).unwrap_err();
    e.to_string()
}

#[test]
fn bad_inputs_are_explained() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("x.gguf");

    // Unknown model_type.
    let dir = model_dir("qwen2");
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"qwen2\"", "\"gpt_neox\"");
    std::fs::write(&cfg, text).unwrap();
    let mut o = ExportOptions::new(dir.path(), &target, GgufType::F16);
    o.tokenizer_pre = Some("qwen2".into());
    let e = err(&o);
    assert!(
        e.contains("gpt_neox") && e.contains("config.json") && e.contains("qwen3"),
        "{e}"
    );

    // A missing tensor: drop a layer from config's view by claiming 3 layers.
    let dir = model_dir("qwen2");
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    std::fs::write(&cfg, text).unwrap();
    let mut o = ExportOptions::new(dir.path(), &target, GgufType::F16);
    o.tokenizer_pre = Some("qwen2".into());
    let e = err(&o);
    assert!(
        e.contains("model.layers.2.input_layernorm.weight") && e.contains("missing"),
        "{e}"
    );

    // An unknown pre-tokenizer (the tiny tokenizer's hash is in no table).
    let dir = model_dir("qwen3");
    let o = ExportOptions::new(dir.path(), &target, GgufType::F16);
    let e = err(&o);
    assert!(
        e.contains("tokenizer_pre") && e.contains("tokenizer.json") && e.contains("chkhsh"),
        "{e}"
    );

    // No tokenizer.
    let dir = model_dir("qwen3");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let e = err(&ExportOptions::new(dir.path(), &target, GgufType::F16));
    assert!(
        e.contains("tokenizer.json") && e.contains("not found"),
        "{e}"
    );

    // No weights.
    let dir = model_dir("qwen3");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = err(&ExportOptions::new(dir.path(), &target, GgufType::F16));
    assert!(e.contains("model.safetensors"), "{e}");

    // A corrupt shard.
    let dir = model_dir("qwen3");
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk",
    )
    .unwrap();
    let e = err(&ExportOptions::new(dir.path(), &target, GgufType::F16));
    assert!(e.contains("safetensors"), "{e}");

    // Nothing was written by any failed export.
    assert!(!target.exists());
}

/// The LoRA adapters of tests/fixtures/adapters against
/// `convert_lora_to_gguf.py --outtype f32` (summaries in
/// tests/fixtures/export/lora_<name>/).
fn check_lora(adapter: &str, base: &str) {
    let reference: Json = serde_json::from_slice(
        &std::fs::read(
            root()
                .join("tests/fixtures/export")
                .join(format!("lora_{adapter}"))
                .join("reference.f32.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = LoraExportOptions {
        adapter_dir: root().join("tests/fixtures/adapters").join(adapter),
        base_model_dir: root().join("tests/fixtures/models").join(base),
        output: out.path().join("lora.gguf"),
        gguf: GgufType::F32,
        name: None,
    };
    let report = export_lora_gguf(&opts).unwrap();
    let f = GgufFile::open(&report.path).unwrap();
    let got: Vec<Json> = f
        .tensors()
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "type": t.ty.name(),
                "shape": t.shape,
                "sha256": hex(f.tensor_data(&t.name).unwrap()),
            })
        })
        .collect();
    assert_eq!(
        &got,
        reference["tensors"].as_array().unwrap(),
        "lora {adapter}"
    );
    let ours: Vec<Json> = f
        .metadata()
        .iter()
        .filter(|(k, _)| !PROVENANCE_KEYS.contains(k))
        .map(|(k, v)| {
            let (ty, value) = summarize(v);
            serde_json::json!({"key": k, "type": ty, "value": value})
        })
        .collect();
    assert_eq!(
        &ours,
        reference["metadata"].as_array().unwrap(),
        "lora {adapter}"
    );
    assert_eq!(report.n_adapted * 2, got.len());
}

#[test]
fn lora_llama_matches_convert_lora_to_gguf() {
    check_lora("llama", "llama");
}

#[test]
fn lora_qwen2_matches_convert_lora_to_gguf() {
    check_lora("qwen2", "qwen2");
}

#[test]
fn rslora_alpha_is_rescaled_for_llama_cpp() {
    let out = tempfile::tempdir().unwrap();
    let opts = LoraExportOptions {
        adapter_dir: root().join("tests/fixtures/adapters/llama_rslora"),
        base_model_dir: root().join("tests/fixtures/models/llama"),
        output: out.path().join("lora.gguf"),
        gguf: GgufType::F32,
        name: Some("rs".into()),
    };
    let r = export_lora_gguf(&opts).unwrap();
    let cfg: Json = serde_json::from_slice(
        &std::fs::read(root().join("tests/fixtures/adapters/llama_rslora/adapter_config.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["use_rslora"], Json::Bool(true));
    let alpha = cfg["lora_alpha"].as_f64().unwrap() as f32;
    // llama.cpp applies alpha / r; rsLoRA means alpha / sqrt(r).
    assert!((r.alpha / r.rank as f32 - alpha / (r.rank as f32).sqrt()).abs() < 1e-6);
    let f = GgufFile::open(&r.path).unwrap();
    assert_eq!(
        f.metadata().get("adapter.lora.alpha"),
        Some(&Value::F32(r.alpha))
    );
    // Q4_K is not a LoRA type.
    let mut bad = opts.clone();
    bad.gguf = GgufType::Q4KM;
    assert!(
        export_lora_gguf(&bad)
            .unwrap_err()
            .to_string()
            .contains("f32, f16, bf16 or q8_0")
    );
}
