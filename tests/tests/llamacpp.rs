//! llama.cpp itself, run on ft's exports, agrees with ft's own forward pass.
//!
//! llama.cpp comes from the npm package node-llama-cpp (prebuilt CPU
//! binaries), driven by `tests/llamacpp/run.mjs`; `.ci/run` installs it with
//! `tests/llamacpp/install.sh`. Without node or the package the llama.cpp
//! tests print `SKIPPED` and return (set `FT_NODE_LLAMA_CPP` to the package
//! directory to use another install).
//!
//! - Tiny fixture models (llama, llama3, mistral, qwen2, qwen3, smollm3): the f32
//!   GGUF's logits in llama.cpp equal ft's within 1e-4 relative
//!   (max |Δ| / max |logit|); q8_0 loads and stays close.
//! - LoRA: llama.cpp applying ft's LoRA GGUF to the base GGUF gives the
//!   logits of ft's merged model exported to GGUF, and of ft's base+adapter.
//! - The real SmolLM2-135M-Instruct (from the PyPI wheel; `SKIPPED` when
//!   `scripts/fetch-smollm2.sh` has not run) with a random adapter merged by
//!   ft: f32 export within 1e-4, q8_0 export top-1 agreement ≥ 99% along
//!   ft's greedy continuations of a fixed prompt set, and the LoRA GGUF on
//!   the wheel's own GGUF as Ollama's `ADAPTER` would use it.
//!
//! Without llama.cpp, `merged_logits_equal_base_plus_adapter` still checks
//! ft's merge against ft's unmerged forward.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Device, Tensor, TensorData};
use ft_export::{ExportOptions, GgufType, LoraExportOptions, export_gguf, export_lora_gguf};
use ft_merge::{MergeDtype, MergeOptions, merge_lora};
use ft_model::lora::{LoraSpec, attach_lora, load_peft, lora_params, save_peft, set_lora_params};
use ft_model::{CausalLm, LoraInit, PackedBatch, load_model};
use ft_train::fidelity::argmax;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The node-llama-cpp package directory, or `None` (with a SKIPPED line)
/// when node or the package is missing.
fn llama_cpp(test: &str) -> Option<LlamaCpp> {
    let pkg = std::env::var_os("FT_NODE_LLAMA_CPP")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/ft/llamacpp/node_modules/node-llama-cpp"))
        });
    let Some(pkg) = pkg.filter(|p| p.join("dist/index.js").is_file()) else {
        eprintln!(
            "SKIPPED {test}: node-llama-cpp is not installed (run tests/llamacpp/install.sh, or set FT_NODE_LLAMA_CPP)"
        );
        return None;
    };
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED {test}: `node` is not on PATH");
        return None;
    }
    Some(LlamaCpp { pkg })
}

struct LlamaCpp {
    pkg: PathBuf,
}

impl LlamaCpp {
    /// llama.cpp's logits, per sequence `[len * vocab]`.
    fn logits(
        &self,
        model: &Path,
        lora: Option<&Path>,
        vocab: usize,
        seqs: &[Vec<u32>],
    ) -> Vec<Vec<f32>> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("logits.f32");
        let req = serde_json::json!({
            "mode": "logits",
            "model": model,
            "lora": lora,
            "vocab": vocab,
            "sequences": seqs,
            "out": out,
        });
        let req_path = dir.path().join("request.json");
        std::fs::write(&req_path, req.to_string()).unwrap();
        let o = Command::new("node")
            .arg(root().join("tests/llamacpp/run.mjs"))
            .arg(&self.pkg)
            .arg(&req_path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "llama.cpp on {} failed:\n{}",
            model.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let bytes = std::fs::read(&out).unwrap();
        let all: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut rest = &all[..];
        seqs.iter()
            .map(|s| {
                let (a, b) = rest.split_at(s.len() * vocab);
                rest = b;
                a.to_vec()
            })
            .collect()
    }
}

