//! End-to-end merges of the PEFT fixtures (tests/fixtures/adapters/, made by
//! tests/fixtures/gen/peft_merge.py) into the tiny models, checked against
//! PEFT's own `merge_and_unload()`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ft_merge::{BaseWeights, MergeDtype, MergeError, MergeOptions, merge_lora};
use safetensors::tensor::{Dtype, TensorView};

mod common;
use common::{F32_TOL, T, load_file, root};

fn model(name: &str) -> PathBuf {
    root().join("tests/fixtures/models").join(name)
}

fn adapter(name: &str) -> PathBuf {
    root().join("tests/fixtures/adapters").join(name)
}

/// Every tensor of an HF model directory, single-file or sharded.
fn load_dir(dir: &Path) -> BTreeMap<String, T> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&index).expect("index")).expect("json");
        let mut files: Vec<&str> = json["weight_map"]
            .as_object()
            .expect("weight_map")
            .values()
            .filter_map(|v| v.as_str())
            .collect();
        files.sort();
        files.dedup();
        let mut all = BTreeMap::new();
        for f in files {
            let part = load_file(&dir.join(f));
            for (k, v) in part {
                assert_eq!(json["weight_map"][&k], f, "index entry of {k}");
                assert!(all.insert(k, v).is_none());
            }
        }
        all
    } else {
        load_file(&dir.join("model.safetensors"))
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn opts(base: &str, adapter_name: &str, out: &Path) -> MergeOptions {
    MergeOptions::new(model(base), adapter(adapter_name), out)
}

/// Merges with f32 output and compares with PEFT's merge: adapted tensors
/// within [`F32_TOL`], every other tensor equal to the base's values.
fn check_against_peft(base: &str, adapter_name: &str, expect_adapted: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("merged");
    let mut o = opts(base, adapter_name, &out);
    o.dtype = MergeDtype::F32;
    let report = merge_lora(&o).expect("merge");
    assert_eq!(report.tensors.len(), expect_adapted);

    let merged = load_dir(&out);
    let peft = load_file(&adapter(adapter_name).join("merged.safetensors"));
    let base_tensors = load_dir(&model(base));
    assert_eq!(peft.len(), expect_adapted);
    assert_eq!(
        merged.keys().collect::<Vec<_>>(),
        base_tensors.keys().collect::<Vec<_>>()
    );
    for (name, ours) in &merged {
        assert_eq!(ours.dtype, Dtype::F32, "{name}");
        let base_t = &base_tensors[name];
        assert_eq!(ours.shape, base_t.shape, "{name}");
        match peft.get(name) {
            Some(reference) => {
                let d = max_abs_diff(&ours.f32(), &reference.f32());
                assert!(d <= F32_TOL, "{name}: max |ours - peft| = {d}");
                // And the merge really changed it.
                assert!(max_abs_diff(&ours.f32(), &base_t.f32()) > 1e-3, "{name}");
            }
            None => assert_eq!(ours.f32(), base_t.f32(), "{name} must be untouched"),
        }
    }
    assert!(report.max_abs_vs_f32_merge() == 0.0);
}

#[test]
fn llama_matches_peft() {
    check_against_peft("llama", "llama", 14);
}

#[test]
fn qwen2_matches_peft() {
    check_against_peft("qwen2", "qwen2", 14);
}

#[test]
fn llama_rslora_matches_peft() {
    check_against_peft("llama", "llama_rslora", 4);
    let s = ft_merge::read_adapter_config(&adapter("llama_rslora").join("adapter_config.json"))
        .expect("config");
    assert!(s.use_rslora);
    assert_eq!(s.scale(), (8.0f64 / 8.0f64.sqrt()) as f32);
}

#[test]
fn auto_dtype_keeps_f16_and_copies_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("merged");
    let report = merge_lora(&opts("qwen2", "qwen2", &out)).expect("merge");
    let merged = load_dir(&out);
    let base = load_dir(&model("qwen2"));
    let peft = load_file(&adapter("qwen2").join("merged.safetensors"));
    for (name, t) in &merged {
        assert_eq!(t.dtype, Dtype::F16, "{name}");
        match peft.get(name) {
            // f16 rounding of the f32 merge: within half an f16 ulp of PEFT's
            // f32 result (plus the f32 tolerance).
            Some(reference) => {
                for (x, y) in t.f32().iter().zip(reference.f32()) {
                    let half_ulp = f32::max(y.abs(), 6.1e-5) * f32::powi(2.0, -11);
                    assert!((x - y).abs() <= half_ulp + F32_TOL, "{name}: {x} vs {y}");
                }
            }
            None => assert_eq!(t.bytes, base[name].bytes, "{name}: byte-for-byte copy"),
        }
    }
    // Biases and norms copied: 26 tensors, 14 adapted.
    assert_eq!(report.copied_tensors, 12);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).expect("config"))
            .expect("json");
    assert_eq!(config["dtype"], "float16");
    assert_eq!(config["model_type"], "qwen2");
    assert!(
        report.max_abs_vs_f32_merge() > 0.0,
        "f16 rounding is reported"
    );
    assert!(report.max_abs_vs_f32_merge() < 1e-2);
}

