//! `zoo train vim-digits` / `vmamba-digits` / `s4nd-digits`: image classifiers trained with
//! burn-train on the shipped digits upsampled (bilinear) from 8×8, with random shifts as
//! augmentation; saved as `config.json` + `model.bpk` + `zoo.json` (the model kind and the input
//! side), reloaded by `zoo eval` (at another side with `--img-size`, for the models whose layers
//! allow it).

use crate::common::args::RunArgs;
use crate::common::choices::ModelKind;
use crate::common::error::{CliError, CliResult};
use crate::common::image::{ImageKind, accuracy, digits_transform};
use crate::common::progress::Progress;
use crate::common::run_file::{save, write_kind};
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig;
use burn::prelude::Config;
use burn::tensor::Device;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, LearnerModel, SupervisedTraining, TrainStep,
};
use clap::Args;
use ssm_datasets::ImageBatch;
use ssm_datasets::images::{ImageBatcher, digits_images};
use ssm_models::ssm::s4nd::S4NDKernelKind;
use ssm_models::vision::{self, S4NDClassifierConfig, VMambaConfig, VimConfig};
use std::path::Path;

#[derive(Args, Debug)]
#[command(mut_arg("out", |a| a.help(
    "Where the checkpoints, the final model and its config go (default runs/TASK)"
)))]
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
    #[command(flatten)]
    run: RunArgs,
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
        a.run.seed(),
    ))
    .batch_size(a.batch_size)
    .shuffle(a.run.seed())
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

/// Saves, reloads through the saved files on `device` and reports the test accuracy.
fn finish<M: Module, C: Config>(
    model: &M,
    config: &C,
    kind: ModelKind,
    a: &VisionArgs,
    out: &Path,
    device: &Device,
) -> CliResult {
    save(model, config, out)?;
    write_kind(out, kind, a.img_size)?;
    let (right, total) = accuracy(
        out,
        &ImageKind {
            model: kind,
            img_size: a.img_size,
        },
        None,
        device,
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
fn run<C, M>(
    a: VisionArgs,
    kind: ModelKind,
    config: C,
    init: impl FnOnce(&C, &Device) -> M,
) -> CliResult
where
    C: Config,
    M: LearnerModel
        + TrainStep<Input = ImageBatch, Output = ClassificationOutput>
        + InferenceStep<Input = ImageBatch, Output = ClassificationOutput>,
{
    let name = kind.name();
    let out = a.run.out_or(format!("runs/{name}-digits"));
    let device = a.run.device()?;
    device.seed(a.run.seed());
    let train_device = device.clone().autodiff();
    let model = init(&config, &train_device);
    println!("a {name} model of {} parameters", model.num_params());
    let model = train_on_digits(model, &a, &out, &train_device)?;
    finish(&model, &config, kind, &a, &out, &device)
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
    run(a, ModelKind::Vim, config, VimConfig::init)
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
    run(a, ModelKind::Vmamba, config, VMambaConfig::init)
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
    run(a, ModelKind::S4nd, config, S4NDClassifierConfig::init)
}
