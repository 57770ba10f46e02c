//! Image classifiers trained by `zoo train vim-digits` / `vmamba-digits` / `s4nd-digits`: the
//! digits' transform, a run folder's image-model kind and side (`zoo.json`), the model
//! reloaded, and its test accuracy at its training side or another (`zoo eval --img-size`).

use super::choices::ModelKind;
use super::error::{CliError, CliResult};
use super::measure::count_right;
use super::run_file::{RUN_FILE, load_config, read_run_file};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use ssm_datasets::images::{ImageBatcher, ImageTransform, digits_images};
use ssm_models::checkpoint::load_weights;
use ssm_models::vision::{
    ImageClassifier, S4NDClassifier, S4NDClassifierConfig, VMamba, VMambaConfig, Vim, VimConfig,
};
use std::path::Path;

/// An image model's kind (Vim, VMamba or S4ND) and input side.
pub struct ImageKind {
    pub model: ModelKind,
    pub img_size: usize,
}

/// The image-model kind of a run folder, or `None` for a sequence classifier (also for folders
/// from before `zoo.json` existed).
pub fn read_kind(dir: &Path) -> CliResult<Option<ImageKind>> {
    image_kind(dir, read_run_file(dir)?.as_ref())
}

/// [`read_kind`] of a run file already read (`run`, from `dir`).
pub fn image_kind(dir: &Path, run: Option<&serde_json::Value>) -> CliResult<Option<ImageKind>> {
    let Some(v) = run else {
        return Ok(None);
    };
    let path = dir.join(RUN_FILE);
    let bad = |m: String| CliError::Io(format!("{}: {m}", path.display()));
    let img_size = v.get("img_size").and_then(|s| s.as_u64()).unwrap_or(0) as usize;
    let name = v.get("kind").and_then(|k| k.as_str());
    match name.and_then(ModelKind::parse) {
        Some(ModelKind::Sequence) => Ok(None),
        Some(model @ (ModelKind::Vim | ModelKind::Vmamba | ModelKind::S4nd)) if img_size > 0 => {
            Ok(Some(ImageKind { model, img_size }))
        }
        Some(ModelKind::Vim | ModelKind::Vmamba | ModelKind::S4nd) => {
            Err(bad("img_size must be a positive integer".into()))
        }
        _ => Err(bad(format!(
            "unknown model kind {name:?} (expected \"sequence\", \"vim\", \"vmamba\" or \
             \"s4nd\")"
        ))),
    }
}

/// The digits transform at `side` pixels; `train` adds random shifts of up to `side / 8`.
pub fn digits_transform(side: usize, train: bool) -> ImageTransform {
    ImageTransform {
        crop_padding: if train { (side / 8) as u32 } else { 0 },
        ..ImageTransform::grayscale(side as u32)
    }
}

/// Loads an image model saved by `zoo train` (`zoo.json` of kind "vim", "vmamba" or "s4nd").
pub fn load_image_model(
    dir: &Path,
    kind: &ImageKind,
    device: &Device,
) -> CliResult<Box<dyn ImageClassifier>> {
    let invalid = |e: ssm_models::ModelError| CliError::Io(format!("{}: {e}", dir.display()));
    Ok(match kind.model {
        ModelKind::Vim => {
            let config: VimConfig = load_config(dir)?;
            config.validate().map_err(invalid)?;
            Box::new(load_weights::<Vim>(config.init(device), dir)?)
        }
        ModelKind::S4nd => {
            let config: S4NDClassifierConfig = load_config(dir)?;
            config.validate().map_err(invalid)?;
            Box::new(load_weights::<S4NDClassifier>(config.init(device), dir)?)
        }
        _ => {
            let config: VMambaConfig = load_config(dir)?;
            config.validate().map_err(invalid)?;
            Box::new(load_weights::<VMamba>(config.init(device), dir)?)
        }
    })
}

/// The evaluation transform of a model trained here on the digits.
pub fn eval_transform(kind: &ImageKind) -> ImageTransform {
    digits_transform(kind.img_size, false)
}

/// Right answers and total of a saved image model on the digits' test split, at its training
/// side or at another side with a kernel rate (default the training side / the side; a model
/// that cannot change resolution refuses).
pub fn accuracy(
    dir: &Path,
    kind: &ImageKind,
    at: Option<(usize, Option<f64>)>,
    device: &Device,
) -> CliResult<(usize, usize)> {
    let model = load_image_model(dir, kind, device)?;
    let side = at.map_or(kind.img_size, |(side, _)| side);
    if side == 0 {
        return Err(CliError::Usage("--img-size must be at least 1".into()));
    }
    let rate = at
        .and_then(|(_, rate)| rate)
        .unwrap_or(kind.img_size as f64 / side as f64);
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(CliError::Usage(format!(
            "--rate must be positive, not {rate}"
        )));
    }
    let resampled = at.is_some() && (side != kind.img_size || rate != 1.0);
    let (_, test) = digits_images().map_err(|e| CliError::Io(e.to_string()))?;
    let items = (0..test.len())
        .map(|i| test.get(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Io(format!("reading the test split: {e}")))?;
    let batcher = ImageBatcher::eval(digits_transform(side, false));
    let mut right = 0;
    for chunk in items.chunks(128) {
        let batch = batcher.batch(chunk.to_vec(), device);
        let labels: Vec<usize> = chunk.iter().map(|i| i.label).collect();
        let logits = if !resampled {
            model.logits(batch.images)
        } else {
            model.logits_at_rate(batch.images, rate).ok_or_else(|| {
                CliError::Usage(format!(
                    "a {} model is tied to its training side {} (patch grid and position \
                     embeddings); it cannot be evaluated at {side}",
                    kind.model.name(),
                    kind.img_size
                ))
            })?
        };
        right += count_right(logits, &labels)?;
    }
    Ok((right, items.len()))
}
