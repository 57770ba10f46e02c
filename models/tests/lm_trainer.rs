//! The language-model trainer as a library: a run stopped after some steps and resumed from its
//! newest checkpoint equals one that never stopped, bit for bit; two replicas on two devices
//! equal one device accumulating their two micro-batches; the weights do not depend on the
//! thread count; a foreign checkpoint, an earlier run, f16 and out-of-vocabulary data are
//! refused. (`zoo train lm`'s tests kill the binary with SIGKILL instead.)

use burn::tensor::{Device, FloatDType};
use ssm_backends::testing::seeded;
use ssm_datasets::text::{TokenDocs, default_text_path, read_documents};
use ssm_models::io::pytorch_state_dict;
use ssm_models::lm::tokenizer::BYTE_EOS;
use ssm_models::lm::train::{
    LmData, RunLength, RunStart, TrainError, TrainObserver, Trained, Trainer, TrainerConfig,
};
use ssm_models::lm::{Mamba2Settings, MambaLmConfig};
use std::path::Path;

/// The first documents of the shipped text as bytes, 5% held out.
fn data() -> LmData {
    let docs = read_documents(&default_text_path()).unwrap();
    let docs = TokenDocs {
        docs: docs
            .iter()
            .take(40)
            .map(|d| d.bytes().map(u32::from).collect())
            .collect(),
    };
    LmData::new(docs, BYTE_EOS as u32, BYTE_EOS + 1, 0.05).unwrap()
}

/// A tiny byte-level model (Mamba, or Mamba2 with 16 channels per head).
fn config(mamba2: bool, steps: usize) -> TrainerConfig {
    let mut model = MambaLmConfig::new(32, 2, 264)
        .with_d_state(8)
        .with_pad_vocab_size_multiple(1)
        .with_eos_token_id(Some(BYTE_EOS));
    if mamba2 {
        model.mamba2 = Some(Mamba2Settings::new().with_head_dim(16));
    }
    TrainerConfig {
        seq_len: 32,
        batch_size: 4,
        length: RunLength::Steps(steps),
        lr: 5e-3,
        warmup: 2,
        val_batches: 2,
        eval_every: 3,
        checkpoint_every: 2,
        ..TrainerConfig::new(model)
    }
}

/// Runs `trainer` with the device generator held (the trainer seeds it and draws the weights).
fn fit(trainer: &Trainer, data: &LmData, observer: &mut dyn TrainObserver) -> Trained {
    try_fit(trainer, data, observer).unwrap()
}

fn try_fit(
    trainer: &Trainer,
    data: &LmData,
    observer: &mut dyn TrainObserver,
) -> Result<Trained, TrainError> {
    let _seed = seeded(&Device::flex(), trainer.config().seed);
    trainer.fit(data, observer)
}

fn weights(t: &Trained) -> Vec<(String, Vec<f32>)> {
    pytorch_state_dict(&t.model)
        .into_iter()
        .map(|(k, (_, v))| (k, v))
        .collect()
}

fn losses(t: &Trained) -> Vec<f64> {
    t.history.iter().map(|h| h.loss).collect()
}

/// Stops the run after `at` steps (as a kill would: what was not checkpointed is lost), and
/// records where a run started from.
#[derive(Default)]
struct StopAt {
    at: Option<usize>,
    resumed: Option<usize>,
    checkpoints: Vec<usize>,
}

impl TrainObserver for StopAt {
    fn start(&mut self, run: &RunStart<'_>) {
        self.resumed = run.resumed.map(|(step, _)| step);
    }
    fn checkpoint(&mut self, step: usize, dir: &Path) {
        assert!(dir.join("model.bpk").is_file() && dir.join("state.json").is_file());
        self.checkpoints.push(step);
    }
    fn keep_going(&mut self, steps_done: usize) -> bool {
        self.at != Some(steps_done)
    }
}

#[test]
fn a_stopped_run_resumes_bit_for_bit() {
    let data = data();
    for mamba2 in [false, true] {
        let config = TrainerConfig {
            accumulate: 2,
            ..config(mamba2, 7)
        };
        let straight = tempfile::tempdir().unwrap();
        let trainer = Trainer::new(config.clone(), vec![Device::flex()])
            .with_checkpoints(straight.path(), false);
        let a = fit(&trainer, &data, &mut ());
        assert!(a.finished() && a.steps_done == 7);

        // Stopped after step 5: checkpoints at 2 and 4, step 5 lost.
        let dir = tempfile::tempdir().unwrap();
        let trainer = Trainer::new(config.clone(), vec![Device::flex()]);
        let mut stop = StopAt {
            at: Some(5),
            ..StopAt::default()
        };
        let stopped = fit(
            &trainer.clone().with_checkpoints(dir.path(), false),
            &data,
            &mut stop,
        );
        assert!(!stopped.finished() && stopped.steps_done == 5);
        assert_eq!(stop.checkpoints, [2, 4]);
        // Not resumed: the folder's earlier run is refused.
        let err = try_fit(
            &trainer.clone().with_checkpoints(dir.path(), false),
            &data,
            &mut (),
        )
        .expect_err("an earlier run is refused");
        assert!(matches!(err, TrainError::EarlierRun { .. }), "{err}");
        // Resumed from step 4.
        let mut seen = StopAt::default();
        let b = fit(
            &trainer.with_checkpoints(dir.path(), true),
            &data,
            &mut seen,
        );
        assert_eq!(seen.resumed, Some(4));
        assert_eq!(seen.checkpoints, [6, 7]);
        assert!(b.finished());
        assert_eq!(losses(&a), losses(&b), "mamba2 {mamba2}: losses differ");
        assert_eq!(a.evals, b.evals, "mamba2 {mamba2}: evaluations differ");
        assert!(
            weights(&a) == weights(&b),
            "mamba2 {mamba2}: the resumed model's weights differ"
        );
        // The two newest checkpoints are kept.
        let mut kept: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        kept.sort();
        assert_eq!(kept, ["step-00000006", "step-00000007"]);
    }
}

