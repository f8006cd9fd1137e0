//! Loading a model from a GGUF file (llama.cpp's format).
//!
//! [`GgufSource`] serves a GGUF file's tensors under their HF names
//! ([`ft_arch::gguf_names`]), dequantized to f32 by `ft-gguf` (F32, F16,
//! BF16, Q8_0, Q4_0, Q4_1, Q5_x, Q4_K, Q5_K, Q6_K), so the same
//! [`CausalLm::load`] walk that reads safetensors reads GGUF. The
//! hyperparameters come from the `{arch}.*` metadata (GGUF spec:
//! ggml `docs/gguf.md`, "LLaMA" section).
//!
//! llama.cpp's converter permutes the rows of the q and k projections of
//! `llama`-arch models so that its RoPE can rotate adjacent pairs: within
//! each head, HF row `t·d/2 + j` (`t ∈ {0,1}`, `j < d/2`) is stored at row
//! `2j + t`. [`unpermute_rows`] undoes it, giving back HF's rotate-half
//! layout. Qwen2/3 files are not permuted.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use ft_arch::Arch;
use ft_arch::gguf_names::{RopeProjection, hf_to_gguf, needs_rope_permutation};
use ft_gguf::GgufFile;

use crate::arch::{CausalLm, DecoderSpec, RopeScaling};
use crate::error::ModelError;
use crate::weights::{HostTensor, TensorSource, VarBuilder, WeightFile};

/// A GGUF file as a [`TensorSource`] with HF tensor names.
pub struct GgufSource {
    file: GgufFile,
    path: PathBuf,
    /// `general.architecture`.
    arch: String,
    /// Query heads (for un-permuting q).
    n_head: usize,
    /// Key/value heads (for un-permuting k).
    n_head_kv: usize,
}

impl GgufSource {
    /// Opens and parses `path` (memory-mapped; tensor data is read lazily).
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = GgufFile::open(path)?;
        let arch = file.architecture()?.to_string();
        let n_head = usize_key(&file, &format!("{arch}.attention.head_count"))?;
        let n_head_kv = match file
            .metadata()
            .get(&format!("{arch}.attention.head_count_kv"))
        {
            Some(v) => v.as_u64().map_or(n_head, |v| v as usize),
            None => n_head,
        };
        Ok(Self {
            file,
            path: path.to_path_buf(),
            arch,
            n_head,
            n_head_kv,
        })
    }

    /// The underlying file (metadata, tokenizer keys).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The decoder spec from the `{arch}.*` metadata.
    pub fn spec(&self) -> Result<DecoderSpec, ModelError> {
        let f = &self.file;
        let a = self.arch.as_str();
        let unsupported = |what: String| ModelError::UnsupportedConfig {
            origin: self.path.clone(),
            what,
        };
        let arch = match a {
            // Mistral checkpoints are converted as `llama`; without a
            // window the two are the same network.
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "smollm3" => Arch::SmolLm3,
            other => {
                return Err(unsupported(format!(
                    "general.architecture `{other}` (implemented: llama, qwen2, qwen3, smollm3)"
                )));
            }
        };
        if f.tensor_info("rope_freqs.weight").is_ok() {
            return Err(unsupported(
                "per-frequency RoPE factors (`rope_freqs.weight`, Llama 3.1 scaling) are not implemented for GGUF".into(),
            ));
        }
        let key = |k: &str| format!("{a}.{k}");
        let hidden = usize_key(f, &key("embedding_length"))?;
        let embd = f.tensor_info("token_embd.weight")?;
        let vocab = match f
            .metadata()
            .get(&key("vocab_size"))
            .and_then(|v| v.as_u64())
        {
            Some(v) => v as usize,
            None => embd.shape.get(1).copied().unwrap_or(0) as usize,
        };
        let head_dim = match f
            .metadata()
            .get(&key("attention.key_length"))
            .and_then(|v| v.as_u64())
        {
            Some(v) => v as usize,
            None => hidden / self.n_head.max(1),
        };
        let rope_scaling = match f.metadata().get_str(&key("rope.scaling.type")) {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: f
                    .metadata()
                    .get(&key("rope.scaling.factor"))
                    .and_then(|v| v.as_f64())
                    .unwrap_or(1.0),
            },
            Some(other) => return Err(unsupported(format!("rope scaling `{other}`"))),
        };
        let get_f64 = |k: &str| f.metadata().get(&key(k)).and_then(|v| v.as_f64());
        if self.n_head_kv == 0 || !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(unsupported(format!(
                "head_count {} is not a multiple of head_count_kv {}",
                self.n_head, self.n_head_kv
            )));
        }
        Ok(DecoderSpec {
            arch,
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: usize_key(f, &key("feed_forward_length"))?,
            num_hidden_layers: usize_key(f, &key("block_count"))?,
            num_attention_heads: self.n_head,
            num_key_value_heads: self.n_head_kv,
            head_dim,
            rms_norm_eps: get_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            rope_theta: get_f64("rope.freq_base").unwrap_or(10_000.0),
            rope_scaling,
            qkv_bias: f.tensor_info("blk.0.attn_q.bias").is_ok(),
            o_bias: f.tensor_info("blk.0.attn_output.bias").is_ok(),
            mlp_bias: f.tensor_info("blk.0.ffn_up.bias").is_ok(),
            qk_norm: f.tensor_info("blk.0.attn_q_norm.weight").is_ok(),
            sliding_window: None,
            tie_word_embeddings: f.tensor_info("output.weight").is_err(),
            // llama.cpp's smollm3: every 4th layer is NoPE.
            nope_layers: if arch == Arch::SmolLm3 {
                (0..usize_key(f, &key("block_count"))?)
                    .map(|i| (i + 1) % 4 == 0)
                    .collect()
            } else {
                Vec::new()
            },
        })
    }
}

