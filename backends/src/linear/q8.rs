//! 8-bit weights: an (N, K) matrix quantized to int8 with one f32 scale per block of `bk`
//! consecutive elements of a row (along K, the axis its products reduce over), in Burn's own
//! quantized tensor (`QuantScheme`: symmetric `Q8S`, native i8 storage, block scales `[1, bk]`).
//! The layout of llama.cpp's `q8_0` when `bk` is 32: `w[n, k] ≈ s[n, k / bk] q[n, k]`,
//! `s = max |w| / 127` over the block, `q = round(w / s)` in [-127, 127].

use crate::error::Error;
use crate::ops::SsmOps;
use burn::backend::Dispatch;
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{DType, Int, Tensor};

/// The default block length along K: llama.cpp's `q8_0`.
pub const Q8_BLOCK: usize = 32;

/// The scheme of an 8-bit (N, K) matrix from [`quantize_q8`]: symmetric values in [-127, 127]
/// stored natively, one f32 scale per block of `bk` along K (its rows). The Flex kernel takes
/// exactly this scheme (the reference body any other).
pub fn q8_scheme(bk: u8) -> QuantScheme {
    QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .with_store(QuantStore::Native)
        .per_block([1, bk], ScaleDtype::F32)
}

/// `w` (N, K) held in 8 bits: int8 values with one f32 scale per block of `bk` consecutive
/// elements of each row (K, the axis its products reduce over): an embedding or LM head
/// (vocab, d) as it is, a `Linear` weight (K, N) transposed first (the checkpoints' (out, in)
/// layout, llama.cpp's). [`crate::rows_matmul_transposed`] (`x wᵀ`) and [`embedding_rows`]
/// then compute from the int8 values (on Flex in place, in integer dot products; elsewhere by
/// dequantizing, said once).
///
/// # Errors
/// When `bk` is 0 or over 255 (a block is an 8-bit length in Burn's scheme), K is not a whole
/// number of blocks, or `w` is already quantized.
pub fn quantize_q8(w: Tensor<2>, bk: usize) -> Result<Tensor<2>, Error> {
    let [n, k] = w.dims();
    let bad = |why: String| {
        Err(Error::Invalid(format!(
            "quantize_q8 of an ({n}, {k}) matrix: {why}"
        )))
    };
    let Ok(block) = u8::try_from(bk) else {
        return bad(format!("a block of {bk} is over 255 elements"));
    };
    if bk == 0 || !k.is_multiple_of(bk) {
        return bad(format!("K = {k} is not a whole number of blocks of {bk}"));
    }
    if matches!(w.dtype(), DType::QFloat(_)) {
        return bad("it is already quantized".into());
    }
    let w = if w.dtype() == DType::F32 {
        w
    } else {
        w.cast(burn::tensor::FloatDType::F32)
    };
    Ok(w.quantize_dynamic(&q8_scheme(block)))
}

/// Whether `t` is held quantized.
pub fn is_quantized<const D: usize>(t: &Tensor<D>) -> bool {
    matches!(t.dtype(), DType::QFloat(_))
}

/// Rows `ids` (M) of an (N, K) matrix, an embedding: `w.select(0, ids)`, and for a matrix from
/// [`quantize_q8`] the rows dequantized from its int8 values without dequantizing
/// the rest (on Flex; elsewhere the matrix is dequantized, said once).
///
/// # Errors
/// When an id is not below N.
pub fn embedding_rows(w: Tensor<2>, ids: Tensor<1, Int>) -> Result<Tensor<2>, Error> {
    let n = w.dims()[0];
    if ids.dims()[0] > 0 {
        let max = ids.clone().max().into_scalar::<i64>();
        let min = ids.clone().min().into_scalar::<i64>();
        if min < 0 || max >= n as i64 {
            return Err(Error::Invalid(format!(
                "embedding_rows: ids from {min} to {max} outside the matrix's {n} rows"
            )));
        }
    }
    if !is_quantized(&w) {
        return Ok(w.select(0, ids));
    }
    Ok(Tensor::from_dispatch(<Dispatch as SsmOps>::q_embedding(
        w.into_dispatch(),
        ids.into_dispatch(),
    )))
}
