//! The Mamba-3 mixer (Lahoti, Li, Chen, Wang, Bick, Kolter, Dao, Gu, 2026, arXiv 2603.15569;
//! state-spaces/mamba `mamba_ssm/modules/mamba3.py`), its SISO form.
//!
//! `in_proj` gives `[z | x | B | C | dt | A | λ | θ]`. Per head `h` and step `t`:
//! - a data-dependent decay `A_t = −max(f(a_t), A_floor)` with the heavy-tail activation
//!   `f(a) = 1 + a` for `a ≥ 0`, `1 / (1 − a)` otherwise, and `Δ_t = softplus(dt_t + dt_bias)`,
//!   `α_t = exp(Δ_t A_t)`;
//! - the trapezoidal discretisation, `λ_t = σ(λ_t)`:
//!   `h_t = α_t h_{t−1} + (1 − λ_t) Δ_t α_t k_{t−1} v_{t−1}ᵀ + λ_t Δ_t k_t v_tᵀ`;
//! - a rotational (complex-valued) state as a data-dependent rotary embedding: `k = RMSNorm(B) +
//!   B_bias`, `q = RMSNorm(C) + C_bias`, both rotated pairwise by the cumulative angles
//!   `Θ_t = Σ_{s ≤ t} π tanh(θ_s) Δ_s (mod 2π)` on the first `rope_fraction` of the state;
//! - `y_t = h_t q_t + D v_t`, then `silu(z)` (or, with `outproj_norm`, a per-head RMSNorm then
//!   `silu(z)`), and `out_proj`.
//!
//! The parallel form is an SSD with per-step log decays `Δ_t A_t` and input weights
//! `s_t = λ_t Δ_t + (1 − λ_{t+1}) Δ_{t+1}` (each pair `k_t v_tᵀ` enters at `t` with `λ_t Δ_t` and
//! again, decayed, at `t + 1`), less the second share at `t` itself: `y_t −= (1 − λ_{t+1})
//! Δ_{t+1} (q_t · k_t) v_t` ([`ssm_backends::Ssd::log_decay`]). The recurrent state carries the
//! angles, `h`, and the last `k`, `v` (for the next step's trapezoid).
#![allow(non_snake_case)]

use crate::io::{TensorMap, key};
use crate::nn::{RmsNorm, RmsNormConfig, linear_rows};
use crate::ssm::mamba::{MambaLayerCache, dt_bias_init, rescaled_out_proj};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{sigmoid, silu, softplus};
use burn::tensor::{Device, Int, Tensor};
use ssm_backends::Ssd;
use std::f64::consts::PI;

/// Configuration of a [`Mamba3Mixer`] (mamba_ssm's `Mamba3` arguments).
#[derive(Config, Debug)]
pub struct Mamba3MixerConfig {
    /// Model width.
    pub d_model: usize,
    /// SSM state size N.
    #[config(default = 128)]
    pub d_state: usize,
    /// Inner width is `expand * d_model`.
    #[config(default = 2)]
    pub expand: usize,
    /// Channels per head P.
    #[config(default = 64)]
    pub head_dim: usize,
    /// Groups G of heads sharing B and C.
    #[config(default = 1)]
    pub n_groups: usize,
    /// The share of the state rotated by the angles (0.5 or 1).
    #[config(default = 0.5)]
    pub rope_fraction: f64,
    /// Range of the initial step sizes (log-uniform).
    #[config(default = 0.001)]
    pub dt_min: f64,
    #[config(default = 0.1)]
    pub dt_max: f64,
    #[config(default = 1e-4)]
    pub dt_init_floor: f64,
    /// `−A` is at least this.
    #[config(default = 1e-4)]
    pub a_floor: f64,
    /// A per-head gated RMSNorm before out_proj (mamba_ssm's `is_outproj_norm`).
    #[config(default = false)]
    pub outproj_norm: bool,
    /// The MIMO variant (mamba_ssm's `is_mimo`); not supported yet: an error.
    #[config(default = false)]
    pub mimo: bool,
    /// SSD chunk length.
    #[config(default = 64)]
    pub chunk_size: usize,
    /// Number of layers of the network, for the `1/sqrt(n_layer)` rescale of out_proj.
    #[config(default = 1)]
    pub n_layer: usize,
}

