//! The training loop on the tiny fixture Llama (tests/fixtures/models/llama),
//! against PEFT (tests/fixtures/gen/train_reference.py) and against itself
//! (accumulation, packing, resume).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use ft_model::lora::{self, LoraSpec};
use ft_model::{CausalLm, LoraInit, Nf4Load, PackedBatch, load_hf_dir, load_model};
use ft_tokenize::PackedRow;
use ft_train::adamw::{AdamW, AdamWConfig};
use ft_train::trainer::{micro_batch_loss, to_host};
use ft_train::{LrScheduler, Observer, StepRecord, TrainConfig, TrainSetup, train};
use safetensors::SafeTensors;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny_llama(device: &Device) -> CausalLm {
    load_hf_dir(&root().join("tests/fixtures/models/llama"), device).unwrap()
}

struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    fn open() -> Self {
        Self::named("peft_step.safetensors")
    }
    fn named(file: &str) -> Self {
        Self {
            bytes: std::fs::read(root().join("tests/fixtures/train").join(file)).unwrap(),
        }
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    fn f32s(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = self.st();
        let v = st.tensor(name).unwrap();
        let data = v
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (v.shape().to_vec(), data)
    }
    fn i64s(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let st = self.st();
        let v = st.tensor(name).unwrap();
        let data = v
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (v.shape().to_vec(), data)
    }
    fn keys(&self, prefix: &str) -> Vec<String> {
        let mut k: Vec<String> = self
            .st()
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix(prefix).map(str::to_string))
            .collect();
        k.sort();
        k
    }
}

fn spec_all7(r: usize, alpha: f64) -> LoraSpec {
    LoraSpec {
        r,
        alpha,
        dropout: 0.0,
        use_rslora: false,
        init: LoraInit::Kaiming,
        targets: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
        .map(String::from)
        .to_vec(),
    }
}

/// HF labels (`-100` = ignored, shifted inside the model) → a packed row
/// whose mask marks trained *target* tokens.
fn row_from_labels(ids: &[i64], labels: &[i64], seq_lens: Vec<u32>) -> PackedRow {
    PackedRow {
        ids: ids.iter().map(|&x| x as u32).collect(),
        mask: labels.iter().map(|&l| l != -100).collect(),
        seq_lens,
    }
}

/// The fixture's batch: two unpacked rows of 24 tokens (`input_ids`,
/// `labels` of peft_step.safetensors).
fn fixture_rows(fx: &Fixture) -> Vec<PackedRow> {
    let (_, ids) = fx.i64s("input_ids");
    let (_, labels) = fx.i64s("labels");
    (0..2)
        .map(|r| {
            row_from_labels(
                &ids[r * 24..(r + 1) * 24],
                &labels[r * 24..(r + 1) * 24],
                vec![24],
            )
        })
        .collect()
}

/// Tolerances of the bf16 QLoRA step against PEFT's. When written: logits and loss equal
/// (ft in f32 is 3.2e-2 and 6.9e-4 away); LoRA gradients 1.6e-2 (ft in f32: 4.3e-2) — the
/// backward rounds to bf16 at more places than ft can order exactly as autograd does (the
/// sums of a tensor's gradients from several consumers, RoPE's and GQA's backward).
const BF16_LOGITS_TOL: f32 = 1e-4;
const BF16_LOSS_TOL: f32 = 1e-5;
const BF16_GRAD_TOL: f32 = 3e-2;

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn peft_model(fx: &Fixture, device: &Device) -> CausalLm {
    with_peft_init(tiny_llama(device), fx, device)
}

/// `model` with LoRA r=4, alpha=8 on all seven projections, initialised to
/// the fixture's `init.*` (PEFT's keys).
fn with_peft_init(model: CausalLm, fx: &Fixture, device: &Device) -> CausalLm {
    with_peft_init_on(model, fx, &device.clone().autodiff())
}

/// [`with_peft_init`] with the adapter on the autodiff device `ad` (e.g. one
/// with gradient checkpointing).
fn with_peft_init_on(mut model: CausalLm, fx: &Fixture, ad: &Device) -> CausalLm {
    let ad = ad.clone();
    lora::attach_lora(&mut model, &spec_all7(4, 8.0), 0, &ad);
    let init: BTreeMap<String, Tensor<2>> = fx
        .keys("init.")
        .into_iter()
        .map(|k| {
            let (s, v) = fx.f32s(&format!("init.{k}"));
            (k, Tensor::from_data(TensorData::new(v, [s[0], s[1]]), &ad))
        })
        .collect();
    assert_eq!(init.len(), 28);
    lora::set_lora_params(&mut model, &init, &ad);
    model
}

