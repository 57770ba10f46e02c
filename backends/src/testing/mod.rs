//! Helpers for tests and benchmarks (the `test-utils` feature; not part of the API): reading
//! reference fixtures, comparing tensors, choosing the wgpu device of a test run, and access to
//! the internals a test checks a kernel against (the portable bodies, the composed decode steps,
//! the CPU kernels' call counts, the GPU launchers' buffer limit).

use burn::tensor::{Device, Int, Tensor, TensorData};
use std::path::{Path, PathBuf};

mod compare;
mod rng;
mod skip;

pub use compare::{Gap, assert_abs, assert_finite, assert_rel, gap, max_abs_diff, max_rel_diff};
pub use rng::{Seeded, TestRng, seeded};
pub use skip::{REQUIRE_WGPU_VAR, skip, strict};

/// The portable bodies of the ops on backend primitives, the oracle of the kernel tests.
pub mod portable {
    pub use crate::linear::reference::q_rows_matmul;
    pub use crate::norm::reference::add_rms_norm;
    pub use crate::scan::reference::{
        ScanArgs, ScanGradTuple, ScanGrads, selective_scan, selective_scan_backward,
    };
    pub use crate::step::reference::{causal_conv1d_step, selective_state_step};
    use crate::{Mamba2StepConfig, SsmOps};
    use burn::backend::tensor::FloatTensor;

    /// The Mamba decode step composed of the backend's conv and state steps and two matmuls
    /// (the default body of [`SsmOps::mamba_decode_step`]).
    pub fn mamba_step_composed<B: SsmOps>(
        xz: FloatTensor<B>,
        conv_state: FloatTensor<B>,
        ssm_state: FloatTensor<B>,
        weights: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        crate::step::reference::mamba_step_composed::<B>(xz, conv_state, ssm_state, weights)
    }

    /// The Mamba-3 decode step on the backend's tensor ops (the default body of
    /// [`SsmOps::mamba3_decode_step`]).
    pub fn mamba3_step_composed<B: SsmOps>(
        proj: FloatTensor<B>,
        conv_state: FloatTensor<B>,
        ssm_state: FloatTensor<B>,
        weights: FloatTensor<B>,
        cfg: crate::Mamba3StepConfig,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        crate::mamba3_step::reference::mamba3_step_composed::<B>(
            proj, conv_state, ssm_state, weights, cfg,
        )
    }

    /// The Mamba2 decode step composed of the backend's conv and state steps (the default body
    /// of [`SsmOps::mamba2_decode_step`]).
    pub fn mamba2_step_composed<B: SsmOps>(
        zxbcdt: FloatTensor<B>,
        conv_state: FloatTensor<B>,
        ssm_state: FloatTensor<B>,
        weights: FloatTensor<B>,
        cfg: Mamba2StepConfig,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        crate::step::reference::mamba2_step_composed::<B>(
            zxbcdt, conv_state, ssm_state, weights, cfg,
        )
    }
}

pub use crate::cpu::calls::KernelCalls;

/// How many times the fused CPU kernels ran in this process. Tests use it to prove that the
/// kernel, not the portable body, ran.
pub fn cpu_kernel_calls() -> KernelCalls {
    crate::cpu::calls::kernel_calls()
}

/// Lowers the largest buffer the GPU launchers plan for, in bytes (`None`: back to the device's
/// limit and [`crate::MAX_BUFFER_VAR`]'s), to test the split of a batch into several launches.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn set_gpu_max_buffer(bytes: Option<usize>) {
    crate::cube::buffers::set_test_max_buffer(bytes);
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub use crate::tuning::{set_gpu_scan_spans, set_gpu_scan_staging};

/// The repository's `fixtures/` folder (reference data shipped with the sources).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// A safetensors file of reference tensors, read whole.
pub struct Fixture {
    bytes: Vec<u8>,
    path: PathBuf,
}

impl Fixture {
    /// Opens a fixture file; panics with the path when it cannot be read (tests only).
    pub fn open(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Self { bytes, path }
    }

    fn view(&self, name: &str) -> (Vec<usize>, safetensors::Dtype, Vec<u8>) {
        let st = safetensors::SafeTensors::deserialize(&self.bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", self.path.display()));
        let t = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("{}: no tensor '{name}': {e}", self.path.display()));
        (t.shape().to_vec(), t.dtype(), t.data().to_vec())
    }

    /// A float tensor as f32 values with its shape.
    pub fn values(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let (shape, dtype, data) = self.view(name);
        assert_eq!(dtype, safetensors::Dtype::F32, "{name} is not f32");
        let v = data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (v, shape)
    }

    /// Asserts that `got` has the shape of the fixture tensor `name` and its values within
    /// `tol` times the reference's largest magnitude (a bound relative to the tensor's own
    /// scale; any non-finite value fails); the error is printed (`--nocapture`) for the notes.
    pub fn assert_rel<const D: usize>(&self, name: &str, got: Tensor<D>, tol: f64) -> Gap {
        let (want, shape) = self.values(name);
        assert_eq!(got.dims().to_vec(), shape, "{name}: shape");
        assert_rel(name, &crate::to_vec(got), &want, tol)
    }

    /// A float64 tensor's values with its shape.
    pub fn values_f64(&self, name: &str) -> (Vec<f64>, Vec<usize>) {
        let (shape, dtype, data) = self.view(name);
        assert_eq!(dtype, safetensors::Dtype::F64, "{name} is not f64");
        let v = data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        (v, shape)
    }

    /// An integer tensor (i64) with its shape.
    pub fn ints(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let (shape, dtype, data) = self.view(name);
        assert_eq!(dtype, safetensors::Dtype::I64, "{name} is not i64");
        let v = data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (v, shape)
    }

    /// A float tensor on a device.
    pub fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        let (v, shape) = self.values(name);
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// An integer tensor on a device.
    pub fn int_tensor<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D, Int> {
        let (v, shape) = self.ints(name);
        Tensor::from_data(TensorData::new(v, shape), device)
    }
}

/// The environment variable naming the device the GPU tests run on (default `wgpu`; `cuda`
/// in a build with the `cuda` feature runs the same kernel tests through CUDA).
pub const TEST_GPU_VAR: &str = "SSM_ZOO_TEST_GPU";

/// The device for a GPU test (wgpu, or the one [`TEST_GPU_VAR`] names), or `None` (with a
/// message) when this machine has no such device; on CI ([`strict`]) that is a failure.
#[cfg(feature = "wgpu")]
pub fn wgpu_test_device() -> Option<Device> {
    let name = std::env::var(TEST_GPU_VAR).unwrap_or_else(|_| "wgpu".into());
    match crate::parse_device(Some(&name)) {
        Ok(d) => Some(d),
        Err(e) => {
            skip(&format!("{name} test"), format!("{name} is unusable: {e}"));
            None
        }
    }
}
