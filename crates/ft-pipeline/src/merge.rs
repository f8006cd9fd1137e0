//! `ft merge-lora`: fold the adapter `ft run` wrote into the base and write
//! a standalone HF model to `output_dir/merged/`, with a fidelity report.

use std::path::PathBuf;

use ft_merge::{MergeOptions, MergeReport, merge_lora};
use ft_model::AdapterKind;

use crate::load::Loaded;
use crate::train::{RunError, base_path};

/// Where the merged model goes.
pub fn merged_dir(loaded: &Loaded) -> PathBuf {
    loaded.output_dir().join("merged")
}

/// Merges `output_dir`'s adapter into the base; writes
/// `output_dir/merged/` and `output_dir/merge_report.json`.
pub fn run_merge(loaded: &Loaded) -> Result<MergeReport, RunError> {
    let c = &loaded.config;
    let out = loaded.output_dir();
    if !out.join("adapter_model.safetensors").is_file() {
        return Err(RunError::Config(format!(
            "`{}` has no adapter_model.safetensors: run `ft run` with this config first",
            out.display()
        )));
    }
    let merge_cfg = c.merge.clone().unwrap_or_default();
    let opts = MergeOptions::from_config(
        &merge_cfg,
        base_path(loaded)?,
        out.clone(),
        merged_dir(loaded),
        c.adapter.kind == AdapterKind::Qlora,
        c.model.double_quant,
    )?;
    let report = merge_lora(&opts)?;
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    ft_core::atomic::write_file(out.join("merge_report.json"), json.as_bytes())?;
    Ok(report)
}
