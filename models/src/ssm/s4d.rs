//! S4D (Gu et al., 2022, "On the Parameterization and Initialization of Diagonal State Space
//! Models"): a diagonal complex SSM per channel, used as a long convolution.
//!
//! With `N/2` complex modes per channel (conjugate pairs implicit), `A_n = -exp(log_A_real_n) +
//! i A_imag_n`, `dt = exp(log_dt)`:
//! - ZOH: `dA = exp(dt A)`, `K[l] = 2 Re Σ_n C_n (exp(dt A_n) - 1) / A_n · exp(dt A_n l)`;
//! - bilinear: `dA = (1 + dt A / 2) / (1 - dt A / 2)`, `K[l] = 2 Re Σ_n C_n dt / (1 - dt A_n / 2) ·
//!   dA_n^l`.
//!
//! The layer (`S4D` of state-spaces/s4 `models/s4/s4d.py`): `y = GLU(W · GELU(K * u + D u))`.
//! Complex numbers are (re, im) pairs of real tensors; parameter names are the reference's
//! (`kernel.log_dt`, `kernel.C` as (H, N/2, 2), `kernel.log_A_real`, `kernel.A_imag`, `D`).
#![allow(non_snake_case)]

use crate::io::TensorMap;
use crate::ssm::complex::Complex;
use crate::ssm::glu::glu_output;
use crate::ssm::kernel_cache::KernelCache;
use crate::ssm::reference::{self, ReferenceLayer, ReferenceOptions};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use std::f64::consts::PI;
use std::ops::{Div, Mul};

/// Initialisation of the diagonal `A` (state-spaces/s4's `init` names).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum S4DInit {
    /// `A_n = -1/2 + i π n` (S4D-Lin).
    Lin,
    /// `A_n = -1/2 + i N/π (N / (2n + 1) - 1)` (S4D-Inv).
    Inv,
    /// `A_n = -(n + 1)`, real (S4D-Real).
    Real,
    /// The eigenvalues of HiPPO-LegS's normal part, one of each conjugate pair (S4D-LegS, the
    /// diagonal of S4's DPLR HiPPO-LegS).
    LegS,
}

/// Configuration of an [`S4DKernel`].
#[derive(Config, Debug)]
pub struct S4DKernelConfig {
    /// Channels H.
    pub d_model: usize,
    /// State size N (N/2 complex modes).
    #[config(default = 64)]
    pub d_state: usize,
    /// Lower bound of the initial step Δ: `log_dt` is drawn uniformly in
    /// `[ln dt_min, ln dt_max]`.
    #[config(default = 0.001)]
    pub dt_min: f64,
    /// Upper bound of the initial step Δ (see `dt_min`).
    #[config(default = 0.1)]
    pub dt_max: f64,
    /// Initialisation of the diagonal `A` (default [`S4DInit::Lin`]).
    #[config(default = "S4DInit::Lin")]
    pub init: S4DInit,
    /// Bilinear rather than zero-order-hold discretisation.
    #[config(default = false)]
    pub bilinear: bool,
    /// A second output matrix for the reversed direction: a two-sided (non-causal) kernel.
    #[config(default = false)]
    pub bidirectional: bool,
}

impl S4DKernelConfig {
    /// A kernel with the reference's initialisation: `log_dt` uniform in `[log dt_min,
    /// log dt_max]`, `C` complex normal (variance 1/2 per part), `A` from [`S4DInit`].
    pub fn init(&self, device: &Device) -> S4DKernel {
        let (h, n2) = (self.d_model, (self.d_state / 2).max(1));
        let (lo, hi) = (self.dt_min.ln(), self.dt_max.ln());
        let mut re = Vec::with_capacity(h * n2);
        let mut im = Vec::with_capacity(h * n2);
        let legs = (self.init == S4DInit::LegS).then(|| crate::ssm::hippo::nplr_legs(2 * n2));
        for _ in 0..h {
            for n in 0..n2 {
                let nf = n as f64;
                let (r, i) = match self.init {
                    // Sorted by frequency, positive first: one of each conjugate pair.
                    S4DInit::LegS => {
                        let l = legs.as_ref().expect("computed above").lambda[n];
                        (-l.re, l.im)
                    }
                    S4DInit::Lin => (0.5, PI * nf),
                    S4DInit::Inv => (
                        0.5,
                        (n2 as f64) / PI * ((n2 as f64) / (2.0 * nf + 1.0) - 1.0),
                    ),
                    S4DInit::Real => (nf + 1.0, 0.0),
                };
                re.push((r as f32).ln());
                im.push(i as f32);
            }
        }
        S4DKernel {
            log_dt: Param::from_tensor(Tensor::random([h], Distribution::Uniform(lo, hi), device)),
            C: Param::from_tensor(Tensor::random(
                [h, n2, 2],
                Distribution::Normal(0.0, 0.5f64.sqrt()),
                device,
            )),
            log_A_real: Param::from_tensor(Tensor::from_data(TensorData::new(re, [h, n2]), device)),
            A_imag: Param::from_tensor(Tensor::from_data(TensorData::new(im, [h, n2]), device)),
            C_bwd: self.bidirectional.then(|| {
                Param::from_tensor(Tensor::random(
                    [h, n2, 2],
                    Distribution::Normal(0.0, 0.5f64.sqrt()),
                    device,
                ))
            }),
            bilinear: self.bilinear,
            cache: KernelCache::default(),
        }
    }
}

