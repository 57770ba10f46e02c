//! Mamba2's state space duality (SSD) scan: a selective SSM whose decay is one scalar per head.
//!
//! With heads `h` of `P` channels sharing `A_h` and `dt_{t,h}`, and B, C shared by the heads of a
//! group: `h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t ⊗ B_t` (a (P, N) state per head),
//! `y_t = h_t C_t + D_h x_t` (Dao & Gu, 2024, eq. 1 with the scalar-identity A).
//!
//! Two exact forms of the same map:
//! - [`ssd_chunked`], the SSD algorithm in matmul form (the paper's "minimal discrete" listing):
//!   per chunk of Q steps the intra-chunk output `(C Bᵀ ∘ L) (x dt)` with the decay mask
//!   `L[t, s] = exp(Σ_{s<r≤t} dt_r A)` (only Q x Q per chunk, never L x L), the chunk's state,
//!   the inter-chunk pass over the chunk states, and the output from the states. It is the
//!   portable body (Burn matmuls; differentiable op by op under autodiff) and what the GPU
//!   backends run;
//! - [`ssd_via_scan`], the recurrence, run by the selective-scan op with the head's A and dt
//!   broadcast over its channels: the fused CPU kernel on Flex and NdArray.

use crate::error::Error;
use crate::ops::SsmOps;
use crate::prim::P;
use crate::scan::reference::ScanArgs;
use burn::backend::{Backend, tensor::FloatTensor};
use std::ops::{Add, Mul, Sub};

/// The sizes of an SSD scan. With `rank` R > 1 (Mamba-3's MIMO) each of the `len` time steps
/// holds R sub-steps: `x`, `B` and `C` have `len · R` rows along their sequence axis, ordered
/// (step, rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsdDims {
    /// Batch rows B.
    pub batch: usize,
    /// Time steps L.
    pub len: usize,
    /// Sub-steps per time step R (1 for SISO).
    pub rank: usize,
    /// Heads H.
    pub heads: usize,
    /// Channels per head P.
    pub head_dim: usize,
    /// Groups G of heads sharing B and C.
    pub groups: usize,
    /// State size N.
    pub state: usize,
}

impl SsdDims {
    /// Reads and checks the sizes: `x` (B, L·R, H, P), `dt` (B, L, H), `a` (H), `b`, `c`
    /// (B, L·R, G, N), `d` (H), `h0` (B, H, P, N); H a multiple of G; R = `rank` ≥ 1.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        x: &[usize],
        dt: &[usize],
        a: &[usize],
        b: &[usize],
        c: &[usize],
        d: &[usize],
        h0: &[usize],
        rank: usize,
    ) -> Result<Self, Error> {
        let (&[bs, lr, h, p], &[gb, gl, g, n]) = (x, b) else {
            return Err(Error::Shape(format!(
                "ssd: expected x (B, L, H, P) and B (B, L, G, N), got {x:?} and {b:?}"
            )));
        };
        if rank == 0 || !lr.is_multiple_of(rank) {
            return Err(Error::Shape(format!(
                "ssd: x has {lr} rows along its sequence axis, not a multiple of the rank {rank}"
            )));
        }
        let l = lr / rank;
        let s = Self {
            batch: bs,
            len: l,
            rank,
            heads: h,
            head_dim: p,
            groups: g,
            state: n,
        };
        let expect = [
            ("dt", dt, vec![bs, l, h]),
            ("A", a, vec![h]),
            ("C", c, vec![bs, lr, g, n]),
            ("D", d, vec![h]),
            ("initial_state", h0, vec![bs, h, p, n]),
        ];
        for (name, got, want) in expect {
            if got != want.as_slice() {
                return Err(Error::Shape(format!(
                    "ssd: {name} has shape {got:?}, expected {want:?}"
                )));
            }
        }
        if gb != bs || gl != lr {
            return Err(Error::Shape(format!(
                "ssd: B has shape {b:?}, expected [{bs}, {lr}, G, N]"
            )));
        }
        if g == 0 || h % g != 0 {
            return Err(Error::Shape(format!(
                "ssd: {h} heads cannot be shared among {g} groups of B and C"
            )));
        }
        Ok(s)
    }

    pub(crate) fn of<B: Backend>(x: &FloatTensor<B>, b: &FloatTensor<B>, rank: usize) -> Self {
        let xd = P::<B>::new(x.clone()).dims();
        let bd = P::<B>::new(b.clone()).dims();
        Self {
            batch: xd[0],
            len: xd[1] / rank.max(1),
            rank: rank.max(1),
            heads: xd[2],
            head_dim: xd[3],
            groups: bd[2],
            state: bd[3],
        }
    }
}

