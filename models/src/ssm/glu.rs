//! The S4 family's gated output: GELU, dropout, a pointwise linear H -> 2H, then a GLU over the
//! channels.

use burn::nn::{Dropout, Linear};
use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, sigmoid};

/// The S4-family block output on (B, H, L): `GLU(linear(dropout(GELU(y))))` over the channels
/// (the reference's `Conv1d(H, 2H, 1)` then `GLU(dim=-2)`).
pub fn glu_output(linear: &Linear, dropout: &Dropout, y: Tensor<3>) -> Tensor<3> {
    let y = dropout.forward(gelu(y));
    let z = linear.forward(y.swap_dims(1, 2));
    let h = z.dims()[2] / 2;
    (z.clone().narrow(2, 0, h) * sigmoid(z.narrow(2, h, h))).swap_dims(1, 2)
}
