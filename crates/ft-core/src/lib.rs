//! `ft-core`: the ground every stage of `ft` stands on.
//!
//! * [`problem`]: configuration problems with a location (file, line, column,
//!   key path), collected and reported all at once.
//! * [`stage`]: the [`StageConfig`](stage::StageConfig) trait each stage's
//!   config section implements, and the [`Stage`](stage::Stage) trait for the
//!   work itself.
//! * [`manifest`]: the manifest every stage writes beside its output
//!   (config fingerprint, input content hashes, tool version), so an unchanged
//!   stage is skipped and a changed one is never served stale.
//! * [`hash`]: content hashing (BLAKE3) of files, bytes and canonical JSON.
//! * [`atomic`]: temp-then-rename writers for files and directories; every
//!   writer in the project goes through them so a crash never leaves a
//!   half-written checkpoint, adapter, model or GGUF.
#![warn(missing_docs)]

pub mod atomic;
pub mod error;
pub mod hash;
pub mod manifest;
pub mod problem;
pub mod stage;

pub use error::{Error, Result};
pub use problem::{Problem, Problems};

/// The version of `ft`, recorded in every manifest.
pub const FT_VERSION: &str = env!("CARGO_PKG_VERSION");
