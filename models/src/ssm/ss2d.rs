//! VMamba's SS2D (Liu et al., "VMamba: Visual State Space Model", 2024): a selective scan over a
//! 2D feature map along four routes — row-major, column-major, and both reversed — whose outputs
//! are merged back onto the grid.
//!
//! ```text
//! x = in_proj(u)                         (channel-last (B, H, W, C) → d_inner [+ z for v0])
//! x = silu(depthwise_conv3×3(x))
//! xs = [rows(x), cols(x), flip(rows(x)), flip(cols(x))]              (B, 4·D, H·W)
//! [dt | B | C]_k = x_proj_k(xs_k);  dt_k = dt_proj_k(dt)             per route k
//! ys = selective_scan(xs, dt, A, B, C, D, dt_bias)   one call, B/C grouped by route (G = 4)
//! y = ys₀ + flip(ys₂) + colsᵀ(ys₁ + flip(ys₃))       (cross-merge)
//! out = out_proj(LayerNorm(y) [· silu(z) for v0])
//! ```
//!
//! The four routes run as one selective-scan call: route k's D channels form group k of the
//! scan's grouped B/C. Parameter names are the checkpoints' (`in_proj`, `conv2d`,
//! `x_proj_weight` (4, R + 2N, D), `dt_projs_weight` (4, D, R), `dt_projs_bias` (4, D),
//! `A_logs` (4·D, N), `Ds` (4·D), `out_norm`, `out_proj`).
#![allow(non_snake_case)]

use crate::io::{TensorMap, key};
use crate::ssm::mamba::dt_bias_init;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use ssm_backends::SelectiveScan;

/// The scan routes of SS2D.
pub const ROUTES: usize = 4;

/// SS2D's forward variant.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Ss2dForward {
    /// The current VMamba models (`forward_type = "v05_noz"`): no gate branch, a conv without
    /// bias by default, LayerNorm on the merged output.
    V05NoZ,
    /// The vanilla VMamba (`forward_type = "v0"`): in_proj also yields a gate `z`, the output is
    /// `LayerNorm(y) · silu(z)`.
    V0,
}

/// Configuration of an [`Ss2d`].
#[derive(Config, Debug)]
pub struct Ss2dConfig {
    /// Channels C.
    pub d_model: usize,
    /// State size N per channel.
    #[config(default = 16)]
    pub d_state: usize,
    /// Inner width `ssm_ratio · C`.
    #[config(default = 2.0)]
    pub ssm_ratio: f64,
    /// dt rank; `None` is `ceil(C / 16)`.
    pub dt_rank: Option<usize>,
    /// Side of the depthwise convolution (odd).
    #[config(default = 3)]
    pub d_conv: usize,
    /// Whether the depthwise convolution has a bias (the vanilla v0 models have one, the
    /// released v05 models none).
    #[config(default = true)]
    pub conv_bias: bool,
    /// The forward variant (default [`Ss2dForward::V05NoZ`]).
    #[config(default = "Ss2dForward::V05NoZ")]
    pub forward: Ss2dForward,
    /// Epsilon of the output LayerNorm.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
}

impl Ss2dConfig {
    /// The inner width D.
    pub fn d_inner(&self) -> usize {
        (self.ssm_ratio * self.d_model as f64) as usize
    }

    /// The dt rank, resolving "auto".
    pub fn dt_rank(&self) -> usize {
        self.dt_rank.unwrap_or(self.d_model.div_ceil(16))
    }

