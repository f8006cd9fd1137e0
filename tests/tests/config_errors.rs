//! Bad configs and the exact messages `ft` gives for them.
//!
//! Each case starts from a valid config, breaks it in one way a user would,
//! and asserts the full rendered report: file, line, column, key path,
//! message and help. The same table is in the foundation issue's note.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use ft_pipeline::load_str;

/// A valid config; cases edit it.
const BASE: &str = "\
output_dir: out
model:
  base_model: model
  load_in_4bit: true
data:
  datasets:
    - path: data.jsonl
      type: chat_template
adapter:
  type: qlora
train:
  max_steps: 10
";

/// A temp dir with the files BASE refers to: a dataset and an HF model dir
/// whose config.json allows 2048 tokens of context.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.jsonl"), "{\"messages\": []}\n").unwrap();
    std::fs::create_dir(dir.path().join("model")).unwrap();
    std::fs::write(
        dir.path().join("model/config.json"),
        r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":128,"max_position_embeddings":2048}"#,
    )
    .unwrap();
    dir
}

/// Loads `text` (as `train.yml` in a prepared dir) and returns the report,
/// with the temp dir's path replaced by `<dir>`.
fn report_with(text: &str, set: &[&str]) -> String {
    let dir = workspace();
    let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
    match load_str(text, Path::new("train.yml"), dir.path(), &set) {
        Ok(_) => "OK".to_string(),
        Err(p) => p
            .to_string()
            .replace(&dir.path().display().to_string(), "<dir>"),
    }
}

fn report(text: &str) -> String {
    report_with(text, &[])
}

fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE lacks {from:?}");
    BASE.replacen(from, to, 1)
}

#[test]
fn base_config_is_valid() {
    assert_eq!(report(BASE), "OK");
}

#[test]
fn unknown_key_suggests_the_near_miss() {
    assert_eq!(
        report(&edit("  type: qlora\n", "  type: qlora\n  lora_alfa: 16\n")),
        "error: train.yml:11:3: `adapter.lora_alfa`: unknown key `lora_alfa`\n  help: did you mean `lora_alpha`?"
    );
}

#[test]
fn key_in_the_wrong_section_says_where_it_belongs() {
    assert_eq!(
        report(&format!("{BASE}lora_r: 16\n")),
        "error: train.yml:13:1: `lora_r`: unknown key `lora_r`\n  help: `lora_r` belongs in the `adapter:` section; move it there"
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        report(&edit(
            "  type: qlora\n",
            "  type: qlora\n  lora_r: sixteen\n"
        )),
        "error: train.yml:11:3: `adapter.lora_r`: expected an integer, found a string \"sixteen\""
    );
}

#[test]
fn quoted_number() {
    assert_eq!(
        report(&edit(
            "  max_steps: 10\n",
            "  max_steps: 10\n  learning_rate: \"2e-4\"\n"
        )),
        "error: train.yml:13:3: `train.learning_rate`: expected a number, found a string \"2e-4\"\n  help: write the number without quotes"
    );
}

#[test]
fn out_of_range_value() {
    assert_eq!(
        report(&edit(
            "  type: qlora\n",
            "  type: qlora\n  lora_dropout: 1.5\n"
        )),
        "error: train.yml:11:3: `adapter.lora_dropout`: 1.5 is too large: must be ≤ 0.99\n  help: use a value of at most 0.99"
    );
}

#[test]
fn zero_batch_size() {
    assert_eq!(
        report(&edit(
            "  max_steps: 10\n",
            "  max_steps: 10\n  micro_batch_size: 0\n"
        )),
        "error: train.yml:13:3: `train.micro_batch_size`: 0 is too small: must be ≥ 1\n  help: use a value of at least 1"
    );
}

#[test]
fn missing_required_section() {
    assert_eq!(
        report(&edit("train:\n  max_steps: 10\n", "")),
        "error: train.yml:1:1: `train`: missing required section `train`\n  help: add a `train:` section; `ft schema` lists its keys and examples/quickstart.yml shows one"
    );
}

