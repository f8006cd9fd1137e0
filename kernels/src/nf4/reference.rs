//! NF4 in plain Rust: the specification the kernels are checked against.
//!
//! Byte-identical to bitsandbytes 0.50.2's CPU path (`bitsandbytes.functional.quantize_4bit(...,
//! quant_type="nf4")`, `compress_statistics` on and off, and `dequantize_4bit`), which is what
//! `tests/fixtures/gen/nf4_golden.py` records and `golden_tests.rs` replays. Each arithmetic step
//! below is the one bitsandbytes performs, in the same order and precision; where that is
//! surprising the comment says which bitsandbytes line it mirrors.
//!
//! Quantization (`backends/default/ops.py`, torch ops on CPU):
//!
//! 1. `absmax` = max `|x|` over each block of `blocksize` values.
//! 2. Full blocks scale by a reciprocal: `x * (1 / max(absmax, 1e-38))`. The last, partial block
//!    divides instead: `x / max(absmax, 1e-38)`, and stores the clamped absmax, so an all-zero
//!    partial block keeps `absmax = 1e-38` while an all-zero full block keeps `0`.
//! 3. The scaled value, clamped to `[-1, 1]`, takes the index of the first table midpoint it does
//!    not exceed (`torch.bucketize`): a value exactly on a midpoint takes the lower code.
//! 4. Codes are packed two per byte, first element high; an odd length pads with code 7.
//!
//! Double quantization (`functional.quantize_4bit(compress_statistics=True)`):
//!
//! 1. `offset = absmax.mean()` as torch computes it on CPU: ATen's cascade sum over 8-lane vectors
//!    (its AVX2 kernel, also used on AVX512 machines), divided by the count. See [`torch_cpu_mean`].
//! 2. `absmax - offset` goes through `quantize_blockwise(blocksize=256)`, which on CPU is the C++
//!    `quantize_cpu` of `libbitsandbytes_cpu.so`: per block `inv = 1 / max|v|`, then a 65536-entry
//!    lookup at `(u16)fma((clamp(v * inv) + 1) * 0.5, 65535, 0.5)` (the shipped binary fuses that
//!    multiply-add), and an all-zero block gets code 0 everywhere.
//!
//! Dequantization follows the flat block layout quantization writes. (bitsandbytes 0.50.2's own
//! CPU `dequantize_4bit` departs from it on AVX512 machines for 2-D tensors whose last dimension
//! is a multiple of 16 but not of the block size, e.g. 64×96, where it reads the wrong absmax;
//! the golden vectors stay clear of such shapes.)

use rayon::prelude::*;
use std::borrow::Cow;

use half::bf16;

use crate::KernelError;

/// QLoRA's block size: 64 values share one absmax.
pub const BLOCKSIZE: usize = 64;

/// Block size of the 8-bit quantization of the absmax vector under double quantization.
pub const DOUBLE_QUANT_BLOCKSIZE: usize = 256;

/// The block sizes bitsandbytes accepts for 4-bit quantization.
pub const SUPPORTED_BLOCKSIZES: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];

/// The 16 NF4 values, bitsandbytes' `get_4bit_type("nf4")`: quantiles of N(0, 1) rescaled to
/// `[-1, 1]`, with an exact zero (QLoRA paper, appendix E). Sorted, so the code order is the
/// value order.
pub const NF4_TABLE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// Midpoints between neighbouring [`NF4_TABLE`] entries, `(a + b) / 2` in `f32`: bitsandbytes'
/// bucket bounds.
pub const NF4_MIDPOINTS: [f32; 15] = midpoints(&NF4_TABLE);

/// The code of `0.0`, which bitsandbytes also writes into the padding nibble of an odd length.
pub const ZERO_CODE: u8 = 7;

/// bitsandbytes' signed dynamic map, `create_dynamic_map(signed=True)`: the 256-entry code book
/// of the 8-bit quantization used for double quantization. Stored as bit patterns because it
/// is data, not a formula we want to re-derive (torch's `linspace` rounding is part of it).
pub const DYNAMIC_MAP: [f32; 256] = from_bits(DYNAMIC_MAP_BITS);

/// Midpoints of [`DYNAMIC_MAP`], `(a + b) * 0.5` as `build_quantize_lut` computes them.
const DYNAMIC_MIDPOINTS: [f32; 255] = midpoints(&DYNAMIC_MAP);

/// The smallest absmax bitsandbytes divides by (`absmax.clamp(min=1e-38)`, a subnormal `f32`).
const MIN_ABSMAX: f32 = 1e-38;

/// Size of bitsandbytes' 8-bit quantization lookup table.
const LUT_SIZE: usize = 65536;

