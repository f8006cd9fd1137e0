//! Choosing the CubeCL runtime a kernel runs on.
//!
//! The kernels take a [`Client`] and nothing else, so they are the same code on every runtime.
//! This module turns a [`Backend`] into a client. It compiles in every build: a runtime whose
//! crate feature is off is a [`KernelError::RuntimeNotLinked`] at run time, not a missing
//! function, so callers need no `cfg` of their own.

use core::fmt;

use cubecl::client::Client;
use cubecl::device::{Device, DeviceUnavailable, WgpuDeviceKind};

use crate::KernelError;

/// A CubeCL runtime the kernels can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// wgpu on Vulkan, kernels compiled to WGSL (crate feature `wgpu`). A software Vulkan such
    /// as Mesa lavapipe counts: it is what CI runs on.
    Wgpu,
    /// CUDA, device 0 (crate feature `cuda`).
    Cuda,
}

impl Backend {
    /// The crate feature that links this runtime.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Wgpu => "wgpu (Vulkan)",
            Self::Cuda => "CUDA",
        })
    }
}

/// A compute client on `backend`'s default device.
///
/// For [`Backend::Wgpu`] the device is pinned to Vulkan, so a machine without a Vulkan adapter
/// (not even lavapipe) answers [`KernelError::NoDevice`] instead of falling back to another
/// graphics API. The client is created on first use and shared afterwards (CubeCL keeps one per
/// device).
pub fn client(backend: Backend) -> Result<Client, KernelError> {
    let device = match backend {
        Backend::Wgpu => Device::vulkan(WgpuDeviceKind::DefaultDevice),
        Backend::Cuda => Device::cuda(0),
    };
    match device {
        Ok(device) => Ok(device.client()),
        Err(DeviceUnavailable::NotLinked(_)) => Err(KernelError::RuntimeNotLinked {
            backend,
            feature: backend.feature(),
        }),
        Err(other) => Err(KernelError::NoDevice {
            backend,
            detail: other.to_string(),
        }),
    }
}

/// burn's device for `backend`, for running models and burn-level kernels (the
/// [`crate::nf4::linear`] extension) there: `Ok(None)` when the build links the runtime but the
/// machine has no such device, so a caller can skip with a message.
pub fn burn_device(backend: Backend) -> Result<Option<burn::tensor::Device>, KernelError> {
    match client(backend) {
        Ok(_) => {}
        Err(KernelError::NoDevice { .. }) => return Ok(None),
        Err(other) => return Err(other),
    }
    let device = match backend {
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => Some(burn::tensor::Device::wgpu(
            burn::tensor::DeviceKind::DefaultDevice,
        )),
        #[cfg(feature = "cuda")]
        Backend::Cuda => Some(burn::tensor::Device::cuda(0)),
        // `client` answered `RuntimeNotLinked` already for a runtime left out of the build.
        #[allow(unreachable_patterns)]
        _ => None,
    };
    device.map(Some).ok_or(KernelError::RuntimeNotLinked {
        backend,
        feature: backend.feature(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime left out of the build is a typed error naming the feature to turn on.
    #[test]
    fn unlinked_runtime_names_its_feature() {
        #[cfg(not(feature = "cuda"))]
        match client(Backend::Cuda) {
            Err(KernelError::RuntimeNotLinked { backend, feature }) => {
                assert_eq!(backend, Backend::Cuda);
                assert_eq!(feature, "cuda");
            }
            other => panic!("expected RuntimeNotLinked, got {:?}", other.map(|_| ())),
        }
        #[cfg(not(feature = "wgpu"))]
        assert!(matches!(
            client(Backend::Wgpu),
            Err(KernelError::RuntimeNotLinked {
                feature: "wgpu",
                ..
            })
        ));
    }
}
