//! Text for language modelling: documents read from plain-text files (one document per file),
//! `.jsonl` files (one JSON object per line, its `text` field a document) or pre-tokenized
//! token files, any of them gzipped (`.gz`); documents as token ids ([`TokenDocs`], also the
//! on-disk token cache), split into training and validation documents, and packed into rows of
//! a fixed length with a per-token document index ([`PackedRows`]): each document starts with
//! the end-of-text token (as a separator) and the rows are cut from the concatenated stream,
//! so a row may hold the end of one document and the start of the next; `seq_idx` tells the
//! model where each starts so that no state or convolution window crosses that boundary.

use crate::error::DataFileError;
use crate::files::read_bytes;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::path::Path;

/// The text documents of a file: a `.jsonl` file's `text` fields (other fields ignored), or a
/// plain-text file as one document. Text must be UTF-8; `.gz` files are read gunzipped.
pub fn read_documents(path: &Path) -> Result<Vec<String>, DataFileError> {
    let bytes = read_bytes(path)?;
    let name = path.to_string_lossy();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let text = |bytes: Vec<u8>| {
        String::from_utf8(bytes).map_err(|e| DataFileError::Format {
            path: path.into(),
            message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        })
    };
    if !name.ends_with(".jsonl") {
        return Ok(vec![text(bytes)?]);
    }
    let mut docs = Vec::new();
    for (i, line) in text(bytes)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parse = |message: String| DataFileError::Parse {
            path: path.into(),
            line: i + 1,
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| parse(format!("not JSON: {e}")))?;
        match value.get("text") {
            Some(serde_json::Value::String(s)) => docs.push(s.clone()),
            Some(other) => {
                return Err(parse(format!(
                    "the \"text\" field must be a string, found {}",
                    json_kind(other)
                )));
            }
            None => return Err(parse("no \"text\" field".into())),
        }
    }
    Ok(docs)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The shipped text: 290 documents of Shakespeare (the sonnets and the scenes of eight plays;
/// see `data/README.md`).
pub fn default_text_path() -> std::path::PathBuf {
    crate::shipped::shipped_data("shakespeare.jsonl.gz")
}

/// Documents as token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDocs {
    /// The documents in order, each its token ids (without separators).
    pub docs: Vec<Vec<u32>>,
}

const MAGIC: &[u8; 8] = b"SSMZTOK1";

impl TokenDocs {
    /// Total tokens.
    pub fn len_tokens(&self) -> usize {
        self.docs.iter().map(Vec::len).sum()
    }

    /// The largest token id, if any token.
    pub fn max_id(&self) -> Option<u32> {
        self.docs.iter().flatten().copied().max()
    }

    /// The token-file layout (also the cache of `zoo train lm`): `SSMZTOK1`, the document
    /// count (u64), each document's length (u64), then all tokens (u32), little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 * self.docs.len() + 4 * self.len_tokens());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.docs.len() as u64).to_le_bytes());
        for d in &self.docs {
            out.extend_from_slice(&(d.len() as u64).to_le_bytes());
        }
        for t in self.docs.iter().flatten() {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out
    }

