//! The Mamba2 mixer (Dao & Gu, 2024; mamba_ssm's `Mamba2`, transformers' `Mamba2Mixer`).
//!
//! `in_proj` gives `[z | xBC | dt]`; a causal depthwise conv and SiLU run over all of
//! `xBC = [x | B | C]`; heads of `head_dim` P channels share a scalar `A_h = -exp(A_log_h)` and a
//! step `dt_h = softplus(dt + dt_bias_h)` (clamped to the configured limits); `n_groups` G groups
//! of heads share B and C. The SSD scan ([`ssm_backends::ssd`]) gives `y = SSD(x) + D_h x`, then
//! the gated RMSNorm `norm(y * silu(z))` per group of `d_inner / G` features and `out_proj`.
#![allow(non_snake_case)]

use crate::io::{TensorMap, key};
use crate::nn::{RmsNorm, RmsNormConfig, linear, linear_rows};
use crate::precision::widen;
use crate::ssm::SequenceMixer;
use crate::ssm::mamba::{Conv1dParams, MambaLayerCache, dt_bias_init, rescaled_out_proj};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::softplus;
use burn::tensor::{Device, Distribution, Int, Tensor};
use ssm_backends::Ssd;
use ssm_backends::{Mamba2StepConfig, mamba2_decode_step, pack_mamba2_step_weights};

/// Configuration of a [`Mamba2Mixer`] (mamba_ssm's `Mamba2` arguments).
#[derive(Config, Debug)]
pub struct Mamba2MixerConfig {
    /// Model width.
    pub d_model: usize,
    /// SSM state size N.
    #[config(default = 128)]
    pub d_state: usize,
    /// Width K of the causal depthwise convolution.
    #[config(default = 4)]
    pub d_conv: usize,
    /// Inner width is `expand * d_model`.
    #[config(default = 2)]
    pub expand: usize,
    /// Channels per head P.
    #[config(default = 64)]
    pub head_dim: usize,
    /// Groups G of heads sharing B and C.
    #[config(default = 1)]
    pub n_groups: usize,
    /// SSD chunk length.
    #[config(default = 256)]
    pub chunk_size: usize,
    /// Range of the initial step sizes (log-uniform).
    #[config(default = 0.001)]
    pub dt_min: f64,
    /// Upper end of the initial step sizes' range (transformers' `time_step_max`).
    #[config(default = 0.1)]
    pub dt_max: f64,
    /// Initial step sizes below this are raised to it (transformers' `time_step_floor`).
    #[config(default = 1e-4)]
    pub dt_init_floor: f64,
    /// The steps are clamped to `[dt_limit_min, dt_limit_max]` (`None`: no upper limit).
    #[config(default = 0.0)]
    pub dt_limit_min: f64,
    /// Upper clamp of the steps (mamba_ssm's `dt_limit[1]`, transformers' `time_step_limit`);
    /// `None`: no upper limit.
    pub dt_limit_max: Option<f64>,
    /// Range of the initial `-A` (uniform).
    #[config(default = 1.0)]
    pub a_init_min: f64,
    /// Upper end of the initial `-A` range (mamba_ssm's `A_init_range[1]`).
    #[config(default = 16.0)]
    pub a_init_max: f64,
    /// Bias on the convolution.
    #[config(default = true)]
    pub conv_bias: bool,
    /// Bias on in_proj and out_proj.
    #[config(default = false)]
    pub bias: bool,
    /// Epsilon of the gated norm.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Number of layers of the network, for the `1/sqrt(n_layer)` rescale of out_proj.
    #[config(default = 1)]
    pub n_layer: usize,
}

