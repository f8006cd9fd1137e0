//! NF4 dequantization on the device, bit-exact against [`reference`](mod@super::reference).
//!
//! ```text
//! codes  (u8, packed, padded to u32 words) ─┐
//! absmax (f32, or 8-bit codes + scales + offset ──[dq_absmax_product, dq_absmax_add_offset]──▶ f32)
//!                                            ├─[dequantize_f32 | dequantize_bf16]──▶ f32 / bf16
//! NF4 table (16 × f32)                      ─┘
//! ```
//!
//! - `kernel.rs`: the `#[cube]` kernels; one unit dequantizes one `u32` word of codes (eight
//!   values), reading its block's absmax once.
//! - `launch.rs`: [`DeviceNf4`] (the tensor's device buffers), the launches and read-back.
//! - `tests.rs`: device against reference and against bitsandbytes' golden vectors, on every
//!   runtime the build links (`wgpu`, `cuda`).
//!
//! `bf16` output is computed as the `f32` product rounded to nearest even on the bits, so it
//! needs no 16-bit type support from the runtime (WGSL has none) and matches bitsandbytes
//! exactly. Runtimes that flush subnormal `f32` results to zero (WGSL permits it) can differ
//! from the reference only where `table[code] * absmax` is subnormal, i.e. for blocks whose
//! largest magnitude is below about `1.2e-38`.

mod kernel;
mod launch;

#[cfg(test)]
mod tests;

pub use kernel::CODES_PER_WORD;
pub(crate) use launch::padded_to_words;
pub use launch::{
    DeviceNf4, Layout, dequantize_bf16, dequantize_bf16_on_device, dequantize_f32,
    dequantize_handles, dequantize_handles_with, dequantize_on_device, dequantize_with, read_bf16,
    read_f32,
};
