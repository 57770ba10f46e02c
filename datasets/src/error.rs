//! The error of the line-oriented data readers (digits, series, graphs): each names the file
//! and, where it applies, the line.

use std::path::PathBuf;

/// What went wrong reading a data file.
#[derive(Debug, thiserror::Error)]
pub enum DataFileError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// Contents that parse but cannot be used (sizes, settings).
    #[error("{0}")]
    Invalid(String),
}