    /// A module with VMamba's initialisation (mamba_ssm's per route: dt bias the inverse
    /// softplus of a log-uniform dt in [0.001, 0.1], `A_logs = log(1..=N)`, `Ds = 1`).
    pub fn init(&self, device: &Device) -> Ss2d {
        let (d, n, r, c) = (self.d_inner(), self.d_state, self.dt_rank(), self.d_model);
        let gate = self.forward == Ss2dForward::V0;
        let x_bound = 1.0 / (d as f64).sqrt();
        let dt_std = 1.0 / (r as f64).sqrt();
        let inv = dt_bias_init([ROUTES, d], 0.001, 0.1, 1e-4, device);
        let logs: Vec<f32> = (0..ROUTES * d)
            .flat_map(|_| (1..=n).map(|i| (i as f32).ln()))
            .collect();
        Ss2d {
            in_proj: LinearConfig::new(c, if gate { 2 * d } else { d })
                .with_bias(false)
                .init(device),
            conv2d: Conv2dConfig::new([d, d], [self.d_conv, self.d_conv])
                .with_groups(d)
                .with_bias(self.conv_bias)
                .with_padding(PaddingConfig2d::Explicit(
                    (self.d_conv - 1) / 2,
                    (self.d_conv - 1) / 2,
                    (self.d_conv - 1) / 2,
                    (self.d_conv - 1) / 2,
                ))
                .init(device),
            x_proj_weight: Param::from_tensor(Tensor::random(
                [ROUTES, r + 2 * n, d],
                Distribution::Uniform(-x_bound, x_bound),
                device,
            )),
            dt_projs_weight: Param::from_tensor(Tensor::random(
                [ROUTES, d, r],
                Distribution::Uniform(-dt_std, dt_std),
                device,
            )),
            dt_projs_bias: Param::from_tensor(inv),
            A_logs: Param::from_tensor(Tensor::from_data(
                TensorData::new(logs, [ROUTES * d, n]),
                device,
            )),
            Ds: Param::from_tensor(Tensor::ones([ROUTES * d], device)),
            out_norm: LayerNormConfig::new(d)
                .with_epsilon(self.norm_eps)
                .init(device),
            out_proj: LinearConfig::new(d, c).with_bias(false).init(device),
            d_state: n,
            dt_rank: r,
            gate,
        }
    }

    /// A module from checkpoint tensors under `prefix` with MzeroMiko/VMamba's keys
    /// (`{prefix}.in_proj`, `conv2d`, `x_proj_weight`, `dt_projs_weight`, `dt_projs_bias`,
    /// `A_logs`, `Ds`, `out_norm`, `out_proj`), every key checked for presence and shape
    /// against this config.
    pub fn load(&self, w: &mut TensorMap, prefix: &str, device: &Device) -> crate::Result<Ss2d> {
        let mut op = self.init(device);
        let name = |n: &str| key(prefix, n);
        op.in_proj = w.linear_like(&name("in_proj"), &op.in_proj, device)?;
        op.conv2d = w.conv2d(&name("conv2d"), op.conv2d, device)?;
        op.x_proj_weight = w.param(&name("x_proj_weight"), op.x_proj_weight.dims(), device)?;
        op.dt_projs_weight =
            w.param(&name("dt_projs_weight"), op.dt_projs_weight.dims(), device)?;
        op.dt_projs_bias = w.param(&name("dt_projs_bias"), op.dt_projs_bias.dims(), device)?;
        op.A_logs = w.param(&name("A_logs"), op.A_logs.dims(), device)?;
        op.Ds = w.param(&name("Ds"), op.Ds.dims(), device)?;
        op.out_norm = w.layer_norm(&name("out_norm"), self.d_inner(), self.norm_eps, device)?;
        op.out_proj = w.linear_like(&name("out_proj"), &op.out_proj, device)?;
        Ok(op)
    }
}

