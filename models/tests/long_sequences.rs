//! The S4D layer at L = 65,536 with steps up to 1.0 (`dt_max` 1.0) on Flex and wgpu: its
//! Vandermonde kernel decays to exact zeros far out (exp of large negative numbers) and its
//! phases reach tens of thousands of radians. The SSM output (`K * u + D u`, the FFT
//! convolution over all 65,536 steps) is checked on windows at the start and at the end against
//! the layer's own discretised system run as a float64 recurrence on the host.

use burn::tensor::{Device, Distribution};
use ssm_backends::testing::{TestRng, assert_finite, assert_rel, seeded};
use ssm_backends::to_vec;
use ssm_models::ssm::s4d::{S4D, S4DConfig, S4DKernelConfig};

const LEN: usize = 65_536;
const WINDOW: usize = 512;

/// The SSM output `y_t = 2 Re Σ_n Cd_n s_{n,t} + D u_t`, `s_{n,t} = dA_n s_{n,t-1} + u_t` (ZOH:
/// `dA = exp(Δ A)`, `Cd = C (dA - 1) / A`), in float64 from the layer's float32 parameters,
/// for one row `u` (H, L) laid out channel-major.
fn ssm_f64(layer: &S4D, u: &[f32]) -> Vec<f64> {
    let f64s = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
    let log_dt = f64s(to_vec(layer.kernel.log_dt.val()));
    let c = f64s(to_vec(layer.kernel.C.val()));
    let log_a_re = f64s(to_vec(layer.kernel.log_A_real.val()));
    let a_im = f64s(to_vec(layer.kernel.A_imag.val()));
    let d = f64s(to_vec(layer.D.val()));
    let (h, modes) = (log_dt.len(), a_im.len() / log_dt.len());
    let mut y = vec![0.0; h * LEN];
    for ch in 0..h {
        let dt = log_dt[ch].exp();
        let mut coef = Vec::with_capacity(modes);
        for n in 0..modes {
            let (a_re, a_im) = (-log_a_re[ch * modes + n].exp(), a_im[ch * modes + n]);
            let mag = (dt * a_re).exp();
            let (da_re, da_im) = (mag * (dt * a_im).cos(), mag * (dt * a_im).sin());
            // (dA - 1) / A, then times C.
            let den = a_re * a_re + a_im * a_im;
            let (num_re, num_im) = (da_re - 1.0, da_im);
            let (b_re, b_im) = (
                (num_re * a_re + num_im * a_im) / den,
                (num_im * a_re - num_re * a_im) / den,
            );
            let (c_re, c_im) = (c[(ch * modes + n) * 2], c[(ch * modes + n) * 2 + 1]);
            coef.push((
                da_re,
                da_im,
                c_re * b_re - c_im * b_im,
                c_re * b_im + c_im * b_re,
            ));
        }
        let mut state = vec![(0.0f64, 0.0f64); modes];
        for t in 0..LEN {
            let x = f64::from(u[ch * LEN + t]);
            let mut acc = 0.0;
            for (s, &(da_re, da_im, cd_re, cd_im)) in state.iter_mut().zip(&coef) {
                *s = (da_re * s.0 - da_im * s.1 + x, da_re * s.1 + da_im * s.0);
                acc += cd_re * s.0 - cd_im * s.1;
            }
            y[ch * LEN + t] = 2.0 * acc + d[ch] * x;
        }
    }
    y
}

#[test]
fn s4d_at_65536_steps_with_large_steps_equals_a_float64_recurrence() {
    // Measured on both windows: 4.5e-7, 5.0e-7 (Flex); 1.0e-6, 1.0e-6 (wgpu).
    let mut devices = vec![(Device::flex(), 2e-6)];
    devices.extend(ssm_backends::testing::wgpu_test_device().map(|d| (d, 1e-5)));
    for (device, tol) in devices {
        let layer = {
            let _seed = seeded(&device, 4);
            S4DConfig::new(
                S4DKernelConfig::new(4)
                    .with_d_state(16)
                    .with_dt_min(0.1)
                    .with_dt_max(1.0),
            )
            .init(&device)
        };
        let u = TestRng::new(4).tensor::<3>([1, 4, LEN], Distribution::Normal(0.0, 1.0), &device);
        let u_host = to_vec(u.clone());
        let got = to_vec(layer.ssm(u.clone()));
        let want = ssm_f64(&layer, &u_host);
        let h = 4;
        for (name, start) in [("first", 0), ("last", LEN - WINDOW)] {
            let pick = |v: &dyn Fn(usize) -> f64| {
                (0..h)
                    .flat_map(|ch| (start..start + WINDOW).map(move |t| ch * LEN + t))
                    .map(v)
                    .collect::<Vec<f64>>()
            };
            assert_rel(
                &format!("{device:?}: SSM output, {name} {WINDOW} steps"),
                &pick(&|i| f64::from(got[i])),
                &pick(&|i| want[i]),
                tol,
            );
        }
        assert_finite(&format!("{device:?}: outputs"), &to_vec(layer.forward(u)));
        let k = to_vec(layer.kernel.kernel(LEN));
        assert_finite(&format!("{device:?}: kernel"), &k);
    }
}