fn grads_of(
    model: &CausalLm,
    rows: &[&PackedRow],
    device: &Device,
) -> (f32, BTreeMap<String, Vec<f32>>) {
    let (loss, n) = micro_batch_loss(model, rows, 0, device).unwrap();
    let loss = loss / n as f32;
    let g = loss.backward();
    let value = to_host("loss", loss).unwrap()[0];
    let grads = lora::lora_params(model)
        .into_iter()
        .map(|(k, p)| {
            let v = to_host(&k, p.grad(&g).expect("every LoRA factor gets a gradient")).unwrap();
            (k, v)
        })
        .collect();
    (value, grads)
}

/// The loss within 1e-5 and every LoRA gradient within 1e-4 (relative) of
/// the fixture's `{prefix}loss` / `{prefix}grad.<key>`.
fn check_loss_and_grads(fx: &Fixture, prefix: &str, loss: f32, grads: &BTreeMap<String, Vec<f32>>) {
    let (_, want_loss) = fx.f32s(&format!("{prefix}loss"));
    assert!(
        (loss - want_loss[0]).abs() <= 1e-5 * want_loss[0],
        "{prefix}loss {loss} vs {}",
        want_loss[0]
    );
    let mut worst = 0f32;
    for (k, g) in grads {
        let (_, want) = fx.f32s(&format!("{prefix}grad.{k}"));
        worst = worst.max(rel_err(g, &want));
    }
    assert!(worst <= 1e-4, "worst {prefix}gradient rel err {worst}");
}

/// Forward with the adapter, loss, every LoRA gradient and one AdamW step
/// equal PEFT's on the same init and batch.
#[test]
fn one_lora_step_matches_peft() {
    let fx = Fixture::open();
    let device = Device::flex();
    let model = peft_model(&fx, &device);

    let rows = fixture_rows(&fx);
    let refs: Vec<&PackedRow> = rows.iter().collect();

    // Logits of base + adapter.
    let seqs: Vec<Vec<Vec<u32>>> = rows.iter().map(|r| vec![r.ids.clone()]).collect();
    let logits = to_host(
        "logits",
        model.forward(&PackedBatch::from_rows(&seqs, 0, &device)),
    )
    .unwrap();
    let (_, want) = fx.f32s("logits_before");
    let e = rel_err(&logits, &want);
    assert!(e <= 1e-4, "logits rel err {e}");

    let (loss, grads) = grads_of(&model, &refs, &device);
    check_loss_and_grads(&fx, "", loss, &grads);

    // One AdamW step (lr 1e-3, no decay) from the same init.
    let mut opt = AdamW::new(lora::lora_host(&model).unwrap());
    opt.update(
        &AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        },
        1e-3,
        &grads,
    );
    let mut worst = 0f32;
    for (k, slot) in &opt.slots {
        let (_, want) = fx.f32s(&format!("step1.{k}"));
        for (a, b) in slot.value.iter().zip(&want) {
            worst = worst.max((a - b).abs());
        }
    }
    // Adam's first step moves each weight by ≈ lr·sign(g): a wrong gradient
    // sign flips a weight by 2e-3.
    assert!(worst <= 1e-5, "max |Δ| after one step {worst}");
}

/// QLoRA: the tiny Llama quantized to NF4 on load (plain and double-quantized
/// absmax), LoRA on top, one forward and backward: the base weights,
/// logits, loss and every LoRA gradient equal PEFT's over bitsandbytes'
/// `Linear4bit` on the CPU (tests/fixtures/gen/qlora_reference.py), same init
/// and batch as `one_lora_step_matches_peft`.
#[test]
fn one_qlora_step_matches_peft_bitsandbytes() {
    check_qlora_step(&Device::flex());
}

