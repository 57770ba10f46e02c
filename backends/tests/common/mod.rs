//! Shared by the scan tests (CPU and wgpu): random scan inputs, the op's gradients.
#![allow(dead_code)]

use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::testing::TestRng;
use ssm_backends::{SelectiveScan, to_vec};

/// Random inputs of a scan with realistic ranges (softplus(delta + bias) in about 0.01..0.5).
#[derive(Clone)]
pub struct Inputs {
    pub u: Tensor<3>,
    pub delta: Tensor<3>,
    pub a: Tensor<2>,
    pub b: Tensor<4>,
    pub c: Tensor<4>,
    pub d: Tensor<1>,
    pub z: Option<Tensor<3>>,
    pub bias: Tensor<1>,
    pub h0: Option<Tensor<3>>,
    pub softplus: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub batch: usize,
    pub dim: usize,
    pub len: usize,
    pub state: usize,
    pub groups: usize,
    pub gate: bool,
    pub init: bool,
    pub softplus: bool,
}

pub fn inputs(c: Case, rng: &mut TestRng, device: &Device) -> Inputs {
    let normal = Distribution::Normal(0.0, 1.0);
    let (bs, d, l, s, g) = (c.batch, c.dim, c.len, c.state, c.groups);
    // Drawn in the order of the fields.
    let u = rng.tensor::<3>([bs, d, l], normal, device);
    // Without softplus, delta itself is the (positive) step.
    let delta = if c.softplus {
        rng.tensor::<3>([bs, d, l], Distribution::Uniform(-4.0, -1.0), device)
    } else {
        rng.tensor::<3>([bs, d, l], Distribution::Uniform(0.6, 0.9), device)
    };
    let a = rng
        .tensor::<2>([d, s], Distribution::Uniform(0.3, s as f64), device)
        .neg();
    let b = rng.tensor::<4>([bs, g, s, l], normal, device);
    let cc = rng.tensor::<4>([bs, g, s, l], normal, device);
    let dd = rng.tensor::<1>([d], normal, device);
    let z = c.gate.then(|| rng.tensor::<3>([bs, d, l], normal, device));
    let bias = rng.tensor::<1>([d], Distribution::Uniform(-0.5, 0.5), device);
    let h0 = c.init.then(|| rng.tensor::<3>([bs, d, s], normal, device));
    Inputs {
        u,
        delta,
        a,
        b,
        c: cc,
        d: dd,
        z,
        bias,
        h0,
        softplus: c.softplus,
    }
}

pub fn scan(x: &Inputs) -> SelectiveScan {
    let mut s = SelectiveScan::new(
        x.u.clone(),
        x.delta.clone(),
        x.a.clone(),
        x.b.clone(),
        x.c.clone(),
    )
    .d(x.d.clone())
    .delta_bias(x.bias.clone())
    .softplus(x.softplus);
    if let Some(z) = &x.z {
        s = s.z(z.clone());
    }
    if let Some(h) = &x.h0 {
        s = s.initial_state(h.clone());
    }
    s
}

/// The gradients of `sum(y * wy) + sum(state * wh)` through the op's autodiff path.
pub fn op_gradients(x: &Inputs, wy: &Tensor<3>, wh: &Tensor<3>, reference: bool) -> Vec<Vec<f32>> {
    let device = x.u.device().autodiff();
    let track = |t: Tensor<3>| Tensor::<3>::from_data(t.into_data(), &device).require_grad();
    let track1 = |t: Tensor<1>| Tensor::<1>::from_data(t.into_data(), &device).require_grad();
    let u = track(x.u.clone());
    let delta = track(x.delta.clone());
    let a = Tensor::<2>::from_data(x.a.clone().into_data(), &device).require_grad();
    let b = Tensor::<4>::from_data(x.b.clone().into_data(), &device).require_grad();
    let c = Tensor::<4>::from_data(x.c.clone().into_data(), &device).require_grad();
    let d = track1(x.d.clone());
    let z = track(x.z.clone().unwrap());
    let bias = track1(x.bias.clone());
    let h0 = track(x.h0.clone().unwrap());
    let s = SelectiveScan::new(u.clone(), delta.clone(), a.clone(), b.clone(), c.clone())
        .d(d.clone())
        .z(z.clone())
        .delta_bias(bias.clone())
        .initial_state(h0.clone())
        .softplus(x.softplus);
    let out = if reference {
        s.run_reference()
    } else {
        s.run()
    };
    let wy = Tensor::<3>::from_data(wy.clone().into_data(), &device);
    let wh = Tensor::<3>::from_data(wh.clone().into_data(), &device);
    let loss = (out.y * wy).sum() + (out.state * wh).sum();
    let grads = loss.backward();
    let g3 = |t: &Tensor<3>| to_vec(t.grad(&grads).expect("gradient"));
    vec![
        g3(&u),
        g3(&delta),
        to_vec(a.grad(&grads).unwrap()),
        to_vec(b.grad(&grads).unwrap()),
        to_vec(c.grad(&grads).unwrap()),
        to_vec(d.grad(&grads).unwrap()),
        g3(&z),
        to_vec(bias.grad(&grads).unwrap()),
        g3(&h0),
    ]
}

/// Random weights `wy` (B, D, L) and `wh` (B, D, N) of the test loss
/// `sum(y * wy) + sum(state * wh)`.
pub fn loss_weights(case: Case, rng: &mut TestRng, device: &Device) -> (Tensor<3>, Tensor<3>) {
    let normal = Distribution::Normal(0.0, 1.0);
    let wy = rng.tensor::<3>([case.batch, case.dim, case.len], normal, device);
    let wh = rng.tensor::<3>([case.batch, case.dim, case.state], normal, device);
    (wy, wh)
}

pub const NAMES: [&str; 9] = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"];

/// The same inputs on another device.
pub fn to_device(x: &Inputs, device: &Device) -> Inputs {
    fn mv<const D: usize>(t: &Tensor<D>, device: &Device) -> Tensor<D> {
        Tensor::from_data(t.clone().into_data(), device)
    }
    Inputs {
        u: mv(&x.u, device),
        delta: mv(&x.delta, device),
        a: mv(&x.a, device),
        b: mv(&x.b, device),
        c: mv(&x.c, device),
        d: mv(&x.d, device),
        z: x.z.as_ref().map(|t| mv(t, device)),
        bias: mv(&x.bias, device),
        h0: x.h0.as_ref().map(|t| mv(t, device)),
        softplus: x.softplus,
    }
}