/// A required non-negative integer metadata value.
fn usize_key(f: &GgufFile, key: &str) -> Result<usize, ModelError> {
    Ok(usize::try_from(f.require_u64(key)?).unwrap_or(usize::MAX))
}

impl TensorSource for GgufSource {
    fn contains(&self, name: &str) -> bool {
        hf_to_gguf(name).is_some_and(|g| self.file.tensor_info(&g).is_ok())
    }

    fn load(&self, name: &str) -> Result<HostTensor, ModelError> {
        let missing = || ModelError::MissingTensor {
            name: name.to_string(),
            origin: self.path.clone(),
        };
        let gguf_name = hf_to_gguf(name).ok_or_else(missing)?;
        let info = self.file.tensor_info(&gguf_name).map_err(|_| missing())?;
        // ggml lists dimensions fastest-first: reverse for PyTorch order.
        let shape: Vec<usize> = info.shape.iter().rev().map(|&d| d as usize).collect();
        let mut data = self.file.dequantize(&gguf_name)?;
        if let Some(which) = needs_rope_permutation(&self.arch, name) {
            let heads = match which {
                RopeProjection::Query => self.n_head,
                RopeProjection::Key => self.n_head_kv,
            };
            let rows = shape.first().copied().unwrap_or(0);
            data = unpermute_rows(&data, rows, heads).ok_or_else(|| {
                ModelError::UnsupportedConfig {
                    origin: self.path.clone(),
                    what: format!(
                        "`{gguf_name}` has {rows} rows, not a multiple of 2·{heads} heads"
                    ),
                }
            })?;
        }
        Ok(HostTensor { shape, data })
    }

    fn origin(&self) -> &Path {
        &self.path
    }

    fn weight_files(&self) -> Vec<WeightFile<'_>> {
        // Everything before the data section: the metadata (architecture,
        // head counts, the vocabulary) and the tensor infos (names, types,
        // shapes, offsets).
        let bytes = self.file.bytes();
        let end = usize::try_from(self.file.header().data_offset)
            .map_or(bytes.len(), |n| n.min(bytes.len()));
        vec![WeightFile {
            path: &self.path,
            header: &bytes[..end],
        }]
    }
}

pub use ft_gguf::unpermute_rows;

