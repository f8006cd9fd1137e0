//! Which characters of a rendered conversation belong to which message, and
//! which of them are trained.
//!
//! The method (also in `docs/data-preparation.md`):
//!
//! 1. **Render** the conversation as transformers would: the text `T`.
//! 2. **`{% generation %}` blocks**, when the template has them, are the
//!    assistant spans, exactly as `return_assistant_tokens_mask` uses them.
//! 3. **Content markers.** Render again with every message's content wrapped
//!    in reserved noncharacters carrying the message index
//!    (`U+FDD2 i U+FDD3 content U+FDD4`). Removing the markers must give
//!    back `T` byte for byte; then the marker positions are the content
//!    spans, even when the template reorders, drops or rewrites turns
//!    around the content (Gemma folds the system prompt into the first user
//!    turn; Qwen3 drops `<think>` blocks of earlier turns).
//! 4. **Prefix differences** when markers change the text (a template that
//!    inspects or trims content, e.g. Llama 3's `| trim` on content with
//!    surrounding spaces): render growing prefixes `R_k = render(m[..k])`;
//!    if every `R_k` is a prefix of `T`, message `k` owns
//!    `T[len R_k .. len R_{k+1}]`. Rendering `m[..k]` plus message `k` with
//!    empty content gives its header and trailer; what the region has
//!    between them is the content (snapped to an exact occurrence of the
//!    content or its trimmed form when there is one).
//! 5. **End of turn**: the first special token (from the tokenizer) right
//!    after the content, whitespace allowed in between.
//!
//! Prefix stability is checked for every conversation and reported: a
//! template that renders an assistant turn differently once later turns
//! exist (Qwen3 strips `<think>` from earlier assistant turns) trains on
//! text the model sees at inference only in that shape, which the user
//! should know. The check renders the conversation cut after each assistant
//! turn (where that turn ends the text, as when it was generated) and asks
//! whether the full render starts with it; step 4 renders every cut.

use std::ops::Range;

use crate::config::TrainOnEos;
use crate::error::TemplateError;
use crate::render::{
    ChatTemplate, GEN_CLOSE, GEN_OPEN, MARK_CLOSE, MARK_OPEN, MARK_SEP, RESERVED, TemplateMessage,
    strip_generation,
};

/// How the spans of a conversation were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SpanMethod {
    /// Content markers (step 3).
    ContentMarkers,
    /// Prefix differences (step 4).
    PrefixDiff,
}

/// One message's place in the rendered text (byte ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The message's role.
    pub role: String,
    /// Its content; `None` when the template did not print it.
    pub content: Option<Range<usize>>,
    /// Its end-of-turn special token, when one follows the content.
    pub eot: Option<Range<usize>>,
}

/// A rendered conversation with its turns located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The rendered text, identical to transformers' `apply_chat_template`.
    pub text: String,
    /// One entry per message.
    pub turns: Vec<Turn>,
    /// `{% generation %}` spans, when the template has them.
    pub generation: Option<Vec<Range<usize>>>,
    /// How `turns` were found.
    pub method: SpanMethod,
    /// Some earlier turn renders differently once later turns exist.
    pub rewrites_history: bool,
}

/// A trained byte range and what it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainedSpan {
    /// Bytes of [`Located::text`].
    pub range: Range<usize>,
    /// The message it belongs to, when known.
    pub message: Option<usize>,
    /// The end-of-turn token inside `range`, when it is trained.
    pub eot: Option<Range<usize>>,
    /// Whether the rules ask for this turn's end-of-turn token to be trained.
    pub wants_eot: bool,
}

/// Masking rules for conversations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskRules {
    /// Roles whose content is trained.
    pub roles_to_train: Vec<String>,
    /// Which end-of-turn tokens are trained.
    pub train_on_eos: TrainOnEos,
}

