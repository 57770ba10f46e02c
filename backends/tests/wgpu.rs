//! The scan on wgpu (today the portable body, recorded through Fusion) against the CPU kernel.
//! Skips with a message where no wgpu adapter exists, unless SSM_ZOO_REQUIRE_WGPU is set.
#![cfg(feature = "wgpu")]

use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::testing::{max_rel_diff, wgpu_test_device};
use ssm_backends::{SelectiveScan, to_vec};

fn on(device: &Device, t: Tensor<3>) -> Tensor<3> {
    Tensor::from_data(t.into_data(), device)
}

#[test]
fn wgpu_scan_matches_cpu_kernel() {
    let Some(gpu) = wgpu_test_device() else {
        return;
    };
    let cpu = Device::flex();
    cpu.seed(11);
    for (bs, d, l, n, g) in [(1, 4, 1, 8, 1), (2, 6, 33, 4, 2)] {
        let u = Tensor::<3>::random([bs, d, l], Distribution::Normal(0.0, 1.0), &cpu);
        let delta = Tensor::<3>::random([bs, d, l], Distribution::Uniform(-4.0, -1.0), &cpu);
        let z = Tensor::<3>::random([bs, d, l], Distribution::Normal(0.0, 1.0), &cpu);
        let a = Tensor::<2>::random([d, n], Distribution::Uniform(0.3, 4.0), &cpu).neg();
        let b = Tensor::<4>::random([bs, g, n, l], Distribution::Normal(0.0, 1.0), &cpu);
        let c = Tensor::<4>::random([bs, g, n, l], Distribution::Normal(0.0, 1.0), &cpu);
        let dd = Tensor::<1>::random([d], Distribution::Normal(0.0, 1.0), &cpu);
        let h0 = Tensor::<3>::random([bs, d, n], Distribution::Normal(0.0, 1.0), &cpu);
        let want = SelectiveScan::new(u.clone(), delta.clone(), a.clone(), b.clone(), c.clone())
            .d(dd.clone())
            .z(z.clone())
            .initial_state(h0.clone())
            .softplus(true)
            .run();
        let got = SelectiveScan::new(
            on(&gpu, u),
            on(&gpu, delta),
            Tensor::from_data(a.into_data(), &gpu),
            Tensor::from_data(b.into_data(), &gpu),
            Tensor::from_data(c.into_data(), &gpu),
        )
        .d(Tensor::from_data(dd.into_data(), &gpu))
        .z(on(&gpu, z))
        .initial_state(on(&gpu, h0))
        .softplus(true)
        .run();
        let ey = max_rel_diff(&to_vec(got.y), &to_vec(want.y));
        let eh = max_rel_diff(&to_vec(got.state), &to_vec(want.state));
        assert!(
            ey <= 1e-4 && eh <= 1e-4,
            "({bs},{d},{l},{n},{g}): y {ey:e} state {eh:e}"
        );
    }
}
