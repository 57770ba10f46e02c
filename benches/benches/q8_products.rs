//! Criterion bench of the decode products from 8-bit weights on the CPU (Flex): `x Wᵀ` for one
//! row at mamba-130m's shapes (in_proj 3072 x 768, out_proj 768 x 1536, the tied head
//! 50280 x 768), the int8 kernel (blocks of 32) against the same product from the f32 weight
//! (the f32 few-row kernel) and against the portable body (the 8-bit weight dequantized, then
//! Flex's matmul). After the groups, the speed ratios measured in this run are printed, with
//! each kernel's rate in GB/s of weight bytes read.
//!
//! `cargo bench --workspace --bench q8_products`

use burn::backend::Dispatch;
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group};
use ssm_backends::testing::portable::q_rows_matmul;
use ssm_backends::{Q8_BLOCK, quantize_q8, rows_matmul_transposed};
use ssm_benches::median_time;
use std::time::Duration;

const SHAPES: [(&str, usize, usize); 3] = [
    ("in_proj", 3072, 768),
    ("out_proj", 768, 1536),
    ("head", 50280, 768),
];

struct Product {
    x: Tensor<2>,
    w: Tensor<2>,
    wq: Tensor<2>,
}

impl Product {
    fn random(n: usize, k: usize, device: &Device) -> Self {
        let normal = Distribution::Normal(0.0, 1.0);
        let w = Tensor::random([n, k], normal, device);
        Self {
            x: Tensor::random([1, k], normal, device),
            wq: quantize_q8(w.clone(), Q8_BLOCK).expect("K is a whole number of blocks"),
            w,
        }
    }

    fn run(&self, which: &str) {
        let y = match which {
            "q8" => rows_matmul_transposed(self.x.clone(), self.wq.clone()),
            "f32" => rows_matmul_transposed(self.x.clone(), self.w.clone()),
            _ => Tensor::from_dispatch(q_rows_matmul::<Dispatch>(
                self.x.clone().into_dispatch(),
                self.wq.clone().into_dispatch(),
                true,
            )),
        };
        drop(y.into_data());
    }
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let mut group = c.benchmark_group("q8_products");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for (name, n, k) in SHAPES {
        let p = Product::random(n, k, &device);
        for which in ["q8", "f32"] {
            group.bench_with_input(BenchmarkId::new(which, name), &p, |b, p| {
                b.iter(|| p.run(which))
            });
        }
    }
    group.finish();
}

/// The ratios, measured side by side in this run.
fn ratios() {
    let device = Device::flex();
    println!(
        "\nq8 products (same run, median of 15): speed-up over f32 and over the portable body"
    );
    for (name, n, k) in SHAPES {
        let p = Product::random(n, k, &device);
        let q8 = median_time(|| p.run("q8"), 15);
        let f32 = median_time(|| p.run("f32"), 15);
        let portable = median_time(|| p.run("portable"), 5);
        let gb = |bytes: f64, t: f64| bytes / t / 1e9;
        let q8_bytes = (n * k) as f64 * (1.0 + 4.0 / Q8_BLOCK as f64);
        println!(
            "  {name:>8} ({n} x {k}): x{:.2} over f32 ({:.1} vs {:.1} GB/s), x{:.1} over portable",
            f32 / q8,
            gb(q8_bytes, q8),
            gb((4 * n * k) as f64, f32),
            portable / q8
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
