//! The Mamba (S6) mixer of Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State
//! Spaces" (2023), with mamba_ssm's semantics and parameter names.
//!
//! ```text
//! [x | z] = in_proj(u)
//! x       = silu(causal_depthwise_conv1d(x))
//! [dt | B | C] = x_proj(x);   dt = softplus(dt_proj(dt))
//! h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t,   y_t = (C_t . h_t + D x_t) * silu(z_t)   (A = -exp(A_log))
//! out = out_proj(y)
//! ```

// `A_log` and `D` keep the checkpoints' names; the Module derive turns field names into locals.
#![allow(non_snake_case)]

use crate::io::{TensorMap, key};
use crate::nn::{linear, linear_rows};
use crate::precision::{cast_to, widen};
use crate::ssm::SequenceMixer;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::module::conv1d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use ssm_backends::SelectiveScan;
use ssm_backends::{mamba_decode_step, pack_mamba_step_weights};

/// Configuration of a [`MambaMixer`] (mamba_ssm's `Mamba` arguments).
#[derive(Config, Debug)]
pub struct MambaMixerConfig {
    /// Model width.
    pub d_model: usize,
    /// SSM state size N.
    #[config(default = 16)]
    pub d_state: usize,
    /// Width K of the causal depthwise convolution.
    #[config(default = 4)]
    pub d_conv: usize,
    /// Inner width is `expand * d_model`.
    #[config(default = 2)]
    pub expand: usize,
    /// Rank of the dt projection; `None` is mamba_ssm's "auto", `ceil(d_model / 16)`.
    pub dt_rank: Option<usize>,
    /// Range of the initial step sizes (log-uniform).
    #[config(default = 0.001)]
    pub dt_min: f64,
    /// Upper end of the initial step sizes' range (transformers' `time_step_max`).
    #[config(default = 0.1)]
    pub dt_max: f64,
    /// Initial step sizes below this are raised to it (transformers' `time_step_floor`).
    #[config(default = 1e-4)]
    pub dt_init_floor: f64,
    /// Scale of the dt projection's initial weights.
    #[config(default = 1.0)]
    pub dt_scale: f64,
    /// Bias on the convolution.
    #[config(default = true)]
    pub conv_bias: bool,
    /// Bias on in_proj and out_proj.
    #[config(default = false)]
    pub bias: bool,
    /// Number of layers of the network, for the `1/sqrt(n_layer)` rescale of out_proj.
    #[config(default = 1)]
    pub n_layer: usize,
}