impl Mamba3MixerConfig {
    /// The inner width `expand * d_model`.
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }
    /// Heads: `d_inner / head_dim`.
    pub fn n_heads(&self) -> usize {
        self.d_inner() / self.head_dim.max(1)
    }
    /// Rotation angles per head: half the rotated share of the state (mamba_ssm's
    /// `num_rope_angles`).
    pub fn n_angles(&self) -> usize {
        let mut rotated = (self.d_state as f64 * self.rope_fraction) as usize;
        if rotated % 2 == 1 {
            rotated -= 1;
        }
        rotated / 2
    }
    /// Width of in_proj's output: `2 d_inner + 2 G N + 3 H + angles`.
    pub fn d_in_proj(&self) -> usize {
        2 * self.d_inner() + 2 * self.n_groups * self.d_state + 3 * self.n_heads() + self.n_angles()
    }

    /// Rejects impossible settings with a message naming the field.
    pub fn validate(&self) -> crate::Result<()> {
        crate::error::require_nonzero(&[
            ("d_model", self.d_model),
            ("d_state", self.d_state),
            ("expand", self.expand),
            ("head_dim", self.head_dim),
            ("n_groups", self.n_groups),
            ("chunk_size", self.chunk_size),
        ])?;
        let invalid = |m: String| Err(crate::ModelError::InvalidConfig(m));
        if self.mimo {
            return invalid(
                "Mamba-3's MIMO variant (is_mimo) is not supported yet; only SISO".into(),
            );
        }
        let di = self.d_inner();
        if !di.is_multiple_of(self.head_dim) {
            return invalid(format!(
                "d_inner {di} is not a multiple of head_dim {}",
                self.head_dim
            ));
        }
        if !self.n_heads().is_multiple_of(self.n_groups) {
            return invalid(format!(
                "{} heads cannot be split into n_groups = {}",
                self.n_heads(),
                self.n_groups
            ));
        }
        if self.rope_fraction != 0.5 && self.rope_fraction != 1.0 {
            return invalid(format!(
                "rope_fraction must be 0.5 or 1, not {}",
                self.rope_fraction
            ));
        }
        if self.n_angles() == 0 {
            return invalid(format!(
                "d_state {} leaves no rotation angle at rope_fraction {}",
                self.d_state, self.rope_fraction
            ));
        }
        if self.a_floor.is_nan() || self.a_floor < 0.0 {
            return invalid(format!("A_floor must be >= 0, not {}", self.a_floor));
        }
        Ok(())
    }

    /// A mixer with mamba_ssm's initialisation: `dt_bias` the inverse softplus of a log-uniform
    /// dt in [dt_min, dt_max], `B_bias = C_bias = 1`, norm weights 1, `D = 1`, out_proj divided
    /// by `sqrt(n_layer)`.
    ///
    /// # Panics
    /// On an invalid config; call [`Mamba3MixerConfig::validate`] first for a `Result`.
    pub fn init(&self, device: &Device) -> Mamba3Mixer {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let (di, h, n) = (self.d_inner(), self.n_heads(), self.d_state);
        let inv = dt_bias_init([h], self.dt_min, self.dt_max, self.dt_init_floor, device);
        self.assemble(Mamba3Params {
            in_proj: LinearConfig::new(self.d_model, self.d_in_proj())
                .with_bias(false)
                .init(device),
            dt_bias: Param::from_tensor(inv.detach()),
            b_bias: Param::from_tensor(Tensor::ones([h, 1, n], device)),
            c_bias: Param::from_tensor(Tensor::ones([h, 1, n], device)),
            b_norm: self.bc_norm().init(device),
            c_norm: self.bc_norm().init(device),
            d: Param::from_tensor(Tensor::ones([h], device)),
            norm: self
                .outproj_norm
                .then(|| RmsNormConfig::new(di).with_eps(1e-5).init(device)),
            out_proj: rescaled_out_proj(di, self.d_model, false, self.n_layer, device),
        })
    }

    /// A mixer from checkpoint tensors under `prefix` (mamba_ssm's keys: `{prefix}.in_proj`,
    /// `dt_bias`, `B_bias`, `C_bias`, `B_norm`, `C_norm`, `D`, `norm` (with `is_outproj_norm`),
    /// `out_proj`), every key checked for presence and shape against this config.
    ///
    /// # Errors
    /// An invalid config, or a key missing or of another shape (named, with both shapes).
    pub fn load(
        &self,
        w: &mut TensorMap,
        prefix: &str,
        device: &Device,
    ) -> crate::Result<Mamba3Mixer> {
        self.validate()?;
        let (di, h, n) = (self.d_inner(), self.n_heads(), self.d_state);
        let name = |s: &str| key(prefix, s);
        Ok(self.assemble(Mamba3Params {
            in_proj: w.linear(
                &name("in_proj"),
                self.d_model,
                self.d_in_proj(),
                false,
                device,
            )?,
            dt_bias: w.param(&name("dt_bias"), [h], device)?,
            b_bias: w.param(&name("B_bias"), [h, 1, n], device)?,
            c_bias: w.param(&name("C_bias"), [h, 1, n], device)?,
            b_norm: self.bc_norm().load(w, &name("B_norm"), device)?,
            c_norm: self.bc_norm().load(w, &name("C_norm"), device)?,
            d: w.param(&name("D"), [h], device)?,
            norm: match self.outproj_norm {
                true => Some(RmsNormConfig::new(di).with_eps(1e-5).load(
                    w,
                    &name("norm"),
                    device,
                )?),
                false => None,
            },
            out_proj: w.linear(&name("out_proj"), di, self.d_model, false, device)?,
        }))
    }

    /// The RMSNorm of B and C (over N).
    fn bc_norm(&self) -> RmsNormConfig {
        RmsNormConfig::new(self.d_state).with_eps(1e-5)
    }

    fn assemble(&self, p: Mamba3Params) -> Mamba3Mixer {
        Mamba3Mixer {
            in_proj: p.in_proj,
            dt_bias: p.dt_bias,
            B_bias: p.b_bias,
            C_bias: p.c_bias,
            B_norm: p.b_norm,
            C_norm: p.c_norm,
            D: p.d,
            norm: p.norm,
            out_proj: p.out_proj,
            d_inner: self.d_inner(),
            d_state: self.d_state,
            n_heads: self.n_heads(),
            head_dim: self.head_dim,
            n_groups: self.n_groups,
            n_angles: self.n_angles(),
            a_floor: self.a_floor,
            chunk_size: self.chunk_size,
        }
    }
}

