//! The selective-copying task of the Mamba paper (Gu & Dao 2023, section 4.1.1): a few data
//! tokens are scattered among noise tokens at random positions; after the context, one marker
//! token per data token asks the model to reproduce the data tokens in order. Solving it needs
//! content-aware (selective) memory: the positions vary, so a time-invariant filter cannot.
//!
//! Token ids: `0` noise, `1` marker, `2..2 + n_symbols` data.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The noise token.
pub const NOISE: usize = 0;
/// The marker that asks for the next copied token.
pub const MARKER: usize = 1;
/// The first data token id.
pub const FIRST_SYMBOL: usize = 2;

/// Sizes of the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectiveCopyingConfig {
    /// Length of the context holding the data tokens among noise.
    pub context_len: usize,
    /// Data tokens to copy.
    pub n_copy: usize,
    /// Distinct data tokens.
    pub n_symbols: usize,
}

impl SelectiveCopyingConfig {
    /// The vocabulary size a model needs: noise, marker and the symbols.
    pub fn vocab_size(&self) -> usize {
        FIRST_SYMBOL + self.n_symbols
    }
    /// Length of an input row: context plus markers.
    pub fn seq_len(&self) -> usize {
        self.context_len + self.n_copy
    }
    /// Checks that the task can be built.
    pub fn validate(&self) -> Result<(), crate::error::DataFileError> {
        if self.n_copy == 0 || self.n_symbols == 0 {
            return Err(crate::error::DataFileError::Invalid(
                "n_copy and n_symbols must be at least 1".into(),
            ));
        }
        if self.n_copy > self.context_len {
            return Err(crate::error::DataFileError::Invalid(format!(
                "cannot place {} data tokens in a context of {}",
                self.n_copy, self.context_len
            )));
        }
        Ok(())
    }
}

/// One example: the input row and the tokens expected at the marker positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyItem {
    /// The input row (`seq_len` tokens): the context with the data tokens among noise, then
    /// `n_copy` markers.
    pub input: Vec<usize>,
    /// The data tokens in context order (`n_copy` tokens), expected at the marker positions.
    pub target: Vec<usize>,
}

/// Builds example `index` of a seeded stream: the same (seed, index) always gives the same item.
pub fn make_item(config: &SelectiveCopyingConfig, seed: u64, index: usize) -> CopyItem {
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut positions: Vec<usize> = Vec::with_capacity(config.n_copy);
    while positions.len() < config.n_copy {
        let p = rng.random_range(0..config.context_len);
        if !positions.contains(&p) {
            positions.push(p);
        }
    }
    positions.sort_unstable();
    let target: Vec<usize> = (0..config.n_copy)
        .map(|_| FIRST_SYMBOL + rng.random_range(0..config.n_symbols))
        .collect();
    let mut input = vec![NOISE; config.context_len];
    for (p, t) in positions.iter().zip(&target) {
        input[*p] = *t;
    }
    input.extend(std::iter::repeat_n(MARKER, config.n_copy));
    CopyItem { input, target }
}

/// A fixed-size, seeded dataset of selective-copying examples (generated on demand).
#[derive(Debug, Clone)]
pub struct SelectiveCopyingDataset {
    /// The task's sizes.
    pub config: SelectiveCopyingConfig,
    /// Seeds the stream: item `i` is [`make_item`]`(config, seed, i)`.
    pub seed: u64,
    /// The number of items.
    pub len: usize,
}

impl Dataset<CopyItem> for SelectiveCopyingDataset {
    fn get(&self, index: usize) -> Result<CopyItem, DatasetError> {
        if index < self.len {
            Ok(make_item(&self.config, self.seed, index))
        } else {
            Err(DatasetError::new(std::io::Error::other(format!(
                "index {index} out of range for a dataset of {}",
                self.len
            ))))
        }
    }
    fn len(&self) -> usize {
        self.len
    }
}

/// A batch: inputs (B, L) and targets (B, n_copy), the targets being what the logits at the
/// last `n_copy` positions must predict.
#[derive(Debug, Clone)]
pub struct CopyBatch {
    /// The input rows (B, L), L = `seq_len`.
    pub inputs: Tensor<2, Int>,
    /// The expected data tokens (B, n_copy).
    pub targets: Tensor<2, Int>,
}

/// Stacks [`CopyItem`]s into a [`CopyBatch`].
#[derive(Debug, Clone, Default)]
pub struct CopyBatcher;

impl Batcher<CopyItem, CopyBatch> for CopyBatcher {
    fn batch(&self, items: Vec<CopyItem>, device: &Device) -> CopyBatch {
        let b = items.len();
        let l = items[0].input.len();
        let m = items[0].target.len();
        let inputs: Vec<i64> = items
            .iter()
            .flat_map(|i| i.input.iter().map(|&t| t as i64))
            .collect();
        let targets: Vec<i64> = items
            .iter()
            .flat_map(|i| i.target.iter().map(|&t| t as i64))
            .collect();
        CopyBatch {
            inputs: Tensor::from_data(TensorData::new(inputs, [b, l]), device),
            targets: Tensor::from_data(TensorData::new(targets, [b, m]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_well_formed_and_reproducible() {
        let c = SelectiveCopyingConfig {
            context_len: 20,
            n_copy: 4,
            n_symbols: 6,
        };
        c.validate().unwrap();
        for i in 0..50 {
            let item = make_item(&c, 5, i);
            assert_eq!(item, make_item(&c, 5, i));
            assert_eq!(item.input.len(), c.seq_len());
            let data: Vec<usize> = item.input[..20]
                .iter()
                .copied()
                .filter(|&t| t >= FIRST_SYMBOL)
                .collect();
            assert_eq!(data, item.target);
            assert!(item.input[20..].iter().all(|&t| t == MARKER));
            assert!(item.target.iter().all(|&t| t < c.vocab_size()));
        }
        assert_ne!(make_item(&c, 5, 0), make_item(&c, 6, 0));
    }

    #[test]
    fn impossible_sizes_are_rejected() {
        let c = SelectiveCopyingConfig {
            context_len: 3,
            n_copy: 4,
            n_symbols: 6,
        };
        assert!(c.validate().is_err());
    }
}