impl Mamba2MixerConfig {
    /// The inner width `expand * d_model`.
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }
    /// Heads: `d_inner / head_dim`.
    pub fn n_heads(&self) -> usize {
        self.d_inner() / self.head_dim.max(1)
    }
    /// Channels of the conv: `d_inner + 2 G N`.
    pub fn conv_dim(&self) -> usize {
        self.d_inner() + 2 * self.n_groups * self.d_state
    }
    /// Width of in_proj's output: `2 d_inner + 2 G N + H`.
    pub fn d_in_proj(&self) -> usize {
        2 * self.d_inner() + 2 * self.n_groups * self.d_state + self.n_heads()
    }

    /// The number of parameters of this mixer (in_proj, conv1d, dt_bias, A_log, D, the gated
    /// norm, out_proj), from the config alone. Saturates at `u64::MAX`.
    pub fn param_count(&self) -> u64 {
        let (d, di, h, k) = (
            self.d_model as u64,
            self.d_inner() as u64,
            self.n_heads() as u64,
            self.d_conv as u64,
        );
        let (proj, conv) = (self.d_in_proj() as u64, self.conv_dim() as u64);
        let bias = |on: bool, n: u64| if on { n } else { 0 };
        [
            d.saturating_mul(proj).saturating_add(bias(self.bias, proj)),
            conv.saturating_mul(k)
                .saturating_add(bias(self.conv_bias, conv)),
            3 * h,
            di,
            di.saturating_mul(d).saturating_add(bias(self.bias, d)),
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add)
    }

    /// Rejects impossible settings with a message naming the field.
    pub fn validate(&self) -> crate::Result<()> {
        crate::error::require_nonzero(&[
            ("d_model", self.d_model),
            ("d_state", self.d_state),
            ("d_conv", self.d_conv),
            ("expand", self.expand),
            ("head_dim", self.head_dim),
            ("n_groups", self.n_groups),
            ("chunk_size", self.chunk_size),
        ])?;
        let di = self.d_inner();
        if !di.is_multiple_of(self.head_dim) {
            return Err(crate::ModelError::InvalidConfig(format!(
                "d_inner {di} is not a multiple of head_dim {}",
                self.head_dim
            )));
        }
        if !self.n_heads().is_multiple_of(self.n_groups) {
            return Err(crate::ModelError::InvalidConfig(format!(
                "{} heads cannot be split into n_groups = {}",
                self.n_heads(),
                self.n_groups
            )));
        }
        if let Some(max) = self.dt_limit_max
            && (max.is_nan() || max < self.dt_limit_min)
        {
            return Err(crate::ModelError::InvalidConfig(format!(
                "time step limits must satisfy min <= max, found {} and {max}",
                self.dt_limit_min
            )));
        }
        if self.dt_limit_min.is_nan() || self.dt_limit_min < 0.0 {
            return Err(crate::ModelError::InvalidConfig(format!(
                "time step limit min must be >= 0, found {}",
                self.dt_limit_min
            )));
        }
        Ok(())
    }

    /// A mixer with mamba_ssm's initialisation: `dt_bias` the inverse softplus of a log-uniform
    /// dt in [dt_min, dt_max], `A_log = log(U(a_init_min, a_init_max))`, `D = 1`, norm weight 1,
    /// out_proj divided by `sqrt(n_layer)`.
    ///
    /// # Panics
    /// On an invalid config; call [`Mamba2MixerConfig::validate`] first for a `Result`.
    pub fn init(&self, device: &Device) -> Mamba2Mixer {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let (di, h, k) = (self.d_inner(), self.n_heads(), self.d_conv);
        let inv = dt_bias_init([h], self.dt_min, self.dt_max, self.dt_init_floor, device);
        let a = Tensor::<1>::random(
            [h],
            Distribution::Uniform(self.a_init_min, self.a_init_max),
            device,
        );
        let out_proj = rescaled_out_proj(di, self.d_model, self.bias, self.n_layer, device);
        let bound = 1.0 / (k as f64).sqrt();
        let conv = self.conv_dim();
        self.assemble(Mamba2Params {
            in_proj: LinearConfig::new(self.d_model, self.d_in_proj())
                .with_bias(self.bias)
                .init(device),
            conv1d: Conv1dParams {
                weight: Param::from_tensor(Tensor::random(
                    [conv, 1, k],
                    Distribution::Uniform(-bound, bound),
                    device,
                )),
                bias: self.conv_bias.then(|| {
                    Param::from_tensor(Tensor::random(
                        [conv],
                        Distribution::Uniform(-bound, bound),
                        device,
                    ))
                }),
            },
            dt_bias: Param::from_tensor(inv.detach()),
            a_log: Param::from_tensor(a.log().detach()),
            d: Param::from_tensor(Tensor::ones([h], device)),
            norm: self.norm().init(device),
            out_proj,
        })
    }

    /// A mixer from checkpoint tensors under `prefix` (mamba_ssm's keys: `{prefix}.in_proj`,
    /// `conv1d`, `dt_bias`, `A_log`, `D`, `norm`, `out_proj`), every key checked for presence
    /// and shape against this config.
    ///
    /// # Errors
    /// An invalid config, or a key missing or of another shape (named, with both shapes).
    pub fn load(
        &self,
        w: &mut TensorMap,
        prefix: &str,
        device: &Device,
    ) -> crate::Result<Mamba2Mixer> {
        self.validate()?;
        let (di, h) = (self.d_inner(), self.n_heads());
        let name = |n: &str| key(prefix, n);
        Ok(self.assemble(Mamba2Params {
            in_proj: w.linear(
                &name("in_proj"),
                self.d_model,
                self.d_in_proj(),
                self.bias,
                device,
            )?,
            conv1d: Conv1dParams::load(
                w,
                &name("conv1d"),
                self.conv_dim(),
                self.d_conv,
                self.conv_bias,
                device,
            )?,
            dt_bias: w.param(&name("dt_bias"), [h], device)?,
            a_log: w.param(&name("A_log"), [h], device)?,
            d: w.param(&name("D"), [h], device)?,
            norm: self.norm().load(w, &name("norm"), device)?,
            out_proj: w.linear(&name("out_proj"), di, self.d_model, self.bias, device)?,
        }))
    }

    /// The gated RMSNorm's config (over d_inner).
    fn norm(&self) -> RmsNormConfig {
        RmsNormConfig::new(self.d_inner()).with_eps(self.norm_eps)
    }

    fn assemble(&self, p: Mamba2Params) -> Mamba2Mixer {
        Mamba2Mixer {
            in_proj: p.in_proj,
            conv1d: p.conv1d,
            dt_bias: p.dt_bias,
            A_log: p.a_log,
            D: p.d,
            norm: p.norm,
            out_proj: p.out_proj,
            d_inner: self.d_inner(),
            d_state: self.d_state,
            n_heads: self.n_heads(),
            head_dim: self.head_dim,
            n_groups: self.n_groups,
            d_conv: self.d_conv,
            chunk_size: self.chunk_size,
            dt_limit_min: self.dt_limit_min,
            dt_limit_max: self.dt_limit_max.unwrap_or(f64::INFINITY),
        }
    }
}