/// The parameters of a Mamba-3 mixer, initialised or loaded.
struct Mamba3Params {
    in_proj: Linear,
    dt_bias: Param<Tensor<1>>,
    b_bias: Param<Tensor<3>>,
    c_bias: Param<Tensor<3>>,
    b_norm: RmsNorm,
    c_norm: RmsNorm,
    d: Param<Tensor<1>>,
    norm: Option<RmsNorm>,
    out_proj: Linear,
}

/// The Mamba-3 (SISO) mixer. Field names are the checkpoint keys; Linear weights are stored
/// (in, out) as Burn does.
#[derive(Module, Debug)]
pub struct Mamba3Mixer {
    pub in_proj: Linear,
    pub dt_bias: Param<Tensor<1>>,
    /// (H, 1, N): the bias added to the normed B (the "key"), per head.
    pub B_bias: Param<Tensor<3>>,
    /// (H, 1, N): the bias added to the normed C (the "query").
    pub C_bias: Param<Tensor<3>>,
    pub B_norm: RmsNorm,
    pub C_norm: RmsNorm,
    pub D: Param<Tensor<1>>,
    /// The per-head gated RMSNorm before out_proj (`is_outproj_norm`).
    pub norm: Option<RmsNorm>,
    pub out_proj: Linear,
    pub d_inner: usize,
    pub d_state: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub n_groups: usize,
    pub n_angles: usize,
    pub a_floor: f64,
    pub chunk_size: usize,
}

/// The scan's arguments and result in one forward, in the reference kernel's layout
/// (`mamba3_siso_combined`).
#[derive(Debug, Clone)]
pub struct Mamba3Trace {
    /// The normed C and B, before their biases (B, L, G, N).
    pub q: Tensor<4>,
    pub k: Tensor<4>,
    /// x (B, L, H, P).
    pub v: Tensor<4>,
    /// `Δ A` and `Δ` (B, H, L).
    pub adt: Tensor<3>,
    pub dt: Tensor<3>,
    /// λ before its sigmoid (B, H, L).
    pub trap: Tensor<3>,
    /// The raw angles (B, L, S), before tanh (one set for all heads).
    pub angles: Tensor<3>,
    /// The gate z (B, L, H, P).
    pub z: Tensor<4>,
    /// The scan's output (B, L, H, P): with `D v`, and gated by `silu(z)` unless the mixer
    /// has the output norm.
    pub y: Tensor<4>,
}

