//! Decoder architectures, one file each, over the shared [`decoder`].
//!
//! Each architecture file turns an HF `config.json` ([`ft_arch::HfConfig`])
//! into a [`DecoderSpec`]: which projections have biases, whether q/k are
//! normalised, the attention window, the RoPE variant. [`spec_for`] picks
//! the file by `model_type` (a closed `match` over [`ft_arch::Arch`]), and
//! [`CausalLm::load`] builds the module tree from checkpoint names.
//!
//! Adding an architecture: a new file with a `spec` function (and its
//! tests), one arm in [`spec_for`], and — only if it needs a new kind of
//! layer — a field in [`decoder`].

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use ft_arch::{Arch, HfConfig};

use crate::error::ModelError;

pub mod decoder;
pub mod layers;
pub mod llama;
pub mod mistral;
pub mod qwen2;
pub mod qwen3;
pub mod smollm3;

pub use decoder::{CausalLm, DecoderSpec, KvCache};
pub use layers::RopeScaling;

/// The [`DecoderSpec`] of `cfg` (read from `origin`), by architecture.
pub fn spec_for(cfg: &HfConfig, origin: &Path) -> Result<DecoderSpec, ModelError> {
    match cfg.arch(origin)? {
        Arch::Llama => llama::spec(cfg, origin),
        Arch::Mistral => mistral::spec(cfg, origin),
        Arch::Qwen2 => qwen2::spec(cfg, origin),
        Arch::Qwen3 => qwen3::spec(cfg, origin),
        Arch::SmolLm3 => smollm3::spec(cfg, origin),
    }
}

/// The fields every architecture reads the same way; biases, q/k norm and
/// window off. Checks the head arithmetic and the activation.
pub(crate) fn base_spec(
    cfg: &HfConfig,
    arch: Arch,
    origin: &Path,
) -> Result<DecoderSpec, ModelError> {
    let unsupported = |what: String| ModelError::UnsupportedConfig {
        origin: origin.to_path_buf(),
        what,
    };
    if let Some(act) = cfg.hidden_act.as_deref()
        && act != "silu"
    {
        return Err(unsupported(format!(
            "hidden_act `{act}` (only `silu` is implemented)"
        )));
    }
    let (heads, kv) = (cfg.num_attention_heads, cfg.kv_heads());
    if heads == 0 || kv == 0 || !heads.is_multiple_of(kv) {
        return Err(unsupported(format!(
            "num_attention_heads {heads} is not a positive multiple of num_key_value_heads {kv}"
        )));
    }
    Ok(DecoderSpec {
        arch,
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_hidden_layers: cfg.num_hidden_layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim: cfg.head_dim(),
        rms_norm_eps: cfg.rms_norm_eps.unwrap_or(1e-6),
        rope_theta: cfg.rope_theta(),
        rope_scaling: rope_scaling(cfg, origin)?,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        qk_norm: false,
        sliding_window: None,
        tie_word_embeddings: cfg.tie_word_embeddings,
        nope_layers: Vec::new(),
    })
}