impl MambaMixerConfig {
    /// The inner width `expand * d_model`.
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }
    /// The dt rank, resolving "auto".
    pub fn dt_rank(&self) -> usize {
        self.dt_rank.unwrap_or(self.d_model.div_ceil(16))
    }

    /// The number of parameters of this mixer (in_proj, conv1d, x_proj, dt_proj, A_log, D,
    /// out_proj), from the config alone: sizes a run before anything is allocated. Saturates
    /// at `u64::MAX`.
    pub fn param_count(&self) -> u64 {
        let (d, di, n, r, k) = (
            self.d_model as u64,
            self.d_inner() as u64,
            self.d_state as u64,
            self.dt_rank() as u64,
            self.d_conv as u64,
        );
        let bias = |on: bool, n: u64| if on { n } else { 0 };
        [
            d.saturating_mul(2 * di)
                .saturating_add(bias(self.bias, 2 * di)),
            di.saturating_mul(k)
                .saturating_add(bias(self.conv_bias, di)),
            di.saturating_mul(r.saturating_add(2 * n)),
            r.saturating_mul(di).saturating_add(di),
            di.saturating_mul(n),
            di,
            di.saturating_mul(d).saturating_add(bias(self.bias, d)),
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add)
    }

    /// A mixer with mamba_ssm's initialisation: dt bias the inverse softplus of a log-uniform
    /// dt in [dt_min, dt_max], `A_log = log(1..=N)`, `D = 1`, out_proj divided by
    /// `sqrt(n_layer)`.
    pub fn init(&self, device: &Device) -> MambaMixer {
        let (in_proj, out_proj) = self.init_projections(device);
        self.assemble(in_proj, self.init_branch(device), out_proj)
    }

    /// A mixer from checkpoint tensors under `prefix` (mamba_ssm's keys: `{prefix}.in_proj`,
    /// `conv1d`, `x_proj`, `dt_proj`, `A_log`, `D`, `out_proj`), every key checked for presence
    /// and shape against this config.
    pub fn load(
        &self,
        w: &mut TensorMap,
        prefix: &str,
        device: &Device,
    ) -> crate::Result<MambaMixer> {
        let in_proj = self.load_in_proj(w, prefix, device)?;
        let branch = self.load_branch(w, prefix, &BranchKeys::FORWARD, device)?;
        let out_proj = self.load_out_proj(w, prefix, device)?;
        Ok(self.assemble(in_proj, branch, out_proj))
    }

    fn assemble(&self, in_proj: Linear, b: BranchParams, out_proj: Linear) -> MambaMixer {
        MambaMixer {
            in_proj,
            conv1d: b.conv1d,
            x_proj: b.x_proj,
            dt_proj: b.dt_proj,
            A_log: b.a_log,
            D: b.d,
            out_proj,
            d_inner: self.d_inner(),
            d_state: self.d_state,
            dt_rank: self.dt_rank(),
            d_conv: self.d_conv,
        }
    }

    /// `{prefix}.in_proj` (d_model → 2 d_inner).
    pub(crate) fn load_in_proj(
        &self,
        w: &mut TensorMap,
        prefix: &str,
        device: &Device,
    ) -> crate::Result<Linear> {
        let key = key(prefix, "in_proj");
        w.linear(&key, self.d_model, 2 * self.d_inner(), self.bias, device)
    }

    /// `{prefix}.out_proj` (d_inner → d_model).
    pub(crate) fn load_out_proj(
        &self,
        w: &mut TensorMap,
        prefix: &str,
        device: &Device,
    ) -> crate::Result<Linear> {
        let key = key(prefix, "out_proj");
        w.linear(&key, self.d_inner(), self.d_model, self.bias, device)
    }

    /// One selective-SSM branch from checkpoint tensors under `prefix`, named by `keys`.
    pub(crate) fn load_branch(
        &self,
        w: &mut TensorMap,
        prefix: &str,
        keys: &BranchKeys,
        device: &Device,
    ) -> crate::Result<BranchParams> {
        let (di, n, r, k) = (self.d_inner(), self.d_state, self.dt_rank(), self.d_conv);
        let name = |n: &str| key(prefix, n);
        Ok(BranchParams {
            conv1d: Conv1dParams::load(w, &name(keys.conv1d), di, k, self.conv_bias, device)?,
            x_proj: w.linear(&name(keys.x_proj), di, r + 2 * n, false, device)?,
            dt_proj: w.linear(&name(keys.dt_proj), r, di, true, device)?,
            a_log: w.param(&name(keys.a_log), [di, n], device)?,
            d: w.param(&name(keys.d), [di], device)?,
        })
    }

    /// in_proj (d_model → 2 d_inner) and out_proj (d_inner → d_model, divided by
    /// `sqrt(n_layer)`).
    pub(crate) fn init_projections(&self, device: &Device) -> (Linear, Linear) {
        let di = self.d_inner();
        let in_proj = LinearConfig::new(self.d_model, 2 * di)
            .with_bias(self.bias)
            .init(device);
        let out_proj = rescaled_out_proj(di, self.d_model, self.bias, self.n_layer, device);
        (in_proj, out_proj)
    }

    /// The parameters of one selective-SSM branch with mamba_ssm's initialisation: dt bias the
    /// inverse softplus of a log-uniform dt in [dt_min, dt_max], `A_log = log(1..=N)`, `D = 1`,
    /// the conv and x_proj as PyTorch's defaults.
    pub(crate) fn init_branch(&self, device: &Device) -> BranchParams {
        let (di, n, r, k) = (self.d_inner(), self.d_state, self.dt_rank(), self.d_conv);
        let x_proj = LinearConfig::new(di, r + 2 * n)
            .with_bias(false)
            .init(device);
        let std = (r as f64).powf(-0.5) * self.dt_scale;
        let mut dt_proj = LinearConfig::new(r, di).init(device);
        dt_proj.weight = Param::from_tensor(Tensor::random(
            [r, di],
            Distribution::Uniform(-std, std),
            device,
        ));
        let inv = dt_bias_init([di], self.dt_min, self.dt_max, self.dt_init_floor, device);
        dt_proj.bias = Some(Param::from_tensor(inv));
        let logs: Vec<f32> = (1..=n).map(|i| (i as f32).ln()).collect();
        let a_log = Tensor::<1>::from_data(TensorData::new(logs, [n]), device)
            .unsqueeze_dim::<2>(0)
            .repeat_dim(0, di);
        let bound = 1.0 / (k as f64).sqrt();
        BranchParams {
            conv1d: Conv1dParams {
                weight: Param::from_tensor(Tensor::random(
                    [di, 1, k],
                    Distribution::Uniform(-bound, bound),
                    device,
                )),
                bias: self.conv_bias.then(|| {
                    Param::from_tensor(Tensor::random(
                        [di],
                        Distribution::Uniform(-bound, bound),
                        device,
                    ))
                }),
            },
            x_proj,
            dt_proj,
            a_log: Param::from_tensor(a_log.detach()),
            d: Param::from_tensor(Tensor::ones([di], device)),
        }
    }
}

