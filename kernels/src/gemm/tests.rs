//! `matmul` (every transpose combination, forward and gradients of both operands, plain and
//! batched) against burn's autodiff through `transpose` + `matmul` on the CPU; on wgpu (burn's
//! matmul behind the op) and on CUDA (cuBLAS, strict `f32` and TF32).

use burn::tensor::{Device, Tensor, TensorData};

use super::matmul;
use crate::test_util::{assert_close, host, values};

/// Stored shape of an operand whose `op()` is `[rows, cols]`.
fn stored(rows: usize, cols: usize, trans: bool) -> [usize; 2] {
    if trans { [cols, rows] } else { [rows, cols] }
}

/// `op(A)` is `[m, k]`, `op(B)` `[k, n]`; `ta`/`tb` say whether each is stored transposed.
#[derive(Clone, Copy)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
}

/// Output, `dA` and `dB` of `sum(op(A) op(B) ⊙ G)` by burn's own ops on the CPU.
fn reference(a: &[f32], b: &[f32], g: &[f32], case: Case) -> [Vec<f32>; 3] {
    let Case { m, k, n, ta, tb } = case;
    let device = Device::flex().autodiff();
    let at = Tensor::<2>::from_data(TensorData::new(a.to_vec(), stored(m, k, ta)), &device)
        .require_grad();
    let bt = Tensor::<2>::from_data(TensorData::new(b.to_vec(), stored(k, n, tb)), &device)
        .require_grad();
    let oa = if ta {
        at.clone().transpose()
    } else {
        at.clone()
    };
    let ob = if tb {
        bt.clone().transpose()
    } else {
        bt.clone()
    };
    let c = oa.matmul(ob);
    let gt = Tensor::<2>::from_data(TensorData::new(g.to_vec(), [m, n]), &device);
    let grads = (c.clone() * gt).sum().backward();
    [
        host(c.inner()),
        host(at.grad(&grads).expect("dA")),
        host(bt.grad(&grads).expect("dB")),
    ]
}

fn check(device: &Device, tol: f32) {
    let device = device.clone().autodiff();
    for (m, k, n) in [(13, 24, 7), (1, 5, 1), (64, 96, 80)] {
        for ta in [false, true] {
            for tb in [false, true] {
                let what = format!("{m}x{k}x{n} ta={ta} tb={tb}");
                let a = values(m * k, 11, 1.0);
                let b = values(k * n, 12, 1.0);
                let g = values(m * n, 13, 1.0);
                let [want_c, want_da, want_db] = reference(&a, &b, &g, Case { m, k, n, ta, tb });
                let at = Tensor::<2>::from_data(TensorData::new(a, stored(m, k, ta)), &device)
                    .require_grad();
                let bt = Tensor::<2>::from_data(TensorData::new(b, stored(k, n, tb)), &device)
                    .require_grad();
                let c = matmul(at.clone(), bt.clone(), ta, tb);
                assert_eq!(c.dims(), [m, n], "{what}: shape");
                let gt = Tensor::<2>::from_data(TensorData::new(g, [m, n]), &device);
                let grads = (c.clone() * gt).sum().backward();
                assert_close(&format!("{what}: C"), &host(c.inner()), &want_c, tol);
                assert_close(
                    &format!("{what}: dA"),
                    &host(at.grad(&grads).expect("dA")),
                    &want_da,
                    tol,
                );
                assert_close(
                    &format!("{what}: dB"),
                    &host(bt.grad(&grads).expect("dB")),
                    &want_db,
                    tol,
                );
            }
        }
    }
    check_batched(&device, tol);
    // A frozen operand (the NF4 weight, the LM head) gets no gradient and costs no panic.
    let a =
        Tensor::<2>::from_data(TensorData::new(values(6, 1, 1.0), [2, 3]), &device).require_grad();
    let w = Tensor::<2>::from_data(TensorData::new(values(12, 2, 1.0), [4, 3]), &device);
    let grads = matmul(a.clone(), w.clone(), false, true).sum().backward();
    assert!(a.grad(&grads).is_some() && w.grad(&grads).is_none());
}

