//! S4ND (Nguyen, Goel, Gu et al., 2022, "S4ND: Modeling Images and Videos as Multidimensional
//! Signals Using State Spaces"; state-spaces/s4 `src/models/sequence/modules/s4nd.py`): an
//! SSM convolution over N spatial axes whose kernel is the outer product of one 1-D SSM kernel
//! per axis,
//!
//! `K(x₁, …, x_N) = Π_i k_i(x_i)`,
//!
//! each `k_i` an S4 (DPLR) or S4D (diagonal) kernel with its own step `Δ_i`, two-sided when the
//! layer is bidirectional (`k_i(x) = k_i^→(x)` for `x ≥ 0`, `k_i^←(−x − 1)` for `x < 0`). The
//! convolution runs in the frequency domain over each axis padded to `L_i + L_kernel,i`:
//! `y = irfftn(rfftn(u) · Π_i K̂_i) + D u` ([`ssm_backends::rfftn`] / [`ssm_backends::irfftn`],
//! on every backend), then `GLU(W · GELU(y))` over the channels.
//!
//! The kernel is continuous: each axis's kernel is sampled at the length it is given, and
//! [`S4ND::forward_at_rate`] takes the reference's `rate` (the step becomes `rate Δ`), so a layer
//! trained at one resolution runs at another (rate 0.5 at twice the size samples the same
//! continuous kernel twice as densely: the paper's zero-shot resolution change).
#![allow(non_snake_case)]

use crate::io::TensorMap;
use crate::ssm::glu::glu_output;
use crate::ssm::reference::{self, ReferenceLayer, ReferenceOptions};
use crate::ssm::s4::{S4Config, S4Kernel};
use crate::ssm::s4d::{S4DInit, S4DKernel, S4DKernelConfig};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor};
use ssm_backends::{fft, irfftn, rfft, rfftn};

/// The 1-D kernel of each axis.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum S4NDKernelKind {
    /// S4's DPLR kernel with the HiPPO-LegS initialisation (the reference's default `mode`).
    S4,
    /// The diagonal S4D kernel (S4D-LegS initialisation, ZOH).
    S4D,
}

/// Configuration of an [`S4ND`] layer.
#[derive(Config, Debug)]
pub struct S4NDConfig {
    /// Channels H.
    pub d_model: usize,
    /// State size N of each axis's SSM.
    #[config(default = 64)]
    pub d_state: usize,
    /// Spatial axes (2 for images, 3 for videos).
    #[config(default = 2)]
    pub dim: usize,
    /// The 1-D kernel of each axis (default [`S4NDKernelKind::S4`]).
    #[config(default = "S4NDKernelKind::S4")]
    pub kernel: S4NDKernelKind,
    /// Two-sided kernels (the reference's default).
    #[config(default = true)]
    pub bidirectional: bool,
    /// Lower bound of each axis's initial step Δ: `log_dt` is drawn uniformly in
    /// `[ln dt_min, ln dt_max]`.
    #[config(default = 0.001)]
    pub dt_min: f64,
    /// Upper bound of each axis's initial step Δ (see `dt_min`).
    #[config(default = 0.1)]
    pub dt_max: f64,
    /// Dropout probability after the GELU, before `output_linear` (0: none).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// The longest kernel per axis (the reference's `l_max`); `None`: as long as the input.
    pub l_max: Option<usize>,
}

impl S4NDConfig {
    /// A layer with the reference's initialisation: per axis a kernel of [`S4NDKernelKind`],
    /// `D` standard normal, the output linear H → 2H.
    pub fn init(&self, device: &Device) -> S4ND {
        let h = self.d_model;
        let kernel = (0..self.dim.max(1))
            .map(|_| match self.kernel {
                S4NDKernelKind::S4 => AxisKernel::S4(
                    S4Config::new(h)
                        .with_d_state(self.d_state)
                        .with_dt_min(self.dt_min)
                        .with_dt_max(self.dt_max)
                        .with_bidirectional(self.bidirectional)
                        .init_kernel(device),
                ),
                S4NDKernelKind::S4D => AxisKernel::S4D(
                    S4DKernelConfig::new(h)
                        .with_d_state(self.d_state)
                        .with_dt_min(self.dt_min)
                        .with_dt_max(self.dt_max)
                        .with_init(S4DInit::LegS)
                        .with_bidirectional(self.bidirectional)
                        .init(device),
                ),
            })
            .collect();
        S4ND {
            D: Param::from_tensor(Tensor::random([h], Distribution::Normal(0.0, 1.0), device)),
            kernel,
            output_linear: LinearConfig::new(h, 2 * h).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            l_max: self.l_max,
        }
    }
}

