//! The SSD on the CPU backends (Flex, NdArray): the primitives read as f32 slices and handed to
//! the fused recurrence in the op's own (B, L, H, P) layout ([`forward`]: one task per (row,
//! head), one `exp` per step and head, no chunk masks) and its reverse ([`backward`]: states
//! recomputed from checkpoints).

pub(crate) mod backward;
pub(crate) mod forward;

use super::reference::SsdDims;
use super::reference_backward::SsdGradTuple;
use crate::cpu::{device_tensor, host};
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};

/// The decay of the SSD op on the fused CPU kernel: `A` per head (`exp(dt_t A_h)`) or a log
/// decay per step and head (`exp(a_{t,h})`).
enum SsdDecay<B: Backend> {
    /// `A` (H): Mamba2's [`crate::SsmOps::ssd`].
    PerHead(FloatTensor<B>),
    /// Log decays (B, L, H): Mamba-3's [`crate::SsmOps::ssd_log_decay`].
    PerStep(FloatTensor<B>),
}

/// [`crate::SsmOps::ssd`] on the fused recurrence, in the op's layout: no chunk masks,
/// cache-resident state, one `exp` per step and head (`chunk` is not needed).
#[allow(clippy::too_many_arguments)]
pub(crate) fn ssd<B: Backend>(
    x: FloatTensor<B>,
    dt: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    c: FloatTensor<B>,
    d: FloatTensor<B>,
    initial_state: FloatTensor<B>,
    reset: FloatTensor<B>,
    has_reset: bool,
    _chunk: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let reset = has_reset.then_some(reset);
    let decay = SsdDecay::PerHead(a);
    run::<B>(x, dt, decay, b, c, d, initial_state, reset, 1)
}

/// [`crate::SsmOps::ssd_log_decay`] on the same fused recurrence, each step's decay read
/// instead of `dt·A`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn ssd_log_decay<B: Backend>(
    x: FloatTensor<B>,
    dt: FloatTensor<B>,
    log_decay: FloatTensor<B>,
    b: FloatTensor<B>,
    c: FloatTensor<B>,
    d: FloatTensor<B>,
    initial_state: FloatTensor<B>,
    reset: FloatTensor<B>,
    has_reset: bool,
    _chunk: usize,
    rank: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let reset = has_reset.then_some(reset);
    let decay = SsdDecay::PerStep(log_decay);
    run::<B>(x, dt, decay, b, c, d, initial_state, reset, rank)
}

/// The SSD on the fused CPU kernel ([`forward::ssd_forward`]); arguments as
/// [`super::reference::ssd_chunked_log_decay`]'s (with its `rank`), the decay as [`SsdDecay`].
#[allow(clippy::too_many_arguments)]
fn run<B: Backend>(
    x: FloatTensor<B>,
    dt: FloatTensor<B>,
    decay: SsdDecay<B>,
    b: FloatTensor<B>,
    c: FloatTensor<B>,
    d: FloatTensor<B>,
    h0: FloatTensor<B>,
    reset: Option<FloatTensor<B>>,
    rank: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = x.device();
    let dims = SsdDims::of::<B>(&x, &b, rank);
    let (x, dt, b, c, d, h0) = (
        host::<B>(x),
        host::<B>(dt),
        host::<B>(b),
        host::<B>(c),
        host::<B>(d),
        host::<B>(h0),
    );
    let (per_head, a) = match decay {
        SsdDecay::PerHead(a) => (true, host::<B>(a)),
        SsdDecay::PerStep(l) => (false, host::<B>(l)),
    };
    let reset = reset.map(host::<B>);
    let (y, state) = forward::ssd_forward(&forward::SsdSlices {
        dims,
        x: &x,
        dt: &dt,
        a: if per_head {
            forward::Decay::PerHead(&a)
        } else {
            forward::Decay::PerStep(&a)
        },
        b: &b,
        c: &c,
        d: &d,
        h0: &h0,
        reset: reset.as_deref(),
    });
    let s = dims;
    (
        device_tensor::<B>(
            y,
            vec![s.batch, s.len * s.rank, s.heads, s.head_dim],
            &device,
        ),
        device_tensor::<B>(state, vec![s.batch, s.heads, s.head_dim, s.state], &device),
    )
}

/// [`crate::SsmOps::ssd_log_decay_backward`] on the fused reverse recurrence
/// ([`backward::ssd_backward`]: states recomputed from checkpoints); the gradients in the
/// order (x, dt, log_decay, B, C, D, initial_state).
#[allow(clippy::too_many_arguments)]
pub(crate) fn ssd_log_decay_backward<B: Backend>(
    x: FloatTensor<B>,
    dt: FloatTensor<B>,
    log_decay: FloatTensor<B>,
    b: FloatTensor<B>,
    c: FloatTensor<B>,
    d: FloatTensor<B>,
    h0: FloatTensor<B>,
    reset: FloatTensor<B>,
    has_reset: bool,
    _chunk: usize,
    rank: usize,
    dy: FloatTensor<B>,
    dstate: FloatTensor<B>,
) -> SsdGradTuple<B> {
    let reset = has_reset.then_some(reset);
    let device = x.device();
    let dims = SsdDims::of::<B>(&x, &b, rank);
    let (x, dt, a, b, c, d, h0) = (
        host::<B>(x),
        host::<B>(dt),
        host::<B>(log_decay),
        host::<B>(b),
        host::<B>(c),
        host::<B>(d),
        host::<B>(h0),
    );
    let (reset, dy, dstate) = (reset.map(host::<B>), host::<B>(dy), host::<B>(dstate));
    let g = backward::ssd_backward(
        &forward::SsdSlices {
            dims,
            x: &x,
            dt: &dt,
            a: forward::Decay::PerStep(&a),
            b: &b,
            c: &c,
            d: &d,
            h0: &h0,
            reset: reset.as_deref(),
        },
        &dy,
        &dstate,
    );
    let s = dims;
    let (lr, per_step, group) = (
        vec![s.batch, s.len * s.rank, s.heads, s.head_dim],
        vec![s.batch, s.len, s.heads],
        vec![s.batch, s.len * s.rank, s.groups, s.state],
    );
    (
        device_tensor::<B>(g.dx, lr, &device),
        device_tensor::<B>(g.ddt, per_step.clone(), &device),
        device_tensor::<B>(g.dlog_decay, per_step, &device),
        device_tensor::<B>(g.db, group.clone(), &device),
        device_tensor::<B>(g.dc, group, &device),
        device_tensor::<B>(g.dd, vec![s.heads], &device),
        device_tensor::<B>(g.dh0, vec![s.batch, s.heads, s.head_dim, s.state], &device),
    )
}
