//! The fused loss against burn's autodiff through the plain composition
//! (`log_softmax(h · Wᵀ).gather(targets)`), on the CPU and on wgpu.

use burn::tensor::{Device, Int, Tensor, TensorData, activation};

use super::linear_cross_entropy;
use crate::test_util::{assert_close, host, values};

/// Loss and `dh` for several chunkings (one row per chunk, uneven, all rows in one) equal the
/// composition's; the weight gets no gradient.
fn check(device: &Device, tol: f32) {
    let device = device.clone().autodiff();
    let (rows, hidden, vocab) = (13, 16, 37);
    let h0 = values(rows * hidden, 1, 2.0);
    let w0 = values(vocab * hidden, 2, 1.0);
    let t0: Vec<i64> = (0..rows as i64)
        .map(|r| (r * 7 + 3) % vocab as i64)
        .collect();
    let w = Tensor::<2>::from_data(TensorData::new(w0, [vocab, hidden]), &device);
    let targets = Tensor::<1, Int>::from_data(TensorData::new(t0.clone(), [rows]), &device);

    let h =
        Tensor::<2>::from_data(TensorData::new(h0.clone(), [rows, hidden]), &device).require_grad();
    let logits = h.clone().matmul(w.clone().transpose());
    let want = activation::log_softmax(logits, 1)
        .gather(1, targets.clone().reshape([rows, 1]))
        .sum()
        .neg();
    // A non-unit upstream gradient, as from a loss divided by the token count.
    let g = (want.clone() * 0.37).backward();
    let want_dh = host(h.grad(&g).expect("dh"));
    let want = host(want.inner());

    for chunk in [1, 5, rows, 64] {
        let h = Tensor::<2>::from_data(TensorData::new(h0.clone(), [rows, hidden]), &device)
            .require_grad();
        let wt = w.clone().require_grad();
        let loss = linear_cross_entropy(h.clone(), wt.clone(), targets.clone(), chunk);
        let g = (loss.clone() * 0.37).backward();
        assert_close(
            &format!("loss, chunk {chunk}"),
            &host(loss.inner()),
            &want,
            tol,
        );
        let dh = host(h.grad(&g).expect("dh"));
        assert_close(&format!("dh, chunk {chunk}"), &dh, &want_dh, tol);
        assert!(wt.grad(&g).is_none(), "the LM head is frozen: no gradient");
    }
}

#[test]
fn flex_matches_composition() {
    check(&Device::flex(), 1e-5);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_matches_composition() {
    use crate::runtime::Backend;
    if let Some(d) =
        crate::test_util::device_or_skip(Backend::Wgpu, "loss::wgpu_matches_composition")
    {
        check(&d, 1e-4);
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_composition() {
    use crate::runtime::Backend;
    if let Some(d) =
        crate::test_util::device_or_skip(Backend::Cuda, "loss::cuda_matches_composition")
    {
        check(&d, 1e-4);
    }
}
