//! LLVM compilation targets (same variants as the real crate).

/// The target an LLVM compilation would be for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LlvmTarget {
    /// Host CPU (the `cubecl-cpu` runtime).
    #[default]
    Cpu,
    /// AMD GPUs (the `cubecl-hip` runtime's LLVM backend).
    #[cfg(feature = "amdgpu")]
    AmdGpu,
    /// NVIDIA GPUs (the `cubecl-cuda` runtime's LLVM backend).
    #[cfg(feature = "nvptx")]
    Nvptx,
}

impl LlvmTarget {
    /// Whether the target provides a hardware launch grid.
    pub fn is_gpu(self) -> bool {
        !matches!(self, LlvmTarget::Cpu)
    }
}
