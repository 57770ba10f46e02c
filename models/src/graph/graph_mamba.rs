//! The Graph-Mamba layer and network (GraphGPS-style, the reference's
//! "Mamba_Hybrid_Degree_Noise" global model):
//!
//! ```text
//! h_local = BN(GatedGCN(h, e))                                   (residual inside GatedGCN)
//! order   = nodes of each graph by ascending degree (+ U(0,1) noise in training)
//! h_attn  = BN(h + dropout(Mamba(dense(h[order]))[order⁻¹]))     (5 orderings averaged in eval)
//! h       = BN(h_local + h_attn + FFN(h_local + h_attn))
//! ```
//!
//! The dense layout puts each graph's ordered nodes in one row, padded at the end (Mamba is
//! causal, so padding never reaches a node).

use crate::graph::gated_gcn::{GatedGcnConfig, GatedGcnLayer};
use crate::graph::{GraphBatch, dense_slots, index, order_by};
use crate::ssm::SequenceMixer;
use crate::ssm::mamba::{MambaMixer, MambaMixerConfig};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, IndexingUpdateOp, Tensor};

/// What the network predicts.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum GraphTask {
    /// One label per node.
    Node,
    /// One label per graph (mean-pooled nodes).
    Graph,
}

/// Configuration of a [`GraphMamba`].
#[derive(Config, Debug)]
pub struct GraphMambaConfig {
    /// Node input features.
    pub node_features: usize,
    /// Edge input features (1 for graphs without edge features: a constant).
    pub edge_features: usize,
    /// Output classes of the head.
    pub classes: usize,
    /// Hidden width d of nodes and edges.
    #[config(default = 64)]
    pub dim: usize,
    /// Number of Graph-Mamba layers.
    #[config(default = 3)]
    pub layers: usize,
    /// State size of each layer's Mamba.
    #[config(default = 16)]
    pub d_state: usize,
    /// Dropout rate in [0, 1) in the GatedGCN, the global branch and the FFN.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Orderings averaged at evaluation.
    #[config(default = 5)]
    pub eval_orderings: usize,
    /// Whether the head predicts per node or per graph.
    #[config(default = "GraphTask::Node")]
    pub task: GraphTask,
}

impl GraphMambaConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> crate::Result<()> {
        let sizes = [
            self.node_features,
            self.edge_features,
            self.classes,
            self.dim,
            self.layers,
            self.d_state,
            self.eval_orderings,
        ];
        if sizes.contains(&0) || !(0.0..1.0).contains(&self.dropout) {
            return Err(crate::ModelError::InvalidConfig(
                "graph-mamba: sizes must be positive and 0 <= dropout < 1".into(),
            ));
        }
        Ok(())
    }

    /// A model with PyTorch-default Linear init and mamba_ssm's mixer init.
    ///
    /// # Panics
    /// On an invalid configuration (see [`GraphMambaConfig::validate`]).
    pub fn init(&self, device: &Device) -> GraphMamba {
        self.validate().unwrap_or_else(|e| panic!("{e}"));
        let d = self.dim;
        let bn = || BatchNormConfig::new(d).init(device);
        GraphMamba {
            node_encoder: LinearConfig::new(self.node_features, d).init(device),
            edge_encoder: LinearConfig::new(self.edge_features, d).init(device),
            layers: (0..self.layers)
                .map(|_| GraphMambaLayer {
                    local_model: GatedGcnConfig::new(d)
                        .with_dropout(self.dropout)
                        .init(device),
                    self_attn: MambaMixerConfig::new(d)
                        .with_d_state(self.d_state)
                        .init(device),
                    norm1_local: bn(),
                    norm1_attn: bn(),
                    ff_linear1: LinearConfig::new(d, 2 * d).init(device),
                    ff_linear2: LinearConfig::new(2 * d, d).init(device),
                    norm2: bn(),
                    dropout: DropoutConfig::new(self.dropout).init(),
                    eval_orderings: self.eval_orderings,
                })
                .collect(),
            head_hidden: (self.task == GraphTask::Graph)
                .then(|| LinearConfig::new(d, d).init(device)),
            head: LinearConfig::new(d, self.classes).init(device),
        }
    }
}

/// One Graph-Mamba layer.
#[derive(Module, Debug)]
pub struct GraphMambaLayer {
    /// The local branch: a GatedGCN over the edges.
    pub local_model: GatedGcnLayer,
    /// The global branch: a Mamba over each graph's nodes by ascending degree.
    pub self_attn: MambaMixer,
    /// BatchNorm of the local branch's output.
    pub norm1_local: BatchNorm,
    /// BatchNorm of the global branch plus its residual.
    pub norm1_attn: BatchNorm,
    /// First FFN layer, d → 2d.
    pub ff_linear1: Linear,
    /// Second FFN layer, 2d → d.
    pub ff_linear2: Linear,
    /// BatchNorm after the FFN residual.
    pub norm2: BatchNorm,
    /// Dropout on the global branch and inside the FFN.
    pub dropout: Dropout,
    /// Random degree orderings averaged at evaluation (one in training).
    pub eval_orderings: usize,
}

