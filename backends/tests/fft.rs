//! The FFT ops (rfft, irfft, FFT causal convolution) on every backend built: values against a
//! float64 DFT and direct sum, gradients against autodiff through the DFT-matrix and Toeplitz
//! forms.

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use ssm_backends::testing::{TestRng, assert_rel};
use ssm_backends::to_vec;
use ssm_backends::{causal_conv_fft, causal_conv_reference, irfft, rfft};
use std::f64::consts::PI;

fn devices() -> Vec<Device> {
    let mut all = vec![Device::flex()];
    #[cfg(feature = "ndarray")]
    all.push(Device::ndarray());
    #[cfg(feature = "wgpu")]
    all.extend(ssm_backends::testing::wgpu_test_device());
    all
}

/// Bounds relative to each tensor's own scale (its largest magnitude), one per kind of tensor:
/// 4x the largest error measured on Flex, 10x on wgpu (lavapipe), rounded up to 1, 2 or 5
/// times a power of ten (at least 1e-6 and 2e-6).
struct Bounds {
    /// rfft's real and imaginary parts against the float64 DFT.
    rfft: f64,
    /// irfft against the float64 inverse DFT.
    irfft: f64,
    /// The FFT convolution against the float64 direct sum.
    conv: f64,
    /// dx, dre, dim of rfft/irfft against autodiff through the DFT matrices.
    dft_grads: f64,
    /// du, dk of the FFT convolution against autodiff through the Toeplitz form.
    conv_grads: f64,
    /// rfftn's real and imaginary parts (2-D and 3-D) against the float64 DFT.
    rfftn: f64,
    /// irfftn(rfftn(x)) against x zero-padded or truncated (2-D and 3-D).
    irfftn: f64,
    /// ifft(fft(z)) against z.
    round_trip: f64,
    /// The gradient through rfftn/irfftn against its closed form.
    rfftn_grad: f64,
}

/// Flex (and ndarray: the CPU backends run the same rustfft code).
const FLEX: Bounds = Bounds {
    rfft: 1e-6,       // measured 1.5e-7
    irfft: 1e-6,      // measured 1.0e-7
    conv: 1e-6,       // measured 2.1e-7
    dft_grads: 1e-6,  // measured 1.2e-7
    conv_grads: 2e-6, // measured 3.8e-7
    rfftn: 1e-6,      // measured 1.4e-7
    irfftn: 1e-6,     // measured 1.4e-7
    round_trip: 1e-6, // measured 1.2e-7
    rfftn_grad: 1e-6, // measured 1.3e-7
};

/// wgpu (lavapipe).
const WGPU: Bounds = Bounds {
    rfft: 5e-6,       // measured 4.2e-7
    irfft: 2e-6,      // measured 1.7e-7
    conv: 5e-6,       // measured 3.8e-7
    dft_grads: 2e-6,  // measured 1.7e-7
    conv_grads: 5e-6, // measured 4.3e-7
    rfftn: 2e-6,      // measured 1.6e-7
    irfftn: 2e-6,     // measured 1.4e-7
    round_trip: 2e-6, // measured 1.8e-7
    rfftn_grad: 5e-6, // measured 2.2e-7
};

fn bounds(device: &Device) -> &'static Bounds {
    if format!("{device:?}").contains("Cube") {
        &WGPU
    } else {
        &FLEX
    }
}

fn host(t: Tensor<2>) -> Vec<f64> {
    to_vec(t).into_iter().map(f64::from).collect()
}

/// The float64 one-sided DFT of each row of `x` (rows, m), zero-padded or truncated to `n`.
fn dft_f64(x: &[f64], rows: usize, m: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
    let bins = n / 2 + 1;
    let (mut re, mut im) = (vec![0.0; rows * bins], vec![0.0; rows * bins]);
    for r in 0..rows {
        for k in 0..bins {
            for l in 0..m.min(n) {
                let a = 2.0 * PI * (k * l) as f64 / n as f64;
                re[r * bins + k] += x[r * m + l] * a.cos();
                im[r * bins + k] -= x[r * m + l] * a.sin();
            }
        }
    }
    (re, im)
}

