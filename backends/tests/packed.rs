//! Packed sequences in the selective scan: a row holding several documents (with `seq_idx`)
//! gives what the documents give run one by one: outputs, the final state of each document, and
//! every gradient. Documents of length 1, one spanning the CPU backward's 64-step chunk, channel
//! counts on the vectorised (8 lanes) and the scalar path. On Flex (fused CPU kernels) and on
//! wgpu (the GPU scan kernels, forward and backward, with no fallback to the portable body, the
//! forward also cut into spans of the sequence), each tensor within its own bound ([`FLEX`],
//! [`WGPU`]).

mod common;

use burn::tensor::{Device, Tensor};
use common::{Case, Inputs, NAMES, inputs, loss_weights, to_device};
use ssm_backends::testing::{TestRng, assert_rel};
use ssm_backends::{SelectiveScan, seq_idx_from_lengths, to_vec};

/// The documents of each row (every row adds up to the same length).
fn docs() -> Vec<Vec<usize>> {
    vec![vec![1, 70, 5, 4], vec![40, 38, 2]]
}

fn case(dim: usize) -> Case {
    Case {
        batch: 2,
        dim,
        len: 80,
        state: 4,
        groups: 1,
        gate: true,
        init: true,
        softplus: true,
    }
}

/// The scan of rows `rows` and steps `from..from + len` of the inputs; the initial state is
/// the rows' own when `first`, else zero.
fn part(
    x: &Inputs,
    rows: std::ops::Range<usize>,
    from: usize,
    len: usize,
    first: bool,
) -> SelectiveScan {
    let r = |t: &Tensor<3>| {
        t.clone()
            .narrow(0, rows.start, rows.len())
            .narrow(2, from, len)
    };
    let r4 = |t: &Tensor<4>| {
        t.clone()
            .narrow(0, rows.start, rows.len())
            .narrow(3, from, len)
    };
    let mut s = SelectiveScan::new(r(&x.u), r(&x.delta), x.a.clone(), r4(&x.b), r4(&x.c))
        .d(x.d.clone())
        .delta_bias(x.bias.clone())
        .softplus(x.softplus)
        .z(r(x.z.as_ref().unwrap()));
    if first {
        s = s.initial_state(x.h0.clone().unwrap().narrow(0, rows.start, rows.len()));
    }
    s
}

fn packed(x: &Inputs, device: &Device) -> SelectiveScan {
    common::scan(x).seq_idx(seq_idx_from_lengths(&docs(), device).unwrap())
}

/// The loss `sum(y * wy) + sum(state * wh)` of the packed rows, and of the documents run one by
/// one (the final-state term on each row's last document).
fn losses(x: &Inputs, wy: &Tensor<3>, wh: &Tensor<3>, device: &Device) -> (Tensor<1>, Tensor<1>) {
    let out = packed(x, device).run();
    let packed_loss = (out.y * wy.clone()).sum() + (out.state * wh.clone()).sum();
    let mut alone = Tensor::<1>::zeros([1], device);
    for (b, row) in docs().iter().enumerate() {
        let mut from = 0;
        for (i, &len) in row.iter().enumerate() {
            let o = part(x, b..b + 1, from, len, i == 0).run();
            let w = wy.clone().narrow(0, b, 1).narrow(2, from, len);
            alone = alone + (o.y * w).sum();
            if i + 1 == row.len() {
                alone = alone + (o.state * wh.clone().narrow(0, b, 1)).sum();
            }
            from += len;
        }
    }
    (packed_loss, alone)
}

/// Bounds relative to each tensor's own scale (its largest magnitude): 4x the largest error
/// measured on Flex, 10x on wgpu (lavapipe), rounded up to 1, 2 or 5 times a power of ten (at
/// least 1e-6 and 2e-6).
struct Bounds {
    /// Each document's outputs.
    y: f64,
    /// Each document's final state.
    state: f64,
    /// The gradients, in [`NAMES`]' order.
    grads: [f64; 9],
}

/// Flex (dims 16 and 5).
const FLEX: Bounds = Bounds {
    y: 1e-6,     // measured 0
    state: 1e-6, // measured 0
    grads: [
        1e-6, // du: 0
        1e-6, // ddelta: 0
        1e-6, // dA: 2.1e-7
        1e-6, // dB: 3.4e-8
        1e-6, // dC: 4.2e-8
        2e-6, // dD: 3.6e-7
        1e-6, // dz: 0
        1e-6, // ddelta_bias: 1.4e-7
        1e-6, // dh0: 0
    ],
};

/// wgpu (dims 5 and 40, in one pass and in spans).
#[cfg(feature = "wgpu")]
const WGPU: Bounds = Bounds {
    y: 2e-6,     // measured 2.0e-7
    state: 5e-6, // measured 3.2e-7
    grads: [
        2e-6, // du: 1.5e-7
        2e-6, // ddelta: 1.8e-7
        5e-6, // dA: 2.4e-7
        5e-6, // dB: 3.6e-7
        2e-6, // dC: 2.0e-7
        5e-6, // dD: 3.3e-7
        2e-6, // dz: 1.8e-7
        5e-6, // ddelta_bias: 3.6e-7
        1e-5, // dh0: 6.8e-7 (dim 40 in 5 spans; <= 3.4e-7 elsewhere)
    ],
};

