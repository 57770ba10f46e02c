//! VMamba (Liu et al., "VMamba: Visual State Space Model", 2024): a four-stage hierarchy of
//! VSS blocks (LayerNorm → [`Ss2d`] → residual, then LayerNorm → MLP → residual) with patch
//! merging between stages and a pooled linear head.
//!
//! Two variants of MzeroMiko/VMamba's `VSSM`: the released VMamba-T/S/B (`forward_type =
//! "v05_noz"`, the two-conv patch embedding "v2", 3×3 stride-2 conv downsampling "v3", MLP ratio
//! 4, LayerNorm over channels) and the vanilla VMamba (`"v0"`, one-conv patch embedding "v1",
//! `PatchMerging2D` downsampling "v1", no MLP). Everything runs channel-last, (B, H, W, C): the
//! reference's channel-first `LayerNorm2d` and `Linear2d` are the same maps over the channel
//! axis.
//!
//! [`VMamba::from_weights`] reads the released checkpoints' keys (`patch_embed.{0,2,5,7}`,
//! `layers.{i}.blocks.{j}.{norm,op,norm2,mlp.fc1,mlp.fc2}`, `layers.{i}.downsample.{1,3}` or
//! `.{norm,reduction}`, `classifier.{norm,head}`; the older names `patch_embed.proj`,
//! `ln_1`, `self_attention`, `norm`, `head` are renamed as the reference does).

use crate::io::weights::TensorMap;
use crate::ssm::ss2d::{Ss2d, Ss2dConfig, Ss2dForward};
use crate::vision::drop_path;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

/// The patch embedding.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum PatchEmbedVersion {
    /// One `p × p` stride-`p` conv, then LayerNorm.
    V1,
    /// Two 3×3 stride-`p/2` convs (C/2 then C channels) with LayerNorm and GELU between, then
    /// LayerNorm.
    V2,
}

/// The downsampling between stages.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum DownsampleVersion {
    /// `PatchMerging2D`: the four 2×2 neighbours concatenated (4C), LayerNorm, Linear to 2C.
    V1,
    /// A 3×3 stride-2 conv, then LayerNorm.
    V3,
}

/// Configuration of a [`VMamba`] (MzeroMiko/VMamba's `VSSM` arguments).
#[derive(Config, Debug)]
pub struct VMambaConfig {
    /// Total downsampling of the patch embedding (output side = input side / `patch_size`).
    #[config(default = 4)]
    pub patch_size: usize,
    /// Input image channels.
    #[config(default = 3)]
    pub in_chans: usize,
    /// Classes of the head.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Width of the first stage; stage i has `dim · 2^i`.
    #[config(default = 96)]
    pub dim: usize,
    /// SSM state size N per channel.
    #[config(default = 1)]
    pub d_state: usize,
    /// Inner width of each SS2D mixer over the stage width (`d_inner = ssm_ratio · C`).
    #[config(default = 1.0)]
    pub ssm_ratio: f64,
    /// Side of the SS2D depthwise convolution (odd).
    #[config(default = 3)]
    pub ssm_conv: usize,
    /// Whether the SS2D depthwise convolution has a bias.
    #[config(default = false)]
    pub ssm_conv_bias: bool,
    /// The SS2D variant: v05_noz (released models) or v0 (vanilla, gated).
    #[config(default = "Ss2dForward::V05NoZ")]
    pub forward: Ss2dForward,
    /// MLP hidden width over C; 0 for no MLP.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// The patch embedding version (v2 for the released models, v1 for vanilla).
    #[config(default = "PatchEmbedVersion::V2")]
    pub patch_embed: PatchEmbedVersion,
    /// The downsampling between stages (v3 for the released models, v1 for vanilla).
    #[config(default = "DownsampleVersion::V3")]
    pub downsample: DownsampleVersion,
    /// Largest stochastic-depth rate (linear over all blocks from 0).
    #[config(default = 0.0)]
    pub drop_path_rate: f64,
    /// LayerNorm epsilon (every norm, the SS2D output norm included).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
}