#[test]
fn missing_required_key_in_a_dataset() {
    assert_eq!(
        report(&edit(
            "    - path: data.jsonl\n      type: chat_template\n",
            "    - type: chat_template\n"
        )),
        "error: train.yml:7:7: `data.datasets[0]`: missing required key `path`\n  help: add `path:` here"
    );
}

#[test]
fn bad_enum_value() {
    assert_eq!(
        report(&edit(
            "  max_steps: 10\n",
            "  max_steps: 10\n  lr_scheduler: cosin\n"
        )),
        "error: train.yml:13:3: `train.lr_scheduler`: \"cosin\" is not one of: constant, linear, cosine\n  help: did you mean `cosine`?"
    );
}

#[test]
fn bad_dataset_type() {
    assert_eq!(
        report(&edit(
            "      type: chat_template\n",
            "      type: chat_templat\n"
        )),
        "error: train.yml:8:7: `data.datasets[0].type`: \"chat_templat\" is not one of: chat_template, alpaca, completion, input_output\n  help: did you mean `chat_template`?"
    );
}

#[test]
fn dataset_field_of_another_type() {
    assert_eq!(
        report(&edit(
            "      type: chat_template\n",
            "      type: completion\n      field_messages: msgs\n"
        )),
        "error: train.yml:9:7: `data.datasets[0].field_messages`: unknown key `field_messages`\n  help: `field_messages` is a key of `type: chat_template` entries, not `type: completion`"
    );
}

#[test]
fn yaml_syntax_error() {
    assert_eq!(
        report(&edit("  max_steps: 10\n", "  max_steps: [10\n")),
        "error: train.yml:13:1: `(top level)`: did not find expected ',' or ']'\n  help: fix the YAML syntax (indent with spaces, `key: value`, lists with `- `); `ft schema` lists the keys"
    );
}

#[test]
fn duplicate_key() {
    assert_eq!(
        report(&edit(
            "  max_steps: 10\n",
            "  max_steps: 10\n  max_steps: 20\n"
        )),
        "error: train.yml:13:3: `train.max_steps`: `max_steps` is given twice\n  help: remove one of them (other YAML readers silently keep the last one)"
    );
}

#[test]
fn qlora_needs_a_4bit_base() {
    assert_eq!(
        report(&edit("  load_in_4bit: true\n", "  load_in_4bit: false\n")),
        "error: train.yml:10:3: `adapter.type`: `qlora` trains over a 4-bit base, but `model.load_in_4bit` is false\n  help: set `model.load_in_4bit: true`, or use `adapter.type: lora` for a full-precision base"
    );
}

#[test]
fn warmup_given_twice() {
    assert_eq!(
        report(&edit(
            "  max_steps: 10\n",
            "  max_steps: 10\n  warmup_steps: 5\n  warmup_ratio: 0.1\n"
        )),
        "error: train.yml:14:3: `train.warmup_ratio`: both `warmup_steps` and `warmup_ratio` are set\n  help: keep one of them"
    );
}

#[test]
fn eval_steps_without_validation_data() {
    assert_eq!(
        report(&edit(
            "  max_steps: 10\n",
            "  max_steps: 10\n  eval_steps: 5\n"
        )),
        "error: train.yml:13:3: `train.eval_steps`: evaluation is scheduled but there is no validation data\n  help: set `data.val_set_size` (e.g. 0.05) or `data.test_datasets`, or remove `eval_steps`"
    );
}

#[test]
fn missing_dataset_file() {
    assert_eq!(
        report(&edit("data.jsonl", "nope.jsonl")),
        "error: train.yml:7:7: `data.datasets[0].path`: `<dir>/nope.jsonl` does not exist\n  help: paths are relative to the config file's directory; check the spelling"
    );
}

