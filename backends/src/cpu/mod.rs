//! `SsmOps` for the CPU backends (Flex, NdArray): the primitives are read as f32 slices and
//! handed to the fused kernels of this module, one body for both backends.
//!
//! - [`scan`], [`scan_backward`]: the selective scan, rayon over blocks of channels, the state in
//!   registers, vectorised over the lanes ([`lanes`]);
//! - [`step`]: the decode steps; [`mamba3_step`]: Mamba-3's whole decode step;
//! - [`ssd`], [`ssd_backward`]: the SSD recurrence in the op's own layout, and its reverse;
//! - [`gemv`]: a decode step's projections (Flex only: it reads Flex's primitives in place);
//! - [`fft`]: real FFTs and the FFT convolution on `rustfft`.
//!
//! The kernels compute in f32 and take f32 tensors only: any other float type is an error
//! (there is no silent conversion).

pub(crate) mod calls;
pub(crate) mod fft;
pub(crate) mod gemv;
pub(crate) mod lanes;
pub(crate) mod mamba3_step;
pub(crate) mod scan;
pub(crate) mod scan_backward;
pub(crate) mod ssd;
pub(crate) mod ssd_backward;
pub(crate) mod step;

use crate::portable::scan::narrowed;
use crate::portable::{ScanArgs, ScanDims};
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use burn::tensor::{DType, TensorData, read_sync};
use scan::ScanSlices;

/// Reads a float primitive into a host vector of f32.
///
/// # Panics
/// When the tensor is not f32: the CPU kernels compute in f32, and converting another float
/// type behind the caller's back would change its precision silently.
pub(crate) fn host<B: Backend>(t: FloatTensor<B>) -> Vec<f32> {
    let dtype = t.dtype();
    assert!(
        dtype == DType::F32,
        "ssm-backends: the CPU kernels take f32 tensors, got {dtype:?}; cast the inputs to f32 \
         first (e.g. `tensor.cast(FloatDType::F32)`)"
    );
    read_sync(B::float_into_data(t))
        .expect("reading a CPU tensor cannot fail")
        .try_into_vec::<f32>()
        .expect("an f32 tensor reads as f32")
}

/// Wraps a host vector of f32 back into a primitive on `device`.
pub(crate) fn device_tensor<B: Backend>(
    values: Vec<f32>,
    dims: Vec<usize>,
    device: &B::Device,
) -> FloatTensor<B> {
    B::float_from_data(TensorData::new(values, dims), device)
}

/// Host copies of the scan's inputs.
pub(crate) struct HostScan {
    pub dims: ScanDims,
    pub u: Vec<f32>,
    pub delta: Vec<f32>,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub c: Vec<f32>,
    pub d: Vec<f32>,
    pub z: Option<Vec<f32>>,
    pub delta_bias: Vec<f32>,
    pub h0: Vec<f32>,
    pub reset: Option<Vec<f32>>,
    pub delta_softplus: bool,
}

