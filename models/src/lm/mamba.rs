//! The Mamba language models (mamba_ssm's `MambaLMHeadModel`, transformers'
//! `MambaForCausalLM` and `Mamba2ForCausalLM`): embedding, pre-norm residual blocks
//! `x + mixer(rmsnorm(x))` with a Mamba or a Mamba2 mixer, a final RMSNorm and the LM head (tied
//! to the embedding or not).

use super::config::MambaLmConfig;
use super::config_json::{ConfigFlavor, read_mamba_config};
use super::vocab::VocabMatrix;
use crate::error::ModelError;
use crate::io::{TensorMap, find_weights};
use crate::limits::{FLOAT_BYTES, check_fits, check_params};
use crate::lm::CausalLm;
use crate::memory::{forced_by_env, human_count};
use crate::nn::{RmsNorm, RmsNormConfig};
use crate::precision::{cast_to, to_dtype, widen};
use crate::ssm::mamba::MambaLayerCache;
use crate::ssm::{Mixer, MixerTrace, SequenceMixer};
use burn::module::Module;
use burn::nn::Initializer;
use burn::tensor::{DType, Device, FloatDType, Int, Tensor};
use ssm_backends::max_binding_bytes;
use std::path::Path;

impl MambaLmConfig {
    /// A randomly initialised model (mamba_ssm's init; embedding N(0, 0.02)).
    ///
    /// # Panics
    /// On an invalid config or a parameter over the device's binding limit; see
    /// [`MambaLmConfig::try_init`] for a `Result`.
    pub fn init(&self, device: &Device) -> MambaLm {
        self.try_init(device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A randomly initialised model, or why not: an invalid config, or a parameter that does
    /// not fit one buffer binding of `device` (the embedding and an untied head are split into
    /// shards that do: see [`VocabMatrix`]). Checked before any parameter is materialised.
    pub fn try_init(&self, device: &Device) -> crate::Result<MambaLm> {
        self.validate()?;
        let vocab = [self.padded_vocab(), self.d_model];
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let embeddings = VocabMatrix::init("backbone.embeddings.weight", vocab, &normal, device)?;
        // Burn's Linear default (Kaiming uniform, fan-in d), in PyTorch's (out, in) layout.
        let head_init = Initializer::KaimingUniform {
            gain: 1.0 / 3f64.sqrt(),
            fan_out_only: false,
        };
        let lm_head = if self.tie_embeddings {
            None
        } else {
            Some(VocabMatrix::init(
                "lm_head.weight",
                vocab,
                &head_init,
                device,
            )?)
        };
        let norm = RmsNormConfig::new(self.d_model).with_eps(self.norm_eps);
        let (mixer, mixer2, mixer3) = (self.mixer(), self.mixer2(), self.mixer3());
        let model = MambaLm {
            backbone: Backbone {
                embeddings,
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
            lm_head,
            vocab_size: self.vocab_size,
            eos_token_id: self.eos_token_id,
        };
        check_params(&model, device)?;
        Ok(model)
    }
}

/// A pre-norm residual block: `x + mixer(norm(x))`.
#[derive(Module, Debug)]
pub struct MambaBlock {
    /// The pre-norm RMSNorm, `backbone.layers.{i}.norm` (weight (d_model)).
    pub norm: RmsNorm,
    /// The sequence mixer (Mamba, Mamba2 or Mamba-3), `backbone.layers.{i}.mixer`.
    pub mixer: Mixer,
}

/// Embedding, blocks and final norm (checkpoint prefix `backbone.`).
#[derive(Module, Debug)]
pub struct Backbone {
    /// The token embedding (vocab, d), in row shards where the device needs them.
    pub embeddings: VocabMatrix,
    /// The `n_layer` residual blocks, `backbone.layers.{i}`.
    pub layers: Vec<MambaBlock>,
    /// The final RMSNorm before the LM head, `backbone.norm_f` (weight (d_model)).
    pub norm_f: RmsNorm,
}

/// A Mamba2 language model is a [`MambaLm`] whose blocks hold [`crate::ssm::Mamba2Mixer`]s (a config with
/// `mamba2` set); the name is for readers who look for it.
pub type Mamba2Lm = MambaLm;

/// The Mamba language model (mamba_ssm's `MambaLMHeadModel`), with Mamba, Mamba2 or Mamba-3
/// mixers.
#[derive(Module, Debug)]
pub struct MambaLm {
    /// Embedding, blocks and final norm (checkpoint prefix `backbone.`).
    pub backbone: Backbone,
    /// The LM head (vocab, d) in PyTorch's layout (logits `x Wᵀ`); `None` when tied to the
    /// embedding.
    pub lm_head: Option<VocabMatrix>,
    /// Vocabulary size as configured; logits are returned for these first entries of the
    /// padded embedding.
    pub vocab_size: usize,
    /// Token that ends generation (config.json's `eos_token_id`), if the model has one.
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
    /// A config whose model cannot fit in the host's memory is refused before the weights are
    /// read ([`crate::memory`]).
    pub fn load_dir(dir: &Path, device: &Device) -> crate::Result<Self> {
        let (config, flavor) = read_mamba_config(&dir.join("config.json"))?;
        // Sized before the weights are read: a model that cannot fit in memory is refused here
        // (`SSM_ZOO_FORCE=1` goes on).
        config
            .weights_memory(format!(
                "the model in {} ({} parameters)",
                dir.display(),
                human_count(config.param_count())
            ))
            .check(device, forced_by_env())?;
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
        let vocab = |w: &mut TensorMap, key: &str| -> crate::Result<VocabMatrix> {
            if w.is_q8(key) {
                Ok(VocabMatrix::from_q8(w.take_q8(key, [v, d], device)?))
            } else {
                VocabMatrix::from_data(key, w.take_data(key, [v, d])?, device)
            }
        };
        let embeddings = vocab(w, emb_key)?;
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
            Some(vocab(w, "lm_head.weight")?)
        };
        Ok(Self {
            backbone: Backbone {
                embeddings,
                layers,
                norm_f,
            },
            lm_head,
            vocab_size: config.vocab_size,
            eos_token_id: config.eos_token_id,
        })
    }

    fn device(&self) -> Device {
        self.backbone.embeddings.device()
    }

    /// This model in `dtype` (f32, f16 or bf16; see [`crate::precision`]): weights and
    /// activations in `dtype`, the SSM parameters, norms, residual stream and state in f32,
    /// logits returned in f32.
    ///
    /// # Errors
    /// When the model's device does not compute in `dtype`.
    pub fn to_dtype(self, dtype: FloatDType) -> crate::Result<Self> {
        let device = self.device();
        to_dtype(self, dtype, &device)
    }

    /// The dtype the blocks compute in (the embedding's; f32 for a model quantized by
    /// [`crate::quantize`], whose activations are f32).
    pub fn dtype(&self) -> DType {
        match self.backbone.embeddings.weight[0].dtype() {
            DType::QFloat(_) => DType::F32,
            d => d,
        }
    }

    /// Whether the weights are held quantized ([`crate::quantize`]).
    pub fn is_quantized(&self) -> bool {
        ssm_backends::is_quantized(&self.backbone.embeddings.weight[0])
    }

    /// The residual stream's start: the token embeddings (B, L, d), in f32 whatever the
    /// model's dtype (mamba_ssm's `residual_in_fp32`).
    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        widen(self.backbone.embeddings.embed(ids))
    }

    /// The LM head over the last axis, on the rows of `x` ([`VocabMatrix::logits`]: a decode
    /// step's few rows stream the head on every core, shard by shard). A tied head multiplies by
    /// the embedding in its stored (V, d) layout, which is never transposed in memory.
    fn head<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let d = dims[D - 1];
        let head = self.lm_head.as_ref().unwrap_or(&self.backbone.embeddings);
        let rows = cast_to(x, head.weight[0].dtype()).reshape([dims[..D - 1].iter().product(), d]);
        let logits2 = widen(head.logits(rows));
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
        let mut x = self.embed(ids);
        let mut caches = Vec::with_capacity(self.backbone.layers.len());
        for layer in &self.backbone.layers {
            let (y, c) =
                layer
                    .mixer
                    .forward_packed(layer.norm.forward(x.clone()), seq_idx.clone(), None);
            x = x + y;
            caches.push(c);
        }
        let logits = self.head(self.backbone.norm_f.forward(x));
        Ok((logits, MambaCache { layers: caches }))
    }