/// The parameters of a Mamba2 mixer, initialised or loaded.
struct Mamba2Params {
    in_proj: Linear,
    conv1d: Conv1dParams,
    dt_bias: Param<Tensor<1>>,
    a_log: Param<Tensor<1>>,
    d: Param<Tensor<1>>,
    norm: RmsNorm,
    out_proj: Linear,
}

/// The Mamba2 mixer. Field names are the checkpoint keys (`in_proj`, `conv1d`, `dt_bias`,
/// `A_log`, `D`, `norm`, `out_proj`); Linear weights are stored (in, out) as Burn does.
#[derive(Module, Debug)]
pub struct Mamba2Mixer {
    /// `in_proj`: d_model → `[z | xBC | dt]`, 2 d_inner + 2 G N + H; weight
    /// (d_model, 2 d_inner + 2 G N + H), a bias with the config's `bias`.
    pub in_proj: Linear,
    /// `conv1d`: the causal depthwise convolution over `xBC`, weight (d_inner + 2 G N, 1, d_conv).
    pub conv1d: Conv1dParams,
    /// `dt_bias` (H): added to dt before the softplus, `Δ_h = softplus(dt + dt_bias_h)`.
    pub dt_bias: Param<Tensor<1>>,
    /// `A_log` (H): each head's scalar decay is `A_h = -exp(A_log_h)`.
    pub A_log: Param<Tensor<1>>,
    /// `D` (H): the per-head skip term `D_h x` added to the SSD's output.
    pub D: Param<Tensor<1>>,
    /// `norm`: the gated RMSNorm `norm(y * silu(z))` over groups of d_inner / G features,
    /// weight (d_inner).
    pub norm: RmsNorm,
    /// `out_proj`: d_inner → d_model; weight (d_inner, d_model), a bias with the config's `bias`.
    pub out_proj: Linear,
    /// Inner width, `expand * d_model` = H·P.
    pub d_inner: usize,
    /// SSM state size N (transformers' `state_size`).
    pub d_state: usize,
    /// Heads H, `d_inner / head_dim` (transformers' `num_heads`).
    pub n_heads: usize,
    /// Channels per head P (mamba_ssm's `headdim`, transformers' `head_dim`).
    pub head_dim: usize,
    /// Groups G of heads sharing B and C (mamba_ssm's `ngroups`, transformers' `n_groups`).
    pub n_groups: usize,
    /// Width K of the causal convolution (transformers' `conv_kernel`).
    pub d_conv: usize,
    /// SSD chunk length of the parallel forward.
    pub chunk_size: usize,
    /// Lower clamp of the steps Δ (0: none).
    pub dt_limit_min: f64,
    /// Upper clamp of the steps Δ (infinity: none).
    pub dt_limit_max: f64,
}

