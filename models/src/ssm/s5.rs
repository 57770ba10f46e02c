//! S5 (Smith, Warrington & Linderman, 2023): one MIMO diagonal SSM over all H channels, run as a
//! parallel scan.
//!
//! With `P` complex modes (conjugate symmetry: only one of each pair is stored, outputs take
//! `2 Re`), `Λ = Lambda_re + i Lambda_im`, step `Δ = exp(log_step)`:
//! - ZOH: `Λ̄ = exp(Λ Δ)`, `B̄ = (Λ̄ − 1) / Λ · B̃`; bilinear: `Λ̄ = (1 + ΔΛ/2) / (1 − ΔΛ/2)`,
//!   `B̄ = Δ / (1 − ΔΛ/2) · B̃`;
//! - `x_k = Λ̄ x_{k−1} + B̄ u_k`, `y_k = 2 Re(C̃ x_k) + D u_k` (bidirectional: a second scan over
//!   the reversed sequence with its own half of C̃, summed).
//!
//! The scan is a log-depth (Hillis–Steele) parallel prefix over the sequence with the constant
//! `Λ̄`: at depth `s`, `x_k += Λ̄^(2^s) x_{k − 2^s}`. Initialisation: `Λ` from the eigenvalues of
//! HiPPO-N (the normal part of HiPPO-LegS), block-diagonal over `blocks` blocks, `B̃ = V⁻¹ B`,
//! `C̃ = C V` with the eigenvectors V, as in the reference. Parameter names are the reference's
//! (`Lambda_re`, `Lambda_im`, `B` (P, H, 2), `C` (H, P, 2), `D`, `log_step`).
#![allow(non_snake_case)]

use crate::ssm::complex::Complex;
use crate::ssm::hippo::nplr_legs;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::{Device, Distribution, Tensor, TensorData};

/// Configuration of an [`S5`] layer.
#[derive(Config, Debug)]
pub struct S5Config {
    /// Channels H.
    pub d_model: usize,
    /// Complex modes P kept (the state has 2P with the conjugates).
    #[config(default = 32)]
    pub d_state: usize,
    /// Blocks of the block-diagonal HiPPO-N initialisation (`d_state` a multiple of it).
    #[config(default = 1)]
    pub blocks: usize,
    /// Lower bound of the initial step Δ: `log_step` is drawn uniformly in
    /// `[ln dt_min, ln dt_max]`, one step per mode.
    #[config(default = 0.001)]
    pub dt_min: f64,
    /// Upper bound of the initial step Δ (see `dt_min`).
    #[config(default = 0.1)]
    pub dt_max: f64,
    /// Bilinear rather than zero-order-hold discretisation.
    #[config(default = false)]
    pub bilinear: bool,
    /// A second scan over the reversed sequence (not causal: no recurrent step).
    #[config(default = false)]
    pub bidirectional: bool,
    /// Dropout probability after the GELU, before `output_linear` (0: none).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl S5Config {
    /// Rejects impossible settings.
    pub fn validate(&self) -> crate::Result<()> {
        if self.d_model == 0 || self.d_state == 0 || self.blocks == 0 {
            return Err(crate::ModelError::InvalidConfig(
                "S5: d_model, d_state and blocks must be at least 1".into(),
            ));
        }
        if !self.d_state.is_multiple_of(self.blocks) {
            return Err(crate::ModelError::InvalidConfig(format!(
                "S5: d_state {} is not a multiple of blocks {}",
                self.d_state, self.blocks
            )));
        }
        Ok(())
    }

