//! Graph batches for burn-train: [`GraphItem`]s (a graph, and for node tasks the nodes to
//! score), the [`GraphBatcher`] packing them into a [`GraphBatch`] with targets, and
//! [`GraphMamba`]'s train and inference steps (cross-entropy, [`ClassificationOutput`]).

use super::{GraphBatch, GraphMamba};
use burn::data::dataloader::batcher::Batcher;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use ssm_datasets::graphs::Graph;
use std::sync::Arc;

/// One example: a graph and, for a node task, the nodes whose labels are scored (the training
/// nodes of a split); `None` for a graph task (the graph's own label is the target).
#[derive(Debug, Clone)]
pub struct GraphItem {
    /// The graph, shared between items without copying.
    pub graph: Arc<Graph>,
    /// The node indices whose labels are scored (node task); `None` for a graph task.
    pub nodes: Option<Vec<usize>>,
}

/// Packed graphs with their targets: per graph (graph task) or per scored node, whose rows of
/// the node logits `rows` gives.
#[derive(Debug, Clone)]
pub struct GraphTrainBatch {
    /// The packed graphs.
    pub graphs: GraphBatch,
    /// Class labels (T): one per graph (graph task) or per scored node.
    pub targets: Tensor<1, Int>,
    /// For a node task, the row of each target in the node logits (T); `None` for a graph task.
    pub rows: Option<Tensor<1, Int>>,
}

impl GraphBatch {
    /// Packs graphs into one batch: node ids offset, a batch vector, both directions of every
    /// edge, a constant edge feature (1).
    pub fn pack(graphs: &[&Graph], device: &Device) -> GraphBatch {
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
}

fn ints(v: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

/// Packs [`GraphItem`]s. Node items contribute their scored nodes (labels from
/// `node_labels`), graph items their graph label. The items' labels are checked where the
/// items are made ([`graph_items`], [`node_items`]).
#[derive(Debug, Clone, Default)]
pub struct GraphBatcher;

impl Batcher<GraphItem, GraphTrainBatch> for GraphBatcher {
    fn batch(&self, items: Vec<GraphItem>, device: &Device) -> GraphTrainBatch {
        let graphs: Vec<&Graph> = items.iter().map(|i| i.graph.as_ref()).collect();
        let packed = GraphBatch::pack(&graphs, device);
        let node_task = items.iter().any(|i| i.nodes.is_some());
        if node_task {
            let (mut rows, mut targets, mut offset) = (Vec::new(), Vec::new(), 0);
            for item in &items {
                let labels = item.graph.node_labels.as_deref().unwrap_or(&[]);
                for &n in item.nodes.as_deref().unwrap_or(&[]) {
                    rows.push(offset + n);
                    targets.push(labels.get(n).copied().unwrap_or(0));
                }
                offset += item.graph.nodes;
            }
            GraphTrainBatch {
                graphs: packed,
                targets: ints(&targets, device),
                rows: Some(ints(&rows, device)),
            }
        } else {
            let targets: Vec<usize> = items.iter().map(|i| i.graph.label.unwrap_or(0)).collect();
            GraphTrainBatch {
                graphs: packed,
                targets: ints(&targets, device),
                rows: None,
            }
        }
    }
}

impl GraphMamba {
    /// Logits of the batch's targets: the scored nodes' rows (node task) or one per graph.
    pub fn target_logits(&self, batch: &GraphTrainBatch) -> Tensor<2> {
        let logits = self.forward(&batch.graphs);
        match &batch.rows {
            Some(rows) => logits.select(0, rows.clone()),
            None => logits,
        }
    }

    /// Cross-entropy loss and logits of a batch.
    pub fn classify(&self, batch: GraphTrainBatch) -> ClassificationOutput {
        let logits = self.target_logits(&batch);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl TrainStep for GraphMamba {
    type Input = GraphTrainBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: GraphTrainBatch) -> TrainOutput<ClassificationOutput> {
        let out = self.classify(batch);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl InferenceStep for GraphMamba {
    type Input = GraphTrainBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: GraphTrainBatch) -> ClassificationOutput {
        self.classify(batch)
    }
}

/// Items of a graph task, checking that every graph has a label.
pub fn graph_items(graphs: &[Arc<Graph>]) -> crate::Result<Vec<GraphItem>> {
    graphs
        .iter()
        .enumerate()
        .map(|(i, g)| match g.label {
            Some(_) => Ok(GraphItem {
                graph: g.clone(),
                nodes: None,
            }),
            None => Err(crate::ModelError::Invalid(format!(
                "graph {i} has no label"
            ))),
        })
        .collect()
}

/// The item of a node task on one graph scoring `nodes`, checking that they exist and are
/// labelled.
pub fn node_items(graph: &Arc<Graph>, nodes: &[usize]) -> crate::Result<Vec<GraphItem>> {
    let labels = graph
        .node_labels
        .as_ref()
        .ok_or_else(|| crate::ModelError::Invalid("the graph has no node labels".into()))?;
    if let Some(&bad) = nodes
        .iter()
        .find(|&&n| n >= graph.nodes || n >= labels.len())
    {
        return Err(crate::ModelError::Invalid(format!(
            "node {bad} is not a labelled node of the graph"
        )));
    }
    Ok(vec![GraphItem {
        graph: graph.clone(),
        nodes: Some(nodes.to_vec()),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(n: usize, label: Option<usize>, node_labels: Option<Vec<usize>>) -> Arc<Graph> {
        Arc::new(Graph {
            nodes: n,
            x: (0..n).map(|i| i as f32).collect(),
            features: 1,
            edges: (1..n).map(|i| (i - 1, i)).collect(),
            node_labels,
            label,
        })
    }

    fn ints_of(t: Tensor<1, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
    }

    #[test]
    fn batches_offset_nodes_and_pick_targets() {
        let device = Device::flex();
        // Node task: the scored nodes' rows and labels.
        let g = path(4, None, Some(vec![1, 0, 1, 0]));
        let b = GraphBatcher.batch(node_items(&g, &[3, 0]).unwrap(), &device);
        assert_eq!(ints_of(b.rows.clone().unwrap()), [3, 0]);
        assert_eq!(ints_of(b.targets.clone()), [0, 1]);
        assert_eq!(b.graphs.src.len(), 6, "both directions of 3 edges");
        // Graph task: two graphs packed with offset node ids, one target each.
        let items = graph_items(&[path(2, Some(1), None), path(3, Some(0), None)]).unwrap();
        let b = GraphBatcher.batch(items, &device);
        assert!(b.rows.is_none());
        assert_eq!(ints_of(b.targets), [1, 0]);
        assert_eq!(b.graphs.batch, [0, 0, 1, 1, 1]);
        assert_eq!(b.graphs.src.iter().max(), Some(&4));
        b.graphs.validate().unwrap();
        // Bad items are refused where they are made.
        assert!(
            graph_items(&[path(2, None, None)])
                .unwrap_err()
                .to_string()
                .contains("graph 0")
        );
        assert!(
            node_items(&g, &[4])
                .unwrap_err()
                .to_string()
                .contains("node 4")
        );
        assert!(node_items(&path(2, None, None), &[0]).is_err());
    }
}
