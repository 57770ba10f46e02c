//! An image classifier from S4ND layers: the isotropic stack of the S4ND paper's CIFAR model
//! (state-spaces/s4 `configs/experiment/s4nd/cifar/s4-cifar-2d.yaml`: `model: s4` with S4ND
//! layers, pre-norm residual blocks): a per-pixel linear encoder C → H, `n_layers` blocks
//! `x + dropout(S4ND(LayerNorm(x)))`, the mean over the pixels, a linear decoder H → classes.
//!
//! No layer is tied to a resolution (no patch grid, no position embedding), so a model trained
//! at one image size classifies another with [`S4NDClassifier::forward_at_rate`]: `rate` = the
//! training side / the new side samples each kernel at the new pixel pitch.

use crate::ssm::s4nd::{S4ND, S4NDConfig, S4NDKernelKind};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

/// Configuration of an [`S4NDClassifier`].
#[derive(Config, Debug)]
pub struct S4NDClassifierConfig {
    /// Image channels.
    pub in_chans: usize,
    /// Classes of the decoder.
    pub num_classes: usize,
    /// Channels H of every layer.
    #[config(default = 64)]
    pub d_model: usize,
    /// Number of residual S4ND blocks.
    #[config(default = 4)]
    pub n_layers: usize,
    /// State size N of each axis's SSM.
    #[config(default = 64)]
    pub d_state: usize,
    /// The 1-D kernel of each axis: S4 (DPLR, the paper's) or the diagonal S4D.
    #[config(default = "S4NDKernelKind::S4")]
    pub kernel: S4NDKernelKind,
    /// Two-sided kernels along each axis (the reference's default).
    #[config(default = true)]
    pub bidirectional: bool,
    /// Range of the initial steps (the paper's CIFAR model: 0.1 to 1, a kernel spanning a few
    /// dozen pixels).
    #[config(default = 0.1)]
    pub dt_min: f64,
    /// Largest initial step (see `dt_min`).
    #[config(default = 1.0)]
    pub dt_max: f64,
    /// Dropout rate in [0, 1) inside each S4ND layer and on each residual branch.
    #[config(default = 0.1)]
    pub dropout: f64,
}

impl S4NDClassifierConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> crate::Result<()> {
        if self.in_chans == 0 || self.num_classes == 0 || self.d_model == 0 || self.n_layers == 0 {
            return Err(crate::ModelError::Invalid(
                "S4ND classifier: channels, classes, width and layers must be at least 1".into(),
            ));
        }
        if self.d_state < 2 || !(self.dt_min > 0.0 && self.dt_min <= self.dt_max) {
            return Err(crate::ModelError::Invalid(format!(
                "S4ND classifier: need d_state >= 2 and 0 < dt_min <= dt_max (got {}, {}, {})",
                self.d_state, self.dt_min, self.dt_max
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(crate::ModelError::Invalid(format!(
                "S4ND classifier: dropout {} is not in [0, 1)",
                self.dropout
            )));
        }
        Ok(())
    }

    /// A randomly initialised classifier.
    pub fn init(&self, device: &Device) -> S4NDClassifier {
        let h = self.d_model;
        let layer = S4NDConfig::new(h)
            .with_d_state(self.d_state)
            .with_dim(2)
            .with_kernel(self.kernel)
            .with_bidirectional(self.bidirectional)
            .with_dt_min(self.dt_min)
            .with_dt_max(self.dt_max)
            .with_dropout(self.dropout);
        S4NDClassifier {
            encoder: LinearConfig::new(self.in_chans, h).init(device),
            layers: (0..self.n_layers).map(|_| layer.init(device)).collect(),
            norms: (0..self.n_layers)
                .map(|_| LayerNormConfig::new(h).init(device))
                .collect(),
            dropout: DropoutConfig::new(self.dropout).init(),
            decoder: LinearConfig::new(h, self.num_classes).init(device),
        }
    }
}

/// The isotropic S4ND image classifier.
#[derive(Module, Debug)]
pub struct S4NDClassifier {
    /// Per-pixel linear encoder C → H (weight (H, C)).
    pub encoder: Linear,
    /// The S4ND layers over 2-D feature maps, one per block.
    pub layers: Vec<S4ND>,
    /// The pre-norm LayerNorm of each block, over H.
    pub norms: Vec<LayerNorm>,
    /// Dropout on each block's residual branch.
    pub dropout: Dropout,
    /// Linear decoder H → classes on the pixel-averaged features.
    pub decoder: Linear,
}

impl S4NDClassifier {
    /// Logits (B, classes) of images (B, C, H, W) at the training resolution.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_at_rate(images, 1.0)
    }

    /// Logits of images at another resolution: `rate` = the training side / this side (0.5
    /// for images twice as large).
    pub fn forward_at_rate(&self, images: Tensor<4>, rate: f64) -> Tensor<2> {
        // Channels last for the encoder and the norms, channels first for the S4ND layers.
        let mut x = self.encoder.forward(images.permute([0, 2, 3, 1])); // (B, H, W, D)
        for (layer, norm) in self.layers.iter().zip(&self.norms) {
            let z = norm.forward(x.clone()).permute([0, 3, 1, 2]);
            let z = layer.forward_at_rate(z, rate).permute([0, 2, 3, 1]);
            x = x + self.dropout.forward(z);
        }
        let [b, _, _, d] = x.dims();
        let pooled = x.mean_dim(1).mean_dim(2).reshape([b, d]);
        self.decoder.forward(pooled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_decay_spares_the_kernels_steps_a_and_b_but_not_c() {
        let device = Device::flex();
        for kind in [S4NDKernelKind::S4, S4NDKernelKind::S4D] {
            let model = S4NDClassifierConfig::new(1, 3)
                .with_d_model(4)
                .with_n_layers(1)
                .with_d_state(4)
                .with_kernel(kind)
                .init(&device);
            let group = crate::vision::no_weight_decay_group();
            let mut decays: Vec<String> = crate::lm::train::param_paths(&model)
                .into_iter()
                .filter(|(id, path)| !group.matches(id, Some(path)))
                .map(|(_, path)| path)
                .collect();
            decays.sort();
            let v = if kind == S4NDKernelKind::S4 {
                "S4"
            } else {
                "S4D"
            };
            let mut want = vec![
                "decoder.weight".to_string(),
                "encoder.weight".to_string(),
                "layers.0.output_linear.weight".to_string(),
            ];
            for axis in 0..2 {
                want.push(format!("layers.0.kernel.{axis}.{v}.C"));
                want.push(format!("layers.0.kernel.{axis}.{v}.C_bwd"));
            }
            want.sort();
            assert_eq!(decays, want, "{kind:?}");
        }
    }
}