/// ft's logits, per sequence `[len * vocab]`.
fn ft_logits(model: &CausalLm, seqs: &[Vec<u32>], device: &Device) -> Vec<Vec<f32>> {
    seqs.iter()
        .map(|s| {
            let batch = PackedBatch::from_rows(&[vec![s.clone()]], 0, device);
            model
                .forward(&batch)
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap()
        })
        .collect()
}

/// max |a − b| / max |b| over all sequences.
fn rel_err(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    let (mut d, mut m) = (0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(y) {
            d = d.max((p - q).abs());
            m = m.max(q.abs());
        }
    }
    d / m
}

/// (positions whose top-1 token agrees, positions).
fn top1(a: &[Vec<f32>], b: &[Vec<f32>], vocab: usize) -> (usize, usize) {
    let (mut same, mut n) = (0, 0);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.chunks_exact(vocab).zip(y.chunks_exact(vocab)) {
            same += usize::from(argmax(p) == argmax(q));
            n += 1;
        }
    }
    (same, n)
}

/// Fixed token sequences of lengths 23 and 9 within `vocab`.
fn sequences(vocab: usize) -> Vec<Vec<u32>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((x >> 33) % vocab as u64) as u32
    };
    [23, 9]
        .iter()
        .map(|&n| (0..n).map(|_| next()).collect())
        .collect()
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
    // SmolLM3's fixture has no tokenizer of its own: llama's (vocab 256).
    let tok = root()
        .join("tests/fixtures/export")
        .join(if name == "smollm3" { "llama" } else { name });
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tok.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn export(dir: &Path, out: &Path, gguf: GgufType) -> PathBuf {
    export_gguf(&ExportOptions::new(dir, out, gguf))
        .unwrap()
        .path
}

/// The tiny fixture tokenizers are byte-level BPE with a pre-tokenizer hash
/// llama.cpp does not list: exported as `gpt-2`, as convert_hf_to_gguf.py
/// was told for the reference exports.
fn export_tiny(dir: &Path, out: &Path, gguf: GgufType) -> PathBuf {
    let mut opts = ExportOptions::new(dir, out, gguf);
    opts.tokenizer_pre = Some("gpt-2".into());
    export_gguf(&opts).unwrap().path
}

fn merge_f32(base: &Path, adapter: &Path, out: &Path) {
    let mut opts = MergeOptions::new(base, adapter, out);
    opts.dtype = MergeDtype::F32;
    merge_lora(&opts).unwrap();
}

#[test]
fn tiny_exports_match_ft_in_llama_cpp() {
    let Some(llama) = llama_cpp("tiny_exports_match_ft_in_llama_cpp") else {
        return;
    };
    let device = Device::flex();
    let mut results = Vec::new();
    for name in ["llama", "llama3", "mistral", "qwen2", "qwen3", "smollm3"] {
        let dir = model_dir(name);
        let model = load_model(dir.path(), &device, None).unwrap();
        let vocab = model.spec.vocab_size;
        let seqs = sequences(vocab);
        let ours = ft_logits(&model, &seqs, &device);
        let out = tempfile::tempdir().unwrap();
        let f32_gguf = export_tiny(dir.path(), &out.path().join("f32.gguf"), GgufType::F32);
        let e = rel_err(&llama.logits(&f32_gguf, None, vocab, &seqs), &ours);
        let q8 = export_tiny(dir.path(), &out.path().join("q8.gguf"), GgufType::Q8_0);
        let eq = rel_err(&llama.logits(&q8, None, vocab, &seqs), &ours);
        eprintln!("{name}: llama.cpp f32 GGUF vs ft relative error {e:.2e}; q8_0 {eq:.2e}");
        results.push((name, e, eq));
    }
    for (name, e, eq) in results {
        assert!(
            e <= 1e-4,
            "{name}: f32 GGUF in llama.cpp: relative error {e:e}"
        );
        // q8_0 rounds the weights and (in llama.cpp's dot products) the
        // activations to 8 bits; on these random models, whose logits are
        // all small, that measured 2e-2..6e-2. Its bytes are checked
        // against convert_hf_to_gguf.py in ft-export's tests; here it must
        // load and stay near.
        assert!(
            eq <= 0.15,
            "{name}: q8_0 GGUF in llama.cpp: relative error {eq:e}"
        );
    }
}