/// The S4D convolution kernel's parameters (reference names).
#[derive(Module, Debug)]
pub struct S4DKernel {
    /// (H).
    pub log_dt: Param<Tensor<1>>,
    /// (H, N/2, 2): complex C as [re, im].
    pub C: Param<Tensor<3>>,
    /// (H, N/2).
    pub log_A_real: Param<Tensor<2>>,
    /// (H, N/2).
    pub A_imag: Param<Tensor<2>>,
    /// Bidirectional layers: C of the reversed direction (H, N/2, 2).
    pub C_bwd: Option<Param<Tensor<3>>>,
    /// Bilinear rather than ZOH discretisation.
    pub bilinear: bool,
    /// The kernels computed at inference, by length (not a parameter).
    pub cache: KernelCache,
}

/// A discretised diagonal system: `s_t = dA s_{t-1} + u_t`, `y_t = scale · Re Σ_n Cd_n s_t`
/// (the input matrix folded into `Cd`), each (H, N). S4D keeps one of each conjugate pair
/// (`scale` = 2); DSS keeps all modes (`scale` = 1).
#[derive(Debug, Clone)]
pub struct S4DRecurrence {
    /// The discretised state matrix `dA` (H, N).
    pub da: Complex<2>,
    /// The output coefficients `Cd` (H, N), with the discretised input matrix folded in.
    pub cd: Complex<2>,
    /// The output scale: 2 for S4D (one mode of each conjugate pair), 1 for DSS.
    pub scale: f32,
}

impl S4DKernel {
    /// `A = -exp(log_A_real) + i A_imag` (H, N/2).
    pub fn a(&self) -> Complex<2> {
        Complex {
            re: self.log_A_real.val().exp().neg(),
            im: self.A_imag.val(),
        }
    }

    fn c(&self) -> Complex<2> {
        Complex::from_pairs(self.C.val())
    }

    /// The discretised system (ZOH or bilinear).
    pub fn recurrence(&self) -> S4DRecurrence {
        self.recurrence_with(self.c(), 1.0)
    }

    /// `Δ A` (H, N/2) with the step `rate Δ`.
    fn dt_a(&self, rate: f64) -> Complex<2> {
        let a = self.a();
        let dt = self.log_dt.val().exp().unsqueeze_dim::<2>(1) * rate; // (H, 1)
        Complex {
            re: a.re * dt.clone(),
            im: a.im * dt,
        }
    }

    fn recurrence_with(&self, c: Complex<2>, rate: f64) -> S4DRecurrence {
        let a = self.a();
        let dt = self.log_dt.val().exp().unsqueeze_dim::<2>(1) * rate; // (H, 1)
        let dta = self.dt_a(rate);
        let ones = dta.re.ones_like();
        let (da, b) = if self.bilinear {
            // dA = (1 + dtA/2) / (1 - dtA/2), dB = dt / (1 - dtA/2).
            let half = Complex {
                re: dta.re.clone() * 0.5,
                im: dta.im.clone() * 0.5,
            };
            let den = Complex {
                re: ones.clone() - half.re.clone(),
                im: half.im.clone().neg(),
            };
            let num = Complex {
                re: ones.clone() + half.re,
                im: half.im,
            };
            let da = num.div(den.clone());
            let db = Complex {
                re: dt.clone().expand(ones.dims()),
                im: ones.zeros_like(),
            }
            .div(den);
            (da, db)
        } else {
            // dA = exp(dtA), dB = (exp(dtA) - 1) / A.
            let da = dta.exp();
            let db = Complex {
                re: da.re.clone() - ones,
                im: da.im.clone(),
            }
            .div(a);
            (da, db)
        };
        S4DRecurrence {
            da,
            cd: c.mul(b),
            scale: 2.0,
        }
    }