/// Maps `rope_parameters` / `rope_scaling` to a [`RopeScaling`].
fn rope_scaling(cfg: &HfConfig, origin: &Path) -> Result<RopeScaling, ModelError> {
    let Some(r) = cfg.rope_scaling() else {
        return Ok(RopeScaling::None);
    };
    let need = |v: Option<f64>, key: &str| {
        v.ok_or_else(|| ModelError::UnsupportedConfig {
            origin: origin.to_path_buf(),
            what: format!("rope type `{}` without `{key}`", r.kind()),
        })
    };
    match r.kind() {
        "linear" => Ok(RopeScaling::Linear {
            factor: need(r.factor, "factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: need(r.factor, "factor")?,
            low_freq_factor: need(r.low_freq_factor, "low_freq_factor")?,
            high_freq_factor: need(r.high_freq_factor, "high_freq_factor")?,
            original_max_position_embeddings: need(
                r.original_max_position_embeddings.map(|v| v as f64),
                "original_max_position_embeddings",
            )?,
        }),
        other => Err(ModelError::UnsupportedConfig {
            origin: origin.to_path_buf(),
            what: format!("rope type `{other}` (implemented: default, linear, llama3)"),
        }),
    }
}

/// A batch of packed rows: `[batch, seq]` token ids, the position of each
/// token within its own sequence, and which sequence of the row it belongs
/// to. Attention is causal within a sequence and blocked between them.
#[derive(Debug, Clone)]
pub struct PackedBatch {
    /// Token ids `[batch, seq]`.
    pub input_ids: Tensor<2, Int>,
    /// Positions `[batch, seq]`, restarting at 0 for every sequence.
    pub position_ids: Tensor<2, Int>,
    /// Sequence index within the row `[batch, seq]`; padding has `-1`.
    pub seq_ids: Tensor<2, Int>,
}

impl PackedBatch {
    /// Builds a batch from rows of sequences; rows shorter than the longest
    /// are right-padded with `pad_id` (sequence id `-1`, whose logits are
    /// meaningless and which no real token attends to).
    pub fn from_rows(rows: &[Vec<Vec<u32>>], pad_id: u32, device: &Device) -> Self {
        let width = rows
            .iter()
            .map(|r| r.iter().map(Vec::len).sum::<usize>())
            .max()
            .unwrap_or(0)
            .max(1);
        let (mut ids, mut pos, mut seq) = (Vec::new(), Vec::new(), Vec::new());
        for row in rows {
            let mut n = 0;
            for (s, sequence) in row.iter().enumerate() {
                for (p, &t) in sequence.iter().enumerate() {
                    ids.push(i64::from(t));
                    pos.push(p as i64);
                    seq.push(s as i64);
                }
                n += sequence.len();
            }
            for p in 0..width - n {
                ids.push(i64::from(pad_id));
                pos.push(p as i64);
                seq.push(-1);
            }
        }
        let shape = [rows.len(), width];
        let t = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, shape), device);
        Self {
            input_ids: t(ids),
            position_ids: t(pos),
            seq_ids: t(seq),
        }
    }

    /// `[batch, seq]`.
    pub fn dims(&self) -> [usize; 2] {
        self.input_ids.dims()
    }
}

