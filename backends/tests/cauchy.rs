//! The Cauchy sums of S4's DPLR kernel, `out[h, m, k] = Σ_n v / (w_k − λ_n)`, on the CPU
//! backends (the GPUs run the reference body): values against the same sums in f64 and against
//! the reference body, gradients against autodiff through the reference body, and the kernel
//! proven to have run.

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use ssm_backends::testing::{TestRng, assert_rel, cpu_kernel_calls};
use ssm_backends::{ComplexParts, cauchy, cauchy_reference, to_vec};

fn devices() -> Vec<Device> {
    vec![
        Device::flex(),
        #[cfg(feature = "ndarray")]
        Device::ndarray(),
    ]
}

/// S4-like inputs: poles `λ` with `Re λ` in [−1, −0.1] and `Im λ` spread over ±N, nodes on the
/// imaginary axis `w = i 2 tan(π k / L) / Δ` (k = 0..=L/2), numerators complex normal.
struct Case {
    h: usize,
    m: usize,
    n: usize,
    k: usize,
    v: (Vec<f32>, Vec<f32>),
    w: (Vec<f32>, Vec<f32>),
    l: (Vec<f32>, Vec<f32>),
}

fn case(h: usize, m: usize, n: usize, len: usize, seed: u64) -> Case {
    let mut rng = TestRng::new(seed);
    let k = len / 2 + 1;
    let normal = Distribution::Normal(0.0, 1.0);
    let v = (rng.values(h * m * n, normal), rng.values(h * m * n, normal));
    let l_re = rng.values(h * n, Distribution::Uniform(-1.0, -0.1));
    let l_im = rng.values(h * n, Distribution::Uniform(-(n as f64), n as f64));
    let mut w_im = Vec::with_capacity(h * k);
    for _ in 0..h {
        let dt = rng
            .sample(Distribution::Uniform(1e-3f64.ln(), 1e-1f64.ln()))
            .exp();
        for j in 0..k {
            let t = (std::f64::consts::PI * j as f64 / len as f64)
                .tan()
                .min(1e10);
            w_im.push((2.0 * t / dt) as f32);
        }
    }
    Case {
        h,
        m,
        n,
        k,
        v,
        w: (vec![0.0; h * k], w_im),
        l: (l_re, l_im),
    }
}

impl Case {
    fn tensors(&self, device: &Device) -> (ComplexParts<3>, ComplexParts<2>, ComplexParts<2>) {
        let t3 = |x: &Vec<f32>| {
            Tensor::<3>::from_data(TensorData::new(x.clone(), [self.h, self.m, self.n]), device)
        };
        let t2 = |x: &Vec<f32>, c: usize| {
            Tensor::<2>::from_data(TensorData::new(x.clone(), [self.h, c]), device)
        };
        (
            (t3(&self.v.0), t3(&self.v.1)),
            (t2(&self.w.0, self.k), t2(&self.w.1, self.k)),
            (t2(&self.l.0, self.n), t2(&self.l.1, self.n)),
        )
    }

    /// The sums in f64 from the f32 inputs, as (re, im) (H, M, K) rounded to f32.
    fn sums_f64(&self) -> (Vec<f32>, Vec<f32>) {
        let (mut re, mut im) = (
            vec![0f32; self.h * self.m * self.k],
            vec![0f32; self.h * self.m * self.k],
        );
        for c in 0..self.h {
            for i in 0..self.m {
                for j in 0..self.k {
                    let (wr, wi) = (
                        f64::from(self.w.0[c * self.k + j]),
                        f64::from(self.w.1[c * self.k + j]),
                    );
                    let (mut sr, mut si) = (0f64, 0f64);
                    for p in 0..self.n {
                        let (dr, di) = (
                            wr - f64::from(self.l.0[c * self.n + p]),
                            wi - f64::from(self.l.1[c * self.n + p]),
                        );
                        let den = dr * dr + di * di;
                        let (vr, vi) = (
                            f64::from(self.v.0[(c * self.m + i) * self.n + p]),
                            f64::from(self.v.1[(c * self.m + i) * self.n + p]),
                        );
                        // v / d = v conj(d) / |d|².
                        sr += (vr * dr + vi * di) / den;
                        si += (vi * dr - vr * di) / den;
                    }
                    re[(c * self.m + i) * self.k + j] = sr as f32;
                    im[(c * self.m + i) * self.k + j] = si as f32;
                }
            }
        }
        (re, im)
    }
}