/// mamba_ssm's dt bias: the inverse softplus, `dt + log(1 − exp(−dt))`, of steps drawn
/// log-uniformly in [dt_min, dt_max] and floored at `floor`.
pub(crate) fn dt_bias_init<const D: usize>(
    dims: [usize; D],
    dt_min: f64,
    dt_max: f64,
    floor: f64,
    device: &Device,
) -> Tensor<D> {
    let dt = Tensor::<D>::random(
        dims,
        Distribution::Uniform(dt_min.ln(), dt_max.ln()),
        device,
    )
    .exp()
    .clamp_min(floor);
    (dt.clone() + (dt.neg().exp().neg() + 1.0).log()).detach()
}

/// out_proj (PyTorch's default init) divided by `sqrt(n_layer)`, mamba_ssm's rescale of the
/// residual branches.
pub(crate) fn rescaled_out_proj(
    d_in: usize,
    d_out: usize,
    bias: bool,
    n_layer: usize,
    device: &Device,
) -> Linear {
    let mut out_proj = LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
    out_proj.weight = Param::from_tensor(
        out_proj
            .weight
            .val()
            .div_scalar((n_layer.max(1) as f32).sqrt())
            .detach(),
    );
    out_proj
}

/// The checkpoint names of one selective-SSM branch's parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BranchKeys {
    pub conv1d: &'static str,
    pub x_proj: &'static str,
    pub dt_proj: &'static str,
    pub a_log: &'static str,
    pub d: &'static str,
}

impl BranchKeys {
    /// mamba_ssm's names (and Vim's forward branch).
    pub const FORWARD: Self = Self {
        conv1d: "conv1d",
        x_proj: "x_proj",
        dt_proj: "dt_proj",
        a_log: "A_log",
        d: "D",
    };
}

/// The parameters of one selective-SSM branch (see [`MambaMixerConfig::init_branch`] and
/// [`MambaMixerConfig::load_branch`]).
#[derive(Debug)]
pub(crate) struct BranchParams {
    pub conv1d: Conv1dParams,
    pub x_proj: Linear,
    pub dt_proj: Linear,
    pub a_log: Param<Tensor<2>>,
    pub d: Param<Tensor<1>>,
}

/// The depthwise causal convolution's parameters, named as in the checkpoints
/// (`conv1d.weight` (D, 1, K), `conv1d.bias` (D)).
#[derive(Module, Debug)]
pub struct Conv1dParams {
    /// The depthwise filters, `conv1d.weight` (channels, 1, K).
    pub weight: Param<Tensor<3>>,
    /// The per-channel bias, `conv1d.bias` (channels); `None` without `conv_bias`.
    pub bias: Option<Param<Tensor<1>>>,
}