#[test]
fn bf16_output_sets_config_dtype() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("merged");
    let mut o = opts("llama", "llama", &out);
    o.dtype = MergeDtype::Bf16;
    let report = merge_lora(&o).expect("merge");
    let merged = load_dir(&out);
    assert!(merged.values().all(|t| t.dtype == Dtype::BF16));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).expect("config"))
            .expect("json");
    assert_eq!(config["dtype"], "bfloat16");
    let json = serde_json::to_value(&report).expect("report serialises");
    assert_eq!(json["shards"][0]["file"], "model.safetensors");
    assert_eq!(json["tensors"].as_array().map(Vec::len), Some(14));
}

#[test]
fn sharded_output_equals_single_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let single = tmp.path().join("single");
    let sharded = tmp.path().join("sharded");
    merge_lora(&opts("llama", "llama", &single)).expect("single");
    let mut o = opts("llama", "llama", &sharded);
    let max = 40_000u64;
    o.max_shard_size = max;
    let report = merge_lora(&o).expect("sharded");

    assert!(!single.join("model.safetensors.index.json").exists());
    let n = report.shards.len();
    assert!(n > 3, "{n} shards");
    for (i, s) in report.shards.iter().enumerate() {
        assert_eq!(
            s.file,
            format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
        );
        assert!(out_exists(&sharded, &s.file));
        // Only a tensor larger than the limit may exceed it, alone.
        assert!(s.bytes <= max || s.tensors == 1, "{s:?}");
    }
    assert!(!sharded.join("model.safetensors").exists());
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sharded.join("model.safetensors.index.json")).expect("index"),
    )
    .expect("json");
    assert_eq!(index["metadata"]["total_size"], report.total_size);
    let a = load_dir(&single);
    let b = load_dir(&sharded);
    assert_eq!(a, b);
    assert_eq!(
        report.total_size,
        a.values().map(|t| t.bytes.len() as u64).sum::<u64>()
    );
}

fn out_exists(dir: &Path, file: &str) -> bool {
    dir.join(file).is_file()
}

#[test]
fn sharded_base_is_read() {
    // mistral_sharded has no adapter of its own; a LoRA on q_proj of layer 0
    // built here (shapes from the base) exercises the index reader.
    let tmp = tempfile::tempdir().expect("tempdir");
    let ad = tmp.path().join("ad");
    let cfg = adapter_config(&[]);
    write_adapter(
        &ad,
        &cfg,
        &[
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                vec![4, 64],
            ),
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                vec![64, 4],
            ),
        ],
    );
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    merge_lora(&MergeOptions::new(model("mistral_sharded"), &ad, &a)).expect("sharded base");
    merge_lora(&MergeOptions::new(model("mistral"), &ad, &b)).expect("single base");
    assert_eq!(load_dir(&a), load_dir(&b));
}

