//! Stage manifests: what an output was made from.
//!
//! Every stage writes `manifest.json` into its output directory. A later run
//! compares the manifest it *would* write (same stage, config fingerprint,
//! input hashes, tool version) with the one on disk: equal means the output
//! is reused, anything else means the stage runs again. The manifest is
//! written last, inside the atomically committed directory, so an output with
//! a manifest is always complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hash::{Digest, hash_file};
use crate::{Error, FT_VERSION, Result, atomic};

/// File name of the manifest inside a stage's output directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One input a stage output depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    /// A stable name for the input (e.g. `datasets[0]`, `tokenizer.json`).
    pub name: String,
    /// Where it was read from (informational; not part of the identity).
    pub source: String,
    /// Content hash.
    pub digest: Digest,
}

impl Input {
    /// An input identified by a file's full content hash.
    pub fn file(name: impl Into<String>, path: &Path) -> Result<Self> {
        Ok(Self {
            name: name.into(),
            source: path.display().to_string(),
            digest: hash_file(path)?,
        })
    }

    /// An input identified by a digest the stage computed itself (e.g. from
    /// parquet metadata and row-group checksums).
    pub fn digest(name: impl Into<String>, source: impl Into<String>, digest: Digest) -> Self {
        Self {
            name: name.into(),
            source: source.into(),
            digest,
        }
    }
}

/// What a stage output was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Stage name.
    pub stage: String,
    /// `ft` version that wrote it.
    pub ft_version: String,
    /// Fingerprint of the stage's effective config.
    pub config_fingerprint: Digest,
    /// Content hashes of every input, by name.
    pub inputs: BTreeMap<String, Input>,
    /// Free-form facts about the output (counts, sizes) for humans and tools.
    #[serde(default)]
    pub summary: serde_json::Value,
}

impl Manifest {
    /// A manifest for `stage` with this version of `ft`.
    pub fn new(stage: &str, config_fingerprint: Digest, inputs: Vec<Input>) -> Self {
        Self {
            stage: stage.to_string(),
            ft_version: FT_VERSION.to_string(),
            config_fingerprint,
            inputs: inputs.into_iter().map(|i| (i.name.clone(), i)).collect(),
            summary: serde_json::Value::Null,
        }
    }

    /// True when `self` (on disk) was made from exactly what `expected`
    /// describes. The summary and input sources are not part of identity.
    pub fn matches(&self, expected: &Manifest) -> bool {
        self.stage == expected.stage
            && self.ft_version == expected.ft_version
            && self.config_fingerprint == expected.config_fingerprint
            && self.inputs.len() == expected.inputs.len()
            && self
                .inputs
                .iter()
                .all(|(k, v)| expected.inputs.get(k).is_some_and(|e| e.digest == v.digest))
    }

    /// Reads `dir/manifest.json`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::CorruptManifest {
                path,
                dir: dir.to_path_buf(),
                source,
            })
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| Error::Json {
            what: "a manifest",
            source,
        })?;
        let path = dir.join(MANIFEST_FILE);
        atomic::write_file(&path, &bytes)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_identity_covers_fingerprint_inputs_and_version() {
        let a = Manifest::new(
            "prepare",
            "f1".into(),
            vec![Input::digest("d0", "x", "h1".into())],
        );
        let mut b = a.clone();
        b.summary = serde_json::json!({"rows": 3});
        b.inputs.get_mut("d0").unwrap().source = "elsewhere".into();
        assert!(a.matches(&b), "summary and source are not identity");
        let mut c = a.clone();
        c.inputs.get_mut("d0").unwrap().digest = "h2".into();
        assert!(!a.matches(&c));
        let mut d = a.clone();
        d.config_fingerprint = "f2".into();
        assert!(!a.matches(&d));
        let mut e = a.clone();
        e.ft_version = "0.0.0".into();
        assert!(!a.matches(&e));
        let f = Manifest::new("prepare", "f1".into(), vec![]);
        assert!(!a.matches(&f));
    }

    #[test]
    fn read_write_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), None);
        let m = Manifest::new("s", "f".into(), vec![]);
        m.write(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), Some(m));
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{not json").unwrap();
        let err = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && err.contains("delete the directory"),
            "{err}"
        );
    }
}
