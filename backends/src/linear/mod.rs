//! `x w` (or `x wᵀ`) for a few rows `x`: the projections and the LM head of a decode step,
//! where the time goes into streaming the weight from memory.
//!
//! Everything the op is, in one place:
//! - [`api`]: the tensor-level [`rows_matmul`] and [`rows_matmul_transposed`];
//! - [`mod@reference`]: the backend's own matmul (the default; NdArray and CubeCL run it, and
//!   Fusion records it as a fusable matmul);
//! - `cpu`: Flex's kernel, the weight read in place and its columns spread over the cores
//!   (with `flex`);
//! - [`autodiff`]: the reference body when tracked, the inner op otherwise;
//! - [`q8`]: weights held in 8 bits ([`quantize_q8`]) and their rows looked up
//!   ([`embedding_rows`]); the products from them are `SsmOps::q_rows_matmul` (Flex's kernel in
//!   `crate::cpu::gemv_q8`).

pub(crate) mod api;
pub(crate) mod autodiff;
#[cfg(feature = "flex")]
pub(crate) mod cpu;
pub(crate) mod q8;
pub(crate) mod reference;

pub use api::{rows_matmul, rows_matmul_transposed};
pub use q8::{Q8_BLOCK, embedding_rows, is_quantized, q8_scheme, quantize_q8};
