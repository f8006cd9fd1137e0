//! What a dataset row becomes: a conversation or a list of labelled text
//! segments, independent of the file format it came from.

use serde::{Deserialize, Serialize};

use crate::error::RowRef;

/// One chat message with its role already mapped to the canonical name
/// (`system`, `user`, `assistant`, `tool`, or a name configured in `roles:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Canonical role.
    pub role: String,
    /// The text.
    pub content: String,
    /// Other keys of the message object (e.g. `reasoning_content`,
    /// `tool_calls`), passed to the chat template unchanged.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Message {
    /// A message with no extra keys.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            extra: serde_json::Map::new(),
        }
    }
}

/// A text segment and whether it carries loss.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The text, tokenized as is (no template).
    pub text: String,
    /// Train on it.
    pub label: bool,
}

/// A row, in the shape the next stages consume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Sample {
    /// A conversation for the chat template.
    Chat(Vec<Message>),
    /// Raw text segments (no template); `add_eos` appends the EOS token,
    /// trained when the last segment is.
    Segments {
        /// The segments in order.
        segments: Vec<Segment>,
        /// Append the tokenizer's EOS token.
        add_eos: bool,
    },
}

/// Which `type:` a row came from; decides how `train_on_inputs` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// `chat_template`: masking follows `roles_to_train`.
    Chat,
    /// `alpaca`: `train_on_inputs` trains the prompt turns too.
    Alpaca,
    /// `completion`: every token is trained.
    Completion,
    /// `input_output`: segment labels, or everything with `train_on_inputs`.
    InputOutput,
}

/// A row and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// File and row, for messages.
    pub at: RowRef,
    /// Index of the dataset in its list (`datasets` or `test_datasets`).
    pub dataset: usize,
    /// The dataset's `type:`.
    pub origin: Origin,
    /// The content.
    pub sample: Sample,
}
