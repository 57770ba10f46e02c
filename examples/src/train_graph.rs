//! `zoo train graph-mamba`: Graph-Mamba on node classification (a stochastic block model, or the
//! karate club from its two leaders' labels) or graph classification (a TU data set), trained
//! with Adam on the cross-entropy; prints the loss as it goes and the test accuracy as JSON.

use crate::common::{CliError, CliResult, device};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::Args;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use ssm_datasets::graphs::{Graph, karate_club, read_tu, stochastic_block_model};
use ssm_models::graph::{GraphBatch, GraphMamba, GraphMambaConfig, GraphTask};
use std::path::PathBuf;

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
    /// cpu, ndarray, wgpu, wgpu:N, cuda:N (default cpu).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Packs graphs into one batch (node ids offset, a batch vector), edges both ways with a
/// constant edge feature.
fn pack(graphs: &[&Graph], device: &Device) -> GraphBatch {
    let features = graphs.first().map_or(1, |g| g.features);
    let (mut x, mut src, mut dst, mut batch) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0;
    for (i, g) in graphs.iter().enumerate() {
        x.extend_from_slice(&g.x);
        let (s, d) = g.directed();
        src.extend(s.iter().map(|v| v + offset));
        dst.extend(d.iter().map(|v| v + offset));
        batch.extend(std::iter::repeat_n(i, g.nodes));
        offset += g.nodes;
    }
    let e = src.len();
    GraphBatch {
        x: Tensor::from_data(TensorData::new(x, [offset, features]), device),
        edge_attr: Tensor::ones([e, 1], device),
        src,
        dst,
        batch,
    }
}

