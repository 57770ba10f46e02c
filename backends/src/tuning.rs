//! Process-wide settings of the GPU scan's launch plan, for benchmarks and `zoo selftest`
//! (each path measured or checked on any device) and tests. Normal use leaves them alone: the
//! launchers choose from the device's size (`scan/cube/plan.rs`).

/// Cuts every GPU forward scan into `spans` spans of the sequence walked in parallel (`None`:
/// back to the rule on the device's size; 1: one pass).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn set_gpu_scan_spans(spans: Option<usize>) {
    crate::scan::cube::plan::overrides::set_spans(spans);
}

/// Makes every GPU forward scan stage its inputs through shared memory (coalesced loads, as on
/// hardware GPUs) or read them directly (as on software adapters), whatever the device
/// (`None`: back to the device's rule).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn set_gpu_scan_staging(stage: Option<bool>) {
    crate::scan::cube::plan::overrides::set_staging(stage);
}
