//! Run-time device selection from a string: `cpu`, `ndarray`, `wgpu`, `wgpu:N`, `cuda:N`.

use burn::tensor::Device;

/// Why a device string could not be turned into a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("unknown device '{0}': expected cpu, ndarray, wgpu, wgpu:N, cuda or cuda:N")]
    Unknown(String),
    #[error("device '{0}' needs the cargo feature '{1}', which this build does not have")]
    NotBuilt(String, &'static str),
    #[error("no wgpu adapter found (is a Vulkan, Metal or DX12 driver installed?)")]
    NoWgpuAdapter,
    #[error("wgpu adapter {index} does not exist: this machine has {count}")]
    NoSuchAdapter { index: usize, count: usize },
}

/// Parses a device string. `None` gives Burn's own `Device::default()` order.
pub fn parse_device(spec: Option<&str>) -> Result<Device, DeviceError> {
    let Some(spec) = spec else {
        return Ok(Device::default());
    };
    let spec = spec.trim().to_ascii_lowercase();
    let (name, index) = match spec.split_once(':') {
        Some((n, i)) => {
            let i: usize = i.parse().map_err(|_| DeviceError::Unknown(spec.clone()))?;
            (n.to_string(), Some(i))
        }
        None => (spec.clone(), None),
    };
    match (name.as_str(), index) {
        ("cpu" | "flex", None) => cpu(&spec),
        ("ndarray", None) => ndarray(&spec),
        ("wgpu", i) => wgpu(&spec, i),
        ("cuda", i) => cuda(&spec, i.unwrap_or(0)),
        ("default" | "auto", None) => Ok(Device::default()),
        _ => Err(DeviceError::Unknown(spec)),
    }
}

#[cfg(feature = "flex")]
fn cpu(_: &str) -> Result<Device, DeviceError> {
    Ok(Device::flex())
}
#[cfg(not(feature = "flex"))]
fn cpu(spec: &str) -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuilt(spec.into(), "flex"))
}

#[cfg(feature = "ndarray")]
#[allow(deprecated)]
fn ndarray(_: &str) -> Result<Device, DeviceError> {
    Ok(Device::ndarray())
}
#[cfg(not(feature = "ndarray"))]
fn ndarray(spec: &str) -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuilt(spec.into(), "ndarray"))
}

/// The wgpu adapters this machine has, in the runtime's order; empty where wgpu cannot start
/// (no driver), even if the runtime panics while looking.
#[cfg(feature = "wgpu")]
pub fn wgpu_devices() -> Vec<Device> {
    std::panic::catch_unwind(|| Device::enumerate(burn::tensor::DeviceType::Wgpu).into_vec())
        .unwrap_or_default()
}

#[cfg(feature = "wgpu")]
fn wgpu(_: &str, index: Option<usize>) -> Result<Device, DeviceError> {
    let all = wgpu_devices();
    if all.is_empty() {
        return Err(DeviceError::NoWgpuAdapter);
    }
    match index {
        None => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        Some(i) => all.get(i).cloned().ok_or(DeviceError::NoSuchAdapter {
            index: i,
            count: all.len(),
        }),
    }
}
#[cfg(not(feature = "wgpu"))]
fn wgpu(spec: &str, _: Option<usize>) -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuilt(spec.into(), "wgpu"))
}

#[cfg(feature = "cuda")]
fn cuda(_: &str, index: usize) -> Result<Device, DeviceError> {
    Ok(Device::cuda(index))
}
#[cfg(not(feature = "cuda"))]
fn cuda(spec: &str, _: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuilt(spec.into(), "cuda"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_devices_are_errors() {
        assert_eq!(
            parse_device(Some("tpu")).unwrap_err(),
            DeviceError::Unknown("tpu".into())
        );
        assert!(matches!(
            parse_device(Some("wgpu:x")),
            Err(DeviceError::Unknown(_))
        ));
        assert!(matches!(
            parse_device(Some("cpu:3")),
            Err(DeviceError::Unknown(_))
        ));
    }

    #[cfg(feature = "flex")]
    #[test]
    fn cpu_is_flex() {
        assert_eq!(parse_device(Some("cpu")).unwrap(), Device::flex());
    }
}