#[test]
fn tiny_lora_gguf_in_llama_cpp_equals_merged() {
    let Some(llama) = llama_cpp("tiny_lora_gguf_in_llama_cpp_equals_merged") else {
        return;
    };
    let device = Device::flex();
    for name in ["llama", "qwen2"] {
        let base = model_dir(name);
        let adapter = root().join("tests/fixtures/adapters").join(name);
        let out = tempfile::tempdir().unwrap();
        let merged = out.path().join("merged");
        merge_f32(base.path(), &adapter, &merged);
        let base_gguf = export_tiny(base.path(), &out.path().join("base.gguf"), GgufType::F32);
        let merged_gguf = export_tiny(&merged, &out.path().join("merged.gguf"), GgufType::F32);
        let lora_gguf = export_lora_gguf(&LoraExportOptions {
            adapter_dir: adapter.clone(),
            base_model_dir: base.path().to_path_buf(),
            output: out.path().join("lora.gguf"),
            gguf: GgufType::F32,
            name: None,
        })
        .unwrap()
        .path;

        let mut model = load_model(base.path(), &device, None).unwrap();
        let vocab = model.spec.vocab_size;
        let seqs = sequences(vocab);
        let plain = ft_logits(&model, &seqs, &device);
        load_peft(&mut model, &adapter, &device).unwrap();
        let ours = ft_logits(&model, &seqs, &device);

        let with_lora = llama.logits(&base_gguf, Some(&lora_gguf), vocab, &seqs);
        let merged_l = llama.logits(&merged_gguf, None, vocab, &seqs);
        let e_lora = rel_err(&with_lora, &merged_l);
        let e_ft = rel_err(&merged_l, &ours);
        let effect = rel_err(&plain, &ours);
        eprintln!(
            "{name}: llama.cpp base+LoRA GGUF vs merged GGUF {e_lora:.2e}; merged GGUF vs ft base+adapter {e_ft:.2e}; the adapter moves the logits by {effect:.2e}"
        );
        assert!(effect > 1e-2, "{name}: the adapter fixture has no effect");
        assert!(e_lora <= 1e-4, "{name}: LoRA GGUF vs merged: {e_lora:e}");
        assert!(e_ft <= 1e-4, "{name}: merged GGUF vs ft: {e_ft:e}");
    }
}

/// llama.cpp's smollm3 graph makes every 4th layer NoPE; a SmolLM3 with
/// another layout is refused by the export, naming the reason.
#[test]
fn smollm3_export_refuses_a_nope_layout_llama_cpp_cannot_run() {
    let dir = model_dir("smollm3");
    let cfg_path = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["no_rope_layers"] = serde_json::json!([1, 0, 1, 0]);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut opts = ExportOptions::new(dir.path(), out.path().join("x.gguf"), GgufType::F32);
    opts.tokenizer_pre = Some("gpt-2".into());
    let e = export_gguf(&opts).unwrap_err().to_string();
    assert!(e.contains("not every 4th layer"), "{e}");
    assert!(!out.path().join("x.gguf").exists());
}

