//! Benchmarks of the SSM zoo: see `benches/` (criterion) and `zoo bench`. This library holds
//! what the bench targets share: scan inputs at a Mamba shape, the forward and the
//! forward+backward through the op or through the portable body, and a median timer.

use burn::tensor::{Device, Distribution, FloatDType, Tensor};
use ssm_backends::{ScanOutput, SelectiveScan};
use std::time::Instant;

/// State size of the benched scans (Mamba's).
pub const N: usize = 16;

/// The inputs of one scan: a batch, `d` channels, `l` steps, one group.
pub struct ScanInputs {
    pub u: Tensor<3>,
    pub delta: Tensor<3>,
    pub a: Tensor<2>,
    pub b: Tensor<4>,
    pub c: Tensor<4>,
    pub d: Tensor<1>,
    pub z: Tensor<3>,
    pub bias: Tensor<1>,
}

impl ScanInputs {
    /// Random inputs of batch 1 with realistic ranges on `device`.
    pub fn random(d: usize, l: usize, device: &Device) -> Self {
        Self::random_batch(1, d, l, device)
    }

    /// Random inputs of `batch` rows with realistic ranges on `device`.
    pub fn random_batch(batch: usize, d: usize, l: usize, device: &Device) -> Self {
        let normal = Distribution::Normal(0.0, 1.0);
        Self {
            u: Tensor::random([batch, d, l], normal, device),
            delta: Tensor::random([batch, d, l], Distribution::Uniform(-4.0, -1.0), device),
            a: Tensor::<2>::random([d, N], Distribution::Uniform(0.5, 16.0), device).neg(),
            b: Tensor::random([batch, 1, N, l], normal, device),
            c: Tensor::random([batch, 1, N, l], normal, device),
            d: Tensor::random([d], normal, device),
            z: Tensor::random([batch, d, l], normal, device),
            bias: Tensor::random([d], Distribution::Uniform(-0.5, 0.5), device),
        }
    }

    /// The same inputs with the activations (u, delta, B, C, z) in `dtype` (f16 or bf16: the
    /// half-precision scan; the parameters stay f32).
    pub fn with_activations(&self, dtype: FloatDType) -> Self {
        Self {
            u: self.u.clone().cast(dtype),
            delta: self.delta.clone().cast(dtype),
            a: self.a.clone(),
            b: self.b.clone().cast(dtype),
            c: self.c.clone().cast(dtype),
            d: self.d.clone(),
            z: self.z.clone().cast(dtype),
            bias: self.bias.clone(),
        }
    }

    /// The scan through the op (`reference = false`: the backend's kernel) or through the
    /// portable body.
    pub fn scan(&self, reference: bool) -> ScanOutput {
        let s = SelectiveScan::new(
            self.u.clone(),
            self.delta.clone(),
            self.a.clone(),
            self.b.clone(),
            self.c.clone(),
        )
        .d(self.d.clone())
        .z(self.z.clone())
        .delta_bias(self.bias.clone())
        .softplus(true);
        if reference {
            s.run_reference()
        } else {
            s.run()
        }
    }

    /// Forward and backward through the op on the autodiff form of `device`; returns when the
    /// gradients of `u` and `delta` are on the host.
    pub fn forward_backward(&self, device: &Device, reference: bool) {
        let device = device.clone().autodiff();
        let on3 = |t: &Tensor<3>| Tensor::<3>::from_data(t.clone().into_data(), &device);
        let u = on3(&self.u).require_grad();
        let delta = on3(&self.delta).require_grad();
        let moved = ScanInputs {
            u: u.clone(),
            delta: delta.clone(),
            a: Tensor::from_data(self.a.clone().into_data(), &device),
            b: Tensor::from_data(self.b.clone().into_data(), &device),
            c: Tensor::from_data(self.c.clone().into_data(), &device),
            d: Tensor::from_data(self.d.clone().into_data(), &device),
            z: on3(&self.z),
            bias: Tensor::from_data(self.bias.clone().into_data(), &device),
        };
        let out = moved.scan(reference);
        let grads = out.y.sum().backward();
        let _ = u.grad(&grads).expect("gradient of u").into_data();
        let _ = delta.grad(&grads).expect("gradient of delta").into_data();
    }
}

/// The sequence lengths of a bench: `all` up to the limit in the environment variable
/// `SCAN_BENCH_MAX_L` (when set).
pub fn lengths(all: &[usize]) -> Vec<usize> {
    let max: usize = std::env::var("SCAN_BENCH_MAX_L")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    all.iter().copied().filter(|&l| l <= max).collect()
}

/// Median of `runs` timed runs of `f` after one untimed run, in seconds.
pub fn median_time(mut f: impl FnMut(), runs: usize) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}