/// The SSD core's arguments and result in one forward, as the reference reports them.
#[derive(Debug, Clone)]
pub struct Mamba2Trace {
    /// (B, L, H, P).
    pub x: Tensor<4>,
    /// Before `dt_bias` and softplus (B, L, H).
    pub dt: Tensor<3>,
    /// `-exp(A_log)` (H).
    pub a: Tensor<1>,
    /// (B, L, G, N).
    pub b: Tensor<4>,
    /// (B, L, G, N), like `b`.
    pub c: Tensor<4>,
    /// `SSD(x) + D x` (B, L, H, P), before the gated norm.
    pub y: Tensor<4>,
    /// The gated norm's output (B, L, d_inner).
    pub gated_norm: Tensor<3>,
}

impl Mamba2Mixer {
    /// `A = -exp(A_log)` (H).
    pub fn a(&self) -> Tensor<1> {
        self.A_log.val().exp().neg()
    }

    fn conv_dim(&self) -> usize {
        self.d_inner + 2 * self.n_groups * self.d_state
    }

    /// `softplus(dt + dt_bias)` clamped to the limits, over a trailing head axis.
    fn step_size<const D: usize>(&self, dt: Tensor<D>) -> Tensor<D> {
        // In f32 whatever the activations' dtype (the step sizes feed exp(Δ A)).
        let dt = softplus(widen(dt) + widen(self.dt_bias.val()).unsqueeze(), 1.0);
        let dt = if self.dt_limit_min > 0.0 {
            dt.clamp_min(self.dt_limit_min)
        } else {
            dt
        };
        if self.dt_limit_max.is_finite() {
            dt.clamp_max(self.dt_limit_max)
        } else {
            dt
        }
    }

