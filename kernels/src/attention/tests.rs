//! The recomputing attention against burn's autodiff through its own attention (the
//! `attention_fallback` decomposition), on the CPU and on wgpu: a packed batch's block-diagonal
//! causal mask, a fully masked row, several block sizes.

use burn::tensor::{Bool, Device, Tensor, TensorData};

use super::{AttentionBackend, AttentionForward, attention_with};
use crate::test_util::{assert_close, host, values};
use burn::backend::Dispatch;

/// `[b, h, s, s]`: row 0 packs sequences of 4 and 5 tokens, row 1 one sequence of 7 and two
/// padding positions that attend nothing (fully masked rows).
fn packed_mask(b: usize, h: usize, s: usize, device: &Device) -> Tensor<4, Bool> {
    let seq_of = |row: usize, pos: usize| -> Option<usize> {
        match row {
            0 => Some(if pos < 4 { 0 } else { 1 }),
            _ => (pos < 7).then_some(0),
        }
    };
    let mut m = Vec::with_capacity(b * h * s * s);
    for row in 0..b {
        for _ in 0..h {
            for i in 0..s {
                for j in 0..s {
                    let visible = match (seq_of(row, i), seq_of(row, j)) {
                        (Some(a), Some(c)) => a == c && j <= i,
                        _ => false,
                    };
                    m.push(!visible);
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(m, [b, h, s, s]), device)
}

fn check(device: &Device, tol: f32) {
    let ad = device.clone().autodiff();
    let (b, h, s, d) = (2, 3, 9, 8);
    let n = b * h * s * d;
    let (q0, k0, v0, g0) = (
        values(n, 1, 1.0),
        values(n, 2, 1.0),
        values(n, 3, 1.0),
        values(n, 4, 1.0),
    );
    let t = |v: &Vec<f32>| {
        Tensor::<4>::from_data(TensorData::new(v.clone(), [b, h, s, d]), &ad).require_grad()
    };
    let mask = packed_mask(b, h, s, &ad);
    let g = Tensor::<4>::from_data(TensorData::new(g0, [b, h, s, d]), &ad);

    let (q, k, v) = (t(&q0), t(&k0), t(&v0));
    let want = burn::tensor::module::attention(
        q.clone(),
        k.clone(),
        v.clone(),
        Some(mask.clone()),
        None,
        Default::default(),
    );
    let grads = (want.clone() * g.clone()).sum().backward();
    let want_grads: Vec<Vec<f32>> = [&q, &k, &v]
        .iter()
        .map(|x| host(x.grad(&grads).expect("grad")))
        .collect();
    let want = host(want.inner());

    // The backend's forward, then the gemm forward in blocks of 1, 4 and all query rows.
    for forward in [None, Some(1), Some(4), Some(s)] {
        let (q, k, v) = (t(&q0), t(&k0), t(&v0));
        let out = Tensor::<4>::from_dispatch(<Dispatch as AttentionBackend>::attention_recompute(
            q.clone().into_dispatch(),
            k.clone().into_dispatch(),
            v.clone().into_dispatch(),
            mask.clone().into_dispatch(),
            forward,
        ));
        let grads = (out.clone() * g.clone()).sum().backward();
        assert_close(
            &format!("out, forward {forward:?}"),
            &host(out.inner()),
            &want,
            tol,
        );
        for (name, x, w) in [
            ("dq", &q, &want_grads[0]),
            ("dk", &k, &want_grads[1]),
            ("dv", &v, &want_grads[2]),
        ] {
            let what = format!("{name}, forward {forward:?}");
            assert_close(&what, &host(x.grad(&grads).expect("grad")), w, tol);
        }
    }
    // The public entry point, both modes.
    for mode in [AttentionForward::Backend, AttentionForward::Gemm] {
        let out = attention_with(t(&q0), t(&k0), t(&v0), mask.clone(), mode);
        assert_close(&format!("out, {mode:?}"), &host(out.inner()), &want, tol);
    }

    // The backward alone, for block sizes from one row to all rows.
    let plain =
        |v: &Vec<f32>| Tensor::<4>::from_data(TensorData::new(v.clone(), [b, h, s, d]), device);
    let mask = packed_mask(b, h, s, device);
    for block in [1, 2, 4, s, 64] {
        let (dq, dk, dv) = <Dispatch as AttentionBackend>::attention_recompute_backward(
            plain(&q0).into_dispatch(),
            plain(&k0).into_dispatch(),
            plain(&v0).into_dispatch(),
            mask.clone().into_dispatch(),
            plain(&values(n, 4, 1.0)).into_dispatch(),
            block,
        );
        for (name, x, w) in [
            ("dq", dq, &want_grads[0]),
            ("dk", dk, &want_grads[1]),
            ("dv", dv, &want_grads[2]),
        ] {
            assert_close(
                &format!("{name}, block {block}"),
                &host(Tensor::<4>::from_dispatch(x)),
                w,
                tol,
            );
        }
    }
}

#[test]
fn flex_matches_burn_autodiff() {
    check(&Device::flex(), 1e-5);
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_matches_burn_autodiff() {
    use crate::runtime::Backend;
    if let Some(d) =
        crate::test_util::device_or_skip(Backend::Wgpu, "attention::wgpu_matches_burn_autodiff")
    {
        check(&d, 1e-4);
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_burn_autodiff() {
    use crate::runtime::Backend;
    if let Some(d) =
        crate::test_util::device_or_skip(Backend::Cuda, "attention::cuda_matches_burn_autodiff")
    {
        check(&d, 1e-4);
    }
}
