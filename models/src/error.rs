//! Errors a user can cause: files, configs, weights, inputs. Each message says what to fix.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a model from user input.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file or directory could not be read or written; check the path and its permissions.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A config file is not well-formed JSON; fix its syntax.
    #[error("{path} is not valid JSON: {message}")]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parser's description of the error.
        message: String,
    },
    /// A config file parsed as JSON but holds a missing, unknown or out-of-range setting.
    #[error("config {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// Which setting is wrong and why.
        message: String,
    },
    /// A config built in code (or parsed from a string) is invalid, e.g. a size of 0 or
    /// dimensions that do not divide; the message names the setting to change.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A weights file is missing, has an unsupported extension or cannot be parsed.
    #[error("cannot read weights from {path}: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What went wrong reading it.
        message: String,
    },
    /// A parameter the model needs has no tensor in the checkpoint; the checkpoint is for
    /// another architecture or the config does not match it.
    #[error("weights: key '{key}' is missing (expected shape {expected:?})")]
    MissingKey {
        /// The checkpoint key that was looked up.
        key: String,
        /// The shape the model expects for it.
        expected: Vec<usize>,
    },
    /// A checkpoint tensor has a different shape from the parameter; the config (sizes,
    /// layer count, vocabulary) does not match the checkpoint.
    #[error("weights: key '{key}' has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The checkpoint key.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape stored in the checkpoint.
        found: Vec<usize>,
    },
    /// The checkpoint holds tensors that no parameter took: it is for another architecture
    /// or a larger config.
    #[error("weights: unexpected key(s) {}", .0.join(", "))]
    UnexpectedKeys(Vec<String>),
    /// A model directory holds neither `model.safetensors` nor `pytorch_model.bin`.
    #[error("no weights in {0}: expected model.safetensors or pytorch_model.bin")]
    NoWeights(PathBuf),
    /// A token id is not below the vocabulary size; use the tokenizer that matches the model.
    #[error("token id {id} is out of range: the vocabulary has {vocab} entries")]
    TokenOutOfRange {
        /// The offending token id.
        id: usize,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// Generation was asked for with a prompt of no tokens.
    #[error("empty prompt: give at least one token")]
    EmptyPrompt,
    /// The tokenizer file could not be loaded, or text could not be encoded or decoded.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor would need a GPU buffer larger than the device can bind (e.g. a WebGPU
    /// binding limit); use a smaller batch or sequence length, or another device.
    #[error(
        "{what} {shape:?} needs a {bytes}-byte buffer, over this device's {limit}-byte binding \
         limit: use a device that binds more (the CPU has no limit) or a smaller batch or length"
    )]
    TooLargeForDevice {
        /// What the tensor holds, for the message.
        what: String,
        /// The tensor's shape.
        shape: Vec<usize>,
        /// The buffer size it needs, in bytes.
        bytes: usize,
        /// The device's largest binding, in bytes.
        limit: usize,
    },
    /// A run whose estimated memory exceeds what the machine has available, refused before
    /// anything is allocated: make the named settings smaller, or force the run.
    #[error(
        "{what} needs about {need} ({parts}), more than the {available} this machine has \
         available: make {settings} smaller, or force it (SSM_ZOO_FORCE=1; zoo train lm and zoo \
         bench lm: --force)"
    )]
    WouldNotFit {
        /// The run, for the message (e.g. "training with batch 16 x 256 tokens").
        what: String,
        /// The estimate, human-readable.
        need: String,
        /// The estimate's parts, human-readable.
        parts: String,
        /// What is available, human-readable.
        available: String,
        /// The settings that size it.
        settings: String,
    },
    /// Any other invalid input (shapes, arguments, data); the message says what to change.
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