/// The nodes (N, d) of each graph in the order of `key` (ascending within each graph, ties by
/// index) laid out densely, one graph per row padded at the end with zeros: (graphs, max, d).
/// Also returns, per node, its row in the flattened (graphs·max, d) layout, for [`from_dense`].
pub fn to_dense(h: Tensor<2>, batch: &[usize], key: &[f32]) -> (Tensor<3>, Vec<usize>) {
    let device = h.device();
    let [n, d] = h.dims();
    let (perm, inverse) = order_by(batch, key);
    let batch_sorted: Vec<usize> = perm.iter().map(|&i| batch[i]).collect();
    let (graphs, max, slots, slot_of) = dense_slots(&batch_sorted);
    let padded = Tensor::cat(
        vec![
            h.select(0, index(&perm, &device)),
            Tensor::zeros([1, d], &device),
        ],
        0,
    );
    let gather: Vec<usize> = slots.iter().map(|s| s.unwrap_or(n)).collect();
    let dense = padded
        .select(0, index(&gather, &device))
        .reshape([graphs, max, d]);
    let back = (0..n).map(|node| slot_of[inverse[node]]).collect();
    (dense, back)
}

/// The inverse of [`to_dense`]: (graphs, max, d) back to the original node order (N, d).
pub fn from_dense(dense: Tensor<3>, back: &[usize]) -> Tensor<2> {
    let [g, m, d] = dense.dims();
    let device = dense.device();
    dense.reshape([g * m, d]).select(0, index(back, &device))
}

/// Runs `mamba` over each graph's nodes in the order of `key`; outputs in node order (N, d).
pub fn mamba_in_order(mamba: &MambaMixer, h: Tensor<2>, batch: &[usize], key: &[f32]) -> Tensor<2> {
    let (dense, back) = to_dense(h, batch, key);
    from_dense(mamba.forward(dense), &back)
}

impl GraphMambaLayer {
    /// New node (N, d) and edge (E, d) features.
    pub fn forward(&self, h: Tensor<2>, e: Tensor<2>, g: &GraphBatch) -> (Tensor<2>, Tensor<2>) {
        let training = h.device().is_autodiff();
        let (h_local, e) = self.local_model.forward(h.clone(), e, g);
        let h_local = self.norm1_local.forward(h_local);
        let degrees: Vec<f32> = g.degrees().iter().map(|&d| d as f32).collect();
        // Tie-breaking noise from the device's generator, so `Device::seed` makes runs repeat.
        let device = h.device();
        let noisy = || -> Vec<f32> {
            let u = Tensor::<1>::random([degrees.len()], Distribution::Uniform(0.0, 1.0), &device);
            degrees
                .iter()
                .zip(ssm_backends::to_vec(u))
                .map(|(d, n)| d + n)
                .collect()
        };
        let h_attn = if training {
            mamba_in_order(&self.self_attn, h.clone(), &g.batch, &noisy())
        } else {
            let runs: Vec<Tensor<2>> = (0..self.eval_orderings)
                .map(|_| mamba_in_order(&self.self_attn, h.clone(), &g.batch, &noisy()))
                .collect();
            Tensor::stack::<3>(runs, 0).mean_dim(0).squeeze_dim(0)
        };
        let h_attn = self.norm1_attn.forward(h + self.dropout.forward(h_attn));
        let h = h_local + h_attn;
        let ff = self.dropout.forward(
            self.ff_linear2.forward(
                self.dropout
                    .forward(relu(self.ff_linear1.forward(h.clone()))),
            ),
        );
        (self.norm2.forward(h + ff), e)
    }
}

/// The Graph-Mamba network: node and edge encoders, layers, a node or graph head.
#[derive(Module, Debug)]
pub struct GraphMamba {
    /// Linear from the node input features to d.
    pub node_encoder: Linear,
    /// Linear from the edge input features to d.
    pub edge_encoder: Linear,
    /// The Graph-Mamba layers.
    pub layers: Vec<GraphMambaLayer>,
    /// The graph head's hidden layer (graph tasks).
    pub head_hidden: Option<Linear>,
    /// The output layer, d → classes.
    pub head: Linear,
}

impl GraphMamba {
    /// Node embeddings after the layers (N, d).
    pub fn embed(&self, g: &GraphBatch) -> Tensor<2> {
        let mut h = self.node_encoder.forward(g.x.clone());
        let mut e = self.edge_encoder.forward(g.edge_attr.clone());
        for layer in &self.layers {
            (h, e) = layer.forward(h, e, g);
        }
        h
    }

    /// Logits: (N, classes) for a node task, (graphs, classes) for a graph task.
    pub fn forward(&self, g: &GraphBatch) -> Tensor<2> {
        let h = self.embed(g);
        match &self.head_hidden {
            None => self.head.forward(h),
            Some(hidden) => {
                let device = h.device();
                let [_, d] = h.dims();
                let graphs = g.graphs();
                let sums = Tensor::<2>::zeros([graphs, d], &device).select_assign(
                    0,
                    index(&g.batch, &device),
                    h,
                    IndexingUpdateOp::Add,
                );
                let mut counts = vec![0f32; graphs];
                for &b in &g.batch {
                    counts[b] += 1.0;
                }
                let counts =
                    Tensor::<1>::from_floats(counts.as_slice(), &device).reshape([graphs, 1]);
                self.head.forward(relu(hidden.forward(sums / counts)))
            }
        }
    }
}
