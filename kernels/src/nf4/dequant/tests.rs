//! Device dequantization against the reference and against bitsandbytes' golden vectors.
//!
//! The checks are plain functions taking a [`Client`], so they know nothing of the runtime;
//! `testgen_nf4_dequant!` instantiates them once per runtime the build links. A runtime whose
//! machine has no device skips with a message on stderr (`cargo test -- --nocapture` shows it);
//! any other failure to get a client fails the test.
//!
//! Every comparison is on bit patterns: exact equality, with `-0.0` and `0.0` told apart.

// Without a runtime the checks still type-check, but nothing instantiates them.
#![cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(dead_code, unused_macros, unused_imports)
)]

use cubecl::client::Client;
use cubecl::prelude::*;
use half::bf16;

use super::kernel::bf16_bits;
use super::{
    CODES_PER_WORD, DeviceNf4, Layout, dequantize_bf16_on_device, dequantize_on_device,
    dequantize_with, read_bf16, read_f32,
};
use crate::KernelError;
use crate::nf4::fixtures;
use crate::nf4::reference::{Absmax, BLOCKSIZE, Nf4Tensor, SUPPORTED_BLOCKSIZES};
use crate::runtime::{self, Backend};

/// A client for `backend`, or `None` after saying on stderr why the test is skipped. Only a
/// machine without such a device skips; anything else is a failure.
pub(super) fn client_or_skip(backend: Backend, test: &str) -> Option<Client> {
    match runtime::client(backend) {
        Ok(client) => Some(client),
        Err(KernelError::NoDevice { detail, .. }) => {
            eprintln!("SKIPPED {test}: no {backend} device on this machine ({detail})");
            None
        }
        Err(other) => panic!("{test}: cannot get a {backend} client: {other}"),
    }
}

fn f32_bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn bf16_bits_of(values: &[bf16]) -> Vec<u16> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn assert_bits_eq<T: PartialEq + std::fmt::LowerHex + Copy>(
    what: &str,
    device: &[T],
    expected: &[T],
) {
    assert_eq!(device.len(), expected.len(), "{what}: length");
    if let Some(i) = device.iter().zip(expected).position(|(a, b)| a != b) {
        let bad = device.iter().zip(expected).filter(|(a, b)| a != b).count();
        panic!(
            "{what}: {bad} of {} values differ, first at {i}: device {:#x}, expected {:#x}",
            device.len(),
            device[i],
            expected[i]
        );
    }
}

/// Values in `[-scale, scale)` from a fixed-seed xorshift, with every fifth block all zeros.
fn pseudo_random(len: usize, seed: u64, scale: f32, blocksize: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if (i / blocksize) % 5 == 4 {
                0.0
            } else {
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            }
        })
        .collect()
}

/// Every [`Layout`] a length of `numel` values allows: the scalar kernels always, the wide
/// ones with each word count per unit that divides it.
fn layouts(numel: usize) -> Vec<Layout> {
    let mut all = vec![Layout::Scalar];
    all.extend(
        [1, 2, 4]
            .into_iter()
            .filter(|w| numel.is_multiple_of(CODES_PER_WORD * w))
            .map(|words_per_unit| Layout::Wide { words_per_unit }),
    );
    all
}

/// Device `f32` and `bf16` dequantization, in every layout the length allows, equal the
/// reference's bit for bit.
fn check_against_reference(client: &Client, tensor: &Nf4Tensor, what: &str) {
    let expect_f32 = f32_bits(&tensor.dequantize());
    let expect_bf16 = bf16_bits_of(&tensor.dequantize_bf16());
    let device = DeviceNf4::upload(client, tensor).unwrap_or_else(|e| panic!("{what}: {e}"));
    let numel = device.numel();
    for layout in layouts(numel) {
        let out = dequantize_with(client, &device, false, layout);
        let got = read_f32(client, out, numel).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_bits_eq(
            &format!("{what} f32 {layout:?}"),
            &f32_bits(&got),
            &expect_f32,
        );
        let out = dequantize_with(client, &device, true, layout);
        let got = read_bf16(client, out, numel).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_bits_eq(
            &format!("{what} bf16 {layout:?}"),
            &bf16_bits_of(&got),
            &expect_bf16,
        );
    }
}

