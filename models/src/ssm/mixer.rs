//! What the Mamba-family mixers share: [`SequenceMixer`], the forward variants written once over
//! one required method, and [`Mixer`], the mixer of a language model's block (any of them).

use super::{
    Mamba2Mixer, Mamba2Trace, Mamba3Mixer, Mamba3Trace, MambaLayerCache, MambaMixer, MambaTrace,
};
use crate::nn::linear_dims;
use crate::precision::cast_to;
use burn::module::Module;
use burn::tensor::{DType, Int, Tensor};

/// A sequence mixer of the Mamba family: (B, L, d_model) -> (B, L, d_model), carrying a
/// [`MambaLayerCache`] from one call to the next.
///
/// An implementation writes [`SequenceMixer::forward_full`] only; `forward`, `forward_cached`,
/// `forward_traced` and `forward_packed` are that one method with arguments left out, so every
/// mixer has the same forward variants with the same meaning. (The recurrent `step` is each
/// mixer's own method: it takes one token, not a sequence.)
pub trait SequenceMixer {
    /// The intermediate tensors one forward records, for parity tests against the reference.
    type Trace;

    /// The parallel forward from `cache` (zeros when `None`) over rows of packed sequences
    /// when `seq_idx` (B, L) is given (non-decreasing along a row, see
    /// `ssm_backends::seq_idx_from_lengths`: no sequence sees the one before it; `cache` is
    /// each row's first sequence's starting state). Returns the output, the state after each
    /// row's last token, and the trace.
    fn forward_full(
        &self,
        x: Tensor<3>,
        cache: Option<MambaLayerCache>,
        seq_idx: Option<Tensor<2, Int>>,
    ) -> (Tensor<3>, MambaLayerCache, Self::Trace);

    /// The parallel forward over a sequence (B, L, d_model) -> (B, L, d_model), from a zero
    /// state.
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_full(x, None, None).0
    }

    /// The parallel forward continuing from `cache` (zeros when `None`); returns the output and
    /// the state after the last step, ready for the mixer's `step` or another chunk.
    fn forward_cached(
        &self,
        x: Tensor<3>,
        cache: Option<MambaLayerCache>,
    ) -> (Tensor<3>, MambaLayerCache) {
        let (y, cache, _) = self.forward_full(x, cache, None);
        (y, cache)
    }

    /// [`SequenceMixer::forward_cached`], also returning the trace.
    fn forward_traced(
        &self,
        x: Tensor<3>,
        cache: Option<MambaLayerCache>,
    ) -> (Tensor<3>, MambaLayerCache, Self::Trace) {
        self.forward_full(x, cache, None)
    }

    /// The parallel forward over rows of packed sequences (`seq_idx` (B, L)): the convolution
    /// and the scan restart at each new sequence. `cache` is each row's first sequence's
    /// starting state; the returned state is each row's last sequence's, after its last token.
    fn forward_packed(
        &self,
        x: Tensor<3>,
        seq_idx: Tensor<2, Int>,
        cache: Option<MambaLayerCache>,
    ) -> (Tensor<3>, MambaLayerCache) {
        let (y, cache, _) = self.forward_full(x, cache, Some(seq_idx));
        (y, cache)
    }
}

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
    /// A Mamba (S6) mixer: `ssm_cfg.layer = "Mamba1"`, transformers' `MambaMixer`.
    Mamba(MambaMixer),
    /// A Mamba2 (SSD) mixer: `ssm_cfg.layer = "Mamba2"`, transformers' `Mamba2Mixer`.
    Mamba2(Mamba2Mixer),
    /// A Mamba-3 mixer (SISO or MIMO): `ssm_cfg.layer = "Mamba3"`.
    Mamba3(Mamba3Mixer),
}

/// The scan arguments and outputs of one mixer's forward.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum MixerTrace {
    /// A Mamba mixer's trace.
    Mamba(MambaTrace),
    /// A Mamba2 mixer's trace.
    Mamba2(Mamba2Trace),
    /// A Mamba-3 mixer's trace.
    Mamba3(Mamba3Trace),
}

impl SequenceMixer for Mixer {
    type Trace = MixerTrace;

    fn forward_full(
        &self,
        x: Tensor<3>,
        cache: Option<MambaLayerCache>,
        seq_idx: Option<Tensor<2, Int>>,
    ) -> (Tensor<3>, MambaLayerCache, MixerTrace) {
        let (outer, x) = self.enter(x);
        let (y, c, t) = match self {
            Mixer::Mamba(m) => {
                let (y, c, t) = m.forward_full(x, cache, seq_idx);
                (y, c, MixerTrace::Mamba(t))
            }
            Mixer::Mamba2(m) => {
                let (y, c, t) = m.forward_full(x, cache, seq_idx);
                (y, c, MixerTrace::Mamba2(t))
            }
            Mixer::Mamba3(m) => {
                let (y, c, t) = m.forward_full(x, cache, seq_idx);
                (y, c, MixerTrace::Mamba3(t))
            }
        };
        (cast_to(y, outer), c, t)
    }
}

impl Mixer {
    /// The most floats per token and batch row that one tensor of the parallel forward holds:
    /// the input projection's output, or for the SSD mixers the chunked form's decay masks
    /// (B, H, L/Q, Q, Q per sub-step: H·Q·R floats per token). Sizes the sequence pieces of a
    /// prefill on a device with a binding limit.
    pub fn floats_per_token(&self) -> usize {
        match self {
            Mixer::Mamba(m) => linear_dims(&m.in_proj)[1],
            Mixer::Mamba2(m) => linear_dims(&m.in_proj)[1].max(m.n_heads * m.chunk_size),
            Mixer::Mamba3(m) => {
                linear_dims(&m.in_proj)[1].max(m.n_heads * m.chunk_size * m.rank.max(1))
            }
        }
    }

    /// One recurrent step (B, d_model) -> (B, d_model).
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
            Mixer::Mamba(m) => m.in_proj.weight.dtype(),
            Mixer::Mamba2(m) => m.in_proj.weight.dtype(),
            Mixer::Mamba3(m) => m.in_proj.weight.dtype(),
        }
    }

    /// `x`'s dtype, and `x` in this mixer's.
    fn enter<const D: usize>(&self, x: Tensor<D>) -> (DType, Tensor<D>) {
        (x.dtype(), cast_to(x, self.dtype()))
    }
}
