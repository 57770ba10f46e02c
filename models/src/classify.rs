//! Sequence classifiers built from S4-family layers, the reference's `example.py` model:
//! an encoder (Linear d_input -> H), residual blocks `x + dropout(layer(norm(x)))` (pre-norm)
//! or `norm(x + dropout(layer(x)))` (post-norm) with LayerNorm over the channels, mean pooling
//! over the sequence, and a decoder (Linear H -> classes). Trainable with burn-train
//! (`TrainStep` / `InferenceStep` over [`SequenceBatch`]), with the reference's optimiser
//! groups: the SSM kernels' parameters at their own learning rate without weight decay.

use crate::ssm::reference::{ReferenceLayer, ReferenceOptions};
use crate::ssm::s4d::{S4D, S4DConfig, S4DInit, S4DKernelConfig};
use crate::ssm::s5::{S5, S5Config};
use burn::config::Config;
use burn::module::{Module, ParamGroup};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLrScheduler, ModuleLrSchedulerConfig};
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use ssm_datasets::SequenceBatch;

/// The SSM layer of a classifier's blocks.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// [`S4D`] (one diagonal SSM per channel, convolution mode).
    S4D,
    /// [`S5`] (one MIMO diagonal SSM, parallel scan).
    S5,
}

/// Configuration of a [`SequenceClassifier`].
#[derive(Config, Debug)]
pub struct SequenceClassifierConfig {
    /// Features per sequence step.
    pub d_input: usize,
    /// Classes.
    pub n_classes: usize,
    /// Channels H.
    #[config(default = 64)]
    pub d_model: usize,
    /// Residual blocks.
    #[config(default = 4)]
    pub n_layers: usize,
    /// State size N of each S4D layer.
    #[config(default = 64)]
    pub d_state: usize,
    /// Dropout rate inside each SSM layer and on each residual branch.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Pre-norm (norm inside the residual branch) rather than post-norm.
    #[config(default = true)]
    pub prenorm: bool,
    /// S4D: the initialisation of the diagonal state matrix A.
    #[config(default = "S4DInit::Lin")]
    pub init: S4DInit,
    /// Discretise with the bilinear transform rather than zero-order hold.
    #[config(default = false)]
    pub bilinear: bool,
    /// Range of the initial step sizes.
    #[config(default = 0.001)]
    pub dt_min: f64,
    /// Largest initial step size (see `dt_min`).
    #[config(default = 0.1)]
    pub dt_max: f64,
    /// The SSM layer.
    #[config(default = "LayerKind::S4D")]
    pub layer: LayerKind,
    /// S5: blocks of the block-diagonal HiPPO-N initialisation.
    #[config(default = 1)]
    pub s5_blocks: usize,
    /// S5: a second scan over the reversed sequence.
    #[config(default = false)]
    pub bidirectional: bool,
}

impl SequenceClassifierConfig {
    /// A randomly initialised classifier.
    pub fn init(&self, device: &Device) -> SequenceClassifier {
        let h = self.d_model;
        let s4d = S4DConfig::new(
            S4DKernelConfig::new(h)
                .with_d_state(self.d_state)
                .with_init(self.init)
                .with_bilinear(self.bilinear)
                .with_dt_min(self.dt_min)
                .with_dt_max(self.dt_max),
        )
        .with_dropout(self.dropout);
        // S5's state counts complex modes: N/2 of them match an S4D layer's N.
        let s5 = S5Config::new(h)
            .with_d_state((self.d_state / 2).max(1))
            .with_blocks(self.s5_blocks)
            .with_bilinear(self.bilinear)
            .with_bidirectional(self.bidirectional)
            .with_dt_min(self.dt_min)
            .with_dt_max(self.dt_max)
            .with_dropout(self.dropout);
        SequenceClassifier {
            encoder: LinearConfig::new(self.d_input, h).init(device),
            layers: (0..self.n_layers)
                .map(|_| match self.layer {
                    LayerKind::S4D => SeqLayer::S4D(s4d.init(device)),
                    LayerKind::S5 => SeqLayer::S5(s5.init(device)),
                })
                .collect(),
            norms: (0..self.n_layers)
                .map(|_| LayerNormConfig::new(h).init(device))
                .collect(),
            dropout: DropoutConfig::new(self.dropout).init(),
            decoder: LinearConfig::new(h, self.n_classes).init(device),
            prenorm: self.prenorm,
        }
    }
}

/// A block's SSM layer.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum SeqLayer {
    /// An [`S4D`] layer (one diagonal SSM per channel, convolution mode).
    S4D(S4D),
    /// An [`S5`] layer (one MIMO diagonal SSM, parallel scan).
    S5(S5),
}

impl SeqLayer {
    /// (B, L, H) -> (B, L, H).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            SeqLayer::S4D(l) => l.forward(x.swap_dims(1, 2)).swap_dims(1, 2),
            SeqLayer::S5(l) => l.forward(x),
        }
    }
}

