//! The selective scan's reference (portable) forward and backward, and its argument and
//! gradient sets: the default bodies of [`crate::SsmOps::selective_scan`] and
//! [`crate::SsmOps::selective_scan_backward`], the oracle of the kernels, and what a backend
//! without a kernel runs. They walk the sequence one step at a time (as mamba_ssm's
//! `selective_scan_ref` does) and never build a (B, D, L, N) tensor: slow on long sequences, by
//! design simple.

use crate::precision::is_half;
use crate::prim::P;
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use burn::tensor::{DType, FloatDType};
use std::ops::{Add, Mul};

/// Arguments of the selective scan, on the primitives of backend `B`.
///
/// Shapes: `u`, `delta`, `z`: (B, D, L); `a`: (D, N); `b`, `c`: (B, G, N, L); `d`, `delta_bias`:
/// (D); `h0`: (B, D, N).
pub struct ScanArgs<B: Backend> {
    /// The input `u` (B, D, L).
    pub u: FloatTensor<B>,
    /// The step sizes before the bias and softplus, `delta` (B, D, L).
    pub delta: FloatTensor<B>,
    /// The state matrix `A` (D, N), one diagonal per channel.
    pub a: FloatTensor<B>,
    /// The input matrices `B` (B, G, N, L).
    pub b: FloatTensor<B>,
    /// The output matrices `C` (B, G, N, L).
    pub c: FloatTensor<B>,
    /// The skip weights `D` (D).
    pub d: FloatTensor<B>,
    /// The gate `z` (B, D, L): `y` is multiplied by `silu(z)`; `None` for no gate.
    pub z: Option<FloatTensor<B>>,
    /// The bias added to `delta` (D).
    pub delta_bias: FloatTensor<B>,
    /// The state before step 0 (B, D, N).
    pub h0: FloatTensor<B>,
    /// (B, L): 1 where a new sequence starts (the state before that step is zeroed), else 0;
    /// `None` for one sequence per row (`h0` is the state before step 0 unless step 0 is
    /// flagged).
    pub reset: Option<FloatTensor<B>>,
    /// Whether the step size is `softplus(delta + delta_bias)` (else `delta + delta_bias`).
    pub delta_softplus: bool,
}

impl<B: Backend> ScanArgs<B> {
    /// The arguments as [`crate::SsmOps::selective_scan`] takes them (`z` real only with
    /// `gate`, `reset` only with `has_reset`; stand-ins otherwise).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_op(
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
    ) -> Self {
        Self {
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
        }
    }

    /// The activations' float type (`u`'s): f32, f16 or bf16.
    pub fn dtype(&self) -> DType {
        self.u.dtype()
    }

    /// These arguments with their f16/bf16 tensors in f32 (other types as they are: an f64
    /// input reaches the kernels, which refuse it by name).
    pub fn widened(self) -> Self {
        let w = widened::<B>;
        Self {
            u: w(self.u),
            delta: w(self.delta),
            a: w(self.a),
            b: w(self.b),
            c: w(self.c),
            d: w(self.d),
            z: self.z.map(w),
            delta_bias: w(self.delta_bias),
            h0: w(self.h0),
            reset: self.reset.map(w),
            delta_softplus: self.delta_softplus,
        }
    }
}

/// A primitive in f32 when it is f16 or bf16, else as it is (see [`is_half`]).
pub(crate) fn widened<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    if is_half(t.dtype()) {
        B::float_cast(t, FloatDType::F32)
    } else {
        t
    }
}

/// `t` (an f32 result) in `dtype` when that is f16 or bf16, else as it is.
pub(crate) fn narrowed<B: Backend>(t: FloatTensor<B>, dtype: DType) -> FloatTensor<B> {
    if is_half(dtype) && t.dtype() != dtype {
        B::float_cast(t, FloatDType::from(dtype))
    } else {
        t
    }
}

impl<B: Backend> Clone for ScanArgs<B> {
    fn clone(&self) -> Self {
        Self {
            u: self.u.clone(),
            delta: self.delta.clone(),
            a: self.a.clone(),
            b: self.b.clone(),
            c: self.c.clone(),
            d: self.d.clone(),
            z: self.z.clone(),
            delta_bias: self.delta_bias.clone(),
            h0: self.h0.clone(),
            reset: self.reset.clone(),
            delta_softplus: self.delta_softplus,
        }
    }
}

impl<B: Backend> core::fmt::Debug for ScanArgs<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ScanArgs")
            .field("delta_softplus", &self.delta_softplus)
            .finish_non_exhaustive()
    }
}