/// The same QLoRA step on burn's wgpu backend: the CubeCL NF4 dequant
/// kernel, burn's CubeCL matmuls and reductions, the fused loss; the code a
/// CUDA run takes apart from the runtime (CI: Mesa lavapipe).
#[test]
fn one_qlora_step_on_wgpu_matches_peft_bitsandbytes() {
    use ft_kernels::KernelError;
    use ft_kernels::runtime::{Backend, burn_device};
    match burn_device(Backend::Wgpu) {
        Ok(Some(device)) => check_qlora_step(&device),
        Ok(None) => eprintln!("SKIPPED one_qlora_step_on_wgpu: no Vulkan device on this machine"),
        Err(KernelError::RuntimeNotLinked { .. }) => {
            eprintln!("SKIPPED one_qlora_step_on_wgpu: built without `--features ft-kernels/wgpu`")
        }
        Err(e) => panic!("wgpu device: {e}"),
    }
}

/// The same QLoRA step on CUDA: build this test binary with
/// `--features ft-kernels/cuda` and run it with `--ignored` on the GPU
/// machine (`benches/gpu/`).
#[test]
#[ignore = "needs a CUDA GPU and --features ft-kernels/cuda"]
fn one_qlora_step_on_cuda_matches_peft_bitsandbytes() {
    use ft_kernels::KernelError;
    use ft_kernels::runtime::{Backend, burn_device};
    match burn_device(Backend::Cuda) {
        Ok(Some(device)) => {
            // Strict f32 products (no TF32), as PEFT's CPU fixture computes them.
            ft_kernels::gemm::set_tf32(false);
            check_qlora_step(&device)
        }
        Ok(None) => eprintln!("SKIPPED one_qlora_step_on_cuda: no CUDA device on this machine"),
        Err(KernelError::RuntimeNotLinked { .. }) => {
            eprintln!("SKIPPED one_qlora_step_on_cuda: built without `--features ft-kernels/cuda`")
        }
        Err(e) => panic!("CUDA device: {e}"),
    }
}

fn check_qlora_step(device: &Device) {
    let init = Fixture::open();
    let fx = Fixture::named("qlora_step.safetensors");
    let device = device.clone();
    let rows = fixture_rows(&init);
    let refs: Vec<&PackedRow> = rows.iter().collect();
    let seqs: Vec<Vec<Vec<u32>>> = rows.iter().map(|r| vec![r.ids.clone()]).collect();
    let (_, fp32_loss) = init.f32s("loss");
    for (variant, double_quant) in [("nf4", false), ("nf4dq", true)] {
        let base = load_model(
            &root().join("tests/fixtures/models/llama"),
            &device,
            Some(Nf4Load { double_quant }),
        )
        .unwrap();
        let model = with_peft_init(base, &init, &device);
        // The same NF4 base, bit for bit, before anything is compared.
        for (i, layer) in model.model.layers.iter().enumerate() {
            let q = layer.self_attn.q_proj.nf4.as_ref().expect("q_proj is NF4");
            let got = to_host("w", q.dequantize()).unwrap();
            let (_, want) = fx.f32s(&format!("{variant}.weight.{i}.self_attn.q_proj"));
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{variant}: layer {i} q_proj dequantizes differently from bitsandbytes"
            );
        }
        let logits = to_host(
            "logits",
            model.forward(&PackedBatch::from_rows(&seqs, 0, &device)),
        )
        .unwrap();
        let (_, want) = fx.f32s(&format!("{variant}.logits"));
        let e = rel_err(&logits, &want);
        assert!(e <= 1e-4, "{variant}: logits rel err {e}");
        let (loss, grads) = grads_of(&model, &refs, &device);
        // Quantization moves the loss well past the tolerance: this test
        // cannot pass on a dense base.
        assert!((loss - fp32_loss[0]).abs() > 100.0 * 1e-5 * fp32_loss[0]);
        check_loss_and_grads(&fx, &format!("{variant}."), loss, &grads);
    }
}

/// The bf16 QLoRA recipe (`model.dtype: bf16`): base weights, activations and products in
/// bf16, NF4 dequantized to bf16, the adapters and their gradients in f32. Against PEFT +
/// bitsandbytes doing the same on the CPU (`tests/fixtures/gen/qlora_bf16_reference.py`): the
/// same bf16 base bit for bit, then the logits, the loss and every LoRA gradient, each much
/// closer to PEFT's bf16 values than ft's own f32 step on the same base is.
#[test]
fn bf16_qlora_step_matches_peft_bitsandbytes() {
    let e = bf16_qlora_step_errors(&Device::flex());
    assert!(e.logits <= BF16_LOGITS_TOL, "logits rel err {}", e.logits);
    assert!(e.loss <= BF16_LOSS_TOL, "loss rel err {}", e.loss);
    assert!(
        e.grads <= BF16_GRAD_TOL,
        "worst LoRA gradient rel err {}",
        e.grads
    );
    assert!(
        e.grads < e.f32_grads / 2.0,
        "the bf16 step's gradients ({:e}) are not closer to PEFT's bf16 ones than f32's ({:e})",
        e.grads,
        e.f32_grads
    );
}

