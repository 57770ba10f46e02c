//! `zoo demo`: trains a small byte-level Mamba language model on the shipped Shakespeare for a
//! fixed number of steps (seeded, so every machine gets the same model whatever its load), then
//! reports its held-out loss against a model that knows only byte frequencies, and writes a few
//! lines from prompts.

use crate::common::args::RunArgs;
use crate::common::choices::Arch;
use crate::common::error::{CliError, CliResult, usage};
use crate::common::lm::{self, LmArgs, LmProgress};
use clap::Args;
use ssm_datasets::text::{default_text_path, read_documents};
use ssm_models::lm::tokenizer::TextTokenizer;
use ssm_models::lm::{GenerationConfig, Sampling, generate};

// The demo's `--device` defaults to the CPU, not `auto`: the README quotes its figure, which a
// GPU would compute with other roundings. (A plain comment: a doc comment here would become the
// command's description.)
#[derive(Args, Debug)]
#[command(
    mut_arg("device", |a| a.default_value("cpu").help(
        "cpu (the default: the demo prints the same figure on every machine, the one the \
         README quotes), auto, ndarray, wgpu, wgpu:N, cuda, cuda:N"
    )),
    mut_arg("out", |a| a.default_value("runs/demo").help(
        "The run folder (the model is saved there as a Hugging Face directory; each demo run \
         starts over)"
    ))
)]
pub struct DemoArgs {
    /// Optimizer steps (of 16 rows x 128 bytes).
    #[arg(long, default_value_t = 600)]
    steps: usize,
    /// Bytes written per prompt.
    #[arg(long, default_value_t = 160)]
    new_bytes: usize,
    #[command(flatten)]
    run: RunArgs,
}

const PROMPTS: [&str; 3] = [
    "Shall I compare thee to a summer's day?\n",
    "ROMEO AND JULIET\nACT II.\n\nScene II. Capulet's orchard.\n\nRom.\n",
    "Ham.\nTo be, or not to be,",
];

pub fn run(a: DemoArgs) -> CliResult {
    if a.steps == 0 || a.new_bytes == 0 {
        return Err(usage("--steps and --new-bytes must be at least 1"));
    }
    let out = a.run.out_or("runs/demo");
    let seed = a.run.seed();
    let args = LmArgs {
        text: Vec::new(),
        tokenizer: None,
        bytes: true,
        arch: Arch::Mamba,
        d_model: 128,
        layers: 4,
        d_state: Some(16),
        head_dim: 64,
        seq_len: 128,
        batch_size: 16,
        steps: Some(a.steps),
        epochs: None,
        lr: 3e-3,
        min_lr_ratio: 0.1,
        warmup: (a.steps / 10).max(1),
        weight_decay: 0.1,
        grad_clip: 1.0,
        accumulate: 1,
        val_fraction: 0.05,
        val_batches: 16,
        eval_every: a.steps,
        checkpoint_every: a.steps,
        run: RunArgs {
            out: Some(out.clone()),
            ..a.run
        },
        devices: Vec::new(),
        resume: false,
        dtype: burn::tensor::FloatDType::F32,
        force: false,
    };
    // Each demo run starts over.
    let _ = std::fs::remove_dir_all(out.join("checkpoints"));
    println!(
        "A byte-level Mamba (d_model 128, 4 layers, d_state 16) learns to write like Shakespeare: \
         {} steps on the shipped text (the sonnets and eight plays, 290 documents packed into \
         rows of 128 bytes, 5% of the documents held out), seed {}.",
        a.steps, seed
    );
    let run = lm::train(
        &args,
        &LmProgress {
            bar: true,
            verbose: false,
        },
    )?;
    let trained = &run.trained;
    let val = trained.evals.last().expect("a validation split").val_loss;
    let unigram = unigram_bits()?;
    println!(
        "held-out loss: {:.3} bits per byte (perplexity {:.2}); a model of byte frequencies alone: \
         {:.3} bits per byte",
        val / std::f64::consts::LN_2,
        val.exp(),
        unigram
    );
    let tok = TextTokenizer::bytes();
    let prompts: Vec<Vec<usize>> = PROMPTS
        .iter()
        .map(|p| tok.encode(p))
        .collect::<Result<_, _>>()?;
    let config = GenerationConfig {
        max_new_tokens: a.new_bytes,
        sampling: Sampling::Sample {
            temperature: 0.7,
            top_k: None,
            top_p: Some(0.95),
        },
        repetition_penalty: 1.0,
        seed,
        eos_token_id: trained.model.eos_token_id,
    };
    let out = generate(&trained.model, &prompts, &config, |_, _| {})?;
    for (p, new) in prompts.iter().zip(out) {
        let new: Vec<usize> = new.into_iter().filter(|&t| t < 256).collect();
        println!(
            "\n--- prompt + {} sampled bytes (temperature 0.7):",
            new.len()
        );
        println!("{}{}", tok.decode(p)?, tok.decode(&new)?);
    }
    println!(
        "\nthe model is in {} (config.json, model.safetensors, tokenizer.json): \
         `zoo generate --model {} --prompt \"...\"` continues any text",
        run.out.display(),
        run.out.display()
    );
    Ok(())
}

/// The entropy of the shipped text's bytes (bits per byte): the loss of a model that knows
/// byte frequencies only.
fn unigram_bits() -> CliResult<f64> {
    let docs = read_documents(&default_text_path()).map_err(|e| CliError::Io(e.to_string()))?;
    let mut counts = [0u64; 256];
    for b in docs.iter().flat_map(|d| d.bytes()) {
        counts[b as usize] += 1;
    }
    let n = counts.iter().sum::<u64>() as f64;
    Ok(counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum())
}
