//! `config.json` in both layouts the language models come in, read and written here together:
//! transformers' `MambaConfig` / `Mamba2Config` (`hidden_size`, `num_hidden_layers`,
//! `state_size`, ...) and state-spaces/mamba's `MambaConfig` (`d_model`, `n_layer`, `ssm_cfg`
//! with `layer = "Mamba2"` or `"Mamba3"`, ...).
//!
//! Reading is serde: a struct per layout (`TransformersConfig`, `StateSpacesConfig` and its
//! `SsmCfg`; one struct with aliases cannot work, as transformers' files also carry
//! state-spaces' `d_model` and `n_layer`), then [`parse_mamba_config`] applies each layout's
//! defaults and checks. A value of the wrong type is an error naming its key as written in the
//! file, e.g. "'ssm_cfg.headdim': invalid value: integer -4, expected usize".

use super::config::{Mamba2Settings, Mamba3Settings, MambaLmConfig};
use crate::error::{ModelError, Result};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;

/// Where a config came from: it decides the weight key names and vocabulary padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFlavor {
    /// transformers' `MambaConfig` (`backbone.embeddings.*`, vocabulary not padded).
    HuggingFace,
    /// state-spaces/mamba's `MambaConfig` (`backbone.embedding.*`, vocabulary padded).
    StateSpaces,
}

/// transformers' `MambaConfig` / `Mamba2Config`: the fields the zoo reads (others are
/// ignored; transformers' files also carry state-spaces' `d_model` and `n_layer`, which is why
/// each layout has its own struct rather than one with aliases).
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct TransformersConfig {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    vocab_size: Option<usize>,
    state_size: Option<usize>,
    conv_kernel: Option<usize>,
    expand: Option<usize>,
    intermediate_size: Option<usize>,
    time_step_rank: Option<Rank>,
    use_conv_bias: Option<bool>,
    use_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    layer_norm_epsilon: Option<f64>,
    time_step_min: Option<f64>,
    time_step_max: Option<f64>,
    time_step_floor: Option<f64>,
    eos_token_id: Option<usize>,
    head_dim: Option<usize>,
    n_groups: Option<usize>,
    chunk_size: Option<usize>,
    num_heads: Option<usize>,
    time_step_limit: Option<Limits>,
}

/// state-spaces/mamba's `MambaConfig` (`mamba_ssm/models/config_mamba.py`): the fields the zoo
/// reads. `ssm_cfg` is read as an object, then as [`SsmCfg`].
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct StateSpacesConfig {
    d_model: Option<usize>,
    n_layer: Option<usize>,
    vocab_size: Option<usize>,
    pad_vocab_size_multiple: Option<usize>,
    tie_embeddings: Option<bool>,
    ssm_cfg: Option<serde_json::Map<String, Value>>,
    d_intermediate: Option<usize>,
    attn_layer_idx: Option<Vec<Value>>,
    rms_norm: Option<bool>,
    norm_epsilon: Option<f64>,
}

/// state-spaces' `ssm_cfg`: the mixer's arguments (`mamba_ssm`'s `Mamba`, `Mamba2`, `Mamba3`;
/// `head_dim` and `n_groups` are accepted for `headdim` and `ngroups`).
#[allow(non_snake_case)]
#[derive(Deserialize, Debug, Default)]
#[serde(default)]
struct SsmCfg {
    layer: Option<String>,
    d_state: Option<usize>,
    d_conv: Option<usize>,
    expand: Option<usize>,
    dt_rank: Option<Rank>,
    conv_bias: Option<bool>,
    bias: Option<bool>,
    #[serde(alias = "head_dim")]
    headdim: Option<usize>,
    #[serde(alias = "n_groups")]
    ngroups: Option<usize>,
    chunk_size: Option<usize>,
    dt_limit: Option<Limits>,
    rmsnorm: Option<bool>,
    norm_before_gate: Option<bool>,
    D_has_hdim: Option<bool>,
    d_ssm: Option<usize>,
    rope_fraction: Option<f64>,
    A_floor: Option<f64>,
    is_outproj_norm: Option<bool>,
    is_mimo: Option<bool>,
    mimo_rank: Option<usize>,
    dt_min: Option<f64>,
    dt_max: Option<f64>,
    dt_init_floor: Option<f64>,
}

/// `dt_rank` / `time_step_rank`: an integer, or `"auto"` (`None`: `ceil(d_model / 16)`).
#[derive(Debug, Clone, Copy)]
struct Rank(Option<usize>);

