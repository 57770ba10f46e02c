//! The S4 family's convolution kernels against their portable bodies: the Vandermonde kernel
//! of S4D and DSS (S4D-Lin's ZOH exponents, L 1,024 and 4,096, and modes measured from the far
//! end as DSS-softmax's growing ones are) and the Cauchy sums of S4's DPLR kernel at the roots
//! of unity (a CPU kernel only: the GPUs run its portable body, so there is nothing to check).

use super::{CpuKernel, Kernels, Suite, host};
use burn::tensor::{Tensor, TensorData};

const VANDERMONDE: Kernels = Kernels {
    gpu: &["vandermonde_kernel"],
    cpu: Some(CpuKernel::Vandermonde),
};

const CAUCHY: Kernels = Kernels {
    gpu: &[],
    cpu: Some(CpuKernel::Cauchy),
};

pub(super) fn checks(s: &mut Suite<'_>) {
    // The CPU kernel sums in f64, so its gap to the f32 body is the body's own error (4.5e-6
    // measured at L 1,024); the GPU kernel computes as the body does (1.7e-7).
    let bound = if s.gpu() { 1e-6 } else { 2e-5 };
    let (h, n) = (4, 32);
    for (len, from_end) in [(1024, false), (4096, false), (1024, true)] {
        let dt = s.uniform([h, 1], 1e-3f64.ln(), 1e-1f64.ln()).exp();
        let freq: Vec<f32> = (0..h * n)
            .map(|i| std::f32::consts::PI * (i % n) as f32)
            .collect();
        let a_im = Tensor::<2>::from_data(TensorData::new(freq, [h, n]), &s.device);
        // Growing modes (Re z > 0) measured from l = L − 1, as DSS-softmax's are.
        let sign = if from_end { 0.5 } else { -0.5 };
        let z = ((dt.clone() * sign).expand([h, n]), a_im * dt);
        let shift = from_end.then(|| Tensor::<2>::full([h, n], (len - 1) as f32, &s.device));
        let c = (s.normal([h, n]), s.normal([h, n]));
        let what = if from_end { ", from the end" } else { "" };
        s.check(
            format!("vandermonde kernel{what}"),
            format!("H {h} N {n} L {len}"),
            VANDERMONDE,
            &[("K", bound)],
            || {
                let k = crate::vandermonde_reference(c.clone(), z.clone(), shift.clone(), len);
                vec![host(k)]
            },
            || {
                vec![host(crate::vandermonde(
                    c.clone(),
                    z.clone(),
                    shift.clone(),
                    len,
                ))]
            },
        );
    }
    // S4's four Cauchy sums at the 513 roots of L = 1,024: nodes i 2 tan(π k / L) / Δ.
    let (m, n, len) = (4, 64, 1024);
    let bins = len / 2 + 1;
    let tan: Vec<f32> = (0..h * bins)
        .map(|i| {
            let t = (std::f64::consts::PI * (i % bins) as f64 / len as f64)
                .tan()
                .min(1e10);
            (200.0 * t) as f32
        })
        .collect();
    let w = (
        Tensor::<2>::zeros([h, bins], &s.device),
        Tensor::<2>::from_data(TensorData::new(tan, [h, bins]), &s.device),
    );
    let v = (s.normal([h, m, n]), s.normal([h, m, n]));
    let l = (
        s.uniform([h, n], -1.0, -0.1),
        s.uniform([h, n], -64.0, 64.0),
    );
    s.check(
        "cauchy sums",
        format!("H {h} M {m} N {n} K {bins}"),
        CAUCHY,
        // The f32 body's own error: 4.9e-7 measured (backends/tests/cauchy.rs).
        &[("re", 2e-6), ("im", 2e-6)],
        || {
            let (re, im) = crate::cauchy_reference(v.clone(), w.clone(), l.clone());
            vec![host(re), host(im)]
        },
        || {
            let (re, im) = crate::cauchy(v.clone(), w.clone(), l.clone());
            vec![host(re), host(im)]
        },
    );
}
