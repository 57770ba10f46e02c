//! S4 (Gu, Goel & Ré, 2022): a diagonal-plus-low-rank (DPLR) state matrix
//! `A = Λ − P P*` per channel, with the convolution kernel computed from its generating function.
//!
//! With `N/2` complex modes stored (the conjugate half implicit), bilinear discretisation with step
//! `Δ = exp(log_dt)`, and `C̃ = (I − Ā^L)* C` stored as the parameter `C` (as the reference does),
//! the kernel's DFT at the roots of unity `z_k = exp(−2πi k / L)` is
//!
//! `K̂(z) = c(z) [k₀₀(z) − k₀₁(z) (1 + k₁₁(z))⁻¹ k₁₀(z)]`, `c(z) = 2 / (1 + z)`,
//! `g(z) = (2/Δ) (1 − z) / (1 + z)`, `k_ab(z) = Σ_n a_n* b_n / (g(z) − Λ_n)` over all N modes
//!
//! (a Cauchy kernel, then the Woodbury correction for the low-rank term), evaluated at the
//! `L/2 + 1` non-negative frequencies only (K is real, so its spectrum is Hermitian), and `K` is
//! its inverse real FFT ([`ssm_backends::irfft`], any L, differentiable). The
//! recurrent step runs the dense bilinear system `x_t = Ā x_{t−1} + B̄ u_t`, `y_t = Re(C* x_t)`,
//! with `C` recovered from `C̃` by one solve, set up in float64 by `nalgebra`.
#![allow(non_snake_case)]

use crate::io::TensorMap;
use crate::ssm::complex::Complex;
use crate::ssm::glu::glu_output;
use crate::ssm::hippo::nplr_legs;
use crate::ssm::reference::{self, ReferenceLayer, ReferenceOptions};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use nalgebra::{Complex as C64, DMatrix, DVector};
use ssm_backends::causal_conv;
use std::f64::consts::PI;

/// Configuration of an [`S4`] layer with the HiPPO-LegS DPLR initialisation.
#[derive(Config, Debug)]
pub struct S4Config {
    /// Channels H.
    pub d_model: usize,
    /// State size N (N/2 complex modes stored).
    #[config(default = 64)]
    pub d_state: usize,
    #[config(default = 0.001)]
    pub dt_min: f64,
    #[config(default = 0.1)]
    pub dt_max: f64,
    #[config(default = 0.0)]
    pub dropout: f64,
    /// A second kernel (its own `C̃`) over the future, as state-spaces/s4's
    /// `bidirectional=True` (no recurrent step then).
    #[config(default = false)]
    pub bidirectional: bool,
}

