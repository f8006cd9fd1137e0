//! The forward pass split at the LM head, for training: the loss needs the
//! final hidden states of the trained positions only, and projects them to
//! the vocabulary a chunk at a time instead of materialising
//! `[batch, seq, vocab]` logits.

use burn::tensor::{DType, Int, Tensor, activation};
use ft_kernels::loss::{default_chunk, linear_cross_entropy};

use crate::arch::layers::{packed_causal_mask, to_dtype};
use crate::arch::{CausalLm, PackedBatch};

/// Final-normed hidden states `[batch, seq, hidden]` (the input of
/// `lm_head`), computed exactly as [`CausalLm::forward`] does.
pub fn final_hidden(model: &CausalLm, batch: &PackedBatch) -> Tensor<3> {
    let mut h = model.model.embed_tokens.forward(batch.input_ids.clone());
    let (cos, sin) = model
        .rope
        .cos_sin(batch.position_ids.clone(), model.dtype());
    let mask = packed_causal_mask(batch.seq_ids.clone(), model.spec.sliding_window);
    for layer in &model.model.layers {
        h = layer.forward(h, cos.clone(), sin.clone(), mask.clone());
    }
    model.model.norm.forward(h)
}

/// `[n, hidden]` hidden states → `[n, vocab]` logits through `lm_head`
/// (the embedding matrix when tied), in f32 whatever the compute dtype.
pub fn lm_logits(model: &CausalLm, h: Tensor<2>) -> Tensor<2> {
    let logits = match &model.lm_head {
        Some(head) => head.forward(h),
        None => {
            burn::tensor::module::linear(h, model.model.embed_tokens.weight.val().transpose(), None)
        }
    };
    to_dtype(logits, DType::F32)
}

/// The LM head's weight `[vocab, hidden]` when the head is a frozen plain
/// matrix (dense `lm_head` without bias or adapter, or the tied embedding
/// not being trained): what the fused loss can take.
fn frozen_head_weight(model: &CausalLm) -> Option<Tensor<2>> {
    let w = match &model.lm_head {
        Some(head) if head.bias.is_none() && head.lora.is_none() && head.nf4.is_none() => {
            head.weight.as_ref()?.val()
        }
        Some(_) => return None,
        None => model.model.embed_tokens.weight.val(),
    };
    (!w.is_require_grad()).then_some(w)
}

/// `[1]`: the summed next-token negative log-likelihood of `targets` (`[n]`)
/// given the final hidden states `h` (`[n, hidden]`) of the positions that
/// predict them. With a frozen head (every LoRA/QLoRA run) the head and the
/// loss are fused: logits exist one chunk of rows at a time, in the forward
/// and in the backward ([`ft_kernels::loss`]). Otherwise (a trained head)
/// the head's logits go through `log_softmax` chunk by chunk.
pub fn lm_nll_sum(model: &CausalLm, h: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = h.dims();
    let chunk = default_chunk(model.spec.vocab_size);
    if let Some(w) = frozen_head_weight(model) {
        return linear_cross_entropy(h, w, targets, chunk);
    }
    let mut total: Option<Tensor<1>> = None;
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let logits = lm_logits(model, h.clone().narrow(0, start, end - start));
        let nll = activation::log_softmax(logits, 1)
            .gather(
                1,
                targets
                    .clone()
                    .narrow(0, start, end - start)
                    .reshape([end - start, 1]),
            )
            .sum()
            .neg();
        total = Some(match total {
            Some(acc) => acc + nll,
            None => nll,
        });
    }
    total.unwrap_or_else(|| Tensor::zeros([1], &h.device()))
}