/// VMamba's 2D selective-scan mixer over channel-last maps (B, H, W, C).
#[derive(Module, Debug)]
pub struct Ss2d {
    /// `in_proj`: C -> D, or C -> 2D with the gate `z` (v0); no bias.
    pub in_proj: Linear,
    /// `conv2d`: the depthwise `d_conv × d_conv` convolution over the D channels, "same" padding.
    pub conv2d: Conv2d,
    /// `x_proj_weight` (4, R + 2N, D): per route, the projection to `dt` (R), `B` and `C` (N each).
    pub x_proj_weight: Param<Tensor<3>>,
    /// `dt_projs_weight` (4, D, R): per route, the projection of `dt` from rank R to D.
    pub dt_projs_weight: Param<Tensor<3>>,
    /// `dt_projs_bias` (4, D): per route, the `dt` bias (softplus after).
    pub dt_projs_bias: Param<Tensor<2>>,
    /// `A_logs` (4·D, N): `A = −exp(A_logs)`, the D channels of route k at rows `k·D..(k+1)·D`.
    pub A_logs: Param<Tensor<2>>,
    /// `Ds` (4·D): the skip of each route's channels.
    pub Ds: Param<Tensor<1>>,
    /// `out_norm`: the LayerNorm (D) on the merged routes.
    pub out_norm: LayerNorm,
    /// `out_proj`: D -> C; no bias.
    pub out_proj: Linear,
    /// The SSM state size N per channel.
    pub d_state: usize,
    /// The rank R of the `dt` projection.
    pub dt_rank: usize,
    /// The v0 gate branch.
    pub gate: bool,
}

/// The four routes of a (B, D, H, W) map as (B, 4·D, H·W): row-major, column-major, and both
/// reversed (VMamba's cross-scan).
pub fn cross_scan(x: Tensor<4>) -> Tensor<3> {
    let [b, d, h, w] = x.dims();
    let rows = x.clone().reshape([b, d, h * w]);
    let cols = x.swap_dims(2, 3).reshape([b, d, h * w]);
    Tensor::cat(
        vec![rows.clone(), cols.clone(), rows.flip([2]), cols.flip([2])],
        1,
    )
}

/// The inverse of [`cross_scan`]'s routes, summed: (B, 4·D, H·W) → (B, D, H, W).
pub fn cross_merge(ys: Tensor<3>, h: usize, w: usize) -> Tensor<4> {
    let [b, kd, l] = ys.dims();
    let d = kd / ROUTES;
    let route = |k: usize| ys.clone().narrow(1, k * d, d);
    let rows = route(0) + route(2).flip([2]);
    let cols = route(1) + route(3).flip([2]);
    let cols = cols.reshape([b, d, w, h]).swap_dims(2, 3);
    debug_assert_eq!(l, h * w);
    rows.reshape([b, d, h, w]) + cols
}

impl Ss2d {
    /// The inner width D.
    pub fn d_inner(&self) -> usize {
        self.Ds.dims()[0] / ROUTES
    }

    /// (B, H, W, C) → (B, H, W, C).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, w, _] = x.dims();
        let (d, n, r) = (self.d_inner(), self.d_state, self.dt_rank);
        let l = h * w;
        let xz = self.in_proj.forward(x);
        let (x, z) = if self.gate {
            (xz.clone().narrow(3, 0, d), Some(silu(xz.narrow(3, d, d))))
        } else {
            (xz, None)
        };
        let x = silu(self.conv2d.forward(x.permute([0, 3, 1, 2]))); // (B, D, H, W)
        let xs = cross_scan(x); // (B, 4D, L)
        let per_route = xs.clone().reshape([b, ROUTES, d, l]);
        let x_dbl = self.x_proj_weight.val().unsqueeze::<4>().matmul(per_route); // (B, 4, R + 2N, L)
        let dts = x_dbl.clone().narrow(2, 0, r);
        let bs = x_dbl.clone().narrow(2, r, n);
        let cs = x_dbl.narrow(2, r + n, n);
        let dts = self
            .dt_projs_weight
            .val()
            .unsqueeze::<4>()
            .matmul(dts)
            .reshape([b, ROUTES * d, l]);
        let ys = SelectiveScan::new(xs, dts, self.A_logs.val().exp().neg(), bs, cs)
            .d(self.Ds.val())
            .delta_bias(self.dt_projs_bias.val().reshape([ROUTES * d]))
            .softplus(true)
            .run()
            .y;
        let y = cross_merge(ys, h, w).permute([0, 2, 3, 1]); // (B, H, W, D)
        let mut y = self.out_norm.forward(y);
        if let Some(z) = z {
            y = y * z;
        }
        self.out_proj.forward(y)
    }
}
