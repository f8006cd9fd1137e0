//! cuBLAS on cubecl's CUDA buffers: `cublasGemmStridedBatchedEx` through `cudarc` (libcublas
//! loaded at run time), one handle per host thread.
//!
//! Ordering with cubecl's own kernels, two ways ([`Order`], env `FT_CUBLAS_ORDER`):
//!
//! - `stream` (the default): the product is enqueued on cubecl's own CUDA stream, the one its
//!   `get_resource` names (ft's patch of cubecl-cuda 0.11.3, `third_party/cubecl-cuda`).
//!   `get_resource` on the calling thread's cubecl stream makes that stream wait, with CUDA
//!   events, for whichever streams wrote the operands; the output is a fresh buffer of that
//!   stream. So the product runs after the kernels that wrote its operands and before every
//!   later kernel of the stream (those that read the output, and those that reuse any of the
//!   three buffers once cubecl frees them), and the host never waits.
//! - `sync`: the handle has its own non-blocking stream; before the product a `sync` of the
//!   compute client waits for every queued cubecl kernel, after it the handle's stream is
//!   synchronized before the output is handed back. Two host round trips per product.
//!
//! Either way the buffers are held through `get_resource` while the product is enqueued, so
//! cubecl's pool cannot hand them out to another stream meanwhile.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;

use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use burn_cubecl::{CubeDevice, kernel::into_contiguous, tensor::CubeTensor};
use cubecl::cuda::CudaRuntime;
use cudarc::cublas::{result as cublas, sys as cublas_sys};
use cudarc::driver::{result as driver, sys as driver_sys};

type CudaServer = <CudaRuntime as cubecl_runtime::runtime::Runtime>::Server;

/// How cuBLAS products are ordered with cubecl's kernels (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// On cubecl's stream, no host synchronization.
    Stream,
    /// On the handle's own stream, the host synchronizing before and after.
    Sync,
}

/// `FT_CUBLAS_ORDER`: `stream` (default) or `sync`; anything else is refused loudly.
fn order() -> Order {
    static ORDER: std::sync::OnceLock<Order> = std::sync::OnceLock::new();
    *ORDER.get_or_init(|| match std::env::var("FT_CUBLAS_ORDER").as_deref() {
        Err(_) | Ok("" | "stream") => Order::Stream,
        Ok("sync") => Order::Sync,
        Ok(other) => panic!("FT_CUBLAS_ORDER={other}: expected `stream` (default) or `sync`"),
    })
}

/// A cuBLAS handle in the device's primary context (the context cubecl uses, so device pointers
/// are shared), with a stream of its own for [`Order::Sync`].
struct Blas {
    device: usize,
    cu_device: driver_sys::CUdevice,
    ctx: driver_sys::CUcontext,
    handle: cublas_sys::cublasHandle_t,
    /// The handle's own stream.
    stream: driver_sys::CUstream,
    /// The stream the handle is bound to now: `stream`, or a cubecl stream.
    bound: Cell<driver_sys::CUstream>,
}

impl Blas {
    /// Binds the handle to `stream` unless it already is (`cublasSetStream` also resets the
    /// handle's workspace, so it is not called per product).
    ///
    /// # Safety
    ///
    /// `stream` is a live stream of this handle's context.
    unsafe fn bind(&self, stream: driver_sys::CUstream) -> Result<(), String> {
        if self.bound.get() != stream {
            // SAFETY: the caller's contract; `handle` is live.
            unsafe { cublas::set_stream(self.handle, stream as cublas_sys::cudaStream_t) }
                .map_err(|e| format!("cublasSetStream: {e}"))?;
            self.bound.set(stream);
        }
        Ok(())
    }
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
                bound: Cell::new(stream),
            })
        }
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: `handle` and `stream` were created by `Blas::new` in `ctx` and are used by
        // nothing else; `cublasDestroy` waits for the handle's pending work on whichever stream
        // it was last bound to. Errors at teardown have nowhere to go and are ignored. Releasing the primary context drops
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
    let order = order();
    if order == Order::Sync {
        cubecl::future::block_on(client.sync()).expect("cuBLAS gemm: waiting for cubecl's kernels");
    }
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
    // The output's stream: the calling thread's cubecl stream, which `get_resource` aligned
    // with the operands' streams. A null stream (an unpatched cubecl-cuda) would be the legacy
    // default stream, which does not wait for cubecl's non-blocking streams.
    let cubecl_stream = rc.resource().stream;
    assert!(
        order == Order::Sync || !cubecl_stream.is_null(),
        "cuBLAS gemm: cubecl-cuda did not name the output buffer's stream (is \
         third_party/cubecl-cuda patched in? FT_CUBLAS_ORDER=sync works without it)"
    );
    let status = with_blas(index, |blas| {
        // SAFETY: the three pointers are live device allocations of cubecl's pool in this
        // device's primary context, held by `ra`/`rb`/`rc` while the product is enqueued and,
        // once released, reused only by work ordered after it on the same stream (`stream`
        // order) or after the stream synchronization below (`sync` order); their sizes are those
        // of contiguous `[batch, .., ..]` tensors of `dtype`, which the dimensions, leading
        // dimensions and batch strides describe exactly; `alpha`/`beta` are host `f32` as
        // `CUBLAS_COMPUTE_32F*` requires (read when the call is enqueued). The stream bound is
        // the handle's own or cubecl's live stream of the same context.
        unsafe {
            driver::ctx::set_current(blas.ctx).map_err(|e| format!("cuCtxSetCurrent: {e}"))?;
            blas.bind(match order {
                Order::Stream => cubecl_stream,
                Order::Sync => blas.stream,
            })?;
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
            match order {
                Order::Stream => Ok(()),
                Order::Sync => driver::stream::synchronize(blas.stream).map_err(|e| {
                    format!("cuStreamSynchronize after cublasGemmStridedBatchedEx: {e}")
                }),
            }
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