impl HostScan {
    /// Reads the scan's arguments to the host (f32 only).
    pub fn read<B: Backend>(args: ScanArgs<B>) -> Self {
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

    pub fn slices(&self) -> ScanSlices<'_> {
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

/// Implements `SsmOps` for a CPU backend with the fused kernels, plus the backend's own methods
/// given after it (ops that read its primitives in place).
macro_rules! cpu_ssm_ops {
    ($backend:ty $(, $own:item)*) => {
        impl $crate::ops::SsmOps for $backend {
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
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                $crate::cpu::scan_forward::<Self>($crate::portable::ScanArgs {
                    u,
                    delta,
                    a,
                    b,
                    c,
                    d,
                    z: gate.then_some(z),
                    delta_bias,
                    h0: initial_state,
                    reset: has_reset.then_some(reset),
                    delta_softplus,
                })
            }

            fn selective_scan_backward(
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
                dy: FloatTensor<Self>,
                dstate: FloatTensor<Self>,
                delta_softplus: bool,
            ) -> (
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
            ) {
                $crate::cpu::scan_backward::<Self>(
                    $crate::portable::ScanArgs {
                        u,
                        delta,
                        a,
                        b,
                        c,
                        d,
                        z: gate.then_some(z),
                        delta_bias,
                        h0: initial_state,
                        reset: has_reset.then_some(reset),
                        delta_softplus,
                    },
                    dy,
                    dstate,
                )
            }

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
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                $crate::cpu::state_step::<Self>(
                    state,
                    x,
                    dt,
                    a,
                    b,
                    c,
                    d,
                    gate.then_some(z),
                    dt_bias,
                    dt_softplus,
                )
            }

            fn causal_conv1d_step(
                x: FloatTensor<Self>,
                state: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                bias: FloatTensor<Self>,
                silu: bool,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                $crate::cpu::conv_step::<Self>(x, state, weight, bias, silu)
            }

            fn rfft(x: FloatTensor<Self>, n: usize) -> (FloatTensor<Self>, FloatTensor<Self>) {
                $crate::cpu::rfft::<Self>(x, n)
            }

            fn irfft(re: FloatTensor<Self>, im: FloatTensor<Self>, n: usize) -> FloatTensor<Self> {
                $crate::cpu::irfft::<Self>(re, im, n)
            }

            fn causal_conv_fft(u: FloatTensor<Self>, k: FloatTensor<Self>) -> FloatTensor<Self> {
                $crate::cpu::causal_conv_fft::<Self>(u, k)
            }

            fn ssd(
                x: FloatTensor<Self>,
                dt: FloatTensor<Self>,
                a: FloatTensor<Self>,
                b: FloatTensor<Self>,
                c: FloatTensor<Self>,
                d: FloatTensor<Self>,
                initial_state: FloatTensor<Self>,
                reset: FloatTensor<Self>,
                has_reset: bool,
                _chunk: usize,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                // The recurrence on the fused SSD kernel, in the op's layout: no chunk masks,
                // cache-resident state, one exp per step and head.
                $crate::cpu::ssd_forward::<Self>(
                    x,
                    dt,
                    $crate::cpu::SsdDecay::PerHead(a),
                    b,
                    c,
                    d,
                    initial_state,
                    has_reset.then_some(reset),
                    1,
                )
            }

            fn mamba3_decode_step(
                proj: FloatTensor<Self>,
                conv_state: FloatTensor<Self>,
                ssm_state: FloatTensor<Self>,
                weights: FloatTensor<Self>,
                heads: usize,
                groups: usize,
                rank: usize,
                angles: usize,
                mimo: bool,
                outproj_norm: bool,
                a_floor: f32,
                eps: f32,
            ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
                $crate::cpu::mamba3_step::<Self>(
                    proj,
                    conv_state,
                    ssm_state,
                    weights,
                    $crate::portable::mamba3_step::Mamba3StepConfig {
                        heads,
                        groups,
                        rank,
                        angles,
                        mimo,
                        outproj_norm,
                        a_floor,
                        eps,
                    },
                )
            }

            fn ssd_log_decay(
                x: FloatTensor<Self>,
                dt: FloatTensor<Self>,
                log_decay: FloatTensor<Self>,
                b: FloatTensor<Self>,
                c: FloatTensor<Self>,
                d: FloatTensor<Self>,
                initial_state: FloatTensor<Self>,
                reset: FloatTensor<Self>,
                has_reset: bool,
                _chunk: usize,
                rank: usize,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                // The same fused recurrence, each step's decay read instead of dt·A.
                $crate::cpu::ssd_forward::<Self>(
                    x,
                    dt,
                    $crate::cpu::SsdDecay::PerStep(log_decay),
                    b,
                    c,
                    d,
                    initial_state,
                    has_reset.then_some(reset),
                    rank,
                )
            }

            fn ssd_log_decay_backward(
                x: FloatTensor<Self>,
                dt: FloatTensor<Self>,
                log_decay: FloatTensor<Self>,
                b: FloatTensor<Self>,
                c: FloatTensor<Self>,
                d: FloatTensor<Self>,
                initial_state: FloatTensor<Self>,
                reset: FloatTensor<Self>,
                has_reset: bool,
                _chunk: usize,
                rank: usize,
                dy: FloatTensor<Self>,
                dstate: FloatTensor<Self>,
            ) -> (
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
                FloatTensor<Self>,
            ) {
                // The reverse recurrence, fused (states recomputed from checkpoints).
                $crate::cpu::ssd_backward::<Self>(
                    [x, dt, log_decay, b, c, d, initial_state],
                    has_reset.then_some(reset),
                    rank,
                    dy,
                    dstate,
                )
            }

            $($own)*
        }
    };
}

