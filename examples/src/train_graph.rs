//! `zoo train graph-mamba`: Graph-Mamba on node classification (a stochastic block model, or the
//! karate club from its two leaders' labels) or graph classification (a TU data set), trained
//! with burn-train (AdamW on the cross-entropy, accuracy and loss per epoch, checkpoints); the
//! model, its config and the data settings are saved so `zoo eval` reproduces the test accuracy.

use crate::common::{CliError, CliResult, RUN_FILE, device, usage, write_json};
use crate::train::{Progress, save};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig;
use burn::prelude::Config;
use burn::tensor::Device;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use clap::Args;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use ssm_datasets::graphs::{Graph, karate_club, read_tu, stochastic_block_model};
use ssm_models::graph::{
    GraphBatcher, GraphItem, GraphMamba, GraphMambaConfig, GraphTask, graph_items, node_items,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// sbm (node classification on a stochastic block model), karate (the two factions from
    /// two labelled nodes) or tu (graph classification; give --tu-dir and --tu-name).
    #[arg(long, default_value = "sbm")]
    data: String,
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
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the checkpoints, the model, its config and metrics.json go (default
    /// runs/graph-mamba-<data>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu, ndarray, wgpu, wgpu:N, cuda:N (default cpu).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// What a run trains on; saved in `zoo.json` so that `zoo eval` rebuilds the same test split.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct DataSettings {
    data: String,
    tu_dir: Option<PathBuf>,
    tu_name: Option<String>,
    block_size: usize,
    noise: f32,
    seed: u64,
}

/// The three splits as items, and what the model needs to know.
struct GraphData {
    train: Vec<GraphItem>,
    valid: Vec<GraphItem>,
    test: Vec<GraphItem>,
    features: usize,
    classes: usize,
    task: GraphTask,
    about: String,
}

fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..n).collect();
    ids.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    ids
}

/// Builds the data of a run. Node tasks: the SBM's nodes split 50/25/25 (train, validation,
/// test); the karate club trains on its two leaders (nodes 0 and 33) and validates and tests
/// on all the others. TU: 70/10/20 of the graphs, shuffled with the seed.
fn build(s: &DataSettings) -> CliResult<GraphData> {
    let data_err = |e: ssm_datasets::graphs::GraphError| CliError::Io(e.to_string());
    let item_err = |e: ssm_models::ModelError| CliError::Io(format!("{}: {e}", s.data));
    match s.data.as_str() {
        "sbm" | "karate" => {
            let g = if s.data == "sbm" {
                if s.block_size < 4 {
                    return Err(usage("--block-size must be at least 4"));
                }
                stochastic_block_model(4, s.block_size, 0.2, 0.02, s.noise, s.seed)
            } else {
                karate_club().map_err(data_err)?
            };
            let g = Arc::new(g);
            let classes = g
                .node_labels
                .as_ref()
                .and_then(|l| l.iter().max())
                .map_or(1, |m| m + 1);
            let (train, valid, test) = if s.data == "karate" {
                let rest: Vec<usize> = (1..g.nodes - 1).collect();
                (vec![0, g.nodes - 1], rest.clone(), rest)
            } else {
                let ids = shuffled(g.nodes, s.seed);
                let (a, b) = (g.nodes / 2, g.nodes * 3 / 4);
                (ids[..a].to_vec(), ids[a..b].to_vec(), ids[b..].to_vec())
            };
            let about = format!(
                "{}: {} nodes, {} edges, {classes} classes; {} training, {} validation, {} test nodes",
                s.data,
                g.nodes,
                g.edges.len(),
                train.len(),
                valid.len(),
                test.len()
            );
            Ok(GraphData {
                train: node_items(&g, &train).map_err(item_err)?,
                valid: node_items(&g, &valid).map_err(item_err)?,
                test: node_items(&g, &test).map_err(item_err)?,
                features: g.features,
                classes,
                task: GraphTask::Node,
                about,
            })
        }
        "tu" => {
            let (Some(dir), Some(name)) = (&s.tu_dir, &s.tu_name) else {
                return Err(usage("--data tu needs --tu-dir and --tu-name"));
            };
            let graphs: Vec<Arc<Graph>> = read_tu(dir, name)
                .map_err(data_err)?
                .into_iter()
                .map(Arc::new)
                .collect();
            if graphs.len() < 3 {
                return Err(CliError::Io(format!(
                    "{name}: {} graphs, too few for three splits",
                    graphs.len()
                )));
            }
            let items = graph_items(&graphs).map_err(item_err)?;
            let classes = graphs
                .iter()
                .filter_map(|g| g.label)
                .max()
                .map_or(1, |m| m + 1);
            let ids = shuffled(items.len(), s.seed);
            let n_test = (items.len() / 5).max(1);
            let n_valid = (items.len() / 10).max(1);
            let pick = |r: &[usize]| r.iter().map(|&i| items[i].clone()).collect::<Vec<_>>();
            let about = format!(
                "{name}: {} graphs, {classes} classes; {} train, {n_valid} validation, {n_test} test",
                items.len(),
                items.len() - n_test - n_valid
            );
            Ok(GraphData {
                test: pick(&ids[..n_test]),
                valid: pick(&ids[n_test..n_test + n_valid]),
                train: pick(&ids[n_test + n_valid..]),
                features: graphs[0].features,
                classes,
                task: GraphTask::Graph,
                about,
            })
        }
        d => Err(usage(format!("--data {d}: expected sbm, karate or tu"))),
    }
}

