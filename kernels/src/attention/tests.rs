//! The recomputing attention against burn's autodiff through its own attention (the
//! `attention_fallback` decomposition), on the CPU and on wgpu: a packed batch's block-diagonal
//! causal mask, a fully masked row, several block sizes.

use burn::tensor::{Bool, Device, Tensor, TensorData};

use super::{AttentionBackend, attention};
use burn::backend::Dispatch;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(7);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn host(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 data")
}

fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    assert!(a.iter().all(|x| x.is_finite()), "{what}: not finite");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= tol * scale,
        "{what}: max |diff| {worst:e} > {tol:e} × {scale:e}"
    );
}

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
    let (q0, k0, v0, g0) = (values(n, 1), values(n, 2), values(n, 3), values(n, 4));
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

    let (q, k, v) = (t(&q0), t(&k0), t(&v0));
    let out = attention(q.clone(), k.clone(), v.clone(), mask.clone());
    let grads = (out.clone() * g.clone()).sum().backward();
    assert_close("out", &host(out.inner()), &want, tol);
    for (name, x, w) in [
        ("dq", &q, &want_grads[0]),
        ("dk", &k, &want_grads[1]),
        ("dv", &v, &want_grads[2]),
    ] {
        assert_close(name, &host(x.grad(&grads).expect("grad")), w, tol);
    }

    // The backward alone, for block sizes from one row to all rows.
    let plain =
        |v: &Vec<f32>| Tensor::<4>::from_data(TensorData::new(v.clone(), [b, h, s, d]), device);
    let mask = packed_mask(b, h, s, device);
    let out = attention(plain(&q0), plain(&k0), plain(&v0), mask.clone());
    for block in [1, 2, 4, s, 64] {
        let (dq, dk, dv) = <Dispatch as AttentionBackend>::attention_recompute_backward(
            plain(&q0).into_dispatch(),
            plain(&k0).into_dispatch(),
            plain(&v0).into_dispatch(),
            mask.clone().into_dispatch(),
            out.clone().into_dispatch(),
            plain(&values(n, 4)).into_dispatch(),
            block,
        );
        for (name, x, w) in [
            ("dq", dq, &want_grads[0]),
            ("dk", dk, &want_grads[1]),
            ("dv", dv, &want_grads[2]),
        ] {
            assert_close(
                &format!("{name}, block {block}"),
                &host(Tensor::from_dispatch(x)),
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
    use crate::nf4::dequant::tests::client_or_skip;
    use crate::runtime::Backend;
    if client_or_skip(Backend::Wgpu, "attention::wgpu_matches_burn_autodiff").is_some() {
        check(&Device::wgpu(burn::tensor::DeviceKind::DefaultDevice), 1e-4);
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_burn_autodiff() {
    use crate::runtime::{Backend, burn_device};
    match burn_device(Backend::Cuda).expect("the cuda feature links CUDA") {
        Some(d) => check(&d, 1e-4),
        None => eprintln!("SKIPPED attention::cuda_matches_burn_autodiff: no CUDA device"),
    }
}
