//! Helpers shared by the subcommands: device choice, token-row parsing, errors.

use burn::tensor::Device;

/// An error shown to the user as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Model(#[from] ssm_models::ModelError),
    #[error(transparent)]
    Device(#[from] ssm_backends::DeviceError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// The device named on the command line, or Burn's default order.
pub fn device(spec: Option<&str>) -> CliResult<Device> {
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