/// Batches of matrices, `[2, 3, .., ..]` (attention's `[batch, heads, rows, cols]`) and
/// `[4, .., ..]`: output and both gradients against burn's autodiff of `transpose` + `matmul`
/// on the CPU, for every transpose combination.
fn check_batched(device: &Device, tol: f32) {
    fn op<const D: usize>(t: Tensor<D>, trans: bool) -> Tensor<D> {
        if trans { t.swap_dims(D - 2, D - 1) } else { t }
    }
    fn run<const D: usize>(
        device: &Device,
        tol: f32,
        batch: [usize; 2],
        m: usize,
        k: usize,
        n: usize,
    ) {
        let dims_of = |rows: usize, cols: usize, trans: bool| -> [usize; D] {
            let mut dims = [0; D];
            dims[..D - 2].copy_from_slice(&batch[..D - 2]);
            let [r, c] = stored(rows, cols, trans);
            dims[D - 2] = r;
            dims[D - 1] = c;
            dims
        };
        let nb: usize = batch[..D - 2].iter().product();
        let cpu = Device::flex().autodiff();
        for ta in [false, true] {
            for tb in [false, true] {
                let what = format!("batch {:?} {m}x{k}x{n} ta={ta} tb={tb}", &batch[..D - 2]);
                let (a, b, g) = (
                    values(nb * m * k, 21, 1.0),
                    values(nb * k * n, 22, 1.0),
                    values(nb * m * n, 23, 1.0),
                );
                let out_dims = dims_of(m, n, false);
                let tensor = |v: &Vec<f32>, dims: [usize; D], dev: &Device| {
                    Tensor::<D>::from_data(TensorData::new(v.clone(), dims), dev)
                };
                let (ra, rb) = (
                    tensor(&a, dims_of(m, k, ta), &cpu).require_grad(),
                    tensor(&b, dims_of(k, n, tb), &cpu).require_grad(),
                );
                let want = op(ra.clone(), ta).matmul(op(rb.clone(), tb));
                let grads = (want.clone() * tensor(&g, out_dims, &cpu)).sum().backward();
                let (want_da, want_db) = (
                    host(ra.grad(&grads).expect("dA")),
                    host(rb.grad(&grads).expect("dB")),
                );
                let (xa, xb) = (
                    tensor(&a, dims_of(m, k, ta), device).require_grad(),
                    tensor(&b, dims_of(k, n, tb), device).require_grad(),
                );
                let c = matmul(xa.clone(), xb.clone(), ta, tb);
                assert_eq!(c.dims(), out_dims, "{what}: shape");
                let grads = (c.clone() * tensor(&g, out_dims, device)).sum().backward();
                assert_close(
                    &format!("{what}: C"),
                    &host(c.inner()),
                    &host(want.inner()),
                    tol,
                );
                assert_close(
                    &format!("{what}: dA"),
                    &host(xa.grad(&grads).expect("dA")),
                    &want_da,
                    tol,
                );
                assert_close(
                    &format!("{what}: dB"),
                    &host(xb.grad(&grads).expect("dB")),
                    &want_db,
                    tol,
                );
            }
        }
    }
    run::<4>(device, tol, [2, 3], 9, 16, 5);
    run::<3>(device, tol, [4, 1], 7, 3, 11);
}

#[test]
#[should_panic(expected = "batch dimensions differ")]
fn mismatched_batch_dimensions_panic() {
    let device = Device::flex();
    let a = Tensor::<3>::zeros([2, 2, 3], &device);
    let b = Tensor::<3>::zeros([1, 3, 4], &device);
    let _ = matmul(a, b, false, false);
}

