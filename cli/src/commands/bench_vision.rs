//! `zoo bench vision`: forward throughput (images/s) of Vim and VMamba presets with random
//! weights, in one run, as one JSON object.

use crate::common::args::DeviceArgs;
use crate::common::error::{CliError, CliResult};
use crate::common::measure::{median, sync};
use burn::tensor::Tensor;
use clap::Args;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct VisionBenchArgs {
    /// Models to time, comma-separated presets (vim_tiny, vim_small, vim_base, vmamba_tiny,
    /// vmamba_small, vmamba_base).
    #[arg(long, default_value = "vim_tiny,vmamba_tiny")]
    models: String,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 224)]
    img_size: usize,
    /// Timed forwards per model (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Forward images/s of each model on random weights and inputs, median of `repeats` after one
/// warm-up forward; the JSON also gives each model's throughput relative to the first one, as
/// measured in this run.
pub fn run(a: VisionBenchArgs) -> CliResult {
    use ssm_models::vision::{ImageClassifier, VMambaConfig, VimConfig};
    if a.batch == 0 || a.repeats == 0 || a.img_size < 16 {
        return Err(CliError::Usage(
            "batch and repeats must be at least 1, img-size at least 16".into(),
        ));
    }
    let device = a.device.resolve()?;
    let mut rows = Vec::new();
    for name in a.models.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let (model, params): (Box<dyn ImageClassifier>, usize) =
            if let Some(c) = VimConfig::preset(name) {
                let c = c.with_img_size(a.img_size);
                c.validate()?;
                let m = c.init(&device);
                let n = burn::module::Module::num_params(&m);
                (Box::new(m), n)
            } else if let Some(c) = VMambaConfig::preset(name) {
                let m = c.init(&device);
                let n = burn::module::Module::num_params(&m);
                (Box::new(m), n)
            } else {
                return Err(CliError::Usage(format!(
                    "unknown model '{name}' (vim_tiny, vim_small, vim_base, vmamba_tiny, \
                     vmamba_small, vmamba_base)"
                )));
            };
        let images = Tensor::<4>::random(
            [a.batch, 3, a.img_size, a.img_size],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        // A device that cannot hold the activations (lavapipe binds at most 128 MiB per
        // buffer) reports the error for this model and the run goes on.
        let run = || {
            model
                .logits(images.clone())
                .try_into_data()
                .map_err(|e| error_chain(&format!("{e:?}")))
        };
        if let Err(e) = run() {
            rows.push((name.to_string(), params, Err(e)));
            continue;
        }
        sync(&device)?;
        let mut times = Vec::with_capacity(a.repeats);
        for _ in 0..a.repeats {
            let t = Instant::now();
            run().map_err(CliError::Io)?;
            times.push(t.elapsed().as_secs_f64());
        }
        let s = median(times);
        rows.push((name.to_string(), params, Ok((s, a.batch as f64 / s))));
    }
    let first = rows
        .iter()
        .find_map(|r| r.2.as_ref().ok().map(|t| t.1))
        .unwrap_or(1.0);
    let models: Vec<_> = rows
        .iter()
        .map(|(name, params, result)| match result {
            Ok((s, ips)) => serde_json::json!({
                "model": name,
                "parameters": params,
                "forward_s": s,
                "images_per_s": ips,
                "throughput_vs_first": ips / first,
            }),
            Err(e) => serde_json::json!({"model": name, "parameters": params, "error": e}),
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "device": format!("{device:?}"),
            "batch": a.batch,
            "img_size": a.img_size,
            "models": models,
        })
    );
    Ok(())
}

/// The causes in a CubeCL execution error's report, on one line.
fn error_chain(report: &str) -> String {
    let causes: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && ![
                    "skipped",
                    "(",
                    "No backtrace",
                    "Asked at",
                    "Caused by",
                    "stack backtrace",
                ]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    causes.join(": ")
}
