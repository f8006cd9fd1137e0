//! The `Cube` (wgpu, CUDA) implementation: cuBLAS when the tensors live on a CUDA device (and
//! the build links CUDA), burn's CubeCL matmul of the transposed views otherwise.

use burn::backend::tensor::FloatTensor;
use burn_cubecl::CubeBackend;

use super::GemmBackend;

impl GemmBackend for CubeBackend {
    fn gemm(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        trans_lhs: bool,
        trans_rhs: bool,
    ) -> FloatTensor<Self> {
        #[cfg(feature = "cuda")]
        if super::cublas::supports(&lhs, &rhs) {
            return super::cublas::gemm(lhs, rhs, trans_lhs, trans_rhs);
        }
        super::burn_matmul::<Self>(lhs, rhs, trans_lhs, trans_rhs)
    }
}