fn ints(v: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

/// Accuracy of `logits` rows `rows` against `labels`.
fn accuracy(logits: Tensor<2>, rows: &[usize], labels: &[usize]) -> f64 {
    let pred = logits
        .argmax(1)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .unwrap_or_default();
    let right = rows
        .iter()
        .filter(|&&r| pred[r] == labels[r] as i64)
        .count();
    right as f64 / rows.len().max(1) as f64
}

pub fn graph_mamba(a: GraphArgs) -> CliResult {
    if a.epochs == 0 || a.lr <= 0.0 || a.batch_size == 0 {
        return Err(CliError::Usage(
            "epochs and batch size must be at least 1, lr > 0".into(),
        ));
    }
    let device = device(Some(&a.device))?;
    device.seed(a.seed);
    let train_device = device.clone().autodiff();
    let data_err = |e: ssm_datasets::graphs::GraphError| CliError::Io(e.to_string());
    match a.data.as_str() {
        "sbm" | "karate" => {
            let g = if a.data == "sbm" {
                stochastic_block_model(4, a.block_size.max(1), 0.2, 0.02, a.noise, a.seed)
            } else {
                karate_club().map_err(data_err)?
            };
            let labels = g.node_labels.clone().expect("node labels");
            let classes = labels.iter().max().map_or(1, |m| m + 1);
            let (train, test): (Vec<usize>, Vec<usize>) = if a.data == "karate" {
                // The two leaders only (nodes 0 and 33), as in the semi-supervised setting.
                (vec![0, g.nodes - 1], (1..g.nodes - 1).collect())
            } else {
                let mut ids: Vec<usize> = (0..g.nodes).collect();
                ids.shuffle(&mut rand::rngs::StdRng::seed_from_u64(a.seed));
                let half = g.nodes / 2;
                (ids[..half].to_vec(), ids[half..].to_vec())
            };
            println!(
                "{}: {} nodes, {} edges, {classes} classes; {} training nodes, {} test nodes",
                a.data,
                g.nodes,
                g.edges.len(),
                train.len(),
                test.len()
            );
            let config = GraphMambaConfig::new(g.features, 1, classes)
                .with_dim(a.dim)
                .with_layers(a.layers)
                .with_d_state(a.d_state);
            config
                .validate()
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let mut model = config.init(&train_device);
            println!("Graph-Mamba: {} parameters", model.num_params());
            let batch = pack(&[&g], &train_device);
            let targets = ints(&labels, &train_device).select(0, ints(&train, &train_device));
            let ce = CrossEntropyLossConfig::new().init(&train_device);
            let mut optim = AdamWConfig::new()
                .with_weight_decay(a.weight_decay as f32)
                .init();
            for epoch in 1..=a.epochs {
                let logits = model.forward(&batch).select(0, ints(&train, &train_device));
                let loss = ce.forward(logits, targets.clone());
                if epoch == 1 || epoch % 10 == 0 || epoch == a.epochs {
                    println!(
                        "epoch {epoch}/{}: training loss {:.4}",
                        a.epochs,
                        loss.clone().into_scalar::<f32>()
                    );
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(a.lr, model, grads);
            }
            let model: GraphMamba = model.valid();
            let logits = model.forward(&pack(&[&g], &device));
            let train_acc = accuracy(logits.clone(), &train, &labels);
            let acc = accuracy(logits, &test, &labels);
            println!(
                "{}",
                serde_json::json!({
                    "data": a.data,
                    "train_accuracy": train_acc,
                    "test_accuracy": acc,
                    "test_nodes": test.len()
                })
            );
        }
        "tu" => {
            let (Some(dir), Some(name)) = (&a.tu_dir, &a.tu_name) else {
                return Err(CliError::Usage(
                    "--data tu needs --tu-dir and --tu-name".into(),
                ));
            };
            let graphs = read_tu(dir, name).map_err(data_err)?;
            let classes = graphs
                .iter()
                .filter_map(|g| g.label)
                .max()
                .map_or(1, |m| m + 1);
            let mut ids: Vec<usize> = (0..graphs.len()).collect();
            ids.shuffle(&mut rand::rngs::StdRng::seed_from_u64(a.seed));
            let n_test = (graphs.len() / 5).max(1);
            let (test, train) = ids.split_at(n_test);
            println!(
                "{name}: {} graphs, {classes} classes; {} train, {} test",
                graphs.len(),
                train.len(),
                test.len()
            );
            let config = GraphMambaConfig::new(graphs[0].features, 1, classes)
                .with_dim(a.dim)
                .with_layers(a.layers)
                .with_d_state(a.d_state)
                .with_dropout(a.dropout)
                .with_task(GraphTask::Graph);
            config
                .validate()
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let mut model = config.init(&train_device);
            let ce = CrossEntropyLossConfig::new().init(&train_device);
            let mut optim = AdamWConfig::new()
                .with_weight_decay(a.weight_decay as f32)
                .init();
            let label = |i: usize| graphs[i].label.unwrap_or(0);
            for epoch in 1..=a.epochs {
                let mut total = 0f32;
                for chunk in train.chunks(a.batch_size) {
                    let gs: Vec<&Graph> = chunk.iter().map(|&i| &graphs[i]).collect();
                    let y: Vec<usize> = chunk.iter().map(|&i| label(i)).collect();
                    let loss = ce.forward(
                        model.forward(&pack(&gs, &train_device)),
                        ints(&y, &train_device),
                    );
                    total += loss.clone().into_scalar::<f32>();
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    model = optim.step(a.lr, model, grads);
                }
                if epoch == 1 || epoch % 10 == 0 || epoch == a.epochs {
                    println!(
                        "epoch {epoch}/{}: training loss {:.4}",
                        a.epochs,
                        total / train.len().div_ceil(a.batch_size) as f32
                    );
                }
            }
            let model: GraphMamba = model.valid();
            let gs: Vec<&Graph> = test.iter().map(|&i| &graphs[i]).collect();
            let y: Vec<usize> = test.iter().map(|&i| label(i)).collect();
            let acc = accuracy(
                model.forward(&pack(&gs, &device)),
                &(0..y.len()).collect::<Vec<_>>(),
                &y,
            );
            println!(
                "{}",
                serde_json::json!({"data": name, "test_accuracy": acc, "test_graphs": test.len()})
            );
        }
        d => {
            return Err(CliError::Usage(format!(
                "--data {d}: expected sbm, karate or tu"
            )));
        }
    }
    Ok(())
}
