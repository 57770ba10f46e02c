//! The Mamba-3 mixer (Lahoti, Li, Chen, Wang, Bick, Kolter, Dao, Gu, 2026, arXiv 2603.15569;
//! state-spaces/mamba `mamba_ssm/modules/mamba3.py`), SISO and MIMO.
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
//! MIMO (`is_mimo`, rank R): each head takes R keys and queries per step (`B`, `C` and their
//! biases per rank), its input and gate spread over the ranks by learned per-channel weights,
//! `v_{t,r} = x_t ∘ W^x_r`, `z_{t,r} = z_t ∘ W^z_r`; the state takes all R rank-one updates,
//! `h_t = α_t h_{t−1} + (1 − λ_t) Δ_t α_t Σ_r k_{t−1,r} v_{t−1,r}ᵀ + λ_t Δ_t Σ_r k_{t,r} v_{t,r}ᵀ`,
//! each rank reads it, `y_{t,r} = h_t q_{t,r} + D v_{t,r}`, is gated (or normed and gated) by
//! `z_{t,r}`, and the ranks are summed back, `y_t = Σ_r y_{t,r} ∘ W^o_r`. Its rotation pairs
//! entry `i` with `i + N/2` (the reference's TileLang kernel) where SISO pairs `2i` with `2i+1`.
//!
//! The parallel form is an SSD with per-step log decays `Δ_t A_t` and input weights
//! `s_t = λ_t Δ_t + (1 − λ_{t+1}) Δ_{t+1}` (each pair `k_t v_tᵀ` enters at `t` with `λ_t Δ_t` and
//! again, decayed, at `t + 1`), less the second share at `t` itself: `y_t −= (1 − λ_{t+1})
//! Δ_{t+1} (q_t · k_t) v_t` ([`ssm_backends::Ssd::log_decay`]; with MIMO the SSD's R sub-steps
//! per step, [`ssm_backends::Ssd::rank`], and the correction `Σ_r (q_{t,r'} · k_{t,r}) v_{t,r}`).
//! The recurrent state carries the angles, `h`, and the last `k`s and `x` (for the next step's
//! trapezoid).
#![allow(non_snake_case)]

