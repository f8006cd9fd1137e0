//! The prepare stage end to end on the committed SmolLM2 tokenizer:
//! cache identity, packing, lengths, and the reported anomalies.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ft_core::stage::Freshness;
use ft_data::DataConfig;
use ft_template::{TemplateConfig, TrainOnEos};
use ft_tokenize::{ExcessLengthStrategy, PrepareStage, TokenizeConfig, TokenizeError};

fn smollm2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizers/smollm2")
}

fn chat_line(pairs: &[(&str, &str)]) -> String {
    let msgs: Vec<serde_json::Value> = pairs
        .iter()
        .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
        .collect();
    format!("{}\n", serde_json::json!({ "messages": msgs }))
}

fn dataset(dir: &Path, n: usize) -> PathBuf {
    let mut s = String::new();
    for i in 0..n {
        let answer = "Arr! ".repeat(1 + i % 7) + &format!("number {i}");
        s.push_str(&chat_line(&[
            ("user", &format!("Question {i}?")),
            ("assistant", &answer),
        ]));
    }
    let p = dir.join("chat.jsonl");
    std::fs::write(&p, s).unwrap();
    p
}

fn data_cfg(file: &str) -> DataConfig {
    serde_json::from_value(
        serde_json::json!({"datasets": [{"type": "chat_template", "path": file}]}),
    )
    .unwrap()
}

fn stage(
    dir: &Path,
    template: TemplateConfig,
    tokenize: TokenizeConfig,
    tok: &Path,
) -> PrepareStage {
    PrepareStage::new(
        data_cfg("chat.jsonl"),
        template,
        tokenize,
        42,
        dir.to_path_buf(),
        tok.to_path_buf(),
    )
}

fn tcfg(seq: usize, packing: bool) -> TokenizeConfig {
    TokenizeConfig {
        sequence_len: seq,
        sample_packing: packing,
        ..TokenizeConfig::default()
    }
}

#[test]
fn cache_reuses_unchanged_and_reruns_on_any_change() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path(), 30);
    let tok = dir.path().join("tok");
    std::fs::create_dir(&tok).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(smollm2().join(f), tok.join(f)).unwrap();
    }
    let base = dir.path().join("prepared");
    let run = |st: &PrepareStage| st.run_or_reuse(&base).unwrap();

    let st = stage(dir.path(), TemplateConfig::default(), tcfg(256, true), &tok);
    let (p, f, _) = run(&st);
    assert_eq!(f, Freshness::Ran);
    let first_dir = p.dir.clone();
    let (p2, f, _) = run(&stage(
        dir.path(),
        TemplateConfig::default(),
        tcfg(256, true),
        &tok,
    ));
    assert_eq!((f, &p2.dir), (Freshness::Reused, &first_dir));
    assert_eq!(p2.train, p.train);

    // A changed dataset byte.
    let ds = dir.path().join("chat.jsonl");
    let text = std::fs::read_to_string(&ds)
        .unwrap()
        .replacen("number 3", "number 4", 1);
    std::fs::write(&ds, text).unwrap();
    let (p3, f, _) = run(&stage(
        dir.path(),
        TemplateConfig::default(),
        tcfg(256, true),
        &tok,
    ));
    assert_eq!(f, Freshness::Ran);
    assert_ne!(p3.dir, first_dir);

    // A changed option.
    let t = TemplateConfig {
        train_on_eos: TrainOnEos::None,
        ..TemplateConfig::default()
    };
    let (p4, f, _) = run(&stage(dir.path(), t, tcfg(256, true), &tok));
    assert_eq!(f, Freshness::Ran);
    assert!(
        p4.train.iter().map(|r| r.trainable()).sum::<usize>()
            < p3.train.iter().map(|r| r.trainable()).sum::<usize>()
    );
    let (_, f, _) = run(&stage(
        dir.path(),
        TemplateConfig::default(),
        tcfg(128, true),
        &tok,
    ));
    assert_eq!(f, Freshness::Ran);

    // A changed tokenizer_config.json byte (the chat template inside it).
    let cfg_path = tok.join("tokenizer_config.json");
    let c = std::fs::read_to_string(&cfg_path)
        .unwrap()
        .replace("named SmolLM", "named SmolLN");
    std::fs::write(&cfg_path, c).unwrap();
    let (p5, f, _) = run(&stage(
        dir.path(),
        TemplateConfig::default(),
        tcfg(256, true),
        &tok,
    ));
    assert_eq!(f, Freshness::Ran);
    assert_ne!(p5.train, p3.train);

    // A damaged shard is reported, not served.
    let shard = p5.dir.join("train-00000.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&shard, bytes).unwrap();
    let e = stage(dir.path(), TemplateConfig::default(), tcfg(256, true), &tok)
        .run_or_reuse(&base)
        .unwrap_err();
    assert!(
        e.to_string().contains("checksum mismatch")
            && e.to_string().contains("delete the directory"),
        "{e}"
    );
}

