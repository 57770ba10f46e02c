//! `zoo train` and `zoo eval`: classifiers trained with burn-train on the digits shipped with
//! `ssm-datasets` (a fixed 80/20 split, 10 classes): S4-family sequence classifiers reading the
//! 64 pixels one by one, and a Vim reading the image upsampled to 16×16 as 4×4 patches. Each run
//! saves `config.json` + `model.bpk` (+ `zoo.json` naming the model kind), reloaded by
//! `zoo eval`.

use crate::common::{CliError, CliResult, device};
use crate::train_vision::VisionArgs;
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::prelude::Config;
use burn::tensor::Device;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use clap::{Args, Subcommand};
use ssm_datasets::{DigitsBatcher, digits_split};
use ssm_models::checkpoint::{atomic_checkpointers, load_weights, save_weights, write_atomic};
use ssm_models::classify::{
    LayerKind, SequenceClassifier, SequenceClassifierConfig, learning_rates, optimizer,
};
use std::path::{Path, PathBuf};

/// The variants name the command-line tasks (`s4d-digits`, ...), hence the shared suffix.
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand, Debug)]
pub enum TrainTask {
    /// An S4D classifier on sequential digits (L = 64, 10 classes).
    S4dDigits(TrainArgs),
    /// An S5 classifier on sequential digits (L = 64, 10 classes).
    S5Digits(TrainArgs),
    /// A small Vim (bidirectional Mamba over patches) on the digits upsampled to 16x16.
    VimDigits(VisionArgs),
    /// A small VMamba (2D cross-scan stages) on the digits upsampled to 16x16.
    VmambaDigits(VisionArgs),
    /// An isotropic S4ND classifier (2-D SSM convolutions over the pixels) on the digits
    /// upsampled to 16x16; `zoo eval --img-size` evaluates it at another resolution.
    S4ndDigits(VisionArgs),
    /// S-Mamba forecasting a multivariate series (MSE), against linear and last-value baselines.
    SMamba(crate::train_series::SeriesArgs),
    /// TimeMachine (RevIN, four Mambas at two scales) on the same data, against the baselines.
    TimeMachine(crate::train_series::SeriesArgs),
    /// Graph-Mamba on node (stochastic block model, karate club) or graph (TU) classification.
    GraphMamba(crate::train_graph::GraphArgs),
    /// A Mamba or Mamba2 language model on text (packed documents, AdamW, warm-up + cosine,
    /// resumable checkpoints); saved as a Hugging Face model directory.
    Lm(crate::train_lm::LmArgs),
    /// A small Mamba on the selective-copying task of the Mamba paper (fixed steps, seeded).
    SelectiveCopying(crate::train_copy::CopyArgs),
}

#[derive(Args, Debug)]
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
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the checkpoints, the final model and its config go (default runs/<task>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu, ndarray, wgpu, wgpu:N, cuda:N (default cpu).
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A folder written by `zoo train` (config.json, model.bpk).
    #[arg(long)]
    model: PathBuf,
    /// cpu, ndarray, wgpu, wgpu:N, cuda:N (default cpu).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Evaluate an image model at this side instead of its training one, without retraining
    /// (S4ND: its kernels are sampled at the new pixel pitch; models tied to a patch grid
    /// refuse).
    #[arg(long)]
    img_size: Option<usize>,
    /// With --img-size: the rate the kernels are sampled at (default the training side / the
    /// side, which keeps each kernel's extent in the image; 1 reads them pixel for pixel).
    #[arg(long, requires = "img_size")]
    rate: Option<f64>,
}

pub fn train(task: TrainTask) -> CliResult {
    match task {
        TrainTask::S4dDigits(a) => digits(a, LayerKind::S4D),
        TrainTask::S5Digits(a) => digits(a, LayerKind::S5),
        TrainTask::VimDigits(a) => crate::train_vision::vim_digits(a),
        TrainTask::VmambaDigits(a) => crate::train_vision::vmamba_digits(a),
        TrainTask::S4ndDigits(a) => crate::train_vision::s4nd_digits(a),
        TrainTask::SMamba(a) => crate::train_series::s_mamba(a),
        TrainTask::TimeMachine(a) => crate::train_series::time_machine(a),
        TrainTask::GraphMamba(a) => crate::train_graph::graph_mamba(a),
        TrainTask::Lm(a) => crate::train_lm::run(a),
        TrainTask::SelectiveCopying(a) => crate::train_copy::run(a),
    }
}

fn data_error(e: ssm_datasets::DigitsError) -> CliError {
    CliError::Io(e.to_string())
}

fn digits(a: TrainArgs, layer: LayerKind) -> CliResult {
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
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(match layer {
            LayerKind::S4D => "runs/s4d-digits",
            LayerKind::S5 => "runs/s5-digits",
        })
    });
    let device = device(Some(&a.device))?;
    device.seed(a.seed);
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
        .shuffle(a.seed)
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
    crate::train_vision::write_kind(&out, "sequence", 0)?;
    let model = load(&out, &device)?;
    let (right, total) = accuracy(&model, &device)?;
    println!(
        "test accuracy {:.2}% ({right}/{total}); model saved to {}",
        100.0 * right as f64 / total as f64,
        out.display()
    );
    Ok(())
}

/// Writes `config.json` and `model.bpk` in `dir`, each whole or not at all.
pub(crate) fn save<M: Module, C: Config>(model: &M, config: &C, dir: &Path) -> CliResult {
    let text = serde_json::to_string_pretty(config)
        .map_err(|e| CliError::Io(format!("cannot serialise the config: {e}")))?;
    write_atomic(&dir.join("config.json"), text.as_bytes())?;
    Ok(save_weights(model, dir)?)
}

