//! `zoo bench scan`: the selective scan's effective bandwidth on a device against a
//! device-to-device copy of as many bytes measured in the same run, in one pass and in spans of
//! the sequence walked in parallel, at Mamba's shape (D = 1536, N = 16, L = 2048); one JSON
//! object. Needs no cargo: this is what the GPU kit runs on a lent machine.

use crate::common::args::DeviceArgs;
use crate::common::error::{CliResult, usage};
use crate::common::measure::device_time;
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor};
use clap::Args;
use ssm_benches::{N, ScanInputs};

#[derive(Args, Debug)]
pub struct ScanBenchArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// Batch sizes, comma-separated.
    #[arg(long, default_value = "1,16", value_delimiter = ',')]
    batch: Vec<usize>,
    /// Channels (mamba-130m: 1536).
    #[arg(long, default_value_t = 1536)]
    d: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 2048)]
    len: usize,
    /// Spans of the sequence walked in parallel, against one pass (GPU; the CPU kernel runs one
    /// way).
    #[arg(long, default_value_t = 16)]
    spans: usize,
    /// Timed runs of each (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

pub fn run(a: ScanBenchArgs) -> CliResult {
    if a.batch.is_empty() || a.batch.contains(&0) || a.d == 0 || a.len == 0 || a.repeats == 0 {
        return Err(usage(
            "batch sizes, --d, --len and --repeats must be at least 1",
        ));
    }
    if a.spans < 2 || a.spans > a.len {
        return Err(usage(format!(
            "--spans must be between 2 and --len ({}), not {}",
            a.len, a.spans
        )));
    }
    let device = a.device.resolve()?;
    let half = [FloatDType::BF16, FloatDType::F16]
        .into_iter()
        .find(|&t| !ssm_backends::is_host(&device) && device.supports_dtype(DType::from(t)));
    let mut rows = Vec::new();
    for &batch in &a.batch {
        rows.push(measure(&a, batch, half, &device)?);
    }
    let info = ssm_backends::describe(&device);
    let report = serde_json::json!({
        "device": format!("{device:?}"),
        "adapter": info.name,
        "adapter_kind": info.kind.name(),
        "driver": info.driver,
        "d": a.d,
        "n": N,
        "len": a.len,
        "repeats": a.repeats,
        "runs": rows,
    });
    println!("{report}");
    Ok(())
}

fn measure(
    a: &ScanBenchArgs,
    batch: usize,
    half: Option<FloatDType>,
    device: &Device,
) -> CliResult<serde_json::Value> {
    let (d, l) = (a.d, a.len);
    let x = ScanInputs::random_batch(batch, d, l, device);
    // On the device alone, the read-back not timed.
    let on_device = |x: &ScanInputs| device_time(device, a.repeats, || x.scan(false));
    set_spans(Some(1));
    let one_pass = on_device(&x)?;
    set_spans(Some(a.spans));
    let cut = on_device(&x)?;
    set_spans(None);
    let rule = on_device(&x)?;
    let half_time = half
        .map(|t| on_device(&x.with_activations(t)))
        .transpose()?;
    // A copy of as many bytes: read 2·B·D·L floats, write as many.
    let copy_in = Tensor::<1>::random([2 * batch * d * l], Distribution::Default, device);
    let copy = device_time(device, a.repeats, || copy_in.clone().add_scalar(1.0))?;
    // u, delta, z read and y written (B·D·L each), B and C read (B·N·L each), in f32.
    let bytes = 4.0 * (4 * batch * d * l + 2 * batch * N * l) as f64;
    let copy_bytes = 4.0 * (4 * batch * d * l) as f64;
    let gb_s = |t: f64| bytes / t / 1e9;
    let copy_gb_s = copy_bytes / copy / 1e9;
    Ok(serde_json::json!({
        "batch": batch,
        "copy_gb_s": copy_gb_s,
        "one_pass_gb_s": gb_s(one_pass),
        "one_pass_fraction_of_copy": gb_s(one_pass) / copy_gb_s,
        "spans": a.spans,
        "spans_gb_s": gb_s(cut),
        "spans_fraction_of_copy": gb_s(cut) / copy_gb_s,
        "spans_vs_one_pass": one_pass / cut,
        "device_rule_gb_s": gb_s(rule),
        "device_rule_fraction_of_copy": gb_s(rule) / copy_gb_s,
        "half_dtype": half.map(|t| format!("{t:?}").to_lowercase()),
        "half_vs_f32": half_time.map(|h| rule / h),
    }))
}

/// The GPU forward scan's span count (`None`: the device's rule); nothing on a CPU build.
fn set_spans(spans: Option<usize>) {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    ssm_backends::tuning::set_gpu_scan_spans(spans);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    let _ = spans;
}
