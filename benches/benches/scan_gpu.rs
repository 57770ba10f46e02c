//! Criterion bench of the CubeCL kernels against the portable body on a GPU device (wgpu by
//! default; Mesa's lavapipe where there is no GPU): the selective scan forward and
//! forward+backward (B = 1, D = 1536, N = 16), and the fused Mamba decode step against the step
//! composed from Burn ops. After the groups, the kernel/portable speed ratios measured in this
//! run and the scan kernel's effective bandwidth are printed.
//!
//! `cargo bench --workspace --bench scan_gpu`; `SSM_BENCH_DEVICE=cuda` (with the `cuda`
//! feature) or `wgpu:N` picks the device, `SCAN_BENCH_MAX_L` and `SCAN_BENCH_D` shrink the run.

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group};
use ssm_backends::testing::portable::mamba_step_composed;
use ssm_backends::{mamba_decode_step, pack_mamba_step_weights};
use ssm_benches::{N, ScanInputs, lengths, median_time};
use std::time::Duration;

const LENGTHS: [usize; 3] = [128, 512, 2048];

fn device() -> Option<Device> {
    let name = std::env::var("SSM_BENCH_DEVICE").unwrap_or_else(|_| "wgpu".into());
    match ssm_backends::parse_device(Some(&name)) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("scan_gpu: no device {name}: {e}; skipping");
            None
        }
    }
}

fn dim() -> usize {
    std::env::var("SCAN_BENCH_D")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1536)
}

/// A mamba-130m layer's decode inputs (D = 1536, K = 4, N = 16, R = 48), batch 1.
struct StepInputs {
    xz: Tensor<2>,
    conv: Tensor<3>,
    ssm: Tensor<3>,
    weights: Tensor<1>,
}

impl StepInputs {
    fn random(d: usize, device: &Device) -> Self {
        let normal = |dims: Vec<usize>| {
            Tensor::<1>::random(
                [dims.iter().product::<usize>()],
                Distribution::Normal(0.0, 0.1),
                device,
            )
        };
        let (k, r) = (4, d.div_ceil(32));
        Self {
            xz: normal(vec![2 * d]).reshape([1, 2 * d]),
            conv: normal(vec![d, k]).reshape([1, d, k]),
            ssm: normal(vec![d, N]).reshape([1, d, N]),
            weights: pack_mamba_step_weights(
                normal(vec![d, k]).reshape([d, k]),
                normal(vec![d]),
                normal(vec![d, r + 2 * N]).reshape([d, r + 2 * N]),
                normal(vec![r, d]).reshape([r, d]),
                normal(vec![d]),
                Tensor::<2>::random([d, N], Distribution::Uniform(0.5, 16.0), device).neg(),
                normal(vec![d]),
            ),
        }
    }

    fn run(&self, composed: bool) -> Tensor<2> {
        if composed {
            let (y, _, _) = mamba_step_composed::<Dispatch>(
                self.xz.clone().into_dispatch(),
                self.conv.clone().into_dispatch(),
                self.ssm.clone().into_dispatch(),
                self.weights.clone().into_dispatch(),
            );
            Tensor::from_dispatch(y)
        } else {
            mamba_decode_step(
                self.xz.clone(),
                self.conv.clone(),
                self.ssm.clone(),
                self.weights.clone(),
            )
            .0
        }
    }
}

