//! What a language-model run needs in memory, from its settings alone (see
//! [`crate::memory`]): checked before the model is built, so that a mistyped size is one clear
//! refusal instead of an allocation failure.
//!
//! The activation and logits factors were measured on Flex with a counting allocator
//! (`models/tests/memory_budget.rs` holds each estimate within a factor of 2 of the measured
//! peak): training keeps about [`ACTIVATION_FLOATS`] floats per token and layer for each unit
//! of the layer's widest activation, and the loss about [`LOGIT_COPIES`] copies of the logits.

use super::config::MambaLmConfig;
use crate::memory::{MemoryEstimate, human_count};

/// Floats an autodiff forward keeps per token and layer, per float of the layer's widest
/// activation (in_proj's output), for the backward.
pub const ACTIVATION_FLOATS: u64 = 6;
/// Copies of the (B, L, V) logits the loss and its gradient hold at once.
pub const LOGIT_COPIES: u64 = 4;
/// Floats an inference forward holds per token at once, per float of the widest activation
/// (a layer's input, output and intermediate tensors; the next layer reuses them).
pub const INFERENCE_FLOATS: u64 = 4;

const F32: u64 = 4;

impl MambaLmConfig {
    /// The widest activation a layer holds per token, in floats, for sizing memory (in_proj's
    /// output, for Mamba-3 with x and z expanded to its rank, or the SSD's chunk masks where
    /// wider), from the config alone. Not the binding-limit width of `Mixer::floats_per_token`,
    /// which counts one tensor, not the memory beside it.
    pub fn activation_floats_per_token(&self) -> u64 {
        let (proj, masks) = if self.mamba3.is_some() {
            let m = self.mixer3();
            // Its core runs on x and z expanded to the rank (R d_inner each) beside in_proj's
            // output.
            let expanded = 2u64
                .saturating_mul(m.rank() as u64)
                .saturating_mul(m.d_inner() as u64);
            (
                (m.d_in_proj() as u64).saturating_add(expanded),
                (m.n_heads() as u64)
                    .saturating_mul(m.chunk_size as u64)
                    .saturating_mul(m.rank().max(1) as u64),
            )
        } else if self.mamba2.is_some() {
            let m = self.mixer2();
            (
                m.d_in_proj() as u64,
                (m.n_heads() as u64).saturating_mul(m.chunk_size as u64),
            )
        } else {
            (2u64.saturating_mul(self.d_inner() as u64), 0)
        };
        proj.max(masks).max(self.d_model as u64)
    }

    /// Training one micro-batch of `batch` rows of `seq_len` tokens with AdamW: the weights,
    /// their gradients and two moments (4 copies of the parameters, plus a bf16 copy when
    /// `half`), the activations the backward keeps, and the logits with the loss's copies.
    pub fn training_memory(&self, batch: usize, seq_len: usize, half: bool) -> MemoryEstimate {
        let params = self.param_count();
        let tokens = (batch as u64).saturating_mul(seq_len as u64);
        let copies = if half { 4 * F32 + 2 } else { 4 * F32 };
        let activations = tokens
            .saturating_mul(self.n_layer as u64)
            .saturating_mul(self.activation_floats_per_token())
            .saturating_mul(ACTIVATION_FLOATS * F32);
        let logits = tokens
            .saturating_mul(self.padded_vocab() as u64)
            .saturating_mul(LOGIT_COPIES * F32);
        MemoryEstimate {
            what: format!(
                "training ({} parameters, batch {batch} x {seq_len} tokens)",
                human_count(params)
            ),
            parts: vec![
                (
                    "weights, gradients and optimizer state",
                    params.saturating_mul(copies),
                ),
                ("activations", activations),
                ("logits", logits),
            ],
            settings: "--d-model, --layers, --d-state, the vocabulary, --batch-size or --seq-len"
                .into(),
        }
    }

    /// The weights alone (f32), as loading a checkpoint of this config holds them.
    pub fn weights_memory(&self, what: String) -> MemoryEstimate {
        MemoryEstimate {
            what,
            parts: vec![("weights", self.param_count().saturating_mul(F32))],
            settings: "the model".into(),
        }
    }

    /// A parallel forward (no autodiff) of `batch` rows of `len` tokens: the weights, the
    /// activations of one layer at a time, and the logits of every position when
    /// `all_logits`, else of the last one.
    pub fn inference_memory(&self, batch: usize, len: usize, all_logits: bool) -> MemoryEstimate {
        let params = self.param_count();
        let tokens = (batch as u64).saturating_mul(len as u64);
        let activations = tokens
            .saturating_mul(self.activation_floats_per_token())
            .saturating_mul(INFERENCE_FLOATS * F32);
        let rows = if all_logits { tokens } else { batch as u64 };
        let logits = rows
            .saturating_mul(self.padded_vocab() as u64)
            .saturating_mul(2 * F32);
        MemoryEstimate {
            what: format!(
                "a forward pass ({} parameters, batch {batch} x {len} tokens)",
                human_count(params)
            ),
            parts: vec![
                ("weights", params.saturating_mul(F32)),
                ("activations", activations),
                ("logits", logits),
            ],
            settings: "--d-model, --layers, the vocabulary, the batch or the length".into(),
        }
    }
}
