//! The device's largest buffer binding, seen from the models: a tensor larger than
//! [`max_binding_bytes`] can be no kernel's operand (wgpu refuses the binding: 128 MiB on Mesa's
//! lavapipe and under WebGPU's default limits). Models keep their vocabulary matrices in row
//! shards under it ([`crate::lm::VocabMatrix`]) and check everything else here first, so that
//! what cannot fit is one clear error naming the tensor, never a panic on the device's thread.

use crate::error::{ModelError, Result};
use crate::nn::float_params;
use burn::module::Module;
use burn::tensor::Device;
use ssm_backends::max_binding_bytes;

/// Bytes of one element of the zoo's float tensors (f32).
pub const FLOAT_BYTES: usize = 4;

/// An error unless an f32 tensor of `shape` fits one binding of `device`; `what` names it.
pub fn check_fits(what: &str, shape: &[usize], device: &Device) -> Result<()> {
    match max_binding_bytes(device) {
        None => Ok(()),
        Some(limit) => within(what, shape, limit),
    }
}

/// An error unless an f32 tensor of `shape` takes at most `limit` bytes.
fn within(what: &str, shape: &[usize], limit: usize) -> Result<()> {
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
    within(&format!("one row of {what}"), &[cols], limit)?;
    let row = cols.saturating_mul(FLOAT_BYTES).max(1);
    Ok((limit / row).clamp(1, rows.max(1)))
}

/// An error naming the first parameter of `module` (by its path) that does not fit one binding
/// of `device`. Reads shapes only: lazily initialised parameters stay uninitialised.
pub fn check_params<M: Module>(module: &M, device: &Device) -> Result<()> {
    let Some(limit) = max_binding_bytes(device) else {
        return Ok(());
    };
    float_params(module)
        .into_iter()
        .try_for_each(|(_, path, shape)| within(&format!("parameter '{path}'"), &shape, limit))
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
