//! The device's largest buffer binding, seen from the models: a tensor larger than
//! [`max_binding_bytes`] can be no kernel's operand (wgpu refuses the binding: 128 MiB on Mesa's
//! lavapipe and under WebGPU's default limits). Models keep their vocabulary matrices in row
//! shards under it ([`crate::lm::VocabMatrix`]) and check everything else here first, so that
//! what cannot fit is one clear error naming the tensor, never a panic on the device's thread.

use crate::error::{ModelError, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use ssm_backends::max_binding_bytes;

/// Bytes of one element of the zoo's float tensors (f32).
pub const FLOAT_BYTES: usize = 4;

/// An error unless an f32 tensor of `shape` fits one binding of `device`; `what` names it.
pub fn check_fits(what: &str, shape: &[usize], device: &Device) -> Result<()> {
    let Some(limit) = max_binding_bytes(device) else {
        return Ok(());
    };
    let bytes = shape
        .iter()
        .try_fold(FLOAT_BYTES, |acc, &d| acc.checked_mul(d))
        .unwrap_or(usize::MAX);
    if bytes <= limit {
        return Ok(());
    }
    Err(ModelError::TooLargeForDevice {
        what: what.into(),
        shape: shape.to_vec(),
        bytes,
        limit,
    })
}

/// Rows of a (rows, cols) f32 matrix per shard so that each shard fits one binding of `device`
/// (all of them where there is no limit); an error when not even one row fits.
pub fn rows_per_shard(what: &str, [rows, cols]: [usize; 2], device: &Device) -> Result<usize> {
    let Some(limit) = max_binding_bytes(device) else {
        return Ok(rows.max(1));
    };
    let row = cols.saturating_mul(FLOAT_BYTES).max(1);
    if row > limit {
        return check_fits(&format!("one row of {what}"), &[cols], device).map(|_| 1);
    }
    Ok((limit / row).clamp(1, rows.max(1)))
}

/// An error naming the first parameter of `module` (by its path) that does not fit one binding
/// of `device`. Reads shapes only: lazily initialised parameters stay uninitialised.
pub fn check_params<M: Module>(module: &M, device: &Device) -> Result<()> {
    if max_binding_bytes(device).is_none() {
        return Ok(());
    }
    let mut v = Sizes {
        path: Vec::new(),
        device: device.clone(),
        first_error: None,
    };
    module.visit(&mut v);
    v.first_error.map_or(Ok(()), Err)
}

struct Sizes {
    path: Vec<String>,
    device: Device,
    first_error: Option<ModelError>,
}

impl ModuleVisitor for Sizes {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.first_error.is_none() {
            let shape = param.lazy_shape().to_vec();
            let name = format!("parameter '{}'", self.path.join("."));
            self.first_error = check_fits(&name, &shape, &self.device).err();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_has_no_limit() {
        let cpu = Device::flex();
        assert!(check_fits("x", &[1 << 20, 1 << 20], &cpu).is_ok());
        assert_eq!(rows_per_shard("w", [50280, 768], &cpu).unwrap(), 50280);
    }
}
