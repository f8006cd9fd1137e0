//! One record → token ids and a loss mask, in parallel over all records.

use std::collections::BTreeMap;

use ft_data::{Origin, Record, RowRef, Sample};
use ft_template::{ChatTemplate, MaskRules, SpanMethod, TemplateMessage};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{ExcessLengthStrategy, TokenizeConfig};
use crate::error::TokenizeError;
use crate::mask::{Tokenized, mask_from_spans};
use crate::tokenizer::HfTokenizer;

/// Why a sample was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Longer than `sequence_len` with `excess_length_strategy: drop`.
    TooLong,
    /// No token carries loss (after truncation, if any).
    NoTrainableTokens,
    /// The template raised an error or the turns could not be located.
    Template,
}

impl DropReason {
    /// Words for the report.
    pub fn describe(self) -> &'static str {
        match self {
            DropReason::TooLong => "longer than sequence_len",
            DropReason::NoTrainableTokens => "no trainable tokens",
            DropReason::Template => "chat template error",
        }
    }
}

/// Findings on a kept sample worth reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    /// Truncated to `sequence_len`.
    pub truncated: bool,
    /// The template renders earlier turns differently as turns are added.
    pub rewrites_history: bool,
    /// Trained turns whose end-of-turn token is not a trained special token.
    pub eot_missing: usize,
    /// How spans were found (chat samples).
    pub method: Option<SpanMethod>,
}

/// What happened to one record.
#[derive(Debug)]
pub enum Outcome {
    /// Kept.
    Kept(Tokenized, Notes),
    /// Dropped, with a detail for the report.
    Dropped(DropReason, String),
}

/// A tokenized sample with its notes, or why it was dropped.
pub type SampleResult = Result<(Tokenized, Notes), (DropReason, String)>;

/// Everything needed to turn records into tokens.
pub struct Processor<'a> {
    /// The tokenizer.
    pub tokenizer: &'a HfTokenizer,
    /// The chat template (needed when any record is a conversation).
    pub template: Option<&'a ChatTemplate>,
    /// `roles_to_train` and `train_on_eos`.
    pub rules: MaskRules,
    /// `train_on_inputs`.
    pub train_on_inputs: bool,
    /// Length options.
    pub tokenize: &'a TokenizeConfig,
}

impl Processor<'_> {
    fn encode(
        &self,
        at: &RowRef,
        text: &str,
        special: bool,
    ) -> Result<tokenizers::Encoding, TokenizeError> {
        self.tokenizer
            .inner
            .encode(text, special)
            .map_err(|e| TokenizeError::Encode {
                at: at.clone(),
                message: e.to_string(),
            })
    }

    /// Tokenizes and masks one record (no length handling).
    pub fn tokenize(&self, rec: &Record) -> Result<SampleResult, TokenizeError> {
        match &rec.sample {
            Sample::Chat(messages) => {
                let Some(template) = self.template else {
                    return Ok(Err((DropReason::Template, "no chat template".into())));
                };
                let msgs: Vec<TemplateMessage> = messages
                    .iter()
                    .map(|m| TemplateMessage {
                        role: m.role.clone(),
                        content: m.content.clone(),
                        extra: m.extra.clone(),
                    })
                    .collect();
                let specials = &self.tokenizer.specials;
                let located = match template.locate(&msgs, specials) {
                    Ok(l) => l,
                    Err(e) => return Ok(Err((DropReason::Template, e.to_string()))),
                };
                let mut rules = self.rules.clone();
                if rec.origin == Origin::Alpaca && self.train_on_inputs {
                    for r in ["system", "user"] {
                        if !rules.roles_to_train.iter().any(|x| x == r) {
                            rules.roles_to_train.push(r.into());
                        }
                    }
                }
                let spans = located.trained_spans(&rules, specials);
                let enc = self.encode(&rec.at, &located.text, false)?;
                let ranges: Vec<_> = spans.iter().map(|s| s.range.clone()).collect();
                let mask = mask_from_spans(enc.get_offsets(), &ranges);
                let ids = enc.get_ids().to_vec();
                let mut notes = Notes {
                    rewrites_history: located.rewrites_history,
                    method: Some(located.method),
                    ..Notes::default()
                };
                for s in &spans {
                    let role_trained = s
                        .message
                        .and_then(|i| located.turns.get(i))
                        .is_none_or(|t| rules.roles_to_train.contains(&t.role));
                    if !s.wants_eot || !role_trained {
                        continue;
                    }
                    let ok =
                        s.eot.as_ref().is_some_and(|e| {
                            enc.get_offsets().iter().zip(&ids).zip(&mask).any(
                                |((&(a, b), id), &m)| {
                                    a == e.start
                                        && b == e.end
                                        && m
                                        && self.tokenizer.special_ids.contains(id)
                                },
                            )
                        });
                    if !ok {
                        notes.eot_missing += 1;
                    }
                }
                Ok(Ok((Tokenized { ids, mask }, notes)))
            }
            Sample::Segments { segments, add_eos } => {
                let mut t = Tokenized::default();
                for (i, seg) in segments.iter().enumerate() {
                    let enc = self.encode(&rec.at, &seg.text, i == 0)?;
                    let label =
                        seg.label || rec.origin == Origin::Completion || self.train_on_inputs;
                    t.ids.extend_from_slice(enc.get_ids());
                    t.mask.extend(
                        enc.get_special_tokens_mask()
                            .iter()
                            .map(|&s| label && s == 0),
                    );
                }
                if *add_eos {
                    let eos =
                        self.tokenizer
                            .eos_id()
                            .ok_or_else(|| TokenizeError::MissingToken {
                                dir: self.tokenizer.dir.clone(),
                                what: "eos_token (needed by `add_eos`)",
                            })?;
                    let last = segments.last().is_some_and(|s| s.label)
                        || rec.origin == Origin::Completion;
                    t.ids.push(eos);
                    t.mask.push(last);
                }
                Ok(Ok((t, Notes::default())))
            }
        }
    }

    /// Tokenizes, applies `sequence_len`, and checks for trainable tokens.
    pub fn process(&self, rec: &Record) -> Result<Outcome, TokenizeError> {
        let (mut t, mut notes) = match self.tokenize(rec)? {
            Ok(x) => x,
            Err((reason, detail)) => {
                return Ok(Outcome::Dropped(reason, format!("{}: {detail}", rec.at)));
            }
        };
        let max = self.tokenize.sequence_len;
        if t.ids.len() > max {
            match self.tokenize.excess_length_strategy {
                ExcessLengthStrategy::Drop => {
                    return Ok(Outcome::Dropped(
                        DropReason::TooLong,
                        format!("{}: {} tokens > {max}", rec.at, t.ids.len()),
                    ));
                }
                ExcessLengthStrategy::Raise => {
                    return Err(TokenizeError::TooLong {
                        at: rec.at.clone(),
                        tokens: t.ids.len(),
                        max,
                    });
                }
                ExcessLengthStrategy::Truncate => {
                    t.ids.truncate(max);
                    t.mask.truncate(max);
                    notes.truncated = true;
                }
            }
        }
        if t.trainable() == 0 {
            return Ok(Outcome::Dropped(
                DropReason::NoTrainableTokens,
                format!("{}", rec.at),
            ));
        }
        Ok(Outcome::Kept(t, notes))
    }

    /// Processes every record on all cores; output order = input order.
    pub fn process_all(&self, records: &[Record]) -> Result<Vec<Outcome>, TokenizeError> {
        records.par_iter().map(|r| self.process(r)).collect()
    }
}

