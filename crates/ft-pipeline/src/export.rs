//! `ft export`: the merged model (merged first when missing) as a GGUF in
//! `output_dir`, with the chat template used in training, provenance keys
//! and an Ollama `Modelfile`; optionally the adapter alone as a GGUF LoRA.

use std::path::{Path, PathBuf};

use ft_export::{
    ExportOptions, ExportReport, GgufType, LoraExportOptions, export_gguf, export_lora_gguf,
};

use crate::load::Loaded;
use crate::merge::{merged_dir, run_merge};
use crate::train::RunError;

/// `<dir's name>-<type>.gguf`, e.g. `quickstart-q8_0.gguf`.
fn gguf_file_name(dir: &Path, gguf: GgufType) -> String {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let ty = serde_json::to_value(gguf)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "gguf".into());
    format!("{name}-{ty}.gguf")
}

/// `<output_dir>/<output_dir's name>-<type>.gguf`.
pub fn gguf_path(loaded: &Loaded, gguf: GgufType) -> PathBuf {
    let out = loaded.output_dir();
    out.join(gguf_file_name(&out, gguf))
}

fn read_opt(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Exports the run's model. `gguf` overrides `export.gguf`.
pub fn run_export(loaded: &Loaded, gguf: Option<GgufType>) -> Result<ExportReport, RunError> {
    let c = &loaded.config;
    let out = loaded.output_dir();
    let mut cfg = c.export.clone().unwrap_or_default();
    if let Some(g) = gguf {
        cfg.gguf = g;
    }
    let merged = merged_dir(loaded);
    if !merged.join("config.json").is_file() {
        tracing::info!("no merged model in `{}`: merging first", merged.display());
        run_merge(loaded)?;
    }
    let mut opts = ExportOptions::from_config(&cfg, &merged, gguf_path(loaded, cfg.gguf));
    opts.chat_template = read_opt(&out.join("chat_template.jinja"));
    opts.base_model = Some(c.model.base_model.clone());
    opts.finetune = Some("ft-lora".into());
    opts.datasets = c
        .data
        .datasets
        .iter()
        .filter_map(|d| serde_json::to_value(d).ok())
        .filter_map(|v| v["path"].as_str().map(str::to_string))
        .collect();
    let report = export_gguf(&opts)?;
    if cfg.lora_gguf {
        let lora_out = out.join("adapter.gguf");
        let mut lo = LoraExportOptions {
            adapter_dir: out.clone(),
            base_model_dir: merged.clone(),
            output: lora_out,
            gguf: GgufType::F32,
            name: cfg.name.clone(),
        };
        if matches!(cfg.gguf, GgufType::F16 | GgufType::Bf16 | GgufType::Q8_0) {
            lo.gguf = cfg.gguf;
        }
        export_lora_gguf(&lo)?;
    }
    Ok(report)
}

/// Exports an HF model directory given on the command line.
pub fn export_dir(
    dir: &Path,
    gguf: GgufType,
    output: Option<PathBuf>,
) -> Result<ExportReport, RunError> {
    let output = output.unwrap_or_else(|| dir.with_file_name(gguf_file_name(dir, gguf)));
    Ok(export_gguf(&ExportOptions::new(dir, output, gguf))?)
}
