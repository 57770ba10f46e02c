//! The command line's error: one line, printed by `main` after `error: `.

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
    /// A check that ran and failed (`zoo selftest`): its report is already printed.
    #[error("{0}")]
    Failed(String),
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// A usage error (bad flags or settings).
pub fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(m.into())
}

/// An error reading or writing data (files, downloads, tensors read back).
pub fn io(m: impl std::fmt::Display) -> CliError {
    CliError::Io(m.to_string())
}
