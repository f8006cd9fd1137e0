//! `ft import-axolotl`: prints the translated config on stdout and every key
//! that could not be carried over on stderr.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

/// Runs the import of `path`.
pub fn run(path: &Path) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let imported = ft_pipeline::import::axolotl(&text, &name)
        .with_context(|| format!("importing {}", path.display()))?;
    print!("{}", imported.yaml);
    if imported.dropped.is_empty() {
        eprintln!("every key was carried over");
    } else {
        eprintln!("{} key(s) not carried over:", imported.dropped.len());
        for d in &imported.dropped {
            eprintln!("  {}: {}", d.key, d.reason);
        }
    }
    Ok(ExitCode::SUCCESS)
}