impl S4Config {
    /// HiPPO-LegS in DPLR form (Λ, P, B = V* B_LegS from [`nplr_legs`], one of each conjugate
    /// pair), `C̃` complex normal, `log_dt` uniform in `[log dt_min, log dt_max]`.
    pub fn init(&self, device: &Device) -> S4 {
        let (h, n) = (self.d_model, self.d_state.max(2));
        let n2 = n / 2;
        let f = nplr_legs(2 * n2);
        let mut lre = Vec::new();
        let mut lim = Vec::new();
        let mut p = Vec::new();
        let mut b = Vec::new();
        for j in 0..n2 {
            lre.push(f.lambda[j].re as f32);
            lim.push(f.lambda[j].im as f32);
            // V* P and V* B (P, B real).
            let (mut vp, mut vb) = (C64::new(0.0, 0.0), C64::new(0.0, 0.0));
            for r in 0..2 * n2 {
                vp += f.v[(r, j)].conj() * f.p[r];
                vb += f.v[(r, j)].conj() * f.b[r];
            }
            p.extend([vp.re as f32, vp.im as f32]);
            b.extend([vb.re as f32, vb.im as f32]);
        }
        let rep = |v: Vec<f32>, shape: [usize; 3]| {
            Tensor::<3>::from_data(TensorData::new(v, [1, shape[1], shape[2]]), device)
                .repeat_dim(0, shape[0])
        };
        let (lo, hi) = (self.dt_min.ln(), self.dt_max.ln());
        S4 {
            kernel: S4Kernel {
                log_dt: Param::from_tensor(Tensor::random(
                    [h],
                    Distribution::Uniform(lo, hi),
                    device,
                )),
                Lambda_re: Param::from_tensor(
                    Tensor::<1>::from_data(TensorData::new(lre, [n2]), device)
                        .unsqueeze::<2>()
                        .repeat_dim(0, h),
                ),
                Lambda_im: Param::from_tensor(
                    Tensor::<1>::from_data(TensorData::new(lim, [n2]), device)
                        .unsqueeze::<2>()
                        .repeat_dim(0, h),
                ),
                P: Param::from_tensor(rep(p, [h, n2, 2])),
                B: Param::from_tensor(rep(b, [h, n2, 2])),
                C: Param::from_tensor(Tensor::random(
                    [h, n2, 2],
                    Distribution::Normal(0.0, 0.5f64.sqrt()),
                    device,
                )),
                C_bwd: self.bidirectional.then(|| {
                    Param::from_tensor(Tensor::random(
                        [h, n2, 2],
                        Distribution::Normal(0.0, 0.5f64.sqrt()),
                        device,
                    ))
                }),
                l_kernel: 0,
            },
            D: Param::from_tensor(Tensor::random([h], Distribution::Normal(0.0, 1.0), device)),
            output_linear: LinearConfig::new(h, 2 * h).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// The S4 DPLR kernel's parameters, per channel: `Λ` (H, N/2), `P`, `B`, `C̃` (H, N/2, 2).
#[derive(Module, Debug)]
pub struct S4Kernel {
    pub log_dt: Param<Tensor<1>>,
    pub Lambda_re: Param<Tensor<2>>,
    pub Lambda_im: Param<Tensor<2>>,
    pub P: Param<Tensor<3>>,
    pub B: Param<Tensor<3>>,
    /// `C̃ = (I − Ā^L)* C` for the length L the kernel is attuned to.
    pub C: Param<Tensor<3>>,
    /// The backward direction's `C̃` of a bidirectional layer (same Λ, P, B, Δ).
    pub C_bwd: Option<Param<Tensor<3>>>,
    /// The length `C̃` is attuned to (the reference's `l_kernel` buffer), which is also the
    /// longest kernel: the kernel is evaluated at its `l_kernel` roots of unity, truncated for
    /// shorter inputs and zero beyond for longer ones (the reference's `FFTConv` with
    /// `l_max = l_kernel`). 0: attuned to whatever length the kernel is asked for.
    pub l_kernel: usize,
}

impl S4Kernel {
    /// The length `C̃` is read at for an input of length `len`.
    pub fn attuned_length(&self, len: usize) -> usize {
        if self.l_kernel > 0 {
            self.l_kernel
        } else {
            len
        }
    }

    /// The kernel K (H, L): evaluated at the [`attuned_length`](Self::attuned_length), then
    /// truncated to `len` or padded with zeros.
    pub fn kernel(&self, len: usize) -> Tensor<2> {
        self.kernel_with(self.C.val(), len)
    }

    /// The backward kernel (H, L) of a bidirectional layer: `y[t]` reads `u[t + 1 + j]`
    /// through its `j`-th tap ([`ssm_backends::bidirectional_conv`]).
    pub fn kernel_backward(&self, len: usize) -> Option<Tensor<2>> {
        self.C_bwd.as_ref().map(|c| self.kernel_with(c.val(), len))
    }

    fn kernel_with(&self, c: Tensor<3>, len: usize) -> Tensor<2> {
        let m = self.attuned_length(len);
        let k = self.kernel_at(c, m);
        if len <= m {
            k.narrow(1, 0, len)
        } else {
            let [h, _] = k.dims();
            Tensor::cat(
                vec![k, Tensor::zeros([h, len - m], &self.log_dt.val().device())],
                1,
            )
        }
    }

    /// The kernel at the `len` roots of unity, `C̃` read as attuned to `len`.
    fn kernel_at(&self, c_tilde: Tensor<3>, len: usize) -> Tensor<2> {
        let device = self.log_dt.val().device();
        let [h, n2] = self.Lambda_re.dims();
        let dt = self.log_dt.val().exp().reshape([h, 1, 1]);
        // Roots of unity z_k = exp(-2πi k / L), k = 0..=L/2, and g, c at them (1, bins, 1).
        let bins = len / 2 + 1;
        let ang: Vec<f32> = (0..bins)
            .map(|k| (-2.0 * PI * k as f64 / len as f64) as f32)
            .collect();
        let ang =
            Tensor::<1>::from_data(TensorData::new(ang, [bins]), &device).reshape([1, bins, 1]);
        let z = Complex {
            re: ang.clone().cos(),
            im: ang.sin(),
        };
        let one_plus = Complex {
            re: z.re.clone() + 1.0,
            im: z.im.clone(),
        };
        let one_minus = Complex {
            re: z.re.clone().neg() + 1.0,
            im: z.im.clone().neg(),
        };
        let two = Complex {
            re: z.re.ones_like() * 2.0,
            im: z.re.zeros_like(),
        };
        let c = two / one_plus.clone();
        let frac = one_minus / one_plus; // (1, L, 1)
        let g = Complex {
            re: frac.re * (dt.clone().recip() * 2.0),
            im: frac.im * (dt.recip() * 2.0),
        }; // (H, L, 1)
        // All N modes: the stored half and its conjugates (H, 1, N).
        let full = |x: Complex<2>| Complex {
            re: Tensor::cat(vec![x.re.clone(), x.re], 1).reshape([h, 1, 2 * n2]),
            im: Tensor::cat(vec![x.im.clone(), x.im.neg()], 1).reshape([h, 1, 2 * n2]),
        };
        let lambda = full(Complex {
            re: self.Lambda_re.val(),
            im: self.Lambda_im.val(),
        });
        let p = full(Complex::from_pairs(self.P.val()));
        let b = full(Complex::from_pairs(self.B.val()));
        let ct = full(Complex::from_pairs(c_tilde));
        // r = 1 / (g - Λ) (H, L, N).
        let denom = Complex {
            re: g.re - lambda.re,
            im: g.im - lambda.im,
        };
        let ones = denom.re.ones_like();
        let r = Complex {
            re: ones.clone(),
            im: ones.zeros_like(),
        } / denom;
        let cauchy = |a: &Complex<3>, bb: &Complex<3>| -> Complex<2> {
            let v = a.clone().conj() * bb.clone(); // (H, 1, N)
            let s = r.clone() * v;
            Complex {
                re: s.re.sum_dim(2).reshape([h, bins]),
                im: s.im.sum_dim(2).reshape([h, bins]),
            }
        };
        let k00 = cauchy(&ct, &b);
        let k01 = cauchy(&ct, &p);
        let k10 = cauchy(&p, &b);
        let k11 = cauchy(&p, &p);
        let one_k11 = Complex {
            re: k11.re + 1.0,
            im: k11.im,
        };
        let corr = (k01 * k10) / one_k11;
        let c2 = Complex {
            re: c.re.reshape([1, bins]),
            im: c.im.reshape([1, bins]),
        };
        let khat = c2
            * Complex {
                re: k00.re - corr.re,
                im: k00.im - corr.im,
            }; // (H, L)
        // K = irfft(K̂) at L samples.
        ssm_backends::irfft(khat.re, khat.im, len)
    }

    /// The dense bilinear system for stepping, set up in float64: per channel `Ā` (N, N),
    /// `B̄` (N), and `C = ((I − Ā^L)*)⁻¹ C̃` (N), with L the length `C̃` is attuned to
    /// ([`attuned_length`](Self::attuned_length) of `len`, the length the convolution runs at).
    /// The step equals the convolution over the first L steps (beyond, a kernel attuned to L is
    /// zero and the recurrence is not).
    pub fn recurrence(&self, len: usize) -> S4Recurrence {
        let len = self.attuned_length(len);
        let f = |t: Tensor<2>| {
            ssm_backends::to_vec(t)
                .into_iter()
                .map(f64::from)
                .collect::<Vec<_>>()
        };
        let f3 = |t: Tensor<3>| {
            ssm_backends::to_vec(t)
                .into_iter()
                .map(f64::from)
                .collect::<Vec<_>>()
        };
        let [h, n2] = self.Lambda_re.dims();
        let n = 2 * n2;
        let (lre, lim) = (f(self.Lambda_re.val()), f(self.Lambda_im.val()));
        let (p, b, ct) = (f3(self.P.val()), f3(self.B.val()), f3(self.C.val()));
        let dts: Vec<f64> = ssm_backends::to_vec(self.log_dt.val())
            .into_iter()
            .map(|x| f64::from(x).exp())
            .collect();
        let mut abar = Vec::with_capacity(h * n * n * 2);
        let mut bbar = Vec::with_capacity(h * n * 2);
        let mut cvec = Vec::with_capacity(h * n * 2);
        for ch in 0..h {
            let full = |v: &[f64], j: usize| -> C64<f64> {
                let (re, im) = (v[(ch * n2 + j % n2) * 2], v[(ch * n2 + j % n2) * 2 + 1]);
                if j < n2 {
                    C64::new(re, im)
                } else {
                    C64::new(re, -im)
                }
            };
            let lam = |j: usize| {
                let (re, im) = (lre[ch * n2 + j % n2], lim[ch * n2 + j % n2]);
                if j < n2 {
                    C64::new(re, im)
                } else {
                    C64::new(re, -im)
                }
            };
            let dt = dts[ch];
            let a = DMatrix::from_fn(n, n, |r, c| {
                let d = if r == c { lam(r) } else { C64::new(0.0, 0.0) };
                d - full(&p, r) * full(&p, c).conj()
            });
            let eye = DMatrix::<C64<f64>>::identity(n, n);
            let half = C64::new(dt / 2.0, 0.0);
            let left = (&eye - &a * half)
                .try_inverse()
                .expect("I - dt/2 A is invertible for a stable A");
            let ab = &left * (&eye + &a * half);
            let bv = DVector::from_fn(n, |r, _| full(&b, r) * dt);
            let bb = &left * bv;
            // C = ((I - Ā^L)*)⁻¹ C̃.
            let mut pow = eye.clone();
            for _ in 0..len {
                pow = &pow * &ab;
            }
            let m = (&eye - pow).adjoint();
            let ctv = DVector::from_fn(n, |r, _| full(&ct, r));
            let cv = m.lu().solve(&ctv).expect("I - Ā^L is invertible");
            for r in 0..n {
                for c in 0..n {
                    abar.extend([ab[(r, c)].re as f32, ab[(r, c)].im as f32]);
                }
                bbar.extend([bb[r].re as f32, bb[r].im as f32]);
                cvec.extend([cv[r].re as f32, cv[r].im as f32]);
            }
        }
        let device = self.log_dt.val().device();
        let split = |v: Vec<f32>| -> (Vec<f32>, Vec<f32>) {
            (
                v.iter().step_by(2).copied().collect(),
                v.iter().skip(1).step_by(2).copied().collect(),
            )
        };
        let (ar, ai) = split(abar);
        let (br, bi) = split(bbar);
        let (cr, ci) = split(cvec);
        let t3 = |v: Vec<f32>| Tensor::<3>::from_data(TensorData::new(v, [h, n, n]), &device);
        let t2 = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [h, n]), &device);
        S4Recurrence {
            a: Complex {
                re: t3(ar),
                im: t3(ai),
            },
            b: Complex {
                re: t2(br),
                im: t2(bi),
            },
            c: Complex {
                re: t2(cr),
                im: t2(ci),
            },
        }
    }
}

/// The dense discretised S4 system per channel: `Ā` (H, N, N), `B̄`, `C` (H, N).
#[derive(Debug, Clone)]
pub struct S4Recurrence {
    pub a: Complex<3>,
    pub b: Complex<2>,
    pub c: Complex<2>,
}

impl S4Recurrence {
    /// A zero state (B, H, N).
    pub fn zero_state(&self, batch: usize) -> Complex<3> {
        let [h, n] = self.b.re.dims();
        let z = Tensor::zeros([batch, h, n], &self.b.re.device());
        Complex {
            re: z.clone(),
            im: z,
        }
    }

