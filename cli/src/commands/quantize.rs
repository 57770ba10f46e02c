//! `zoo quantize`: a language model's folder written again with 8-bit weights, so that it is
//! quantized once (`ssm_models::quantize::save_quantized`); `zoo generate`, `logits` and
//! `bench lm`-style runs then load it as it is, on the CPU.

use crate::common::args::quantize_arg;
use crate::common::error::{CliError, CliResult};
use clap::Args;
use ssm_models::lm::MambaLm;
use ssm_models::quantize::{Quantization, save_quantized};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// A model folder (config.json and model.safetensors or pytorch_model.bin: transformers'
    /// Mamba/Mamba2 layout or state-spaces').
    #[arg(long)]
    model: PathBuf,
    /// The folder to write (config.json, model.safetensors, the tokenizer files).
    #[arg(long)]
    out: PathBuf,
    /// q8 (blocks of 128, 64 or 32 along K, the largest dividing each matrix's K) or q8:N.
    #[arg(long, value_parser = quantize_arg, default_value = "q8")]
    quantize: Quantization,
}

pub fn run(a: QuantizeArgs) -> CliResult {
    if a.out == a.model {
        return Err(CliError::Usage(
            "--out must be another folder than --model (the original is kept)".into(),
        ));
    }
    let device = ssm_backends::parse_device(Some("cpu"))?;
    let model = a.quantize.apply(MambaLm::load_dir(&a.model, &device)?)?;
    save_quantized(&model, &a.model, &a.out)?;
    let bytes = ssm_models::quantize::stored_bytes(&model);
    eprintln!(
        "wrote {} ({}, {:.1} MB of weights)",
        a.out.display(),
        a.quantize,
        bytes as f64 / 1e6
    );
    Ok(())
}