impl Conv1dParams {
    /// Reads `{prefix}.weight` (channels, 1, K) and, when `bias`, `{prefix}.bias` (channels).
    pub fn load(
        w: &mut TensorMap,
        prefix: &str,
        channels: usize,
        k: usize,
        bias: bool,
        device: &Device,
    ) -> crate::Result<Self> {
        Ok(Self {
            weight: w.param(&key(prefix, "weight"), [channels, 1, k], device)?,
            bias: if bias {
                Some(w.param(&key(prefix, "bias"), [channels], device)?)
            } else {
                None
            },
        })
    }

    /// The bias, or zeros.
    pub fn bias_or_zeros(&self) -> Tensor<1> {
        let w = self.weight.val();
        match &self.bias {
            Some(b) => b.val(),
            None => Tensor::zeros([w.dims()[0]], (&w.device(), w.dtype())),
        }
    }

    /// The filters as (D, K).
    pub fn filters(&self) -> Tensor<2> {
        let [d, _, k] = self.weight.dims();
        self.weight.val().reshape([d, k])
    }

    /// The causal depthwise convolution of `x` (B, D, L) then SiLU, continuing from the last K
    /// inputs `prev` (B, D, K) of an earlier chunk (zeros when `None`). Returns the output
    /// (B, D, L) and the last K inputs, the conv state for the next chunk or step (in f32, like
    /// every state; the output is in `x`'s dtype).
    pub(crate) fn causal_silu(
        &self,
        x: Tensor<3>,
        prev: Option<Tensor<3>>,
    ) -> (Tensor<3>, Tensor<3>) {
        let [_, d, len] = x.dims();
        let k = self.weight.dims()[2];
        let padded = self.window_input(x, prev);
        let state = widen(padded.clone().narrow(2, len - 1, k));
        let y = burn::tensor::activation::silu(conv1d(
            padded,
            self.weight.val(),
            Some(self.bias_or_zeros()),
            ConvOptions::new([1], [0], [1], d),
        ));
        (y, state)
    }

    /// `x` (B, D, L) after the last K − 1 inputs of `prev` (zeros when `None`): (B, D, L + K − 1),
    /// the inputs the causal windows read.
    fn window_input(&self, x: Tensor<3>, prev: Option<Tensor<3>>) -> Tensor<3> {
        let [batch, d, _] = x.dims();
        let k = self.weight.dims()[2];
        let prefix = match prev {
            Some(p) => cast_to(p.narrow(2, 1, k - 1), x.dtype()),
            None => Tensor::zeros([batch, d, k - 1], (&x.device(), x.dtype())),
        };
        Tensor::cat(vec![prefix, x], 2)
    }

    /// [`Conv1dParams::causal_silu`] over packed sequences: `seq_idx` (B, L) gives each step's
    /// sequence (non-decreasing); no output reads an input of an earlier sequence (those window
    /// taps count as zero, as at the start of a sequence), and `prev` belongs to the first one.
    /// The returned state is the last K inputs of each row's last sequence (zeros before it).
    pub(crate) fn causal_silu_packed(
        &self,
        x: Tensor<3>,
        prev: Option<Tensor<3>>,
        seq_idx: Tensor<2, Int>,
    ) -> (Tensor<3>, Tensor<3>) {
        let [_, d, len] = x.dims();
        let k = self.weight.dims()[2];
        let dtype = x.dtype();
        let padded = self.window_input(x, prev);
        // The sequence of each padded position: the prefix belongs to the first sequence.
        let first = seq_idx.clone().narrow(1, 0, 1);
        let seq_padded = Tensor::cat(vec![first.repeat_dim(1, k - 1), seq_idx.clone()], 1);
        let filters = self.filters(); // (D, K)
        let mut acc = self.bias_or_zeros().reshape([1, d, 1]).repeat_dim(2, len);
        for tap in 0..k {
            // Tap `tap` reads padded position t + tap for output t.
            let same = seq_padded
                .clone()
                .narrow(1, tap, len)
                .equal(seq_idx.clone())
                .float()
                .cast(dtype)
                .unsqueeze_dim::<3>(1); // (B, 1, L)
            let w = filters.clone().narrow(1, tap, 1).reshape([1, d, 1]);
            acc = acc + padded.clone().narrow(2, tap, len) * w * same;
        }
        let last = seq_idx.narrow(1, len - 1, 1); // (B, 1)
        let keep = seq_padded
            .narrow(1, len - 1, k)
            .equal(last)
            .float()
            .cast(dtype)
            .unsqueeze_dim::<3>(1); // (B, 1, K)
        let state = widen(padded.narrow(2, len - 1, k) * keep);
        (burn::tensor::activation::silu(acc), state)
    }
}

