//! Half precision at the ops' boundary.
//!
//! Every op of this API takes its activations in f32, f16 or bf16 and computes in f32: the
//! recurrent state, the discretisation `exp(Δ A)` and every accumulation stay f32 whatever the
//! activations are, as mamba_ssm's kernels do (its `selective_scan` loads bf16 `u`, `delta`, `B`,
//! `C`, `z` and runs the state in fp32). Outputs come back in the activations' dtype; states
//! (the scan's final state, the decode caches) are f32. The selective scan's GPU kernel reads
//! and writes the half activations itself (f32 registers, shared memory and state); the other
//! kernels read f32, so a half-precision call widens its inputs first (one cast each, which
//! the fusing backends may fold into the op that produced them), said once per op in the log.

use burn::tensor::{DType, FloatDType, Tensor};
use std::collections::HashSet;
use std::sync::Mutex;

/// The dtype an op's outputs take: that of its main activation input.
pub(crate) fn activation_dtype<const D: usize>(t: &Tensor<D>) -> DType {
    t.dtype()
}

/// Whether `dtype` is a half-precision float (f16 or bf16): the types the ops widen to f32.
/// Other types pass as they are (an f64 input reaches the kernels, which refuse it by name
/// rather than lose its precision).
pub(crate) fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// `t` in f32 when it is f16 or bf16, else as it is.
pub(crate) fn wide<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if is_half(t.dtype()) {
        t.cast(FloatDType::F32)
    } else {
        t
    }
}

/// `t` (an f32 result) in `dtype` when that is f16 or bf16, else as it is.
pub(crate) fn back<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if is_half(dtype) && t.dtype() != dtype {
        t.cast(dtype)
    } else {
        t
    }
}

/// Says once per op and dtype that `op` computes in f32 from `dtype` activations.
pub(crate) fn note_widened(op: &'static str, dtype: DType) {
    if !is_half(dtype) {
        return;
    }
    static SAID: Mutex<Option<HashSet<(&'static str, String)>>> = Mutex::new(None);
    let key = (op, format!("{dtype:?}"));
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said.get_or_insert_with(HashSet::new).insert(key) {
        log::info!(
            "{op}: {dtype:?} activations are widened to f32 for the op (state and accumulations \
             in f32, as mamba_ssm keeps them); its outputs return in {dtype:?}"
        );
    }
}
