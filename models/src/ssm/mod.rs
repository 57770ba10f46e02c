//! Sequence mixers.

pub mod mamba;

pub use mamba::{MambaLayerCache, MambaMixer, MambaMixerConfig};
