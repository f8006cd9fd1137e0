//! `ft generate`: chat with the base model of a config.
//!
//! [`ChatSession::load`] builds everything a turn needs from the config:
//! the model (`model.base_model`, an HF directory or a `.gguf` file, on
//! `model.device`; NF4-rounded as QLoRA trained on it when the config is
//! 4-bit), the tokenizer ([`prepare::tokenizer_dir`]) and the chat
//! template the `template` section selects, resolved and rendered as the
//! prepare stage does, so generation sees prompts formatted exactly like the
//! training data. [`ChatSession::reply`] appends a user message, renders the
//! conversation with `add_generation_prompt`, generates with the model's
//! KV cache ([`ft_model::generate`]) and streams the decoded text.
//!
//! Between turns the cache keeps the tokens that the new prompt shares with
//! the previous one, so a growing conversation only runs its new tokens.
//!
//! Stop tokens: the tokenizer's EOS plus the end-of-turn tokens of the
//! common templates ([`END_OF_TURN_TOKENS`]) that the vocabulary has.

use std::path::PathBuf;

use ft_model::generate::{GenerateOptions, Generation, KvCache, generate_cached};
use ft_model::{CausalLm, DeviceError, ModelError};
use ft_template::{ChatTemplate, TemplateError, TemplateMessage};
use ft_tokenize::{HfTokenizer, TokenizeError};

use crate::load::Loaded;
use crate::prepare;

/// End-of-turn tokens of ChatML (`<|im_end|>`), Llama 3 (`<|eot_id|>`,
/// `<|end_of_text|>`), Mistral and Llama 2 (`</s>`) and Gemma
/// (`<end_of_turn>`); each one in the vocabulary stops generation.
pub const END_OF_TURN_TOKENS: [&str; 5] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "</s>",
    "<end_of_turn>",
];

/// Errors setting up or running generation.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The tokenizer could not be found or loaded.
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
    /// The chat template could not be resolved, compiled or rendered.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The model could not be loaded.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// `model.device` is not available.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Generation itself failed.
    #[error(transparent)]
    Generate(#[from] ft_model::GenerateError),
    /// `model.base_model` is not a local model.
    #[error("{message}")]
    BaseModel {
        /// What is wrong and what to do.
        message: String,
    },
    /// The tokenizer failed on a prompt or on generated ids.
    #[error("tokenizer `{dir}`: {message}")]
    Tokenizer {
        /// The tokenizer directory.
        dir: PathBuf,
        /// The tokenizer's message.
        message: String,
    },
}

/// What [`ChatSession::reply`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The decoded answer.
    pub text: String,
    /// The generation (tokens, stop reason, timings).
    pub generation: Generation,
    /// Prompt tokens whose keys and values were reused from the last turn.
    pub reused_tokens: usize,
}

/// The tokenizer, chat template and generation options of a config: turns
/// a conversation into prompt ids and generated ids into text, for any
/// model with that vocabulary (the base in [`ChatSession`], the model being
/// trained in [`sampler`]).
pub struct Prompter {
    tokenizer: HfTokenizer,
    /// `None`: prompts go to the model as raw text (`--no-chat-template`).
    template: Option<ChatTemplate>,
    opts: GenerateOptions,
}

impl std::fmt::Debug for Prompter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompter")
            .field("tokenizer", &self.tokenizer.dir)
            .field("template", &self.template)
            .field("opts", &self.opts)
            .finish()
    }
}

impl Prompter {
    /// The tokenizer and (with `chat_template`) the template of `loaded`,
    /// found and resolved as the prepare stage does. `opts.stop_token_ids`
    /// is extended with the tokenizer's EOS and end-of-turn tokens.
    pub fn load(
        loaded: &Loaded,
        mut opts: GenerateOptions,
        chat_template: bool,
    ) -> Result<Self, GenerateError> {
        opts.check()?;
        let cfg = &loaded.config;
        let tok_dir = prepare::tokenizer_dir(loaded)?;
        let tokenizer = HfTokenizer::load(&tok_dir)?;
        let template = if chat_template {
            let src = ft_template::source::resolve(
                &cfg.template,
                &tokenizer.config,
                &tok_dir,
                &loaded.ctx.config_dir,
            )?;
            Some(ft_tokenize::prepare::compile_chat_template(
                &cfg.template,
                &src,
                &tokenizer,
            )?)
        } else {
            None
        };
        for id in stop_ids(&tokenizer) {
            if !opts.stop_token_ids.contains(&id) {
                opts.stop_token_ids.push(id);
            }
        }
        Ok(Self {
            tokenizer,
            template,
            opts,
        })
    }

