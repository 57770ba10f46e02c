//! The few-row product's reference (portable) body: the backend's own matmul, the default body
//! of [`crate::SsmOps::rows_matmul`]; and the 8-bit product's and lookup's, the same on the
//! dequantized weight.

use burn::backend::{
    Backend, TensorMetadata,
    tensor::{FloatTensor, IntTensor, QuantizedTensor},
};
use burn::tensor::FloatDType;
use std::collections::HashSet;
use std::sync::Mutex;

/// `x w` with `w` (K, N), or `x wᵀ` with `w` (N, K) when `transposed`; `x` (M, K). The
/// transposed product is computed as `(w xᵀ)ᵀ`, so a large (N, K) weight (a tied LM head) is
/// never transposed in memory.
pub fn rows_matmul<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    transposed: bool,
) -> FloatTensor<B> {
    if transposed {
        B::float_transpose(B::float_matmul(w, B::float_transpose(x)))
    } else {
        B::float_matmul(x, w)
    }
}

/// [`rows_matmul`] of the dequantized weight.
pub fn q_rows_matmul<B: Backend>(
    x: FloatTensor<B>,
    w: QuantizedTensor<B>,
    transposed: bool,
) -> FloatTensor<B> {
    note_dequantized::<B>("q_rows_matmul", &w);
    rows_matmul::<B>(x, B::dequantize(w, FloatDType::F32), transposed)
}

/// Rows `ids` of the dequantized matrix.
pub fn q_embedding<B: Backend>(w: QuantizedTensor<B>, ids: IntTensor<B>) -> FloatTensor<B> {
    note_dequantized::<B>("q_embedding", &w);
    B::float_select(B::dequantize(w, FloatDType::F32), 0, ids)
}

/// Says once per op, backend and scheme that the 8-bit weight is dequantized per use (the
/// product then saves memory but no time).
pub(crate) fn note_dequantized<B: Backend>(op: &'static str, w: &QuantizedTensor<B>) {
    static SAID: Mutex<Option<HashSet<(&'static str, String)>>> = Mutex::new(None);
    let key = (op, format!("{} {:?}", B::name(&w.device()), w.dtype()));
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said.get_or_insert_with(HashSet::new).insert(key.clone()) {
        log::warn!(
            "{op}: on {}, the 8-bit weight ({:?}) is dequantized to f32 for each use (memory \
             saved, no time); Flex's kernel reads q8 blocks along K in place",
            key.1,
            w.dtype()
        );
    }
}
