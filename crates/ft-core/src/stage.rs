//! The two traits every pipeline stage implements.
//!
//! * [`StageConfig`] is the stage's section of `train.yml`: a serde +
//!   schemars struct owned by the stage's crate, plus the checks that need
//!   more than the JSON Schema can say. `ft-pipeline` composes the sections.
//! * [`Stage`] is the work: given its config and inputs it produces an output
//!   directory. [`run_cached`] wraps every stage with the manifest logic
//!   (skip when unchanged) and the atomic directory commit.

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::hash::Digest;
use crate::manifest::{Input, Manifest};
use crate::problem::{KeyPath, Problems};
use crate::{Error, atomic};

/// Facts a section's checks may use beyond its own fields.
#[derive(Debug, Clone)]
pub struct CheckContext {
    /// Directory of the config file; relative paths in the config are
    /// resolved against it.
    pub config_dir: PathBuf,
}

impl CheckContext {
    /// Resolves a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            // Drop `./` segments so messages show `dir/models/x`, not
            // `dir/./models/x`.
            let rel: PathBuf = p
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            self.config_dir.join(rel)
        }
    }
}

/// A stage's section of the config.
pub trait StageConfig: Serialize + DeserializeOwned + JsonSchema {
    /// The top-level key of the section in `train.yml`.
    const SECTION: &'static str;

    /// Checks that the schema cannot express (files exist, values agree
    /// with each other). Pushes every problem found; never stops at the
    /// first. Key paths are absolute (start with [`Self::SECTION`]).
    fn check(&self, _ctx: &CheckContext, _problems: &mut Problems) {}

    /// The key path of a field of this section.
    fn path(field: &str) -> KeyPath {
        KeyPath::keys(&[Self::SECTION, field])
    }
}

/// A unit of pipeline work with a cached, manifest-described output.
pub trait Stage {
    /// Stage name, used in manifests and logs.
    const NAME: &'static str;
    /// What a finished output directory is loaded as.
    type Output;
    /// The stage's error type.
    type Error: From<Error>;

    /// Fingerprint of everything in the config that changes the output.
    fn fingerprint(&self) -> Result<Digest, Self::Error>;

    /// The inputs the output depends on, with their content hashes.
    fn inputs(&self) -> Result<Vec<Input>, Self::Error>;

    /// Does the work, writing into `dir` (a fresh temporary directory).
    /// Returns a summary recorded in the manifest.
    fn run(&self, dir: &Path) -> Result<serde_json::Value, Self::Error>;

    /// Loads a finished output directory.
    fn load(&self, dir: &Path) -> Result<Self::Output, Self::Error>;
}

/// Whether [`run_cached`] ran the stage or reused its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The output on disk matched and was reused.
    Reused,
    /// The stage ran and its output was committed.
    Ran,
}

/// Runs `stage` into `dir` unless `dir` already holds an output made from the
/// same config, inputs and `ft` version. The new output is built in a
/// temporary sibling and swapped in only when complete, with its manifest.
pub fn run_cached<S: Stage>(
    stage: &S,
    dir: &Path,
) -> Result<(S::Output, Freshness, Manifest), S::Error> {
    let mut expected = Manifest::new(S::NAME, stage.fingerprint()?, stage.inputs()?);
    if let Some(found) = Manifest::read(dir)? {
        if found.matches(&expected) {
            tracing::info!(stage = S::NAME, dir = %dir.display(), "unchanged; reusing output");
            let out = stage.load(dir)?;
            return Ok((out, Freshness::Reused, found));
        }
        tracing::info!(stage = S::NAME, "config or inputs changed; running again");
    }
    let tmp = atomic::AtomicDir::create(dir)?;
    expected.summary = stage.run(tmp.path())?;
    expected.write(tmp.path())?;
    tmp.commit()?;
    let out = stage.load(dir)?;
    Ok((out, Freshness::Ran, expected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A stage that upper-cases a text file; counts how often it runs.
    struct Upper {
        input: PathBuf,
        suffix: String,
        runs: Cell<usize>,
    }

    impl Stage for Upper {
        const NAME: &'static str = "upper";
        type Output = String;
        type Error = Error;
        fn fingerprint(&self) -> Result<Digest, Error> {
            crate::hash::fingerprint(&self.suffix)
        }
        fn inputs(&self) -> Result<Vec<Input>, Error> {
            Ok(vec![Input::file("text", &self.input)?])
        }
        fn run(&self, dir: &Path) -> Result<serde_json::Value, Error> {
            self.runs.set(self.runs.get() + 1);
            let s = std::fs::read_to_string(&self.input)
                .map_err(|e| Error::io("reading", &self.input, e))?;
            atomic::write_file(
                dir.join("out.txt"),
                format!("{}{}", s.to_uppercase(), self.suffix).as_bytes(),
            )?;
            Ok(serde_json::json!({"chars": s.len()}))
        }
        fn load(&self, dir: &Path) -> Result<String, Error> {
            let p = dir.join("out.txt");
            std::fs::read_to_string(&p).map_err(|e| Error::io("reading", p, e))
        }
    }

    #[test]
    fn run_cached_skips_unchanged_and_reruns_on_any_change() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, "abc").unwrap();
        let out = dir.path().join("out");
        let mut st = Upper {
            input: input.clone(),
            suffix: "!".into(),
            runs: Cell::new(0),
        };

        let (o, f, m) = run_cached(&st, &out).unwrap();
        assert_eq!((o.as_str(), f, st.runs.get()), ("ABC!", Freshness::Ran, 1));
        assert_eq!(m.summary["chars"], 3);

        let (_, f, _) = run_cached(&st, &out).unwrap();
        assert_eq!((f, st.runs.get()), (Freshness::Reused, 1));

        // A changed input byte invalidates.
        std::fs::write(&input, "abd").unwrap();
        let (o, f, _) = run_cached(&st, &out).unwrap();
        assert_eq!((o.as_str(), f, st.runs.get()), ("ABD!", Freshness::Ran, 2));

        // A changed option invalidates.
        st.suffix = "?".into();
        let (o, f, _) = run_cached(&st, &out).unwrap();
        assert_eq!((o.as_str(), f, st.runs.get()), ("ABD?", Freshness::Ran, 3));
    }
}