    /// One step: `u` (B, H) -> `Re(C* x)` (B, H) and the new state.
    pub fn step(&self, u: Tensor<2>, state: Complex<3>) -> (Tensor<2>, Complex<3>) {
        // Ā x: (H, N, N) x (B, H, N, 1) -> (B, H, N).
        let mv = |m: &Tensor<3>, x: &Tensor<3>| {
            m.clone()
                .unsqueeze::<4>()
                .matmul(x.clone().unsqueeze_dim::<4>(3))
                .squeeze_dim::<3>(3)
        };
        let ax = Complex {
            re: mv(&self.a.re, &state.re) - mv(&self.a.im, &state.im),
            im: mv(&self.a.re, &state.im) + mv(&self.a.im, &state.re),
        };
        let u3 = u.unsqueeze_dim::<3>(2);
        let x = Complex {
            re: ax.re + self.b.re.clone().unsqueeze::<3>() * u3.clone(),
            im: ax.im + self.b.im.clone().unsqueeze::<3>() * u3,
        };
        // Re(C* x) = Σ (c_re x_re + c_im x_im).
        let y = (self.c.re.clone().unsqueeze::<3>() * x.re.clone()
            + self.c.im.clone().unsqueeze::<3>() * x.im.clone())
        .sum_dim(2)
        .squeeze_dim::<2>(2);
        (y, x)
    }
}

/// The S4 layer on (B, H, L): `y = GLU(W · GELU(K * u + D u))` as the other S4-family layers.
#[derive(Module, Debug)]
pub struct S4 {
    pub kernel: S4Kernel,
    pub D: Param<Tensor<1>>,
    pub output_linear: Linear,
    pub dropout: Dropout,
}

impl S4 {
    /// The SSM with the skip: `K * u + D u` (B, H, L).
    pub fn ssm(&self, u: Tensor<3>) -> Tensor<3> {
        let [_, _, l] = u.dims();
        let k = self.kernel.kernel(l);
        let y = match self.kernel.kernel_backward(l) {
            Some(kb) => ssm_backends::bidirectional_conv(u.clone(), k, kb),
            None => causal_conv(u.clone(), k),
        };
        y + u * self.D.val().unsqueeze_dims::<3>(&[0, 2])
    }

