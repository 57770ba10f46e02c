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
//! its inverse real FFT ([`ssm_backends::fft::irfft`], any L, differentiable). The
//! recurrent step runs the dense bilinear system `x_t = Ā x_{t−1} + B̄ u_t`, `y_t = Re(C* x_t)`,
//! with `C` recovered from `C̃` by one solve, set up in float64 by `nalgebra`.
#![allow(non_snake_case)]

use crate::ssm::hippo::nplr_legs;
use crate::ssm::s4d::{Complex, glu_output};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use nalgebra::{Complex as C64, DMatrix, DVector};
use ssm_backends::conv::causal_conv;
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
    /// `C̃ = (I − Ā^L)* C` for the length the kernel is used at.
    pub C: Param<Tensor<3>>,
}

fn pairs(t: Tensor<3>) -> Complex<2> {
    let [h, n, _] = t.dims();
    Complex {
        re: t.clone().narrow(2, 0, 1).reshape([h, n]),
        im: t.narrow(2, 1, 1).reshape([h, n]),
    }
}

fn conj<const D: usize>(c: Complex<D>) -> Complex<D> {
    Complex {
        re: c.re,
        im: c.im.neg(),
    }
}

impl S4Kernel {
    /// The kernel K (H, L).
    pub fn kernel(&self, len: usize) -> Tensor<2> {
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
        let p = full(pairs(self.P.val()));
        let b = full(pairs(self.B.val()));
        let ct = full(pairs(self.C.val()));
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
            let v = conj(a.clone()) * bb.clone(); // (H, 1, N)
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
        ssm_backends::fft::irfft(khat.re, khat.im, len)
    }

    /// The dense bilinear system for stepping, set up in float64: per channel `Ā` (N, N),
    /// `B̄` (N), and `C = ((I − Ā^L)*)⁻¹ C̃` (N), with `len` the length `C̃` was made for.
    pub fn recurrence(&self, len: usize) -> S4Recurrence {
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
        causal_conv(u.clone(), self.kernel.kernel(l))
            + u * self.D.val().unsqueeze_dims::<3>(&[0, 2])
    }

    /// The convolution forward: (B, H, L) -> (B, H, L).
    pub fn forward(&self, u: Tensor<3>) -> Tensor<3> {
        glu_output(&self.output_linear, &self.dropout, self.ssm(u))
    }

    /// One recurrent step `u` (B, H) -> (B, H); `rec` from [`S4Kernel::recurrence`] for the
    /// length the convolution kernel is used at.
    pub fn step(
        &self,
        u: Tensor<2>,
        rec: &S4Recurrence,
        state: Complex<3>,
    ) -> (Tensor<2>, Complex<3>) {
        let (y, state) = rec.step(u.clone(), state);
        let y = y + u * self.D.val().unsqueeze::<2>();
        let out = glu_output(&self.output_linear, &self.dropout, y.unsqueeze_dim::<3>(2))
            .squeeze_dim::<2>(2);
        (out, state)
    }
}
