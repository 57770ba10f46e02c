//! The (vocab, d) matrices of a language model, the token embedding and the LM head, kept as
//! row shards that each fit the device's largest buffer binding.
//!
//! mamba-130m's embedding (50280 x 768 f32, 154 MB) is larger than the 128 MiB that Mesa's
//! lavapipe, WebGPU's default limits and some integrated GPUs bind: as one tensor, the first
//! kernel that reads it fails on the device. Split into row ranges of at most the limit, each
//! shard is its own buffer: the lookup gathers from each shard the ids in its range
//! (`E[i] = E_k[i - k R]` for `k = i / R`, R rows per shard) and the head multiplies by each
//! shard in turn and joins the logits along the vocabulary, `x Eᵀ = [x E_0ᵀ | x E_1ᵀ | ...]`.
//! Where the whole matrix fits (the CPU, most discrete GPUs) there is one shard and both are the
//! plain operations. Checkpoints hold the matrix whole: loading splits it on the host, the
//! exporter ([`crate::io::pytorch_state_dict`]) joins the shards back under the one key.

use crate::error::{ModelError, Result};
use crate::limits::rows_per_shard;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Int, Tensor, TensorData};
use ssm_backends::{embedding_rows, is_quantized, rows_matmul_transposed};

/// A (vocab, d) matrix in PyTorch's layout (an `nn.Embedding`'s weight, or an
/// `nn.Linear(d, vocab)`'s), stored as consecutive row ranges (see the module doc).
#[derive(Module, Debug)]
pub struct VocabMatrix {
    /// The shards in row order; all but the last hold the same number of rows.
    pub weight: Vec<Param<Tensor<2>>>,
}

impl VocabMatrix {
    /// A matrix drawn from `initializer`, in as many shards as `device` needs; `what` names it
    /// in errors.
    ///
    /// # Errors
    /// When not even one row fits one binding of the device.
    pub fn init(
        what: &str,
        [vocab, d]: [usize; 2],
        initializer: &Initializer,
        device: &Device,
    ) -> Result<Self> {
        let rows = rows_per_shard(what, [vocab, d], device)?;
        Ok(Self::init_sharded([vocab, d], rows, initializer, device))
    }

    /// A matrix drawn from `initializer` in shards of `rows` rows (the last may hold fewer).
    pub fn init_sharded(
        [vocab, d]: [usize; 2],
        rows: usize,
        initializer: &Initializer,
        device: &Device,
    ) -> Self {
        let rows = rows.max(1);
        let weight = (0..vocab.div_ceil(rows))
            .map(|k| {
                let n = rows.min(vocab - k * rows);
                initializer.init_with([n, d], Some(d), Some(vocab), device)
            })
            .collect();
        Self { weight }
    }

    /// The matrix from host values (vocab, d), uploaded in as many shards as `device` needs;
    /// `what` names it in errors.
    ///
    /// # Errors
    /// Values that are not a 2-D float matrix, or a row larger than one binding.
    pub fn from_data(what: &str, data: TensorData, device: &Device) -> Result<Self> {
        let [vocab, d] = matrix_dims(what, &data)?;
        let rows = rows_per_shard(what, [vocab, d], device)?;
        Self::from_data_sharded(what, data, rows, device)
    }

    /// The matrix from host values (vocab, d) in shards of `rows` rows.
    ///
    /// # Errors
    /// Values that are not a 2-D float matrix.
    pub fn from_data_sharded(
        what: &str,
        data: TensorData,
        rows: usize,
        device: &Device,
    ) -> Result<Self> {
        let [vocab, d] = matrix_dims(what, &data)?;
        if vocab == 0 || d == 0 {
            return Err(ModelError::Invalid(format!(
                "{what}: an empty ({vocab}, {d}) matrix"
            )));
        }
        let values = data
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| ModelError::Invalid(format!("{what}: {e:?}")))?;
        let rows = rows.max(1);
        let weight = values
            .chunks(rows * d)
            .map(|part| {
                Param::from_data(TensorData::new(part.to_vec(), [part.len() / d, d]), device)
            })
            .collect();
        Ok(Self { weight })
    }

    /// One shard holding an 8-bit matrix read from a checkpoint (see [`crate::io::q8`]; the CPU
    /// backends, which take it, bind any size).
    pub fn from_q8(matrix: Tensor<2>) -> Self {
        Self {
            weight: vec![Param::from_tensor(matrix)],
        }
    }

    /// Rows (the vocabulary) and columns (the model width).
    pub fn dims(&self) -> [usize; 2] {
        let d = self.weight[0].lazy_shape().dims::<2>()[1];
        let vocab = self
            .weight
            .iter()
            .map(|w| w.lazy_shape().dims::<2>()[0])
            .sum();
        [vocab, d]
    }

    /// How many buffers hold the matrix.
    pub fn shards(&self) -> usize {
        self.weight.len()
    }

    /// The device the matrix lives on.
    pub fn device(&self) -> Device {
        self.weight[0].val().device()
    }

    /// Rows `ids` (B, L) of the matrix, (B, L, d): the token embedding. Ids must be below the
    /// vocabulary (the models check them first).
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        if let [only] = self.weight.as_slice() {
            return lookup(only.val(), ids);
        }
        let [b, l] = ids.dims();
        let mut lo = 0i64;
        let mut out: Option<Tensor<3>> = None;
        for shard in &self.weight {
            let w = shard.val();
            let [n, d] = w.dims();
            let local = ids.clone().sub_scalar(lo);
            let outside = local
                .clone()
                .lower_elem(0)
                .bool_or(local.clone().greater_equal_elem(n as i64));
            let rows = lookup(w, local.clamp(0, n as i64 - 1));
            let part = rows.mask_fill(outside.unsqueeze_dim::<3>(2).expand([b, l, d]), 0.0);
            out = Some(match out {
                None => part,
                Some(acc) => acc + part,
            });
            lo += n as i64;
        }
        out.expect("a vocabulary matrix has at least one shard")
    }

    /// `x Wᵀ` for rows `x` (M, d): (M, vocab), the LM head's logits, one product per shard
    /// ([`rows_matmul_transposed`]: the matrix is read in its stored layout).
    pub fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        if let [only] = self.weight.as_slice() {
            return rows_matmul_transposed(x, only.val());
        }
        let parts = self
            .weight
            .iter()
            .map(|w| rows_matmul_transposed(x.clone(), w.val()))
            .collect();
        Tensor::cat(parts, 1)
    }

    /// The whole matrix as one tensor (vocab, d), for the CPU and for tests.
    pub fn joined(&self) -> Tensor<2> {
        Tensor::cat(self.weight.iter().map(|w| w.val()).collect(), 0)
    }
}