/// A sequence classifier: (B, L, d_input) -> logits (B, classes).
#[derive(Module, Debug)]
pub struct SequenceClassifier {
    /// Linear d_input → H (weight (H, d_input)), checkpoint key `encoder`.
    pub encoder: Linear,
    /// The blocks' SSM layers (`s4_layers.{i}` in the reference checkpoint).
    pub layers: Vec<SeqLayer>,
    /// The blocks' LayerNorms over H (`norms.{i}`).
    pub norms: Vec<LayerNorm>,
    /// Dropout on each residual branch.
    pub dropout: Dropout,
    /// Linear H → classes on the mean-pooled sequence (`decoder`).
    pub decoder: Linear,
    /// Pre-norm (`true`) or post-norm (`false`, the reference `example.py` default) blocks.
    pub prenorm: bool,
}

impl SequenceClassifier {
    /// Logits (B, classes) of sequences (B, L, d_input).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let mut x = self.encoder.forward(x); // (B, L, H)
        for (layer, norm) in self.layers.iter().zip(&self.norms) {
            let z = if self.prenorm {
                norm.forward(x.clone())
            } else {
                x.clone()
            };
            let z = layer.forward(z);
            x = x + self.dropout.forward(z);
            if !self.prenorm {
                x = norm.forward(x);
            }
        }
        let pooled = x.mean_dim(1).squeeze_dim::<2>(1); // (B, H)
        self.decoder.forward(pooled)
    }

    /// Cross-entropy loss and logits of a batch.
    pub fn classify(&self, batch: SequenceBatch) -> ClassificationOutput {
        let logits = self.forward(batch.inputs);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl TrainStep for SequenceClassifier {
    type Input = SequenceBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: SequenceBatch) -> TrainOutput<ClassificationOutput> {
        let out = self.classify(batch);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl InferenceStep for SequenceClassifier {
    type Input = SequenceBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: SequenceBatch) -> ClassificationOutput {
        self.classify(batch)
    }
}

impl SequenceClassifier {
    /// Loads the state dict of state-spaces/s4's `example.py` model (`S4Model` with its default
    /// standalone S4D layers, or `S4Block`s with the diagonal kernel): `encoder` (H, d_input),
    /// `s4_layers.{i}.*` (each read by [`S4D::from_reference_map`]), `norms.{i}` (LayerNorm),
    /// `decoder` (classes, H). The sizes come from the shapes; `prenorm` (example.py's default
    /// is post-norm, `false`) and the layers' [`ReferenceOptions`] are not in a state dict.
    pub fn load_reference(
        path: &std::path::Path,
        prenorm: bool,
        options: ReferenceOptions,
        device: &Device,
    ) -> crate::Result<Self> {
        let mut w = crate::io::TensorMap::read(path)?;
        let enc = w.shape_of("encoder.weight")?;
        let (h, d_input) = (
            enc.first().copied().unwrap_or(0),
            enc.get(1).copied().unwrap_or(0),
        );
        let classes = w.shape_of("decoder.weight")?.first().copied().unwrap_or(0);
        let mut layers = Vec::new();
        let mut norms = Vec::new();
        while w
            .keys()
            .any(|k| k.starts_with(&format!("s4_layers.{}.", layers.len())))
        {
            let i = layers.len();
            let sub = w.split_prefix(&format!("s4_layers.{i}."));
            let layer = S4D::from_reference_map(sub, options, device)?;
            if layer.D.dims() != [h] {
                return Err(crate::ModelError::ShapeMismatch {
                    key: format!("s4_layers.{i}.D"),
                    expected: vec![h],
                    found: layer.D.dims().to_vec(),
                });
            }
            layers.push(SeqLayer::S4D(layer));
            let mut norm = LayerNormConfig::new(h).init(device);
            norm.gamma = w.param(&format!("norms.{i}.weight"), [h], device)?;
            norm.beta = Some(w.param(&format!("norms.{i}.bias"), [h], device)?);
            norms.push(norm);
        }
        if layers.is_empty() {
            return Err(crate::ModelError::MissingKey {
                key: "s4_layers.0.D".into(),
                expected: vec![h],
            });
        }
        let model = SequenceClassifier {
            encoder: w.linear("encoder", d_input, h, true, device)?,
            layers,
            norms,
            dropout: DropoutConfig::new(0.0).init(),
            decoder: w.linear("decoder", h, classes, true, device)?,
            prenorm,
        };
        w.finish()?;
        Ok(model)
    }
}

impl SequenceClassifier {
    /// Loads a classifier of lindermanlab/S5 (`ClassificationModel`, `mode='pool'`,
    /// `activation='full_glu'`, LayerNorm) from a Flax msgpack tree (its parameters under
    /// `params`, as `flax.serialization.to_bytes({"params": ...})` or a saved train state
    /// write them, or at the top level): `encoder.encoder` (Dense d_input -> H),
    /// `encoder.layers_{i}` (each read by [`S5::from_flax_map`]: SSM, `out1`/`out2`, `norm`),
    /// `decoder` (Dense H -> classes). Its outputs are logits; the reference returns their
    /// log-softmax (same argmax). Not in the tree, so given: `prenorm` (the reference's
    /// `--prenorm`) and the discretisation (`bilinear`). A tree with `batch_stats` (the
    /// reference's `--batchnorm`) is refused: this classifier normalises with LayerNorm.
    pub fn load_s5_reference(
        path: &std::path::Path,
        prenorm: bool,
        bilinear: bool,
        device: &Device,
    ) -> crate::Result<Self> {
        let mut w = crate::io::flax::read_flax_msgpack(path)?;
        if w.keys().any(|k| k.contains("batch_stats")) {
            return Err(crate::ModelError::Invalid(format!(
                "{}: a BatchNorm S5 model (batch_stats): only LayerNorm models load",
                path.display()
            )));
        }
        let root = if w.contains("params.encoder.encoder.kernel") {
            "params."
        } else {
            ""
        };
        let key = |k: &str| format!("{root}{k}");
        let enc = w.shape_of(&key("encoder.encoder.kernel"))?;
        let (d_input, h) = (
            enc.first().copied().unwrap_or(0),
            enc.get(1).copied().unwrap_or(0),
        );
        let classes = w
            .shape_of(&key("decoder.kernel"))?
            .get(1)
            .copied()
            .unwrap_or(0);
        let dense = |w: &mut crate::io::TensorMap, k: &str, d_in: usize, d_out: usize| {
            Ok::<_, crate::ModelError>(Linear {
                // Flax Dense kernels are (in, out), as Burn's Linear weight.
                weight: w.param(&key(&format!("{k}.kernel")), [d_in, d_out], device)?,
                bias: Some(w.param(&key(&format!("{k}.bias")), [d_out], device)?),
            })
        };
        let mut layers = Vec::new();
        let mut norms = Vec::new();
        while w.contains(&key(&format!("encoder.layers_{}.seq.D", layers.len()))) {
            let i = layers.len();
            let layer = S5::from_flax_map(
                &mut w,
                &key(&format!("encoder.layers_{i}")),
                bilinear,
                device,
            )?;
            if layer.D.dims() != [h] {
                return Err(crate::ModelError::ShapeMismatch {
                    key: key(&format!("encoder.layers_{i}.seq.D")),
                    expected: vec![h],
                    found: layer.D.dims().to_vec(),
                });
            }
            layers.push(SeqLayer::S5(layer));
            // Flax's LayerNorm: epsilon 1e-6.
            let mut norm = LayerNormConfig::new(h).with_epsilon(1e-6).init(device);
            norm.gamma = w.param(&key(&format!("encoder.layers_{i}.norm.scale")), [h], device)?;
            norm.beta =
                Some(w.param(&key(&format!("encoder.layers_{i}.norm.bias")), [h], device)?);
            norms.push(norm);
        }
        if layers.is_empty() {
            return Err(crate::ModelError::MissingKey {
                key: key("encoder.layers_0.seq.D"),
                expected: vec![h],
            });
        }
        Ok(SequenceClassifier {
            encoder: dense(&mut w, "encoder.encoder", d_input, h)?,
            layers,
            norms,
            dropout: DropoutConfig::new(0.0).init(),
            decoder: dense(&mut w, "decoder", h, classes)?,
            prenorm,
        })
    }
}

/// The SSM parameters the references train at their own learning rate without weight decay:
/// S4D's `kernel.log_dt`, `kernel.log_A_real`, `kernel.A_imag` (`C` is an ordinary parameter
/// in `s4d.py`), S5's `Lambda_re`, `Lambda_im`, `B`, `log_step` (`C`, `D` ordinary).
pub fn ssm_param_group() -> ParamGroup {
    ParamGroup::from_any_predicates(vec![
        "log_dt",
        "log_A_real",
        "A_imag",
        "Lambda_re",
        "Lambda_im",
        "log_step",
        ".B",
    ])
}

/// The reference's optimiser: AdamW with `weight_decay` for every parameter but the SSM
/// kernels', which take Adam without weight decay.
pub fn optimizer(weight_decay: f64) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_weight_decay(weight_decay as f32)
        .init()
        .with_group(ssm_param_group(), AdamConfig::new().build(), None)
}

/// Constant learning rates: `lr` for the model, `ssm_lr` for the SSM kernels.
pub fn learning_rates(lr: f64, ssm_lr: f64) -> ModuleLrScheduler {
    ModuleLrSchedulerConfig::new(lr.into())
        .with_group(ssm_param_group(), ssm_lr)
        .init()
        .expect("constant learning rates are valid")
}
