//! The launchers' shared buffer machinery: flat contiguous inputs, small inputs packed into one
//! buffer, several outputs sharing one buffer in regions aligned for binding, and the device's
//! limits (shared memory, units per cube, the largest buffer it binds).
//!
//! Every kernel takes at most seven storage bindings (some adapters bind only eight per kernel,
//! and CubeCL keeps one for itself): hence the packing.

use super::fallback::Unsupported;
use crate::prim::P;
use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::tensor::Shape;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::{into_contiguous, slice};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) type Cb = CubeBackend;

/// A contiguous, flat (1-D) copy or view of `t`.
pub(crate) fn flat(t: CubeTensor) -> CubeTensor {
    let n = t.shape().num_elements();
    let t = into_contiguous(t);
    Cb::float_reshape(t, Shape::new([n]))
}

/// Flat tensors laid end to end in one buffer; returns it and each part's offset (elements).
pub(crate) fn pack(parts: Vec<CubeTensor>) -> (CubeTensor, Vec<usize>) {
    let mut offsets = Vec::with_capacity(parts.len());
    let mut at = 0;
    let flats: Vec<CubeTensor> = parts
        .into_iter()
        .map(|p| {
            let f = flat(p);
            offsets.push(at);
            at += f.shape().num_elements();
            f
        })
        .collect();
    (Cb::float_cat(flats, 0), offsets)
}

/// One output buffer holding several regions, each starting on the binding alignment.
pub(crate) struct Regions {
    pub(crate) offsets: Vec<usize>,
    total: usize,
}

impl Regions {
    pub(crate) fn new(like: &CubeTensor, sizes: &[usize]) -> Self {
        let elem = like.dtype.size();
        let align = (like.client.properties().memory.alignment as usize / elem).max(1);
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for s in sizes {
            offsets.push(at);
            at += s.div_ceil(align) * align;
        }
        Self {
            offsets,
            total: at.max(1),
        }
    }

    pub(crate) fn alloc(&self, like: &CubeTensor) -> CubeTensor {
        empty_device_dtype(
            like.client.clone(),
            like.device.clone(),
            Shape::new([self.total]),
            like.dtype,
        )
    }

    /// Region `i` of `buf` as a tensor of shape `dims` (a view when aligned).
    pub(crate) fn view(&self, buf: &CubeTensor, i: usize, dims: &[usize]) -> CubeTensor {
        let n: usize = dims.iter().product();
        let start = self.offsets[i];
        let range = start..start + n;
        let part = slice(buf.clone(), std::slice::from_ref(&range));
        Cb::float_reshape(part, Shape::from(dims.to_vec()))
    }
}

pub(crate) fn u32s(values: &[usize]) -> SequenceArg<u32> {
    let mut seq = SequenceArg::new();
    for v in values {
        seq.push(u32::try_from(*v).expect("size exceeds the kernels' 32-bit indexing"));
    }
    seq
}

pub(crate) fn shared_limit(t: &CubeTensor) -> usize {
    t.client.properties().hardware.max_shared_memory_size
}

/// Whether `t`'s device is no card (a software rasteriser such as Mesa's lavapipe, or a CPU
/// runtime): there shader loops are capped (see `crate::scan::cube::plan::max_segment`), so long
/// sequences are walked in several launches.
pub(crate) fn loop_capped(t: &CubeTensor) -> bool {
    t.client.properties().identity.physical.is_none()
}

pub(crate) fn max_units(t: &CubeTensor) -> usize {
    let hw = &t.client.properties().hardware;
    (hw.max_units_per_cube as usize).min(hw.max_cube_dim.0 as usize)
}

/// The environment variable that lowers the largest buffer the launchers plan for (bytes): for
/// adapters that report more than they bind. Read once, at the first launch.
pub const MAX_BUFFER_VAR: &str = "SSM_ZOO_CUBE_MAX_BUFFER";