#[test]
fn default_infix_keys_are_accepted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ad = tmp.path().join("ad");
    std::fs::create_dir_all(&ad).expect("mkdir");
    std::fs::copy(
        adapter("llama").join("adapter_config.json"),
        ad.join("adapter_config.json"),
    )
    .expect("copy");
    let tensors = load_file(&adapter("llama").join("adapter_model.safetensors"));
    let renamed: Vec<(String, T)> = tensors
        .into_iter()
        .map(|(k, v)| {
            (
                k.replace(".lora_A.weight", ".lora_A.default.weight")
                    .replace(".lora_B.weight", ".lora_B.default.weight"),
                v,
            )
        })
        .collect();
    save(&ad.join("adapter_model.safetensors"), &renamed);
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    merge_lora(&MergeOptions::new(model("llama"), &ad, &a)).expect("infix form");
    merge_lora(&opts("llama", "llama", &b)).expect("plain form");
    assert_eq!(load_dir(&a), load_dir(&b));
}

#[test]
fn dequantized_base_adds_to_the_nf4_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("merged");
    let mut o = opts("llama", "llama_rslora", &out);
    o.dtype = MergeDtype::F32;
    o.base_weights = BaseWeights::Dequantized { double_quant: true };
    let report = merge_lora(&o).expect("merge");
    // All 14 projections are NF4 round-tripped; 4 of them are adapted.
    assert_eq!(report.tensors.len(), 14);
    assert_eq!(report.tensors.iter().filter(|t| t.adapted).count(), 4);
    let merged = load_dir(&out);
    let base = load_dir(&model("llama"));
    let peft = load_file(&adapter("llama_rslora").join("merged.safetensors"));
    for t in &report.tensors {
        let w = base[&t.name].f32();
        let q = ft_kernels::nf4::Nf4Tensor::quantize(&w, &t.shape, 64)
            .expect("nf4")
            .with_double_quant()
            .dequantize();
        // merged = nf4(W) + (PEFT merge − W).
        let expected: Vec<f32> = match peft.get(&t.name) {
            Some(p) => q
                .iter()
                .zip(p.f32())
                .zip(&w)
                .map(|((q, p), w)| q + (p - w))
                .collect(),
            None => q.clone(),
        };
        let d = max_abs_diff(&merged[&t.name].f32(), &expected);
        assert!(d <= 1e-5, "{}: {d}", t.name);
        let dq = t.max_abs_dequantized_vs_original.expect("reported");
        let nf4_err = max_abs_diff(&q, &w);
        assert!(
            dq > 0.0 && (dq - nf4_err).abs() <= 1e-5,
            "{}: {dq} vs {nf4_err}",
            t.name
        );
        assert!((t.max_abs_vs_f32_merge - dq).abs() <= 1e-6);
    }
    // Norms and embeddings are not quantized by QLoRA: unchanged.
    assert_eq!(
        merged["model.embed_tokens.weight"],
        base["model.embed_tokens.weight"]
    );
}

#[test]
fn extra_files_adapter_template_wins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("base");
    let ad = tmp.path().join("ad");
    copy_dir(&model("llama"), &base);
    copy_dir(&adapter("llama"), &ad);
    std::fs::write(
        base.join("generation_config.json"),
        "{\"do_sample\": false}\n",
    )
    .expect("w");
    std::fs::write(base.join("tokenizer.json"), "{\"base\": true}").expect("w");
    std::fs::write(base.join("chat_template.jinja"), "BASE").expect("w");
    std::fs::write(ad.join("chat_template.jinja"), "TRAINED").expect("w");
    let out = tmp.path().join("out");
    let report = merge_lora(&MergeOptions::new(&base, &ad, &out)).expect("merge");
    let read = |n: &str| std::fs::read_to_string(out.join(n)).expect(n);
    assert_eq!(read("chat_template.jinja"), "TRAINED");
    assert_eq!(read("tokenizer.json"), "{\"base\": true}");
    assert_eq!(read("generation_config.json"), "{\"do_sample\": false}\n");
    assert!(!out.join("special_tokens_map.json").exists());
    assert!(report.files.contains(&"chat_template.jinja".to_string()));
    // No temporary directory is left beside the output.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".ft-tmp-"))
        .collect();
    assert!(leftovers.is_empty());
}