fn parse_markers(s: &str, n: usize) -> Option<(String, Vec<Option<Range<usize>>>)> {
    let mut out = String::with_capacity(s.len());
    let mut spans: Vec<Option<Range<usize>>> = vec![None; n];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            MARK_OPEN => {
                let mut idx = String::new();
                loop {
                    match chars.next()? {
                        MARK_SEP => break,
                        d if d.is_ascii_digit() => idx.push(d),
                        _ => return None,
                    }
                }
                stack.push((idx.parse().ok()?, out.len()));
            }
            MARK_CLOSE => {
                let (i, start) = stack.pop()?;
                if i < n && spans[i].is_none() {
                    spans[i] = Some(start..out.len());
                }
            }
            MARK_SEP => return None,
            GEN_OPEN | GEN_CLOSE => {}
            c => out.push(c),
        }
    }
    stack.is_empty().then_some((out, spans))
}

fn common_prefix(a: &str, b: &str) -> usize {
    let mut n = 0;
    for (x, y) in a.chars().zip(b.chars()) {
        if x != y {
            break;
        }
        n += x.len_utf8();
    }
    n
}

fn common_suffix(a: &str, b: &str) -> usize {
    let mut n = 0;
    for (x, y) in a.chars().rev().zip(b.chars().rev()) {
        if x != y {
            break;
        }
        n += x.len_utf8();
    }
    n
}

/// The special token right after `at` (ASCII whitespace allowed first),
/// not reaching past `limit`.
fn eot_after(text: &str, at: usize, limit: usize, specials: &[String]) -> Option<Range<usize>> {
    let rest = text.get(at..limit)?;
    let ws = rest.len() - rest.trim_start_matches([' ', '\n', '\r', '\t']).len();
    let rest = &rest[ws..];
    specials
        .iter()
        .filter(|s| !s.is_empty() && rest.starts_with(s.as_str()))
        .max_by_key(|s| s.len())
        .map(|s| at + ws..at + ws + s.len())
}

impl ChatTemplate {
    /// Renders `messages` and locates every message in the text.
    /// `specials` are the tokenizer's special-token strings (for
    /// end-of-turn detection).
    pub fn locate(
        &self,
        messages: &[TemplateMessage],
        specials: &[String],
    ) -> Result<Located, TemplateError> {
        for (i, m) in messages.iter().enumerate() {
            if let Some(c) = m
                .content
                .chars()
                .chain(m.role.chars())
                .find(|c| RESERVED.contains(c))
            {
                return Err(TemplateError::ReservedChar {
                    message: i,
                    code: c as u32,
                });
            }
        }
        let raw = self.render_raw(messages, false, &|_, m| m.content.clone())?;
        let (text, gen_spans) = strip_generation(&raw);
        let generation = self.has_generation().then_some(gen_spans);
        let n = messages.len();

        // Prefix renders. The stability report needs the conversation cut
        // right after each assistant turn: there the turn ends the text, as
        // when the model generated it, and the check is whether it renders
        // the same once later turns exist. Step 4 needs every cut; those are
        // rendered only when it runs.
        let after_assistant = |k: usize| messages[k - 1].role == "assistant";
        let mut prefixes: Vec<Option<String>> = vec![None; n + 1];
        prefixes[0] = Some(String::new());
        prefixes[n] = Some(text.clone());
        for k in (1..n).filter(|&k| after_assistant(k)) {
            prefixes[k] = self.render(&messages[..k], false).ok();
        }
        let unstable = |prefixes: &[Option<String>]| {
            prefixes
                .iter()
                .flatten()
                .any(|p| !text.starts_with(p.as_str()))
        };
        let mut rewrites_history = unstable(&prefixes);

        let marked = self.render_raw(messages, false, &|i, m| {
            format!("{MARK_OPEN}{i}{MARK_SEP}{}{MARK_CLOSE}", m.content)
        })?;
        let (contents, method) = match parse_markers(&marked, n) {
            Some((stripped, spans)) if stripped == text => (spans, SpanMethod::ContentMarkers),
            _ => {
                for k in (1..n).filter(|&k| !after_assistant(k)) {
                    prefixes[k] = self.render(&messages[..k], false).ok();
                }
                rewrites_history = unstable(&prefixes);
                (
                    self.prefix_diff(messages, &text, &prefixes, rewrites_history)?,
                    SpanMethod::PrefixDiff,
                )
            }
        };

        let mut turns = Vec::with_capacity(n);
        for (i, m) in messages.iter().enumerate() {
            let content = contents[i].clone();
            let eot = content.as_ref().and_then(|c| {
                let limit = contents[i + 1..]
                    .iter()
                    .flatten()
                    .map(|r| r.start)
                    .find(|&s| s >= c.end)
                    .unwrap_or(text.len());
                eot_after(&text, c.end, limit, specials)
            });
            turns.push(Turn {
                role: m.role.clone(),
                content,
                eot,
            });
        }
        Ok(Located {
            text,
            turns,
            generation,
            method,
            rewrites_history,
        })
    }