#[cfg(feature = "flex")]
cpu_ssm_ops!(
    burn::backend::Flex,
    fn rows_matmul(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        transposed: bool,
    ) -> FloatTensor<Self> {
        gemv::flex_rows_matmul(x, w, transposed)
    }
);
#[cfg(feature = "ndarray")]
#[allow(deprecated)]
mod ndarray_impl {
    use super::*;
    cpu_ssm_ops!(burn::backend::NdArray);
}

///
/// Half-precision activations are widened to f32 first; `y` returns in their type, the state
/// in f32.
pub(crate) fn scan_forward<B: Backend>(args: ScanArgs<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = args.u.device();
    let dtype = args.dtype();
    crate::api::precision::note_widened("selective scan (CPU kernel)", dtype);
    let p = HostScan::read::<B>(args.widened());
    let s = p.dims;
    let (y, h) = scan::scan_forward(&p.slices());
    (
        narrowed::<B>(
            device_tensor::<B>(y, vec![s.batch, s.dim, s.len], &device),
            dtype,
        ),
        device_tensor::<B>(h, vec![s.batch, s.dim, s.state], &device),
    )
}

/// The decay of the SSD op on the fused CPU kernel: `A` per head (`exp(dt_t A_h)`) or a log
/// decay per step and head (`exp(a_{t,h})`).
pub(crate) enum SsdDecay<B: Backend> {
    PerHead(FloatTensor<B>),
    PerStep(FloatTensor<B>),
}

