//! The selective scan's backward with the sequence cut into spans walked in parallel, for the
//! problems whose batch rows times channels are too few to fill the device (see
//! [`super::plan::scan_spans`]).
//!
//! The state entering a span and the state gradient leaving it are all a span's backward needs
//! from the rest of the sequence, and both are linear in their neighbours': the forward
//! summaries give each span's starting state (`h_k = P_(k-1) h_(k-1) + s_(k-1)`,
//! [`super::launch::span_starts`]), and the adjoint, walked from a zero gradient at each span's
//! end, gives the gradient reaching its start, `g_k = P_k G_k + l_k`, where `G_k`, the gradient
//! at span `k`'s end, is `g_(k+1)` (the final state's gradient for the last span) and `P_k` is the
//! span's decay, the same product `prod exp(dt A)` (0 past a restart) that carries the state
//! forward. With both known, the spans become rows of one batch for the backward kernel:
//! its per-step gradients are reordered back along the sequence, its parameter gradients
//! (already summed over rows) are the sums over the spans, and span 0's starting-state
//! gradient is `dh0`.
#![allow(clippy::manual_div_ceil)]

use super::launch::span_starts;
use super::plan::SCAN_BLOCK;
use crate::cube::buffers::{Cb, Regions, flat, pack, u32s};
use crate::cube::fallback::Unsupported;
use crate::cube::math::{sigmoid_f, softplus_f};
use crate::prim::P;
use crate::scan::reference::{ScanArgs, ScanDims, ScanGrads};
use burn::backend::cubecl::dtype_to_storage_type;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// The adjoint summaries of the sequence-parallel backward. Cube `(x, g, b * spans + k)` takes
/// `CUBE_DIM_X` channels of group `g` of batch `b` over span `k` (steps `k * span ..`), one per
/// unit.
///
/// - Not `combine`: the unit walks span `k` backwards from a zero gradient at its end
///   (`gy = dy`, times `z sigmoid(z)` with the gate; `g <- (g + C gy) exp(dt A)`, times 0 at a
///   restart) and writes the gradient reaching the span's start to `out` (batch, spans, D, N).
/// - `combine`: `out` = the gradient at the end of span `k`: `dstate` carried back over spans
///   `spans - 1 .. k + 1` (`g <- P_j g + l_j`, `local` as the first mode wrote it, `P` from
///   `decay`, (batch, spans, D, N) each).
///
/// `packed` = `[C (batch, G, N, L) | A (D, N) | delta_bias (D) | dstate (batch, D, N) | reset
/// (batch, L), when packed sequences]` at the offsets given.
#[cube(launch)]
pub(crate) fn scan_bwd_span_kernel<F: Float>(
    delta: &Tensor<F>,
    z: &Tensor<F>,
    dy: &Tensor<F>,
    packed: &Tensor<F>,
    local: &Tensor<F>,
    decay: &Tensor<F>,
    out: &mut Tensor<F>,
    dims: Sequence<u32>,
    offs: Sequence<u32>,
    #[comptime] n_state: usize,
    #[comptime] gate: bool,
    #[comptime] softplus: bool,
    #[comptime] reset: bool,
    #[comptime] combine: bool,
    #[define(F)] _dtype: ElemType,
) {
    let unroll_n = comptime!(n_state <= 32);
    let dim = dims[0] as usize;
    let len = dims[1] as usize;
    let groups = dims[2] as usize;
    let span = dims[3] as usize;
    let spans = dims[4] as usize;
    let off_a = offs[0] as usize;
    let off_bias = offs[1] as usize;
    let off_dstate = offs[2] as usize;
    let off_reset = offs[3] as usize;
    let per_group = dim / groups;
    let g = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize / spans;
    let k_span = CUBE_POS_Z as usize % spans;
    let local_d = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    if local_d < per_group {
        let d = g * per_group + local_d;
        let row = b * dim + d;
        let at = ((b * spans + k_span) * dim + d) * n_state;
        let mut gh = Array::<F>::new(n_state);
        if combine {
            #[unroll(unroll_n)]
            for n in 0..n_state {
                gh[n] = packed[off_dstate + row * n_state + n];
            }
            let mut j = spans - 1;
            while j > k_span {
                let from = ((b * spans + j) * dim + d) * n_state;
                #[unroll(unroll_n)]
                for n in 0..n_state {
                    gh[n] = decay[from + n] * gh[n] + local[from + n];
                }
                j -= 1;
            }
        } else {
            let mut a = Array::<F>::new(n_state);
            #[unroll(unroll_n)]
            for n in 0..n_state {
                gh[n] = F::new(0.0);
                a[n] = packed[off_a + d * n_state + n];
            }
            let bias = packed[off_bias + d];
            let c_base = (b * groups + g) * n_state * len;
            let t_begin = k_span * span;
            for i in 0..span {
                let t = t_begin + span - 1 - i;
                let idx = row * len + t;
                let mut dt = delta[idx] + bias;
                if softplus {
                    dt = softplus_f::<F>(dt);
                }
                let mut gy = dy[idx];
                if gate {
                    let zz = z[idx];
                    gy *= zz * sigmoid_f::<F>(zz);
                }
                let mut keep = F::new(1.0);
                if reset {
                    keep -= packed[off_reset + b * len + t];
                }
                #[unroll(unroll_n)]
                for n in 0..n_state {
                    let gn = gh[n] + packed[c_base + n * len + t] * gy;
                    gh[n] = gn * (dt * a[n]).exp() * keep;
                }
            }
        }
        #[unroll(unroll_n)]
        for n in 0..n_state {
            out[at + n] = gh[n];
        }
    }
}

