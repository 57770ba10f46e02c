//! Run-time device selection from a string: `cpu`, `ndarray`, `wgpu`, `wgpu:N`, `cuda:N`; with
//! none, [`default_device`].

use crate::error::Error;
use burn::tensor::Device;

/// Parses a device string. `None` (or `auto`) gives [`default_device`].
pub fn parse_device(spec: Option<&str>) -> Result<Device, Error> {
    let Some(spec) = spec else {
        return Ok(default_device().0);
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
        ("default" | "auto", None) => Ok(default_device().0),
        _ => Err(Error::UnknownDevice(spec)),
    }
}

/// The device used when none is named, and why: a hardware GPU if this build reaches one (a
/// CUDA device, else a wgpu adapter that is not a software rasteriser), otherwise the CPU
/// backend. Software adapters (Mesa's llvmpipe/lavapipe, SwiftShader, WARP: wgpu reports them
/// as CPU-type adapters) run kernels far slower than the native CPU backend, so they are used
/// only when asked for (`wgpu`, `wgpu:N`). Burn's own `Device::default()` would take
/// lavapipe over the CPU wherever Mesa is installed.
pub fn default_device() -> (Device, &'static str) {
    if let Some(d) = hardware_gpu() {
        return d;
    }
    #[cfg(feature = "flex")]
    return (Device::flex(), "no hardware GPU found: the CPU backend");
    #[allow(unreachable_code)]
    (
        Device::default(),
        "no hardware GPU found and no CPU backend built: Burn's default",
    )
}

/// The first hardware GPU this build reaches: CUDA device 0, else the first wgpu adapter
/// that is not a CPU-type (software) one.
fn hardware_gpu() -> Option<(Device, &'static str)> {
    #[cfg(feature = "cuda")]
    {
        let cuda = std::panic::catch_unwind(|| {
            Device::enumerate(burn::tensor::DeviceType::Cuda).into_vec()
        })
        .unwrap_or_default();
        if let Some(d) = cuda.into_iter().next() {
            return Some((d, "the first CUDA device"));
        }
    }
    #[cfg(feature = "wgpu")]
    {
        let software = Device::wgpu(burn::tensor::DeviceKind::Cpu);
        if let Some(d) = wgpu_devices().into_iter().find(|d| *d != software) {
            return Some((d, "the first hardware wgpu adapter"));
        }
    }
    None
}

/// Every device this build reaches, each with the string [`parse_device`] takes for it: the CPU
/// backends (`cpu`, `ndarray`), every wgpu adapter (`wgpu:N`, in the runtime's order, software
/// ones included) and every CUDA device (`cuda:N`). Opens the GPU runtimes; a runtime that
/// cannot start (no driver) lists nothing.
pub fn devices() -> Vec<(String, Device)> {
    let mut all = Vec::new();
    #[cfg(feature = "flex")]
    all.push(("cpu".to_string(), Device::flex()));
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    all.push(("ndarray".to_string(), Device::ndarray()));
    #[cfg(feature = "wgpu")]
    all.extend(
        wgpu_devices()
            .into_iter()
            .enumerate()
            .map(|(i, d)| (format!("wgpu:{i}"), d)),
    );
    #[cfg(feature = "cuda")]
    all.extend(
        std::panic::catch_unwind(|| Device::enumerate(burn::tensor::DeviceType::Cuda).into_vec())
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, d)| (format!("cuda:{i}"), d)),
    );
    all
}

/// The largest buffer (bytes) one kernel on `device` can bind, `None` where there is no such
/// limit (the CPU backends). On wgpu it is the adapter's storage-buffer binding limit (128 MiB on
/// Mesa's lavapipe and WebGPU's default, a few GiB on most discrete cards), lowered by
/// [`crate::MAX_BUFFER_VAR`]; a tensor larger than this cannot be an operand of any kernel, so
/// models keep their large weights in row shards under it (and refuse what cannot be split).
pub fn max_binding_bytes(device: &Device) -> Option<usize> {
    match device.clone().inner().as_dispatch() {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        burn::backend::DispatchDevice::Cube(d) => Some(crate::cube::buffers::binding_limit(
            d.client().properties().memory.max_page_size,
        )),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Whether `device` computes in the host's memory (the CPU backends, Flex and NdArray; an
/// autodiff device over one of them too): its tensors then take the machine's RAM.
pub fn is_host(device: &Device) -> bool {
    match device.clone().inner().as_dispatch() {
        #[cfg(feature = "flex")]
        burn::backend::DispatchDevice::Flex(_) => true,
        #[cfg(feature = "ndarray")]
        burn::backend::DispatchDevice::NdArray(_) => true,
        #[allow(unreachable_patterns)]
        _ => false,
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

    /// The default never lands on a software rasteriser (a device that is no card): on a
    /// machine with Mesa's lavapipe and no GPU (CI) it is the CPU backend; and every software
    /// adapter listed is the one the default filters out.
    #[cfg(feature = "wgpu")]
    #[test]
    fn the_default_is_never_a_software_adapter() {
        let (chosen, why) = default_device();
        if let Some(id) = chosen.identity() {
            assert!(id.physical.is_some(), "{chosen:?} ({why}) is {id:?}");
        }
        let software = Device::wgpu(burn::tensor::DeviceKind::Cpu);
        for d in wgpu_devices() {
            if let Some(id) = d.identity()
                && id.physical.is_none()
            {
                assert_eq!(
                    d, software,
                    "{id:?} is a software adapter the default must skip"
                );
            }
        }
    }

    #[cfg(feature = "wgpu")]
    #[test]
    fn lavapipe_binds_at_most_128_mib() {
        let software = Device::wgpu(burn::tensor::DeviceKind::Cpu);
        if !wgpu_devices().contains(&software) {
            crate::testing::skip(
                "lavapipe_binds_at_most_128_mib",
                "no software Vulkan adapter (Mesa's lavapipe) is installed",
            );
            return;
        }
        assert_eq!(max_binding_bytes(&software), Some(128 << 20));
        assert_eq!(
            max_binding_bytes(&software.clone().autodiff()),
            Some(128 << 20)
        );
    }

    #[cfg(feature = "flex")]
    #[test]
    fn cpu_is_flex() {
        assert_eq!(max_binding_bytes(&Device::flex()), None);
        assert!(is_host(&Device::flex()) && is_host(&Device::flex().autodiff()));
        assert_eq!(parse_device(Some("cpu")).unwrap(), Device::flex());
    }
}
