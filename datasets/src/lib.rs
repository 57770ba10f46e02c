//! # ssm-datasets
//!
//! Data for the SSM zoo as Burn `Dataset`s and `Batcher`s: synthetic tasks generated on
//! demand (selective copying) and small real data shipped with the crate (sequential digits).

pub mod digits;
pub mod selective_copying;

pub use digits::{DigitItem, DigitsBatcher, DigitsError, SequenceBatch, digits_split, read_digits};
pub use selective_copying::{
    CopyBatch, CopyBatcher, CopyItem, SelectiveCopyingConfig, SelectiveCopyingDataset,
};
