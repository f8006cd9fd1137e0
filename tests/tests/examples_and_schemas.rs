//! The checked-in schemas are fresh, and every example is valid: against the
//! checked-in JSON Schema with an independent validator (the `jsonschema`
//! crate on the file in `schemas/`, not ft's loader), and through ft's own
//! loader (`ft validate` runs the same function; the CLI test runs the
//! binary).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "expected the example configs, found {v:?}");
    v
}

#[test]
fn checked_in_schemas_are_fresh() {
    let dir = root().join("schemas");
    if std::env::var_os("FT_UPDATE_SCHEMAS").is_some() {
        ft_pipeline::schema::write_all(&dir).unwrap();
    }
    let stale = ft_pipeline::schema::stale(&dir);
    assert!(
        stale.is_empty(),
        "schemas/ is stale: {stale:?}; run `FT_UPDATE_SCHEMAS=1 cargo test -p ft-tests --test examples_and_schemas` or `ft schema --write`"
    );
}

#[test]
fn examples_validate_against_the_checked_in_schema() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/ft.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for ex in examples() {
        let text = std::fs::read_to_string(&ex).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/ft.schema.json"),
            "{} lacks the schema line for editors",
            ex.display()
        );
        let doc: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", ex.display());
    }
}

#[test]
fn the_schema_rejects_what_the_loader_rejects() {
    // The independent validator must not be vacuous: an unknown key fails it.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("schemas/ft.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut doc: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("examples/qwen3-lora-sharegpt.yml")).unwrap(),
    )
    .unwrap();
    doc["adapter"]["lora_alfa"] = serde_json::json!(16);
    assert!(!validator.is_valid(&doc));
}

#[test]
fn examples_load_through_ft() {
    for ex in examples() {
        match ft_pipeline::load_file(&ex, &[]) {
            Ok(_) => {}
            Err(problems) => {
                // The quickstart's model is fetched from PyPI by
                // scripts/fetch-smollm2.sh; without it exactly that one
                // problem is allowed.
                let only_model =
                    problems.len() == 1 && problems.0[0].path.to_string() == "model.base_model";
                let quick = ex.file_name().is_some_and(|n| n == "quickstart.yml");
                if quick
                    && only_model
                    && !root()
                        .join("examples/models/smollm2-135m-instruct.gguf")
                        .exists()
                {
                    eprintln!(
                        "SKIP: {} needs scripts/fetch-smollm2.sh (model not fetched)",
                        ex.display()
                    );
                    continue;
                }
                panic!("{}:\n{problems}", ex.display());
            }
        }
    }
}
