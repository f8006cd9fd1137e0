//! Merging into a GGUF base model.
//!
//! * `tests/fixtures/gguf/tiny_llama.gguf` is the tiny llama fixture written
//!   the way llama.cpp's converter writes it (f32, q/k rows permuted, no
//!   `output.weight`; `tests/fixtures/gen/gguf_tiny.py`). Merging PEFT's
//!   adapter into it must give PEFT's merge of the HF model.
//! * The real SmolLM2-135M-Instruct GGUF (Q4_1/Q8_0,
//!   `scripts/fetch-smollm2.sh`) with a random r=2 adapter: a smoke test,
//!   skipped with a message when the file is absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ft_merge::{BaseWeights, MergeDtype, MergeError, MergeOptions, merge_lora};
use half::bf16;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;

mod common;
use common::{F32_TOL, load_file as load, root};

fn tiny_gguf() -> PathBuf {
    root().join("tests/fixtures/gguf/tiny_llama.gguf")
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The config keys a GGUF base must reproduce.
const CONFIG_KEYS: [&str; 15] = [
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "max_position_embeddings",
    "vocab_size",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "dtype",
];

#[test]
fn tiny_gguf_base_matches_peft_and_the_hf_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("merged");
    let adapter = root().join("tests/fixtures/adapters/llama");
    let report = merge_lora(&MergeOptions::new(tiny_gguf(), &adapter, &out)).expect("merge");

    let hf = load(&root().join("tests/fixtures/models/llama/model.safetensors"));
    let peft = load(&adapter.join("merged.safetensors"));
    let merged = load(&out.join("model.safetensors"));
    // Same tensor set as the HF model: no lm_head (tied), nothing extra.
    assert_eq!(
        merged.keys().collect::<Vec<_>>(),
        hf.keys().collect::<Vec<_>>()
    );
    assert!(!merged.contains_key("lm_head.weight"));
    assert_eq!(peft.len(), 14, "7 projections × 2 layers");
    for (name, t) in &merged {
        assert_eq!(t.dtype, Dtype::F32, "{name}: auto keeps an F32 GGUF in f32");
        assert_eq!(t.shape, hf[name].shape, "{name}");
        match peft.get(name) {
            // q/k included: the permutation must have been undone.
            Some(p) => {
                let d = max_abs_diff(&t.f32(), &p.f32());
                assert!(d <= F32_TOL, "{name}: {d} from PEFT's merge");
            }
            None => assert_eq!(t.bytes, hf[name].bytes, "{name} must equal the HF base"),
        }
    }
    // Embedding and 5 norms are stored plainly in F32: copied byte for byte.
    assert_eq!(report.copied_tensors, 6);
    assert_eq!(report.tensors.len(), 14);

    let got = read_json(&out.join("config.json"));
    let want = read_json(&root().join("tests/fixtures/models/llama/config.json"));
    for key in CONFIG_KEYS {
        assert_eq!(got[key], want[key], "config.json `{key}`");
    }
    assert_eq!(got["rope_theta"], want["rope_parameters"]["rope_theta"]);
    assert_eq!(got["rope_parameters"], want["rope_parameters"]);
    assert_eq!(got["torch_dtype"], "float32");
    let generation = read_json(&out.join("generation_config.json"));
    assert_eq!(
        (&generation["bos_token_id"], &generation["eos_token_id"]),
        (&want["bos_token_id"], &want["eos_token_id"])
    );
    // The adapter directory holds no tokenizer files, so none are written.
    assert!(!out.join("tokenizer.json").exists());
    assert_eq!(report.files, ["config.json", "generation_config.json"]);
}

