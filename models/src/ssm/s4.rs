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
use crate::ssm::kernel_cache::KernelCache;
use crate::ssm::reference::{self, ReferenceLayer, ReferenceOptions};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use nalgebra::{Complex as C64, DMatrix, DVector};
use std::f64::consts::PI;

/// Configuration of an [`S4`] layer with the HiPPO-LegS DPLR initialisation.
#[derive(Config, Debug)]
pub struct S4Config {
    /// Channels H.
    pub d_model: usize,
    /// State size N (N/2 complex modes stored).
    #[config(default = 64)]
    pub d_state: usize,
    /// Lower bound of the initial step Δ: `log_dt` is drawn uniformly in
    /// `[ln dt_min, ln dt_max]`.
    #[config(default = 0.001)]
    pub dt_min: f64,
    /// Upper bound of the initial step Δ (see `dt_min`).
    #[config(default = 0.1)]
    pub dt_max: f64,
    /// Dropout probability after the GELU, before `output_linear` (0: none).
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
        let h = self.d_model;
        S4 {
            kernel: self.init_kernel(device),
            D: Param::from_tensor(Tensor::random([h], Distribution::Normal(0.0, 1.0), device)),
            output_linear: LinearConfig::new(h, 2 * h).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            l_max: None,
        }
    }

    /// The kernel alone (the initialisation of [`init`](Self::init)).
    pub fn init_kernel(&self, device: &Device) -> S4Kernel {
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
        S4Kernel {
            log_dt: Param::from_tensor(Tensor::random([h], Distribution::Uniform(lo, hi), device)),
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
            cache: KernelCache::default(),
        }
    }
}

/// The S4 DPLR kernel's parameters, per channel: `Λ` (H, N/2), `P`, `B`, `C̃` (H, N/2, 2).
#[derive(Module, Debug)]
pub struct S4Kernel {
    /// `log Δ` per channel (H): the reference's `log_dt` (v3), or derived from `inv_dt` (H, 1)
    /// under the model's `dt_transform` when loading.
    pub log_dt: Param<Tensor<1>>,
    /// `Re Λ` (H, N/2), negative for a stable system: `−exp(A_real)` of the reference's
    /// `A_real` (v3: `inv_w_real` or `inv_A_real`).
    pub Lambda_re: Param<Tensor<2>>,
    /// `Im Λ` (H, N/2): the reference's `A_imag` negated (v3's `w_imag` or `A_imag` as is).
    pub Lambda_im: Param<Tensor<2>>,
    /// The low-rank factor `P` (H, N/2, 2), complex as [re, im]: the reference's rank-1 `P`.
    pub P: Param<Tensor<3>>,
    /// The input matrix `B` (H, N/2, 2), complex as [re, im]: the reference's `B`.
    pub B: Param<Tensor<3>>,
    /// `C̃ = (I − Ā^L)* C` for the length L the kernel is attuned to.
    pub C: Param<Tensor<3>>,
    /// The backward direction's `C̃` of a bidirectional layer (same Λ, P, B, Δ).
    pub C_bwd: Option<Param<Tensor<3>>>,
    /// The length `C̃` is attuned to (the reference's `l_kernel` buffer). A kernel asked for at
    /// most this long is evaluated at its `l_kernel` roots of unity and truncated; a longer one
    /// first extends `C̃` by doubling, `C̃₂ₘ = (I + Āᵐ)* C̃ₘ` (since `I − Ā²ᵐ = (I − Āᵐ)(I +
    /// Āᵐ)`), until it covers the length, as the reference's `SSMKernelDPLR` does. 0: `C` is
    /// `C̃` for whatever length the kernel is asked for (a freshly initialised layer).
    pub l_kernel: usize,
    /// The kernels computed at inference, by length and rate (not a parameter).
    pub cache: KernelCache,
}

impl S4Kernel {
    /// The length `C̃` is attuned to for an input of length `len` (before any extension): the
    /// length the recurrent form recovers `C` at.
    pub fn attuned_length(&self, len: usize) -> usize {
        if self.l_kernel > 0 {
            self.l_kernel
        } else {
            len
        }
    }

