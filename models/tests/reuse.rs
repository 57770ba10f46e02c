//! `MambaMixer` as an ordinary Burn module: its recurrent step against its parallel forward.
//! (The README's example of the mixer inside a user's model, trained, is `tests/readme.rs`.)

use burn::prelude::*;
use ssm_backends::testing::{TestRng, assert_rel, seeded};
use ssm_backends::to_vec;
use ssm_models::ssm::{MambaMixerConfig, SequenceMixer};

#[test]
fn mixer_step_matches_forward() {
    let device = Device::flex();
    let mixer = {
        let _seed = seeded(&device, 1);
        MambaMixerConfig::new(16).with_d_state(4).init(&device)
    };
    let mut rng = TestRng::new(1);
    let x = rng.tensor::<3>(
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
        // measured 5.1e-7 (Flex)
        assert_rel(&format!("step {t}"), &to_vec(y), &to_vec(want), 5e-6);
    }
}
