//! cuBLAS on cubecl's CUDA buffers: `cublasGemmStridedBatchedEx` through `cudarc` (libcublas
//! loaded at run time), one handle and one non-blocking stream per host thread.
//!
//! Ordering with cubecl's own streams: before the product, a `sync` of the compute client waits
//! for every queued cubecl kernel (the operands are written, the output allocated); after it,
//! the handle's stream is synchronized before the output is handed back to cubecl. The buffers
//! are held through `get_resource` for the whole call, so cubecl's pool cannot hand them out
//! meanwhile. Two host round trips per product: small next to the products this path is for.

use std::cell::RefCell;
use std::ffi::c_void;

use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use burn_cubecl::{CubeDevice, kernel::into_contiguous, tensor::CubeTensor};
use cubecl::cuda::CudaRuntime;
use cudarc::cublas::{result as cublas, sys as cublas_sys};
use cudarc::driver::{result as driver, sys as driver_sys};

type CudaServer = <CudaRuntime as cubecl_runtime::runtime::Runtime>::Server;

/// A cuBLAS handle bound to its own stream in the device's primary context (the context cubecl
/// uses, so device pointers are shared).
struct Blas {
    device: usize,
    cu_device: driver_sys::CUdevice,
    ctx: driver_sys::CUcontext,
    handle: cublas_sys::cublasHandle_t,
    stream: driver_sys::CUstream,
}

impl Blas {
    fn new(device: usize) -> Result<Self, String> {
        // SAFETY: plain driver and cuBLAS calls; every returned handle is checked before use and
        // owned by the returned value.
        unsafe {
            if !cublas_sys::is_culib_present() {
                return Err(
                    "libcublas was not found (add the CUDA toolkit's lib folder to \
                            LD_LIBRARY_PATH)"
                        .into(),
                );
            }
            let ordinal = i32::try_from(device).map_err(|e| e.to_string())?;
            let dev = driver::device::get(ordinal).map_err(|e| format!("cuDeviceGet: {e}"))?;
            let ctx = driver::primary_ctx::retain(dev)
                .map_err(|e| format!("cuDevicePrimaryCtxRetain: {e}"))?;
            driver::ctx::set_current(ctx).map_err(|e| format!("cuCtxSetCurrent: {e}"))?;
            let stream = driver::stream::create(driver::stream::StreamKind::NonBlocking)
                .map_err(|e| format!("cuStreamCreate: {e}"))?;
            let handle = cublas::create_handle().map_err(|e| format!("cublasCreate: {e}"))?;
            cublas::set_stream(handle, stream as cublas_sys::cudaStream_t)
                .map_err(|e| format!("cublasSetStream: {e}"))?;
            Ok(Self {
                device,
                cu_device: dev,
                ctx,
                handle,
                stream,
            })
        }
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: `handle` and `stream` were created by `Blas::new` in `ctx` and are used by
        // nothing else; every product synchronized its stream before returning. Errors at
        // teardown have nowhere to go and are ignored. Releasing the primary context drops
        // only the reference `new` took; cubecl holds its own.
        unsafe {
            let _ = driver::ctx::set_current(self.ctx);
            let _ = cublas::destroy_handle(self.handle);
            let _ = driver::stream::destroy(self.stream);
            let _ = driver::primary_ctx::release(self.cu_device);
        }
    }
}

thread_local! {
    /// This thread's handle, or why cuBLAS is unavailable (then burn's matmul serves).
    static BLAS: RefCell<Option<Result<Blas, String>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's handle for `device`, creating it on first use. `None` when
/// cuBLAS cannot be used here (logged once per thread).
fn with_blas<T>(device: usize, f: impl FnOnce(&Blas) -> T) -> Option<T> {
    BLAS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let stale = matches!(&*slot, Some(Ok(b)) if b.device != device);
        if slot.is_none() || stale {
            let made = Blas::new(device);
            if let Err(e) = &made {
                eprintln!("warning: cuBLAS unavailable, using burn's matmul on CUDA: {e}");
            }
            *slot = Some(made);
        }
        match &*slot {
            Some(Ok(blas)) => Some(f(blas)),
            _ => None,
        }
    })
}

fn cuda_index(device: &CubeDevice) -> Option<usize> {
    match device {
        CubeDevice::Cuda(d) => Some(d.index),
        _ => None,
    }
}

/// Whether [`gemm`] takes these operands: same CUDA device, same float dtype that cuBLAS
/// multiplies (`f32`, `bf16`, `f16`), same rank ≥ 2 and batch dimensions, sizes that fit its
/// 32-bit arguments, and a usable cuBLAS.
pub(super) fn supports(lhs: &CubeTensor, rhs: &CubeTensor) -> bool {
    let Some(index) = cuda_index(&lhs.device) else {
        return false;
    };
    let (a, b) = (lhs.shape(), rhs.shape());
    lhs.device == rhs.device
        && lhs.dtype == rhs.dtype
        && matches!(lhs.dtype, DType::F32 | DType::BF16 | DType::F16)
        && a.num_dims() >= 2
        && a.num_dims() == b.num_dims()
        && a[..a.num_dims() - 2] == b[..b.num_dims() - 2]
        && i32::try_from(a[..a.num_dims() - 2].iter().product::<usize>()).is_ok()
        && a.iter()
            .chain(b.iter())
            .all(|&d| d > 0 && i32::try_from(d).is_ok())
        && with_blas(index, |_| ()).is_some()
}

