//! The `data` section of `train.yml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ft_core::problem::{KeyPath, Problems};
use ft_core::stage::{CheckContext, StageConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_messages() -> String {
    "messages".into()
}
fn default_role() -> String {
    "role".into()
}
fn default_content() -> String {
    "content".into()
}
fn default_instruction() -> String {
    "instruction".into()
}
fn default_input() -> String {
    "input".into()
}
fn default_output() -> String {
    "output".into()
}
fn default_text() -> String {
    "text".into()
}
fn default_segments() -> String {
    "segments".into()
}
fn default_true() -> bool {
    true
}

/// One dataset, tagged by `type:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DatasetConfig {
    /// Conversations (a list of `{role, content}` messages per row) rendered
    /// with the chat template. Covers OpenAI-style `messages` and ShareGPT
    /// (`conversations` with `from`/`value`, `human`/`gpt`) via the field
    /// and role mappings.
    ChatTemplate(ChatTemplateDataset),
    /// Alpaca rows (`instruction`, optional `input`, `output`), turned into a
    /// user turn and an assistant turn.
    Alpaca(AlpacaDataset),
    /// Raw text; loss on every token.
    Completion(CompletionDataset),
    /// Pre-segmented text: a list of `{text, label}` segments, trained where
    /// `label: true`.
    InputOutput(InputOutputDataset),
}

/// `type: chat_template`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ChatTemplateDataset {
    /// A local `.parquet` or `.jsonl` file, or a directory of them.
    /// Relative to this config file.
    pub path: PathBuf,
    /// For a directory: use only files whose name starts with this split
    /// name (e.g. `train` matches `train-00000-of-00002.parquet`).
    #[serde(default)]
    pub split: Option<String>,
    /// Column holding the list of messages. Default: `messages`.
    #[serde(default = "default_messages")]
    pub field_messages: String,
    /// Key of a message's role. Default: `role` (ShareGPT: `from`).
    #[serde(default = "default_role")]
    pub message_field_role: String,
    /// Key of a message's text. Default: `content` (ShareGPT: `value`).
    #[serde(default = "default_content")]
    pub message_field_content: String,
    /// Role aliases: canonical role → names used in the data, e.g.
    /// `{user: [human], assistant: [gpt]}`. Canonical names map to
    /// themselves without being listed.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
}

/// `type: alpaca`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct AlpacaDataset {
    /// A local `.parquet` or `.jsonl` file, or a directory of them.
    pub path: PathBuf,
    /// For a directory: file-name prefix of the split to use.
    #[serde(default)]
    pub split: Option<String>,
    /// Column with the instruction. Default: `instruction`.
    #[serde(default = "default_instruction")]
    pub field_instruction: String,
    /// Column with the optional extra input. Default: `input`.
    #[serde(default = "default_input")]
    pub field_input: String,
    /// Column with the answer. Default: `output`.
    #[serde(default = "default_output")]
    pub field_output: String,
    /// Column with a per-row system prompt, if any.
    #[serde(default)]
    pub field_system: Option<String>,
}

/// `type: completion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct CompletionDataset {
    /// A local `.parquet` or `.jsonl` file, or a directory of them.
    pub path: PathBuf,
    /// For a directory: file-name prefix of the split to use.
    #[serde(default)]
    pub split: Option<String>,
    /// Column with the text. Default: `text`.
    #[serde(default = "default_text")]
    pub field: String,
    /// Append the tokenizer's EOS token after each text. Default: true.
    #[serde(default = "default_true")]
    pub add_eos: bool,
}

/// `type: input_output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct InputOutputDataset {
    /// A local `.parquet` or `.jsonl` file, or a directory of them.
    pub path: PathBuf,
    /// For a directory: file-name prefix of the split to use.
    #[serde(default)]
    pub split: Option<String>,
    /// Column with the list of `{text, label}` segments. Default: `segments`.
    #[serde(default = "default_segments")]
    pub field_segments: String,
}

impl DatasetConfig {
    /// The dataset's path as written in the config.
    pub fn path(&self) -> &Path {
        match self {
            DatasetConfig::ChatTemplate(d) => &d.path,
            DatasetConfig::Alpaca(d) => &d.path,
            DatasetConfig::Completion(d) => &d.path,
            DatasetConfig::InputOutput(d) => &d.path,
        }
    }

