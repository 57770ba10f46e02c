//! The Mamba language models (mamba_ssm's `MambaLMHeadModel`, transformers'
//! `MambaForCausalLM` and `Mamba2ForCausalLM`): embedding, pre-norm residual blocks
//! `x + mixer(rmsnorm(x))` with a Mamba or a Mamba2 mixer, a final RMSNorm and the LM head (tied
//! to the embedding or not).

use super::config::{ConfigFlavor, MambaLmConfig, read_mamba_config};
use crate::error::ModelError;
use crate::io::{TensorMap, find_weights};
use crate::lm::CausalLm;
use crate::nn::{RmsNorm, RmsNormConfig, linear_rows};
use crate::ssm::mamba::MambaLayerCache;
use crate::ssm::{Mixer, MixerTrace};
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use ssm_backends::rows_matmul_transposed;
use std::path::Path;

impl MambaLmConfig {
    /// A randomly initialised model (mamba_ssm's init; embedding N(0, 0.02)).
    ///
    /// # Panics
    /// On an invalid config; call [`MambaLmConfig::validate`] first for a `Result`.
    pub fn init(&self, device: &Device) -> MambaLm {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let norm = RmsNormConfig::new(self.d_model).with_eps(self.norm_eps);
        let (mixer, mixer2, mixer3) = (self.mixer(), self.mixer2(), self.mixer3());
        MambaLm {
            backbone: Backbone {
                embeddings: EmbeddingConfig::new(self.padded_vocab(), self.d_model)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: 0.02,
                    })
                    .init(device),
                layers: (0..self.n_layer)
                    .map(|_| MambaBlock {
                        norm: norm.init(device),
                        mixer: if self.mamba3.is_some() {
                            Mixer::Mamba3(mixer3.init(device))
                        } else if self.mamba2.is_some() {
                            Mixer::Mamba2(mixer2.init(device))
                        } else {
                            Mixer::Mamba(mixer.init(device))
                        },
                    })
                    .collect(),
                norm_f: norm.init(device),
            },
            lm_head: (!self.tie_embeddings).then(|| {
                LinearConfig::new(self.d_model, self.padded_vocab())
                    .with_bias(false)
                    .init(device)
            }),
            vocab_size: self.vocab_size,
            eos_token_id: self.eos_token_id,
        }
    }
}

/// A pre-norm residual block: `x + mixer(norm(x))`.
#[derive(Module, Debug)]
pub struct MambaBlock {
    pub norm: RmsNorm,
    pub mixer: Mixer,
}

/// Embedding, blocks and final norm (checkpoint prefix `backbone.`).
#[derive(Module, Debug)]
pub struct Backbone {
    pub embeddings: Embedding,
    pub layers: Vec<MambaBlock>,
    pub norm_f: RmsNorm,
}

/// A Mamba2 language model is a [`MambaLm`] whose blocks hold [`crate::ssm::Mamba2Mixer`]s (a config with
/// `mamba2` set); the name is for readers who look for it.
pub type Mamba2Lm = MambaLm;

/// The Mamba language model, with Mamba or Mamba2 mixers.
#[derive(Module, Debug)]
pub struct MambaLm {
    pub backbone: Backbone,
    /// `None` when tied to the embedding.
    pub lm_head: Option<Linear>,
    pub vocab_size: usize,
    pub eos_token_id: Option<usize>,
}

/// Everything a parallel forward can report, for parity checks.
#[derive(Debug, Clone)]
pub struct MambaForwardOutput {
    /// (B, L, vocab_size).
    pub logits: Tensor<3>,
    /// The token embeddings (B, L, d_model).
    pub embeddings: Tensor<3>,
    /// The output of each block, then `norm_f` of the last one (n_layer + 1 entries).
    pub hidden_states: Vec<Tensor<3>>,
    /// The per-layer state after the last position.
    pub cache: MambaCache,
    /// Per-layer scan arguments and outputs.
    pub traces: Vec<MixerTrace>,
}

impl MambaLm {
    /// Loads a model directory: `config.json` and `model.safetensors` or `pytorch_model.bin`.
    pub fn load_dir(dir: &Path, device: &Device) -> crate::Result<Self> {
        let (config, flavor) = read_mamba_config(&dir.join("config.json"))?;
        let mut weights = TensorMap::read(&find_weights(dir)?)?;
        Self::from_weights(&config, flavor, &mut weights, device).and_then(|m| {
            weights.finish()?;
            Ok(m)
        })
    }