/// The float64 inverse real DFT (imaginary parts of the DC and Nyquist bins ignored).
fn idft_f64(re: &[f64], im: &[f64], rows: usize, n: usize) -> Vec<f64> {
    let bins = n / 2 + 1;
    let mut y = vec![0.0; rows * n];
    for r in 0..rows {
        for l in 0..n {
            for k in 0..bins {
                let c = if k == 0 || 2 * k == n { 1.0 } else { 2.0 };
                let a = 2.0 * PI * (k * l) as f64 / n as f64;
                y[r * n + l] +=
                    c * (re[r * bins + k] * a.cos() - im[r * bins + k] * a.sin()) / n as f64;
            }
        }
    }
    y
}

#[test]
fn rfft_and_irfft_match_the_float64_dft_at_any_length() {
    for device in devices() {
        let mut rng = TestRng::new(7);
        // (input width m, transform length n): equal, padded, truncated; odd, even, powers of two.
        for (m, n) in [
            (1, 1),
            (8, 8),
            (5, 8),
            (12, 12),
            (45, 45),
            (50, 45),
            (64, 128),
            (100, 100),
        ] {
            let x = rng.tensor::<2>([3, m], Distribution::Normal(0.0, 1.0), &device);
            let xs = host(x.clone());
            let (re, im) = rfft(x, n);
            let (want_re, want_im) = dft_f64(&xs, 3, m, n);
            let (got_re, got_im) = (host(re), host(im));
            assert_rel(
                &format!("{device:?} rfft m {m} n {n}: re"),
                &got_re,
                &want_re,
                bounds(&device).rfft,
            );
            assert_rel(
                &format!("{device:?} rfft m {m} n {n}: im"),
                &got_im,
                &want_im,
                bounds(&device).rfft,
            );

            let bins = n / 2 + 1;
            let sr = rng.tensor::<2>([2, bins], Distribution::Normal(0.0, 1.0), &device);
            let si = rng.tensor::<2>([2, bins], Distribution::Normal(0.0, 1.0), &device);
            let want = idft_f64(&host(sr.clone()), &host(si.clone()), 2, n);
            assert_rel(
                &format!("{device:?} irfft n {n}"),
                &host(irfft(sr, si, n)),
                &want,
                bounds(&device).irfft,
            );
        }
    }
}

#[test]
fn fft_convolution_matches_the_float64_direct_sum() {
    for device in devices() {
        let mut rng = TestRng::new(8);
        for l in [1, 2, 37, 129, 200, 513] {
            let (b, h) = (3, 2);
            let u = rng.tensor::<3>([b, h, l], Distribution::Normal(0.0, 1.0), &device);
            let k = rng.tensor::<2>([h, l], Distribution::Normal(0.0, 1.0), &device);
            let (us, ks) = (to_vec(u.clone()), to_vec(k.clone()));
            let mut want = vec![0f64; b * h * l];
            for i in 0..b {
                for c in 0..h {
                    for t in 0..l {
                        want[(i * h + c) * l + t] = (0..=t)
                            .map(|j| ks[c * l + j] as f64 * us[(i * h + c) * l + t - j] as f64)
                            .sum();
                    }
                }
            }
            let got: Vec<f64> = to_vec(causal_conv_fft(u, k))
                .into_iter()
                .map(f64::from)
                .collect();
            assert_rel(
                &format!("{device:?} L {l}"),
                &got,
                &want,
                bounds(&device).conv,
            );
        }
    }
}

/// The (n, bins) DFT matrices for the reference forms, scaled per bin.
fn dft_mats(n: usize, w: impl Fn(usize) -> f64, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let bins = n / 2 + 1;
    let (mut c, mut s) = (vec![0f32; n * bins], vec![0f32; n * bins]);
    for l in 0..n {
        for k in 0..bins {
            let a = 2.0 * PI * (k * l) as f64 / n as f64;
            c[l * bins + k] = (a.cos() * w(k)) as f32;
            s[l * bins + k] = (a.sin() * w(k)) as f32;
        }
    }
    (
        Tensor::from_data(TensorData::new(c, [n, bins]), device),
        Tensor::from_data(TensorData::new(s, [n, bins]), device),
    )
}

