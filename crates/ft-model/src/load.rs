//! Loading a model from a Hugging Face directory.
//!
//! `config.json` → [`ft_arch::HfConfig`] → the architecture's
//! [`DecoderSpec`](crate::arch::DecoderSpec) → [`CausalLm`] built tensor by
//! tensor from the memory-mapped safetensors (single file or shards),
//! converted to f32 on `device`.

use std::path::Path;
use std::rc::Rc;

use burn::tensor::Device;
use ft_arch::HfConfig;

use crate::arch::{CausalLm, spec_for};
use crate::error::ModelError;
use crate::nf4_cache::{Nf4Cache, Nf4CacheReport, Nf4CacheSession};
use crate::weights::{Nf4Load, SafetensorsDir, TensorSource, VarBuilder};

/// Loads the model in the HF directory `dir` onto `device`, in f32.
///
/// Errors name the file and, for weights, the tensor: unknown `model_type`,
/// missing tensor, shape mismatch (expected and found), unsupported dtype,
/// corrupt file. Checkpoint tensors the architecture does not use are
/// logged as a warning (as transformers does), since they usually mean the
/// config does not describe the checkpoint.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<CausalLm, ModelError> {
    load_hf_dir_nf4(dir, device, None)
}

/// Loads a base model from an HF directory or a `.gguf` file, quantizing
/// the projections to NF4 on the way in when `nf4` is set (QLoRA): each
/// weight goes from the file straight to NF4, so the dense model is never
/// in memory at once. No NF4 cache: see [`load_model_cached`].
pub fn load_model(
    path: &Path,
    device: &Device,
    nf4: Option<Nf4Load>,
) -> Result<CausalLm, ModelError> {
    load_model_cached(path, device, nf4, None).map(|(model, _)| model)
}

/// [`load_model`], taking the NF4 weights from `cache` when it holds this
/// base quantized with these settings, and otherwise quantizing them and
/// writing them there for the next run ([`crate::nf4_cache`]). The report
/// says which happened; it is `None` without `nf4` or `cache`, or when the
/// base's files cannot be keyed (a warning says why).
pub fn load_model_cached(
    path: &Path,
    device: &Device,
    nf4: Option<Nf4Load>,
    cache: Option<&Nf4Cache>,
) -> Result<(CausalLm, Option<Nf4CacheReport>), ModelError> {
    if path.is_file() {
        let source = crate::gguf::GgufSource::open(path)?;
        let spec = source.spec()?;
        let session = open_session(cache, &source, nf4);
        let vb = VarBuilder::new(&source, device)
            .with_nf4(nf4)
            .with_nf4_cache(session.clone());
        let model = CausalLm::load(&spec, &vb)?;
        return Ok((model, session.map(|s| s.finish())));
    }
    let (model, unused, report) = load_hf_dir_inner(path, device, nf4, cache)?;
    warn_unused(path, &unused);
    Ok((model, report))
}

/// The NF4 cache's part in this load, when there is one.
fn open_session(
    cache: Option<&Nf4Cache>,
    source: &dyn TensorSource,
    nf4: Option<Nf4Load>,
) -> Option<Rc<Nf4CacheSession>> {
    Some(Rc::new(cache?.session(source, nf4?)?))
}

fn load_hf_dir_nf4(
    dir: &Path,
    device: &Device,
    nf4: Option<Nf4Load>,
) -> Result<CausalLm, ModelError> {
    let (model, unused, _) = load_hf_dir_inner(dir, device, nf4, None)?;
    warn_unused(dir, &unused);
    Ok(model)
}

fn warn_unused(dir: &Path, unused: &[String]) {
    if !unused.is_empty() {
        tracing::warn!(
            dir = %dir.display(),
            "{} checkpoint tensors were not used (does config.json match the weights?): {}",
            unused.len(),
            unused.join(", ")
        );
    }
}

/// [`load_hf_dir`], also returning the checkpoint tensors the model did not
/// load (sorted; a tied checkpoint's spare `lm_head.weight` is not counted).
pub fn load_hf_dir_with_unused(
    dir: &Path,
    device: &Device,
) -> Result<(CausalLm, Vec<String>), ModelError> {
    load_hf_dir_inner(dir, device, None, None).map(|(model, unused, _)| (model, unused))
}

type Loaded = (CausalLm, Vec<String>, Option<Nf4CacheReport>);

