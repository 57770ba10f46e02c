//! S4 (DPLR): the kernel from the Cauchy/Woodbury generating function against the dense
//! bilinear recurrence (the recurrent step), for HiPPO-LegS at several lengths.

use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::testing::max_abs_diff;
use ssm_backends::to_vec;
use ssm_models::ssm::s4::S4Config;

#[test]
fn steps_match_the_dplr_convolution() {
    let device = Device::flex();
    device.seed(61);
    for (n, len) in [(8, 16), (16, 37)] {
        let layer = S4Config::new(3).with_d_state(n).init(&device);
        let u = Tensor::<3>::random([2, 3, len], Distribution::Normal(0.0, 1.0), &device);
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
        let err = max_abs_diff(&to_vec(Tensor::cat(got, 2)), &want);
        assert!(
            err <= 1e-4,
            "N = {n}, L = {len}: step vs DPLR conv max abs error {err:e}"
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
        let err = max_abs_diff(&to_vec(Tensor::cat(out, 2)), &full);
        assert!(
            err <= 1e-4,
            "N = {n}, L = {len}: layer step vs forward {err:e}"
        );
    }
}
