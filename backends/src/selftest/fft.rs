//! The real FFTs and the FFT causal convolution (the long convolutions of the S4 family) against
//! their portable bodies: the DFT matrices and the direct sum. Power-of-two transform lengths:
//! the GPU's FFT kernels take those (other lengths run the DFT matrix and say so).

use super::{CpuKernel, Kernels, Suite, host};
use crate::fft::reference::{irfft_dft, rfft_dft};
use burn::backend::Dispatch;
use burn::tensor::Tensor;

const FFT: Kernels = Kernels {
    gpu: &["fft"],
    cpu: Some(CpuKernel::Fft),
};

pub(super) fn checks(s: &mut Suite<'_>) {
    // (input width, transform length): padded and exact.
    for (m, n) in [(200, 256), (1024, 1024)] {
        let x = s.normal([3, m]);
        s.check(
            "rfft",
            format!("rows 3 width {m} n {n}"),
            FFT,
            &[("re", 1e-5), ("im", 1e-5)],
            || {
                let (re, im) = rfft_dft::<Dispatch>(x.clone().into_dispatch(), n);
                vec![
                    host(Tensor::<2>::from_dispatch(re)),
                    host(Tensor::<2>::from_dispatch(im)),
                ]
            },
            || {
                let (re, im) = crate::rfft(x.clone(), n);
                vec![host(re), host(im)]
            },
        );
        let bins = n / 2 + 1;
        let (re, im) = (s.normal([2, bins]), s.normal([2, bins]));
        s.check(
            "irfft",
            format!("rows 2 n {n}"),
            FFT,
            &[("x", 1e-5)],
            || {
                let y = irfft_dft::<Dispatch>(
                    re.clone().into_dispatch(),
                    im.clone().into_dispatch(),
                    n,
                );
                vec![host(Tensor::<2>::from_dispatch(y))]
            },
            || vec![host(crate::irfft(re.clone(), im.clone(), n))],
        );
    }
    // L = 513 pads to a transform of 2,048 points on the GPU.
    for l in [200, 513] {
        let (b, h) = (3, 2);
        let u = s.normal([b, h, l]);
        let k = s.normal([h, l]);
        s.check(
            "fft convolution",
            format!("B {b} H {h} L {l}"),
            FFT,
            &[("y", 1e-5)],
            || vec![host(crate::causal_conv_reference(u.clone(), k.clone()))],
            || vec![host(crate::causal_conv_fft(u.clone(), k.clone()))],
        );
    }
}