/// The recurrent state of a Mamba-3 mixer, unpacked from a [`MambaLayerCache`].
struct Mamba3State {
    /// Θ (B, H, S).
    angle: Tensor<3>,
    /// h (B, H, P, N).
    ssm: Tensor<4>,
    /// The last rotated k (B, H, N) and v (B, H, P).
    k: Tensor<3>,
    v: Tensor<3>,
}

/// Angles reduced to `[0, 2π)`, as the reference keeps its angle state.
fn wrap_angle<const D: usize>(theta: Tensor<D>) -> Tensor<D> {
    let two_pi = 2.0 * PI;
    theta.clone() - (theta / two_pi).floor() * two_pi
}

/// The heavy-tail activation `f(a) = 1 + a` for `a ≥ 0`, `1 / (1 − a)` otherwise.
fn heavy_tail<const D: usize>(a: Tensor<D>) -> Tensor<D> {
    let neg = a.clone().clamp_max(0.0);
    a.clamp_min(0.0) + (neg.neg() + 1.0).recip()
}

impl Mamba3Mixer {
    /// An empty (zero) recurrent state for `batch` rows.
    pub fn zero_cache(&self, batch: usize, device: &Device) -> MambaLayerCache {
        let (h, p, n, s) = (self.n_heads, self.head_dim, self.d_state, self.n_angles);
        MambaLayerCache {
            conv_state: Tensor::zeros([batch, h, s + n + p], device),
            ssm_state: Tensor::zeros([batch, h * p, n], device),
            step_weights: None,
        }
    }

    /// The state in a [`MambaLayerCache`]: `conv_state` holds `[Θ | k | v]` per head
    /// (B, H, S + N + P), `ssm_state` h as (B, H·P, N), as Mamba2's.
    fn unpack(&self, cache: MambaLayerCache) -> Mamba3State {
        let (h, p, n, s) = (self.n_heads, self.head_dim, self.d_state, self.n_angles);
        let c = cache.conv_state;
        let batch = c.dims()[0];
        Mamba3State {
            angle: c.clone().narrow(2, 0, s),
            k: c.clone().narrow(2, s, n),
            v: c.narrow(2, s + n, p),
            ssm: cache.ssm_state.reshape([batch, h, p, n]),
        }
    }

    fn pack(&self, state: Mamba3State) -> MambaLayerCache {
        let [batch, h, p, n] = state.ssm.dims();
        MambaLayerCache {
            conv_state: Tensor::cat(vec![state.angle, state.k, state.v], 2),
            ssm_state: state.ssm.reshape([batch, h * p, n]),
            step_weights: None,
        }
    }

    /// in_proj's output split along its last axis into `[z, x, B, C, dt, A, λ, θ]` (the
    /// reference's order; B and C flat over groups).
    fn split<const D: usize>(&self, proj: Tensor<D>) -> [Tensor<D>; 8] {
        let (di, gn, h) = (self.d_inner, self.n_groups * self.d_state, self.n_heads);
        proj.split_with_sizes(vec![di, di, gn, gn, h, h, h, self.n_angles], D - 1)
            .try_into()
            .expect("eight parts")
    }

    /// `(Δ A, Δ)` from the raw `A` and `dt` projections (any rank, heads last): `A = −max(f(a),
    /// A_floor)` with the heavy-tail `f`, `Δ = softplus(dt + dt_bias)`.
    fn decay_and_step<const D: usize>(
        &self,
        dd_a: Tensor<D>,
        dd_dt: Tensor<D>,
    ) -> (Tensor<D>, Tensor<D>) {
        let a = heavy_tail(dd_a).neg().clamp_max(-self.a_floor);
        let dt = softplus(dd_dt + self.dt_bias.val().unsqueeze(), 1.0);
        (a * dt.clone(), dt)
    }

