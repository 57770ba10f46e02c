//! Run-time device selection from a string: `cpu`, `ndarray`, `wgpu`, `wgpu:N`, `cuda:N`.

use crate::error::Error;
use burn::tensor::Device;

/// Parses a device string. `None` gives Burn's own `Device::default()` order.
pub fn parse_device(spec: Option<&str>) -> Result<Device, Error> {
    let Some(spec) = spec else {
        return Ok(Device::default());
    };
    let spec = spec.trim().to_ascii_lowercase();
    let (name, index) = match spec.split_once(':') {
        Some((n, i)) => {
            let i: usize = i.parse().map_err(|_| Error::UnknownDevice(spec.clone()))?;
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
        _ => Err(Error::UnknownDevice(spec)),
    }
}

#[cfg(feature = "flex")]
fn cpu(_: &str) -> Result<Device, Error> {
    Ok(Device::flex())
}
#[cfg(not(feature = "flex"))]
fn cpu(spec: &str) -> Result<Device, Error> {
    Err(Error::NotBuilt(spec.into(), "flex"))
}

#[cfg(feature = "ndarray")]
#[allow(deprecated)]
fn ndarray(_: &str) -> Result<Device, Error> {
    Ok(Device::ndarray())
}
#[cfg(not(feature = "ndarray"))]
fn ndarray(spec: &str) -> Result<Device, Error> {
    Err(Error::NotBuilt(spec.into(), "ndarray"))
}

/// The wgpu adapters this machine has, in the runtime's order; empty where wgpu cannot start
/// (no driver), even if the runtime panics while looking.
#[cfg(feature = "wgpu")]
pub(crate) fn wgpu_devices() -> Vec<Device> {
    std::panic::catch_unwind(|| Device::enumerate(burn::tensor::DeviceType::Wgpu).into_vec())
        .unwrap_or_default()
}

#[cfg(feature = "wgpu")]
fn wgpu(_: &str, index: Option<usize>) -> Result<Device, Error> {
    let all = wgpu_devices();
    if all.is_empty() {
        return Err(Error::NoWgpuAdapter);
    }
    match index {
        None => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        Some(i) => all.get(i).cloned().ok_or(Error::NoSuchAdapter {
            index: i,
            count: all.len(),
        }),
    }
}
#[cfg(not(feature = "wgpu"))]
fn wgpu(spec: &str, _: Option<usize>) -> Result<Device, Error> {
    Err(Error::NotBuilt(spec.into(), "wgpu"))
}

#[cfg(feature = "cuda")]
fn cuda(_: &str, index: usize) -> Result<Device, Error> {
    Ok(Device::cuda(index))
}
#[cfg(not(feature = "cuda"))]
fn cuda(spec: &str, _: usize) -> Result<Device, Error> {
    Err(Error::NotBuilt(spec.into(), "cuda"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_devices_are_errors() {
        assert_eq!(
            parse_device(Some("tpu")).unwrap_err(),
            Error::UnknownDevice("tpu".into())
        );
        assert!(matches!(
            parse_device(Some("wgpu:x")),
            Err(Error::UnknownDevice(_))
        ));
        assert!(matches!(
            parse_device(Some("cpu:3")),
            Err(Error::UnknownDevice(_))
        ));
    }

    #[cfg(feature = "flex")]
    #[test]
    fn cpu_is_flex() {
        assert_eq!(parse_device(Some("cpu")).unwrap(), Device::flex());
    }
}