#[test]
fn gradients_match_autodiff_through_the_dft_and_toeplitz_forms() {
    for base in devices() {
        let mut rng = TestRng::new(9);
        // Lavapipe compiles a kernel set per shape (seconds each): fewer cases on wgpu, still
        // one power-of-two (Burn's FFT) and one other length (DFT body) and the long conv.
        let gpu = format!("{base:?}").contains("Cube");
        let device = base.clone().autodiff();
        let spectra: &[(usize, usize)] = if gpu {
            &[(5, 8), (9, 7)]
        } else {
            &[(6, 6), (5, 8), (9, 7), (16, 16)]
        };
        for &(m, n) in spectra {
            let bins = n / 2 + 1;
            let mut data = |dims: [usize; 2]| {
                rng.tensor::<2>(dims, Distribution::Normal(0.0, 1.0), &device)
                    .into_data()
            };
            let (xd, wre, wim) = (data([2, m]), data([2, bins]), data([2, bins]));
            let (sre, sim, wy) = (data([2, bins]), data([2, bins]), data([2, n]));
            let run = |reference: bool| {
                let t = |d: &TensorData| Tensor::<2>::from_data(d.clone(), &device).require_grad();
                let (x, sr, si) = (t(&xd), t(&sre), t(&sim));
                let c = |d: &TensorData| Tensor::<2>::from_data(d.clone(), &device);
                let (re, im, y) = if reference {
                    let (cf, sf) = dft_mats(n, |_| 1.0, &device);
                    let xp = if m >= n {
                        x.clone().narrow(1, 0, n)
                    } else {
                        Tensor::cat(vec![x.clone(), Tensor::zeros([2, n - m], &device)], 1)
                    };
                    let w = |k: usize| if k == 0 || 2 * k == n { 1.0 } else { 2.0 } / n as f64;
                    let (ci, si_) = dft_mats(n, w, &device);
                    (
                        xp.clone().matmul(cf),
                        xp.matmul(sf).neg(),
                        sr.clone().matmul(ci.transpose()) - si.clone().matmul(si_.transpose()),
                    )
                } else {
                    let (re, im) = rfft(x.clone(), n);
                    (re, im, irfft(sr.clone(), si.clone(), n))
                };
                let loss = (re * c(&wre)).sum() + (im * c(&wim)).sum() + (y * c(&wy)).sum();
                let g = loss.backward();
                [x, sr, si].map(|p| to_vec(p.grad(&g).expect("gradient")))
            };
            let (ours, reference) = (run(false), run(true));
            for (name, (a, b)) in ["x", "re", "im"].iter().zip(ours.iter().zip(&reference)) {
                let tol = bounds(&base).dft_grads;
                assert_rel(&format!("{base:?} m {m} n {n} d{name}"), a, b, tol);
            }
        }
        // The convolution: du and dk (kernel shared over the batch), at a short and a long L.
        let lengths: &[usize] = if gpu { &[150] } else { &[5, 150] };
        for &l in lengths {
            let ud = rng
                .tensor::<3>([3, 2, l], Distribution::Normal(0.0, 1.0), &device)
                .into_data();
            let kd = rng
                .tensor::<2>([2, l], Distribution::Normal(0.0, 1.0), &device)
                .into_data();
            let wd = rng
                .tensor::<3>([3, 2, l], Distribution::Normal(0.0, 1.0), &device)
                .into_data();
            let run = |reference: bool| {
                let u = Tensor::<3>::from_data(ud.clone(), &device).require_grad();
                let k = Tensor::<2>::from_data(kd.clone(), &device).require_grad();
                let y = if reference {
                    causal_conv_reference(u.clone(), k.clone())
                } else {
                    causal_conv_fft(u.clone(), k.clone())
                };
                let g = (y * Tensor::<3>::from_data(wd.clone(), &device))
                    .sum()
                    .backward();
                (
                    to_vec(u.grad(&g).expect("du")),
                    to_vec(k.grad(&g).expect("dk")),
                )
            };
            let ((du, dk), (du_ref, dk_ref)) = (run(false), run(true));
            let tol = bounds(&base).conv_grads;
            assert_rel(&format!("{base:?} conv L {l}: du"), &du, &du_ref, tol);
            assert_rel(&format!("{base:?} conv L {l}: dk"), &dk, &dk_ref, tol);
        }
    }
}