    /// The parallel forward over a sequence (B, L, d_model) -> (B, L, d_model).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_cached(x, None).0
    }

    /// The parallel forward continuing from `cache` (zeros when `None`); returns the output and
    /// the state after the last step.
    pub fn forward_cached(
        &self,
        x: Tensor<3>,
        cache: Option<MambaLayerCache>,
    ) -> (Tensor<3>, MambaLayerCache) {
        let (out, cache, _) = self.forward_traced(x, cache);
        (out, cache)
    }

    /// [`Mamba3Mixer::forward_cached`], also returning the scan's arguments.
    pub fn forward_traced(
        &self,
        x: Tensor<3>,
        cache: Option<MambaLayerCache>,
    ) -> (Tensor<3>, MambaLayerCache, Mamba3Trace) {
        self.forward_packed_traced(x, cache, None)
    }

    /// The parallel forward over rows of packed sequences (`seq_idx` (B, L), non-decreasing
    /// along a row): at each new sequence the angles restart, the previous token's share of the
    /// trapezoid is dropped and the SSD restarts. `cache` is each row's first sequence's
    /// starting state; the returned state is each row's last sequence's.
    pub fn forward_packed(
        &self,
        x: Tensor<3>,
        seq_idx: Tensor<2, Int>,
        cache: Option<MambaLayerCache>,
    ) -> (Tensor<3>, MambaLayerCache) {
        let (out, cache, _) = self.forward_packed_traced(x, cache, Some(seq_idx));
        (out, cache)
    }

    fn forward_packed_traced(
        &self,
        x: Tensor<3>,
        cache: Option<MambaLayerCache>,
        seq_idx: Option<Tensor<2, Int>>,
    ) -> (Tensor<3>, MambaLayerCache, Mamba3Trace) {
        let [batch, len, _] = x.dims();
        let device = x.device();
        let (di, n, h, p, g, s) = (
            self.d_inner,
            self.d_state,
            self.n_heads,
            self.head_dim,
            self.n_groups,
            self.n_angles,
        );
        let [z, v, b, c, dd_dt, dd_a, trap_raw, angles] = self.split(self.in_proj.forward(x));
        let z = z.reshape([batch, len, h, p]);
        let v = v.reshape([batch, len, h, p]);
        let b = self.B_norm.forward(b.reshape([batch, len, g, n]));
        let c = self.C_norm.forward(c.reshape([batch, len, g, n]));
        let (adt, dt) = self.decay_and_step(dd_a, dd_dt); // (B, L, H)
        let trap = sigmoid(trap_raw.clone());
        let state = cache.map(|c| self.unpack(c));

        // Where a new sequence starts (packed rows): (B, L) with 1 at each start after the
        // first token.
        let starts = seq_idx.as_ref().map(|si| {
            let si = si.clone().float();
            let prev = Tensor::cat(
                vec![si.clone().narrow(1, 0, 1), si.clone().narrow(1, 0, len - 1)],
                1,
            );
            si.not_equal(prev).float()
        });

        // The trapezoid's second share: (1 − λ_{t+1}) Δ_{t+1} of pair t, 0 at the row's end
        // and before a new sequence.
        let lag = dt.clone() * (trap.clone().neg() + 1.0); // (1 − λ_t) Δ_t
        let next = if len > 1 {
            Tensor::cat(
                vec![
                    lag.clone().narrow(1, 1, len - 1),
                    Tensor::zeros([batch, 1, h], &device),
                ],
                1,
            )
        } else {
            Tensor::zeros([batch, 1, h], &device)
        };
        let next = match &starts {
            Some(st) if len > 1 => {
                let st_next = Tensor::cat(
                    vec![
                        st.clone().narrow(1, 1, len - 1),
                        Tensor::zeros([batch, 1], &device),
                    ],
                    1,
                );
                next * (st_next.neg() + 1.0).unsqueeze_dim::<3>(2)
            }
            _ => next,
        };
        let weight = dt.clone() * trap.clone() + next.clone(); // (B, L, H)

        // q and k per head, with their biases.
        let per_head = |t: Tensor<4>, bias: &Param<Tensor<3>>| {
            let t = if g == h {
                t
            } else {
                t.unsqueeze_dim::<5>(3)
                    .expand([batch, len, g, h / g, n])
                    .reshape([batch, len, h, n])
            };
            t + bias.val().reshape([1, 1, h, n])
        };
        let q = per_head(c.clone(), &self.C_bias);
        let k = per_head(b.clone(), &self.B_bias);
        // (q_t · k_t) (1 − λ_{t+1}) Δ_{t+1}: rotation-invariant, so before the rotation.
        let qk_lag = (q.clone() * k.clone()).sum_dim(3).reshape([batch, len, h]) * next;

        // The cumulative angles Θ_t (B, L, H, S), restarting at each sequence.
        let inc = (angles.clone().tanh() * PI).unsqueeze_dim::<4>(2) * dt.clone().unsqueeze_dim(3);
        let mut theta = match &seq_idx {
            None => inc.cumsum(1),
            Some(si) => {
                // Σ over s ≤ t in t's sequence: a (L, L) same-sequence lower-triangular mask.
                let si = si.clone().float();
                let same = si
                    .clone()
                    .unsqueeze_dim::<3>(2)
                    .equal(si.unsqueeze_dim::<3>(1))
                    .float()
                    * Tensor::<2>::ones([len, len], &device)
                        .tril(0)
                        .unsqueeze::<3>();
                let flat = inc.permute([0, 2, 3, 1]).reshape([batch, h * s, len]);
                same.matmul(flat.swap_dims(1, 2))
                    .reshape([batch, len, h, s])
            }
        };
        if let Some(st) = &state {
            // The carried angles continue the first sequence only.
            let first = match &seq_idx {
                None => Tensor::ones([batch, len], &device),
                Some(si) => {
                    let si = si.clone().float();
                    si.clone().equal(si.narrow(1, 0, 1)).float()
                }
            };
            theta =
                theta + st.angle.clone().unsqueeze_dim::<4>(1) * first.unsqueeze_dims::<4>(&[2, 3]);
        }
        let theta = wrap_angle(theta);
        let (cos, sin) = (theta.clone().cos(), theta.clone().sin());
        let q_rot = rotate(q, cos.clone(), sin.clone());
        let k_rot = rotate(k, cos, sin);

        // The state entering the first step: h plus the carried pair's second share.
        let h0 = state.as_ref().map(|st| {
            let share = lag.clone().narrow(1, 0, 1).reshape([batch, h, 1, 1]);
            st.ssm.clone()
                + st.v.clone().unsqueeze_dim::<4>(3) * st.k.clone().unsqueeze_dim::<4>(2) * share
        });
        let mut op = Ssd::new(
            v.clone(),
            weight,
            Tensor::zeros([h], &device),
            k_rot.clone(),
            q_rot,
        )
        .log_decay(adt.clone())
        .d(self.D.val())
        .chunk(self.chunk_size);
        if let Some(h0) = h0 {
            op = op.initial_state(h0);
        }
        if let Some(si) = seq_idx {
            op = op.seq_idx(si);
        }
        let (y, ssm) = op.run();
        let y = y - v.clone() * qk_lag.unsqueeze_dim::<4>(3);
        let y = match &self.norm {
            Some(_) => y,
            None => y * silu(z.clone()),
        };
        let flat = y.clone().reshape([batch, len, di]);
        let gated = match &self.norm {
            Some(norm) => norm.forward_norm_then_gate(flat, z.clone().reshape([batch, len, di]), h),
            None => flat,
        };
        let out = self.out_proj.forward(gated);
        let last = |t: Tensor<4>| {
            let [_, _, a, b] = t.dims();
            t.narrow(1, len - 1, 1).reshape([batch, a, b])
        };
        let cache = self.pack(Mamba3State {
            angle: last(theta),
            ssm,
            k: last(k_rot),
            v: last(v.clone()),
        });
        let trace = Mamba3Trace {
            q: c,
            k: b,
            v,
            adt: adt.swap_dims(1, 2),
            dt: dt.swap_dims(1, 2),
            trap: trap_raw.swap_dims(1, 2),
            angles,
            z,
            y,
        };
        (out, cache, trace)
    }

    /// One recurrent step (B, d_model) -> (B, d_model): the trapezoidal update of the state
    /// from the carried angles, `h`, `k` and `v`, on tensor ops (not yet one fused kernel).
    pub fn step(&self, x: Tensor<2>, cache: MambaLayerCache) -> (Tensor<2>, MambaLayerCache) {
        let [batch, _] = x.dims();
        let (di, n, h, p, g) = (
            self.d_inner,
            self.d_state,
            self.n_heads,
            self.head_dim,
            self.n_groups,
        );
        let st = self.unpack(cache);
        let [z, v, b, c, dd_dt, dd_a, trap, angles] = self.split(linear_rows(&self.in_proj, x));
        let z = z.reshape([batch, h, p]);
        let v = v.reshape([batch, h, p]);
        let b = self.B_norm.forward(b.reshape([batch, g, n]));
        let c = self.C_norm.forward(c.reshape([batch, g, n]));
        let trap = sigmoid(trap);
        let (adt, dt) = self.decay_and_step(dd_a, dd_dt); // (B, H)
        let alpha = adt.exp();
        let per_head = |t: Tensor<3>, bias: &Param<Tensor<3>>| {
            let t = if g == h {
                t
            } else {
                t.unsqueeze_dim::<4>(2)
                    .expand([batch, g, h / g, n])
                    .reshape([batch, h, n])
            };
            t + bias.val().reshape([1, h, n])
        };
        let theta =
            st.angle + (angles.tanh() * PI).unsqueeze_dim::<3>(1) * dt.clone().unsqueeze_dim(2);
        let theta = wrap_angle(theta);
        let (cos, sin) = (theta.clone().cos(), theta.clone().sin());
        let q = rotate(per_head(c, &self.C_bias), cos.clone(), sin.clone());
        let k = rotate(per_head(b, &self.B_bias), cos, sin);
        let col = |t: Tensor<2>| t.reshape([batch, h, 1, 1]);
        let outer = |v: &Tensor<3>, k: &Tensor<3>| {
            v.clone().unsqueeze_dim::<4>(3) * k.clone().unsqueeze_dim::<4>(2)
        };
        let beta = (trap.clone().neg() + 1.0) * dt.clone() * alpha.clone();
        let gamma = trap * dt;
        let ssm =
            st.ssm * col(alpha) + outer(&st.v, &st.k) * col(beta) + outer(&v, &k) * col(gamma);
        let y = (ssm.clone() * q.unsqueeze_dim::<4>(2))
            .sum_dim(3)
            .reshape([batch, h, p])
            + v.clone() * self.D.val().reshape([1, h, 1]);
        let flat = match &self.norm {
            Some(norm) => {
                norm.forward_norm_then_gate(y.reshape([batch, di]), z.reshape([batch, di]), h)
            }
            None => (y * silu(z)).reshape([batch, di]),
        };
        let out = linear_rows(&self.out_proj, flat);
        (
            out,
            self.pack(Mamba3State {
                angle: theta,
                ssm,
                k,
                v,
            }),
        )
    }
}

