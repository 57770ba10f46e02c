//! Checkpoint formats: safetensors and PyTorch state dicts ([`TensorMap`]), Flax msgpack trees
//! ([`flax`]). The model configs are read next to their models (`lm::config`).

pub mod flax;
pub mod weights;

pub use weights::{TensorMap, find_weights, key};
