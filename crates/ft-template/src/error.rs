//! Errors from finding, compiling and rendering chat templates.

use std::path::PathBuf;

/// Errors from chat templates.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A file could not be read.
    #[error("reading `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `tokenizer_config.json` is not valid JSON or has an unexpected shape.
    #[error("`{path}`: {message}; expected the `tokenizer_config.json` that transformers writes")]
    TokenizerConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `chat_template: tokenizer_default` but the model has no template.
    #[error(
        "`{dir}` has no chat template (neither `chat_template` in tokenizer_config.json nor chat_template.jinja); set `template.chat_template` to a built-in (chatml, llama3, qwen3) or `jinja` with your own"
    )]
    NoTemplate {
        /// The tokenizer directory searched.
        dir: PathBuf,
    },
    /// The template does not compile.
    #[error("chat template `{name}` does not compile: {message}")]
    Syntax {
        /// Where the template came from.
        name: String,
        /// The minijinja error, with line.
        message: String,
    },
    /// Rendering failed (including `raise_exception` from the template).
    #[error("rendering the chat template `{name}` failed: {message}")]
    Render {
        /// Where the template came from.
        name: String,
        /// The minijinja error or the template's own exception text.
        message: String,
    },
    /// `date_string` cannot be parsed.
    #[error(
        "`template.date_string` is `{found}`; expected a date like `26 Jul 2024` or `2024-07-26`"
    )]
    BadDate {
        /// The value found.
        found: String,
    },
    /// A message contains one of the private marker characters ft uses to
    /// locate turns.
    #[error(
        "message {message} contains the character U+{code:04X}, which ft reserves for locating turns; remove it from the data"
    )]
    ReservedChar {
        /// Index of the message.
        message: usize,
        /// The code point.
        code: u32,
    },
    /// A trained turn could not be located in the rendered text.
    #[error("cannot locate message {message} (role `{role}`) in the rendered text: {why}")]
    Unlocatable {
        /// Index of the message.
        message: usize,
        /// Its role.
        role: String,
        /// Why the methods failed.
        why: String,
    },
}