/// ft's merged model (f32) gives the logits of base + adapter unmerged
/// (issue: merge fidelity), for the PEFT adapter fixtures.
#[test]
fn merged_logits_equal_base_plus_adapter() {
    let device = Device::flex();
    for name in ["llama", "llama_rslora", "qwen2"] {
        let adapter = root().join("tests/fixtures/adapters").join(name);
        let base_name = if name == "qwen2" { "qwen2" } else { "llama" };
        let base = model_dir(base_name);
        let out = tempfile::tempdir().unwrap();
        let merged = out.path().join("merged");
        merge_f32(base.path(), &adapter, &merged);
        let mut model = load_model(base.path(), &device, None).unwrap();
        let seqs = sequences(model.spec.vocab_size);
        let plain = ft_logits(&model, &seqs, &device);
        load_peft(&mut model, &adapter, &device).unwrap();
        let unmerged = ft_logits(&model, &seqs, &device);
        let merged_model = load_model(&merged, &device, None).unwrap();
        let m = ft_logits(&merged_model, &seqs, &device);
        let e = rel_err(&m, &unmerged);
        let effect = rel_err(&plain, &unmerged);
        eprintln!("{name}: merged vs base+adapter {e:.2e} (adapter effect {effect:.2e})");
        assert!(effect > 1e-2, "{name}: the adapter fixture has no effect");
        assert!(e <= 1e-4, "{name}: merged vs base+adapter: {e:e}");
    }
}

