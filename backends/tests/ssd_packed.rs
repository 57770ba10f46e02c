//! Packed sequences in the SSD op: a row of several documents (with `seq_idx`) gives what the
//! documents give run one by one (outputs, each document's final state, every gradient), for
//! the recurrence (the CPU backends and Autodiff) and the chunked form (the GPU backends and
//! the reference), with documents of length 1, documents spanning chunk boundaries, and a chunk
//! length that divides neither the documents nor the row.

use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::testing::{TestRng, assert_rel};
use ssm_backends::{Ssd, seq_idx_from_lengths, to_vec};

const DOCS: [&[usize]; 2] = [&[1, 6, 9, 3, 1], &[11, 9]];
const LEN: usize = 20;
const CHUNK: usize = 8;

struct Inputs {
    x: Tensor<4>,
    dt: Tensor<3>,
    a: Tensor<1>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Tensor<1>,
    h0: Tensor<4>,
}

fn inputs(rng: &mut TestRng, device: &Device) -> Inputs {
    let (bs, h, p, g, n) = (2, 4, 3, 2, 5);
    let normal = Distribution::Normal(0.0, 1.0);
    Inputs {
        x: rng.tensor([bs, LEN, h, p], normal, device),
        dt: rng.tensor([bs, LEN, h], Distribution::Uniform(0.05, 0.6), device),
        a: rng
            .tensor::<1>([h], Distribution::Uniform(0.5, 3.0), device)
            .neg(),
        b: rng.tensor([bs, LEN, g, n], normal, device),
        c: rng.tensor([bs, LEN, g, n], normal, device),
        d: rng.tensor([h], normal, device),
        h0: rng.tensor([bs, h, p, n], normal, device),
    }
}

/// The scan of row `b`, steps `from..from + len`; the row's initial state when `first`.
fn part(x: &Inputs, b: usize, from: usize, len: usize, first: bool) -> Ssd {
    let r3 = |t: &Tensor<3>| t.clone().narrow(0, b, 1).narrow(1, from, len);
    let r4 = |t: &Tensor<4>| t.clone().narrow(0, b, 1).narrow(1, from, len);
    let s = Ssd::new(r4(&x.x), r3(&x.dt), x.a.clone(), r4(&x.b), r4(&x.c))
        .d(x.d.clone())
        .chunk(CHUNK);
    if first {
        s.initial_state(x.h0.clone().narrow(0, b, 1))
    } else {
        s
    }
}

fn packed(x: &Inputs, device: &Device) -> Ssd {
    let docs: Vec<Vec<usize>> = DOCS.iter().map(|d| d.to_vec()).collect();
    Ssd::new(
        x.x.clone(),
        x.dt.clone(),
        x.a.clone(),
        x.b.clone(),
        x.c.clone(),
    )
    .d(x.d.clone())
    .initial_state(x.h0.clone())
    .seq_idx(seq_idx_from_lengths(&docs, device).unwrap())
    .chunk(CHUNK)
}

/// Bounds relative to each tensor's own scale (its largest magnitude): 4x the largest error
/// measured on Flex, 10x on wgpu (lavapipe), rounded up to 1, 2 or 5 times a power of ten (at
/// least 1e-6 and 2e-6).
struct Bounds {
    /// Each document's outputs.
    y: f64,
    /// Each document's final state.
    state: f64,
    /// Every gradient (x, dt, A, B, C, D, h0).
    grads: f64,
}

/// Flex (the recurrence on the fused CPU kernel, and the chunked reference).
const FLEX: Bounds = Bounds {
    y: 1e-6,     // measured 8.7e-8
    state: 1e-6, // measured 1.0e-7
    grads: 1e-6, // measured 1.6e-7 (dA)
};

/// wgpu (lavapipe).
#[cfg(feature = "wgpu")]
const WGPU: Bounds = Bounds {
    y: 2e-6,     // measured 6.4e-8
    state: 5e-6, // measured 2.3e-7
    grads: 2e-6, // measured 9.4e-8 (dD)
};