/// Gradients of the selective scan with respect to each input (`dz` only when `z` was given).
pub struct ScanGrads<B: Backend> {
    /// The gradient of `u` (B, D, L).
    pub du: FloatTensor<B>,
    /// The gradient of `delta` (B, D, L).
    pub ddelta: FloatTensor<B>,
    /// The gradient of `A` (D, N).
    pub da: FloatTensor<B>,
    /// The gradient of `B` (B, G, N, L).
    pub db: FloatTensor<B>,
    /// The gradient of `C` (B, G, N, L).
    pub dc: FloatTensor<B>,
    /// The gradient of `D` (D).
    pub dd: FloatTensor<B>,
    /// The gradient of `z` (B, D, L), when the scan had a gate.
    pub dz: Option<FloatTensor<B>>,
    /// The gradient of `delta_bias` (D).
    pub ddelta_bias: FloatTensor<B>,
    /// The gradient of the initial state (B, D, N).
    pub dh0: FloatTensor<B>,
}

/// The gradients as the op trait returns them: (u, delta, A, B, C, D, z, delta_bias, h0), with
/// a `[1]` zero tensor for `z` when the scan had no gate.
pub type ScanGradTuple<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
);

impl<B: Backend> ScanGrads<B> {
    /// Packs the gradients in the op trait's order.
    pub fn into_tuple(self) -> ScanGradTuple<B> {
        let dz = self
            .dz
            .unwrap_or_else(|| P::<B>::zeros(&[1], &P::<B>::new(self.dd.clone()).device()).0);
        (
            self.du,
            self.ddelta,
            self.da,
            self.db,
            self.dc,
            self.dd,
            dz,
            self.ddelta_bias,
            self.dh0,
        )
    }

    /// Unpacks the op trait's tuple; `gate` says whether `z`'s gradient is real.
    pub fn from_tuple(t: ScanGradTuple<B>, gate: bool) -> Self {
        let (du, ddelta, da, db, dc, dd, dz, ddelta_bias, dh0) = t;
        Self {
            du,
            ddelta,
            da,
            db,
            dc,
            dd,
            dz: gate.then_some(dz),
            ddelta_bias,
            dh0,
        }
    }
}

/// The sizes of a scan: batch, channels, length, state size, groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanDims {
    /// Batch rows B.
    pub batch: usize,
    /// Channels D.
    pub dim: usize,
    /// Steps L.
    pub len: usize,
    /// State size N.
    pub state: usize,
    /// Groups G of channels sharing B and C.
    pub groups: usize,
}

impl ScanDims {
    /// Reads the sizes from `u` (B, D, L) and `b` (B, G, N, L).
    pub fn of<B: Backend>(u: &FloatTensor<B>, b: &FloatTensor<B>) -> Self {
        let ud = P::<B>::new(u.clone()).dims();
        let bd = P::<B>::new(b.clone()).dims();
        Self {
            batch: ud[0],
            dim: ud[1],
            len: ud[2],
            state: bd[2],
            groups: bd[1],
        }
    }
}

/// The effective step size: `delta + bias`, through softplus when asked.
pub(crate) fn discretised_delta<B: Backend>(
    delta: P<B>,
    bias: P<B>,
    dim: usize,
    softplus: bool,
) -> P<B> {
    let dt = delta.add(bias.reshape(&[1, dim, 1]));
    if softplus { dt.softplus() } else { dt }
}

/// Slice time step `t` of a grouped (B, G, N, L) tensor and broadcast it over the channels of
/// each group: (B, D, N).
pub(crate) fn group_step<B: Backend>(x: &P<B>, t: usize, s: ScanDims) -> P<B> {
    let per = s.dim / s.groups;
    x.clone()
        .narrow(3, t, t + 1)
        .reshape(&[s.batch, s.groups, 1, s.state])
        .expand(&[s.batch, s.groups, per, s.state])
        .reshape(&[s.batch, s.dim, s.state])
}

/// Sum a (B, D, N) tensor over the channels of each group: (B, G, N).
fn group_reduce<B: Backend>(x: P<B>, s: ScanDims) -> P<B> {
    let per = s.dim / s.groups;
    x.reshape(&[s.batch, s.groups, per, s.state])
        .sum_dim(2)
        .reshape(&[s.batch, s.groups, s.state])
}

