//! S-Mamba: shapes, the per-variate normalisation (a shift of a variate's input shifts its
//! forecast by the same amount), information flowing both ways along the variate tokens, and a
//! short training run lowering the loss.

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use ssm_backends::testing::{TestRng, assert_rel, gap, seeded};
use ssm_backends::to_vec;
use ssm_models::timeseries::{SMambaConfig, denormalize, normalize};

fn config() -> SMambaConfig {
    SMambaConfig::new(24, 6)
        .with_d_model(16)
        .with_d_state(4)
        .with_d_ff(32)
        .with_e_layers(2)
}

#[test]
fn forecasts_have_the_horizon_and_the_variates() {
    let device = Device::flex();
    let mut rng = TestRng::new(71);
    let x = rng.tensor::<3>([2, 24, 3], Distribution::Normal(0.0, 1.0), &device);
    let m = {
        let _seed = seeded(&device, 71);
        config().init(&device)
    };
    assert_eq!(m.forward(x.clone(), None).dims(), [2, 6, 3]);
    let marks = rng.tensor::<3>([2, 24, 4], Distribution::Uniform(-0.5, 0.5), &device);
    let m = {
        let _seed = seeded(&device, 71);
        config().with_time_features(4).init(&device)
    };
    assert_eq!(m.forward(x, Some(marks)).dims(), [2, 6, 3]);
    assert!(config().with_e_layers(0).validate().is_err());
}

#[test]
fn normalisation_round_trips_and_shifts_pass_through() {
    let device = Device::flex();
    let mut rng = TestRng::new(72);
    let x = rng.tensor::<3>([2, 24, 3], Distribution::Normal(3.0, 2.0), &device);
    let (n, mean, std) = normalize(x.clone());
    let back = denormalize(n.clone(), mean, std);
    // Measured 6.1e-8 (Flex).
    assert_rel(
        "denormalize(normalize(x))",
        &to_vec(back),
        &to_vec(x.clone()),
        1e-6,
    );
    let means = to_vec(n.clone().mean_dim(1));
    let zeros = vec![0f32; means.len()];
    assert!(
        gap("normalised means", &means, &zeros).max_abs < 1e-5,
        "{means:?}"
    );
    // Shifting each variate's look-back shifts its forecast by the same amount.
    let m = {
        let _seed = seeded(&device, 72);
        config().init(&device)
    };
    let shift = Tensor::<1>::from_floats([10.0, -4.0, 0.5], &device).reshape([1, 1, 3]);
    let a = m.forward(x.clone() + shift.clone(), None);
    let b = m.forward(x, None) + shift;
    // Measured 1.2e-7 (Flex).
    assert_rel(
        "forecast of shifted input vs shifted forecast",
        &to_vec(a),
        &to_vec(b),
        1e-6,
    );
}

#[test]
fn the_variate_tokens_are_read_both_ways() {
    let device = Device::flex();
    let m = {
        let _seed = seeded(&device, 73);
        config().with_use_norm(false).init(&device)
    };
    let mut rng = TestRng::new(73);
    let x = rng.tensor::<3>([1, 24, 4], Distribution::Normal(0.0, 1.0), &device);
    let bump = |v: usize| {
        let mut d = vec![0f32; 24 * 4];
        for t in 0..24 {
            d[t * 4 + v] = 5.0;
        }
        x.clone() + Tensor::<3>::from_data(TensorData::new(d, [1, 24, 4]), &device)
    };
    let y = to_vec(m.forward(x.clone(), None));
    let col = |y: &[f32], v: usize| (0..6).map(|s| y[s * 4 + v]).collect::<Vec<_>>();
    // The last variate changes the first one's forecast, and the first the last's.
    let y_last = to_vec(m.forward(bump(3), None));
    let y_first = to_vec(m.forward(bump(0), None));
    let (back, fwd) = (
        gap(
            "variate 0 moved by variate 3",
            &col(&y_last, 0),
            &col(&y, 0),
        )
        .max_abs,
        gap(
            "variate 3 moved by variate 0",
            &col(&y_first, 3),
            &col(&y, 3),
        )
        .max_abs,
    );
    // A one-way (causal) scan would leave them exactly unchanged; at the reference init the
    // cross-token terms are small (dt ≈ 0.001..0.1), so any change well above rounding counts.
    assert!(
        back > 1e-6 && fwd > 1e-6,
        "backward {back:e}, forward {fwd:e}"
    );
}

#[test]
fn a_short_training_run_lowers_the_loss() {
    let device = Device::flex().autodiff();
    // Three phase-shifted sines with noise: 64 windows of 24 steps, horizon 6.
    let (b, l, s, n) = (64, 24, 6, 3);
    let series = |w: usize, t: usize, v: usize| {
        ((w + t) as f32 * 0.3 + v as f32).sin() * (1.0 + v as f32)
            + 0.05 * ((w * 7 + t * 3 + v) % 5) as f32
    };
    let make = |len: usize, off: usize| {
        let d: Vec<f32> = (0..b)
            .flat_map(|w| (0..len).flat_map(move |t| (0..n).map(move |v| (w, t + off, v))))
            .map(|(w, t, v)| series(w, t, v))
            .collect();
        Tensor::<3>::from_data(TensorData::new(d, [b, len, n]), &device)
    };
    let (x, y) = (make(l, 0), make(s, l));
    // Without dropout the training forward draws nothing: only the init is seeded.
    let mut model = {
        let _seed = seeded(&device, 74);
        config().with_dropout(0.0).init(&device)
    };
    let mut optim = AdamConfig::new().init();
    let mse = |m: &ssm_models::timeseries::SMamba| {
        (m.forward(x.clone(), None) - y.clone()).square().mean()
    };
    let first: f32 = mse(&model).into_scalar();
    for _ in 0..30 {
        let loss = mse(&model);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    let last: f32 = mse(&model).into_scalar();
    assert!(last < 0.5 * first, "MSE {first} -> {last}");
}
