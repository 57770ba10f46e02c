//! Configs and checkpoint import.

pub mod config;
pub mod flax;
pub mod weights;

pub use config::{ConfigFlavor, parse_mamba_config, read_mamba_config};
pub use weights::{TensorMap, find_weights};
