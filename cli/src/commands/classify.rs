//! `zoo classify`: the top classes of images under a Vim or VMamba — a released checkpoint
//! (hustvl/Vim or MzeroMiko/VMamba `.pth`, or safetensors; the architecture is read from the
//! keys and shapes) with ImageNet's evaluation transform and class names, or a folder written
//! by `zoo train vim-digits` / `vmamba-digits`.

use crate::common::args::DeviceArgs;
use crate::common::error::{CliError, CliResult};
use crate::common::image::{eval_transform, load_image_model, read_kind};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};
use clap::Args;
use ssm_datasets::images::{IMAGENET_CLASSES, ImageTransform, read_image};
use ssm_models::io::weights::TensorMap;
use ssm_models::vision::{ImageClassifier, VMamba, Vim};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// A Vim or VMamba checkpoint file (.pth, .pt, .bin, .safetensors), a folder holding one,
    /// or a folder written by `zoo train vim-digits` / `vmamba-digits`.
    #[arg(long)]
    model: PathBuf,
    /// Vim only: the patch stride (8 for the "stride8" models; default the patch size).
    #[arg(long)]
    stride: Option<usize>,
    /// VMamba only: the input side (default 224; Vim's follows from its position embedding).
    #[arg(long)]
    img_size: Option<usize>,
    /// Class names, one per line (default: ImageNet's for 1000-class models, else indices).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// Image files (PNG, JPEG, BMP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// A loaded classifier with its transform and class count.
struct Loaded {
    model: Box<dyn ImageClassifier>,
    transform: ImageTransform,
    classes: usize,
}

fn load_checkpoint(a: &ClassifyArgs, device: &Device) -> CliResult<Loaded> {
    let mut w = TensorMap::read(&a.model)?;
    if w.contains("pos_embed") && w.contains("layers.0.mixer.in_proj.weight") {
        let config = Vim::config_of(&w, a.stride)?;
        let model = Vim::from_weights(&config, &mut w, device)?;
        w.finish()?;
        let classes = model.head.weight.dims()[1];
        let channels = model.patch_embed.proj.weight.dims()[1];
        Ok(Loaded {
            transform: transform(config.img_size, channels),
            model: Box::new(model),
            classes,
        })
    } else {
        let config = VMamba::config_of(&mut w).map_err(|e| {
            CliError::Usage(format!(
                "{}: neither a Vim (pos_embed, layers.0.mixer.*) nor a VMamba checkpoint ({e})",
                a.model.display()
            ))
        })?;
        let model = VMamba::from_weights(&config, &mut w, device)?;
        w.finish()?;
        Ok(Loaded {
            transform: transform(a.img_size.unwrap_or(224), config.in_chans),
            model: Box::new(model),
            classes: config.num_classes,
        })
    }
}

/// ImageNet's evaluation transform at `side`, for `channels` input channels.
fn transform(side: usize, channels: usize) -> ImageTransform {
    let t = ImageTransform::imagenet_eval(side as u32);
    if channels == 1 {
        ImageTransform {
            channels: 1,
            mean: vec![0.449],
            std: vec![0.226],
            ..t
        }
    } else {
        t
    }
}

fn labels(a: &ClassifyArgs, classes: usize, digits: bool) -> CliResult<Vec<String>> {
    if let Some(path) = &a.labels {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Io(format!("cannot read {}: {e}", path.display())))?;
        let names: Vec<String> = text.lines().map(str::to_string).collect();
        if names.len() != classes {
            return Err(CliError::Usage(format!(
                "{} has {} lines for a model of {classes} classes",
                path.display(),
                names.len()
            )));
        }
        return Ok(names);
    }
    if classes == 1000 && !digits {
        return Ok(IMAGENET_CLASSES.lines().map(str::to_string).collect());
    }
    Ok((0..classes).map(|i| i.to_string()).collect())
}

/// The one checkpoint file in a folder (`.pth`, `.pt`, `.bin`, `.safetensors`), if exactly one.
fn checkpoint_in(dir: &std::path::Path) -> Option<PathBuf> {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "pth" | "pt" | "bin" | "safetensors"))
        })
        .collect();
    (files.len() == 1).then(|| files[0].clone())
}

fn load(a: &ClassifyArgs, device: &Device) -> CliResult<(Loaded, bool)> {
    if a.model.is_dir() {
        let Some(kind) = read_kind(&a.model)? else {
            // A downloaded model folder holding one checkpoint file.
            if let Some(file) = checkpoint_in(&a.model) {
                let a = ClassifyArgs {
                    model: file,
                    labels: a.labels.clone(),
                    images: Vec::new(),
                    device: a.device.clone(),
                    ..*a
                };
                return Ok((load_checkpoint(&a, device)?, false));
            }
            return Err(CliError::Usage(format!(
                "{} holds neither a model from `zoo train vim-digits`/`vmamba-digits` nor one \
                 checkpoint file",
                a.model.display()
            )));
        };
        let model = load_image_model(&a.model, &kind, device)?;
        return Ok((
            Loaded {
                model,
                transform: eval_transform(&kind),
                classes: ssm_datasets::digits::CLASSES,
            },
            true,
        ));
    }
    Ok((load_checkpoint(a, device)?, false))
}

pub fn run(a: ClassifyArgs) -> CliResult {
    if a.top == 0 {
        return Err(CliError::Usage("--top must be at least 1".into()));
    }
    let device = a.device.resolve()?;
    let (loaded, digits) = load(&a, &device)?;
    let names = labels(&a, loaded.classes, digits)?;
    loaded
        .transform
        .validate()
        .map_err(|e| CliError::Usage(format!("transform: {e}")))?;
    let mut values = Vec::new();
    let mut side = (0, 0);
    for path in &a.images {
        let image = read_image(path).map_err(|e| CliError::Io(e.to_string()))?;
        let (v, w, h) = loaded.transform.apply(&image, None);
        side = (h as usize, w as usize);
        values.extend(v);
    }
    let n = a.images.len();
    let images = Tensor::<4>::from_data(
        TensorData::new(values, [n, loaded.transform.channels, side.0, side.1]),
        &device,
    );
    let probs = softmax(loaded.model.logits(images), 1);
    let probs = ssm_backends::to_vec(probs);
    let k = a.top.min(loaded.classes);
    let mut out = Vec::new();
    for (i, path) in a.images.iter().enumerate() {
        let row = &probs[i * loaded.classes..(i + 1) * loaded.classes];
        let mut order: Vec<usize> = (0..loaded.classes).collect();
        order.sort_by(|&x, &y| row[y].total_cmp(&row[x]));
        out.push((
            path,
            order[..k].iter().map(|&c| (c, row[c])).collect::<Vec<_>>(),
        ));
    }
    if a.json {
        let v: Vec<_> = out
            .iter()
            .map(|(p, top)| {
                serde_json::json!({
                    "image": p.display().to_string(),
                    "top": top.iter().map(|&(c, prob)| serde_json::json!({
                        "class": c, "label": names[c], "prob": prob
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "predictions": v }));
    } else {
        for (p, top) in out {
            println!("{}", p.display());
            for (rank, (c, prob)) in top.into_iter().enumerate() {
                println!("  {}. {prob:.4}  {} ({c})", rank + 1, names[c]);
            }
        }
    }
    Ok(())
}
