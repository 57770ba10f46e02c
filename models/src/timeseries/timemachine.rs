//! TimeMachine (Ahamed & Cheng, "TimeMachine: A Time Series is Worth 4 Mambas for Long-term
//! Forecasting", 2024): RevIN, then two scales of the look-back (linear maps L → n1 → n2) each
//! read by two Mambas, merged back to the horizon.
//!
//! Channel-independent (`ch_ind`, the published setting): each variate is its own sequence, and
//! at each scale one Mamba reads the scale's n values as one token of width n while the other
//! reads them as n tokens of width 1:
//!
//! ```text
//! x = RevIN(x)ᵀ                    (B·N, 1, L)
//! h₁ = lin1(x);  x₄ = Mamba₃(h₁) + Mamba₄(h₁ᵀ)ᵀ
//! h₂ = lin2(h₁); y = lin3(Mamba₁(h₂ᵀ)ᵀ + h₂ + Mamba₂(h₂)) + h₁        (the residual setting)
//! out = RevIN⁻¹(lin4([y, x₄]))     (B, S, N)
//! ```
//!
//! Without `ch_ind` the variates are the tokens and all four Mambas have the scale's width.
//! Field names follow the reference (`revin_layer.affine_weight`, `lin1`..`lin4`,
//! `mamba1`..`mamba4`).

use crate::ssm::SequenceMixer;
use crate::ssm::mamba::{MambaMixer, MambaMixerConfig};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

/// Reversible instance normalisation (Kim et al., 2022): per-variate normalisation over time
/// with a learnt affine map, undone on the output.
#[derive(Module, Debug)]
pub struct RevIn {
    /// Per-variate scale (N), `revin_layer.affine_weight`.
    pub affine_weight: Param<Tensor<1>>,
    /// Per-variate shift (N), `revin_layer.affine_bias`.
    pub affine_bias: Param<Tensor<1>>,
    /// Added to the variance when normalising (1e-5).
    pub eps: f64,
}

impl RevIn {
    /// Unit weight, zero bias over `channels` variates.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            affine_weight: Param::from_tensor(Tensor::ones([channels], device)),
            affine_bias: Param::from_tensor(Tensor::zeros([channels], device)),
            eps: 1e-5,
        }
    }

    /// (B, L, N) → normalised (B, L, N), with the means and standard deviations (B, 1, N).
    pub fn norm(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
        let (x, mean, std) = crate::timeseries::normalize_with(x, self.eps);
        let y = x * self.affine_weight.val().reshape([1, 1, -1])
            + self.affine_bias.val().reshape([1, 1, -1]);
        (y, mean, std)
    }

    /// Undoes [`RevIn::norm`] on (B, S, N).
    pub fn denorm(&self, y: Tensor<3>, mean: Tensor<3>, std: Tensor<3>) -> Tensor<3> {
        let y = (y - self.affine_bias.val().reshape([1, 1, -1]))
            / (self.affine_weight.val().reshape([1, 1, -1]) + self.eps * self.eps);
        y * std + mean
    }
}

/// Configuration of a [`TimeMachine`] (the reference's run arguments).
#[derive(Config, Debug)]
pub struct TimeMachineConfig {
    /// Look-back L in time steps.
    pub seq_len: usize,
    /// Horizon S in time steps.
    pub pred_len: usize,
    /// Variates N (for RevIN).
    pub enc_in: usize,
    /// The first scale.
    #[config(default = 512)]
    pub n1: usize,
    /// The second scale.
    #[config(default = 32)]
    pub n2: usize,
    /// Mamba state size of the four mixers.
    #[config(default = 256)]
    pub d_state: usize,
    /// Side of the Mambas' causal convolution.
    #[config(default = 2)]
    pub dconv: usize,
    /// Expansion factor of the Mambas (inner width = `e_fact` × their width).
    #[config(default = 1)]
    pub e_fact: usize,
    /// Dropout rate in [0, 1) on the outputs of `lin1` and `lin2`.
    #[config(default = 0.7)]
    pub dropout: f64,
    /// Use RevIN (learnt affine map); otherwise plain per-variate normalisation.
    #[config(default = true)]
    pub revin: bool,
    /// Channel-independent: each variate is its own sequence (the published setting).
    #[config(default = true)]
    pub ch_ind: bool,
    /// Add the scale inputs back around the Mambas and `lin3` (the residual setting).
    #[config(default = true)]
    pub residual: bool,
}