    /// Builds a model from checkpoint tensors with transformers' keys (`backbone.embeddings.*`)
    /// or state-spaces' (`backbone.embedding.*`). Every key is checked for presence and shape.
    pub fn from_weights(
        config: &MambaLmConfig,
        flavor: ConfigFlavor,
        w: &mut TensorMap,
        device: &Device,
    ) -> crate::Result<Self> {
        config.validate()?;
        let (d, v) = (config.d_model, config.padded_vocab());
        let emb_key = if w.contains("backbone.embedding.weight")
            || (flavor == ConfigFlavor::StateSpaces && !w.contains("backbone.embeddings.weight"))
        {
            "backbone.embedding.weight"
        } else {
            "backbone.embeddings.weight"
        };
        let embedding = w.take(emb_key, [v, d], device)?;
        let norm = RmsNormConfig::new(d).with_eps(config.norm_eps);
        let (mixer, mixer2, mixer3) = (config.mixer(), config.mixer2(), config.mixer3());
        let mut layers = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let p = format!("backbone.layers.{i}");
            let m = format!("{p}.mixer");
            let mixer = if config.mamba3.is_some() {
                Mixer::Mamba3(mixer3.load(w, &m, device)?)
            } else if config.mamba2.is_some() {
                Mixer::Mamba2(mixer2.load(w, &m, device)?)
            } else {
                Mixer::Mamba(mixer.load(w, &m, device)?)
            };
            layers.push(MambaBlock {
                norm: norm.load(w, &format!("{p}.norm"), device)?,
                mixer,
            });
        }
        let norm_f = norm.load(w, "backbone.norm_f", device)?;
        let lm_head = if config.tie_embeddings {
            // state-spaces checkpoints store the tied head too; it must match the embedding.
            w.discard("lm_head.weight", &[v, d])?;
            None
        } else {
            Some(Linear {
                weight: Param::from_tensor(w.take("lm_head.weight", [v, d], device)?.transpose()),
                bias: None,
            })
        };
        Ok(Self {
            backbone: Backbone {
                embeddings: Embedding {
                    weight: Param::from_tensor(embedding),
                },
                layers,
                norm_f,
            },
            lm_head,
            vocab_size: config.vocab_size,
            eos_token_id: config.eos_token_id,
        })
    }

    fn device(&self) -> Device {
        self.backbone.embeddings.weight.val().device()
    }

    /// The LM head over the last axis, on the rows of `x` ([`rows_matmul_transposed`] /
    /// [`linear_rows`]: a decode step's few rows stream the head on every core). A tied head
    /// multiplies by the embedding in its stored (V, d) layout, which is never transposed in
    /// memory.
    fn head<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let d = dims[D - 1];
        let rows = x.reshape([dims[..D - 1].iter().product(), d]);
        let logits2 = match &self.lm_head {
            Some(h) => linear_rows(h, rows),
            None => rows_matmul_transposed(rows, self.backbone.embeddings.weight.val()),
        };
        let mut out_dims = dims;
        out_dims[D - 1] = logits2.dims()[1];
        let logits = logits2.reshape(out_dims);
        let padded = logits.dims()[D - 1];
        if padded == self.vocab_size {
            logits
        } else {
            logits.narrow(D - 1, 0, self.vocab_size)
        }
    }

    /// Logits (B, L, V) of rows of packed documents and the state after each row's last
    /// document: `seq_idx` (B, L) gives each token's document (non-decreasing along a row; see
    /// `ssm_backends::seq_idx_from_lengths`), and no document sees the one before it (every
    /// layer's convolution and scan restart at each new document), as if each were run alone.
    ///
    /// # Errors
    /// A `seq_idx` whose shape is not the tokens'.
    pub fn forward_packed(
        &self,
        ids: Tensor<2, Int>,
        seq_idx: Tensor<2, Int>,
    ) -> crate::Result<(Tensor<3>, MambaCache)> {
        if seq_idx.dims() != ids.dims() {
            return Err(ModelError::Invalid(format!(
                "seq_idx has shape {:?}, the tokens {:?}",
                seq_idx.dims(),
                ids.dims()
            )));
        }
        let mut x = self.backbone.embeddings.forward(ids);
        let mut caches = Vec::with_capacity(self.backbone.layers.len());
        for layer in &self.backbone.layers {
            let (y, c) = layer
                .mixer
                .forward_packed(layer.norm.forward(x.clone()), seq_idx.clone());
            x = x + y;
            caches.push(c);
        }
        let logits = self.head(self.backbone.norm_f.forward(x));
        Ok((logits, MambaCache { layers: caches }))
    }

    /// The residual stream (B, L, d) after the last layer (before the final norm) and the state
    /// after the last position.
    fn prefill_hidden(&self, ids: Tensor<2, Int>) -> (Tensor<3>, MambaCache) {
        let mut x = self.backbone.embeddings.forward(ids);
        let mut caches = Vec::with_capacity(self.backbone.layers.len());
        for layer in &self.backbone.layers {
            let (y, c) = layer
                .mixer
                .forward_cached(layer.norm.forward(x.clone()), None);
            x = x + y;
            caches.push(c);
        }
        (x, MambaCache { layers: caches })
    }

    /// Checks token ids against the vocabulary.
    pub fn check_ids(&self, rows: &[Vec<usize>]) -> crate::Result<()> {
        for row in rows {
            if row.is_empty() {
                return Err(ModelError::EmptyPrompt);
            }
            if let Some(&id) = row.iter().find(|&&id| id >= self.vocab_size) {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    vocab: self.vocab_size,
                });
            }
        }
        Ok(())
    }

    /// The parallel forward with every intermediate the parity tests compare, continuing from
    /// `cache` when given.
    pub fn forward_detailed(
        &self,
        ids: Tensor<2, Int>,
        cache: Option<MambaCache>,
    ) -> MambaForwardOutput {
        let mut x = self.backbone.embeddings.forward(ids);
        let embeddings = x.clone();
        let mut hidden_states = Vec::with_capacity(self.backbone.layers.len() + 1);
        let mut caches = Vec::with_capacity(self.backbone.layers.len());
        let mut traces = Vec::with_capacity(self.backbone.layers.len());
        let mut prev = cache.map(|c| c.layers.into_iter().map(Some).collect::<Vec<_>>());
        for (i, layer) in self.backbone.layers.iter().enumerate() {
            let c = prev.as_mut().and_then(|p| p[i].take());
            let (y, c, t) = layer.mixer.forward_traced(layer.norm.forward(x.clone()), c);
            x = x + y;
            hidden_states.push(x.clone());
            caches.push(c);
            traces.push(t);
        }
        let normed = self.backbone.norm_f.forward(x);
        hidden_states.push(normed.clone());
        MambaForwardOutput {
            logits: self.head(normed),
            embeddings,
            hidden_states,
            cache: MambaCache { layers: caches },
            traces,
        }
    }
}

