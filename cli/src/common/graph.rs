//! Graph-Mamba's data and scores, shared by `zoo train graph-mamba` and `zoo eval`: the splits
//! a run's data settings build (saved in its `zoo.json`, so that `zoo eval` rebuilds the same
//! test split), and the right predictions of a model over them.

use super::choices::{GraphData, name_of};
use super::error::{CliError, CliResult, usage};
use super::measure::count_right;
use super::run_file::{RUN_FILE, load_config};
use burn::data::dataloader::batcher::Batcher;
use burn::tensor::Device;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use ssm_datasets::graphs::{Graph, karate_club, read_tu, stochastic_block_model};
use ssm_models::checkpoint::load_weights;
use ssm_models::graph::{
    GraphBatcher, GraphItem, GraphMamba, GraphMambaConfig, GraphTask, graph_items, node_items,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a run trains on; saved in `zoo.json` so that `zoo eval` rebuilds the same test split.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DataSettings {
    pub data: GraphData,
    pub tu_dir: Option<PathBuf>,
    pub tu_name: Option<String>,
    pub block_size: usize,
    pub noise: f32,
    pub seed: u64,
}

/// The three splits as items, and what the model needs to know.
pub struct GraphSplits {
    pub train: Vec<GraphItem>,
    pub valid: Vec<GraphItem>,
    pub test: Vec<GraphItem>,
    pub features: usize,
    pub classes: usize,
    pub task: GraphTask,
    pub about: String,
}

fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..n).collect();
    ids.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    ids
}

/// Builds the data of a run. Node tasks: the SBM's nodes split 50/25/25 (train, validation,
/// test); the karate club trains on its two leaders (nodes 0 and 33) and validates and tests
/// on all the others. TU: 70/10/20 of the graphs, shuffled with the seed.
pub fn build(s: &DataSettings) -> CliResult<GraphSplits> {
    let data_err = |e: ssm_datasets::graphs::GraphError| CliError::Io(e.to_string());
    let data = name_of(&s.data);
    let item_err = |e: ssm_models::ModelError| CliError::Io(format!("{data}: {e}"));
    match s.data {
        GraphData::Sbm | GraphData::Karate => {
            let g = if s.data == GraphData::Sbm {
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
            let (train, valid, test) = if s.data == GraphData::Karate {
                let rest: Vec<usize> = (1..g.nodes - 1).collect();
                (vec![0, g.nodes - 1], rest.clone(), rest)
            } else {
                let ids = shuffled(g.nodes, s.seed);
                let (a, b) = (g.nodes / 2, g.nodes * 3 / 4);
                (ids[..a].to_vec(), ids[a..b].to_vec(), ids[b..].to_vec())
            };
            let about = format!(
                "{}: {} nodes, {} edges, {classes} classes; {} training, {} validation, {} test nodes",
                data,
                g.nodes,
                g.edges.len(),
                train.len(),
                valid.len(),
                test.len()
            );
            Ok(GraphSplits {
                train: node_items(&g, &train).map_err(item_err)?,
                valid: node_items(&g, &valid).map_err(item_err)?,
                test: node_items(&g, &test).map_err(item_err)?,
                features: g.features,
                classes,
                task: GraphTask::Node,
                about,
            })
        }
        GraphData::Tu => {
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
            Ok(GraphSplits {
                test: pick(&ids[..n_test]),
                valid: pick(&ids[n_test..n_test + n_valid]),
                train: pick(&ids[n_test + n_valid..]),
                features: graphs[0].features,
                classes,
                task: GraphTask::Graph,
                about,
            })
        }
    }
}

/// Right and total predictions over `items` (batches of `batch_size` graphs).
pub fn count(
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
        right += count_right(model.target_logits(&batch), &labels)?;
        total += labels.len();
    }
    Ok((right, total))
}

/// Test accuracy of a saved Graph-Mamba on the split its data settings rebuild; `run` is the
/// folder's run file.
pub fn eval_graph(
    dir: &Path,
    run: &serde_json::Value,
    device: &Device,
) -> CliResult<(usize, usize)> {
    let path = dir.join(RUN_FILE);
    let bad = |m: String| CliError::Io(format!("{}: {m}", path.display()));
    let v = run;
    let settings: DataSettings = serde_json::from_value(v.get("data").cloned().unwrap_or_default())
        .map_err(|e| bad(format!("data settings: {e}")))?;
    let config: GraphMambaConfig = load_config(dir)?;
    let model = load_weights(config.init(device), dir)?;
    let data = build(&settings)?;
    count(&model, &data.test, 32, device)
}
