//! Vision networks on the SSM mixers: Vim (bidirectional Mamba over patch tokens).

pub mod vim;

pub use vim::{Vim, VimConfig};

use burn::tensor::{Distribution, Tensor};

/// Stochastic depth (Huang et al., 2016): during training (on an autodiff device) each sample's
/// residual branch is dropped with probability `prob` and the kept ones scaled by
/// `1 / (1 − prob)`; the identity otherwise.
pub fn drop_path<const D: usize>(x: Tensor<D>, prob: f64) -> Tensor<D> {
    if prob <= 0.0 || !x.device().is_autodiff() {
        return x;
    }
    let keep = 1.0 - prob;
    let dims = x.dims();
    let mut mask_dims = [1; D];
    mask_dims[0] = dims[0];
    let mask = Tensor::<D>::random(mask_dims, Distribution::Bernoulli(keep), &x.device());
    x * mask.div_scalar(keep)
}

use burn::module::ParamGroup;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use ssm_datasets::ImageBatch;

impl Vim {
    /// Cross-entropy loss and logits of a batch.
    pub fn classify(&self, batch: ImageBatch) -> ClassificationOutput {
        let logits = self.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl TrainStep for Vim {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> TrainOutput<ClassificationOutput> {
        let out = self.classify(batch);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl InferenceStep for Vim {
    type Input = ImageBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: ImageBatch) -> ClassificationOutput {
        self.classify(batch)
    }
}

/// The parameters Vim's recipe (timm's optimiser factory plus mamba_ssm's `_no_weight_decay`
/// marks) trains without weight decay: biases, norm weights, `A_log`, `A_b_log`, `D`, `D_b`,
/// `pos_embed`, `cls_token`.
pub fn no_weight_decay_group() -> ParamGroup {
    ParamGroup::from_any_regexes(vec![
        r"\.bias$",
        r"norm(_f)?\.weight$",
        r"(^|\.)(A_log|A_b_log|D|D_b|pos_embed|cls_token)$",
    ])
    .expect("the patterns are valid regexes")
}

/// AdamW with `weight_decay`, and none on [`no_weight_decay_group`].
pub fn optimizer(weight_decay: f64) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_weight_decay(weight_decay as f32)
        .init()
        .with_group(
            no_weight_decay_group(),
            AdamWConfig::new().with_weight_decay(0.0).build(),
            None,
        )
}
