//! Errors a user can cause: files, configs, weights, inputs. Each message says what to fix.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model from user input.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("cannot read weights from {path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("weights: key '{key}' is missing (expected shape {expected:?})")]
    MissingKey { key: String, expected: Vec<usize> },
    #[error("weights: key '{key}' has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("weights: unexpected key(s) {}", .0.join(", "))]
    UnexpectedKeys(Vec<String>),
    #[error("no weights in {0}: expected model.safetensors or pytorch_model.bin")]
    NoWeights(PathBuf),
    #[error("token id {id} is out of range: the vocabulary has {vocab} entries")]
    TokenOutOfRange { id: usize, vocab: usize },
    #[error("empty prompt: give at least one token")]
    EmptyPrompt,
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(
        "{what} {shape:?} needs a {bytes}-byte buffer, over this device's {limit}-byte binding \
         limit: use a device that binds more (the CPU has no limit) or a smaller batch or length"
    )]
    TooLargeForDevice {
        what: String,
        shape: Vec<usize>,
        bytes: usize,
        limit: usize,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

/// An `InvalidConfig` error naming the first of `fields` that is 0 (sizes that must be at
/// least 1).
pub(crate) fn require_nonzero(fields: &[(&str, usize)]) -> Result<()> {
    match fields.iter().find(|(_, v)| *v == 0) {
        Some((name, _)) => Err(ModelError::InvalidConfig(format!(
            "{name} must be at least 1, found 0"
        ))),
        None => Ok(()),
    }
}