impl VMambaConfig {
    /// VMamba-T (`vmamba_tiny_s1l8`): depths 2-2-8-2, C = 96, N = 1, ratio 1 (30.25M parameters).
    pub fn vmamba_tiny() -> Self {
        Self::new(vec![2, 2, 8, 2])
    }
    /// VMamba-S (`vmamba_small_s1l20`): depths 2-2-20-2, C = 96 (49.0M parameters).
    pub fn vmamba_small() -> Self {
        Self::new(vec![2, 2, 20, 2])
    }
    /// VMamba-B (`vmamba_base_s1l20`): depths 2-2-20-2, C = 128 (86.6M parameters).
    pub fn vmamba_base() -> Self {
        Self::new(vec![2, 2, 20, 2]).with_dim(128)
    }
    /// The vanilla VMamba-T (`vanilla_vmamba_tiny`, forward type v0).
    pub fn vanilla_tiny() -> Self {
        Self::new(vec![2, 2, 9, 2]).vanilla()
    }
    /// The vanilla VMamba-S.
    pub fn vanilla_small() -> Self {
        Self::new(vec![2, 2, 27, 2]).vanilla()
    }
    /// The vanilla VMamba-B.
    pub fn vanilla_base() -> Self {
        Self::new(vec![2, 2, 27, 2]).with_dim(128).vanilla()
    }

    /// The vanilla settings: v0 forward, N = 16, ratio 2, conv bias, v1 embedding and merging,
    /// no MLP.
    pub fn vanilla(self) -> Self {
        self.with_forward(Ss2dForward::V0)
            .with_d_state(16)
            .with_ssm_ratio(2.0)
            .with_ssm_conv_bias(true)
            .with_mlp_ratio(0.0)
            .with_patch_embed(PatchEmbedVersion::V1)
            .with_downsample(DownsampleVersion::V1)
    }

    /// A preset by name: `vmamba_tiny`, `vmamba_small`, `vmamba_base`, `vanilla_vmamba_tiny`,
    /// `vanilla_vmamba_small`, `vanilla_vmamba_base`.
    pub fn preset(name: &str) -> Option<Self> {
        Some(match name.replace('-', "_").as_str() {
            "vmamba_tiny" | "vmamba_tiny_s1l8" => Self::vmamba_tiny(),
            "vmamba_small" | "vmamba_small_s1l20" => Self::vmamba_small(),
            "vmamba_base" | "vmamba_base_s1l20" => Self::vmamba_base(),
            "vanilla_vmamba_tiny" => Self::vanilla_tiny(),
            "vanilla_vmamba_small" => Self::vanilla_small(),
            "vanilla_vmamba_base" => Self::vanilla_base(),
            _ => return None,
        })
    }

    /// Width of stage `i`.
    pub fn stage_dim(&self, i: usize) -> usize {
        self.dim << i
    }