/// `(B, L', G, N)` to the heads' `(B, H, K, Q, N)` with `L' = K Q` (each group repeated over
/// its heads).
fn heads_of_groups<B: Backend>(t: P<B>, s: SsdDims, k: usize, q: usize) -> P<B> {
    let (bs, h, g, n) = (s.batch, s.heads, s.groups, s.state);
    t.reshape(&[bs, k * q, g, 1, n])
        .expand(&[bs, k * q, g, h / g, n])
        .reshape(&[bs, k, q, h, n])
        .permute(&[0, 3, 1, 2, 4])
}

/// `t` with each entry along `axis` repeated `r` times in a row (the time steps' values spread
/// over their sub-steps).
fn spread<B: Backend>(t: P<B>, axis: usize, r: usize) -> P<B> {
    if r == 1 {
        return t;
    }
    let dims = t.dims();
    let mut one = dims.clone();
    one.insert(axis + 1, 1);
    let mut wide = dims.clone();
    wide.insert(axis + 1, r);
    let mut out = dims;
    out[axis] *= r;
    t.reshape(&one).expand(&wide).reshape(&out)
}

/// Zero rows appended along axis 1 up to `len`.
fn pad_len<B: Backend>(t: P<B>, len: usize) -> P<B> {
    let mut dims = t.dims();
    if dims[1] == len {
        return t;
    }
    let device = t.device();
    dims[1] = len - dims[1];
    P::cat(vec![t, P::zeros(&dims, &device)], 1)
}

/// The SSD scan in chunked matmul form (see the module docs); `chunk` is Q. Returns `y`
/// (B, L, H, P), including `D x`, and the final state (B, H, P, N). L need not be a multiple of
/// Q: the last chunk is padded with steps of zero `dt` and `x`, which leave the state unchanged.
///
/// With `reset` (B, L) (1 where a sequence starts: the state before it is zeroed), every term
/// that would carry state across a sequence start is masked: the intra-chunk scores, each step's
/// share of its chunk's end state, the state entering a chunk, and the state passed from chunk
/// to chunk (mamba_ssm's `seq_idx` handling).
#[allow(clippy::too_many_arguments)]
pub fn ssd_chunked<B: SsmOps>(
    x: FloatTensor<B>,
    dt: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    c: FloatTensor<B>,
    d: FloatTensor<B>,
    h0: FloatTensor<B>,
    reset: Option<FloatTensor<B>>,
    chunk: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let h = SsdDims::of::<B>(&x, &b, 1).heads;
    let log_decay = P::<B>::new(dt.clone())
        .mul(P::<B>::new(a).reshape(&[1, 1, h]))
        .into_inner();
    ssd_chunked_log_decay::<B>(x, dt, log_decay, b, c, d, h0, reset, chunk, 1)
}

