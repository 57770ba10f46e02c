//! S4 (DPLR): the kernel from the Cauchy/Woodbury generating function against the dense
//! bilinear recurrence (the recurrent step), for HiPPO-LegS at several lengths.

use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::testing::{TestRng, assert_rel, gap, seeded};
use ssm_backends::to_vec;
use ssm_models::ssm::s4::S4Config;

#[test]
fn steps_match_the_dplr_convolution() {
    let device = Device::flex();
    let mut rng = TestRng::new(61);
    for (n, len) in [(8, 16), (16, 37)] {
        let layer = {
            let _seed = seeded(&device, 61);
            S4Config::new(3).with_d_state(n).init(&device)
        };
        let u = rng.tensor::<3>([2, 3, len], Distribution::Normal(0.0, 1.0), &device);
        let want = to_vec(layer.ssm(u.clone()));
        let rec = layer.kernel.recurrence(len);
        let mut state = rec.zero_state(2);
        let mut got = Vec::new();
        for t in 0..len {
            let ut = u.clone().narrow(2, t, 1).squeeze_dim::<2>(2);
            let (y, s) = rec.step(ut.clone(), state);
            state = s;
            got.push((y + ut * layer.D.val().unsqueeze::<2>()).unsqueeze_dim::<3>(2));
        }
        // Measured 1.7e-7 (Flex).
        assert_rel(
            &format!("N = {n}, L = {len}: step vs DPLR conv"),
            &to_vec(Tensor::cat(got, 2)),
            &want,
            1e-6,
        );
        // The layer's own step (with its output block) agrees too.
        let full = to_vec(layer.forward(u.clone()));
        let mut state = rec.zero_state(2);
        let mut out = Vec::new();
        for t in 0..len {
            let (y, s) = layer.step(u.clone().narrow(2, t, 1).squeeze_dim::<2>(2), &rec, state);
            state = s;
            out.push(y.unsqueeze_dim::<3>(2));
        }
        // Measured 2.5e-7 (Flex).
        assert_rel(
            &format!("N = {n}, L = {len}: layer step vs forward"),
            &to_vec(Tensor::cat(out, 2)),
            &full,
            1e-6,
        );
    }
}

/// Where theory says the two agree: without its low-rank term (P = 0) S4's DPLR kernel is the
/// diagonal S4D kernel with the same Λ and (bilinear) step, once S4's `C̃ = (I − Ā^L)* C`
/// is formed with `C = conj(C_S4D)` (S4 reads out `C* x`, S4D `C x`). With HiPPO-LegS's P the
/// two differ.
#[test]
fn dplr_kernel_without_low_rank_is_the_s4d_kernel() {
    use burn::module::Param;
    use ssm_models::ssm::s4d::{S4DInit, S4DKernelConfig};
    let device = Device::flex();
    let (h, n, len) = (2, 8, 24);
    let (s4d, mut s4) = {
        let _seed = seeded(&device, 62);
        let s4d = S4DKernelConfig::new(h)
            .with_d_state(n)
            .with_init(S4DInit::LegS)
            .with_bilinear(true)
            .init(&device);
        (s4d, S4Config::new(h).with_d_state(n).init(&device).kernel)
    };
    let a = s4d.a();
    s4.log_dt = Param::from_tensor(s4d.log_dt.val());
    s4.Lambda_re = Param::from_tensor(a.re.clone());
    s4.Lambda_im = Param::from_tensor(a.im.clone());
    // B = 1 (S4D folds B into C), C̃ = (1 − conj(dA^L)) conj(C_S4D) = conj((1 − dA^L) C_S4D).
    let ones = Tensor::<3>::cat(
        vec![
            Tensor::<3>::ones([h, n / 2, 1], &device),
            Tensor::<3>::zeros([h, n / 2, 1], &device),
        ],
        2,
    );
    s4.B = Param::from_tensor(ones);
    let rec = s4d.recurrence();
    let da = to_vec(rec.da.re.clone())
        .into_iter()
        .zip(to_vec(rec.da.im.clone()))
        .map(|(r, i)| (f64::from(r), f64::from(i)))
        .collect::<Vec<_>>();
    let c = to_vec(s4d.C.val());
    let mut ct = Vec::with_capacity(c.len());
    for (j, (r, i)) in da.iter().enumerate() {
        // dA^L by repeated products, conjugated, from 1.
        let (mut pr, mut pi) = (1.0f64, 0.0f64);
        for _ in 0..len {
            let t = pr * r - pi * i;
            pi = pr * i + pi * r;
            pr = t;
        }
        let (qr, qi) = (1.0 - pr, -pi); // 1 - dA^L
        let (cr, ci) = (f64::from(c[2 * j]), f64::from(c[2 * j + 1]));
        ct.push((qr * cr - qi * ci) as f32);
        ct.push(-(qr * ci + qi * cr) as f32);
    }
    s4.C = Param::from_tensor(Tensor::from_data(
        burn::tensor::TensorData::new(ct, [h, n / 2, 2]),
        &device,
    ));
    let want = to_vec(s4d.kernel(len));
    let with_p = to_vec(s4.kernel(len));
    s4.P = Param::from_tensor(s4.P.val().zeros_like());
    let without_p = to_vec(s4.kernel(len));
    // Measured 4.8e-7 (Flex).
    assert_rel("P = 0: DPLR vs diagonal kernel", &without_p, &want, 2e-6);
    assert!(
        gap("LegS's P: DPLR vs diagonal kernel", &with_p, &want).max_abs > 1e-3,
        "LegS's low-rank term must change the kernel"
    );
}

#[test]
fn bidirectional_s4_sees_the_future_and_the_causal_one_does_not() {
    let device = Device::flex();
    let mut rng = TestRng::new(36);
    let u = rng.tensor::<3>([1, 4, 16], Distribution::Normal(0.0, 1.0), &device);
    let last = Tensor::cat(
        vec![
            Tensor::<3>::zeros([1, 4, 15], &device),
            Tensor::<3>::ones([1, 4, 1], &device),
        ],
        2,
    );
    for bidirectional in [false, true] {
        let layer = {
            let _seed = seeded(&device, 36);
            S4Config::new(4)
                .with_d_state(8)
                .with_bidirectional(bidirectional)
                .init(&device)
        };
        let moved = gap(
            &format!("bidirectional {bidirectional}: steps 0..8 moved by step 15"),
            &to_vec(layer.forward(u.clone()).narrow(2, 0, 8)),
            &to_vec(layer.forward(u.clone() + last.clone()).narrow(2, 0, 8)),
        )
        .max_abs;
        if bidirectional {
            assert!(
                moved > 1e-4,
                "the backward kernel must carry step 15 back ({moved:e})"
            );
        } else {
            assert_eq!(
                moved, 0.0,
                "a causal layer cannot see step 15 at steps 0..8"
            );
        }
    }
}
