//! Real FFTs and the FFT causal convolution on Burn's CubeCL FFT kernels, which take
//! power-of-two lengths (the convolution pads to one; an rfft or irfft of another length runs
//! the reference DFT-matrix body and says so once per shape).

use super::reference::{self, fit_last};
use crate::cube::buffers::Cb;
use crate::cube::fallback::{Unsupported, unsupported};
use crate::prim::P;
use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::signal::SignalOps;
use burn_cubecl::tensor::CubeTensor;

/// What an FFT of a length Burn's kernels do not take runs.
const DFT: &str = "the O(n²) DFT-matrix body";

/// [`crate::SsmOps::rfft`] on Burn's FFT, or the reference body.
pub(crate) fn rfft(x: FloatTensor<Cb>, n: usize) -> (FloatTensor<Cb>, FloatTensor<Cb>) {
    match launch_rfft(x.clone(), n) {
        Ok(out) => out,
        Err(why) => {
            unsupported("rfft", &[&x], why, DFT);
            reference::rfft_dft::<Cb>(x, n)
        }
    }
}

/// [`crate::SsmOps::irfft`] on Burn's FFT, or the reference body.
pub(crate) fn irfft(re: FloatTensor<Cb>, im: FloatTensor<Cb>, n: usize) -> FloatTensor<Cb> {
    match launch_irfft(re.clone(), im.clone(), n) {
        Ok(out) => out,
        Err(why) => {
            unsupported("irfft", &[&re], why, DFT);
            reference::irfft_dft::<Cb>(re, im, n)
        }
    }
}

/// Whether Burn's FFT takes an `n`-point transform, else why not.
fn fft_length(n: usize) -> Result<(), Unsupported> {
    if n >= 2 && n.is_power_of_two() {
        return Ok(());
    }
    Err(Unsupported::Because(format!(
        "Burn's GPU FFT takes power-of-two lengths, not {n}"
    )))
}

/// The rfft on Burn's CubeCL FFT (power-of-two `n`), or why not.
fn launch_rfft(x: CubeTensor, n: usize) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    if x.shape().num_elements() == 0 {
        return Err(Unsupported::Empty);
    }
    fft_length(n)?;
    let r = x.shape().num_dims() - 1;
    Ok(Cb::rfft(fit_last::<Cb>(x, n), r, Some(n)))
}

/// The irfft on Burn's CubeCL FFT (power-of-two `n`), or why not.
fn launch_irfft(re: CubeTensor, im: CubeTensor, n: usize) -> Result<CubeTensor, Unsupported> {
    if re.shape().num_elements() == 0 {
        return Err(Unsupported::Empty);
    }
    fft_length(n)?;
    let r = re.shape().num_dims() - 1;
    Ok(Cb::irfft(re, im, r, Some(n)))
}

/// [`crate::SsmOps::causal_conv_fft`] on Burn's CubeCL FFT, zero-padded to the power of two
/// ≥ 2L.
pub(crate) fn causal_conv_fft(u: CubeTensor, k: CubeTensor) -> CubeTensor {
    let dims = u.shape().to_vec();
    let l = dims[2];
    if u.shape().num_elements() == 0 {
        return u;
    }
    let n = (2 * l).next_power_of_two();
    let (ur, ui) = Cb::rfft(fit_last::<Cb>(u, n), 2, Some(n));
    let (kr, ki) = Cb::rfft(fit_last::<Cb>(k, n), 2, Some(n));
    let yr = Cb::float_sub(
        Cb::float_mul(ur.clone(), kr.clone()),
        Cb::float_mul(ui.clone(), ki.clone()),
    );
    let yi = Cb::float_add(Cb::float_mul(ur, ki), Cb::float_mul(ui, kr));
    P::<Cb>::new(Cb::irfft(yr, yi, 2, Some(n)))
        .narrow(2, 0, l)
        .into_inner()
}
