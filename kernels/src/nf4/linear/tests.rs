//! The extension against the reference composition: the dense weight from the plain-Rust
//! dequantization, burn's matmul, and burn's own autodiff through them.
//!
//! Each check takes a burn [`Device`] and runs on the CPU (`Flex`) always and on wgpu when the
//! crate's `wgpu` feature links it (CI: Mesa lavapipe). Dequantization is compared bit for bit;
//! products and gradients within `1e-5` of the largest magnitude (the two paths run the same
//! matmuls, so on the CPU they agree exactly; the tolerance only leaves GPU reduction orders
//! free).

use burn::tensor::{Device, Distribution, Tensor, TensorData, bf16};

use super::Nf4Weight;
use crate::nf4::reference::{BLOCKSIZE, Nf4Tensor};
use crate::test_util::{assert_close, host, values};

fn tensor(data: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// Shapes: whole blocks; a partial last block and an odd value count; one row.
const SHAPES: [[usize; 2]; 3] = [[48, 128], [5, 73], [1, 200]];

fn quantized(shape: [usize; 2], seed: u64) -> Nf4Tensor {
    let w = values(shape[0] * shape[1], seed, 0.08);
    Nf4Tensor::quantize(&w, &shape, BLOCKSIZE).expect("quantize")
}

fn check_dequantize(device: &Device) {
    for (k, shape) in SHAPES.into_iter().enumerate() {
        for double in [false, true] {
            let q = quantized(shape, k as u64);
            let q = if double { q.with_double_quant() } else { q };
            let w = Nf4Weight::upload(&q, device).expect("upload");
            assert_eq!(w.shape(), shape);
            let got: Vec<u32> = host(w.dequantize()).iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = q.dequantize().iter().map(|v| v.to_bits()).collect();
            assert_eq!(
                got, want,
                "dequantize {shape:?} double_quant={double}: bits differ"
            );
            // Straight to bf16: each f32 product rounded to nearest-even, as bitsandbytes'
            // bf16 dequantization (read back as bytes: no kernel runs on the bf16 tensor).
            let got: Vec<u32> = w
                .dequantize_bf16()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32")
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let want: Vec<u32> = q
                .dequantize()
                .iter()
                .map(|&v| bf16::from_f32(v).to_f32().to_bits())
                .collect();
            assert_eq!(
                got, want,
                "dequantize to bf16 {shape:?} double_quant={double}: bits differ"
            );
        }
    }
}

fn check_forward(device: &Device) {
    for (k, shape) in SHAPES.into_iter().enumerate() {
        let q = quantized(shape, 10 + k as u64);
        let w = Nf4Weight::upload(&q, device).expect("upload");
        let x = tensor(
            values(7 * shape[1], 20 + k as u64, 1.0),
            [7, shape[1]],
            device,
        );
        let dense = tensor(q.dequantize(), shape, device);
        let want = host(x.clone().matmul(dense.transpose()));
        let got = host(w.forward(x));
        assert_close(&format!("forward {shape:?}"), &got, &want, 1e-5);
    }
}

/// `QLoraLinear`'s forward and backward: `y = x·dequant(W)ᵀ + s·(x·Aᵀ)·Bᵀ`, gradients for `x`,
/// `A` and `B`, against burn's autodiff through the dense reference weight.
///
/// The weight lives on the plain device and the input on its autodiff twin, as in training (the
/// frozen base is loaded before autodiff is switched on).
fn check_backward_with_lora(base_device: &Device) {
    let device = base_device.clone().autodiff();
    for (k, shape) in SHAPES.into_iter().enumerate() {
        let [out_f, in_f] = shape;
        let rank = 4;
        let scale = 2.0;
        let q = quantized(shape, 30 + k as u64);
        let w = Nf4Weight::upload(&q, base_device).expect("upload");
        let dense = tensor(q.dequantize(), shape, &device);
        let x0 = values(9 * in_f, 40 + k as u64, 1.0);
        let a0 = values(rank * in_f, 50 + k as u64, 0.1);
        let b0 = values(out_f * rank, 60 + k as u64, 0.1);
        // A fixed upstream gradient, so every output element matters differently.
        let g = Tensor::<2>::random([9, out_f], Distribution::Normal(0.0, 1.0), &device);
        let g = tensor(host(g), [9, out_f], &device);

        let run = |nf4: bool| {
            let x = tensor(x0.clone(), [9, in_f], &device).require_grad();
            let a = tensor(a0.clone(), [rank, in_f], &device).require_grad();
            let b = tensor(b0.clone(), [out_f, rank], &device).require_grad();
            let base = if nf4 {
                w.forward(x.clone())
            } else {
                x.clone().matmul(dense.clone().transpose())
            };
            let lora = x
                .clone()
                .matmul(a.clone().transpose())
                .matmul(b.clone().transpose())
                * scale;
            let y = base + lora;
            let grads = (y.clone() * g.clone()).sum().backward();
            let grad = |t: &Tensor<2>| host(t.grad(&grads).expect("gradient"));
            (host(y.inner()), grad(&x), grad(&a), grad(&b))
        };
        let (y, dx, da, db) = run(true);
        let (y_ref, dx_ref, da_ref, db_ref) = run(false);
        assert_close(&format!("y {shape:?}"), &y, &y_ref, 1e-5);
        assert_close(&format!("dx {shape:?}"), &dx, &dx_ref, 1e-5);
        assert_close(&format!("dA {shape:?}"), &da, &da_ref, 1e-5);
        assert_close(&format!("dB {shape:?}"), &db, &db_ref, 1e-5);
    }
}

/// The frozen base gets no gradient and the NF4 op is a constant outside the graph when the
/// input needs none.
fn check_no_gradient_without_tracked_input(device: &Device) {
    let device = device.clone().autodiff();
    let shape = [16, 64];
    let q = quantized(shape, 70);
    let w = Nf4Weight::upload(&q, &device).expect("upload");
    let x = tensor(values(3 * 64, 71, 1.0), [3, 64], &device).require_grad();
    let y = w.forward(x.clone());
    let grads = y.sum().backward();
    assert!(x.grad(&grads).is_some(), "x gets its gradient");
    let dense = w.dequantize();
    assert!(
        !dense.is_require_grad(),
        "the dequantized base is a constant"
    );
}

mod flex {
    use super::*;

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn dequantize_matches_reference() {
        check_dequantize(&device());
    }

    #[test]
    fn forward_matches_dense_composition() {
        check_forward(&device());
    }

    #[test]
    fn backward_with_lora_matches_autodiff_through_dense() {
        check_backward_with_lora(&device());
    }

    #[test]
    fn base_is_frozen() {
        check_no_gradient_without_tracked_input(&device());
    }
}

/// The four checks on a runtime's device, in a module named after the runtime (skipped with a
/// message where the machine has no such device).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
macro_rules! runtime_tests {
    ($name:ident, $backend:expr) => {
        mod $name {
            use super::*;
            use crate::test_util::device_or_skip;

            fn device(test: &str) -> Option<Device> {
                device_or_skip($backend, &format!("{}::{test}", stringify!($name)))
            }

            #[test]
            fn dequantize_matches_reference() {
                if let Some(d) = device("dequantize_matches_reference") {
                    check_dequantize(&d);
                }
            }

            #[test]
            fn forward_matches_dense_composition() {
                if let Some(d) = device("forward_matches_dense_composition") {
                    check_forward(&d);
                }
            }

            #[test]
            fn backward_with_lora_matches_autodiff_through_dense() {
                if let Some(d) = device("backward_with_lora_matches_autodiff_through_dense") {
                    check_backward_with_lora(&d);
                }
            }

            #[test]
            fn base_is_frozen() {
                if let Some(d) = device("base_is_frozen") {
                    check_no_gradient_without_tracked_input(&d);
                }
            }
        }
    };
}

#[cfg(feature = "wgpu")]
runtime_tests!(wgpu, crate::runtime::Backend::Wgpu);

#[cfg(feature = "cuda")]
runtime_tests!(cuda, crate::runtime::Backend::Cuda);
