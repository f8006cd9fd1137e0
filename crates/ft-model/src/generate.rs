//! Text generation with a KV cache: greedy decoding or temperature /
//! top-k / top-p (nucleus) sampling from a seeded RNG.
//!
//! ```text
//! prompt ids ─ forward_cached (prefill, one chunk) ─▶ logits of the last token
//! loop: sample ─▶ stop token? done : emit, forward_cached(that one token)
//! ```
//!
//! The model computes only the new token per step ([`KvCache`],
//! [`CausalLm::forward_cached`]); choosing the token happens on the host
//! over the `vocab` logits of the last position ([`Sampler`]).
//!
//! Sampling follows transformers' `generate` warpers, in its order:
//! logits / temperature, then top-k, then top-p (keep the most probable
//! tokens until their probability reaches `top_p`; Holtzman et al. 2019,
//! <https://arxiv.org/abs/1904.09751>), renormalise, draw. `temperature ==
//! 0` is greedy (argmax). The RNG is ChaCha8 seeded with `seed`
//! (`rand_chacha`, whose stream is fixed across versions and platforms), so
//! the same seed, model and prompt give the same tokens.
//!
//! Batch size 1: one conversation at a time.

use std::time::{Duration, Instant};

use burn::tensor::{Int, Tensor, TensorData, TensorReadError};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::arch::CausalLm;
pub use crate::arch::KvCache;

/// How to generate: length, sampling and stop tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// At most this many new tokens (stop tokens not counted). Default 256.
    pub max_new_tokens: usize,
    /// Softmax temperature; `0` means greedy. Default 0.
    pub temperature: f32,
    /// Nucleus sampling: sample among the most probable tokens whose
    /// probabilities sum to at least `top_p`, in `(0, 1]`; `1` keeps all.
    /// Default 1.
    pub top_p: f32,
    /// Sample among the `k` most probable tokens only. Default `None` (all).
    pub top_k: Option<usize>,
    /// RNG seed for sampling. Default 0.
    pub seed: u64,
    /// Generation ends at any of these (not included in the output), e.g.
    /// EOS and end-of-turn tokens. Default none.
    pub stop_token_ids: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            top_k: None,
            seed: 0,
            stop_token_ids: Vec::new(),
        }
    }
}

impl GenerateOptions {
    /// Checks the sampling parameters.
    pub fn check(&self) -> Result<(), GenerateError> {
        let bad = |what: String| Err(GenerateError::InvalidOption { what });
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!(
                "temperature {} (expected a finite number >= 0; 0 is greedy)",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!(
                "top_p {} (expected 0 < top_p <= 1; 1 keeps every token)",
                self.top_p
            ));
        }
        if self.top_k == Some(0) {
            return bad("top_k 0 (expected at least 1, or none for all tokens)".into());
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced this stop token.
    StopToken(u32),
    /// `max_new_tokens` were generated.
    MaxNewTokens,
}

/// The result of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The new tokens, without the stop token.
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop: StopReason,
    /// Tokens run through the model as the prompt chunk.
    pub prompt_tokens: usize,
    /// Time for the prompt chunk and the first token.
    pub prefill_time: Duration,
    /// Time for the remaining one-token steps.
    pub decode_time: Duration,
    /// One-token steps in `decode_time`.
    pub decode_steps: usize,
}

impl Generation {
    /// Decode speed: one-token steps per second (`None` before any step).
    pub fn decode_tokens_per_sec(&self) -> Option<f64> {
        let s = self.decode_time.as_secs_f64();
        (self.decode_steps > 0 && s > 0.0).then(|| self.decode_steps as f64 / s)
    }
}

/// Errors from generation.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A sampling parameter is out of range.
    #[error("invalid generation option: {what}")]
    InvalidOption {
        /// The value and the allowed range.
        what: String,
    },
    /// Nothing to run: no prompt tokens (the model needs at least one
    /// token to predict the next).
    #[error("the prompt is empty; generation needs at least one token (e.g. BOS)")]
    EmptyPrompt,
    /// A token id does not fit the model's vocabulary.
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// Reading the logits back from the device failed.
    #[error("reading logits from the device: {0}")]
    Read(#[from] TensorReadError),
}

/// Picks the next token from a row of logits: greedy or sampled (see the
/// module docs for the order of the steps).
#[derive(Debug, Clone)]
pub struct Sampler {
    rng: ChaCha8Rng,
    temperature: f32,
    top_p: f32,
    top_k: Option<usize>,
}

