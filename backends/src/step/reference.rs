//! The recurrent (decode) steps' reference (portable) bodies: the selective state update and the conv
//! window step, and the whole Mamba and Mamba2 mixer steps after `in_proj` composed from them.
//!
//! Mamba (v1), given `xz = in_proj(x)` = `[x | z]` (B, 2D): the causal conv step and SiLU,
//! `x_proj` (split into `dt_low` (R), `B` (N), `C` (N)), `dt = softplus(dt_proj(dt_low) +
//! dt_bias)`, the selective state update `h = exp(dt A) h + dt B x`, `y = (C . h + D x) *
//! silu(z)`. Mamba2: the conv step over `xBC`, `dt = clamp(softplus(dt + dt_bias))`, the state
//! update with a scalar `A` per head, then the gated RMSNorm. The weights travel packed in one
//! flat tensor ([`crate::pack_mamba_step_weights`], [`crate::pack_mamba2_step_weights`]).

use crate::error::Error;
use crate::ops::SsmOps;
use crate::prim::P;
use crate::scan::reference::{ScanDims, discretised_delta, group_step};
use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use std::ops::{Add, Mul};

/// One recurrent step of the selective SSM (decode). Shapes: `state` (B, D, N), `x`, `dt`, `z`
/// (B, D), `a` (D, N), `b`, `c` (B, G, N), `d`, `dt_bias` (D). Returns `y` (B, D) and the new
/// state.
#[allow(clippy::too_many_arguments)]
pub fn selective_state_step<B: Backend>(
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
    let sd = P::<B>::new(state.clone()).dims();
    let bd = P::<B>::new(b.clone()).dims();
    let (batch, dim, n, g) = (sd[0], sd[1], sd[2], bd[1]);
    let s = ScanDims {
        batch,
        dim,
        len: 1,
        state: n,
        groups: g,
    };
    let to_seq = |t: FloatTensor<B>| P::<B>::new(t).reshape(&[batch, dim, 1]);
    let dt = discretised_delta(to_seq(dt), P::new(dt_bias), dim, dt_softplus);
    let x = to_seq(x);
    let b = group_step(&P::<B>::new(b).reshape(&[batch, g, n, 1]), 0, s);
    let c = group_step(&P::<B>::new(c).reshape(&[batch, g, n, 1]), 0, s);
    let da = dt.clone().mul(P::<B>::new(a).reshape(&[1, dim, n])).exp();
    let h = da.mul(P::new(state)).add(b.mul(dt.mul(x.clone())));
    let y = h
        .clone()
        .mul(c)
        .sum_dim(2)
        .add(x.mul(P::new(d).reshape(&[1, dim, 1])));
    let y = match z {
        Some(z) => y.mul(to_seq(z).silu()),
        None => y,
    };
    (y.reshape(&[batch, dim]).into_inner(), h.into_inner())
}

/// One step of a causal depthwise conv1d with a rolling state (decode). Shapes: `x` (B, C),
/// `state` (B, C, K) holding the last K inputs, `weight` (C, K), `bias` (C). Returns the output
/// (B, C), through SiLU when `silu`, and the new state.
pub fn causal_conv1d_step<B: Backend>(
    x: FloatTensor<B>,
    state: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    silu: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let sd = P::<B>::new(state.clone()).dims();
    let (batch, ch, k) = (sd[0], sd[1], sd[2]);
    let x = P::<B>::new(x).reshape(&[batch, ch, 1]);
    let new_state = P::cat(vec![P::new(state).narrow(2, 1, k), x], 2);
    let out = new_state
        .clone()
        .mul(P::<B>::new(weight).reshape(&[1, ch, k]))
        .sum_dim(2)
        .add(P::<B>::new(bias).reshape(&[1, ch, 1]))
        .reshape(&[batch, ch]);
    let out = if silu { out.silu() } else { out };
    (out.into_inner(), new_state.into_inner())
}

/// The sizes of a Mamba decode step, read from the shapes of its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MambaStepDims {
    /// Batch rows.
    pub batch: usize,
    /// Inner channels `D` (`d_inner`).
    pub dim: usize,
    /// Conv width `K`.
    pub width: usize,
    /// State size `N`.
    pub state: usize,
    /// Rank `R` of `dt` (`dt_rank`).
    pub rank: usize,
}

