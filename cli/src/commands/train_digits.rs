//! `zoo train s4d-digits` / `s5-digits`: S4-family sequence classifiers trained with burn-train
//! on the digits shipped with `ssm-datasets` (a fixed 80/20 split, 10 classes), reading the 64
//! pixels one by one. Each run saves `config.json` + `model.bpk` + `zoo.json` (the model kind),
//! reloaded by `zoo eval`.

use crate::common::args::RunArgs;
use crate::common::choices::ModelKind;
use crate::common::error::{CliError, CliResult};
use crate::common::progress::Progress;
use crate::common::run_file::{save, write_kind};
use crate::common::sequence::{accuracy, data_error, load};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use clap::Args;
use ssm_datasets::{DigitsBatcher, digits_split};
use ssm_models::checkpoint::atomic_checkpointers;
use ssm_models::classify::{LayerKind, SequenceClassifierConfig, learning_rates, optimizer};

#[derive(Args, Debug)]
#[command(mut_arg("out", |a| a.help(
    "Where the checkpoints, the final model and its config go (default runs/TASK)"
)))]
pub struct TrainArgs {
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Learning rate of everything but the SSM kernels (AdamW).
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// Learning rate of the SSM kernels (Adam, no weight decay).
    #[arg(long, default_value_t = 0.001)]
    ssm_lr: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    #[arg(long, default_value_t = 64)]
    d_model: usize,
    #[arg(long, default_value_t = 4)]
    layers: usize,
    #[arg(long, default_value_t = 64)]
    d_state: usize,
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    #[command(flatten)]
    run: RunArgs,
}

pub fn run(a: TrainArgs, layer: LayerKind) -> CliResult {
    if a.epochs == 0 || a.batch_size == 0 || a.d_model == 0 || a.layers == 0 || a.d_state < 2 {
        return Err(CliError::Usage(
            "epochs, batch size, width and layers must be at least 1, d_state at least 2".into(),
        ));
    }
    if !(0.0..1.0).contains(&a.dropout) || a.lr <= 0.0 || a.ssm_lr < 0.0 || a.weight_decay < 0.0 {
        return Err(CliError::Usage(
            "need 0 <= dropout < 1, lr > 0, ssm-lr >= 0, weight-decay >= 0".into(),
        ));
    }
    let out = a.run.out_or(match layer {
        LayerKind::S4D => "runs/s4d-digits",
        LayerKind::S5 => "runs/s5-digits",
    });
    let seed = a.run.seed();
    let device = a.run.device()?;
    device.seed(seed);
    let train_device = device.clone().autodiff();
    let (train, test) = digits_split().map_err(data_error)?;
    let (n_train, n_test) = (train.len(), test.len());
    let config = SequenceClassifierConfig::new(1, ssm_datasets::digits::CLASSES)
        .with_layer(layer)
        .with_d_model(a.d_model)
        .with_n_layers(a.layers)
        .with_d_state(a.d_state)
        .with_dropout(a.dropout);
    let model = config.init(&train_device);
    println!(
        "training an {layer:?} classifier ({} parameters) on {n_train} digits, testing on {n_test}",
        model.num_params()
    );
    let dl_train = DataLoaderBuilder::new(DigitsBatcher)
        .batch_size(a.batch_size)
        .shuffle(seed)
        .num_workers(1)
        .set_device(train_device.clone())
        .build(train);
    let dl_valid = DataLoaderBuilder::new(DigitsBatcher)
        .batch_size(a.batch_size)
        .num_workers(1)
        .set_device(train_device.clone())
        .build(test);
    std::fs::create_dir_all(&out)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", out.display())))?;
    let (model_ckpt, optim_ckpt, sched_ckpt) = atomic_checkpointers(&out);
    let result = SupervisedTraining::new(&out, dl_train, dl_valid)
        .with_custom_checkpointers(model_ckpt, optim_ckpt, sched_ckpt)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .renderer(Box::new(Progress::default()))
        .num_epochs(a.epochs)
        .summary()
        .launch(Learner::new(
            model,
            optimizer(a.weight_decay),
            learning_rates(a.lr, a.ssm_lr),
        ));
    if let Some(e) = result.error {
        return Err(CliError::Io(format!("training failed: {e}")));
    }
    save(&result.model, &config, &out)?;
    write_kind(&out, ModelKind::Sequence, 0)?;
    let model = load(&out, &device)?;
    let (right, total) = accuracy(&model, &device)?;
    println!(
        "test accuracy {:.2}% ({right}/{total}); model saved to {}",
        100.0 * right as f64 / total as f64,
        out.display()
    );
    Ok(())
}