    /// The convolution kernel K (H, L): `K[l] = 2 Re Σ_n Cd_n dA_n^l`.
    pub fn kernel(&self, len: usize) -> Tensor<2> {
        self.kernel_with(self.c(), len, 1.0)
    }

    /// The reversed direction's kernel (H, L) of a bidirectional layer.
    pub fn kernel_backward(&self, len: usize) -> Option<Tensor<2>> {
        self.C_bwd
            .as_ref()
            .map(|c| self.kernel_with(Complex::from_pairs(c.val()), len, 1.0))
    }

    /// The kernel (H, L) sampled at relative frequency `rate` (the reference's `rate`: the step
    /// becomes `rate Δ`), and a bidirectional layer's backward kernel.
    ///
    /// At inference (no parameter tracked) the kernels come from [`Self::cache`] after the
    /// first call at a length.
    pub fn kernels_at_rate(&self, len: usize, rate: f64) -> (Tensor<2>, Option<Tensor<2>>) {
        let mut k = self.cache.get_or(self, len, rate, || {
            let mut k = vec![self.kernel_with(self.c(), len, rate)];
            k.extend(
                self.C_bwd
                    .as_ref()
                    .map(|c| self.kernel_with(Complex::from_pairs(c.val()), len, rate)),
            );
            k
        });
        let backward = (k.len() > 1).then(|| k.pop()).flatten();
        (k.pop().expect("the forward kernel"), backward)
    }

    /// `dA^l` as `exp(l log dA)`: under ZOH `log dA` is `Δ A` itself (the reference's
    /// `log_vandermonde(C, dtA, L)`), so no logarithm or angle of `dA` is taken (a round trip
    /// through `log |dA|` and `atan2` loses about 1e-4 relative at L = 1024 on GPUs); under the
    /// bilinear transform it is `log |dA| + i arg dA`, as the reference's `dA.log()`.
    fn kernel_with(&self, c: Complex<2>, len: usize, rate: f64) -> Tensor<2> {
        let r = self.recurrence_with(c, rate);
        let log_da = if self.bilinear {
            Complex {
                re: (r.da.re.clone().square() + r.da.im.clone().square()).log() * 0.5,
                im: r.da.im.clone().atan2(r.da.re.clone()),
            }
        } else {
            self.dt_a(rate)
        };
        vandermonde_kernel(&r.cd, log_da, r.scale, len)
    }
}

impl S4DKernel {
    /// Reads the keys of state-spaces/s4's `SSMKernelDiag` under `k` for `h` channels
    /// (`{k}.{inv_dt, A_real, A_imag, B, C}`, one or two kernel channels), taking them out of
    /// `w`: the kernel of an `S4Block` with the diagonal kernel (`k = "layer.kernel"`) or of one
    /// axis of an S4ND layer (`"kernel.{i}"`). `A`, `B` shared over `n_ssm` copies are repeated
    /// over the channels and `B` is folded into `C`; `options` give `dt_transform` and the
    /// discretisation.
    pub fn take_reference(
        w: &mut TensorMap,
        k: &str,
        h: usize,
        options: &ReferenceOptions,
        device: &Device,
    ) -> crate::Result<Self> {
        if w.contains(&format!("{k}.P")) {
            return Err(crate::ModelError::Invalid(format!(
                "weights: '{k}.P' present: a DPLR (S4) kernel, load it with S4::load_reference"
            )));
        }
        let sizes = reference::sizes(w, k, h)?;
        let (h, _, n2) = sizes;
        let log_dt = reference::log_dt(w, k, h, options.dt_transform, device)?;
        let (lre, lim) = reference::lambda(w, k, sizes, device)?;
        let b = reference::shared(w, &format!("{k}.B"), sizes, device)?;
        let (c, c_bwd) = reference::output_c(w, k, h, n2, device)?;
        // B C as one complex coefficient.
        let b = Complex::from_pairs(b);
        let times_b = |c: Tensor<3>| (b.clone() * Complex::from_pairs(c)).into_pairs();
        Ok(S4DKernel {
            log_dt: Param::from_tensor(log_dt),
            C: Param::from_tensor(times_b(c)),
            log_A_real: Param::from_tensor(lre.neg().log()),
            A_imag: Param::from_tensor(lim),
            C_bwd: c_bwd.map(|c| Param::from_tensor(times_b(c))),
            bilinear: options.bilinear,
            cache: KernelCache::default(),
        })
    }
}

