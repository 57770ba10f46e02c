//! Forecasting data and scores, shared by `zoo train s-mamba` / `time-machine` and `zoo
//! forecast`: the series read and cut into splits as a run's data settings say, and the test
//! MSE and MAE of a forecaster.

use super::choices::{Frequency, MissingCells, Split};
use super::error::{CliError, CliResult, usage};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use ssm_datasets::timeseries::{
    ForecastBatch, ForecastBatcher, ForecastDataset, ForecastSplits, forecast_splits,
    read_series_csv, shipped_series,
};
use std::path::PathBuf;

/// The data settings of a forecasting run (saved in its `zoo.json`).
pub struct DataSettings {
    pub csv: Option<PathBuf>,
    pub seq_len: usize,
    pub pred_len: usize,
    pub split: Split,
    pub freq: Frequency,
    pub missing: MissingCells,
}

/// Reads the series and cuts the splits as a run's settings say.
pub fn prepare_data(a: &DataSettings) -> CliResult<(ForecastSplits, PathBuf)> {
    let path = a
        .csv
        .clone()
        .unwrap_or_else(|| shipped_series("macrodata.csv"));
    let frame =
        read_series_csv(&path, a.missing.into()).map_err(|e| CliError::Io(e.to_string()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let scheme = a.split.scheme(&name);
    let freq = a
        .freq
        .named()
        .unwrap_or_else(|| ssm_datasets::timeseries::Freq::infer(&frame.dates));
    let splits = forecast_splits(&frame, scheme, a.seq_len, a.pred_len, freq)
        .map_err(|e| usage(format!("{}: {e}", path.display())))?;
    Ok((splits, path))
}

/// Test MSE and MAE of `predict` over every window of `test`.
pub fn score(
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