#[rustfmt::skip]
const DYNAMIC_MAP_BITS: [u32; 256] = [
    0xBF7E3333, 0xBF7A999A, 0xBF770000, 0xBF736666, 0xBF6FCCCD, 0xBF6C3333, 0xBF68999A, 0xBF650000,
    0xBF616666, 0xBF5DCCCD, 0xBF5A3333, 0xBF56999A, 0xBF530000, 0xBF4F6666, 0xBF4BCCCD, 0xBF483333,
    0xBF44999A, 0xBF410000, 0xBF3D6666, 0xBF39CCCD, 0xBF363334, 0xBF32999A, 0xBF2F0000, 0xBF2B6666,
    0xBF27CCCD, 0xBF243334, 0xBF20999A, 0xBF1D0000, 0xBF196666, 0xBF15CCCD, 0xBF123334, 0xBF0E999A,
    0xBF0B0000, 0xBF076666, 0xBF03CCCC, 0xBF003333, 0xBEF93332, 0xBEF20000, 0xBEEACCCC, 0xBEE3999A,
    0xBEDC6666, 0xBED53333, 0xBECE0000, 0xBEC6CCCC, 0xBEBF999A, 0xBEB86666, 0xBEB13333, 0xBEAA0000,
    0xBEA2CCCC, 0xBE9B999A, 0xBE946666, 0xBE8D3334, 0xBE860000, 0xBE7D9999, 0xBE6F3333, 0xBE60CCCD,
    0xBE526666, 0xBE440000, 0xBE35999A, 0xBE273333, 0xBE18CCCD, 0xBE0A6666, 0xBDF80000, 0xBDDB3334,
    0xBDC9EB85, 0xBDC428F7, 0xBDBE6667, 0xBDB8A3D7, 0xBDB2E148, 0xBDAD1EB8, 0xBDA75C2A, 0xBDA1999A,
    0xBD9BD70A, 0xBD96147B, 0xBD9051EB, 0xBD8A8F5D, 0xBD84CCCD, 0xBD7E147B, 0xBD728F5D, 0xBD670A3D,
    0xBD5B851F, 0xBD500000, 0xBD447AE1, 0xBD38F5C3, 0xBD2D70A3, 0xBD21EB85, 0xBD166667, 0xBD0AE148,
    0xBCFEB852, 0xBCE7AE15, 0xBCD0A3D7, 0xBCB9999A, 0xBCA28F5D, 0xBC8B851F, 0xBC68F5C3, 0xBC3AE148,
    0xBC1F3B64, 0xBC160418, 0xBC0CCCCD, 0xBC039581, 0xBBF4BC6A, 0xBBE24DD3, 0xBBCFDF3B, 0xBBBD70A4,
    0xBBAB020D, 0xBB989374, 0xBB8624DD, 0xBB676C8A, 0xBB428F5C, 0xBB1DB22D, 0xBAF1A9FC, 0xBAA7EF9D,
    0xBA7765FF, 0xBA59E83E, 0xBA3C6A80, 0xBA1EECC1, 0xBA016F01, 0xB9C7E283, 0xB98CE705, 0xB923D70B,
    0xB8BA1F4B, 0xB88AEFB3, 0xB8378034, 0xB7B24206, 0xB70205FF, 0xB65A1A94, 0xB513A3B7, 0x00000000,
    0x3513A3B7, 0x365A1A94, 0x370205FF, 0x37B24206, 0x38378034, 0x388AEFB3, 0x38BA1F4B, 0x3923D70B,
    0x398CE705, 0x39C7E283, 0x3A016F01, 0x3A1EECC1, 0x3A3C6A80, 0x3A59E83E, 0x3A7765FF, 0x3AA7EF9D,
    0x3AF1A9FC, 0x3B1DB22D, 0x3B428F5C, 0x3B676C8A, 0x3B8624DD, 0x3B989374, 0x3BAB020D, 0x3BBD70A4,
    0x3BCFDF3B, 0x3BE24DD3, 0x3BF4BC6A, 0x3C039581, 0x3C0CCCCD, 0x3C160418, 0x3C1F3B64, 0x3C3AE148,
    0x3C68F5C3, 0x3C8B851F, 0x3CA28F5D, 0x3CB9999A, 0x3CD0A3D7, 0x3CE7AE15, 0x3CFEB852, 0x3D0AE148,
    0x3D166667, 0x3D21EB85, 0x3D2D70A3, 0x3D38F5C3, 0x3D447AE1, 0x3D500000, 0x3D5B851F, 0x3D670A3D,
    0x3D728F5D, 0x3D7E147B, 0x3D84CCCD, 0x3D8A8F5D, 0x3D9051EB, 0x3D96147B, 0x3D9BD70A, 0x3DA1999A,
    0x3DA75C2A, 0x3DAD1EB8, 0x3DB2E148, 0x3DB8A3D7, 0x3DBE6667, 0x3DC428F7, 0x3DC9EB85, 0x3DDB3334,
    0x3DF80000, 0x3E0A6666, 0x3E18CCCD, 0x3E273333, 0x3E35999A, 0x3E440000, 0x3E526666, 0x3E60CCCD,
    0x3E6F3333, 0x3E7D9999, 0x3E860000, 0x3E8D3334, 0x3E946666, 0x3E9B999A, 0x3EA2CCCC, 0x3EAA0000,
    0x3EB13333, 0x3EB86666, 0x3EBF999A, 0x3EC6CCCC, 0x3ECE0000, 0x3ED53333, 0x3EDC6666, 0x3EE3999A,
    0x3EEACCCC, 0x3EF20000, 0x3EF93332, 0x3F003333, 0x3F03CCCC, 0x3F076666, 0x3F0B0000, 0x3F0E999A,
    0x3F123334, 0x3F15CCCD, 0x3F196666, 0x3F1D0000, 0x3F20999A, 0x3F243334, 0x3F27CCCD, 0x3F2B6666,
    0x3F2F0000, 0x3F32999A, 0x3F363334, 0x3F39CCCD, 0x3F3D6666, 0x3F410000, 0x3F44999A, 0x3F483333,
    0x3F4BCCCD, 0x3F4F6666, 0x3F530000, 0x3F56999A, 0x3F5A3333, 0x3F5DCCCD, 0x3F616666, 0x3F650000,
    0x3F68999A, 0x3F6C3333, 0x3F6FCCCD, 0x3F736666, 0x3F770000, 0x3F7A999A, 0x3F7E3333, 0x3F800000,
];

