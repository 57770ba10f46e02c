//! The pieces of the reference language-model recipe (mamba_ssm's and transformers' trainers):
//! AdamW with weight decay on the weight matrices only, linear warm-up then cosine decay, the
//! gradient clipped by its global norm, and the next-token loss. The [`Trainer`](super::Trainer)
//! drives them; they work on any Burn module.

use crate::lm::mamba::MambaLm;
use crate::lm::transformer::TransformerLm;
use crate::nn::float_params;
use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// A language model trained on rows of packed documents (`seq_idx` as for
/// [`MambaLm::forward_packed`]): what the training loop needs of a model.
pub trait PackedLm: Module + Sync {
    /// Logits (B, L, V).
    fn logits_packed(
        &self,
        ids: Tensor<2, Int>,
        seq_idx: Tensor<2, Int>,
    ) -> crate::Result<Tensor<3>>;
}

impl PackedLm for MambaLm {
    fn logits_packed(
        &self,
        ids: Tensor<2, Int>,
        seq_idx: Tensor<2, Int>,
    ) -> crate::Result<Tensor<3>> {
        self.forward_packed(ids, seq_idx).map(|(logits, _)| logits)
    }
}

impl PackedLm for TransformerLm {
    fn logits_packed(
        &self,
        ids: Tensor<2, Int>,
        seq_idx: Tensor<2, Int>,
    ) -> crate::Result<Tensor<3>> {
        self.forward_packed(ids, seq_idx)
    }
}

/// Parameters trained without weight decay: embeddings, norms, biases (the dt bias included),
/// `A_log` and `D` (mamba_ssm marks the last two `_no_weight_decay`; the rest is transformers'
/// and GPT-NeoX's convention). Matched on the parameter's path (`backbone.layers.0.mixer.Mamba.D`).
pub fn no_decay_group() -> ParamGroup {
    ParamGroup::from_any_predicates(vec!["embedding", "norm", "bias", "A_log", ".D"])
}

/// AdamW (β = 0.9, 0.95; ε = 1e-8) with `weight_decay` on every parameter but
/// [`no_decay_group`]'s, which take the same AdamW without decay.
pub fn lm_optimizer(weight_decay: f64) -> ModuleOptimizer {
    let adamw = |wd: f64| {
        AdamWConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.95)
            .with_epsilon(1e-8)
            .with_weight_decay(wd as f32)
    };
    adamw(weight_decay)
        .init()
        .with_group(no_decay_group(), adamw(0.0).build(), None)
}

/// Each float parameter's path (as the optimizer's groups see it) and whether it decays.
pub fn decay_plan<M: Module>(module: &M) -> Vec<(String, bool)> {
    let group = no_decay_group();
    param_paths(module)
        .into_iter()
        .map(|(id, path)| {
            let decays = !group.matches(&id, Some(&path));
            (path, decays)
        })
        .collect()
}

/// Each float parameter's id and path (`a.0.b`, enum variants included), as the optimizer's
/// parameter groups match them.
pub(crate) fn param_paths<M: Module>(module: &M) -> Vec<(ParamId, String)> {
    float_params(module)
        .into_iter()
        .map(|(id, path, _)| (id, path))
        .collect()
}

/// The learning rate at `step` (0-based): linear warm-up from `peak / warmup` to `peak` over
/// `warmup` steps, then a cosine from `peak` down to `min_lr` at the last of `total` steps:
/// `lr = min + (peak - min) (1 + cos(π t)) / 2`, `t = (step - warmup) / (total - warmup - 1)`.
pub fn warmup_cosine(step: usize, total: usize, warmup: usize, peak: f64, min_lr: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup + 1).max(1);
    let t = ((step - warmup) as f64 / span as f64).min(1.0);
    min_lr + (peak - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Scales the gradients so that their global L2 norm (over every parameter of `module`) is at
/// most `max_norm` (PyTorch's `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when below 1);
/// returns the norm before clipping. `max_norm` 0 measures without clipping.
pub fn clip_grad_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s = g.square().sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    let mut sum = SumSquares { grads, total: None };
    module.visit(&mut sum);
    let norm = sum
        .total
        .map_or(0.0, |t| (t.into_scalar::<f32>() as f64).sqrt());
    if max_norm > 0.0 && norm > max_norm {
        let factor = max_norm / (norm + 1e-6);
        module.visit(&mut Scale { grads, factor });
    }
    norm
}

/// The next-token loss of each position: `-log softmax(logits)[target]`, (B, L) from logits
/// (B, L, V) and targets (B, L).
pub fn token_losses(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    log_softmax(logits, 2)
        .gather(2, targets.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2)
        .neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let lr = |s| warmup_cosine(s, 100, 10, 1e-3, 1e-4);
        assert!((lr(0) - 1e-4).abs() < 1e-12);
        assert!((lr(9) - 1e-3).abs() < 1e-12);
        assert!((lr(10) - 1e-3).abs() < 1e-12);
        assert!((lr(99) - 1e-4).abs() < 1e-12);
        assert!(lr(50) < lr(30) && lr(30) < lr(10));
    }
}