impl MambaStepDims {
    /// Reads the sizes from `xz` (B, 2D), `conv_state` (B, D, K), `ssm_state` (B, D, N) and the
    /// length of the packed weights, `D (K + 3 + 3N) + 2 D R`.
    pub fn infer(
        xz: &[usize],
        conv_state: &[usize],
        ssm_state: &[usize],
        weights: usize,
    ) -> Result<Self, Error> {
        let (&[batch, two_d], &[cb, dim, width], &[sb, sd, state]) = (xz, conv_state, ssm_state)
        else {
            return Err(Error::Shape(format!(
                "mamba step: expected xz (B, 2D), conv_state (B, D, K), ssm_state (B, D, N), got \
                 {xz:?}, {conv_state:?}, {ssm_state:?}"
            )));
        };
        if cb != batch || sb != batch || sd != dim || two_d != 2 * dim || dim == 0 || width == 0 {
            return Err(Error::Shape(format!(
                "mamba step: inconsistent shapes xz {xz:?}, conv_state {conv_state:?}, \
                 ssm_state {ssm_state:?}"
            )));
        }
        let fixed = dim * (width + 3 + 3 * state);
        let rest = weights.checked_sub(fixed).unwrap_or(usize::MAX);
        if rest == usize::MAX || rest == 0 || rest % (2 * dim) != 0 {
            return Err(Error::Shape(format!(
                "mamba step: packed weights of length {weights} do not fit D = {dim}, K = \
                 {width}, N = {state} (expected D (K + 3 + 3N) + 2 D R)"
            )));
        }
        Ok(Self {
            batch,
            dim,
            width,
            state,
            rank: rest / (2 * dim),
        })
    }

    /// Offsets (in elements) of the parts of the packed weights: conv_w, conv_b, x_proj,
    /// dt_proj, dt_bias, A, D, end.
    pub fn offsets(&self) -> [usize; 8] {
        let (d, k, n, r) = (self.dim, self.width, self.state, self.rank);
        let proj = r + 2 * n;
        let mut o = [0; 8];
        let sizes = [d * k, d, proj * d, d * r, d, d * n, d];
        for i in 0..7 {
            o[i + 1] = o[i] + sizes[i];
        }
        o
    }
}