/// The same on CUDA (cuBLAS bf16 products, CubeCL's elementwise kernels in bf16). cuBLAS sums
/// in another order than torch's CPU kernels, so bit-equality is not expected: every distance
/// to PEFT's bf16 step must be under half of ft's f32 step's.
#[test]
#[ignore = "needs a CUDA GPU and --features ft-kernels/cuda"]
fn bf16_qlora_step_on_cuda_matches_peft_bitsandbytes() {
    use ft_kernels::KernelError;
    use ft_kernels::runtime::{Backend, burn_device};
    match burn_device(Backend::Cuda) {
        Ok(Some(device)) => {
            ft_kernels::gemm::set_tf32(false);
            let e = bf16_qlora_step_errors(&device);
            assert!(
                e.logits < e.f32_logits / 2.0,
                "logits {:e} vs f32 {:e}",
                e.logits,
                e.f32_logits
            );
            assert!(
                e.loss < e.f32_loss / 2.0,
                "loss {:e} vs f32 {:e}",
                e.loss,
                e.f32_loss
            );
            assert!(
                e.grads < e.f32_grads / 2.0,
                "gradients {:e} vs f32 {:e}",
                e.grads,
                e.f32_grads
            );
        }
        Ok(None) => eprintln!("SKIPPED bf16_qlora_step_on_cuda: no CUDA device on this machine"),
        Err(KernelError::RuntimeNotLinked { .. }) => {
            eprintln!("SKIPPED bf16_qlora_step_on_cuda: built without `--features ft-kernels/cuda`")
        }
        Err(e) => panic!("CUDA device: {e}"),
    }
}

/// Relative distances of ft's bf16 step (and of ft's f32 step on the same base) to PEFT's bf16
/// step: logits, loss, worst LoRA gradient.
struct Bf16StepErrors {
    logits: f32,
    loss: f32,
    grads: f32,
    f32_logits: f32,
    f32_loss: f32,
    f32_grads: f32,
}

fn bf16_qlora_step_errors(device: &Device) -> Bf16StepErrors {
    use burn::tensor::DType;
    let init = Fixture::open();
    let fx = Fixture::named("qlora_bf16_step.safetensors");
    let device = device.clone();
    let rows = fixture_rows(&init);
    let refs: Vec<&PackedRow> = rows.iter().collect();
    let seqs: Vec<Vec<Vec<u32>>> = rows.iter().map(|r| vec![r.ids.clone()]).collect();
    let load = || {
        load_model(
            &root().join("tests/fixtures/models/mistral"),
            &device,
            Some(Nf4Load { double_quant: true }),
        )
        .unwrap()
    };
    // The scale of bf16's own rounding: the same step in f32 on the same NF4 base.
    let f32_model = with_peft_init(load(), &init, &device);
    let f32_logits = to_host(
        "logits",
        f32_model.forward(&PackedBatch::from_rows(&seqs, 0, &device)),
    )
    .unwrap();
    let (f32_loss, f32_grads) = grads_of(&f32_model, &refs, &device);
    let model = with_peft_init(load().cast_params(DType::BF16), &init, &device);
    assert_eq!(model.dtype(), DType::BF16);
    for (k, p) in lora::lora_params(&model) {
        assert_eq!(p.dtype(), DType::F32, "{k}: adapters stay f32");
    }
    for (i, layer) in model.model.layers.iter().enumerate() {
        let q = layer.self_attn.q_proj.nf4.as_ref().expect("q_proj is NF4");
        let got = to_host("w", q.dequantize().cast(DType::BF16).cast(DType::F32)).unwrap();
        let (_, want) = fx.f32s(&format!("bf16.weight.{i}.self_attn.q_proj"));
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "layer {i} q_proj: bf16 dequantization differs from bitsandbytes'"
        );
    }
    let logits = to_host(
        "logits",
        model.forward(&PackedBatch::from_rows(&seqs, 0, &device)),
    )
    .unwrap();
    let (_, want_logits) = fx.f32s("bf16.logits");
    let (loss, grads) = grads_of(&model, &refs, &device);
    let (_, want_loss) = fx.f32s("bf16.loss");
    let (mut worst, mut worst_f32) = (0f32, 0f32);
    for (k, g) in &grads {
        let (_, want) = fx.f32s(&format!("bf16.grad.{k}"));
        worst = worst.max(rel_err(g, &want));
        worst_f32 = worst_f32.max(rel_err(&f32_grads[k], &want));
    }
    let e = Bf16StepErrors {
        logits: rel_err(&logits, &want_logits),
        loss: (loss - want_loss[0]).abs() / want_loss[0],
        grads: worst,
        f32_logits: rel_err(&f32_logits, &want_logits),
        f32_loss: (f32_loss - want_loss[0]).abs() / want_loss[0],
        f32_grads: worst_f32,
    };
    eprintln!(
        "bf16 QLoRA step vs PEFT bf16: logits {:.2e} (ft f32: {:.2e}), loss {:.2e} (ft f32: \
         {:.2e}), worst LoRA gradient {:.2e} (ft f32: {:.2e})",
        e.logits, e.f32_logits, e.loss, e.f32_loss, e.grads, e.f32_grads
    );
    e
}