const fn from_bits<const N: usize>(bits: [u32; N]) -> [f32; N] {
    let mut out = [0.0; N];
    let mut i = 0;
    while i < N {
        out[i] = f32::from_bits(bits[i]);
        i += 1;
    }
    out
}

/// `(table[i] + table[i + 1]) * 0.5` for each neighbour pair. bitsandbytes writes `/ 2` in
/// Python and `* 0.5` in C++; both are one correctly rounded operation on the same exact value,
/// so they agree bit for bit.
const fn midpoints<const N: usize, const M: usize>(table: &[f32; N]) -> [f32; M] {
    let mut out = [0.0; M];
    let mut i = 0;
    while i < M {
        out[i] = (table[i] + table[i + 1]) * 0.5;
        i += 1;
    }
    out
}

/// Per-block scales of an NF4 tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Absmax {
    /// One `f32` per block (`compress_statistics=False`).
    F32(Vec<f32>),
    /// Double quantization (`compress_statistics=True`): the absmax vector quantized to 8 bits.
    DoubleQuant {
        /// One code per block, an index into [`DYNAMIC_MAP`] (`QuantState.absmax`).
        codes: Vec<u8>,
        /// One scale per [`DOUBLE_QUANT_BLOCKSIZE`] codes (`QuantState.state2.absmax`).
        scales: Vec<f32>,
        /// The mean subtracted before quantizing (`QuantState.offset`).
        offset: f32,
    },
}

/// An NF4-quantized tensor in bitsandbytes' layout (see the [module docs](super)).
///
/// The invariants the device kernels rely on (buffer lengths matching the shape and block size)
/// are checked once, on construction; the fields are private so they stay true.
#[derive(Clone, Debug, PartialEq)]
pub struct Nf4Tensor {
    codes: Vec<u8>,
    absmax: Absmax,
    shape: Vec<usize>,
    blocksize: usize,
}

impl Nf4Tensor {
    /// Quantizes `values` (row-major, `shape.iter().product()` of them) to NF4 exactly as
    /// `bitsandbytes.functional.quantize_4bit(x, blocksize=blocksize, quant_type="nf4")` does on
    /// CPU. Absmax stays `f32`; see [`Self::with_double_quant`] for `compress_statistics=True`.
    ///
    /// Fails on an empty tensor, a shape that does not match `values`, a block size bitsandbytes
    /// rejects, or a non-finite value.
    pub fn quantize(
        values: &[f32],
        shape: &[usize],
        blocksize: usize,
    ) -> Result<Self, KernelError> {
        check_blocksize(blocksize)?;
        check_shape(shape, values.len())?;
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(KernelError::NonFinite {
                index,
                value: values[index],
                blocksize,
            });
        }

