//! Reproducible randomness for tests. Burn's `Device::seed` seeds one generator per backend,
//! shared by every test of a binary, and tests run in parallel threads: "seeded" draws made
//! through it differ from run to run with the order the threads interleave in. Test inputs come
//! from a [`TestRng`] of their own instead; module initialisers and dropout, which can only draw
//! from the device's generator, run under [`seeded`], which holds that generator for one test
//! at a time.

use burn::tensor::Device;
use std::sync::{Mutex, MutexGuard};

pub use crate::rng::TestRng;

static DEVICE_GENERATOR: Mutex<()> = Mutex::new(());

/// Holds the device generators for one test while it lives (see [`seeded`]).
pub struct Seeded {
    _lock: MutexGuard<'static, ()>,
}

/// Seeds `device`'s generator with `seed` and keeps every other [`seeded`] section of this test
/// binary waiting until the returned guard drops, so the draws the test makes meanwhile through
/// the device's generator (module initialisers, dropout, random masks) are the same on every
/// run and in any order. Every draw a test makes from a device generator must sit inside such
/// a section; inputs come from a [`TestRng`].
pub fn seeded(device: &Device, seed: u64) -> Seeded {
    let lock = DEVICE_GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(seed);
    Seeded { _lock: lock }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    #[test]
    fn the_same_seed_gives_the_same_values() {
        let a = TestRng::new(7).values(64, Distribution::Normal(0.0, 1.0));
        let b = TestRng::new(7).values(64, Distribution::Normal(0.0, 1.0));
        assert_eq!(a, b);
        assert_ne!(
            a,
            TestRng::new(8).values(64, Distribution::Normal(0.0, 1.0))
        );
    }

    #[test]
    fn distributions_have_their_moments() {
        let mut rng = TestRng::new(1);
        let n = 20_000;
        let v = rng.values(n, Distribution::Normal(2.0, 3.0));
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            (mean - 2.0).abs() < 0.1 && (var.sqrt() - 3.0).abs() < 0.1,
            "{mean} {var}"
        );
        let u = rng.values(n, Distribution::Uniform(-1.0, 3.0));
        assert!(u.iter().all(|&x| (-1.0..3.0).contains(&x)));
        let ones = rng.values(n, Distribution::Bernoulli(0.25));
        let p = ones.iter().sum::<f32>() / n as f32;
        assert!(ones.iter().all(|&x| x == 0.0 || x == 1.0) && (p - 0.25).abs() < 0.02);
    }

    #[cfg(feature = "flex")]
    #[test]
    fn seeded_sections_repeat_the_device_draws() {
        let device = Device::flex();
        let draw = || {
            let _g = seeded(&device, 3);
            crate::to_vec(Tensor::<1>::random([8], Distribution::Default, &device))
        };
        assert_eq!(draw(), draw());
    }
}