/// `K[l] = scale · Re Σ_n Cd_n exp(l log_dA_n)` (H, L) for `cd`, `log_da` (H, N), by
/// [`ssm_backends::vandermonde()`] (no (H, N, L) tensor on the CPU and the GPUs).
fn vandermonde_kernel(cd: &Complex<2>, log_da: Complex<2>, scale: f32, len: usize) -> Tensor<2> {
    ssm_backends::vandermonde(
        (cd.re.clone(), cd.im.clone()),
        (log_da.re, log_da.im),
        None,
        len,
    ) * scale
}

impl S4DRecurrence {
    /// A zero state (B, H, N) for `batch` rows.
    pub fn zero_state(&self, batch: usize) -> Complex<3> {
        let [h, n2] = self.da.re.dims();
        let z = Tensor::zeros([batch, h, n2], &self.da.re.device());
        Complex {
            re: z.clone(),
            im: z,
        }
    }

    /// One step: `u` (B, H) -> the SSM output `scale · Re Σ_n Cd_n s_n` (B, H) and the new
    /// state.
    pub fn step(&self, u: Tensor<2>, state: Complex<3>) -> (Tensor<2>, Complex<3>) {
        let da = Complex {
            re: self.da.re.clone().unsqueeze::<3>(),
            im: self.da.im.clone().unsqueeze::<3>(),
        };
        let s = da.mul(state);
        let s = Complex {
            re: s.re + u.unsqueeze_dim::<3>(2),
            im: s.im,
        };
        let cd = Complex {
            re: self.cd.re.clone().unsqueeze::<3>(),
            im: self.cd.im.clone().unsqueeze::<3>(),
        };
        let y = cd.mul(s.clone()).re.sum_dim(2).squeeze_dim::<2>(2) * self.scale;
        (y, s)
    }
}

/// Configuration of an [`S4D`] layer.
#[derive(Config, Debug)]
pub struct S4DConfig {
    /// The convolution kernel's configuration (holds the channel count H).
    pub kernel: S4DKernelConfig,
    /// Dropout probability after the GELU, before `output_linear` (0: none).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl S4DConfig {
    /// A layer with the reference's initialisation (`D` standard normal).
    pub fn init(&self, device: &Device) -> S4D {
        let h = self.kernel.d_model;
        S4D {
            D: Param::from_tensor(Tensor::random([h], Distribution::Normal(0.0, 1.0), device)),
            kernel: self.kernel.init(device),
            output_linear: LinearConfig::new(h, 2 * h).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            l_max: None,
        }
    }
}

/// The S4D layer on (B, H, L) sequences (the reference's `transposed = True` layout):
/// `y = GLU(output_linear(dropout(GELU(K * u + D u))))`, GLU over the channels.
#[derive(Module, Debug)]
pub struct S4D {
    /// The skip `D` (H): `y = K * u + D u` (the reference's `D`).
    pub D: Param<Tensor<1>>,
    /// The diagonal convolution kernel (the reference's `kernel.*`).
    pub kernel: S4DKernel,
    /// The reference's `output_linear.0` (a kernel-1 Conv1d H -> 2H), as a Linear.
    pub output_linear: Linear,
    /// Dropout after the GELU, before `output_linear`.
    pub dropout: Dropout,
    /// The longest kernel (the reference block's `l_max`): longer inputs see zeros beyond it.
    /// `None`: the kernel is as long as the input.
    pub l_max: Option<usize>,
}

/// A recurrent state of an [`S4D`] layer (B, H, N/2), complex.
pub type S4DState = Complex<3>;

impl S4D {
    /// The SSM part with the skip: `K * u + D u` (B, H, L).
    pub fn ssm(&self, u: Tensor<3>) -> Tensor<3> {
        reference::fft_conv(u, self.l_max, 1.0, self.D.val(), |taps| {
            self.kernel.kernels_at_rate(taps, 1.0)
        })
    }

    fn output(&self, y: Tensor<3>) -> Tensor<3> {
        glu_output(&self.output_linear, &self.dropout, y)
    }

    /// The parallel (convolution) forward: (B, H, L) -> (B, H, L).
    pub fn forward(&self, u: Tensor<3>) -> Tensor<3> {
        self.output(self.ssm(u))
    }

