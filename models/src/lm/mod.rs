//! Language models: the Mamba, Mamba2 and Mamba-3 LM (`MambaLm`), the Transformer baseline, the
//! recurrent-inference interface, generation, export and the trainer.

pub mod budget;
pub mod config;
pub mod config_json;
pub mod generate;
pub mod hf;
pub mod mamba;
pub mod state_spaces;
pub mod tokenizer;
pub mod train;
pub mod transformer;
pub mod vocab;

pub use config::{Mamba2Settings, Mamba3Settings, MambaLmConfig};
pub use config_json::{ConfigFlavor, parse_mamba_config, read_mamba_config};
pub use generate::{
    Generated, GenerationConfig, Sampler, Sampling, generate, generate_with_logits,
};
pub use mamba::{Mamba2Lm, MambaCache, MambaLm};
pub use transformer::{TransformerLm, TransformerLmConfig};
pub use vocab::VocabMatrix;

use burn::tensor::{Device, Int, Tensor};

/// A causal LM with a parallel form (prefill) and a recurrent form (one token per step).
pub trait CausalLm {
    /// The recurrent state carried between steps.
    type Cache: Clone;

    /// Logits are returned for this many entries.
    fn vocab_size(&self) -> usize;
    /// The end-of-sequence token, if any.
    fn eos_token_id(&self) -> Option<usize>;
    /// The device the weights live on.
    fn device(&self) -> Device;
    /// Logits (B, L, V) of a batch of token rows (B, L).
    fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3>;
    /// Logits (B, L, V) and the state after the last position.
    fn prefill(&self, ids: Tensor<2, Int>) -> (Tensor<3>, Self::Cache);
    /// Logits (B, V) of each row's last position only, and the state after it: what generation
    /// needs from a prompt (transformers' `logits_to_keep=1`). The default narrows
    /// [`prefill`](Self::prefill); a model overrides it to run its LM head on one position.
    fn prefill_last(&self, ids: Tensor<2, Int>) -> (Tensor<2>, Self::Cache) {
        let (logits, cache) = self.prefill(ids);
        let len = logits.dims()[1];
        (logits.narrow(1, len - 1, 1).squeeze_dim::<2>(1), cache)
    }

    /// Logits (B, V) of one more token per row (B), and the new state.
    fn step(&self, ids: Tensor<1, Int>, cache: Self::Cache) -> (Tensor<2>, Self::Cache);
    /// The states of several batches as one batch, their rows in order.
    fn join_caches(&self, caches: Vec<Self::Cache>) -> Self::Cache;
    /// The state of the batch rows `rows` only, in that order.
    fn keep_rows(&self, cache: Self::Cache, rows: &[usize]) -> Self::Cache;
}
