//! Narrowing device properties to what the LLVM backend lowers.
//!
//! `cubecl-cuda` / `cubecl-hip` call [`restrict_features`] only when their LLVM backend is
//! selected, i.e. when the cubecl `cuda-cpp` / `hip-cpp` feature is off. Without LLVM that
//! backend cannot compile a single kernel, so this fails loudly at device initialisation.

use cubecl_core::ir::DeviceProperties;
#[cfg(feature = "amdgpu")]
use cubecl_core::ir::amd::AmdWmma;

/// The GPU target a device's features are narrowed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuTarget {
    /// NVIDIA, lowered through NVPTX.
    #[cfg(feature = "nvptx")]
    Nvptx,
    /// AMD; `wmma` is the part's WMMA generation, `None` on a part without one.
    #[cfg(feature = "amdgpu")]
    AmdGpu {
        /// WMMA generation.
        wmma: Option<AmdWmma>,
    },
}

/// Would narrow `props` for the LLVM backend; always panics, since there is no LLVM.
///
/// # Panics
///
/// Always: reaching this means the runtime selected its LLVM backend. Enable the cubecl
/// `cuda-cpp` feature (burn's `cuda` feature alone does not).
pub fn restrict_features(props: &mut DeviceProperties, target: GpuTarget) {
    let _ = props;
    panic!(
        "{} (the runtime selected its LLVM backend for {target:?})",
        crate::NO_LLVM
    );
}