/// Gradient checkpointing (each decoder layer recomputed in the backward
/// pass, `ft_train::recompute`) gives the loss and LoRA gradients of the
/// plain backward: on the NF4 model, without and with LoRA dropout (the
/// recomputation must draw the masks the first forward drew).
#[test]
fn qlora_gradient_checkpointing_changes_nothing() {
    use ft_train::recompute::{micro_batch_grads, micro_batch_grads_recompute};
    let fx = Fixture::open();
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let rows = fixture_rows(&fx);
    let refs: Vec<&PackedRow> = rows.iter().collect();
    for dropout in [0.0, 0.2] {
        let model = || {
            let mut m = load_model(
                &root().join("tests/fixtures/models/llama"),
                &device,
                Some(Nf4Load { double_quant: true }),
            )
            .unwrap();
            let state = lora::attach_lora(
                &mut m,
                &LoraSpec {
                    dropout,
                    ..spec_all7(4, 8.0)
                },
                7,
                &ad,
            );
            // PEFT's B is zero: give it values so every gradient is non-trivial.
            let init: BTreeMap<String, Tensor<2>> = lora::lora_params(&m)
                .into_iter()
                .map(|(k, t)| {
                    let [r, c] = t.dims();
                    let v: Vec<f32> = (0..r * c)
                        .map(|i| ((i * 7919 + k.len() * 31) % 97) as f32 / 970.0 - 0.05)
                        .collect();
                    (k, Tensor::from_data(TensorData::new(v, [r, c]), &ad))
                })
                .collect();
            lora::set_lora_params(&mut m, &init, &ad);
            (m, state)
        };
        let (plain, state_plain) = model();
        let (mut ckpt, state_ckpt) = model();
        let n = 36.0f32; // any scale: both paths apply it
        state_plain.reseed(11);
        let (loss_plain, grads_plain) = micro_batch_grads(&plain, &refs, 0, &device, 1.0 / n)
            .unwrap()
            .unwrap();
        state_ckpt.reseed(11);
        let (loss_ckpt, grads_ckpt) =
            micro_batch_grads_recompute(&mut ckpt, &refs, 0, &device, &ad, &state_ckpt, 1.0 / n)
                .unwrap()
                .unwrap();
        assert!(
            (loss_ckpt - loss_plain).abs() <= 1e-6 * loss_plain.abs(),
            "dropout {dropout}: loss {loss_ckpt} vs {loss_plain}"
        );
        assert_eq!(
            state_ckpt.draws(),
            state_plain.draws(),
            "dropout {dropout}: masks drawn"
        );
        assert_eq!(grads_ckpt.len(), 28);
        assert_eq!(grads_plain.len(), 28);
        for (k, g) in &grads_ckpt {
            let g = to_host(k, g.clone()).unwrap();
            let want = to_host(k, grads_plain[k].clone()).unwrap();
            let e = rel_err(&g, &want);
            assert!(e <= 1e-5, "dropout {dropout}, {k}: rel err {e}");
        }
        // The adapters are trainable leaves again, with unchanged values.
        for ((k, a), (_, b)) in lora::lora_params(&ckpt)
            .into_iter()
            .zip(lora::lora_params(&plain))
        {
            assert!(a.is_require_grad(), "{k} left untrainable");
            assert_eq!(
                to_host(&k, a).unwrap(),
                to_host(&k, b).unwrap(),
                "{k} changed"
            );
        }
    }
}

