//! Vim (Zhu et al., "Vision Mamba", 2024): an image as a sequence of patch tokens with a class
//! token in the middle, through residual blocks of the bidirectional Mamba mixer
//! ([`BiMambaMixer`]), classified from the class token.
//!
//! ```text
//! x  = flatten(conv_{p×p, stride s}(image))              (B, M, D), M patches
//! x  = [x_{<M/2}, cls, x_{≥M/2}] + pos_embed              (B, M + 1, D)
//! r₀ = x;  hᵢ = mixerᵢ(RMSNorm(rᵢ));  rᵢ₊₁ = rᵢ + hᵢ         (mamba_ssm's fused add-norm order)
//! logits = head(RMSNorm_f(r_depth)[cls])
//! ```
//!
//! Field names are the keys of the released checkpoints (`patch_embed.proj`, `cls_token`,
//! `pos_embed`, `layers.{i}.mixer.*`, `layers.{i}.norm`, `norm_f`, `head`);
//! [`Vim::from_weights`] loads them (a `.pth` state dict under `"model"`, as hustvl/Vim
//! releases them, or safetensors).

use crate::io::weights::TensorMap;
use crate::nn::{RmsNorm, RmsNormConfig};
use crate::ssm::bimamba::BiMambaMixer;
use crate::ssm::mamba::MambaMixerConfig;
use crate::vision::drop_path;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor};

/// Configuration of a [`Vim`] (hustvl/Vim's `VisionMamba` arguments for the released
/// "bimambav2, middle class token, abs pos embed, divide out" models).
#[derive(Config, Debug)]
pub struct VimConfig {
    /// Square input side in pixels.
    #[config(default = 224)]
    pub img_size: usize,
    /// Patch side.
    #[config(default = 16)]
    pub patch_size: usize,
    /// Stride of the patch embedding (the patch size, or 8 for the "stride8" models).
    #[config(default = 16)]
    pub stride: usize,
    /// Input channels.
    #[config(default = 3)]
    pub channels: usize,
    /// Token width D.
    #[config(default = 192)]
    pub embed_dim: usize,
    /// Number of blocks.
    #[config(default = 24)]
    pub depth: usize,
    /// SSM state size N.
    #[config(default = 16)]
    pub d_state: usize,
    /// Classes of the head.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// RMSNorm epsilon.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Largest stochastic-depth rate (block i drops with rate `[0, linspace(0, r, depth)][i]`).
    #[config(default = 0.0)]
    pub drop_path_rate: f64,
}

impl VimConfig {
    /// Vim-Ti: D = 192, 24 blocks (7.15M parameters).
    pub fn vim_tiny() -> Self {
        Self::new()
    }
    /// Vim-S: D = 384, 24 blocks (25.8M parameters).
    pub fn vim_small() -> Self {
        Self::new().with_embed_dim(384)
    }
    /// Vim-B: D = 768, 24 blocks (97.6M parameters).
    pub fn vim_base() -> Self {
        Self::new().with_embed_dim(768)
    }

    /// A preset by name: `vim_tiny`, `vim_small` or `vim_base`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "vim_tiny" | "vim-tiny" => Some(Self::vim_tiny()),
            "vim_small" | "vim-small" => Some(Self::vim_small()),
            "vim_base" | "vim-base" => Some(Self::vim_base()),
            _ => None,
        }
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        (self.img_size - self.patch_size) / self.stride + 1
    }

    /// Tokens, class token included.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// Checks the sizes.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::ModelError::InvalidConfig(m));
        if self.patch_size == 0 || self.stride == 0 || self.img_size < self.patch_size {
            return bad(format!(
                "vim: img_size {} must be at least patch_size {} (> 0), stride {} > 0",
                self.img_size, self.patch_size, self.stride
            ));
        }
        if self.embed_dim == 0 || self.depth == 0 || self.d_state == 0 || self.channels == 0 {
            return bad("vim: embed_dim, depth, d_state and channels must be positive".into());
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return bad(format!(
                "vim: drop_path_rate {} must be in [0, 1)",
                self.drop_path_rate
            ));
        }
        Ok(())
    }

    /// The mixer configuration of every block (mamba_ssm defaults: expand 2, conv 4, dt rank
    /// `ceil(D / 16)`, no projection biases).
    pub fn mixer(&self) -> MambaMixerConfig {
        MambaMixerConfig::new(self.embed_dim)
            .with_d_state(self.d_state)
            .with_n_layer(self.depth)
    }

    /// A model with the reference initialisation (truncated-normal class token and position
    /// embedding, std 0.02; mamba_ssm's mixer init; out_proj rescaled by `1/sqrt(depth)`).
    ///
    /// # Panics
    /// On an invalid configuration (see [`VimConfig::validate`]).
    pub fn init(&self, device: &Device) -> Vim {
        self.validate().unwrap_or_else(|e| panic!("{e}"));
        let d = self.embed_dim;
        let p = self.patch_size;
        let trunc = |dims: [usize; 3]| {
            Param::from_tensor(
                Tensor::<3>::random(dims, Distribution::Normal(0.0, 0.02), device)
                    .clamp(-0.04, 0.04),
            )
        };
        let mixer = self.mixer();
        Vim {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([self.channels, d], [p, p])
                    .with_stride([self.stride, self.stride])
                    .with_padding(PaddingConfig2d::Valid)
                    .init(device),
            },
            cls_token: trunc([1, 1, d]),
            pos_embed: trunc([1, self.tokens(), d]),
            layers: (0..self.depth)
                .map(|_| VimBlock {
                    mixer: mixer.init_bidirectional(device),
                    norm: RmsNormConfig::new(d).with_eps(self.norm_eps).init(device),
                })
                .collect(),
            norm_f: RmsNormConfig::new(d).with_eps(self.norm_eps).init(device),
            head: LinearConfig::new(d, self.num_classes).init(device),
            img_size: self.img_size,
            drop_path_rate: self.drop_path_rate,
        }
    }
}