    /// The convolution forward: (B, H, L) -> (B, H, L).
    pub fn forward(&self, u: Tensor<3>) -> Tensor<3> {
        glu_output(&self.output_linear, &self.dropout, self.ssm(u))
    }

    /// One recurrent step `u` (B, H) -> (B, H); `rec` from [`S4Kernel::recurrence`] for the
    /// length the convolution kernel is used at.
    ///
    /// # Panics
    /// On a bidirectional layer, whose output reads the future and so has no recurrent form.
    pub fn step(
        &self,
        u: Tensor<2>,
        rec: &S4Recurrence,
        state: Complex<3>,
    ) -> (Tensor<2>, Complex<3>) {
        assert!(
            self.kernel.C_bwd.is_none(),
            "a bidirectional S4 layer has no recurrent step (it reads the future)"
        );
        let (y, state) = rec.step(u.clone(), state);
        let y = y + u * self.D.val().unsqueeze::<2>();
        let out = glu_output(&self.output_linear, &self.dropout, y.unsqueeze_dim::<3>(2))
            .squeeze_dim::<2>(2);
        (out, state)
    }
}

/// Loads an `S4Block` state dict of state-spaces/s4 with the DPLR kernel (`mode='dplr'`,
/// rank 1, `final_act='glu'`, one channel or `bidirectional=True`):
/// `layer.kernel.{inv_dt, A_real, A_imag, B, P, C, l_kernel}`, `layer.D`,
/// `output_linear.0.{weight, bias}` (`.pt`/`.pth`/`.safetensors`, possibly under "model"),
/// or the v3 standalone `S4` module's (`mode='nplr'`, `postact='glu'`, `real_type='exp'`:
/// `kernel.kernel.{log_dt, inv_w_real, w_imag, B, P, C, L}`, `D`, `output_linear.0`).
/// `options.dt_transform` (of [`ReferenceLayer::load_reference_with`]) must be the model's: the training repository's configs default
/// to `softplus`, the standalone module to `exp`.
///
/// The reference's `C` holds `C̃` for `l_kernel` with its own conjugation convention
/// (`K̂ = Σ B C / (g − Λ)`), stored here conjugated; `A`, `B`, `P` shared over `n_ssm`
/// copies are repeated over the channels; a bidirectional layer's `C` (2, H, N/2, 2) holds
/// the forward and the backward `C̃`. A checkpoint whose kernel was never run (`l_kernel`
/// 0) holds `C`, not `C̃`, and is refused.
impl ReferenceLayer for S4 {
    type Options = ReferenceOptions;