/// The Mamba mixer. Field names are the checkpoint keys (`in_proj`, `conv1d`, `x_proj`,
/// `dt_proj`, `A_log`, `D`, `out_proj`); Linear weights are stored (in, out) as Burn does.
#[allow(non_snake_case)]
#[derive(Module, Debug)]
pub struct MambaMixer {
    /// `in_proj`: d_model → 2 d_inner, the scan's input x and the gate z; weight
    /// (d_model, 2 d_inner), a bias with the config's `bias`.
    pub in_proj: Linear,
    /// `conv1d`: the causal depthwise convolution over x, weight (d_inner, 1, d_conv).
    pub conv1d: Conv1dParams,
    /// `x_proj`: d_inner → dt_rank + 2 d_state, the input-dependent `[dt | B | C]`; weight
    /// (d_inner, dt_rank + 2 d_state), no bias.
    pub x_proj: Linear,
    /// `dt_proj`: dt_rank → d_inner, the step Δ before softplus; weight (dt_rank, d_inner), its
    /// bias the step bias (initialised to the inverse softplus of dt in [dt_min, dt_max]).
    pub dt_proj: Linear,
    /// `A_log` (d_inner, d_state): the diagonal state matrix is `A = -exp(A_log)`.
    pub A_log: Param<Tensor<2>>,
    /// `D` (d_inner): the skip term `D x` added to the scan's output.
    pub D: Param<Tensor<1>>,
    /// `out_proj`: d_inner → d_model; weight (d_inner, d_model), a bias with the config's `bias`.
    pub out_proj: Linear,
    /// Inner width D, `expand * d_model`.
    pub d_inner: usize,
    /// SSM state size N (transformers' `state_size`).
    pub d_state: usize,
    /// Rank R of the dt projection (transformers' `time_step_rank`).
    pub dt_rank: usize,
    /// Width K of the causal convolution (transformers' `conv_kernel`).
    pub d_conv: usize,
}

/// The recurrent state of one mixer: the last K conv inputs (B, D, K) and the SSM state
/// (B, D, N).
#[derive(Debug, Clone)]
pub struct MambaLayerCache {
    /// The last K inputs of the causal convolution (B, D, K) (f32 for a half-precision
    /// mixer, as the state). Mamba2's D is its conv
    /// width `d_inner + 2 G N`; Mamba-3, which has no convolution, keeps its angles, last keys
    /// and last x here instead, (B, H, S + R·N + P).
    pub conv_state: Tensor<3>,
    /// The SSM state h (B, D, N) (Mamba2 and Mamba-3: heads and channels flattened,
    /// H·P = d_inner); f32 for a half-precision mixer ([`crate::precision`]).
    pub ssm_state: Tensor<3>,
    /// The mixer's decode weights packed for the fused step
    /// ([`ssm_backends::pack_mamba_step_weights`]), filled by the first
    /// [`MambaMixer::step`] and reused by the next ones: a cache belongs to one set of weights.
    pub step_weights: Option<Tensor<1>>,
}

impl MambaLayerCache {
    /// An empty (zero) state.
    pub fn zeros(
        batch: usize,
        d_inner: usize,
        d_conv: usize,
        d_state: usize,
        device: &Device,
    ) -> Self {
        Self {
            conv_state: Tensor::zeros([batch, d_inner, d_conv], device),
            ssm_state: Tensor::zeros([batch, d_inner, d_state], device),
            step_weights: None,
        }
    }

