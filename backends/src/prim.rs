//! A thin, readable wrapper over a backend's float primitive, used to write the portable bodies of
//! the ops once for every backend (`B::float_*` calls, explicit broadcasting).

use burn::backend::{Backend, FloatDType, Scalar, Slice, TensorMetadata, tensor::FloatTensor};
use burn::tensor::{Shape, TensorData};
use std::ops::{Add, Mul};

/// A float primitive of backend `B` with the handful of operations the portable bodies need.
#[derive(Debug)]
pub struct P<B: Backend>(pub FloatTensor<B>);

impl<B: Backend> Clone for P<B> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<B: Backend> P<B> {
    pub fn new(t: FloatTensor<B>) -> Self {
        Self(t)
    }
    pub fn into_inner(self) -> FloatTensor<B> {
        self.0
    }
    pub fn dims(&self) -> Vec<usize> {
        self.0.shape().to_vec()
    }
    pub fn device(&self) -> B::Device {
        self.0.device()
    }
    pub fn zeros(dims: &[usize], device: &B::Device) -> Self {
        Self(B::float_zeros(
            Shape::from(dims.to_vec()),
            device,
            FloatDType::F32,
        ))
    }
    pub fn from_vec(values: Vec<f32>, dims: &[usize], device: &B::Device) -> Self {
        Self(B::float_from_data(
            TensorData::new(values, dims.to_vec()),
            device,
        ))
    }
    pub fn reshape(self, dims: &[usize]) -> Self {
        Self(B::float_reshape(self.0, Shape::from(dims.to_vec())))
    }
    pub fn expand(self, dims: &[usize]) -> Self {
        if self.dims() == dims {
            return self;
        }
        Self(B::float_expand(self.0, Shape::from(dims.to_vec())))
    }
    fn broadcast(a: Self, b: Self) -> (Self, Self) {
        let (da, db) = (a.dims(), b.dims());
        if da == db {
            return (a, b);
        }
        assert_eq!(da.len(), db.len(), "rank mismatch in portable body");
        let out: Vec<usize> = da.iter().zip(&db).map(|(x, y)| *x.max(y)).collect();
        (a.expand(&out), b.expand(&out))
    }
    pub fn mul_scalar(self, v: f32) -> Self {
        Self(B::float_mul_scalar(self.0, Scalar::Float(v as f64)))
    }
    pub fn add_scalar(self, v: f32) -> Self {
        Self(B::float_add_scalar(self.0, Scalar::Float(v as f64)))
    }
    pub fn exp(self) -> Self {
        Self(B::float_exp(self.0))
    }
    pub fn sigmoid(self) -> Self {
        Self(B::sigmoid(self.0))
    }
    /// `log(1 + exp(x))`, written in the overflow-free form `max(x, 0) + log1p(exp(-|x|))`.
    pub fn softplus(self) -> Self {
        let pos = Self(B::float_clamp_min(self.0.clone(), Scalar::Float(0.0)));
        let tail = Self(B::float_log1p(B::float_exp(B::float_neg(B::float_abs(
            self.0,
        )))));
        pos.add(tail)
    }
    /// `x * sigmoid(x)`.
    pub fn silu(self) -> Self {
        self.clone().mul(self.sigmoid())
    }
    /// Derivative of silu: `s * (1 + x * (1 - s))` with `s = sigmoid(x)`.
    pub fn silu_grad(self) -> Self {
        let s = self.clone().sigmoid();
        let one_minus = s.clone().mul_scalar(-1.0).add_scalar(1.0);
        s.mul(self.mul(one_minus).add_scalar(1.0))
    }
    pub fn sum_dim(self, dim: usize) -> Self {
        Self(B::float_sum_dim(self.0, dim))
    }
    /// Slice `[start, end)` of one dimension.
    pub fn narrow(self, dim: usize, start: usize, end: usize) -> Self {
        let rank = self.dims().len();
        let slices: Vec<Slice> = (0..rank)
            .map(|d| {
                if d == dim {
                    Slice::new(start as isize, Some(end as isize), 1)
                } else {
                    Slice::new(0, None, 1)
                }
            })
            .collect();
        Self(B::float_slice(self.0, &slices))
    }
    /// Batched matrix product over the last two axes (leading axes broadcast).
    pub fn matmul(self, o: Self) -> Self {
        Self(B::float_matmul(self.0, o.0))
    }
    pub fn permute(self, axes: &[usize]) -> Self {
        Self(B::float_permute(self.0, axes))
    }
    pub fn swap_dims(self, a: usize, b: usize) -> Self {
        Self(B::float_swap_dims(self.0, a, b))
    }
    pub fn clamp_max(self, v: f32) -> Self {
        Self(B::float_clamp_max(self.0, Scalar::Float(v as f64)))
    }
    pub fn clamp_min(self, v: f32) -> Self {
        Self(B::float_clamp_min(self.0, Scalar::Float(v as f64)))
    }
    /// Any unary primitive op (`B::float_tanh`, `B::float_cos`, ...).
    pub fn map(self, op: fn(FloatTensor<B>) -> FloatTensor<B>) -> Self {
        Self(op(self.0))
    }
    pub fn cat(parts: Vec<Self>, dim: usize) -> Self {
        Self(B::float_cat(parts.into_iter().map(|p| p.0).collect(), dim))
    }
}

impl<B: Backend> std::ops::Add for P<B> {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        let (a, b) = Self::broadcast(self, o);
        Self(B::float_add(a.0, b.0))
    }
}

impl<B: Backend> std::ops::Sub for P<B> {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        let (a, b) = Self::broadcast(self, o);
        Self(B::float_sub(a.0, b.0))
    }
}

impl<B: Backend> std::ops::Mul for P<B> {
    type Output = Self;
    fn mul(self, o: Self) -> Self {
        let (a, b) = Self::broadcast(self, o);
        Self(B::float_mul(a.0, b.0))
    }
}
