//! The backward of [`super::AttentionBackend::attention_recompute`]: gradients for `q`, `k`, `v`
//! from weights recomputed a block of queries at a time.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{
    Backend,
    tensor::{BoolTensor, FloatTensor},
};

use super::{AttentionBackend, default_block, dims4};

impl<B: Backend + AttentionBackend, C: CheckpointStrategy> AttentionBackend for Autodiff<B, C> {
    fn attention_recompute(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        gemm_block: Option<usize>,
    ) -> FloatTensor<Self> {
        match AttentionGrad
            .prepare::<C>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
                let out = B::attention_recompute(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    mask.clone(),
                    gemm_block,
                );
                let state = State::<B> { q, k, v, mask };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::attention_recompute(
                q.into_primitive(),
                k.into_primitive(),
                v.into_primitive(),
                mask,
                gemm_block,
            )),
        }
    }

    fn attention_recompute_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        dout: FloatTensor<Self>,
        block: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Not differentiable twice: constants of the graph.
        let (dq, dk, dv) = B::attention_recompute_backward(
            q.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            mask,
            dout.into_primitive(),
            block,
        );
        (
            <FloatTensor<Self>>::new(dq),
            <FloatTensor<Self>>::new(dk),
            <FloatTensor<Self>>::new(dv),
        )
    }
}

/// What the backward needs: the inputs, not the weights.
#[derive(Debug, Clone)]
struct State<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    mask: BoolTensor<B>,
}

#[derive(Debug)]
struct AttentionGrad;

impl<B: Backend + AttentionBackend> Backward<B, 3> for AttentionGrad {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let dout = grads.consume::<B>(&ops.node);
        let [pq, pk, pv] = ops.parents;
        let [b, h, _, _] = dims4(&s.q);
        let t = dims4(&s.k)[2];
        let (dq, dk, dv) =
            B::attention_recompute_backward(s.q, s.k, s.v, s.mask, dout, default_block(b, h, t));
        for (parent, grad) in [(pq, dq), (pk, dk), (pv, dv)] {
            if let Some(node) = parent {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}