    /// A layer with the reference's HiPPO-N initialisation.
    ///
    /// # Panics
    /// On an invalid config (see [`S5Config::validate`]).
    pub fn init(&self, device: &Device) -> S5 {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let (h, p) = (self.d_model, self.d_state);
        let block = p / self.blocks;
        // Each block: the eigen-decomposition of HiPPO-N of size 2·block, keeping the modes with
        // positive frequency (one of each conjugate pair).
        let f = nplr_legs(2 * block);
        let keep: Vec<usize> = (0..block).collect(); // sorted by ω descending: ω > 0 first
        let mut lre = Vec::with_capacity(p);
        let mut lim = Vec::with_capacity(p);
        for _ in 0..self.blocks {
            for &j in &keep {
                lre.push(f.lambda[j].re as f32);
                lim.push(f.lambda[j].im as f32);
            }
        }
        // Block-diagonal V: per block, B̃ = V* B_blk (B LeCun-normal, V unitary) and C̃ = C_blk V
        // (C complex normal); a bidirectional layer has a second C for the reversed scan.
        let n = 2 * block;
        let dirs = if self.bidirectional { 2 } else { 1 };
        let normal = |rows: usize, cols: usize, std: f64| {
            to_f64(Tensor::<2>::random(
                [rows, cols],
                Distribution::Normal(0.0, std),
                device,
            ))
        };
        let b_real = normal(self.blocks * n, h, (1.0 / h as f64).sqrt());
        let c_re = normal(h, dirs * self.blocks * n, 0.5f64.sqrt());
        let c_im = normal(h, dirs * self.blocks * n, 0.5f64.sqrt());
        let mut bt = Vec::with_capacity(p * h * 2);
        for blk in 0..self.blocks {
            for &j in &keep {
                for col in 0..h {
                    let mut s = nalgebra::Complex::new(0.0, 0.0);
                    for r in 0..n {
                        s += f.v[(r, j)].conj() * b_real[(blk * n + r) * h + col];
                    }
                    bt.push(s.re as f32);
                    bt.push(s.im as f32);
                }
            }
        }
        let width = dirs * p;
        let cols = dirs * self.blocks * n;
        let mut ct = vec![0f32; h * width * 2];
        for row in 0..h {
            for k in 0..width {
                let (dir, rest) = (k / p, k % p);
                let (blk, jj) = (rest / block, rest % block);
                let base = (dir * self.blocks + blk) * n;
                let mut s = nalgebra::Complex::new(0.0, 0.0);
                for r in 0..n {
                    let c = nalgebra::Complex::new(
                        c_re[row * cols + base + r],
                        c_im[row * cols + base + r],
                    );
                    s += c * f.v[(r, keep[jj])];
                }
                ct[(row * width + k) * 2] = s.re as f32;
                ct[(row * width + k) * 2 + 1] = s.im as f32;
            }
        }
        let (lo, hi) = (self.dt_min.ln(), self.dt_max.ln());
        S5 {
            Lambda_re: Param::from_tensor(Tensor::from_data(TensorData::new(lre, [p]), device)),
            Lambda_im: Param::from_tensor(Tensor::from_data(TensorData::new(lim, [p]), device)),
            B: Param::from_tensor(Tensor::from_data(TensorData::new(bt, [p, h, 2]), device)),
            C: Param::from_tensor(Tensor::from_data(
                TensorData::new(ct, [h, width, 2]),
                device,
            )),
            D: Param::from_tensor(Tensor::random([h], Distribution::Normal(0.0, 1.0), device)),
            log_step: Param::from_tensor(Tensor::random(
                [p],
                Distribution::Uniform(lo, hi),
                device,
            )),
            output_linear: LinearConfig::new(h, 2 * h).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            bilinear: self.bilinear,
            bidirectional: self.bidirectional,
            gelu_tanh: false,
        }
    }
}

fn to_f64(t: Tensor<2>) -> Vec<f64> {
    ssm_backends::to_vec(t).into_iter().map(f64::from).collect()
}

