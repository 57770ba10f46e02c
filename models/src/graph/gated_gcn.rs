//! The GatedGCN layer (Bresson & Laurent, "Residual Gated Graph ConvNets", 2017) as GraphGPS
//! uses it: for an edge j → i,
//!
//! ```text
//! ê_ij = C e_ij + D h_i + E h_j;   σ_ij = sigmoid(ê_ij)
//! ĥ_i  = A h_i + Σ_j σ_ij ⊙ B h_j / (Σ_j σ_ij + ε)
//! h_i ← h_i + dropout(relu(BN(ĥ_i)));   e_ij ← e_ij + dropout(relu(BN(ê_ij)))
//! ```
//!
//! Field names follow GraphGPS (`A`, `B`, `C`, `D`, `E`, `bn_node_x`, `bn_edge_e`).
#![allow(non_snake_case)]

use crate::graph::{GraphBatch, index};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, IndexingUpdateOp, Tensor};

/// Configuration of a [`GatedGcnLayer`].
#[derive(Config, Debug)]
pub struct GatedGcnConfig {
    /// Node and edge width.
    pub dim: usize,
    /// Dropout rate on the new node and edge features.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Residual connections on nodes and edges.
    #[config(default = true)]
    pub residual: bool,
}

impl GatedGcnConfig {
    /// A layer with Burn's default Linear init and fresh BatchNorms.
    pub fn init(&self, device: &Device) -> GatedGcnLayer {
        let lin = || LinearConfig::new(self.dim, self.dim).init(device);
        GatedGcnLayer {
            A: lin(),
            B: lin(),
            C: lin(),
            D: lin(),
            E: lin(),
            bn_node_x: BatchNormConfig::new(self.dim).init(device),
            bn_edge_e: BatchNormConfig::new(self.dim).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            residual: self.residual,
        }
    }
}

/// The GatedGCN layer.
#[derive(Module, Debug)]
pub struct GatedGcnLayer {
    /// Node self term `A h_i`, (d, d).
    pub A: Linear,
    /// Neighbour message `B h_j`, (d, d).
    pub B: Linear,
    /// Edge term `C e_ij` of the gate, (d, d).
    pub C: Linear,
    /// Target-node term `D h_i` of the gate, (d, d).
    pub D: Linear,
    /// Source-node term `E h_j` of the gate, (d, d).
    pub E: Linear,
    /// BatchNorm of the aggregated node features.
    pub bn_node_x: BatchNorm,
    /// BatchNorm of the gate pre-activations (the new edge features).
    pub bn_edge_e: BatchNorm,
    /// Dropout after the ReLU, on nodes and edges.
    pub dropout: Dropout,
    /// Whether the layer adds its output to its input (nodes and edges).
    pub residual: bool,
}

impl GatedGcnLayer {
    /// New node features (N, d) and edge features (E, d).
    pub fn forward(&self, h: Tensor<2>, e: Tensor<2>, g: &GraphBatch) -> (Tensor<2>, Tensor<2>) {
        let device = h.device();
        let [n, d] = h.dims();
        let (src, dst) = (index(&g.src, &device), index(&g.dst, &device));
        let ah = self.A.forward(h.clone());
        let bh = self.B.forward(h.clone());
        let dh = self.D.forward(h.clone());
        let eh = self.E.forward(h.clone());
        let ce = self.C.forward(e.clone());
        // Edge j → i: target i = dst, source j = src.
        let e_hat = ce + dh.select(0, dst.clone()) + eh.select(0, src.clone());
        let sigma = sigmoid(e_hat.clone());
        let num = Tensor::<2>::zeros([n, d], &device).select_assign(
            0,
            dst.clone(),
            sigma.clone() * bh.select(0, src),
            IndexingUpdateOp::Add,
        );
        let den =
            Tensor::<2>::zeros([n, d], &device).select_assign(0, dst, sigma, IndexingUpdateOp::Add);
        let h_hat = ah + num / (den + 1e-6);
        let h_new = self.dropout.forward(relu(self.bn_node_x.forward(h_hat)));
        let e_new = self.dropout.forward(relu(self.bn_edge_e.forward(e_hat)));
        if self.residual {
            (h + h_new, e + e_new)
        } else {
            (h_new, e_new)
        }
    }
}