fn bench(c: &mut Criterion) {
    let Some(device) = device() else {
        return;
    };
    let d = dim();
    let mut group = c.benchmark_group("gpu_selective_scan_forward");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for l in lengths(&LENGTHS) {
        let x = ScanInputs::random(d, l, &device);
        group.bench_with_input(BenchmarkId::new("kernel", l), &x, |bch, x| {
            bch.iter(|| x.scan(false).y.into_data())
        });
        group.bench_with_input(BenchmarkId::new("portable", l), &x, |bch, x| {
            bch.iter(|| x.scan(true).y.into_data())
        });
    }
    group.finish();
    let mut group = c.benchmark_group("gpu_selective_scan_forward_backward");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for l in lengths(&LENGTHS[..2]) {
        let x = ScanInputs::random(d, l, &device);
        group.bench_with_input(BenchmarkId::new("kernel", l), &x, |bch, x| {
            bch.iter(|| x.forward_backward(&device, false))
        });
        group.bench_with_input(BenchmarkId::new("portable", l), &x, |bch, x| {
            bch.iter(|| x.forward_backward(&device, true))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("gpu_mamba_decode_step");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    let x = StepInputs::random(d, &device);
    group.bench_function("kernel", |bch| bch.iter(|| x.run(false).into_data()));
    group.bench_function("composed", |bch| bch.iter(|| x.run(true).into_data()));
    group.finish();
}

/// The kernel/portable ratios, the scan kernel's effective bandwidth against a copy's measured
/// on the same device, and the sequence-parallel forward against one pass, all in this run;
/// the figures also as one JSON line (`scan_gpu_json: {...}`). (`zoo bench scan` measures the
/// bandwidth inside the binary, for machines without cargo.)
fn ratios() {
    let Some(device) = device() else {
        return;
    };
    let d = dim();
    let sync = || device.sync().expect("the device failed");
    println!(
        "\n{device:?}: speed-up of the kernels over the portable body (same run, median of 3):"
    );
    let mut rows = Vec::new();
    for l in lengths(&LENGTHS) {
        let x = ScanInputs::random(d, l, &device);
        let kernel = median_time(|| drop(x.scan(false).y.into_data()), 3);
        let fwd = median_time(|| drop(x.scan(true).y.into_data()), 3) / kernel;
        // u, delta, z read and y written (D x L each), B and C read (N x L each).
        let bytes = 4.0 * (4 * d * l + 2 * N * l) as f64;
        // On the device alone (no read-back), against a copy of as many bytes: read x, write x + 1
        // over the same D x L x 2 floats.
        let on_device = median_time(
            || {
                // Held across the sync: Burn's fusion may skip work whose result is dropped.
                let out = x.scan(false);
                sync();
                drop(out);
            },
            5,
        );
        let copy_in = Tensor::<1>::random([2 * d * l], Distribution::Default, &device);
        let copy = median_time(
            || {
                let out = copy_in.clone().add_scalar(1.0);
                sync();
                drop(out);
            },
            5,
        );
        let copy_bytes = 4.0 * (4 * d * l) as f64;
        let (scan_bw, copy_bw) = (bytes / on_device / 1e9, copy_bytes / copy / 1e9);
        // The sequence cut into spans walked in parallel (two launches), against one pass.
        let spans = 16.min(l / 64).max(2);
        ssm_backends::testing::set_gpu_scan_spans(Some(1));
        let one = median_time(
            || {
                // Held across the sync: Burn's fusion may skip work whose result is dropped.
                let out = x.scan(false);
                sync();
                drop(out);
            },
            5,
        );
        ssm_backends::testing::set_gpu_scan_spans(Some(spans));
        let cut = median_time(
            || {
                // Held across the sync: Burn's fusion may skip work whose result is dropped.
                let out = x.scan(false);
                sync();
                drop(out);
            },
            5,
        );
        ssm_backends::testing::set_gpu_scan_spans(None);
        // Half-precision activations (bf16 where the device has it, else f16) against f32,
        // on the device, same run.
        let half = [FloatDType::BF16, FloatDType::F16]
            .into_iter()
            .find(|&t| device.supports_dtype(DType::from(t)));
        let half_ratio = half.map(|t| {
            let xh = x.with_activations(t);
            let time = |x: &ScanInputs| {
                median_time(
                    || {
                        // Held across the sync: Burn's fusion may skip work whose result is
                        // dropped.
                        let out = x.scan(false);
                        sync();
                        drop(out);
                    },
                    5,
                )
            };
            (t, time(&x) / time(&xh))
        });
        print!(
            "  L = {l:>4}: forward x{fwd:.1} (with the read-back); on the device {scan_bw:.2} \
             GB/s effective, {:.0}% of a copy's {copy_bw:.2} GB/s; {spans} spans x{:.2} over \
             one pass",
            100.0 * scan_bw / copy_bw,
            one / cut
        );
        let mut row = format!(
            "{{\"len\": {l}, \"forward_vs_portable\": {fwd:.3}, \"scan_gb_s\": {scan_bw:.3}, \
             \"copy_gb_s\": {copy_bw:.3}, \"scan_fraction_of_copy\": {:.3}, \"spans\": {spans}, \
             \"spans_vs_one_pass\": {:.3}",
            scan_bw / copy_bw,
            one / cut
        );
        if let Some((t, r)) = half_ratio {
            print!("; {t:?} activations x{r:.2} over f32");
            row += &format!(", \"half_dtype\": \"{t:?}\", \"half_vs_f32\": {r:.3}");
        }
        if l <= LENGTHS[1] {
            let bwd = median_time(|| x.forward_backward(&device, true), 3)
                / median_time(|| x.forward_backward(&device, false), 3);
            print!(", forward+backward x{bwd:.1}");
            row += &format!(", \"forward_backward_vs_portable\": {bwd:.3}");
        }
        println!();
        rows.push(row + "}");
    }
    let x = StepInputs::random(d, &device);
    let step = median_time(|| drop(x.run(true).into_data()), 5)
        / median_time(|| drop(x.run(false).into_data()), 5);
    println!("  decode step (D = {d}): fused kernel x{step:.1} over the composed step");
    println!(
        "scan_gpu_json: {{\"device\": \"{device:?}\", \"d\": {d}, \"n\": {N}, \"scan\": [{}], \
         \"decode_step_vs_composed\": {step:.3}}}",
        rows.join(", ")
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