/// The S5 layer on (B, L, H) sequences: the SSM, then `GLU(output_linear(dropout(GELU(.))))`
/// as in the S4-family blocks of this crate.
#[derive(Module, Debug)]
pub struct S5 {
    /// (P).
    pub Lambda_re: Param<Tensor<1>>,
    /// (P).
    pub Lambda_im: Param<Tensor<1>>,
    /// (P, H, 2): complex B̃.
    pub B: Param<Tensor<3>>,
    /// (H, P, 2), or (H, 2P, 2) when bidirectional: complex C̃.
    pub C: Param<Tensor<3>>,
    /// (H).
    pub D: Param<Tensor<1>>,
    /// (P).
    pub log_step: Param<Tensor<1>>,
    /// The output projection H -> 2H before the GLU: the value half then the gate half (the
    /// reference's `out1` and `out2` Dense layers, stacked).
    pub output_linear: Linear,
    /// Dropout after the GELU, before `output_linear`.
    pub dropout: Dropout,
    /// Bilinear rather than zero-order-hold discretisation (not stored in the reference's
    /// checkpoints: its `--discretization`).
    pub bilinear: bool,
    /// A second scan over the reversed sequence with the second half of `C` (the reference's
    /// `C1`, `C2`); such a layer has no recurrent step.
    pub bidirectional: bool,
    /// The tanh approximation of GELU before the output GLU (Flax's `nn.gelu` default, which
    /// the reference layer uses; set by [`S5::load_reference`]); `false`: the exact GELU.
    pub gelu_tanh: bool,
}

/// The discretised S5 system: `Λ̄` (P) and `B̄` (P, H), complex.
#[derive(Debug, Clone)]
pub struct S5Discrete {
    /// `Λ̄` (P).
    pub lambda_bar: Complex<1>,
    /// `B̄` (P, H).
    pub b_bar: Complex<2>,
}

impl S5 {
    /// The discretised system (ZOH or bilinear).
    pub fn discrete(&self) -> S5Discrete {
        let lambda = Complex {
            re: self.Lambda_re.val(),
            im: self.Lambda_im.val(),
        };
        let step = self.log_step.val().exp();
        let ones = step.ones_like();
        let (lambda_bar, scale) = if self.bilinear {
            let half = Complex {
                re: lambda.re.clone() * step.clone() * 0.5,
                im: lambda.im.clone() * step.clone() * 0.5,
            };
            let den = Complex {
                re: ones.clone() - half.re.clone(),
                im: half.im.clone().neg(),
            };
            let num = Complex {
                re: ones + half.re,
                im: half.im,
            };
            let bl = num / den.clone();
            let scale = Complex {
                re: step,
                im: lambda.re.zeros_like(),
            } / den;
            (bl, scale)
        } else {
            let m = (lambda.re.clone() * step.clone()).exp();
            let lb = Complex {
                re: m.clone() * (lambda.im.clone() * step.clone()).cos(),
                im: m * (lambda.im.clone() * step).sin(),
            };
            let scale = Complex {
                re: lb.re.clone() - ones,
                im: lb.im.clone(),
            } / lambda;
            (lb, scale)
        };
        let b = Complex::from_pairs(self.B.val()); // (P, H)
        let scale2 = Complex {
            re: scale.re.unsqueeze_dim::<2>(1),
            im: scale.im.unsqueeze_dim::<2>(1),
        };
        S5Discrete {
            lambda_bar,
            b_bar: scale2 * b,
        }
    }

    /// The states `x_k` (B, L, P) of the recurrence `x_k = Λ̄ x_{k−1} + B̄ u_k` from a zero
    /// state, by a log-depth parallel scan.
    pub fn scan(&self, d: &S5Discrete, u: Tensor<3>) -> Complex<3> {
        let [bs, l, _] = u.dims();
        let p = d.lambda_bar.re.dims()[0];
        // B̄ u: (B, L, H) x (H, P).
        let mut x = Complex {
            re: u
                .clone()
                .matmul(d.b_bar.re.clone().transpose().unsqueeze::<3>()),
            im: u.matmul(d.b_bar.im.clone().transpose().unsqueeze::<3>()),
        };
        let mut power = Complex {
            re: d.lambda_bar.re.clone().reshape([1, 1, p]),
            im: d.lambda_bar.im.clone().reshape([1, 1, p]),
        };
        let mut offset = 1;
        while offset < l {
            let shifted = |t: Tensor<3>| {
                let zeros = Tensor::zeros([bs, offset, p], &t.device());
                Tensor::cat(vec![zeros, t.narrow(1, 0, l - offset)], 1)
            };
            let prev = Complex {
                re: shifted(x.re.clone()),
                im: shifted(x.im.clone()),
            };
            let add = power.clone() * prev;
            x = Complex {
                re: x.re + add.re,
                im: x.im + add.im,
            };
            power = power.clone() * power.clone();
            offset *= 2;
        }
        x
    }