    fn take_reference(
        w: &mut TensorMap,
        options: &ReferenceOptions,
        device: &Device,
    ) -> crate::Result<Self> {
        reference::upgrade_v3(w, device)?;
        let k = "layer.kernel";
        let (h, s, n2) = reference::sizes(w, k)?;
        let rank = w.shape_of(&format!("{k}.P"))?;
        if rank.first() != Some(&1) {
            return Err(crate::ModelError::Invalid(format!(
                "weights: key '{k}.P' has shape {rank:?}: only rank 1 (the LegS/FouT \
                 initialisations) is supported"
            )));
        }
        let l_kernel = w.take_usize(&format!("{k}.l_kernel"))?;
        if l_kernel == 0 {
            return Err(crate::ModelError::Invalid(format!(
                "weights: '{k}.l_kernel' is 0: the checkpoint was saved before its kernel first \
                 ran, so its C is not C~; run one forward in the reference before saving"
            )));
        }
        let log_dt = reference::log_dt(w, k, h, options.dt_transform, device)?;
        let (lre, lim) = reference::lambda(w, k, (h, s, n2), device)?;
        let b = reference::shared(w, &format!("{k}.B"), (h, s, n2), device)?;
        let p = reference::shared(w, &format!("{k}.P"), (h, s, n2), device)?;
        // Conjugate: this crate's Cauchy sums read conj(C̃) B.
        let conj = |c: Tensor<3>| Complex::from_pairs(c).conj().into_pairs();
        let (c, c_bwd) = reference::output_c(w, k, h, n2, device)?;
        let d = w.take("layer.D", [1, h], device)?.reshape([h]);
        let layer = S4 {
            kernel: S4Kernel {
                log_dt: Param::from_tensor(log_dt),
                Lambda_re: Param::from_tensor(lre),
                Lambda_im: Param::from_tensor(lim),
                P: Param::from_tensor(p),
                B: Param::from_tensor(b),
                C: Param::from_tensor(conj(c)),
                C_bwd: c_bwd.map(|c| Param::from_tensor(conj(c))),
                l_kernel,
            },
            D: Param::from_tensor(d),
            output_linear: reference::glu_linear(w, h, device)?,
            dropout: DropoutConfig::new(0.0).init(),
        };
        Ok(layer)
    }
}
