//! The language models' config ([`MambaLmConfig`]) and reading it from a `config.json`: Hugging Face's `MambaConfig` layout
//! (`hidden_size`, `num_hidden_layers`, `state_size`, ...) or state-spaces' layout
//! (`d_model`, `n_layer`, `ssm_cfg`, ...), recognised from the file.

use crate::error::ModelError;
use crate::ssm::mamba::MambaMixerConfig;
use crate::ssm::mamba2::Mamba2MixerConfig;
use crate::ssm::mamba3::Mamba3MixerConfig;
use burn::config::Config;
use serde_json::{Map, Value};
use std::path::Path;

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

/// Where a config came from: it decides the weight key names and vocabulary padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFlavor {
    /// transformers' `MambaConfig` (`backbone.embeddings.*`, vocabulary not padded).
    HuggingFace,
    /// state-spaces/mamba's `MambaConfig` (`backbone.embedding.*`, vocabulary padded).
    StateSpaces,
}

/// Reads and validates a Mamba LM config from a file.
pub fn read_mamba_config(path: &Path) -> crate::Result<(MambaLmConfig, ConfigFlavor)> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    parse_mamba_config(&text).map_err(|e| match e {
        ModelError::InvalidConfig(message) => ModelError::Config {
            path: path.into(),
            message,
        },
        ModelError::Json { message, .. } => ModelError::Json {
            path: path.into(),
            message,
        },
        other => other,
    })
}

fn bad(msg: impl Into<String>) -> ModelError {
    ModelError::InvalidConfig(msg.into())
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn usize_opt(&self, key: &str) -> crate::Result<Option<usize>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| bad(format!("'{key}' must be a non-negative integer, found {v}"))),
        }
    }
    fn usize(&self, key: &str) -> crate::Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| bad(format!("missing required field '{key}'")))
    }
    fn f64_opt(&self, key: &str) -> crate::Result<Option<f64>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(format!("'{key}' must be a number, found {v}"))),
        }
    }
    fn bool_opt(&self, key: &str) -> crate::Result<Option<bool>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| bad(format!("'{key}' must be true or false, found {v}"))),
        }
    }
    /// transformers' `time_step_limit`: `[min, max]`, where a bound may be written
    /// `{"__float__": "Infinity"}`.
    fn limits(&self, key: &str) -> crate::Result<Option<(f64, Option<f64>)>> {
        let Some(v) = self.0.get(key) else {
            return Ok(None);
        };
        let err = || bad(format!("'{key}' must be [min, max], found {v}"));
        let items = v.as_array().filter(|a| a.len() == 2).ok_or_else(err)?;
        let num = |x: &Value| -> crate::Result<f64> {
            if let Some(f) = x.as_f64() {
                return Ok(f);
            }
            match x.get("__float__").and_then(Value::as_str) {
                Some("Infinity" | "inf") => Ok(f64::INFINITY),
                Some("-Infinity" | "-inf") => Ok(f64::NEG_INFINITY),
                _ => Err(err()),
            }
        };
        let (lo, hi) = (num(&items[0])?, num(&items[1])?);
        Ok(Some((lo, hi.is_finite().then_some(hi))))
    }
    /// `dt_rank` / `time_step_rank`: an integer or "auto".
    fn rank(&self, key: &str) -> crate::Result<Option<usize>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s == "auto" => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| bad(format!("'{key}' must be an integer or \"auto\", found {v}"))),
        }
    }
}

