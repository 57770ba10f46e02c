//! How the selective scan's GPU kernels cut up a problem: the policy, apart from the kernels
//! and their launchers.
//!
//! - Tiling: channels per cube ([`SCAN_BLOCK`]) and the chunk of steps whose B and C are staged
//!   in shared memory ([`fwd_chunk`], [`bwd_tiling`]: the largest that fit the device's shared
//!   memory), and whether the forward also stages u, delta and z ([`stages_inputs`]).
//! - Spans: when the batch rows times the channels are too few to fill the device (a batch-1
//!   prefill: 1,536 channels against the 270,000 threads an H200 keeps resident), the sequence
//!   is cut into spans walked in parallel ([`scan_spans`], [`forward_spans`]; the backward
//!   takes [`equal_spans`]).
//! - Segments: on devices whose shader loops are capped (Mesa's lavapipe), a long sequence is
//!   walked in consecutive launches ([`max_segment`], [`backward_segment`]).
//!
//! What the tests force in place of the device's rules (the span count, the staging) is kept in
//! [`overrides`], set through `crate::testing`.

use crate::cube::buffers::{Cb, loop_capped};
use crate::scan::reference::{ScanArgs, ScanDims};
use burn_cubecl::tensor::CubeTensor;

/// Channels per cube of the scan kernels (one unit each).
pub(super) const SCAN_BLOCK: usize = 32;
/// Steps per chunk of the forward scan (B and C staged in shared memory per chunk), at most.
const FWD_CHUNK: usize = 64;
/// Threads one NVIDIA SM keeps resident (2,048 since Volta; the runtime reports the SMs).
const THREADS_PER_SM: usize = 2048;
/// Threads assumed resident on a hardware GPU whose runtime reports no SM count (wgpu): a
/// mid-range card (16 compute units of 2,048).
const ASSUMED_RESIDENT: usize = 32_768;
/// The fewest steps a span of the sequence-parallel forward holds (below that, the summaries'
/// pass and the second walk cost more than the parallelism gains).
const MIN_SPAN: usize = 128;

/// Spans the forward cuts the sequence into so that `channels` (batch rows x D) units fill a
/// device keeping `resident` threads (`None`: a software adapter, whose few CPU threads the
/// channels already fill): 1 (one pass) when the channels alone fill it, else as many as it
/// takes, each at least [`MIN_SPAN`] steps long.
pub(super) fn scan_spans(channels: usize, len: usize, resident: Option<usize>) -> usize {
    let Some(resident) = resident else {
        return 1;
    };
    (resident / channels.max(1)).min(len / MIN_SPAN).max(1)
}

/// Threads the device keeps resident, for [`scan_spans`] (`None` on a software adapter).
fn resident_threads(t: &CubeTensor) -> Option<usize> {
    if loop_capped(t) {
        return None;
    }
    let sms = t.client.properties().hardware.num_streaming_multiprocessors;
    Some(sms.map_or(ASSUMED_RESIDENT, |n| n as usize * THREADS_PER_SM))
}

/// The span count of the rule for this device and problem, or the tests' count.
pub(super) fn forward_spans(u: &CubeTensor, s: ScanDims) -> usize {
    match overrides::spans() {
        None => scan_spans(s.batch * s.dim, s.len, resident_threads(u)),
        Some(forced) => forced,
    }
}

/// The span count the sequence-parallel backward would take for these inputs (the forward's
/// rule), before it is made to divide the length.
pub(super) fn backward_spans_wanted(args: &ScanArgs<Cb>) -> usize {
    forward_spans(&args.u, ScanDims::of::<Cb>(&args.u, &args.b))
}

/// The largest count of equal spans of `len` steps not above `wanted` (1 when none divides).
pub(super) fn equal_spans(len: usize, wanted: usize) -> usize {
    (1..=wanted.min(len))
        .rev()
        .find(|s| len.is_multiple_of(*s))
        .unwrap_or(1)
}

