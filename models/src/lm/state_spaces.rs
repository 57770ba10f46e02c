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
use crate::error::Result;
use std::path::Path;

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
