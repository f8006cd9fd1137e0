//! The `#[cube]` code of NF4 dequantization; the host side (buffer sizes, cube counts, the
//! `unsafe` launches) is in `launch.rs`.
//!
//! Codes arrive as `u32` words: the packed byte buffer read four bytes at a time,
//! little-endian, so word `w` holds bytes `4w..4w + 4` with byte `4w + p` in bits `8p..8p + 8`.
//! WGSL has no 8-bit integers. The scalar kernels ([`dequantize_f32`], [`dequantize_bf16`]) give
//! each unit one word, eight values, with 32-bit loads and stores, for any length; the wide ones
//! ([`dequantize_f32_wide`], [`dequantize_bf16_wide`]) give it `N` words read as one vector and
//! write 16-byte vectors, for lengths that are whole vectors of words. Block sizes are multiples
//! of eight, so the eight values of a word always share one absmax.
//!
//! Every output value is one `f32` multiply, `table[code] * absmax`, which is exactly what
//! bitsandbytes computes; there is no add for a compiler to fuse it with. Recovering a
//! double-quantized absmax (`map[code] * scale + offset`) does have one, and bitsandbytes rounds
//! the product before adding, so it runs as two launches ([`dq_absmax_product`], then
//! [`dq_absmax_add_offset`]) that no compiler can contract into an FMA.

use cubecl::prelude::*;

/// Codes in one `u32` word.
pub const CODES_PER_WORD: usize = 8;

/// The `bf16` bit pattern nearest to `value` (round to nearest, ties to even), in the low 16
/// bits; a NaN stays a quiet NaN. What `half::bf16::from_f32` and torch's `.to(bfloat16)` do,
/// written on the bits because WGSL has no 16-bit types.
#[cube]
pub fn bf16_bits(value: f32) -> u32 {
    let bits = u32::reinterpret(value);
    let rounded = (bits + 0x7FFFu32 + ((bits >> 16u32) & 1u32)) >> 16u32;
    let is_nan = (bits & 0x7FFF_FFFFu32) > 0x7F80_0000u32;
    select(is_nan, (bits >> 16u32) | 0x40u32, rounded)
}

/// `out[i] = table[code(i)] * absmax[i / blocksize]` for the eight values of word `ABSOLUTE_POS`.
///
/// `codes.len()` is the word count, `out.len()` the value count; the last word may be partly
/// padding, which is never written.
#[cube(launch_unchecked)]
pub fn dequantize_f32(
    codes: &[u32],
    absmax: &[f32],
    table: &[f32],
    out: &mut [f32],
    #[comptime] blocksize: usize,
) {
    let word_index = ABSOLUTE_POS;
    if word_index < codes.len() {
        let word = codes[word_index];
        let first = word_index * CODES_PER_WORD;
        let scale = absmax[first / blocksize];
        #[unroll]
        for j in 0..CODES_PER_WORD {
            let index = first + j;
            if index < out.len() {
                // Byte `j / 2`; within it the even (first) element is the high nibble.
                let shift = (8 * (j / 2) + 4 - 4 * (j % 2)) as u32;
                let code = (word >> shift) & 0xFu32;
                out[index] = table[code as usize] * scale;
            }
        }
    }
}

/// As [`dequantize_f32`], rounded to `bf16` and stored two per `u32`: output word `k` holds
/// value `2k` in its low half and `2k + 1` in its high half, which is the byte order of a
/// little-endian `bf16` array. `out.len()` is the output word count, `numel.div_ceil(2)`; an odd
/// count's last high half is the padding nibble's `0.0`.
#[cube(launch_unchecked)]
pub fn dequantize_bf16(
    codes: &[u32],
    absmax: &[f32],
    table: &[f32],
    out: &mut [u32],
    #[comptime] blocksize: usize,
) {
    let word_index = ABSOLUTE_POS;
    if word_index < codes.len() {
        let word = codes[word_index];
        let scale = absmax[(word_index * CODES_PER_WORD) / blocksize];
        #[unroll]
        for pair in 0..CODES_PER_WORD / 2 {
            let out_index = word_index * (CODES_PER_WORD / 2) + pair;
            if out_index < out.len() {
                let byte = (word >> ((8 * pair) as u32)) & 0xFFu32;
                let first = bf16_bits(table[(byte >> 4u32) as usize] * scale);
                let second = bf16_bits(table[(byte & 0xFu32) as usize] * scale);
                out[out_index] = first | (second << 16u32);
            }
        }
    }
}

/// Output words per vectorized store: 4 × 32 bits, 16 bytes.
pub const STORE_WORDS: usize = 4;