#[test]
fn missing_base_model() {
    assert_eq!(
        report(&edit("base_model: model", "base_model: ./models/nope")),
        "error: train.yml:3:3: `model.base_model`: `<dir>/models/nope` does not exist\n  help: point `base_model` at a local HF model directory or .gguf file (relative to this config file), or use a hub id like `org/name`"
    );
}

#[test]
fn sequence_len_beyond_model_context() {
    assert_eq!(
        report(&format!("{BASE}tokenize:\n  sequence_len: 4096\n")),
        "error: train.yml:14:3: `tokenize.sequence_len`: 4096 is longer than the model's context (2048 tokens, from <dir>/model/config.json)\n  help: use `sequence_len: 2048` or less"
    );
}

#[test]
fn empty_file() {
    assert_eq!(
        report("# nothing here\n"),
        "error: train.yml: `(top level)`: the file is empty\n  help: start from examples/quickstart.yml; `ft schema` prints every key"
    );
}

#[test]
fn top_level_list() {
    assert_eq!(
        report("- model\n- data\n"),
        "error: train.yml:1:1: `(top level)`: expected a mapping of sections (model:, data:, …), found [\"model\",\"data\"]\n  help: the top level is `key: value` pairs: output_dir, model, data, adapter, train …"
    );
}

#[test]
fn axolotl_style_scalar_adapter() {
    assert_eq!(
        report(&edit("adapter:\n  type: qlora\n", "adapter: qlora\n")),
        "error: train.yml:9:1: `adapter`: expected a mapping, found a string \"qlora\"\n  help: in ft, `adapter` is a section: write `adapter:` then indented `type: qlora`, `lora_r: 16` …"
    );
}

#[test]
fn section_without_value() {
    assert_eq!(
        report(&format!("{BASE}merge:\n")),
        "error: train.yml:13:1: `merge`: `merge:` has no value\n  help: write `merge: {}` to use its defaults, add its keys indented below it, or remove the line"
    );
}

#[test]
fn jinja_template_without_source() {
    assert_eq!(
        report(&format!("{BASE}template:\n  chat_template: jinja\n")),
        "error: train.yml:14:3: `template.chat_template`: `jinja` needs a template source\n  help: add `chat_template_jinja: \"...\"` or `chat_template_file: my.jinja`"
    );
}

#[test]
fn override_is_validated_like_the_file() {
    assert_eq!(
        report_with(BASE, &["adapter.lora_r=-4"]),
        "error: --set adapter.lora_r=-4: `adapter.lora_r`: -4 is too small: must be ≥ 1\n  help: use a value of at least 1"
    );
    assert_eq!(report_with(BASE, &["train.learning_rate=1e-4"]), "OK");
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let text = edit(
        "  type: qlora\n",
        "  type: qlora\n  lora_alfa: 16\n  lora_r: 0\n",
    )
    .replace(
        "  max_steps: 10\n",
        "  max_steps: 10\n  lr_scheduler: cosin\n",
    );
    let r = report(&text);
    let lines: Vec<&str> = r.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 3, "{r}");
    assert!(
        lines[0].starts_with("error: train.yml:11:3: `adapter.lora_alfa`"),
        "{r}"
    );
    assert!(
        lines[1].starts_with("error: train.yml:12:3: `adapter.lora_r`"),
        "{r}"
    );
    assert!(
        lines[2].starts_with("error: train.yml:15:3: `train.lr_scheduler`"),
        "{r}"
    );
}

#[test]
fn device_not_compiled_in() {
    if ft_model::DeviceChoice::Cuda.compiled_in() {
        return;
    }
    assert_eq!(
        report(&edit(
            "  load_in_4bit: true\n",
            "  load_in_4bit: true\n  device: cuda\n"
        )),
        "error: train.yml:5:3: `model.device`: this ft was built without the `cuda` feature\n  help: rebuild with `cargo build --release --features cuda`, or set `model.device: cpu`"
    );
}