    /// Checks the sizes.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::ModelError::InvalidConfig(format!("vmamba: {m}")));
        if self.depths.is_empty() || self.depths.contains(&0) {
            return bad(format!(
                "depths {:?} must be non-empty and positive",
                self.depths
            ));
        }
        if self.dim < 2 || self.d_state == 0 || self.in_chans == 0 || self.num_classes == 0 {
            return bad("dim >= 2, d_state, in_chans and num_classes >= 1 are required".into());
        }
        if self.patch_size == 0
            || (self.patch_embed == PatchEmbedVersion::V2 && self.patch_size < 2)
        {
            return bad(format!(
                "patch_size {} is too small for {:?}",
                self.patch_size, self.patch_embed
            ));
        }
        if self.ssm_ratio <= 0.0 || (self.ssm_ratio * self.dim as f64) < 1.0 {
            return bad(format!("ssm_ratio {} gives no inner width", self.ssm_ratio));
        }
        if self.ssm_conv.is_multiple_of(2) {
            return bad(format!("ssm_conv {} must be odd", self.ssm_conv));
        }
        if self.mlp_ratio < 0.0 || !(0.0..1.0).contains(&self.drop_path_rate) {
            return bad("mlp_ratio >= 0 and 0 <= drop_path_rate < 1 are required".into());
        }
        Ok(())
    }

    fn ss2d(&self, dim: usize) -> Ss2dConfig {
        Ss2dConfig::new(dim)
            .with_d_state(self.d_state)
            .with_ssm_ratio(self.ssm_ratio)
            .with_d_conv(self.ssm_conv)
            .with_conv_bias(self.ssm_conv_bias)
            .with_forward(self.forward)
            .with_norm_eps(self.norm_eps)
    }

    fn norm(&self, d: usize, device: &Device) -> LayerNorm {
        LayerNormConfig::new(d)
            .with_epsilon(self.norm_eps)
            .init(device)
    }

    /// A model with PyTorch's default initialisation for convs, truncated-normal-free Linear
    /// init (Burn's default), unit LayerNorms and [`Ss2dConfig::init`] for the mixers.
    ///
    /// # Panics
    /// On an invalid configuration (see [`VMambaConfig::validate`]).
    pub fn init(&self, device: &Device) -> VMamba {
        self.validate().unwrap_or_else(|e| panic!("{e}"));
        let c0 = self.dim;
        let p = self.patch_size;
        let patch_embed = match self.patch_embed {
            PatchEmbedVersion::V1 => PatchEmbed {
                conv1: Conv2dConfig::new([self.in_chans, c0], [p, p])
                    .with_stride([p, p])
                    .init(device),
                norm1: None,
                conv2: None,
                norm2: self.norm(c0, device),
            },
            PatchEmbedVersion::V2 => {
                let s = p / 2;
                let conv = |i, o| {
                    Conv2dConfig::new([i, o], [s + 1, s + 1])
                        .with_stride([s, s])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(device)
                };
                PatchEmbed {
                    conv1: conv(self.in_chans, c0 / 2),
                    norm1: Some(self.norm(c0 / 2, device)),
                    conv2: Some(conv(c0 / 2, c0)),
                    norm2: self.norm(c0, device),
                }
            }
        };
        let total: usize = self.depths.iter().sum();
        let mut index = 0;
        let stages = self.depths.len();
        let layers = (0..stages)
            .map(|i| {
                let d = self.stage_dim(i);
                let blocks = (0..self.depths[i])
                    .map(|_| {
                        let rate = self.drop_path_rate * index as f64 / (total.max(2) - 1) as f64;
                        index += 1;
                        let hidden = (d as f64 * self.mlp_ratio) as usize;
                        VssBlock {
                            norm: self.norm(d, device),
                            op: self.ss2d(d).init(device),
                            norm2: (hidden > 0).then(|| self.norm(d, device)),
                            mlp: (hidden > 0).then(|| Mlp {
                                fc1: LinearConfig::new(d, hidden).init(device),
                                fc2: LinearConfig::new(hidden, d).init(device),
                            }),
                            drop_path: rate,
                        }
                    })
                    .collect();
                let downsample = (i + 1 < stages).then(|| match self.downsample {
                    DownsampleVersion::V3 => Downsample {
                        conv: Some(
                            Conv2dConfig::new([d, 2 * d], [3, 3])
                                .with_stride([2, 2])
                                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                                .init(device),
                        ),
                        norm: self.norm(2 * d, device),
                        reduction: None,
                    },
                    DownsampleVersion::V1 => Downsample {
                        conv: None,
                        norm: self.norm(4 * d, device),
                        reduction: Some(
                            LinearConfig::new(4 * d, 2 * d)
                                .with_bias(false)
                                .init(device),
                        ),
                    },
                });
                VssStage { blocks, downsample }
            })
            .collect();
        let last = self.stage_dim(stages - 1);
        VMamba {
            patch_embed,
            layers,
            classifier: Classifier {
                norm: self.norm(last, device),
                head: LinearConfig::new(last, self.num_classes).init(device),
            },
        }
    }
}

/// The patch embedding (v1: `conv1`, `norm2`; v2: all four).
#[derive(Module, Debug)]
pub struct PatchEmbed {
    /// The first conv (`patch_embed.0`): `p × p` stride `p` to C (v1), or 3×3 to C/2 (v2).
    pub conv1: Conv2d,
    /// LayerNorm over C/2 between the convs (`patch_embed.2`, v2 only).
    pub norm1: Option<LayerNorm>,
    /// The second conv, C/2 to C (`patch_embed.5`, v2 only).
    pub conv2: Option<Conv2d>,
    /// The output LayerNorm over C (`patch_embed.2` in v1, `patch_embed.7` in v2).
    pub norm2: LayerNorm,
}

