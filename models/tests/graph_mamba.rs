//! Graph-Mamba: shapes for node and graph tasks, the degree ordering and its inverse, the
//! GatedGCN branch's equivariance to relabelling the nodes, and a short training run lowering
//! the loss.

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use ssm_backends::testing::{TestRng, assert_rel, seeded};
use ssm_backends::to_vec;
use ssm_datasets::graphs::stochastic_block_model;
use ssm_models::graph::{
    GatedGcnConfig, GraphBatch, GraphMambaConfig, GraphTask, from_dense, to_dense,
};

/// Two small graphs: a 4-cycle and a triangle with a tail.
fn batch(device: &Device, features: usize, rng: &mut TestRng) -> GraphBatch {
    let edges = [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 0),
        (4, 5),
        (5, 6),
        (6, 4),
        (6, 7),
    ];
    let (mut src, mut dst) = (Vec::new(), Vec::new());
    for (a, b) in edges {
        src.extend([a, b]);
        dst.extend([b, a]);
    }
    let e = src.len();
    GraphBatch {
        x: rng.tensor([8, features], Distribution::Normal(0.0, 1.0), device),
        edge_attr: rng.tensor([e, 2], Distribution::Normal(0.0, 1.0), device),
        src,
        dst,
        batch: vec![0, 0, 0, 0, 1, 1, 1, 1],
    }
}

#[test]
fn node_and_graph_heads_have_the_right_shapes() {
    let device = Device::flex();
    let mut rng = TestRng::new(91);
    let g = batch(&device, 5, &mut rng);
    g.validate().unwrap();
    let config = GraphMambaConfig::new(5, 2, 3)
        .with_dim(16)
        .with_layers(2)
        .with_d_state(4);
    {
        // The inits and the forwards (their tie-breaking noise) draw from the device's generator.
        let _seed = seeded(&device, 91);
        assert_eq!(config.init(&device).forward(&g).dims(), [8, 3]);
        let graph = config.with_task(GraphTask::Graph).init(&device);
        assert_eq!(graph.forward(&g).dims(), [2, 3]);
    }
    let mut bad = g.clone();
    bad.dst[0] = 8;
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("out of range")
    );
}

#[test]
fn ordering_by_degree_then_back_restores_the_nodes() {
    let device = Device::flex();
    let ids: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let h = Tensor::<1>::from_floats(ids.as_slice(), &device).reshape([8, 1]);
    let batch = [0, 0, 0, 1, 1, 1, 1, 1];
    let key = [2.5, 0.5, 1.5, 3.0, 1.0, 2.0, 0.0, 1.0];
    let (dense, back) = to_dense(h.clone(), &batch, &key);
    assert_eq!(dense.dims(), [2, 5, 1]);
    // Graph 0 by key: nodes 1, 2, 0 then two padding slots; graph 1: 6, 4, 7, 5, 3.
    assert_eq!(
        to_vec(dense.clone()),
        [1.0, 2.0, 0.0, 0.0, 0.0, 6.0, 4.0, 7.0, 5.0, 3.0]
    );
    assert_eq!(to_vec(from_dense(dense, &back)), ids);
}

#[test]
fn the_gated_gcn_branch_is_equivariant_to_relabelling() {
    let device = Device::flex();
    let layer = {
        let _seed = seeded(&device, 92);
        GatedGcnConfig::new(6).init(&device)
    };
    let mut rng = TestRng::new(92);
    let mut g = batch(&device, 6, &mut rng);
    g.batch = vec![0; 8];
    g.edge_attr = rng.tensor([16, 6], Distribution::Normal(0.0, 1.0), &device);
    let (h, e) = layer.forward(g.x.clone(), g.edge_attr.clone(), &g);
    // Relabel: new node k is old node perm[k].
    let perm = [5usize, 2, 7, 0, 3, 6, 1, 4];
    let mut new_of = [0usize; 8];
    for (k, &old) in perm.iter().enumerate() {
        new_of[old] = k;
    }
    let take = |t: Tensor<2>, idx: &[usize]| {
        let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        t.select(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(v, [idx.len()]), &device),
        )
    };
    let relabelled = GraphBatch {
        x: take(g.x.clone(), &perm),
        edge_attr: g.edge_attr.clone(),
        src: g.src.iter().map(|&s| new_of[s]).collect(),
        dst: g.dst.iter().map(|&d| new_of[d]).collect(),
        batch: vec![0; 8],
    };
    let (h2, e2) = layer.forward(
        relabelled.x.clone(),
        relabelled.edge_attr.clone(),
        &relabelled,
    );
    // Measured 0 for both (Flex).
    assert_rel(
        "relabelled node features",
        &to_vec(h2),
        &to_vec(take(h, &perm)),
        1e-6,
    );
    assert_rel("relabelled edge features", &to_vec(e2), &to_vec(e), 1e-6);
}

#[test]
fn a_short_training_run_lowers_the_loss() {
    let device = Device::flex().autodiff();
    let sbm = stochastic_block_model(3, 12, 0.4, 0.03, 1.0, 5);
    let (src, dst) = sbm.directed();
    let e = src.len();
    let g = GraphBatch {
        x: Tensor::from_data(
            TensorData::new(sbm.x.clone(), [sbm.nodes, sbm.features]),
            &device,
        ),
        edge_attr: Tensor::ones([e, 1], &device),
        src,
        dst,
        batch: vec![0; sbm.nodes],
    };
    let labels: Vec<i64> = sbm.node_labels.unwrap().iter().map(|&l| l as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [sbm.nodes]), &device);
    // The init, dropout and the orderings' tie-breaking noise draw from the device's
    // generator: the whole run is seeded.
    let _seed = seeded(&device, 93);
    let mut model = GraphMambaConfig::new(3, 1, 3)
        .with_dim(16)
        .with_layers(2)
        .with_d_state(4)
        .init(&device);
    let mut optim = AdamConfig::new().init();
    let ce = burn::nn::loss::CrossEntropyLossConfig::new().init(&device);
    let loss = |m: &ssm_models::graph::GraphMamba| ce.forward(m.forward(&g), targets.clone());
    let first: f32 = loss(&model).into_scalar();
    for _ in 0..30 {
        let l = loss(&model);
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let last: f32 = loss(&model).into_scalar();
    assert!(last < 0.5 * first, "cross-entropy {first} -> {last}");
}