/// The float64 N-D DFT of `x` (shape `dims`, the last `sizes.len()` axes transformed, each
/// zero-padded or truncated to its size), one-sided along the last axis: (re, im) in the
/// row-major order of the output shape.
fn dftn_f64(x: &[f64], dims: &[usize], sizes: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let k = sizes.len();
    let lead: usize = dims[..dims.len() - k].iter().product();
    let in_dims = &dims[dims.len() - k..];
    let mut out_dims = sizes.to_vec();
    *out_dims.last_mut().unwrap() = sizes[k - 1] / 2 + 1;
    let in_len: usize = in_dims.iter().product();
    let out_len: usize = out_dims.iter().product();
    let unravel = |mut i: usize, shape: &[usize]| {
        let mut idx = vec![0; shape.len()];
        for a in (0..shape.len()).rev() {
            idx[a] = i % shape[a];
            i /= shape[a];
        }
        idx
    };
    let (mut re, mut im) = (vec![0.0; lead * out_len], vec![0.0; lead * out_len]);
    for r in 0..lead {
        for o in 0..out_len {
            let kk = unravel(o, &out_dims);
            for i in 0..in_len {
                let ll = unravel(i, in_dims);
                if ll.iter().zip(sizes).any(|(l, n)| l >= n) {
                    continue; // truncated away
                }
                let ang: f64 = (0..k)
                    .map(|a| 2.0 * PI * ((kk[a] * ll[a]) % sizes[a]) as f64 / sizes[a] as f64)
                    .sum();
                re[r * out_len + o] += x[r * in_len + i] * ang.cos();
                im[r * out_len + o] -= x[r * in_len + i] * ang.sin();
            }
        }
    }
    (re, im)
}

fn host_n<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    to_vec(t).into_iter().map(f64::from).collect()
}