/// First occurrence and count of something, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// How many.
    pub count: usize,
    /// The first one (row and detail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
}

impl Tally {
    fn add(&mut self, what: impl FnOnce() -> String) {
        if self.count == 0 {
            self.first = Some(what());
        }
        self.count += 1;
    }
}

/// Counts for one split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitReport {
    /// Rows read.
    pub samples_read: usize,
    /// Samples kept.
    pub samples_kept: usize,
    /// Dropped samples by reason.
    pub dropped: BTreeMap<DropReason, Tally>,
    /// Samples cut to `sequence_len`.
    pub truncated: usize,
    /// Tokens in kept samples.
    pub tokens: usize,
    /// Trained tokens in kept samples.
    pub trainable_tokens: usize,
    /// Rows after packing / padding.
    pub rows: usize,
    /// Real tokens / (rows × sequence_len).
    pub packing_efficiency: f64,
    /// Samples whose template rewrote earlier turns as turns were added.
    pub rewrites_history: Tally,
    /// Trained turns without a trained end-of-turn special token.
    pub eot_missing: Tally,
    /// Chat samples by span method.
    pub span_methods: BTreeMap<String, usize>,
}

impl SplitReport {
    /// Folds outcomes into counts, returning the kept samples.
    pub fn collect(records: &[Record], outcomes: Vec<Outcome>) -> (Self, Vec<Tokenized>) {
        let mut r = SplitReport {
            samples_read: records.len(),
            ..Self::default()
        };
        let mut kept = Vec::new();
        for (rec, o) in records.iter().zip(outcomes) {
            match o {
                Outcome::Kept(t, notes) => {
                    r.samples_kept += 1;
                    r.tokens += t.ids.len();
                    r.trainable_tokens += t.trainable();
                    r.truncated += usize::from(notes.truncated);
                    if notes.rewrites_history {
                        r.rewrites_history.add(|| rec.at.to_string());
                    }
                    for _ in 0..notes.eot_missing {
                        r.eot_missing.add(|| rec.at.to_string());
                    }
                    if let Some(m) = notes.method {
                        *r.span_methods.entry(format!("{m:?}")).or_default() += 1;
                    }
                    kept.push(t);
                }
                Outcome::Dropped(reason, detail) => {
                    r.dropped.entry(reason).or_default().add(|| detail)
                }
            }
        }
        (r, kept)
    }
}
