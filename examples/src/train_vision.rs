//! `zoo train vim-digits` / `vmamba-digits` / `s4nd-digits` and their part of `zoo eval`: image
//! classifiers trained with burn-train on the shipped digits upsampled (bilinear) from 8×8, with
//! random shifts as augmentation; saved as `config.json` + `model.bpk` + `zoo.json` (the model
//! kind and the input side), reloaded by `zoo eval` (at another side with `--img-size`, for the
//! models whose layers allow it).

use crate::common::{CliError, CliResult, RUN_FILE, device, read_run_file, write_json};
use crate::train::{Progress, save};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig;
use burn::prelude::Config;
use burn::tensor::{Device, Tensor};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, LearnerModel, SupervisedTraining, TrainStep,
};
use clap::Args;
use ssm_datasets::ImageBatch;
use ssm_datasets::images::{ImageBatcher, ImageTransform, digits_images};
use ssm_models::checkpoint::load_weights;
use ssm_models::ssm::s4nd::S4NDKernelKind;
use ssm_models::vision::{
    self, ImageClassifier, S4NDClassifier, S4NDClassifierConfig, VMamba, VMambaConfig, Vim,
    VimConfig,
};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct VisionArgs {
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// AdamW learning rate (default 0.002; S4ND 0.005).
    #[arg(long)]
    lr: Option<f64>,
    /// AdamW weight decay (none on biases, norms, A_log(s), D(s), pos_embed, cls_token).
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Input side after upsampling the 8x8 digits.
    #[arg(long, default_value_t = 16)]
    img_size: usize,
    #[arg(long, default_value_t = 4)]
    patch_size: usize,
    /// Token width (Vim), first-stage width (VMamba) or channels (S4ND).
    #[arg(long, default_value_t = 64)]
    embed_dim: usize,
    /// Blocks (Vim, S4ND) or blocks per stage (VMamba).
    #[arg(long, default_value_t = 4)]
    depth: usize,
    /// VMamba: number of stages (each halves the map and doubles the width).
    #[arg(long, default_value_t = 2)]
    stages: usize,
    /// SSM state size (default 16 for Vim and S4ND, 4 for VMamba).
    #[arg(long)]
    d_state: Option<usize>,
    /// S4ND: the 1-D kernel of each axis.
    #[arg(long, value_enum, default_value_t = AxisKernel::S4)]
    axis_kernel: AxisKernel,
    /// Largest stochastic-depth rate.
    #[arg(long, default_value_t = 0.0)]
    drop_path: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where the checkpoints, the final model and its config go (default runs/<task>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu, ndarray, wgpu, wgpu:N, cuda:N (default cpu).
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// S4ND's kernel per axis.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum AxisKernel {
    /// S4 (DPLR, HiPPO-LegS).
    S4,
    /// S4D (diagonal, S4D-LegS).
    S4d,
}

impl VisionArgs {
    fn check(&self) -> CliResult {
        if self.epochs == 0 || self.batch_size == 0 || self.embed_dim == 0 || self.depth == 0 {
            return Err(CliError::Usage(
                "epochs, batch size, width and depth must be at least 1".into(),
            ));
        }
        if self.lr.is_some_and(|lr| lr <= 0.0) || self.weight_decay < 0.0 || self.d_state == Some(0)
        {
            return Err(CliError::Usage(
                "need lr > 0, weight-decay >= 0 and d-state >= 1".into(),
            ));
        }
        Ok(())
    }
}

/// Writes the run file (`zoo.json`): the model kind `zoo eval` rebuilds and the input side.
pub(crate) fn write_kind(dir: &Path, kind: &str, img_size: usize) -> CliResult {
    write_json(
        &dir.join(RUN_FILE),
        &serde_json::json!({"kind": kind, "img_size": img_size}),
    )
}

/// An image model's kind and input side.
pub(crate) struct ImageKind {
    kind: String,
    img_size: usize,
}

/// The image-model kind of a run folder, or `None` for a sequence classifier (also for folders
/// from before `zoo.json` existed).
pub(crate) fn read_kind(dir: &Path) -> CliResult<Option<ImageKind>> {
    image_kind(dir, read_run_file(dir)?.as_ref())
}

/// [`read_kind`] of a run file already read (`run`, from `dir`).
pub(crate) fn image_kind(
    dir: &Path,
    run: Option<&serde_json::Value>,
) -> CliResult<Option<ImageKind>> {
    let Some(v) = run else {
        return Ok(None);
    };
    let path = dir.join(RUN_FILE);
    let bad = |m: String| CliError::Io(format!("{}: {m}", path.display()));
    let img_size = v.get("img_size").and_then(|s| s.as_u64()).unwrap_or(0) as usize;
    match v.get("kind").and_then(|k| k.as_str()) {
        Some("sequence") => Ok(None),
        Some(k @ ("vim" | "vmamba" | "s4nd")) if img_size > 0 => Ok(Some(ImageKind {
            kind: k.to_string(),
            img_size,
        })),
        Some("vim" | "vmamba" | "s4nd") => Err(bad("img_size must be a positive integer".into())),
        other => Err(bad(format!(
            "unknown model kind {other:?} (expected \"sequence\", \"vim\", \"vmamba\" or \
             \"s4nd\")"
        ))),
    }
}

/// The digits transform at `side` pixels; `train` adds random shifts of up to `side / 8`.
fn digits_transform(side: usize, train: bool) -> ImageTransform {
    ImageTransform {
        crop_padding: if train { (side / 8) as u32 } else { 0 },
        ..ImageTransform::grayscale(side as u32)
    }
}

/// Trains `model` on the digits with burn-train; returns the trained model.
fn train_on_digits<M>(model: M, a: &VisionArgs, out: &Path, train_device: &Device) -> CliResult<M>
where
    M: LearnerModel
        + TrainStep<Input = ImageBatch, Output = ClassificationOutput>
        + InferenceStep<Input = ImageBatch, Output = ClassificationOutput>,
{
    let (train, test) = digits_images().map_err(|e| CliError::Io(e.to_string()))?;
    println!(
        "training on {} digits at {}x{}, testing on {}",
        train.len(),
        a.img_size,
        a.img_size,
        test.len()
    );
    let dl_train = DataLoaderBuilder::new(ImageBatcher::train(
        digits_transform(a.img_size, true),
        a.seed,
    ))
    .batch_size(a.batch_size)
    .shuffle(a.seed)
    .num_workers(1)
    .set_device(train_device.clone())
    .build(train);
    let dl_valid = DataLoaderBuilder::new(ImageBatcher::eval(digits_transform(a.img_size, false)))
        .batch_size(a.batch_size)
        .num_workers(1)
        .set_device(train_device.clone())
        .build(test);
    std::fs::create_dir_all(out)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", out.display())))?;
    let lr = ModuleLrSchedulerConfig::new(a.lr.unwrap_or(0.002).into())
        .init()
        .map_err(|e| CliError::Usage(format!("learning rate: {e}")))?;
    let (model_ckpt, optim_ckpt, sched_ckpt) = ssm_models::checkpoint::atomic_checkpointers(out);
    let result = SupervisedTraining::new(out, dl_train, dl_valid)
        .with_custom_checkpointers(model_ckpt, optim_ckpt, sched_ckpt)
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .renderer(Box::new(Progress::default()))
        .num_epochs(a.epochs)
        .summary()
        .launch(Learner::new(model, vision::optimizer(a.weight_decay), lr));
    if let Some(e) = result.error {
        return Err(CliError::Io(format!("training failed: {e}")));
    }
    Ok(result.model)
}

/// Saves, reloads through the saved files and reports the test accuracy.
fn finish<M: Module, C: Config>(
    model: &M,
    config: &C,
    kind: &str,
    a: &VisionArgs,
    out: &Path,
) -> CliResult {
    save(model, config, out)?;
    write_kind(out, kind, a.img_size)?;
    let device = device(Some(&a.device))?;
    let (right, total) = accuracy(
        out,
        &ImageKind {
            kind: kind.into(),
            img_size: a.img_size,
        },
        None,
        &device,
    )?;
    println!(
        "test accuracy {:.2}% ({right}/{total}); model saved to {}",
        100.0 * right as f64 / total as f64,
        out.display()
    );
    Ok(())
}

/// Seeds, builds the model on the autodiff device, trains it on the digits and saves it under
/// `--out` (default `runs/<kind>-digits`).
fn run<C, M>(a: VisionArgs, kind: &str, config: C, init: impl FnOnce(&C, &Device) -> M) -> CliResult
where
    C: Config,
    M: LearnerModel
        + TrainStep<Input = ImageBatch, Output = ClassificationOutput>
        + InferenceStep<Input = ImageBatch, Output = ClassificationOutput>,
{
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/{kind}-digits")));
    let device = device(Some(&a.device))?;
    device.seed(a.seed);
    let train_device = device.autodiff();
    let model = init(&config, &train_device);
    println!("a {kind} model of {} parameters", model.num_params());
    let model = train_on_digits(model, &a, &out, &train_device)?;
    finish(&model, &config, kind, &a, &out)
}

pub fn vim_digits(a: VisionArgs) -> CliResult {
    a.check()?;
    let config = VimConfig::new()
        .with_img_size(a.img_size)
        .with_patch_size(a.patch_size)
        .with_stride(a.patch_size)
        .with_channels(1)
        .with_embed_dim(a.embed_dim)
        .with_depth(a.depth)
        .with_d_state(a.d_state.unwrap_or(16))
        .with_num_classes(ssm_datasets::digits::CLASSES)
        .with_drop_path_rate(a.drop_path);
    config
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    println!(
        "Vim: {} tokens of width {}, {} blocks",
        config.tokens(),
        a.embed_dim,
        a.depth
    );
    run(a, "vim", config, VimConfig::init)
}

pub fn vmamba_digits(a: VisionArgs) -> CliResult {
    a.check()?;
    let config = VMambaConfig::new(vec![a.depth; a.stages])
        .with_patch_size(a.patch_size)
        .with_in_chans(1)
        .with_dim(a.embed_dim)
        .with_d_state(a.d_state.unwrap_or(4))
        .with_num_classes(ssm_datasets::digits::CLASSES)
        .with_drop_path_rate(a.drop_path);
    config
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    println!(
        "VMamba: {} stages of {} blocks, widths {}..{}",
        a.stages,
        a.depth,
        config.stage_dim(0),
        config.stage_dim(a.stages - 1)
    );
    run(a, "vmamba", config, VMambaConfig::init)
}

pub fn s4nd_digits(a: VisionArgs) -> CliResult {
    a.check()?;
    let config = S4NDClassifierConfig::new(1, ssm_datasets::digits::CLASSES)
        .with_d_model(a.embed_dim)
        .with_n_layers(a.depth)
        .with_d_state(a.d_state.unwrap_or(16))
        .with_kernel(match a.axis_kernel {
            AxisKernel::S4 => S4NDKernelKind::S4,
            AxisKernel::S4d => S4NDKernelKind::S4D,
        });
    config
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    println!(
        "S4ND: {} layers of {} channels, {:?} kernels per axis (N {}), on {}x{} pixels",
        a.depth, a.embed_dim, config.kernel, config.d_state, a.img_size, a.img_size
    );
    let a = VisionArgs {
        lr: Some(a.lr.unwrap_or(0.005)),
        ..a
    };
    run(a, "s4nd", config, S4NDClassifierConfig::init)
}

fn load_config<C: Config>(dir: &Path) -> CliResult<C> {
    let path = dir.join("config.json");
    C::load(&path).map_err(|e| CliError::Io(format!("cannot read {}: {e}", path.display())))
}

/// Loads an image model saved by `zoo train` (`zoo.json` of kind "vim" or "vmamba").
pub(crate) fn load_image_model(
    dir: &Path,
    kind: &ImageKind,
    device: &Device,
) -> CliResult<Box<dyn ImageClassifier>> {
    let invalid = |e: ssm_models::ModelError| CliError::Io(format!("{}: {e}", dir.display()));
    Ok(match kind.kind.as_str() {
        "vim" => {
            let config: VimConfig = load_config(dir)?;
            config.validate().map_err(invalid)?;
            Box::new(load_weights::<Vim>(config.init(device), dir)?)
        }
        "s4nd" => {
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
pub(crate) fn eval_transform(kind: &ImageKind) -> ImageTransform {
    digits_transform(kind.img_size, false)
}

/// Right answers and total of a saved image model on the digits' test split, at its training
/// side or at another side with a kernel rate (default the training side / the side; a model
/// that cannot change resolution refuses).
pub(crate) fn accuracy(
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
                    kind.kind, kind.img_size
                ))
            })?
        };
        right += count_right(logits, &labels)?;
    }
    Ok((right, items.len()))
}

/// How many rows of `logits` (B, classes) pick their label.
pub(crate) fn count_right(logits: Tensor<2>, labels: &[usize]) -> CliResult<usize> {
    let p = logits
        .argmax(1)
        .squeeze_dim::<1>(1)
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .map_err(|e| CliError::Io(format!("reading predictions: {e:?}")))?;
    Ok(p.iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as i64)
        .count())
}
