//! Compute device selection.
//!
//! burn 0.22 tensors carry no backend type: the `Device` decides at run time
//! (`Device::flex()` for the pure-Rust CPU backend, `Device::cuda(i)`,
//! `Device::wgpu(kind)`). Backends that were not compiled in are reported as
//! a typed error so call sites never need `cfg` attributes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where tensors live and kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// CUDA when this binary was built with `--features cuda` and a GPU
    /// answers; otherwise the CPU.
    #[default]
    Auto,
    /// The CPU (burn's pure-Rust `flex` backend). Always available.
    Cpu,
    /// The first NVIDIA GPU, through CUDA/NVRTC. Needs `--features cuda`.
    Cuda,
    /// A GPU through WebGPU/Vulkan. Needs `--features wgpu`.
    Wgpu,
}

impl DeviceChoice {
    /// Whether this binary can use the device at all (compiled in).
    pub fn compiled_in(self) -> bool {
        match self {
            DeviceChoice::Auto | DeviceChoice::Cpu => true,
            DeviceChoice::Cuda => cfg!(feature = "cuda"),
            DeviceChoice::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The cargo feature that compiles the device in, if any.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            DeviceChoice::Auto | DeviceChoice::Cpu => None,
            DeviceChoice::Cuda => Some("cuda"),
            DeviceChoice::Wgpu => Some("wgpu"),
        }
    }
}

/// Errors choosing a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    /// The configured device's backend is not compiled into this binary.
    #[error(
        "device `{device}` is not available: this ft was built without the `{feature}` feature; \
         rebuild with `cargo build --release --features {feature}` or set `model.device: cpu`"
    )]
    NotCompiled {
        /// The device asked for.
        device: &'static str,
        /// The cargo feature that provides it.
        feature: &'static str,
    },
    /// Built with CUDA, but no CUDA device (or driver) was found.
    #[error(
        "`model.device: cuda` but no CUDA device was found (is the NVIDIA driver installed and `nvidia-smi` working?); \
         use `model.device: auto` to fall back to the CPU"
    )]
    NoCudaDevice,
}

/// Maps a [`DeviceChoice`] to a burn device.
pub fn resolve_device(choice: DeviceChoice) -> Result<burn::tensor::Device, DeviceError> {
    use burn::tensor::Device;
    match choice {
        DeviceChoice::Cpu => Ok(Device::flex()),
        DeviceChoice::Auto => Ok(auto_device()),
        DeviceChoice::Cuda => cuda_device(),
        DeviceChoice::Wgpu => wgpu_device(),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<burn::tensor::Device, DeviceError> {
    use burn::tensor::{Device, DeviceType};
    if Device::enumerate(DeviceType::Cuda).into_vec().is_empty() {
        return Err(DeviceError::NoCudaDevice);
    }
    Ok(use_cuda())
}

/// CUDA device 0, with attention's forward on cuBLAS: burn's attention and matmul kernels are
/// autotuned per shape on CUDA, each candidate an NVRTC compile (see `ft_kernels::attention`).
#[cfg(feature = "cuda")]
fn use_cuda() -> burn::tensor::Device {
    ft_kernels::attention::set_forward(ft_kernels::attention::AttentionForward::Gemm);
    burn::tensor::Device::cuda(0)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<burn::tensor::Device, DeviceError> {
    Err(DeviceError::NotCompiled {
        device: "cuda",
        feature: "cuda",
    })
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<burn::tensor::Device, DeviceError> {
    Ok(burn::tensor::Device::wgpu(
        burn::tensor::DeviceKind::DefaultDevice,
    ))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<burn::tensor::Device, DeviceError> {
    Err(DeviceError::NotCompiled {
        device: "wgpu",
        feature: "wgpu",
    })
}

/// Whether `device` is the CUDA device ft trains on (there the `auto` dtype is bf16).
pub fn is_cuda(device: &burn::tensor::Device) -> bool {
    #[cfg(feature = "cuda")]
    {
        *device == burn::tensor::Device::cuda(0)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        false
    }
}

/// CUDA if compiled in and a GPU is present, else the CPU.
fn auto_device() -> burn::tensor::Device {
    #[cfg(feature = "cuda")]
    {
        // `Device::cuda(0)` succeeds without a driver and the first tensor
        // op then panics; enumerating first returns no devices instead.
        use burn::tensor::{Device, DeviceType};
        if !Device::enumerate(DeviceType::Cuda).into_vec().is_empty() {
            return use_cuda();
        }
        tracing::warn!("built with CUDA but no CUDA device was found; using the CPU");
    }
    burn::tensor::Device::flex()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use burn::tensor::Tensor;

    #[test]
    fn cpu_device_computes() {
        let d = resolve_device(DeviceChoice::Cpu).unwrap();
        let a = Tensor::<1>::from_floats([1.0f32, 2.0, 3.0], &d);
        let b = Tensor::<1>::from_floats([0.5f32, 0.5, 0.5], &d);
        let out: Vec<f32> = (a + b).into_data().try_to_vec().unwrap();
        assert_eq!(out, vec![1.5, 2.5, 3.5]);
    }

    #[test]
    fn missing_backends_are_typed_errors() {
        if !cfg!(feature = "cuda") {
            let e = resolve_device(DeviceChoice::Cuda).unwrap_err();
            assert!(e.to_string().contains("--features cuda"), "{e}");
            assert!(!DeviceChoice::Cuda.compiled_in());
        }
        assert!(DeviceChoice::Cpu.compiled_in());
    }
}
