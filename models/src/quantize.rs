//! 8-bit weights for inference: a model's projection and vocabulary matrices held as int8 with
//! one f32 scale per block along the axis their products reduce over
//! ([`ssm_backends::quantize_q8`], llama.cpp's `q8_0` layout with blocks of 32).
//!
//! Batch-1 decoding streams every weight once per token, so its speed is the memory bandwidth
//! over the bytes read: int8 weights read a little over a quarter of f32's. What is quantized:
//! every mixer's `in_proj` and `out_proj` weights and the token embedding and LM head (a tied
//! head once). A quantized projection's weight is held transposed, (d_out, d_in) as in the
//! checkpoints and llama.cpp, so that each output's K values are contiguous for the integer dot
//! products: apply it with [`crate::nn::linear`] / [`crate::nn::linear_rows`] (which read
//! either layout), not `Linear::forward`. What stays f32: the dt path (`x_proj`, `dt_proj`), the convolution, `A`, `D`, the
//! norms, biases and the recurrent state, as the activations are. The products then compute
//! from the int8 values (on Flex in place, [`ssm_backends::SsmOps::q_rows_matmul`]); a
//! quantized model is for inference (it is not trained).

use crate::error::{ModelError, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor};
use ssm_backends::{Q8_BLOCK, is_host, is_quantized, quantize_q8};

/// How a model's weights are held for inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// 8-bit values with one f32 scale per `block` elements along K (32: llama.cpp's `q8_0`).
    Q8 {
        /// Elements per scale (at most 255, dividing every quantized matrix's K).
        block: usize,
    },
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Q8 { block } => write!(f, "q8:{block}"),
        }
    }
}

impl Quantization {
    /// Parses `q8` (blocks of [`Q8_BLOCK`]) or `q8:N` (blocks of N).
    ///
    /// # Errors
    /// Any other name, or a block that is not a number from 1 to 255.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = || {
            ModelError::InvalidConfig(format!(
                "unknown quantization '{name}': expected q8 (blocks of {Q8_BLOCK}) or q8:N \
                 (blocks of N, 1 to 255)"
            ))
        };
        match name.split_once(':') {
            None if name == "q8" => Ok(Self::Q8 { block: Q8_BLOCK }),
            Some(("q8", n)) => match n.parse::<usize>() {
                Ok(block) if (1..=255).contains(&block) => Ok(Self::Q8 { block }),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }

    /// `module` with the weights this file's documentation lists quantized.
    ///
    /// # Errors
    /// When a matrix's K is not a whole number of blocks (naming its key and shape), a weight
    /// is already quantized, or the model is not on a CPU device.
    pub fn apply<M: Module>(self, module: M) -> Result<M> {
        let Self::Q8 { block } = self;
        if let Some(device) = module.devices().into_iter().find(|d| !is_host(d)) {
            return Err(ModelError::InvalidConfig(format!(
                "q8 weights are computed by the CPU backends (Flex, NdArray); this model is on \
                 {device:?}: load it with the cpu device"
            )));
        }
        let mut q = Quantize {
            path: Vec::new(),
            block,
            errors: Vec::new(),
            count: 0,
        };
        let module = module.map(&mut q);
        if let Some(e) = q.errors.first() {
            return Err(ModelError::InvalidConfig(format!(
                "cannot quantize to q8 (blocks of {block}): {e}{}",
                match q.errors.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                }
            )));
        }
        if q.count == 0 {
            return Err(ModelError::InvalidConfig(
                "q8: this model has no projection or vocabulary matrix to quantize".into(),
            ));
        }
        Ok(module)
    }
}

/// The axis the products of the parameter at `path` reduce over, if it is quantized: 0 for a
/// mixer's `in_proj.weight` / `out_proj.weight` (Burn's (K, N) layout), 1 for a shard of the
/// embedding or LM head ((vocab, d), looked up by rows and multiplied as `x Eᵀ`).
fn k_axis(path: &[String]) -> Option<usize> {
    let has = |name: &str| path.iter().any(|p| p == name);
    let n = path.len();
    if n >= 2 && path[n - 1] == "weight" && matches!(path[n - 2].as_str(), "in_proj" | "out_proj") {
        return Some(0);
    }
    ((has("embeddings") || has("lm_head")) && has("weight")).then_some(1)
}

/// The mapper: quantizes the parameters [`k_axis`] names, records what it could not.
struct Quantize {
    path: Vec<String>,
    block: usize,
    errors: Vec<String>,
    count: usize,
}

impl ModuleMapper for Quantize {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(axis) = k_axis(&self.path).filter(|_| D == 2) else {
            return param;
        };
        let key = self.path.join(".");
        let block = self.block;
        let mut failed = None;
        let param = param.map(|t| {
            if is_quantized(&t) {
                failed = Some(format!("{key} is already quantized"));
                return t;
            }
            // D is 2 here: the rank changes through the rank-erased dispatch tensor (a reshape
            // of a block-quantized tensor would requantize it).
            let matrix = Tensor::<2>::from_dispatch(t.clone().into_dispatch());
            // A Linear weight (K, N) is held as (N, K), each output's K values contiguous.
            let matrix = if axis == 0 {
                matrix.transpose()
            } else {
                matrix
            };
            match quantize_q8(matrix, block) {
                Ok(q) => Tensor::<D>::from_dispatch(q.into_dispatch()),
                Err(e) => {
                    failed = Some(format!("{key}: {e}"));
                    t
                }
            }
        });
        match failed {
            Some(e) => self.errors.push(e),
            None => self.count += 1,
        }
        param
    }
}

/// The bytes `module`'s float parameters hold as stored: an 8-bit matrix's values and its f32
/// block scales, any other its elements times its dtype's size (what a decode step streams).
pub fn stored_bytes<M: Module>(module: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let elements = param.lazy_shape().num_elements();
            self.0 += match param.dtype() {
                DType::QFloat(scheme) => {
                    let per_block = scheme.block_size().map_or(elements, |b| b.num_elements());
                    elements + elements.div_ceil(per_block.max(1)) * 4
                }
                dtype => elements * dtype.size(),
            };
        }
    }
    let mut count = Count(0);
    module.visit(&mut count);
    count.0
}
