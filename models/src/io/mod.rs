//! Checkpoint formats: safetensors and PyTorch state dicts ([`TensorMap`]), Flax msgpack trees
//! ([`flax`]); writing safetensors in PyTorch's layout ([`export`]). The model configs are read next to their models (`lm::config`).

pub mod export;
pub mod flax;
pub mod weights;

pub use export::{pytorch_state_dict, write_safetensors};
pub use weights::{TensorMap, find_weights, key};
