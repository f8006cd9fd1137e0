//! Configuration problems, reported all at once.
//!
//! A [`Problem`] names where it is (file, line, column, key path), what was
//! expected and what was found, and optionally how to fix it. Stage configs
//! push problems with a key path only; the config loader fills in file, line
//! and column from the YAML source before anything is printed.

use std::fmt;
use std::path::PathBuf;

/// One segment of a key path: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    /// An object key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A key path into the config, e.g. `datasets[0].path`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The root (the whole document).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Builds a path from keys, e.g. `KeyPath::keys(&["adapter", "lora_r"])`.
    pub fn keys(keys: &[&str]) -> Self {
        Self(keys.iter().map(|k| Seg::Key((*k).to_string())).collect())
    }

    /// This path extended by a key.
    pub fn key(&self, k: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    /// This path extended by an array index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// Parses a JSON pointer (`/datasets/0/path`). Numeric segments become
    /// indices; that is right for every pointer into an `ft` config, whose
    /// maps never have numeric keys.
    pub fn from_json_pointer(ptr: &str) -> Self {
        let segs = ptr
            .split('/')
            .skip(1)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = s.replace("~1", "/").replace("~0", "~");
                match s.parse::<usize>() {
                    Ok(i) => Seg::Index(i),
                    Err(_) => Seg::Key(s),
                }
            })
            .collect();
        Self(segs)
    }

    /// The parent path (the root's parent is the root).
    pub fn parent(&self) -> Self {
        let mut p = self.clone();
        p.0.pop();
        p
    }

    /// True for the root path.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Where a problem is in a file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// One thing wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file, once known.
    pub file: Option<PathBuf>,
    /// Line and column in that file, once known.
    pub location: Option<Location>,
    /// The key path the problem is about.
    pub path: KeyPath,
    /// What is wrong: what was expected and what was found.
    pub message: String,
    /// How to fix it, when there is something specific to say.
    pub help: Option<String>,
}

impl Problem {
    /// A problem at `path` with `message`.
    pub fn new(path: KeyPath, message: impl Into<String>) -> Self {
        Self {
            file: None,
            location: None,
            path,
            message: message.into(),
            help: None,
        }
    }

    /// Adds a fix suggestion.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(loc) = self.location {
                write!(f, ":{}:{}", loc.line, loc.column)?;
            }
            f.write_str(": ")?;
        }
        write!(f, "`{}`: {}", self.path, self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// A list of problems, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a problem.
    pub fn push(&mut self, p: Problem) {
        self.0.push(p);
    }

    /// Adds a problem at `path` with `message`; returns it for a `.help(..)`.
    pub fn at(&mut self, path: KeyPath, message: impl Into<String>) -> &mut Problem {
        self.0.push(Problem::new(path, message));
        let last = self.0.len() - 1;
        &mut self.0[last]
    }

    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.0.iter()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "error: {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl Problem {
    /// Sets the help text in place (for use after [`Problems::at`]).
    pub fn help(&mut self, help: impl Into<String>) -> &mut Self {
        self.help = Some(help.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_display_and_pointer_round_trip() {
        let p = KeyPath::keys(&["datasets"]).index(2).key("path");
        assert_eq!(p.to_string(), "datasets[2].path");
        assert_eq!(KeyPath::from_json_pointer("/datasets/2/path"), p);
        assert_eq!(KeyPath::root().to_string(), "(top level)");
    }

    #[test]
    fn problem_display_has_location_and_help() {
        let mut p = Problem::new(KeyPath::keys(&["adapter", "lora_alfa"]), "unknown key")
            .with_help("did you mean `lora_alpha`?");
        p.file = Some("train.yml".into());
        p.location = Some(Location {
            line: 12,
            column: 3,
        });
        assert_eq!(
            p.to_string(),
            "train.yml:12:3: `adapter.lora_alfa`: unknown key\n  help: did you mean `lora_alpha`?"
        );
    }
}