    /// The residual stream after the last layer (before the final norm), in pieces along the
    /// sequence that together make (B, L, d), and the state after the last position. One piece
    /// where the device has no binding limit or the whole sequence fits; otherwise the prompt is
    /// run in pieces of [`MambaLm::prefill_piece`] tokens, each layer continuing from its state
    /// after the piece before (the result is the one-pass prefill's: the recurrence is exact
    /// across pieces).
    fn prefill_hidden(&self, ids: Tensor<2, Int>) -> (Vec<Tensor<3>>, MambaCache) {
        let [b, l] = ids.dims();
        let piece = self.prefill_piece(b).unwrap_or(l).min(l);
        if piece < l {
            log_split_once(b, l, piece);
        }
        let mut caches: Vec<Option<MambaLayerCache>> =
            self.backbone.layers.iter().map(|_| None).collect();
        let mut out = Vec::with_capacity(l.div_ceil(piece));
        for start in (0..l).step_by(piece) {
            let n = piece.min(l - start);
            let mut x = self.embed(ids.clone().narrow(1, start, n));
            for (layer, cache) in self.backbone.layers.iter().zip(caches.iter_mut()) {
                let (y, c) = layer
                    .mixer
                    .forward_cached(layer.norm.forward(x.clone()), cache.take());
                x = x + y;
                *cache = Some(c);
            }
            out.push(x);
        }
        let layers = caches
            .into_iter()
            .map(|c| c.expect("a prefill of at least one token"))
            .collect();
        (out, MambaCache { layers })
    }

