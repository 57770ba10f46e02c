//! The Rust examples of the README and of `docs/`, compiled from the pages' own text (`build.rs`
//! turns each block into a macro expanding to its items) and run: the S4-family loaders on files saved by the
//! reference code, and `MambaMixer` inside a user's model, trained for a few steps.

include!(concat!(env!("OUT_DIR"), "/readme_examples.rs"));

/// `docs/checkpoints.md`'s example reads `last.ckpt`, `s4d.pt` and `s5.msgpack` from the current folder: here they
/// are the reference code's own files (`fixtures/s4_family/lightning.ckpt`: a bidirectional
/// S4Block inside a Lightning checkpoint; `classifier.pth`: example.py's S4D classifier;
/// `fixtures/s5_reference/classifier.msgpack`: lindermanlab/S5's classifier).
mod s4_loading {
    checkpoints_example_0!();

    #[test]
    fn the_s4_loading_example_loads_reference_files() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = ssm_backends::testing::fixtures_dir();
        for (from, to) in [
            ("s4_family/lightning.ckpt", "last.ckpt"),
            ("s4_family/classifier.pth", "s4d.pt"),
            ("s5_reference/classifier.msgpack", "s5.msgpack"),
        ] {
            std::fs::copy(fixtures.join(from), dir.path().join(to)).unwrap();
        }
        // The only test of this binary that reads the current folder.
        std::env::set_current_dir(dir.path()).unwrap();
        load(&Device::flex()).expect("the loading example of docs/checkpoints.md runs");
    }
}

/// The README's example: `MyModel` trains (its squared error on a fixed batch with random
/// targets halves in 20 Adam steps on an autodiff device) and keeps its shapes.
mod mixer_in_a_user_model {
    readme_example_0!();

    #[test]
    fn the_mixer_example_trains_inside_a_user_model() {
        use burn::optim::{AdamConfig, GradientsParams};
        use ssm_backends::testing::{TestRng, seeded};

        let device = Device::flex().autodiff();
        let mut model = {
            let _seed = seeded(&device, 0);
            build(&device)
        };
        let mut rng = TestRng::new(0);
        let x = rng.normal::<3>([2, 12, 256], &device);
        let target = rng.normal::<3>([2, 12, 10], &device);
        let loss = |m: &MyModel| (m.forward(x.clone()) - target.clone()).square().mean();
        let loss0 = loss(&model).into_scalar::<f32>();
        let mut optim = AdamConfig::new().init();
        for _ in 0..20 {
            let grads = GradientsParams::from_grads(loss(&model).backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        let loss1 = loss(&model).into_scalar::<f32>();
        assert_eq!(
            model.forward(Tensor::zeros([1, 3, 256], &device)).dims(),
            [1, 3, 10]
        );
        assert!(loss1 < 0.5 * loss0, "loss {loss0} -> {loss1}");
    }
}
