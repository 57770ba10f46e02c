//! The language models' config ([`MambaLmConfig`]), its architecture-specific settings and its
//! checks. Reading and writing it as `config.json` (transformers' and state-spaces' layouts):
//! [`super::config_json`].

use crate::error::ModelError;
use crate::ssm::mamba::MambaMixerConfig;
use crate::ssm::mamba2::Mamba2MixerConfig;
use crate::ssm::mamba3::Mamba3MixerConfig;
use burn::config::Config;

/// Configuration of a [`MambaLm`](super::MambaLm) (the fields of both reference `MambaConfig`s).
#[derive(Config, Debug)]
pub struct MambaLmConfig {
    /// Model width (HF `hidden_size`).
    pub d_model: usize,
    /// Number of blocks (HF `num_hidden_layers`).
    pub n_layer: usize,
    /// Vocabulary size as configured; the embedding is padded to a multiple of
    /// `pad_vocab_size_multiple`, and logits are returned for the first `vocab_size` entries.
    pub vocab_size: usize,
    /// SSM state size N (HF `state_size`; a Mamba2 model read from an HF config without one
    /// gets 128).
    #[config(default = 16)]
    pub d_state: usize,
    /// Width K of each mixer's causal depthwise convolution (HF `conv_kernel`).
    #[config(default = 4)]
    pub d_conv: usize,
    /// The mixers' inner width is `expand * d_model`.
    #[config(default = 2)]
    pub expand: usize,
    /// `None` is "auto": `ceil(d_model / 16)`.
    pub dt_rank: Option<usize>,
    /// Lower bound of the initial step sizes, drawn log-uniform in `[dt_min, dt_max]` (HF
    /// `time_step_min`).
    #[config(default = 0.001)]
    pub dt_min: f64,
    /// Upper bound of the initial step sizes (HF `time_step_max`).
    #[config(default = 0.1)]
    pub dt_max: f64,
    /// Initial step sizes below this are raised to it (HF `time_step_floor`).
    #[config(default = 1e-4)]
    pub dt_init_floor: f64,
    /// A bias on the depthwise convolution (HF `use_conv_bias`).
    #[config(default = true)]
    pub conv_bias: bool,
    /// Biases on in_proj and out_proj (HF `use_bias`).
    #[config(default = false)]
    pub bias: bool,
    /// The embedding's rows are `vocab_size` rounded up to a multiple of this.
    #[config(default = 8)]
    pub pad_vocab_size_multiple: usize,
    /// The output head shares the embedding's weights (HF `tie_word_embeddings`).
    #[config(default = true)]
    pub tie_embeddings: bool,
    /// Epsilon of the RMSNorms (HF `layer_norm_epsilon`).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Token that ends generation, if the model has one.
    pub eos_token_id: Option<usize>,
    /// Mamba2's settings: `Some` for a Mamba2 model (then `dt_rank`, `bias` of x_proj... do not
    /// apply and `d_state` is Mamba2's N).
    pub mamba2: Option<Mamba2Settings>,
    /// Mamba-3's settings: `Some` for a Mamba-3 model (state-spaces' `ssm_cfg.layer =
    /// "Mamba3"`; `d_state` is then Mamba-3's N, and `d_conv`, `dt_rank` do not apply).
    pub mamba3: Option<Mamba3Settings>,
}

/// The settings that only Mamba-3 models have (mamba_ssm's `Mamba3` arguments).
#[derive(Config, Debug)]
pub struct Mamba3Settings {
    /// Channels per head P (`headdim`).
    #[config(default = 64)]
    pub head_dim: usize,
    /// Groups G of heads sharing B and C (`ngroups`).
    #[config(default = 1)]
    pub n_groups: usize,
    /// The rotated share of the state (0.5 or 1).
    #[config(default = 0.5)]
    pub rope_fraction: f64,
    /// `−A` is at least this (`A_floor`).
    #[config(default = 1e-4)]
    pub a_floor: f64,
    /// The per-head gated RMSNorm before out_proj (`is_outproj_norm`).
    #[config(default = false)]
    pub outproj_norm: bool,
    /// The MIMO variant (`is_mimo`): R input and output channels per head into one state.
    #[config(default = false)]
    pub mimo: bool,
    /// MIMO's rank R (`mimo_rank`; only with `mimo`).
    #[config(default = 4)]
    pub mimo_rank: usize,
    /// SSD chunk length.
    #[config(default = 64)]
    pub chunk_size: usize,
}

/// The settings that only Mamba2 models have.
#[derive(Config, Debug)]
pub struct Mamba2Settings {
    /// Channels per head P.
    #[config(default = 64)]
    pub head_dim: usize,
    /// Groups G of heads sharing B and C.
    #[config(default = 1)]
    pub n_groups: usize,
    /// SSD chunk length.
    #[config(default = 256)]
    pub chunk_size: usize,
    /// The steps are clamped to `[dt_limit_min, dt_limit_max]` (`None`: no upper limit).
    #[config(default = 0.0)]
    pub dt_limit_min: f64,
    /// Upper clamp of the steps (see `dt_limit_min`); `None`: none.
    pub dt_limit_max: Option<f64>,
}