// ---- errors ----------------------------------------------------------------

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

fn save(path: &Path, tensors: &[(String, T)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.bytes).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("save");
}

fn adapter_config(extra: &[(&str, serde_json::Value)]) -> serde_json::Value {
    let mut cfg = serde_json::json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8,
        "lora_dropout": 0.0, "bias": "none", "use_rslora": false, "use_dora": false,
        "fan_in_fan_out": false, "modules_to_save": null,
        "target_modules": ["q_proj"],
    });
    for (k, v) in extra {
        cfg[*k] = v.clone();
    }
    cfg
}

/// Writes an adapter with f32 tensors of the given shapes (values 0.01·i).
fn write_adapter(dir: &Path, cfg: &serde_json::Value, tensors: &[(&str, Vec<usize>)]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).expect("cfg");
    let ts: Vec<(String, T)> = tensors
        .iter()
        .map(|(k, shape)| {
            let n: usize = shape.iter().product();
            let bytes = (0..n)
                .flat_map(|i| (0.01 * (i % 17) as f32).to_le_bytes())
                .collect();
            (
                k.to_string(),
                T {
                    dtype: Dtype::F32,
                    shape: shape.clone(),
                    bytes,
                },
            )
        })
        .collect();
    save(&dir.join("adapter_model.safetensors"), &ts);
}

const Q: &str = "base_model.model.model.layers.0.self_attn.q_proj";

/// Merges a hand-built adapter into the llama fixture and returns the error.
fn merge_err(cfg: serde_json::Value, tensors: &[(&str, Vec<usize>)]) -> (MergeError, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ad = tmp.path().join("ad");
    write_adapter(&ad, &cfg, tensors);
    let out = tmp.path().join("out");
    let err = merge_lora(&MergeOptions::new(model("llama"), &ad, &out)).expect_err("must fail");
    assert!(!out.exists(), "nothing is written on error");
    (err, tmp.keep())
}

fn q_pair(r_a: usize, r_b: usize, inn: usize) -> Vec<(String, Vec<usize>)> {
    vec![
        (format!("{Q}.lora_A.weight"), vec![r_a, inn]),
        (format!("{Q}.lora_B.weight"), vec![64, r_b]),
    ]
}

fn refs(v: &[(String, Vec<usize>)]) -> Vec<(&str, Vec<usize>)> {
    v.iter().map(|(k, s)| (k.as_str(), s.clone())).collect()
}

#[test]
fn error_module_not_in_base() {
    let ts = [
        (
            "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight",
            vec![4, 64],
        ),
        (
            "base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight",
            vec![64, 4],
        ),
    ];
    let (err, _) = merge_err(adapter_config(&[]), &ts);
    let msg = err.to_string();
    assert!(matches!(err, MergeError::ModuleNotInBase { .. }), "{msg}");
    assert!(
        msg.contains("model.layers.7.self_attn.q_proj.weight"),
        "{msg}"
    );
    assert!(msg.contains("trained on"), "{msg}");
}

#[test]
fn error_shape_mismatch() {
    let (err, _) = merge_err(adapter_config(&[]), &refs(&q_pair(4, 4, 32)));
    let msg = err.to_string();
    assert!(matches!(err, MergeError::ShapeMismatch { .. }), "{msg}");
    assert!(
        msg.contains("model.layers.0.self_attn.q_proj.weight"),
        "{msg}"
    );
    assert!(
        msg.contains("[64, 64]") && msg.contains("[64, 32]"),
        "{msg}"
    );
}

#[test]
fn error_rank_mismatch() {
    let (err, _) = merge_err(adapter_config(&[]), &refs(&q_pair(4, 3, 64)));
    let msg = err.to_string();
    assert!(matches!(err, MergeError::RankMismatch { .. }), "{msg}");
    assert!(msg.contains("[4, 64]") && msg.contains("[64, 3]"), "{msg}");
    // A and B agree with each other but not with the config's r.
    let (err, _) = merge_err(adapter_config(&[]), &refs(&q_pair(8, 8, 64)));
    assert!(
        matches!(err, MergeError::RankMismatch { config_r: 4, .. }),
        "{err}"
    );
}