#[test]
fn a_checkpoint_of_other_settings_is_refused_naming_them() {
    let data = data();
    let dir = tempfile::tempdir().unwrap();
    let trainer =
        Trainer::new(config(false, 2), vec![Device::flex()]).with_checkpoints(dir.path(), false);
    fit(&trainer, &data, &mut ());
    let other =
        Trainer::new(config(false, 4), vec![Device::flex()]).with_checkpoints(dir.path(), true);
    let err = try_fit(&other, &data, &mut ()).expect_err("other settings are refused");
    assert!(
        matches!(&err, TrainError::OtherSettings { differences, .. }
            if differences == &["steps 2 (now 4)".to_string()]),
        "{err}"
    );
    // Other data, named by its key.
    let renamed = data.clone().with_key("another text");
    let err = try_fit(
        &trainer.clone().with_checkpoints(dir.path(), true),
        &renamed,
        &mut (),
    )
    .expect_err("other data is refused");
    assert!(err.to_string().contains("another text"), "{err}");
}

#[test]
fn two_replicas_equal_one_device_accumulating_two_micro_batches() {
    let data = data();
    let one = Trainer::new(
        TrainerConfig {
            accumulate: 2,
            ..config(true, 3)
        },
        vec![Device::flex()],
    );
    let two = Trainer::new(config(true, 3), vec![Device::flex(), Device::flex()]);
    let (a, b) = (fit(&one, &data, &mut ()), fit(&two, &data, &mut ()));
    assert_eq!(b.run.replicas, 2);
    assert_eq!(a.tokens_per_step, b.tokens_per_step);
    assert_eq!(losses(&a), losses(&b));
    assert!(
        weights(&a) == weights(&b),
        "two replicas differ from one device accumulating"
    );
}

#[test]
fn the_weights_do_not_depend_on_the_thread_count() {
    let data = data();
    // 8 rows a batch, as `zoo train lm`'s test: the CPU scan's backward splits a row's channels
    // into more tasks when batch x groups < 4 x threads, and its dB and dC partial sums then
    // round differently (at 4 rows a batch, 1 and 2 threads differ by ~1e-7).
    let trainer = Trainer::new(
        TrainerConfig {
            batch_size: 8,
            ..config(false, 3)
        },
        vec![Device::flex()],
    );
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .stack_size(8 << 20)
            .build()
            .unwrap();
        pool.install(|| fit(&trainer, &data, &mut ()))
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(losses(&a), losses(&b));
    assert!(
        weights(&a) == weights(&b),
        "1 and 2 threads train different models"
    );
}

#[test]
fn bad_settings_and_data_are_refused() {
    let f16 = TrainerConfig {
        dtype: FloatDType::F16,
        ..config(false, 1)
    };
    let err = f16.validate().unwrap_err();
    assert!(err.to_string().contains("loss scaling"), "{err}");
    let zero = TrainerConfig {
        length: RunLength::Steps(0),
        ..config(false, 1)
    };
    assert!(matches!(zero.validate(), Err(TrainError::Invalid(_))));
    let docs = TokenDocs {
        docs: vec![vec![1, 2, 300]],
    };
    let err = LmData::new(docs, 256, 257, 0.0).unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::TokenOutOfVocab {
                id: 300,
                vocab: 257
            }
        ),
        "{err}"
    );
    // A data vocabulary larger than the model's.
    let docs = TokenDocs {
        docs: vec![(0..200).collect()],
    };
    let wide = LmData::new(docs, 299, 300, 0.0).unwrap();
    let err = try_fit(
        &Trainer::new(config(false, 1), vec![Device::flex()]),
        &wide,
        &mut (),
    )
    .unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
    // No device.
    let err = try_fit(&Trainer::new(config(false, 1), vec![]), &data(), &mut ()).unwrap_err();
    assert!(err.to_string().contains("no device"), "{err}");
}
