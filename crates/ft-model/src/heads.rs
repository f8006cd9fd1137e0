//! The forward pass split at the LM head, for training: the loss needs the
//! final hidden states of the trained positions only, and projects them to
//! the vocabulary a chunk at a time instead of materialising
//! `[batch, seq, vocab]` logits.

use burn::tensor::Tensor;

use crate::arch::layers::packed_causal_mask;
use crate::arch::{CausalLm, PackedBatch};

/// Final-normed hidden states `[batch, seq, hidden]` (the input of
/// `lm_head`), computed exactly as [`CausalLm::forward`] does.
pub fn final_hidden(model: &CausalLm, batch: &PackedBatch) -> Tensor<3> {
    let mut h = model.model.embed_tokens.forward(batch.input_ids.clone());
    let (cos, sin) = model.rope.cos_sin(batch.position_ids.clone());
    let mask = packed_causal_mask(batch.seq_ids.clone(), model.spec.sliding_window);
    for layer in &model.model.layers {
        h = layer.forward(h, cos.clone(), sin.clone(), mask.clone());
    }
    model.model.norm.forward(h)
}

/// `[n, hidden]` hidden states → `[n, vocab]` logits through `lm_head`
/// (the embedding matrix when tied).
pub fn lm_logits(model: &CausalLm, h: Tensor<2>) -> Tensor<2> {
    match &model.lm_head {
        Some(head) => head.forward(h),
        None => {
            burn::tensor::module::linear(h, model.model.embed_tokens.weight.val().transpose(), None)
        }
    }
}
