//! HiPPO matrices (Gu et al., 2020) and the normal-plus-low-rank (NPLR) form of HiPPO-LegS used
//! by S4, S4D-LegS and S5's HiPPO-N initialisation, in float64.
//!
//! Conventions are state-spaces/s4's `transition` (the state-space form `x' = A x + B u`):
//! - LegS: `A[n, k] = -sqrt(2n+1) sqrt(2k+1)` for `n > k`, `-(n+1)` for `n = k`, 0 above the
//!   diagonal; `B[n] = sqrt(2n+1)`;
//! - LegT: `A[n, k] = -sqrt(2n+1) sqrt(2k+1) · ((-1)^(n-k) if n < k else 1)`, `B[n] = sqrt(2n+1)`;
//! - FouT: the Fourier basis' rotation blocks `π (−diag(d, 1) + diag(d, −1))` minus `B Bᵀ`, with
//!   `B = (1, 0, √2, 0, √2, ...)`.
//!
//! NPLR: `A = S − P Pᵀ` with `P[n] = sqrt(n + 1/2)` and `S` normal (`−1/2 I` plus a
//! skew-symmetric matrix), so `S = V diag(Λ) V*` with unitary `V`: the eigendecomposition is
//! done by `nalgebra` on the Hermitian matrix `i (S + I/2)`.

use nalgebra::{Complex, DMatrix, SymmetricEigen};

/// A square matrix in row-major order with its size.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// The number of rows (and columns).
    pub n: usize,
    /// The `n × n` entries, row by row: entry (r, c) at `r * n + c`.
    pub data: Vec<f64>,
}

impl Matrix {
    fn zeros(n: usize) -> Self {
        Self {
            n,
            data: vec![0.0; n * n],
        }
    }
    /// Entry (row, col).
    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.n + c]
    }
    fn set(&mut self, r: usize, c: usize, v: f64) {
        self.data[r * self.n + c] = v;
    }
}

/// HiPPO-LegS `(A, B)` of size `n`.
pub fn legs(n: usize) -> (Matrix, Vec<f64>) {
    let mut a = Matrix::zeros(n);
    for r in 0..n {
        for c in 0..=r {
            let v = if r == c {
                -((r + 1) as f64)
            } else {
                -((2 * r + 1) as f64).sqrt() * ((2 * c + 1) as f64).sqrt()
            };
            a.set(r, c, v);
        }
    }
    let b = (0..n).map(|i| ((2 * i + 1) as f64).sqrt()).collect();
    (a, b)
}

/// HiPPO-LegT `(A, B)` of size `n`.
pub fn legt(n: usize) -> (Matrix, Vec<f64>) {
    let mut a = Matrix::zeros(n);
    let r = |i: usize| ((2 * i + 1) as f64).sqrt();
    for i in 0..n {
        for j in 0..n {
            let sign = if i < j && (j - i) % 2 == 1 { -1.0 } else { 1.0 };
            a.set(i, j, -r(i) * r(j) * sign);
        }
    }
    (a, (0..n).map(r).collect())
}

/// HiPPO-FouT `(A, B)` of size `n` (even).
pub fn fout(n: usize) -> (Matrix, Vec<f64>) {
    let mut a = Matrix::zeros(n);
    // d = [0, 1, 1, 2, 2, ...][1..]: the frequencies on the super/sub-diagonals.
    let d: Vec<f64> = (0..n / 2).flat_map(|k| [0.0, k as f64]).skip(1).collect();
    for (i, &f) in d.iter().enumerate().take(n - 1) {
        a.set(i, i + 1, -std::f64::consts::PI * f);
        a.set(i + 1, i, std::f64::consts::PI * f);
    }
    let mut b = vec![0.0; n];
    for (i, v) in b.iter_mut().enumerate() {
        if i % 2 == 0 {
            *v = 2f64.sqrt();
        }
    }
    if n > 0 {
        b[0] = 1.0;
    }
    for i in 0..n {
        for j in 0..n {
            a.set(i, j, a.at(i, j) - b[i] * b[j]);
        }
    }
    (a, b)
}