/// [`ssd_chunked`] with the per-step log decay given, `log_decay` (B, L, H) in place of
/// `dt·A`: `h_t = exp(log_decay_t) h_{t−1} + dt_t B_t x_tᵀ` (Mamba-3's data-dependent `A`, its
/// input weight in `dt`).
///
/// With `rank` R > 1 (Mamba-3's MIMO), `x` (B, L·R, H, P) and `b`, `c` (B, L·R, G, N) hold R
/// sub-steps per time step: `h_t = exp(log_decay_t) h_{t−1} + dt_t Σ_r B_{t,r} x_{t,r}ᵀ` and
/// every sub-step reads the state after its whole time step, `y_{t,r} = h_t C_{t,r} + D x_{t,r}`
/// (the chunk's scores are `(C Bᵀ) ∘ (L ⊗ 1_{R×R})`, as the reference's `mamba3_MIMO_chunk_ref`);
/// `chunk` counts time steps.
#[allow(clippy::too_many_arguments)]
pub fn ssd_chunked_log_decay<B: SsmOps>(
    x: FloatTensor<B>,
    dt: FloatTensor<B>,
    log_decay: FloatTensor<B>,
    b: FloatTensor<B>,
    c: FloatTensor<B>,
    d: FloatTensor<B>,
    h0: FloatTensor<B>,
    reset: Option<FloatTensor<B>>,
    chunk: usize,
    rank: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let s = SsdDims::of::<B>(&x, &b, rank);
    let (bs, l, h, p, r) = (s.batch, s.len, s.heads, s.head_dim, s.rank);
    let q = chunk.clamp(1, l.max(1));
    let k = l.div_ceil(q);
    let lp = k * q;
    // Sub-steps per chunk.
    let qr = q * r;
    let x = P::<B>::new(x);
    let x5 = pad_len(x.clone(), lp * r)
        .reshape(&[bs, k, qr, h, p])
        .permute(&[0, 3, 1, 2, 4]); // (B, H, K, QR, P)
    let dt4 = pad_len(P::<B>::new(dt), lp)
        .reshape(&[bs, k, q, h])
        .permute(&[0, 3, 1, 2]); // (B, H, K, Q)
    let b5 = heads_of_groups(pad_len(P::<B>::new(b), lp * r), s, k, qr);
    let c5 = heads_of_groups(pad_len(P::<B>::new(c), lp * r), s, k, qr);

    let a_dt = pad_len(P::<B>::new(log_decay), lp)
        .reshape(&[bs, k, q, h])
        .permute(&[0, 3, 1, 2]); // (B, H, K, Q)
    let xdt = x5.mul(spread(dt4, 3, r).reshape(&[bs, h, k, qr, 1]));
    // Inclusive cumulative sums within each chunk, as a product with an upper-triangular ones
    // matrix (Burn's cumsum is quadratic on the GPU backends).
    let cum = inclusive_sums(a_dt.reshape(&[bs, h, k, 1, q])); // (B, H, K, 1, Q)
    // L[t, s] = exp(cum_t - cum_s) for s <= t, else 0 (one kernel on the GPU backends).
    let decay = P::<B>::new(B::ssd_decay_mask(
        cum.clone().reshape(&[bs, h, k, q]).into_inner(),
    ));
    // Sub-steps of one time step see each other whole: the mask's entries spread over R x R.
    let decay = spread(spread(decay, 4, r), 3, r);
    let masks = reset.map(|t| SegmentMasks::new(P::<B>::new(t), bs, k, q).spread(r));
    let decay = match &masks {
        Some(m) => decay.mul(m.same.clone()),
        None => decay,
    };
    let scores = c5.clone().matmul(b5.clone().swap_dims(3, 4)).mul(decay);
    let y_diag = scores.matmul(xdt.clone()); // (B, H, K, QR, P)

    // Each chunk's contribution to the state at its end: Σ_s exp(cum_end - cum_s) B_s ⊗ xdt_s.
    let cum_end = cum.clone().narrow(4, q - 1, q); // (B, H, K, 1, 1)
    let to_end = spread(
        cum_end
            .clone()
            .sub(cum.clone())
            .exp()
            .reshape(&[bs, h, k, q, 1]),
        3,
        r,
    );
    let (to_end, chunk_decay) = match &masks {
        Some(m) => (
            to_end.mul(m.to_end.clone()),
            cum_end.exp().mul(m.carried.clone()),
        ),
        None => (to_end, cum_end.exp()),
    };
    let chunk_states = b5.mul(to_end).swap_dims(3, 4).matmul(xdt); // (B, H, K, N, P)
    let chunk_decay = chunk_decay.reshape(&[bs, h, k, 1, 1]);

    // The inter-chunk pass: the state at each chunk start (one kernel on the GPU backends).
    let (starts, state) = B::ssd_state_pass(
        chunk_states.into_inner(),
        chunk_decay.reshape(&[bs, h, k]).into_inner(),
        P::<B>::new(h0).swap_dims(2, 3).into_inner(),
    );
    let (starts, state) = (P::<B>::new(starts), P::<B>::new(state));
    let entering = spread(cum.reshape(&[bs, h, k, q, 1]).exp(), 3, r);
    let entering = match &masks {
        Some(m) => entering.mul(m.from_start.clone()),
        None => entering,
    };
    let y_off = c5.mul(entering).matmul(starts);
    let y = y_diag
        .add(y_off)
        .permute(&[0, 2, 3, 1, 4])
        .reshape(&[bs, lp * r, h, p])
        .narrow(1, 0, l * r)
        .add(x.mul(P::<B>::new(d).reshape(&[1, 1, h, 1])));
    (y.into_inner(), state.swap_dims(2, 3).into_inner())
}

