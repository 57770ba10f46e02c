//! The tensor-level API: what a Burn user calls, on `Tensor`s of any device. Each function
//! checks its shapes and goes through the [`crate::SsmOps`] extension (the fused kernel where the
//! backend has one); the `*_reference` variants run the portable body, the oracle in tests.

mod fft;
mod fftn;
mod linear;
mod norm;
pub(crate) mod precision;
mod scan;
mod ssd;
mod step;

pub use fft::{
    DIRECT_MAX_LEN, bidirectional_conv, causal_conv, causal_conv_fft, causal_conv_reference, irfft,
    rfft,
};
pub use fftn::{fft, ifft, irfftn, rfftn};
pub use linear::{rows_matmul, rows_matmul_transposed};
pub use norm::add_rms_norm;
pub use scan::{
    ScanOutput, SelectiveScan, causal_conv1d_step, selective_state_step, seq_idx_from_lengths,
    ungrouped,
};
pub use ssd::{Ssd, ssd, ssd_reference};
pub use step::{
    mamba_decode_step, mamba2_decode_step, mamba3_decode_step, pack_mamba_step_weights,
    pack_mamba2_step_weights, pack_mamba3_step_weights,
};

use burn::tensor::{Tensor, TensorData};

/// Copies a tensor to host f32 values (test and tooling helper).
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    let data: TensorData = t.into_data();
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}
