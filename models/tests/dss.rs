//! DSS: both kernels against their published formulas in float64 (including a mode with
//! positive real part for DSS-softmax), and the DSS-exp recurrent step against the convolution.

use burn::module::Param;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use ssm_backends::testing::{TestRng, assert_finite, assert_rel, seeded};
use ssm_backends::to_vec;
use ssm_models::ssm::dss::{DSSConfig, DSSKernel};

type C = (f64, f64);
fn mul(a: C, b: C) -> C {
    (a.0 * b.0 - a.1 * b.1, a.0 * b.1 + a.1 * b.0)
}
fn div(a: C, b: C) -> C {
    let d = b.0 * b.0 + b.1 * b.1;
    ((a.0 * b.0 + a.1 * b.1) / d, (a.1 * b.0 - a.0 * b.1) / d)
}
fn exp(a: C) -> C {
    let m = a.0.exp();
    (m * a.1.cos(), m * a.1.sin())
}

/// The kernel from the paper's formulas in float64 (without the reference's ε).
fn kernel_f64(k: &DSSKernel, len: usize) -> Vec<f64> {
    let v = |t: Tensor<1>| to_vec(t).into_iter().map(f64::from).collect::<Vec<_>>();
    let l = k.lambda();
    let (lre, lim) = (v(l.re), v(l.im));
    let log_dt: Vec<f64> = to_vec(k.log_dt.val()).into_iter().map(f64::from).collect();
    let w: Vec<f64> = to_vec(k.W.val()).into_iter().map(f64::from).collect();
    let n = lre.len();
    let h = w.len() / (2 * n);
    let cols = log_dt.len() / h;
    let mut out = vec![0.0; h * len];
    for ch in 0..h {
        let (dre, dim) = (log_dt[ch * cols].exp(), log_dt[ch * cols + cols - 1].exp());
        for m in 0..n {
            let lam = (lre[m], lim[m]);
            let x = (lam.0 * dre, lam.1 * dim);
            let wc = (w[(ch * n + m) * 2], w[(ch * n + m) * 2 + 1]);
            let em1 = {
                let e = exp(x);
                (e.0 - 1.0, e.1)
            };
            let scale = if k.is_softmax() {
                let el = exp((x.0 * len as f64, x.1 * len as f64));
                div(em1, mul((el.0 - 1.0, el.1), lam))
            } else {
                div(em1, lam)
            };
            let wd = mul(wc, scale);
            for t in 0..len {
                let p = exp((x.0 * t as f64, x.1 * t as f64));
                out[ch * len + t] += mul(wd, p).0;
            }
        }
    }
    out
}

#[test]
fn kernels_match_the_float64_formulas() {
    let device = Device::flex();
    // Measured 4.1e-7, 4.1e-7, 6.1e-7 (Flex).
    for (softmax, sep, tol) in [
        (false, true, 2e-6),
        (false, false, 2e-6),
        (true, true, 5e-6),
    ] {
        let layer = {
            let _seed = seeded(&device, 51);
            DSSConfig::new(3)
                .with_d_state(8)
                .with_softmax(softmax)
                .with_sep_dt_re_im(sep)
                .init(&device)
        };
        let want: Vec<f32> = kernel_f64(&layer.kernel, 100)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        assert_rel(
            &format!("softmax {softmax} sep {sep}: kernel"),
            &to_vec(layer.kernel.kernel(100)),
            &want,
            tol,
        );
    }
}

#[test]
fn softmax_handles_a_growing_mode() {
    let device = Device::flex();
    let mut layer = {
        let _seed = seeded(&device, 52);
        DSSConfig::new(2)
            .with_d_state(4)
            .with_softmax(true)
            .init(&device)
    };
    // Mode 0 with Re Λ = +0.3: exp(dtΛ l) grows; the normalised kernel stays finite.
    let mut l = to_vec(layer.kernel.Lambda.as_ref().unwrap().val());
    l[0] = 0.3;
    layer.kernel.Lambda = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(l, [4, 2]),
        &device,
    )));
    let got = to_vec(layer.kernel.kernel(300));
    assert_finite("growing mode: kernel", &got);
    let want: Vec<f32> = kernel_f64(&layer.kernel, 300)
        .into_iter()
        .map(|x| x as f32)
        .collect();
    // Measured 1.7e-5 (Flex): 8.2e-8 off on a kernel of scale 4.8e-3.
    assert_rel("growing mode: kernel", &got, &want, 1e-4);
}

#[test]
fn exp_steps_match_the_convolution() {
    let device = Device::flex();
    let layer = {
        let _seed = seeded(&device, 53);
        DSSConfig::new(4).with_d_state(8).init(&device)
    };
    let mut rng = TestRng::new(53);
    let u = rng.tensor::<3>([2, 4, 40], Distribution::Normal(0.0, 1.0), &device);
    let want = to_vec(layer.forward(u.clone()));
    let rec = layer.kernel.recurrence();
    let mut state = rec.zero_state(2);
    let mut got = Vec::new();
    for t in 0..40 {
        let (y, s) = layer.step(u.clone().narrow(2, t, 1).squeeze_dim::<2>(2), &rec, state);
        state = s;
        got.push(y.unsqueeze_dim::<3>(2));
    }
    // Measured 8.6e-8 (Flex).
    assert_rel("step vs conv", &to_vec(Tensor::cat(got, 2)), &want, 1e-6);
}