impl CausalLm for MambaLm {
    type Cache = MambaCache;

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn eos_token_id(&self) -> Option<usize> {
        self.eos_token_id
    }

    fn device(&self) -> Device {
        MambaLm::device(self)
    }

    fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.prefill(ids).0
    }

    fn join_caches(&self, caches: Vec<MambaCache>) -> MambaCache {
        MambaCache::cat(caches)
    }

    fn keep_rows(&self, cache: MambaCache, rows: &[usize]) -> MambaCache {
        cache.rows(rows)
    }

    fn prefill(&self, ids: Tensor<2, Int>) -> (Tensor<3>, MambaCache) {
        let (x, cache) = self.prefill_hidden(ids);
        (self.head(self.backbone.norm_f.forward(x)), cache)
    }

    fn prefill_last(&self, ids: Tensor<2, Int>) -> (Tensor<2>, MambaCache) {
        let (x, cache) = self.prefill_hidden(ids);
        let len = x.dims()[1];
        let last = x.narrow(1, len - 1, 1).squeeze_dim::<2>(1);
        (self.head(self.backbone.norm_f.forward(last)), cache)
    }

    fn step(&self, ids: Tensor<1, Int>, cache: MambaCache) -> (Tensor<2>, MambaCache) {
        let mut x = self
            .backbone
            .embeddings
            .forward(ids.unsqueeze_dim(1))
            .squeeze_dim::<2>(1);
        // The residual stream with each norm fused to the add before it (mamba_ssm's
        // fused_add_norm): one launch per layer for add + norm on the GPU backends.
        let mut pending: Option<Tensor<2>> = None;
        let mut caches = Vec::with_capacity(cache.layers.len());
        for (layer, c) in self.backbone.layers.iter().zip(cache.layers) {
            let (sum, normed) = layer.norm.forward_add(x, pending.take());
            let (y, c) = layer.mixer.step(normed, c);
            x = sum;
            pending = Some(y);
            caches.push(c);
        }
        let (_, normed) = self.backbone.norm_f.forward_add(x, pending);
        (self.head(normed), MambaCache { layers: caches })
    }
}

/// The per-layer recurrent state of a [`MambaLm`].
#[derive(Debug, Clone)]
pub struct MambaCache {
    pub layers: Vec<MambaLayerCache>,
}

impl MambaCache {
    /// The states of several batches as one batch, their rows in order.
    ///
    /// # Panics
    /// When `parts` is empty or their layer counts differ.
    pub fn cat(parts: Vec<Self>) -> Self {
        let n = parts.first().map_or(0, |p| p.layers.len());
        assert!(
            parts.iter().all(|p| p.layers.len() == n),
            "MambaCache::cat of states of different models"
        );
        let mut per_layer: Vec<Vec<MambaLayerCache>> = (0..n).map(|_| Vec::new()).collect();
        for part in parts {
            for (i, layer) in part.layers.into_iter().enumerate() {
                per_layer[i].push(layer);
            }
        }
        Self {
            layers: per_layer.into_iter().map(MambaLayerCache::cat).collect(),
        }
    }

    /// The states of the batch rows `rows`, in that order.
    pub fn rows(self, rows: &[usize]) -> Self {
        Self {
            layers: self.layers.into_iter().map(|l| l.rows(rows)).collect(),
        }
    }
}
