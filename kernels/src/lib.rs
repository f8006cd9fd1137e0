//! CubeCL kernels for `ft`, each with a plain-Rust reference and tests.
//!
//! Every kernel lives in its own folder with the same four parts:
//!
//! | file | holds |
//! |---|---|
//! | `reference.rs` | plain Rust, the specification in code, checked against golden vectors from the format's owner |
//! | `kernel.rs` | the `#[cube]` code only |
//! | `launch.rs` | shape checks, buffer sizes, cube counts; the only `unsafe` launches |
//! | `tests.rs` | tests generic over the runtime, instantiated per runtime by a macro |
//!
//! The burn backend extensions (ops burn's tensors and autodiff can call) have their own layout:
//! `mod.rs` (the extension trait and the `Tensor`-level API), one file per backend
//! implementation (`cube.rs`, `host.rs`), `autodiff.rs` (the hand-written backward) and
//! `tests.rs` (against burn's autodiff through the plain composition, per device).
//!
//! What is here:
//!
//! - [`nf4`]: bitsandbytes' 4-bit NormalFloat layout (QLoRA). [`nf4::reference`](mod@nf4::reference) quantizes and
//!   dequantizes byte-identically to bitsandbytes 0.50.2 on CPU, double quantization included;
//!   [`nf4::dequant`] is the device dequantization kernel, bit-exact against the reference;
//!   [`nf4::linear`] the NF4 linear layer as a burn backend extension.
//! - [`attention`]: attention whose backward recomputes the weights a block of queries at a
//!   time instead of keeping `seq²` scores per layer (a burn backend extension).
//! - [`loss`]: the LM head fused with the cross-entropy, chunked forward and backward, so the
//!   `[tokens, vocab]` logits never exist at once (a burn backend extension with its own backward).
//!
//! # Runtimes
//!
//! The kernels are written once against CubeCL and run on whatever [`cubecl::client::Client`]
//! they are handed. [`runtime::client`] makes one for a named [`runtime::Backend`]; the crate
//! features decide which runtimes are linked:
//!
//! - `wgpu`: CubeCL's wgpu runtime on Vulkan, compiled to WGSL. CI runs the kernel tests on it
//!   over Mesa lavapipe (`apt-get install -y mesa-vulkan-drivers`).
//! - `cuda`: CubeCL's CUDA runtime.
//!
//! A runtime left out of the build is not a compile error at the call site: asking for it returns
//! [`KernelError::RuntimeNotLinked`], so callers carry no `cfg`.
#![warn(missing_docs)]

pub mod attention;
mod error;
pub mod gemm;
pub mod loss;
pub mod nf4;
pub mod runtime;
#[cfg(test)]
mod test_util;

pub use error::KernelError;