    /// The kernel K (H, L) (the reference's `SSMKernelDPLR.forward(L=len)`).
    pub fn kernel(&self, len: usize) -> Tensor<2> {
        self.kernels_of(vec![self.C.val()], len, 1.0).remove(0)
    }

    /// The backward kernel (H, L) of a bidirectional layer: `y[t]` reads `u[t + 1 + j]`
    /// through its `j`-th tap ([`ssm_backends::bidirectional_conv`]).
    pub fn kernel_backward(&self, len: usize) -> Option<Tensor<2>> {
        self.C_bwd
            .as_ref()
            .map(|c| self.kernels_of(vec![c.val()], len, 1.0).remove(0))
    }

    /// The kernel (H, L) sampled at relative frequency `rate` (the reference's `rate`: the
    /// step becomes `rate Δ`, and `C̃` covers `rate · len` continuous units; 0.5 samples the
    /// same continuous kernel twice as densely). The forward and, for a bidirectional layer,
    /// the backward kernel; an extension of `C̃` is set up once for both.
    ///
    /// At inference (no parameter tracked) the kernels come from [`Self::cache`] after the
    /// first call at a length and rate.
    pub fn kernels_at_rate(&self, len: usize, rate: f64) -> (Tensor<2>, Option<Tensor<2>>) {
        let ks = self.cache.get_or(self, len, rate, || {
            let mut cs = vec![self.C.val()];
            cs.extend(self.C_bwd.as_ref().map(|c| c.val()));
            self.kernels_of(cs, len, rate)
        });
        let mut ks = ks.into_iter();
        let forward = ks.next().expect("the forward C");
        (forward, ks.next())
    }

    /// The kernels (H, L) of the `C̃`s `cs` at `rate`, evaluated at the roots of the length
    /// their (shared) extension covers, then truncated to `len` or padded with zeros.
    fn kernels_of(&self, cs: Vec<Tensor<3>>, len: usize, rate: f64) -> Vec<Tensor<2>> {
        // Lengths as the reference derives them, with Python's rounding (ties to even).
        let continuous = reference::python_round(rate * len as f64).max(1);
        let (cs, m) = self.extended(cs, continuous);
        let discrete = reference::python_round(m as f64 / rate).max(1);
        cs.into_iter()
            .map(|c| {
                let k = self.kernel_at(c, discrete, rate);
                if len <= discrete {
                    k.narrow(1, 0, len)
                } else {
                    let [h, _] = k.dims();
                    Tensor::cat(
                        vec![
                            k,
                            Tensor::zeros([h, len - discrete], &self.log_dt.val().device()),
                        ],
                        1,
                    )
                }
            })
            .collect()
    }

    /// Each `C̃` of `cs` attuned to a length covering `continuous`, and that length: unchanged
    /// when `l_kernel` covers it (or is 0), else doubled until it does. The doubling matrix
    /// `Π (I + Ā^(l 2^j))*` is set up once, in float64 on the host, as the reference's
    /// `_setup_C` (which runs without gradients); gradients reach `C` through it.
    fn extended(&self, cs: Vec<Tensor<3>>, continuous: usize) -> (Vec<Tensor<3>>, usize) {
        let mut m = self.l_kernel;
        if m == 0 {
            return (cs, continuous);
        }
        if continuous <= m {
            return (cs, m);
        }
        let [h, n2] = self.Lambda_re.dims();
        let n = 2 * n2;
        let abar = self.dense_system().0;
        let mut top_re = Vec::with_capacity(h * n2 * n);
        let mut top_im = Vec::with_capacity(h * n2 * n);
        let mut doublings = 0;
        while continuous > m << doublings {
            doublings += 1;
        }
        for a in &abar {
            let eye = DMatrix::<C64<f64>>::identity(n, n);
            let mut pow = matrix_power(a, m);
            let mut total = eye.clone();
            for _ in 0..doublings {
                total = &total * (&eye + &pow);
                pow = &pow * &pow;
            }
            let adj = total.adjoint();
            for r in 0..n2 {
                for col in 0..n {
                    top_re.push(adj[(r, col)].re as f32);
                    top_im.push(adj[(r, col)].im as f32);
                }
            }
        }
        m <<= doublings;
        let device = self.log_dt.val().device();
        let mat = Complex {
            re: Tensor::<3>::from_data(TensorData::new(top_re, [h, n2, n]), &device),
            im: Tensor::<3>::from_data(TensorData::new(top_im, [h, n2, n]), &device),
        };
        let apply = |c: Tensor<3>| {
            // C̃ over all N modes (the stored half and its conjugates) as (H, N, 1) columns.
            let half = Complex::from_pairs(c);
            let full = Complex {
                re: Tensor::cat(vec![half.re.clone(), half.re], 1).reshape([h, n, 1]),
                im: Tensor::cat(vec![half.im.clone(), half.im.neg()], 1).reshape([h, n, 1]),
            };
            Complex {
                re: (mat.re.clone().matmul(full.re.clone())
                    - mat.im.clone().matmul(full.im.clone()))
                .reshape([h, n2]),
                im: (mat.re.clone().matmul(full.im) + mat.im.clone().matmul(full.re))
                    .reshape([h, n2]),
            }
            .into_pairs()
        };
        (cs.into_iter().map(apply).collect(), m)
    }

