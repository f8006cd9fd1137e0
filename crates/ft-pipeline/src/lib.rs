//! `ft-pipeline`: the one config file and everything that reads it.
//!
//! * [`config`]: [`FtConfig`], one section per stage, each section's struct
//!   owned by its stage crate.
//! * [`load`]: YAML → JSON Schema check → typed config → cross-field checks,
//!   reporting every problem at once with file, line, column and key path.
//! * [`schema`]: the JSON Schemas checked into `schemas/`.
//! * [`locate`]: key paths → line/column in the YAML source.
//! * [`prepare`]: the prepare stage (`ft preprocess`) wired to the config.
//! * [`generate`]: `ft generate`, chat with the config's base model.
//! * [`explain`]: JSON Schema violations → human messages with "did you
//!   mean".
#![warn(missing_docs)]

pub mod config;
pub mod explain;
pub mod export;
pub mod generate;
pub mod import;
pub mod load;
pub mod locate;
pub mod merge;
pub mod overrides;
pub mod prepare;
pub mod runs;
pub mod schema;
pub mod train;

pub use config::FtConfig;
pub use ft_train;
pub use load::{Loaded, LocalBase, load_file, load_str};