/// An F32 GGUF holds exactly the HF values, so every merge mode must write
/// the same bytes from either base (the NF4 round trip included).
#[test]
fn tiny_gguf_base_equals_hf_base_byte_for_byte() {
    let adapter = root().join("tests/fixtures/adapters/llama");
    let hf_dir = root().join("tests/fixtures/models/llama");
    for (dtype, base_weights) in [
        (MergeDtype::Bf16, BaseWeights::Original),
        (
            MergeDtype::Auto,
            BaseWeights::Dequantized { double_quant: true },
        ),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let run = |base: &Path, out: &str| {
            let mut opts = MergeOptions::new(base, &adapter, tmp.path().join(out));
            opts.dtype = dtype;
            opts.base_weights = base_weights;
            merge_lora(&opts).expect("merge")
        };
        let from_gguf = run(&tiny_gguf(), "gguf");
        let from_hf = run(&hf_dir, "hf");
        assert_eq!(
            std::fs::read(tmp.path().join("gguf/model.safetensors")).expect("gguf out"),
            std::fs::read(tmp.path().join("hf/model.safetensors")).expect("hf out"),
            "{dtype:?} {base_weights:?}"
        );
        assert_eq!(from_gguf.tensors, from_hf.tensors);
        let config = read_json(&tmp.path().join("gguf/config.json"));
        let want = if dtype == MergeDtype::Bf16 {
            "bfloat16"
        } else {
            "float32"
        };
        assert_eq!(config["dtype"], want);
    }
}

#[test]
fn a_file_that_is_not_gguf_is_refused_with_help() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = root().join("tests/fixtures/models/llama/model.safetensors");
    let err = merge_lora(&MergeOptions::new(
        &base,
        root().join("tests/fixtures/adapters/llama"),
        tmp.path().join("out"),
    ))
    .expect_err("a safetensors file is not a base");
    assert!(matches!(err, MergeError::MissingFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains(".gguf") && msg.contains("directory"),
        "{msg}"
    );
}