/// `1 − reset` as (B, 1, L), where sequences restart inside rows.
fn keep_mask<B: Backend>(reset: Option<FloatTensor<B>>, s: ScanDims) -> Option<P<B>> {
    reset.map(|r| {
        P::<B>::new(r)
            .mul_scalar(-1.0)
            .add_scalar(1.0)
            .reshape(&[s.batch, 1, s.len])
    })
}

/// `h` (B, D, N) times step `t`'s keep mask: zero in the rows where a sequence starts at `t`.
fn kept<B: Backend>(h: P<B>, keep: &Option<P<B>>, t: usize) -> P<B> {
    match keep {
        Some(k) => h.mul(k.clone().narrow(2, t, t + 1)),
        None => h,
    }
}

/// The portable forward: returns `y` (B, D, L) and the final state (B, D, N).
///
/// For each step `t`: `h_t = exp(dt_t A) * h_{t-1} + dt_t B_t u_t`, `y_t = C_t . h_t + D u_t`,
/// then `y_t *= silu(z_t)` when a gate is given.
///
/// Half-precision activations are widened to f32 first; `y` returns in their type, the state
/// in f32.
pub fn selective_scan<B: Backend>(args: ScanArgs<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let dtype = args.dtype();
    let (y, h) = selective_scan_f32(args.widened());
    (narrowed::<B>(y, dtype), h)
}

fn selective_scan_f32<B: Backend>(args: ScanArgs<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let s = ScanDims::of::<B>(&args.u, &args.b);
    let u = P::<B>::new(args.u);
    let dt = discretised_delta(
        P::new(args.delta),
        P::new(args.delta_bias),
        s.dim,
        args.delta_softplus,
    );
    let a = P::<B>::new(args.a).reshape(&[1, s.dim, s.state]);
    let bm = P::<B>::new(args.b);
    let cm = P::<B>::new(args.c);
    let keep = keep_mask(args.reset, s);
    let mut h = P::<B>::new(args.h0);
    let mut ys = Vec::with_capacity(s.len);
    for t in 0..s.len {
        let dt_t = dt.clone().narrow(2, t, t + 1); // (B, D, 1)
        let u_t = u.clone().narrow(2, t, t + 1);
        let da = dt_t.clone().mul(a.clone()).exp();
        let dbu = group_step(&bm, t, s).mul(dt_t.mul(u_t));
        h = da.mul(kept(h, &keep, t)).add(dbu);
        ys.push(h.clone().mul(group_step(&cm, t, s)).sum_dim(2));
    }
    let y = P::cat(ys, 2);
    let y = y.add(u.mul(P::new(args.d).reshape(&[1, s.dim, 1])));
    let y = match args.z {
        Some(z) => y.mul(P::new(z).silu()),
        None => y,
    };
    (y.into_inner(), h.into_inner())
}

