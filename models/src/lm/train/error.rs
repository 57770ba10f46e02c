//! What can stop a training run.

use crate::error::ModelError;
use ssm_datasets::DataFileError;
use std::path::PathBuf;

/// Why a [`Trainer`](super::Trainer) could not start, continue or finish a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model could not be built, run or saved (its config, its device, its files).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The training documents cannot be split or packed into rows.
    #[error(transparent)]
    Data(#[from] DataFileError),
    /// The validation documents cannot be packed into rows (fewer tokens than one row).
    #[error("validation text: {0} (shorter rows, a larger validation share, or none)")]
    ValidationRows(DataFileError),
    /// A document holds a token id outside the data's vocabulary.
    #[error("the text holds token id {id}, outside the vocabulary of {vocab}")]
    TokenOutOfVocab {
        /// The largest id found among the documents' tokens and the separator.
        id: u32,
        /// The data's vocabulary size: valid ids are below it.
        vocab: usize,
    },
    /// A setting out of its range.
    #[error("invalid training setting: {0}")]
    Invalid(String),
    /// The checkpoint folder holds an earlier run, and resuming was not asked for.
    #[error("{dir} holds checkpoints of an earlier run: resume it, or use another folder")]
    EarlierRun {
        /// The checkpoint folder.
        dir: PathBuf,
    },
    /// The checkpoint to resume was written under other settings (each difference as
    /// `name saved (now current)`).
    #[error("{dir} was written by a run with other settings: {}", differences.join(", "))]
    OtherSettings {
        /// The checkpoint folder.
        dir: PathBuf,
        /// Each differing setting as `name saved (now current)`.
        differences: Vec<String>,
    },
    /// A checkpoint file cannot be written or read.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file or folder that failed.
        path: PathBuf,
        /// The underlying error.
        message: String,
    },
    /// The loss is not finite (the run diverged).
    #[error("the loss is {loss} at step {step}")]
    Diverged {
        /// The step whose loss was not finite (1 for the first).
        step: usize,
        /// The loss (NaN or infinite).
        loss: f64,
    },
}

/// Shorthand for results of the trainer.
pub type TrainResult<T> = std::result::Result<T, TrainError>;

impl TrainError {
    pub(crate) fn checkpoint(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        Self::Checkpoint {
            path: path.into(),
            message: e.to_string(),
        }
    }
}
