//! Host side of NF4 dequantization: device buffers, size checks, cube counts and the `unsafe`
//! launches of the kernels in `kernel.rs`.
//!
//! Every launch here is `launch_unchecked` (no bounds checks in the generated code), so the
//! safety argument lives in this file: each buffer length handed to a kernel is the length of
//! the buffer it describes, and the lengths agree with each other because they all come from one
//! validated [`Nf4Tensor`] or are checked against it before launching.

use cubecl::calculate_cube_count_elemwise;
use cubecl::client::Client;
use cubecl::prelude::*;
use cubecl::server::Handle;
use half::bf16;

use super::kernel::{self, CODES_PER_WORD, STORE_WORDS};
use crate::KernelError;
use crate::nf4::reference::{Absmax, DOUBLE_QUANT_BLOCKSIZE, DYNAMIC_MAP, NF4_TABLE, Nf4Tensor};

/// Units per cube: one word (eight values) each in the scalar kernels, so 2048 values per
/// cube; `N` words each in the wide ones.
const UNITS_PER_CUBE: u32 = 256;

/// How the dequantization kernels walk memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One code word per unit, every load and store 32 bits wide (any length).
    Scalar,
    /// `words_per_unit` (1, 2 or 4) code words per unit read as one vector, and 16-byte
    /// stores; needs a length that is a multiple of `8 · words_per_unit`.
    Wide {
        /// Code words read per unit.
        words_per_unit: usize,
    },
}

impl Layout {
    /// The widest layout `numel` allows: [`Layout::Wide`] with 4, 2 or 1 words per unit, or
    /// [`Layout::Scalar`] when `numel` is not a multiple of eight.
    pub fn for_numel(numel: usize) -> Self {
        [4, 2, 1]
            .into_iter()
            .find(|w| numel.is_multiple_of(CODES_PER_WORD * w))
            .map_or(Layout::Scalar, |words_per_unit| Layout::Wide {
                words_per_unit,
            })
    }
}

/// The kernels index values with 32 bits.
const MAX_NUMEL: usize = u32::MAX as usize;

/// An NF4 tensor on the device: the packed codes as `u32` words and its absmax (plain or
/// double-quantized, with the dynamic map).
///
/// Created by [`DeviceNf4::upload`]. The buffers are immutable once uploaded; dequantization
/// writes to fresh output buffers.
#[derive(Debug, Clone)]
pub struct DeviceNf4 {
    codes: Handle,
    absmax: DeviceAbsmax,
    numel: usize,
    blocksize: usize,
}

/// Device-side absmax of a [`DeviceNf4`].
#[derive(Debug, Clone)]
enum DeviceAbsmax {
    /// One `f32` per block.
    F32(Handle),
    /// 8-bit codes (four per word), per-256 scales, the dynamic map and the offset.
    DoubleQuant {
        codes: Handle,
        scales: Handle,
        map: Handle,
        offset: f32,
    },
}

impl DeviceNf4 {
    /// Copies `tensor` to the device behind `client`.
    ///
    /// Byte buffers are padded with zeros to whole `u32` words, so the kernels can read them
    /// four bytes at a time.
    pub fn upload(client: &Client, tensor: &Nf4Tensor) -> Result<Self, KernelError> {
        let numel = tensor.numel();
        if numel > MAX_NUMEL {
            return Err(KernelError::TooLarge {
                what: "NF4 tensor",
                len: numel,
                max: MAX_NUMEL,
            });
        }
        let absmax = match tensor.absmax() {
            Absmax::F32(values) => {
                DeviceAbsmax::F32(client.create_from_slice(f32::as_bytes(values)))
            }
            Absmax::DoubleQuant {
                codes,
                scales,
                offset,
            } => DeviceAbsmax::DoubleQuant {
                codes: client.create_from_slice(&padded_to_words(codes)),
                scales: client.create_from_slice(f32::as_bytes(scales)),
                map: client.create_from_slice(f32::as_bytes(&DYNAMIC_MAP)),
                offset: *offset,
            },
        };
        Ok(Self {
            codes: client.create_from_slice(&padded_to_words(tensor.codes())),
            absmax,
            numel,
            blocksize: tensor.blocksize(),
        })
    }

    /// Number of values.
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Number of absmax blocks.
    fn num_blocks(&self) -> usize {
        self.numel.div_ceil(self.blocksize)
    }

