//! The `Autodiff` implementation: the forward of the inner backend, and a backward for `x`
//! that dequantizes the weight again instead of keeping it.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind, unary},
};
use burn::backend::{
    Backend, TensorMetadata,
    tensor::{FloatTensor, IntTensor},
};

use super::Nf4Backend;

impl<B: Backend + Nf4Backend, C: CheckpointStrategy> Nf4Backend for Autodiff<B, C> {
    fn nf4_dequantize(
        codes: IntTensor<Self>,
        absmax: FloatTensor<Self>,
        out_features: usize,
        in_features: usize,
        blocksize: usize,
        bf16: bool,
    ) -> FloatTensor<Self> {
        // The frozen base: a constant, outside the graph.
        <FloatTensor<Self>>::new(B::nf4_dequantize(
            codes,
            absmax.into_primitive(),
            out_features,
            in_features,
            blocksize,
            bf16,
        ))
    }

    fn nf4_linear(
        x: FloatTensor<Self>,
        codes: IntTensor<Self>,
        absmax: FloatTensor<Self>,
        out_features: usize,
        in_features: usize,
        blocksize: usize,
    ) -> FloatTensor<Self> {
        let absmax = absmax.into_primitive();
        match Nf4LinearBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = Nf4State::<B> {
                    codes: codes.clone(),
                    absmax: absmax.clone(),
                    out_features,
                    in_features,
                    blocksize,
                };
                prep.finish(
                    state,
                    B::nf4_linear(
                        x.into_primitive(),
                        codes,
                        absmax,
                        out_features,
                        in_features,
                        blocksize,
                    ),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(B::nf4_linear(
                x.into_primitive(),
                codes,
                absmax,
                out_features,
                in_features,
                blocksize,
            )),
        }
    }
}

/// What the backward needs: the quantized weight (shared buffers, no copy).
#[derive(Debug, Clone)]
struct Nf4State<B: Backend> {
    codes: IntTensor<B>,
    absmax: FloatTensor<B>,
    out_features: usize,
    in_features: usize,
    blocksize: usize,
}

#[derive(Debug)]
struct Nf4LinearBackward;

impl<B: Backend + Nf4Backend> Backward<B, 1> for Nf4LinearBackward {
    type State = Nf4State<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            // dx = dy · W, W [out, in].
            let dtype = grad.dtype();
            let weight = B::nf4_dequantize(
                s.codes,
                s.absmax,
                s.out_features,
                s.in_features,
                s.blocksize,
                dtype == burn::tensor::DType::BF16,
            );
            let weight = crate::gemm::cast_to::<B>(weight, dtype);
            B::gemm(grad, weight, false, false)
        });
    }
}