    /// The states of several batches as one batch, their rows in order (states of one mixer:
    /// the packed decode weights of the first part are kept).
    ///
    /// # Panics
    /// When `parts` is empty.
    pub fn cat(parts: Vec<Self>) -> Self {
        let step_weights = parts.iter().find_map(|p| p.step_weights.clone());
        let (conv, ssm): (Vec<_>, Vec<_>) = parts
            .into_iter()
            .map(|p| (p.conv_state, p.ssm_state))
            .unzip();
        assert!(!conv.is_empty(), "MambaLayerCache::cat of no states");
        Self {
            conv_state: Tensor::cat(conv, 0),
            ssm_state: Tensor::cat(ssm, 0),
            step_weights,
        }
    }

    /// The states of the batch rows `rows`, in that order.
    pub fn rows(self, rows: &[usize]) -> Self {
        let device = self.ssm_state.device();
        let index = Tensor::<1, Int>::from_data(
            TensorData::new(
                rows.iter().map(|&r| r as i64).collect::<Vec<_>>(),
                [rows.len()],
            ),
            &device,
        );
        Self {
            conv_state: self.conv_state.select(0, index.clone()),
            ssm_state: self.ssm_state.select(0, index),
            step_weights: self.step_weights,
        }
    }
}

/// Intermediate tensors of one forward, for parity tests against the reference.
///
/// The scan's arguments and output, as in mamba_ssm: `u`, `delta` (before bias and
/// softplus), `B`, `C`, `z`, `y`.
#[derive(Debug, Clone)]
pub struct MambaTrace {
    /// `u` (B, D, L): the scan's input, x after the causal conv and SiLU.
    pub u: Tensor<3>,
    /// `delta` (B, D, L): dt_proj of the dt part of x_proj, before the dt bias and softplus.
    pub delta: Tensor<3>,
    /// `B` (B, N, L): the input-dependent input matrix from x_proj.
    pub b: Tensor<3>,
    /// `C` (B, N, L): the input-dependent output matrix from x_proj.
    pub c: Tensor<3>,
    /// `z` (B, D, L): the gate from in_proj, before its SiLU.
    pub z: Tensor<3>,
    /// `y` (B, D, L): the scan's output with the `D u` skip and the `silu(z)` gate, what
    /// enters out_proj.
    pub y: Tensor<3>,
}

/// The selective-SSM branch of a Mamba mixer, borrowed from its parameters: causal depthwise
/// conv and SiLU, x_proj into (dt, B, C), dt_proj, and the selective scan with the D skip and the
/// SiLU(z) gate. Vim's bidirectional mixer runs two of them on one in_proj output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SsmBranch<'a> {
    pub conv1d: &'a Conv1dParams,
    pub x_proj: &'a Linear,
    pub dt_proj: &'a Linear,
    pub a_log: &'a Param<Tensor<2>>,
    pub d: &'a Param<Tensor<1>>,
    pub d_state: usize,
    pub dt_rank: usize,
}

