//! The `template` section of `train.yml`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ft_core::problem::Problems;
use ft_core::stage::{CheckContext, StageConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Templates shipped inside `ft`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinTemplate {
    /// ChatML (`<|im_start|>role … <|im_end|>`), as SmolLM2 and Qwen2 use.
    Chatml,
    /// Llama 3 / 3.1 header format.
    Llama3,
    /// Qwen3, with `enable_thinking`.
    Qwen3,
}

/// Where the chat template comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatTemplateChoice {
    /// The base model's own template (`tokenizer_config.json` →
    /// `chat_template`, or `chat_template.jinja`, or the GGUF's
    /// `tokenizer.chat_template`).
    #[default]
    TokenizerDefault,
    /// ChatML.
    Chatml,
    /// Llama 3.
    Llama3,
    /// Qwen3.
    Qwen3,
    /// Your own Jinja template: `chat_template_jinja` (inline) or
    /// `chat_template_file`.
    Jinja,
}

/// Which end-of-turn tokens carry loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrainOnEos {
    /// The end-of-turn token of every trained turn (so the model learns to
    /// stop).
    #[default]
    Turn,
    /// Only the last trained turn's.
    Last,
    /// Every turn's, trained role or not.
    All,
    /// None.
    None,
}

fn default_roles() -> Vec<String> {
    vec!["assistant".into()]
}

/// `template`: how conversations become text, and which parts are trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TemplateConfig {
    /// Which chat template to use. Default: tokenizer_default.
    #[serde(default)]
    pub chat_template: ChatTemplateChoice,
    /// Inline Jinja source, with `chat_template: jinja`.
    #[serde(default)]
    pub chat_template_jinja: Option<String>,
    /// A `.jinja` file, with `chat_template: jinja`. Relative to this config
    /// file.
    #[serde(default)]
    pub chat_template_file: Option<PathBuf>,
    /// Extra variables passed to the template, e.g. `{enable_thinking: false}`.
    #[serde(default)]
    pub chat_template_kwargs: BTreeMap<String, serde_json::Value>,
    /// Roles whose turns carry loss. Default: [assistant].
    #[serde(default = "default_roles")]
    #[schemars(length(min = 1))]
    pub roles_to_train: Vec<String>,
    /// Which end-of-turn tokens carry loss. Default: turn.
    #[serde(default)]
    pub train_on_eos: TrainOnEos,
    /// For `alpaca` and `input_output` datasets: also train on the prompt
    /// part. Default: false.
    #[serde(default)]
    pub train_on_inputs: bool,
    /// The date `strftime_now` returns inside templates (Llama 3.1 prints
    /// it), fixed so prepared data is reproducible, e.g. `26 Jul 2024`.
    /// Default: the template's own fallback.
    #[serde(default)]
    pub date_string: Option<String>,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        Self {
            chat_template: ChatTemplateChoice::default(),
            chat_template_jinja: None,
            chat_template_file: None,
            chat_template_kwargs: BTreeMap::new(),
            roles_to_train: default_roles(),
            train_on_eos: TrainOnEos::default(),
            train_on_inputs: false,
            date_string: None,
        }
    }
}

impl TemplateConfig {
    /// The built-in template named by `chat_template`, if any.
    pub fn builtin(&self) -> Option<BuiltinTemplate> {
        match self.chat_template {
            ChatTemplateChoice::Chatml => Some(BuiltinTemplate::Chatml),
            ChatTemplateChoice::Llama3 => Some(BuiltinTemplate::Llama3),
            ChatTemplateChoice::Qwen3 => Some(BuiltinTemplate::Qwen3),
            ChatTemplateChoice::TokenizerDefault | ChatTemplateChoice::Jinja => None,
        }
    }
}

impl StageConfig for TemplateConfig {
    const SECTION: &'static str = "template";

    fn check(&self, ctx: &CheckContext, problems: &mut Problems) {
        let inline = self.chat_template_jinja.is_some();
        let file = self.chat_template_file.is_some();
        if self.chat_template == ChatTemplateChoice::Jinja {
            if !inline && !file {
                problems
                    .at(
                        Self::path("chat_template"),
                        "`jinja` needs a template source",
                    )
                    .help("add `chat_template_jinja: \"...\"` or `chat_template_file: my.jinja`");
            }
            if inline && file {
                problems
                    .at(
                        Self::path("chat_template_file"),
                        "both `chat_template_jinja` and `chat_template_file` are set",
                    )
                    .help("keep one of them");
            }
        } else {
            for (key, set) in [
                ("chat_template_jinja", inline),
                ("chat_template_file", file),
            ] {
                if set {
                    problems
                        .at(
                            Self::path(key),
                            format!("`{key}` is ignored unless `chat_template: jinja`"),
                        )
                        .help("set `chat_template: jinja`, or remove this key");
                }
            }
        }
        if let Some(f) = &self.chat_template_file {
            let p = ctx.resolve(f);
            if !p.is_file() {
                problems
                    .at(
                        Self::path("chat_template_file"),
                        format!("`{}` does not exist", p.display()),
                    )
                    .help("paths are relative to the config file's directory");
            }
        }
        if let Some(d) = &self.date_string
            && d.trim().is_empty()
        {
            problems
                .at(Self::path("date_string"), "is empty")
                .help("use e.g. `26 Jul 2024`, or remove the key");
        }
    }
}