/// The 1-D SSM kernel of one spatial axis.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AxisKernel {
    /// An S4 (DPLR) kernel (the reference's `SSMKernelDPLR`, with `P` and `l_kernel`).
    S4(S4Kernel),
    /// An S4D (diagonal) kernel (the reference's `SSMKernelDiag`).
    S4D(S4DKernel),
}

impl AxisKernel {
    /// The forward kernel and, when two-sided, the backward one (H, len) at `rate`.
    pub fn kernels(&self, len: usize, rate: f64) -> (Tensor<2>, Option<Tensor<2>>) {
        match self {
            AxisKernel::S4(k) => k.kernels_at_rate(len, rate),
            AxisKernel::S4D(k) => k.kernels_at_rate(len, rate),
        }
    }
}

/// The S4ND layer on (B, H, L₁, …, L_N) inputs (the reference's `transposed = True` layout).
#[derive(Module, Debug)]
pub struct S4ND {
    /// The skip (H) (the reference's `D`, (1, H)).
    pub D: Param<Tensor<1>>,
    /// One 1-D kernel per spatial axis, in axis order.
    pub kernel: Vec<AxisKernel>,
    /// The reference's `output_linear.0` (H → 2H before the GLU).
    pub output_linear: Linear,
    /// Dropout after the GELU, before `output_linear`.
    pub dropout: Dropout,
    /// The longest kernel per axis (the reference's `l_max`, here one for every axis); `None`:
    /// as long as the input.
    pub l_max: Option<usize>,
}

impl S4ND {
    /// Spatial axes N.
    pub fn dims(&self) -> usize {
        self.kernel.len()
    }

    /// The layer at the sampling rate 1: (B, H, L₁, …, L_N) → the same shape.
    ///
    /// # Panics
    /// When the input's rank is not 2 + [`dims`](Self::dims) or its channels are not H.
    pub fn forward<const D: usize>(&self, u: Tensor<D>) -> Tensor<D> {
        self.forward_at_rate(u, 1.0)
    }

    /// The layer with each axis's kernel sampled at relative frequency `rate` (the reference's
    /// `rate`: 0.5 for inputs at twice the resolution the layer was trained at).
    ///
    /// # Panics
    /// As [`forward`](Self::forward), and when `rate` is not positive.
    pub fn forward_at_rate<const D: usize>(&self, u: Tensor<D>, rate: f64) -> Tensor<D> {
        let y = self.ssm(u, rate);
        let dims = y.dims();
        let flat = y.reshape([dims[0] as i32, dims[1] as i32, -1]);
        glu_output(&self.output_linear, &self.dropout, flat).reshape(dims)
    }

