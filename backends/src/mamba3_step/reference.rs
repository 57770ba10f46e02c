//! The whole Mamba-3 decode step after `in_proj`, SISO or MIMO (state-spaces/mamba
//! `Mamba3.step`): its sizes, its packed weights, and its portable body.
//!
//! Given `proj = in_proj(u)` = `[z | x | B | C | dt | A | λ | θ]` for one token, per head `h`:
//! `k_r = RMSNorm(B_{r,g}) + B_bias_{h,r}`, `q_r = RMSNorm(C_{r,g}) + C_bias_{h,r}`;
//! `Δ = softplus(dt + dt_bias)`, `A = −max(f(a), A_floor)` (the heavy-tail `f`), `α = exp(Δ A)`,
//! `λ = σ(λ)`; the angles `Θ += π tanh(θ) Δ (mod 2π)` rotate `q_r` and `k_r` (pairs `(2i, 2i+1)`
//! for SISO, `(i, i + N/2)` for MIMO); with `v_r = x ∘ W^x_r` and the carried keys and x of the
//! previous token, `h = α h + (1 − λ) Δ α Σ_r k'_r v'_rᵀ + λ Δ Σ_r k_r v_rᵀ`;
//! `y_r = h q_r + D v_r`, gated by `silu(z ∘ W^z_r)` (after a per-head RMSNorm with
//! `outproj_norm`), `y = Σ_r y_r ∘ W^o_r`. SISO is R = 1 with the `W`s all ones.
//!
//! The carried state is `conv_state` (B, H, S + R·N + P) = `[Θ | k_1 … k_R | x]` per head and
//! `ssm_state` (B, H·P, N).

use crate::error::Error;
use crate::prim::P;
use burn::backend::{Backend, tensor::FloatTensor};
use std::f32::consts::PI;
use std::ops::{Add, Mul, Sub};

/// What a Mamba-3 decode step needs besides its tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mamba3StepConfig {
    /// Heads H.
    pub heads: usize,
    /// Groups G of heads sharing B and C.
    pub groups: usize,
    /// Keys and queries per head (MIMO's R; 1 for SISO).
    pub rank: usize,
    /// Rotation angles S per head.
    pub angles: usize,
    /// MIMO's rotation convention (pairs `(i, i + N/2)`) instead of SISO's `(2i, 2i+1)`.
    pub mimo: bool,
    /// The per-head RMSNorm of the outputs before their gate.
    pub outproj_norm: bool,
    /// `−A` is at least this.
    pub a_floor: f32,
    /// The epsilon of the three RMSNorms (B, C, and the output's).
    pub eps: f32,
}

/// The sizes of a Mamba-3 decode step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mamba3StepDims {
    /// Batch rows B.
    pub batch: usize,
    /// Heads H.
    pub heads: usize,
    /// Channels per head P.
    pub head_dim: usize,
    /// State size N.
    pub state: usize,
    /// Groups G of heads sharing B and C.
    pub groups: usize,
    /// Keys and queries per head R (1 for SISO).
    pub rank: usize,
    /// Rotation angles S per head.
    pub angles: usize,
}

impl Mamba3StepDims {
    /// Reads and checks the sizes: `proj` (B, 2 H P + 2 R G N + 3 H + S), `conv_state`
    /// (B, H, S + R N + P), `ssm_state` (B, H P, N), the packed weights' length
    /// ([`Mamba3StepDims::weight_len`]).
    pub fn infer(
        proj: &[usize],
        conv_state: &[usize],
        ssm_state: &[usize],
        weights: usize,
        cfg: &Mamba3StepConfig,
    ) -> Result<Self, Error> {
        let bad = |m: String| Err(Error::Shape(format!("mamba3 step: {m}")));
        let (&[batch, width], &[cb, h, cw], &[sb, hp, n]) = (proj, conv_state, ssm_state) else {
            return bad(format!(
                "expected proj (B, W), conv_state (B, H, S + RN + P), ssm_state (B, HP, N), \
                 got {proj:?}, {conv_state:?}, {ssm_state:?}"
            ));
        };
        let (g, r, s) = (cfg.groups, cfg.rank, cfg.angles);
        if h != cfg.heads || h == 0 || g == 0 || r == 0 || !h.is_multiple_of(g) {
            return bad(format!(
                "conv_state {conv_state:?} does not hold {} heads in {g} groups of rank {r}",
                cfg.heads
            ));
        }
        if !hp.is_multiple_of(h) || cb != batch || sb != batch {
            return bad(format!(
                "inconsistent conv_state {conv_state:?} and ssm_state {ssm_state:?} for proj \
                 {proj:?}"
            ));
        }
        let d = Self {
            batch,
            heads: h,
            head_dim: hp / h,
            state: n,
            groups: g,
            rank: r,
            angles: s,
        };
        let p = d.head_dim;
        if cw != s + r * n + p || width != d.proj_width() || 2 * s > n {
            return bad(format!(
                "proj {proj:?} and conv_state {conv_state:?} do not fit H = {h}, P = {p}, N = \
                 {n}, G = {g}, R = {r}, S = {s} (expected width {} and {})",
                d.proj_width(),
                s + r * n + p
            ));
        }
        if weights != d.weight_len() {
            return bad(format!(
                "packed weights of length {weights}, expected {}",
                d.weight_len()
            ));
        }
        if n % 2 == 1 {
            return bad(format!("the rotation pairs up the state: N = {n} is odd"));
        }
        Ok(d)
    }

