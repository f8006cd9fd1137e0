//! The compiler entry points and the artifact types.

mod base;
#[cfg(any(feature = "amdgpu", feature = "nvptx"))]
pub mod lowered_features;

pub use base::*;