/// The fused head + loss (frozen head, logits a chunk at a time in forward
/// and backward) gives the loss and LoRA gradients of the plain
/// `log_softmax` path, which the loss takes when the head is trained (here:
/// the tied embedding made trainable).
#[test]
fn fused_head_loss_equals_log_softmax_path() {
    let fx = Fixture::open();
    let device = Device::flex();
    let rows = fixture_rows(&fx);
    let refs: Vec<&PackedRow> = rows.iter().collect();
    let fused = peft_model(&fx, &device);
    let mut plain = peft_model(&fx, &device);
    assert!(plain.lm_head.is_none(), "the tiny Llama ties its head");
    let w = plain.model.embed_tokens.weight.val();
    plain.model.embed_tokens.weight = burn::module::Param::from_tensor(w.autodiff().require_grad());
    let (loss_fused, grads_fused) = grads_of(&fused, &refs, &device);
    let (loss_plain, grads_plain) = grads_of(&plain, &refs, &device);
    assert!(
        (loss_fused - loss_plain).abs() <= 1e-6 * loss_plain.abs(),
        "loss {loss_fused} vs {loss_plain}"
    );
    for (k, g) in &grads_fused {
        let e = rel_err(g, &grads_plain[k]);
        assert!(e <= 1e-5, "{k}: rel err {e}");
    }
}

/// A packed row (two samples, positions restarting, block-diagonal
/// attention) gives PEFT's loss and gradients of the two samples run apart.
#[test]
fn packed_row_matches_peft_separate_samples() {
    let fx = Fixture::open();
    let device = Device::flex();
    let model = peft_model(&fx, &device);
    let (_, ids) = fx.i64s("packed.input_ids");
    let (_, labels) = fx.i64s("packed.labels");
    let (_, pos) = fx.i64s("packed.position_ids");
    let second = pos.iter().skip(1).position(|&p| p == 0).unwrap() + 1;
    let row = row_from_labels(
        &ids,
        &labels,
        vec![second as u32, (ids.len() - second) as u32],
    );
    let (loss, grads) = grads_of(&model, &[&row], &device);
    check_loss_and_grads(&fx, "packed.", loss, &grads);
}

/// A toy task with an obvious pattern: each sample counts up from a random
/// start, the first 4 tokens are the prompt.
fn counting_rows(n: usize, len: usize, seed: u64) -> Vec<PackedRow> {
    (0..n)
        .map(|i| {
            let start = (ft_model::arch::layers::splitmix64(seed + i as u64) % 200) as u32;
            let ids: Vec<u32> = (0..len as u32).map(|k| (start + k) % 256).collect();
            let mask = (0..len).map(|k| k >= 4).collect();
            PackedRow {
                ids,
                mask,
                seq_lens: vec![len as u32],
            }
        })
        .collect()
}

fn config(yaml: &str) -> TrainConfig {
    serde_yaml::from_str(yaml).unwrap()
}

struct Losses(Vec<StepRecord>);
impl Observer for Losses {
    fn on_step(&mut self, rec: &StepRecord) {
        self.0.push(rec.clone());
    }
}

fn run(
    cfg: &TrainConfig,
    rows: &[PackedRow],
    eval: &[PackedRow],
    out: &Path,
    spec: LoraSpec,
) -> (Vec<StepRecord>, ft_train::TrainReport) {
    let device = Device::flex();
    let mut model = tiny_llama(&device);
    let setup = TrainSetup {
        train: cfg,
        spec,
        seed: 42,
        output_dir: out.to_path_buf(),
        base_model: "tests/fixtures/models/llama".into(),
        rows,
        eval_rows: eval,
        pad_id: 0,
        device,
        extra_files: vec![("chat_template.jinja".into(), b"{{ messages }}".to_vec())],
        stop: None,
        summary: serde_json::Map::new(),
    };
    let mut obs = Losses(Vec::new());
    let report = train(&mut model, &setup, &mut obs).unwrap();
    (obs.0, report)
}