#[test]
fn packed_loss_mask_equals_unpacked_sample_by_sample() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path(), 40);
    let (packed, _, rp, _) = stage(
        dir.path(),
        TemplateConfig::default(),
        tcfg(256, true),
        &smollm2(),
    )
    .prepare()
    .unwrap();
    let (single, _, ru, _) = stage(
        dir.path(),
        TemplateConfig::default(),
        tcfg(256, false),
        &smollm2(),
    )
    .prepare()
    .unwrap();
    assert!(
        packed.len() < single.len(),
        "{} packed rows vs {} samples",
        packed.len(),
        single.len()
    );
    assert!(rp.train.packing_efficiency > ru.train.packing_efficiency);
    let samples = |rows: &[ft_tokenize::PackedRow]| {
        let mut v: Vec<(Vec<u32>, Vec<bool>)> = rows
            .iter()
            .flat_map(|r| r.samples())
            .map(|(i, m)| (i.to_vec(), m.to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(samples(&packed), samples(&single));
    assert_eq!(rp.train.trainable_tokens, ru.train.trainable_tokens);
    // Positions restart per sample and the boundaries cover every token.
    let row = &packed[0];
    let padded = row.padded(256, 2);
    assert_eq!(padded.cu_seqlens.len(), row.seq_lens.len() + 1);
    assert_eq!(*padded.cu_seqlens.last().unwrap() as usize, row.ids.len());
    let second_start = row.seq_lens[0] as usize;
    assert_eq!(padded.position_ids[second_start], 0);
}

#[test]
fn excess_length_strategies() {
    let dir = tempfile::tempdir().unwrap();
    let long = "word ".repeat(200);
    let mut s = chat_line(&[("user", "short"), ("assistant", "fine")]);
    s.push_str(&chat_line(&[("user", "long"), ("assistant", &long)]));
    std::fs::write(dir.path().join("chat.jsonl"), s).unwrap();
    let cfg = |strategy| TokenizeConfig {
        excess_length_strategy: strategy,
        ..tcfg(64, false)
    };

    let (_, _, r, _) = stage(
        dir.path(),
        TemplateConfig::default(),
        cfg(ExcessLengthStrategy::Drop),
        &smollm2(),
    )
    .prepare()
    .unwrap();
    assert_eq!(r.train.samples_kept, 1);
    let drop = &r.train.dropped[&ft_tokenize::process::DropReason::TooLong];
    assert_eq!(drop.count, 1);
    assert!(
        drop.first
            .as_deref()
            .unwrap()
            .contains("chat.jsonl` line 2"),
        "{drop:?}"
    );

    let (rows, _, r, _) = stage(
        dir.path(),
        TemplateConfig::default(),
        cfg(ExcessLengthStrategy::Truncate),
        &smollm2(),
    )
    .prepare()
    .unwrap();
    assert_eq!((r.train.samples_kept, r.train.truncated), (2, 1));
    assert!(rows.iter().all(|r| r.ids.len() <= 64));

    let e = stage(
        dir.path(),
        TemplateConfig::default(),
        cfg(ExcessLengthStrategy::Raise),
        &smollm2(),
    )
    .prepare()
    .unwrap_err();
    assert!(matches!(e, TokenizeError::TooLong { .. }));
    assert!(
        e.to_string().contains("line 2") && e.to_string().contains("sequence_len"),
        "{e}"
    );
}

#[test]
fn reports_history_rewrites_zero_trainable_and_missing_eot() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = chat_line(&[
        ("user", "a"),
        ("assistant", "b"),
        ("user", "c"),
        ("assistant", "d"),
    ]);
    s.push_str(&chat_line(&[("system", "s"), ("user", "only a question")]));
    std::fs::write(dir.path().join("chat.jsonl"), s).unwrap();

    // Qwen3 drops <think> from earlier turns: reported. SmolLM2's vocabulary
    // has the same <|im_start|>/<|im_end|> special tokens.
    let qwen3: TemplateConfig =
        serde_json::from_value(serde_json::json!({"chat_template": "qwen3"})).unwrap();
    let (rows, _, r, _) = stage(dir.path(), qwen3, tcfg(256, true), &smollm2())
        .prepare()
        .unwrap();
    assert_eq!(r.train.rewrites_history.count, 1);
    assert_eq!(
        r.train.dropped[&ft_tokenize::process::DropReason::NoTrainableTokens].count,
        1
    );
    assert_eq!(r.train.eot_missing.count, 0);
    assert_eq!(rows.iter().map(|r| r.seq_lens.len()).sum::<usize>(), 1);

    // A template with no end-of-turn special token: every trained turn is
    // reported.
    let plain: TemplateConfig = serde_json::from_value(serde_json::json!({
        "chat_template": "jinja",
        "chat_template_jinja": "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    }))
    .unwrap();
    let (_, _, r, _) = stage(dir.path(), plain, tcfg(256, true), &smollm2())
        .prepare()
        .unwrap();
    assert_eq!(r.train.eot_missing.count, 2);
    assert_eq!(r.train.rewrites_history.count, 0);
    let shown = r.to_string();
    assert!(
        shown.contains("do not end with a trained end-of-turn token"),
        "{shown}"
    );
}
