//! 8-bit matrices in a checkpoint, so that a model is quantized once ([`crate::quantize`]): a
//! quantized (N, K) matrix is stored under its own key as int8 values (N, K), in PyTorch's
//! (out, in) layout, with its block scales beside it under `{key}_scale`, f32 (N, K / bk) (the
//! naming of compressed-tensors' `weight_scale`); the block length is K over the scale's
//! columns. Reading checks both (shapes, a block that divides K and fits Burn's 8-bit block
//! length, finite positive scales) and names the key of anything wrong.

use crate::error::{ModelError, Result};
use burn::tensor::quantization::QuantizedBytes;
use burn::tensor::{DType, Tensor, TensorData};

/// The suffix of a quantized matrix's scales: `{key}_scale`.
pub const SCALE_SUFFIX: &str = "_scale";

/// A quantized matrix as stored: its (N, K) shape, int8 values and (N, K / bk) scales.
#[derive(Debug, Clone, PartialEq)]
pub struct Q8Matrix {
    /// (N, K).
    pub shape: [usize; 2],
    /// N K values, row-major.
    pub values: Vec<i8>,
    /// N (K / bk) scales, row-major.
    pub scales: Vec<f32>,
}

impl Q8Matrix {
    /// The values and scales of a matrix held by [`ssm_backends::quantize_q8`] (blocks
    /// `[1, bk]` along its rows); `None` for any other tensor.
    pub fn of(t: Tensor<2>) -> Option<Self> {
        let DType::QFloat(scheme) = t.dtype() else {
            return None;
        };
        let [_, bk]: [u8; 2] = scheme.block_size()?.as_dim();
        let shape = t.dims();
        let data = t.into_data();
        let bytes = QuantizedBytes {
            bytes: data.into_bytes(),
            scheme,
            shape: shape.to_vec().into(),
        };
        let (values, scales) = bytes.into_vec_i8();
        (scales.global.is_none() && scales.block.len() == shape[0] * (shape[1] / bk as usize))
            .then_some(Self {
                shape,
                values,
                scales: scales.block,
            })
    }

    /// Elements per block along K.
    pub fn block(&self) -> usize {
        self.shape[1] * self.shape[0] / self.scales.len().max(1)
    }

    /// Checks `values` (from `key`, already of the `expected` (N, K) shape) and `scales` (from
    /// `{key}_scale`) and makes the matrix.
    ///
    /// # Errors
    /// Values that are not int8 in [-127, 127], scales whose shape is not (N, K / bk) for a
    /// block that divides K and is at most 255, a scale that is not finite and positive.
    pub fn checked(
        key: &str,
        expected: [usize; 2],
        values: TensorData,
        (scale_shape, scales): (Vec<usize>, TensorData),
    ) -> Result<Self> {
        let scale_key = format!("{key}{SCALE_SUFFIX}");
        let bad = |why: String| ModelError::Invalid(format!("weights: key '{scale_key}': {why}"));
        let [n, k] = expected;
        if !matches!(scale_shape.as_slice(),
            [rows, b] if *rows == n && *b > 0 && k.is_multiple_of(*b) && k / b <= 255)
        {
            return Err(bad(format!(
                "shape {scale_shape:?} is not ({n}, K / block) for '{key}' ({n}, {k}) with a \
                 block that divides K = {k} and is at most 255"
            )));
        }
        if scales.dtype() != DType::F32 {
            return Err(bad(format!("{:?} values, expected f32", scales.dtype())));
        }
        let scales = scales
            .try_into_vec::<f32>()
            .map_err(|e| bad(format!("{e:?}")))?;
        if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(bad(format!(
                "a scale of {s}: scales must be finite and positive"
            )));
        }
        if values.dtype() != DType::I8 {
            return Err(ModelError::Invalid(format!(
                "weights: key '{key}' holds {:?} values beside '{scale_key}', expected int8",
                values.dtype()
            )));
        }
        let values = values
            .try_into_vec::<i8>()
            .map_err(|e| ModelError::Invalid(format!("weights: key '{key}': {e:?}")))?;
        if let Some(v) = values.iter().find(|v| **v == i8::MIN) {
            return Err(ModelError::Invalid(format!(
                "weights: key '{key}': the value {v} is outside the symmetric int8 range"
            )));
        }
        Ok(Self {
            shape: expected,
            values,
            scales,
        })
    }

    /// The matrix as a quantized tensor on `device` (what [`ssm_backends::quantize_q8`] makes).
    pub fn tensor(self, device: &burn::tensor::Device) -> Tensor<2> {
        // `checked` keeps the block at most 255.
        let scheme = ssm_backends::q8_scheme(self.block() as u8);
        let data = TensorData::quantized(self.values, self.shape, scheme, &self.scales, None);
        Tensor::from_data(data, device)
    }
}