    /// The `f32` absmax buffer: the uploaded one, or for double quantization a fresh one
    /// recovered on the device by two launches (product, then offset), matching the reference
    /// bit for bit.
    fn absmax_f32(&self, client: &Client) -> Handle {
        match &self.absmax {
            DeviceAbsmax::F32(handle) => handle.clone(),
            DeviceAbsmax::DoubleQuant {
                codes,
                scales,
                map,
                offset,
            } => {
                let blocks = self.num_blocks();
                let absmax = client.empty(blocks * size_of::<f32>());
                let cube_dim = CubeDim::new_1d(UNITS_PER_CUBE);
                let cube_count = calculate_cube_count_elemwise(client, blocks, cube_dim);
                // SAFETY: `codes` holds `blocks` bytes padded to `blocks.div_ceil(4)` words,
                // `scales` one f32 per 256 blocks, `map` 256 entries (every u8 code is in
                // range), `absmax` `blocks` f32; the kernel guards `block < absmax.len()`.
                unsafe {
                    kernel::dq_absmax_product::launch_unchecked(
                        client,
                        cube_count.clone(),
                        cube_dim,
                        BufferArg::from_raw_parts(codes.clone(), blocks.div_ceil(4)),
                        BufferArg::from_raw_parts(map.clone(), DYNAMIC_MAP.len()),
                        BufferArg::from_raw_parts(
                            scales.clone(),
                            blocks.div_ceil(DOUBLE_QUANT_BLOCKSIZE),
                        ),
                        BufferArg::from_raw_parts(absmax.clone(), blocks),
                        DOUBLE_QUANT_BLOCKSIZE,
                    );
                    kernel::dq_absmax_add_offset::launch_unchecked(
                        client,
                        cube_count,
                        cube_dim,
                        BufferArg::from_raw_parts(absmax.clone(), blocks),
                        *offset,
                    );
                }
                absmax
            }
        }
    }
}

/// `bytes` followed by zeros up to a whole number of `u32` words (at least one word, so no
/// buffer is empty).
pub(crate) fn padded_to_words(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
    out
}

/// Dequantizes `tensor` to a new buffer of `numel` `f32` values, as
/// [`Nf4Tensor::dequantize`] would. Launches asynchronously; errors surface when the result is
/// read (see [`read_f32`]).
pub fn dequantize_f32(client: &Client, tensor: &DeviceNf4) -> Handle {
    dequantize_device(client, tensor, false)
}

/// Dequantizes `tensor` to a new buffer of `numel` `bf16` values (rounded to nearest even, as
/// [`Nf4Tensor::dequantize_bf16`]), stored as `numel.div_ceil(2)` `u32` words, i.e. a
/// little-endian `bf16` array padded to an even length.
pub fn dequantize_bf16(client: &Client, tensor: &DeviceNf4) -> Handle {
    dequantize_device(client, tensor, true)
}

/// [`dequantize_handles`] on an uploaded tensor's buffers (its absmax recovered first when
/// double-quantized).
fn dequantize_device(client: &Client, tensor: &DeviceNf4, bf16_out: bool) -> Handle {
    dequantize_with(client, tensor, bf16_out, Layout::for_numel(tensor.numel))
}

/// [`dequantize_f32`] (or with `bf16_out` [`dequantize_bf16`]) in a chosen [`Layout`], for
/// benchmarks and tests that compare the layouts.
pub fn dequantize_with(
    client: &Client,
    tensor: &DeviceNf4,
    bf16_out: bool,
    layout: Layout,
) -> Handle {
    dequantize_handles_with(
        client,
        tensor.codes.clone(),
        tensor.absmax_f32(client),
        tensor.numel,
        tensor.blocksize,
        bf16_out,
        layout,
    )
}

/// [`dequantize_handles_with`] in the widest [`Layout`] `numel` allows.
pub fn dequantize_handles(
    client: &Client,
    codes: Handle,
    absmax: Handle,
    numel: usize,
    blocksize: usize,
    bf16_out: bool,
) -> Handle {
    dequantize_handles_with(
        client,
        codes,
        absmax,
        numel,
        blocksize,
        bf16_out,
        Layout::for_numel(numel),
    )
}