fn load_hf_dir_inner(
    dir: &Path,
    device: &Device,
    nf4: Option<Nf4Load>,
    cache: Option<&Nf4Cache>,
) -> Result<Loaded, ModelError> {
    let config_path = dir.join("config.json");
    let cfg = HfConfig::read(&config_path)?;
    let spec = spec_for(&cfg, &config_path)?;
    let weights = SafetensorsDir::open(dir)?;
    tracing::debug!(dir = %dir.display(), arch = ?spec.arch, "loading safetensors model");
    let session = open_session(cache, &weights, nf4);
    let vb = VarBuilder::new(&weights, device)
        .with_nf4(nf4)
        .with_nf4_cache(session.clone());
    let model = CausalLm::load(&spec, &vb)?;
    let used = vb.used_names();
    let unused = weights
        .names()
        .into_iter()
        .filter(|n| used.binary_search_by(|u| u.as_str().cmp(n)).is_err())
        .filter(|n| !(spec.tie_word_embeddings && *n == "lm_head.weight"))
        .map(str::to_string)
        .collect();
    Ok((model, unused, session.map(|s| s.finish())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use burn::tensor::Device;

    use super::*;
    use crate::PackedBatch;
    use crate::arch::testing::{copy_with_config, fixture_dir};
    use crate::weights::TensorSource;

    /// QLoRA quantizes the seven projections of every layer and leaves an
    /// untied `lm_head` dense, as transformers + bitsandbytes do.
    #[test]
    fn nf4_load_keeps_an_untied_lm_head_dense() {
        let m = load_model(
            &fixture_dir("llama3"),
            &Device::flex(),
            Some(Nf4Load::default()),
        )
        .unwrap();
        let head = m
            .lm_head
            .as_ref()
            .expect("llama3 fixture has its own lm_head");
        assert!(
            head.nf4.is_none() && head.weight.is_some(),
            "lm_head is dense"
        );
        for layer in &m.model.layers {
            assert!(layer.self_attn.q_proj.nf4.is_some());
            assert!(layer.mlp.down_proj.nf4.is_some());
        }
    }

    fn load_err(dir: &Path) -> (ModelError, String) {
        let e = load_hf_dir(dir, &Device::flex()).unwrap_err();
        let msg = e.to_string();
        (e, msg)
    }

    #[test]
    fn sharded_checkpoint_equals_single_file() {
        let single = SafetensorsDir::open(&fixture_dir("mistral")).unwrap();
        let sharded = SafetensorsDir::open(&fixture_dir("mistral_sharded")).unwrap();
        assert_eq!(single.names(), sharded.names());
        for name in single.names() {
            assert_eq!(
                single.load(name).unwrap(),
                sharded.load(name).unwrap(),
                "{name}"
            );
        }
        let device = Device::flex();
        let batch = PackedBatch::from_rows(&[vec![vec![5, 9, 200, 3], vec![17, 4]]], 0, &device);
        let a: Vec<f32> = load_hf_dir(&fixture_dir("mistral"), &device)
            .unwrap()
            .forward(&batch)
            .into_data()
            .try_to_vec()
            .unwrap();
        let b: Vec<f32> = load_hf_dir(&fixture_dir("mistral_sharded"), &device)
            .unwrap()
            .forward(&batch)
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn missing_tensor_is_named() {
        // The llama fixture ties lm_head to the embeddings; untying it in
        // the config makes the loader look for `lm_head.weight`.
        let dir = copy_with_config("llama", |c| c["tie_word_embeddings"] = false.into());
        let (e, msg) = load_err(dir.path());
        assert!(
            matches!(&e, ModelError::MissingTensor { name, .. } if name == "lm_head.weight"),
            "{msg}"
        );
        assert!(msg.contains("lm_head.weight"), "{msg}");
    }

    #[test]
    fn shape_mismatch_names_tensor_and_shapes() {
        let dir = copy_with_config("qwen3", |c| c["intermediate_size"] = 96.into());
        let (e, msg) = load_err(dir.path());
        match &e {
            ModelError::ShapeMismatch {
                name,
                expected,
                found,
                ..
            } => {
                assert_eq!(name, "model.layers.0.mlp.gate_proj.weight");
                assert_eq!(
                    (expected.as_slice(), found.as_slice()),
                    (&[96, 64][..], &[128, 64][..])
                );
            }
            _ => panic!("{msg}"),
        }
        assert!(
            msg.contains("[96, 64]") && msg.contains("[128, 64]"),
            "{msg}"
        );
    }

    #[test]
    fn unused_tensors_reveal_a_wrong_config() {
        let device = Device::flex();
        let (_, unused) = load_hf_dir_with_unused(&fixture_dir("qwen2"), &device).unwrap();
        assert!(unused.is_empty(), "{unused:?}");
        // Qwen2 weights described as Llama: the q/k/v biases go unread.
        let dir = copy_with_config("qwen2", |c| c["model_type"] = "llama".into());
        let (_, unused) = load_hf_dir_with_unused(dir.path(), &device).unwrap();
        assert_eq!(unused.len(), 2 * 3, "{unused:?}");
        assert!(
            unused.iter().all(|n| n.ends_with("_proj.bias")),
            "{unused:?}"
        );
    }

    #[test]
    fn unknown_model_type_is_rejected() {
        let dir = copy_with_config("llama", |c| c["model_type"] = "gpt2".into());
        let (_, msg) = load_err(dir.path());
        assert!(msg.contains("gpt2") && msg.contains("llama"), "{msg}");
    }

    #[test]
    fn corrupt_and_absent_weights_are_reported() {
        let dir = copy_with_config("llama", |_| {});
        let path = dir.path().join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let (e, msg) = load_err(dir.path());
        assert!(matches!(e, ModelError::Corrupt { .. }), "{msg}");
        assert!(msg.contains("model.safetensors"), "{msg}");

        std::fs::remove_file(&path).unwrap();
        let (e, msg) = load_err(dir.path());
        assert!(matches!(e, ModelError::NoWeights { .. }), "{msg}");
    }
}
