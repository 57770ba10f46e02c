//! The selective scan's forward launcher: checks the inputs, packs them, splits the batch when
//! a buffer would exceed the device's binding limit, walks long sequences in segments on
//! loop-capped devices, and launches [`super::kernel::scan_fwd_kernel()`] once, or twice over
//! spans (the sizes from [`super::plan`]).

use super::kernel::scan_fwd_kernel;
use super::plan::{SCAN_BLOCK, forward_spans, fwd_chunk, max_segment, stages_inputs};
use crate::cube::buffers::{
    Cb, Regions, flat, loop_capped, max_buffer, max_units, pack, require_same_dtype, require_u32,
    rows, rows_per_launch, shared_limit,
};
use crate::cube::fallback::Unsupported;
use crate::prim::P;
use crate::scan::reference::{ScanArgs, ScanDims, widened};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn::tensor::DType;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// The forward scan on the kernel (one launch, or one per group of batch rows when the
/// outputs would exceed the device's largest buffer, and one per [`max_segment`] steps), or
/// why the kernel cannot take it.
pub(super) fn selective_scan(args: ScanArgs<Cb>) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    let s = ScanDims::of::<Cb>(&args.u, &args.b);
    if s.batch == 0 || s.len == 0 || s.dim == 0 {
        return Err(Unsupported::Empty);
    }
    scan_inputs_ok(&args)?;
    let segment = max_segment(s.state);
    if s.len > segment && loop_capped(&args.u) {
        let (mut ys, mut h) = (Vec::new(), args.h0.clone());
        for lo in (0..s.len).step_by(segment) {
            let hi = (lo + segment).min(s.len);
            let (y, next) = selective_scan(scan_args_steps(&args, lo, hi, h))?;
            ys.push(y);
            h = next;
        }
        return Ok((Cb::float_cat(ys, 2), h));
    }
    // Bytes per batch row of the largest buffers: y (the activations' type) with the state,
    // and the packed parameters (f32, B and C included).
    let (elem, f32s) = (args.u.dtype.size(), std::mem::size_of::<f32>());
    let per_row = [
        s.dim * (elem * s.len + f32s * s.state),
        f32s * (2 * s.groups * s.state * s.len + s.dim * s.state + s.len),
    ];
    let step = rows_per_launch(&args.u, s.batch, &per_row)?;
    if step >= s.batch {
        return selective_scan_launch(args);
    }
    let (mut ys, mut hs) = (Vec::new(), Vec::new());
    for lo in (0..s.batch).step_by(step) {
        let hi = (lo + step).min(s.batch);
        let (y, h) = selective_scan_launch(scan_args_rows(&args, lo, hi))?;
        ys.push(y);
        hs.push(h);
    }
    Ok((Cb::float_cat(ys, 0), Cb::float_cat(hs, 0)))
}

/// Rows `lo..hi` of the batch of a scan's arguments.
pub(super) fn scan_args_rows(args: &ScanArgs<Cb>, lo: usize, hi: usize) -> ScanArgs<Cb> {
    ScanArgs {
        u: rows(&args.u, lo, hi),
        delta: rows(&args.delta, lo, hi),
        a: args.a.clone(),
        b: rows(&args.b, lo, hi),
        c: rows(&args.c, lo, hi),
        d: args.d.clone(),
        z: args.z.as_ref().map(|z| rows(z, lo, hi)),
        delta_bias: args.delta_bias.clone(),
        h0: rows(&args.h0, lo, hi),
        reset: args.reset.as_ref().map(|r| rows(r, lo, hi)),
        delta_softplus: args.delta_softplus,
    }
}

/// Steps `lo..hi` of a scan's arguments, starting from `h0`.
pub(super) fn scan_args_steps(
    args: &ScanArgs<Cb>,
    lo: usize,
    hi: usize,
    h0: CubeTensor,
) -> ScanArgs<Cb> {
    let along =
        |t: &CubeTensor, dim: usize| P::<Cb>::new(t.clone()).narrow(dim, lo, hi).into_inner();
    ScanArgs {
        u: along(&args.u, 2),
        delta: along(&args.delta, 2),
        a: args.a.clone(),
        b: along(&args.b, 3),
        c: along(&args.c, 3),
        d: args.d.clone(),
        z: args.z.as_ref().map(|z| along(z, 2)),
        delta_bias: args.delta_bias.clone(),
        h0,
        reset: args.reset.as_ref().map(|r| along(r, 1)),
        delta_softplus: args.delta_softplus,
    }
}