/// The NPLR form of HiPPO-LegS of size `n`.
#[derive(Debug, Clone)]
pub struct Nplr {
    /// Eigenvalues of the normal part, `-1/2 + i ω`, sorted by `ω` descending.
    pub lambda: Vec<Complex<f64>>,
    /// The unitary eigenvectors, column j for `lambda[j]`.
    pub v: DMatrix<Complex<f64>>,
    /// The low-rank factor `P[n] = sqrt(n + 1/2)`.
    pub p: Vec<f64>,
    /// The input vector `B`.
    pub b: Vec<f64>,
}

/// `A = V diag(Λ) V* − P Pᵀ` for HiPPO-LegS.
pub fn nplr_legs(n: usize) -> Nplr {
    let (a, b) = legs(n);
    let p: Vec<f64> = (0..n).map(|i| (i as f64 + 0.5).sqrt()).collect();
    // Skew part: S + I/2 with S = A + P Pᵀ.
    let h = DMatrix::<Complex<f64>>::from_fn(n, n, |r, c| {
        let mut s = a.at(r, c) + p[r] * p[c];
        if r == c {
            s += 0.5;
        }
        // i · skew is Hermitian.
        Complex::new(0.0, s)
    });
    let eig = SymmetricEigen::new(h);
    // (i K) v = μ v  =>  K v = -i μ v  =>  S v = (-1/2 - i μ) v.
    let mut order: Vec<usize> = (0..n).collect();
    let omega: Vec<f64> = eig.eigenvalues.iter().map(|m| -m).collect();
    order.sort_by(|&x, &y| omega[y].total_cmp(&omega[x]));
    let lambda = order
        .iter()
        .map(|&j| Complex::new(-0.5, omega[j]))
        .collect();
    let v = DMatrix::from_fn(n, n, |r, c| eig.eigenvectors[(r, order[c])]);
    Nplr { lambda, v, p, b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legs_is_lower_triangular_with_the_closed_form() {
        let (a, b) = legs(5);
        assert_eq!(a.at(0, 0), -1.0);
        assert_eq!(a.at(3, 3), -4.0);
        assert!((a.at(3, 1) + (7.0f64 * 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(a.at(1, 3), 0.0);
        assert!((b[2] - 5f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn nplr_reconstructs_legs() {
        let n = 16;
        let (a, _) = legs(n);
        let f = nplr_legs(n);
        for l in &f.lambda {
            assert!((l.re + 0.5).abs() < 1e-9, "{l}");
        }
        // Conjugate pairs: ω and -ω.
        for j in 0..n / 2 {
            assert!((f.lambda[j].im + f.lambda[n - 1 - j].im).abs() < 1e-8);
        }
        for r in 0..n {
            for c in 0..n {
                let mut s = Complex::new(0.0, 0.0);
                for j in 0..n {
                    s += f.v[(r, j)] * f.lambda[j] * f.v[(c, j)].conj();
                }
                let got = s.re - f.p[r] * f.p[c];
                assert!(
                    (got - a.at(r, c)).abs() < 1e-9,
                    "({r}, {c}): {got} vs {}",
                    a.at(r, c)
                );
                assert!(s.im.abs() < 1e-9);
            }
        }
    }

    #[test]
    fn legt_and_fout_have_the_reference_structure() {
        let (a, b) = legt(4);
        assert!((a.at(0, 1) - 3f64.sqrt()).abs() < 1e-12); // (-1)^(0-1) sign flip
        assert!((a.at(1, 0) + 3f64.sqrt()).abs() < 1e-12);
        assert!((b[3] - 7f64.sqrt()).abs() < 1e-12);
        let (a, b) = fout(4);
        assert_eq!(b, vec![1.0, 0.0, 2f64.sqrt(), 0.0]);
        // The rotation block of frequency 1 (rows 2, 3) is ±π, minus B Bᵀ (B[3] = 0).
        assert!((a.at(2, 3) + std::f64::consts::PI).abs() < 1e-12);
        assert!((a.at(3, 2) - std::f64::consts::PI).abs() < 1e-12);
        assert!((a.at(0, 0) + 1.0).abs() < 1e-12);
    }
}
