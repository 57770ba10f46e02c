//! Saying so when a GPU op cannot run its kernel and runs a slower body instead (the portable
//! body, the composed decode step, the DFT matrix): a `log` warning once per op and input shape,
//! and a process-wide tally that [`crate::LaunchCounter`] reads, so that a test or a benchmark
//! can tell a kernel from a fallback.

use burn::backend::TensorMetadata;
use burn_cubecl::tensor::CubeTensor;
use std::collections::{BTreeMap, HashSet};
use std::sync::{LazyLock, Mutex};

/// What most GPU ops run when their kernel cannot take the inputs.
pub(crate) const PORTABLE: &str = "the portable body";

/// Reports that `op` on `inputs` runs `instead` of its kernel, and why (see [`report`]).
pub(crate) fn unsupported(
    op: &'static str,
    inputs: &[&CubeTensor],
    why: Unsupported,
    instead: &str,
) {
    let shapes = inputs.iter().map(|t| t.shape().to_vec()).collect();
    report(op, shapes, &why, instead);
}

/// Why a launcher did not launch its kernel.
#[derive(Debug)]
pub(crate) enum Unsupported {
    /// An empty tensor: nothing to compute; the portable body returns the empty result (not a
    /// slower path, so not reported).
    Empty,
    /// A shape, float type or size the kernel cannot take (the message says which).
    Because(String),
}

/// An op and the shapes of its inputs.
type Site = (&'static str, Vec<Vec<usize>>);

static WARNED: LazyLock<Mutex<HashSet<Site>>> = LazyLock::new(Default::default);
static TALLY: LazyLock<Mutex<BTreeMap<&'static str, usize>>> = LazyLock::new(Default::default);

/// Reports that `op` ran `instead` for inputs of `shapes`: counted every time, and warned
/// through `log` the first time for each op and shapes. Empty inputs are not reported.
pub(crate) fn report(op: &'static str, shapes: Vec<Vec<usize>>, why: &Unsupported, instead: &str) {
    let Unsupported::Because(reason) = why else {
        return;
    };
    *TALLY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(op)
        .or_default() += 1;
    let first = WARNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((op, shapes.clone()));
    if first {
        log::warn!("{op} on inputs {shapes:?} runs {instead}, not its GPU kernel: {reason}");
    }
}

/// The fallbacks reported so far in this process, by op.
pub(crate) fn tally() -> BTreeMap<&'static str, usize> {
    TALLY.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
