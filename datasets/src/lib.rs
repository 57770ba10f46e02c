//! # ssm-datasets
//!
//! Data for the SSM zoo as Burn `Dataset`s and `Batcher`s: synthetic tasks generated on
//! demand (selective copying), small real data shipped with the crate (sequential digits, also
//! as images), and readers for image folders and the MNIST / CIFAR-10 files, and the
//! long-horizon forecasting benchmarks downloaded into a cache ([`download`]), and text for
//! language models packed into rows of documents ([`text`]).

#![warn(missing_docs)]

pub mod digits;
pub mod download;
pub mod error;
pub mod files;
pub mod graphs;
pub mod images;
pub mod selective_copying;
pub mod shipped;
pub mod text;
pub mod timeseries;

/// The crate's one error type (the per-reader names `DigitsError`, `SeriesError`,
/// `GraphError`, `ImageDataError` and `DownloadError` are aliases of it).
pub use error::DataFileError;

pub use digits::{DigitItem, DigitsBatcher, DigitsError, SequenceBatch, digits_split, read_digits};
pub use images::{
    ImageBatch, ImageBatcher, ImageDataError, ImageItem, ImageSet, ImageTransform, digits_images,
    read_cifar10, read_image, read_image_folder, read_mnist,
};
pub use selective_copying::{
    CopyBatch, CopyBatcher, CopyItem, SelectiveCopyingConfig, SelectiveCopyingDataset,
};
