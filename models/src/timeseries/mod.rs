//! Forecasting networks on the Mamba mixer: S-Mamba (bidirectional Mamba over variate tokens),
//! TimeMachine (RevIN and a two-scale stack of four Mambas),
//! with the persistence and linear baselines and burn-train steps (MSE).

pub mod smamba;
pub mod timemachine;

pub use smamba::{SMamba, SMambaConfig};
pub use timemachine::{RevIn, TimeMachine, TimeMachineConfig};

use burn::tensor::Tensor;

/// Per-variate normalisation over time (the Non-stationary Transformer's, used by S-Mamba):
/// `x` (B, L, N) becomes `(x − mean) / sqrt(var + 1e-5)` per (batch, variate), the population
/// variance over L. Returns the normalised series, the means and the standard deviations
/// (B, 1, N).
pub fn normalize(x: Tensor<3>) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
    normalize_with(x, 1e-5)
}

/// [`normalize`] with `eps` added to the variance.
pub fn normalize_with(x: Tensor<3>, eps: f64) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
    let mean = x.clone().mean_dim(1).detach();
    let centred = x - mean.clone();
    let std = (centred.clone().square().mean_dim(1) + eps).sqrt().detach();
    (centred / std.clone(), mean, std)
}

/// Undoes [`normalize`] on a forecast (B, S, N).
pub fn denormalize(y: Tensor<3>, mean: Tensor<3>, std: Tensor<3>) -> Tensor<3> {
    y * std + mean
}

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Device;
use burn::train::{InferenceStep, RegressionOutput, TrainOutput, TrainStep};
use ssm_datasets::timeseries::ForecastBatch;

/// A forecaster: the horizon (B, S, N) of look-backs (B, L, N) with calendar features
/// (B, L, F).
pub trait Forecaster {
    /// The forecast (B, S, N) of a look-back `x` (B, L, N); `x_mark` (B, L, F) holds the
    /// calendar features of the look-back (F may be 0; models that take none ignore them).
    fn forecast(&self, x: Tensor<3>, x_mark: Tensor<3>) -> Tensor<3>;

    /// MSE loss and the flattened forecast and targets of a batch.
    fn regress(&self, batch: ForecastBatch) -> RegressionOutput {
        let y = self.forecast(batch.x, batch.x_mark);
        let [b, s, n] = y.dims();
        let loss = (y.clone() - batch.y.clone()).square().mean();
        RegressionOutput::new(loss, y.reshape([b, s * n]), batch.y.reshape([b, s * n]))
    }
}

/// The persistence baseline: every step of the horizon repeats the look-back's last value.
pub fn last_value_forecast(x: Tensor<3>, pred_len: usize) -> Tensor<3> {
    let [b, l, n] = x.dims();
    x.narrow(1, l - 1, 1).expand([b, pred_len, n])
}

/// Configuration of a [`LinearForecaster`].
#[derive(Config, Debug)]
pub struct LinearForecasterConfig {
    /// Look-back length L in time steps.
    pub seq_len: usize,
    /// Forecast horizon S in time steps.
    pub pred_len: usize,
    /// The same per-variate normalisation as S-Mamba.
    #[config(default = true)]
    pub use_norm: bool,
}

impl LinearForecasterConfig {
    /// A randomly initialised forecaster (Burn's default Linear init).
    pub fn init(&self, device: &Device) -> LinearForecaster {
        LinearForecaster {
            linear: LinearConfig::new(self.seq_len, self.pred_len).init(device),
            use_norm: self.use_norm,
        }
    }
}

/// The linear baseline: one Linear map from the look-back to the horizon, shared by the
/// variates (the "Linear" of Zeng et al., 2023), with S-Mamba's normalisation.
#[derive(Module, Debug)]
pub struct LinearForecaster {
    /// The map from look-back to horizon, weight (S, L) and bias (S), shared by the variates.
    pub linear: Linear,
    /// Whether to normalise each variate over the look-back and undo it on the forecast.
    pub use_norm: bool,
}

impl LinearForecaster {
    /// (B, L, N) → (B, S, N).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if self.use_norm {
            let (x, mean, std) = normalize(x);
            denormalize(
                self.linear.forward(x.swap_dims(1, 2)).swap_dims(1, 2),
                mean,
                std,
            )
        } else {
            self.linear.forward(x.swap_dims(1, 2)).swap_dims(1, 2)
        }
    }
}

impl Forecaster for LinearForecaster {
    fn forecast(&self, x: Tensor<3>, _x_mark: Tensor<3>) -> Tensor<3> {
        self.forward(x)
    }
}

impl Forecaster for TimeMachine {
    fn forecast(&self, x: Tensor<3>, _x_mark: Tensor<3>) -> Tensor<3> {
        self.forward(x)
    }
}

impl Forecaster for SMamba {
    fn forecast(&self, x: Tensor<3>, x_mark: Tensor<3>) -> Tensor<3> {
        let marks = (x_mark.dims()[2] > 0 && self.takes_time_features()).then_some(x_mark);
        self.forward(x, marks)
    }
}

/// burn-train's steps for a [`Forecaster`] (MSE).
macro_rules! forecaster_steps {
    ($model:ty) => {
        impl TrainStep for $model {
            type Input = ForecastBatch;
            type Output = RegressionOutput;

            fn step(&self, batch: ForecastBatch) -> TrainOutput<RegressionOutput> {
                let out = self.regress(batch);
                TrainOutput::new(self, out.loss.backward(), out)
            }
        }

        impl InferenceStep for $model {
            type Input = ForecastBatch;
            type Output = RegressionOutput;

            fn step(&self, batch: ForecastBatch) -> RegressionOutput {
                self.regress(batch)
            }
        }
    };
}

forecaster_steps!(SMamba);
forecaster_steps!(LinearForecaster);
forecaster_steps!(TimeMachine);