    /// One recurrent step (B, d_model) -> (B, d_model): in_proj, the fused Mamba2 step
    /// ([`mamba2_decode_step`]: conv step over xBC, dt, state update, gate and group norm; one
    /// kernel launch on the GPU backends), out_proj.
    pub fn step(&self, x: Tensor<2>, cache: MambaLayerCache) -> (Tensor<2>, MambaLayerCache) {
        let weights = cache.step_weights.unwrap_or_else(|| self.step_weights());
        let zxbcdt = linear_rows(&self.in_proj, x);
        let (y, conv_state, ssm_state) = mamba2_decode_step(
            zxbcdt,
            cache.conv_state,
            cache.ssm_state,
            weights.clone(),
            Mamba2StepConfig {
                heads: self.n_heads,
                groups: self.n_groups,
                dt_min: self.dt_limit_min as f32,
                dt_max: self.dt_limit_max as f32,
                eps: self.norm.eps as f32,
            },
        );
        (
            linear_rows(&self.out_proj, y),
            MambaLayerCache {
                conv_state,
                ssm_state,
                step_weights: Some(weights),
            },
        )
    }

    /// This mixer's decode weights in the packed layout of the fused step.
    pub fn step_weights(&self) -> Tensor<1> {
        pack_mamba2_step_weights(
            self.conv1d.filters(),
            self.conv1d.bias_or_zeros(),
            self.dt_bias.val(),
            self.a(),
            self.D.val(),
            self.norm.weight.val(),
        )
    }
}

impl SequenceMixer for Mamba2Mixer {
    type Trace = Mamba2Trace;

    fn forward_full(
        &self,
        x: Tensor<3>,
        cache: Option<MambaLayerCache>,
        seq_idx: Option<Tensor<2, Int>>,
    ) -> (Tensor<3>, MambaLayerCache, Mamba2Trace) {
        let [batch, len, _] = x.dims();
        let (di, n, h, p, g) = (
            self.d_inner,
            self.d_state,
            self.n_heads,
            self.head_dim,
            self.n_groups,
        );
        let conv = self.conv_dim();
        let zxbcdt = linear(&self.in_proj, x);
        let z = zxbcdt.clone().narrow(2, 0, di);
        let xbc = zxbcdt.clone().narrow(2, di, conv).swap_dims(1, 2); // (B, conv, L)
        let dt_raw = zxbcdt.narrow(2, di + conv, h); // (B, L, H)
        let (conv_prev, h0) = match cache {
            Some(c) => (
                Some(c.conv_state),
                Some(c.ssm_state.reshape([batch, h, p, n])),
            ),
            None => (None, None),
        };
        let (xbc, conv_state) = match &seq_idx {
            Some(s) => self.conv1d.causal_silu_packed(xbc, conv_prev, s.clone()),
            None => self.conv1d.causal_silu(xbc, conv_prev),
        };
        let xbc = xbc.swap_dims(1, 2); // (B, L, conv)
        let xs = xbc.clone().narrow(2, 0, di).reshape([batch, len, h, p]);
        let b = xbc.clone().narrow(2, di, g * n).reshape([batch, len, g, n]);
        let c = xbc.narrow(2, di + g * n, g * n).reshape([batch, len, g, n]);
        let dt = self.step_size(dt_raw.clone());
        let a = self.a();
        let mut op = Ssd::new(xs.clone(), dt, a.clone(), b.clone(), c.clone())
            .d(self.D.val())
            .chunk(self.chunk_size);
        if let Some(h0) = h0 {
            op = op.initial_state(h0);
        }
        if let Some(s) = seq_idx {
            op = op.seq_idx(s);
        }
        let (y, state) = op.run();
        let gated = self
            .norm
            .forward_gated(y.clone().reshape([batch, len, di]), z, g);
        let out = linear(&self.out_proj, gated.clone());
        let trace = Mamba2Trace {
            x: xs,
            dt: dt_raw,
            a,
            b,
            c,
            y,
            gated_norm: gated,
        };
        (
            out,
            MambaLayerCache {
                conv_state,
                ssm_state: state.reshape([batch, h * p, n]),
                step_weights: None,
            },
            trace,
        )
    }
}