/// The forward chunk: the longest (a power of two up to [`FWD_CHUNK`]) whose staging fits the
/// device's shared memory (B and C: `2 N chunk` floats; with `stage`, u, delta and z of the
/// cube's channels: `3 SCAN_BLOCK (chunk + 1)`); `None` if not even one step does.
pub(super) fn fwd_chunk(state: usize, elem: usize, shared: usize, stage: bool) -> Option<usize> {
    // Unstaged, the three staging arrays are one element each.
    let staged = |c: usize| if stage { 3 * SCAN_BLOCK * (c + 1) } else { 3 };
    (0..=FWD_CHUNK.ilog2())
        .rev()
        .map(|e| 1usize << e)
        .find(|c| (2 * state * c + staged(*c)) * elem <= shared)
}

/// Whether the forward stages u, delta and z through shared memory (coalesced loads): on
/// hardware GPUs; a software adapter (lavapipe) reads them from the CPU's caches, where the
/// extra barriers and shorter chunks cost more than they save (measured on lavapipe at B = 1,
/// D = 1536, L = 128: 40 ms staged against 29 ms). The tests force either.
pub(super) fn stages_inputs(t: &CubeTensor) -> bool {
    overrides::staging().unwrap_or_else(|| !loop_capped(t))
}

/// Steps per chunk of the backward scan (the states recomputed per chunk), at most.
const BWD_CHUNK: usize = 32;

/// The backward (channels per cube, chunk): the largest that fit the shared memory
/// (`2 N (2 chunk + block)` floats: staged B, C, the per-step reduction and the chunk's dB, dC);
/// large state sizes (Mamba2: N = 128) take smaller cubes and chunks.
pub(super) fn bwd_tiling(
    state: usize,
    elem: usize,
    shared: usize,
    units: usize,
) -> Option<(usize, usize)> {
    [SCAN_BLOCK, 16, 8]
        .into_iter()
        .filter(|b| *b <= units)
        .flat_map(|b| (0..=BWD_CHUNK.ilog2()).rev().map(move |e| (b, 1usize << e)))
        .find(|(b, c)| 2 * state * (2 * c + b) * elem <= shared)
}

/// The longest stretch of a sequence one forward scan launch walks, for `n_state` states.
/// Mesa's llvmpipe/lavapipe (the software Vulkan of machines without a GPU) caps the loop
/// iterations of a shader invocation at about 65,535, counted over all its loops, and silently
/// stops there: measured, the forward kernel's outputs were zeros from step 55,923 on at N = 4
/// and from 42,367 at N = 16 (each step costs one iteration, plus the loops staging B and C),
/// and from about 1,000 at N = 64, where the loop over the states is no longer unrolled and
/// costs N iterations a step. On such devices ([`loop_capped`]: no physical card) longer
/// sequences run as consecutive launches, each starting from the state the previous one ended
/// in (exact: the scan is a recurrence); real GPUs walk any length in one.
pub(super) fn max_segment(n_state: usize) -> usize {
    let rolled = if n_state > 32 { n_state } else { 0 };
    // Per step: the step itself, staging and storing u/delta/z/y, and B and C.
    (50_000 / (4 + n_state / 16 + rolled)).min(16_384)
}

/// The longest stretch one backward launch walks, for `n_state` states: the backward kernel
/// loops several times per step (the chunk's states recomputed, then the reverse pass), so
/// lavapipe's cap on shader loops (see [`max_segment`]) bites sooner; measured, at
/// N = 4 the gradients were wrong from L = 16,384 on and right at 10,000, at N = 64 (the state
/// loops not unrolled) wrong at 200 and right at 100.
pub(super) fn backward_segment(n_state: usize) -> usize {
    let rolled = if n_state > 32 { 8 * n_state } else { 0 };
    (50_000 / (6 + n_state / 8 + rolled)).min(8_192)
}

/// What the tests force in place of the device's rules, process-wide (`crate::testing`'s
/// `set_gpu_scan_spans` and `set_gpu_scan_staging`); nothing is forced unless a test sets it.
pub(crate) mod overrides {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A span count in place of [`super::scan_spans`]'s (0: none).
    static SPANS: AtomicUsize = AtomicUsize::new(0);
    /// Staging in place of the device's rule (0: the rule, 1: off, 2: on).
    static STAGING: AtomicUsize = AtomicUsize::new(0);