#[test]
fn sums_match_f64_and_the_reference_body() {
    for device in devices() {
        // N 13 (not a multiple of the kernel's 8 lanes), and S4's N 64 at L 1024.
        for (n, len) in [(13, 40), (64, 1024)] {
            let c = case(3, 4, n, len, n as u64);
            let (v, w, l) = c.tensors(&device);
            let before = cpu_kernel_calls().cauchy;
            let (re, im) = cauchy(v.clone(), w.clone(), l.clone());
            assert!(cpu_kernel_calls().cauchy > before, "the CPU kernel ran");
            let (rr, ri) = cauchy_reference(v, w, l);
            let (fr, fi) = c.sums_f64();
            let what = format!("{device:?} N {n} L {len}");
            // The kernel sums in f64: against the f64 sums, only the final rounding (measured 0).
            assert_rel(
                &format!("{what}: re vs f64"),
                &to_vec(re.clone()),
                &fr,
                2e-7,
            );
            assert_rel(
                &format!("{what}: im vs f64"),
                &to_vec(im.clone()),
                &fi,
                2e-7,
            );
            // The reference body's own f32 error (measured up to 4.9e-7).
            assert_rel(
                &format!("{what}: re vs reference"),
                &to_vec(re),
                &to_vec(rr),
                2e-6,
            );
            assert_rel(
                &format!("{what}: im vs reference"),
                &to_vec(im),
                &to_vec(ri),
                2e-6,
            );
        }
    }
}

#[test]
fn gradients_match_autodiff_through_the_reference_body() {
    for base in devices() {
        let device = base.clone().autodiff();
        let c = case(2, 4, 13, 64, 7);
        let mut rng = TestRng::new(8);
        let wr = rng.values(c.h * c.m * c.k, Distribution::Normal(0.0, 1.0));
        let wi = rng.values(c.h * c.m * c.k, Distribution::Normal(0.0, 1.0));
        let run = |reference: bool| {
            let (v, w, l) = c.tensors(&device);
            let parts = [v.0.require_grad(), v.1.require_grad()];
            let (w2, l2) = (
                [w.0.require_grad(), w.1.require_grad()],
                [l.0.require_grad(), l.1.require_grad()],
            );
            let f = if reference { cauchy_reference } else { cauchy };
            let (re, im) = f(
                (parts[0].clone(), parts[1].clone()),
                (w2[0].clone(), w2[1].clone()),
                (l2[0].clone(), l2[1].clone()),
            );
            let t = |x: &Vec<f32>| {
                Tensor::<3>::from_data(TensorData::new(x.clone(), [c.h, c.m, c.k]), &device)
            };
            let g = ((re * t(&wr)).sum() + (im * t(&wi)).sum()).backward();
            let mut out: Vec<Vec<f32>> = parts
                .iter()
                .map(|p| to_vec(p.grad(&g).expect("dv")))
                .collect();
            out.extend(
                w2.iter()
                    .chain(&l2)
                    .map(|p| to_vec(p.grad(&g).expect("dw, dλ"))),
            );
            out
        };
        let (ours, reference) = (run(false), run(true));
        for (name, (a, b)) in ["v_re", "v_im", "w_re", "w_im", "l_re", "l_im"]
            .iter()
            .zip(ours.iter().zip(&reference))
        {
            // The reference body's f32 error: measured up to 2.6e-7 (dλ), 4x rounded up.
            assert_rel(&format!("{base:?}: d{name}"), a, b, 2e-6);
        }
    }
}