    /// The SSM convolution with the skip, `K * u + D u`, before the output (same shape as `u`).
    ///
    /// # Panics
    /// As [`forward_at_rate`](Self::forward_at_rate).
    pub fn ssm<const D: usize>(&self, u: Tensor<D>, rate: f64) -> Tensor<D> {
        let n = self.dims();
        assert_eq!(
            D,
            n + 2,
            "S4ND: a layer over {n} axes takes (B, H, L_1, .., L_{n}) inputs, not rank {D}"
        );
        assert!(rate > 0.0, "S4ND: the rate must be positive, not {rate}");
        let dims = u.dims();
        let h = self.D.dims()[0];
        assert_eq!(
            dims[1], h,
            "S4ND: the input has {} channels, not H = {h}",
            dims[1]
        );
        let lens = &dims[2..];
        // Each axis: the kernel's taps (at most l_max / rate) and the padded transform length.
        let taps: Vec<usize> = lens
            .iter()
            .map(|&l| match self.l_max {
                Some(m) => l.min(reference::python_round(m as f64 / rate).max(1)),
                None => l,
            })
            .collect();
        let padded: Vec<usize> = lens.iter().zip(&taps).map(|(l, k)| l + k).collect();
        let device = u.device();
        let (mut yr, mut yi) = rfftn(u.clone(), &padded);
        for (axis, kernel) in self.kernel.iter().enumerate() {
            let (len, tap, size) = (lens[axis], taps[axis], padded[axis]);
            let (fwd, bwd) = kernel.kernels(tap, rate);
            // The two-sided kernel over the padded axis: the forward taps at 0.., the backward
            // ones reversed at the end (lag -1 at size - 1), zeros between.
            let mut k = Tensor::cat(vec![fwd, Tensor::zeros([h, len], &device)], 1);
            if let Some(bwd) = bwd {
                k = k + Tensor::cat(vec![Tensor::zeros([h, len], &device), bwd.flip([1])], 1);
            }
            let (kr, ki) = if axis + 1 == n {
                rfft(k, size)
            } else {
                fft(k.clone(), k.zeros_like(), 1, size)
            };
            // (H, bins) broadcast over the batch and the other axes.
            let mut shape = [1usize; D];
            shape[1] = h;
            shape[2 + axis] = kr.dims()[1];
            let (kr, ki) = (kr.reshape(shape), ki.reshape(shape));
            (yr, yi) = (
                yr.clone() * kr.clone() - yi.clone() * ki.clone(),
                yr * ki + yi * kr,
            );
        }
        let mut y = irfftn(yr, yi, &padded);
        for (axis, &len) in lens.iter().enumerate() {
            y = y.narrow(2 + axis, 0, len);
        }
        let mut shape = [1usize; D];
        shape[1] = h;
        y + u * self.D.val().reshape(shape)
    }
}

/// Loads the state dict of state-spaces/s4's `S4ND` module (`src/models/sequence/modules/s4nd.py`
/// with `linear=False`, `final_act='glu'`, one channel, `trank` 1, no `out_channels`):
/// `D` (1, H), per axis `i` the kernel under `kernel.{i}` (an `SSMKernelDPLR`, with `P` and
/// `l_kernel`, read by [`S4Kernel::take_reference`]; or an `SSMKernelDiag`, read by
/// [`S4DKernel::take_reference`]), one kernel channel or two (`bidirectional`), and
/// `output_linear.0.{weight (2H, H), bias}`. Every key is checked for presence and shape, and
/// leftovers are an error. The options give the kernels' `dt_transform` and discretisation and
/// the layer's `l_max`.
impl ReferenceLayer for S4ND {
    type Options = ReferenceOptions;

    fn take_reference(
        w: &mut TensorMap,
        options: &ReferenceOptions,
        device: &Device,
    ) -> crate::Result<Self> {
        let h = reference::single_channel(w, "D")?;
        let mut kernel = Vec::new();
        while w.contains(&format!("kernel.{}.A_real", kernel.len())) {
            let k = format!("kernel.{}", kernel.len());
            kernel.push(if w.contains(&format!("{k}.P")) {
                AxisKernel::S4(S4Kernel::take_reference(w, &k, h, options, device)?)
            } else {
                AxisKernel::S4D(S4DKernel::take_reference(w, &k, h, options, device)?)
            });
        }
        if kernel.is_empty() {
            return Err(crate::ModelError::Invalid(
                "weights: no 'kernel.0.A_real': not an S4ND layer's state dict".into(),
            ));
        }
        let two_sided = |k: &AxisKernel| match k {
            AxisKernel::S4(k) => k.C_bwd.is_some(),
            AxisKernel::S4D(k) => k.C_bwd.is_some(),
        };
        if kernel.iter().any(two_sided) != kernel.iter().all(two_sided) {
            return Err(crate::ModelError::Invalid(
                "weights: the axes' kernels disagree on being bidirectional ('kernel.i.C' with \
                 one channel and with two)"
                    .into(),
            ));
        }
        Ok(S4ND {
            D: Param::from_tensor(w.take("D", [1, h], device)?.reshape([h])),
            kernel,
            output_linear: w.linear("output_linear.0", h, 2 * h, true, device)?,
            dropout: DropoutConfig::new(0.0).init(),
            l_max: options.l_max,
        })
    }
}
