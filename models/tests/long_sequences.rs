//! The S4D layer at L = 65,536 with steps up to 1.0 (`dt_max` 1.0) stays finite on Flex and
//! wgpu: its Vandermonde kernel decays to exact zeros far out (exp of large negative numbers)
//! and its phases reach tens of thousands of radians.

use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::to_vec;
use ssm_models::ssm::s4d::{S4DConfig, S4DKernelConfig};

#[test]
fn s4d_at_65536_steps_with_large_steps_is_finite() {
    let mut devices = vec![Device::flex()];
    devices.extend(ssm_backends::testing::wgpu_test_device());
    for device in devices {
        device.seed(4);
        let layer = S4DConfig::new(
            S4DKernelConfig::new(4)
                .with_d_state(16)
                .with_dt_min(0.1)
                .with_dt_max(1.0),
        )
        .init(&device);
        let u = Tensor::<3>::random([1, 4, 65_536], Distribution::Normal(0.0, 1.0), &device);
        let y = to_vec(layer.forward(u));
        let bad = y.iter().filter(|v| !v.is_finite()).count();
        assert_eq!(bad, 0, "{device:?}: {bad} non-finite outputs");
        let k = to_vec(layer.kernel.kernel(65_536));
        assert!(k.iter().all(|v| v.is_finite()), "{device:?}: kernel");
    }
}