thread_local! {
    /// The NF4 table on each device this thread has dequantized on, uploaded once: a buffer of
    /// this thread's stream, so reading it never waits on another stream.
    /// Keyed by the client's service: its device and server type.
    static TABLES: std::cell::RefCell<Vec<(ServiceKey, Handle)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// What a client's handles are stamped with (`ServiceId`'s fields; cubecl does not re-export
/// the type itself).
type ServiceKey = (cubecl::device::DeviceId, std::any::TypeId);

/// [`NF4_TABLE`] on `client`'s device, uploaded on this thread's first call for that device.
fn nf4_table(client: &Client) -> Handle {
    let id = client.service_id();
    let service: ServiceKey = (id.device, id.service);
    TABLES.with(|tables| {
        let mut tables = tables.borrow_mut();
        if let Some((_, handle)) = tables.iter().find(|(s, _)| *s == service) {
            return handle.clone();
        }
        let handle = client.create_from_slice(f32::as_bytes(&NF4_TABLE));
        tables.push((service, handle.clone()));
        handle
    })
}

/// Dequantizes `numel` values whose packed codes (`u32` words, [`CODES_PER_WORD`] values each)
/// and `f32` absmax already live in device buffers, e.g. the buffers of burn tensors
/// ([`crate::nf4::linear`]). Writes a fresh buffer of `numel` `f32`, or with `bf16_out` of
/// `numel.div_ceil(2)` `u32` words holding little-endian `bf16` pairs.
///
/// # Panics
///
/// When a buffer is smaller than `numel` and `blocksize` call for, or `numel` does not fit the
/// kernel's 32-bit indexing: the launches are unchecked, so a wrong length is refused here
/// instead of becoming an out-of-bounds access on the device.
///
/// `layout` picks the kernels; [`Layout::Wide`] with a length its width does not divide panics
/// (use [`Layout::for_numel`]). Every layout computes the same bits.
pub fn dequantize_handles_with(
    client: &Client,
    codes: Handle,
    absmax: Handle,
    numel: usize,
    blocksize: usize,
    bf16_out: bool,
    layout: Layout,
) -> Handle {
    let words = numel.div_ceil(CODES_PER_WORD);
    let blocks = numel.div_ceil(blocksize);
    assert!(
        numel > 0 && numel <= MAX_NUMEL,
        "NF4 dequantize: {numel} values (1..={MAX_NUMEL} fit the kernel)"
    );
    assert!(
        blocksize.is_multiple_of(CODES_PER_WORD),
        "NF4 dequantize: block size {blocksize} is not a multiple of {CODES_PER_WORD}"
    );
    let code_bytes = codes.size_in_used();
    assert!(
        code_bytes >= (words * size_of::<u32>()) as u64,
        "NF4 dequantize: the codes buffer holds {code_bytes} bytes, {numel} values need {words} words"
    );
    let absmax_bytes = absmax.size_in_used();
    assert!(
        absmax_bytes >= (blocks * size_of::<f32>()) as u64,
        "NF4 dequantize: the absmax buffer holds {absmax_bytes} bytes, {numel} values in blocks \
         of {blocksize} need {blocks} f32"
    );
    let table = nf4_table(client);
    let cube_dim = CubeDim::new_1d(UNITS_PER_CUBE);
    if let Layout::Wide { words_per_unit } = layout {
        assert!(
            matches!(words_per_unit, 1 | 2 | 4)
                && numel.is_multiple_of(CODES_PER_WORD * words_per_unit),
            "NF4 dequantize: {numel} values cannot be read {words_per_unit} words per unit \
             (1, 2 or 4 words of eight values, dividing the length)"
        );
        let units = words / words_per_unit;
        let cube_count = calculate_cube_count_elemwise(client, units, cube_dim);
        // Output vectors of 16 bytes: one per word in bf16, two in f32.
        let out_vectors = if bf16_out { words } else { 2 * words };
        let out = client.empty(out_vectors * STORE_WORDS * size_of::<u32>());
        // SAFETY: `numel` is a multiple of `8 · words_per_unit` (asserted), so `codes` (>=
        // `words` words, asserted) holds `units` vectors of `words_per_unit` words, every word
        // is whole, and `out` holds exactly `numel` values (`words` bf16 vectors of eight, or
        // `2 · words` f32 vectors of four); `absmax` has >= `blocks` f32 and a word's values
        // share the block `8 · word / blocksize < blocks` (block sizes are multiples of eight,
        // asserted); `table` has the 16 f32 every nibble indexes, copied to shared memory by
        // the first 16 of the cube's 256 units. The kernels guard `unit < codes.len()` and
        // write output vectors `word` (bf16) or `2 · word + {0, 1}` (f32) of their own words.
        unsafe {
            if bf16_out {
                kernel::dequantize_bf16_wide::launch_unchecked(
                    client,
                    cube_count,
                    cube_dim,
                    words_per_unit,
                    BufferArg::from_raw_parts(codes, units),
                    BufferArg::from_raw_parts(absmax, blocks),
                    BufferArg::from_raw_parts(table, NF4_TABLE.len()),
                    BufferArg::from_raw_parts(out.clone(), out_vectors),
                    blocksize,
                );
            } else {
                kernel::dequantize_f32_wide::launch_unchecked(
                    client,
                    cube_count,
                    cube_dim,
                    words_per_unit,
                    BufferArg::from_raw_parts(codes, units),
                    BufferArg::from_raw_parts(absmax, blocks),
                    BufferArg::from_raw_parts(table, NF4_TABLE.len()),
                    BufferArg::from_raw_parts(out.clone(), out_vectors),
                    blocksize,
                );
            }
        }
        return out;
    }
    let cube_count = calculate_cube_count_elemwise(client, words, cube_dim);
    if bf16_out {
        let out_words = numel.div_ceil(2);
        let out = client.empty(out_words * size_of::<u32>());
        // SAFETY: the asserts above give `codes` >= `words` words and `absmax` >= `blocks`
        // f32; `table` has 16 f32 and every code is a nibble; `out` has `out_words` words. The
        // kernel guards `word < codes.len()` and `out_index < out.len()`. A live word's first
        // value is `8 * word <= 8 * (words - 1) < numel`, so its block `8 * word / blocksize`
        // is below `blocks`, and block sizes are multiples of eight (asserted), so the word's
        // other values share it.
        unsafe {
            kernel::dequantize_bf16::launch_unchecked(
                client,
                cube_count,
                cube_dim,
                BufferArg::from_raw_parts(codes, words),
                BufferArg::from_raw_parts(absmax, blocks),
                BufferArg::from_raw_parts(table, NF4_TABLE.len()),
                BufferArg::from_raw_parts(out.clone(), out_words),
                blocksize,
            );
        }
        out
    } else {
        let out = client.empty(numel * size_of::<f32>());
        // SAFETY: as above, with `out` holding `numel` f32 and the kernel guarding
        // `index < out.len()`.
        unsafe {
            kernel::dequantize_f32::launch_unchecked(
                client,
                cube_count,
                cube_dim,
                BufferArg::from_raw_parts(codes, words),
                BufferArg::from_raw_parts(absmax, blocks),
                BufferArg::from_raw_parts(table, NF4_TABLE.len()),
                BufferArg::from_raw_parts(out.clone(), numel),
                blocksize,
            );
        }
        out
    }
}

/// Reads `numel` `f32` values back from `handle` (an output of [`dequantize_f32`]).
pub fn read_f32(client: &Client, handle: Handle, numel: usize) -> Result<Vec<f32>, KernelError> {
    let bytes = read(client, handle, numel * size_of::<f32>())?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Reads `numel` `bf16` values back from `handle` (an output of [`dequantize_bf16`]).
pub fn read_bf16(client: &Client, handle: Handle, numel: usize) -> Result<Vec<bf16>, KernelError> {
    let bytes = read(client, handle, numel * size_of::<u16>())?;
    Ok(bytes
        .chunks_exact(2)
        .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
        .collect())
}

/// The first `len` bytes of `handle`, after every launch queued before has finished.
fn read(client: &Client, handle: Handle, len: usize) -> Result<Vec<u8>, KernelError> {
    let available = handle.size_in_used();
    if available < len as u64 {
        return Err(KernelError::BufferSize {
            buffer: "output",
            expected: len as u64,
            found: available,
        });
    }
    let bytes = client
        .read_one(handle)
        .map_err(|source| KernelError::Device {
            op: "reading back a dequantized tensor",
            source,
        })?;
    Ok(bytes[..len].to_vec())
}

/// Uploads, dequantizes to `f32` and reads back: the reference's [`Nf4Tensor::dequantize`],
/// computed on the device.
pub fn dequantize_on_device(client: &Client, tensor: &Nf4Tensor) -> Result<Vec<f32>, KernelError> {
    let device = DeviceNf4::upload(client, tensor)?;
    let out = dequantize_f32(client, &device);
    read_f32(client, out, device.numel())
}

/// Uploads, dequantizes to `bf16` and reads back: [`Nf4Tensor::dequantize_bf16`] on the device.
pub fn dequantize_bf16_on_device(
    client: &Client,
    tensor: &Nf4Tensor,
) -> Result<Vec<bf16>, KernelError> {
    let device = DeviceNf4::upload(client, tensor)?;
    let out = dequantize_bf16(client, &device);
    read_bf16(client, out, device.numel())
}