/// The (vocab, d) shape of host values, or an error naming `what`.
/// Rows `ids` (B, L) of one shard (ids already inside it): Burn's embedding, or for an 8-bit
/// shard ([`crate::quantize`]) the rows dequantized from its int8 values alone.
fn lookup(w: Tensor<2>, ids: Tensor<2, Int>) -> Tensor<3> {
    if !is_quantized(&w) {
        return burn::tensor::module::embedding(w, ids);
    }
    let [b, l] = ids.dims();
    let d = w.dims()[1];
    embedding_rows(w, ids.reshape([b * l]))
        .expect("the ids are inside the shard (checked by the model, clamped per shard)")
        .reshape([b, l, d])
}

fn matrix_dims(what: &str, data: &TensorData) -> Result<[usize; 2]> {
    <[usize; 2]>::try_from(data.shape().to_vec()).map_err(|s| {
        ModelError::Invalid(format!("{what}: expected a (vocab, d) matrix, found {s:?}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::pytorch_state_dict;
    use ssm_backends::testing::{TestRng, assert_abs, max_abs_diff};
    use ssm_backends::to_vec;

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        max_abs_diff(&to_vec(a), &to_vec(b))
    }

    /// Three shards (4 + 4 + 2 rows) give the lookup, the head, their gradients and the
    /// exported matrix of one shard.
    #[test]
    fn shards_equal_the_whole_matrix() {
        let device = Device::flex();
        let mut rng = TestRng::new(1);
        let data = rng.normal::<2>([10, 3], &device).into_data();
        let whole = VocabMatrix::from_data_sharded("w", data.clone(), 10, &device).unwrap();
        let split = VocabMatrix::from_data_sharded("w", data, 4, &device).unwrap();
        assert_eq!((whole.shards(), split.shards()), (1, 3));
        assert_eq!(split.dims(), [10, 3]);
        assert_eq!(max_diff(whole.joined(), split.joined()), 0.0);

        let ids = Tensor::<2, Int>::from_data([[0i64, 3, 4, 9], [7, 8, 5, 1]], &device);
        let (a, b) = (whole.embed(ids.clone()), split.embed(ids));
        assert_eq!(max_diff(a, b), 0.0);

        let x = rng.normal::<2>([5, 3], &device);
        let (a, b) = (whole.logits(x.clone()), split.logits(x));
        assert_eq!(b.dims(), [5, 10]);
        assert_abs("logits", &to_vec(b), &to_vec(a), 1e-6);

        let (kw, kv) = (
            pytorch_state_dict(&whole).into_iter().collect::<Vec<_>>(),
            pytorch_state_dict(&split).into_iter().collect::<Vec<_>>(),
        );
        assert_eq!(kw, kv);
        assert_eq!(kv[0].0, "weight");
        assert_eq!(kv[0].1.0, vec![10, 3]);
    }

    #[test]
    fn gradients_reach_every_shard() {
        let device = Device::flex().autodiff();
        let mut rng = TestRng::new(2);
        let data = rng.normal::<2>([10, 3], &device).into_data();
        let whole = VocabMatrix::from_data_sharded("w", data.clone(), 10, &device).unwrap();
        let split = VocabMatrix::from_data_sharded("w", data, 4, &device).unwrap();
        let ids = Tensor::<2, Int>::from_data([[0i64, 3, 4, 9], [7, 8, 5, 3]], &device);
        let x = rng.normal::<2>([2, 3], &device);
        let loss = |m: &VocabMatrix| {
            let e = m.embed(ids.clone()).sum_dim(1).squeeze_dim::<2>(1);
            (m.logits(x.clone() + e).powi_scalar(2)).sum()
        };
        let (gw, gs) = (loss(&whole).backward(), loss(&split).backward());
        let whole_grad = whole.weight[0].grad(&gw).unwrap();
        let split_grad = Tensor::cat(
            split.weight.iter().map(|w| w.grad(&gs).unwrap()).collect(),
            0,
        );
        assert_abs("gradient", &to_vec(split_grad), &to_vec(whole_grad), 1e-4);
    }

    #[test]
    fn an_empty_matrix_is_an_error() {
        let device = Device::flex();
        let data = TensorData::new(Vec::<f32>::new(), [0, 3]);
        assert!(VocabMatrix::from_data_sharded("w", data, 4, &device).is_err());
    }
}