/// The patch embedding: a `p × p` convolution with stride `s` (key `patch_embed.proj`).
#[derive(Module, Debug)]
pub struct PatchEmbed {
    /// The patch convolution, weight (D, C, p, p) and bias (D).
    pub proj: Conv2d,
}

impl PatchEmbed {
    /// (B, C, H, W) -> (B, M, D), patches in row-major order.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<3> {
        let x = self.proj.forward(images); // (B, D, gh, gw)
        let [b, d, gh, gw] = x.dims();
        x.reshape([b, d, gh * gw]).swap_dims(1, 2)
    }
}

/// One residual block: RMSNorm then the bidirectional mixer.
#[derive(Module, Debug)]
pub struct VimBlock {
    /// The bidirectional Mamba mixer (`layers.{i}.mixer`).
    pub mixer: BiMambaMixer,
    /// The RMSNorm applied before the mixer (`layers.{i}.norm`).
    pub norm: RmsNorm,
}

/// The Vim classifier.
#[derive(Module, Debug)]
pub struct Vim {
    /// The patch embedding (`patch_embed.proj`).
    pub patch_embed: PatchEmbed,
    /// The learned class token (1, 1, D).
    pub cls_token: Param<Tensor<3>>,
    /// Absolute position embedding (1, M + 1, D), class token included.
    pub pos_embed: Param<Tensor<3>>,
    /// The residual blocks, `depth` of them (`layers.{i}`).
    pub layers: Vec<VimBlock>,
    /// The final RMSNorm (`norm_f`).
    pub norm_f: RmsNorm,
    /// The classification head, weight (classes, D) and bias (classes).
    pub head: Linear,
    /// Square input side in pixels the model was built for; other sizes panic.
    pub img_size: usize,
    /// Largest stochastic-depth rate (0 when loaded from a checkpoint).
    pub drop_path_rate: f64,
}

impl Vim {
    /// The class token's position: the middle of the patch sequence.
    pub fn cls_position(&self) -> usize {
        (self.pos_embed.dims()[1] - 1) / 2
    }

    /// The class token's features after the final norm (B, D).
    pub fn forward_features(&self, images: Tensor<4>) -> Tensor<2> {
        let [b, _, h, w] = images.dims();
        assert!(
            h == self.img_size && w == self.img_size,
            "vim: input image size {h}x{w} does not match the model's {0}x{0}",
            self.img_size
        );
        let x = self.patch_embed.forward(images);
        let [_, m, d] = x.dims();
        let pos = self.cls_position();
        let cls = self.cls_token.val().expand([b, 1, d]);
        let x = Tensor::cat(
            vec![x.clone().narrow(1, 0, pos), cls, x.narrow(1, pos, m - pos)],
            1,
        ) + self.pos_embed.val();
        let depth = self.layers.len();
        let mut residual: Option<Tensor<3>> = None;
        let mut hidden = x;
        for (i, layer) in self.layers.iter().enumerate() {
            // Block i's stochastic depth applies to the branch it adds, as in the reference.
            let rate = if i == 0 {
                0.0
            } else {
                self.drop_path_rate * (i - 1) as f64 / (depth.max(2) - 1) as f64
            };
            let (r, normed) = layer.norm.forward_add(drop_path(hidden, rate), residual);
            residual = Some(r);
            hidden = layer.mixer.forward(normed);
        }
        let (_, out) = self
            .norm_f
            .forward_add(drop_path(hidden, self.drop_path_rate), residual);
        out.narrow(1, pos, 1).reshape([b, d])
    }

