//! `zoo logits`: the logits of a model for rows of token ids, written as safetensors.

use crate::common::args::{DeviceArgs, PrecisionArgs, parse_ids};
use crate::common::error::{CliError, CliResult};
use burn::tensor::{Int, Tensor, TensorData};
use clap::Args;
use ssm_models::lm::{CausalLm, MambaLm};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct LogitsArgs {
    /// Model directory: config.json and model.safetensors or pytorch_model.bin.
    #[arg(long)]
    model: PathBuf,
    /// Token rows, e.g. "1,2,3;4,5,6" (rows of equal length).
    #[arg(long)]
    ids: String,
    /// Output file; holds the f32 tensor `logits` (B, L, V).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    precision: PrecisionArgs,
}

pub fn run(a: LogitsArgs) -> CliResult {
    let rows = parse_ids(&a.ids)?;
    let len = rows[0].len();
    if rows.iter().any(|r| r.len() != len) {
        return Err(CliError::Usage(
            "--ids rows must all have the same length".into(),
        ));
    }
    let device = a.device.resolve()?;
    let model = a
        .precision
        .apply(MambaLm::load_dir(&a.model, &device)?, &device)?;
    model.check_ids(&rows)?;
    model.check_fits(rows.len(), len, true, true)?;
    let flat: Vec<i64> = rows.iter().flatten().map(|&t| t as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [rows.len(), len]), &device);
    let logits = model.forward(ids);
    let dims = logits.dims();
    let values = logits
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| CliError::Io(format!("{e:?}")))?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, dims.to_vec(), &bytes)
        .map_err(|e| CliError::Io(e.to_string()))?;
    safetensors::serialize_to_file([("logits", view)], None, &a.out)
        .map_err(|e| CliError::Io(format!("cannot write {}: {e}", a.out.display())))?;
    eprintln!("wrote logits {:?} to {}", dims, a.out.display());
    Ok(())
}