#[test]
fn flex_matches_burn_autodiff() {
    check(&Device::flex(), 1e-6);
}

#[test]
#[should_panic(expected = "has 3 columns but op(rhs) has 4 rows")]
fn mismatched_inner_dimensions_panic_with_both_shapes() {
    let device = Device::flex();
    let a = Tensor::<2>::zeros([2, 3], &device);
    let b = Tensor::<2>::zeros([4, 3], &device);
    let _ = matmul(a, b, false, false);
}

/// A chain of dependent products, each operand written by an elementwise kernel just before
/// and each output read by one just after, intermediates dropped as it goes (so their memory is
/// reused): `matmul` against burn's own matmul on the CPU. On CUDA this is the ordering check
/// for cuBLAS enqueued on cubecl's stream without host synchronization: a product that ran
/// before its operand was written, or after its output's memory was handed out again, changes
/// the numbers.
fn check_chain(device: &Device, tol: f32) {
    let cpu = Device::flex();
    let (rows, dim, heads) = (192, 128, 4);
    let w_host = values(dim * dim, 21, 1.0 / (dim as f32).sqrt());
    let x_host = values(rows * dim, 22, 1.0);
    let run = |device: &Device, ours: bool| {
        let w = Tensor::<2>::from_data(TensorData::new(w_host.clone(), [dim, dim]), device);
        let mut x = Tensor::<2>::from_data(TensorData::new(x_host.clone(), [rows, dim]), device);
        for step in 0..24 {
            // An operand written just before the product, read transposed on odd steps.
            let a = x.clone().tanh() * 0.9 + 0.05;
            let y = if ours {
                matmul(a, w.clone(), false, step % 2 == 1)
            } else if step % 2 == 1 {
                a.matmul(w.clone().transpose())
            } else {
                a.matmul(w.clone())
            };
            // A batched product of the output with itself: [heads, rows, dim/heads] blocks.
            let blocks = y
                .clone()
                .reshape([rows, heads, dim / heads])
                .swap_dims(0, 1);
            let scores = if ours {
                matmul(blocks.clone(), blocks.clone(), false, true)
            } else {
                blocks.clone().matmul(blocks.clone().transpose())
            };
            let mixed = if ours {
                matmul(scores / rows as f32, blocks, false, false)
            } else {
                (scores / rows as f32).matmul(blocks)
            };
            let mixed = mixed.swap_dims(0, 1).reshape([rows, dim]);
            x = (x + y * 0.5 + mixed) * 0.7;
        }
        host(x)
    };
    let got = run(device, true);
    let expect = run(&cpu, false);
    assert_close("24-step product chain", &got, &expect, tol);
}

#[test]
fn flex_chain_matches_burn() {
    check_chain(&Device::flex(), 1e-5);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_chain_matches_burn() {
    use crate::runtime::Backend;
    if let Some(d) =
        crate::test_util::device_or_skip(Backend::Wgpu, "gemm::wgpu_chain_matches_burn")
    {
        check_chain(&d, 1e-4);
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_matches_burn_autodiff() {
    use crate::runtime::Backend;
    if let Some(d) =
        crate::test_util::device_or_skip(Backend::Wgpu, "gemm::wgpu_matches_burn_autodiff")
    {
        check(&d, 1e-5);
    }
}

/// cuBLAS in strict `f32`, then with TF32 (inputs rounded to 10 mantissa bits: ~1e-3 relative).
#[cfg(feature = "cuda")]
#[test]
fn cuda_cublas_matches_burn_autodiff() {
    use crate::runtime::Backend;
    if let Some(d) =
        crate::test_util::device_or_skip(Backend::Cuda, "gemm::cuda_cublas_matches_burn_autodiff")
    {
        super::set_tf32(false);
        check(&d, 1e-5);
        check_chain(&d, 1e-4);
        super::set_tf32(true);
        check(&d, 5e-3);
        super::set_tf32(false);
    }
}