/// The portable backward: a reverse scan over chunks of `chunk` steps. The states are stored
/// at chunk boundaries only and recomputed inside each chunk, so the memory is
/// O(B·D·L + B·D·N·L/chunk).
pub fn selective_scan_backward<B: Backend>(
    args: ScanArgs<B>,
    dy: FloatTensor<B>,
    dstate: FloatTensor<B>,
    chunk: usize,
) -> ScanGrads<B> {
    let s = ScanDims::of::<B>(&args.u, &args.b);
    let chunk = chunk.max(1);
    let u = P::<B>::new(args.u);
    let raw = P::<B>::new(args.delta).add(P::new(args.delta_bias).reshape(&[1, s.dim, 1]));
    let dt = if args.delta_softplus {
        raw.clone().softplus()
    } else {
        raw.clone()
    };
    let a = P::<B>::new(args.a).reshape(&[1, s.dim, s.state]);
    let bm = P::<B>::new(args.b);
    let cm = P::<B>::new(args.c);
    let dskip = P::<B>::new(args.d).reshape(&[1, s.dim, 1]);
    let dy = P::<B>::new(dy);
    let z = args.z.map(P::<B>::new);
    let keep = keep_mask(args.reset, s);

    // Forward pass keeping the state at each chunk start.
    let step = |h: P<B>, t: usize| -> P<B> {
        let dt_t = dt.clone().narrow(2, t, t + 1);
        let u_t = u.clone().narrow(2, t, t + 1);
        let da = dt_t.clone().mul(a.clone()).exp();
        da.mul(kept(h, &keep, t))
            .add(group_step(&bm, t, s).mul(dt_t.mul(u_t)))
    };
    let n_chunks = s.len.div_ceil(chunk);
    let mut starts = Vec::with_capacity(n_chunks);
    let mut h = P::<B>::new(args.h0);
    for k in 0..n_chunks {
        starts.push(h.clone());
        for t in k * chunk..((k + 1) * chunk).min(s.len) {
            h = step(h, t);
        }
    }

    let mut gh = P::<B>::new(dstate);
    let mut da_acc = P::<B>::zeros(&[1, s.dim, s.state], &u.device());
    let mut du_t = vec![None; s.len];
    let mut ddt_t = vec![None; s.len];
    let mut dz_t = vec![None; s.len];
    let mut db_t = vec![None; s.len];
    let mut dc_t = vec![None; s.len];
    let mut gy_all = vec![None; s.len];
    for k in (0..n_chunks).rev() {
        let lo = k * chunk;
        let hi = ((k + 1) * chunk).min(s.len);
        // Recompute the states of this chunk: states[i] = h_{lo + i - 1}.
        let mut states = vec![starts[k].clone()];
        for t in lo..hi {
            let next = step(states.last().unwrap().clone(), t);
            states.push(next);
        }
        for t in (lo..hi).rev() {
            let h_t = states[t - lo + 1].clone();
            let h_prev = kept(states[t - lo].clone(), &keep, t);
            let c_t = group_step(&cm, t, s);
            let b_t = group_step(&bm, t, s);
            let u_t = u.clone().narrow(2, t, t + 1);
            let dt_tt = dt.clone().narrow(2, t, t + 1);
            let dy_t = dy.clone().narrow(2, t, t + 1);
            let gy = match &z {
                Some(z) => {
                    let z_t = z.clone().narrow(2, t, t + 1);
                    let y_pre = h_t
                        .clone()
                        .mul(c_t.clone())
                        .sum_dim(2)
                        .add(u_t.clone().mul(dskip.clone()));
                    dz_t[t] = Some(dy_t.clone().mul(y_pre).mul(z_t.clone().silu_grad()));
                    dy_t.mul(z_t.silu())
                }
                None => dy_t,
            };
            dc_t[t] = Some(group_reduce(h_t.mul(gy.clone()), s));
            gh = gh.add(c_t.mul(gy.clone()));
            let da = dt_tt.clone().mul(a.clone()).exp();
            let g_da = gh.clone().mul(h_prev).mul(da.clone()); // dL/d(dt*A)
            da_acc = da_acc.add(g_da.clone().mul(dt_tt.clone()).sum_dim(0));
            let gh_b = gh.clone().mul(b_t).sum_dim(2); // sum_n gh * B
            ddt_t[t] = Some(
                g_da.mul(a.clone())
                    .sum_dim(2)
                    .add(gh_b.clone().mul(u_t.clone())),
            );
            db_t[t] = Some(group_reduce(gh.clone().mul(dt_tt.clone().mul(u_t)), s));
            du_t[t] = Some(gh_b.mul(dt_tt).add(gy.clone().mul(dskip.clone())));
            gy_all[t] = Some(gy);
            gh = kept(gh.mul(da), &keep, t);
        }
    }
    let collect = |v: Vec<Option<P<B>>>| P::cat(v.into_iter().map(Option::unwrap).collect(), 2);
    let gy = collect(gy_all);
    let dd = gy.mul(u.clone()).sum_dim(2).sum_dim(0).reshape(&[s.dim]);
    let ddt = collect(ddt_t);
    let ddelta = if args.delta_softplus {
        ddt.mul(raw.sigmoid())
    } else {
        ddt
    };
    let ddelta_bias = ddelta.clone().sum_dim(2).sum_dim(0).reshape(&[s.dim]);
    let stack = |v: Vec<Option<P<B>>>| {
        P::cat(
            v.into_iter()
                .map(|x| x.unwrap().reshape(&[s.batch, s.groups, s.state, 1]))
                .collect(),
            3,
        )
    };
    ScanGrads {
        du: collect(du_t).into_inner(),
        ddelta: ddelta.into_inner(),
        da: da_acc.reshape(&[s.dim, s.state]).into_inner(),
        db: stack(db_t).into_inner(),
        dc: stack(dc_t).into_inner(),
        dd: dd.into_inner(),
        dz: z.map(|_| collect(dz_t).into_inner()),
        ddelta_bias: ddelta_bias.into_inner(),
        dh0: gh.into_inner(),
    }
}

/// Steps per chunk of the portable backward's recompute: the states are kept at chunk starts
/// only, so its memory is O(B·D·L + B·D·N·L / chunk).
pub(crate) const BACKWARD_CHUNK: usize = 64;