/// Loads a folder written by `zoo train`, checking that every parameter was found.
fn load(dir: &Path, device: &Device) -> CliResult<SequenceClassifier> {
    let config_path = dir.join("config.json");
    let config = SequenceClassifierConfig::load(&config_path)
        .map_err(|e| CliError::Io(format!("cannot read {}: {e}", config_path.display())))?;
    Ok(load_weights(config.init(device), dir)?)
}

/// Right answers and total on the test split.
fn accuracy(model: &SequenceClassifier, device: &Device) -> CliResult<(usize, usize)> {
    use burn::data::dataloader::batcher::Batcher;
    let (_, test) = digits_split().map_err(data_error)?;
    let items = (0..test.len())
        .map(|i| test.get(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Io(format!("reading the test split: {e}")))?;
    let mut right = 0;
    for chunk in items.chunks(256) {
        let batch = DigitsBatcher.batch(chunk.to_vec(), device);
        let labels: Vec<usize> = chunk.iter().map(|i| i.label).collect();
        right += crate::train_vision::count_right(model.forward(batch.inputs), &labels)?;
    }
    Ok((right, items.len()))
}

pub fn eval(a: EvalArgs) -> CliResult {
    let device = device(Some(&a.device))?;
    // The run file, read once, says which kind of model the folder holds.
    let run = crate::common::read_run_file(&a.model)?;
    let graph = run
        .as_ref()
        .filter(|v| v.get("kind").and_then(|k| k.as_str()) == Some(crate::train_graph::GRAPH_KIND));
    let image = match graph {
        Some(_) => None,
        None => crate::train_vision::image_kind(&a.model, run.as_ref())?,
    };
    if a.img_size.is_some() && image.is_none() {
        return Err(CliError::Usage(format!(
            "--img-size is for image models; {} is not one",
            a.model.display()
        )));
    }
    let (right, total) = match (graph, image) {
        (Some(v), _) => crate::train_graph::eval_graph(&a.model, v, &device)?,
        (None, Some(kind)) => crate::train_vision::accuracy(
            &a.model,
            &kind,
            a.img_size.map(|side| (side, a.rate)),
            &device,
        )?,
        (None, None) => accuracy(&load(&a.model, &device)?, &device)?,
    };
    println!(
        "{{\"test_accuracy\": {:.4}, \"right\": {right}, \"total\": {total}}}",
        right as f64 / total as f64
    );
    Ok(())
}

/// The training progress as an indicatif bar per split on a terminal, and one line per split
/// with its metrics everywhere (burn's own non-terminal renderer prints a line per batch).
#[derive(Default)]
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    epoch: usize,
    epochs: usize,
    split: String,
    started: Option<std::time::Instant>,
    /// Metric names by id, and the latest value of each in the current split.
    names: Vec<(burn::train::metric::MetricId, String)>,
    latest: Vec<(String, String)>,
}

impl Progress {
    fn record(&mut self, state: burn::train::renderer::MetricState) {
        use burn::train::renderer::MetricState;
        let entry = match state {
            MetricState::Generic(e) | MetricState::Numeric(e, _) => e,
        };
        let name = self
            .names
            .iter()
            .find(|(id, _)| *id == entry.metric_id)
            .map_or_else(|| "metric".to_string(), |(_, n)| n.clone());
        let value = entry.serialized_entry.formatted;
        match self.latest.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.latest.push((name, value)),
        }
    }
}

impl burn::train::renderer::MetricsRendererTraining for Progress {
    fn update_train(&mut self, state: burn::train::renderer::MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: burn::train::renderer::MetricState) {
        self.record(state);
    }
}

impl burn::train::renderer::MetricsRendererEvaluation for Progress {
    fn update_test(
        &mut self,
        _name: burn::train::renderer::EvaluationName,
        state: burn::train::renderer::MetricState,
    ) {
        self.record(state);
    }
}

impl burn::train::logger::EvaluationProgressLogger for Progress {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, name: &str, total_items: usize) {
        burn::train::logger::TrainingProgressLogger::start_split(self, name, total_items);
    }
    fn update_test_progress(&mut self, items_processed: usize) {
        burn::train::logger::TrainingProgressLogger::update_split(self, items_processed);
    }
    fn end_test(&mut self) {
        burn::train::logger::TrainingProgressLogger::end_split(self);
    }
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}

impl burn::train::renderer::MetricsRenderer for Progress {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: burn::train::metric::MetricDefinition) {
        self.names
            .push((definition.metric_id, definition.name.to_string()));
    }
}

impl burn::train::logger::TrainingProgressLogger for Progress {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _total_items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.epochs = total_epochs;
        self.epoch = starting_epoch.max(1);
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, total_items: usize) {
        let bar = indicatif::ProgressBar::new(total_items as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} items ({elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("epoch {}/{} {split}", self.epoch, self.epochs));
        self.bar = Some(bar);
        self.split = split.to_string();
        self.started = Some(std::time::Instant::now());
        self.latest.clear();
    }

    fn update_split(&mut self, items_processed: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(items_processed as u64);
        }
    }

    fn end_split(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let secs = self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let metrics: Vec<String> = self
            .latest
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect();
        println!(
            "epoch {}/{} {}: {} ({secs:.1} s)",
            self.epoch,
            self.epochs,
            self.split,
            metrics.join(", ")
        );
    }

    fn end(&mut self) {}

    // Per-iteration events: the bar and the per-split lines already say it.
    fn log_event_training(&mut self, _event: String) {}
}
