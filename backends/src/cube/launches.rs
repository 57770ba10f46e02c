//! Counting kernel launches as the CubeCL runtime issues them (wgpu, vulkan, cuda, rocm).
//!
//! The runtime reports every launch, on every device and thread, to one process-wide observer;
//! [`LaunchCounter`] installs one for its lifetime and tallies the launches by kernel name.
//! `zoo bench lm` reports launches per decoded token with it; the tests use it to prove that a
//! kernel ran rather than a fallback, and it reads the fallbacks the GPU ops reported
//! ([`LaunchCounter::fallbacks`]).

use cubecl::logging::{LaunchObservation, LaunchObserver};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Tally(Mutex<BTreeMap<&'static str, usize>>);

impl LaunchObserver for Tally {
    fn launched(&self, kernel: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kernel)
            .or_default() += 1;
    }
}

/// Counts the kernel launches issued while it lives (process-wide: launches of other threads
/// count too). A second counter replaces the first until it is dropped.
pub struct LaunchCounter {
    tally: Arc<Tally>,
    /// The fallback tally when counting started (or was reset).
    fallbacks_before: Mutex<BTreeMap<&'static str, usize>>,
    _observation: LaunchObservation,
}

impl Default for LaunchCounter {
    fn default() -> Self {
        Self::start()
    }
}

impl LaunchCounter {
    /// Starts counting.
    pub fn start() -> Self {
        let tally = Arc::new(Tally::default());
        let observation = LaunchObservation::new(tally.clone());
        Self {
            tally,
            fallbacks_before: Mutex::new(super::fallback::tally()),
            _observation: observation,
        }
    }

    /// Launches per kernel name (as the runtime names them), sorted by name.
    pub fn counts(&self) -> Vec<(String, usize)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }

    /// All launches so far.
    pub fn total(&self) -> usize {
        self.lock().values().sum()
    }

    /// Launches of the kernels whose name contains `needle` (ASCII case-insensitive; the runtime
    /// may report `scan_fwd_kernel` as a type path such as `...::ScanFwdKernel<F>`, so `_` in the
    /// needle is ignored too).
    pub fn count_of(&self, needle: &str) -> usize {
        let key = |s: &str| s.to_ascii_lowercase().replace('_', "");
        let needle = key(needle);
        self.lock()
            .iter()
            .filter(|(k, _)| key(k).contains(&needle))
            .map(|(_, v)| v)
            .sum()
    }

    /// The GPU ops that ran a slower body instead of their kernel since counting started (an
    /// op name and how many times; see the `log` warning for why), sorted by name.
    pub fn fallbacks(&self) -> Vec<(String, usize)> {
        let before = self
            .fallbacks_before
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        super::fallback::tally()
            .into_iter()
            .map(|(op, n)| (op.to_string(), n - before.get(op).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Forgets the launches and fallbacks counted so far.
    pub fn reset(&self) {
        self.lock().clear();
        *self
            .fallbacks_before
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = super::fallback::tally();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, usize>> {
        self.tally.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