impl MambaLmConfig {
    /// Rejects impossible settings with a message naming the field.
    pub fn validate(&self) -> crate::Result<()> {
        crate::error::require_nonzero(&[
            ("d_model", self.d_model),
            ("n_layer", self.n_layer),
            ("vocab_size", self.vocab_size),
            ("d_state", self.d_state),
            ("d_conv", self.d_conv),
            ("expand", self.expand),
            ("pad_vocab_size_multiple", self.pad_vocab_size_multiple),
        ])?;
        if self.dt_rank == Some(0) {
            return Err(ModelError::InvalidConfig(
                "dt_rank must be at least 1, found 0".into(),
            ));
        }
        if self.norm_eps.is_nan() || self.norm_eps <= 0.0 {
            return Err(ModelError::InvalidConfig(format!(
                "norm epsilon must be positive, found {}",
                self.norm_eps
            )));
        }
        if self.mamba2.is_some() {
            self.mixer2().validate()?;
        }
        if self.mamba3.is_some() {
            if self.mamba2.is_some() {
                return Err(ModelError::InvalidConfig(
                    "a config cannot be both Mamba2 and Mamba-3".into(),
                ));
            }
            self.mixer3().validate()?;
        }
        if self.dt_min.is_nan() || self.dt_min <= 0.0 || self.dt_min > self.dt_max {
            return Err(ModelError::InvalidConfig(format!(
                "need 0 < dt_min <= dt_max, found {} and {}",
                self.dt_min, self.dt_max
            )));
        }
        Ok(())
    }
    /// The number of parameters of the model this config builds (the padded embedding, an
    /// untied head, each block's norm and mixer, the final norm), from the config alone: what
    /// sizes a run before anything is allocated. Saturates at `u64::MAX`.
    pub fn param_count(&self) -> u64 {
        let d = self.d_model as u64;
        let vocab = (self.padded_vocab() as u64).saturating_mul(d);
        let head = if self.tie_embeddings { 0 } else { vocab };
        let mixer = if self.mamba3.is_some() {
            self.mixer3().param_count()
        } else if self.mamba2.is_some() {
            self.mixer2().param_count()
        } else {
            self.mixer().param_count()
        };
        let layers = (self.n_layer as u64).saturating_mul(mixer.saturating_add(d));
        vocab
            .saturating_add(head)
            .saturating_add(layers)
            .saturating_add(d)
    }

    /// `expand * d_model`.
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }
    /// The dt rank with "auto" resolved.
    pub fn dt_rank(&self) -> usize {
        self.dt_rank.unwrap_or(self.d_model.div_ceil(16))
    }
    /// The embedding's row count: `vocab_size` rounded up to the padding multiple.
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size.div_ceil(self.pad_vocab_size_multiple) * self.pad_vocab_size_multiple
    }

    /// The Mamba2 mixer's config (meaningful when `mamba2` is set).
    pub fn mixer2(&self) -> Mamba2MixerConfig {
        let m2 = self.mamba2.clone().unwrap_or_else(Mamba2Settings::new);
        Mamba2MixerConfig::new(self.d_model)
            .with_d_state(self.d_state)
            .with_d_conv(self.d_conv)
            .with_expand(self.expand)
            .with_head_dim(m2.head_dim)
            .with_n_groups(m2.n_groups)
            .with_chunk_size(m2.chunk_size)
            .with_dt_min(self.dt_min)
            .with_dt_max(self.dt_max)
            .with_dt_init_floor(self.dt_init_floor)
            .with_dt_limit_min(m2.dt_limit_min)
            .with_dt_limit_max(m2.dt_limit_max)
            .with_conv_bias(self.conv_bias)
            .with_bias(self.bias)
            .with_norm_eps(self.norm_eps)
            .with_n_layer(self.n_layer)
    }

    /// The Mamba-3 mixer's config (meaningful when `mamba3` is set).
    pub fn mixer3(&self) -> Mamba3MixerConfig {
        let m3 = self.mamba3.clone().unwrap_or_else(Mamba3Settings::new);
        Mamba3MixerConfig::new(self.d_model)
            .with_d_state(self.d_state)
            .with_expand(self.expand)
            .with_head_dim(m3.head_dim)
            .with_n_groups(m3.n_groups)
            .with_rope_fraction(m3.rope_fraction)
            .with_a_floor(m3.a_floor)
            .with_outproj_norm(m3.outproj_norm)
            .with_mimo(m3.mimo)
            .with_mimo_rank(m3.mimo_rank)
            .with_chunk_size(m3.chunk_size)
            .with_dt_min(self.dt_min)
            .with_dt_max(self.dt_max)
            .with_dt_init_floor(self.dt_init_floor)
            .with_n_layer(self.n_layer)
    }

    /// The Mamba (v1) mixer's config.
    pub fn mixer(&self) -> MambaMixerConfig {
        MambaMixerConfig::new(self.d_model)
            .with_d_state(self.d_state)
            .with_d_conv(self.d_conv)
            .with_expand(self.expand)
            .with_dt_rank(Some(self.dt_rank()))
            .with_dt_min(self.dt_min)
            .with_dt_max(self.dt_max)
            .with_dt_init_floor(self.dt_init_floor)
            .with_conv_bias(self.conv_bias)
            .with_bias(self.bias)
            .with_n_layer(self.n_layer)
    }
}