impl<'de> Deserialize<'de> for Rank {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(usize),
            Word(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("must be a non-negative integer or \"auto\""))?
        {
            Raw::Number(n) => Ok(Rank(Some(n))),
            Raw::Word(w) if w == "auto" => Ok(Rank(None)),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "must be a non-negative integer or \"auto\", found \"{w}\""
            ))),
        }
    }
}

/// transformers' `time_step_limit` / state-spaces' `dt_limit`: `[min, max]`, where a bound may
/// be written `{"__float__": "Infinity"}`; an infinite maximum is `None`.
#[derive(Debug, Clone, Copy)]
struct Limits(f64, Option<f64>);

impl<'de> Deserialize<'de> for Limits {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Bound {
            Number(f64),
            Special {
                #[serde(rename = "__float__")]
                float: String,
            },
        }
        let bad = || serde::de::Error::custom("must be [min, max] (numbers)");
        let [lo, hi] = <[Bound; 2]>::deserialize(d).map_err(|_| bad())?;
        let num = |b: Bound| match b {
            Bound::Number(x) => Ok(x),
            Bound::Special { float } => match float.as_str() {
                "Infinity" | "inf" => Ok(f64::INFINITY),
                "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(bad()),
            },
        };
        let (lo, hi) = (num(lo)?, num(hi)?);
        Ok(Limits(lo, hi.is_finite().then_some(hi)))
    }
}

fn bad(msg: impl Into<String>) -> ModelError {
    ModelError::InvalidConfig(msg.into())
}

/// `value` (a JSON object) as `T`; an error names the key as written, after `prefix`.
fn fields<T: serde::de::DeserializeOwned>(value: Value, prefix: &str) -> Result<T> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| bad(format!("'{prefix}{}': {}", e.path(), e.inner())))
}

fn required(value: Option<usize>, key: &str) -> Result<usize> {
    value.ok_or_else(|| bad(format!("missing required field '{key}'")))
}

/// Reads and validates a Mamba LM config from a file.
pub fn read_mamba_config(path: &Path) -> Result<(MambaLmConfig, ConfigFlavor)> {
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

/// Parses a Mamba LM config from JSON text, in transformers' layout (recognised by
/// `hidden_size` or `state_size`) or state-spaces' (`d_model`), and validates it.
pub fn parse_mamba_config(text: &str) -> Result<(MambaLmConfig, ConfigFlavor)> {
    let value: Value = serde_json::from_str(text).map_err(|e| ModelError::Json {
        path: "<config>".into(),
        message: e.to_string(),
    })?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("the config must be a JSON object"))?;
    let flavor = if obj.contains_key("hidden_size") || obj.contains_key("state_size") {
        ConfigFlavor::HuggingFace
    } else if obj.contains_key("d_model") {
        ConfigFlavor::StateSpaces
    } else {
        return Err(bad(
            "not a Mamba config: expected 'hidden_size' (Hugging Face) or 'd_model' (state-spaces)",
        ));
    };
    let config = match flavor {
        ConfigFlavor::HuggingFace => from_transformers(fields(value, "")?)?,
        ConfigFlavor::StateSpaces => from_state_spaces(fields(value, "")?)?,
    };
    config.validate()?;
    Ok((config, flavor))
}

