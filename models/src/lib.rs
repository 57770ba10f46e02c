//! # ssm-models
//!
//! State space model blocks and networks written once against Burn tensors: they run on any
//! device (CPU through Flex or NdArray, any GPU through wgpu, NVIDIA through cuda).
//!
//! - [`ssm::MambaMixer`]: the Mamba (S6) mixer, with a parallel forward and a recurrent step;
//! - [`lm::MambaLm`]: the Mamba language model, loadable from the published checkpoints;
//! - [`lm::generate()`]: generation with greedy decoding or sampling;
//! - [`lm::train::Trainer`]: training a language model (resumable checkpoints, several devices);
//! - [`checkpoint`]: files and folders written whole or not at all, for every task.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod classify;
pub mod error;
pub mod graph;
pub mod io;
pub mod limits;
pub mod lm;
pub mod memory;
pub mod nn;
pub mod precision;
pub mod quantize;
pub mod ssm;
pub mod timeseries;
pub mod vision;

pub use error::{ModelError, Result};