    /// Logits (B, classes) of images (B, C, H, W).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.forward_features(images))
    }

    /// The configuration of a checkpoint with hustvl/Vim's keys: the sizes from the tensors'
    /// shapes, the input side from the position embedding's token count assuming patches with
    /// `stride` (the patch size when `None`; pass 8 for the "stride8" models).
    pub fn config_of(w: &TensorMap, stride: Option<usize>) -> crate::Result<VimConfig> {
        let pe = w.shape_of("patch_embed.proj.weight")?;
        let pos = w.shape_of("pos_embed")?;
        let bad = |m: String| crate::ModelError::InvalidConfig(format!("vim checkpoint: {m}"));
        if pe.len() != 4 || pos.len() != 3 || pos[1] < 2 {
            return Err(bad(format!(
                "patch_embed.proj.weight {pe:?} must be (D, C, p, p) and pos_embed {pos:?} (1, tokens, D)"
            )));
        }
        let patches = pos[1] - 1;
        let grid = (patches as f64).sqrt().round() as usize;
        if grid * grid != patches {
            return Err(bad(format!(
                "{patches} patch tokens do not form a square grid"
            )));
        }
        let (patch, stride) = (pe[2], stride.unwrap_or(pe[2]));
        Ok(VimConfig::new()
            .with_patch_size(patch)
            .with_stride(stride)
            .with_img_size((grid - 1) * stride + patch))
    }

    /// Builds a model from checkpoint tensors with hustvl/Vim's keys, reading the sizes (width,
    /// depth, patch, classes, state size) from the tensors' shapes; `img_size` and `stride`
    /// come from `config`. Every key is checked for presence and shape; keys left over are an
    /// error (see [`TensorMap::finish`]).
    pub fn from_weights(
        config: &VimConfig,
        w: &mut TensorMap,
        device: &Device,
    ) -> crate::Result<Self> {
        let pe = w.shape_of("patch_embed.proj.weight")?;
        let head = w.shape_of("head.weight")?;
        if pe.len() != 4 || head.len() != 2 {
            return Err(crate::ModelError::InvalidConfig(format!(
                "vim: patch_embed.proj.weight {pe:?} must be (D, C, p, p) and head.weight \
                 {head:?} (classes, D)"
            )));
        }
        let mut depth = 0;
        while w.contains(&format!("layers.{depth}.norm.weight")) {
            depth += 1;
        }
        let a_log = w.shape_of("layers.0.mixer.A_log")?;
        let config = VimConfig {
            embed_dim: pe[0],
            channels: pe[1],
            patch_size: pe[2],
            depth,
            d_state: a_log.get(1).copied().unwrap_or(0),
            num_classes: head[0],
            ..config.clone()
        };
        config.validate()?;
        let (d, p, c) = (config.embed_dim, config.patch_size, config.channels);
        let mixer = config.mixer();
        let norm = RmsNormConfig::new(d).with_eps(config.norm_eps);
        let mut proj = Conv2dConfig::new([c, d], [p, p])
            .with_stride([config.stride, config.stride])
            .with_padding(PaddingConfig2d::Valid)
            .init(device);
        proj.weight = w.param("patch_embed.proj.weight", [d, c, p, p], device)?;
        proj.bias = Some(w.param("patch_embed.proj.bias", [d], device)?);
        let mut layers = Vec::with_capacity(depth);
        for i in 0..depth {
            layers.push(VimBlock {
                mixer: mixer.load_bidirectional(w, &format!("layers.{i}.mixer"), device)?,
                norm: norm.load(w, &format!("layers.{i}.norm"), device)?,
            });
        }
        Ok(Self {
            patch_embed: PatchEmbed { proj },
            cls_token: w.param("cls_token", [1, 1, d], device)?,
            pos_embed: w.param("pos_embed", [1, config.tokens(), d], device)?,
            layers,
            norm_f: norm.load(w, "norm_f", device)?,
            head: w.linear("head", d, config.num_classes, true, device)?,
            img_size: config.img_size,
            drop_path_rate: 0.0,
        })
    }
}