    fn readout(c: &Complex<2>, x: &Complex<3>) -> Tensor<3> {
        // 2 Re(C̃ x): (B, L, P) x (P, H).
        (x.re
            .clone()
            .matmul(c.re.clone().transpose().unsqueeze::<3>())
            - x.im
                .clone()
                .matmul(c.im.clone().transpose().unsqueeze::<3>()))
            * 2.0
    }

    /// The SSM with the skip: `2 Re(C̃ x) + D u`, (B, L, H) -> (B, L, H).
    pub fn ssm(&self, u: Tensor<3>) -> Tensor<3> {
        let d = self.discrete();
        let p = d.lambda_bar.re.dims()[0];
        let c = Complex::from_pairs(self.C.val());
        let fwd = self.scan(&d, u.clone());
        let mut y = Self::readout(
            &Complex {
                re: c.re.clone().narrow(1, 0, p),
                im: c.im.clone().narrow(1, 0, p),
            },
            &fwd,
        );
        if self.bidirectional {
            let bwd = self.scan(&d, u.clone().flip([1]));
            let yb = Self::readout(
                &Complex {
                    re: c.re.narrow(1, p, p),
                    im: c.im.narrow(1, p, p),
                },
                &bwd,
            );
            y = y + yb.flip([1]);
        }
        y + u * self.D.val().unsqueeze::<3>()
    }

    fn output(&self, y: Tensor<3>) -> Tensor<3> {
        let y = if self.gelu_tanh {
            burn::tensor::activation::gelu_approximate(y)
        } else {
            gelu(y)
        };
        let y = self.dropout.forward(y);
        let z = self.output_linear.forward(y);
        let h = z.dims()[2] / 2;
        z.clone().narrow(2, 0, h) * sigmoid(z.narrow(2, h, h))
    }

    /// The layer over (B, L, H).
    pub fn forward(&self, u: Tensor<3>) -> Tensor<3> {
        self.output(self.ssm(u))
    }

    /// A zero state (B, P) for `batch` rows.
    pub fn zero_state(&self, batch: usize) -> Complex<2> {
        let p = self.Lambda_re.dims()[0];
        let z = Tensor::zeros([batch, p], &self.D.val().device());
        Complex {
            re: z.clone(),
            im: z,
        }
    }

    /// One recurrent step `u` (B, H) -> (B, H) (unidirectional layers only; `d` from
    /// [`S5::discrete`], computed once per sequence).
    ///
    /// # Panics
    /// On a bidirectional layer, which has no causal recurrence.
    pub fn step(&self, d: &S5Discrete, u: Tensor<2>, state: Complex<2>) -> (Tensor<2>, Complex<2>) {
        assert!(
            !self.bidirectional,
            "S5::step: a bidirectional layer has no recurrent form"
        );
        let lb = Complex {
            re: d.lambda_bar.re.clone().unsqueeze::<2>(),
            im: d.lambda_bar.im.clone().unsqueeze::<2>(),
        };
        let bu = Complex {
            re: u.clone().matmul(d.b_bar.re.clone().transpose()),
            im: u.clone().matmul(d.b_bar.im.clone().transpose()),
        };
        let x = lb * state;
        let x = Complex {
            re: x.re + bu.re,
            im: x.im + bu.im,
        };
        let c = Complex::from_pairs(self.C.val());
        let y = (x.re.clone().matmul(c.re.transpose()) - x.im.clone().matmul(c.im.transpose()))
            * 2.0
            + u * self.D.val().unsqueeze::<2>();
        let out = self.output(y.unsqueeze_dim::<3>(1)).squeeze_dim::<2>(1);
        (out, x)
    }
}