        let n = values.len();
        let full_blocks = n / blocksize;
        let mut codes = vec![0u8; n.div_ceil(2)];
        let mut absmax = vec![0.0f32; n.div_ceil(blocksize)];
        // Blocks are independent and even-sized, so each owns `blocksize / 2`
        // bytes of codes: quantized in parallel, same bytes as in order.
        codes
            .par_chunks_mut(blocksize / 2)
            .zip(values.par_chunks(blocksize))
            .zip(absmax.par_iter_mut())
            .enumerate()
            .for_each(|(block, ((out, chunk), block_absmax))| {
                let max = chunk.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                // ops.py: full blocks multiply by `1.0 / absmax.clamp(min=1e-38)` and keep
                // the unclamped absmax; the remainder divides by its clamped absmax and
                // keeps that.
                let scale = if block < full_blocks {
                    *block_absmax = max;
                    Scale::Reciprocal(1.0 / max.max(MIN_ABSMAX))
                } else {
                    let clamped = max.max(MIN_ABSMAX);
                    *block_absmax = clamped;
                    Scale::Divide(clamped)
                };
                for (offset, &x) in chunk.iter().enumerate() {
                    let scaled = match scale {
                        Scale::Reciprocal(inv) => x * inv,
                        Scale::Divide(by) => x / by,
                    };
                    set_code(out, offset, nearest_code(scaled));
                }
            });
        if n % 2 == 1 {
            set_code(&mut codes, n, ZERO_CODE);
        }
        Ok(Self {
            codes,
            absmax: Absmax::F32(absmax),
            shape: shape.to_vec(),
            blocksize,
        })
    }

    /// Compresses the absmax vector the way `compress_statistics=True` does (see the module
    /// docs). A tensor already double-quantized is returned unchanged.
    pub fn with_double_quant(self) -> Self {
        let Absmax::F32(absmax) = &self.absmax else {
            return self;
        };
        let offset = torch_cpu_mean(absmax);
        let centered: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
        let (codes, scales) = quantize_blockwise_8bit(&centered);
        Self {
            absmax: Absmax::DoubleQuant {
                codes,
                scales,
                offset,
            },
            ..self
        }
    }

    /// Assembles a tensor from stored parts (a checkpoint, or bitsandbytes' `QuantState`),
    /// checking that their lengths belong together and the scales are finite.
    pub fn from_parts(
        codes: Vec<u8>,
        absmax: Absmax,
        shape: &[usize],
        blocksize: usize,
    ) -> Result<Self, KernelError> {
        check_blocksize(blocksize)?;
        let n = shape_numel(shape).ok_or_else(|| KernelError::ShapeMismatch {
            shape: shape.to_vec(),
            expected: usize::MAX,
            found: codes.len().saturating_mul(2),
        })?;
        if n == 0 {
            return Err(KernelError::EmptyTensor {
                shape: shape.to_vec(),
            });
        }
        let blocks = n.div_ceil(blocksize);
        let length = |part: &'static str, expected: usize, found: usize| {
            (expected != found).then(|| KernelError::PartLength {
                part,
                expected,
                found,
                shape: shape.to_vec(),
                blocksize,
            })
        };
        let finite = |part: &'static str, values: &[f32]| {
            values
                .iter()
                .position(|v| !v.is_finite())
                .map(|i| KernelError::InvalidPart {
                    part,
                    reason: format!("entry {i} is {}, not a finite number", values[i]),
                })
        };
        let problem = length("codes", n.div_ceil(2), codes.len()).or_else(|| match &absmax {
            Absmax::F32(values) => {
                length("absmax", blocks, values.len()).or_else(|| finite("absmax", values))
            }
            Absmax::DoubleQuant {
                codes,
                scales,
                offset,
            } => length("absmax codes", blocks, codes.len())
                .or_else(|| {
                    length(
                        "absmax scales",
                        blocks.div_ceil(DOUBLE_QUANT_BLOCKSIZE),
                        scales.len(),
                    )
                })
                .or_else(|| finite("absmax scales", scales))
                .or_else(|| finite("absmax offset", std::slice::from_ref(offset))),
        });
        match problem {
            Some(err) => Err(err),
            None => Ok(Self {
                codes,
                absmax,
                shape: shape.to_vec(),
                blocksize,
            }),
        }
    }

    /// The packed codes, `numel().div_ceil(2)` bytes, first element in the high nibble.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// The per-block scales as stored.
    pub fn absmax(&self) -> &Absmax {
        &self.absmax
    }

    /// The tensor's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Values per absmax block.
    pub fn blocksize(&self) -> usize {
        self.blocksize
    }

    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of absmax blocks, `numel().div_ceil(blocksize())`.
    pub fn num_blocks(&self) -> usize {
        self.numel().div_ceil(self.blocksize)
    }

    /// Splits the tensor into `(codes, absmax, shape, blocksize)`.
    pub fn into_parts(self) -> (Vec<u8>, Absmax, Vec<usize>, usize) {
        (self.codes, self.absmax, self.shape, self.blocksize)
    }

    /// The code of element `index` (row-major).
    pub fn code(&self, index: usize) -> u8 {
        let byte = self.codes[index / 2];
        if index.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 0x0F
        }
    }

    /// The `f32` absmax of every block; for double quantization, recovered as bitsandbytes does:
    /// `DYNAMIC_MAP[code] * scale`, then `+ offset`, each rounded to `f32`.
    pub fn absmax_f32(&self) -> Cow<'_, [f32]> {
        match &self.absmax {
            Absmax::F32(values) => Cow::Borrowed(values),
            Absmax::DoubleQuant {
                codes,
                scales,
                offset,
            } => Cow::Owned(
                codes
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        let product =
                            DYNAMIC_MAP[usize::from(c)] * scales[i / DOUBLE_QUANT_BLOCKSIZE];
                        product + offset
                    })
                    .collect(),
            ),
        }
    }

    /// Dequantizes to `f32`: `NF4_TABLE[code] * absmax`, as `dequantize_4bit(.., dtype=float32)`.
    pub fn dequantize(&self) -> Vec<f32> {
        let absmax = self.absmax_f32();
        (0..self.numel())
            .map(|i| NF4_TABLE[usize::from(self.code(i))] * absmax[i / self.blocksize])
            .collect()
    }

    /// Dequantizes to `bf16`: the `f32` product rounded to nearest, ties to even, as
    /// `dequantize_4bit(.., dtype=bfloat16)` does.
    pub fn dequantize_bf16(&self) -> Vec<bf16> {
        self.dequantize().into_iter().map(bf16::from_f32).collect()
    }
}

