//! Vim's bidirectional Mamba mixer ("bimamba v2", Zhu et al., "Vision Mamba: Efficient Visual
//! Representation Learning with Bidirectional State Space Model", 2024).
//!
//! One in_proj and one out_proj are shared by two selective-SSM branches with their own conv,
//! x_proj, dt_proj, `A` and `D`: the forward branch reads the sequence in order, the backward
//! branch reads it reversed (the gate `z` reversed with it), and the two gated outputs are
//! averaged (Vim's `if_divide_out`) before out_proj:
//!
//! ```text
//! [x | z] = in_proj(u)
//! y_f = branch_f(x, z);   y_b = flip(branch_b(flip(x), flip(z)))
//! out = out_proj((y_f + y_b) / 2)
//! ```
//!
//! Parameter names are Vim's checkpoint keys: `in_proj`, `conv1d`, `x_proj`, `dt_proj`, `A_log`,
//! `D`, `conv1d_b`, `x_proj_b`, `dt_proj_b`, `A_b_log`, `D_b`, `out_proj`. The mixer reads the
//! whole sequence in both directions, so it has no recurrent step.
#![allow(non_snake_case)]

use crate::io::TensorMap;
use crate::ssm::mamba::{BranchKeys, BranchParams, Conv1dParams, MambaMixerConfig, SsmBranch};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

/// The checkpoint names of Vim's backward branch.
const BACKWARD_KEYS: BranchKeys = BranchKeys {
    conv1d: "conv1d_b",
    x_proj: "x_proj_b",
    dt_proj: "dt_proj_b",
    a_log: "A_b_log",
    d: "D_b",
};

/// The bidirectional Mamba mixer of Vim. Built by [`MambaMixerConfig::init_bidirectional`].
#[derive(Module, Debug)]
pub struct BiMambaMixer {
    /// `in_proj`: d_model -> 2 d_inner, the SSM input `x` then the gate `z` (both branches).
    pub in_proj: Linear,
    /// `conv1d`: the forward branch's depthwise causal convolution over `x` (d_inner channels).
    pub conv1d: Conv1dParams,
    /// `x_proj`: the forward branch's d_inner -> dt_rank + 2 d_state (the `dt`, `B`, `C` inputs).
    pub x_proj: Linear,
    /// `dt_proj`: the forward branch's dt_rank -> d_inner, with the `dt` bias (softplus after).
    pub dt_proj: Linear,
    /// `A_log` (d_inner, d_state): the forward branch's `A = −exp(A_log)`.
    pub A_log: Param<Tensor<2>>,
    /// `D` (d_inner): the forward branch's skip.
    pub D: Param<Tensor<1>>,
    /// `conv1d_b`: the backward branch's depthwise causal convolution.
    pub conv1d_b: Conv1dParams,
    /// `x_proj_b`: the backward branch's d_inner -> dt_rank + 2 d_state.
    pub x_proj_b: Linear,
    /// `dt_proj_b`: the backward branch's dt_rank -> d_inner, with its `dt` bias.
    pub dt_proj_b: Linear,
    /// `A_b_log` (d_inner, d_state): the backward branch's `A = −exp(A_b_log)`.
    pub A_b_log: Param<Tensor<2>>,
    /// `D_b` (d_inner): the backward branch's skip.
    pub D_b: Param<Tensor<1>>,
    /// `out_proj`: d_inner -> d_model, applied to the combined branches.
    pub out_proj: Linear,
    /// The inner width D (`expand * d_model`).
    pub d_inner: usize,
    /// The SSM state size N per channel.
    pub d_state: usize,
    /// The rank of the `dt` projection (`x_proj`'s first outputs).
    pub dt_rank: usize,
    /// Divide the sum of the two directions by 2 (Vim's `if_divide_out`, on in all released
    /// models).
    pub divide_out: bool,
}

impl MambaMixerConfig {
    /// A bidirectional mixer: both branches with mamba_ssm's initialisation.
    pub fn init_bidirectional(&self, device: &Device) -> BiMambaMixer {
        let (in_proj, out_proj) = self.init_projections(device);
        let (f, b) = (self.init_branch(device), self.init_branch(device));
        self.assemble_bidirectional(in_proj, f, b, out_proj)
    }

    /// A bidirectional mixer from checkpoint tensors under `prefix` with Vim's keys
    /// (`{prefix}.in_proj`, the forward branch `conv1d`, `x_proj`, `dt_proj`, `A_log`, `D`, the
    /// backward branch `conv1d_b`, `x_proj_b`, `dt_proj_b`, `A_b_log`, `D_b`, then `out_proj`),
    /// every key checked for presence and shape against this config.
    pub fn load_bidirectional(
        &self,
        w: &mut TensorMap,
        prefix: &str,
        device: &Device,
    ) -> crate::Result<BiMambaMixer> {
        let in_proj = self.load_in_proj(w, prefix, device)?;
        let f = self.load_branch(w, prefix, &BranchKeys::FORWARD, device)?;
        let b = self.load_branch(w, prefix, &BACKWARD_KEYS, device)?;
        let out_proj = self.load_out_proj(w, prefix, device)?;
        Ok(self.assemble_bidirectional(in_proj, f, b, out_proj))
    }

    fn assemble_bidirectional(
        &self,
        in_proj: Linear,
        f: BranchParams,
        b: BranchParams,
        out_proj: Linear,
    ) -> BiMambaMixer {
        BiMambaMixer {
            in_proj,
            conv1d: f.conv1d,
            x_proj: f.x_proj,
            dt_proj: f.dt_proj,
            A_log: f.a_log,
            D: f.d,
            conv1d_b: b.conv1d,
            x_proj_b: b.x_proj,
            dt_proj_b: b.dt_proj,
            A_b_log: b.a_log,
            D_b: b.d,
            out_proj,
            d_inner: self.d_inner(),
            d_state: self.d_state,
            dt_rank: self.dt_rank(),
            divide_out: true,
        }
    }
}

impl BiMambaMixer {
    /// The forward branch.
    pub(crate) fn forward_branch(&self) -> SsmBranch<'_> {
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

    /// The backward branch (run on the reversed sequence).
    pub(crate) fn backward_branch(&self) -> SsmBranch<'_> {
        SsmBranch {
            conv1d: &self.conv1d_b,
            x_proj: &self.x_proj_b,
            dt_proj: &self.dt_proj_b,
            a_log: &self.A_b_log,
            d: &self.D_b,
            d_state: self.d_state,
            dt_rank: self.dt_rank,
        }
    }

    /// (B, L, d_model) -> (B, L, d_model), reading the sequence both ways.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let di = self.d_inner;
        let xz = self.in_proj.forward(x);
        let xs = xz.clone().narrow(2, 0, di).swap_dims(1, 2); // (B, D, L)
        let z = xz.narrow(2, di, di).swap_dims(1, 2);
        let (fwd, _) = self.forward_branch().run(xs.clone(), z.clone(), None);
        let (bwd, _) = self.backward_branch().run(xs.flip([2]), z.flip([2]), None);
        let mut y = fwd.y + bwd.y.flip([2]);
        if self.divide_out {
            y = y.div_scalar(2.0);
        }
        self.out_proj.forward(y.swap_dims(1, 2))
    }
}