impl TimeMachineConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> crate::Result<()> {
        let sizes = [
            self.seq_len,
            self.pred_len,
            self.enc_in,
            self.n1,
            self.n2,
            self.d_state,
        ];
        if sizes.contains(&0)
            || self.dconv < 1
            || self.e_fact < 1
            || !(0.0..1.0).contains(&self.dropout)
        {
            return Err(crate::ModelError::InvalidConfig(
                "time-machine: sizes must be positive and 0 <= dropout < 1".into(),
            ));
        }
        Ok(())
    }

    fn mamba(&self, d_model: usize, device: &Device) -> MambaMixer {
        MambaMixerConfig::new(d_model)
            .with_d_state(self.d_state)
            .with_d_conv(self.dconv)
            .with_expand(self.e_fact)
            .init(device)
    }

    /// A model with PyTorch-default Linear init and mamba_ssm's mixer init.
    ///
    /// # Panics
    /// On an invalid configuration (see [`TimeMachineConfig::validate`]).
    pub fn init(&self, device: &Device) -> TimeMachine {
        self.validate().unwrap_or_else(|e| panic!("{e}"));
        let (p1, p2) = if self.ch_ind {
            (1, 1)
        } else {
            (self.n2, self.n1)
        };
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        TimeMachine {
            revin_layer: self.revin.then(|| RevIn::new(self.enc_in, device)),
            lin1: lin(self.seq_len, self.n1),
            lin2: lin(self.n1, self.n2),
            lin3: lin(self.n2, self.n1),
            lin4: lin(2 * self.n1, self.pred_len),
            mamba1: self.mamba(p1, device),
            mamba2: self.mamba(self.n2, device),
            mamba3: self.mamba(self.n1, device),
            mamba4: self.mamba(p2, device),
            dropout: DropoutConfig::new(self.dropout).init(),
            ch_ind: self.ch_ind,
            residual: self.residual,
        }
    }
}

/// The TimeMachine forecaster.
#[derive(Module, Debug)]
pub struct TimeMachine {
    /// RevIN over the N variates; `None` for plain normalisation.
    pub revin_layer: Option<RevIn>,
    /// Linear L → n1, the first scale.
    pub lin1: Linear,
    /// Linear n1 → n2, the second scale.
    pub lin2: Linear,
    /// Linear n2 → n1, back from the second scale.
    pub lin3: Linear,
    /// Linear 2·n1 → S from both scales to the horizon.
    pub lin4: Linear,
    /// Second-scale Mamba reading n2 tokens of width 1 (width n2 without `ch_ind`).
    pub mamba1: MambaMixer,
    /// Second-scale Mamba of width n2.
    pub mamba2: MambaMixer,
    /// First-scale Mamba of width n1.
    pub mamba3: MambaMixer,
    /// First-scale Mamba reading n1 tokens of width 1 (width n1 without `ch_ind`).
    pub mamba4: MambaMixer,
    /// Dropout on the outputs of `lin1` and `lin2`.
    pub dropout: Dropout,
    /// Channel-independent: each variate is its own sequence.
    pub ch_ind: bool,
    /// Whether the residual connections around the second scale are on.
    pub residual: bool,
}

impl TimeMachine {
    /// A Mamba reading the last axis's values as tokens of width 1 (channel-independent) or the
    /// tensor as it is.
    fn read(&self, m: &MambaMixer, x: Tensor<3>) -> Tensor<3> {
        if self.ch_ind {
            m.forward(x.swap_dims(1, 2)).swap_dims(1, 2)
        } else {
            m.forward(x)
        }
    }

    /// (B, L, N) → (B, S, N).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, _, n] = x.dims();
        let (x, stats) = match &self.revin_layer {
            Some(r) => {
                let (x, mean, std) = r.norm(x);
                (x, (mean, std))
            }
            None => {
                let (x, mean, std) = crate::timeseries::normalize(x);
                (x, (mean, std))
            }
        };
        let mut x = x.swap_dims(1, 2); // (B, N, L)
        if self.ch_ind {
            let l = x.dims()[2];
            x = x.reshape([b * n, 1, l]);
        }
        let h1 = self.lin1.forward(x);
        let d1 = self.dropout.forward(h1.clone());
        let x4 = self.read(&self.mamba4, d1.clone()) + self.mamba3.forward(d1.clone());
        let h2 = self.lin2.forward(d1);
        let d2 = self.dropout.forward(h2.clone());
        let mut y = self.read(&self.mamba1, d2.clone()) + self.mamba2.forward(d2);
        if self.residual {
            y = y + h2;
        }
        let mut y = self.lin3.forward(y);
        if self.residual {
            y = y + h1;
        }
        let out = self.lin4.forward(Tensor::cat(vec![y, x4], 2)); // (B·N or B, 1 or N, S)
        let s = out.dims()[2];
        let out = out.reshape([b, n, s]).swap_dims(1, 2);
        let (mean, std) = stats;
        match &self.revin_layer {
            Some(r) => r.denorm(out, mean, std),
            None => crate::timeseries::denormalize(out, mean, std),
        }
    }
}
