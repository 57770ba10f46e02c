//! 8-bit weights for inference: a model's projection and vocabulary matrices held as int8 with
//! one f32 scale per block along the axis their products reduce over
//! ([`ssm_backends::quantize_q8`]; llama.cpp's `q8_0` layout with blocks of 32, `q8:32`; `q8`
//! takes blocks of 128 where K allows, [`AUTO_BLOCKS`]).
//!
//! Batch-1 decoding streams every weight once per token, so its speed is the memory bandwidth
//! over the bytes read: int8 weights read a little over a quarter of f32's. What is quantized:
//! every mixer's `in_proj` and `out_proj` weights and the token embedding and LM head (a tied
//! head once). A quantized projection's weight is held transposed, (d_out, d_in) as in the
//! checkpoints and llama.cpp, so that each output's K values are contiguous for the integer dot
//! products: apply it with [`crate::nn::linear`] / [`crate::nn::linear_rows`] (which read
//! either layout), not `Linear::forward`. What stays f32: the dt path (`x_proj`, `dt_proj`),
//! the convolution, `A`, `D`, the norms, biases and the recurrent state, as the activations
//! are. The products then compute
//! from the int8 values (on Flex in place, [`ssm_backends::SsmOps::q_rows_matmul`]); a
//! quantized model is for inference (it is not trained).

use crate::checkpoint::write_atomic;
use crate::error::{ModelError, Result};
use crate::io::{pytorch_state_dict_q8, write_safetensors_q8};
use crate::lm::MambaLm;
use crate::lm::config_json::{ConfigFlavor, read_mamba_config};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor};
use ssm_backends::{Q8_BLOCK, is_host, is_quantized, quantize_q8};
use std::path::Path;

/// The blocks `q8` picks from, largest first: per matrix the first that divides its K. Larger
/// blocks read fewer scale bytes and measured faster (decode 1.3-1.6x at mamba-130m's shape
/// against blocks of 32: Burn's quantized tensor also copies its scales at every use) at a
/// bits-per-byte within 0.05% of f32's on the demo model either way.
pub const AUTO_BLOCKS: [usize; 3] = [128, 64, 32];

/// How a model's weights are held for inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// 8-bit values with one f32 scale per block of elements along K.
    Q8 {
        /// Elements per scale (at most 255, dividing every quantized matrix's K; 32 is
        /// llama.cpp's `q8_0`); `None`: per matrix the largest of [`AUTO_BLOCKS`] that divides
        /// its K.
        block: Option<usize>,
    },
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Q8 { block: None } => write!(f, "q8"),
            Self::Q8 { block: Some(block) } => write!(f, "q8:{block}"),
        }
    }
}

impl Quantization {
    /// Parses `q8` (per matrix the largest of [`AUTO_BLOCKS`] dividing its K) or `q8:N`
    /// (blocks of N).
    ///
    /// # Errors
    /// Any other name, or a block that is not a number from 1 to 255.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = || {
            ModelError::InvalidConfig(format!(
                "unknown quantization '{name}': expected q8 (blocks of 128, 64 or 32, the \
                 largest dividing each matrix's K) or q8:N (blocks of N, 1 to 255; q8:{Q8_BLOCK} \
                 is llama.cpp's q8_0)"
            ))
        };
        match name.split_once(':') {
            None if name == "q8" => Ok(Self::Q8 { block: None }),
            Some(("q8", n)) => match n.parse::<usize>() {
                Ok(block) if (1..=255).contains(&block) => Ok(Self::Q8 { block: Some(block) }),
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
                "cannot quantize to {self}: {e}{}",
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
    block: Option<usize>,
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
            let k = matrix.dims()[1];
            let bk = block.unwrap_or_else(|| {
                AUTO_BLOCKS
                    .into_iter()
                    .find(|b| k.is_multiple_of(*b))
                    .unwrap_or(Q8_BLOCK)
            });
            match quantize_q8(matrix, bk) {
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

/// The key `quantization_config` of a quantized model's `config.json`: what [`save_quantized`]
/// records (the loader reads the tensors themselves: int8 values beside `{key}_scale`).
pub const QUANT_METHOD: &str = "ssm-zoo-q8";

/// Writes `model` (quantized by [`Quantization::apply`] from the model folder `from`) to the
/// folder `to`, so that it is quantized once: `from`'s `config.json` with a
/// `quantization_config` added, `model.safetensors` with each 8-bit matrix as int8 values and
/// `{key}_scale` ([`crate::io::q8`]) and every other tensor in f32 under `from`'s key names
/// (transformers' or state-spaces'), and `from`'s tokenizer files. [`crate::lm::MambaLm::load_dir`]
/// reads it back (on the CPU) bit for bit; transformers does not (its loaders know no such
/// quantization).
///
/// # Errors
/// A model that is not quantized, a `from` without a readable config, an unwritable `to`.
pub fn save_quantized(model: &MambaLm, from: &Path, to: &Path) -> Result<()> {
    if !model.is_quantized() {
        return Err(ModelError::InvalidConfig(
            "save_quantized: the model is not quantized (Quantization::apply first)".into(),
        ));
    }
    let config_path = from.join("config.json");
    // Read through the model config's parser first: a folder it cannot read is refused.
    let (_, flavor) = read_mamba_config(&config_path)?;
    let text = std::fs::read_to_string(&config_path).map_err(|source| ModelError::Io {
        path: config_path.clone(),
        source,
    })?;
    let mut json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::Json {
            path: config_path.clone(),
            message: e.to_string(),
        })?;
    json["quantization_config"] = serde_json::json!({
        "quant_method": QUANT_METHOD,
        "bits": 8,
        "format": "int8 values (out, in) beside f32 block scales under '<key>_scale' (out, in / block)",
    });
    let (mut floats, mut q8) = pytorch_state_dict_q8(model);
    if flavor == ConfigFlavor::StateSpaces {
        // state-spaces' name for the embedding; its tied head is the embedding itself.
        let (hf, ss) = ("backbone.embeddings.weight", "backbone.embedding.weight");
        if let Some(m) = q8.remove(hf) {
            q8.insert(ss.into(), m);
        }
        if let Some(t) = floats.remove(hf) {
            floats.insert(ss.into(), t);
        }
    }
    std::fs::create_dir_all(to).map_err(|source| ModelError::Io {
        path: to.into(),
        source,
    })?;
    write_safetensors_q8(&to.join("model.safetensors"), &floats, &q8)?;
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        let src = from.join(name);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|source| ModelError::Io {
                path: src.clone(),
                source,
            })?;
            write_atomic(&to.join(name), &bytes)?;
        }
    }
    let text = serde_json::to_string_pretty(&json).expect("a JSON value serialises");
    write_atomic(&to.join("config.json"), text.as_bytes())
}
