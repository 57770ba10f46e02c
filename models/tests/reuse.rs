//! `MambaMixer` as an ordinary Burn module inside a user's model (the README's example):
//! forward on the CPU, gradients on an autodiff device, one optimiser step.

use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use ssm_models::ssm::{MambaMixer, MambaMixerConfig};

#[derive(Module, Debug)]
struct MyModel {
    mixer: MambaMixer,
    head: burn::nn::Linear,
}

fn build(device: &Device) -> MyModel {
    MyModel {
        mixer: MambaMixerConfig::new(32).with_d_state(8).init(device),
        head: burn::nn::LinearConfig::new(32, 10).init(device),
    }
}

impl MyModel {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.head.forward(self.mixer.forward(x))
    }
}

#[test]
fn mixer_trains_inside_a_user_model() {
    let device = Device::flex().autodiff();
    device.seed(0);
    let mut model = build(&device);
    let x = Tensor::<3>::random(
        [2, 12, 32],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let target = Tensor::<3>::zeros([2, 12, 10], &device);
    let mut optim = AdamConfig::new().init();
    let loss0 = (model.forward(x.clone()) - target.clone())
        .square()
        .mean()
        .into_scalar::<f32>();
    for _ in 0..20 {
        let loss = (model.forward(x.clone()) - target.clone()).square().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let loss1 = (model.forward(x) - target)
        .square()
        .mean()
        .into_scalar::<f32>();
    assert_eq!(
        model.forward(Tensor::zeros([1, 3, 32], &device)).dims(),
        [1, 3, 10]
    );
    assert!(loss1 < 0.5 * loss0, "loss {loss0} -> {loss1}");
}

#[test]
fn mixer_step_matches_forward() {
    let device = Device::flex();
    device.seed(1);
    let mixer = MambaMixerConfig::new(16).with_d_state(4).init(&device);
    let x = Tensor::<3>::random(
        [2, 9, 16],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let (full, _) = mixer.forward_cached(x.clone(), None);
    let mut cache = ssm_models::ssm::MambaLayerCache::zeros(2, 32, 4, 4, &device);
    for t in 0..9 {
        let (y, c) = mixer.step(x.clone().narrow(1, t, 1).squeeze_dim(1), cache);
        cache = c;
        let want = full.clone().narrow(1, t, 1).squeeze_dim::<2>(1);
        let err = (y - want).abs().max().into_scalar::<f32>();
        assert!(err <= 1e-5, "step {t}: {err:e}");
    }
}
