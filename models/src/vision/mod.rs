//! Vision networks on the SSM mixers: Vim (bidirectional Mamba over patch tokens) and VMamba
//! (four-route 2D selective scans in a stage hierarchy).

pub mod vim;
pub mod vmamba;

pub use vim::{Vim, VimConfig};
pub use vmamba::{VMamba, VMambaConfig};

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

/// An image classifier: logits (B, classes) of images (B, C, H, W).
pub trait ImageClassifier {
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;

    /// Cross-entropy loss and logits of a batch.
    fn classify(&self, batch: ImageBatch) -> ClassificationOutput {
        let logits = self.logits(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

/// burn-train's steps for an [`ImageClassifier`].
macro_rules! image_classifier_steps {
    ($model:ty) => {
        impl ImageClassifier for $model {
            fn logits(&self, images: Tensor<4>) -> Tensor<2> {
                self.forward(images)
            }
        }

        impl TrainStep for $model {
            type Input = ImageBatch;
            type Output = ClassificationOutput;

            fn step(&self, batch: ImageBatch) -> TrainOutput<ClassificationOutput> {
                let out = self.classify(batch);
                TrainOutput::new(self, out.loss.backward(), out)
            }
        }

        impl InferenceStep for $model {
            type Input = ImageBatch;
            type Output = ClassificationOutput;

            fn step(&self, batch: ImageBatch) -> ClassificationOutput {
                self.classify(batch)
            }
        }
    };
}

image_classifier_steps!(Vim);
image_classifier_steps!(VMamba);

/// The parameters the Vim and VMamba recipes (timm's optimiser factory plus mamba_ssm's
/// `_no_weight_decay` marks) train without weight decay: biases and LayerNorm shifts, norm
/// weights, `A_log`, `A_b_log`, `D`, `D_b`, `A_logs`, `Ds`, `pos_embed`, `cls_token`.
pub fn no_weight_decay_group() -> ParamGroup {
    ParamGroup::from_any_regexes(vec![
        r"\.(bias|beta)$",
        r"norm[0-9_f]*\.(weight|gamma)$",
        r"(^|\.)(A_log|A_b_log|D|D_b|A_logs|Ds|pos_embed|cls_token)$",
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::ParamId;

    #[test]
    fn weight_decay_spares_biases_norms_and_ssm_parameters() {
        let g = no_weight_decay_group();
        let id = ParamId::new();
        for path in [
            "layers.0.mixer.A_log",
            "layers.3.mixer.A_b_log",
            "layers.3.mixer.D",
            "layers.3.mixer.D_b",
            "layers.0.mixer.dt_proj.bias",
            "layers.0.norm.weight",
            "norm_f.weight",
            "pos_embed",
            "cls_token",
            "layers.1.blocks.0.op.A_logs",
            "layers.1.blocks.0.op.Ds",
            "layers.1.blocks.0.norm2.gamma",
            "layers.1.blocks.0.op.out_norm.beta",
            "classifier.norm.gamma",
        ] {
            assert!(
                g.matches(&id, Some(path)),
                "{path} should have no weight decay"
            );
        }
        for path in [
            "layers.0.mixer.in_proj.weight",
            "layers.0.mixer.x_proj_b.weight",
            "layers.1.blocks.0.op.x_proj_weight",
            "layers.1.blocks.0.op.dt_projs_weight",
            "layers.1.blocks.0.mlp.fc1.weight",
            "head.weight",
            "patch_embed.proj.weight",
        ] {
            assert!(!g.matches(&id, Some(path)), "{path} should decay");
        }
    }
}
