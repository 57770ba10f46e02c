//! Criterion bench of the log-decay SSD's backward on the CPU (a Mamba-3 training step's scan):
//! the fused reverse recurrence (one task per (row, head), states recomputed from checkpoints)
//! against Burn's autodiff through the portable chunked body, at a mamba-130m-wide layer
//! (24 heads of 64, N 128, chunk 64), SISO and MIMO rank 4, L 256. Each timed call runs the
//! forward and the backward. After the groups, the fused/portable speed ratios measured in this
//! run are printed.
//!
//! `cargo bench --workspace --bench ssd_backward`

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group};
use ssm_backends::Ssd;
use ssm_benches::median_time;
use std::time::Duration;

struct Layer {
    x: Tensor<4>,
    dt: Tensor<3>,
    log_decay: Tensor<3>,
    b: Tensor<4>,
    c: Tensor<4>,
    rank: usize,
}

impl Layer {
    fn random(len: usize, rank: usize, device: &Device) -> Self {
        let (h, p, n) = (24, 64, 128);
        let normal = Distribution::Normal(0.0, 1.0);
        Self {
            x: Tensor::random([1, len * rank, h, p], normal, device),
            dt: Tensor::random([1, len, h], Distribution::Uniform(0.01, 0.3), device),
            log_decay: Tensor::random([1, len, h], Distribution::Uniform(-1.0, -0.01), device),
            b: Tensor::random([1, len * rank, 1, n], normal, device),
            c: Tensor::random([1, len * rank, 1, n], normal, device),
            rank,
        }
    }

    /// Forward and backward; `portable`: through the chunked body.
    fn run(&self, portable: bool) {
        let x = self.x.clone().require_grad();
        let h = self.x.dims()[2];
        let op = Ssd::new(
            x.clone(),
            self.dt.clone(),
            Tensor::zeros([h], &self.x.device()),
            self.b.clone(),
            self.c.clone(),
        )
        .log_decay(self.log_decay.clone().require_grad())
        .chunk(64)
        .rank(self.rank);
        let (y, _) = if portable {
            op.run_reference()
        } else {
            op.run()
        };
        let grads = y.sum().backward();
        drop(x.grad(&grads).unwrap().into_data());
    }
}

const CASES: [(usize, usize); 2] = [(256, 1), (256, 4)];

fn bench(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    let mut group = c.benchmark_group("ssd_log_decay_backward");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for (len, rank) in CASES {
        let x = Layer::random(len, rank, &device);
        let id = format!("L{len}_R{rank}");
        group.bench_with_input(BenchmarkId::new("fused", &id), &x, |b, x| {
            b.iter(|| x.run(false))
        });
        group.bench_with_input(BenchmarkId::new("portable", &id), &x, |b, x| {
            b.iter(|| x.run(true))
        });
    }
    group.finish();
}

/// The fused/portable ratios, measured side by side in this run.
fn ratios() {
    let device = Device::flex().autodiff();
    println!(
        "\nspeed-up of the fused SSD forward + backward over autodiff through the chunked body \
         (same run, median of 9):"
    );
    for (len, rank) in CASES {
        let x = Layer::random(len, rank, &device);
        let r = median_time(|| x.run(true), 9) / median_time(|| x.run(false), 9);
        println!("  L {len}, rank {rank}: x{r:.1}");
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
