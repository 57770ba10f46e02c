//! Sizing a run before it allocates. A mistyped `--d-model 200000` used to reach the allocator
//! (a 320 GB request and an abort); now the memory a run needs is estimated from its settings
//! alone (parameters, gradients and optimizer state, one micro-batch's activations, the logits)
//! and compared with what the machine has available, and a run that cannot fit is refused with
//! one error naming the estimate and the settings to change.
//!
//! Only the CPU backends are sized here: their tensors live in the host's memory, whose free
//! amount the operating system reports (`MemAvailable` on Linux). A GPU's own memory is not
//! reported through Burn; there the per-tensor binding limits of [`crate::limits`] apply.

use crate::error::{ModelError, Result};
use burn::tensor::Device;

/// A run's memory, estimated before anything is allocated: named parts, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    /// The run, for messages ("training with batch 16 x 256 tokens").
    pub what: String,
    /// The parts of the estimate, in bytes.
    pub parts: Vec<(&'static str, u64)>,
    /// The settings that size the run, for the refusal ("--d-model, --layers, ...").
    pub settings: String,
}

impl MemoryEstimate {
    /// The sum of the parts, saturating.
    pub fn total(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |acc, (_, b)| acc.saturating_add(*b))
    }

    /// An error when the estimate exceeds what `device` has available ([`available_bytes`]),
    /// unless `force`; nothing to check where the amount is not known.
    ///
    /// # Errors
    /// [`ModelError::WouldNotFit`], naming the estimate, its parts, what is available and the
    /// settings to change.
    pub fn check(&self, device: &Device, force: bool) -> Result<()> {
        match available_bytes(device) {
            Some(available) if !force && self.total() > available => Err(ModelError::WouldNotFit {
                what: self.what.clone(),
                need: human(self.total()),
                parts: self
                    .parts
                    .iter()
                    .filter(|(_, b)| *b > 0)
                    .map(|(name, b)| format!("{name} {}", human(*b)))
                    .collect::<Vec<_>>()
                    .join(", "),
                available: human(available),
                settings: self.settings.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// The memory available to a new allocation on `device`: on the CPU backends the host's
/// `MemAvailable` (Linux); `None` elsewhere (a GPU, or a system that does not say).
pub fn available_bytes(device: &Device) -> Option<u64> {
    if !ssm_backends::is_host(device) {
        return None;
    }
    host_available()
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn host_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Whether the environment forces runs past the estimate (`SSM_ZOO_FORCE` set, not `0`).
pub fn forced_by_env() -> bool {
    std::env::var_os("SSM_ZOO_FORCE").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A count as "950", "12.5 thousand", "130.0 million", "1.0 trillion".
pub fn human_count(n: u64) -> String {
    const UNITS: [(f64, &str); 4] = [
        (1e12, "trillion"),
        (1e9, "billion"),
        (1e6, "million"),
        (1e3, "thousand"),
    ];
    UNITS
        .iter()
        .find(|(scale, _)| n as f64 >= *scale)
        .map_or(n.to_string(), |(scale, name)| {
            format!("{:.1} {name}", n as f64 / scale)
        })
}

/// Bytes as "1.5 GiB", "320 MiB", "12 KiB".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_estimate_over_what_is_available_is_refused_unless_forced() {
        let cpu = Device::flex();
        let available = available_bytes(&cpu).expect("Linux reports MemAvailable");
        let huge = MemoryEstimate {
            what: "a test run".into(),
            parts: vec![("parameters", available), ("activations", 1 << 30)],
            settings: "--d-model".into(),
        };
        let err = huge.check(&cpu, false).unwrap_err().to_string();
        assert!(
            err.contains("a test run needs about") && err.contains("--d-model"),
            "{err}"
        );
        assert!(huge.check(&cpu, true).is_ok());
        let small = MemoryEstimate {
            parts: vec![("parameters", 1 << 20)],
            ..huge
        };
        assert!(small.check(&cpu, false).is_ok());
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human_count(129_135_360), "129.1 million");
        assert_eq!(human_count(950), "950");
        assert_eq!(human(320 << 30), "320.0 GiB");
    }
}