#[test]
fn loss_falls_and_outputs_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let rows = counting_rows(32, 16, 1);
    let eval = counting_rows(8, 16, 999);
    let cfg = config(
        "micro_batch_size: 4\nlearning_rate: 0.01\nmax_steps: 30\nlr_scheduler: constant\nlogging_steps: 1\neval_steps: 10\nweight_decay: 0.0\n",
    );
    let (steps, report) = run(&cfg, &rows, &eval, dir.path(), spec_all7(8, 16.0));
    let first = steps[0].loss;
    let last = steps.last().unwrap().loss;
    assert!(last < 0.5 * first, "loss went {first} → {last}");
    assert!(report.final_eval_loss.unwrap() < first * 0.6, "{report:?}");
    for f in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "metrics.jsonl",
        "run_summary.json",
        "training.svg",
        "chat_template.jinja",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.contains("\"type\":\"train\""))
            .count(),
        30
    );
    assert!(
        metrics
            .lines()
            .filter(|l| l.contains("\"type\":\"eval\""))
            .count()
            >= 3
    );

    // The saved adapter loads back and gives the trained model's logits.
    let device = Device::flex();
    let mut reloaded = tiny_llama(&device);
    lora::load_peft(&mut reloaded, dir.path(), &device.clone().autodiff()).unwrap();
    let seqs = vec![vec![eval[0].ids.clone()]];
    let batch = PackedBatch::from_rows(&seqs, 0, &device);
    let a = to_host("reloaded", reloaded.forward(&batch)).unwrap();
    let mut base = tiny_llama(&device);
    let b = to_host("base", base.forward(&batch)).unwrap();
    assert!(rel_err(&a, &b) > 1e-3, "the adapter changes the logits");
    // And equals a fresh training run's in-memory model? Compare to the
    // adapter applied through the config path instead: same tensors.
    lora::load_peft(&mut base, dir.path(), &device.clone().autodiff()).unwrap();
    let c = to_host("again", base.forward(&batch)).unwrap();
    assert_eq!(a, c);
}

#[test]
fn accumulation_equals_one_big_batch() {
    let rows = counting_rows(16, 12, 5);
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let common = "learning_rate: 0.005\nmax_steps: 2\nlr_scheduler: constant\nmax_grad_norm: 1.0\n";
    let a = config(&format!(
        "{common}micro_batch_size: 2\ngradient_accumulation_steps: 4\n"
    ));
    let b = config(&format!(
        "{common}micro_batch_size: 8\ngradient_accumulation_steps: 1\n"
    ));
    let (sa, _) = run(&a, &rows, &[], d1.path(), spec_all7(4, 8.0));
    let (sb, _) = run(&b, &rows, &[], d2.path(), spec_all7(4, 8.0));
    for (x, y) in sa.iter().zip(&sb) {
        assert!(
            (x.loss - y.loss).abs() <= 1e-5 * x.loss.abs(),
            "{} vs {}",
            x.loss,
            y.loss
        );
    }
    let ta = adapter_tensors(d1.path());
    let tb = adapter_tensors(d2.path());
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    let worst = ta
        .iter()
        .map(|(k, v)| {
            v.iter()
                .zip(&tb[k])
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        })
        .fold(0f32, f32::max);
    assert!(worst <= 1e-5, "adapters differ by {worst}");
}

#[test]
fn packed_training_equals_unpacked() {
    // The same samples, one per row vs two per row.
    let samples = counting_rows(8, 10, 11);
    let packed: Vec<PackedRow> = samples
        .chunks(2)
        .map(|p| PackedRow {
            ids: [p[0].ids.clone(), p[1].ids.clone()].concat(),
            mask: [p[0].mask.clone(), p[1].mask.clone()].concat(),
            seq_lens: vec![10, 10],
        })
        .collect();
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let common = "learning_rate: 0.005\nmax_steps: 1\nlr_scheduler: constant\n";
    let (sa, _) = run(
        &config(&format!("{common}micro_batch_size: 8\n")),
        &samples,
        &[],
        d1.path(),
        spec_all7(4, 8.0),
    );
    let (sb, _) = run(
        &config(&format!("{common}micro_batch_size: 4\n")),
        &packed,
        &[],
        d2.path(),
        spec_all7(4, 8.0),
    );
    assert!(
        (sa[0].loss - sb[0].loss).abs() <= 1e-5 * sa[0].loss,
        "{} vs {}",
        sa[0].loss,
        sb[0].loss
    );
    let ta = adapter_tensors(d1.path());
    let tb = adapter_tensors(d2.path());
    let worst = ta
        .iter()
        .map(|(k, v)| {
            v.iter()
                .zip(&tb[k])
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        })
        .fold(0f32, f32::max);
    assert!(worst <= 1e-5, "adapters differ by {worst}");
}