/// Fixture comparisons shared by the architecture tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testing {
    use std::path::PathBuf;

    use burn::tensor::Device;
    use safetensors::{Dtype, SafeTensors};

    use super::PackedBatch;

    /// Logits must match transformers' to this relative error, measured as
    /// `max |ours - reference| / max |reference|` over all compared logits.
    pub const MAX_REL_ERR: f32 = 1e-4;

    /// `tests/fixtures/models/<name>` at the workspace root.
    pub fn fixture_dir(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/models")
            .join(name)
    }

    /// The reference tensors of a fixture (`reference.safetensors`).
    pub struct Reference {
        bytes: Vec<u8>,
    }

    impl Reference {
        pub fn open(name: &str) -> Self {
            Self::open_file(name, "reference.safetensors")
        }

        /// Another reference file of fixture `name` (`bf16_reference.safetensors`).
        pub fn open_file(name: &str, file: &str) -> Self {
            let path = fixture_dir(name).join(file);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Self { bytes }
        }

        fn view(&self) -> SafeTensors<'_> {
            SafeTensors::deserialize(&self.bytes).unwrap()
        }

        pub fn ints(&self, name: &str) -> Vec<i64> {
            let st = self.view();
            let t = st.tensor(name).unwrap();
            assert_eq!(t.dtype(), Dtype::I64, "{name}");
            t.data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        }

        /// Values and shape.
        pub fn floats(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
            let st = self.view();
            let t = st.tensor(name).unwrap();
            assert_eq!(t.dtype(), Dtype::F32, "{name}");
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (v, t.shape().to_vec())
        }
    }

    /// A temp copy of fixture `name` with `config.json` edited by `edit`.
    pub fn copy_with_config(
        name: &str,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(fixture_dir(name)).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
        }
        let cfg_path = tmp.path().join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        edit(&mut cfg);
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        tmp
    }

    /// `max |a - b| / max |b|`.
    pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let num = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        let den = b.iter().map(|y| y.abs()).fold(0.0f32, f32::max);
        num / den
    }

    /// [`fixture_errors`] of fixture `name`, asserted `<= MAX_REL_ERR`.
    pub fn check_fixture(name: &str) -> (f32, f32) {
        let (unpacked, packed) = fixture_errors(name, &fixture_dir(name));
        eprintln!(
            "{name}: max rel err unpacked {unpacked:.2e}, packed {packed:.2e} (limit {MAX_REL_ERR:.0e})"
        );
        assert!(unpacked <= MAX_REL_ERR, "{name} unpacked: {unpacked:e}");
        assert!(packed <= MAX_REL_ERR, "{name} packed: {packed:e}");
        (unpacked, packed)
    }

    /// Loads the model in `dir`, runs (a) fixture `name`'s two sequences as
    /// one padded batch of two rows and (b) its packed row, and returns the
    /// relative errors ([`rel_err`]) against transformers' logits.
    pub fn fixture_errors(name: &str, dir: &std::path::Path) -> (f32, f32) {
        let device = Device::flex();
        let model = crate::load_hf_dir(dir, &device).unwrap();
        let r = Reference::open(name);
        let to_u32 = |v: Vec<i64>| {
            v.into_iter()
                .map(|t| u32::try_from(t).unwrap())
                .collect::<Vec<_>>()
        };

        // (a) Unpacked: row i holds sequence i, right-padded.
        let seqs: Vec<Vec<u32>> = (0..2)
            .map(|i| to_u32(r.ints(&format!("unpacked.{i}.input_ids"))))
            .collect();
        let batch =
            PackedBatch::from_rows(&[vec![seqs[0].clone()], vec![seqs[1].clone()]], 0, &device);
        let [_, width] = batch.dims();
        let logits: Vec<f32> = model.forward(&batch).into_data().try_to_vec().unwrap();
        let vocab = logits.len() / (2 * width);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for (i, seq) in seqs.iter().enumerate() {
            let (want, shape) = r.floats(&format!("unpacked.{i}.logits"));
            assert_eq!(shape, [seq.len(), vocab]);
            ours.extend_from_slice(&logits[i * width * vocab..(i * width + seq.len()) * vocab]);
            theirs.extend(want);
        }
        let unpacked = rel_err(&ours, &theirs);

        // (b) Packed: one row, split into its sequences by `seq_ids`.
        let ours = packed_logits(&model, &r, &device);
        let (theirs, _) = r.floats("packed.logits");
        let packed = rel_err(&ours, &theirs);
        (unpacked, packed)
    }

    /// `model`'s f32 logits for the packed row of reference `r`.
    pub fn packed_logits(model: &crate::CausalLm, r: &Reference, device: &Device) -> Vec<f32> {
        let ids: Vec<u32> = r
            .ints("packed.input_ids")
            .into_iter()
            .map(|t| u32::try_from(t).unwrap())
            .collect();
        let seq_ids = r.ints("packed.seq_ids");
        let mut row: Vec<Vec<u32>> = Vec::new();
        for (k, (&t, &s)) in ids.iter().zip(&seq_ids).enumerate() {
            if k == 0 || s != seq_ids[k - 1] {
                row.push(Vec::new());
            }
            row.last_mut().unwrap().push(t);
        }
        let batch = PackedBatch::from_rows(&[row], 0, device);
        let positions: Vec<i64> = batch.position_ids.clone().try_into_vec_as().unwrap();
        assert_eq!(positions, r.ints("packed.position_ids"));
        model.forward(&batch).into_data().try_to_vec().unwrap()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use burn::tensor::{Device, Int, Tensor};

    use super::PackedBatch;
    use super::testing::{Reference, fixture_dir, rel_err};

    /// The fixture checks can fail: the packed reference is far from what a
    /// model gets when it ignores the sequence boundaries or the positions,
    /// so a tolerance of 1e-4 separates right from wrong. (Positions that
    /// run on across the row instead of restarting give the same logits:
    /// RoPE scores depend only on position differences, and the mask keeps
    /// every difference inside one sequence.)
    #[test]
    fn packed_reference_needs_mask_and_positions() {
        let device = Device::flex();
        let model = crate::load_hf_dir(&fixture_dir("llama"), &device).unwrap();
        let r = Reference::open("llama");
        let (want, _) = r.floats("packed.logits");
        let n = want.len() / 256;
        let row = |v: Vec<i64>| {
            Tensor::<2, Int>::from_data(burn::tensor::TensorData::new(v, [1, n]), &device)
        };
        let run = |position_ids: Vec<i64>, seq_ids: Vec<i64>| {
            let batch = PackedBatch {
                input_ids: row(r.ints("packed.input_ids")),
                position_ids: row(position_ids),
                seq_ids: row(seq_ids),
            };
            let got: Vec<f32> = model.forward(&batch).into_data().try_to_vec().unwrap();
            rel_err(&got, &want)
        };
        let right = run(r.ints("packed.position_ids"), r.ints("packed.seq_ids"));
        let one_sequence = run(r.ints("packed.position_ids"), vec![0; n]);
        let no_rope = run(vec![0; n], r.ints("packed.seq_ids"));
        let run_on = run((0..n as i64).collect(), r.ints("packed.seq_ids"));
        eprintln!(
            "llama packed: right {right:.1e}, no mask {one_sequence:.1e}, no rope {no_rope:.1e}, \
             run-on positions {run_on:.1e}"
        );
        assert!(right < 1e-4 && run_on < 1e-4);
        assert!(one_sequence > 1e-2 && no_rope > 1e-2);
    }

    /// bf16 compute ([`crate::CausalLm::cast_params`]) against transformers' own bf16 forward
    /// of the packed reference batch (`tests/fixtures/gen/bf16_logits.py`): much closer to it
    /// (≤ 1e-4) while bf16 is ~1e-2 from f32: ft rounds to bf16 where transformers' eager
    /// attention path does (products, RoPE, residuals in bf16; RMSNorm, SiLU, softmax and the
    /// logits in f32).
    #[test]
    fn bf16_forward_matches_transformers_bf16() {
        use burn::tensor::DType;
        let device = Device::flex();
        for name in ["llama", "mistral", "qwen3"] {
            let model = crate::load_hf_dir(&fixture_dir(name), &device)
                .unwrap()
                .cast_params(DType::BF16);
            assert_eq!(model.dtype(), DType::BF16);
            let r = Reference::open(name);
            let ours = super::testing::packed_logits(&model, &r, &device);
            let (f32_ref, _) = r.floats("packed.logits");
            let (hf_bf16, _) = Reference::open_file(name, "bf16_reference.safetensors")
                .floats("packed.logits_bf16");
            let (vs_hf, hf_vs_f32) = (rel_err(&ours, &hf_bf16), rel_err(&hf_bf16, &f32_ref));
            eprintln!(
                "{name}: ft bf16 vs transformers bf16 {vs_hf:.2e}; transformers bf16 vs f32 \
                 {hf_vs_f32:.2e}; ft bf16 vs f32 {:.2e}",
                rel_err(&ours, &f32_ref)
            );
            assert!(
                vs_hf < hf_vs_f32 / 4.0,
                "{name}: {vs_hf:e} vs {hf_vs_f32:e}"
            );
        }
    }

    #[test]
    fn from_rows_pads_with_own_sequence() {
        let b = PackedBatch::from_rows(
            &[vec![vec![5, 6], vec![7]], vec![vec![8]]],
            0,
            &Device::flex(),
        );
        let get = |t: Tensor<2, Int>| -> Vec<i64> { t.try_into_vec_as().unwrap() };
        assert_eq!(get(b.input_ids.clone()), [5, 6, 7, 8, 0, 0]);
        assert_eq!(get(b.position_ids.clone()), [0, 1, 0, 0, 0, 1]);
        assert_eq!(get(b.seq_ids.clone()), [0, 0, 1, 0, -1, -1]);
    }
}