/// The SSD op on the fused CPU kernel ([`ssd::ssd_forward`]); arguments as
/// [`crate::portable::ssd::ssd_chunked_log_decay`]'s (with its `rank`), the decay as
/// [`SsdDecay`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn ssd_forward<B: Backend>(
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
    let dims = crate::portable::ssd::SsdDims::of::<B>(&x, &b, rank);
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
    let (y, state) = ssd::ssd_forward(&ssd::SsdSlices {
        dims,
        x: &x,
        dt: &dt,
        a: if per_head {
            ssd::Decay::PerHead(&a)
        } else {
            ssd::Decay::PerStep(&a)
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

/// The Mamba-3 decode step on the fused CPU pass ([`mamba3_step::mamba3_step`]).
pub(crate) fn mamba3_step<B: Backend>(
    proj: FloatTensor<B>,
    conv_state: FloatTensor<B>,
    ssm_state: FloatTensor<B>,
    weights: FloatTensor<B>,
    cfg: crate::portable::mamba3_step::Mamba3StepConfig,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let device = proj.device();
    let cs = conv_state.shape().to_vec();
    let ss = ssm_state.shape().to_vec();
    let dims = crate::portable::mamba3_step::Mamba3StepDims::infer(
        &proj.shape().to_vec(),
        &cs,
        &ss,
        weights.shape().num_elements(),
        &cfg,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (proj, conv, ssm, weights) = (
        host::<B>(proj),
        host::<B>(conv_state),
        host::<B>(ssm_state),
        host::<B>(weights),
    );
    let (y, conv, ssm) = mamba3_step::mamba3_step(&mamba3_step::Mamba3StepSlices {
        dims,
        cfg,
        proj: &proj,
        conv: &conv,
        ssm: &ssm,
        weights: &weights,
    });
    (
        device_tensor::<B>(y, vec![ss[0], ss[1]], &device),
        device_tensor::<B>(conv, cs, &device),
        device_tensor::<B>(ssm, ss, &device),
    )
}

pub(crate) fn scan_backward<B: Backend>(
    args: ScanArgs<B>,
    dy: FloatTensor<B>,
    dstate: FloatTensor<B>,
) -> crate::portable::scan::ScanGradTuple<B> {
    let device = args.u.device();
    let p = HostScan::read::<B>(args);
    let s = p.dims;
    let g = scan_backward::scan_backward(&p.slices(), &host::<B>(dy), &host::<B>(dstate));
    let t = |v: Vec<f32>, dims: Vec<usize>| device_tensor::<B>(v, dims, &device);
    let bdl = vec![s.batch, s.dim, s.len];
    let bgnl = vec![s.batch, s.groups, s.state, s.len];
    crate::portable::ScanGrads::<B> {
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

#[allow(clippy::too_many_arguments)]
pub(crate) fn state_step<B: Backend>(
    state: FloatTensor<B>,
    x: FloatTensor<B>,
    dt: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    c: FloatTensor<B>,
    d: FloatTensor<B>,
    z: Option<FloatTensor<B>>,
    dt_bias: FloatTensor<B>,
    dt_softplus: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = state.device();
    let sd = state.shape().to_vec();
    let groups = b.shape().to_vec()[1];
    let dims = ScanDims {
        batch: sd[0],
        dim: sd[1],
        len: 1,
        state: sd[2],
        groups,
    };
    let mut st = host::<B>(state);
    let y = step::state_step(
        dims,
        &mut st,
        &host::<B>(x),
        &host::<B>(dt),
        &host::<B>(a),
        &host::<B>(b),
        &host::<B>(c),
        &host::<B>(d),
        z.map(host::<B>).as_deref(),
        &host::<B>(dt_bias),
        dt_softplus,
    );
    (
        device_tensor::<B>(y, vec![dims.batch, dims.dim], &device),
        device_tensor::<B>(st, sd, &device),
    )
}

pub(crate) fn conv_step<B: Backend>(
    x: FloatTensor<B>,
    state: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    silu: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = state.device();
    let sd = state.shape().to_vec();
    let mut st = host::<B>(state);
    let out = step::conv_step(
        &host::<B>(x),
        &mut st,
        &host::<B>(weight),
        &host::<B>(bias),
        sd[1],
        sd[2],
        silu,
    );
    (
        device_tensor::<B>(out, vec![sd[0], sd[1]], &device),
        device_tensor::<B>(st, sd, &device),
    )
}

/// The rfft on `rustfft`.
pub(crate) fn rfft<B: Backend>(x: FloatTensor<B>, n: usize) -> (FloatTensor<B>, FloatTensor<B>) {
    let device = x.device();
    let mut dims = x.shape().to_vec();
    let m = *dims.last().expect("rfft: a tensor of rank >= 1");
    let rows = dims.iter().product::<usize>() / m.max(1);
    let (re, im) = fft::rfft(&host::<B>(x), rows, m, n);
    *dims.last_mut().expect("rank >= 1") = n / 2 + 1;
    (
        device_tensor::<B>(re, dims.clone(), &device),
        device_tensor::<B>(im, dims, &device),
    )
}

/// The irfft on `rustfft`.
pub(crate) fn irfft<B: Backend>(
    re: FloatTensor<B>,
    im: FloatTensor<B>,
    n: usize,
) -> FloatTensor<B> {
    let device = re.device();
    let mut dims = re.shape().to_vec();
    let bins = *dims.last().expect("irfft: a tensor of rank >= 1");
    let rows = dims.iter().product::<usize>() / bins.max(1);
    let y = fft::irfft(&host::<B>(re), &host::<B>(im), rows, n);
    *dims.last_mut().expect("rank >= 1") = n;
    device_tensor::<B>(y, dims, &device)
}

/// The FFT causal convolution on `rustfft`.
pub(crate) fn causal_conv_fft<B: Backend>(u: FloatTensor<B>, k: FloatTensor<B>) -> FloatTensor<B> {
    let device = u.device();
    let dims = u.shape().to_vec();
    let (b, h, l) = (dims[0], dims[1], dims[2]);
    let bk = k.shape().to_vec()[0];
    let y = fft::causal_conv(&host::<B>(u), &host::<B>(k), b, bk, h, l);
    device_tensor::<B>(y, dims, &device)
}

/// The log-decay SSD's backward on the fused CPU kernel ([`ssd_backward::ssd_backward`]):
/// `inputs` = (x, dt, log_decay, B, C, D, initial_state) as
/// [`crate::SsmOps::ssd_log_decay_backward`] takes them; the gradients in the same order.
#[allow(clippy::type_complexity)]
pub(crate) fn ssd_backward<B: Backend>(
    inputs: [FloatTensor<B>; 7],
    reset: Option<FloatTensor<B>>,
    rank: usize,
    dy: FloatTensor<B>,
    dstate: FloatTensor<B>,
) -> crate::portable::ssd_backward::SsdGradTuple<B> {
    let [x, dt, log_decay, b, c, d, h0] = inputs;
    let device = x.device();
    let dims = crate::portable::ssd::SsdDims::of::<B>(&x, &b, rank);
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
    let g = ssd_backward::ssd_backward(
        &ssd::SsdSlices {
            dims,
            x: &x,
            dt: &dt,
            a: ssd::Decay::PerStep(&a),
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