/// Deterministic values in [-1, 1) (a 64-bit LCG).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// SmolLM2-135M-Instruct (llama arch, 30 layers, hidden 576, 9 heads, 3 kv
/// heads, head_dim 64, tied; Q4_1 matrices, Q8_0 embedding) with a random
/// r=2 adapter on q/v: the merge writes bf16 matrices and f32 norms with
/// the right shapes, and q_proj is the dequantized, un-permuted base plus
/// scale·B·A.
#[test]
fn smollm2_gguf_base_smoke() {
    let gguf = root().join("examples/models/smollm2-135m-instruct.gguf");
    if !gguf.is_file() {
        eprintln!(
            "SKIPPED smollm2_gguf_base_smoke: {} is absent (run scripts/fetch-smollm2.sh)",
            gguf.display()
        );
        return;
    }
    let (layers, hidden, kv) = (30usize, 576usize, 192usize);
    let (r, alpha) = (2usize, 4.0f32);
    let scale = alpha / r as f32;
    let tmp = tempfile::tempdir().expect("tempdir");
    let adapter = tmp.path().join("adapter");
    std::fs::create_dir_all(&adapter).expect("mkdir");
    let config = serde_json::json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
        "lora_dropout": 0.0, "bias": "none", "use_rslora": false, "use_dora": false,
        "fan_in_fan_out": false, "modules_to_save": null,
        "target_modules": ["q_proj", "v_proj"],
    });
    std::fs::write(adapter.join("adapter_config.json"), config.to_string()).expect("config");
    let mut pairs: BTreeMap<String, (Vec<f32>, Vec<f32>, usize)> = BTreeMap::new();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for l in 0..layers {
        for (proj, out) in [("q_proj", hidden), ("v_proj", kv)] {
            let module = format!("model.layers.{l}.self_attn.{proj}");
            let seed = (l * 2 + usize::from(proj == "v_proj")) as u64;
            let a: Vec<f32> = noise(seed, r * hidden).iter().map(|x| x * 0.05).collect();
            let b: Vec<f32> = noise(seed + 1000, out * r)
                .iter()
                .map(|x| x * 0.05)
                .collect();
            let key = format!("base_model.model.{module}");
            tensors.push((
                format!("{key}.lora_A.weight"),
                vec![r, hidden],
                f32_bytes(&a),
            ));
            tensors.push((format!("{key}.lora_B.weight"), vec![out, r], f32_bytes(&b)));
            pairs.insert(format!("{module}.weight"), (a, b, out));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, shape, bytes)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &adapter.join("adapter_model.safetensors"))
        .expect("adapter");

    let out = tmp.path().join("merged");
    let report = merge_lora(&MergeOptions::new(&gguf, &adapter, &out)).expect("merge");
    assert_eq!(report.tensors.len(), 2 * layers);
    assert_eq!(report.shards.len(), 1);

    let merged = load(&out.join("model.safetensors"));
    assert_eq!(merged.len(), 2 + layers * 9, "embed, norm and 9 per layer");
    assert!(!merged.contains_key("lm_head.weight"), "tied embeddings");
    let shape = |n: &str| merged[n].shape.clone();
    assert_eq!(shape("model.embed_tokens.weight"), [49152, hidden]);
    assert_eq!(
        shape("model.layers.0.self_attn.q_proj.weight"),
        [hidden, hidden]
    );
    assert_eq!(
        shape("model.layers.0.self_attn.k_proj.weight"),
        [kv, hidden]
    );
    assert_eq!(
        shape("model.layers.29.self_attn.v_proj.weight"),
        [kv, hidden]
    );
    assert_eq!(shape("model.layers.3.mlp.down_proj.weight"), [hidden, 1536]);
    assert_eq!(merged["model.norm.weight"].dtype, Dtype::F32);
    assert_eq!(
        merged["model.layers.0.input_layernorm.weight"].dtype,
        Dtype::F32
    );
    assert_eq!(merged["model.embed_tokens.weight"].dtype, Dtype::BF16);
    assert_eq!(
        merged["model.layers.7.mlp.up_proj.weight"].dtype,
        Dtype::BF16
    );

    // q_proj = dequant(base), un-permuted, + scale·B·A, rounded once to bf16.
    let view = ft_gguf::HfView::open(&gguf).expect("gguf");
    for l in [0, 17, 29] {
        let name = format!("model.layers.{l}.self_attn.q_proj.weight");
        let (a, b, out_rows) = &pairs[&name];
        let mut want = view.load(&name).expect("base q");
        for o in 0..*out_rows {
            for i in 0..hidden {
                let delta: f32 = (0..r).map(|k| b[o * r + k] * a[k * hidden + i]).sum();
                want[o * hidden + i] += scale * delta;
            }
        }
        let got = merged[&name].f32();
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            // One bf16 rounding (half an ulp: 2^-9 relative), plus f32 slack
            // for the summation order of the rank-2 product.
            let tol = w.abs() * f32::powi(2.0, -8) + 1e-6;
            assert!((g - w).abs() <= tol, "{name}[{j}]: {g} vs {w}");
        }
    }
    // A tensor the adapter does not touch is the base rounded to bf16.
    let name = "model.layers.5.self_attn.k_proj.weight";
    let base: Vec<f32> = view
        .load(name)
        .expect("base k")
        .iter()
        .map(|&x| bf16::from_f32(x).to_f32())
        .collect();
    assert_eq!(merged[name].f32(), base, "{name}");

    let config = read_json(&out.join("config.json"));
    for (key, want) in [
        ("model_type", serde_json::json!("llama")),
        ("architectures", serde_json::json!(["LlamaForCausalLM"])),
        ("hidden_size", serde_json::json!(576)),
        ("intermediate_size", serde_json::json!(1536)),
        ("num_hidden_layers", serde_json::json!(30)),
        ("num_attention_heads", serde_json::json!(9)),
        ("num_key_value_heads", serde_json::json!(3)),
        ("head_dim", serde_json::json!(64)),
        ("vocab_size", serde_json::json!(49152)),
        ("max_position_embeddings", serde_json::json!(8192)),
        ("rms_norm_eps", serde_json::json!(1e-5)),
        ("rope_theta", serde_json::json!(100000.0)),
        ("tie_word_embeddings", serde_json::json!(true)),
        ("bos_token_id", serde_json::json!(1)),
        ("eos_token_id", serde_json::json!(2)),
        ("dtype", serde_json::json!("bfloat16")),
    ] {
        assert_eq!(config[key], want, "config.json `{key}`");
    }
}