/// `t` (as `split`) with its axes in the order `axes`, made contiguous, as `merged`.
fn regroup(t: CubeTensor, split: &[usize], axes: &[usize], merged: &[usize]) -> CubeTensor {
    let p = P::<Cb>::new(t).reshape(split).permute(axes).into_inner();
    P::<Cb>::new(into_contiguous(p))
        .reshape(merged)
        .into_inner()
}

/// The backward over `spans` equal spans (see the module's notes): the forward summaries and
/// starts (two launches), the adjoint summaries and their combination (two), then the backward
/// kernel over the spans as batch rows (`backward_rows`: its batch split and launch).
pub(super) fn backward_over_spans(
    args: ScanArgs<Cb>,
    dy: CubeTensor,
    dstate: CubeTensor,
    spans: usize,
    backward_rows: impl FnOnce(
        ScanArgs<Cb>,
        CubeTensor,
        CubeTensor,
    ) -> Result<ScanGrads<Cb>, Unsupported>,
) -> Result<ScanGrads<Cb>, Unsupported> {
    let s = ScanDims::of::<Cb>(&args.u, &args.b);
    let (b, d, l, n, g) = (s.batch, s.dim, s.len, s.state, s.groups);
    let span = l / spans;
    let (starts, decay) = span_starts(args.clone(), spans)?;

    // The adjoint summaries.
    let gate = args.z.is_some();
    let has_reset = args.reset.is_some();
    let mut parts = vec![
        args.c.clone(),
        args.a.clone(),
        args.delta_bias.clone(),
        dstate,
    ];
    parts.extend(args.reset.clone());
    let (packed, off) = pack(parts);
    let delta = flat(args.delta.clone());
    let z = args.z.clone().map_or_else(|| delta.clone(), flat);
    let dy_flat = flat(dy.clone());
    let decay = flat(decay);
    let per = b * spans * d * n;
    let count = CubeCount::Static(
        (d / g).div_ceil(SCAN_BLOCK) as u32,
        g as u32,
        (b * spans) as u32,
    );
    let launch = |local: &CubeTensor, out: &CubeTensor, combine: bool| {
        scan_bwd_span_kernel::launch(
            &delta.client,
            count.clone(),
            CubeDim::new_1d(SCAN_BLOCK as u32),
            delta.clone().into_tensor_arg(),
            z.clone().into_tensor_arg(),
            dy_flat.clone().into_tensor_arg(),
            packed.clone().into_tensor_arg(),
            local.clone().into_tensor_arg(),
            decay.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            u32s(&[d, l, g, span, spans]),
            u32s(&[off[1], off[2], off[3], off.get(4).copied().unwrap_or(0)]),
            n,
            gate,
            args.delta_softplus,
            has_reset,
            combine,
            dtype_to_storage_type(delta.dtype),
        )
    };
    let one = Regions::new(&delta, &[per]);
    let local = one.alloc(&delta);
    launch(&delta, &local, false);
    let ends = one.alloc(&delta);
    launch(&local, &ends, true);

    // The spans as batch rows.
    let rows = b * spans;
    let by_span = |t: &CubeTensor| {
        regroup(
            t.clone(),
            &[b, d, spans, span],
            &[0, 2, 1, 3],
            &[rows, d, span],
        )
    };
    let bc_by_span = |t: &CubeTensor| {
        regroup(
            t.clone(),
            &[b, g, n, spans, span],
            &[0, 3, 1, 2, 4],
            &[rows, g, n, span],
        )
    };
    let state_rows = |t: CubeTensor| P::<Cb>::new(t).reshape(&[rows, d, n]).into_inner();
    let spanned = ScanArgs {
        u: by_span(&args.u),
        delta: by_span(&args.delta),
        a: args.a.clone(),
        b: bc_by_span(&args.b),
        c: bc_by_span(&args.c),
        d: args.d.clone(),
        z: args.z.as_ref().map(by_span),
        delta_bias: args.delta_bias.clone(),
        h0: state_rows(starts),
        reset: args
            .reset
            .as_ref()
            .map(|r| P::<Cb>::new(r.clone()).reshape(&[rows, span]).into_inner()),
        delta_softplus: args.delta_softplus,
    };
    let grads = backward_rows(
        spanned,
        by_span(&dy),
        state_rows(one.view(&ends, 0, &[b, spans, d, n])),
    )?;

    // Back along the sequence.
    let along = |t: CubeTensor| regroup(t, &[b, spans, d, span], &[0, 2, 1, 3], &[b, d, l]);
    let bc_along =
        |t: CubeTensor| regroup(t, &[b, spans, g, n, span], &[0, 2, 3, 1, 4], &[b, g, n, l]);
    let dh0 = P::<Cb>::new(grads.dh0)
        .reshape(&[b, spans, d, n])
        .narrow(1, 0, 1)
        .reshape(&[b, d, n])
        .into_inner();
    Ok(ScanGrads {
        du: along(grads.du),
        ddelta: along(grads.ddelta),
        da: grads.da,
        db: bc_along(grads.db),
        dc: bc_along(grads.dc),
        dd: grads.dd,
        dz: grads.dz.map(along),
        ddelta_bias: grads.ddelta_bias,
        dh0,
    })
}
