//! Counting right answers and timing on a device.

use super::error::{CliError, CliResult};
use burn::tensor::{Device, Tensor};

/// How many rows of `logits` (B, classes) pick their label.
pub fn count_right(logits: Tensor<2>, labels: &[usize]) -> CliResult<usize> {
    let p = logits
        .argmax(1)
        .squeeze_dim::<1>(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .map_err(|e| CliError::Io(format!("reading predictions: {e:?}")))?;
    Ok(p.iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as i64)
        .count())
}

/// Waits for the device's queued work (timings end at a sync).
pub fn sync(device: &Device) -> CliResult {
    device
        .sync()
        .map_err(|e| CliError::Io(format!("device error: {e:?}")))
}

/// Seconds of `f` on the device: the median of `runs` timed runs after one untimed run, each
/// ending when the device has finished (its output held across the sync: Burn's fusion may skip
/// work whose result is dropped).
pub fn device_time<T>(device: &Device, runs: usize, mut f: impl FnMut() -> T) -> CliResult<f64> {
    let mut times = Vec::with_capacity(runs);
    for run in 0..=runs.max(1) {
        let t = std::time::Instant::now();
        let out = f();
        sync(device)?;
        let s = t.elapsed().as_secs_f64();
        drop(out);
        if run > 0 {
            times.push(s);
        }
    }
    Ok(median(times))
}

/// The median of timings (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
