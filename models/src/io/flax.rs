//! Flax parameter trees saved with `flax.serialization.to_bytes` (msgpack; the format of the
//! JAX references' checkpoints, e.g. lindermanlab/S5), read into a [`TensorMap`] whose keys are
//! the tree's paths joined by dots (`params.seq.Lambda_re`).
//!
//! Arrays are msgpack extension type 1 holding `(shape, dtype name, raw bytes)`; float32,
//! float64 and float16 arrays are read (little-endian, C order), and anything else in the tree
//! (scalars, strings) is skipped.

use crate::error::{ModelError, Result};
use crate::io::TensorMap;
use burn::tensor::TensorData;
use rmp::Marker;
use std::path::Path;

/// A msgpack value of the subset Flax writes.
enum Value {
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
    Str(String),
    Bin(Vec<u8>),
    Int(i64),
    Other,
    Ext(i8, Vec<u8>),
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> std::result::Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn len(&mut self, n: usize) -> std::result::Result<usize, String> {
        self.uint(n).map(|v| v as usize)
    }

    fn value(&mut self, depth: usize) -> std::result::Result<Value, String> {
        if depth > 64 {
            return Err("nested too deeply".into());
        }
        let m = Marker::from_u8(self.take(1)?[0]);
        Ok(match m {
            Marker::FixPos(v) => Value::Int(i64::from(v)),
            Marker::FixNeg(v) => Value::Int(i64::from(v)),
            Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => {
                let n = match m {
                    Marker::U8 => 1,
                    Marker::U16 => 2,
                    Marker::U32 => 4,
                    _ => 8,
                };
                Value::Int(self.uint(n)? as i64)
            }
            Marker::I8 => Value::Int(i64::from(self.take(1)?[0] as i8)),
            Marker::I16 => Value::Int(i64::from(self.uint(2)? as u16 as i16)),
            Marker::I32 => Value::Int(i64::from(self.uint(4)? as u32 as i32)),
            Marker::I64 => Value::Int(self.uint(8)? as i64),
            Marker::Null | Marker::True | Marker::False => Value::Other,
            Marker::F32 => {
                self.take(4)?;
                Value::Other
            }
            Marker::F64 => {
                self.take(8)?;
                Value::Other
            }
            Marker::FixStr(n) => self.string(n as usize)?,
            Marker::Str8 => {
                let n = self.len(1)?;
                self.string(n)?
            }
            Marker::Str16 => {
                let n = self.len(2)?;
                self.string(n)?
            }
            Marker::Str32 => {
                let n = self.len(4)?;
                self.string(n)?
            }
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let n = match m {
                    Marker::Bin8 => self.len(1)?,
                    Marker::Bin16 => self.len(2)?,
                    _ => self.len(4)?,
                };
                Value::Bin(self.take(n)?.to_vec())
            }
            Marker::FixArray(n) => self.array(n as usize, depth)?,
            Marker::Array16 => {
                let n = self.len(2)?;
                self.array(n, depth)?
            }
            Marker::Array32 => {
                let n = self.len(4)?;
                self.array(n, depth)?
            }
            Marker::FixMap(n) => self.map(n as usize, depth)?,
            Marker::Map16 => {
                let n = self.len(2)?;
                self.map(n, depth)?
            }
            Marker::Map32 => {
                let n = self.len(4)?;
                self.map(n, depth)?
            }
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32 => {
                let n = match m {
                    Marker::FixExt1 => 1,
                    Marker::FixExt2 => 2,
                    Marker::FixExt4 => 4,
                    Marker::FixExt8 => 8,
                    Marker::FixExt16 => 16,
                    Marker::Ext8 => self.len(1)?,
                    Marker::Ext16 => self.len(2)?,
                    _ => self.len(4)?,
                };
                let kind = self.take(1)?[0] as i8;
                Value::Ext(kind, self.take(n)?.to_vec())
            }
            Marker::Reserved => return Err(format!("invalid byte at {}", self.at - 1)),
        })
    }

    fn string(&mut self, n: usize) -> std::result::Result<Value, String> {
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| "a key is not UTF-8")?;
        Ok(Value::Str(s.to_string()))
    }

    fn array(&mut self, n: usize, depth: usize) -> std::result::Result<Value, String> {
        let mut v = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            v.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(v))
    }

    fn map(&mut self, n: usize, depth: usize) -> std::result::Result<Value, String> {
        let mut v = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let key = match self.value(depth + 1)? {
                Value::Str(s) => s,
                Value::Int(i) => i.to_string(),
                _ => return Err("a map key is neither a string nor an integer".into()),
            };
            v.push((key, self.value(depth + 1)?));
        }
        Ok(Value::Map(v))
    }
}

