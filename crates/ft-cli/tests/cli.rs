//! The `ft` binary: exit codes and output of each subcommand.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ft"))
        .args(args)
        .output()
        .unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A valid config in a temp dir (HF-dir model with config.json, one dataset).
fn valid_config() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.jsonl"), "{}\n").unwrap();
    std::fs::create_dir(dir.path().join("m")).unwrap();
    std::fs::write(
        dir.path().join("m/config.json"),
        r#"{"model_type":"qwen3","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":128}"#,
    )
    .unwrap();
    let cfg = dir.path().join("train.yml");
    std::fs::write(
        &cfg,
        "output_dir: out\nmodel:\n  base_model: m\ndata:\n  datasets:\n    - {path: d.jsonl, type: chat_template}\nadapter:\n  type: lora\ntrain:\n  max_steps: 1\n",
    )
    .unwrap();
    (dir, cfg)
}

#[test]
fn validate_exit_codes() {
    let (_d, cfg) = valid_config();
    let o = ft(&["validate", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(text(&o).0.starts_with("ok: "));

    let o = ft(&[
        "validate",
        cfg.to_str().unwrap(),
        "--set",
        "adapter.lora_alfa=3",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let (_, err) = text(&o);
    assert!(
        err.contains("unknown key `lora_alfa`") && err.contains("did you mean `lora_alpha`?"),
        "{err}"
    );
    assert!(err.contains("1 problem in"), "{err}");

    let o = ft(&["validate", "/nonexistent/train.yml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o)
            .1
            .contains("/nonexistent/train.yml: `(top level)`: file not found"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn stages_validate_the_config_first() {
    let (_d, cfg) = valid_config();
    // An invalid config is reported (exit 1) before any stage runs.
    for cmd in ["run", "merge-lora", "generate"] {
        let o = ft(&[
            cmd,
            cfg.to_str().unwrap(),
            "--set",
            "train.lr_scheduler=cosin",
        ]);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {:?}", text(&o));
        assert!(text(&o).1.contains("1 problem in"), "{cmd}: {:?}", text(&o));
    }
}

/// `ft generate` end to end on the quickstart config (SmolLM2-135M GGUF,
/// its chat template, greedy): the streamed answer names Paris.
#[test]
fn generate_answers_with_the_base_model() {
    let gguf = repo().join("examples/models/smollm2-135m-instruct.gguf");
    if !gguf.is_file() {
        eprintln!(
            "SKIPPED generate_answers_with_the_base_model: {} is absent (run scripts/fetch-smollm2.sh)",
            gguf.display()
        );
        return;
    }
    let cfg = repo().join("examples/quickstart.yml");
    let o = ft(&[
        "generate",
        cfg.to_str().unwrap(),
        "--prompt",
        "What is the capital of France?",
        "--max-new-tokens",
        "32",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("Paris"), "{out:?} {err}");
    assert!(err.contains("tokens/s"), "{err}");
    // Bad sampling options are refused before loading the model.
    let o = ft(&[
        "generate",
        cfg.to_str().unwrap(),
        "--prompt",
        "x",
        "--top-p",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("top_p"), "{:?}", text(&o));
}

#[test]
fn schema_prints_and_write_matches_checked_in() {
    let o = ft(&["schema"]);
    assert_eq!(o.status.code(), Some(0));
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(printed["title"], "ft config");
    let dir = tempfile::tempdir().unwrap();
    let o = ft(&["schema", "--write", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap();
        let checked_in = std::fs::read_to_string(repo().join("schemas").join(name))
            .unwrap_or_else(|e| panic!("schemas/{name:?}: {e}; run `ft schema --write`"));
        let written = std::fs::read_to_string(&p).unwrap();
        assert!(
            written == checked_in,
            "schemas/{name:?} is stale: run `ft schema --write` and commit it.\n--- written\n{written}\n--- checked in\n{checked_in}"
        );
    }
}

#[test]
fn import_axolotl_prints_config_and_dropped_keys() {
    let src = repo().join("tests/fixtures/axolotl/mistral-oasst.yml");
    let o = ft(&["import-axolotl", src.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let (out, err) = text(&o);
    assert!(out.starts_with("# yaml-language-server: $schema="), "{out}");
    assert!(
        out.contains("base_model: mistralai/Mistral-7B-v0.1"),
        "{out}"
    );
    assert!(
        err.contains("not carried over") && err.contains("flash_attention"),
        "{err}"
    );
}

#[test]
fn examples_validate_through_the_binary() {
    let mut args = vec!["validate".to_string()];
    for e in std::fs::read_dir(repo().join("examples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yml") {
            if p.ends_with("quickstart.yml")
                && !repo()
                    .join("examples/models/smollm2-135m-instruct.gguf")
                    .exists()
            {
                eprintln!("SKIP: quickstart.yml needs scripts/fetch-smollm2.sh");
                continue;
            }
            args.push(p.display().to_string());
        }
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = ft(&refs);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}
