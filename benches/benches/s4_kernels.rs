//! Criterion bench of the S4 family's convolution kernels on the CPU: the Vandermonde kernel
//! (S4D, DSS) and the Cauchy sums (S4's DPLR kernel), each as its fused kernel (f64, no
//! (H, N, L) tensor) against its reference body (the powers or reciprocals materialised, as
//! the layers computed them before), at `zoo bench compare`'s S4D width (H 128, N 64: 32 modes
//! of each conjugate pair for S4D, 64 poles and 4 numerators for S4) and L 1,024 and 16,384.
//! After the groups, the speed ratios measured in this run are printed.
//!
//! `cargo bench --workspace --bench s4_kernels`

use burn::tensor::{Device, Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group};
use ssm_backends::{cauchy, cauchy_reference, to_vec, vandermonde, vandermonde_reference};
use ssm_benches::median_time;
use std::time::Duration;

const H: usize = 128;
const LENGTHS: [usize; 2] = [1024, 16_384];

/// S4D-Lin's ZOH exponents `Δ A` and random coefficients, (H, 32) each.
fn diagonal(device: &Device) -> [Tensor<2>; 4] {
    let n = 32;
    let dt = Tensor::<2>::random(
        [H, 1],
        Distribution::Uniform(1e-3f64.ln(), 1e-1f64.ln()),
        device,
    )
    .exp();
    let steps: Vec<f32> = (0..H * n)
        .map(|i| std::f32::consts::PI * (i % n) as f32)
        .collect();
    let a_im = Tensor::<2>::from_data(burn::tensor::TensorData::new(steps, [H, n]), device);
    let normal = Distribution::Normal(0.0, 0.7);
    [
        Tensor::random([H, n], normal, device),
        Tensor::random([H, n], normal, device),
        (dt.clone() * -0.5).expand([H, n]),
        a_im * dt,
    ]
}

fn run_vandermonde(p: &[Tensor<2>; 4], len: usize, reference: bool) {
    let f = if reference {
        vandermonde_reference
    } else {
        vandermonde
    };
    let k = f(
        (p[0].clone(), p[1].clone()),
        (p[2].clone(), p[3].clone()),
        None,
        len,
    );
    drop(to_vec(k));
}

/// S4's Cauchy sums at the `len / 2 + 1` roots: 4 numerators, 64 poles.
struct Cauchy {
    v: (Tensor<3>, Tensor<3>),
    w: (Tensor<2>, Tensor<2>),
    l: (Tensor<2>, Tensor<2>),
}

fn dplr(len: usize, device: &Device) -> Cauchy {
    let (m, n, k) = (4, 64, len / 2 + 1);
    let normal = Distribution::Normal(0.0, 1.0);
    let tan: Vec<f32> = (0..H * k)
        .map(|i| {
            (std::f64::consts::PI * (i % k) as f64 / len as f64)
                .tan()
                .min(1e10) as f32
                * 200.0
        })
        .collect();
    Cauchy {
        v: (
            Tensor::random([H, m, n], normal, device),
            Tensor::random([H, m, n], normal, device),
        ),
        w: (
            Tensor::zeros([H, k], device),
            Tensor::from_data(burn::tensor::TensorData::new(tan, [H, k]), device),
        ),
        l: (
            Tensor::random([H, n], Distribution::Uniform(-1.0, -0.1), device),
            Tensor::random([H, n], Distribution::Uniform(-64.0, 64.0), device),
        ),
    }
}

fn run_cauchy(c: &Cauchy, reference: bool) {
    let f = if reference { cauchy_reference } else { cauchy };
    let (re, _) = f(c.v.clone(), c.w.clone(), c.l.clone());
    drop(to_vec(re));
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let mut group = c.benchmark_group("s4_kernels");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    let p = diagonal(&device);
    for len in LENGTHS {
        for (name, reference) in [("fused", false), ("reference", true)] {
            group.bench_with_input(
                BenchmarkId::new(format!("vandermonde_{name}"), len),
                &len,
                |b, &len| b.iter(|| run_vandermonde(&p, len, reference)),
            );
            let cauchy = dplr(len, &device);
            group.bench_with_input(
                BenchmarkId::new(format!("cauchy_{name}"), len),
                &len,
                |b, _| b.iter(|| run_cauchy(&cauchy, reference)),
            );
        }
    }
    group.finish();
}

/// The fused/reference ratios, measured side by side in this run.
fn ratios() {
    let device = Device::flex();
    let p = diagonal(&device);
    println!(
        "\nspeed-up of the fused kernels over their reference bodies (same run, median of 5):"
    );
    for len in LENGTHS {
        let v = median_time(|| run_vandermonde(&p, len, true), 5)
            / median_time(|| run_vandermonde(&p, len, false), 5);
        let c = dplr(len, &device);
        let cr = median_time(|| run_cauchy(&c, true), 5) / median_time(|| run_cauchy(&c, false), 5);
        println!("  L {len}: Vandermonde (S4D, DSS) x{v:.1}, Cauchy (S4) x{cr:.1}");
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
