//! Saving a [`MambaLm`] as a Hugging Face model directory: `config.json` in transformers'
//! `MambaConfig` or `Mamba2Config` layout and `model.safetensors` with transformers' key names
//! (`backbone.embeddings.weight`, `backbone.layers.{i}.mixer.in_proj.weight`, ...), which
//! `MambaForCausalLM.from_pretrained` / `Mamba2ForCausalLM.from_pretrained` load unchanged and
//! [`MambaLm::load_dir`] reads back.

use super::config::MambaLmConfig;
use super::mamba::MambaLm;
use crate::checkpoint::write_atomic;
use crate::error::{ModelError, Result};
use crate::io::{pytorch_state_dict, write_safetensors};
use serde_json::Value;
use std::path::Path;

impl MambaLm {
    /// Writes `config.json` and `model.safetensors` into `dir` (created if needed; each file
    /// replaced atomically). `config` must be the one the model was built from.
    ///
    /// # Errors
    /// A config that does not describe this model, or a file that cannot be written.
    pub fn save_hf(&self, config: &MambaLmConfig, dir: &Path) -> Result<()> {
        if config.mamba3.is_some() {
            return Err(ModelError::InvalidConfig(
                "Mamba-3 has no Hugging Face transformers layout to export to (transformers has \
                 no Mamba-3 model)"
                    .into(),
            ));
        }
        let tensors = self.checked_state_dict(config)?;
        write_model_dir(dir, &tensors, &config.to_hf_json())
    }
}

impl MambaLm {
    /// The parameters as a PyTorch-style state dict with transformers' keys, after checking
    /// that `config` describes this model (layer count, embedding shape).
    pub(crate) fn checked_state_dict(&self, config: &MambaLmConfig) -> Result<StateDict> {
        let tensors = pytorch_state_dict(self);
        let emb = tensors
            .get("backbone.embeddings.weight")
            .map(|(s, _)| s.clone());
        let expected = vec![config.padded_vocab(), config.d_model];
        if emb.as_ref() != Some(&expected) || self.backbone.layers.len() != config.n_layer {
            return Err(ModelError::InvalidConfig(format!(
                "the config ({} layers, embedding {expected:?}) does not describe this model \
                 ({} layers, embedding {emb:?})",
                config.n_layer,
                self.backbone.layers.len()
            )));
        }
        Ok(tensors)
    }
}

/// Tensors by key: shape and row-major values.
pub(crate) type StateDict = std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Writes `dir/model.safetensors` and `dir/config.json` (each atomically).
pub(crate) fn write_model_dir(dir: &Path, tensors: &StateDict, config: &Value) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.into(),
        source,
    })?;
    write_safetensors(&dir.join("model.safetensors"), tensors)?;
    let text = serde_json::to_string_pretty(config).expect("a JSON value serialises");
    write_atomic(&dir.join("config.json"), text.as_bytes())
}
