//! Half precision: f16 and bf16 weights and activations with the SSM state in f32.
//!
//! [`to_dtype`] casts a model's parameters to a half dtype except those the recurrence is
//! sensitive to, which stay f32 as in mamba_ssm: `A_log`, `D`, `dt_bias` (and `dt_proj.bias`)
//! and the norms' weights (and Mamba-3's small core weights, [`kept_in_f32`]). The blocks then run in their weights' dtype: a mixer takes its input
//! in whatever dtype the residual stream has and returns it in that dtype; the language models
//! keep the residual stream in f32 (mamba_ssm's `residual_in_fp32`), the norms compute in f32,
//! and every scan and decode step computes in f32 from half inputs (see `ssm_backends`' API).
//! Logits come back in f32.

use crate::error::{ModelError, Result};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, FloatDType, Tensor};

/// The float dtypes a model can run in.
pub const DTYPES: [&str; 3] = ["f32", "f16", "bf16"];

/// Parses `f32`, `f16` or `bf16` (also `float32`, `float16`, `bfloat16`).
///
/// # Errors
/// Any other name.
pub fn parse_dtype(name: &str) -> Result<FloatDType> {
    match name.to_ascii_lowercase().as_str() {
        "f32" | "float32" | "fp32" => Ok(FloatDType::F32),
        "f16" | "float16" | "fp16" | "half" => Ok(FloatDType::F16),
        "bf16" | "bfloat16" => Ok(FloatDType::BF16),
        other => Err(ModelError::Invalid(format!(
            "unknown dtype '{other}': use one of {}",
            DTYPES.join(", ")
        ))),
    }
}

/// The short name of a float dtype (`f32`, `f16`, `bf16`).
pub fn dtype_name(dtype: FloatDType) -> &'static str {
    match dtype {
        FloatDType::F16 => "f16",
        FloatDType::BF16 => "bf16",
        FloatDType::F64 => "f64",
        _ => "f32",
    }
}

/// `Ok` when `device` computes in `dtype`, else an error naming both (WGSL, for one, has no
/// bf16: wgpu devices take f16 where the adapter has `shader-f16`, CUDA both, the CPU both).
pub fn check_dtype(device: &Device, dtype: FloatDType) -> Result<()> {
    if device.supports_dtype(DType::from(dtype)) {
        Ok(())
    } else {
        Err(ModelError::Invalid(format!(
            "{device:?} cannot compute in {}: try {}",
            dtype_name(dtype),
            DTYPES
                .iter()
                .filter(|&&d| parse_dtype(d).is_ok_and(|t| device.supports_dtype(DType::from(t))))
                .copied()
                .collect::<Vec<_>>()
                .join(" or ")
        )))
    }
}

/// Whether the parameter at `path` (module names, then the parameter's own) stays f32 in a
/// half-precision model: the SSM's `A_log`, `D`, `dt_bias`, `dt_proj.bias`, every norm's
/// weight, and Mamba-3's per-head biases and MIMO weights (its core between the projections
/// computes in f32).
pub fn kept_in_f32(path: &[String]) -> bool {
    let Some(name) = path.last() else {
        return false;
    };
    let parent = path.len().checked_sub(2).map(|i| path[i].as_str());
    matches!(
        name.as_str(),
        "A_log" | "D" | "dt_bias" | "B_bias" | "C_bias" | "mimo_x" | "mimo_z" | "mimo_o"
    ) || (name == "bias" && parent == Some("dt_proj"))
        || parent.is_some_and(|p| p.ends_with("norm") || p.ends_with("norm_f"))
}

/// `module` with its parameters in `dtype`, except those [`kept_in_f32`] and the 8-bit matrices
/// of a quantized model (which stay as they are). Under autodiff the
/// cast is recorded, so a forward through the result sends its gradients to `module`'s
/// parameters (f32 master weights).
///
/// # Errors
/// When the module's device does not compute in `dtype` ([`check_dtype`]).
pub fn to_dtype<M: Module>(module: M, dtype: FloatDType, device: &Device) -> Result<M> {
    check_dtype(device, dtype)?;
    Ok(cast_params(module, dtype))
}

/// [`to_dtype`] without the device check.
pub fn cast_params<M: Module>(module: M, dtype: FloatDType) -> M {
    struct Cast {
        path: Vec<String>,
        dtype: FloatDType,
    }
    impl ModuleMapper for Cast {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if matches!(param.dtype(), DType::QFloat(_)) {
                // An 8-bit matrix (crate::quantize) stays as it is.
                return param;
            }
            let want = if kept_in_f32(&self.path) {
                FloatDType::F32
            } else {
                self.dtype
            };
            if param.val().dtype() == DType::from(want) {
                param
            } else {
                param.map(|t| t.cast(want))
            }
        }
    }
    module.map(&mut Cast {
        path: Vec::new(),
        dtype,
    })
}

/// `t` in `dtype` (itself when it already is). A quantized `dtype` (the weights of a model
/// from [`crate::quantize`]) means f32: activations meet 8-bit weights in f32.
pub fn cast_to<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    let dtype = match dtype {
        DType::QFloat(_) => DType::F32,
        d => d,
    };
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}

/// `t` in f32 when it is f16 or bf16; any other dtype as it is (an f64 model stays f64).
pub fn widen<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if matches!(t.dtype(), DType::F16 | DType::BF16) {
        t.cast(DType::F32)
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

    #[test]
    fn the_recurrence_parameters_and_norms_stay_f32() {
        for kept in [
            "backbone.layers.0.mixer.A_log",
            "backbone.layers.0.mixer.D",
            "backbone.layers.0.mixer.dt_bias",
            "backbone.layers.0.mixer.dt_proj.bias",
            "backbone.layers.0.norm.weight",
            "backbone.layers.0.mixer.norm.weight",
            "backbone.norm_f.weight",
            "mixer.B_norm.weight",
            "mixer.B_bias",
            "mixer.mimo_o",
        ] {
            assert!(kept_in_f32(&path(kept)), "{kept}");
        }
        for cast in [
            "backbone.layers.0.mixer.in_proj.weight",
            "backbone.layers.0.mixer.dt_proj.weight",
            "backbone.layers.0.mixer.conv1d.weight",
            "backbone.layers.0.mixer.conv1d.bias",
            "backbone.embeddings.weight",
            "lm_head.weight",
        ] {
            assert!(!kept_in_f32(&path(cast)), "{cast}");
        }
    }

    #[test]
    fn dtype_names_parse_and_others_are_refused() {
        assert_eq!(parse_dtype("bf16").unwrap(), FloatDType::BF16);
        assert_eq!(parse_dtype("F16").unwrap(), FloatDType::F16);
        assert_eq!(parse_dtype("float32").unwrap(), FloatDType::F32);
        let e = parse_dtype("f8").unwrap_err().to_string();
        assert!(e.contains("f8") && e.contains("bf16"), "{e}");
    }
}
