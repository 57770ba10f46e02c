//! Forecasting networks on the Mamba mixer: S-Mamba (bidirectional Mamba over variate tokens).

pub mod smamba;

pub use smamba::{SMamba, SMambaConfig};

use burn::tensor::Tensor;

/// Per-variate normalisation over time (the Non-stationary Transformer's, used by S-Mamba):
/// `x` (B, L, N) becomes `(x − mean) / sqrt(var + 1e-5)` per (batch, variate), the population
/// variance over L. Returns the normalised series, the means and the standard deviations
/// (B, 1, N).
pub fn normalize(x: Tensor<3>) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
    let mean = x.clone().mean_dim(1).detach();
    let centred = x - mean.clone();
    let std = (centred.clone().square().mean_dim(1) + 1e-5)
        .sqrt()
        .detach();
    (centred / std.clone(), mean, std)
}

/// Undoes [`normalize`] on a forecast (B, S, N).
pub fn denormalize(y: Tensor<3>, mean: Tensor<3>, std: Tensor<3>) -> Tensor<3> {
    y * std + mean
}
