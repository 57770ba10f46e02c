//! S5: the parallel scan against the sequential recurrence, the recurrent step against the
//! parallel forward (ZOH and bilinear), causality of the unidirectional layer and its absence
//! in the bidirectional one, the HiPPO-N initialisation.

use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::testing::{TestRng, assert_rel, gap, seeded};
use ssm_backends::to_vec;
use ssm_models::ssm::s5::S5Config;

/// The seed of every test here: its inputs' [`TestRng`] and its inits' [`seeded`] section.
const SEED: u64 = 41;

fn device() -> Device {
    Device::flex()
}

#[test]
fn parallel_scan_equals_the_sequential_recurrence() {
    let device = device();
    let mut rng = TestRng::new(SEED);
    // States (re, im): measured 2.0e-7, 2.3e-7 (ZOH), 1.5e-7, 3.5e-7 (bilinear) on Flex.
    for (bilinear, blocks, tol_re, tol_im) in [(false, 1, 1e-6, 1e-6), (true, 2, 1e-6, 2e-6)] {
        let layer = {
            let _seed = seeded(&device, SEED);
            S5Config::new(6)
                .with_d_state(8)
                .with_blocks(blocks)
                .with_bilinear(bilinear)
                .init(&device)
        };
        let u = rng.tensor::<3>([2, 37, 6], Distribution::Normal(0.0, 1.0), &device);
        let d = layer.discrete();
        let x = layer.scan(&d, u.clone());
        // x_k = Λ̄ x_{k-1} + B̄ u_k, one step at a time on the host.
        let lre = to_vec(d.lambda_bar.re.clone());
        let lim = to_vec(d.lambda_bar.im.clone());
        let bre = to_vec(d.b_bar.re.clone());
        let bim = to_vec(d.b_bar.im.clone());
        let uv = to_vec(u);
        let (p, h, l) = (8, 6, 37);
        let mut want_re = vec![0f32; 2 * l * p];
        let mut want_im = vec![0f32; 2 * l * p];
        for b in 0..2 {
            let (mut sr, mut si) = (vec![0f64; p], vec![0f64; p]);
            for t in 0..l {
                for j in 0..p {
                    let (mut ur, mut ui) = (0f64, 0f64);
                    for c in 0..h {
                        let x = f64::from(uv[(b * l + t) * h + c]);
                        ur += f64::from(bre[j * h + c]) * x;
                        ui += f64::from(bim[j * h + c]) * x;
                    }
                    let (ar, ai) = (f64::from(lre[j]), f64::from(lim[j]));
                    let nr = ar * sr[j] - ai * si[j] + ur;
                    let ni = ar * si[j] + ai * sr[j] + ui;
                    sr[j] = nr;
                    si[j] = ni;
                    want_re[(b * l + t) * p + j] = nr as f32;
                    want_im[(b * l + t) * p + j] = ni as f32;
                }
            }
        }
        assert_rel(
            &format!("bilinear {bilinear}: scan re"),
            &to_vec(x.re),
            &want_re,
            tol_re,
        );
        assert_rel(
            &format!("bilinear {bilinear}: scan im"),
            &to_vec(x.im),
            &want_im,
            tol_im,
        );
    }
}

#[test]
fn steps_match_the_parallel_forward() {
    let device = device();
    let mut rng = TestRng::new(SEED);
    for bilinear in [false, true] {
        let layer = {
            let _seed = seeded(&device, SEED);
            S5Config::new(5)
                .with_d_state(6)
                .with_bilinear(bilinear)
                .init(&device)
        };
        let u = rng.tensor::<3>([2, 40, 5], Distribution::Normal(0.0, 1.0), &device);
        let want = to_vec(layer.forward(u.clone()));
        let d = layer.discrete();
        let mut state = layer.zero_state(2);
        let mut got = Vec::new();
        for t in 0..40 {
            let (y, s) = layer.step(&d, u.clone().narrow(1, t, 1).squeeze_dim::<2>(1), state);
            state = s;
            got.push(y.unsqueeze_dim::<3>(1));
        }
        // Measured 2.6e-7 (ZOH), 1.2e-7 (bilinear) (Flex).
        assert_rel(
            &format!("bilinear {bilinear}: step vs scan"),
            &to_vec(Tensor::cat(got, 1)),
            &want,
            if bilinear { 1e-6 } else { 2e-6 },
        );
    }
}

#[test]
fn only_the_bidirectional_layer_sees_the_future() {
    let device = device();
    let mut rng = TestRng::new(SEED);
    let u = rng.tensor::<3>([1, 16, 4], Distribution::Normal(0.0, 1.0), &device);
    // The same input with its last step changed.
    let bumped = u.clone()
        + Tensor::cat(
            vec![
                Tensor::<3>::zeros([1, 15, 4], &device),
                Tensor::<3>::ones([1, 1, 4], &device),
            ],
            1,
        );
    for bidirectional in [false, true] {
        let layer = {
            let _seed = seeded(&device, SEED);
            S5Config::new(4)
                .with_d_state(4)
                .with_bidirectional(bidirectional)
                .init(&device)
        };
        let a = to_vec(layer.forward(u.clone()).narrow(1, 0, 8));
        let b = to_vec(layer.forward(bumped.clone()).narrow(1, 0, 8));
        let moved = gap(
            &format!("bidirectional {bidirectional}: steps 0..8 moved by step 15"),
            &a,
            &b,
        )
        .max_abs;
        if bidirectional {
            assert!(
                moved > 1e-4,
                "the reversed scan must carry the last step back"
            );
        } else {
            assert_eq!(
                moved, 0.0,
                "a causal layer cannot see step 15 at steps 0..8"
            );
        }
    }
}

#[test]
fn init_is_hippo_n_with_one_of_each_conjugate_pair() {
    let device = device();
    let layer = {
        let _seed = seeded(&device, SEED);
        S5Config::new(3)
            .with_d_state(8)
            .with_blocks(2)
            .init(&device)
    };
    let re = to_vec(layer.Lambda_re.val());
    let im = to_vec(layer.Lambda_im.val());
    assert!(re.iter().all(|r| (r + 0.5).abs() < 1e-6), "{re:?}");
    assert!(im.iter().all(|i| *i > 0.0), "{im:?}");
    // Two identical blocks of four modes.
    assert_eq!(&im[..4], &im[4..]);
    assert!(
        S5Config::new(3)
            .with_d_state(6)
            .with_blocks(4)
            .validate()
            .is_err()
    );
}