impl S5 {
    /// Loads one S5 layer from a Flax parameter tree saved by the JAX reference
    /// (lindermanlab/S5; `flax.serialization.to_bytes`): under `prefix` (the path of a
    /// `SequenceLayer`, e.g. `params.encoder.layers_0`), the SSM `seq.{Lambda_re, Lambda_im, B,
    /// C, D, log_step}` (`C1` and `C2` when bidirectional) and the `full_glu` output
    /// `out1`, `out2` (Dense kernels (H, H), stacked into `output_linear`).
    ///
    /// Not in the tree, so given here: the discretisation (`bilinear`, the reference's
    /// `--discretization`). Assumed: conjugate symmetry and no eigenvalue clipping (the
    /// reference's defaults). The layer's `norm` and residual belong to the surrounding model
    /// and are not read; the GELU is the tanh form, as Flax's.
    pub fn load_reference(
        path: &std::path::Path,
        prefix: &str,
        bilinear: bool,
        device: &Device,
    ) -> crate::Result<Self> {
        let mut w = crate::io::flax::read_flax_msgpack(path)?;
        Self::from_flax_map(&mut w, prefix, bilinear, device)
    }

    /// [`load_reference`](Self::load_reference) from a tree already read
    /// ([`read_flax_msgpack`](crate::io::flax::read_flax_msgpack)); takes the layer's tensors
    /// out of `w`.
    pub fn from_flax_map(
        w: &mut crate::io::TensorMap,
        prefix: &str,
        bilinear: bool,
        device: &Device,
    ) -> crate::Result<Self> {
        let key = |k: &str| crate::io::key(prefix, k);
        let p = w
            .shape_of(&key("seq.Lambda_re"))?
            .first()
            .copied()
            .unwrap_or(0);
        let h = w.shape_of(&key("seq.D"))?.first().copied().unwrap_or(0);
        let bidirectional = w.contains(&key("seq.C1"));
        let c = if bidirectional {
            Tensor::cat(
                vec![
                    w.take(&key("seq.C1"), [h, p, 2], device)?,
                    w.take(&key("seq.C2"), [h, p, 2], device)?,
                ],
                1,
            )
        } else {
            w.take(&key("seq.C"), [h, p, 2], device)?
        };
        let out1 = w.take::<2>(&key("out1.kernel"), [h, h], device)?;
        let out2 = w.take::<2>(&key("out2.kernel"), [h, h], device)?;
        let b1 = w.take::<1>(&key("out1.bias"), [h], device)?;
        let b2 = w.take::<1>(&key("out2.bias"), [h], device)?;
        Ok(S5 {
            Lambda_re: w.param(&key("seq.Lambda_re"), [p], device)?,
            Lambda_im: w.param(&key("seq.Lambda_im"), [p], device)?,
            B: w.param(&key("seq.B"), [p, h, 2], device)?,
            C: Param::from_tensor(c),
            D: w.param(&key("seq.D"), [h], device)?,
            log_step: Param::from_tensor(
                w.take(&key("seq.log_step"), [p, 1], device)?.reshape([p]),
            ),
            // Flax kernels are (in, out), as Burn's Linear weight.
            output_linear: Linear {
                weight: Param::from_tensor(Tensor::cat(vec![out1, out2], 1)),
                bias: Some(Param::from_tensor(Tensor::cat(vec![b1, b2], 0))),
            },
            dropout: DropoutConfig::new(0.0).init(),
            bilinear,
            bidirectional,
            gelu_tanh: true,
        })
    }
}
