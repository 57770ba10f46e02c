//! Helpers shared by the subcommands: device choice, token-row parsing, errors.

use burn::tensor::Device;
use std::path::Path;

/// An error shown to the user as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Model(#[from] ssm_models::ModelError),
    #[error(transparent)]
    Device(#[from] ssm_backends::Error),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// A usage error (bad flags or settings).
pub fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(m.into())
}

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
    Ok(ssm_models::checkpoint::write_atomic(
        path,
        (v.to_string() + "\n").as_bytes(),
    )?)
}

/// `--dtype`'s parser: f32, f16 or bf16 ([`ssm_models::precision`]).
pub fn dtype_arg(name: &str) -> Result<burn::tensor::FloatDType, String> {
    ssm_models::precision::parse_dtype(name).map_err(|e| e.to_string())
}

/// The device named on the command line, or [`ssm_backends::default_device`] (a hardware GPU,
/// else the CPU backend), said on stderr.
pub fn device(spec: Option<&str>) -> CliResult<Device> {
    if spec.is_none() {
        let (device, why) = ssm_backends::default_device();
        eprintln!("device: {device:?} ({why}; --device picks another)");
        return Ok(device);
    }
    Ok(ssm_backends::parse_device(spec)?)
}

/// Parses `"1,2,3;4,5,6"` into rows of token ids.
pub fn parse_ids(text: &str) -> CliResult<Vec<Vec<usize>>> {
    let mut rows = Vec::new();
    for (i, row) in text.split(';').enumerate() {
        let row = row.trim();
        if row.is_empty() {
            return Err(CliError::Model(ssm_models::ModelError::EmptyPrompt));
        }
        let ids = row
            .split(',')
            .map(|t| {
                t.trim().parse::<usize>().map_err(|_| {
                    CliError::Usage(format!(
                        "--ids row {i}: '{}' is not a token id (expected e.g. \"1,2,3;4,5,6\")",
                        t.trim()
                    ))
                })
            })
            .collect::<CliResult<Vec<_>>>()?;
        rows.push(ids);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows() {
        assert_eq!(
            parse_ids("1,2,3;4, 5,6").unwrap(),
            vec![vec![1, 2, 3], vec![4, 5, 6]]
        );
        assert!(parse_ids("1,x").is_err());
        assert!(parse_ids("").is_err());
        assert!(parse_ids("1;;2").is_err());
        assert!(parse_ids("-1").is_err());
    }
}
