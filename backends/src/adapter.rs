//! What a device is, as its runtime reports it: the GPU adapter's name, vendor, driver and
//! graphics API, and whether it is a hardware GPU, a software rasteriser (Mesa's lavapipe,
//! SwiftShader, WARP: a CPU running the kernels) or a CPU backend. `zoo selftest` names the
//! device its figures belong to with it.

use burn::tensor::Device;

/// The kind of device that runs the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A CPU backend (Flex, NdArray): the fused CPU kernels.
    Host,
    /// A GPU (a card on a bus).
    Hardware,
    /// A software adapter: a CPU emulating a GPU (far slower than the CPU backends).
    Software,
}

impl DeviceKind {
    /// `host`, `hardware` or `software`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Hardware => "hardware",
            Self::Software => "software",
        }
    }
}

/// A device as its runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device as it names itself (`NVIDIA H100 80GB HBM3`, `llvmpipe (LLVM 15.0.6, 256
    /// bits)`), or the CPU backend's name.
    pub name: String,
    /// Host, hardware GPU or software adapter.
    pub kind: DeviceKind,
    /// The PCI vendor (`NVIDIA`, `AMD`, `Intel`, `Apple`, or the id in hex), where reported; for
    /// a CPU backend, the processor's model and thread count.
    pub vendor: Option<String>,
    /// The driver and its version (`NVIDIA 570.124.06`, `llvmpipe Mesa 22.3.6`), where the
    /// runtime reports them (wgpu does).
    pub driver: Option<String>,
    /// The graphics API or runtime (`Vulkan`, `Metal`, `Dx12`, `cuda`), where known.
    pub api: Option<String>,
    /// What the runtime compiles for (`wgpu<spirv>`, `ptx_sm90`), where reported.
    pub target: Option<String>,
}

impl DeviceInfo {
    /// A device known by its name and kind alone.
    fn named(name: String, kind: DeviceKind) -> Self {
        Self {
            name,
            kind,
            vendor: None,
            driver: None,
            api: None,
            target: None,
        }
    }
}

/// Describes `device` (opens it). A CPU backend is [`DeviceKind::Host`]; a CubeCL device is
/// described by its runtime's identity, and on wgpu by the adapter of the same name (driver,
/// API, vendor).
pub fn describe(device: &Device) -> DeviceInfo {
    if crate::is_host(device) {
        let mut info = DeviceInfo::named(format!("{device:?}"), DeviceKind::Host);
        info.vendor = cpu_model();
        return info;
    }
    gpu(device)
}

/// The processor's model name (Linux: `/proc/cpuinfo`), with its thread count.
fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let name = text
        .lines()
        .find(|l| l.starts_with("model name"))?
        .split_once(':')?
        .1
        .trim()
        .to_string();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some(format!("{name}, {threads} threads"))
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu(device: &Device) -> DeviceInfo {
    let Some(id) = device.identity() else {
        return DeviceInfo::named(format!("{device:?}"), DeviceKind::Hardware);
    };
    let mut info = DeviceInfo {
        kind: if id.physical.is_some() {
            DeviceKind::Hardware
        } else {
            DeviceKind::Software
        },
        vendor: id
            .physical
            .as_ref()
            .and_then(|p| p.vendor)
            .map(|v| format!("{v:?}")),
        driver: None,
        api: None,
        target: Some(id.fingerprint.clone()),
        name: id.name.clone(),
    };
    #[cfg(feature = "wgpu")]
    if let Some(a) = wgpu_adapter(&id.name) {
        info.driver = Some(format!("{} {}", a.driver, a.driver_info).trim().to_string())
            .filter(|d| !d.is_empty());
        info.api = Some(format!("{:?}", a.backend));
        if info.vendor.is_none() {
            info.vendor = Some(vendor_name(a.vendor));
        }
        if a.device_type == cubecl::wgpu::wgpu::DeviceType::Cpu {
            info.kind = DeviceKind::Software;
        }
    }
    info
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
fn gpu(device: &Device) -> DeviceInfo {
    DeviceInfo::named(format!("{device:?}"), DeviceKind::Hardware)
}

/// The wgpu adapter named `name`, from every graphics API this machine has.
#[cfg(feature = "wgpu")]
fn wgpu_adapter(name: &str) -> Option<cubecl::wgpu::wgpu::AdapterInfo> {
    use cubecl::wgpu::wgpu;
    let found = std::panic::catch_unwind(|| {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::all(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        cubecl::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .iter()
            .map(wgpu::Adapter::get_info)
            .collect::<Vec<_>>()
    })
    .unwrap_or_default();
    found.into_iter().find(|a| a.name == name)
}

/// A PCI vendor id by name where it is a GPU maker's.
#[cfg(feature = "wgpu")]
fn vendor_name(id: u32) -> String {
    match id {
        0x10de => "NVIDIA".into(),
        0x1002 => "AMD".into(),
        0x8086 => "Intel".into(),
        0x106b => "Apple".into(),
        0x5143 => "Qualcomm".into(),
        0x13b5 => "ARM".into(),
        0x10005 => "Mesa".into(),
        other => format!("0x{other:04x}"),
    }
}
