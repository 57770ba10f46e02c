//! DSS (Gupta, Gu & Berant, 2022, "Diagonal State Spaces are as Effective as Structured State
//! Spaces"): a diagonal complex SSM whose `Λ` (N) is shared by all channels, with a per-channel
//! step (separate steps for the real and imaginary parts when `sep_dt_re_im`).
//!
//! With `dtΛ_h = Λ_re dt_re_h + i Λ_im dt_im_h` and `W` (H, N) complex:
//! - DSS-exp: `K[h, l] = Re Σ_n W_hn (exp(dtΛ_hn) − 1) / Λ_n · exp(dtΛ_hn l)` (Λ's real part kept
//!   negative as `−exp(Lambda_log_neg_re)`), a recurrence `s_l = exp(dtΛ) s_{l−1} + u_l`;
//! - DSS-softmax: `K[h, l] = Re Σ_n W_hn (exp(dtΛ_hn) − 1) / ((exp(dtΛ_hn L) − 1) Λ_n) ·
//!   exp(dtΛ_hn l)` (normalised over the length, so no fixed recurrence; a mode with positive
//!   real part is evaluated from the other end for stability, as in the reference).
//!
//! Divisions use the reference's regularised reciprocal `conj(x) / (|x|² + ε)` (ε = 1e-7; clamped
//! below at ε for `1/Λ` in DSS-exp). Parameters as in the reference: `log_dt` (H, 1 or 2),
//! `Lambda_log_neg_re` and `Lambda_im` (exp) or `Lambda` (N, 2) (softmax), `W` (H, N, 2).
#![allow(non_snake_case)]

use crate::io::TensorMap;
use crate::ssm::complex::Complex;
use crate::ssm::glu::glu_output;
use crate::ssm::hippo::nplr_legs;
use crate::ssm::kernel_cache::KernelCache;
use crate::ssm::reference::ReferenceLayer;
use crate::ssm::s4d::S4DRecurrence;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use ssm_backends::causal_conv;

const EPSILON: f32 = 1e-7;