/// An ndarray from Flax's extension payload `(shape, dtype, bytes)`.
fn ndarray(payload: &[u8]) -> std::result::Result<TensorData, String> {
    let mut r = Reader {
        bytes: payload,
        at: 0,
    };
    let Value::Array(parts) = r.value(0)? else {
        return Err("an array payload is not a list".into());
    };
    let [Value::Array(shape), Value::Str(dtype), Value::Bin(raw)] = parts.as_slice() else {
        return Err("an array payload is not (shape, dtype, bytes)".into());
    };
    let shape: Vec<usize> = shape
        .iter()
        .map(|d| match d {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            _ => Err("a shape entry is not a size".to_string()),
        })
        .collect::<std::result::Result<_, _>>()?;
    let too_big = || format!("an array of shape {shape:?} is too large");
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_big)?;
    let width = match dtype.as_str() {
        "float32" => 4,
        "float64" => 8,
        "float16" => 2,
        d => return Err(format!("arrays of {d} are not read")),
    };
    let bytes = n.checked_mul(width).ok_or_else(too_big)?;
    if raw.len() != bytes {
        return Err(format!(
            "an array of shape {shape:?} and {dtype} holds {} bytes, expected {}",
            raw.len(),
            bytes
        ));
    }
    let values: Vec<f32> = match width {
        4 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        8 => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => raw
            .chunks_exact(2)
            .map(|b| burn::tensor::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    };
    Ok(TensorData::new(values, shape))
}

fn flatten(
    prefix: &str,
    v: Value,
    out: &mut Vec<(String, TensorData)>,
) -> std::result::Result<(), String> {
    match v {
        Value::Map(entries) => {
            for (k, v) in entries {
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
        }
        Value::Ext(1, payload) => {
            let data = ndarray(&payload).map_err(|e| format!("'{prefix}': {e}"))?;
            out.push((prefix.to_string(), data));
        }
        _ => {}
    }
    Ok(())
}

/// Reads a Flax msgpack parameter tree (`flax.serialization.to_bytes`).
pub fn read_flax_msgpack(path: &Path) -> Result<TensorMap> {
    let err = |message: String| ModelError::Weights {
        path: path.into(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut r = Reader {
        bytes: &bytes,
        at: 0,
    };
    let root = r
        .value(0)
        .map_err(|e| err(format!("not Flax msgpack: {e}")))?;
    if r.at != bytes.len() {
        return Err(err(format!(
            "not Flax msgpack: {} bytes after the tree",
            bytes.len() - r.at
        )));
    }
    if !matches!(root, Value::Map(_)) {
        return Err(err("not Flax msgpack: the top level is not a map".into()));
    }
    let mut out = Vec::new();
    flatten("", root, &mut out).map_err(err)?;
    Ok(TensorMap::from_tensors_at(path, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"w": array}` as Flax writes it: ext type 1 holding (shape, dtype, bytes).
    fn tree(shape: &[u8], dtype: &str, raw: &[u8]) -> Vec<u8> {
        let mut payload = vec![0x93, 0x90 | shape.len() as u8];
        payload.extend_from_slice(shape);
        payload.push(0xa0 | dtype.len() as u8);
        payload.extend_from_slice(dtype.as_bytes());
        payload.extend([0xc4, raw.len() as u8]);
        payload.extend_from_slice(raw);
        let mut out = vec![0x81, 0xa1, b'w', 0xc7, payload.len() as u8, 1];
        out.extend(payload);
        out
    }

    fn read(bytes: &[u8]) -> Result<TensorMap> {
        let f = tempfile::Builder::new()
            .suffix(".msgpack")
            .tempfile()
            .unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        read_flax_msgpack(f.path())
    }

    #[test]
    fn reads_arrays_and_refuses_what_it_cannot_read() {
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut m = read(&tree(&[2], "float32", &raw)).unwrap();
        let t: burn::tensor::Tensor<1> = m.take("w", [2], &burn::tensor::Device::flex()).unwrap();
        assert_eq!(ssm_backends::to_vec(t), [1.5, -2.0]);
        let err = read(&tree(&[2], "int32", &raw[..8]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'w'") && err.contains("int32"), "{err}");
        let err = read(&tree(&[3], "float32", &raw)).unwrap_err().to_string();
        assert!(err.contains("holds 8 bytes, expected 12"), "{err}");
        let err = read(&[0x92, 1, 2]).unwrap_err().to_string();
        assert!(err.contains("top level is not a map"), "{err}");
    }
}