use crate::io::{TensorMap, key};
use crate::nn::{RmsNorm, RmsNormConfig, linear, linear_rows};
use crate::precision::{cast_to, widen};
use crate::ssm::SequenceMixer;
use crate::ssm::mamba::{MambaLayerCache, dt_bias_init, rescaled_out_proj};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{sigmoid, silu, softplus};
use burn::tensor::{Device, Int, Tensor};
use ssm_backends::{Mamba3StepConfig, Ssd, mamba3_decode_step, pack_mamba3_step_weights};
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
    /// Upper end of the initial step sizes' range.
    #[config(default = 0.1)]
    pub dt_max: f64,
    /// Initial step sizes below this are raised to it.
    #[config(default = 1e-4)]
    pub dt_init_floor: f64,
    /// `−A` is at least this.
    #[config(default = 1e-4)]
    pub a_floor: f64,
    /// A per-head gated RMSNorm before out_proj (mamba_ssm's `is_outproj_norm`).
    #[config(default = false)]
    pub outproj_norm: bool,
    /// The MIMO variant (mamba_ssm's `is_mimo`).
    #[config(default = false)]
    pub mimo: bool,
    /// MIMO's rank R (mamba_ssm's `mimo_rank`; ignored without `mimo`).
    #[config(default = 4)]
    pub mimo_rank: usize,
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
    /// Keys and queries per head and step: MIMO's rank, 1 for SISO.
    pub fn rank(&self) -> usize {
        if self.mimo { self.mimo_rank } else { 1 }
    }
    /// Width of in_proj's output: `2 d_inner + 2 R G N + 3 H + angles`.
    pub fn d_in_proj(&self) -> usize {
        2 * self.d_inner()
            + 2 * self.rank() * self.n_groups * self.d_state
            + 3 * self.n_heads()
            + self.n_angles()
    }

    /// The number of parameters of this mixer (in_proj, dt_bias, B/C biases and norms, the
    /// MIMO projections, D, the optional norm, out_proj), from the config alone. Saturates at
    /// `u64::MAX`.
    pub fn param_count(&self) -> u64 {
        let (d, di, h, n, r, p) = (
            self.d_model as u64,
            self.d_inner() as u64,
            self.n_heads() as u64,
            self.d_state as u64,
            self.rank() as u64,
            self.head_dim as u64,
        );
        [
            d.saturating_mul(self.d_in_proj() as u64),
            h,
            2u64.saturating_mul(h).saturating_mul(r).saturating_mul(n),
            if self.mimo {
                3u64.saturating_mul(h).saturating_mul(r).saturating_mul(p)
            } else {
                0
            },
            2 * n,
            h,
            if self.outproj_norm { di } else { 0 },
            di.saturating_mul(d),
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add)
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
        if self.mimo && self.mimo_rank == 0 {
            return invalid("mimo_rank must be at least 1".into());
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
        // MIMO rotates entry i with i + N/2 over the first N·rope_fraction/2 entries: the
        // reference's kernel needs N to split into those blocks exactly.
        let blocks = (2.0 / self.rope_fraction).round() as usize;
        if self.mimo && !self.d_state.is_multiple_of(blocks) {
            return invalid(format!(
                "MIMO needs d_state a multiple of {blocks} at rope_fraction {}, not {}",
                self.rope_fraction, self.d_state
            ));
        }
        if self.a_floor.is_nan() || self.a_floor < 0.0 {
            return invalid(format!("A_floor must be >= 0, not {}", self.a_floor));
        }
        Ok(())
    }

    /// A mixer with mamba_ssm's initialisation: `dt_bias` the inverse softplus of a log-uniform
    /// dt in [dt_min, dt_max], `B_bias = C_bias = 1`, norm weights 1, `D = 1`, MIMO's
    /// `W^x = W^o = 1/R`, `W^z = 1`, out_proj divided by `sqrt(n_layer)`.
    ///
    /// # Panics
    /// On an invalid config; call [`Mamba3MixerConfig::validate`] first for a `Result`.
    pub fn init(&self, device: &Device) -> Mamba3Mixer {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let (di, h, n, r, p) = self.sizes();
        let inv = dt_bias_init([h], self.dt_min, self.dt_max, self.dt_init_floor, device);
        let mimo = |v: f64| {
            self.mimo
                .then(|| Param::from_tensor(Tensor::full([h, r, p], v, device)))
        };
        self.assemble(Mamba3Params {
            in_proj: LinearConfig::new(self.d_model, self.d_in_proj())
                .with_bias(false)
                .init(device),
            dt_bias: Param::from_tensor(inv.detach()),
            b_bias: Param::from_tensor(Tensor::ones([h, r, n], device)),
            c_bias: Param::from_tensor(Tensor::ones([h, r, n], device)),
            mimo_x: mimo(1.0 / r as f64),
            mimo_z: mimo(1.0),
            mimo_o: mimo(1.0 / r as f64),
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
    /// `dt_bias`, `B_bias`, `C_bias`, `B_norm`, `C_norm`, `D`, `mimo_x`, `mimo_z`, `mimo_o`
    /// (with `is_mimo`), `norm` (with `is_outproj_norm`), `out_proj`), every key checked for
    /// presence and shape against this config.
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
        let (di, h, n, r, p) = self.sizes();
        let name = |s: &str| key(prefix, s);
        let mut mimo = |s: &str| -> crate::Result<Option<Param<Tensor<3>>>> {
            match self.mimo {
                true => Ok(Some(w.param(&name(s), [h, r, p], device)?)),
                false => Ok(None),
            }
        };
        let (mimo_x, mimo_z, mimo_o) = (mimo("mimo_x")?, mimo("mimo_z")?, mimo("mimo_o")?);
        Ok(self.assemble(Mamba3Params {
            in_proj: w.linear(
                &name("in_proj"),
                self.d_model,
                self.d_in_proj(),
                false,
                device,
            )?,
            dt_bias: w.param(&name("dt_bias"), [h], device)?,
            b_bias: w.param(&name("B_bias"), [h, r, n], device)?,
            c_bias: w.param(&name("C_bias"), [h, r, n], device)?,
            mimo_x,
            mimo_z,
            mimo_o,
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

    /// `(d_inner, heads, N, R, P)`.
    fn sizes(&self) -> (usize, usize, usize, usize, usize) {
        (
            self.d_inner(),
            self.n_heads(),
            self.d_state,
            self.rank(),
            self.head_dim,
        )
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
            mimo_x: p.mimo_x,
            mimo_z: p.mimo_z,
            mimo_o: p.mimo_o,
            norm: p.norm,
            out_proj: p.out_proj,
            d_inner: self.d_inner(),
            d_state: self.d_state,
            n_heads: self.n_heads(),
            head_dim: self.head_dim,
            n_groups: self.n_groups,
            n_angles: self.n_angles(),
            rank: self.rank(),
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
    mimo_x: Option<Param<Tensor<3>>>,
    mimo_z: Option<Param<Tensor<3>>>,
    mimo_o: Option<Param<Tensor<3>>>,
    norm: Option<RmsNorm>,
    out_proj: Linear,
}

/// The Mamba-3 mixer (SISO, or MIMO of rank R). Field names are the checkpoint keys; Linear
/// weights are stored (in, out) as Burn does.
#[derive(Module, Debug)]
pub struct Mamba3Mixer {
    /// `in_proj`: d_model → `[z | x | B | C | dt | A | λ | θ]`, 2 d_inner + 2 R G N + 3 H + S;
    /// weight (d_model, 2 d_inner + 2 R G N + 3 H + S), no bias.
    pub in_proj: Linear,
    /// `dt_bias` (H): added to dt before the softplus, `Δ = softplus(dt + dt_bias)`.
    pub dt_bias: Param<Tensor<1>>,
    /// (H, R, N): the bias added to the normed B (the "key"), per head and rank.
    pub B_bias: Param<Tensor<3>>,
    /// (H, R, N): the bias added to the normed C (the "query").
    pub C_bias: Param<Tensor<3>>,
    /// `B_norm`: the RMSNorm of B over the state (weight (N)), before `B_bias`.
    pub B_norm: RmsNorm,
    /// `C_norm`: the RMSNorm of C over the state (weight (N)), before `C_bias`.
    pub C_norm: RmsNorm,
    /// `D` (H): the per-head skip term `D v` added to the state's read-out.
    pub D: Param<Tensor<1>>,
    /// MIMO's (H, R, P) weights spreading x over the ranks (`W^x`).
    pub mimo_x: Option<Param<Tensor<3>>>,
    /// MIMO's (H, R, P) weights spreading the gate z over the ranks (`W^z`).
    pub mimo_z: Option<Param<Tensor<3>>>,
    /// MIMO's (H, R, P) weights summing the ranks' outputs (`W^o`).
    pub mimo_o: Option<Param<Tensor<3>>>,
    /// The per-head gated RMSNorm before out_proj (`is_outproj_norm`).
    pub norm: Option<RmsNorm>,
    /// `out_proj`: d_inner → d_model; weight (d_inner, d_model), no bias.
    pub out_proj: Linear,
    /// Inner width, `expand * d_model` = H·P.
    pub d_inner: usize,
    /// SSM state size N.
    pub d_state: usize,
    /// Heads H, `d_inner / head_dim`.
    pub n_heads: usize,
    /// Channels per head P (mamba_ssm's `headdim`).
    pub head_dim: usize,
    /// Groups G of heads sharing B and C (mamba_ssm's `ngroups`).
    pub n_groups: usize,
    /// Rotation angles S per step, half the rotated share of the state (mamba_ssm's
    /// `num_rope_angles`).
    pub n_angles: usize,
    /// Keys and queries per head and step (MIMO's R; 1 for SISO).
    pub rank: usize,
    /// `−A` is at least this (mamba_ssm's `A_floor`).
    pub a_floor: f64,
    /// SSD chunk length of the parallel forward.
    pub chunk_size: usize,
}

/// The scan's arguments and result in one forward, in the reference kernels' layout
/// (`mamba3_siso_combined`, `mamba3_mimo`).
#[derive(Debug, Clone)]
pub struct Mamba3Trace {
    /// The normed C, the queries, before `C_bias` (B, L, R, G, N).
    pub q: Tensor<5>,
    /// The normed B, the keys, before `B_bias` (B, L, R, G, N).
    pub k: Tensor<5>,
    /// x (B, L, H, P).
    pub v: Tensor<4>,
    /// `Δ A`, the per-step log decay (B, H, L).
    pub adt: Tensor<3>,
    /// The step `Δ = softplus(dt + dt_bias)` (B, H, L).
    pub dt: Tensor<3>,
    /// λ before its sigmoid (B, H, L).
    pub trap: Tensor<3>,
    /// The raw angles (B, L, S), before tanh (one set for all heads).
    pub angles: Tensor<3>,
    /// The gate z (B, L, H, P).
    pub z: Tensor<4>,
    /// The scan's output (B, L, H, P), what enters out_proj: with `D v`, gated (after the
    /// norm with `outproj_norm`) and, with MIMO, summed over the ranks.
    pub y: Tensor<4>,
}

/// The recurrent state of a Mamba-3 mixer, unpacked from a [`MambaLayerCache`].
struct Mamba3State {
    /// Θ (B, H, S).
    angle: Tensor<3>,
    /// h (B, H, P, N).
    ssm: Tensor<4>,
    /// The last rotated keys (B, H, R, N) and x (B, H, P).
    k: Tensor<4>,
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
        let (h, p, n, s, r) = (
            self.n_heads,
            self.head_dim,
            self.d_state,
            self.n_angles,
            self.rank,
        );
        MambaLayerCache {
            conv_state: Tensor::zeros([batch, h, s + r * n + p], device),
            ssm_state: Tensor::zeros([batch, h * p, n], device),
            step_weights: None,
        }
    }

    /// The state in a [`MambaLayerCache`]: `conv_state` holds `[Θ | k_1 … k_R | x]` per head
    /// (B, H, S + R·N + P), `ssm_state` h as (B, H·P, N), as Mamba2's.
    fn unpack(&self, cache: MambaLayerCache) -> Mamba3State {
        let (h, p, n, s, r) = (
            self.n_heads,
            self.head_dim,
            self.d_state,
            self.n_angles,
            self.rank,
        );
        let c = cache.conv_state;
        let batch = c.dims()[0];
        Mamba3State {
            angle: c.clone().narrow(2, 0, s),
            k: c.clone().narrow(2, s, r * n).reshape([batch, h, r, n]),
            v: c.narrow(2, s + r * n, p),
            ssm: cache.ssm_state.reshape([batch, h, p, n]),
        }
    }

    fn pack(&self, state: Mamba3State) -> MambaLayerCache {
        let [batch, h, p, n] = state.ssm.dims();
        let k = state.k.reshape([batch, h, self.rank * n]);
        MambaLayerCache {
            conv_state: Tensor::cat(vec![state.angle, k, state.v], 2),
            ssm_state: state.ssm.reshape([batch, h * p, n]),
            step_weights: None,
        }
    }

    /// in_proj's output split along its last axis into `[z, x, B, C, dt, A, λ, θ]` (the
    /// reference's order; B and C flat over ranks and groups).
    fn split<const D: usize>(&self, proj: Tensor<D>) -> [Tensor<D>; 8] {
        let (di, h) = (self.d_inner, self.n_heads);
        let rgn = self.rank * self.n_groups * self.d_state;
        proj.split_with_sizes(vec![di, di, rgn, rgn, h, h, h, self.n_angles], D - 1)
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
        // In f32 whatever the activations' dtype (the decays feed exp(Δ A)).
        let a = heavy_tail(widen(dd_a)).neg().clamp_max(-self.a_floor);
        let dt = softplus(widen(dd_dt) + widen(self.dt_bias.val()).unsqueeze(), 1.0);
        (a * dt.clone(), dt)
    }

    /// The projections' dtype.
    fn dtype(&self) -> burn::tensor::DType {
        self.out_proj.weight.dtype()
    }

    /// A MIMO weight (H, R, P) shaped to broadcast against (.., R, H, P) of rank `D`.
    fn rank_weight<const D: usize>(&self, w: &Param<Tensor<3>>) -> Tensor<D> {
        let mut shape = [1; D];
        shape[D - 3] = self.rank;
        shape[D - 2] = self.n_heads;
        shape[D - 1] = self.head_dim;
        w.val().swap_dims(0, 1).reshape(shape)
    }

    /// x or z (.., H, P) spread over the ranks (.., R, H, P) by a MIMO weight (SISO: R = 1,
    /// unweighted).
    fn spread<const D: usize, const E: usize>(
        &self,
        t: Tensor<D>,
        w: &Option<Param<Tensor<3>>>,
    ) -> Tensor<E> {
        let t = t.unsqueeze_dim::<E>(D - 2);
        match w {
            Some(w) => t * self.rank_weight::<E>(w),
            None => t,
        }
    }

    /// The ranks' outputs (.., R, H, P) summed back by `W^o` to (.., H, P) (SISO: the one rank).
    fn gather<const D: usize, const E: usize>(&self, y: Tensor<D>) -> Tensor<E> {
        let y = match &self.mimo_o {
            Some(w) => (y * self.rank_weight::<D>(w)).sum_dim(D - 3),
            None => y,
        };
        y.squeeze_dim(D - 3)
    }

    /// The normed B or C (.., R, G, N) per head (.., R, H, N) with its bias (H, R, N).
    fn per_head<const D: usize, const E: usize>(
        &self,
        t: Tensor<D>,
        bias: &Param<Tensor<3>>,
    ) -> Tensor<D> {
        let (g, h, n, r) = (self.n_groups, self.n_heads, self.d_state, self.rank);
        let mut dims = t.dims();
        let t = if g == h {
            t
        } else {
            let mut wide = [0; E];
            wide[..D - 1].copy_from_slice(&dims[..D - 1]);
            wide[D - 2] = g;
            wide[D - 1] = h / g;
            wide[D] = n;
            dims[D - 2] = h;
            t.unsqueeze_dim::<E>(D - 1).expand(wide).reshape(dims)
        };
        let mut shape = [1; D];
        shape[D - 3] = r;
        shape[D - 2] = h;
        shape[D - 1] = n;
        t + bias.val().swap_dims(0, 1).reshape(shape)
    }

    /// Rotates q or k (.., N) by the angles `(cos, sin)` (.., S): SISO pairs `(2i, 2i+1)`,
    /// MIMO pairs `(i, i + N/2)`, each as the reference's kernel does.
    fn rotate<const D: usize>(&self, t: Tensor<D>, cos: Tensor<D>, sin: Tensor<D>) -> Tensor<D> {
        match self.mimo_x.is_some() {
            false => rotate_pairs(t, cos, sin),
            true => rotate_halves(t, cos, sin),
        }
    }

    /// The gate of the ranks' outputs (.., R, H, P) by `z` spread over them, after the per-head
    /// norm when the mixer has it; `rows` the product of the leading axes.
    fn gate<const D: usize>(&self, y: Tensor<D>, z: Tensor<D>) -> Tensor<D> {
        match &self.norm {
            Some(norm) => {
                let dims = y.dims();
                let rows = dims[..D - 2].iter().product::<usize>();
                let di = self.d_inner;
                norm.forward_norm_then_gate(
                    y.reshape([rows, di]),
                    z.reshape([rows, di]),
                    self.n_heads,
                )
                .reshape(dims)
            }
            None => y * silu(z),
        }
    }

    /// `Σ_r v_r k_rᵀ` (B, H, P, N) of a step's x (B, H, P), spread over the ranks, and its
    /// keys (B, H, R, N).
    fn outer(&self, x: Tensor<3>, k: Tensor<4>) -> Tensor<4> {
        let v: Tensor<4> = self.spread_state(x); // (B, H, R, P)
        v.swap_dims(2, 3).matmul(k)
    }

    /// x (B, H, P) spread over the ranks as (B, H, R, P).
    fn spread_state(&self, x: Tensor<3>) -> Tensor<4> {
        let x = x.unsqueeze_dim::<4>(2);
        match &self.mimo_x {
            Some(w) => x * w.val().unsqueeze::<4>(),
            None => x,
        }
    }

    /// One recurrent step (B, d_model) -> (B, d_model): in_proj, the fused Mamba-3 step
    /// ([`mamba3_decode_step`]: the B/C norms, the angles and rotation, the trapezoidal update
    /// of the state from the carried keys and x, the read-out, norm, gate and the sum over the
    /// ranks; one kernel launch on the GPU backends), out_proj.
    pub fn step(&self, x: Tensor<2>, cache: MambaLayerCache) -> (Tensor<2>, MambaLayerCache) {
        let weights = cache.step_weights.unwrap_or_else(|| self.step_weights());
        let proj = linear_rows(&self.in_proj, x);
        let (y, conv_state, ssm_state) = mamba3_decode_step(
            proj,
            cache.conv_state,
            cache.ssm_state,
            weights.clone(),
            Mamba3StepConfig {
                heads: self.n_heads,
                groups: self.n_groups,
                rank: self.rank,
                angles: self.n_angles,
                mimo: self.mimo_x.is_some(),
                outproj_norm: self.norm.is_some(),
                a_floor: self.a_floor as f32,
                eps: self.B_norm.eps as f32,
            },
        );
        let out = linear_rows(&self.out_proj, cast_to(y, self.dtype()));
        (
            out,
            MambaLayerCache {
                conv_state,
                ssm_state,
                step_weights: Some(weights),
            },
        )
    }

    /// This mixer's decode weights in the packed layout of the fused step (SISO: ones for the
    /// MIMO weights; ones for the output norm's weight when there is none).
    pub fn step_weights(&self) -> Tensor<1> {
        let (h, r, p) = (self.n_heads, self.rank, self.head_dim);
        let device = self.D.device();
        let mimo = |w: &Option<Param<Tensor<3>>>| {
            w.as_ref()
                .map(|w| w.val())
                .unwrap_or_else(|| Tensor::ones([h, r, p], &device))
        };
        pack_mamba3_step_weights(
            self.dt_bias.val(),
            self.B_bias.val(),
            self.C_bias.val(),
            self.B_norm.weight.val(),
            self.C_norm.weight.val(),
            self.D.val(),
            mimo(&self.mimo_x),
            mimo(&self.mimo_z),
            mimo(&self.mimo_o),
            self.norm
                .as_ref()
                .map(|n| n.weight.val())
                .unwrap_or_else(|| Tensor::ones([h * p], &device)),
        )
    }
}

impl SequenceMixer for Mamba3Mixer {
    type Trace = Mamba3Trace;

    fn forward_full(
        &self,
        x: Tensor<3>,
        cache: Option<MambaLayerCache>,
        seq_idx: Option<Tensor<2, Int>>,
    ) -> (Tensor<3>, MambaLayerCache, Mamba3Trace) {
        let [batch, len, _] = x.dims();
        let device = x.device();
        let (di, n, h, p, g, s, r) = (
            self.d_inner,
            self.d_state,
            self.n_heads,
            self.head_dim,
            self.n_groups,
            self.n_angles,
            self.rank,
        );
        // The projections run in the weights' dtype, the core between them in f32 (its angles,
        // trapezoid and MIMO sums are not written for half precision).
        let [z, x_in, b, c, dd_dt, dd_a, trap_raw, angles] =
            self.split(widen(linear(&self.in_proj, x)));
        let z = z.reshape([batch, len, h, p]);
        let x_in = x_in.reshape([batch, len, h, p]);
        let b = self.B_norm.forward(b.reshape([batch, len, r, g, n]));
        let c = self.C_norm.forward(c.reshape([batch, len, r, g, n]));
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

        // Queries and keys (B, L, R, H, N) with their biases; x spread over the ranks.
        let q = self.per_head::<5, 6>(c.clone(), &self.C_bias);
        let k = self.per_head::<5, 6>(b.clone(), &self.B_bias);
        let v: Tensor<5> = self.spread(x_in.clone(), &self.mimo_x);
        // The second share of each step's own pairs, Σ_r (q_{t,r'} · k_{t,r}) v_{t,r} times
        // (1 − λ_{t+1}) Δ_{t+1}: rotation-invariant, so before the rotation.
        let next5 = next.reshape([batch, len, 1, h, 1]);
        let own = (if r == 1 {
            (q.clone() * k.clone()).sum_dim(4) * v.clone()
        } else {
            let qk = q
                .clone()
                .permute([0, 1, 3, 2, 4])
                .matmul(k.clone().permute([0, 1, 3, 4, 2])); // (B, L, H, R, R)
            qk.matmul(v.clone().permute([0, 1, 3, 2, 4]))
                .permute([0, 1, 3, 2, 4])
        }) * next5;

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
        let cos = theta.clone().cos().unsqueeze_dim::<5>(2);
        let sin = theta.clone().sin().unsqueeze_dim::<5>(2);
        let q_rot = self.rotate(q, cos.clone(), sin.clone());
        let k_rot = self.rotate(k, cos, sin);

        // The state entering the first step: h plus the carried pairs' second share.
        let h0 = state.as_ref().map(|st| {
            let share = lag.clone().narrow(1, 0, 1).reshape([batch, h, 1, 1]);
            st.ssm.clone() + self.outer(st.v.clone(), st.k.clone()) * share
        });
        let mut op = Ssd::new(
            v.clone().reshape([batch, len * r, h, p]),
            weight,
            Tensor::zeros([h], &device),
            k_rot.clone().reshape([batch, len * r, h, n]),
            q_rot.reshape([batch, len * r, h, n]),
        )
        .log_decay(adt.clone())
        .d(self.D.val())
        .chunk(self.chunk_size)
        .rank(r);
        if let Some(h0) = h0 {
            op = op.initial_state(h0);
        }
        if let Some(si) = seq_idx {
            op = op.seq_idx(si);
        }
        let (y, ssm) = op.run();
        let y = y.reshape([batch, len, r, h, p]) - own;
        let y: Tensor<4> = self.gather(self.gate(y, self.spread(z.clone(), &self.mimo_z)));
        let out = linear(
            &self.out_proj,
            cast_to(y.clone().reshape([batch, len, di]), self.dtype()),
        );
        let cache = self.pack(Mamba3State {
            angle: theta.narrow(1, len - 1, 1).reshape([batch, h, s]),
            ssm,
            k: k_rot
                .narrow(1, len - 1, 1)
                .reshape([batch, r, h, n])
                .swap_dims(1, 2),
            v: x_in.clone().narrow(1, len - 1, 1).reshape([batch, h, p]),
        });
        let trace = Mamba3Trace {
            q: c,
            k: b,
            v: x_in,
            adt: adt.swap_dims(1, 2),
            dt: dt.swap_dims(1, 2),
            trap: trap_raw.swap_dims(1, 2),
            angles,
            z,
            y,
        };
        (out, cache, trace)
    }
}

/// Rotates pairs `(t[2i], t[2i+1])` of the last axis by the angles `(cos, sin)[i]` for the
/// first `S` pairs (the others unrotated): the reference's pairwise rotary embedding (SISO).
fn rotate_pairs<const D: usize>(t: Tensor<D>, cos: Tensor<D>, sin: Tensor<D>) -> Tensor<D> {
    let dims = t.dims();
    let n = dims[D - 1];
    let [even, odd] = split_pairs(t, n);
    let (cos, sin) = pad_angles(cos, sin, n / 2);
    let re = even.clone() * cos.clone() - odd.clone() * sin.clone();
    let im = even * sin + odd * cos;
    merge_pairs(re, im, dims)
}

/// Rotates pairs `(t[i], t[i + N/2])` of the last axis by `(cos, sin)[i]` for the first `S`
/// (the others unrotated): the rotate-half convention of the reference's MIMO kernel.
fn rotate_halves<const D: usize>(t: Tensor<D>, cos: Tensor<D>, sin: Tensor<D>) -> Tensor<D> {
    let half = t.dims()[D - 1] / 2;
    let (first, second) = (
        t.clone().narrow(D - 1, 0, half),
        t.narrow(D - 1, half, half),
    );
    let (cos, sin) = pad_angles(cos, sin, half);
    let re = first.clone() * cos.clone() - second.clone() * sin.clone();
    let im = first * sin + second * cos;
    Tensor::cat(vec![re, im], D - 1)
}

/// `(cos, sin)` of S angles padded with `(1, 0)` to `width` (the unrotated pairs).
fn pad_angles<const D: usize>(
    cos: Tensor<D>,
    sin: Tensor<D>,
    width: usize,
) -> (Tensor<D>, Tensor<D>) {
    let s = cos.dims()[D - 1];
    let pad = |x: Tensor<D>, value: f32| {
        if s == width {
            return x;
        }
        let mut shape = x.dims();
        shape[D - 1] = width - s;
        Tensor::cat(
            vec![x.clone(), Tensor::full(shape, value, &x.device())],
            D - 1,
        )
    };
    (pad(cos, 1.0), pad(sin, 0.0))
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
