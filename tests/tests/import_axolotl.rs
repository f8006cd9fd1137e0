//! `ft import-axolotl` on realistic axolotl configs: the output is a valid ft
//! config (once its data files exist) and every key that was not carried
//! over is named with a reason.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn fixture(name: &str) -> (String, PathBuf) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/axolotl")
        .join(name);
    (std::fs::read_to_string(&p).unwrap(), p)
}

/// Imports, writes the result into a temp dir with empty data files at the
/// config's local dataset paths, and loads it with ft's loader.
fn import_and_load(
    name: &str,
) -> (
    ft_pipeline::import::Imported,
    Result<ft_pipeline::Loaded, ft_core::Problems>,
) {
    let (text, _) = fixture(name);
    let imported = ft_pipeline::import::axolotl(&text, name).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let doc: serde_json::Value = serde_yaml::from_str(&imported.yaml).unwrap();
    for list in ["datasets", "test_datasets"] {
        for d in doc["data"][list].as_array().into_iter().flatten() {
            let p = dir.path().join(d["path"].as_str().unwrap());
            if p.extension().is_some() {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, "{}\n").unwrap();
            } else {
                // A hub dataset id the user downloaded into a directory of files.
                std::fs::create_dir_all(&p).unwrap();
                std::fs::write(p.join("train.jsonl"), "{}\n").unwrap();
            }
        }
    }
    let cfg = dir.path().join("train.yml");
    std::fs::write(&cfg, &imported.yaml).unwrap();
    let loaded = ft_pipeline::load_file(&cfg, &[]);
    (imported, loaded)
}

fn dropped_keys(i: &ft_pipeline::import::Imported) -> Vec<&str> {
    i.dropped.iter().map(|d| d.key.as_str()).collect()
}

#[test]
fn llama3_qlora() {
    let (imp, loaded) = import_and_load("llama3-qlora.yml");
    let cfg = loaded
        .unwrap_or_else(|p| panic!("{}\n{p}", imp.yaml))
        .config;
    assert_eq!(cfg.model.base_model, "NousResearch/Meta-Llama-3-8B");
    assert!(cfg.model.load_in_4bit);
    assert_eq!(cfg.adapter.kind, ft_model::AdapterKind::Qlora);
    assert_eq!(cfg.adapter.lora_r, 32);
    assert_eq!(cfg.adapter.lora_alpha, 16.0);
    assert_eq!(
        cfg.adapter.lora_target_modules,
        vec![ft_model::LoraTarget::AllLinear]
    );
    assert_eq!(cfg.tokenize.sequence_len, 4096);
    assert!(cfg.train.gradient_checkpointing);
    assert_eq!(cfg.train.num_epochs, 4.0);
    assert_eq!(cfg.data.val_set_size.0, 0.05);
    assert_eq!(cfg.model.dtype, ft_model::ComputeDtype::Bf16);
    let d = dropped_keys(&imp);
    for k in [
        "model_type",
        "load_in_8bit",
        "flash_attention",
        "evals_per_epoch",
        "special_tokens",
        "wandb_project",
        "deepspeed",
    ] {
        assert!(d.contains(&k), "{k} should be reported as dropped: {d:?}");
    }
    // Every dropped key has a reason.
    assert!(imp.dropped.iter().all(|d| !d.reason.is_empty()));
}

#[test]
fn qwen3_lora_with_chat_template_datasets() {
    let (imp, loaded) = import_and_load("qwen3-lora-chat.yml");
    let cfg = loaded
        .unwrap_or_else(|p| panic!("{}\n{p}", imp.yaml))
        .config;
    assert_eq!(cfg.adapter.kind, ft_model::AdapterKind::Lora);
    assert!(cfg.adapter.use_rslora);
    assert_eq!(cfg.adapter.targets().len(), 7);
    assert_eq!(
        cfg.template.chat_template,
        ft_template::ChatTemplateChoice::Qwen3
    );
    assert_eq!(
        cfg.template.chat_template_kwargs["enable_thinking"],
        serde_json::json!(false)
    );
    assert_eq!(cfg.train.lr_scheduler, ft_train::LrScheduler::Constant);
    assert_eq!(cfg.train.max_steps, Some(300));
    assert_eq!(cfg.seed, 1234);
    assert_eq!(cfg.data.datasets.len(), 2);
    // ShareGPT becomes chat_template with the from/value mapping.
    match &cfg.data.datasets[1] {
        ft_data::DatasetConfig::ChatTemplate(d) => {
            assert_eq!(d.field_messages, "conversations");
            assert_eq!(d.message_field_role, "from");
            assert_eq!(d.roles["assistant"], vec!["gpt".to_string()]);
        }
        other => panic!("expected chat_template, got {other:?}"),
    }
    let d = dropped_keys(&imp);
    for k in [
        "trust_remote_code",
        "tf32",
        "sdp_attention",
        "gradient_checkpointing_kwargs",
        "datasets[1].ds_type",
    ] {
        assert!(d.contains(&k), "{k} should be reported as dropped: {d:?}");
    }
}

#[test]
fn mistral_with_hub_dataset_and_unknown_format() {
    let (imp, loaded) = import_and_load("mistral-oasst.yml");
    let cfg = loaded
        .unwrap_or_else(|p| panic!("{}\n{p}", imp.yaml))
        .config;
    assert_eq!(
        cfg.data.datasets.len(),
        1,
        "the oasst entry has no ft equivalent"
    );
    assert_eq!(
        cfg.train.resume_from_checkpoint,
        Some(ft_train::ResumeFrom::Latest(true))
    );
    let reasons: Vec<String> = imp
        .dropped
        .iter()
        .map(|d| format!("{}: {}", d.key, d.reason))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("datasets[1]") && r.contains("oasst")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("datasets[0].path") && r.contains("hub dataset")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("optimizer") && r.contains("8bit")),
        "{reasons:?}"
    );
}
