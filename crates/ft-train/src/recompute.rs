//! Gradients of one micro-batch, with or without whole-layer recomputation.
//!
//! [`micro_batch_grads`] is the plain path: one forward on the autodiff
//! device, one backward; every activation the backward needs is kept.
//!
//! [`micro_batch_grads_recompute`] is gradient checkpointing at decoder-layer
//! granularity, as transformers' `gradient_checkpointing_enable()` does it:
//!
//! ```text
//! forward, no graph:  h₀ = embed(ids); keep hₗ; hₗ₊₁ = layerₗ(hₗ)        (L inputs kept)
//! head, with graph:   loss = scale · NLL(head(norm(h_L))); g = ∂loss/∂h_L
//! for l = L-1 … 0:    y = layerₗ(hₗ) with a graph (adapters of layer l trainable,
//!                     dropout rewound to the masks of the first pass);
//!                     backward of Σ(y ⊙ g): ∂/∂A, ∂/∂B of layer l, and g = ∂/∂hₗ
//! ```
//!
//! Only the layers' inputs (`[batch, seq, hidden]` each) and one layer's
//! graph are alive at a time, for one extra forward. `Σ(y ⊙ g)` with `g`
//! constant has gradient exactly `g` at `y`, so the chain rule is unchanged;
//! gradients equal the plain path's up to floating-point summation order.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};
use ft_model::CausalLm;
use ft_model::arch::layers::{DropoutState, packed_causal_mask};
use ft_model::lora::{self, PEFT_PREFIX};
use ft_tokenize::PackedRow;

use crate::error::TrainError;
use crate::trainer::{micro_batch_loss, nll_of_hidden, prepare, to_host};

/// One micro-batch's contribution: `scale` × its summed loss (read back),
/// and the gradient of that for every adapter parameter that has one (on
/// the device, without autodiff).
pub type MicroGrads = (f64, BTreeMap<String, Tensor<2>>);

/// Forward and backward on the autodiff graph of the whole model. `None`
/// when the rows have no trained position.
pub fn micro_batch_grads(
    model: &CausalLm,
    rows: &[&PackedRow],
    pad_id: u32,
    device: &Device,
    scale: f32,
) -> Result<Option<MicroGrads>, TrainError> {
    let Some((loss, _)) = micro_batch_loss(model, rows, pad_id, device) else {
        return Ok(None);
    };
    let loss = loss * scale;
    let g = loss.backward();
    let value = f64::from(to_host("loss", loss)?[0]);
    let mut grads = BTreeMap::new();
    for (name, param) in lora::lora_params(model) {
        if let Some(gt) = param.grad(&g) {
            grads.insert(name, gt.inner());
        }
    }
    Ok(Some((value, grads)))
}

/// The adapter parameters of decoder layer `l`, by name, and whether every
/// adapter parameter belongs to some layer (else recomputation by layer
/// cannot produce all gradients).
fn by_layer(names: &[String], layers: usize) -> Option<Vec<Vec<String>>> {
    let mut out = vec![Vec::new(); layers];
    for name in names {
        let l =
            (0..layers).find(|l| name.starts_with(&format!("{PEFT_PREFIX}model.layers.{l}.")))?;
        out[l].push(name.clone());
    }
    Some(out)
}

/// [`micro_batch_grads`] with each decoder layer recomputed in the backward
/// pass (module docs). `model`'s adapters are left on `ad_device` as
/// trainable leaves with their current values, as the trainer keeps them.
/// Falls back to [`micro_batch_grads`] when an adapter sits outside the
/// decoder layers (an adapted `lm_head`).
pub fn micro_batch_grads_recompute(
    model: &mut CausalLm,
    rows: &[&PackedRow],
    pad_id: u32,
    device: &Device,
    ad_device: &Device,
    dropout: &DropoutState,
    scale: f32,
) -> Result<Option<MicroGrads>, TrainError> {
    let values: BTreeMap<String, Tensor<2>> = lora::lora_params(model)
        .into_iter()
        .map(|(k, t)| (k, t.inner()))
        .collect();
    let names: Vec<String> = values.keys().cloned().collect();
    let Some(groups) = by_layer(&names, model.model.layers.len()) else {
        return micro_batch_grads(model, rows, pad_id, device, scale);
    };
    let Some(p) = prepare(rows, pad_id, device) else {
        return Ok(None);
    };
    let batch = &p.batch;

    // 1. Forward without a graph: adapters as plain tensors, layer inputs kept.
    lora::set_lora_params(model, &values, device);
    let (cos, sin) = model
        .rope
        .cos_sin(batch.position_ids.clone(), model.dtype());
    let mask = packed_causal_mask(batch.seq_ids.clone(), model.spec.sliding_window);
    let mut h = model.model.embed_tokens.forward(batch.input_ids.clone());
    let mut inputs = Vec::with_capacity(model.model.layers.len());
    for layer in &model.model.layers {
        inputs.push((h.clone(), dropout.draws()));
        h = layer.forward(h, cos.clone(), sin.clone(), mask.clone());
    }
    let draws_end = dropout.draws();

    // 2. The head and the loss with a graph rooted at the last hidden state.
    let top = h.autodiff().require_grad();
    let loss = nll_of_hidden(model, model.model.norm.forward(top.clone()), &p) * scale;
    let head_grads = loss.backward();
    let value = f64::from(to_host("loss", loss)?[0]);
    let mut g = top
        .grad(&head_grads)
        .ok_or_else(|| TrainError::Readback {
            name: "gradient of the last hidden state".into(),
            message: "the loss does not depend on the decoder output".into(),
        })?
        .inner();
    drop(head_grads);

    // 3. Layer by layer, last first: recompute with a graph, backpropagate `g`.
    let mut grads = BTreeMap::new();
    for (l, (x, draws)) in inputs.into_iter().enumerate().rev() {
        let own: BTreeMap<String, Tensor<2>> = groups[l]
            .iter()
            .map(|k| (k.clone(), values[k].clone()))
            .collect();
        lora::set_lora_params(model, &own, ad_device);
        dropout.set_draws(draws);
        let x = x.autodiff().require_grad();
        let y = model.model.layers[l].forward(x.clone(), cos.clone(), sin.clone(), mask.clone());
        let layer_grads = (y * g).sum().backward();
        for (name, param) in lora::lora_params(model) {
            if !own.contains_key(&name) {
                continue;
            }
            if let Some(gt) = param.grad(&layer_grads) {
                grads.insert(name, gt.inner());
            }
        }
        g = x
            .grad(&layer_grads)
            .ok_or_else(|| TrainError::Readback {
                name: format!("gradient of layer {l}'s input"),
                message: "the layer's output does not depend on its input".into(),
            })?
            .inner();
        lora::set_lora_params(model, &own, device);
    }
    dropout.set_draws(draws_end);
    lora::set_lora_params(model, &values, ad_device);
    Ok(Some((value, grads)))
}
