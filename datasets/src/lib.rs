//! # ssm-datasets
//!
//! Data for the SSM zoo as Burn `Dataset`s and `Batcher`s: synthetic tasks generated on
//! demand (selective copying).

pub mod selective_copying;

pub use selective_copying::{
    CopyBatch, CopyBatcher, CopyItem, SelectiveCopyingConfig, SelectiveCopyingDataset,
};