impl SsmBranch<'_> {
    /// The dt_proj bias, or zeros (D).
    pub fn dt_bias(&self) -> Tensor<1> {
        match &self.dt_proj.bias {
            Some(bias) => bias.val(),
            None => {
                let w = self.dt_proj.weight.val();
                Tensor::zeros([w.dims()[1]], &w.device())
            }
        }
    }

    /// Runs the branch on `xs` and `z` (B, D, L) from `cache` (zeros when `None`): returns the
    /// scan's arguments and gated output (`trace.y`, (B, D, L)) and the state after the last step.
    pub fn run(
        &self,
        xs: Tensor<3>,
        z: Tensor<3>,
        cache: Option<MambaLayerCache>,
    ) -> (MambaTrace, MambaLayerCache) {
        self.run_packed(xs, z, cache, None)
    }

    /// [`SsmBranch::run`] over packed sequences when `seq_idx` (B, L) is given: the conv and
    /// the scan restart at each new sequence, `cache` is the first sequence's, and the
    /// returned state is each row's last sequence's.
    pub fn run_packed(
        &self,
        xs: Tensor<3>,
        z: Tensor<3>,
        cache: Option<MambaLayerCache>,
        seq_idx: Option<Tensor<2, Int>>,
    ) -> (MambaTrace, MambaLayerCache) {
        let (n, r) = (self.d_state, self.dt_rank);
        let (conv_prev, h0) = match cache {
            Some(c) => (Some(c.conv_state), Some(c.ssm_state)),
            None => (None, None),
        };
        let (u, conv_state) = match &seq_idx {
            Some(s) => self.conv1d.causal_silu_packed(xs, conv_prev, s.clone()),
            None => self.conv1d.causal_silu(xs, conv_prev),
        };
        let x_dbl = self.x_proj.forward(u.clone().swap_dims(1, 2)); // (B, L, R + 2N)
        let dt = x_dbl.clone().narrow(2, 0, r);
        let b = x_dbl.clone().narrow(2, r, n).swap_dims(1, 2); // (B, N, L)
        let c = x_dbl.narrow(2, r + n, n).swap_dims(1, 2);
        let delta = dt
            .matmul(self.dt_proj.weight.val().unsqueeze())
            .swap_dims(1, 2);
        let dt_bias = self.dt_bias();
        let mut scan = SelectiveScan::new(
            u.clone(),
            delta.clone(),
            self.a_log.val().exp().neg(),
            b.clone().unsqueeze_dim(1),
            c.clone().unsqueeze_dim(1),
        )
        .d(self.d.val())
        .z(z.clone())
        .delta_bias(dt_bias)
        .softplus(true);
        if let Some(h0) = h0 {
            scan = scan.initial_state(h0);
        }
        if let Some(s) = seq_idx {
            scan = scan.seq_idx(s);
        }
        let out = scan.run();
        (
            MambaTrace {
                u,
                delta,
                b,
                c,
                z,
                y: out.y,
            },
            MambaLayerCache {
                conv_state,
                ssm_state: out.state,
                step_weights: None,
            },
        )
    }
}

impl MambaMixer {
    /// `A = -exp(A_log)` (D, N).
    pub fn a(&self) -> Tensor<2> {
        self.A_log.val().exp().neg()
    }

    /// The selective-SSM part of this mixer, between in_proj and out_proj.
    pub(crate) fn branch(&self) -> SsmBranch<'_> {
        SsmBranch {
            conv1d: &self.conv1d,
            x_proj: &self.x_proj,
            dt_proj: &self.dt_proj,
            a_log: &self.A_log,
            d: &self.D,
            d_state: self.d_state,
            dt_rank: self.dt_rank,
        }
    }

    /// One recurrent step (B, d_model) -> (B, d_model): in_proj, the fused decode step
    /// ([`mamba_decode_step`]: conv step, x_proj, dt_proj, state update and gate; one kernel
    /// launch on the GPU backends), out_proj.
    pub fn step(&self, x: Tensor<2>, cache: MambaLayerCache) -> (Tensor<2>, MambaLayerCache) {
        let weights = cache.step_weights.unwrap_or_else(|| self.step_weights());
        let xz = linear_rows(&self.in_proj, x);
        let (y, conv_state, ssm_state) =
            mamba_decode_step(xz, cache.conv_state, cache.ssm_state, weights.clone());
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
        pack_mamba_step_weights(
            self.conv1d
                .weight
                .val()
                .reshape([self.d_inner, self.d_conv]),
            self.conv1d.bias_or_zeros(),
            self.x_proj.weight.val(),
            self.dt_proj.weight.val(),
            self.branch().dt_bias(),
            self.a(),
            self.D.val(),
        )
    }
}

impl SequenceMixer for MambaMixer {
    type Trace = MambaTrace;

    fn forward_full(
        &self,
        x: Tensor<3>,
        cache: Option<MambaLayerCache>,
        seq_idx: Option<Tensor<2, Int>>,
    ) -> (Tensor<3>, MambaLayerCache, MambaTrace) {
        let di = self.d_inner;
        let xz = linear(&self.in_proj, x);
        let xs = xz.clone().narrow(2, 0, di).swap_dims(1, 2); // (B, D, L)
        let z = xz.narrow(2, di, di).swap_dims(1, 2);
        let (trace, cache) = self.branch().run_packed(xs, z, cache, seq_idx);
        let y = linear(&self.out_proj, trace.y.clone().swap_dims(1, 2));
        (y, cache, trace)
    }
}