/// Channel-last (B, H, W, C) → channel-first (B, C, H, W), and back.
fn to_nchw(x: Tensor<4>) -> Tensor<4> {
    x.permute([0, 3, 1, 2])
}
fn to_nhwc(x: Tensor<4>) -> Tensor<4> {
    x.permute([0, 2, 3, 1])
}

impl PatchEmbed {
    /// (B, C_in, H, W) → (B, H/p, W/p, C).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<4> {
        let mut x = self.conv1.forward(images);
        if let (Some(norm1), Some(conv2)) = (&self.norm1, &self.conv2) {
            x = gelu(to_nchw(norm1.forward(to_nhwc(x))));
            x = conv2.forward(x);
        }
        self.norm2.forward(to_nhwc(x))
    }
}

/// The MLP of a VSS block: fc1, GELU, fc2.
#[derive(Module, Debug)]
pub struct Mlp {
    /// C to hidden (`mlp.fc1`), hidden = `mlp_ratio · C`.
    pub fc1: Linear,
    /// Hidden back to C (`mlp.fc2`).
    pub fc2: Linear,
}

/// A VSS block: `x + SS2D(LN(x))`, then `x + MLP(LN(x))` when it has an MLP.
#[derive(Module, Debug)]
pub struct VssBlock {
    /// LayerNorm before the SS2D mixer (`norm`).
    pub norm: LayerNorm,
    /// The SS2D four-route selective scan (`op`).
    pub op: Ss2d,
    /// LayerNorm before the MLP (`norm2`); `None` without an MLP.
    pub norm2: Option<LayerNorm>,
    /// The MLP (`mlp`); `None` when `mlp_ratio` is 0.
    pub mlp: Option<Mlp>,
    /// This block's stochastic-depth rate.
    pub drop_path: f64,
}

impl VssBlock {
    /// (B, H, W, C) → (B, H, W, C).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = x.clone() + drop_path(self.op.forward(self.norm.forward(x)), self.drop_path);
        match (&self.norm2, &self.mlp) {
            (Some(norm2), Some(mlp)) => {
                let h = mlp
                    .fc2
                    .forward(gelu(mlp.fc1.forward(norm2.forward(x.clone()))));
                x + drop_path(h, self.drop_path)
            }
            _ => x,
        }
    }
}

/// The downsampling after a stage (v3: `conv` then `norm`; v1: patch merging, `norm`,
/// `reduction`).
#[derive(Module, Debug)]
pub struct Downsample {
    /// The 3×3 stride-2 conv C to 2C (`downsample.1`, v3 only).
    pub conv: Option<Conv2d>,
    /// LayerNorm over 2C (`downsample.3`, v3) or over the merged 4C (`downsample.norm`, v1).
    pub norm: LayerNorm,
    /// Linear 4C to 2C without bias (`downsample.reduction`, v1 only).
    pub reduction: Option<Linear>,
}

impl Downsample {
    /// (B, H, W, C) → (B, ⌈H/2⌉, ⌈W/2⌉, 2C).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if let Some(conv) = &self.conv {
            return self.norm.forward(to_nhwc(conv.forward(to_nchw(x))));
        }
        let [b, h, w, c] = x.dims();
        // Pad odd sides with zeros, then take the 2×2 neighbours in the reference's order:
        // (0, 0), (1, 0), (0, 1), (1, 1) as (row, column) offsets.
        let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
        let device = x.device();
        let mut x = x;
        if h % 2 == 1 {
            x = Tensor::cat(vec![x, Tensor::zeros([b, 1, w, c], &device)], 1);
        }
        if w % 2 == 1 {
            x = Tensor::cat(vec![x, Tensor::zeros([b, 2 * h2, 1, c], &device)], 2);
        }
        let grid = x.reshape([b, h2, 2, w2, 2, c]);
        let pick = |dy: usize, dx: usize| {
            grid.clone()
                .narrow(2, dy, 1)
                .narrow(4, dx, 1)
                .reshape([b, h2, w2, c])
        };
        let merged = Tensor::cat(vec![pick(0, 0), pick(1, 0), pick(0, 1), pick(1, 1)], 3);
        let y = self.norm.forward(merged);
        match &self.reduction {
            Some(r) => r.forward(y),
            None => y,
        }
    }
}

