//! Small building blocks shared by the families.

use crate::io::{TensorMap, key};
use crate::precision::{cast_to, widen};
use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};
use ssm_backends::{is_quantized, rows_matmul, rows_matmul_transposed};

/// Each float parameter of `module`: its id, its path (`a.0.b`, enum variants included, as
/// the optimizer's parameter groups match them) and its shape, read lazily (nothing is
/// materialised).
pub(crate) fn float_params<M: Module>(module: &M) -> Vec<(ParamId, String, Vec<usize>)> {
    #[derive(Default)]
    struct Walk {
        path: Vec<String>,
        out: Vec<(ParamId, String, Vec<usize>)>,
    }
    impl ModuleVisitor for Walk {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let shape = param.lazy_shape().to_vec();
            self.out.push((param.id, self.path.join("."), shape));
        }
    }
    let mut v = Walk::default();
    module.visit(&mut v);
    v.out
}

/// A `Linear` on the rows of a decode step, (B, d_in) -> (B, d_out): equal to
/// `linear.forward(x)`, through [`rows_matmul`] (on the CPU, a product that streams the weight
/// on every core; Flex's matmul runs a one-row product of this size on one thread). A weight
/// quantized by [`crate::quantize`] is held (d_out, d_in) and multiplied as `x wᵀ` from its
/// 8-bit values.
pub fn linear_rows(linear: &Linear, x: Tensor<2>) -> Tensor<2> {
    let y = if is_quantized(&linear.weight) {
        rows_matmul_transposed(x, linear.weight.val())
    } else {
        rows_matmul(x, linear.weight.val())
    };
    match &linear.bias {
        Some(b) => y + b.val().unsqueeze(),
        None => y,
    }
}

/// `linear.forward(x)` for `x` (B, L, d_in), and for a weight quantized by
/// [`crate::quantize`] the product from its 8-bit values ([`linear_rows`] on the (B L, d_in)
/// rows; Burn's `Linear::forward` does not read the quantized layout).
pub fn linear(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    if !is_quantized(&linear.weight) {
        return linear.forward(x);
    }
    let [b, l, d] = x.dims();
    let y = linear_rows(linear, x.reshape([b * l, d]));
    let n = y.dims()[1];
    y.reshape([b, l, n])
}

/// `[d_in, d_out]` of `linear`, whichever layout its weight is held in.
pub fn linear_dims(linear: &Linear) -> [usize; 2] {
    let [a, b] = linear.weight.lazy_shape().dims::<2>();
    if is_quantized(&linear.weight) {
        [b, a]
    } else {
        [a, b]
    }
}

/// Configuration of [`RmsNorm`].
#[derive(Config, Debug)]
pub struct RmsNormConfig {
    /// Size of the normalised (last) axis.
    pub d_model: usize,
    /// Added to the mean square before the square root.
    #[config(default = 1e-5)]
    pub eps: f64,
}

/// Root-mean-square normalisation: `y = x / sqrt(mean(x^2) + eps) * weight`
/// (Zhang & Sennrich, 2019). The field is named `weight` as in the reference checkpoints.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Per-feature scale (d_model), checkpoint key `{prefix}.weight`.
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square before the square root.
    pub eps: f64,
}

impl RmsNormConfig {
    /// A norm with unit weight.
    pub fn init(&self, device: &Device) -> RmsNorm {
        RmsNorm {
            weight: Param::from_tensor(Tensor::ones([self.d_model], device)),
            eps: self.eps,
        }
    }

    /// A norm from the checkpoint tensor `{prefix}.weight` (d_model).
    pub fn load(&self, w: &mut TensorMap, prefix: &str, device: &Device) -> crate::Result<RmsNorm> {
        Ok(RmsNorm {
            weight: w.param(&key(prefix, "weight"), [self.d_model], device)?,
            eps: self.eps,
        })
    }
}

impl RmsNorm {
    /// Normalises over the last axis, in f32 whatever `x`'s dtype (returned in `x`'s).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let x = widen(x);
        let rms = x
            .clone()
            .square()
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        cast_to(x.div(rms).mul(widen(self.weight.val()).unsqueeze()), dtype)
    }

    /// Residual add then norm, fused (one kernel launch on the GPU backends): returns
    /// `s = x + residual` (or `x`) and `forward(s)`.
    pub fn forward_add<const D: usize>(
        &self,
        x: Tensor<D>,
        residual: Option<Tensor<D>>,
    ) -> (Tensor<D>, Tensor<D>) {
        ssm_backends::add_rms_norm(x, residual, self.weight.val(), self.eps)
    }

    /// Mamba2's gated norm (mamba_ssm `RMSNormGated`, `norm_before_gate = False`): the input
    /// times `silu(z)`, normalised over each group of `width / groups` features of the last
    /// axis, then scaled by `weight`.
    pub fn forward_gated<const D: usize>(
        &self,
        x: Tensor<D>,
        z: Tensor<D>,
        groups: usize,
    ) -> Tensor<D> {
        self.group_norm(x * burn::tensor::activation::silu(z), groups)
    }

    /// Each group of `width / groups` features of the last axis normalised, then scaled by
    /// `weight`.
    /// In f32 whatever `x`'s dtype (returned in `x`'s).
    fn group_norm<const D: usize>(&self, x: Tensor<D>, groups: usize) -> Tensor<D> {
        let dtype = x.dtype();
        let dims = x.dims();
        let width = dims[D - 1];
        let rows = x.shape().num_elements() / width;
        let g = widen(x).reshape([rows, groups, width / groups]);
        let rms = g.clone().square().mean_dim(2).add_scalar(self.eps).sqrt();
        let y = (g / rms)
            .reshape(dims)
            .mul(widen(self.weight.val()).unsqueeze());
        cast_to(y, dtype)
    }

    /// Mamba-3's output norm (mamba_ssm `RMSNormGated`, `norm_before_gate = True`): each group
    /// of `width / groups` features of the last axis normalised, scaled by `weight`, then times
    /// `silu(z)`.
    pub fn forward_norm_then_gate<const D: usize>(
        &self,
        x: Tensor<D>,
        z: Tensor<D>,
        groups: usize,
    ) -> Tensor<D> {
        self.group_norm(x, groups) * burn::tensor::activation::silu(z)
    }
}
