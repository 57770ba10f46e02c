//! A Mamba language model generating text from a checkpoint directory.
//!
//! ```sh
//! cargo run --release -p ssm-models --example mamba_generate -- [MODEL_DIR] [PROMPT]
//! ```
//!
//! `MODEL_DIR` holds what the Hugging Face hub publishes for a Mamba or Mamba2 model
//! (`config.json`, `model.safetensors` or `pytorch_model.bin`, `tokenizer.json`), e.g.
//! `state-spaces/mamba-130m-hf` downloaded by hand. Without arguments it runs on the tiny
//! random-weight checkpoint in `fixtures/mamba_tiny` (its text is noise, but every step runs:
//! loading, tokenizing, a parallel prefill, then one fused recurrent step per token). Set
//! `SSM_ZOO_DEVICE` to `cpu`, `wgpu` or `cuda:0` to choose the device (default: the CPU).

use ssm_models::lm::tokenizer::{TextStream, TextTokenizer};
use ssm_models::lm::{GenerationConfig, MambaLm, generate};
use std::io::Write;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/mamba_tiny");
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map_or_else(|| fixture.join("model"), PathBuf::from);
    let prompt = args
        .next()
        .unwrap_or_else(|| "State space models".to_string());

    // Any device the build has: the CPU (Flex), any GPU through wgpu, NVIDIA through cuda.
    let device = ssm_backends::parse_device(Some(
        &std::env::var("SSM_ZOO_DEVICE").unwrap_or_else(|_| "cpu".into()),
    ))?;
    let model = MambaLm::load_dir(&dir, &device)?;

    // The tokenizer next to the weights, else the fixture's (a GPT-NeoX tokenizer, as Mamba's).
    let tokenizer_path = [dir.join("tokenizer.json"), fixture.join("tokenizer.json")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or("no tokenizer.json next to the model")?;
    let tokenizer = TextTokenizer::from_file(&tokenizer_path)?;
    let ids = tokenizer.encode(&prompt)?;

    let config = GenerationConfig {
        max_new_tokens: 24,
        eos_token_id: model.eos_token_id,
        ..GenerationConfig::default()
    };
    print!("{prompt}");
    let mut stream = TextStream::new(&tokenizer, &ids)?;
    let mut failed = None;
    let new = generate(&model, &[ids], &config, |_row, token| {
        match stream.push(token) {
            Ok(piece) => {
                print!("{piece}");
                let _ = std::io::stdout().flush();
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    })?;
    println!();
    if let Some(e) = failed {
        return Err(e.into());
    }
    println!("({} new tokens: {:?})", new[0].len(), new[0]);
    Ok(())
}
