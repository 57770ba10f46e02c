//! `zoo forecast`: a model saved by `zoo train s-mamba` / `time-machine` on its test split —
//! MSE and MAE (standardised values) as JSON — and a PNG of one test window: the look-back, the
//! truth and the forecast of one variate, in the series' own units.

use crate::common::args::DeviceArgs;
use crate::common::choices::{ModelKind, names};
use crate::common::error::{CliError, CliResult, io, usage};
use crate::common::plot::FONT;
use crate::common::run_file::{RUN_FILE, load_config, read_run_file};
use crate::common::series::{DataSettings, prepare_data, score};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use plotters::prelude::*;
use ssm_datasets::timeseries::{ForecastBatcher, ForecastSplits};
use ssm_models::checkpoint::load_weights;
use ssm_models::timeseries::{Forecaster, SMambaConfig, TimeMachineConfig};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ForecastArgs {
    /// A folder written by `zoo train s-mamba` or `zoo train time-machine`.
    #[arg(long)]
    model: PathBuf,
    /// The series (default: the one the model was trained on).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// The variate to plot (default: the last column, e.g. ETT's `OT`).
    #[arg(long)]
    variate: Option<String>,
    /// Which test window to plot (default: the last).
    #[arg(long)]
    window: Option<usize>,
    /// Where to write the PNG (default: MODEL/forecast.png).
    #[arg(long)]
    plot: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

fn load_model(dir: &Path, kind: &str, device: &Device) -> CliResult<Box<dyn Forecaster>> {
    let path = dir.join("config.json");
    Ok(match ModelKind::parse(kind) {
        Some(ModelKind::SMamba) => {
            let c: SMambaConfig = load_config(dir)?;
            c.validate()
                .map_err(|e| io(format!("{}: {e}", path.display())))?;
            Box::new(load_weights(c.init(device), dir)?)
        }
        Some(ModelKind::TimeMachine) => {
            let c: TimeMachineConfig = load_config(dir)?;
            c.validate()
                .map_err(|e| io(format!("{}: {e}", path.display())))?;
            Box::new(load_weights(c.init(device), dir)?)
        }
        _ => {
            return Err(io(format!(
                "{}: not a forecasting model (kind {kind:?})",
                dir.display()
            )));
        }
    })
}

fn settings(dir: &Path, csv: Option<PathBuf>) -> CliResult<(String, DataSettings)> {
    let path = dir.join(RUN_FILE);
    let v = read_run_file(dir)?.ok_or_else(|| {
        io(format!(
            "cannot read {}: no such file (not a `zoo train` folder)",
            path.display()
        ))
    })?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
    let missing = |k: &str| io(format!("{}: no '{k}'", path.display()));
    Ok((
        s("kind").ok_or_else(|| missing("kind"))?,
        DataSettings {
            csv: csv.or_else(|| s("csv").map(PathBuf::from)),
            seq_len: n("seq_len").ok_or_else(|| missing("seq_len"))?,
            pred_len: n("pred_len").ok_or_else(|| missing("pred_len"))?,
            split: choice(s("split"), "split", false)?,
            freq: choice(s("freq"), "freq", true)?,
            missing: choice(s("missing"), "missing", false)?,
        },
    ))
}

/// A data setting of the run file, spelled as its flag takes it (`None`: the flag's default).
fn choice<T: ValueEnum + Default>(
    value: Option<String>,
    flag: &str,
    ignore_case: bool,
) -> CliResult<T> {
    let Some(value) = value else {
        return Ok(T::default());
    };
    T::from_str(&value, ignore_case)
        .map_err(|_| usage(format!("--{flag} {value}: expected {}", names::<T>())))
}

pub fn run(a: ForecastArgs) -> CliResult {
    let (kind, data) = settings(&a.model, a.csv.clone())?;
    let device = a.device.resolve()?;
    let model = load_model(&a.model, &kind, &device)?;
    let (splits, path) = prepare_data(&data)?;
    let batcher = ForecastBatcher {
        channels: splits.columns.len(),
        features: splits.freq.features(),
    };
    let (mse, mae) = score(&splits.test, &batcher, &device, &|b| {
        model.forecast(b.x.clone(), b.x_mark.clone())
    })?;
    let variate = match &a.variate {
        Some(v) => splits.columns.iter().position(|c| c == v).ok_or_else(|| {
            CliError::Usage(format!(
                "no variate '{v}' (columns: {})",
                splits.columns.join(", ")
            ))
        })?,
        None => splits.columns.len() - 1,
    };
    let window = a.window.unwrap_or(splits.test.len() - 1);
    if window >= splits.test.len() {
        return Err(CliError::Usage(format!(
            "--window {window}: the test split has {} windows",
            splits.test.len()
        )));
    }
    let plot = a
        .plot
        .clone()
        .unwrap_or_else(|| a.model.join("forecast.png"));
    draw(
        &splits,
        model.as_ref(),
        &batcher,
        &device,
        window,
        variate,
        &plot,
    )?;
    println!(
        "{}",
        serde_json::json!({
            "model": kind,
            "series": path.display().to_string(),
            "test_windows": splits.test.len(),
            "mse": mse,
            "mae": mae,
            "plot": plot.display().to_string(),
            "variate": splits.columns[variate],
            "window": window,
        })
    );
    Ok(())
}

/// Plots test window `window` of `variate`: history, truth and forecast in original units.
fn draw(
    splits: &ForecastSplits,
    model: &dyn Forecaster,
    batcher: &ForecastBatcher,
    device: &Device,
    window: usize,
    variate: usize,
    path: &Path,
) -> CliResult {
    let item = splits
        .test
        .get(window)
        .map_err(|e| io(format!("test window {window}: {e}")))?;
    let batch = batcher.batch(vec![item.clone()], device);
    let forecast = ssm_backends::to_vec(model.forecast(batch.x, batch.x_mark));
    let c = splits.columns.len();
    let unscale = |v: f32| (v * splits.scaler.std[variate] + splits.scaler.mean[variate]) as f64;
    let col = |v: &[f32]| -> Vec<f64> {
        v.iter()
            .skip(variate)
            .step_by(c)
            .map(|&x| unscale(x))
            .collect()
    };
    let (history, truth, predicted) = (col(&item.x), col(&item.y), col(&forecast));
    let l = history.len();
    let all: Vec<f64> = history
        .iter()
        .chain(&truth)
        .chain(&predicted)
        .copied()
        .collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let pad = ((hi - lo) * 0.08).max(1e-6);
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| io("the bundled font cannot be read"))?;
    let plot_err = |e: String| io(format!("cannot draw {}: {e}", path.display()));
    let root = BitMapBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
    let total = l + truth.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} - test window {window}", splits.columns[variate]),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..(total - 1).max(1) as f64, (lo - pad)..(hi + pad))
        .map_err(|e| plot_err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(splits.columns[variate].as_str())
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| plot_err(e.to_string()))?;
    let series = |from: usize, ys: &[f64], last: Option<f64>| -> Vec<(f64, f64)> {
        // Horizon lines start at the last history point so they join the history.
        let mut pts: Vec<(f64, f64)> = last.map(|v| ((from - 1) as f64, v)).into_iter().collect();
        pts.extend(ys.iter().enumerate().map(|(i, &v)| ((from + i) as f64, v)));
        pts
    };
    let last = history.last().copied();
    for (pts, color, label) in [
        (series(0, &history, None), BLACK, "history"),
        (series(l, &truth, last), BLUE, "truth"),
        (series(l, &predicted, last), RED, "forecast"),
    ] {
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| plot_err(e.to_string()))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| plot_err(e.to_string()))?;
    root.present().map_err(|e| plot_err(e.to_string()))?;
    Ok(())
}