/// How a block's values are brought into `[-1, 1]`.
#[derive(Clone, Copy)]
enum Scale {
    /// Multiply by this reciprocal (full blocks).
    Reciprocal(f32),
    /// Divide by this absmax (the last, partial block).
    Divide(f32),
}

/// The NF4 code of a value already divided by its absmax: clamp to `[-1, 1]`, then the number of
/// [`NF4_MIDPOINTS`] strictly below it (`torch.bucketize(.., right=False)`), so a value exactly on
/// a midpoint takes the lower code.
pub fn nearest_code(scaled: f32) -> u8 {
    let clamped = scaled.clamp(-1.0, 1.0);
    // At most 15, so the narrowing is lossless.
    NF4_MIDPOINTS.partition_point(|&m| m < clamped) as u8
}

fn set_code(codes: &mut [u8], index: usize, code: u8) {
    let byte = &mut codes[index / 2];
    if index.is_multiple_of(2) {
        *byte = (*byte & 0x0F) | (code << 4);
    } else {
        *byte = (*byte & 0xF0) | (code & 0x0F);
    }
}

fn check_blocksize(blocksize: usize) -> Result<(), KernelError> {
    if SUPPORTED_BLOCKSIZES.contains(&blocksize) {
        Ok(())
    } else {
        Err(KernelError::UnsupportedBlocksize { blocksize })
    }
}

fn shape_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn check_shape(shape: &[usize], len: usize) -> Result<(), KernelError> {
    match shape_numel(shape) {
        Some(0) if len == 0 => Err(KernelError::EmptyTensor {
            shape: shape.to_vec(),
        }),
        Some(n) if n == len => Ok(()),
        expected => Err(KernelError::ShapeMismatch {
            shape: shape.to_vec(),
            expected: expected.unwrap_or(usize::MAX),
            found: len,
        }),
    }
}

/// bitsandbytes' 8-bit blockwise quantization on CPU (`quantize_cpu` in `csrc/cpu_ops.cpp`) with
/// [`DYNAMIC_MAP`] and blocks of [`DOUBLE_QUANT_BLOCKSIZE`]: `(codes, per-block absmax)`.
fn quantize_blockwise_8bit(values: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut codes = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len().div_ceil(DOUBLE_QUANT_BLOCKSIZE));
    for chunk in values.chunks(DOUBLE_QUANT_BLOCKSIZE) {
        // std::max(a, b) is `a < b ? b : a`.
        let max = chunk
            .iter()
            .fold(0.0f32, |m, x| if m < x.abs() { x.abs() } else { m });
        scales.push(max);
        if max == 0.0 {
            codes.extend(std::iter::repeat_n(0u8, chunk.len()));
            continue;
        }
        let inv = 1.0 / max;
        codes.extend(chunk.iter().map(|&v| dynamic_code(v * inv)));
    }
    (codes, scales)
}

/// The 8-bit code of a scaled value through bitsandbytes' lookup table: `norm_to_lut_index`
/// (whose last multiply-add the shipped binary fuses into one `vfmadd`), then the table entry
/// `build_quantize_lut` stores there: the number of [`DYNAMIC_MIDPOINTS`] strictly below the
/// bin's value `-1 + 2i / 65535`.
fn dynamic_code(scaled: f32) -> u8 {
    let clamped = scaled.clamp(-1.0, 1.0);
    let half = (clamped + 1.0) * 0.5;
    // In [0.5, 65535.5]: truncation toward zero lands in 0..=65535, as `(uint16_t)` does.
    let index = half.mul_add((LUT_SIZE - 1) as f32, 0.5) as u16;
    let bin = (2.0 * f32::from(index)) / (LUT_SIZE - 1) as f32 - 1.0;
    // At most 255, so the narrowing is lossless.
    DYNAMIC_MIDPOINTS.partition_point(|&m| m < bin) as u8
}

