//! The ops the composed bodies are built from (the SSD's chunked form, the whole-mixer decode
//! steps), as a backend provides them: every [`crate::SsmOps`] backend does, through the blanket
//! impl in `crate::compose`. The composed bodies name this trait, not the op trait whose default
//! methods they are, so that neither file depends on the other.
#![allow(clippy::too_many_arguments)]

use burn::backend::{Backend, tensor::FloatTensor};

/// The backend's own ops that a composed body calls (same meaning as the [`crate::SsmOps`]
/// methods of the same names).
pub(crate) trait Stages: Backend {
    fn selective_scan(
        u: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gate: bool,
        delta_bias: FloatTensor<Self>,
        initial_state: FloatTensor<Self>,
        reset: FloatTensor<Self>,
        has_reset: bool,
        delta_softplus: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    fn selective_state_step(
        state: FloatTensor<Self>,
        x: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gate: bool,
        dt_bias: FloatTensor<Self>,
        dt_softplus: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    fn causal_conv1d_step(
        x: FloatTensor<Self>,
        state: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    fn ssd_decay_mask(cum: FloatTensor<Self>) -> FloatTensor<Self>;

    fn ssd_state_pass(
        chunk_states: FloatTensor<Self>,
        chunk_decay: FloatTensor<Self>,
        h0: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}
