//! `zoo train graph-mamba`: Graph-Mamba on node classification (a stochastic block model, or the
//! karate club from its two leaders' labels) or graph classification (a TU data set), trained
//! with burn-train (AdamW on the cross-entropy, accuracy and loss per epoch, checkpoints); the
//! model, its config and the data settings are saved so `zoo eval` reproduces the test accuracy.

use crate::common::args::RunArgs;
use crate::common::choices::{GraphData, ModelKind, name_of};
use crate::common::error::{CliError, CliResult, usage};
use crate::common::graph::{DataSettings, build, count};
use crate::common::progress::Progress;
use crate::common::run_file::{RUN_FILE, save, write_json};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use clap::Args;
use ssm_models::graph::{GraphBatcher, GraphMamba, GraphMambaConfig, GraphTask};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(mut_arg("out", |a| a.help(
    "Where the checkpoints, the model, its config and metrics.json go (default \
     runs/graph-mamba-<data>)"
)))]
pub struct GraphArgs {
    /// sbm (node classification on a stochastic block model), karate (the two factions from
    /// two labelled nodes) or tu (graph classification; give --tu-dir and --tu-name).
    #[arg(long, value_enum, default_value = "sbm")]
    data: GraphData,
    #[arg(long)]
    tu_dir: Option<PathBuf>,
    #[arg(long)]
    tu_name: Option<String>,
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    #[arg(long, default_value_t = 32)]
    dim: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 8)]
    d_state: usize,
    #[arg(long, default_value_t = 0.3)]
    dropout: f64,
    /// sbm: nodes per block (4 blocks).
    #[arg(long, default_value_t = 50)]
    block_size: usize,
    /// sbm: scale of the Gaussian noise on the one-hot block features.
    #[arg(long, default_value_t = 1.0)]
    noise: f32,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// Graphs per batch (tu).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[command(flatten)]
    run: RunArgs,
}

pub fn graph_mamba(a: GraphArgs) -> CliResult {
    if a.epochs == 0 || a.lr <= 0.0 || a.batch_size == 0 {
        return Err(usage("epochs and batch size must be at least 1, lr > 0"));
    }
    let settings = DataSettings {
        data: a.data,
        tu_dir: a.tu_dir.clone(),
        tu_name: a.tu_name.clone(),
        block_size: a.block_size,
        noise: a.noise,
        seed: a.run.seed(),
    };
    let device = a.run.device()?;
    device.seed(a.run.seed());
    let train_device = device.clone().autodiff();
    let data = build(&settings)?;
    println!("{}", data.about);
    let config = GraphMambaConfig::new(data.features, 1, data.classes)
        .with_dim(a.dim)
        .with_layers(a.layers)
        .with_d_state(a.d_state)
        .with_dropout(a.dropout)
        .with_task(data.task);
    config.validate().map_err(|e| usage(e.to_string()))?;
    let model = config.init(&train_device);
    println!("Graph-Mamba: {} parameters", model.num_params());
    let out = a
        .run
        .out_or(format!("runs/graph-mamba-{}", name_of(&a.data)));
    std::fs::create_dir_all(&out)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", out.display())))?;
    let batch = if data.task == GraphTask::Node {
        1
    } else {
        a.batch_size
    };
    let train = DataLoaderBuilder::new(GraphBatcher)
        .batch_size(batch)
        .shuffle(a.run.seed())
        .num_workers(1)
        .set_device(train_device.clone())
        .build(InMemDataset::new(data.train.clone()));
    let valid = DataLoaderBuilder::new(GraphBatcher)
        .batch_size(batch)
        .num_workers(1)
        .set_device(device.clone())
        .build(InMemDataset::new(data.valid.clone()));
    let lr = ModuleLrSchedulerConfig::new(a.lr.into())
        .init()
        .map_err(|e| usage(format!("learning rate: {e}")))?;
    let optim = AdamWConfig::new()
        .with_weight_decay(a.weight_decay as f32)
        .init();
    let (model_ckpt, optim_ckpt, sched_ckpt) = ssm_models::checkpoint::atomic_checkpointers(&out);
    let result = SupervisedTraining::new(&out, train, valid)
        .with_custom_checkpointers(model_ckpt, optim_ckpt, sched_ckpt)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .renderer(Box::new(Progress::default()))
        .num_epochs(a.epochs)
        .summary()
        .launch(Learner::new(model, optim, lr));
    if let Some(e) = result.error {
        return Err(CliError::Io(format!("training failed: {e}")));
    }
    let model: GraphMamba = result.model.valid();
    let (train_right, train_total) = count(&model, &data.train, a.batch_size, &device)?;
    let (right, total) = count(&model, &data.test, a.batch_size, &device)?;
    save(&model, &config, &out)?;
    write_json(
        &out.join(RUN_FILE),
        &serde_json::json!({"kind": ModelKind::GraphMamba.name(), "data": settings}),
    )?;
    let metrics = serde_json::json!({
        "data": name_of(&a.data),
        "train_accuracy": train_right as f64 / train_total.max(1) as f64,
        "test_accuracy": right as f64 / total.max(1) as f64,
        "test_right": right,
        "test_total": total,
    });
    write_json(&out.join("metrics.json"), &metrics)?;
    println!("{metrics}");
    Ok(())
}