    /// Tokens per piece of a prefill of `batch` rows such that no activation of a layer (the
    /// widest: [`Mixer::floats_per_token`]) exceeds the device's binding limit; `None` where
    /// there is no limit. A multiple of the SSD chunk length where one is that long.
    pub fn prefill_piece(&self, batch: usize) -> Option<usize> {
        let limit = max_binding_bytes(&self.device())?;
        let per_token = self.floats_per_token() * FLOAT_BYTES * batch.max(1);
        let tokens = (limit / per_token.max(1)).max(1);
        let chunk = self
            .backbone
            .layers
            .iter()
            .map(|l| match &l.mixer {
                Mixer::Mamba(_) => 1,
                Mixer::Mamba2(m) => m.chunk_size,
                Mixer::Mamba3(m) => m.chunk_size,
            })
            .max()
            .unwrap_or(1)
            .max(1);
        Some(if tokens >= chunk {
            tokens / chunk * chunk
        } else {
            tokens
        })
    }

    /// The most floats per token and batch row of one activation of the parallel forward.
    fn floats_per_token(&self) -> usize {
        let [_, d] = self.backbone.embeddings.dims();
        self.backbone
            .layers
            .iter()
            .map(|l| l.mixer.floats_per_token())
            .fold(d, usize::max)
    }

    /// Whether a parallel forward of `batch` rows of `len` tokens fits the device's buffer
    /// bindings, else an error naming the tensor that does not: the logits (B, L, V) when
    /// `all_logits` (the training loss, `zoo logits`), and (unless the forward is a prefill,
    /// which runs in pieces that fit) the widest activation of a layer. Nothing to check on a
    /// device without a binding limit.
    pub fn check_fits(
        &self,
        batch: usize,
        len: usize,
        all_logits: bool,
        prefill: bool,
    ) -> crate::Result<()> {
        let device = self.device();
        if all_logits {
            check_fits("the logits", &[batch, len, self.vocab_size], &device)?;
        }
        if !prefill {
            check_fits(
                "a layer's widest activation",
                &[batch, len, self.floats_per_token()],
                &device,
            )?;
        }
        Ok(())
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
        let mut x = self.embed(ids);
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
        let (pieces, cache) = self.prefill_hidden(ids);
        let logits = pieces
            .into_iter()
            .map(|x| self.head(self.backbone.norm_f.forward(x)))
            .collect();
        (Tensor::cat(logits, 1), cache)
    }

    fn prefill_last(&self, ids: Tensor<2, Int>) -> (Tensor<2>, MambaCache) {
        let (mut pieces, cache) = self.prefill_hidden(ids);
        let x = pieces.pop().expect("a prefill has at least one piece");
        let len = x.dims()[1];
        let last = x.narrow(1, len - 1, 1).squeeze_dim::<2>(1);
        (self.head(self.backbone.norm_f.forward(last)), cache)
    }

    fn step(&self, ids: Tensor<1, Int>, cache: MambaCache) -> (Tensor<2>, MambaCache) {
        let mut x = self.embed(ids.unsqueeze_dim(1)).squeeze_dim::<2>(1);
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

/// Says once per process that a prefill runs in pieces (the device's binding limit).
fn log_split_once(batch: usize, len: usize, piece: usize) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        log::info!(
            "a prefill of {batch} x {len} tokens runs in pieces of {piece} tokens: one pass would \
             exceed this device's largest buffer binding"
        )
    });
}

/// The per-layer recurrent state of a [`MambaLm`].
#[derive(Debug, Clone)]
pub struct MambaCache {
    /// One mixer state per block, in layer order.
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
