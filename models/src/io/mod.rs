//! Checkpoint formats: safetensors and PyTorch state dicts ([`TensorMap`]), Flax msgpack trees
//! ([`flax`]); writing safetensors in PyTorch's layout ([`export`]); 8-bit matrices beside their
//! scales ([`q8`]). The model configs are read next to their models (`lm::config`).

pub mod export;
pub mod flax;
pub mod q8;
pub mod weights;

pub use export::{
    StateDict, pytorch_state_dict, pytorch_state_dict_q8, write_safetensors, write_safetensors_q8,
};
pub use weights::{TensorMap, find_weights, key};