/// Parses a Mamba LM config from JSON text.
pub fn parse_mamba_config(text: &str) -> crate::Result<(MambaLmConfig, ConfigFlavor)> {
    let value: Value = serde_json::from_str(text).map_err(|e| ModelError::Json {
        path: "<config>".into(),
        message: e.to_string(),
    })?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("the config must be a JSON object"))?;
    let f = Fields(obj);
    let (config, flavor) = if obj.contains_key("hidden_size") || obj.contains_key("state_size") {
        let model_type = obj.get("model_type").and_then(Value::as_str);
        if let Some(t) = model_type
            && t != "mamba"
            && t != "mamba2"
        {
            return Err(bad(format!(
                "model_type '{t}' is not supported here (expected 'mamba' or 'mamba2')"
            )));
        }
        let mamba2 = model_type == Some("mamba2") || obj.contains_key("num_heads");
        let d_model = f.usize("hidden_size")?;
        let mut c = MambaLmConfig::new(
            d_model,
            f.usize("num_hidden_layers")?,
            f.usize("vocab_size")?,
        )
        .with_pad_vocab_size_multiple(1);
        if let Some(x) = f.usize_opt("state_size")? {
            c.d_state = x;
        }
        if let Some(x) = f.usize_opt("conv_kernel")? {
            c.d_conv = x;
        }
        if let Some(x) = f.usize_opt("expand")? {
            c.expand = x;
        }
        if let Some(inter) = f.usize_opt("intermediate_size")?
            && inter != c.expand * d_model
        {
            return Err(bad(format!(
                "intermediate_size {inter} differs from expand * hidden_size = {}",
                c.expand * d_model
            )));
        }
        c.dt_rank = f.rank("time_step_rank")?;
        if let Some(x) = f.bool_opt("use_conv_bias")? {
            c.conv_bias = x;
        }
        if let Some(x) = f.bool_opt("use_bias")? {
            c.bias = x;
        }
        if let Some(x) = f.bool_opt("tie_word_embeddings")? {
            c.tie_embeddings = x;
        }
        if let Some(x) = f.f64_opt("layer_norm_epsilon")? {
            c.norm_eps = x;
        }
        if let Some(x) = f.f64_opt("time_step_min")? {
            c.dt_min = x;
        }
        if let Some(x) = f.f64_opt("time_step_max")? {
            c.dt_max = x;
        }
        if let Some(x) = f.f64_opt("time_step_floor")? {
            c.dt_init_floor = x;
        }
        c.eos_token_id = f.usize_opt("eos_token_id")?;
        if mamba2 {
            let mut m2 = Mamba2Settings::new();
            if let Some(x) = f.usize_opt("head_dim")? {
                m2.head_dim = x;
            }
            if let Some(x) = f.usize_opt("n_groups")? {
                m2.n_groups = x;
            }
            if let Some(x) = f.usize_opt("chunk_size")? {
                m2.chunk_size = x;
            }
            if let Some((lo, hi)) = f.limits("time_step_limit")? {
                m2.dt_limit_min = lo;
                m2.dt_limit_max = hi;
            }
            if f.usize_opt("state_size")?.is_none() {
                c.d_state = 128;
            }
            if let Some(h) = f.usize_opt("num_heads")?
                && m2.head_dim > 0
                && h * m2.head_dim != c.d_inner()
            {
                return Err(bad(format!(
                    "num_heads {h} x head_dim {} differs from expand * hidden_size = {}",
                    m2.head_dim,
                    c.d_inner()
                )));
            }
            c.mamba2 = Some(m2);
        }
        (c, ConfigFlavor::HuggingFace)
    } else if obj.contains_key("d_model") {
        let mut c = MambaLmConfig::new(
            f.usize("d_model")?,
            f.usize("n_layer")?,
            f.usize("vocab_size")?,
        );
        if let Some(x) = f.usize_opt("pad_vocab_size_multiple")? {
            c.pad_vocab_size_multiple = x;
        }
        if let Some(x) = f.bool_opt("tie_embeddings")? {
            c.tie_embeddings = x;
        }
        if let Some(ssm) = obj.get("ssm_cfg") {
            let ssm = ssm
                .as_object()
                .ok_or_else(|| bad("'ssm_cfg' must be an object"))?;
            let s = Fields(ssm);
            match ssm.get("layer").and_then(Value::as_str) {
                None | Some("Mamba1") => {}
                Some("Mamba2") => {
                    let mut m2 = Mamba2Settings::new();
                    if let Some(x) = s.usize_opt("headdim")? {
                        m2.head_dim = x;
                    }
                    if let Some(x) = s.usize_opt("ngroups")? {
                        m2.n_groups = x;
                    }
                    if let Some(x) = s.usize_opt("chunk_size")? {
                        m2.chunk_size = x;
                    }
                    if let Some((lo, hi)) = s.limits("dt_limit")? {
                        m2.dt_limit_min = lo;
                        m2.dt_limit_max = hi;
                    }
                    for (key, default) in [
                        ("rmsnorm", true),
                        ("norm_before_gate", false),
                        ("D_has_hdim", false),
                    ] {
                        if let Some(v) = s.bool_opt(key)?
                            && v != default
                        {
                            return Err(bad(format!(
                                "ssm_cfg.{key} = {v} is not supported (only {default})"
                            )));
                        }
                    }
                    if s.usize_opt("d_ssm")?.is_some() {
                        return Err(bad("ssm_cfg.d_ssm (a partial SSM) is not supported"));
                    }
                    // Mamba2's default state size.
                    c.d_state = 128;
                    c.mamba2 = Some(m2);
                }
                Some("Mamba3") => {
                    let mut m3 = Mamba3Settings::new();
                    if let Some(x) = s.usize_opt("headdim")? {
                        m3.head_dim = x;
                    }
                    if let Some(x) = s.usize_opt("ngroups")? {
                        m3.n_groups = x;
                    }
                    if let Some(x) = s.f64_opt("rope_fraction")? {
                        m3.rope_fraction = x;
                    }
                    if let Some(x) = s.f64_opt("A_floor")? {
                        m3.a_floor = x;
                    }
                    if let Some(x) = s.bool_opt("is_outproj_norm")? {
                        m3.outproj_norm = x;
                    }
                    if let Some(x) = s.bool_opt("is_mimo")? {
                        m3.mimo = x;
                    }
                    if let Some(x) = s.usize_opt("mimo_rank")? {
                        m3.mimo_rank = x;
                    }
                    if let Some(x) = s.usize_opt("chunk_size")? {
                        m3.chunk_size = x;
                    }
                    for (key, field) in [
                        ("dt_min", &mut c.dt_min),
                        ("dt_max", &mut c.dt_max),
                        ("dt_init_floor", &mut c.dt_init_floor),
                    ] {
                        if let Some(x) = s.f64_opt(key)? {
                            *field = x;
                        }
                    }
                    // Mamba-3's default state size.
                    c.d_state = 128;
                    c.mamba3 = Some(m3);
                }
                Some(layer) => {
                    return Err(bad(format!(
                        "ssm_cfg.layer '{layer}' is not supported (expected Mamba1, Mamba2 or \
                         Mamba3)"
                    )));
                }
            }
            if let Some(x) = s.usize_opt("d_state")? {
                c.d_state = x;
            }
            if let Some(x) = s.usize_opt("d_conv")? {
                c.d_conv = x;
            }
            if let Some(x) = s.usize_opt("expand")? {
                c.expand = x;
            }
            c.dt_rank = s.rank("dt_rank")?;
            if let Some(x) = s.bool_opt("conv_bias")? {
                c.conv_bias = x;
            }
            if let Some(x) = s.bool_opt("bias")? {
                c.bias = x;
            }
        }
        if let Some(x) = f.usize_opt("d_intermediate")?
            && x > 0
        {
            return Err(bad(format!(
                "d_intermediate = {x} (an MLP after each mixer) is not supported"
            )));
        }
        if let Some(layers) = obj.get("attn_layer_idx").and_then(Value::as_array)
            && !layers.is_empty()
        {
            return Err(bad(
                "attn_layer_idx: hybrid models with attention layers are not supported",
            ));
        }
        if let Some(false) = f.bool_opt("rms_norm")? {
            return Err(bad("rms_norm = false (LayerNorm blocks) is not supported"));
        }
        if let Some(x) = f.f64_opt("norm_epsilon")? {
            c.norm_eps = x;
        }
        (c, ConfigFlavor::StateSpaces)
    } else {
        return Err(bad(
            "not a Mamba config: expected 'hidden_size' (Hugging Face) or 'd_model' (state-spaces)",
        ));
    };
    config.validate()?;
    Ok((config, flavor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_layouts() {
        let (hf, flavor) = parse_mamba_config(
            r#"{"model_type":"mamba","hidden_size":768,"num_hidden_layers":24,"vocab_size":50280,
                "state_size":16,"conv_kernel":4,"expand":2,"time_step_rank":"auto","tie_word_embeddings":true}"#,
        )
        .unwrap();
        assert_eq!(flavor, ConfigFlavor::HuggingFace);
        assert_eq!(hf.dt_rank(), 48);
        assert_eq!(hf.padded_vocab(), 50280);
        let (ss, flavor) = parse_mamba_config(
            r#"{"d_model":768,"n_layer":24,"vocab_size":50277,"ssm_cfg":{},"rms_norm":true,
                "residual_in_fp32":true,"fused_add_norm":true,"pad_vocab_size_multiple":8}"#,
        )
        .unwrap();
        assert_eq!(flavor, ConfigFlavor::StateSpaces);
        assert_eq!(ss.padded_vocab(), 50280);
        assert_eq!(ss.d_inner(), 1536);
    }

    #[test]
    fn reads_mamba2_configs() {
        let (hf, flavor) = parse_mamba_config(
            r#"{"model_type":"mamba2","hidden_size":768,"num_hidden_layers":24,"vocab_size":50288,
                "state_size":128,"expand":2,"head_dim":64,"num_heads":24,"n_groups":1,
                "chunk_size":256,"time_step_limit":[0.0,{"__float__":"Infinity"}]}"#,
        )
        .unwrap();
        assert_eq!(flavor, ConfigFlavor::HuggingFace);
        let m2 = hf.mamba2.clone().unwrap();
        assert_eq!((m2.head_dim, m2.n_groups, m2.chunk_size), (64, 1, 256));
        assert_eq!((m2.dt_limit_min, m2.dt_limit_max), (0.0, None));
        assert_eq!(hf.mixer2().n_heads(), 24);
        let (ss, flavor) = parse_mamba_config(
            r#"{"d_model":768,"d_intermediate":0,"n_layer":24,"vocab_size":50277,
                "ssm_cfg":{"layer":"Mamba2"},"attn_layer_idx":[],"attn_cfg":{},"rms_norm":true,
                "residual_in_fp32":true,"fused_add_norm":true,"pad_vocab_size_multiple":16,
                "tie_embeddings":true}"#,
        )
        .unwrap();
        assert_eq!(flavor, ConfigFlavor::StateSpaces);
        assert_eq!(ss.d_state, 128);
        assert_eq!(ss.mixer2().n_heads(), 24);
        assert_eq!(ss.padded_vocab(), 50288);
    }

    #[test]
    fn reads_a_mamba3_config() {
        let (c, flavor) = parse_mamba_config(
            r#"{"d_model":32,"d_intermediate":0,"n_layer":2,"vocab_size":64,
                "ssm_cfg":{"layer":"Mamba3","d_state":16,"expand":2,"headdim":16,"ngroups":1,
                "rope_fraction":0.5,"is_outproj_norm":true,"is_mimo":false},
                "rms_norm":true,"residual_in_fp32":true,"fused_add_norm":true,
                "pad_vocab_size_multiple":8,"tie_embeddings":true}"#,
        )
        .unwrap();
        assert_eq!(flavor, ConfigFlavor::StateSpaces);
        let m = c.mixer3();
        assert!(c.mamba3.is_some() && c.mamba2.is_none());
        assert_eq!((m.d_state, m.n_heads(), m.n_angles()), (16, 4, 4));
        assert!(m.outproj_norm);
        // Mamba-3's default state size.
        let (c, _) = parse_mamba_config(
            r#"{"d_model":64,"n_layer":2,"vocab_size":10,"ssm_cfg":{"layer":"Mamba3"}}"#,
        )
        .unwrap();
        assert_eq!(c.d_state, 128);
    }

    #[test]
    fn rejects_impossible_values() {
        for (text, needle) in [
            (
                r#"{"d_model":64,"n_layer":2,"vocab_size":10,"ssm_cfg":{"d_state":0}}"#,
                "d_state",
            ),
            (
                r#"{"d_model":64,"n_layer":2,"vocab_size":10,"ssm_cfg":{"expand":0}}"#,
                "expand",
            ),
            (r#"{"d_model":64,"vocab_size":10}"#, "n_layer"),
            (r#"{"hidden_size":64,"num_hidden_layers":2}"#, "vocab_size"),
            (r#"{"d_model":-3,"n_layer":2,"vocab_size":10}"#, "d_model"),
            (r#"{"foo":1}"#, "not a Mamba config"),
            (
                r#"{"d_model":64,"n_layer":2,"vocab_size":10,"d_intermediate":256}"#,
                "d_intermediate",
            ),
            (
                r#"{"d_model":64,"n_layer":2,"vocab_size":10,"attn_layer_idx":[1]}"#,
                "attention",
            ),
            (r#"[1,2]"#, "object"),
            (
                r#"{"d_model":64,"n_layer":2,"vocab_size":10,"ssm_cfg":{"layer":"Mamba4"}}"#,
                "Mamba4",
            ),
            (
                r#"{"d_model":64,"n_layer":2,"vocab_size":10,
                    "ssm_cfg":{"layer":"Mamba3","is_mimo":true,"mimo_rank":0}}"#,
                "mimo_rank",
            ),
            (
                r#"{"d_model":64,"n_layer":2,"vocab_size":10,
                    "ssm_cfg":{"layer":"Mamba3","rope_fraction":0.25}}"#,
                "rope_fraction",
            ),
            (
                r#"{"d_model":64,"n_layer":2,"vocab_size":10,"ssm_cfg":{"layer":"Mamba2","headdim":48}}"#,
                "head_dim",
            ),
            (
                r#"{"model_type":"mamba2","hidden_size":64,"num_hidden_layers":2,"vocab_size":10,
                    "num_heads":3,"head_dim":32}"#,
                "num_heads",
            ),
            (
                r#"{"model_type":"mamba2","hidden_size":64,"num_hidden_layers":2,"vocab_size":10,
                    "head_dim":32,"time_step_limit":[0.0]}"#,
                "time_step_limit",
            ),
            (
                r#"{"model_type":"mamba2","hidden_size":64,"num_hidden_layers":2,"vocab_size":10,
                    "head_dim":32,"n_groups":3}"#,
                "n_groups",
            ),
        ] {
            let err = parse_mamba_config(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        assert!(matches!(
            parse_mamba_config("{not json"),
            Err(ModelError::Json { .. })
        ));
    }
}
