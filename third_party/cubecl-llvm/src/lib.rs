//! A stand-in for `cubecl-llvm` 0.11.3 that carries no LLVM.
//!
//! `cubecl-cuda` 0.11 always depends on `cubecl-llvm` (its optional LLVM/PTX backend), and
//! the real crate's build script downloads an LLVM bundle from GitHub. `ft` only uses the
//! CUDA C++ backend (cubecl feature `cuda-cpp`, compiled by NVRTC at run time), which never
//! touches LLVM. This crate reproduces just the items `cubecl-cuda` (and `cubecl-hip`) name,
//! so they compile unchanged; everything that would need LLVM returns an error or panics
//! with [`NO_LLVM`]. See `README.md`.
//!
//! The CPU runtime `cubecl-cpu` (burn feature `cpu`) is *not* supported: it needs the LLVM
//! JIT (`PlironEngine`, `PlironData`, `SharedMemories`), which this crate does not provide.

#[cfg(feature = "amdgpu")]
pub mod amdgpu;
#[cfg(feature = "nvptx")]
pub mod nvptx;
pub mod shared;
pub mod target;

#[cfg(feature = "amdgpu")]
pub use shared::AmdGpuModule;
#[cfg(feature = "nvptx")]
pub use shared::NvptxModule;
pub use shared::{PlironArtifact, PlironCompiler, PlironEngine, PlironOptions};
pub use target::LlvmTarget;

/// The message every LLVM-only entry point reports.
pub const NO_LLVM: &str = "ft was built without LLVM; the cubecl CPU/LLVM backend is not available \
     (cubecl-llvm is stubbed, see third_party/cubecl-llvm/README.md; CUDA must use the NVRTC \
     path, cubecl feature `cuda-cpp`)";