    /// The forced span count, if any.
    pub(super) fn spans() -> Option<usize> {
        match SPANS.load(Ordering::Relaxed) {
            0 => None,
            forced => Some(forced),
        }
    }

    /// The forced staging, if any.
    pub(super) fn staging() -> Option<bool> {
        match STAGING.load(Ordering::Relaxed) {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }

    /// Sets the forward's span count whatever the device (`None`: back to the rule); for
    /// tests of the sequence-parallel path on any device.
    pub(crate) fn set_spans(spans: Option<usize>) {
        SPANS.store(spans.unwrap_or(0), Ordering::Relaxed);
    }

    /// Makes the forward stage its inputs through shared memory, or not, whatever the device
    /// (`None`: back to the rule); for tests of both paths on any device.
    pub(crate) fn set_staging(stage: Option<bool>) {
        STAGING.store(stage.map_or(0, |s| 1 + s as usize), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::{bwd_tiling, equal_spans, fwd_chunk, scan_spans};

    #[test]
    fn spans_fill_the_device_only_when_the_channels_do_not() {
        // An H200 (132 SMs of 2,048 threads): mamba-130m's 1,536 channels at batch 1 over
        // 2,048 steps take 16 spans of 128; at batch 256 the channels fill it alone.
        let h200 = Some(132 * 2048);
        assert_eq!(scan_spans(1536, 2048, h200), 16);
        assert_eq!(scan_spans(1536, 65_536, h200), 176);
        assert_eq!(scan_spans(256 * 1536, 2048, h200), 1);
        // Too short to cut, or a software adapter: one pass.
        assert_eq!(scan_spans(1536, 200, h200), 1);
        assert_eq!(scan_spans(4, 1 << 20, None), 1);
        assert_eq!(scan_spans(0, 1024, h200), 8);
    }

    #[test]
    fn the_forward_chunk_shrinks_to_fit_the_shared_memory() {
        // WebGPU's minimum (16 KiB), f32.
        let kb16 = 16 * 1024;
        assert_eq!(fwd_chunk(16, 4, kb16, true), Some(16));
        assert_eq!(fwd_chunk(128, 4, kb16, true), Some(8));
        assert_eq!(fwd_chunk(5000, 4, kb16, true), None);
        // CUDA's 48 KiB of static shared memory.
        assert_eq!(fwd_chunk(16, 4, 48 * 1024, true), Some(64));
        assert_eq!(fwd_chunk(16, 2, kb16, true), Some(32));
        // Unstaged: B and C alone.
        assert_eq!(fwd_chunk(16, 4, kb16, false), Some(64));
        assert_eq!(fwd_chunk(128, 4, kb16, false), Some(8));
        // Lavapipe's 32 KiB at N = 128: 32 steps would leave no room for the placeholders.
        assert_eq!(fwd_chunk(128, 4, 32 * 1024, false), Some(16));
    }

    #[test]
    fn the_backward_tiles_shrink_to_fit_the_shared_memory() {
        // WebGPU's minimum (16 KiB), f32.
        let kb16 = 16 * 1024;
        assert_eq!(bwd_tiling(16, 4, kb16, 256), Some((32, 32)));
        // Mamba2's N = 128: 2·128·(2·4 + 8)·4 = 16 KiB.
        assert_eq!(bwd_tiling(128, 4, kb16, 256), Some((8, 4)));
        // CUDA's 48 KiB.
        assert_eq!(bwd_tiling(128, 4, 48 * 1024, 1024), Some((32, 8)));
        assert_eq!(bwd_tiling(1000, 4, kb16, 256), None);
    }

    #[test]
    fn spans_are_equal_or_none() {
        assert_eq!(equal_spans(2048, 16), 16);
        assert_eq!(equal_spans(200, 7), 5);
        assert_eq!(equal_spans(37, 7), 1);
        assert_eq!(equal_spans(1, 7), 1);
        assert_eq!(equal_spans(130, 3), 2);
    }
}
