//! The device's streaming read bandwidth, measured in the process that runs a benchmark: the
//! bound of memory-bound work such as batch-1 decoding, which reads every weight once per step.

use super::error::{CliResult, io};
use super::measure::{device_time, sync};
use burn::tensor::{Device, Tensor};
use rayon::prelude::*;

/// Timed passes of the probe.
const PASSES: usize = 5;

/// Reads of `bytes` bytes per second (GB/s), the median of 5 timed passes after one untimed
/// pass (which also commits the pages). The median, not the fastest: a single pass timed at
/// 80 GB/s (against 33-36 GB/s for every other) was seen on the 2-core development machine.
/// On a CPU backend: a wrapping integer sum over a buffer of that size on the thread pool the
/// kernels run on (rayon's), each worker streaming its own contiguous part (integer addition is
/// associative, so the compiler vectorises it and the loop is limited by memory, not by a chain
/// of dependent float additions). On a GPU: Burn's sum of a device tensor of that size (one
/// reduction, its scalar read back).
pub fn read_gb_s(bytes: usize, device: &Device) -> CliResult<f64> {
    let n = (bytes / 4).max(1);
    let seconds = if ssm_backends::is_host(device) {
        let buf = vec![1u32; n];
        let chunk = n.div_ceil(rayon::current_num_threads() * 4).max(1 << 14);
        let mut wrong = false;
        let t = device_time(device, PASSES, || {
            let total: u32 = buf
                .par_chunks(chunk)
                .map(|c| c.iter().fold(0u32, |s, &x| s.wrapping_add(x)))
                .reduce(|| 0, u32::wrapping_add);
            // The sum is checked, so the reads cannot be optimised away.
            wrong |= total != n as u32;
        })?;
        if wrong {
            return Err(io("the bandwidth probe summed a wrong total"));
        }
        t
    } else {
        let buf = Tensor::<1>::ones([n], device);
        sync(device)?;
        device_time(device, PASSES, || buf.clone().sum().into_data())?
    };
    Ok((4 * n) as f64 / seconds / 1e9)
}