    /// Width of in_proj's output.
    pub fn proj_width(&self) -> usize {
        let (h, p) = (self.heads, self.head_dim);
        2 * h * p + 2 * self.rank * self.groups * self.state + 3 * h + self.angles
    }

    /// Offsets of the packed weights' parts: `dt_bias` (H), `B_bias`, `C_bias` (H, R, N),
    /// `B_norm`, `C_norm` (N), `D` (H), `W^x`, `W^z`, `W^o` (H, R, P), the output norm (H P),
    /// and the end.
    pub fn offsets(&self) -> [usize; 11] {
        let (h, p, n, r) = (self.heads, self.head_dim, self.state, self.rank);
        let sizes = [
            h,
            h * r * n,
            h * r * n,
            n,
            n,
            h,
            h * r * p,
            h * r * p,
            h * r * p,
            h * p,
        ];
        let mut o = [0; 11];
        for i in 0..10 {
            o[i + 1] = o[i] + sizes[i];
        }
        o
    }

    /// Length of the packed weights.
    pub fn weight_len(&self) -> usize {
        self.offsets()[10]
    }
}

/// The step on the backend's tensor ops (see the module docs): the default body of
/// [`crate::SsmOps::mamba3_decode_step`], the oracle of its kernels, and the differentiable form
/// under Autodiff. Returns `y` (B, H P) (before out_proj) and the new states.
pub fn mamba3_step_composed<B: Backend>(
    proj: FloatTensor<B>,
    conv_state: FloatTensor<B>,
    ssm_state: FloatTensor<B>,
    weights: FloatTensor<B>,
    cfg: Mamba3StepConfig,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let (proj, conv, ssm, w) = (
        P::<B>::new(proj),
        P::<B>::new(conv_state),
        P::<B>::new(ssm_state),
        P::<B>::new(weights),
    );
    let s = Mamba3StepDims::infer(
        &proj.dims(),
        &conv.dims(),
        &ssm.dims(),
        w.dims().iter().product(),
        &cfg,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (bs, h, p, n, g, r, sa) = (
        s.batch, s.heads, s.head_dim, s.state, s.groups, s.rank, s.angles,
    );
    let (di, rgn) = (h * p, r * g * n);
    let o = s.offsets();
    let part = |i: usize, dims: &[usize]| w.clone().narrow(0, o[i], o[i + 1]).reshape(dims);
    let seg = |start: usize, len: usize, dims: &[usize]| {
        proj.clone().narrow(1, start, start + len).reshape(dims)
    };
    let z = seg(0, di, &[bs, h, 1, p]);
    let x = seg(di, di, &[bs, h, 1, p]);
    let hb = 2 * di + 2 * rgn;
    let dd_dt = seg(hb, h, &[bs, h]);
    let dd_a = seg(hb + h, h, &[bs, h]);
    let trap = seg(hb + 2 * h, h, &[bs, h]).sigmoid();
    let theta_in = seg(hb + 3 * h, sa, &[bs, 1, sa]);

    // Keys and queries per head (B, H, R, N): RMSNorm over N, the groups' rows spread over
    // their heads, the biases (H, R, N).
    let keys = |raw: P<B>, norm: usize, bias: usize| {
        let rms = inv_rms(raw.clone(), n, cfg.eps);
        raw.mul(rms)
            .mul(part(norm, &[1, 1, 1, n]))
            .reshape(&[bs, r, g, 1, n])
            .expand(&[bs, r, g, h / g, n])
            .reshape(&[bs, r, h, n])
            .add(
                part(bias, &[h, r, n])
                    .swap_dims(0, 1)
                    .reshape(&[1, r, h, n]),
            )
            .swap_dims(1, 2)
    };
    let k = keys(seg(2 * di, rgn, &[bs, r, g, n]), 3, 1);
    let q = keys(seg(2 * di + rgn, rgn, &[bs, r, g, n]), 4, 2);

    let dt = dd_dt.add(part(0, &[1, h])).softplus();
    // A = −max(f(a), A_floor), f(a) = max(a, 0) + 1 / (1 − min(a, 0)).
    let heavy = dd_a
        .clone()
        .clamp_min(0.0)
        .add(
            dd_a.clamp_max(0.0)
                .mul_scalar(-1.0)
                .add_scalar(1.0)
                .map(B::float_recip),
        )
        .clamp_min(cfg.a_floor);
    let alpha = heavy.mul(dt.clone()).mul_scalar(-1.0).exp();
    let beta = trap
        .clone()
        .mul_scalar(-1.0)
        .add_scalar(1.0)
        .mul(dt.clone())
        .mul(alpha.clone());
    let gamma = trap.mul(dt.clone());
    let col = |t: P<B>| t.reshape(&[bs, h, 1, 1]);

    // Θ += π tanh(θ) Δ, wrapped to [0, 2π).
    let theta = conv.clone().narrow(2, 0, sa).add(
        theta_in
            .map(B::float_tanh)
            .mul_scalar(PI)
            .mul(dt.reshape(&[bs, h, 1])),
    );
    let two_pi = 2.0 * PI;
    let theta = theta.clone().sub(
        theta
            .mul_scalar(1.0 / two_pi)
            .map(B::float_floor)
            .mul_scalar(two_pi),
    );
    let angles = theta.clone().reshape(&[bs, h, 1, sa]);
    let (cos, sin) = (angles.clone().map(B::float_cos), angles.map(B::float_sin));
    let q = rotate(q, cos.clone(), sin.clone(), cfg.mimo);
    let k = rotate(k, cos, sin, cfg.mimo);

    // The state update and each rank's read-out.
    let wx = part(6, &[1, h, r, p]);
    let k_prev = conv
        .clone()
        .narrow(2, sa, sa + r * n)
        .reshape(&[bs, h, r, n]);
    let x_prev = conv
        .narrow(2, sa + r * n, sa + r * n + p)
        .reshape(&[bs, h, 1, p]);
    let outer = |x: P<B>, k: P<B>| x.mul(wx.clone()).swap_dims(2, 3).matmul(k);
    let hs = ssm
        .reshape(&[bs, h, p, n])
        .mul(col(alpha))
        .add(outer(x_prev, k_prev).mul(col(beta)))
        .add(outer(x.clone(), k.clone()).mul(col(gamma)));
    let y = q
        .matmul(hs.clone().swap_dims(2, 3))
        .add(x.clone().mul(wx).mul(part(5, &[1, h, 1, 1]))); // (B, H, R, P)
    let y = if cfg.outproj_norm {
        let rms = inv_rms(y.clone(), p, cfg.eps);
        y.mul(rms).mul(part(9, &[1, h, 1, p]))
    } else {
        y
    };
    let y = y
        .mul(z.mul(part(7, &[1, h, r, p])).silu())
        .mul(part(8, &[1, h, r, p]))
        .sum_dim(2)
        .reshape(&[bs, di]);
    let conv_out = P::cat(
        vec![theta, k.reshape(&[bs, h, r * n]), x.reshape(&[bs, h, p])],
        2,
    );
    (
        y.into_inner(),
        conv_out.into_inner(),
        hs.reshape(&[bs, di, n]).into_inner(),
    )
}

/// `1 / sqrt(mean(t²) + eps)` over the last axis (of length `width`) of a rank-4 `t`, kept.
fn inv_rms<B: Backend>(t: P<B>, width: usize, eps: f32) -> P<B> {
    t.clone()
        .mul(t)
        .sum_dim(3)
        .mul_scalar(1.0 / width as f32)
        .add_scalar(eps)
        .map(B::float_sqrt)
        .map(B::float_recip)
}

/// Rotates `t` (B, H, R, N) by the angles `(cos, sin)` (B, H, 1, S): pairs `(i, i + N/2)`
/// (`halves`, MIMO) or `(2i, 2i+1)` (SISO), the first S of them.
fn rotate<B: Backend>(t: P<B>, cos: P<B>, sin: P<B>, halves: bool) -> P<B> {
    let d = t.dims();
    let (bs, h, r, n) = (d[0], d[1], d[2], d[3]);
    let s = cos.dims()[3];
    let device = t.device();
    let pad = |a: P<B>, value: f32| {
        if s == n / 2 {
            return a;
        }
        let fill = P::<B>::zeros(&[bs, h, 1, n / 2 - s], &device).add_scalar(value);
        P::cat(vec![a, fill], 3)
    };
    let (cos, sin) = (pad(cos, 1.0), pad(sin, 0.0));
    let (first, second) = if halves {
        (
            t.clone().narrow(3, 0, n / 2),
            t.narrow(3, n / 2, 2 * (n / 2)),
        )
    } else {
        let pairs = t.reshape(&[bs, h, r, n / 2, 2]);
        (
            pairs.clone().narrow(4, 0, 1).reshape(&[bs, h, r, n / 2]),
            pairs.narrow(4, 1, 2).reshape(&[bs, h, r, n / 2]),
        )
    };
    let re = first
        .clone()
        .mul(cos.clone())
        .sub(second.clone().mul(sin.clone()));
    let im = first.mul(sin).add(second.mul(cos));
    if halves {
        P::cat(vec![re, im], 3)
    } else {
        P::cat(
            vec![
                re.reshape(&[bs, h, r, n / 2, 1]),
                im.reshape(&[bs, h, r, n / 2, 1]),
            ],
            4,
        )
        .reshape(&[bs, h, r, n])
    }
}