    /// Reads the layout of [`TokenDocs::to_bytes`]; every count is checked against the bytes
    /// present before anything is allocated.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, DataFileError> {
        let bad = |message: String| DataFileError::Format {
            path: path.into(),
            message,
        };
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad(
                "not a token file (expected the SSMZTOK1 header of `zoo train lm`'s token files)"
                    .into(),
            ));
        }
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        let n = u64_at(8);
        let rest = (bytes.len() - 16) as u64;
        if n > rest / 8 {
            return Err(bad(format!(
                "claims {n} documents, but only {rest} bytes follow the header (truncated?)"
            )));
        }
        let n = n as usize;
        let lens: Vec<u64> = (0..n).map(|i| u64_at(16 + 8 * i)).collect();
        let body = (rest - 8 * n as u64) / 4;
        let total = lens
            .iter()
            .try_fold(0u64, |a, &l| a.checked_add(l))
            .filter(|&t| t == body && (rest - 8 * n as u64).is_multiple_of(4))
            .ok_or_else(|| {
                bad(format!(
                    "document lengths add up to {} tokens, the file holds {} bytes of tokens \
                     (truncated or corrupt)",
                    lens.iter().fold(0u64, |a, &l| a.saturating_add(l)),
                    rest - 8 * n as u64
                ))
            })?;
        let mut tokens = bytes[16 + 8 * n..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")));
        debug_assert_eq!(total as usize * 4, bytes.len() - 16 - 8 * n);
        let docs = lens
            .iter()
            .map(|&l| tokens.by_ref().take(l as usize).collect())
            .collect();
        Ok(Self { docs })
    }

    /// Reads a token file: the layout of [`TokenDocs::to_bytes`] (`.tokens`), or a flat
    /// stream of little-endian u16 ids (`.bin`, nanoGPT's layout) cut into documents at each
    /// `eos` (which is dropped: packing puts it back). Either may be gzipped.
    pub fn read(path: &Path, eos: u32) -> Result<Self, DataFileError> {
        let bytes = read_bytes(path)?;
        let name = path.to_string_lossy();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".bin") {
            if !bytes.len().is_multiple_of(2) {
                return Err(DataFileError::Format {
                    path: path.into(),
                    message: format!(
                        "a .bin token file holds u16 ids, but its size ({} bytes) is odd",
                        bytes.len()
                    ),
                });
            }
            let ids = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32);
            let mut docs = vec![Vec::new()];
            for id in ids {
                if id == eos {
                    docs.push(Vec::new());
                } else {
                    docs.last_mut().expect("one document").push(id);
                }
            }
            docs.retain(|d| !d.is_empty());
            return Ok(Self { docs });
        }
        Self::from_bytes(&bytes, path)
    }

    /// Splits off about `fraction` of the documents for validation, spread evenly over the
    /// corpus (document `i` is held out when `floor((i + 1) f) > floor(i f)`); when that holds
    /// out no document (or all of them), the last document's tail of `fraction` of its tokens is
    /// held out instead. Returns (train, validation).
    ///
    /// # Errors
    /// `fraction` outside [0, 1), or too few tokens to split.
    pub fn split(self, fraction: f64) -> Result<(Self, Self), DataFileError> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(DataFileError::Invalid(format!(
                "the validation fraction must be in [0, 1), found {fraction}"
            )));
        }
        if fraction == 0.0 {
            return Ok((self, Self { docs: Vec::new() }));
        }
        let n = self.docs.len();
        let held = |i: usize| ((i + 1) as f64 * fraction).floor() > (i as f64 * fraction).floor();
        let n_val = (0..n).filter(|&i| held(i)).count();
        if n_val > 0 && n_val < n {
            let (mut train, mut val) = (Vec::new(), Vec::new());
            for (i, d) in self.docs.into_iter().enumerate() {
                if held(i) { &mut val } else { &mut train }.push(d);
            }
            return Ok((Self { docs: train }, Self { docs: val }));
        }
        let mut docs = self.docs;
        let last = docs.pop().unwrap_or_default();
        let cut = ((last.len() as f64) * (1.0 - fraction)).round() as usize;
        if cut == 0 || cut >= last.len() {
            return Err(DataFileError::Invalid(format!(
                "too little text to hold out a validation fraction of {fraction} ({} tokens in \
                 the last document); give more text or --val-fraction 0",
                last.len()
            )));
        }
        let val = last[cut..].to_vec();
        docs.push(last[..cut].to_vec());
        Ok((Self { docs }, Self { docs: vec![val] }))
    }
}

/// Documents packed into rows of `seq_len + 1` tokens: the stream `eos d0 eos d1 eos d2 ...`
/// cut into consecutive windows that overlap by one token (a row's inputs are its first
/// `seq_len` tokens, its targets the last `seq_len`); the stream's tail shorter than a row is
/// dropped.
#[derive(Debug, Clone)]
pub struct PackedRows {
    stream: Vec<u32>,
    eos: u32,
    seq_len: usize,
    rows: usize,
}

/// One row: inputs, targets and each input's document index (0 for the document the row
/// starts in, +1 at each `eos`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedRow {
    /// The row's first `seq_len` tokens.
    pub inputs: Vec<u32>,
    /// The next token after each input (the row shifted by one, `seq_len` tokens).
    pub targets: Vec<u32>,
    /// Each input's document index within the row (`seq_len` values): an `eos` starts the
    /// next document.
    pub seq_idx: Vec<u32>,
}

impl PackedRows {
    /// # Errors
    /// `seq_len` 0, or fewer than `seq_len + 1` tokens in all.
    pub fn new(docs: &TokenDocs, eos: u32, seq_len: usize) -> Result<Self, DataFileError> {
        if seq_len == 0 {
            return Err(DataFileError::Invalid(
                "the sequence length must be at least 1".into(),
            ));
        }
        let mut stream = Vec::with_capacity(docs.len_tokens() + docs.docs.len());
        for d in &docs.docs {
            stream.push(eos);
            stream.extend_from_slice(d);
        }
        if stream.len() < seq_len + 1 {
            return Err(DataFileError::Invalid(format!(
                "{} tokens (with separators) do not fill one row of {} tokens; give more text or \
                 a shorter --seq-len",
                stream.len(),
                seq_len + 1
            )));
        }
        let rows = (stream.len() - 1) / seq_len;
        Ok(Self {
            stream,
            eos,
            seq_len,
            rows,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// No rows (never true for a successfully built one).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Tokens per row (inputs).
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> PackedRow {
        let w = &self.stream[r * self.seq_len..r * self.seq_len + self.seq_len + 1];
        let mut doc = 0;
        let seq_idx = w[..self.seq_len]
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                if t == self.eos && i > 0 {
                    doc += 1;
                }
                doc
            })
            .collect();
        PackedRow {
            inputs: w[..self.seq_len].to_vec(),
            targets: w[1..].to_vec(),
            seq_idx,
        }
    }

    /// The rows of one batch as tensors (B, seq_len): inputs, targets, seq_idx.
    pub fn batch(&self, rows: &[usize], device: &Device) -> LmBatch {
        let (b, l) = (rows.len(), self.seq_len);
        let mut inputs = Vec::with_capacity(b * l);
        let mut targets = Vec::with_capacity(b * l);
        let mut seq_idx = Vec::with_capacity(b * l);
        for &r in rows {
            let row = self.row(r);
            inputs.extend(row.inputs.iter().map(|&x| x as i64));
            targets.extend(row.targets.iter().map(|&x| x as i64));
            seq_idx.extend(row.seq_idx.iter().map(|&x| x as i64));
        }
        let t = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [b, l]), device);
        LmBatch {
            inputs: t(inputs),
            targets: t(targets),
            seq_idx: t(seq_idx),
        }
    }
}

