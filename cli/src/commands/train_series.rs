//! `zoo train s-mamba` / `time-machine`: S-Mamba or TimeMachine trained with burn-train (MSE)
//! on a forecasting CSV (a date column then the variables; the shipped US macro series by
//! default), with the standard splits and a scaler fit on the training split; then the test
//! split's MSE and MAE (on the standardised values, as the references report them) of the model,
//! a linear baseline trained the same way and the last-value baseline, printed as one JSON line
//! and saved with the model.

use crate::common::args::RunArgs;
use crate::common::choices::{Frequency, MissingCells, ModelKind, Split, name_of};
use crate::common::download::benchmark_file;
use crate::common::error::{CliError, CliResult, usage};
use crate::common::progress::Progress;
use crate::common::run_file::{RUN_FILE, save, write_json};
use crate::common::series::{DataSettings, prepare_data, score};
use burn::data::dataloader::DataLoaderBuilder;
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
use ssm_datasets::timeseries::{ForecastBatch, ForecastBatcher, ForecastSplits};
use ssm_models::timeseries::{
    Forecaster, LinearForecasterConfig, SMambaConfig, TimeMachineConfig, last_value_forecast,
};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(mut_arg("out", |a| a.help(
    "Where the checkpoints, the model, its config and metrics.json go (default runs/TASK)"
)))]
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
    #[arg(long, value_enum, default_value = "auto")]
    split: Split,
    /// Sampling frequency for the calendar features: auto, t, h, d, w, m, q, y.
    #[arg(long, value_enum, ignore_case = true, default_value = "auto")]
    freq: Frequency,
    /// Give the calendar features to S-Mamba as extra tokens.
    #[arg(long)]
    time_features: bool,
    /// Empty cells: interpolate (linearly in time) or error.
    #[arg(long, value_enum, default_value = "interpolate")]
    missing: MissingCells,
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
    #[command(flatten)]
    run: RunArgs,
}

fn prepare(a: &SeriesArgs) -> CliResult<(ForecastSplits, PathBuf)> {
    let csv = match &a.dataset {
        Some(name) => Some(benchmark_file(name, &a.mirror)?),
        None => a.csv.clone(),
    };
    prepare_data(&DataSettings {
        csv,
        seq_len: a.seq_len,
        pred_len: a.pred_len,
        split: a.split,
        freq: a.freq,
        missing: a.missing,
    })
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
        .shuffle(a.run.seed())
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
    run(
        a,
        ModelKind::SMamba,
        splits,
        path,
        config,
        SMambaConfig::init,
    )
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
        ModelKind::TimeMachine,
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
    kind: ModelKind,
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
    let kind = kind.name();
    let out = a.run.out_or(format!("runs/{kind}"));
    let device = a.run.device()?;
    device.seed(a.run.seed());
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
        "split": name_of(&a.split),
        "freq": name_of(&a.freq),
        "missing": name_of(&a.missing),
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
