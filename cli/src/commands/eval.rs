//! `zoo eval`: the test accuracy of a classifier saved by `zoo train` (a sequence classifier,
//! an image model, at its training side or another, or a Graph-Mamba on the split its saved
//! data settings rebuild), as one JSON object.

use crate::common::args::DeviceArgs;
use crate::common::choices::ModelKind;
use crate::common::error::{CliError, CliResult};
use crate::common::run_file::read_run_file;
use crate::common::{graph, image, sequence};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A folder written by `zoo train` (config.json, model.bpk).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
    /// Evaluate an image model at this side instead of its training one, without retraining
    /// (S4ND: its kernels are sampled at the new pixel pitch; models tied to a patch grid
    /// refuse).
    #[arg(long)]
    img_size: Option<usize>,
    /// With --img-size: the rate the kernels are sampled at (default the training side / the
    /// side, which keeps each kernel's extent in the image; 1 reads them pixel for pixel).
    #[arg(long, requires = "img_size")]
    rate: Option<f64>,
}

pub fn run(a: EvalArgs) -> CliResult {
    let device = a.device.resolve()?;
    // The run file, read once, says which kind of model the folder holds.
    let run = read_run_file(&a.model)?;
    let graph = run.as_ref().filter(|v| {
        v.get("kind")
            .and_then(|k| k.as_str())
            .and_then(ModelKind::parse)
            == Some(ModelKind::GraphMamba)
    });
    let image = match graph {
        Some(_) => None,
        None => image::image_kind(&a.model, run.as_ref())?,
    };
    if a.img_size.is_some() && image.is_none() {
        return Err(CliError::Usage(format!(
            "--img-size is for image models; {} is not one",
            a.model.display()
        )));
    }
    let (right, total) = match (graph, image) {
        (Some(v), _) => graph::eval_graph(&a.model, v, &device)?,
        (None, Some(kind)) => image::accuracy(
            &a.model,
            &kind,
            a.img_size.map(|side| (side, a.rate)),
            &device,
        )?,
        (None, None) => sequence::accuracy(&sequence::load(&a.model, &device)?, &device)?,
    };
    println!(
        "{{\"test_accuracy\": {:.4}, \"right\": {right}, \"total\": {total}}}",
        right as f64 / total as f64
    );
    Ok(())
}
