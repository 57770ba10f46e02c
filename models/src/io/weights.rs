//! Checkpoint tensors read through burn-store (safetensors and PyTorch zip-pickle files), handed
//! out by key with shape checks, so that every failure names the key and both shapes.

use crate::error::{ModelError, Result};
use crate::limits::check_fits;
use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::store::{ModuleStore, PytorchStore, SafetensorsStore};
use burn::tensor::{Device, Tensor, TensorData};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// All tensors of a checkpoint, by key, not yet moved to a device.
pub struct TensorMap {
    path: PathBuf,
    tensors: BTreeMap<String, (Vec<usize>, TensorData)>,
}

impl std::fmt::Debug for TensorMap {
    /// The file and each key with its shape (not the values).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorMap")
            .field("path", &self.path)
            .field(
                "tensors",
                &self
                    .tensors
                    .iter()
                    .map(|(k, (s, _))| (k, s))
                    .collect::<BTreeMap<_, _>>(),
            )
            .finish()
    }
}

impl TensorMap {
    /// Reads a `.safetensors` file, or a PyTorch `.bin` / `.pt` / `.pth` / `.ckpt` (zip-pickle,
    /// read without running any code), chosen by the extension.
    pub fn read(path: &Path) -> Result<Self> {
        let err = |message: String| ModelError::Weights {
            path: path.into(),
            message,
        };
        if !path.is_file() {
            return Err(err("no such file".into()));
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let raw = match ext.as_str() {
            "safetensors" => {
                let mut store = SafetensorsStore::from_file(path);
                collect(&mut store).map_err(err)?
            }
            "bin" | "pt" | "pth" | "ckpt" => {
                // The keys as written: burn-store would renumber gaps in numeric indices
                // (nn.Sequential's `patch_embed.0, .2, .5`), which the key maps here name.
                let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
                collect(&mut store).map_err(err)?
            }
            _ => return Err(err(format!("unknown weight format '.{ext}'"))),
        };
        Ok(Self {
            path: path.into(),
            tensors: unwrap_top_level(raw),
        })
    }

    /// Builds a map from in-memory tensors (tests, conversions).
    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, TensorData)>) -> Self {
        Self {
            path: "<memory>".into(),
            tensors: tensors
                .into_iter()
                .map(|(k, d)| (k, (d.shape().to_vec(), d)))
                .collect(),
        }
    }

    /// A map from tensors read from `path` by another reader (e.g. Flax msgpack).
    pub fn from_tensors_at(
        path: &Path,
        tensors: impl IntoIterator<Item = (String, TensorData)>,
    ) -> Self {
        let mut m = Self::from_tensors(tensors);
        m.path = path.into();
        m
    }

    /// Adds or replaces a tensor (conversions, tests).
    pub fn insert(&mut self, key: impl Into<String>, data: TensorData) {
        self.tensors
            .insert(key.into(), (data.shape().to_vec(), data));
    }

    /// Moves a tensor to another key (no-op when `from` is absent).
    pub fn rename(&mut self, from: &str, to: impl Into<String>) {
        if let Some(v) = self.tensors.remove(from) {
            self.tensors.insert(to.into(), v);
        }
    }

    /// Moves every tensor under `prefix` (e.g. `s4_layers.0.`) into a map of its own, the
    /// prefix stripped from the keys.
    pub fn split_prefix(&mut self, prefix: &str) -> TensorMap {
        let keys: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        let mut out = TensorMap {
            path: self.path.clone(),
            tensors: BTreeMap::new(),
        };
        for k in keys {
            if let Some(v) = self.tensors.remove(&k) {
                out.tensors.insert(k[prefix.len()..].to_string(), v);
            }
        }
        out
    }

    /// The file the tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a key is present.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The shape of a tensor still in the map (to read sizes from a checkpoint).
    pub fn shape_of(&self, key: &str) -> Result<Vec<usize>> {
        self.tensors
            .get(key)
            .map(|(shape, _)| shape.clone())
            .ok_or_else(|| ModelError::MissingKey {
                key: key.into(),
                expected: Vec::new(),
            })
    }

    /// The keys not yet taken.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// Takes a tensor out of the map, checking its shape and that it fits one buffer binding of
    /// `device` (see [`crate::limits`]).
    pub fn take<const D: usize>(
        &mut self,
        key: &str,
        expected: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        let data = self.take_data(key, expected)?;
        check_fits(&format!("weights: key '{key}'"), &expected, device)?;
        Ok(Tensor::from_data(data, device))
    }

    /// Takes a tensor's values out of the map as f32 on the host, checking its shape.
    pub fn take_data<const D: usize>(
        &mut self,
        key: &str,
        expected: [usize; D],
    ) -> Result<TensorData> {
        let data = self.take_entry(key, &expected)?;
        if !data.dtype().is_float() {
            return Err(ModelError::Invalid(format!(
                "weights: key '{key}' holds {:?} values, expected floating point",
                data.dtype()
            )));
        }
        Ok(data.convert::<f32>())
    }

    /// Takes `key`'s values out of the map as stored, checking that it is there with the
    /// `expected` shape.
    fn take_entry(&mut self, key: &str, expected: &[usize]) -> Result<TensorData> {
        let (shape, data) = self
            .tensors
            .remove(key)
            .ok_or_else(|| ModelError::MissingKey {
                key: key.into(),
                expected: expected.to_vec(),
            })?;
        if shape != expected {
            return Err(ModelError::ShapeMismatch {
                key: key.into(),
                expected: expected.to_vec(),
                found: shape,
            });
        }
        Ok(data)
    }

    /// Whether `key` holds an 8-bit matrix (int8 values with `{key}_scale` beside them, or
    /// either half of such a pair: [`TensorMap::take_q8`] names what is missing).
    pub fn is_q8(&self, key: &str) -> bool {
        let int8 = self
            .tensors
            .get(key)
            .is_some_and(|(_, d)| d.dtype() == burn::tensor::DType::I8);
        int8 || self.contains(&format!("{key}{}", super::q8::SCALE_SUFFIX))
    }

    /// Takes an 8-bit (N, K) matrix (`key` and `{key}_scale`, see [`super::q8`]) as a quantized
    /// tensor on `device` (the CPU backends compute from it).
    ///
    /// # Errors
    /// Either half missing, shapes or values that do not make an 8-bit matrix (named by key),
    /// or a device other than the CPU.
    pub fn take_q8(
        &mut self,
        key: &str,
        expected: [usize; 2],
        device: &Device,
    ) -> Result<Tensor<2>> {
        use super::q8::{Q8Matrix, SCALE_SUFFIX};
        let scale_key = format!("{key}{SCALE_SUFFIX}");
        let values = self.take_entry(key, &expected)?;
        let scales = self.tensors.remove(&scale_key).ok_or_else(|| {
            ModelError::Invalid(format!(
                "weights: key '{key}' holds int8 values but '{scale_key}' (its scales) is missing"
            ))
        })?;
        if !ssm_backends::is_host(device) {
            return Err(ModelError::Invalid(format!(
                "weights: key '{key}' is an 8-bit matrix, computed by the CPU backends; load \
                 this model on the cpu device, not {device:?}"
            )));
        }
        Ok(Q8Matrix::checked(key, expected, values, scales)?.tensor(device))
    }

    /// Takes a tensor and wraps it as a parameter.
    pub fn param<const D: usize>(
        &mut self,
        key: &str,
        expected: [usize; D],
        device: &Device,
    ) -> Result<Param<Tensor<D>>> {
        self.take(key, expected, device).map(Param::from_tensor)
    }

    /// A Linear layer from `{key}.weight`, stored (out, in) as PyTorch does (or as a 1×1 conv
    /// kernel (out, in, 1, 1), VMamba's `Linear2d`, or (out, in, 1), a pointwise Conv1d), and
    /// `{key}.bias` (out) when `bias`.
    pub fn linear(
        &mut self,
        key: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &Device,
    ) -> Result<Linear> {
        let k = format!("{key}.weight");
        let bias = |m: &mut Self| -> Result<_> {
            Ok(if bias {
                Some(m.param(&format!("{key}.bias"), [d_out], device)?)
            } else {
                None
            })
        };
        if self.is_q8(&k) {
            // An 8-bit projection (crate::quantize) is held (out, in), as stored.
            if !(key.ends_with("in_proj") || key.ends_with("out_proj")) {
                return Err(ModelError::Invalid(format!(
                    "weights: key '{k}' is an 8-bit matrix; only the mixers' in_proj and \
                     out_proj and the vocabulary matrices load quantized"
                )));
            }
            let weight = self.take_q8(&k, [d_out, d_in], device)?;
            return Ok(Linear {
                weight: Param::from_tensor(weight),
                bias: bias(self)?,
            });
        }
        let rank = self.shape_of(&k).map(|s| s.len()).unwrap_or(2);
        let weight = if rank == 4 {
            self.take(&k, [d_out, d_in, 1, 1], device)?
                .reshape([d_out, d_in])
        } else if rank == 3 {
            // A kernel-size-1 Conv1d (PyTorch S4 layers' transposed output linear).
            self.take(&k, [d_out, d_in, 1], device)?
                .reshape([d_out, d_in])
        } else {
            self.take(&k, [d_out, d_in], device)?
        };
        Ok(Linear {
            weight: Param::from_tensor(weight.transpose()),
            bias: bias(self)?,
        })
    }

    /// A LayerNorm over `d` features from `{key}.weight` and `{key}.bias` (PyTorch's names).
    pub fn layer_norm(
        &mut self,
        key: &str,
        d: usize,
        eps: f64,
        device: &Device,
    ) -> Result<LayerNorm> {
        let mut n = LayerNormConfig::new(d).with_epsilon(eps).init(device);
        n.gamma = self.param(&format!("{key}.weight"), [d], device)?;
        n.beta = Some(self.param(&format!("{key}.bias"), [d], device)?);
        Ok(n)
    }

    /// `conv` with its weight (and bias, if it has one) replaced by `{key}.weight` and
    /// `{key}.bias` of the same shapes.
    pub fn conv2d(&mut self, key: &str, mut conv: Conv2d, device: &Device) -> Result<Conv2d> {
        let shape: [usize; 4] = conv.weight.dims();
        conv.weight = self.param(&format!("{key}.weight"), shape, device)?;
        if conv.bias.is_some() {
            conv.bias = Some(self.param(&format!("{key}.bias"), [shape[0]], device)?);
        }
        Ok(conv)
    }

    /// A Linear of `like`'s sizes and bias from `{key}.*` (see [`TensorMap::linear`]).
    pub fn linear_like(&mut self, key: &str, like: &Linear, device: &Device) -> Result<Linear> {
        let [d_in, d_out] = like.weight.dims();
        self.linear(key, d_in, d_out, like.bias.is_some(), device)
    }

    /// Takes an integer scalar (a 0-d or one-element tensor, e.g. a length buffer).
    pub fn take_usize(&mut self, key: &str) -> Result<usize> {
        let (shape, data) = self
            .tensors
            .remove(key)
            .ok_or_else(|| ModelError::MissingKey {
                key: key.into(),
                expected: Vec::new(),
            })?;
        let bad = |found: Vec<usize>| ModelError::ShapeMismatch {
            key: key.into(),
            expected: Vec::new(),
            found,
        };
        if shape.iter().product::<usize>() != 1 || data.dtype().is_float() {
            return Err(bad(shape));
        }
        let v = data
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|_| bad(shape.clone()))?;
        usize::try_from(v[0]).map_err(|_| {
            ModelError::Invalid(format!("weights: key '{key}' holds {}, not a length", v[0]))
        })
    }

    /// Drops a key if present, checking its shape (e.g. a tied `lm_head.weight`).
    pub fn discard(&mut self, key: &str, expected: &[usize]) -> Result<()> {
        if let Some((shape, _)) = self.tensors.remove(key)
            && shape != expected
        {
            return Err(ModelError::ShapeMismatch {
                key: key.into(),
                expected: expected.to_vec(),
                found: shape,
            });
        }
        Ok(())
    }

    /// Fails when keys remain that no parameter took.
    pub fn finish(self) -> Result<()> {
        if self.tensors.is_empty() {
            Ok(())
        } else {
            Err(ModelError::UnexpectedKeys(
                self.tensors.into_keys().collect(),
            ))
        }
    }
}

