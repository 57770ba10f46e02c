//! Reproducible random inputs for the tests and `zoo selftest`. Burn's `Device::seed` seeds one
//! generator per backend, shared by every user of a process and drawn from in whatever order
//! threads interleave; inputs come from a [`TestRng`] of their own instead.

use burn::tensor::{Device, Distribution, Shape, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A generator of its own for test and self-test inputs: the same values on every run, whatever
/// else draws from the device's generator.
pub struct TestRng(StdRng);

// `below` and `unit` serve the tests (`test-utils`).
#[cfg_attr(not(feature = "test-utils"), allow(dead_code))]
impl TestRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }

    /// One value of `dist` (Burn's distributions: `Default` is uniform on [0, 1)).
    pub fn sample(&mut self, dist: Distribution) -> f64 {
        match dist {
            Distribution::Default => self.0.random::<f64>(),
            Distribution::Uniform(lo, hi) => lo + (hi - lo) * self.0.random::<f64>(),
            Distribution::Bernoulli(p) => f64::from(u8::from(self.0.random::<f64>() < p)),
            Distribution::Normal(mean, std) => {
                // Box-Muller: u1 in (0, 1] keeps the logarithm finite.
                let u1 = 1.0 - self.0.random::<f64>();
                let u2 = self.0.random::<f64>();
                mean + std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            }
        }
    }

    /// `n` values of `dist` as f32.
    pub fn values(&mut self, n: usize, dist: Distribution) -> Vec<f32> {
        (0..n).map(|_| self.sample(dist) as f32).collect()
    }

    /// A float tensor of `dist` on `device`: [`Tensor::random`] drawn from this generator.
    pub fn tensor<const D: usize>(
        &mut self,
        shape: impl Into<Shape>,
        dist: Distribution,
        device: &Device,
    ) -> Tensor<D> {
        let shape: Shape = shape.into();
        let values = self.values(shape.num_elements(), dist);
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// A standard normal tensor.
    pub fn normal<const D: usize>(
        &mut self,
        shape: impl Into<Shape>,
        device: &Device,
    ) -> Tensor<D> {
        self.tensor(shape, Distribution::Normal(0.0, 1.0), device)
    }

    /// A tensor uniform on `[lo, hi)`.
    pub fn uniform<const D: usize>(
        &mut self,
        shape: impl Into<Shape>,
        lo: f64,
        hi: f64,
        device: &Device,
    ) -> Tensor<D> {
        self.tensor(shape, Distribution::Uniform(lo, hi), device)
    }

    /// An integer uniform on `[0, n)`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
    }

    /// A uniform value on `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0.random::<f64>()
    }
}