/// `op(lhs) · op(rhs)` by `cublasGemmStridedBatchedEx` over the batch dimensions (none: a batch
/// of one; every operand made contiguous, so matrix `i` starts `i · rows · cols` elements in). Row-major `C = op(A) op(B)` is column-major `Cᵀ = op(B)ᵀ op(A)ᵀ`, so cuBLAS
/// gets `rhs` first with the same flags and `m`/`n` swapped.
///
/// # Panics
///
/// When [`supports`] is false, the inner dimensions differ, or CUDA reports an error (burn's
/// contract for a backend op, which cannot return one); the message names the call.
pub(super) fn gemm(
    lhs: CubeTensor,
    rhs: CubeTensor,
    trans_lhs: bool,
    trans_rhs: bool,
) -> CubeTensor {
    let index = cuda_index(&lhs.device).expect("cuBLAS gemm on a CUDA tensor");
    let lhs = into_contiguous(lhs);
    let rhs = into_contiguous(rhs);
    let (a, b) = (lhs.shape(), rhs.shape());
    let r = a.num_dims();
    let (m, k) = if trans_lhs {
        (a[r - 1], a[r - 2])
    } else {
        (a[r - 2], a[r - 1])
    };
    let (k_rhs, n) = if trans_rhs {
        (b[r - 1], b[r - 2])
    } else {
        (b[r - 2], b[r - 1])
    };
    assert!(
        k == k_rhs && a[..r - 2] == b[..r - 2],
        "cuBLAS gemm: {a:?} / {b:?} do not agree (inner or batch dimensions)"
    );
    let batch: usize = a[..r - 2].iter().product();
    let mut out_shape = a[..r - 2].to_vec();
    out_shape.extend([m, n]);
    let dtype = lhs.dtype;
    let data_type = match dtype {
        DType::F32 => cublas_sys::cudaDataType::CUDA_R_32F,
        DType::BF16 => cublas_sys::cudaDataType::CUDA_R_16BF,
        DType::F16 => cublas_sys::cudaDataType::CUDA_R_16F,
        other => panic!("cuBLAS gemm: unsupported dtype {other:?}"),
    };
    let compute = if dtype == DType::F32 && super::tf32() {
        cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
    } else {
        cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
    };
    let client = lhs.client.clone();
    let out = client.empty(batch * m * n * dtype.size());
    cubecl::future::block_on(client.sync()).expect("cuBLAS gemm: waiting for cubecl's kernels");
    let resource = |handle: &cubecl::server::Handle, what: &str| {
        client
            .get_resource::<CudaServer>(handle.clone())
            .unwrap_or_else(|e| panic!("cuBLAS gemm: the {what} buffer: {e}"))
    };
    let (ra, rb, rc) = (
        resource(&lhs.handle, "lhs"),
        resource(&rhs.handle, "rhs"),
        resource(&out, "output"),
    );
    let op = |t: bool| {
        if t {
            cublas_sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            cublas_sys::cublasOperation_t::CUBLAS_OP_N
        }
    };
    // Leading dimensions of the row-major buffers seen column-major: their row lengths.
    let lda = if trans_rhs { k } else { n };
    let ldb = if trans_lhs { m } else { k };
    let (alpha, beta) = (1.0f32, 0.0f32);
    let as_i32 = |v: usize| i32::try_from(v).expect("checked by `supports`");
    let status = with_blas(index, |blas| {
        // SAFETY: the three pointers are live device allocations of cubecl's pool in this
        // device's primary context, held by `ra`/`rb`/`rc` until the stream is synchronized;
        // their sizes are those of contiguous `[batch, .., ..]` tensors of `dtype`, which the
        // dimensions, leading dimensions and batch strides describe exactly; `alpha`/`beta` are
        // host `f32` as `CUBLAS_COMPUTE_32F*` requires.
        unsafe {
            driver::ctx::set_current(blas.ctx).map_err(|e| format!("cuCtxSetCurrent: {e}"))?;
            // One call for plain and batched products: a batch of one is `cublasGemmEx`'s
            // product (the strides are then never applied).
            let stride = |v: usize| i64::try_from(v).expect("a buffer's element count fits i64");
            cublas::gemm_strided_batched_ex(
                blas.handle,
                op(trans_rhs),
                op(trans_lhs),
                as_i32(n),
                as_i32(m),
                as_i32(k),
                (&raw const alpha).cast::<c_void>(),
                rb.resource().ptr as *const c_void,
                data_type,
                as_i32(lda),
                stride(k * n),
                ra.resource().ptr as *const c_void,
                data_type,
                as_i32(ldb),
                stride(m * k),
                (&raw const beta).cast::<c_void>(),
                rc.resource().ptr as *mut c_void,
                data_type,
                as_i32(n),
                stride(m * n),
                as_i32(batch),
                compute,
                cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
            .map_err(|e| {
                format!(
                    "cublasGemmStridedBatchedEx (batch={batch}, m={m}, n={n}, k={k}, {dtype:?}): \
                     {e}"
                )
            })?;
            driver::stream::synchronize(blas.stream)
                .map_err(|e| format!("cuStreamSynchronize after cublasGemmStridedBatchedEx: {e}"))
        }
    })
    .expect("`supports` created the handle");
    if let Err(e) = status {
        panic!("cuBLAS gemm: {e}");
    }
    drop((ra, rb, rc));
    CubeTensor::new_contiguous(
        client,
        lhs.device.clone(),
        Shape::from(out_shape),
        out,
        dtype,
    )
}