#[test]
fn error_missing_lora_half() {
    let ts = q_pair(4, 4, 64);
    let (err, _) = merge_err(adapter_config(&[]), &refs(&ts[..1]));
    assert!(
        matches!(
            err,
            MergeError::MissingLoraHalf {
                missing: "lora_B",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn error_unsupported_peft_options() {
    let ts = q_pair(4, 4, 64);
    for (key, value) in [
        ("use_dora", serde_json::json!(true)),
        ("bias", serde_json::json!("lora_only")),
        ("fan_in_fan_out", serde_json::json!(true)),
        ("modules_to_save", serde_json::json!(["lm_head"])),
        ("rank_pattern", serde_json::json!({"q_proj": 8})),
    ] {
        let (err, _) = merge_err(adapter_config(&[(key, value)]), &refs(&ts));
        let msg = err.to_string();
        assert!(
            matches!(&err, MergeError::UnsupportedPeftOption { option, .. } if *option == key),
            "{key}: {msg}"
        );
        assert!(msg.contains("unsupported PEFT option"), "{msg}");
        assert!(msg.contains("adapter_config.json"), "{msg}");
    }
}

#[test]
fn error_dora_magnitude_tensor() {
    let mut ts = q_pair(4, 4, 64);
    ts.push((format!("{Q}.lora_magnitude_vector"), vec![64]));
    let (err, _) = merge_err(adapter_config(&[]), &refs(&ts));
    assert!(
        matches!(err, MergeError::UnexpectedAdapterTensor { .. }),
        "{err}"
    );
}

#[test]
fn error_missing_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    // No adapter config.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let err = merge_lora(&MergeOptions::new(model("llama"), &empty, &out)).expect_err("fail");
    assert!(
        matches!(
            &err,
            MergeError::MissingFile {
                what: "adapter config",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("adapter_config.json"));
    // No adapter weights.
    std::fs::copy(
        adapter("llama").join("adapter_config.json"),
        empty.join("adapter_config.json"),
    )
    .expect("copy");
    let err = merge_lora(&MergeOptions::new(model("llama"), &empty, &out)).expect_err("fail");
    assert!(
        matches!(
            &err,
            MergeError::MissingFile {
                what: "adapter weights",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("adapter_model.safetensors"));
    // Base without config.json.
    let base = tmp.path().join("base");
    std::fs::create_dir_all(&base).expect("mkdir");
    let err = merge_lora(&MergeOptions::new(&base, adapter("llama"), &out)).expect_err("fail");
    assert!(
        matches!(
            &err,
            MergeError::MissingFile {
                what: "base model config",
                ..
            }
        ),
        "{err}"
    );
    // Base without weights.
    std::fs::copy(model("llama").join("config.json"), base.join("config.json")).expect("copy");
    let err = merge_lora(&MergeOptions::new(&base, adapter("llama"), &out)).expect_err("fail");
    assert!(
        matches!(
            &err,
            MergeError::MissingFile {
                what: "base model weights",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("model.safetensors"));
    // An index naming a missing shard.
    std::fs::write(
        base.join("model.safetensors.index.json"),
        r#"{"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors"}}"#,
    )
    .expect("w");
    let err = merge_lora(&MergeOptions::new(&base, adapter("llama"), &out)).expect_err("fail");
    assert!(
        matches!(
            &err,
            MergeError::MissingFile {
                what: "base model shard",
                ..
            }
        ),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn error_output_overlaps_input() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("base");
    copy_dir(&model("llama"), &base);
    let err = merge_lora(&MergeOptions::new(&base, adapter("llama"), &base)).expect_err("fail");
    assert!(
        matches!(err, MergeError::OutputOverlapsInput { .. }),
        "{err}"
    );
    assert!(base.join("model.safetensors").is_file());
}