fn adapter_tensors(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                v.data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        })
        .collect()
}

/// A crash after step 3 (checkpoint at 3) and a resume give the same adapter
/// bytes as an uninterrupted run.
#[test]
fn crash_and_resume_gives_identical_adapter() {
    let rows = counting_rows(24, 12, 3);
    let yaml = "micro_batch_size: 4\nlearning_rate: 0.005\nmax_steps: 6\nsave_steps: 3\nlogging_steps: 1\nlora_dropout_unused: 0\n";
    let yaml = yaml.replace("lora_dropout_unused: 0\n", "");
    let mut spec = spec_all7(4, 8.0);
    spec.dropout = 0.1;
    let whole = tempfile::tempdir().unwrap();
    run(&config(&yaml), &rows, &[], whole.path(), spec.clone());

    let crashed = tempfile::tempdir().unwrap();
    struct CrashAt(u64);
    impl Observer for CrashAt {
        fn on_step(&mut self, rec: &StepRecord) {
            assert!(rec.step < self.0, "simulated crash at step {}", rec.step);
        }
    }
    let cfg = config(&yaml);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let device = Device::flex();
        let mut model = tiny_llama(&device);
        let setup = TrainSetup {
            train: &cfg,
            spec: spec.clone(),
            seed: 42,
            output_dir: crashed.path().to_path_buf(),
            base_model: "tests/fixtures/models/llama".into(),
            rows: &rows,
            eval_rows: &[],
            pad_id: 0,
            device,
            extra_files: vec![("chat_template.jinja".into(), b"{{ messages }}".to_vec())],
            stop: None,
            summary: serde_json::Map::new(),
        };
        train(&mut model, &setup, &mut CrashAt(5))
    }));
    assert!(result.is_err(), "the simulated crash happened");
    assert!(!crashed.path().join("adapter_model.safetensors").exists());
    assert!(crashed.path().join("checkpoints/checkpoint-3").is_dir());

    let resumed = config(&format!("{yaml}resume_from_checkpoint: true\n"));
    run(&resumed, &rows, &[], crashed.path(), spec);
    let a = std::fs::read(whole.path().join("adapter_model.safetensors")).unwrap();
    let b = std::fs::read(crashed.path().join("adapter_model.safetensors")).unwrap();
    assert!(a == b, "resumed adapter differs from the uninterrupted one");
    let _ = LrScheduler::Cosine;
}

/// PEFT's own saved adapter (after one step) loads into ft and gives PEFT's
/// logits; ft's saved adapter has exactly PEFT's tensor names and shapes.
#[test]
fn peft_saved_adapter_loads_and_matches_peft_logits() {
    let fx = Fixture::open();
    let device = Device::flex();
    let mut model = tiny_llama(&device);
    let dir = root().join("tests/fixtures/train/peft_step_adapter");
    let (spec, _) = lora::load_peft(&mut model, &dir, &device).unwrap();
    assert_eq!((spec.r, spec.alpha), (4, 8.0));
    let (_, ids) = fx.i64s("input_ids");
    let seqs: Vec<Vec<Vec<u32>>> = (0..2)
        .map(|r| {
            vec![
                ids[r * 24..(r + 1) * 24]
                    .iter()
                    .map(|&x| x as u32)
                    .collect(),
            ]
        })
        .collect();
    let logits = to_host(
        "logits",
        model.forward(&PackedBatch::from_rows(&seqs, 0, &device)),
    )
    .unwrap();
    let (_, want) = fx.f32s("logits_after");
    let e = rel_err(&logits, &want);
    assert!(e <= 1e-4, "logits rel err {e}");

    // ft writes the same names and shapes PEFT does.
    let out = tempfile::tempdir().unwrap();
    lora::save_peft(&model, &spec, "tests/fixtures/models/llama", out.path()).unwrap();
    let ours = adapter_tensors(out.path());
    let theirs = adapter_tensors(&dir);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (k, v) in &ours {
        assert_eq!(v, &theirs[k], "{k} round-trips exactly");
    }
}
