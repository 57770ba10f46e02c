//! Saving a [`MambaLm`] in state-spaces/mamba's layout, for the models transformers has no
//! class for (Mamba-3): `config.json` as `mamba_ssm`'s `MambaConfig` (`d_model`, `n_layer`,
//! `ssm_cfg` with `layer = "Mamba3"`, ...) and `model.safetensors` with `MambaLMHeadModel`'s
//! keys (`backbone.embedding.weight`, `backbone.layers.{i}.mixer.*`, `backbone.norm_f.weight`,
//! `lm_head.weight`, the tied head included as its `state_dict` holds it), which
//! `MambaLMHeadModel(MambaConfig(**config)).load_state_dict(safetensors.torch.load_file(..))`
//! loads with `strict=True` and [`MambaLm::load_dir`] reads back.

use super::config::MambaLmConfig;
use super::hf::write_model_dir;
use super::mamba::MambaLm;
use crate::error::{ModelError, Result};
use serde_json::{Value, json};
use std::path::Path;

impl MambaLmConfig {
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

impl MambaLm {
    /// Writes this model to `dir` in state-spaces/mamba's layout (see the module docs): a
    /// Mamba-3 model's export, as transformers has no Mamba-3 class.
    ///
    /// # Errors
    /// A config that is not Mamba-3 or does not describe this model, or an unwritable folder.
    pub fn save_state_spaces(&self, config: &MambaLmConfig, dir: &Path) -> Result<()> {
        let json = config.to_state_spaces_json()?;
        let mut tensors = self.checked_state_dict(config)?;
        let emb = tensors
            .remove("backbone.embeddings.weight")
            .expect("checked_state_dict found it");
        if config.tie_embeddings {
            tensors.insert("lm_head.weight".into(), emb.clone());
        }
        tensors.insert("backbone.embedding.weight".into(), emb);
        write_model_dir(dir, &tensors, &json)
    }
}
