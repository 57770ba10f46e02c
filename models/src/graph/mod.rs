//! Graph networks on the Mamba mixer: Graph-Mamba (Wang et al., "Graph-Mamba: Towards Long-Range
//! Graph Sequence Modeling with Selective State Spaces", 2024) — a GraphGPS-style layer whose
//! local branch is a GatedGCN and whose global branch is a Mamba over each graph's nodes ordered
//! by degree.

pub mod gated_gcn;
pub mod graph_mamba;
pub mod train;

pub use gated_gcn::{GatedGcnConfig, GatedGcnLayer};
pub use graph_mamba::{
    GraphMamba, GraphMambaConfig, GraphMambaLayer, GraphTask, from_dense, mamba_in_order, to_dense,
};
pub use train::{GraphBatcher, GraphItem, GraphTrainBatch, graph_items, node_items};

use burn::tensor::{Device, Int, Tensor, TensorData};

/// A batch of graphs in the sparse layout: node features `x` (N, F), directed edges
/// `src → dst` (both directions listed for an undirected graph), edge features (E, Fe), and the
/// graph of each node (`batch`, non-decreasing: the nodes of a graph are contiguous).
#[derive(Debug, Clone)]
pub struct GraphBatch {
    /// Node features (N, F).
    pub x: Tensor<2>,
    /// Edge features (E, Fe), one row per entry of `src`/`dst`.
    pub edge_attr: Tensor<2>,
    /// Source node of each directed edge (E entries, each below N).
    pub src: Vec<usize>,
    /// Target node of each directed edge (E entries, each below N).
    pub dst: Vec<usize>,
    /// The graph of each node (N entries, non-decreasing, graphs numbered from 0).
    pub batch: Vec<usize>,
}

impl GraphBatch {
    /// Nodes N.
    pub fn nodes(&self) -> usize {
        self.batch.len()
    }

    /// Graphs in the batch.
    pub fn graphs(&self) -> usize {
        self.batch.last().map_or(0, |g| g + 1)
    }

    /// In-degree of every node (edges arriving at it).
    pub fn degrees(&self) -> Vec<usize> {
        let mut d = vec![0; self.nodes()];
        for &t in &self.dst {
            d[t] += 1;
        }
        d
    }

    /// Checks the indices.
    pub fn validate(&self) -> crate::Result<()> {
        let n = self.nodes();
        if self.src.len() != self.dst.len() {
            return Err(crate::ModelError::Invalid(format!(
                "{} sources for {} targets",
                self.src.len(),
                self.dst.len()
            )));
        }
        if let Some(&bad) = self.src.iter().chain(&self.dst).find(|&&i| i >= n) {
            return Err(crate::ModelError::Invalid(format!(
                "edge endpoint {bad} out of range for {n} nodes"
            )));
        }
        if self
            .batch
            .windows(2)
            .any(|w| w[1] < w[0] || w[1] > w[0] + 1)
        {
            return Err(crate::ModelError::Invalid(
                "the batch vector must be non-decreasing with graphs numbered 0, 1, ..".into(),
            ));
        }
        let [xn, _] = self.x.dims();
        let [en, _] = self.edge_attr.dims();
        if xn != n || en != self.src.len() {
            return Err(crate::ModelError::Invalid(format!(
                "x has {xn} rows for {n} nodes; edge_attr {en} rows for {} edges",
                self.src.len()
            )));
        }
        Ok(())
    }
}

/// An index vector as a Burn `Int` tensor.
pub(crate) fn index(v: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

/// The node order the global branch reads: within each graph, ascending `key` (ties broken by
/// node index). Returns the permutation `perm` (position → node) and its inverse.
pub fn order_by(batch: &[usize], key: &[f32]) -> (Vec<usize>, Vec<usize>) {
    let mut perm: Vec<usize> = (0..batch.len()).collect();
    perm.sort_by(|&a, &b| {
        batch[a]
            .cmp(&batch[b])
            .then(key[a].total_cmp(&key[b]))
            .then(a.cmp(&b))
    });
    let mut inverse = vec![0; perm.len()];
    for (pos, &node) in perm.iter().enumerate() {
        inverse[node] = pos;
    }
    (perm, inverse)
}

/// The dense layout of ordered nodes: for each graph a row of `max_nodes` slots (padding at the
/// end). Returns, per slot, the ordered position it holds (`None` for padding), and per ordered
/// position its slot.
pub fn dense_slots(batch_sorted: &[usize]) -> (usize, usize, Vec<Option<usize>>, Vec<usize>) {
    let graphs = batch_sorted.last().map_or(0, |g| g + 1);
    let mut counts = vec![0usize; graphs];
    for &g in batch_sorted {
        counts[g] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(0);
    let mut slots = vec![None; graphs * max];
    let mut slot_of = vec![0; batch_sorted.len()];
    let mut seen = vec![0usize; graphs];
    for (pos, &g) in batch_sorted.iter().enumerate() {
        let s = g * max + seen[g];
        seen[g] += 1;
        slots[s] = Some(pos);
        slot_of[pos] = s;
    }
    (graphs, max, slots, slot_of)
}