    /// The options in use (with the stop tokens added by [`load`](Self::load)).
    pub fn options(&self) -> &GenerateOptions {
        &self.opts
    }

    /// The prompt ids for `user` after the conversation `history`: the
    /// rendered conversation with a generation prompt, or with raw prompts
    /// `user` alone with the tokenizer's special tokens (BOS).
    pub fn prompt_ids(
        &self,
        history: &[TemplateMessage],
        user: &str,
    ) -> Result<Vec<u32>, GenerateError> {
        let (text, special) = match &self.template {
            Some(t) => {
                let mut msgs = history.to_vec();
                msgs.push(TemplateMessage::new("user", user));
                // The template writes BOS itself (as transformers'
                // apply_chat_template, which tokenizes without specials).
                (t.render(&msgs, true)?, false)
            }
            None => (user.to_string(), true),
        };
        let enc = self
            .tokenizer
            .inner
            .encode(text, special)
            .map_err(|e| self.tokenizer_error(e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `model`'s answer to `user` as the first turn of a conversation
    /// (a fresh KV cache), decoded.
    pub fn answer(&self, model: &CausalLm, user: &str) -> Result<String, GenerateError> {
        let ids = self.prompt_ids(&[], user)?;
        let g = ft_model::generate(model, &ids, &self.opts, &mut |_| {})?;
        self.tokenizer
            .inner
            .decode(&g.tokens, true)
            .map_err(|e| self.tokenizer_error(e))
    }

    fn tokenizer_error(&self, e: TokenizerError) -> GenerateError {
        GenerateError::Tokenizer {
            dir: self.tokenizer.dir.clone(),
            message: e.to_string(),
        }
    }
}

/// Greedy generation from `prompts` with the model being trained, for the
/// trainer's `sample_prompts` (at the start, every `eval_steps` and at the
/// end): `(prompt, answer)` pairs, an answer `<error: …>` when generation
/// fails (a sample never stops the run).
pub fn sampler(
    loaded: &Loaded,
    prompts: Vec<String>,
    max_new_tokens: usize,
) -> Result<impl FnMut(&CausalLm) -> Vec<(String, String)> + use<>, GenerateError> {
    let opts = GenerateOptions {
        max_new_tokens,
        temperature: 0.0,
        ..GenerateOptions::default()
    };
    let prompter = Prompter::load(loaded, opts, true)?;
    Ok(move |model: &CausalLm| {
        prompts
            .iter()
            .map(|p| {
                let out = prompter
                    .answer(model, p)
                    .unwrap_or_else(|e| format!("<error: {e}>"));
                (p.clone(), out)
            })
            .collect()
    })
}

/// A conversation with a config's base model.
pub struct ChatSession {
    model: CausalLm,
    prompter: Prompter,
    messages: Vec<TemplateMessage>,
    cache: KvCache,
    /// The tokens whose keys and values are in `cache`.
    cached_ids: Vec<u32>,
}

impl std::fmt::Debug for ChatSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatSession")
            .field("arch", &self.model.spec.arch)
            .field("prompter", &self.prompter)
            .field("messages", &self.messages.len())
            .field("cached", &self.cached_ids.len())
            .finish()
    }
}

impl ChatSession {
    /// Loads the base model, tokenizer and (with `chat_template`) the
    /// template of `loaded`. `opts.stop_token_ids` is extended with the
    /// tokenizer's EOS and end-of-turn tokens. `for_adapter`: an adapter
    /// will be attached ([`with_adapter`](Self::with_adapter)), so a 4-bit
    /// config loads the base as QLoRA trained on it (NF4-rounded weights,
    /// computed dense); otherwise the base is used as stored (a merged
    /// model given as `model.base_model` is not rounded again).
    pub fn load(
        loaded: &Loaded,
        opts: GenerateOptions,
        chat_template: bool,
        for_adapter: bool,
    ) -> Result<Self, GenerateError> {
        let cfg = &loaded.config;
        // 1. Tokenizer and template, as the prepare stage finds them.
        let prompter = Prompter::load(loaded, opts, chat_template)?;
        // 2. The model on the configured device. For an adapter of a 4-bit
        //    config (`adapter.type: qlora` or `model.load_in_4bit`), the
        //    base as QLoRA trained on it: the NF4 error moves SmolLM2's
        //    predictions enough (quickstart: 95% top-1 agreement, KL 0.13)
        //    that the adapter answers differently on the original weights.
        let device = ft_model::resolve_device(cfg.model.device)?;
        let four_bit = cfg.adapter.kind == ft_model::AdapterKind::Qlora || cfg.model.load_in_4bit;
        let nf4 = (for_adapter && four_bit).then_some(ft_model::Nf4Load {
            double_quant: cfg.model.double_quant,
        });
        let cache = nf4.and_then(|_| ft_model::Nf4Cache::from_env());
        let load = |p: &std::path::Path| -> Result<CausalLm, GenerateError> {
            let (mut m, _) = ft_model::load_model_cached(p, &device, nf4, cache.as_ref())?;
            ft_model::lora::densify_nf4(&mut m);
            Ok(m)
        };
        let base = loaded
            .local_base()
            .map_err(|message| GenerateError::BaseModel { message })?;
        let model = load(base.path())?;
        let cache = model.new_cache();
        Ok(Self {
            model,
            prompter,
            messages: Vec::new(),
            cache,
            cached_ids: Vec::new(),
        })
    }