/// Where sequences restart inside rows, the masks of the chunked form, each 1 where state may
/// flow and 0 across a sequence start, from the sequence number `g` of each step (the inclusive
/// running count of starts; the padding steps continue the last sequence).
struct SegmentMasks<B: Backend> {
    /// (B, 1, K, Q, Q): steps t and s of a chunk are in one sequence.
    same: P<B>,
    /// (B, 1, K, Q, 1): step s is in the sequence its chunk ends in.
    to_end: P<B>,
    /// (B, 1, K, Q, 1): step t is in the sequence the state entering its chunk belongs to.
    from_start: P<B>,
    /// (B, 1, K, 1, 1): the state entering a chunk reaches its end.
    carried: P<B>,
}

impl<B: Backend> SegmentMasks<B> {
    /// The masks over sub-steps: each time step's entries repeated over its `r` sub-steps.
    fn spread(self, r: usize) -> Self {
        Self {
            same: spread(spread(self.same, 4, r), 3, r),
            to_end: spread(self.to_end, 3, r),
            from_start: spread(self.from_start, 3, r),
            carried: self.carried,
        }
    }

    fn new(reset: P<B>, bs: usize, k: usize, q: usize) -> Self {
        let device = reset.device();
        let len = reset.dims()[1];
        let r = pad_len(reset.reshape(&[bs, len, 1]), k * q).reshape(&[bs, 1, k, 1, q]);
        // Running counts within each chunk, then the counts of the chunks before.
        let within = inclusive_sums(r); // (B, 1, K, 1, Q)
        let totals = within
            .clone()
            .narrow(4, q - 1, q)
            .reshape(&[bs, 1, 1, 1, k]);
        let before = inclusive_sums(totals.clone())
            .sub(totals)
            .reshape(&[bs, 1, k, 1, 1]);
        let g = within.add(before); // (B, 1, K, 1, Q)
        let g_col = g.clone().reshape(&[bs, 1, k, q, 1]);
        let g_end = g.clone().narrow(4, q - 1, q); // (B, 1, K, 1, 1)
        let g_prev = if k > 1 {
            P::cat(
                vec![
                    P::zeros(&[bs, 1, 1, 1, 1], &device),
                    g_end.clone().narrow(2, 0, k - 1),
                ],
                2,
            )
        } else {
            P::zeros(&[bs, 1, 1, 1, 1], &device)
        };
        // 1 where the later count equals the earlier one (counts never decrease).
        let equal = |later: P<B>, earlier: P<B>| {
            later
                .sub(earlier)
                .clamp_max(1.0)
                .mul_scalar(-1.0)
                .add_scalar(1.0)
        };
        Self {
            same: equal(g_col.clone(), g),
            to_end: equal(g_end.clone(), g_col.clone()),
            from_start: equal(g_col, g_prev.clone()),
            carried: equal(g_end, g_prev),
        }
    }
}

/// A (1, 1, 1, Q, Q) matrix of ones on and below (`lower`) or on and above the diagonal.
/// Inclusive running sums along the last axis, as one (rows, Q) x (Q, Q) product with an
/// upper-triangular ones matrix (Burn's cumsum is quadratic on the GPU backends anyway).
///
/// The rows are flattened into one plain matrix on purpose: in Burn 0.22.1 a batched product
/// whose left side is a reshaped permuted view, e.g. (B, H, K, 1, Q) by a broadcast (Q, Q),
/// gives wrong values on CubeCL (seen on lavapipe with B > 1, H > 1 and Q ≥ 16: O(1) errors in
/// the SSD's outputs), while the flat product is right.
fn inclusive_sums<B: Backend>(t: P<B>) -> P<B> {
    let dims = t.dims();
    let q = dims[dims.len() - 1];
    let rows = dims.iter().product::<usize>() / q.max(1);
    let device = t.device();
    t.reshape(&[rows, q])
        .matmul(triangle::<B>(q, false, &device).reshape(&[q, q]))
        .reshape(&dims)
}

fn triangle<B: Backend>(q: usize, lower: bool, device: &B::Device) -> P<B> {
    let v = (0..q * q)
        .map(|i| {
            let (r, col) = (i / q, i % q);
            f32::from(u8::from(if lower { col <= r } else { r <= col }))
        })
        .collect();
    P::<B>::from_vec(v, &[1, 1, 1, q, q], device)
}

/// The intra-chunk decay mask from the chunks' inclusive cumulative `dt A` sums `cum`
/// (B, H, K, Q): `L[t, s] = exp(cum_t - cum_s)` for `s <= t`, else 0; (B, H, K, Q, Q). The
/// portable body of [`crate::SsmOps::ssd_decay_mask`] (the exponent is clamped at 0 before the masking
/// so the masked entries cannot overflow).
pub fn decay_mask<B: Backend>(cum: FloatTensor<B>) -> FloatTensor<B> {
    let cum = P::<B>::new(cum);
    let d = cum.dims();
    let (bs, h, k, q) = (d[0], d[1], d[2], d[3]);
    let device = cum.device();
    cum.clone()
        .reshape(&[bs, h, k, q, 1])
        .sub(cum.reshape(&[bs, h, k, 1, q]))
        .clamp_max(0.0)
        .exp()
        .mul(triangle::<B>(q, true, &device))
        .into_inner()
}