impl Sampler {
    /// A sampler for `opts` (checked), its RNG seeded with `opts.seed`.
    pub fn new(opts: &GenerateOptions) -> Result<Self, GenerateError> {
        opts.check()?;
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            temperature: opts.temperature,
            top_p: opts.top_p,
            top_k: opts.top_k,
        })
    }

    /// The next token for `logits` (`[vocab]`, not empty). NaN logits are
    /// never chosen unless every logit is NaN.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        // 1. Temperature, then softmax weights (unnormalised) in f64.
        let t = f64::from(self.temperature);
        let max = logits
            .iter()
            .filter(|l| !l.is_nan())
            .fold(f64::NEG_INFINITY, |m, &l| m.max(f64::from(l)));
        if !max.is_finite() {
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let w = if l.is_nan() {
                    0.0
                } else {
                    ((f64::from(l) - max) / t).exp()
                };
                (i as u32, w)
            })
            .filter(|&(_, w)| w > 0.0)
            .collect();
        // 2. Most probable first (ties by id, so the order is deterministic).
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        // 3. Top-k.
        if let Some(k) = self.top_k {
            cand.truncate(k.max(1));
        }
        // 4. Top-p: the shortest prefix whose mass reaches top_p.
        let total: f64 = cand.iter().map(|c| c.1).sum();
        if self.top_p < 1.0 {
            let limit = f64::from(self.top_p) * total;
            let mut acc = 0.0;
            let mut keep = cand.len();
            for (i, c) in cand.iter().enumerate() {
                acc += c.1;
                if acc >= limit {
                    keep = i + 1;
                    break;
                }
            }
            cand.truncate(keep.max(1));
        }
        // 5. Draw from the kept tokens, renormalised.
        let kept: f64 = cand.iter().map(|c| c.1).sum();
        let mut u = self.uniform() * kept;
        for &(id, w) in &cand {
            if u < w {
                return id;
            }
            u -= w;
        }
        // Rounding left u just above the last weight.
        cand.last().map_or_else(|| argmax(logits), |c| c.0)
    }

    /// Uniform in `[0, 1)` from 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Index of the largest logit (the first on ties; NaN never wins unless
/// everything is NaN, then 0).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_nan() && (!found || v > best_v) {
            best = i;
            best_v = v;
            found = true;
        }
    }
    best as u32
}

/// Generates a continuation of `prompt` with a fresh cache; `on_token` sees
/// each new token as soon as it is chosen (stop tokens excluded).
pub fn generate(
    model: &CausalLm,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32),
) -> Result<Generation, GenerateError> {
    let mut cache = model.new_cache();
    generate_cached(model, &mut cache, prompt, opts, on_token)
}