    /// Attaches a PEFT LoRA adapter directory (e.g. the `output_dir` of
    /// `ft run`) to the loaded base, so answers come from base + adapter.
    pub fn with_adapter(mut self, dir: &std::path::Path) -> Result<Self, GenerateError> {
        // The base's device, without autodiff: the adapter is not trained here.
        let device = self.model.model.embed_tokens.weight.val().device().inner();
        ft_model::lora::load_peft(&mut self.model, dir, &device)?;
        self.cache = self.model.new_cache();
        self.cached_ids.clear();
        Ok(self)
    }

    /// The options in use (with the stop tokens added by [`load`](Self::load)).
    pub fn options(&self) -> &GenerateOptions {
        &self.prompter.opts
    }

    /// Where the chat template came from; `None` for raw prompts.
    pub fn template_name(&self) -> Option<&str> {
        self.prompter.template.as_ref().map(ChatTemplate::name)
    }

    /// Forgets the conversation (the cache keeps what the next prompt
    /// shares with the last, e.g. a system prompt).
    pub fn reset(&mut self) {
        self.messages.clear();
    }

    /// The prompt ids for `user` after the conversation so far: the
    /// rendered conversation with a generation prompt, or with raw prompts
    /// `user` alone with the tokenizer's special tokens (BOS).
    pub fn prompt_ids(&self, user: &str) -> Result<Vec<u32>, GenerateError> {
        self.prompter.prompt_ids(&self.messages, user)
    }