/// The decode step composed from the backend's fused conv and state steps and two matmuls: the
/// default body of [`crate::SsmOps::mamba_decode_step`], and the differentiable form under Autodiff.
pub fn mamba_step_composed<B: SsmOps>(
    xz: FloatTensor<B>,
    conv_state: FloatTensor<B>,
    ssm_state: FloatTensor<B>,
    weights: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let s = MambaStepDims::infer(
        &xz.shape(),
        &conv_state.shape(),
        &ssm_state.shape(),
        weights.shape().num_elements(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = s.offsets();
    let (d, n, r) = (s.dim, s.state, s.rank);
    let proj = r + 2 * n;
    let w = P::<B>::new(weights);
    let part = |i: usize, dims: &[usize]| w.clone().narrow(0, o[i], o[i + 1]).reshape(dims);
    let xz = P::<B>::new(xz);
    let x = xz.clone().narrow(1, 0, d).into_inner();
    let z = xz.narrow(1, d, 2 * d).into_inner();
    let (u, conv_state) = B::causal_conv1d_step(
        x,
        conv_state,
        part(0, &[d, s.width]).into_inner(),
        part(1, &[d]).into_inner(),
        true,
    );
    // (W uᵀ)ᵀ with W (R + 2N, D): the packed row-major weight is read as stored.
    let x_dbl = B::float_transpose(B::float_matmul(
        part(2, &[proj, d]).into_inner(),
        B::float_transpose(u.clone()),
    ));
    let x_dbl = P::<B>::new(x_dbl);
    let dt = B::float_transpose(B::float_matmul(
        part(3, &[d, r]).into_inner(),
        B::float_transpose(x_dbl.clone().narrow(1, 0, r).into_inner()),
    ));
    let bm = x_dbl.clone().narrow(1, r, r + n).reshape(&[s.batch, 1, n]);
    let cm = x_dbl.narrow(1, r + n, proj).reshape(&[s.batch, 1, n]);
    let (y, ssm_state) = B::selective_state_step(
        ssm_state,
        u,
        dt,
        part(5, &[d, n]).into_inner(),
        bm.into_inner(),
        cm.into_inner(),
        part(6, &[d]).into_inner(),
        z,
        true,
        part(4, &[d]).into_inner(),
        true,
    );
    (y, conv_state, ssm_state)
}

/// The sizes of a Mamba2 decode step: heads H, groups G and the step limits; the rest is read
/// from the shapes (`ssm_state` (B, H·P, N), `conv_state` (B, d_inner + 2GN, K)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mamba2StepConfig {
    /// Heads H.
    pub heads: usize,
    /// Groups G of heads sharing B and C.
    pub groups: usize,
    /// `dt` is clamped to `[dt_min, dt_max]` after the softplus.
    pub dt_min: f32,
    /// See `dt_min`.
    pub dt_max: f32,
    /// Epsilon of the gated RMSNorm.
    pub eps: f32,
}

/// The Mamba2 decode step composed from the backend's fused conv and state steps: the default
/// body of [`crate::SsmOps::mamba2_decode_step`] and its differentiable form under Autodiff. Returns
/// the gated-normed output (B, d_inner) (before out_proj) and the new conv and SSM states.
#[allow(clippy::too_many_arguments)]
pub fn mamba2_step_composed<B: SsmOps>(
    zxbcdt: FloatTensor<B>,
    conv_state: FloatTensor<B>,
    ssm_state: FloatTensor<B>,
    weights: FloatTensor<B>,
    cfg: Mamba2StepConfig,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    use burn::backend::Scalar;
    let ss = ssm_state.shape().to_vec();
    let cs = conv_state.shape().to_vec();
    let (batch, di, n) = (ss[0], ss[1], ss[2]);
    let (conv, k) = (cs[1], cs[2]);
    let (h, g) = (cfg.heads, cfg.groups);
    let p = di / h;
    let w = P::<B>::new(weights);
    let mut at = 0;
    let mut part = |len: usize, dims: &[usize]| {
        let t = w.clone().narrow(0, at, at + len).reshape(dims);
        at += len;
        t
    };
    let conv_w = part(conv * k, &[conv, k]);
    let conv_b = part(conv, &[conv]);
    let dt_bias = part(h, &[1, h]);
    let a = part(h, &[h]);
    let d = part(h, &[h]);
    let norm_w = part(di, &[1, di]);
    let x = P::<B>::new(zxbcdt);
    let z = x.clone().narrow(1, 0, di);
    let xbc = x.clone().narrow(1, di, di + conv).into_inner();
    let dt = x
        .narrow(1, di + conv, di + conv + h)
        .add(dt_bias)
        .softplus();
    let dt = P::<B>::new(B::float_clamp(
        dt.into_inner(),
        Scalar::Float(cfg.dt_min as f64),
        Scalar::Float(cfg.dt_max as f64),
    ));
    let (xbc, conv_state) = B::causal_conv1d_step(
        xbc,
        conv_state,
        conv_w.into_inner(),
        conv_b.into_inner(),
        true,
    );
    let xbc = P::<B>::new(xbc);
    let xs = xbc.clone().narrow(1, 0, di);
    let bm = xbc
        .clone()
        .narrow(1, di, di + g * n)
        .reshape(&[batch, g, n]);
    let cm = xbc
        .narrow(1, di + g * n, di + 2 * g * n)
        .reshape(&[batch, g, n]);
    let per_channel = |t: P<B>| t.reshape(&[h, 1]).expand(&[h, p]).reshape(&[di]);
    let dt = dt
        .reshape(&[batch, h, 1])
        .expand(&[batch, h, p])
        .reshape(&[batch, di]);
    let a = per_channel(a).reshape(&[di, 1]).expand(&[di, n]);
    let device = xs.device();
    let (y, ssm_state) = B::selective_state_step(
        ssm_state,
        xs.clone().into_inner(),
        dt.into_inner(),
        a.into_inner(),
        bm.into_inner(),
        cm.into_inner(),
        per_channel(d).into_inner(),
        xs.into_inner(),
        false,
        P::<B>::zeros(&[di], &device).into_inner(),
        false,
    );
    // Gated RMSNorm per group of d_inner / G features.
    let gated = P::<B>::new(y).mul(z.silu()).reshape(&[batch, g, di / g]);
    let ms = B::float_mean_dim(gated.clone().mul(gated.clone()).into_inner(), 2);
    let rms = P::<B>::new(B::float_sqrt(
        P::<B>::new(ms).add_scalar(cfg.eps).into_inner(),
    ));
    let normed = P::<B>::new(B::float_div(
        gated.into_inner(),
        rms.expand(&[batch, g, di / g]).into_inner(),
    ))
    .reshape(&[batch, di])
    .mul(norm_w);
    (normed.into_inner(), conv_state, ssm_state)
}

#[cfg(test)]
mod tests {
    use super::MambaStepDims;

    #[test]
    fn sizes_are_read_from_the_shapes() {
        // D = 8, K = 4, N = 2, R = 3: D (K + 3 + 3N) + 2 D R = 8 * 13 + 48.
        let d = MambaStepDims::infer(&[2, 16], &[2, 8, 4], &[2, 8, 2], 8 * 13 + 48).unwrap();
        assert_eq!(
            d,
            MambaStepDims {
                batch: 2,
                dim: 8,
                width: 4,
                state: 2,
                rank: 3
            }
        );
        assert_eq!(d.offsets()[7], 8 * 13 + 48);
    }

    #[test]
    fn inconsistent_shapes_are_errors() {
        let e = MambaStepDims::infer(&[2, 16], &[2, 8, 4], &[3, 8, 2], 152)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inconsistent"), "{e}");
        let e = MambaStepDims::infer(&[2, 16], &[2, 8, 4], &[2, 8, 2], 150)
            .unwrap_err()
            .to_string();
        assert!(e.contains("packed weights of length 150"), "{e}");
        let e = MambaStepDims::infer(&[2, 16], &[2, 8, 4], &[2, 8, 2], 104)
            .unwrap_err()
            .to_string();
        assert!(e.contains("packed weights"), "{e}");
        let e = MambaStepDims::infer(&[16], &[2, 8, 4], &[2, 8, 2], 152)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected xz (B, 2D)"), "{e}");
    }
}
