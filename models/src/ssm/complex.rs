//! Complex tensors as (re, im) pairs of real tensors: the S4 family's diagonal and DPLR state
//! matrices, kernels and recurrent states (Burn has no complex dtype).

use burn::tensor::Tensor;

/// A complex tensor as its (re, im) parts.
#[derive(Debug, Clone)]
pub struct Complex<const D: usize> {
    /// The real part.
    pub re: Tensor<D>,
    /// The imaginary part.
    pub im: Tensor<D>,
}

impl<const D: usize> std::ops::Mul for Complex<D> {
    type Output = Self;
    fn mul(self, o: Self) -> Self {
        Self {
            re: self.re.clone() * o.re.clone() - self.im.clone() * o.im.clone(),
            im: self.re * o.im + self.im * o.re,
        }
    }
}

impl<const D: usize> std::ops::Div for Complex<D> {
    type Output = Self;
    fn div(self, o: Self) -> Self {
        let den = o.re.clone().square() + o.im.clone().square();
        Self {
            re: (self.re.clone() * o.re.clone() + self.im.clone() * o.im.clone()) / den.clone(),
            im: (self.im * o.re - self.re * o.im) / den,
        }
    }
}

impl Complex<2> {
    /// A tensor of [re, im] pairs (A, B, 2), the reference checkpoints' layout, as complex
    /// (A, B).
    pub fn from_pairs(t: Tensor<3>) -> Self {
        let [a, b, _] = t.dims();
        Self {
            re: t.clone().narrow(2, 0, 1).reshape([a, b]),
            im: t.narrow(2, 1, 1).reshape([a, b]),
        }
    }

    /// Back to [re, im] pairs (A, B, 2).
    pub fn into_pairs(self) -> Tensor<3> {
        Tensor::stack(vec![self.re, self.im], 2)
    }
}

impl<const D: usize> Complex<D> {
    /// The complex conjugate.
    pub fn conj(self) -> Self {
        Self {
            re: self.re,
            im: self.im.neg(),
        }
    }

    /// `exp(re + i im)`.
    pub fn exp(self) -> Self {
        let m = self.re.exp();
        Self {
            re: m.clone() * self.im.clone().cos(),
            im: m * self.im.sin(),
        }
    }
}
