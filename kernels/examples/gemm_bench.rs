//! The GEMMs of QLoRA training on CUDA: cuBLAS through [`ft_kernels::gemm::matmul`] (strict
//! `f32` and TF32) against burn's own matmul, at the projection and LM-head shapes of the
//! Llama-3.2-1B and Llama-3.1-8B benchmark models at 8192 tokens.
//!
//! ```text
//! cargo run --release -p ft-kernels --features cuda --example gemm_bench
//! ```
//!
//! For every shape: the relative error of each path against an `f64` host product on sampled
//! output rows (checked: strict `f32` within 1e-5, TF32 within 1e-2), then TFLOP/s of each path
//! (10 products after 2 warm-up ones, `Device::sync` around the timed loop). burn's matmul
//! failing at a shape is reported, not fatal.

use std::time::Instant;

use burn::tensor::{Distribution, Tensor, TensorData};
use ft_kernels::gemm::{matmul, set_tf32};
use ft_kernels::runtime::{Backend, burn_device};

/// (what, tokens, in, out): `y [tokens, out] = x [tokens, in] · Wᵀ`.
const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("1B q/o_proj", 8192, 2048, 2048),
    ("1B k/v_proj", 8192, 2048, 512),
    ("1B gate/up_proj", 8192, 2048, 8192),
    ("1B down_proj", 8192, 8192, 2048),
    ("1B lm_head chunk", 1024, 2048, 128256),
    ("8B q/o_proj", 8192, 4096, 4096),
    ("8B gate/up_proj", 8192, 4096, 14336),
    ("8B down_proj", 8192, 14336, 4096),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `wgpu` runs every shape divided by 16 (a smoke run of this program on a CPU machine).
    let (backend, div) = match std::env::args().nth(1).as_deref() {
        Some("wgpu") => (Backend::Wgpu, 16),
        _ => (Backend::Cuda, 1),
    };
    let device = burn_device(backend)?.ok_or("no such device on this machine")?;
    println!(
        "{:<18} {:>9} {:>9} {:>9}   {:>8} {:>8} {:>8}",
        "shape", "err f32", "err tf32", "err burn", "f32 TF/s", "tf32", "burn"
    );
    let mut worst = (0.0f64, 0.0f64);
    for &(what, m, k, n) in SHAPES {
        let (m, k, n) = (m / div, k / div, n / div);
        let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 0.02), &device);
        let rows = [0, m / 3, m - 1];
        let want = host_rows(&x, &w, &rows)?;
        set_tf32(false);
        let e32 = rel_err(&matmul(x.clone(), w.clone(), false, true), &rows, &want)?;
        set_tf32(true);
        let etf = rel_err(&matmul(x.clone(), w.clone(), false, true), &rows, &want)?;
        let burn = std::panic::catch_unwind(|| x.clone().matmul(w.clone().transpose()));
        let eburn = match &burn {
            Ok(y) => format!("{:9.2e}", rel_err(y, &rows, &want)?),
            Err(_) => "   failed".into(),
        };
        worst = (worst.0.max(e32), worst.1.max(etf));
        let flops = 2.0 * (m * k * n) as f64;
        let time = |f: &dyn Fn() -> Tensor<2>| -> Result<f64, Box<dyn std::error::Error>> {
            for _ in 0..2 {
                drop(f());
            }
            device.sync()?;
            let t = Instant::now();
            for _ in 0..10 {
                drop(f());
            }
            device.sync()?;
            Ok(flops * 10.0 / t.elapsed().as_secs_f64() / 1e12)
        };
        set_tf32(false);
        let t32 = time(&|| matmul(x.clone(), w.clone(), false, true))?;
        set_tf32(true);
        let ttf = time(&|| matmul(x.clone(), w.clone(), false, true))?;
        let tburn = if burn.is_ok() {
            format!("{:8.1}", time(&|| x.clone().matmul(w.clone().transpose()))?)
        } else {
            "       -".into()
        };
        println!("{what:<18} {e32:9.2e} {etf:9.2e} {eburn}   {t32:8.1} {ttf:8.1} {tburn}");
    }
    if worst.0 > 1e-5 || worst.1 > 1e-2 {
        return Err(format!(
            "cuBLAS error too large: f32 {:.2e}, tf32 {:.2e}",
            worst.0, worst.1
        )
        .into());
    }
    println!(
        "cuBLAS within tolerance: f32 {:.2e} (<= 1e-5), tf32 {:.2e} (<= 1e-2)",
        worst.0, worst.1
    );
    Ok(())
}

/// `x[r] · Wᵀ` for each sampled row `r`, accumulated in `f64` on the host.
fn host_rows(
    x: &Tensor<2>,
    w: &Tensor<2>,
    rows: &[usize],
) -> Result<Vec<Vec<f64>>, Box<dyn std::error::Error>> {
    let [_, k] = x.dims();
    let [n, _] = w.dims();
    let wh: Vec<f32> = f32s(w.clone().into_data())?;
    let mut out = Vec::new();
    for &r in rows {
        let xr: Vec<f32> = f32s(x.clone().slice([r..r + 1, 0..k]).into_data())?;
        out.push(
            (0..n)
                .map(|j| {
                    (0..k)
                        .map(|i| f64::from(xr[i]) * f64::from(wh[j * k + i]))
                        .sum()
                })
                .collect(),
        );
    }
    Ok(out)
}

/// max |y - want| / max |want| over the sampled rows.
fn rel_err(
    y: &Tensor<2>,
    rows: &[usize],
    want: &[Vec<f64>],
) -> Result<f64, Box<dyn std::error::Error>> {
    let [_, n] = y.dims();
    let (mut diff, mut scale) = (0.0f64, 0.0f64);
    for (&r, want) in rows.iter().zip(want) {
        let yr: Vec<f32> = f32s(y.clone().slice([r..r + 1, 0..n]).into_data())?;
        for (a, b) in yr.iter().zip(want) {
            diff = diff.max((f64::from(*a) - b).abs());
            scale = scale.max(b.abs());
        }
    }
    Ok(diff / scale.max(1e-30))
}

fn f32s(data: TensorData) -> Result<Vec<f32>, String> {
    data.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))
}