/// The inter-chunk pass: from the state `h0` (B, H, N, P) before the first chunk, each chunk's
/// own contribution `chunk_states` (B, H, K, N, P) and total decay `chunk_decay` (B, H, K),
/// the state at each chunk start (B, H, K, N, P) and after the last (B, H, N, P). The portable
/// body of [`crate::SsmOps::ssd_state_pass`].
pub fn state_pass<B: Backend>(
    chunk_states: FloatTensor<B>,
    chunk_decay: FloatTensor<B>,
    h0: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let chunk_states = P::<B>::new(chunk_states);
    let d = chunk_states.dims();
    let (bs, h, k, n, p) = (d[0], d[1], d[2], d[3], d[4]);
    let chunk_decay = P::<B>::new(chunk_decay);
    let mut state = P::<B>::new(h0);
    let mut starts = Vec::with_capacity(k);
    for i in 0..k {
        starts.push(state.clone().reshape(&[bs, h, 1, n, p]));
        state = state
            .mul(
                chunk_decay
                    .clone()
                    .narrow(2, i, i + 1)
                    .reshape(&[bs, h, 1, 1]),
            )
            .add(
                chunk_states
                    .clone()
                    .narrow(2, i, i + 1)
                    .reshape(&[bs, h, n, p]),
            );
    }
    (P::cat(starts, 2).into_inner(), state.into_inner())
}

/// The SSD scan as the selective-scan recurrence (the backend's scan kernel): channels
/// `(h, p)`, the head's `A` and `dt` broadcast over its `P` channels, the groups' B and C as
/// they are. Same arguments and results as [`ssd_chunked`].
#[allow(clippy::too_many_arguments)]
pub fn ssd_via_scan<B: SsmOps>(
    x: FloatTensor<B>,
    dt: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    c: FloatTensor<B>,
    d: FloatTensor<B>,
    h0: FloatTensor<B>,
    reset: Option<FloatTensor<B>>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let s = SsdDims::of::<B>(&x, &b, 1);
    let (bs, l, h, p, n) = (s.batch, s.len, s.heads, s.head_dim, s.state);
    let ch = h * p;
    let u = P::<B>::new(x).permute(&[0, 2, 3, 1]).reshape(&[bs, ch, l]);
    let delta = P::<B>::new(dt)
        .permute(&[0, 2, 1])
        .reshape(&[bs, h, 1, l])
        .expand(&[bs, h, p, l])
        .reshape(&[bs, ch, l]);
    let a = P::<B>::new(a)
        .reshape(&[h, 1, 1])
        .expand(&[h, p, n])
        .reshape(&[ch, n]);
    let d = P::<B>::new(d)
        .reshape(&[h, 1])
        .expand(&[h, p])
        .reshape(&[ch]);
    let grouped = |t: FloatTensor<B>| P::<B>::new(t).permute(&[0, 2, 3, 1]).into_inner();
    let device = u.device();
    let args = ScanArgs::<B> {
        u: u.clone().into_inner(),
        delta: delta.into_inner(),
        a: a.into_inner(),
        b: grouped(b),
        c: grouped(c),
        d: d.into_inner(),
        z: None,
        delta_bias: P::<B>::zeros(&[ch], &device).into_inner(),
        h0: P::<B>::new(h0).reshape(&[bs, ch, n]).into_inner(),
        reset: None,
        delta_softplus: false,
    };
    let has_reset = reset.is_some();
    let reset = reset.unwrap_or_else(|| u.clone().narrow(1, 0, 1).reshape(&[bs, l]).into_inner());
    let (y, state) = B::selective_scan(
        args.u,
        args.delta,
        args.a,
        args.b,
        args.c,
        args.d,
        u.clone().into_inner(),
        false,
        args.delta_bias,
        args.h0,
        reset,
        has_reset,
        false,
    );
    let y = P::<B>::new(y)
        .reshape(&[bs, h, p, l])
        .permute(&[0, 3, 1, 2]);
    (
        y.into_inner(),
        P::<B>::new(state).reshape(&[bs, h, p, n]).into_inner(),
    )
}