    /// The `type:` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            DatasetConfig::ChatTemplate(_) => "chat_template",
            DatasetConfig::Alpaca(_) => "alpaca",
            DatasetConfig::Completion(_) => "completion",
            DatasetConfig::InputOutput(_) => "input_output",
        }
    }
}

/// Size of the validation split carved from the training datasets: a
/// fraction in (0, 1) or a row count ≥ 1. 0 means no validation split.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ValSetSize(#[schemars(range(min = 0.0))] pub f64);

impl ValSetSize {
    /// Rows to hold out from `n` rows.
    pub fn rows(self, n: usize) -> usize {
        if self.0 <= 0.0 {
            0
        } else if self.0 < 1.0 {
            ((n as f64) * self.0).round() as usize
        } else {
            (self.0 as usize).min(n)
        }
    }
}

/// `data`: the datasets to train and evaluate on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct DataConfig {
    /// Training datasets; their rows are concatenated.
    #[schemars(length(min = 1))]
    pub datasets: Vec<DatasetConfig>,
    /// Separate evaluation datasets. When given, `val_set_size` must be 0.
    #[serde(default)]
    pub test_datasets: Vec<DatasetConfig>,
    /// Validation rows held out from `datasets`: a fraction in (0, 1) or a
    /// count ≥ 1. Default: 0 (none).
    #[serde(default)]
    pub val_set_size: ValSetSize,
    /// Shuffle rows (deterministically, by the top-level `seed`) before
    /// splitting and packing. Default: true.
    #[serde(default = "default_true")]
    pub shuffle: bool,
}

impl DataConfig {
    /// Whether any evaluation data is configured.
    pub fn has_eval(&self) -> bool {
        !self.test_datasets.is_empty() || self.val_set_size.0 > 0.0
    }
}

fn check_dataset(
    list: &str,
    i: usize,
    d: &DatasetConfig,
    ctx: &CheckContext,
    problems: &mut Problems,
) {
    let at = KeyPath::keys(&["data", list]).index(i).key("path");
    let p = ctx.resolve(d.path());
    if !p.exists() {
        problems
            .at(at, format!("`{}` does not exist", p.display()))
            .help("paths are relative to the config file's directory; check the spelling");
        return;
    }
    if p.is_file() {
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !matches!(ext.as_str(), "parquet" | "jsonl" | "json") {
            problems
                .at(
                    at,
                    format!("`{}` is neither .parquet nor .jsonl", p.display()),
                )
                .help("convert the file to parquet or JSON lines (one object per line)");
        }
    }
}

impl StageConfig for DataConfig {
    const SECTION: &'static str = "data";

    fn check(&self, ctx: &CheckContext, problems: &mut Problems) {
        for (i, d) in self.datasets.iter().enumerate() {
            check_dataset("datasets", i, d, ctx, problems);
        }
        for (i, d) in self.test_datasets.iter().enumerate() {
            check_dataset("test_datasets", i, d, ctx, problems);
        }
        if !self.test_datasets.is_empty() && self.val_set_size.0 > 0.0 {
            problems
                .at(
                    Self::path("val_set_size"),
                    "both `test_datasets` and `val_set_size` define a validation split",
                )
                .help("remove one of them");
        }
        let v = self.val_set_size.0;
        if v >= 1.0 && v.fract() != 0.0 {
            problems
                .at(
                    Self::path("val_set_size"),
                    format!("{v} is neither a fraction below 1 nor a whole row count"),
                )
                .help("use e.g. 0.05 for 5% of rows, or 200 for 200 rows");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tagged_variants_reject_fields_of_other_variants() {
        let ok: DatasetConfig =
            serde_json::from_str(r#"{"type":"alpaca","path":"a.jsonl","field_output":"answer"}"#)
                .unwrap();
        assert_eq!(ok.type_name(), "alpaca");
        let bad = serde_json::from_str::<DatasetConfig>(
            r#"{"type":"alpaca","path":"a.jsonl","field_messages":"m"}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("field_messages"));
    }

    #[test]
    fn val_set_size_fraction_or_count() {
        assert_eq!(ValSetSize(0.1).rows(1000), 100);
        assert_eq!(ValSetSize(25.0).rows(1000), 25);
        assert_eq!(ValSetSize(25.0).rows(10), 10);
        assert_eq!(ValSetSize(0.0).rows(10), 0);
    }
}
