//! `zoo generate`: text or token generation from a model directory, streamed as it decodes.

use crate::common::args::{DeviceArgs, PrecisionArgs, SeedArgs, parse_ids};
use crate::common::error::{CliError, CliResult};
use clap::Args;
use ssm_models::lm::tokenizer::{TextStream, TextTokenizer};
use ssm_models::lm::{GenerationConfig, MambaLm, Sampling, generate};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model directory: config.json and model.safetensors or pytorch_model.bin.
    #[arg(long)]
    model: PathBuf,
    /// Prompt token rows, e.g. "1,2,3;4,5,6".
    #[arg(long, conflicts_with = "prompt")]
    ids: Option<String>,
    /// Prompt text (needs a tokenizer.json).
    #[arg(long)]
    prompt: Option<String>,
    /// tokenizer.json (default: the one in the model directory, if any).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Greedy decoding (the default unless --temperature is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    greedy: bool,
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[command(flatten)]
    seed: SeedArgs,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// Print one JSON object {"tokens": [[...], ...]} with the new tokens only.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    precision: PrecisionArgs,
}

pub fn run(a: GenerateArgs) -> CliResult {
    let tokenizer_path = a
        .tokenizer
        .clone()
        .or_else(|| Some(a.model.join("tokenizer.json")).filter(|p| p.is_file()));
    let tokenizer = match &tokenizer_path {
        Some(p) => Some(TextTokenizer::from_file(p)?),
        None => None,
    };
    let rows = match (&a.ids, &a.prompt) {
        (Some(ids), _) => parse_ids(ids)?,
        (None, Some(text)) => {
            let tok = tokenizer.as_ref().ok_or_else(|| {
                CliError::Usage(
                    "--prompt needs a tokenizer: pass --tokenizer FILE or put tokenizer.json in the model directory"
                        .into(),
                )
            })?;
            vec![tok.encode(text)?]
        }
        (None, None) => return Err(CliError::Usage("give --ids or --prompt".into())),
    };
    let sampling = match (a.greedy, a.temperature) {
        (true, _) | (false, None) if a.top_k.is_none() && a.top_p.is_none() => Sampling::Greedy,
        _ => Sampling::Sample {
            temperature: a.temperature.unwrap_or(1.0),
            top_k: a.top_k,
            top_p: a.top_p,
        },
    };
    let device = a.device.resolve()?;
    let model = a
        .precision
        .apply(MambaLm::load_dir(&a.model, &device)?, &device)?;
    let config = GenerationConfig {
        max_new_tokens: a.max_new_tokens,
        sampling,
        repetition_penalty: a.repetition_penalty,
        seed: a.seed.seed,
        eos_token_id: if a.ignore_eos {
            None
        } else {
            model.eos_token_id
        },
    };
    config.validate()?;
    let mut streams: Vec<Option<TextStream>> = rows
        .iter()
        .map(|row| {
            tokenizer
                .as_ref()
                .map(|t| TextStream::new(t, row))
                .transpose()
        })
        .collect::<Result<_, _>>()?;
    let single = rows.len() == 1;
    if !a.json
        && single
        && let (Some(tok), Some(_)) = (&tokenizer, &a.prompt)
    {
        print!("{}", tok.decode(&rows[0])?);
    }
    let mut stream_err = None;
    let out = generate(&model, &rows, &config, |row, token| {
        if a.json {
            return;
        }
        let piece = match streams[row].as_mut() {
            Some(s) => match s.push(token) {
                Ok(t) => t,
                Err(e) => {
                    stream_err.get_or_insert(e);
                    String::new()
                }
            },
            None => format!(" {token}"),
        };
        if single {
            print!("{piece}");
        } else {
            print!("[{row}]{piece} ");
        }
        let _ = std::io::stdout().flush();
    })?;
    if let Some(e) = stream_err {
        return Err(e.into());
    }
    if a.json {
        println!("{}", serde_json::json!({ "tokens": out }));
    } else {
        println!();
    }
    Ok(())
}
