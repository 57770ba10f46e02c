//! Criterion bench of Mamba-3's decode step on the CPU: the fused op (one pass per head) against
//! its portable body (Burn tensor ops), at a mamba-130m-wide mixer (d_inner 1536: 24 heads of
//! 64, N 128, 32 angles), SISO and MIMO rank 4, batch 1 and 16. After the groups, the
//! fused/portable speed ratios measured in this run are printed.
//!
//! `cargo bench --workspace --bench mamba3_step`

use burn::backend::Dispatch;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group};
use ssm_backends::testing::portable::mamba3_step_composed;
use ssm_backends::{Mamba3StepConfig, Mamba3StepDims, mamba3_decode_step};
use ssm_benches::median_time;
use std::time::Duration;

struct Step {
    proj: Tensor<2>,
    conv: Tensor<3>,
    ssm: Tensor<3>,
    weights: Tensor<1>,
    cfg: Mamba3StepConfig,
}

impl Step {
    fn random(batch: usize, rank: usize, device: &Device) -> Self {
        let (h, p, n, s) = (24, 64, 128, 32);
        let cfg = Mamba3StepConfig {
            heads: h,
            groups: 1,
            rank,
            angles: s,
            mimo: rank > 1,
            outproj_norm: false,
            a_floor: 1e-4,
            eps: 1e-5,
        };
        let d = Mamba3StepDims {
            batch,
            heads: h,
            head_dim: p,
            state: n,
            groups: 1,
            rank,
            angles: s,
        };
        let normal = Distribution::Normal(0.0, 1.0);
        Self {
            proj: Tensor::random([batch, d.proj_width()], normal, device),
            conv: Tensor::random([batch, h, s + rank * n + p], normal, device),
            ssm: Tensor::random([batch, h * p, n], normal, device),
            weights: Tensor::random([d.weight_len()], normal, device),
            cfg,
        }
    }

    fn run(&self, portable: bool) {
        if portable {
            let (y, _, _) = mamba3_step_composed::<Dispatch>(
                self.proj.clone().into_dispatch(),
                self.conv.clone().into_dispatch(),
                self.ssm.clone().into_dispatch(),
                self.weights.clone().into_dispatch(),
                self.cfg,
            );
            drop(Tensor::<2>::from_dispatch(y).into_data());
        } else {
            let (y, _, _) = mamba3_decode_step(
                self.proj.clone(),
                self.conv.clone(),
                self.ssm.clone(),
                self.weights.clone(),
                self.cfg,
            );
            drop(y.into_data());
        }
    }
}

const CASES: [(usize, usize); 4] = [(1, 1), (16, 1), (1, 4), (16, 4)];

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let mut group = c.benchmark_group("mamba3_decode_step");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for (batch, rank) in CASES {
        let x = Step::random(batch, rank, &device);
        let id = format!("B{batch}_R{rank}");
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
    let device = Device::flex();
    println!(
        "\nspeed-up of the fused Mamba-3 step over its portable body (same run, median of 9):"
    );
    for (batch, rank) in CASES {
        let x = Step::random(batch, rank, &device);
        let r = median_time(|| x.run(true), 9) / median_time(|| x.run(false), 9);
        println!("  batch {batch:>2}, rank {rank}: x{r:.1}");
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
