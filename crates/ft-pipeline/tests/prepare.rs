//! `ft preprocess` through the real config loader on the shipped examples.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ft_core::stage::Freshness;
use ft_pipeline::load_file;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn quickstart_preprocesses_with_the_gguf_tokenizer_as_with_the_hf_one() {
    let cfg = repo().join("examples/quickstart.yml");
    if !repo()
        .join("examples/models/smollm2-135m-instruct.gguf")
        .exists()
    {
        eprintln!("SKIP: quickstart needs scripts/fetch-smollm2.sh (model not fetched)");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let set_out = format!("output_dir={}", out.path().display());

    // Without `model.tokenizer` the tokenizer is rebuilt from the GGUF's
    // metadata; the rows must equal those of SmolLM2's HF tokenizer.json.
    let from_gguf = tempfile::tempdir().unwrap();
    let loaded = load_file(
        &cfg,
        &[format!("output_dir={}", from_gguf.path().display())],
    )
    .unwrap();
    let (gguf_rows, _, _) = ft_pipeline::prepare::preprocess(&loaded).unwrap();
    assert!(
        from_gguf
            .path()
            .join("tokenizer-from-gguf/tokenizer.json")
            .is_file()
    );

    let set = [
        set_out,
        "model.tokenizer=../tests/fixtures/tokenizers/smollm2".to_string(),
    ];
    let loaded = load_file(&cfg, &set).unwrap();
    let (prepared, fresh, report) = ft_pipeline::prepare::preprocess(&loaded).unwrap();
    assert_eq!(fresh, Freshness::Ran);
    assert_eq!(prepared.train, gguf_rows.train);
    assert_eq!(prepared.eval, gguf_rows.eval);
    assert!(prepared.dir.starts_with(out.path().join("prepared")));
    assert_eq!(
        report.train.samples_read + report.eval.samples_read,
        report.train.samples_kept + report.eval.samples_kept
    );
    assert!(
        report.train.samples_kept > 100 && report.eval.samples_kept > 10,
        "{report}"
    );
    assert!(
        report.train.trainable_tokens > 0 && report.train.trainable_tokens < report.train.tokens
    );
    assert!(report.train.packing_efficiency > 0.5, "{report}");
    assert!(prepared.train.iter().all(|r| r.ids.len() <= 256));

    let (_, fresh, _) = ft_pipeline::prepare::preprocess(&loaded).unwrap();
    assert_eq!(fresh, Freshness::Reused);
}