    fn prefix_diff(
        &self,
        messages: &[TemplateMessage],
        text: &str,
        prefixes: &[Option<String>],
        rewrites_history: bool,
    ) -> Result<Vec<Option<Range<usize>>>, TemplateError> {
        let fail = |i: usize, why: &str| TemplateError::Unlocatable {
            message: i,
            role: messages[i].role.clone(),
            why: why.to_string(),
        };
        if rewrites_history {
            return Err(fail(
                0,
                "the template rewrites earlier turns as the conversation grows and changes message content (content markers did not survive), so neither method applies",
            ));
        }
        let mut out = Vec::with_capacity(messages.len());
        for k in 0..messages.len() {
            let (Some(lo_s), Some(hi_s)) = (&prefixes[k], &prefixes[k + 1]) else {
                return Err(fail(k, "rendering a prefix of the conversation failed"));
            };
            let (lo, hi) = (lo_s.len(), hi_s.len());
            let region = &text[lo..hi];
            let mut probe = messages[..k].to_vec();
            let mut empty = messages[k].clone();
            empty.content.clear();
            probe.push(empty);
            let shell = self
                .render(&probe, false)
                .map_err(|e| fail(k, &e.to_string()))?;
            let Some(shell) = shell.strip_prefix(lo_s.as_str()) else {
                return Err(fail(
                    k,
                    "rendering the message with empty content changes the text before it",
                ));
            };
            // region = shell[..h] + content + shell[h..] for some split h
            // of the shell (header | trailer). Every h allowed by the common
            // prefix and suffix is a candidate; the one whose middle is the
            // content (or its trimmed form) wins, else the longest header.
            let c = messages[k].content.as_str();
            let lcp = common_prefix(shell, region);
            let lcs = common_suffix(shell, region);
            let split = |h: usize| h..region.len() - (shell.len() - h);
            let candidates: Vec<usize> = if region.len() >= shell.len() {
                (shell.len().saturating_sub(lcs)..=lcp.min(shell.len()))
                    .filter(|&h| shell.is_char_boundary(h) && region.is_char_boundary(split(h).end))
                    .collect()
            } else {
                Vec::new()
            };
            let pick = [c, c.trim()]
                .iter()
                .find_map(|cand| {
                    candidates
                        .iter()
                        .copied()
                        .find(|&h| &region[split(h)] == *cand)
                })
                .or_else(|| candidates.last().copied());
            let (a, b) = match pick {
                Some(h) => (split(h).start, split(h).end),
                None => {
                    // The template changed more than the content; take what
                    // differs, snapped to an exact occurrence of the content.
                    let pre = lcp;
                    let suf = lcs.min(shell.len() - pre).min(region.len() - pre);
                    let (mut a, mut b) = (pre, region.len() - suf);
                    for cand in [c, c.trim()] {
                        if cand.is_empty() {
                            continue;
                        }
                        if let Some(p) = region
                            .match_indices(cand)
                            .map(|(p, _)| p)
                            .find(|&p| p <= a && p + cand.len() >= b)
                        {
                            a = p;
                            b = p + cand.len();
                            break;
                        }
                    }
                    (a, b)
                }
            };
            out.push(Some(lo + a..lo + b));
        }
        Ok(out)
    }
}

