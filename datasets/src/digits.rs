//! The UCI handwritten digits (8x8 grey levels 0..16, 1,797 images; Alpaydin & Kaynak, CC BY 4.0,
//! as shipped by scikit-learn) read pixel by pixel as sequences of length 64: the sequential
//! digits task of the S4 family's examples. `data/digits.csv.gz` ships with the crate.
//!
//! Rows are 64 pixel columns then the label; a fixed seeded split keeps 20% for testing.

use crate::files::read_bytes;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Pixels per image (the sequence length).
pub const PIXELS: usize = 64;
/// Classes.
pub const CLASSES: usize = 10;

/// One image: its pixels scaled to [0, 1] in row-major order, and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitItem {
    /// The 64 grey levels divided by 16, so in [0, 1], row by row.
    pub pixels: Vec<f32>,
    /// The digit, 0..=9.
    pub label: usize,
}

/// A reading error, with the line it happened on.
pub type DigitsError = crate::error::DataFileError;

/// The copy that ships with this crate.
pub fn default_digits_path() -> PathBuf {
    crate::shipped::shipped_data("digits.csv.gz")
}

/// Reads a digits CSV (gzip-compressed when the name ends in `.gz`): 64 integer pixels in
/// 0..=16 then a label in 0..=9 per line.
pub fn read_digits(path: &Path) -> Result<Vec<DigitItem>, DigitsError> {
    let io = |source| DigitsError::Io {
        path: path.into(),
        source,
    };
    let bytes = read_bytes(path)?;
    let mut items = Vec::new();
    for (i, line) in bytes.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| DigitsError::Parse {
            path: path.into(),
            line: i + 1,
            message,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != PIXELS + 1 {
            return Err(bad(format!(
                "expected {} comma-separated values (64 pixels and a label), found {}",
                PIXELS + 1,
                fields.len()
            )));
        }
        let mut pixels = Vec::with_capacity(PIXELS);
        for (j, f) in fields[..PIXELS].iter().enumerate() {
            let v: f32 = f
                .parse()
                .map_err(|_| bad(format!("pixel {j} is not a number: '{f}'")))?;
            if !(0.0..=16.0).contains(&v) {
                return Err(bad(format!("pixel {j} = {v} is outside 0..=16")));
            }
            pixels.push(v / 16.0);
        }
        let label: usize = fields[PIXELS]
            .parse()
            .map_err(|_| bad(format!("the label is not an integer: '{}'", fields[PIXELS])))?;
        if label >= CLASSES {
            return Err(bad(format!("label {label} is outside 0..=9")));
        }
        items.push(DigitItem { pixels, label });
    }
    if items.is_empty() {
        return Err(DigitsError::Parse {
            path: path.into(),
            line: 0,
            message: "no images".into(),
        });
    }
    Ok(items)
}

/// A fixed split: the items shuffled with `seed`, the last `test_fraction` for testing.
pub fn split(
    mut items: Vec<DigitItem>,
    test_fraction: f64,
    seed: u64,
) -> (InMemDataset<DigitItem>, InMemDataset<DigitItem>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    items.shuffle(&mut rng);
    let n_test = ((items.len() as f64) * test_fraction.clamp(0.0, 1.0)).round() as usize;
    let test = items.split_off(items.len() - n_test);
    (InMemDataset::new(items), InMemDataset::new(test))
}

/// The standard split of the shipped data: 80% train, 20% test, seed 0.
pub fn digits_split() -> Result<(InMemDataset<DigitItem>, InMemDataset<DigitItem>), DigitsError> {
    Ok(split(read_digits(&default_digits_path())?, 0.2, 0))
}

/// A batch of sequences for classification: `inputs` (B, L, d_input), `targets` (B).
#[derive(Debug, Clone)]
pub struct SequenceBatch {
    /// The sequences (B, L, d_input), float.
    pub inputs: Tensor<3>,
    /// The class of each sequence (B), integer.
    pub targets: Tensor<1, Int>,
}

/// Batches digits as (B, 64, 1) pixel sequences.
#[derive(Debug, Clone, Default)]
pub struct DigitsBatcher;

impl Batcher<DigitItem, SequenceBatch> for DigitsBatcher {
    fn batch(&self, items: Vec<DigitItem>, device: &Device) -> SequenceBatch {
        let b = items.len();
        let pixels: Vec<f32> = items
            .iter()
            .flat_map(|i| i.pixels.iter().copied())
            .collect();
        let labels: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
        SequenceBatch {
            inputs: Tensor::from_data(TensorData::new(pixels, [b, PIXELS, 1]), device),
            targets: Tensor::from_data(TensorData::new(labels, [b]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::data::dataset::Dataset;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn row(label: &str) -> String {
        let mut v = vec!["16"; PIXELS].join(",");
        v.push(',');
        v.push_str(label);
        v
    }

    #[test]
    fn reads_the_shipped_digits_and_splits_them_the_same_way() {
        let items = read_digits(&default_digits_path()).unwrap();
        assert_eq!(items.len(), 1797);
        assert!(
            items
                .iter()
                .all(|i| i.pixels.len() == PIXELS && i.label < CLASSES)
        );
        let (a, b) = digits_split().unwrap();
        let (c, d) = digits_split().unwrap();
        assert_eq!((a.len(), b.len()), (1438, 359));
        assert_eq!(a.get(0).unwrap(), c.get(0).unwrap());
        assert_eq!(b.get(358).unwrap(), d.get(358).unwrap());
    }

    #[test]
    fn malformed_files_are_errors_with_the_line() {
        for (text, needle) in [
            ("1,2,3\n", "line 1: expected 65"),
            (
                &format!("{}\n{}\n", row("3"), row("x")),
                "line 2: the label",
            ),
            (&format!("{}\n", row("12")), "label 12"),
            (&row("1").replacen("16", "17", 1), "outside 0..=16"),
            (&row("1").replacen("16", "a", 1), "pixel 0 is not a number"),
            ("", "no images"),
        ] {
            let f = write(text);
            let err = read_digits(f.path()).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let err = read_digits(Path::new("/nonexistent/digits.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
