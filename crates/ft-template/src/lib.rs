//! `ft-template`: HF-compatible chat templates and which tokens are trained.
//!
//! This crate owns the `template` section of `train.yml`
//! ([`TemplateConfig`]): which chat template renders conversations, its
//! keyword arguments, and the masking rules (which roles' turns carry loss).
//!
//! * [`source`]: built-in templates, `tokenizer_config.json` /
//!   `chat_template.jinja`, inline or file overrides.
//! * [`render`]: [`ChatTemplate`], minijinja set up as transformers sets up
//!   Jinja2, with `{% generation %}` support.
//! * [`spans`]: locating each message in the rendered text and the trained
//!   byte ranges (method documented there and in `docs/data-preparation.md`).
//!
//! The crate works on text only: byte ranges become token masks in
//! `ft-tokenize` through the tokenizer's offsets.
#![warn(missing_docs)]

pub mod config;
pub mod date;
pub mod error;
pub mod render;
pub mod source;
pub mod spans;

pub use config::{BuiltinTemplate, ChatTemplateChoice, TemplateConfig, TrainOnEos};
pub use date::FixedDate;
pub use error::TemplateError;
pub use render::{ChatTemplate, RenderOptions, TemplateMessage};
pub use source::{HfTokenizerConfig, SpecialTokens, TemplateSource};
pub use spans::{Located, MaskRules, SpanMethod, TrainedSpan, Turn};