/// transformers' `MambaConfig` / `Mamba2Config`: the vocabulary is not padded; a Mamba2 config
/// (`model_type = "mamba2"`, or one with `num_heads`) without `state_size` has N = 128.
fn from_transformers(f: TransformersConfig) -> Result<MambaLmConfig> {
    if let Some(t) = f.model_type.as_deref()
        && t != "mamba"
        && t != "mamba2"
    {
        return Err(bad(format!(
            "model_type '{t}' is not supported here (expected 'mamba' or 'mamba2')"
        )));
    }
    let mamba2 = f.model_type.as_deref() == Some("mamba2") || f.num_heads.is_some();
    let d_model = required(f.hidden_size, "hidden_size")?;
    let mut c = MambaLmConfig::new(
        d_model,
        required(f.num_hidden_layers, "num_hidden_layers")?,
        required(f.vocab_size, "vocab_size")?,
    )
    .with_pad_vocab_size_multiple(1);
    c.d_state = f.state_size.unwrap_or(if mamba2 { 128 } else { c.d_state });
    c.d_conv = f.conv_kernel.unwrap_or(c.d_conv);
    c.expand = f.expand.unwrap_or(c.expand);
    if let Some(inter) = f.intermediate_size
        && inter != c.expand * d_model
    {
        return Err(bad(format!(
            "intermediate_size {inter} differs from expand * hidden_size = {}",
            c.expand * d_model
        )));
    }
    c.dt_rank = f.time_step_rank.and_then(|r| r.0);
    c.conv_bias = f.use_conv_bias.unwrap_or(c.conv_bias);
    c.bias = f.use_bias.unwrap_or(c.bias);
    c.tie_embeddings = f.tie_word_embeddings.unwrap_or(c.tie_embeddings);
    c.norm_eps = f.layer_norm_epsilon.unwrap_or(c.norm_eps);
    c.dt_min = f.time_step_min.unwrap_or(c.dt_min);
    c.dt_max = f.time_step_max.unwrap_or(c.dt_max);
    c.dt_init_floor = f.time_step_floor.unwrap_or(c.dt_init_floor);
    c.eos_token_id = f.eos_token_id;
    if mamba2 {
        let mut m2 = Mamba2Settings::new();
        m2.head_dim = f.head_dim.unwrap_or(m2.head_dim);
        m2.n_groups = f.n_groups.unwrap_or(m2.n_groups);
        m2.chunk_size = f.chunk_size.unwrap_or(m2.chunk_size);
        if let Some(Limits(lo, hi)) = f.time_step_limit {
            (m2.dt_limit_min, m2.dt_limit_max) = (lo, hi);
        }
        if let Some(h) = f.num_heads
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
    Ok(c)
}

/// state-spaces/mamba's `MambaConfig`: the mixer's settings are in `ssm_cfg` (N defaults to
/// 128 for Mamba2 and Mamba-3), the vocabulary is padded to `pad_vocab_size_multiple`, and the
/// options the zoo does not implement (MLPs, attention layers, LayerNorm, partial SSMs) are
/// refused.
fn from_state_spaces(f: StateSpacesConfig) -> Result<MambaLmConfig> {
    let mut c = MambaLmConfig::new(
        required(f.d_model, "d_model")?,
        required(f.n_layer, "n_layer")?,
        required(f.vocab_size, "vocab_size")?,
    );
    c.pad_vocab_size_multiple = f
        .pad_vocab_size_multiple
        .unwrap_or(c.pad_vocab_size_multiple);
    c.tie_embeddings = f.tie_embeddings.unwrap_or(c.tie_embeddings);
    if let Some(map) = f.ssm_cfg {
        let s: SsmCfg = fields(Value::Object(map), "ssm_cfg.")?;
        match s.layer.as_deref() {
            None | Some("Mamba1") => {}
            Some("Mamba2") => {
                let mut m2 = Mamba2Settings::new();
                m2.head_dim = s.headdim.unwrap_or(m2.head_dim);
                m2.n_groups = s.ngroups.unwrap_or(m2.n_groups);
                m2.chunk_size = s.chunk_size.unwrap_or(m2.chunk_size);
                if let Some(Limits(lo, hi)) = s.dt_limit {
                    (m2.dt_limit_min, m2.dt_limit_max) = (lo, hi);
                }
                for (key, value, default) in [
                    ("rmsnorm", s.rmsnorm, true),
                    ("norm_before_gate", s.norm_before_gate, false),
                    ("D_has_hdim", s.D_has_hdim, false),
                ] {
                    if let Some(v) = value
                        && v != default
                    {
                        return Err(bad(format!(
                            "ssm_cfg.{key} = {v} is not supported (only {default})"
                        )));
                    }
                }
                if s.d_ssm.is_some() {
                    return Err(bad("ssm_cfg.d_ssm (a partial SSM) is not supported"));
                }
                // Mamba2's default state size.
                c.d_state = 128;
                c.mamba2 = Some(m2);
            }
            Some("Mamba3") => {
                let mut m3 = Mamba3Settings::new();
                m3.head_dim = s.headdim.unwrap_or(m3.head_dim);
                m3.n_groups = s.ngroups.unwrap_or(m3.n_groups);
                m3.rope_fraction = s.rope_fraction.unwrap_or(m3.rope_fraction);
                m3.a_floor = s.A_floor.unwrap_or(m3.a_floor);
                m3.outproj_norm = s.is_outproj_norm.unwrap_or(m3.outproj_norm);
                m3.mimo = s.is_mimo.unwrap_or(m3.mimo);
                m3.mimo_rank = s.mimo_rank.unwrap_or(m3.mimo_rank);
                m3.chunk_size = s.chunk_size.unwrap_or(m3.chunk_size);
                c.dt_min = s.dt_min.unwrap_or(c.dt_min);
                c.dt_max = s.dt_max.unwrap_or(c.dt_max);
                c.dt_init_floor = s.dt_init_floor.unwrap_or(c.dt_init_floor);
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
        c.d_state = s.d_state.unwrap_or(c.d_state);
        c.d_conv = s.d_conv.unwrap_or(c.d_conv);
        c.expand = s.expand.unwrap_or(c.expand);
        c.dt_rank = s.dt_rank.and_then(|r| r.0);
        c.conv_bias = s.conv_bias.unwrap_or(c.conv_bias);
        c.bias = s.bias.unwrap_or(c.bias);
    }
    if let Some(x) = f.d_intermediate
        && x > 0
    {
        return Err(bad(format!(
            "d_intermediate = {x} (an MLP after each mixer) is not supported"
        )));
    }
    if f.attn_layer_idx.is_some_and(|layers| !layers.is_empty()) {
        return Err(bad(
            "attn_layer_idx: hybrid models with attention layers are not supported",
        ));
    }
    if f.rms_norm == Some(false) {
        return Err(bad("rms_norm = false (LayerNorm blocks) is not supported"));
    }
    c.norm_eps = f.norm_epsilon.unwrap_or(c.norm_eps);
    Ok(c)
}

impl MambaLmConfig {
    /// transformers' config for this model. The vocabulary written is the embedding's row
    /// count ([`MambaLmConfig::padded_vocab`]), as transformers has no padding of its own.
    pub fn to_hf_json(&self) -> Value {
        let mut c = json!({
            "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layer,
            "vocab_size": self.padded_vocab(),
            "state_size": self.d_state,
            "conv_kernel": self.d_conv,
            "expand": self.expand,
            "intermediate_size": self.d_inner(),
            "time_step_min": self.dt_min,
            "time_step_max": self.dt_max,
            "time_step_floor": self.dt_init_floor,
            "use_bias": self.bias,
            "use_conv_bias": self.conv_bias,
            "layer_norm_epsilon": self.norm_eps,
            "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu",
            "residual_in_fp32": true,
            "use_cache": true,
            "torch_dtype": "float32",
        });
        let obj = c.as_object_mut().expect("a JSON object");
        if let Some(eos) = self.eos_token_id {
            obj.insert("eos_token_id".into(), eos.into());
            obj.insert("bos_token_id".into(), eos.into());
            obj.insert("pad_token_id".into(), eos.into());
        }
        match &self.mamba2 {
            None => {
                obj.insert("model_type".into(), "mamba".into());
                obj.insert("architectures".into(), json!(["MambaForCausalLM"]));
                obj.insert("time_step_rank".into(), self.dt_rank().into());
            }
            Some(m2) => {
                obj.insert("model_type".into(), "mamba2".into());
                obj.insert("architectures".into(), json!(["Mamba2ForCausalLM"]));
                obj.insert("num_heads".into(), (self.d_inner() / m2.head_dim).into());
                obj.insert("head_dim".into(), m2.head_dim.into());
                obj.insert("n_groups".into(), m2.n_groups.into());
                obj.insert("chunk_size".into(), m2.chunk_size.into());
                obj.insert("rms_norm".into(), true.into());
                obj.insert("norm_before_gate".into(), false.into());
                let hi = match m2.dt_limit_max {
                    Some(hi) => json!(hi),
                    None => json!({"__float__": "Infinity"}),
                };
                obj.insert("time_step_limit".into(), json!([m2.dt_limit_min, hi]));
            }
        }
        c
    }

    /// `mamba_ssm`'s `MambaConfig` for this model (Mamba-3 only: the other architectures are
    /// exported in transformers' layout, [`MambaLmConfig::to_hf_json`]). The vocabulary
    /// written is the embedding's row count, with no further padding.
    pub fn to_state_spaces_json(&self) -> Result<Value> {
        let m3 = self.mamba3.as_ref().ok_or_else(|| {
            ModelError::InvalidConfig(
                "the state-spaces export is for Mamba-3 models; Mamba and Mamba2 export in \
                 transformers' layout (save_hf)"
                    .into(),
            )
        })?;
        let mut c = json!({
            "d_model": self.d_model,
            "d_intermediate": 0,
            "n_layer": self.n_layer,
            "vocab_size": self.padded_vocab(),
            "ssm_cfg": {
                "layer": "Mamba3",
                "d_state": self.d_state,
                "expand": self.expand,
                "headdim": m3.head_dim,
                "ngroups": m3.n_groups,
                "rope_fraction": m3.rope_fraction,
                "A_floor": m3.a_floor,
                "is_outproj_norm": m3.outproj_norm,
                "is_mimo": m3.mimo,
                "mimo_rank": m3.mimo_rank,
                "chunk_size": m3.chunk_size,
                "dt_min": self.dt_min,
                "dt_max": self.dt_max,
                "dt_init_floor": self.dt_init_floor,
            },
            "attn_layer_idx": [],
            "attn_cfg": {},
            "rms_norm": true,
            "residual_in_fp32": true,
            "fused_add_norm": true,
            "pad_vocab_size_multiple": 1,
            "tie_embeddings": self.tie_embeddings,
        });
        if let Some(eos) = self.eos_token_id {
            c.as_object_mut()
                .expect("a JSON object")
                .insert("eos_token_id".into(), eos.into());
        }
        Ok(c)
    }
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

    /// transformers' files also carry state-spaces' spellings (`d_model`, `n_layer`, an empty
    /// `ssm_cfg`): read as transformers' layout, as `mamba-130m-hf`'s config.json is.
    #[test]
    fn reads_a_transformers_file_that_carries_both_spellings() {
        let (c, flavor) = parse_mamba_config(
            r#"{"architectures":["MambaForCausalLM"],"conv_kernel":4,"d_inner":1536,"d_model":768,
                "eos_token_id":0,"expand":2,"hidden_size":768,"intermediate_size":1536,
                "layer_norm_epsilon":1e-05,"model_type":"mamba","n_layer":24,"num_hidden_layers":24,
                "pad_vocab_size_multiple":8,"rms_norm":true,"ssm_cfg":{},"state_size":16,
                "time_step_floor":0.0001,"time_step_max":0.1,"time_step_min":0.001,
                "time_step_rank":48,"use_bias":false,"use_conv_bias":true,"vocab_size":50280}"#,
        )
        .unwrap();
        assert_eq!(flavor, ConfigFlavor::HuggingFace);
        assert_eq!(
            (c.d_model, c.n_layer, c.dt_rank(), c.padded_vocab()),
            (768, 24, 48, 50280)
        );
        assert_eq!(c.eos_token_id, Some(0));
    }

    /// A value of the wrong type is refused naming its key as the file spells it, inside
    /// `ssm_cfg` too; `null` is "not set".
    #[test]
    fn a_wrong_type_names_the_key_as_written() {
        for (text, needle) in [
            (
                r#"{"hidden_size":"x","num_hidden_layers":2,"vocab_size":10}"#,
                "'hidden_size'",
            ),
            (
                r#"{"hidden_size":64,"num_hidden_layers":2,"vocab_size":10,"time_step_rank":"big"}"#,
                "'time_step_rank'",
            ),
            (
                r#"{"d_model":64,"n_layer":2,"vocab_size":10,"ssm_cfg":{"layer":"Mamba2","headdim":-4}}"#,
                "'ssm_cfg.headdim'",
            ),
            (
                r#"{"d_model":64,"n_layer":2,"vocab_size":10,"ssm_cfg":{"layer":2}}"#,
                "'ssm_cfg.layer'",
            ),
            (
                r#"{"d_model":64,"n_layer":2,"vocab_size":10,"ssm_cfg":[1,2]}"#,
                "'ssm_cfg'",
            ),
            (
                r#"{"d_model":64,"n_layer":2,"vocab_size":10,"attn_layer_idx":"all"}"#,
                "'attn_layer_idx'",
            ),
        ] {
            let err = parse_mamba_config(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let (c, _) = parse_mamba_config(
            r#"{"model_type":"mamba2","hidden_size":64,"num_hidden_layers":2,"vocab_size":10,
                "head_dim":32,"time_step_limit":null,"eos_token_id":null}"#,
        )
        .unwrap();
        let m2 = c.mamba2.unwrap();
        assert_eq!(
            (m2.dt_limit_min, m2.dt_limit_max, c.eos_token_id),
            (0.0, None, None)
        );
    }
}