fn check(device: &Device, dim: usize, bounds: &Bounds) {
    let cpu = Device::flex();
    let mut rng = TestRng::new(dim as u64);
    let x = to_device(&inputs(case(dim), &mut rng, &cpu), device);
    // Outputs and each document's final state (a packed row ending with that document).
    let out = packed(&x, device).run();
    let (y, _) = (to_vec(out.y.clone()), ());
    let l = case(dim).len;
    for (b, row) in docs().iter().enumerate() {
        let mut from = 0;
        for (i, &len) in row.iter().enumerate() {
            let alone = part(&x, b..b + 1, from, len, i == 0).run();
            let got: Vec<f32> = (0..dim)
                .flat_map(|c| y[(b * dim + c) * l + from..(b * dim + c) * l + from + len].to_vec())
                .collect();
            assert_rel(
                &format!("row {b} document {i} (dim {dim}): y"),
                &got,
                &to_vec(alone.y),
                bounds.y,
            );
            // The row cut after this document, packed: its final state is this document's.
            let upto = &row[..=i];
            let prefix = part(&x, b..b + 1, 0, from + len, true)
                .seq_idx(seq_idx_from_lengths(&[upto.to_vec()], device).unwrap());
            assert_rel(
                &format!("row {b} document {i} (dim {dim}): final state"),
                &to_vec(prefix.run().state),
                &to_vec(alone.state),
                bounds.state,
            );
            from += len;
        }
    }
    // Every gradient.
    let (wy, wh) = loss_weights(case(dim), &mut rng, &cpu);
    let (wy, wh) = (to_device_3(&wy, device), to_device_3(&wh, device));
    let grads = |use_packed: bool| -> Vec<Vec<f32>> {
        let ad = device.clone().autodiff();
        let t = |v: &Tensor<3>| Tensor::<3>::from_data(v.clone().into_data(), &ad).require_grad();
        let xa = Inputs {
            u: t(&x.u),
            delta: t(&x.delta),
            a: Tensor::<2>::from_data(x.a.clone().into_data(), &ad).require_grad(),
            b: Tensor::<4>::from_data(x.b.clone().into_data(), &ad).require_grad(),
            c: Tensor::<4>::from_data(x.c.clone().into_data(), &ad).require_grad(),
            d: Tensor::<1>::from_data(x.d.clone().into_data(), &ad).require_grad(),
            z: Some(t(x.z.as_ref().unwrap())),
            bias: Tensor::<1>::from_data(x.bias.clone().into_data(), &ad).require_grad(),
            h0: Some(t(x.h0.as_ref().unwrap())),
            softplus: x.softplus,
        };
        let (p, a) = losses(&xa, &to_device_3(&wy, &ad), &to_device_3(&wh, &ad), &ad);
        let g = if use_packed {
            p.backward()
        } else {
            a.backward()
        };
        let g3 = |v: &Tensor<3>| to_vec(v.grad(&g).expect("gradient"));
        vec![
            g3(&xa.u),
            g3(&xa.delta),
            to_vec(xa.a.grad(&g).unwrap()),
            to_vec(xa.b.grad(&g).unwrap()),
            to_vec(xa.c.grad(&g).unwrap()),
            to_vec(xa.d.grad(&g).unwrap()),
            g3(xa.z.as_ref().unwrap()),
            to_vec(xa.bias.grad(&g).unwrap()),
            g3(xa.h0.as_ref().unwrap()),
        ]
    };
    let (got, want) = (grads(true), grads(false));
    for (k, name) in NAMES.iter().enumerate() {
        assert_rel(
            &format!("d{name} (dim {dim})"),
            &got[k],
            &want[k],
            bounds.grads[k],
        );
    }
}

fn to_device_3(t: &Tensor<3>, device: &Device) -> Tensor<3> {
    Tensor::from_data(t.clone().into_data(), device)
}

#[test]
fn packed_rows_equal_their_documents_on_the_cpu() {
    let device = Device::flex();
    // 16 channels: blocks of 8 lanes; 5: one channel at a time.
    for dim in [16, 5] {
        check(&device, dim, &FLEX);
    }
}

#[test]
fn sequence_indices_come_from_document_lengths() {
    let device = Device::flex();
    let s = seq_idx_from_lengths(&[vec![2, 1], vec![3]], &device).unwrap();
    assert_eq!(
        s.into_data().convert::<i64>().try_to_vec::<i64>().unwrap(),
        [0, 0, 1, 0, 0, 0]
    );
    let e = seq_idx_from_lengths(&[vec![2, 1], vec![2]], &device).unwrap_err();
    assert!(
        e.to_string().contains("add up to 2 tokens, row 0's to 3"),
        "{e}"
    );
}

#[cfg(feature = "wgpu")]
#[test]
fn packed_rows_equal_their_documents_on_wgpu() {
    let Some(device) = ssm_backends::testing::wgpu_test_device() else {
        return;
    };
    let counter = ssm_backends::LaunchCounter::start();
    // 5 channels: one partial cube; 40: two cubes of the forward, several of the backward.
    for dim in [5, 40] {
        check(&device, dim, &WGPU);
    }
    // The sequence-parallel forward and backward: spans of 20 and 16 steps, cut inside
    // documents (the forward's inputs staged through shared memory in the second).
    for spans in [4, 5] {
        ssm_backends::testing::set_gpu_scan_spans(Some(spans));
        ssm_backends::testing::set_gpu_scan_staging(Some(spans == 5));
        let launches = counter.count_of("scan_bwd_span_kernel");
        check(&device, 40, &WGPU);
        ssm_backends::testing::set_gpu_scan_spans(None);
        ssm_backends::testing::set_gpu_scan_staging(None);
        assert!(counter.count_of("scan_bwd_span_kernel") > launches + 1);
    }
    assert!(
        counter.fallbacks().is_empty(),
        "the packed scan fell back to the portable body: {:?}",
        counter.fallbacks()
    );
    for kernel in ["scan_fwd_kernel", "scan_bwd_kernel"] {
        assert!(
            counter.count_of(kernel) > 0,
            "{kernel} never ran: {:?}",
            counter.counts()
        );
    }
}
