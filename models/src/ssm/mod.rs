//! Sequence mixers.

pub mod bimamba;
pub mod complex;
pub mod dss;
pub mod glu;
pub mod hippo;
pub mod kernel_cache;
pub mod mamba;
pub mod mamba2;
pub mod mamba3;
pub mod mixer;
pub mod reference;
pub mod s4;
pub mod s4d;
pub mod s4nd;
pub mod s5;
pub mod ss2d;

pub use bimamba::BiMambaMixer;
pub use mamba::{MambaLayerCache, MambaMixer, MambaMixerConfig, MambaTrace};
pub use mamba2::{Mamba2Mixer, Mamba2MixerConfig, Mamba2Trace};
pub use mamba3::{Mamba3Mixer, Mamba3MixerConfig, Mamba3Trace};
pub use mixer::{Mixer, MixerTrace, SequenceMixer};
pub use reference::{DtTransform, ReferenceLayer, ReferenceOptions};
pub use ss2d::{Ss2d, Ss2dConfig, Ss2dForward};