    /// The kernel at the `len` roots of unity, `C̃` read as attuned to `len`, with the step
    /// `rate Δ`.
    fn kernel_at(&self, c_tilde: Tensor<3>, len: usize, rate: f64) -> Tensor<2> {
        let device = self.log_dt.val().device();
        let [h, n2] = self.Lambda_re.dims();
        let dt = self.log_dt.val().exp().reshape([h, 1, 1]) * rate;
        // At the roots of unity z_k = exp(-2πi k / L), k = 0..=L/2: (1 - z)/(1 + z) = i t_k
        // and c = 2/(1 + z) = 1 + i t_k with t_k = tan(π k / L), from float64 (forming 1 + z
        // in float32 loses most digits near z = -1). At z = -1 (the Nyquist bin of an even L)
        // t is infinite and K̂ is the limit c k₀₀ → (Δ/2) Σ C̃* B; t capped at 1e10 reaches it
        // within 1e-9 relative while |g|² stays far from float32's overflow (which would zero
        // the bin).
        let bins = len / 2 + 1;
        let tan: Vec<f32> = (0..bins)
            .map(|k| (PI * k as f64 / len as f64).tan().min(1e10) as f32)
            .collect();
        let t = Tensor::<1>::from_data(TensorData::new(tan, [bins]), &device).reshape([1, bins, 1]);
        let c = Complex {
            re: t.ones_like(),
            im: t.clone(),
        };
        let g = Complex {
            re: Tensor::zeros([h, bins, 1], &device),
            im: t * (dt.recip() * 2.0),
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
        // The four Cauchy sums Σ_n conj(a_n) b_n / (g_k − Λ_n), by ssm_backends::cauchy (no
        // (H, L, N) tensor on the CPU): numerators (H, 4, N).
        let num = |a: &Complex<3>, bb: &Complex<3>| a.clone().conj() * bb.clone();
        let v = [num(&ct, &b), num(&ct, &p), num(&p, &b), num(&p, &p)];
        let n = 2 * n2;
        let (kr, ki) = ssm_backends::cauchy(
            (
                Tensor::cat(v.iter().map(|x| x.re.clone()).collect(), 1),
                Tensor::cat(v.iter().map(|x| x.im.clone()).collect(), 1),
            ),
            (g.re.reshape([h, bins]), g.im.reshape([h, bins])),
            (lambda.re.reshape([h, n]), lambda.im.reshape([h, n])),
        );
        let part = |i: usize| Complex {
            re: kr.clone().narrow(1, i, 1).reshape([h, bins]),
            im: ki.clone().narrow(1, i, 1).reshape([h, bins]),
        };
        let (k00, k01, k10, k11) = (part(0), part(1), part(2), part(3));
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

    /// The dense bilinear system per channel in float64: `Ā = (I − Δ/2 A)⁻¹ (I + Δ/2 A)` and
    /// `B̄ = (I − Δ/2 A)⁻¹ Δ B` over all N modes, `A = Λ − P P*`.
    fn dense_system(&self) -> DenseSystem {
        let f = |t: Tensor<2>| {
            ssm_backends::to_vec(t)
                .into_iter()
                .map(f64::from)
                .collect::<Vec<_>>()
        };
        let [h, n2] = self.Lambda_re.dims();
        let n = 2 * n2;
        let (lre, lim) = (f(self.Lambda_re.val()), f(self.Lambda_im.val()));
        let (p, b) = (pairs_f64(self.P.val()), pairs_f64(self.B.val()));
        let dts: Vec<f64> = ssm_backends::to_vec(self.log_dt.val())
            .into_iter()
            .map(|x| f64::from(x).exp())
            .collect();
        let mut abar = Vec::with_capacity(h);
        let mut bbar = Vec::with_capacity(h);
        for (ch, &dt) in dts.iter().enumerate() {
            let full = |v: &[f64], j: usize| full_mode(v, ch, n2, j);
            let lam = |j: usize| {
                let (re, im) = (lre[ch * n2 + j % n2], lim[ch * n2 + j % n2]);
                if j < n2 {
                    C64::new(re, im)
                } else {
                    C64::new(re, -im)
                }
            };
            let a = DMatrix::from_fn(n, n, |r, c| {
                let d = if r == c { lam(r) } else { C64::new(0.0, 0.0) };
                d - full(&p, r) * full(&p, c).conj()
            });
            let eye = DMatrix::<C64<f64>>::identity(n, n);
            let half = C64::new(dt / 2.0, 0.0);
            let left = (&eye - &a * half)
                .try_inverse()
                .expect("I - dt/2 A is invertible for a stable A");
            abar.push(&left * (&eye + &a * half));
            bbar.push(&left * DVector::from_fn(n, |r, _| full(&b, r) * dt));
        }
        (abar, bbar)
    }

    /// The dense bilinear system for stepping, set up in float64: per channel `Ā` (N, N),
    /// `B̄` (N), and `C = ((I − Ā^L)*)⁻¹ C̃` (N), with L the length `C̃` is attuned to
    /// ([`attuned_length`](Self::attuned_length) of `len`). `C` does not depend on the
    /// extension by doubling, so the step equals the convolution at every length.
    pub fn recurrence(&self, len: usize) -> S4Recurrence {
        let len = self.attuned_length(len);
        let [h, n2] = self.Lambda_re.dims();
        let n = 2 * n2;
        let ct = pairs_f64(self.C.val());
        let (abars, bbars) = self.dense_system();
        let mut abar = Vec::with_capacity(h * n * n * 2);
        let mut bbar = Vec::with_capacity(h * n * 2);
        let mut cvec = Vec::with_capacity(h * n * 2);
        for (ch, (ab, bb)) in abars.iter().zip(&bbars).enumerate() {
            let eye = DMatrix::<C64<f64>>::identity(n, n);
            // C = ((I - Ā^L)*)⁻¹ C̃.
            let m = (&eye - matrix_power(ab, len)).adjoint();
            let ctv = DVector::from_fn(n, |r, _| full_mode(&ct, ch, n2, r));
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

/// Per channel, the dense `Ā` (N, N) and `B̄` (N) in float64.
type DenseSystem = (Vec<DMatrix<C64<f64>>>, Vec<DVector<C64<f64>>>);

/// A (H, N/2, 2) tensor of complex pairs as float64 values.
fn pairs_f64(t: Tensor<3>) -> Vec<f64> {
    ssm_backends::to_vec(t).into_iter().map(f64::from).collect()
}

/// Mode `j` of channel `ch` over all N modes from the stored half (H, N/2, 2): the stored value
/// for `j < N/2`, its conjugate after.
fn full_mode(v: &[f64], ch: usize, n2: usize, j: usize) -> C64<f64> {
    let (re, im) = (v[(ch * n2 + j % n2) * 2], v[(ch * n2 + j % n2) * 2 + 1]);
    if j < n2 {
        C64::new(re, im)
    } else {
        C64::new(re, -im)
    }
}

/// `a^e` by repeated squaring.
fn matrix_power(a: &DMatrix<C64<f64>>, mut e: usize) -> DMatrix<C64<f64>> {
    let mut result = DMatrix::<C64<f64>>::identity(a.nrows(), a.ncols());
    let mut base = a.clone();
    while e > 0 {
        if e & 1 == 1 {
            result = &result * &base;
        }
        base = &base * &base;
        e >>= 1;
    }
    result
}

impl S4Kernel {
    /// Reads the keys of state-spaces/s4's `SSMKernelDPLR` under `k` for `h` channels
    /// (`{k}.{inv_dt, A_real, A_imag, B, P, C, l_kernel}`, rank 1, `C` holding `C̃` for
    /// `l_kernel`, one or two kernel channels), taking them out of `w`: the kernel of an
    /// `S4Block` (`k = "layer.kernel"`) or of one axis of an S4ND layer (`"kernel.{i}"`).
    /// `options.dt_transform` says how `inv_dt` gives `Δ`.
    pub fn take_reference(
        w: &mut TensorMap,
        k: &str,
        h: usize,
        options: &ReferenceOptions,
        device: &Device,
    ) -> crate::Result<Self> {
        let (h, s, n2) = reference::sizes(w, k, h)?;
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
        Ok(S4Kernel {
            log_dt: Param::from_tensor(log_dt),
            Lambda_re: Param::from_tensor(lre),
            Lambda_im: Param::from_tensor(lim),
            P: Param::from_tensor(p),
            B: Param::from_tensor(b),
            C: Param::from_tensor(conj(c)),
            C_bwd: c_bwd.map(|c| Param::from_tensor(conj(c))),
            l_kernel,
            cache: KernelCache::default(),
        })
    }
}

/// The dense discretised S4 system per channel: `Ā` (H, N, N), `B̄`, `C` (H, N).
#[derive(Debug, Clone)]
pub struct S4Recurrence {
    /// `Ā` (H, N, N) over all N modes.
    pub a: Complex<3>,
    /// `B̄` (H, N).
    pub b: Complex<2>,
    /// `C` (H, N), recovered from `C̃` for the attuned length; the output is `Re(C* x)`.
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
    /// The DPLR convolution kernel (the reference's `layer.kernel`).
    pub kernel: S4Kernel,
    /// The skip `D` (H): `y = K * u + D u` (the reference's `layer.D`).
    pub D: Param<Tensor<1>>,
    /// The pointwise projection H -> 2H before the GLU (the reference's `output_linear.0`).
    pub output_linear: Linear,
    /// Dropout after the GELU, before `output_linear`.
    pub dropout: Dropout,
    /// The longest kernel (the reference block's `l_max`): longer inputs see zeros beyond it.
    /// `None`: the kernel is as long as the input.
    pub l_max: Option<usize>,
}

impl S4 {
    /// The SSM with the skip: `K * u + D u` (B, H, L).
    pub fn ssm(&self, u: Tensor<3>) -> Tensor<3> {
        self.ssm_at_rate(u, 1.0)
    }

    /// The SSM with the skip at the sampling `rate` (the reference's `rate`: the step becomes
    /// `rate Δ`, and a block with `l_max` uses `min(L, round(l_max / rate))` taps).
    pub fn ssm_at_rate(&self, u: Tensor<3>, rate: f64) -> Tensor<3> {
        reference::fft_conv(u, self.l_max, rate, self.D.val(), |taps| {
            self.kernel.kernels_at_rate(taps, rate)
        })
    }

    /// The convolution forward: (B, H, L) -> (B, H, L).
    pub fn forward(&self, u: Tensor<3>) -> Tensor<3> {
        self.forward_at_rate(u, 1.0)
    }

    /// The convolution forward at the sampling `rate` (the reference block's
    /// `forward(x, rate=...)`: 0.5 reads an input sampled twice as densely as the one the layer
    /// was trained on): (B, H, L) -> (B, H, L).
    pub fn forward_at_rate(&self, u: Tensor<3>, rate: f64) -> Tensor<3> {
        glu_output(
            &self.output_linear,
            &self.dropout,
            self.ssm_at_rate(u, rate),
        )
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
        let h = reference::single_channel(w, "layer.D")?;
        let kernel = S4Kernel::take_reference(w, "layer.kernel", h, options, device)?;
        let d = w.take("layer.D", [1, h], device)?.reshape([h]);
        let layer = S4 {
            kernel,
            D: Param::from_tensor(d),
            output_linear: reference::glu_linear(w, h, device)?,
            dropout: DropoutConfig::new(0.0).init(),
            l_max: options.l_max,
        };
        Ok(layer)
    }
}