#[test]
fn widest_layout_for_each_length() {
    assert_eq!(Layout::for_numel(7), Layout::Scalar);
    assert_eq!(Layout::for_numel(9), Layout::Scalar);
    assert_eq!(Layout::for_numel(24), Layout::Wide { words_per_unit: 1 });
    assert_eq!(Layout::for_numel(48), Layout::Wide { words_per_unit: 2 });
    assert_eq!(Layout::for_numel(4096), Layout::Wide { words_per_unit: 4 });
}

/// bitsandbytes' own codes and absmax (plain and double-quantized), dequantized on the device,
/// give bitsandbytes' own output.
pub(super) fn golden_vectors(client: &Client) {
    for g in fixtures::load_all() {
        let plain = Nf4Tensor::from_parts(
            g.codes.clone(),
            Absmax::F32(g.absmax.clone()),
            &g.shape,
            BLOCKSIZE,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", g.name));
        let device =
            dequantize_on_device(client, &plain).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        assert_bits_eq(&format!("{} f32", g.name), &f32_bits(&device), &g.dequant);
        let device =
            dequantize_bf16_on_device(client, &plain).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        assert_bits_eq(
            &format!("{} bf16", g.name),
            &bf16_bits_of(&device),
            &g.dequant_bf16,
        );

        let dq = Absmax::DoubleQuant {
            codes: g.dq_codes.clone(),
            scales: g.dq_scales.clone(),
            offset: g.dq_offset,
        };
        let dq = Nf4Tensor::from_parts(g.codes.clone(), dq, &g.shape, BLOCKSIZE)
            .unwrap_or_else(|e| panic!("{}: {e}", g.name));
        let device =
            dequantize_on_device(client, &dq).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        assert_bits_eq(
            &format!("{} double-quant f32", g.name),
            &f32_bits(&device),
            &g.dq_dequant,
        );
        let device =
            dequantize_bf16_on_device(client, &dq).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        assert_bits_eq(
            &format!("{} double-quant bf16", g.name),
            &bf16_bits_of(&device),
            &g.dq_dequant_bf16,
        );
    }
}

/// Lengths around the word (8), block and cube (2048 values) boundaries, every block size, plain
/// and double-quantized (more than 256 blocks for the longest, so several scales).
pub(super) fn reference_lengths_and_blocksizes(client: &Client) {
    let lengths = [
        1,
        2,
        7,
        8,
        9,
        16,
        24,
        31,
        33,
        63,
        64,
        65,
        2047,
        2048,
        2049,
        4096 * 3 + 5,
        40_000,
        40_001,
    ];
    for (seed, &len) in lengths.iter().enumerate() {
        for &blocksize in &SUPPORTED_BLOCKSIZES {
            if blocksize > 256 && len < blocksize / 2 {
                continue;
            }
            let values = pseudo_random(len, seed as u64 + 1, 0.1 * (seed as f32 + 1.0), blocksize);
            let what = format!("len {len}, blocksize {blocksize}");
            let tensor = Nf4Tensor::quantize(&values, &[len], blocksize)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            check_against_reference(client, &tensor, &what);
            check_against_reference(
                client,
                &tensor.with_double_quant(),
                &format!("{what}, double quant"),
            );
        }
    }
}

/// A 2-D weight in QLoRA's configuration, large enough for many cubes.
pub(super) fn reference_weight_matrix(client: &Client) {
    let (rows, cols) = (384, 320);
    let values = pseudo_random(rows * cols, 99, 0.05, BLOCKSIZE);
    let tensor = Nf4Tensor::quantize(&values, &[rows, cols], BLOCKSIZE).expect("valid weight");
    check_against_reference(client, &tensor, "384x320 weight");
    check_against_reference(
        client,
        &tensor.with_double_quant(),
        "384x320 weight, double quant",
    );
}

/// Probe for [`bf16_bits`]: one conversion per unit.
#[cube(launch_unchecked)]
fn bf16_probe(input: &[f32], out: &mut [u32]) {
    if ABSOLUTE_POS < input.len() {
        out[ABSOLUTE_POS] = bf16_bits(input[ABSOLUTE_POS]);
    }
}

/// The device's `f32 -> bf16` rounding agrees with `half` on ties (both directions), carries,
/// overflow to infinity, signed zeros and NaN (as a NaN).
pub(super) fn bf16_rounding(client: &Client) {
    let bits: [u32; 16] = [
        0x3F80_8000, // tie above an even code: stays
        0x3F81_8000, // tie above an odd code: rounds up
        0x3F80_8001, // just past a tie
        0x3F80_7FFF, // just short of a tie
        0x3FFF_C000, // carry into the exponent
        0x7F7F_FFFF, // f32::MAX rounds to infinity
        0x7F7F_7FFF, // largest that stays finite
        0x7F80_0000, // infinity
        0xFF80_0000, // negative infinity
        0x7FC0_0000, // quiet NaN
        0x7F80_0001, // NaN with payload only in the dropped bits
        0x0000_0000, // zero
        0x8000_0000, // negative zero
        0xC2F7_1234, // ordinary negative
        0x0000_8000, // subnormal tie
        0xBF3F_8000, // negative tie above an odd code
    ];
    let values: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
    let input = client.create_from_slice(f32::as_bytes(&values));
    let out = client.empty(values.len() * size_of::<u32>());
    // SAFETY: both buffers hold `values.len()` elements; the kernel guards the index.
    unsafe {
        bf16_probe::launch_unchecked(
            client,
            CubeCount::Static(1, 1, 1),
            CubeDim::new_1d(values.len() as u32),
            BufferArg::from_raw_parts(input, values.len()),
            BufferArg::from_raw_parts(out.clone(), values.len()),
        );
    }
    let bytes = client.read_one(out).expect("read back the probe");
    let device: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for (value, got) in values.iter().zip(device) {
        let expected = bf16::from_f32(*value);
        let got = bf16::from_bits(got as u16);
        if expected.is_nan() {
            assert!(
                got.is_nan(),
                "{:#010x} -> NaN, got {:#06x}",
                value.to_bits(),
                got.to_bits()
            );
        } else {
            assert_eq!(
                got.to_bits(),
                expected.to_bits(),
                "{:#010x} -> {:#06x}, got {:#06x}",
                value.to_bits(),
                expected.to_bits(),
                got.to_bits()
            );
        }
    }
}

/// Instantiates every check above as a `#[test]` for one runtime: `testgen_nf4_dequant!(module,
/// Backend::X)`.
macro_rules! testgen_nf4_dequant {
    ($module:ident, $backend:expr) => {
        mod $module {
            use super::*;

            fn run(test: &str, check: fn(&Client)) {
                if let Some(client) = client_or_skip($backend, test) {
                    check(&client);
                }
            }

            #[test]
            fn golden_vectors() {
                run(
                    concat!(stringify!($module), "::golden_vectors"),
                    super::golden_vectors,
                );
            }

            #[test]
            fn reference_lengths_and_blocksizes() {
                run(
                    concat!(stringify!($module), "::reference_lengths_and_blocksizes"),
                    super::reference_lengths_and_blocksizes,
                );
            }

            #[test]
            fn reference_weight_matrix() {
                run(
                    concat!(stringify!($module), "::reference_weight_matrix"),
                    super::reference_weight_matrix,
                );
            }

            #[test]
            fn bf16_rounding() {
                run(
                    concat!(stringify!($module), "::bf16_rounding"),
                    super::bf16_rounding,
                );
            }
        }
    };
}

#[cfg(feature = "wgpu")]
testgen_nf4_dequant!(wgpu, Backend::Wgpu);

#[cfg(feature = "cuda")]
testgen_nf4_dequant!(cuda, Backend::Cuda);

/// Without any runtime, the device path still compiles and says which feature it needs.
#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
#[test]
fn no_runtime_linked_is_a_typed_error() {
    assert!(matches!(
        runtime::client(Backend::Wgpu),
        Err(KernelError::RuntimeNotLinked {
            feature: "wgpu",
            ..
        })
    ));
}
