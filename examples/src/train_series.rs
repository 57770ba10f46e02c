//! `zoo train s-mamba`: S-Mamba trained with burn-train (MSE) on a forecasting CSV (a date
//! column then the variables; the shipped US macro series by default), with the standard
//! splits and a scaler fit on the training split; then the test split's MSE and MAE (on the
//! standardised values, as the references report them) of S-Mamba, a linear baseline trained
//! the same way and the last-value baseline, printed as one JSON line and saved with the model.

use crate::common::{CliError, CliResult, RUN_FILE, device, usage, write_json};
use crate::train::{Progress, save};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::optim::AdamConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig;
use burn::tensor::Device;
use burn::train::metric::LossMetric;
use burn::train::{
    InferenceStep, Learner, LearnerModel, RegressionOutput, SupervisedTraining, TrainStep,
};
use clap::Args;
use ssm_datasets::timeseries::{
    ForecastBatch, ForecastBatcher, ForecastDataset, ForecastSplits, Freq, Missing, SplitScheme,
    forecast_splits, read_series_csv, shipped_series,
};
use ssm_models::timeseries::{
    Forecaster, LinearForecasterConfig, SMambaConfig, TimeMachineConfig, last_value_forecast,
};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct SeriesArgs {
    /// The series: a CSV with a date column then the variables (default: the shipped US macro
    /// series, 203 quarters x 12 variables).
    #[arg(long, conflicts_with = "dataset")]
    csv: Option<PathBuf>,
    /// A benchmark instead of --csv: etth1, ettm1, weather or electricity, downloaded into the
    /// cache on first use (`zoo data list` shows where).
    #[arg(long)]
    dataset: Option<String>,
    /// With --dataset: download from this URL instead of the built-in mirrors (repeatable).
    #[arg(long, requires = "dataset")]
    mirror: Vec<String>,
    /// Look-back L.
    #[arg(long, default_value_t = 96)]
    seq_len: usize,
    /// Horizon S.
    #[arg(long, default_value_t = 96)]
    pred_len: usize,
    /// auto (ETTh*/ETTm* file names: 12/4/4 months; otherwise 70/10/20), ett-hourly,
    /// ett-minute or ratio.
    #[arg(long, default_value = "auto")]
    split: String,
    /// Sampling frequency for the calendar features: auto, t, h, d, w, m, q, y.
    #[arg(long, default_value = "auto")]
    freq: String,
    /// Give the calendar features to S-Mamba as extra tokens.
    #[arg(long)]
    time_features: bool,
    /// Empty cells: interpolate (linearly in time) or error.
    #[arg(long, default_value = "interpolate")]
    missing: String,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Adam learning rate (both S-Mamba and the linear baseline).
    #[arg(long, default_value_t = 0.001)]
    lr: f64,
    #[arg(long, default_value_t = 64)]
    d_model: usize,
    #[arg(long, default_value_t = 16)]
    d_state: usize,
    #[arg(long, default_value_t = 128)]
    d_ff: usize,
    #[arg(long, default_value_t = 2)]
    e_layers: usize,
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    /// TimeMachine: the first scale n1.
    #[arg(long, default_value_t = 64)]
    n1: usize,
    /// TimeMachine: the second scale n2.
    #[arg(long, default_value_t = 16)]
    n2: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the checkpoints, the model, its config and metrics.json go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu, ndarray, wgpu, wgpu:N, cuda:N (default cpu).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// The data settings of a forecasting run.
pub(crate) struct DataSettings {
    pub csv: Option<PathBuf>,
    pub seq_len: usize,
    pub pred_len: usize,
    pub split: String,
    pub freq: String,
    pub missing: String,
}

fn prepare(a: &SeriesArgs) -> CliResult<(ForecastSplits, PathBuf)> {
    let csv = match &a.dataset {
        Some(name) => Some(crate::data::benchmark_file(name, &a.mirror)?),
        None => a.csv.clone(),
    };
    prepare_data(&DataSettings {
        csv,
        seq_len: a.seq_len,
        pred_len: a.pred_len,
        split: a.split.clone(),
        freq: a.freq.clone(),
        missing: a.missing.clone(),
    })
}

/// Reads the series and cuts the splits as a run's settings say.
pub(crate) fn prepare_data(a: &DataSettings) -> CliResult<(ForecastSplits, PathBuf)> {
    let path = a
        .csv
        .clone()
        .unwrap_or_else(|| shipped_series("macrodata.csv"));
    let missing = match a.missing.as_str() {
        "interpolate" => Missing::Interpolate,
        "error" => Missing::Error,
        m => {
            return Err(usage(format!(
                "--missing {m}: expected interpolate or error"
            )));
        }
    };
    let frame = read_series_csv(&path, missing).map_err(|e| CliError::Io(e.to_string()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let scheme = match a.split.as_str() {
        "auto" if name.starts_with("ETTh") => SplitScheme::EttHourly,
        "auto" if name.starts_with("ETTm") => SplitScheme::EttMinute,
        "auto" | "ratio" => SplitScheme::standard(),
        "ett-hourly" => SplitScheme::EttHourly,
        "ett-minute" => SplitScheme::EttMinute,
        s => {
            return Err(usage(format!(
                "--split {s}: expected auto, ett-hourly, ett-minute or ratio"
            )));
        }
    };
    let freq = if a.freq == "auto" {
        Freq::infer(&frame.dates)
    } else {
        Freq::parse(&a.freq).ok_or_else(|| {
            usage(format!(
                "--freq {}: expected auto, t, h, d, w, m, q or y",
                a.freq
            ))
        })?
    };
    let splits = forecast_splits(&frame, scheme, a.seq_len, a.pred_len, freq)
        .map_err(|e| usage(format!("{}: {e}", path.display())))?;
    Ok((splits, path))
}

/// Trains a forecaster with burn-train (MSE loss, Adam at `lr`).
fn fit<M>(model: M, a: &SeriesArgs, s: &ForecastSplits, dir: &Path, device: &Device) -> CliResult<M>
where
    M: LearnerModel
        + TrainStep<Input = ForecastBatch, Output = RegressionOutput>
        + InferenceStep<Input = ForecastBatch, Output = RegressionOutput>,
{
    let batcher = ForecastBatcher {
        channels: s.columns.len(),
        features: s.freq.features(),
    };
    let train = DataLoaderBuilder::new(batcher.clone())
        .batch_size(a.batch_size)
        .shuffle(a.seed)
        .num_workers(1)
        .set_device(device.clone())
        .build(s.train.clone());
    let valid = DataLoaderBuilder::new(batcher)
        .batch_size(a.batch_size)
        .num_workers(1)
        .set_device(device.clone())
        .build(s.val.clone());
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let lr = ModuleLrSchedulerConfig::new(a.lr.into())
        .init()
        .map_err(|e| usage(format!("learning rate: {e}")))?;
    let (model_ckpt, optim_ckpt, sched_ckpt) = ssm_models::checkpoint::atomic_checkpointers(dir);
    let result = SupervisedTraining::new(dir, train, valid)
        .with_custom_checkpointers(model_ckpt, optim_ckpt, sched_ckpt)
        .metrics((LossMetric::new(),))
        .renderer(Box::new(Progress::default()))
        .num_epochs(a.epochs)
        .summary()
        .launch(Learner::new(model, AdamConfig::new().init(), lr));
    if let Some(e) = result.error {
        return Err(CliError::Io(format!("training failed: {e}")));
    }
    Ok(result.model)
}

/// Test MSE and MAE of `predict` over every window of `test`.
pub(crate) fn score(
    test: &ForecastDataset,
    batcher: &ForecastBatcher,
    device: &Device,
    predict: &dyn Fn(&ForecastBatch) -> burn::tensor::Tensor<3>,
) -> CliResult<(f64, f64)> {
    let items = (0..test.len())
        .map(|i| test.get(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Io(format!("reading the test split: {e}")))?;
    let (mut se, mut ae, mut n) = (0f64, 0f64, 0usize);
    for chunk in items.chunks(256) {
        let batch = batcher.batch(chunk.to_vec(), device);
        let err = ssm_backends::to_vec(predict(&batch) - batch.y.clone());
        se += err.iter().map(|e| (*e as f64).powi(2)).sum::<f64>();
        ae += err.iter().map(|e| (*e as f64).abs()).sum::<f64>();
        n += err.len();
    }
    Ok((se / n as f64, ae / n as f64))
}

fn check(a: &SeriesArgs) -> CliResult {
    if a.epochs == 0 || a.batch_size == 0 || a.lr <= 0.0 {
        return Err(usage("epochs and batch size must be at least 1, lr > 0"));
    }
    Ok(())
}

pub fn s_mamba(a: SeriesArgs) -> CliResult {
    check(&a)?;
    let (splits, path) = prepare(&a)?;
    let config = SMambaConfig::new(a.seq_len, a.pred_len)
        .with_time_features(if a.time_features {
            splits.freq.features()
        } else {
            0
        })
        .with_d_model(a.d_model)
        .with_d_state(a.d_state)
        .with_d_ff(a.d_ff)
        .with_e_layers(a.e_layers)
        .with_dropout(a.dropout);
    config.validate().map_err(|e| usage(e.to_string()))?;
    run(a, "s-mamba", splits, path, config, SMambaConfig::init)
}

pub fn time_machine(a: SeriesArgs) -> CliResult {
    check(&a)?;
    let (splits, path) = prepare(&a)?;
    let config = TimeMachineConfig::new(a.seq_len, a.pred_len, splits.columns.len())
        .with_n1(a.n1)
        .with_n2(a.n2)
        .with_d_state(a.d_state)
        .with_dropout(a.dropout);
    config.validate().map_err(|e| usage(e.to_string()))?;
    run(
        a,
        "time-machine",
        splits,
        path,
        config,
        TimeMachineConfig::init,
    )
}

/// Trains the model and the linear baseline the same way, scores both and the last-value
/// baseline on the test split, saves the model, its config and `metrics.json`.
fn run<C, M>(
    a: SeriesArgs,
    kind: &str,
    splits: ForecastSplits,
    path: PathBuf,
    config: C,
    init: impl FnOnce(&C, &Device) -> M,
) -> CliResult
where
    C: burn::prelude::Config,
    M: Forecaster
        + LearnerModel
        + TrainStep<Input = ForecastBatch, Output = RegressionOutput>
        + InferenceStep<Input = ForecastBatch, Output = RegressionOutput>,
{
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/{kind}")));
    let device = device(Some(&a.device))?;
    device.seed(a.seed);
    let train_device = device.clone().autodiff();
    println!(
        "{}: {} variates ({}), {:?} steps; windows train/val/test {}/{}/{}; L = {}, S = {}",
        path.display(),
        splits.columns.len(),
        if splits.columns.len() <= 12 {
            splits.columns.join(", ")
        } else {
            format!(
                "{}, ..., {}",
                splits.columns[..4].join(", "),
                splits.columns[splits.columns.len() - 2..].join(", ")
            )
        },
        splits.freq,
        splits.train.len(),
        splits.val.len(),
        splits.test.len(),
        a.seq_len,
        a.pred_len
    );
    let model = init(&config, &train_device);
    println!("{kind}: {} parameters", model.num_params());
    let model = fit(model, &a, &splits, &out, &train_device)?.valid();
    println!("linear baseline, trained the same way");
    let linear = fit(
        LinearForecasterConfig::new(a.seq_len, a.pred_len).init(&train_device),
        &a,
        &splits,
        &out.join("linear"),
        &train_device,
    )?
    .valid();
    let batcher = ForecastBatcher {
        channels: splits.columns.len(),
        features: splits.freq.features(),
    };
    let (m_mse, m_mae) = score(&splits.test, &batcher, &device, &|b| {
        model.forecast(b.x.clone(), b.x_mark.clone())
    })?;
    let (li_mse, li_mae) = score(&splits.test, &batcher, &device, &|b| {
        linear.forecast(b.x.clone(), b.x_mark.clone())
    })?;
    let (lv_mse, lv_mae) = score(&splits.test, &batcher, &device, &|b| {
        last_value_forecast(b.x.clone(), a.pred_len)
    })?;
    save(&model, &config, &out)?;
    let settings = serde_json::json!({
        "kind": kind,
        "csv": path.display().to_string(),
        "seq_len": a.seq_len,
        "pred_len": a.pred_len,
        "split": a.split,
        "freq": a.freq,
        "missing": a.missing,
    });
    write_json(&out.join(RUN_FILE), &settings)?;
    let metrics = serde_json::json!({
        "model": kind,
        "series": path.display().to_string(),
        "seq_len": a.seq_len,
        "pred_len": a.pred_len,
        "test_windows": splits.test.len(),
        kind.replace('-', "_"): {"mse": m_mse, "mae": m_mae},
        "linear": {"mse": li_mse, "mae": li_mae},
        "last_value": {"mse": lv_mse, "mae": lv_mae},
    });
    write_json(&out.join("metrics.json"), &metrics)?;
    println!("{metrics}");
    Ok(())
}
