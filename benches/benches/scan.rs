//! Criterion bench of the selective scan: the fused CPU kernel against the portable body
//! (Burn tensor ops), forward and backward, B = 1, D = 1536, N = 16, L = 512 to 4096.
//! After the groups, the fused/portable speed ratios measured in this run are printed.
//!
//! `cargo bench -p ssm-benches --bench scan` (set `SCAN_BENCH_MAX_L=512` for a quick run).

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group};
use ssm_backends::{ScanOutput, SelectiveScan};
use std::time::{Duration, Instant};

const D: usize = 1536;
const N: usize = 16;

struct Inputs {
    u: Tensor<3>,
    delta: Tensor<3>,
    a: Tensor<2>,
    b: Tensor<4>,
    c: Tensor<4>,
    d: Tensor<1>,
    z: Tensor<3>,
    bias: Tensor<1>,
}

fn inputs(l: usize, device: &Device) -> Inputs {
    let normal = Distribution::Normal(0.0, 1.0);
    Inputs {
        u: Tensor::random([1, D, l], normal, device),
        delta: Tensor::random([1, D, l], Distribution::Uniform(-4.0, -1.0), device),
        a: Tensor::<2>::random([D, N], Distribution::Uniform(0.5, 16.0), device).neg(),
        b: Tensor::random([1, 1, N, l], normal, device),
        c: Tensor::random([1, 1, N, l], normal, device),
        d: Tensor::random([D], normal, device),
        z: Tensor::random([1, D, l], normal, device),
        bias: Tensor::random([D], Distribution::Uniform(-0.5, 0.5), device),
    }
}

fn scan(x: &Inputs, reference: bool) -> ScanOutput {
    let s = SelectiveScan::new(
        x.u.clone(),
        x.delta.clone(),
        x.a.clone(),
        x.b.clone(),
        x.c.clone(),
    )
    .d(x.d.clone())
    .z(x.z.clone())
    .delta_bias(x.bias.clone())
    .softplus(true);
    if reference {
        s.run_reference()
    } else {
        s.run()
    }
}

/// Forward and backward through the op on an autodiff device; returns when the gradients
/// are on the host.
fn forward_backward(x: &Inputs, reference: bool) {
    let device = Device::flex().autodiff();
    let on = |t: &Tensor<3>| Tensor::<3>::from_data(t.clone().into_data(), &device).require_grad();
    let u = on(&x.u);
    let delta = on(&x.delta);
    let moved = Inputs {
        u: u.clone(),
        delta: delta.clone(),
        a: Tensor::from_data(x.a.clone().into_data(), &device),
        b: Tensor::from_data(x.b.clone().into_data(), &device),
        c: Tensor::from_data(x.c.clone().into_data(), &device),
        d: Tensor::from_data(x.d.clone().into_data(), &device),
        z: Tensor::from_data(x.z.clone().into_data(), &device),
        bias: Tensor::from_data(x.bias.clone().into_data(), &device),
    };
    let out = scan(&moved, reference);
    let grads = out.y.sum().backward();
    let _ = u.grad(&grads).unwrap().into_data();
    let _ = delta.grad(&grads).unwrap().into_data();
}

fn lengths() -> Vec<usize> {
    let max: usize = std::env::var("SCAN_BENCH_MAX_L")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    [512, 1024, 2048, 4096]
        .into_iter()
        .filter(|&l| l <= max)
        .collect()
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let mut group = c.benchmark_group("selective_scan_forward");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for l in lengths() {
        let x = inputs(l, &device);
        group.bench_with_input(BenchmarkId::new("fused", l), &x, |bch, x| {
            bch.iter(|| scan(x, false).y.into_data())
        });
        group.bench_with_input(BenchmarkId::new("portable", l), &x, |bch, x| {
            bch.iter(|| scan(x, true).y.into_data())
        });
    }
    group.finish();
    let mut group = c.benchmark_group("selective_scan_forward_backward");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for l in lengths() {
        let x = inputs(l, &device);
        group.bench_with_input(BenchmarkId::new("fused", l), &x, |bch, x| {
            bch.iter(|| forward_backward(x, false))
        });
        group.bench_with_input(BenchmarkId::new("portable", l), &x, |bch, x| {
            bch.iter(|| forward_backward(x, true))
        });
    }
    group.finish();
}

/// Median of a few timed runs of `f`, in seconds.
fn time(mut f: impl FnMut(), runs: usize) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// The fused/portable ratios, measured side by side in this run.
fn ratios() {
    let device = Device::flex();
    println!("\nspeed-up of the fused CPU kernel over the portable body (same run, median of 3):");
    for l in lengths() {
        let x = inputs(l, &device);
        let fwd = time(|| drop(scan(&x, true).y.into_data()), 3)
            / time(|| drop(scan(&x, false).y.into_data()), 3);
        let bwd = time(|| forward_backward(&x, true), 3) / time(|| forward_backward(&x, false), 3);
        println!("  L = {l:>4}: forward x{fwd:.1}, forward+backward x{bwd:.1}");
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