/// The limit from [`MAX_BUFFER_VAR`], read once (`None` when unset; a value that is not a
/// number of bytes is refused with a warning, once).
fn env_max_buffer() -> Option<usize> {
    static LIMIT: OnceLock<Option<usize>> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let v = std::env::var(MAX_BUFFER_VAR).ok()?;
        match v.trim().parse::<usize>() {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                log::warn!("{MAX_BUFFER_VAR}={v:?} is not a number of bytes: ignored");
                None
            }
        }
    })
}

/// A limit set by the tests (0: none), below the device's and the environment's.
static TEST_MAX_BUFFER: AtomicUsize = AtomicUsize::new(0);

/// Lowers the largest buffer the launchers plan for (`None`: back to the device's and
/// [`MAX_BUFFER_VAR`]'s); for tests of the batch split.
#[cfg(feature = "test-utils")]
pub(crate) fn set_test_max_buffer(bytes: Option<usize>) {
    TEST_MAX_BUFFER.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// The largest buffer (bytes) a launch may bind: the device's limit, lowered by
/// [`MAX_BUFFER_VAR`] and the tests' limit.
pub(crate) fn max_buffer(t: &CubeTensor) -> usize {
    binding_limit(t.client.properties().memory.max_page_size)
}

/// The largest buffer (bytes) a kernel may bind on a device whose runtime reports
/// `max_page_size` (wgpu: its storage-buffer binding limit), lowered by [`MAX_BUFFER_VAR`] and
/// the tests' limit.
pub(crate) fn binding_limit(max_page_size: u64) -> usize {
    let device = usize::try_from(max_page_size).unwrap_or(usize::MAX);
    let test = match TEST_MAX_BUFFER.load(Ordering::Relaxed) {
        0 => usize::MAX,
        v => v,
    };
    device.min(env_max_buffer().unwrap_or(usize::MAX)).min(test)
}

/// Whether every tensor has the element type of the first (the kernels take one float type).
pub(crate) fn same_dtype(ts: &[&CubeTensor]) -> bool {
    ts.iter().all(|t| t.dtype == ts[0].dtype)
}

/// Rows `lo..hi` of the batch (first) axis.
pub(crate) fn rows(t: &CubeTensor, lo: usize, hi: usize) -> CubeTensor {
    P::<Cb>::new(t.clone()).narrow(0, lo, hi).into_inner()
}

/// The batch rows per launch so that no buffer of `bytes_per_row` (per batch row) exceeds the
/// device's largest binding (lavapipe and WebGPU: 128 MiB); an error if one row does not fit.
pub(crate) fn rows_per_launch(
    t: &CubeTensor,
    batch: usize,
    bytes_per_row: &[usize],
) -> Result<usize, Unsupported> {
    let worst = bytes_per_row.iter().copied().max().unwrap_or(0).max(1);
    // Room for the regions' alignment padding.
    let limit = max_buffer(t).saturating_sub(4096);
    if worst > limit {
        return Err(Unsupported::Because(format!(
            "one batch row needs a {worst}-byte buffer, over the device's {limit}-byte binding \
             limit"
        )));
    }
    Ok((limit / worst).clamp(1, batch.max(1)))
}

/// Whether every size fits the kernels' 32-bit indexing, else why not.
pub(crate) fn require_u32(sizes: &[usize]) -> Result<(), Unsupported> {
    match sizes.iter().find(|s| u32::try_from(**s).is_err()) {
        None => Ok(()),
        Some(s) => Err(Unsupported::Because(format!(
            "a buffer of {s} elements exceeds the kernels' 32-bit indexing"
        ))),
    }
}

/// Whether every tensor has the float type of the first, else why not.
pub(crate) fn require_same_dtype(ts: &[&CubeTensor]) -> Result<(), Unsupported> {
    if same_dtype(ts) {
        return Ok(());
    }
    let types: Vec<_> = ts.iter().map(|t| t.dtype).collect();
    Err(Unsupported::Because(format!(
        "its inputs mix float types ({types:?}); the kernels take one"
    )))
}