#[test]
fn rfftn_and_irfftn_match_the_float64_dft_in_two_and_three_dimensions() {
    use ssm_backends::{irfftn, rfftn};
    for device in devices() {
        let mut rng = TestRng::new(11);
        // 2-D: padded, truncated, odd and even sizes, powers of two.
        for (m, sizes) in [
            ([4, 6], [8, 12]),
            ([5, 7], [5, 7]),
            ([8, 8], [16, 16]),
            ([9, 6], [6, 9]),
        ] {
            let x = rng.tensor::<4>([2, 3, m[0], m[1]], Distribution::Normal(0.0, 1.0), &device);
            let xs = host_n(x.clone());
            let (re, im) = rfftn(x.clone(), &sizes);
            assert_eq!(re.dims(), [2, 3, sizes[0], sizes[1] / 2 + 1]);
            let (want_re, want_im) = dftn_f64(&xs, &[2, 3, m[0], m[1]], &sizes);
            assert_rel(
                &format!("{device:?} rfftn {m:?} -> {sizes:?}: re"),
                &host_n(re.clone()),
                &want_re,
                bounds(&device).rfftn,
            );
            assert_rel(
                &format!("{device:?} rfftn {m:?} -> {sizes:?}: im"),
                &host_n(im.clone()),
                &want_im,
                bounds(&device).rfftn,
            );
            // Back: the input zero-padded or truncated to the sizes.
            let back = irfftn(re, im, &sizes);
            let fitted: Vec<f64> = {
                let b = host_n(back.clone());
                assert_eq!(back.dims(), [2, 3, sizes[0], sizes[1]]);
                b
            };
            // In the order of `fitted`: (r, i, j) at (r * sizes[0] + i) * sizes[1] + j.
            let mut want = Vec::with_capacity(fitted.len());
            for r in 0..6 {
                for i in 0..sizes[0] {
                    for j in 0..sizes[1] {
                        want.push(if i < m[0] && j < m[1] {
                            xs[(r * m[0] + i) * m[1] + j]
                        } else {
                            0.0
                        });
                    }
                }
            }
            assert_rel(
                &format!("{device:?} irfftn {sizes:?}"),
                &fitted,
                &want,
                bounds(&device).irfftn,
            );
        }
        // 3-D, and 1-D (the real FFT itself).
        let x = rng.tensor::<5>([1, 2, 3, 4, 5], Distribution::Normal(0.0, 1.0), &device);
        let sizes = [4, 4, 6];
        let (re, im) = rfftn(x.clone(), &sizes);
        let (want_re, want_im) = dftn_f64(&host_n(x.clone()), &[1, 2, 3, 4, 5], &sizes);
        assert_rel(
            &format!("{device:?} rfftn 3-D: re"),
            &host_n(re.clone()),
            &want_re,
            bounds(&device).rfftn,
        );
        assert_rel(
            &format!("{device:?} rfftn 3-D: im"),
            &host_n(im.clone()),
            &want_im,
            bounds(&device).rfftn,
        );
        let back = irfftn(re, im, &sizes);
        let want = Tensor::cat(vec![x, Tensor::zeros([1, 2, 1, 4, 5], &device)], 2);
        let want = Tensor::cat(vec![want, Tensor::zeros([1, 2, 4, 4, 1], &device)], 4);
        assert_rel(
            &format!("{device:?} irfftn 3-D"),
            &host_n(back),
            &host_n(want),
            bounds(&device).irfftn,
        );
        let y = rng.tensor::<3>([2, 3, 7], Distribution::Normal(0.0, 1.0), &device);
        let (r1, i1) = rfftn(y.clone(), &[7]);
        let (r2, i2) = rfft(y, 7);
        assert_eq!(host_n(r1), host_n(r2));
        assert_eq!(host_n(i1), host_n(i2));
    }
}

#[test]
fn fft_and_ifft_round_trip_and_gradients_flow_through_rfftn() {
    use ssm_backends::{fft, ifft, irfftn, rfftn};
    for device in devices() {
        let mut rng = TestRng::new(3);
        let re = rng.tensor::<3>([2, 5, 3], Distribution::Normal(0.0, 1.0), &device);
        let im = rng.tensor::<3>([2, 5, 3], Distribution::Normal(0.0, 1.0), &device);
        let (fr, fi) = fft(re.clone(), im.clone(), 1, 5);
        let (br, bi) = ifft(fr, fi, 1, 5);
        assert_rel(
            &format!("{device:?} ifft(fft(z)): re"),
            &host_n(br),
            &host_n(re),
            bounds(&device).round_trip,
        );
        assert_rel(
            &format!("{device:?} ifft(fft(z)): im"),
            &host_n(bi),
            &host_n(im),
            bounds(&device).round_trip,
        );

        // d/dx Σ w ⊙ irfftn(rfftn(x, s), s) = w on the input's extent (the round trip is the
        // identity there).
        let ad = device.clone().autodiff();
        let x = rng
            .tensor::<4>([1, 2, 3, 5], Distribution::Normal(0.0, 1.0), &ad)
            .require_grad();
        let w = rng.tensor::<4>([1, 2, 6, 8], Distribution::Normal(0.0, 1.0), &ad);
        let (r, i) = rfftn(x.clone(), &[6, 8]);
        let y = irfftn(r, i, &[6, 8]);
        let grads = (y * w.clone()).sum().backward();
        let g = x.grad(&grads).expect("x has a gradient");
        let want = w.inner().narrow(2, 0, 3).narrow(3, 0, 5);
        assert_rel(
            &format!("{device:?} gradient through rfftn/irfftn"),
            &host_n(g),
            &host_n(want),
            bounds(&device).rfftn_grad,
        );
    }
}