/// Whether the forward kernel takes the scan's inputs, else why not: the activations (`u`,
/// `delta`, `B`, `C`, `z`) of one float type (f32, f16 or bf16), the parameters, the initial
/// state and the reset mask f32.
pub(super) fn scan_inputs_ok(args: &ScanArgs<Cb>) -> Result<(), Unsupported> {
    let mut acts = vec![&args.u, &args.delta, &args.b, &args.c];
    acts.extend(&args.z);
    require_same_dtype(&acts)?;
    let mut params = vec![&args.a, &args.d, &args.delta_bias, &args.h0];
    params.extend(&args.reset);
    require_same_dtype(&params)?;
    if args.a.dtype != DType::F32 {
        return Err(Unsupported::Because(format!(
            "its parameters and state are {:?}; the kernel keeps them in f32",
            args.a.dtype
        )));
    }
    Ok(())
}

/// Whether the backward kernels take the scan's inputs (every one f32), else why not.
pub(super) fn scan_backward_inputs_ok(args: &ScanArgs<Cb>) -> Result<(), Unsupported> {
    scan_inputs_ok(args)?;
    require_same_dtype(&[&args.u, &args.a])
}

/// What one launch of [`scan_fwd_kernel()`] does.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    /// The whole sequence, or a span from the summaries carried over (`carried`).
    Outputs { carried: bool },
    /// Each span from a zero state: its final state and decay.
    Summarise,
    /// The state at each span's start, carried over the summaries; no walk.
    Starts,
}

/// A forward scan's inputs made ready for [`scan_fwd_kernel()`] (checked, flat, packed), cut
/// into `spans` spans of `span` steps.
struct Forward {
    s: ScanDims,
    u: CubeTensor,
    delta: CubeTensor,
    z: CubeTensor,
    packed: CubeTensor,
    off: Vec<usize>,
    chunk: usize,
    stage: bool,
    span: usize,
    spans: usize,
    gate: bool,
    softplus: bool,
    reset: bool,
}

impl Forward {
    /// `spans`: `None` for the rule ([`super::plan::scan_spans`], or the tests' count); the count is lowered
    /// so that the summaries fit one binding and the spans are as equal as they can be.
    fn prepare(args: ScanArgs<Cb>, spans: Option<usize>) -> Result<Self, Unsupported> {
        let s = ScanDims::of::<Cb>(&args.u, &args.b);
        // The staged chunks (B, C, u, delta, z) are held in shared memory as f32.
        let elem = std::mem::size_of::<f32>();
        let shared = shared_limit(&args.u);
        let stage = stages_inputs(&args.u);
        let chunk = fwd_chunk(s.state, elem, shared, stage).ok_or_else(|| {
            Unsupported::Because(format!(
                "the staged B and C of one step (N = {}) exceed the {shared}-byte shared memory",
                s.state
            ))
        })?;
        if s.groups == 0 || !s.dim.is_multiple_of(s.groups) {
            return Err(Unsupported::Because(format!(
                "{} groups do not divide D = {}",
                s.groups, s.dim
            )));
        }
        if max_units(&args.u) < SCAN_BLOCK {
            return Err(Unsupported::Because(format!(
                "the device runs fewer than {SCAN_BLOCK} units per cube"
            )));
        }
        require_u32(&[
            s.batch * s.dim * (s.len + s.state),
            s.batch * (2 * s.groups * s.state * s.len + s.len + s.dim * s.state)
                + s.dim * (s.state + 2),
        ])?;
        let spans = spans.unwrap_or_else(|| forward_spans(&args.u, s));
        // The summaries (two of batch x spans x D x N) must fit one binding and 32-bit indexing.
        let per_span = 2 * s.batch * s.dim * s.state;
        let spans = spans
            .min((max_buffer(&args.u).saturating_sub(4096) / (per_span * elem)).max(1))
            .min((u32::MAX as usize / per_span).max(1))
            .clamp(1, s.len);
        // Equal spans (the last one shorter), none empty.
        let span = s.len.div_ceil(spans);
        let spans = s.len.div_ceil(span);
        // B and C join the f32 parameters (they are small: N per step against D).
        let mut parts = vec![
            widened::<Cb>(args.b),
            widened::<Cb>(args.c),
            args.a,
            args.d,
            args.delta_bias,
            args.h0,
        ];
        let reset = args.reset.is_some();
        parts.extend(args.reset);
        let (packed, off) = pack(parts);
        let u = flat(args.u);
        let gate = args.z.is_some();
        Ok(Self {
            s,
            delta: flat(args.delta),
            z: args.z.map_or_else(|| u.clone(), flat),
            gate,
            u,
            packed,
            off,
            chunk,
            stage,
            span,
            spans,
            softplus: args.delta_softplus,
            reset,
        })
    }