/// Lanes of ATen's CPU sum kernel: the AVX2 `Vectorized<float>`. The kernel has no AVX512
/// registration, so AVX512 machines run the AVX2 one too.
const TORCH_SUM_LANES: usize = 8;

/// `torch.Tensor.mean()` of a contiguous 1-D `f32` tensor on x86-64 CPU, bit for bit:
/// `sum / n` with ATen's cascade sum (`aten/src/ATen/native/cpu/SumKernel.cpp`).
///
/// Torch splits sums of more than 32768 elements across its intra-op threads, which changes the
/// rounding; this is the single-thread order (`torch.set_num_threads(1)`), which the golden
/// vectors are generated with. Only double quantization's `offset` depends on it, and only for
/// tensors of more than 32768 blocks (2M values at block size 64).
pub fn torch_cpu_mean(values: &[f32]) -> f32 {
    torch_cpu_sum(values) / values.len() as f32
}

/// ATen's `cascade_sum` for one contiguous row: `vectorized_inner_sum` when the row has at least
/// one full vector, the scalar `row_sum` otherwise, accumulated onto a zero-filled output.
fn torch_cpu_sum(values: &[f32]) -> f32 {
    const L: usize = TORCH_SUM_LANES;
    let total = if values.len() < L {
        row_sum::<1>(values.len(), |i| Lanes([values[i]])).0[0]
    } else {
        let vectors = values.len() / L;
        let acc = row_sum::<L>(vectors, |i| {
            Lanes(std::array::from_fn(|l| values[i * L + l]))
        });
        let mut total = 0.0f32;
        for &v in &values[vectors * L..] {
            total += v;
        }
        for v in acc.0 {
            total += v;
        }
        total
    };
    0.0 + total
}

/// `L` independent `f32` accumulators, the lanes of one ATen vector.
#[derive(Clone, Copy)]
struct Lanes<const L: usize>([f32; L]);

impl<const L: usize> Lanes<L> {
    const ZERO: Self = Self([0.0; L]);

    fn add(self, other: Self) -> Self {
        let mut out = self.0;
        for (a, b) in out.iter_mut().zip(other.0) {
            *a += b;
        }
        Self(out)
    }
}

/// ATen's `utils::CeilLog2`.
fn ceil_log2(x: usize) -> u32 {
    if x <= 2 {
        1
    } else {
        usize::BITS - (x - 1).leading_zeros()
    }
}

/// ATen's `row_sum`: four interleaved accumulators (`ilp_factor = 4`) over `size` items.
fn row_sum<const L: usize>(size: usize, load: impl Fn(usize) -> Lanes<L>) -> Lanes<L> {
    const ILP: usize = 4;
    let rows = size / ILP;
    let mut partial = multi_row_sum::<L, ILP>(rows, |i, k| load(i * ILP + k));
    for i in rows * ILP..size {
        partial[0] = partial[0].add(load(i));
    }
    for k in 1..ILP {
        partial[0] = partial[0].add(partial[k]);
    }
    partial[0]
}