/// Loads a GGUF model onto `device`, dequantized to f32.
pub fn load_gguf(path: &Path, device: &Device) -> Result<CausalLm, ModelError> {
    let source = GgufSource::open(path)?;
    let spec = source.spec()?;
    tracing::debug!(path = %path.display(), arch = ?spec.arch, "loading GGUF model");
    CausalLm::load(&spec, &VarBuilder::new(&source, device))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The SmolLM2 chat template's rendering of "What is the capital of
    /// France?" (see `smollm2_gguf_answers_paris`).
    const PROMPT: [u32; 37] = [
        1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
        407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1,
        520, 9531, 198,
    ];

    /// The example model, or `None` with a SKIPPED line naming `test`.
    fn smollm2_gguf(test: &str) -> Option<PathBuf> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/models/smollm2-135m-instruct.gguf");
        if !path.is_file() {
            eprintln!(
                "SKIPPED {test}: {} is absent (run scripts/fetch-smollm2.sh)",
                path.display()
            );
            return None;
        }
        Some(path)
    }

    /// Real SmolLM2-135M-Instruct (Q4_1/Q8_0 GGUF): the greedy answer to
    /// a chat-templated "What is the capital of France?" names Paris.
    ///
    /// Input ids are hard-coded: the SmolLM2 chat template rendered with
    /// the default system prompt and `add_generation_prompt`, tokenized by
    /// HF `tokenizers` from `tests/fixtures/tokenizers/smollm2/tokenizer.json`
    /// (`python3 tests/fixtures/gen/tiny_models.py --smollm2-prompt`). The
    /// answer is read back through the GGUF's own `tokenizer.ggml.tokens`.
    #[test]
    fn smollm2_gguf_answers_paris() {
        let Some(path) = smollm2_gguf("smollm2_gguf_answers_paris") else {
            return;
        };
        let device = Device::flex();
        let source = GgufSource::open(&path).unwrap();
        let spec = source.spec().unwrap();
        assert_eq!(
            (spec.num_hidden_layers, spec.hidden_size, spec.head_dim),
            (30, 576, 64)
        );
        assert!(spec.tie_word_embeddings);
        let model = CausalLm::load(&spec, &VarBuilder::new(&source, &device)).unwrap();
        let mut ids = PROMPT.to_vec();
        let mut answer = Vec::new();
        for _ in 0..8 {
            let batch = crate::PackedBatch::from_rows(&[vec![ids.clone()]], 0, &device);
            let next: Vec<i64> = model.next_token_greedy(&batch).try_into_vec_as().unwrap();
            let next = u32::try_from(next[0]).unwrap();
            if next == 2 {
                break;
            }
            ids.push(next);
            answer.push(next);
        }
        let text = token_text(&source, &answer);
        eprintln!("smollm2 greedy answer ids {answer:?}: {text:?}");
        assert!(text.contains("Paris"), "{text:?}");
    }

    /// The same prompt through the KV cache ([`crate::generate`]): greedy
    /// generation up to 64 tokens or `<|im_end|>` (id 2) names Paris, and
    /// its first tokens are those of the rerun-everything path above
    /// (`smollm2_gguf_answers_paris`, which prints them). Prints the decode
    /// speed; timings are measured by `ft generate` runs, not asserted here.
    #[test]
    fn smollm2_gguf_generates_paris_with_kv_cache() {
        let Some(path) = smollm2_gguf("smollm2_gguf_generates_paris_with_kv_cache") else {
            return;
        };
        let device = Device::flex();
        let source = GgufSource::open(&path).unwrap();
        let model =
            CausalLm::load(&source.spec().unwrap(), &VarBuilder::new(&source, &device)).unwrap();
        let opts = crate::GenerateOptions {
            max_new_tokens: 64,
            stop_token_ids: vec![2],
            ..crate::GenerateOptions::default()
        };
        let g = crate::generate(&model, &PROMPT, &opts, &mut |_| {}).unwrap();
        let text = token_text(&source, &g.tokens);
        eprintln!(
            "smollm2 KV-cache greedy: {} tokens, stop {:?}, prefill {:.2} s, {} decode steps at {:.1} tokens/s: {text:?}",
            g.tokens.len(),
            g.stop,
            g.prefill_time.as_secs_f64(),
            g.decode_steps,
            g.decode_tokens_per_sec().unwrap_or(0.0),
        );
        assert!(text.contains("Paris"), "{text:?}");
        // The first 4 tokens by rerunning the whole sequence each step.
        let mut ids = PROMPT.to_vec();
        for _ in 0..4 {
            let batch = crate::PackedBatch::from_rows(&[vec![ids.clone()]], 0, &device);
            let next: Vec<i64> = model.next_token_greedy(&batch).try_into_vec_as().unwrap();
            ids.push(u32::try_from(next[0]).unwrap());
        }
        assert_eq!(g.tokens[..4], ids[PROMPT.len()..]);
    }

    /// Concatenated token strings (byte-level BPE: `Ġ` stands for a space).
    fn token_text(source: &GgufSource, ids: &[u32]) -> String {
        let Some(ft_gguf::Value::Array(ft_gguf::Array::String(tokens))) =
            source.file().metadata().get("tokenizer.ggml.tokens")
        else {
            panic!("no tokenizer.ggml.tokens");
        };
        ids.iter()
            .map(|&i| tokens[i as usize].replace('Ġ', " "))
            .collect()
    }
}