impl Located {
    /// The trained byte ranges under `rules`, in text order.
    ///
    /// Without `{% generation %}`: a trained role's content, extended over
    /// its end-of-turn token when `train_on_eos` asks for it (`turn`: every
    /// trained turn; `last`: the last trained turn; `all`: every turn's
    /// token, trained role or not; `none`: no token). With `{% generation
    /// %}`: the generation blocks are the assistant spans, as in
    /// transformers; other roles in `roles_to_train` follow the rules above.
    pub fn trained_spans(&self, rules: &MaskRules, specials: &[String]) -> Vec<TrainedSpan> {
        let trained = |role: &str| rules.roles_to_train.iter().any(|r| r == role);
        let last_trained = self
            .turns
            .iter()
            .rposition(|t| trained(&t.role) && t.content.is_some());
        let mut spans = Vec::new();
        for (i, t) in self.turns.iter().enumerate() {
            if self.generation.is_some() && t.role == "assistant" {
                continue;
            }
            let role_trained = trained(&t.role);
            let wants_eot = match rules.train_on_eos {
                TrainOnEos::Turn => role_trained,
                TrainOnEos::Last => role_trained && Some(i) == last_trained,
                TrainOnEos::All => true,
                TrainOnEos::None => false,
            };
            let eot = if wants_eot { t.eot.clone() } else { None };
            match (&t.content, role_trained) {
                (Some(c), true) => {
                    let end = eot.as_ref().map_or(c.end, |e| e.end);
                    spans.push(TrainedSpan {
                        range: c.start..end,
                        message: Some(i),
                        eot,
                        wants_eot,
                    });
                }
                (_, false) => {
                    if let Some(e) = eot {
                        spans.push(TrainedSpan {
                            range: e.clone(),
                            message: Some(i),
                            eot: Some(e),
                            wants_eot,
                        });
                    }
                }
                (None, true) => {}
            }
        }
        if let Some(gen_spans) = &self.generation {
            for g in gen_spans {
                let message = self.turns.iter().position(|t| {
                    t.content
                        .as_ref()
                        .is_some_and(|c| c.start >= g.start && c.start <= g.end)
                });
                let body = &self.text[g.clone()];
                let trimmed = body.trim_end_matches([' ', '\n', '\r', '\t']);
                let eot = specials
                    .iter()
                    .filter(|s| !s.is_empty() && trimmed.ends_with(s.as_str()))
                    .max_by_key(|s| s.len())
                    .map(|s| g.start + trimmed.len() - s.len()..g.start + trimmed.len());
                spans.push(TrainedSpan {
                    range: g.clone(),
                    message,
                    eot,
                    wants_eot: rules.train_on_eos != TrainOnEos::None,
                });
            }
        }
        spans.sort_by_key(|s| (s.range.start, s.range.end));
        spans
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::render::RenderOptions;
    use crate::source::{SpecialTokens, builtin_source};

    const CHATML_SPECIALS: [&str; 2] = ["<|im_start|>", "<|im_end|>"];

    fn specials() -> Vec<String> {
        CHATML_SPECIALS.iter().map(|s| s.to_string()).collect()
    }

    fn chatml() -> ChatTemplate {
        ChatTemplate::new(
            "chatml",
            builtin_source(crate::BuiltinTemplate::Chatml),
            SpecialTokens::default(),
            RenderOptions::default(),
        )
        .unwrap()
    }

    fn msgs(pairs: &[(&str, &str)]) -> Vec<TemplateMessage> {
        pairs
            .iter()
            .map(|(r, c)| TemplateMessage::new(*r, *c))
            .collect()
    }

    fn texts(l: &Located, spans: &[TrainedSpan]) -> Vec<String> {
        spans
            .iter()
            .map(|s| l.text[s.range.clone()].to_string())
            .collect()
    }

    fn rules(roles: &[&str], eos: TrainOnEos) -> MaskRules {
        MaskRules {
            roles_to_train: roles.iter().map(|r| r.to_string()).collect(),
            train_on_eos: eos,
        }
    }

    #[test]
    fn train_on_eos_variants() {
        let t = chatml();
        let m = msgs(&[
            ("user", "user"),
            ("assistant", "assistant"),
            ("user", "u2"),
            ("assistant", "a2"),
        ]);
        let l = t.locate(&m, &specials()).unwrap();
        assert_eq!(l.method, SpanMethod::ContentMarkers);
        let sp = specials();
        let turn = l.trained_spans(&rules(&["assistant"], TrainOnEos::Turn), &sp);
        assert_eq!(texts(&l, &turn), ["assistant<|im_end|>", "a2<|im_end|>"]);
        let last = l.trained_spans(&rules(&["assistant"], TrainOnEos::Last), &sp);
        assert_eq!(texts(&l, &last), ["assistant", "a2<|im_end|>"]);
        let all = l.trained_spans(&rules(&["assistant"], TrainOnEos::All), &sp);
        assert_eq!(
            texts(&l, &all),
            [
                "<|im_end|>",
                "assistant<|im_end|>",
                "<|im_end|>",
                "a2<|im_end|>"
            ]
        );
        let none = l.trained_spans(&rules(&["assistant", "user"], TrainOnEos::None), &sp);
        assert_eq!(texts(&l, &none), ["user", "assistant", "u2", "a2"]);
    }

    #[test]
    fn trimming_template_falls_back_to_prefix_differences() {
        let src =
            "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}<|im_end|>{% endfor %}";
        let t = ChatTemplate::new(
            "trim",
            src,
            SpecialTokens::default(),
            RenderOptions::default(),
        )
        .unwrap();
        let m = msgs(&[("user", "  <b>hi "), ("assistant", " <b>bold</b> ")]);
        let l = t.locate(&m, &specials()).unwrap();
        assert_eq!(l.method, SpanMethod::PrefixDiff);
        assert!(!l.rewrites_history);
        let spans = l.trained_spans(
            &rules(&["assistant", "user"], TrainOnEos::Turn),
            &specials(),
        );
        // The content starts with `<`, as the trailer does: the snap to the
        // exact (trimmed) content keeps it.
        assert_eq!(
            texts(&l, &spans),
            ["<b>hi<|im_end|>", "<b>bold</b><|im_end|>"]
        );
    }

    #[test]
    fn qwen3_history_rewrite_is_reported_and_spans_still_exact() {
        let t = ChatTemplate::new(
            "qwen3",
            builtin_source(crate::BuiltinTemplate::Qwen3),
            SpecialTokens::default(),
            RenderOptions::default(),
        )
        .unwrap();
        let m = msgs(&[
            ("user", "q1"),
            ("assistant", "a1"),
            ("user", "q2"),
            ("assistant", "a2"),
        ]);
        let l = t.locate(&m, &specials()).unwrap();
        assert!(l.rewrites_history);
        let spans = l.trained_spans(&rules(&["assistant"], TrainOnEos::Turn), &specials());
        assert_eq!(texts(&l, &spans), ["a1<|im_end|>", "a2<|im_end|>"]);
        assert!(l.text.contains("<think>\n\n</think>\n\na2"));
    }

    #[test]
    fn reserved_characters_in_data_are_rejected() {
        let e = chatml()
            .locate(&msgs(&[("user", "x\u{FDD2}")]), &[])
            .unwrap_err();
        assert!(e.to_string().contains("U+FDD2"), "{e}");
    }
}