fn check_forward(x: &Inputs, device: &Device, reference: bool, bounds: &Bounds) {
    let run = |s: Ssd| {
        if reference {
            s.run_reference()
        } else {
            s.run()
        }
    };
    let (y, _) = run(packed(x, device));
    let [_, _, h, p] = y.dims();
    let y = to_vec(y);
    for (b, row) in DOCS.iter().enumerate() {
        let mut from = 0;
        for (i, &len) in row.iter().enumerate() {
            let (want_y, want_h) = run(part(x, b, from, len, i == 0));
            let start = (b * LEN + from) * h * p;
            let got = &y[start..start + len * h * p];
            assert_rel(
                &format!("row {b} document {i} (reference {reference}): y"),
                got,
                &to_vec(want_y),
                bounds.y,
            );
            // A row cut after this document: its final state is this document's.
            let upto = row[..=i].to_vec();
            let cut = part(x, b, 0, from + len, true)
                .seq_idx(seq_idx_from_lengths(&[upto], device).unwrap());
            assert_rel(
                &format!("row {b} document {i} (reference {reference}): state"),
                &to_vec(run(cut).1),
                &to_vec(want_h),
                bounds.state,
            );
            from += len;
        }
    }
}

fn check_gradients(x: &Inputs, rng: &mut TestRng, device: &Device, tol: f64) {
    let ad = device.clone().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let wy = rng.tensor::<4>(x.x.dims(), normal, device);
    let wh = rng.tensor::<4>(x.h0.dims(), normal, device);
    let grads = |use_packed: bool| -> Vec<Vec<f32>> {
        fn t<const D: usize>(v: &Tensor<D>, ad: &Device) -> Tensor<D> {
            Tensor::from_data(v.clone().into_data(), ad).require_grad()
        }
        let xa = Inputs {
            x: t(&x.x, &ad),
            dt: t(&x.dt, &ad),
            a: t(&x.a, &ad),
            b: t(&x.b, &ad),
            c: t(&x.c, &ad),
            d: t(&x.d, &ad),
            h0: t(&x.h0, &ad),
        };
        let (wy, wh) = (
            Tensor::<4>::from_data(wy.clone().into_data(), &ad),
            Tensor::<4>::from_data(wh.clone().into_data(), &ad),
        );
        let loss = if use_packed {
            let (y, h) = packed(&xa, &ad).run();
            (y * wy).sum() + (h * wh).sum()
        } else {
            let mut loss = Tensor::<1>::zeros([1], &ad);
            for (b, row) in DOCS.iter().enumerate() {
                let mut from = 0;
                for (i, &len) in row.iter().enumerate() {
                    let (y, h) = part(&xa, b, from, len, i == 0).run();
                    loss = loss + (y * wy.clone().narrow(0, b, 1).narrow(1, from, len)).sum();
                    if i + 1 == row.len() {
                        loss = loss + (h * wh.clone().narrow(0, b, 1)).sum();
                    }
                    from += len;
                }
            }
            loss
        };
        let g = loss.backward();
        vec![
            to_vec(xa.x.grad(&g).unwrap()),
            to_vec(xa.dt.grad(&g).unwrap()),
            to_vec(xa.a.grad(&g).unwrap()),
            to_vec(xa.b.grad(&g).unwrap()),
            to_vec(xa.c.grad(&g).unwrap()),
            to_vec(xa.d.grad(&g).unwrap()),
            to_vec(xa.h0.grad(&g).unwrap()),
        ]
    };
    let (got, want) = (grads(true), grads(false));
    for (k, name) in ["x", "dt", "A", "B", "C", "D", "h0"].iter().enumerate() {
        assert_rel(&format!("d{name}"), &got[k], &want[k], tol);
    }
}

#[test]
fn packed_rows_equal_their_documents_on_the_cpu() {
    let device = Device::flex();
    let mut rng = TestRng::new(7);
    let x = inputs(&mut rng, &device);
    check_forward(&x, &device, false, &FLEX);
    check_forward(&x, &device, true, &FLEX);
    check_gradients(&x, &mut rng, &device, FLEX.grads);
}

#[cfg(feature = "wgpu")]
#[test]
fn packed_rows_equal_their_documents_on_wgpu() {
    let Some(device) = ssm_backends::testing::wgpu_test_device() else {
        return;
    };
    let cpu = Device::flex();
    let mut rng = TestRng::new(8);
    let x = inputs(&mut rng, &cpu);
    let on = |t: &Tensor<4>| Tensor::<4>::from_data(t.clone().into_data(), &device);
    let x = Inputs {
        x: on(&x.x),
        dt: Tensor::from_data(x.dt.into_data(), &device),
        a: Tensor::from_data(x.a.into_data(), &device),
        b: on(&x.b),
        c: on(&x.c),
        d: Tensor::from_data(x.d.into_data(), &device),
        h0: on(&x.h0),
    };
    check_forward(&x, &device, false, &WGPU);
    // Under Autodiff the SSD runs as the recurrence, on the GPU scan kernels with the reset mask.
    check_gradients(&x, &mut rng, &device, WGPU.grads);
}
