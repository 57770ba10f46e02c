//! Vision networks on the SSM mixers: Vim (bidirectional Mamba over patch tokens), VMamba
//! (four-route 2D selective scans in a stage hierarchy) and an isotropic S4ND classifier
//! (2-D SSM convolutions over the pixels).

pub mod s4nd;
pub mod vim;
pub mod vmamba;

pub use s4nd::{S4NDClassifier, S4NDClassifierConfig};
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
    /// Class logits (B, classes) of a batch of images (B, C, H, W) at the training resolution.
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;

    /// Logits of images at another resolution than the training one, `rate` = the training
    /// side / this side, for models whose layers are not tied to a resolution (S4ND's
    /// continuous kernels); `None` for those that are (a patch grid, position embeddings).
    fn logits_at_rate(&self, _images: Tensor<4>, _rate: f64) -> Option<Tensor<2>> {
        None
    }

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
        image_classifier_steps!(@steps $model);
    };
    ($model:ty, at_rate) => {
        impl ImageClassifier for $model {
            fn logits(&self, images: Tensor<4>) -> Tensor<2> {
                self.forward(images)
            }

            fn logits_at_rate(&self, images: Tensor<4>, rate: f64) -> Option<Tensor<2>> {
                Some(self.forward_at_rate(images, rate))
            }
        }
        image_classifier_steps!(@steps $model);
    };
    (@steps $model:ty) => {
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
image_classifier_steps!(S4NDClassifier, at_rate);

/// The parameters the Vim and VMamba recipes (timm's optimiser factory plus mamba_ssm's
/// `_no_weight_decay` marks) train without weight decay: biases and LayerNorm shifts, norm
/// weights (S4ND's `norms.i` too), `A_log`, `A_b_log`, `D`, `D_b`, `A_logs`, `Ds`, `pos_embed`, `cls_token`; and
/// S4ND's as state-spaces/s4 registers them: each axis kernel's step, `A` (Λ, `P`) and `B`
/// (`C` decays).
pub fn no_weight_decay_group() -> ParamGroup {
    ParamGroup::from_any_regexes(vec![
        r"\.(bias|beta)$",
        r"norm[0-9_f]*\.(weight|gamma)$",
        r"(^|\.)norms\.[0-9]+\.(weight|gamma)$",
        r"(^|\.)(A_log|A_b_log|D|D_b|A_logs|Ds|pos_embed|cls_token)$",
        r"\.kernel\.[0-9]+\.(S4D?\.)?(log_dt|Lambda_re|Lambda_im|P|B|log_A_real|A_imag)$",
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
            "layers.0.kernel.1.log_dt",
            "layers.0.kernel.0.Lambda_im",
            "layers.0.kernel.0.P",
            "layers.0.kernel.0.B",
            "layers.2.kernel.1.log_A_real",
            "layers.2.kernel.1.A_imag",
            "layers.2.D",
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
            "layers.0.kernel.0.C",
            "layers.0.kernel.1.C_bwd",
            "layers.0.output_linear.weight",
            "encoder.weight",
        ] {
            assert!(!g.matches(&id, Some(path)), "{path} should decay");
        }
    }
}
