//! `ft merge-lora`: fold the adapter `ft run` wrote into the base and write
//! a standalone HF model to `output_dir/merged/`, with a fidelity report.

use std::path::PathBuf;

use ft_merge::{MergeOptions, MergeReport, merge_lora};
use ft_model::{AdapterKind, CausalLm, load_model};
use ft_tokenize::PackedRow;
use ft_train::fidelity::{Agreement, trained_log_probs};
use serde::Serialize;

use crate::load::Loaded;
use crate::prepare;
use crate::train::{RunError, base_path, load_base};

/// Most positions the fidelity report compares per model (the
/// log-probabilities of all of them are held on the host).
const FIDELITY_POSITIONS: usize = 512;

/// The merged model's predictions against an unmerged base + adapter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogitFidelity {
    /// The unmerged model compared with.
    pub reference: String,
    /// KL divergence and top-1 agreement, the reference first.
    #[serde(flatten)]
    pub agreement: Agreement,
}

/// What `ft merge-lora` did: the merge and its fidelity on held-out rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Merged {
    /// The merge (also the body of `merge_report.json`).
    #[serde(flatten)]
    pub report: MergeReport,
    /// Empty when `merge.fidelity_rows` is 0.
    pub logit_fidelity: Vec<LogitFidelity>,
}

/// Where the merged model goes.
pub fn merged_dir(loaded: &Loaded) -> PathBuf {
    loaded.output_dir().join("merged")
}

/// Merges `output_dir`'s adapter into the base; writes
/// `output_dir/merged/` and `output_dir/merge_report.json` (per-tensor
/// weight differences and the logit fidelity).
pub fn run_merge(loaded: &Loaded) -> Result<Merged, RunError> {
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
    // The merged model is written; a report that cannot be made (e.g. the
    // dataset has moved since training) is a warning, not a failed merge.
    let logit_fidelity = logit_fidelity(loaded, &report, merge_cfg.fidelity_rows as usize)
        .unwrap_or_else(|e| {
            tracing::warn!("merge fidelity report skipped: {e}");
            Vec::new()
        });
    let merged = Merged {
        report,
        logit_fidelity,
    };
    let json = serde_json::to_string_pretty(&merged).unwrap_or_default();
    ft_core::atomic::write_file(out.join("merge_report.json"), json.as_bytes())?;
    Ok(merged)
}

/// Compares the merged model with base + adapter unmerged on the first
/// `rows` prepared rows (validation split, else training): against the
/// base as training saw it (NF4 for QLoRA) and, when that differs, against
/// the original base. One model is in memory at a time.
fn logit_fidelity(
    loaded: &Loaded,
    report: &MergeReport,
    rows: usize,
) -> Result<Vec<LogitFidelity>, RunError> {
    if rows == 0 {
        return Ok(Vec::new());
    }
    let (prepared, _, _) = prepare::preprocess(loaded)?;
    let pool = if prepared.eval.is_empty() {
        &prepared.train
    } else {
        &prepared.eval
    };
    let rows: Vec<PackedRow> = pool.iter().take(rows).cloned().collect();
    let pad = prepared.meta.pad_id;
    let adapter = loaded.output_dir();
    let log_probs = |mut model: CausalLm,
                     device: &burn::tensor::Device,
                     with_adapter: bool|
     -> Result<(Vec<f32>, usize), RunError> {
        if with_adapter {
            ft_model::lora::load_peft(&mut model, &adapter, &device.clone().inner())?;
        }
        Ok(trained_log_probs(
            &model,
            &rows,
            FIDELITY_POSITIONS,
            pad,
            device,
        )?)
    };
    let (trained, device) = load_base(loaded)?;
    let nf4 = trained
        .model
        .layers
        .first()
        .is_some_and(|l| l.self_attn.q_proj.nf4.is_some());
    let vocab = trained.spec.vocab_size;
    let (as_trained, _) = log_probs(trained, &device, true)?;
    let original = if nf4 {
        let base = load_model(&base_path(loaded)?, &device, None)?;
        Some(log_probs(base, &device, true)?.0)
    } else {
        None
    };
    let merged = load_model(&report.output, &device, None)?;
    let (m, _) = log_probs(merged, &device, false)?;
    let mut out = vec![LogitFidelity {
        reference: if nf4 {
            "NF4 base + adapter (as trained)".into()
        } else {
            "base + adapter".into()
        },
        agreement: Agreement::of(&as_trained, &m, vocab),
    }];
    if let Some(o) = original {
        out.push(LogitFidelity {
            reference: "original base + adapter".into(),
            agreement: Agreement::of(&o, &m, vocab),
        });
    }
    for f in &out {
        tracing::info!(
            reference = %f.reference,
            merged_onto = ?report.base_weights,
            mean_kl = f.agreement.mean_kl,
            top1 = f.agreement.top1_agreement,
            "merge fidelity"
        );
    }
    Ok(out)
}
