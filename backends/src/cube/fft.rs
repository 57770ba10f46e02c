//! Real FFTs and the FFT causal convolution on Burn's CubeCL FFT kernels, which take
//! power-of-two lengths (the convolution pads to one).

use super::buffers::Cb;
use super::fallback::Unsupported;
use crate::portable::fft::fit_last;
use crate::portable::prim::P;
use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::signal::SignalOps;
use burn_cubecl::tensor::CubeTensor;

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
pub(crate) fn rfft(x: CubeTensor, n: usize) -> Result<(CubeTensor, CubeTensor), Unsupported> {
    if x.shape().num_elements() == 0 {
        return Err(Unsupported::Empty);
    }
    fft_length(n)?;
    let r = x.shape().num_dims() - 1;
    Ok(Cb::rfft(fit_last::<Cb>(x, n), r, Some(n)))
}

/// The irfft on Burn's CubeCL FFT (power-of-two `n`), or why not.
pub(crate) fn irfft(re: CubeTensor, im: CubeTensor, n: usize) -> Result<CubeTensor, Unsupported> {
    if re.shape().num_elements() == 0 {
        return Err(Unsupported::Empty);
    }
    fft_length(n)?;
    let r = re.shape().num_dims() - 1;
    Ok(Cb::irfft(re, im, r, Some(n)))
}

/// The FFT causal convolution on Burn's CubeCL FFT, zero-padded to the power of two ≥ 2L.
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
