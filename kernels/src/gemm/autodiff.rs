//! The `Autodiff` implementation: for `C = op(A) · op(B)`, the gradients of the stored `A` and
//! `B` are products of `dC` with the other operand, written with [`GemmBackend::gemm`] itself
//! (transposes as flags), so on CUDA the backward runs on cuBLAS too. The operands are kept
//! through burn's checkpointer, as its own matmul keeps them.

use burn::backend::autodiff::{
    Autodiff, NodeId,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind, binary},
};
use burn::backend::{Backend, tensor::FloatTensor};

use super::GemmBackend;

impl<B: Backend + GemmBackend, C: CheckpointStrategy> GemmBackend for Autodiff<B, C> {
    fn gemm(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        trans_lhs: bool,
        trans_rhs: bool,
    ) -> FloatTensor<Self> {
        let lhs_tracked = lhs.is_tracked();
        let rhs_tracked = rhs.is_tracked();
        match GemmBackward
            .prepare::<C>([lhs.node(), rhs.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                // Each gradient needs the other operand only.
                let lhs_id = rhs_tracked.then(|| prep.checkpoint(&lhs));
                let rhs_id = lhs_tracked.then(|| prep.checkpoint(&rhs));
                prep.finish(
                    GemmState {
                        lhs: lhs_id,
                        rhs: rhs_id,
                        trans_lhs,
                        trans_rhs,
                    },
                    B::gemm(
                        lhs.into_primitive(),
                        rhs.into_primitive(),
                        trans_lhs,
                        trans_rhs,
                    ),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gemm(
                lhs.into_primitive(),
                rhs.into_primitive(),
                trans_lhs,
                trans_rhs,
            )),
        }
    }
}

#[derive(Debug, Clone)]
struct GemmState {
    lhs: Option<NodeId>,
    rhs: Option<NodeId>,
    trans_lhs: bool,
    trans_rhs: bool,
}

#[derive(Debug)]
struct GemmBackward;

impl<B: Backend + GemmBackend> Backward<B, 2> for GemmBackward {
    type State = GemmState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, ck: &mut Checkpointer) {
        let GemmState {
            lhs,
            rhs,
            trans_lhs: ta,
            trans_rhs: tb,
        } = ops.state;
        let lhs: Option<FloatTensor<B>> = lhs.map(|id| ck.retrieve_node_output(id));
        let rhs: Option<FloatTensor<B>> = rhs.map(|id| ck.retrieve_node_output(id));
        binary::<B, _, _>(
            ops.parents,
            ops.node,
            grads,
            |dc| {
                let b = rhs.expect("the rhs is kept whenever the lhs is tracked");
                // d op(A) = dC · op(B)ᵀ; for a stored-transposed A, its transpose op(B) · dCᵀ.
                if ta {
                    B::gemm(b, dc, tb, true)
                } else {
                    B::gemm(dc, b, false, !tb)
                }
            },
            |dc| {
                let a = lhs.expect("the lhs is kept whenever the rhs is tracked");
                // d op(B) = op(A)ᵀ · dC; for a stored-transposed B, its transpose dCᵀ · op(A).
                if tb {
                    B::gemm(dc, a, true, ta)
                } else {
                    B::gemm(a, dc, !ta, false)
                }
            },
        );
    }
}