    /// One recurrent step: `u` (B, H) -> `y` (B, H); `rec` from [`S4DKernel::recurrence`]
    /// (compute it once per sequence).
    ///
    /// # Panics
    /// On a bidirectional layer, whose output reads the future and so has no recurrent form.
    pub fn step(
        &self,
        u: Tensor<2>,
        rec: &S4DRecurrence,
        state: S4DState,
    ) -> (Tensor<2>, S4DState) {
        assert!(
            self.kernel.C_bwd.is_none(),
            "a bidirectional S4D layer has no recurrent step (it reads the future)"
        );
        let (y, state) = rec.step(u.clone(), state);
        let y = y + u * self.D.val().unsqueeze::<2>();
        let out = self.output(y.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2);
        (out, state)
    }
}

/// Loads the state dict of state-spaces/s4's `S4D` module (`models/s4/s4d.py`, transposed
/// layout) from a safetensors or PyTorch file: `D` (H), `kernel.log_dt` (H), `kernel.C`
/// (H, N/2, 2), `kernel.log_A_real`, `kernel.A_imag` (H, N/2), `output_linear.0.weight`
/// (2H, H, 1), `output_linear.0.bias` (2H). Every key is checked for presence and shape, and
/// leftovers are an error. The reference uses ZOH and no dropout at inference.
///
/// An `S4Block` state dict with the diagonal kernel (`SSMKernelDiag`, `mode='diag'`, keys
/// `layer.kernel.{inv_dt, A_real, A_imag, B, C}`, `layer.D`, `output_linear.0.*`, from
/// `models/s4/s4.py` or the training repository) loads too: `A`, `B` shared over `n_ssm`
/// copies are repeated over the channels and `B` is folded into `C` (the kernel depends
/// on `B_n C_n` only). So does the v3 standalone `S4` module with `mode='diag'`
/// (`kernel.kernel.{log_dt, inv_A_real, A_imag, B, C}`), and a bidirectional block (`C`
/// (2, H, N/2, 2): the backward kernel's). The discretisation and `dt_transform` are not in
/// the state dict: this reads ZOH and `exp` (v4's standalone defaults); for others (v3's
/// diagonal kernel defaulted to bilinear, the training repository's configs to `softplus`)
/// use [`ReferenceLayer::load_reference_with`].
impl ReferenceLayer for S4D {
    type Options = ReferenceOptions;

    fn take_reference(
        w: &mut TensorMap,
        options: &ReferenceOptions,
        device: &Device,
    ) -> crate::Result<Self> {
        reference::upgrade_v3(w, device)?;
        if w.contains("layer.kernel.A_real") {
            return Self::from_block(w, options, device);
        }
        let h = w.shape_of("D")?.first().copied().unwrap_or(0);
        let n2 = w
            .shape_of("kernel.log_A_real")?
            .get(1)
            .copied()
            .unwrap_or(0);
        let layer = S4D {
            D: w.param("D", [h], device)?,
            kernel: S4DKernel {
                log_dt: w.param("kernel.log_dt", [h], device)?,
                C: w.param("kernel.C", [h, n2, 2], device)?,
                log_A_real: w.param("kernel.log_A_real", [h, n2], device)?,
                A_imag: w.param("kernel.A_imag", [h, n2], device)?,
                C_bwd: None,
                bilinear: false,
                cache: KernelCache::default(),
            },
            output_linear: Linear {
                weight: Param::from_tensor(
                    w.take("output_linear.0.weight", [2 * h, h, 1], device)?
                        .reshape([2 * h, h])
                        .transpose(),
                ),
                bias: Some(w.param("output_linear.0.bias", [2 * h], device)?),
            },
            dropout: DropoutConfig::new(0.0).init(),
            l_max: options.l_max,
        };
        Ok(layer)
    }
}

impl S4D {
    fn from_block(
        w: &mut TensorMap,
        options: &ReferenceOptions,
        device: &Device,
    ) -> crate::Result<Self> {
        let h = reference::single_channel(w, "layer.D")?;
        let kernel = S4DKernel::take_reference(w, "layer.kernel", h, options, device)?;
        let layer = S4D {
            D: Param::from_tensor(w.take("layer.D", [1, h], device)?.reshape([h])),
            kernel,
            output_linear: reference::glu_linear(w, h, device)?,
            dropout: DropoutConfig::new(0.0).init(),
            l_max: options.l_max,
        };
        Ok(layer)
    }
}
