//! `zoo selftest`: whether the kernels are right on this device. Every custom kernel against
//! its portable body on the device ([`ssm_backends::selftest`]), then the shipped language-model
//! fixtures (Mamba, Mamba2, Mamba-3 SISO and MIMO, built into the binary) against the logits of
//! the reference implementations they were made with: the parallel forward, and the recurrent
//! decode step token by token over the same prompt. A table on stdout, a JSON with `--json`;
//! the exit code is 1 when any check fails (an error past its bound, a kernel that did not run,
//! a fallback to a slower body, a panic).

use crate::common::args::DeviceArgs;
use crate::common::error::{CliError, CliResult, io};
use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::Args;
use ssm_backends::selftest::{Check, CpuKernel, Kernels};
use ssm_backends::{DeviceInfo, to_vec};
use ssm_models::lm::{CausalLm, MambaLm};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct SelftestArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// Also write the adapter and every check as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The kernel checks only (not the language-model fixtures).
    #[arg(long)]
    kernels_only: bool,
}

pub fn run(a: SelftestArgs) -> CliResult {
    let device = a.device.resolve()?;
    let info = ssm_backends::describe(&device);
    println!("device: {}", describe(&info));
    let started = Instant::now();
    // A spinner naming the check in progress (hidden when stderr is not a terminal).
    let spinner = indicatif::ProgressBar::new_spinner();
    let mut done = 0;
    let mut progress = |r: &Check| {
        done += 1;
        spinner.set_message(format!("{done} checks; last: {} ({})", r.op, r.shape));
        spinner.tick();
    };
    let mut rows = ssm_backends::selftest::kernels_with(&device, &mut progress);
    if !a.kernels_only {
        for fixture in FIXTURES {
            let checks = fixture.checks(&device)?;
            checks.iter().for_each(&mut progress);
            rows.extend(checks);
        }
    }
    spinner.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    print_table(&rows);
    let failed = rows.iter().filter(|r| !r.passed()).count();
    println!(
        "{} checks, {} passed, {failed} failed, in {seconds:.1} s",
        rows.len(),
        rows.len() - failed
    );
    if let Some(path) = &a.json {
        let report = serde_json::json!({
            "device": info_json(&info),
            "seconds": seconds,
            "passed": failed == 0,
            "checks": rows.iter().map(row_json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&report).map_err(io)?;
        std::fs::write(path, text + "\n")
            .map_err(|e| io(format!("cannot write {}: {e}", path.display())))?;
    }
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{failed} of {} selftest checks failed on {}",
            rows.len(),
            info.name
        )));
    }
    Ok(())
}

/// `NAME (hardware; NVIDIA; driver ...; Vulkan; wgpu<spirv>)`.
fn describe(info: &DeviceInfo) -> String {
    let mut parts = vec![info.kind.name().to_string()];
    for p in [&info.vendor, &info.driver, &info.api, &info.target]
        .into_iter()
        .flatten()
    {
        parts.push(p.clone());
    }
    format!("{} ({})", info.name, parts.join("; "))
}

fn info_json(info: &DeviceInfo) -> serde_json::Value {
    serde_json::json!({
        "name": info.name,
        "kind": info.kind.name(),
        "vendor": info.vendor,
        "driver": info.driver,
        "api": info.api,
        "target": info.target,
    })
}

fn row_json(r: &Check) -> serde_json::Value {
    serde_json::json!({
        "op": r.op,
        "shape": r.shape,
        "output": r.output,
        "max_error": r.error,
        "bound": r.bound,
        "launches": r.launches,
        "seconds": r.seconds,
        "fallbacks": r.fallbacks.iter().map(|(op, n)| serde_json::json!({"op": op, "times": n})).collect::<Vec<_>>(),
        "passed": r.passed(),
        "failure": r.failure,
    })
}

fn print_table(rows: &[Check]) {
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.op.clone(),
                r.shape.clone(),
                r.output.clone(),
                r.error.map_or("-".into(), |e| format!("{e:.1e}")),
                format!("{:.0e}", r.bound),
                r.launches.map_or("-".into(), |n| n.to_string()),
                r.fallbacks
                    .iter()
                    .map(|(_, n)| n)
                    .sum::<usize>()
                    .to_string(),
                if r.passed() { "ok" } else { "FAIL" }.into(),
            ]
        })
        .collect();
    let head = [
        "op",
        "shape",
        "output",
        "max error",
        "bound",
        "launches",
        "fallbacks",
        "result",
    ];
    let mut widths = head.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cols: Vec<&str>| {
        let padded: Vec<String> = cols
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(head.to_vec());
    for (row, r) in cells.iter().zip(rows) {
        line(row.iter().map(String::as_str).collect());
        if let Some(why) = &r.failure {
            println!("    {why}");
        }
    }
}

/// A language-model fixture built into the binary: the model folder's files and the reference
/// tensors (`input_ids`, `logits`) made with the reference code (fixtures/README.md).
struct Fixture {
    name: &'static str,
    files: &'static [(&'static str, &'static [u8])],
    tensors: &'static [u8],
    /// The logits' bound relative to their scale (the parity tests' wgpu bounds).
    bound: f64,
    forward: Kernels,
    decode: Kernels,
}

/// The forward's kernels: Mamba's scan, or the SSD (Mamba2's, and Mamba-3's with log decays).
const SCAN: Kernels = Kernels {
    gpu: &["scan_fwd_kernel"],
    cpu: Some(CpuKernel::ScanForward),
};
const SSD: Kernels = Kernels {
    gpu: &["ssd_decay_mask_kernel", "ssd_state_pass_kernel"],
    cpu: Some(CpuKernel::SsdForward),
};

