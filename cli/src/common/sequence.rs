//! Sequence classifiers on the sequential digits (`zoo train s4d-digits` / `s5-digits`): a saved
//! run folder reloaded, and its test accuracy (what the training run reports and `zoo eval`
//! reproduces).

use super::error::{CliError, CliResult};
use super::measure::count_right;
use super::run_file::load_config;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use ssm_datasets::{DigitsBatcher, digits_split};
use ssm_models::checkpoint::load_weights;
use ssm_models::classify::{SequenceClassifier, SequenceClassifierConfig};
use std::path::Path;

pub fn data_error(e: ssm_datasets::DigitsError) -> CliError {
    CliError::Io(e.to_string())
}

/// Loads a folder written by `zoo train`, checking that every parameter was found.
pub fn load(dir: &Path, device: &Device) -> CliResult<SequenceClassifier> {
    let config: SequenceClassifierConfig = load_config(dir)?;
    Ok(load_weights(config.init(device), dir)?)
}

/// Right answers and total on the test split.
pub fn accuracy(model: &SequenceClassifier, device: &Device) -> CliResult<(usize, usize)> {
    let (_, test) = digits_split().map_err(data_error)?;
    let items = (0..test.len())
        .map(|i| test.get(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Io(format!("reading the test split: {e}")))?;
    let mut right = 0;
    for chunk in items.chunks(256) {
        let batch = DigitsBatcher.batch(chunk.to_vec(), device);
        let labels: Vec<usize> = chunk.iter().map(|i| i.label).collect();
        right += count_right(model.forward(batch.inputs), &labels)?;
    }
    Ok((right, items.len()))
}