    /// One launch: `carry` (the summaries, decays at `off_decay`) into `y` and `out`, whose
    /// second region starts at `off_state`.
    fn launch(
        &self,
        pass: Pass,
        carry: &CubeTensor,
        y: &CubeTensor,
        out: &CubeTensor,
        off_state: usize,
        off_decay: usize,
    ) {
        let s = self.s;
        let count = CubeCount::Static(
            (s.dim / s.groups).div_ceil(SCAN_BLOCK) as u32,
            s.groups as u32,
            (s.batch * self.spans) as u32,
        );
        let off = &self.off;
        scan_fwd_kernel::launch(
            &self.u.client,
            count,
            CubeDim::new_1d(SCAN_BLOCK as u32),
            self.u.clone().into_tensor_arg(),
            self.delta.clone().into_tensor_arg(),
            self.z.clone().into_tensor_arg(),
            self.packed.clone().into_tensor_arg(),
            carry.clone().into_tensor_arg(),
            y.clone().into_tensor_arg(),
            out.clone().into_tensor_arg(),
            s.dim as u32,
            s.len as u32,
            s.groups as u32,
            self.span as u32,
            self.spans as u32,
            off[1] as u32,
            off[2] as u32,
            off[3] as u32,
            off[4] as u32,
            off[5] as u32,
            off_state as u32,
            off.get(6).copied().unwrap_or(0) as u32,
            off_decay as u32,
            s.state,
            self.chunk,
            SCAN_BLOCK,
            self.stage,
            self.gate,
            self.softplus,
            self.reset,
            pass == Pass::Summarise,
            matches!(pass, Pass::Outputs { carried: true } | Pass::Starts),
            pass == Pass::Starts,
            [
                dtype_to_storage_type(self.packed.dtype),
                dtype_to_storage_type(self.u.dtype),
            ],
        );
    }

    /// The summaries launch: one buffer holding each span's final state from zero and its
    /// decay, (batch, spans, D, N) each, and the decays' offset.
    fn summaries(&self) -> (CubeTensor, Regions) {
        let each = self.s.batch * self.spans * self.s.dim * self.s.state;
        let regions = Regions::new(&self.packed, &[each, each]);
        let buf = regions.alloc(&self.packed);
        let no_y = self.no_outputs();
        self.launch(
            Pass::Summarise,
            &self.packed,
            &no_y,
            &buf,
            regions.offsets[1],
            0,
        );
        (buf, regions)
    }

    /// A stand-in for `y` in the launches that write none (a distinct buffer: one bound
    /// writable must not alias another binding).
    fn no_outputs(&self) -> CubeTensor {
        Regions::new(&self.u, &[1]).alloc(&self.u)
    }
}

fn selective_scan_launch(args: ScanArgs<Cb>) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    let f = Forward::prepare(args, None)?;
    let s = f.s;
    // y in the activations' type, the state in f32.
    let y_regions = Regions::new(&f.u, &[s.batch * s.dim * s.len]);
    let y = y_regions.alloc(&f.u);
    let state_regions = Regions::new(&f.packed, &[s.batch * s.dim * s.state]);
    let state = state_regions.alloc(&f.packed);
    if f.spans > 1 {
        let (carry, summaries) = f.summaries();
        let pass = Pass::Outputs { carried: true };
        f.launch(pass, &carry, &y, &state, 0, summaries.offsets[1]);
    } else {
        let pass = Pass::Outputs { carried: false };
        f.launch(pass, &f.packed, &y, &state, 0, 0);
    }
    Ok((
        y_regions.view(&y, 0, &[s.batch, s.dim, s.len]),
        state_regions.view(&state, 0, &[s.batch, s.dim, s.state]),
    ))
}

/// For the sequence-parallel backward: with the sequence cut into `spans` spans of equal
/// length, the state at each span's start and each span's decay `P` (both (batch, spans, D,
/// N)): two launches (the summaries, then the starts carried over them).
pub(super) fn span_starts(
    args: ScanArgs<Cb>,
    spans: usize,
) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    let f = Forward::prepare(args, Some(spans))?;
    if f.spans != spans || f.span * spans != f.s.len {
        return Err(Unsupported::Because(format!(
            "{spans} equal spans of L = {} do not fit the device",
            f.s.len
        )));
    }
    let (carry, summaries) = f.summaries();
    let dims = [f.s.batch, spans, f.s.dim, f.s.state];
    let starts_regions = Regions::new(&f.packed, &[dims.iter().product()]);
    let starts = starts_regions.alloc(&f.packed);
    let no_y = f.no_outputs();
    f.launch(
        Pass::Starts,
        &carry,
        &no_y,
        &starts,
        0,
        summaries.offsets[1],
    );
    Ok((
        starts_regions.view(&starts, 0, &dims),
        summaries.view(&carry, 1, &dims),
    ))
}
