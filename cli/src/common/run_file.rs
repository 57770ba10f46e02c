//! A `zoo train` run folder: `config.json` and `model.bpk` (each written whole or not at all),
//! and `zoo.json`, the run file naming the model kind and the settings its evaluation needs.

use super::choices::ModelKind;
use super::error::{CliError, CliResult};
use burn::module::Module;
use burn::prelude::Config;
use ssm_models::checkpoint::{save_weights, write_atomic};
use std::path::Path;

/// The file in a `zoo train` run folder that names the model kind and its settings.
pub const RUN_FILE: &str = "zoo.json";

/// The run file of a folder, parsed; `None` when the folder has none (a downloaded model, or a
/// run from before the file existed).
pub fn read_run_file(dir: &Path) -> CliResult<Option<serde_json::Value>> {
    let path = dir.join(RUN_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CliError::Io(format!("cannot read {}: {e}", path.display()))),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| CliError::Io(format!("{}: not valid JSON: {e}", path.display())))
}

/// Writes a JSON value as one line, whole or not at all (a temporary file renamed into place).
pub fn write_json(path: &Path, v: &serde_json::Value) -> CliResult {
    Ok(write_atomic(path, (v.to_string() + "\n").as_bytes())?)
}

/// Writes the run file of a classifier: the model kind `zoo eval` rebuilds and the input side
/// (0 for sequence classifiers).
pub fn write_kind(dir: &Path, kind: ModelKind, img_size: usize) -> CliResult {
    write_json(
        &dir.join(RUN_FILE),
        &serde_json::json!({"kind": kind.name(), "img_size": img_size}),
    )
}

/// Writes `config.json` and `model.bpk` in `dir`, each whole or not at all.
pub fn save<M: Module, C: Config>(model: &M, config: &C, dir: &Path) -> CliResult {
    let text = serde_json::to_string_pretty(config)
        .map_err(|e| CliError::Io(format!("cannot serialise the config: {e}")))?;
    write_atomic(&dir.join("config.json"), text.as_bytes())?;
    Ok(save_weights(model, dir)?)
}

/// The `config.json` of a run folder.
pub fn load_config<C: Config>(dir: &Path) -> CliResult<C> {
    let path = dir.join("config.json");
    C::load(&path).map_err(|e| CliError::Io(format!("cannot read {}: {e}", path.display())))
}