/// Generates a continuation of the tokens in `cache` followed by `prompt`
/// (the tokens not in the cache yet; at least one). On return the cache
/// holds everything run through the model: the prompt and every emitted
/// token but the last one chosen (which was never fed back).
pub fn generate_cached(
    model: &CausalLm,
    cache: &mut KvCache,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32),
) -> Result<Generation, GenerateError> {
    let mut sampler = Sampler::new(opts)?;
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let vocab = model.spec.vocab_size;
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
        return Err(GenerateError::TokenOutOfRange { id, vocab });
    }
    let device = model.model.embed_tokens.weight.val().device();
    let mut result = Generation {
        tokens: Vec::new(),
        stop: StopReason::MaxNewTokens,
        prompt_tokens: prompt.len(),
        prefill_time: Duration::ZERO,
        decode_time: Duration::ZERO,
        decode_steps: 0,
    };
    let mut input: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
    while result.tokens.len() < opts.max_new_tokens {
        let start = Instant::now();
        let n = input.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(input, [1, n]), &device);
        let logits: Vec<f32> = model
            .forward_cached_last(ids, cache)
            .try_into_vec_as::<f32>()?;
        let next = sampler.sample(&logits);
        if result.tokens.is_empty() {
            result.prefill_time = start.elapsed();
        } else {
            result.decode_time += start.elapsed();
            result.decode_steps += 1;
        }
        if opts.stop_token_ids.contains(&next) {
            result.stop = StopReason::StopToken(next);
            break;
        }
        result.tokens.push(next);
        on_token(next);
        input = vec![i64::from(next)];
    }
    Ok(result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::PackedBatch;
    use crate::arch::testing::fixture_dir;

    fn sampler(temperature: f32, top_p: f32, top_k: Option<usize>, seed: u64) -> Sampler {
        Sampler::new(&GenerateOptions {
            temperature,
            top_p,
            top_k,
            seed,
            ..GenerateOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn options_are_checked() {
        let ok = GenerateOptions::default();
        assert!(ok.check().is_ok());
        for bad in [
            GenerateOptions {
                temperature: -1.0,
                ..ok.clone()
            },
            GenerateOptions {
                temperature: f32::NAN,
                ..ok.clone()
            },
            GenerateOptions {
                top_p: 0.0,
                ..ok.clone()
            },
            GenerateOptions {
                top_p: 1.5,
                ..ok.clone()
            },
            GenerateOptions {
                top_k: Some(0),
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(bad.check(), Err(GenerateError::InvalidOption { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn argmax_skips_nan_and_takes_first_max() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, 1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -5.0, -6.0]), 1);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
    }

    /// probabilities 0.5, 0.3, 0.15, 0.05 (by construction of the logits).
    fn four_logits() -> Vec<f32> {
        [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect()
    }

    /// Which tokens 2000 draws reach, and how often token 0 comes up.
    fn support(s: &mut Sampler, logits: &[f32]) -> (Vec<u32>, usize) {
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..2000 {
            *seen.entry(s.sample(logits)).or_insert(0usize) += 1;
        }
        let zeros = seen.get(&0).copied().unwrap_or(0);
        (seen.into_keys().collect(), zeros)
    }

    #[test]
    fn top_p_and_top_k_restrict_the_support() {
        let l = four_logits();
        // All four are reachable at top_p 1; token 0 about half the time.
        let (all, zeros) = support(&mut sampler(1.0, 1.0, None, 1), &l);
        assert_eq!(all, [0, 1, 2, 3]);
        assert!((850..1150).contains(&zeros), "{zeros}");
        // 0.5 + 0.3 reaches 0.7: tokens 0 and 1 only, 0 about 5/8 of draws.
        let (p, zeros) = support(&mut sampler(1.0, 0.7, None, 1), &l);
        assert_eq!(p, [0, 1]);
        assert!((1100..1400).contains(&zeros), "{zeros}");
        // 0.5 reaches 0.5 exactly: token 0 only.
        assert_eq!(support(&mut sampler(1.0, 0.5, None, 1), &l).0, [0]);
        // top-k 3 drops the last.
        assert_eq!(support(&mut sampler(1.0, 1.0, Some(3), 1), &l).0, [0, 1, 2]);
        // Low temperature sharpens the distribution to the argmax.
        assert_eq!(support(&mut sampler(1e-3, 1.0, None, 1), &l).0, [0]);
    }

    #[test]
    fn sampling_is_reproducible_from_the_seed() {
        let l = four_logits();
        let draw = |seed| {
            let mut s = sampler(1.0, 1.0, None, seed);
            (0..64).map(|_| s.sample(&l)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    fn load(name: &str) -> CausalLm {
        crate::load_hf_dir(&fixture_dir(name), &Device::flex()).unwrap()
    }

    const PROMPT: [u32; 5] = [1, 17, 101, 42, 200];

    /// Greedy tokens by rerunning the full forward each step.
    fn greedy_reference(model: &CausalLm, n: usize) -> Vec<u32> {
        let device = Device::flex();
        let mut ids = PROMPT.to_vec();
        for _ in 0..n {
            let batch = PackedBatch::from_rows(&[vec![ids.clone()]], 0, &device);
            let next: Vec<i64> = model.next_token_greedy(&batch).try_into_vec_as().unwrap();
            ids.push(u32::try_from(next[0]).unwrap());
        }
        ids[PROMPT.len()..].to_vec()
    }

    fn run(model: &CausalLm, opts: &GenerateOptions) -> Generation {
        let mut streamed = Vec::new();
        let g = generate(model, &PROMPT, opts, &mut |t| streamed.push(t)).unwrap();
        assert_eq!(streamed, g.tokens, "the callback sees every token");
        g
    }

    #[test]
    fn greedy_generation_matches_full_forward_argmax() {
        for name in ["llama", "qwen3"] {
            let model = load(name);
            let opts = GenerateOptions {
                max_new_tokens: 10,
                ..GenerateOptions::default()
            };
            let g = run(&model, &opts);
            assert_eq!(g.stop, StopReason::MaxNewTokens);
            assert_eq!(g.tokens, greedy_reference(&model, 10), "{name}");
        }
    }

    #[test]
    fn generation_stops_at_a_stop_token() {
        let model = load("llama");
        let want = greedy_reference(&model, 6);
        let stop = want[3];
        let first = want.iter().position(|&t| t == stop).unwrap();
        let opts = GenerateOptions {
            max_new_tokens: 10,
            stop_token_ids: vec![stop],
            ..GenerateOptions::default()
        };
        let g = run(&model, &opts);
        assert_eq!(g.stop, StopReason::StopToken(stop));
        assert_eq!(g.tokens, want[..first]);
    }

    #[test]
    fn sampling_limits_equal_greedy_and_seeds_reproduce() {
        let model = load("qwen3");
        let greedy = greedy_reference(&model, 10);
        let opts = |temperature, top_p, seed| GenerateOptions {
            max_new_tokens: 10,
            temperature,
            top_p,
            seed,
            ..GenerateOptions::default()
        };
        // Same seed, same tokens; another seed, other tokens (a random tiny
        // model's next-token distribution is flat, so sampling wanders).
        let a = run(&model, &opts(1.0, 1.0, 3)).tokens;
        assert_eq!(a, run(&model, &opts(1.0, 1.0, 3)).tokens);
        assert_ne!(a, run(&model, &opts(1.0, 1.0, 4)).tokens);
        assert_ne!(a, greedy);
        // Temperature → 0 and top_p → 0 both leave only the argmax.
        assert_eq!(run(&model, &opts(1e-5, 1.0, 3)).tokens, greedy);
        assert_eq!(run(&model, &opts(1.0, 1e-6, 3)).tokens, greedy);
    }

    #[test]
    fn bad_prompts_are_errors() {
        let model = load("llama");
        let opts = GenerateOptions::default();
        assert!(matches!(
            generate(&model, &[], &opts, &mut |_| {}),
            Err(GenerateError::EmptyPrompt)
        ));
        assert!(matches!(
            generate(&model, &[1, 100_000], &opts, &mut |_| {}),
            Err(GenerateError::TokenOutOfRange { id: 100_000, .. })
        ));
    }
}