/// ATen's `multi_row_sum`: `R` rows summed at once in a four-level cascade, each level folding
/// into the next every `2^level_power` items, so only sums of similar magnitude meet.
fn multi_row_sum<const L: usize, const R: usize>(
    size: usize,
    load: impl Fn(usize, usize) -> Lanes<L>,
) -> [Lanes<L>; R] {
    const LEVELS: usize = 4;
    let level_power = (ceil_log2(size) / LEVELS as u32).max(4);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let mut acc = [[Lanes::<L>::ZERO; R]; LEVELS];

    let mut i = 0;
    while i + level_step <= size {
        for _ in 0..level_step {
            for (k, slot) in acc[0].iter_mut().enumerate() {
                *slot = slot.add(load(i, k));
            }
            i += 1;
        }
        for j in 1..LEVELS {
            let (lower, upper) = acc.split_at_mut(j);
            for (sum, carry) in upper[0].iter_mut().zip(lower[j - 1].iter_mut()) {
                *sum = sum.add(*carry);
                *carry = Lanes::ZERO;
            }
            if i & (level_mask << (j as u32 * level_power)) != 0 {
                break;
            }
        }
    }
    for i in i..size {
        for (k, slot) in acc[0].iter_mut().enumerate() {
            *slot = slot.add(load(i, k));
        }
    }
    let [mut total, rest @ ..] = acc;
    for level in rest {
        for (sum, part) in total.iter_mut().zip(level) {
            *sum = sum.add(part);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantize(values: &[f32]) -> Nf4Tensor {
        Nf4Tensor::quantize(values, &[values.len()], BLOCKSIZE).expect("valid input")
    }

    #[test]
    fn table_is_sorted_symmetric_at_the_ends_and_has_an_exact_zero() {
        assert!(NF4_TABLE.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((NF4_TABLE[0], NF4_TABLE[15]), (-1.0, 1.0));
        assert_eq!(NF4_TABLE[usize::from(ZERO_CODE)], 0.0);
        assert_eq!(nearest_code(0.0), ZERO_CODE);
        assert!(DYNAMIC_MAP.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((DYNAMIC_MAP[0] < -0.99, DYNAMIC_MAP[255]), (true, 1.0));
    }

    /// The first element goes in the high nibble.
    #[test]
    fn first_element_is_the_high_nibble() {
        let t = quantize(&[-1.0, 1.0, 1.0, -1.0]);
        assert_eq!(t.codes(), &[0x0F, 0xF0]);
        assert_eq!((t.code(0), t.code(1), t.code(2), t.code(3)), (0, 15, 15, 0));
    }

    /// A value exactly on the midpoint of two codes takes the lower one; one ulp above takes the
    /// upper one.
    #[test]
    fn midpoint_ties_take_the_lower_code() {
        for (lower, &mid) in NF4_MIDPOINTS.iter().enumerate() {
            let lower = lower as u8;
            assert_eq!(nearest_code(mid), lower, "tie at {mid}");
            assert_eq!(nearest_code(mid.next_up()), lower + 1);
            let t = quantize(&[1.0, mid]);
            assert_eq!(t.code(1), lower, "quantized tie at {mid}");
        }
    }

    /// An odd length pads the last low nibble with code 7, as bitsandbytes' zero padding does.
    #[test]
    fn odd_length_pads_with_the_zero_code() {
        let t = quantize(&[0.5, -0.25, 1.0]);
        assert_eq!(t.codes().len(), 2);
        assert_eq!(t.codes()[1] & 0x0F, ZERO_CODE);
        assert_eq!(t.dequantize().len(), 3);
    }

    /// An all-zero full block keeps absmax 0; an all-zero last partial block keeps the clamp
    /// value 1e-38. Both dequantize to exact zeros.
    #[test]
    fn all_zero_blocks() {
        let mut values = vec![0.0f32; 64 + 5];
        let t = quantize(&values);
        assert_eq!(t.absmax(), &Absmax::F32(vec![0.0, MIN_ABSMAX]));
        assert!(t.codes().iter().all(|&b| b == 0x77));
        assert!(t.dequantize().iter().all(|v| v.to_bits() == 0));

        values[3] = 2.0;
        let t = quantize(&values);
        assert_eq!(t.absmax(), &Absmax::F32(vec![2.0, MIN_ABSMAX]));
        assert_eq!(t.dequantize()[3], 2.0);
    }

    /// Full blocks multiply by the reciprocal, the partial block divides: the two differ for
    /// some inputs, and each path must keep its own rounding.
    #[test]
    fn full_blocks_multiply_by_the_reciprocal_partial_blocks_divide() {
        let absmax = 3.0f32;
        let inv = 1.0 / absmax;
        // Find a value whose two scalings land on opposite sides of a midpoint.
        let found = NF4_MIDPOINTS.iter().find_map(|&mid| {
            let mut x = mid * absmax;
            for _ in 0..64 {
                if (x * inv <= mid) != (x / absmax <= mid) {
                    return Some(x);
                }
                x = x.next_up();
            }
            None
        });
        let x = found.expect("some midpoint separates x * (1/3) from x / 3");
        let mut full = vec![0.0f32; 64];
        full[0] = absmax;
        full[1] = x;
        let partial = [absmax, x];
        let via_reciprocal = quantize(&full).code(1);
        let via_division = quantize(&partial).code(1);
        assert_eq!(via_reciprocal, nearest_code(x * inv));
        assert_eq!(via_division, nearest_code(x / absmax));
        assert_ne!(via_reciprocal, via_division);
    }

    #[test]
    fn dequantize_is_table_times_absmax_and_bf16_rounds_it() {
        let values: Vec<f32> = (0..130)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let t = quantize(&values);
        let absmax = t.absmax_f32();
        let f = t.dequantize();
        for (i, v) in f.iter().enumerate() {
            assert_eq!(*v, NF4_TABLE[usize::from(t.code(i))] * absmax[i / 64]);
            assert!(
                (v - values[i]).abs() <= absmax[i / 64] * 0.17,
                "element {i}"
            );
        }
        let b = t.dequantize_bf16();
        assert!(f.iter().zip(&b).all(|(f, b)| bf16::from_f32(*f) == *b));
    }

    /// Double quantization is lossy: an all-zero block's absmax comes back as (about) the offset,
    /// not zero, yet the block still dequantizes to zeros because its codes point at 0.0.
    #[test]
    fn double_quant_zero_block_absmax_is_not_zero() {
        let mut values = vec![0.0f32; 64 * 4];
        for (i, v) in values[64..].iter_mut().enumerate() {
            *v = (i as f32 - 90.0) / 10.0;
        }
        let t = quantize(&values).with_double_quant();
        let Absmax::DoubleQuant {
            codes,
            scales,
            offset,
        } = t.absmax()
        else {
            panic!("double quantized");
        };
        assert_eq!((codes.len(), scales.len()), (4, 1));
        assert!(*offset > 0.0);
        let recovered = t.absmax_f32();
        assert_ne!(recovered[0], 0.0);
        assert!(t.dequantize()[..64].iter().all(|&v| v == 0.0));
        // A second call leaves it alone.
        assert_eq!(t.clone().with_double_quant(), t);
    }

    /// bitsandbytes' 65536-bin lookup cannot tell apart the map entries nearest zero (closer
    /// than a bin, 2/65535): quantizing the map itself at absmax 1 gives back every entry's own
    /// index except these nine, which bitsandbytes 0.50.2 moves exactly the same way.
    #[test]
    fn dynamic_code_matches_bitsandbytes_lookup_resolution() {
        let moved = [
            (120, 121),
            (124, 123),
            (125, 123),
            (126, 123),
            (127, 131),
            (128, 131),
            (129, 131),
            (130, 131),
            (134, 133),
        ];
        for (i, &value) in DYNAMIC_MAP.iter().enumerate() {
            let expected = moved.iter().find(|m| m.0 == i).map_or(i, |m| m.1);
            assert_eq!(
                usize::from(dynamic_code(value)),
                expected,
                "map entry {i} = {value}"
            );
        }
        assert_eq!(dynamic_code(2.0), 255);
        assert_eq!(dynamic_code(-2.0), 0);
    }

    /// Below one vector the sum is ATen's scalar `row_sum`: four interleaved partial sums.
    #[test]
    fn torch_sum_small_rows_use_four_partial_sums() {
        let x = [1.0e8f32, 1.0, -1.0e8, 1.0, 1.0];
        // Partial sums [1e8 + x4, x1, x2, x3] = [1e8, 1, -1e8, 1] (1e8 + 1 rounds back to 1e8),
        // folded into the first: 1e8, 0, 1. Left to right would give 2.
        assert_eq!(torch_cpu_sum(&x), 1.0);
        assert_eq!(x.iter().fold(0.0f32, |a, b| a + b), 2.0);
        assert_eq!(torch_cpu_mean(&[2.0, 4.0]), 3.0);
    }

    #[test]
    fn ceil_log2_matches_aten() {
        let cases = [
            (0, 1),
            (1, 1),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (16, 4),
            (17, 5),
        ];
        for (x, expected) in cases {
            assert_eq!(ceil_log2(x), expected, "CeilLog2({x})");
        }
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(matches!(
            Nf4Tensor::quantize(&[1.0; 6], &[2, 4], 64),
            Err(KernelError::ShapeMismatch {
                expected: 8,
                found: 6,
                ..
            })
        ));
        assert!(matches!(
            Nf4Tensor::quantize(&[], &[0], 64),
            Err(KernelError::EmptyTensor { .. })
        ));
        assert!(matches!(
            Nf4Tensor::quantize(&[1.0, f32::NAN], &[2], 64),
            Err(KernelError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            Nf4Tensor::quantize(&[1.0; 4], &[4], 48),
            Err(KernelError::UnsupportedBlocksize { blocksize: 48 })
        ));
        assert!(matches!(
            Nf4Tensor::from_parts(vec![0; 2], Absmax::F32(vec![1.0]), &[5], 64),
            Err(KernelError::PartLength {
                part: "codes",
                expected: 3,
                found: 2,
                ..
            })
        ));
        assert!(matches!(
            Nf4Tensor::from_parts(vec![0; 3], Absmax::F32(vec![1.0, 2.0]), &[5], 64),
            Err(KernelError::PartLength {
                part: "absmax",
                expected: 1,
                found: 2,
                ..
            })
        ));
        let dq = Absmax::DoubleQuant {
            codes: vec![0; 300],
            scales: vec![1.0],
            offset: 0.0,
        };
        assert!(matches!(
            Nf4Tensor::from_parts(vec![0; 300 * 32], dq, &[300 * 64], 64),
            Err(KernelError::PartLength {
                part: "absmax scales",
                expected: 2,
                found: 1,
                ..
            })
        ));
        let nan = Absmax::F32(vec![f32::NAN]);
        assert!(matches!(
            Nf4Tensor::from_parts(vec![0; 1], nan, &[2], 64),
            Err(KernelError::InvalidPart { part: "absmax", .. })
        ));
    }

    #[test]
    fn from_parts_round_trips() {
        let values: Vec<f32> = (0..200).map(|i| (i as f32).sin()).collect();
        let t = Nf4Tensor::quantize(&values, &[10, 20], 32)
            .expect("valid")
            .with_double_quant();
        let (codes, absmax, shape, blocksize) = t.clone().into_parts();
        assert_eq!(
            Nf4Tensor::from_parts(codes, absmax, &shape, blocksize).expect("valid"),
            t
        );
        assert_eq!((t.numel(), t.num_blocks()), (200, 7));
    }
}
