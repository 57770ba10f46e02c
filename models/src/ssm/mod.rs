//! Sequence mixers.

pub mod bimamba;
pub mod complex;
pub mod dss;
pub mod glu;
pub mod hippo;
pub mod mamba;
pub mod mamba2;
pub mod mamba3;
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
pub use reference::{DtTransform, ReferenceLayer, ReferenceOptions};
pub use ss2d::{Ss2d, Ss2dConfig, Ss2dForward};

use crate::precision::cast_to;
use burn::module::Module;
use burn::tensor::{DType, Int, Tensor};

/// The mixer of a block of the Mamba language models: Mamba (v1), Mamba2 or Mamba-3. Each
/// carries a [`MambaLayerCache`] (Mamba2's and Mamba-3's SSM state as (B, H·P, N); Mamba-3's
/// `conv_state` holds its carried angles, k and v per head).
///
/// A mixer runs in its weights' dtype ([`crate::precision`]): its methods take `x` in any float
/// dtype and return the output in `x`'s, so a half-precision mixer sits in an f32 residual
/// stream.
// One per layer, held by value: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Mixer {
    Mamba(MambaMixer),
    Mamba2(Mamba2Mixer),
    Mamba3(Mamba3Mixer),
}

/// The scan arguments and outputs of one mixer's forward.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum MixerTrace {
    Mamba(MambaTrace),
    Mamba2(Mamba2Trace),
    Mamba3(Mamba3Trace),
}

impl Mixer {
    /// The parallel forward from `cache` (zeros when `None`), with the state after the last step
    /// and the scan's trace.
    pub fn forward_traced(
        &self,
        x: Tensor<3>,
        cache: Option<MambaLayerCache>,
    ) -> (Tensor<3>, MambaLayerCache, MixerTrace) {
        let (outer, x) = self.enter(x);
        let (y, c, t) = match self {
            Mixer::Mamba(m) => {
                let (y, c, t) = m.forward_traced(x, cache);
                (y, c, MixerTrace::Mamba(t))
            }
            Mixer::Mamba2(m) => {
                let (y, c, t) = m.forward_traced(x, cache);
                (y, c, MixerTrace::Mamba2(t))
            }
            Mixer::Mamba3(m) => {
                let (y, c, t) = m.forward_traced(x, cache);
                (y, c, MixerTrace::Mamba3(t))
            }
        };
        (cast_to(y, outer), c, t)
    }

    /// The parallel forward over rows of packed sequences (see
    /// [`MambaMixer::forward_packed`]).
    ///
    pub fn forward_packed(
        &self,
        x: Tensor<3>,
        seq_idx: Tensor<2, Int>,
    ) -> (Tensor<3>, MambaLayerCache) {
        let (outer, x) = self.enter(x);
        let (y, c) = match self {
            Mixer::Mamba(m) => m.forward_packed(x, seq_idx, None),
            Mixer::Mamba2(m) => m.forward_packed(x, seq_idx, None),
            Mixer::Mamba3(m) => m.forward_packed(x, seq_idx, None),
        };
        (cast_to(y, outer), c)
    }

    /// The parallel forward from `cache`, with the state after the last step.
    pub fn forward_cached(
        &self,
        x: Tensor<3>,
        cache: Option<MambaLayerCache>,
    ) -> (Tensor<3>, MambaLayerCache) {
        let (outer, x) = self.enter(x);
        let (y, c) = match self {
            Mixer::Mamba(m) => m.forward_cached(x, cache),
            Mixer::Mamba2(m) => m.forward_cached(x, cache),
            Mixer::Mamba3(m) => m.forward_cached(x, cache),
        };
        (cast_to(y, outer), c)
    }

    /// The most floats per token and batch row that one tensor of the parallel forward holds:
    /// the input projection's output, or for the SSD mixers the chunked form's decay masks
    /// (B, H, L/Q, Q, Q per sub-step: H·Q·R floats per token). Sizes the sequence pieces of a
    /// prefill on a device with a binding limit.
    pub fn floats_per_token(&self) -> usize {
        match self {
            Mixer::Mamba(m) => m.in_proj.weight.lazy_shape().dims::<2>()[1],
            Mixer::Mamba2(m) => {
                (m.in_proj.weight.lazy_shape().dims::<2>()[1]).max(m.n_heads * m.chunk_size)
            }
            Mixer::Mamba3(m) => (m.in_proj.weight.lazy_shape().dims::<2>()[1])
                .max(m.n_heads * m.chunk_size * m.rank.max(1)),
        }
    }

    /// One recurrent step.
    pub fn step(&self, x: Tensor<2>, cache: MambaLayerCache) -> (Tensor<2>, MambaLayerCache) {
        let (outer, x) = self.enter(x);
        let (y, c) = match self {
            Mixer::Mamba(m) => m.step(x, cache),
            Mixer::Mamba2(m) => m.step(x, cache),
            Mixer::Mamba3(m) => m.step(x, cache),
        };
        (cast_to(y, outer), c)
    }

    /// The dtype this mixer computes in: its input projection's.
    pub fn dtype(&self) -> DType {
        match self {
            Mixer::Mamba(m) => m.in_proj.weight.val().dtype(),
            Mixer::Mamba2(m) => m.in_proj.weight.val().dtype(),
            Mixer::Mamba3(m) => m.in_proj.weight.val().dtype(),
        }
    }

    /// `x`'s dtype, and `x` in this mixer's.
    fn enter<const D: usize>(&self, x: Tensor<D>) -> (DType, Tensor<D>) {
        (x.dtype(), cast_to(x, self.dtype()))
    }
}