/// `fixtures/DIR`: its `model/config.json` and `model/WEIGHTS`, its `tensors.safetensors`, the
/// logits' bound, the forward's kernels and the GPU decode step kernel (the CPU's: the fused
/// step's counter).
macro_rules! fixture {
    ($dir:literal, $weights:literal, $bound:expr, $forward:expr, $step:literal) => {
        Fixture {
            name: $dir,
            files: &[
                (
                    "config.json",
                    include_bytes!(concat!("../../../fixtures/", $dir, "/model/config.json")),
                ),
                (
                    $weights,
                    include_bytes!(concat!("../../../fixtures/", $dir, "/model/", $weights)),
                ),
            ],
            tensors: include_bytes!(concat!("../../../fixtures/", $dir, "/tensors.safetensors")),
            bound: $bound,
            forward: $forward,
            decode: Kernels {
                gpu: &[$step],
                cpu: Some(CpuKernel::Step),
            },
        }
    };
}

const FIXTURES: [Fixture; 4] = [
    fixture!(
        "mamba_tiny",
        "model.safetensors",
        1e-5,
        SCAN,
        "mamba_step_kernel"
    ),
    fixture!(
        "mamba2_tiny",
        "model.safetensors",
        1e-5,
        SSD,
        "mamba2_step_kernel"
    ),
    fixture!(
        "mamba3_tiny",
        "pytorch_model.bin",
        2e-5,
        SSD,
        "mamba3_step_kernel"
    ),
    fixture!(
        "mamba3_mimo",
        "pytorch_model.bin",
        2e-5,
        SSD,
        "mamba3_step_kernel"
    ),
];

impl Fixture {
    /// The parallel forward's logits, and the prompt decoded token by token (the first token
    /// prefilled, every later one through the recurrent step), against the reference logits.
    fn checks(&self, device: &Device) -> CliResult<Vec<Check>> {
        let dir = tempfile::tempdir().map_err(|e| io(format!("a temporary folder: {e}")))?;
        for (file, bytes) in self.files {
            std::fs::write(dir.path().join(file), bytes)
                .map_err(|e| io(format!("cannot unpack the {} fixture: {e}", self.name)))?;
        }
        let model = MambaLm::load_dir(dir.path(), device)?;
        let tensors = safetensors::SafeTensors::deserialize(self.tensors)
            .map_err(|e| io(format!("the {} fixture's tensors: {e}", self.name)))?;
        let (ids, ids_shape) =
            read::<i64>(&tensors, "input_ids", safetensors::Dtype::I64, self.name)?;
        let (logits, logits_shape) =
            read::<f32>(&tensors, "logits", safetensors::Dtype::F32, self.name)?;
        let [batch, len] = [ids_shape[0], ids_shape[1]];
        let vocab = logits_shape[2];
        let ids_on = |from: usize, to: usize| {
            let rows: Vec<i64> = (0..batch)
                .flat_map(|b| ids[b * len + from..b * len + to].to_vec())
                .collect();
            Tensor::<2, Int>::from_data(TensorData::new(rows, [batch, to - from]), device)
        };
        let shape = format!("B {batch} L {len} vocab {vocab}");
        let want = || vec![logits.clone()];
        let mut rows = Vec::new();
        rows.extend(ssm_backends::selftest::check(
            device,
            format!("{} logits, forward", self.name),
            shape.clone(),
            self.forward,
            &[("logits", self.bound)],
            want,
            || vec![to_vec(model.forward(ids_on(0, len)))],
        ));
        rows.extend(ssm_backends::selftest::check(
            device,
            format!("{} logits, decode", self.name),
            shape,
            self.decode,
            &[("logits", self.bound)],
            want,
            || {
                // (B, L, V) in the reference's order: position by position, then rows.
                let (first, mut cache) = model.prefill(ids_on(0, 1));
                let mut by_pos = vec![to_vec(first)];
                for pos in 1..len {
                    let step_ids: Vec<i64> = (0..batch).map(|b| ids[b * len + pos]).collect();
                    let (l, c) = model.step(
                        Tensor::<1, Int>::from_data(TensorData::new(step_ids, [batch]), device),
                        cache,
                    );
                    cache = c;
                    by_pos.push(to_vec(l));
                }
                let mut out = Vec::with_capacity(batch * len * vocab);
                for b in 0..batch {
                    for p in &by_pos {
                        out.extend_from_slice(&p[b * vocab..(b + 1) * vocab]);
                    }
                }
                vec![out]
            },
        ));
        Ok(rows)
    }
}

/// A tensor of the fixture, which must be stored as `dtype`, as values of `T` and its shape.
fn read<T: burn::tensor::Element>(
    t: &safetensors::SafeTensors,
    key: &str,
    dtype: safetensors::Dtype,
    fixture: &str,
) -> CliResult<(Vec<T>, Vec<usize>)> {
    let view = t
        .tensor(key)
        .map_err(|e| io(format!("the {fixture} fixture has no {key}: {e}")))?;
    if view.dtype() != dtype {
        return Err(io(format!(
            "the {fixture} fixture's {key} is {:?}, not {dtype:?}",
            view.dtype()
        )));
    }
    let shape = view.shape().to_vec();
    let data = TensorData::from_bytes_vec(view.data().to_vec(), shape.clone(), T::dtype());
    let values = data
        .try_to_vec::<T>()
        .map_err(|e| io(format!("the {fixture} fixture's {key}: {e:?}")))?;
    Ok((values, shape))
}