/// Rotates pairs `(t[2i], t[2i+1])` of the last axis by the angles `(cos, sin)[i]` for the
/// first `S` pairs (the others unrotated): the reference's pairwise rotary embedding.
fn rotate<const D: usize>(t: Tensor<D>, cos: Tensor<D>, sin: Tensor<D>) -> Tensor<D> {
    let dims = t.dims();
    let n = dims[D - 1];
    let s = cos.dims()[D - 1];
    let [even, odd] = split_pairs(t, n);
    let pad = |x: Tensor<D>, value: f32| {
        if s == n / 2 {
            return x;
        }
        let mut shape = x.dims();
        shape[D - 1] = n / 2 - s;
        Tensor::cat(
            vec![x.clone(), Tensor::full(shape, value, &x.device())],
            D - 1,
        )
    };
    let (cos, sin) = (pad(cos, 1.0), pad(sin, 0.0));
    let re = even.clone() * cos.clone() - odd.clone() * sin.clone();
    let im = even * sin + odd * cos;
    merge_pairs(re, im, dims)
}

/// The even and odd entries of the last axis (length `n`), each (.., n/2).
fn split_pairs<const D: usize>(t: Tensor<D>, n: usize) -> [Tensor<D>; 2] {
    let dims = t.dims();
    let lead: usize = dims[..D - 1].iter().product();
    let pairs = t.reshape([lead, n / 2, 2]);
    let mut half = dims;
    half[D - 1] = n / 2;
    [
        pairs.clone().narrow(2, 0, 1).reshape(half),
        pairs.narrow(2, 1, 1).reshape(half),
    ]
}

/// Interleaves `even` and `odd` (.., n/2) back into (.., n) of shape `dims`.
fn merge_pairs<const D: usize>(even: Tensor<D>, odd: Tensor<D>, dims: [usize; D]) -> Tensor<D> {
    let lead: usize = dims[..D - 1].iter().product();
    let n = dims[D - 1];
    Tensor::cat(
        vec![
            even.reshape([lead, n / 2, 1]),
            odd.reshape([lead, n / 2, 1]),
        ],
        2,
    )
    .reshape(dims)
}