/// A batch of packed rows.
#[derive(Debug, Clone)]
pub struct LmBatch {
    /// (B, L) token ids.
    pub inputs: Tensor<2, Int>,
    /// (B, L) the next token of each input.
    pub targets: Tensor<2, Int>,
    /// (B, L) each input's document within its row (non-decreasing along a row).
    pub seq_idx: Tensor<2, Int>,
}

/// The order in which an epoch visits `n` rows: a permutation drawn from `seed` and the epoch
/// number alone, so a run resumed at any step sees the same order as one that never stopped.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// The rows of the `k`-th batch of `batch` rows in a stream of epochs over `n` rows (each epoch
/// in [`epoch_order`]; a batch may span two epochs).
pub fn batch_rows(n: usize, batch: usize, seed: u64, k: u64) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch);
    let mut cached: Option<(u64, Vec<usize>)> = None;
    for i in 0..batch as u64 {
        let pos = k * batch as u64 + i;
        let (epoch, at) = (pos / n as u64, (pos % n as u64) as usize);
        if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            cached = Some((epoch, epoch_order(n, seed, epoch)));
        }
        out.push(cached.as_ref().expect("an order").1[at]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(v: &[&[u32]]) -> TokenDocs {
        TokenDocs {
            docs: v.iter().map(|d| d.to_vec()).collect(),
        }
    }

    #[test]
    fn rows_carry_document_starts() {
        let rows = PackedRows::new(&docs(&[&[1, 2, 3], &[4], &[5, 6]]), 9, 4).unwrap();
        // stream: 9 1 2 3 9 4 9 5 6 (9 tokens) -> rows of 5 overlapping by one: 2 rows
        assert_eq!(rows.len(), 2);
        let r0 = rows.row(0);
        assert_eq!(r0.inputs, vec![9, 1, 2, 3]);
        assert_eq!(r0.targets, vec![1, 2, 3, 9]);
        assert_eq!(r0.seq_idx, vec![0, 0, 0, 0]);
        let r1 = rows.row(1);
        assert_eq!(r1.inputs, vec![9, 4, 9, 5]);
        assert_eq!(r1.targets, vec![4, 9, 5, 6]);
        assert_eq!(r1.seq_idx, vec![0, 0, 1, 1]);
    }

    #[test]
    fn token_files_round_trip_and_refuse_truncation() {
        let d = docs(&[&[1, 2, 3], &[], &[70000]]);
        let bytes = d.to_bytes();
        let p = Path::new("x.tokens");
        assert_eq!(TokenDocs::from_bytes(&bytes, p).unwrap(), d);
        for cut in [0, 7, 15, 20, bytes.len() - 1] {
            assert!(
                TokenDocs::from_bytes(&bytes[..cut], p).is_err(),
                "cut {cut}"
            );
        }
        // A header claiming more documents than the file can hold is refused before allocating.
        let mut huge = bytes.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(TokenDocs::from_bytes(&huge, p).is_err());
        let mut long = bytes.clone();
        long[16..24].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(TokenDocs::from_bytes(&long, p).is_err());
    }

    #[test]
    fn split_spreads_validation_documents_and_cuts_a_single_one() {
        let d = TokenDocs {
            docs: (0..40).map(|i| vec![i; 3]).collect(),
        };
        let (train, val) = d.split(0.1).unwrap();
        assert_eq!((train.docs.len(), val.docs.len()), (36, 4));
        assert_eq!(val.docs[0], vec![9; 3]);
        let (train, val) = docs(&[&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
            .split(0.2)
            .unwrap();
        assert_eq!(train.docs, vec![vec![1, 2, 3, 4, 5, 6, 7, 8]]);
        assert_eq!(val.docs, vec![vec![9, 10]]);
        assert!(docs(&[&[1]]).split(0.5).is_err());
        assert!(docs(&[&[1]]).split(1.0).is_err());
    }

    #[test]
    fn batches_visit_every_row_once_per_epoch() {
        let n = 10;
        let mut seen: Vec<usize> = (0..5).flat_map(|k| batch_rows(n, 4, 3, k)).collect();
        // 20 rows = two epochs
        let (a, b) = seen.split_at_mut(10);
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, (0..10).collect::<Vec<_>>().as_slice());
        assert_eq!(b, (0..10).collect::<Vec<_>>().as_slice());
        assert_eq!(batch_rows(n, 4, 3, 2), batch_rows(n, 4, 3, 2));
        assert_ne!(epoch_order(n, 3, 0), epoch_order(n, 3, 1));
    }
}
