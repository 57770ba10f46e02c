//! Trains a small byte-level Mamba on the shipped Shakespeare from plain Rust, then lets it
//! write: the library's trainer with its defaults but for the sizes and a few dozen steps.
//!
//! ```text
//! cargo run --release -p ssm-models --example train_mamba [STEPS] [OUT]
//! ```
//!
//! With OUT, checkpoints go to OUT/checkpoints (run it again to resume) and the model is saved
//! in OUT as a Hugging Face directory.

use burn::tensor::Device;
use ssm_datasets::text::{TokenDocs, default_text_path, read_documents};
use ssm_models::lm::tokenizer::{BYTE_EOS, TextTokenizer};
use ssm_models::lm::train::{
    EvalLog, LmData, RunLength, StepReport, TrainObserver, Trainer, TrainerConfig,
};
use ssm_models::lm::{GenerationConfig, MambaLmConfig, Sampling, generate};
use std::path::PathBuf;

/// Prints a line every 10 steps and at each evaluation.
struct Print;

impl TrainObserver for Print {
    fn step(&mut self, s: &StepReport<'_>) {
        if s.log.step.is_multiple_of(10) {
            println!("step {:>3}/{}  loss {:.3}", s.log.step, s.steps, s.log.loss);
        }
    }
    fn eval(&mut self, e: &EvalLog, _train_loss: Option<f64>) {
        println!(
            "step {:>3}  validation loss {:.3} nats/byte",
            e.step, e.val_loss
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map_or(Ok(40), |s| s.parse())?;
    let out = args.next().map(PathBuf::from);

    // The shipped text as bytes, one document per sonnet or scene; 5% of them held out.
    let docs = read_documents(&default_text_path())?
        .iter()
        .map(|d| d.bytes().map(u32::from).collect())
        .collect();
    let eos = BYTE_EOS as u32; // 256: the separator between documents
    let data = LmData::new(TokenDocs { docs }, eos, BYTE_EOS + 1, 0.05)?;

    // A 2-layer Mamba of width 64 over 257 byte tokens (the embedding padded to 264).
    let model = MambaLmConfig::new(64, 2, 257).with_eos_token_id(Some(BYTE_EOS));
    let config = TrainerConfig {
        seq_len: 64,
        batch_size: 8,
        length: RunLength::Steps(steps),
        lr: 3e-3,
        warmup: steps / 10 + 1,
        eval_every: 20,
        val_batches: 4,
        ..TrainerConfig::new(model)
    };
    let mut trainer = Trainer::new(config, vec![Device::flex()]);
    if let Some(out) = &out {
        trainer = trainer.with_checkpoints(out.join("checkpoints"), true);
    }
    let trained = trainer.fit(&data, &mut Print)?;
    if let Some(out) = &out {
        trained.save_model(out)?;
        println!("saved {}", out.display());
    }

    // Let it write.
    let tok = TextTokenizer::bytes();
    let prompt = tok.encode("Shall I compare thee")?;
    let config = GenerationConfig {
        max_new_tokens: 60,
        sampling: Sampling::Sample {
            temperature: 0.7,
            top_k: None,
            top_p: Some(0.95),
        },
        repetition_penalty: 1.0,
        seed: 0,
        eos_token_id: Some(BYTE_EOS),
    };
    let new = generate(
        &trained.model,
        std::slice::from_ref(&prompt),
        &config,
        |_, _| {},
    )?
    .remove(0);
    let new: Vec<usize> = new.into_iter().filter(|&t| t < 256).collect();
    println!("{}{}", tok.decode(&prompt)?, tok.decode(&new)?);
    Ok(())
}
