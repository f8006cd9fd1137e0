//! The backward of the fused loss: `dh` recomputed chunk by chunk; no gradient for the weight.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind, unary},
};
use burn::backend::{
    Backend,
    tensor::{FloatTensor, IntTensor},
};

use super::LinearCrossEntropyBackend;

impl<B: Backend + LinearCrossEntropyBackend, C: CheckpointStrategy> LinearCrossEntropyBackend
    for Autodiff<B, C>
{
    fn linear_cross_entropy(
        h: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        let weight = weight.into_primitive();
        match LinearCrossEntropyGrad
            .prepare::<C>([h.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let h = h.into_primitive();
                let state = State::<B> {
                    h: h.clone(),
                    weight: weight.clone(),
                    targets: targets.clone(),
                    chunk,
                };
                prep.finish(state, B::linear_cross_entropy(h, weight, targets, chunk))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::linear_cross_entropy(
                h.into_primitive(),
                weight,
                targets,
                chunk,
            )),
        }
    }

    fn linear_cross_entropy_backward(
        h: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        // Not differentiable twice: a constant of the graph.
        <FloatTensor<Self>>::new(B::linear_cross_entropy_backward(
            h.into_primitive(),
            weight.into_primitive(),
            targets,
            grad.into_primitive(),
            chunk,
        ))
    }
}

/// The backward's inputs: `h`, the frozen weight and the targets (no logits).
#[derive(Debug, Clone)]
struct State<B: Backend> {
    h: FloatTensor<B>,
    weight: FloatTensor<B>,
    targets: IntTensor<B>,
    chunk: usize,
}

#[derive(Debug)]
struct LinearCrossEntropyGrad;

impl<B: Backend + LinearCrossEntropyBackend> Backward<B, 1> for LinearCrossEntropyGrad {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::linear_cross_entropy_backward(s.h, s.weight, s.targets, grad, s.chunk)
        });
    }
}
