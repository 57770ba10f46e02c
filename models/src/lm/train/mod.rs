//! Training a language model from Rust: [`Trainer`] runs the reference recipe (mamba_ssm's and
//! transformers' trainers) on a [`MambaLm`](crate::lm::MambaLm) config and token documents,
//! with evaluations, resumable checkpoints and data-parallel replicas; `zoo train lm` and
//! `zoo demo` are this plus argument parsing, tokenizing and a progress bar.
//!
//! ```no_run
//! # use burn::tensor::Device;
//! # use ssm_datasets::text::TokenDocs;
//! # use ssm_models::lm::MambaLmConfig;
//! # use ssm_models::lm::train::{LmData, RunLength, Trainer, TrainerConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let docs = TokenDocs { docs: vec![vec![1, 2, 3]; 100] };
//! let data = LmData::new(docs, 256, 257, 0.05)?; // documents, end of text, vocabulary, held out
//! let model = MambaLmConfig::new(64, 2, 264).with_eos_token_id(Some(256));
//! let config = TrainerConfig { seq_len: 64, length: RunLength::Steps(50), ..TrainerConfig::new(model) };
//! let trained = Trainer::new(config, vec![Device::flex()]).fit(&data, &mut ())?;
//! println!("validation loss {:?}", trained.evals.last());
//! # Ok(()) }
//! ```
//!
//! - [`trainer`]: [`Trainer`], [`TrainerConfig`], [`LmData`], the [`TrainObserver`] callbacks and
//!   the [`Trained`] result;
//! - [`step`]: one optimizer step on one or several devices ([`train_step`]) and the
//!   evaluation ([`evaluate`]), for loops of your own over any [`PackedLm`];
//! - [`checkpoints`]: the `step-N` checkpoint folders and the [`RunKey`] they resume under
//!   (written with [`crate::checkpoint`], the zoo's one atomic writer);
//! - [`recipe`]: the optimizer, schedule, clipping and loss.

pub mod checkpoints;
pub mod error;
pub mod recipe;
pub mod step;
pub mod trainer;

pub use checkpoints::{CheckpointDir, LmArch, RunKey};
pub use error::{TrainError, TrainResult};
#[cfg(test)]
pub(crate) use recipe::param_paths;
pub use recipe::{
    PackedLm, clip_grad_norm, decay_plan, lm_optimizer, no_decay_group, token_losses, warmup_cosine,
};
pub use step::{EvalLog, StepLog, StepPlan, evaluate, train_step};
pub use trainer::{
    ContentKey, LmData, RunLength, RunStart, StepReport, TrainObserver, Trained, Trainer,
    TrainerConfig,
};