    /// Answers `user`, calling `on_text` with each new piece of the answer
    /// as it is decoded; with a chat template the exchange joins the
    /// conversation.
    pub fn reply(
        &mut self,
        user: &str,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Reply, GenerateError> {
        let ids = self.prompt_ids(user)?;
        // 1. Keep the cached prefix shared with this prompt; at least one
        //    token must run to give the next token's logits.
        let shared = self
            .cached_ids
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len().saturating_sub(1));
        self.cache.truncate(shared);
        self.cached_ids.truncate(shared);
        // 2. Generate, decoding as tokens arrive.
        let mut stream = TextStream::default();
        let mut decode_error = None;
        let generation = {
            let tokenizer = &self.prompter.tokenizer;
            let mut on_token = |id: u32| {
                stream.tokens.push(id);
                match stream.advance(tokenizer) {
                    Ok(Some(piece)) => on_text(&piece),
                    Ok(None) => {}
                    Err(e) => {
                        decode_error.get_or_insert(e);
                    }
                }
            };
            generate_cached(
                &self.model,
                &mut self.cache,
                &ids[shared..],
                &self.prompter.opts,
                &mut on_token,
            )?
        };
        if let Some(e) = decode_error {
            return Err(self.prompter.tokenizer_error(e));
        }
        // 3. What is cached now: a prefix of the prompt and the answer
        //    (the last token chosen was never run through the model).
        let cached = self.cache.len();
        self.cached_ids.extend_from_slice(&ids[shared..]);
        self.cached_ids.extend_from_slice(&generation.tokens);
        self.cached_ids.truncate(cached);
        let text = stream
            .full_text(&self.prompter.tokenizer)
            .map_err(|e| self.prompter.tokenizer_error(e))?;
        if self.prompter.template.is_some() {
            self.messages.push(TemplateMessage::new("user", user));
            self.messages
                .push(TemplateMessage::new("assistant", text.trim()));
        }
        Ok(Reply {
            text,
            generation,
            reused_tokens: shared,
        })
    }
}

/// The `tokenizers` crate's error type (`tokenizers::Error`, a boxed
/// error), named without a direct dependency.
type TokenizerError = Box<dyn std::error::Error + Send + Sync>;

/// The tokenizer's EOS and the [`END_OF_TURN_TOKENS`] it has.
pub fn stop_ids(tokenizer: &HfTokenizer) -> Vec<u32> {
    let mut ids: Vec<u32> = tokenizer.eos_id().into_iter().collect();
    for t in END_OF_TURN_TOKENS {
        if let Some(id) = tokenizer.inner.token_to_id(t)
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids
}

/// Incremental detokenisation: decodes the tokens so far and hands out
/// the text added since the last piece, holding back while the text ends
/// in an incomplete UTF-8 sequence (byte-level BPE splits characters
/// across tokens; the decoder shows the partial bytes as U+FFFD).
#[derive(Debug, Default)]
struct TextStream {
    tokens: Vec<u32>,
    /// Bytes of the decoded text already handed out.
    emitted: usize,
}

impl TextStream {
    fn full_text(&self, tok: &HfTokenizer) -> Result<String, TokenizerError> {
        tok.inner.decode(&self.tokens, true)
    }

    fn advance(&mut self, tok: &HfTokenizer) -> Result<Option<String>, TokenizerError> {
        let text = self.full_text(tok)?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.emitted {
            return Ok(None);
        }
        // Decoders may rewrite earlier text (e.g. strip a leading space);
        // only hand out what extends the emitted prefix at a char boundary.
        let Some(piece) = text.get(self.emitted..) else {
            return Ok(None);
        };
        let piece = piece.to_string();
        self.emitted = text.len();
        Ok(Some(piece))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn smollm2_tokenizer() -> HfTokenizer {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tokenizers/smollm2");
        HfTokenizer::load(&dir).unwrap()
    }

    #[test]
    fn stop_ids_are_eos_and_end_of_turn_tokens() {
        let tok = smollm2_tokenizer();
        let ids = stop_ids(&tok);
        let im_end = tok.inner.token_to_id("<|im_end|>").unwrap();
        assert!(ids.contains(&im_end), "{ids:?}");
        assert!(ids.contains(&tok.eos_id().unwrap()));
        assert!(tok.inner.token_to_id("<|eot_id|>").is_none());
    }

    #[test]
    fn text_stream_pieces_add_up_to_the_text() {
        let tok = smollm2_tokenizer();
        let text = "Paris — the capital of France, «city of light» 🗼.";
        let ids = tok.inner.encode(text, false).unwrap().get_ids().to_vec();
        let mut s = TextStream::default();
        let mut out = String::new();
        for id in ids {
            s.tokens.push(id);
            if let Some(p) = s.advance(&tok).unwrap() {
                assert!(!p.contains('\u{FFFD}'), "{p:?}");
                out.push_str(&p);
            }
        }
        assert_eq!(out, text);
    }
}