/// SmolLM2-135M-Instruct with a random rank-8 adapter on q/v/down.
#[test]
fn smollm2_exports_and_lora_in_llama_cpp() {
    let test = "smollm2_exports_and_lora_in_llama_cpp";
    let wheel_gguf = root().join("examples/models/smollm2-135m-instruct.gguf");
    if !wheel_gguf.is_file() {
        eprintln!(
            "SKIPPED {test}: {} is absent (run scripts/fetch-smollm2.sh)",
            wheel_gguf.display()
        );
        return;
    }
    let Some(llama) = llama_cpp(test) else {
        return;
    };
    let device = Device::flex();
    let out = tempfile::tempdir().unwrap();

    // The model with a LoRA attached (saved in PEFT format by ft), first as
    // initialised (B = 0), then with random B.
    let mut model = load_model(&wheel_gguf, &device, None).unwrap();
    let spec = LoraSpec {
        r: 8,
        alpha: 16.0,
        dropout: 0.0,
        use_rslora: false,
        init: LoraInit::Kaiming,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
    };
    attach_lora(&mut model, &spec, 7, &device);
    // B is still zero: `model` is the real SmolLM2-135M-Instruct. Saved
    // and merged as it is, that gives the base as an f32 HF dir to export.
    let zero_adapter = out.path().join("zero_adapter");
    std::fs::create_dir_all(&zero_adapter).unwrap();
    save_peft(&model, &spec, "smollm2-135m-instruct", &zero_adapter).unwrap();
    let base = out.path().join("base");
    merge_f32(&wheel_gguf, &zero_adapter, &base);
    let tok = tokenizers::Tokenizer::from_file(base.join("tokenizer.json")).unwrap();
    let vocab = model.spec.vocab_size;

    // ft's greedy answers (24 tokens) to 16 fixed chat prompts in SmolLM2's
    // own chat format, the way Ollama users will query the export: the
    // q8_0 export should pick the same tokens along them. (All 40 questions
    // × 32 tokens: llama.cpp q8_0 vs ft 1227/1280; ft's own forward on the
    // q8_0 weights vs ft 1251/1280; takes 6 minutes in a debug build.)
    let questions = [
        "What is the capital of France?",
        "How many legs does a spider have?",
        "Name the three primary colors.",
        "Write a Python function that adds two numbers.",
        "Who wrote Romeo and Juliet?",
        "What is the largest planet in the solar system?",
        "What is water made of?",
        "Give me a recipe for pancakes.",
        "Why is the sky blue?",
        "Translate 'good morning' into Spanish.",
        "What is 12 times 7?",
        "Explain photosynthesis in one sentence.",
        "List three fruits that are red.",
        "What does a CPU do?",
        "How do I boil an egg?",
        "Who painted the Mona Lisa?",
        "What is the boiling point of water in Fahrenheit?",
        "Suggest a name for a pet goldfish.",
        "What is the difference between weather and climate?",
        "Write a haiku about the ocean.",
        "How many days are there in a leap year?",
        "What is the tallest mountain on Earth?",
        "Explain what a black hole is to a child.",
        "What language is spoken in Brazil?",
        "Give me two tips for better sleep.",
        "What is the chemical symbol for gold?",
        "How does a rainbow form?",
        "Write a short greeting for a birthday card.",
        "What is the square root of 81?",
        "Who was the first person to walk on the Moon?",
        "Name a famous composer of classical music.",
        "What are the three states of matter?",
        "How do bees make honey?",
        "What is the main ingredient of guacamole?",
        "Describe a cat in three words.",
        "What year did World War II end?",
        "Why do leaves change color in autumn?",
        "What is a prime number?",
        "How can I save money on groceries?",
        "What is the speed of light?",
    ];
    let prompts: Vec<String> = questions[..16]
        .iter()
        .map(|q| {
            format!(
                "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by \
                 Hugging Face<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
            )
        })
        .collect();
    let greedy = ft_model::GenerateOptions {
        max_new_tokens: 24,
        ..ft_model::GenerateOptions::default()
    };
    let paths: Vec<(Vec<u32>, usize)> = prompts
        .iter()
        .map(|p| {
            let mut ids = tok.encode(p.as_str(), false).unwrap().get_ids().to_vec();
            let n = ids.len();
            ids.extend(
                ft_model::generate(&model, &ids, &greedy, &mut |_| {})
                    .unwrap()
                    .tokens,
            );
            (ids, n)
        })
        .collect();
    let path_seqs: Vec<Vec<u32>> = paths.iter().map(|(s, _)| s.clone()).collect();
    let ours_paths = ft_logits(&model, &path_seqs, &device);

    // Now a random adapter (B nonzero so that it changes the model).
    let mut values = BTreeMap::new();
    let mut x: u32 = 12345;
    for (name, t) in lora_params(&model) {
        if name.ends_with("lora_B.weight") {
            let [o, r] = t.dims();
            let v: Vec<f32> = (0..o * r)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.1
                })
                .collect();
            values.insert(
                name,
                Tensor::<2>::from_data(TensorData::new(v, [o, r]), &device),
            );
        }
    }
    set_lora_params(&mut model, &values, &device);
    let adapter = out.path().join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    save_peft(&model, &spec, "smollm2-135m-instruct", &adapter).unwrap();

    let merged = out.path().join("merged");
    merge_f32(&wheel_gguf, &adapter, &merged);
    let texts = [
        "What is the capital of France? The capital of France is Paris, a city on the Seine.",
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)",
        "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun.",
        "Water boils at 100 degrees Celsius at sea level, and it freezes at 0 degrees.",
        "Once upon a time there was a little girl who lived in a village near the forest.",
        "To make a cup of tea, boil water, add a tea bag, wait three minutes and add milk.",
        "The planets of the solar system are Mercury, Venus, Earth, Mars, Jupiter and Saturn.",
        "In 1969, Neil Armstrong became the first person to walk on the surface of the Moon.",
    ];
    let seqs: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tok.encode(*t, false).unwrap().get_ids().to_vec())
        .collect();
    let ours = ft_logits(&model, &seqs, &device);

    drop(model);

    let f32_gguf = export(&merged, &out.path().join("f32.gguf"), GgufType::F32);
    let e = rel_err(&llama.logits(&f32_gguf, None, vocab, &seqs), &ours);
    std::fs::remove_file(&f32_gguf).unwrap();
    let q8 = export(&base, &out.path().join("q8.gguf"), GgufType::Q8_0);
    let q8_logits = llama.logits(&q8, None, vocab, &path_seqs);
    // ft's forward on the q8_0 file's weights (dequantized): what the
    // quantized weights alone change, apart from llama.cpp's 8-bit
    // activations.
    let ft_q8 = {
        let m = load_model(&q8, &device, None).unwrap();
        ft_logits(&m, &path_seqs, &device)
    };
    // One pass over ft's greedy paths: llama.cpp q8_0 vs ft f32 (with the
    // disagreements' gaps: ft's logit of its token − ft's logit of
    // llama.cpp's), ft on the q8_0 weights vs ft f32 and vs llama.cpp.
    let (mut q8_same, mut n_path, mut gaps) = (0, 0, Vec::new());
    let (mut w_same, mut rt_same) = (0, 0);
    for ((((ids, n), l), o), f) in paths.iter().zip(&q8_logits).zip(&ours_paths).zip(&ft_q8) {
        for p in n - 1..ids.len() - 1 {
            let row = p * vocab..(p + 1) * vocab;
            let got = argmax(&l[row.clone()]);
            let want = ids[p + 1] as usize;
            if got == want {
                q8_same += 1;
            } else {
                gaps.push(o[p * vocab + want] - o[p * vocab + got]);
            }
            n_path += 1;
            let fa = argmax(&f[row]);
            w_same += usize::from(fa == want);
            rt_same += usize::from(fa == got);
        }
    }
    eprintln!(
        "smollm2 q8_0: ft on the q8_0 weights vs ft f32 top-1 {w_same}; llama.cpp q8_0 vs ft on \
         the same q8_0 weights {rt_same}"
    );
    std::fs::remove_file(&q8).unwrap();
    let q8_merged = export(&merged, &out.path().join("q8_merged.gguf"), GgufType::Q8_0);
    let (q8_all, n) = top1(&llama.logits(&q8_merged, None, vocab, &seqs), &ours, vocab);
    let lora_gguf = export_lora_gguf(&LoraExportOptions {
        adapter_dir: adapter.clone(),
        base_model_dir: merged.clone(),
        output: out.path().join("lora.gguf"),
        gguf: GgufType::F32,
        name: None,
    })
    .unwrap()
    .path;
    let with_lora = llama.logits(&wheel_gguf, Some(&lora_gguf), vocab, &seqs);
    let without = llama.logits(&wheel_gguf, None, vocab, &seqs);
    let (lora_same, _) = top1(&with_lora, &ours, vocab);
    let (plain_same, _) = top1(&without, &ours, vocab);
    eprintln!(
        "smollm2: f32 export vs ft relative error {e:.2e}; q8_0 export: top-1 on ft's greedy \
         continuations {q8_same}/{n_path}, on every position of the texts {q8_all}/{n}; \
         wheel GGUF (Q4_1) + ft LoRA GGUF top-1 {lora_same}/{n}, without the LoRA {plain_same}/{n}"
    );
    eprintln!("smollm2: q8_0 disagreements are near-ties of ft's logits: gaps {gaps:.3?}");
    assert!(e <= 1e-4, "f32 export: relative error {e:e}");
    // q8_0 moves SmolLM2's logits by up to ~1: its weights alone (ft's
    // forward on the dequantized q8_0 weights) flip 2.3% of ft's greedy
    // tokens on the 40-question set, and llama.cpp's 8-bit activations
    // about as many again, so tokens that ft prefers by a hair flip. The
    // file's bytes equal convert_hf_to_gguf.py's (reference tests); a broken
    // export flips confident choices.
    assert!(
        q8_same * 100 >= n_path * 94,
        "q8_0 greedy top-1 {q8_same}/{n_path}"
    );
    assert!(
        gaps.iter().all(|&g| g < 0.75),
        "q8_0 changed a token ft prefers by ≥ 0.75 logits: gaps {gaps:?}"
    );
    assert!(
        lora_same > plain_same,
        "the LoRA GGUF does not move llama.cpp toward ft's adapted model"
    );
}
