//! The selective scan on the CPU backends (Flex, NdArray): the primitives read as f32 slices
//! and handed to the fused kernels, [`forward`] (rayon over blocks of channels, the state in
//! registers, vectorised over the lanes) and [`backward`] (states recomputed chunk by chunk).

pub(crate) mod backward;
pub(crate) mod forward;

use super::reference::{ScanArgs, ScanDims, ScanGradTuple, ScanGrads, narrowed};
use crate::cpu::{device_tensor, host};
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use forward::ScanSlices;

/// Host copies of the scan's inputs.
struct HostScan {
    dims: ScanDims,
    u: Vec<f32>,
    delta: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    d: Vec<f32>,
    z: Option<Vec<f32>>,
    delta_bias: Vec<f32>,
    h0: Vec<f32>,
    reset: Option<Vec<f32>>,
    delta_softplus: bool,
}

impl HostScan {
    /// Reads the scan's arguments to the host (f32 only).
    fn read<B: Backend>(args: ScanArgs<B>) -> Self {
        Self {
            dims: ScanDims::of::<B>(&args.u, &args.b),
            u: host::<B>(args.u),
            delta: host::<B>(args.delta),
            a: host::<B>(args.a),
            b: host::<B>(args.b),
            c: host::<B>(args.c),
            d: host::<B>(args.d),
            z: args.z.map(host::<B>),
            delta_bias: host::<B>(args.delta_bias),
            h0: host::<B>(args.h0),
            reset: args.reset.map(host::<B>),
            delta_softplus: args.delta_softplus,
        }
    }

    fn slices(&self) -> ScanSlices<'_> {
        ScanSlices {
            dims: self.dims,
            u: &self.u,
            delta: &self.delta,
            a: &self.a,
            b: &self.b,
            c: &self.c,
            d: &self.d,
            z: self.z.as_deref(),
            delta_bias: &self.delta_bias,
            h0: &self.h0,
            reset: self.reset.as_deref(),
            delta_softplus: self.delta_softplus,
        }
    }
}

/// [`crate::SsmOps::selective_scan`] on the fused kernel ([`forward::scan_forward`]).
///
/// Half-precision activations are widened to f32 first; `y` returns in their type, the state
/// in f32.
#[allow(clippy::too_many_arguments)]
pub(crate) fn selective_scan<B: Backend>(
    u: FloatTensor<B>,
    delta: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    c: FloatTensor<B>,
    d: FloatTensor<B>,
    z: FloatTensor<B>,
    gate: bool,
    delta_bias: FloatTensor<B>,
    initial_state: FloatTensor<B>,
    reset: FloatTensor<B>,
    has_reset: bool,
    delta_softplus: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let args = ScanArgs::<B>::from_op(
        u,
        delta,
        a,
        b,
        c,
        d,
        z,
        gate,
        delta_bias,
        initial_state,
        reset,
        has_reset,
        delta_softplus,
    );
    let device = args.u.device();
    let dtype = args.dtype();
    crate::precision::note_widened("selective scan (CPU kernel)", dtype);
    let p = HostScan::read::<B>(args.widened());
    let s = p.dims;
    let (y, h) = forward::scan_forward(&p.slices());
    (
        narrowed::<B>(
            device_tensor::<B>(y, vec![s.batch, s.dim, s.len], &device),
            dtype,
        ),
        device_tensor::<B>(h, vec![s.batch, s.dim, s.state], &device),
    )
}

/// [`crate::SsmOps::selective_scan_backward`] on the fused kernel ([`backward::scan_backward`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn selective_scan_backward<B: Backend>(
    u: FloatTensor<B>,
    delta: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    c: FloatTensor<B>,
    d: FloatTensor<B>,
    z: FloatTensor<B>,
    gate: bool,
    delta_bias: FloatTensor<B>,
    initial_state: FloatTensor<B>,
    reset: FloatTensor<B>,
    has_reset: bool,
    dy: FloatTensor<B>,
    dstate: FloatTensor<B>,
    delta_softplus: bool,
) -> ScanGradTuple<B> {
    let args = ScanArgs::<B>::from_op(
        u,
        delta,
        a,
        b,
        c,
        d,
        z,
        gate,
        delta_bias,
        initial_state,
        reset,
        has_reset,
        delta_softplus,
    );
    let device = args.u.device();
    let p = HostScan::read::<B>(args);
    let s = p.dims;
    let g = backward::scan_backward(&p.slices(), &host::<B>(dy), &host::<B>(dstate));
    let t = |v: Vec<f32>, dims: Vec<usize>| device_tensor::<B>(v, dims, &device);
    let bdl = vec![s.batch, s.dim, s.len];
    let bgnl = vec![s.batch, s.groups, s.state, s.len];
    ScanGrads::<B> {
        du: t(g.du, bdl.clone()),
        ddelta: t(g.ddelta, bdl.clone()),
        da: t(g.da, vec![s.dim, s.state]),
        db: t(g.db, bgnl.clone()),
        dc: t(g.dc, bgnl),
        dd: t(g.dd, vec![s.dim]),
        dz: g.dz.map(|v| t(v, bdl)),
        ddelta_bias: t(g.ddelta_bias, vec![s.dim]),
        dh0: t(g.dh0, vec![s.batch, s.dim, s.state]),
    }
    .into_tuple()
}
