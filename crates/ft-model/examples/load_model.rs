//! Loads a model (HF directory or `.gguf`) into f32 on the CPU (with
//! `--nf4`: linear weights quantized to NF4 with double quantization, as
//! for QLoRA, through the NF4 cache as `ft run` does), runs one forward pass on 8 tokens and prints the load time
//! and the weights' size, for time and peak-memory measurements of the
//! loader:
//!
//! ```sh
//! cargo build --release -p ft-model --example load_model
//! /usr/bin/time -v target/release/examples/load_model DIR_OR_GGUF [--nf4]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use burn::tensor::Device;
use ft_model::{PackedBatch, load_model_cached};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: load_model DIR_OR_GGUF");
    let nf4 = std::env::args()
        .any(|a| a == "--nf4")
        .then_some(ft_model::Nf4Load { double_quant: true });
    let device = Device::flex();
    let t0 = Instant::now();
    // `FT_NF4_CACHE=0` measures quantizing every time.
    let cache = nf4.and_then(|_| ft_model::Nf4Cache::from_env());
    let (model, report) =
        load_model_cached(std::path::Path::new(&path), &device, nf4, cache.as_ref()).unwrap();
    let load = t0.elapsed();
    if let Some(r) = report {
        println!(
            "NF4 cache: {:?}, {} tensors, {}",
            r.status,
            r.tensors,
            r.path.display()
        );
    }
    let params: usize = ft_model::lora::linears(&model)
        .iter()
        .map(|(_, l)| {
            let [o, i] = l.shape();
            o * i
        })
        .sum::<usize>()
        + model.spec.vocab_size * model.spec.hidden_size;
    let batch = PackedBatch::from_rows(&[vec![(1..9).collect()]], 0, &device);
    let logits = model.forward(&batch);
    println!(
        "loaded {path} in {:.1} s: {:?}, {} layers, ~{:.2} G parameters = {:.2} GB in f32; logits {:?}",
        load.as_secs_f64(),
        model.spec.arch,
        model.spec.num_hidden_layers,
        params as f64 / 1e9,
        params as f64 * 4.0 / 1e9,
        logits.dims()
    );
}
