//! Criterion bench of the SSD forward on the CPU (Mamba2's prefill scan): the fused recurrence
//! (one task per (row, head), the (P, N) state in a local buffer) against the portable chunked
//! body, at a mamba2-130m layer (24 heads of 64, N 128, one group, chunk 256), L 512 and 2,048,
//! batch 1. After the groups, the portable/fused speed ratios measured in this run are printed.
//!
//! `cargo bench --workspace --bench ssd_forward`

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group};
use ssm_backends::Ssd;
use ssm_benches::median_time;
use std::time::Duration;

struct Layer {
    x: Tensor<4>,
    dt: Tensor<3>,
    a: Tensor<1>,
    b: Tensor<4>,
    c: Tensor<4>,
}

impl Layer {
    fn random(len: usize, device: &Device) -> Self {
        let (h, p, n) = (24, 64, 128);
        let normal = Distribution::Normal(0.0, 1.0);
        Self {
            x: Tensor::random([1, len, h, p], normal, device),
            dt: Tensor::random([1, len, h], Distribution::Uniform(0.001, 0.1), device),
            a: Tensor::random([h], Distribution::Uniform(-16.0, -1.0), device),
            b: Tensor::random([1, len, 1, n], normal, device),
            c: Tensor::random([1, len, 1, n], normal, device),
        }
    }

    /// The forward; `portable`: the chunked body.
    fn run(&self, portable: bool) {
        let op = Ssd::new(
            self.x.clone(),
            self.dt.clone(),
            self.a.clone(),
            self.b.clone(),
            self.c.clone(),
        )
        .chunk(256);
        let (y, _) = if portable {
            op.run_reference()
        } else {
            op.run()
        };
        drop(y.into_data());
    }
}

const LENGTHS: [usize; 2] = [512, 2048];

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let mut group = c.benchmark_group("ssd_forward");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for len in LENGTHS {
        let x = Layer::random(len, &device);
        group.bench_with_input(BenchmarkId::new("fused", len), &x, |b, x| {
            b.iter(|| x.run(false))
        });
        group.bench_with_input(BenchmarkId::new("portable", len), &x, |b, x| {
            b.iter(|| x.run(true))
        });
    }
    group.finish();
}

/// The portable/fused ratios, measured side by side in this run.
fn ratios() {
    let device = Device::flex();
    println!("\nspeed-up of the fused SSD forward over the chunked body (same run, median of 9):");
    for len in LENGTHS {
        let x = Layer::random(len, &device);
        let r = median_time(|| x.run(true), 9) / median_time(|| x.run(false), 9);
        println!("  L {len}: x{r:.1}");
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