/// Copies the 16 NF4 values into this cube's shared memory; every unit of the cube calls it
/// (it synchronizes the cube) before any unit returns.
#[cube]
fn shared_table(table: &[f32]) -> Shared<[f32]> {
    let mut shared = Shared::<[f32]>::new_slice(16usize);
    if (UNIT_POS as usize) < 16usize {
        shared[UNIT_POS as usize] = table[UNIT_POS as usize];
    }
    sync_cube();
    shared
}

/// [`dequantize_bf16`] with wide memory access: unit `u` reads `N` code words as one vector
/// (words `N·u .. N·u + N`) and writes each word's eight `bf16` values as one 16-byte vector
/// of four `u32` (output vector `w` = values `8w .. 8w + 8`, low half first), so consecutive
/// units touch consecutive memory. The table is read from shared memory.
///
/// Needs whole words (`numel` a multiple of eight: no padding half, no padding word) and a word
/// count that `N` divides; `codes.len()` is the count of `N`-word vectors, `out.len()` the word
/// count.
#[cube(launch_unchecked)]
pub fn dequantize_bf16_wide<N: Size>(
    codes: &[Vector<u32, N>],
    absmax: &[f32],
    table: &[f32],
    out: &mut [Vector<u32, Const<4>>],
    #[comptime] blocksize: usize,
) {
    let table = shared_table(table);
    let unit = ABSOLUTE_POS;
    if unit < codes.len() {
        let words = codes[unit];
        let lanes = words.vector_size();
        #[unroll]
        for w in 0..lanes {
            let word = words.extract(w);
            let word_index = unit * lanes + w;
            let scale = absmax[(word_index * CODES_PER_WORD) / blocksize];
            let mut packed = Vector::<u32, Const<4>>::empty();
            #[unroll]
            for pair in 0..CODES_PER_WORD / 2 {
                let byte = (word >> ((8 * pair) as u32)) & 0xFFu32;
                let first = bf16_bits(table[(byte >> 4u32) as usize] * scale);
                let second = bf16_bits(table[(byte & 0xFu32) as usize] * scale);
                packed.insert(pair, first | (second << 16u32));
            }
            out[word_index] = packed;
        }
    }
}

/// [`dequantize_f32`] with wide memory access, as [`dequantize_bf16_wide`]: `N` code words per
/// unit, each word's eight `f32` values written as two 16-byte vectors (output vectors `2w`,
/// `2w + 1`). Same requirements; `out.len()` is twice the word count.
#[cube(launch_unchecked)]
pub fn dequantize_f32_wide<N: Size>(
    codes: &[Vector<u32, N>],
    absmax: &[f32],
    table: &[f32],
    out: &mut [Vector<f32, Const<4>>],
    #[comptime] blocksize: usize,
) {
    let table = shared_table(table);
    let unit = ABSOLUTE_POS;
    if unit < codes.len() {
        let words = codes[unit];
        let lanes = words.vector_size();
        #[unroll]
        for w in 0..lanes {
            let word = words.extract(w);
            let word_index = unit * lanes + w;
            let scale = absmax[(word_index * CODES_PER_WORD) / blocksize];
            #[unroll]
            for half in 0..2usize {
                let mut values = Vector::<f32, Const<4>>::empty();
                #[unroll]
                for j in 0..4usize {
                    // Value `4·half + j` of the word: byte `2·half + j / 2`, high nibble first.
                    let shift = (8 * (2 * half + j / 2) + 4 - 4 * (j % 2)) as u32;
                    let code = (word >> shift) & 0xFu32;
                    values.insert(j, table[code as usize] * scale);
                }
                out[2 * word_index + half] = values;
            }
        }
    }
}

/// First half of double-quantized absmax recovery: `absmax[b] = map[code(b)] * scales[b / 256]`,
/// one block per unit. `codes` holds the 8-bit codes four to a word, little-endian.
#[cube(launch_unchecked)]
pub fn dq_absmax_product(
    codes: &[u32],
    map: &[f32],
    scales: &[f32],
    absmax: &mut [f32],
    #[comptime] dq_blocksize: usize,
) {
    let block = ABSOLUTE_POS;
    if block < absmax.len() {
        let shift = ((block % 4) * 8) as u32;
        let code = (codes[block / 4] >> shift) & 0xFFu32;
        absmax[block] = map[code as usize] * scales[block / dq_blocksize];
    }
}

/// Second half of double-quantized absmax recovery: `absmax[b] += offset`, rounded on its own as
/// bitsandbytes' `absmax += offset` is.
#[cube(launch_unchecked)]
pub fn dq_absmax_add_offset(absmax: &mut [f32], offset: f32) {
    if ABSOLUTE_POS < absmax.len() {
        absmax[ABSOLUTE_POS] += offset;
    }
}
