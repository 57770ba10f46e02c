//! The arguments every command that runs a model shares, flattened into each command's own:
//! [`DeviceArgs`] (`--device`), [`SeedArgs`] (`--seed`) and, for the commands that write a run
//! folder, [`RunArgs`] (both, and `--out`); for inference, [`PrecisionArgs`] (`--dtype`,
//! `--quantize`); and the parsers of token rows and dtypes.

use super::error::{CliError, CliResult};
use burn::tensor::{Device, FloatDType};
use clap::Args;
use ssm_models::lm::MambaLm;
use ssm_models::quantize::Quantization;
use std::path::{Path, PathBuf};

// `--device`, on every command that runs a model. (A plain comment: a doc comment on a
// flattened struct would become the command's description.)
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// auto, cpu, ndarray, wgpu, wgpu:N, cuda, cuda:N. auto: a hardware GPU if this build
    /// reaches one, else the CPU backend (said on stderr); software wgpu adapters (lavapipe)
    /// only when named.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl DeviceArgs {
    /// The device named, or for `auto` the one [`ssm_backends::default_device`] picks, said on
    /// stderr.
    pub fn resolve(&self) -> CliResult<Device> {
        device(&self.device)
    }
}

// `--dtype` and `--quantize`, on the commands that run a language model for inference.
#[derive(Args, Debug, Clone)]
pub struct PrecisionArgs {
    /// f32, f16 or bf16: weights and activations in this dtype, the SSM state, norms and
    /// residual stream in f32 (f16 needs a device with shader-f16, bf16 one with bf16: CUDA
    /// or the CPU; WGSL has none). On the CPU, decoding reads bf16 weights as they are.
    #[arg(long, value_parser = dtype_arg, default_value = "f32")]
    pub dtype: FloatDType,
    /// q8 (or q8:N): the projection, embedding and head weights held as int8 with one f32
    /// scale per block along the reduction axis K: of 128, 64 or 32 (the largest dividing each
    /// matrix's K), or of N (q8:32 is llama.cpp's q8_0); decoding reads a little over a quarter
    /// of the f32 bytes. The dt path, conv, A, D, norms and state stay f32. CPU only (Flex
    /// computes from the int8 values in place).
    #[arg(long, value_parser = quantize_arg)]
    pub quantize: Option<Quantization>,
}

impl PrecisionArgs {
    /// `model` in `--dtype`, then quantized as `--quantize` says.
    ///
    /// # Errors
    /// A quantization with another dtype than f32, or on a device other than the CPU.
    pub fn apply(&self, model: MambaLm, device: &Device) -> CliResult<MambaLm> {
        if model.is_quantized() {
            // A folder written by `zoo quantize`.
            if self.dtype != FloatDType::F32 || self.quantize.is_some() {
                return Err(CliError::Usage(
                    "this model is already quantized (zoo quantize): it computes in f32; drop \
                     --dtype and --quantize"
                        .into(),
                ));
            }
            return Ok(model);
        }
        let Some(q) = self.quantize else {
            return Ok(model.to_dtype(self.dtype)?);
        };
        if self.dtype != FloatDType::F32 {
            return Err(CliError::Usage(
                "--quantize starts from f32 weights: leave --dtype at f32".into(),
            ));
        }
        if !ssm_backends::is_host(device) {
            return Err(CliError::Usage(format!(
                "--quantize runs on the CPU (--device cpu or ndarray), not {device:?}: the \
                 8-bit products are CPU kernels"
            )));
        }
        Ok(q.apply(model)?)
    }
}

/// `--quantize`'s parser: q8 or q8:N ([`Quantization::parse`]).
pub fn quantize_arg(name: &str) -> Result<Quantization, String> {
    Quantization::parse(name).map_err(|e| e.to_string())
}

// `--seed`.
#[derive(Args, Debug, Clone)]
pub struct SeedArgs {
    /// The random seed (initial weights, data order, sampling).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

// `--device`, `--seed` and `--out`, on the commands that write a run folder. Each command
// resolves `--out` to its own default (`runs/<task>`) and may reword its help with
// `#[command(mut_arg("out", ...))]`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub seed: SeedArgs,
    /// The run folder (default runs/TASK).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl RunArgs {
    /// [`DeviceArgs::resolve`].
    pub fn device(&self) -> CliResult<Device> {
        self.device.resolve()
    }

    pub fn seed(&self) -> u64 {
        self.seed.seed
    }

    /// `--out`, or the command's default folder.
    pub fn out_or(&self, default: impl AsRef<Path>) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| default.as_ref().to_path_buf())
    }
}

/// The device a `--device` value names; `auto` (or `default`) is
/// [`ssm_backends::default_device`] (a hardware GPU, else the CPU backend), said on stderr.
pub fn device(spec: &str) -> CliResult<Device> {
    if matches!(
        spec.trim().to_ascii_lowercase().as_str(),
        "auto" | "default"
    ) {
        let (device, why) = ssm_backends::default_device();
        eprintln!("device: {device:?} ({why}; --device picks another)");
        return Ok(device);
    }
    Ok(ssm_backends::parse_device(Some(spec))?)
}

/// `--dtype`'s parser: f32, f16 or bf16 ([`ssm_models::precision`]).
pub fn dtype_arg(name: &str) -> Result<FloatDType, String> {
    ssm_models::precision::parse_dtype(name).map_err(|e| e.to_string())
}

/// Parses `"1,2,3;4,5,6"` into rows of token ids.
pub fn parse_ids(text: &str) -> CliResult<Vec<Vec<usize>>> {
    let mut rows = Vec::new();
    for (i, row) in text.split(';').enumerate() {
        let row = row.trim();
        if row.is_empty() {
            return Err(CliError::Model(ssm_models::ModelError::EmptyPrompt));
        }
        let ids = row
            .split(',')
            .map(|t| {
                t.trim().parse::<usize>().map_err(|_| {
                    CliError::Usage(format!(
                        "--ids row {i}: '{}' is not a token id (expected e.g. \"1,2,3;4,5,6\")",
                        t.trim()
                    ))
                })
            })
            .collect::<CliResult<Vec<_>>>()?;
        rows.push(ids);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows() {
        assert_eq!(
            parse_ids("1,2,3;4, 5,6").unwrap(),
            vec![vec![1, 2, 3], vec![4, 5, 6]]
        );
        assert!(parse_ids("1,x").is_err());
        assert!(parse_ids("").is_err());
        assert!(parse_ids("1;;2").is_err());
        assert!(parse_ids("-1").is_err());
    }
}
