//! NF4 dequantization bandwidth on a CubeCL runtime, the shape of
//! `../shared/bench/peft_baseline.py`'s bitsandbytes measurement (8192 × 32768, 268 M values,
//! blocksize 64, double-quantized absmax), so the two figures compare directly.
//!
//! ```text
//! cargo run --release -p ft-kernels --features cuda --example nf4_dequant_bench -- cuda
//! ```
//!
//! Prints one line per output dtype and kernel layout (`scalar`: one code word and 32-bit
//! stores per unit; `wideN`: N words per unit read as one vector, 16-byte stores):
//! milliseconds per dequantization (double-quantized absmax recovered each time, as
//! bitsandbytes does) and GB/s counted as bitsandbytes' baseline counts them (packed codes read
//! plus output written, absmax ignored). Each layout's first result is checked bit for bit against
//! the plain-Rust reference before it is timed.

use std::time::Instant;

use cubecl::client::Client;
use ft_kernels::KernelError;
use ft_kernels::nf4::Nf4Tensor;
use ft_kernels::nf4::dequant::{DeviceNf4, Layout, dequantize_with, read_bf16, read_f32};
use ft_kernels::runtime::{Backend, client};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let backend = match args.next().as_deref() {
        Some("wgpu") => Backend::Wgpu,
        Some("cuda") | None => Backend::Cuda,
        Some(other) => return Err(format!("unknown backend `{other}` (cuda | wgpu)").into()),
    };
    let rows: usize = args.next().map_or(Ok(8192), |s| s.parse())?;
    let cols: usize = args.next().map_or(Ok(8192 * 4), |s| s.parse())?;
    let reps: usize = args.next().map_or(Ok(20), |s| s.parse())?;
    let client = client(backend)?;
    let numel = rows * cols;

    // Deterministic pseudo-normal values (sum of uniforms), quantized like bitsandbytes.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let values: Vec<f32> = (0..numel)
        .map(|_| {
            let mut s = 0.0f32;
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s += (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            s
        })
        .collect();
    let t = Instant::now();
    let tensor = Nf4Tensor::quantize(&values, &[rows, cols], 64)?.with_double_quant();
    drop(values);
    println!(
        "{backend}: {rows}x{cols} = {numel} values, host quantize {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let device = DeviceNf4::upload(&client, &tensor)?;

    // Every layout: bit-checked against the reference once, then timed.
    let layouts = [
        ("scalar", Layout::Scalar),
        ("wide1", Layout::Wide { words_per_unit: 1 }),
        ("wide2", Layout::Wide { words_per_unit: 2 }),
        ("wide4", Layout::Wide { words_per_unit: 4 }),
    ];
    let allowed = |layout: Layout| match layout {
        Layout::Scalar => true,
        Layout::Wide { words_per_unit } => numel.is_multiple_of(8 * words_per_unit),
    };
    for (name, out_bytes, bf16) in [("bf16", 2usize, true), ("f32", 4, false)] {
        let expect: Vec<u32> = if bf16 {
            tensor
                .dequantize_bf16()
                .iter()
                .map(|v| u32::from(v.to_bits()))
                .collect()
        } else {
            tensor.dequantize().iter().map(|v| v.to_bits()).collect()
        };
        for (layout_name, layout) in layouts.into_iter().filter(|(_, l)| allowed(*l)) {
            let what = format!("{name} {layout_name}");
            let out = dequantize_with(&client, &device, bf16, layout);
            let got: Vec<u32> = if bf16 {
                read_bf16(&client, out, numel)?
                    .iter()
                    .map(|v| u32::from(v.to_bits()))
                    .collect()
            } else {
                read_f32(&client, out, numel)?
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            same_len(&what, got.len(), expect.len())?;
            check(&what, got.into_iter(), expect.iter().copied())?;
            for _ in 0..3 {
                drop(dequantize_with(&client, &device, bf16, layout));
            }
            sync(&client)?;
            let t = Instant::now();
            for _ in 0..reps {
                drop(dequantize_with(&client, &device, bf16, layout));
            }
            sync(&client)?;
            let secs = t.elapsed().as_secs_f64() / reps as f64;
            let bytes = numel as f64 * (0.5 + out_bytes as f64);
            println!(
                "nf4_dequant {what}: {:.3} ms, {:.1} GB/s (packed read + {name} written)",
                secs * 1e3,
                bytes / secs / 1e9
            );
        }
    }
    Ok(())
}

fn sync(client: &Client) -> Result<(), KernelError> {
    cubecl::future::block_on(client.sync()).map_err(|source| KernelError::Device {
        op: "sync after NF4 dequantization",
        source,
    })
}

fn same_len(what: &str, got: usize, expect: usize) -> Result<(), String> {
    if got == expect {
        Ok(())
    } else {
        Err(format!(
            "{what} dequant returned {got} values, the reference {expect}"
        ))
    }
}

/// Fails with the first index where the device's bits differ from the reference's.
fn check<T: PartialEq + std::fmt::LowerHex>(
    what: &str,
    got: impl Iterator<Item = T>,
    expect: impl Iterator<Item = T>,
) -> Result<(), String> {
    let mut n = 0usize;
    for (i, (g, e)) in got.zip(expect).enumerate() {
        if g != e {
            return Err(format!(
                "{what} dequant differs from the reference at {i}: {g:#x} vs {e:#x}"
            ));
        }
        n += 1;
    }
    println!("{what} dequant: {n} values bit-identical to the reference");
    Ok(())
}