/// One stage: its blocks, then the downsampling (all stages but the last).
#[derive(Module, Debug)]
pub struct VssStage {
    /// The stage's VSS blocks (`layers.{i}.blocks.{j}`).
    pub blocks: Vec<VssBlock>,
    /// The downsampling to the next stage (`layers.{i}.downsample`); `None` on the last.
    pub downsample: Option<Downsample>,
}

/// The classifier: LayerNorm, global average pool, Linear.
#[derive(Module, Debug)]
pub struct Classifier {
    /// LayerNorm over the last stage's channels (`classifier.norm`).
    pub norm: LayerNorm,
    /// The classification head, C_last to classes (`classifier.head`).
    pub head: Linear,
}

/// The VMamba image classifier.
#[derive(Module, Debug)]
pub struct VMamba {
    /// The patch embedding (`patch_embed.*`).
    pub patch_embed: PatchEmbed,
    /// The stages (`layers.{i}`), widths `dim · 2^i`.
    pub layers: Vec<VssStage>,
    /// The pooled head (`classifier.*`).
    pub classifier: Classifier,
}

impl VMamba {
    /// The pooled features before the head (B, C_last).
    pub fn forward_features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self.patch_embed.forward(images);
        for stage in &self.layers {
            for block in &stage.blocks {
                x = block.forward(x);
            }
            if let Some(down) = &stage.downsample {
                x = down.forward(x);
            }
        }
        let x = self.classifier.norm.forward(x);
        let [b, h, w, c] = x.dims();
        x.reshape([b, h * w, c]).mean_dim(1).reshape([b, c])
    }

    /// Logits (B, classes) of images (B, C, H, W).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.classifier.head.forward(self.forward_features(images))
    }

    /// The architecture of a checkpoint with MzeroMiko/VMamba's keys, read from its tensors:
    /// stages and blocks, width, state size, SSM ratio, conv side and bias, forward type (a
    /// gated in_proj is v0), MLP ratio, patch embedding and downsampling versions, classes.
    pub fn config_of(w: &mut TensorMap) -> crate::Result<VMambaConfig> {
        rename_legacy_keys(w);
        let shape = |k: &str| w.shape_of(k);
        let bad = |m: String| crate::ModelError::InvalidConfig(format!("vmamba checkpoint: {m}"));
        let mut depths = Vec::new();
        while w.contains(&format!("layers.{}.blocks.0.norm.weight", depths.len())) {
            let i = depths.len();
            let mut j = 0;
            while w.contains(&format!("layers.{i}.blocks.{j}.norm.weight")) {
                j += 1;
            }
            depths.push(j);
        }
        if depths.is_empty() {
            return Err(bad("no layers.0.blocks.0.norm.weight".into()));
        }
        let dim = shape("layers.0.blocks.0.norm.weight")?[0];
        let b = "layers.0.blocks.0.op";
        let a = shape(&format!("{b}.A_logs"))?;
        let conv = shape(&format!("{b}.conv2d.weight"))?;
        let in_proj = shape(&format!("{b}.in_proj.weight"))?;
        let head = shape("classifier.head.weight")?;
        let stem = shape("patch_embed.0.weight")?;
        if a.len() != 2 || conv.len() != 4 || head.len() != 2 || stem.len() != 4 {
            return Err(bad(
                "unexpected ranks of A_logs, conv2d, head or patch_embed.0".into(),
            ));
        }
        let d_inner = a[0] / crate::ssm::ss2d::ROUTES;
        let forward = if in_proj[0] == 2 * d_inner {
            Ss2dForward::V0
        } else {
            Ss2dForward::V05NoZ
        };
        let mlp_ratio = match w.shape_of("layers.0.blocks.0.mlp.fc1.weight") {
            Ok(fc1) => fc1[0] as f64 / dim as f64,
            Err(_) => 0.0,
        };
        let v2 = w.contains("patch_embed.5.weight");
        let patch_size = if v2 { (stem[2] - 1) * 2 } else { stem[2] };
        let downsample = if w.contains("layers.0.downsample.reduction.weight") {
            DownsampleVersion::V1
        } else {
            DownsampleVersion::V3
        };
        let config = VMambaConfig::new(depths)
            .with_dim(dim)
            .with_in_chans(stem[1])
            .with_num_classes(head[0])
            .with_patch_size(patch_size)
            .with_d_state(a[1])
            .with_ssm_ratio(d_inner as f64 / dim as f64)
            .with_ssm_conv(conv[2])
            .with_ssm_conv_bias(w.contains(&format!("{b}.conv2d.bias")))
            .with_forward(forward)
            .with_mlp_ratio(mlp_ratio)
            .with_patch_embed(if v2 {
                PatchEmbedVersion::V2
            } else {
                PatchEmbedVersion::V1
            })
            .with_downsample(downsample);
        config.validate()?;
        Ok(config)
    }

    /// Builds a model from checkpoint tensors with MzeroMiko/VMamba's keys, for `config`'s
    /// architecture (the sizes are checked key by key). Older key names are renamed first, as
    /// the reference's loader does.
    pub fn from_weights(
        config: &VMambaConfig,
        w: &mut TensorMap,
        device: &Device,
    ) -> crate::Result<Self> {
        config.validate()?;
        rename_legacy_keys(w);
        let mut model = config.init(device);
        let eps = config.norm_eps;
        let norm = |w: &mut TensorMap, key: &str, d: usize| w.layer_norm(key, d, eps, device);
        let conv = |w: &mut TensorMap, key: &str, c: Conv2d| w.conv2d(key, c, device);
        let linear = |w: &mut TensorMap, key: &str, l: &Linear| w.linear_like(key, l, device);
        let pe = &mut model.patch_embed;
        let c0 = config.dim;
        pe.conv1 = conv(w, "patch_embed.0", pe.conv1.clone())?;
        if config.patch_embed == PatchEmbedVersion::V2 {
            pe.norm1 = Some(norm(w, "patch_embed.2", c0 / 2)?);
            let c2 = pe.conv2.clone().expect("v2 has conv2");
            pe.conv2 = Some(conv(w, "patch_embed.5", c2)?);
            pe.norm2 = norm(w, "patch_embed.7", c0)?;
        } else {
            pe.norm2 = norm(w, "patch_embed.2", c0)?;
        }
        for (i, stage) in model.layers.iter_mut().enumerate() {
            let d = config.stage_dim(i);
            for (j, block) in stage.blocks.iter_mut().enumerate() {
                let p = format!("layers.{i}.blocks.{j}");
                block.norm = norm(w, &format!("{p}.norm"), d)?;
                block.op = config.ss2d(d).load(w, &format!("{p}.op"), device)?;
                if let Some(mlp) = &mut block.mlp {
                    block.norm2 = Some(norm(w, &format!("{p}.norm2"), d)?);
                    mlp.fc1 = linear(w, &format!("{p}.mlp.fc1"), &mlp.fc1)?;
                    mlp.fc2 = linear(w, &format!("{p}.mlp.fc2"), &mlp.fc2)?;
                }
            }
            if let Some(down) = &mut stage.downsample {
                let p = format!("layers.{i}.downsample");
                if let Some(c) = down.conv.clone() {
                    down.conv = Some(conv(w, &format!("{p}.1"), c)?);
                    down.norm = norm(w, &format!("{p}.3"), 2 * d)?;
                } else {
                    down.norm = norm(w, &format!("{p}.norm"), 4 * d)?;
                    let r = down.reduction.clone().expect("v1 has a reduction");
                    down.reduction = Some(linear(w, &format!("{p}.reduction"), &r)?);
                }
            }
        }
        let last = config.stage_dim(config.depths.len() - 1);
        model.classifier.norm = norm(w, "classifier.norm", last)?;
        model.classifier.head = linear(w, "classifier.head", &model.classifier.head)?;
        Ok(model)
    }
}

/// The reference loader's renames of older checkpoint keys.
fn rename_legacy_keys(w: &mut TensorMap) {
    let keys: Vec<String> = w.keys().cloned().collect();
    for k in keys {
        let mut n = k.replace("patch_embed.proj.", "patch_embed.0.");
        n = n.replace("patch_embed.norm.", "patch_embed.2.");
        n = n.replace(".ln_1.", ".norm.");
        n = n.replace(".self_attention.", ".op.");
        if n.starts_with("norm.") {
            n = format!("classifier.{n}");
        }
        if n.starts_with("head.") {
            n = format!("classifier.{n}");
        }
        if n != k {
            w.rename(&k, n);
        }
    }
}