/// Configuration of a [`DSS`] layer.
#[derive(Config, Debug)]
pub struct DSSConfig {
    /// Channels H.
    pub d_model: usize,
    /// Modes N (no conjugate symmetry: the real part of the kernel is taken).
    #[config(default = 64)]
    pub d_state: usize,
    /// Lower bound of the initial step Δ: `log_dt` is drawn uniformly in
    /// `[ln dt_min, ln dt_max]`.
    #[config(default = 0.001)]
    pub dt_min: f64,
    /// Upper bound of the initial step Δ (see `dt_min`).
    #[config(default = 0.1)]
    pub dt_max: f64,
    /// Separate steps for the real and imaginary parts of Λ.
    #[config(default = true)]
    pub sep_dt_re_im: bool,
    /// DSS-softmax rather than DSS-exp.
    #[config(default = false)]
    pub softmax: bool,
    /// Dropout probability after the GELU, before `output_linear` (0: none).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl DSSConfig {
    /// A layer with the reference's initialisation: `Λ` the eigenvalues of HiPPO-LegS's skew part
    /// with positive imaginary part, minus 1/2; `log_dt` uniform in `[log dt_min, log dt_max]`;
    /// `W` standard complex normal per part; `D` standard normal.
    pub fn init(&self, device: &Device) -> DSS {
        let (h, n) = (self.d_model, self.d_state.max(1));
        let f = nplr_legs(2 * n);
        let re: Vec<f32> = f.lambda[..n].iter().map(|l| l.re as f32).collect();
        let im: Vec<f32> = f.lambda[..n].iter().map(|l| l.im as f32).collect();
        let (lo, hi) = (self.dt_min.ln(), self.dt_max.ln());
        let log_dt = Tensor::<2>::random([h, 1], Distribution::Uniform(lo, hi), device);
        let log_dt = if self.sep_dt_re_im {
            log_dt.repeat_dim(1, 2)
        } else {
            log_dt
        };
        let vec1 = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [n]), device);
        let kernel = if self.softmax {
            let pairs: Vec<f32> = re.iter().zip(&im).flat_map(|(r, i)| [*r, *i]).collect();
            DSSKernel {
                log_dt: Param::from_tensor(log_dt),
                Lambda_log_neg_re: None,
                Lambda_im: None,
                Lambda: Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(pairs, [n, 2]),
                    device,
                ))),
                W: Param::from_tensor(Tensor::random(
                    [h, n, 2],
                    Distribution::Normal(0.0, 1.0),
                    device,
                )),
                cache: KernelCache::default(),
            }
        } else {
            DSSKernel {
                log_dt: Param::from_tensor(log_dt),
                Lambda_log_neg_re: Some(Param::from_tensor(vec1(re).neg().log())),
                Lambda_im: Some(Param::from_tensor(vec1(im))),
                Lambda: None,
                W: Param::from_tensor(Tensor::random(
                    [h, n, 2],
                    Distribution::Normal(0.0, 1.0),
                    device,
                )),
                cache: KernelCache::default(),
            }
        };
        DSS {
            D: Param::from_tensor(Tensor::random([h], Distribution::Normal(0.0, 1.0), device)),
            kernel,
            output_linear: LinearConfig::new(h, 2 * h).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// The DSS kernel's parameters (reference names; the exp and softmax versions store Λ
/// differently).
#[derive(Module, Debug)]
pub struct DSSKernel {
    /// (H, 1), or (H, 2) with separate real / imaginary steps.
    pub log_dt: Param<Tensor<2>>,
    /// DSS-exp: (N).
    pub Lambda_log_neg_re: Option<Param<Tensor<1>>>,
    /// DSS-exp: (N).
    pub Lambda_im: Option<Param<Tensor<1>>>,
    /// DSS-softmax: (N, 2).
    pub Lambda: Option<Param<Tensor<2>>>,
    /// (H, N, 2).
    pub W: Param<Tensor<3>>,
    /// The kernels computed at inference, by length (not a parameter).
    pub cache: KernelCache,
}

/// `conj(x) / (|x|² + ε)`, or `/ max(|x|², ε)` when `clamp`.
fn reciprocal<const D: usize>(x: Complex<D>, clamp: bool) -> Complex<D> {
    let norm = x.re.clone().square() + x.im.clone().square();
    let norm = if clamp {
        norm.clamp_min(EPSILON)
    } else {
        norm + EPSILON
    };
    Complex {
        re: x.re / norm.clone(),
        im: x.im.neg() / norm,
    }
}

/// The discretised DSS-exp system: `s_l = dA s_{l−1} + u_l`, `y_l = Re Σ_n Wd_n s_l` (H, N),
/// the diagonal recurrence of S4D with all modes kept (`scale` = 1, `cd` = `Wd`).
pub type DSSRecurrence = S4DRecurrence;

impl DSSKernel {
    /// Whether this is DSS-softmax.
    pub fn is_softmax(&self) -> bool {
        self.Lambda.is_some()
    }

    /// Λ (N).
    pub fn lambda(&self) -> Complex<1> {
        match (&self.Lambda, &self.Lambda_log_neg_re, &self.Lambda_im) {
            (Some(l), _, _) => {
                let l = l.val();
                let n = l.dims()[0];
                Complex {
                    re: l.clone().narrow(1, 0, 1).reshape([n]),
                    im: l.narrow(1, 1, 1).reshape([n]),
                }
            }
            (None, Some(re), Some(im)) => Complex {
                re: re.val().exp().neg(),
                im: im.val(),
            },
            _ => panic!("DSSKernel: neither Lambda nor (Lambda_log_neg_re, Lambda_im) is set"),
        }
    }

    /// `dtΛ` (H, N).
    fn dt_lambda(&self, lambda: &Complex<1>) -> Complex<2> {
        let dt = self.log_dt.val().exp();
        let k = dt.dims()[1];
        let dt_re = dt.clone().narrow(1, 0, 1);
        let dt_im = dt.narrow(1, k - 1, 1);
        let n = lambda.re.dims()[0];
        Complex {
            re: dt_re * lambda.re.clone().reshape([1, n]),
            im: dt_im * lambda.im.clone().reshape([1, n]),
        }
    }

    fn w(&self) -> Complex<2> {
        Complex::from_pairs(self.W.val())
    }

    /// The DSS-exp recurrence.
    ///
    /// # Panics
    /// For DSS-softmax, whose kernel is normalised over the whole length.
    pub fn recurrence(&self) -> DSSRecurrence {
        assert!(
            !self.is_softmax(),
            "DSS-softmax has no fixed recurrence (its kernel is normalised over the length)"
        );
        let lambda = self.lambda();
        let dtl = self.dt_lambda(&lambda);
        let da = dtl.exp();
        let n = lambda.re.dims()[0];
        let inv = reciprocal(
            Complex {
                re: lambda.re.reshape([1, n]),
                im: lambda.im.reshape([1, n]),
            },
            true,
        );
        let scale = Complex {
            re: da.re.clone() - 1.0,
            im: da.im.clone(),
        } * inv;
        DSSRecurrence {
            da,
            cd: self.w() * scale,
            scale: 1.0,
        }
    }

    /// The convolution kernel (H, L); at inference (no parameter tracked) from [`Self::cache`]
    /// after the first call at a length.
    pub fn kernel(&self, len: usize) -> Tensor<2> {
        let mut k = self
            .cache
            .get_or(self, len, 1.0, || vec![self.compute_kernel(len)]);
        k.pop().expect("one kernel")
    }

    fn compute_kernel(&self, len: usize) -> Tensor<2> {
        let lambda = self.lambda();
        let dtl = self.dt_lambda(&lambda);
        let [h, n] = dtl.re.dims();
        let (w, p_re) = if self.is_softmax() {
            // A mode with Re Λ > 0 is evaluated from the end: P - dtΛ (L - 1), with -dtΛ.
            let positive = lambda.re.clone().greater_elem(0.0).float().reshape([1, n]);
            let sign = positive.clone() * -2.0 + 1.0;
            let neg = Complex {
                re: dtl.re.clone() * sign.clone(),
                im: dtl.im.clone() * sign,
            };
            let num = Complex {
                re: neg.re.clone().exp() * neg.im.clone().cos() - 1.0,
                im: neg.re.clone().exp() * neg.im.clone().sin(),
            };
            let scaled = Complex {
                re: neg.re * len as f32,
                im: neg.im * len as f32,
            }
            .exp();
            let den = Complex {
                re: scaled.re - 1.0,
                im: scaled.im,
            } * Complex {
                re: lambda.re.clone().reshape([1, n]),
                im: lambda.im.clone().reshape([1, n]),
            };
            let w = self.w() * num * reciprocal(den, false);
            let shift = positive * (len as f32 - 1.0);
            (w, Some(shift))
        } else {
            (self.recurrence().cd, None)
        };
        let shift = p_re.map(|s| s.expand([h, n]));
        ssm_backends::vandermonde((w.re, w.im), (dtl.re, dtl.im), shift, len)
    }
}

/// The DSS layer on (B, H, L): `y = GLU(W · GELU(K * u + D u))` as the S4D layer of this crate,
/// or `y = W · GELU(K * u + D u)` when `output_linear` maps H to H (the reference's default
/// `postact=None`, as [`DSS::load_reference`] finds it).
#[derive(Module, Debug)]
pub struct DSS {
    /// The skip `D` (H): `y = K * u + D u` (the reference's `D`, stored (1, H)).
    pub D: Param<Tensor<1>>,
    /// The diagonal convolution kernel (the reference's `kernel.*`).
    pub kernel: DSSKernel,
    /// The output projection: H -> 2H before a GLU (the reference's `output_linear.0`,
    /// `postact='glu'`), or H -> H without one (`output_linear`, `postact=None`).
    pub output_linear: Linear,
    /// Dropout after the GELU, before `output_linear`.
    pub dropout: Dropout,
}

impl DSS {
    /// The SSM with the skip: `K * u + D u` (B, H, L).
    pub fn ssm(&self, u: Tensor<3>) -> Tensor<3> {
        let [_, _, l] = u.dims();
        causal_conv(u.clone(), self.kernel.kernel(l))
            + u * self.D.val().unsqueeze_dims::<3>(&[0, 2])
    }

    /// The parallel (convolution) forward: (B, H, L) -> (B, H, L).
    pub fn forward(&self, u: Tensor<3>) -> Tensor<3> {
        self.output(self.ssm(u))
    }

    /// One recurrent step of DSS-exp: `u` (B, H) -> (B, H).
    pub fn step(
        &self,
        u: Tensor<2>,
        rec: &DSSRecurrence,
        state: Complex<3>,
    ) -> (Tensor<2>, Complex<3>) {
        let (y, state) = rec.step(u.clone(), state);
        let y = y + u * self.D.val().unsqueeze::<2>();
        let out = self.output(y.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2);
        (out, state)
    }
}

impl DSS {
    /// Whether the output is gated (`output_linear` H -> 2H, then a GLU).
    pub fn gated_output(&self) -> bool {
        let [d_in, d_out] = self.output_linear.weight.dims();
        d_out == 2 * d_in
    }

    /// GELU, dropout, `output_linear`, and the GLU when the layer has one (B, H, L).
    fn output(&self, y: Tensor<3>) -> Tensor<3> {
        if self.gated_output() {
            glu_output(&self.output_linear, &self.dropout, y)
        } else {
            let y = self.dropout.forward(burn::tensor::activation::gelu(y));
            self.output_linear
                .forward(y.swap_dims(1, 2))
                .swap_dims(1, 2)
        }
    }
}

/// Loads a state dict of ag1988/dss's `DSS` layer (`src/models/sequence/ss/standalone/
/// dss.py`; one channel, `transposed=True`): `D` (1, H), `kernel.log_dt` (H) or (H, 2),
/// DSS-exp's `kernel.Lambda_log_neg_re` and `kernel.Lambda_im` (N) or DSS-softmax's
/// `kernel.Lambda` (N, 2), `kernel.W` (1, H, N, 2), and `output_linear.weight` (H, H) with
/// `output_linear.bias` (H, 1) (`postact=None`, the default) or `output_linear.0.*`
/// (2H, H) and (2H, 1) (`postact='glu'`).
///
/// A `Lambda` (N, 2) is read as DSS-softmax, the reference's default version; its `clip`
/// versions store the same key and are not told apart. `exp-re-im`
/// (`Lambda_log_im`) is refused.
impl ReferenceLayer for DSS {
    /// Nothing: a DSS state dict says which version it is.
    type Options = ();

    fn take_reference(w: &mut TensorMap, _: &(), device: &Device) -> crate::Result<Self> {
        if w.contains("kernel.Lambda_log_im") {
            return Err(crate::ModelError::Invalid(
                "weights: 'kernel.Lambda_log_im' (DSS version exp-re-im) is not supported".into(),
            ));
        }
        let d = w.shape_of("D")?;
        let h = d.last().copied().unwrap_or(0);
        let wk = w.shape_of("kernel.W")?;
        let n = wk.get(2).copied().unwrap_or(0);
        let d = w.take("D", [1, h], device)?.reshape([h]);
        let log_dt = if w.shape_of("kernel.log_dt")?.len() == 1 {
            w.take("kernel.log_dt", [h], device)?.reshape([h, 1])
        } else {
            w.take("kernel.log_dt", [h, 2], device)?
        };
        let (lnr, lim, lam) = if w.contains("kernel.Lambda") {
            (None, None, Some(w.param("kernel.Lambda", [n, 2], device)?))
        } else {
            (
                Some(w.param("kernel.Lambda_log_neg_re", [n], device)?),
                Some(w.param("kernel.Lambda_im", [n], device)?),
                None,
            )
        };
        let kernel = DSSKernel {
            log_dt: Param::from_tensor(log_dt),
            Lambda_log_neg_re: lnr,
            Lambda_im: lim,
            Lambda: lam,
            W: Param::from_tensor(w.take("kernel.W", [1, h, n, 2], device)?.reshape([h, n, 2])),
            cache: KernelCache::default(),
        };
        let (key, out) = if w.contains("output_linear.0.weight") {
            ("output_linear.0", 2 * h)
        } else {
            ("output_linear", h)
        };
        // The reference's TransposedLinear keeps its bias as a column (out, 1).
        let bias_key = format!("{key}.bias");
        let bias = w.take(&bias_key, [out, 1], device)?.reshape([out]);
        w.insert(bias_key, bias.into_data());
        let output_linear = w.linear(key, h, out, true, device)?;
        let layer = DSS {
            D: Param::from_tensor(d),
            kernel,
            output_linear,
            dropout: DropoutConfig::new(0.0).init(),
        };
        Ok(layer)
    }
}