/// Strips the one wrapper that training scripts put around a state dict ("model" as in
/// hustvl/Vim and DeiT-style checkpoints, "state_dict", or DataParallel's "module") when every
/// key is under it.
fn unwrap_top_level(
    raw: BTreeMap<String, (Vec<usize>, TensorData)>,
) -> BTreeMap<String, (Vec<usize>, TensorData)> {
    for prefix in ["model.", "state_dict.", "module."] {
        if !raw.is_empty() && raw.keys().all(|k| k.starts_with(prefix)) {
            return raw
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_string(), v))
                .collect();
        }
    }
    raw
}

fn collect<S: ModuleStore>(
    store: &mut S,
) -> std::result::Result<BTreeMap<String, (Vec<usize>, TensorData)>, String>
where
    S::Error: std::fmt::Display,
{
    let all = store.get_all_tensors().map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for (key, t) in all {
        let shape = t.shape.to_vec();
        let bytes = t
            .to_bytes()
            .map_err(|e| format!("tensor '{key}' cannot be read: {e}"))?;
        let data = TensorData::from_bytes(bytes, shape.clone(), t.dtype);
        let dt = data.dtype();
        if !(dt.is_float() || dt.is_int() || dt.is_uint()) {
            return Err(format!(
                "tensor '{key}' has dtype {dt:?}, expected a float or integer type"
            ));
        }
        out.insert(key.clone(), (shape, data));
    }
    Ok(out)
}

/// Finds the weights file of a model directory: `model.safetensors`, else
/// `pytorch_model.bin`.
pub fn find_weights(dir: &Path) -> Result<PathBuf> {
    for name in ["model.safetensors", "pytorch_model.bin"] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(ModelError::NoWeights(dir.into()))
}

/// The checkpoint key of `name` under `prefix` (`"{prefix}.{name}"`, or `name` when the prefix
/// is empty): how each block names its own keys below the prefix its owner gives it.
pub fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