/// Right and total predictions over `items` (batches of `batch_size` graphs).
fn count(
    model: &GraphMamba,
    items: &[GraphItem],
    batch_size: usize,
    device: &Device,
) -> CliResult<(usize, usize)> {
    let (mut right, mut total) = (0, 0);
    for chunk in items.chunks(batch_size.max(1)) {
        let batch = GraphBatcher.batch(chunk.to_vec(), device);
        let labels: Vec<usize> = batch
            .targets
            .clone()
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|e| CliError::Io(format!("reading targets: {e:?}")))?
            .into_iter()
            .map(|t| t as usize)
            .collect();
        right += crate::train_vision::count_right(model.target_logits(&batch), &labels)?;
        total += labels.len();
    }
    Ok((right, total))
}

pub fn graph_mamba(a: GraphArgs) -> CliResult {
    if a.epochs == 0 || a.lr <= 0.0 || a.batch_size == 0 {
        return Err(usage("epochs and batch size must be at least 1, lr > 0"));
    }
    let settings = DataSettings {
        data: a.data.clone(),
        tu_dir: a.tu_dir.clone(),
        tu_name: a.tu_name.clone(),
        block_size: a.block_size,
        noise: a.noise,
        seed: a.seed,
    };
    let device = device(Some(&a.device))?;
    device.seed(a.seed);
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
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/graph-mamba-{}", a.data)));
    std::fs::create_dir_all(&out)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", out.display())))?;
    let batch = if data.task == GraphTask::Node {
        1
    } else {
        a.batch_size
    };
    let train = DataLoaderBuilder::new(GraphBatcher)
        .batch_size(batch)
        .shuffle(a.seed)
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
        &serde_json::json!({"kind": GRAPH_KIND, "data": settings}),
    )?;
    let metrics = serde_json::json!({
        "data": a.data,
        "train_accuracy": train_right as f64 / train_total.max(1) as f64,
        "test_accuracy": right as f64 / total.max(1) as f64,
        "test_right": right,
        "test_total": total,
    });
    write_json(&out.join("metrics.json"), &metrics)?;
    println!("{metrics}");
    Ok(())
}

/// The run-file kind of a `zoo train graph-mamba` folder.
pub(crate) const GRAPH_KIND: &str = "graph-mamba";

/// Test accuracy of a saved Graph-Mamba on the split its data settings rebuild; `run` is the
/// folder's run file.
pub(crate) fn eval_graph(
    dir: &Path,
    run: &serde_json::Value,
    device: &Device,
) -> CliResult<(usize, usize)> {
    let path = dir.join(RUN_FILE);
    let bad = |m: String| CliError::Io(format!("{}: {m}", path.display()));
    let v = run;
    let settings: DataSettings = serde_json::from_value(v.get("data").cloned().unwrap_or_default())
        .map_err(|e| bad(format!("data settings: {e}")))?;
    let config_path = dir.join("config.json");
    let config = GraphMambaConfig::load(&config_path)
        .map_err(|e| CliError::Io(format!("cannot read {}: {e}", config_path.display())))?;
    let model = ssm_models::checkpoint::load_weights(config.init(device), dir)?;
    let data = build(&settings)?;
    count(&model, &data.test, 32, device)
}
