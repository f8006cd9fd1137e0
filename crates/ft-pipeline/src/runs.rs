//! `ft runs DIR...`: one table row per training run, from the
//! `run_summary.json` that `ft run` writes at the end of training, so runs
//! with different ranks, quantization or data are compared at a glance
//! instead of in a hand-kept spreadsheet.
//!
//! A directory without `run_summary.json` contributes its subdirectories
//! that have one (`ft runs outputs/` lists every run under `outputs/`).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Errors finding or reading run summaries.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    /// Neither the directory nor its subdirectories hold a summary.
    #[error(
        "`{0}`: no run_summary.json here or in its subdirectories; `ft run` writes it into `output_dir` when training ends"
    )]
    NoSummary(PathBuf),
    /// A summary could not be read or parsed.
    #[error("`{path}`: {message}")]
    Bad {
        /// The summary file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One run: its directory and summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The run's output directory.
    pub dir: PathBuf,
    /// The parsed `run_summary.json`.
    pub summary: Value,
}

const SUMMARY: &str = "run_summary.json";

fn read(dir: &Path) -> Result<Run, RunsError> {
    let path = dir.join(SUMMARY);
    let bad = |message: String| RunsError::Bad {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let summary: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    if !summary.is_object() {
        return Err(bad("not a JSON object".into()));
    }
    Ok(Run {
        dir: dir.to_path_buf(),
        summary,
    })
}

/// The runs in `dirs` (each a run directory, or a directory of them, in
/// name order).
pub fn find_runs(dirs: &[PathBuf]) -> Result<Vec<Run>, RunsError> {
    let mut runs = Vec::new();
    for dir in dirs {
        if dir.join(SUMMARY).is_file() {
            runs.push(read(dir)?);
            continue;
        }
        let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join(SUMMARY).is_file())
            .collect();
        if subs.is_empty() {
            return Err(RunsError::NoSummary(dir.clone()));
        }
        subs.sort();
        for s in subs {
            runs.push(read(&s)?);
        }
    }
    Ok(runs)
}

/// How a summary fills a cell.
type Cell = fn(&Value) -> String;

/// The table's columns: header and cell.
const COLUMNS: [(&str, Cell); 13] = [
    ("model", |s| {
        let m = text(&s["model"]);
        // The file or directory name: the column stays narrow.
        Path::new(&m)
            .file_name()
            .map_or(m.clone(), |n| n.to_string_lossy().into_owned())
    }),
    ("adapter", |s| text(&s["adapter"])),
    ("quant", |s| text(&s["quantization"])),
    ("r", |s| text(&s["adapter_r"])),
    ("alpha", |s| num(&s["adapter_alpha"], 0)),
    ("seq", |s| text(&s["sequence_len"])),
    ("steps", |s| text(&s["steps"])),
    ("train loss", |s| num(&s["final_train_loss"], 4)),
    ("eval loss", |s| num(&s["final_eval_loss"], 4)),
    ("s/step", |s| num(&s["seconds_per_step"], 2)),
    ("tok/s", |s| num(&s["tokens_per_s"], 0)),
    ("peak MiB", |s| num(&s["peak_rss_mib"], 0)),
    // The adapter's share of it: f32 weights, gradients and AdamW moments.
    ("LoRA MiB", |s| {
        num(
            &s["lora_bytes_f32_with_adam"]
                .as_f64()
                .map_or(Value::Null, |b| (b / 1_048_576.0).into()),
            0,
        )
    }),
];

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

/// The comparison table: a header, then one row per run (the run column is
/// the directory as given), columns aligned.
pub fn table(runs: &[Run]) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        std::iter::once("run".to_string())
            .chain(COLUMNS.iter().map(|(h, _)| (*h).to_string()))
            .collect(),
    ];
    for r in runs {
        rows.push(
            std::iter::once(r.dir.display().to_string())
                .chain(COLUMNS.iter().map(|(_, f)| f(&r.summary)))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                // Text left, numbers right.
                if c == 0 || cell.parse::<f64>().is_err() {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(SUMMARY), json).unwrap();
    }

    #[test]
    fn one_row_per_run_with_aligned_columns() {
        let t = tempfile::tempdir().unwrap();
        write(
            &t.path().join("r16"),
            r#"{"model": "models/smollm2.gguf", "adapter": "qlora", "quantization": "nf4",
                "adapter_r": 16, "adapter_alpha": 32.0, "sequence_len": 256, "steps": 40,
                "final_train_loss": 0.21766, "final_eval_loss": 0.20473,
                "seconds_per_step": 6.7157, "tokens_per_s": 67.19, "peak_rss_mib": 1896.8,
                "lora_bytes_f32_with_adam": 58613760}"#,
        );
        write(
            &t.path().join("r8"),
            r#"{"model": "/m/Qwen2.5-0.5B", "adapter": "lora", "quantization": null,
                "adapter_r": 8, "adapter_alpha": 16.0, "sequence_len": 512, "steps": 100,
                "final_train_loss": 1.5, "final_eval_loss": null,
                "seconds_per_step": 1.0, "tokens_per_s": 900.4, "peak_rss_mib": 3000.0}"#,
        );
        std::fs::create_dir_all(t.path().join("not-a-run")).unwrap();
        let runs = find_runs(&[t.path().to_path_buf()]).unwrap();
        assert_eq!(runs.len(), 2);
        let table = table(&runs);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("run"), "{table}");
        assert!(lines[1].contains("smollm2.gguf"), "{table}");
        assert!(
            lines[1].contains("qlora") && lines[1].contains("nf4"),
            "{table}"
        );
        assert!(
            lines[1].contains("0.2177") && lines[1].contains("0.2047"),
            "{table}"
        );
        assert!(
            lines[1].contains("6.72") && lines[1].contains("1897"),
            "{table}"
        );
        assert!(lines[1].trim_end().ends_with("56"), "{table}");
        assert!(
            lines[2].contains("Qwen2.5-0.5B") && lines[2].contains("900"),
            "{table}"
        );
        // The missing eval loss and quantization show as `-`.
        assert_eq!(lines[2].matches(" - ").count(), 2, "{table}");
        assert!(lines[2].trim_end().ends_with('-'), "{table}");
        // Columns are aligned: every "steps" cell ends where the header does.
        let end = lines[0].find("steps").unwrap() + "steps".len();
        assert_eq!(&lines[1][end - 2..end], "40", "{table}");
        assert_eq!(&lines[2][end - 3..end], "100", "{table}");
    }

    #[test]
    fn missing_and_broken_summaries_are_explained() {
        let t = tempfile::tempdir().unwrap();
        let e = find_runs(&[t.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no run_summary.json") && e.contains("ft run"),
            "{e}"
        );
        write(&t.path().join("bad"), "{not json");
        let e = find_runs(&[t.path().join("bad")]).unwrap_err().to_string();
        assert!(
            e.contains("bad/run_summary.json") && e.contains("not JSON"),
            "{e}"
        );
    }
}
