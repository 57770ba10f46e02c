//! Criterion bench of the selective scan on the CPU: the fused CPU kernel against the portable
//! body (Burn tensor ops), forward and backward, B = 1, D = 1536, N = 16, L = 512 to 4096.
//! After the groups, the fused/portable speed ratios measured in this run are printed.
//!
//! `cargo bench --workspace --bench scan` (set `SCAN_BENCH_MAX_L=512` for a quick run).

use burn::tensor::Device;
use criterion::{BenchmarkId, Criterion, criterion_group};
use ssm_benches::{ScanInputs, lengths, median_time};
use std::time::Duration;

const D: usize = 1536;
const LENGTHS: [usize; 4] = [512, 1024, 2048, 4096];

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let mut group = c.benchmark_group("selective_scan_forward");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for l in lengths(&LENGTHS) {
        let x = ScanInputs::random(D, l, &device);
        group.bench_with_input(BenchmarkId::new("fused", l), &x, |bch, x| {
            bch.iter(|| x.scan(false).y.into_data())
        });
        group.bench_with_input(BenchmarkId::new("portable", l), &x, |bch, x| {
            bch.iter(|| x.scan(true).y.into_data())
        });
    }
    group.finish();
    let mut group = c.benchmark_group("selective_scan_forward_backward");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for l in lengths(&LENGTHS) {
        let x = ScanInputs::random(D, l, &device);
        group.bench_with_input(BenchmarkId::new("fused", l), &x, |bch, x| {
            bch.iter(|| x.forward_backward(&device, false))
        });
        group.bench_with_input(BenchmarkId::new("portable", l), &x, |bch, x| {
            bch.iter(|| x.forward_backward(&device, true))
        });
    }
    group.finish();
}

/// The fused/portable ratios, measured side by side in this run.
fn ratios() {
    let device = Device::flex();
    println!("\nspeed-up of the fused CPU kernel over the portable body (same run, median of 3):");
    for l in lengths(&LENGTHS) {
        let x = ScanInputs::random(D, l, &device);
        let fwd = median_time(|| drop(x.scan(true).y.into_data()), 3)
            / median_time(|| drop(x.scan(false).y.into_data()), 3);
        let bwd = median_time(|| x.forward_backward(&device, true), 3)
            / median_time(|| x.forward_backward(&device, false), 3);
        println!("  L = {l:>4}: forward x{fwd:.1}, forward+backward x{bwd:.1}");
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
