//! Helpers shared by the tests of the burn backend extensions: deterministic inputs, read-back,
//! a relative tolerance and the devices to run on.

use burn::tensor::Tensor;

#[cfg(any(feature = "wgpu", feature = "cuda"))]
use crate::runtime::{Backend, burn_device};

/// Deterministic pseudo-random values in `[-scale, scale)` (a 64-bit LCG), so every runtime
/// sees the same inputs.
pub(crate) fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The tensor's values, read back as `f32`.
pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 data")
}

/// Every value finite and `|a - b| <= tol * max |b|` everywhere.
pub(crate) fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    assert!(a.iter().all(|x| x.is_finite()), "{what}: not finite");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let (i, worst) = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .enumerate()
        .fold(
            (0, 0f32),
            |acc, (i, d)| if d > acc.1 { (i, d) } else { acc },
        );
    assert!(
        worst <= tol * scale,
        "{what}: |diff| {worst:e} at {i} ({} vs {}) exceeds {tol:e} × {scale:e}",
        a[i],
        b[i]
    );
}

/// burn's device for `backend`, or `None` after saying on stderr why `test` is skipped (a
/// machine without such a device). A runtime the build does not link is a failure.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) fn device_or_skip(backend: Backend, test: &str) -> Option<burn::tensor::Device> {
    match burn_device(backend) {
        Ok(Some(device)) => Some(device),
        Ok(None) => {
            eprintln!("SKIPPED {test}: no {backend} device on this machine");
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}
