//! A causal Transformer language model on Burn's own `burn::nn::transformer` (pre-norm
//! encoder layers under a causal mask): the baseline that `zoo bench compare` sets beside Mamba
//! and Mamba2 at equal width and parameter count. Sinusoidal positions (no parameters, any
//! length) that restart at each packed document, whose tokens attend only within their
//! document; embeddings scaled by sqrt(d_model) (Vaswani et al. 2017); the head is tied to the
//! embedding.

use super::vocab::VocabMatrix;
use crate::error::ModelError;
use crate::limits::check_params;
use burn::config::Config;
use burn::module::Module;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

/// Configuration of a [`TransformerLm`].
#[derive(Config, Debug)]
pub struct TransformerLmConfig {
    /// Model width d.
    pub d_model: usize,
    /// Number of encoder layers.
    pub n_layer: usize,
    /// Vocabulary size V: rows of the embedding and width of the logits.
    pub vocab_size: usize,
    /// Attention heads (d_model must be a multiple).
    #[config(default = 4)]
    pub n_heads: usize,
    /// Feed-forward width (GPT's 4 d_model by default).
    pub d_ff: Option<usize>,
}

impl TransformerLmConfig {
    /// Rejects impossible settings.
    pub fn validate(&self) -> crate::Result<()> {
        crate::error::require_nonzero(&[
            ("d_model", self.d_model),
            ("n_layer", self.n_layer),
            ("vocab_size", self.vocab_size),
            ("n_heads", self.n_heads),
        ])?;
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(ModelError::InvalidConfig(format!(
                "d_model {} is not a multiple of n_heads {}",
                self.d_model, self.n_heads
            )));
        }
        Ok(())
    }

    /// A randomly initialised model (embedding N(0, 1/d_model), as in Vaswani et al.).
    ///
    /// # Panics
    /// On an invalid config; call [`TransformerLmConfig::validate`] first for a `Result`.
    pub fn init(&self, device: &Device) -> TransformerLm {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A randomly initialised model, or why not: an invalid config or a parameter over the
    /// device's binding limit (the embedding is split into shards that fit: [`VocabMatrix`]).
    pub fn try_init(&self, device: &Device) -> crate::Result<TransformerLm> {
        self.validate()?;
        let normal = Initializer::Normal {
            mean: 0.0,
            std: (self.d_model as f64).powf(-0.5),
        };
        let model = TransformerLm {
            embedding: VocabMatrix::init(
                "embedding.weight",
                [self.vocab_size, self.d_model],
                &normal,
                device,
            )?,
            encoder: TransformerEncoderConfig::new(
                self.d_model,
                self.d_ff.unwrap_or(4 * self.d_model),
                self.n_heads,
                self.n_layer,
            )
            .with_dropout(0.0)
            .with_norm_first(true)
            .init(device),
            norm: LayerNormConfig::new(self.d_model).init(device),
        };
        check_params(&model, device)?;
        Ok(model)
    }
}

/// A causal Transformer LM (see the module doc).
#[derive(Module, Debug)]
pub struct TransformerLm {
    /// The token embedding (vocab, d), also the (tied) head.
    pub embedding: VocabMatrix,
    /// The `n_layer` pre-norm encoder layers (no dropout), run under a causal mask.
    pub encoder: TransformerEncoder,
    /// The final LayerNorm before the tied head.
    pub norm: LayerNorm,
}

impl TransformerLm {
    /// Logits (B, L, V) of rows of one document each.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, l] = ids.dims();
        let device = ids.device();
        let zeros = Tensor::<2, Int>::zeros([b, l], &device);
        self.forward_packed(ids, zeros)
            .expect("the document index has the tokens' shape")
    }

    /// Logits (B, L, V) of rows of packed documents (`seq_idx` as for
    /// [`crate::lm::MambaLm::forward_packed`]): a token attends to the earlier tokens of its
    /// own document only, and positions restart at each document.
    ///
    /// # Errors
    /// A `seq_idx` whose shape is not the tokens'.
    pub fn forward_packed(
        &self,
        ids: Tensor<2, Int>,
        seq_idx: Tensor<2, Int>,
    ) -> crate::Result<Tensor<3>> {
        let [b, l] = ids.dims();
        if seq_idx.dims() != [b, l] {
            return Err(ModelError::Invalid(format!(
                "seq_idx has shape {:?}, the tokens {:?}",
                seq_idx.dims(),
                [b, l]
            )));
        }
        let device = ids.device();
        let d = self.norm.gamma.dims()[0];
        let doc: Vec<i64> = seq_idx
            .clone()
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .map_err(|e| ModelError::Invalid(format!("seq_idx: {e:?}")))?;
        let positions = positions_in_documents(&doc, l);
        // Vaswani et al.: embeddings N(0, 1/d) scaled by sqrt(d), so that tokens and the
        // unit-scale position encodings start at the same magnitude.
        let x = self.embedding.embed(ids).mul_scalar((d as f64).sqrt())
            + sinusoids(&positions, [b, l], d, &device);
        let (row, col) = (
            seq_idx.clone().unsqueeze_dim::<3>(2).expand([b, l, l]),
            seq_idx.unsqueeze_dim::<3>(1).expand([b, l, l]),
        );
        let other_doc: Tensor<3, Bool> = row.not_equal(col);
        let future = Tensor::<2, Bool>::tril_mask([l, l], 0, &device)
            .unsqueeze_dim::<3>(0)
            .expand([b, l, l]);
        let mask = other_doc.bool_or(future);
        let h = self
            .encoder
            .forward(TransformerEncoderInput::new(x).mask_attn(mask));
        let h = self.norm.forward(h);
        let logits = self.embedding.logits(h.reshape([b * l, d]));
        let v = logits.dims()[1];
        Ok(logits.reshape([b, l, v]))
    }
}

/// Each token's position within its document (0 at each document's first token), row by row.
fn positions_in_documents(doc: &[i64], l: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(doc.len());
    for row in doc.chunks(l) {
        let mut start = 0;
        for (t, &d) in row.iter().enumerate() {
            if t > 0 && d != row[t - 1] {
                start = t;
            }
            out.push((t - start) as f32);
        }
    }
    out
}

/// Sinusoidal position encodings (Vaswani et al. 2017): `PE(p, 2i) = sin(p / 10000^(2i/d))`,
/// `PE(p, 2i+1) = cos(...)`, for positions (B, L) → (B, L, d).
fn sinusoids(positions: &[f32], [b, l]: [usize; 2], d: usize, device: &Device) -> Tensor<3> {
    let mut v = Vec::with_capacity(positions.len() * d);
    for &p in positions {
        for i in 0..d {
            let freq = (10000f32).powf(-((i / 2 * 2) as f32) / d as f32);
            let a = p * freq;
            v.push(if i % 2 == 0 { a.sin() } else { a.cos() });
        }
    }
    Tensor::from_data(TensorData::new(v, [b, l, d]), device)
}
