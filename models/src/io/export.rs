//! Writing checkpoints in PyTorch's layout: a module's float parameters under their field paths
//! (which are the checkpoint keys: see the crate's conventions), Linear weights transposed back
//! to PyTorch's (out, in), enum variants left out of the key (`layers.0.mixer.in_proj.weight`,
//! not `layers.0.mixer.Mamba.in_proj.weight`), written as safetensors with transformers'
//! `{"format": "pt"}` metadata. Files are written whole or not at all
//! ([`crate::checkpoint::write_atomic`]).

use super::q8::{Q8Matrix, SCALE_SUFFIX};
use crate::checkpoint::write_atomic;
use crate::error::{ModelError, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A module's float parameters as (checkpoint key → (PyTorch shape, f32 values)); a matrix
/// held in 8 bits ([`crate::quantize`]) dequantized.
pub fn pytorch_state_dict<M: Module>(module: &M) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut v = Collector {
        dequantize: true,
        ..Collector::default()
    };
    module.visit(&mut v);
    v.out
}

/// A module's float parameters as [`pytorch_state_dict`] gives them, except the matrices held
/// in 8 bits, which come apart (their values and scales, see [`super::q8`]).
pub fn pytorch_state_dict_q8<M: Module>(module: &M) -> (StateDict, BTreeMap<String, Q8Matrix>) {
    let mut v = Collector::default();
    module.visit(&mut v);
    (v.out, v.q8)
}

/// Tensors by key: shape and row-major f32 values.
pub type StateDict = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

#[derive(Default)]
struct Collector {
    /// (segment, container type of the module the segment was entered from).
    path: Vec<(String, String)>,
    out: StateDict,
    q8: BTreeMap<String, Q8Matrix>,
    /// Quantized matrices into `out` in f32 (else into `q8`).
    dequantize: bool,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // A shard of a `VocabMatrix` (`weight.0`, `weight.1`, ...): its rows continue the
        // matrix under the one key `weight`.
        let n = self.path.len();
        let shard = n >= 2
            && self.path[n - 1].1 == "Vec"
            && self.path[n - 2] == ("weight".to_string(), "Struct:VocabMatrix".to_string());
        let segments = if shard {
            &self.path[..n - 1]
        } else {
            &self.path[..]
        };
        let key = segments
            .iter()
            .filter(|(_, container)| !container.starts_with("Enum:"))
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let mut tensor = param.val();
        if matches!(tensor.dtype(), DType::QFloat(_)) && D == 2 {
            // Held (out, in) = PyTorch's layout already (see crate::quantize).
            if self.dequantize {
                tensor = tensor.dequantize();
            } else {
                let matrix = Tensor::<2>::from_dispatch(tensor.into_dispatch());
                let m = Q8Matrix::of(matrix).expect("a matrix quantized by crate::quantize");
                self.q8.insert(key, m);
                return;
            }
        } else if self
            .path
            .last()
            .is_some_and(|(name, container)| name == "weight" && container == "Struct:Linear")
            && D == 2
        {
            // burn-nn's Linear stores its weight (in, out); PyTorch's is (out, in).
            tensor = tensor.transpose();
        }
        let data = tensor.into_data();
        let shape = data.shape().to_vec();
        let values = data
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 data converts to a Vec<f32>");
        match self.out.get_mut(&key) {
            Some((whole, rows)) if shard => {
                whole[0] += shape[0];
                rows.extend(values);
            }
            _ => {
                self.out.insert(key, (shape, values));
            }
        }
    }
}

/// Writes tensors as a safetensors file (f32, transformers' `{"format": "pt"}` metadata),
/// atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) -> Result<()> {
    write_safetensors_q8(path, tensors, &BTreeMap::new())
}

/// [`write_safetensors`] with 8-bit matrices too: each as its int8 values under its key and
/// its f32 scales under `{key}_scale` (see [`super::q8`]).
pub fn write_safetensors_q8(
    path: &Path,
    tensors: &StateDict,
    q8: &BTreeMap<String, Q8Matrix>,
) -> Result<()> {
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut bytes: Vec<(String, Dtype, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, (shape, v))| (k.clone(), Dtype::F32, f32_bytes(v), shape.clone()))
        .collect();
    for (k, m) in q8 {
        let [n, kk] = m.shape;
        let values = m.values.iter().map(|&v| v as u8).collect();
        bytes.push((k.clone(), Dtype::I8, values, vec![n, kk]));
        let scale_shape = vec![n, m.scales.len() / n.max(1)];
        bytes.push((
            format!("{k}{SCALE_SUFFIX}"),
            Dtype::F32,
            f32_bytes(&m.scales),
            scale_shape,
        ));
    }
    let views = bytes
        .iter()
        .map(|(k, dtype, b, shape)| {
            TensorView::new(*dtype, shape.to_vec(), b)
                .map(|view| (k.as_str(), view))
                .map_err(|e| ModelError::Invalid(format!("tensor '{k}': {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let out = safetensors::serialize(views, Some(metadata))
        .map_err(|e| ModelError::Invalid(format!("safetensors: {e}")))?;
    write_atomic(path, &out)
}
