//! A language-model run of `zoo train lm` and `zoo demo`: a Mamba, Mamba2 or Mamba-3 trained on
//! text by the library's trainer ([`ssm_models::lm::train::Trainer`]: the reference recipe on
//! packed documents that never see each other, atomic checkpoints that a run killed at any
//! moment resumes from exactly, data-parallel replicas), and the result saved as a Hugging Face
//! model directory (`config.json`, `model.safetensors`, `tokenizer.json`; Mamba-3, which
//! transformers lacks, in state-spaces/mamba's layout). This file holds the arguments, the
//! tokenizer and the token cache, the progress bar and the printing.

use super::args::{RunArgs, dtype_arg};
use super::choices::Arch;
use super::error::{CliError, CliResult, usage};
use burn::tensor::{Device, FloatDType};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ssm_datasets::text::{TokenDocs, default_text_path, read_documents};
use ssm_models::checkpoint::write_atomic;
use ssm_models::lm::tokenizer::{BYTE_EOS, TextTokenizer, byte_level_tokenizer_json};
use ssm_models::lm::train::{
    CheckpointDir, ContentKey, EvalLog, LmData, RunLength, RunStart, StepReport, TrainError,
    TrainObserver, Trained, Trainer, TrainerConfig,
};
use ssm_models::lm::{Mamba2Settings, Mamba3Settings, MambaLmConfig};
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
#[command(mut_arg("out", |a| a.help(
    "The run folder: checkpoints, token cache, metrics, and the final model (default \
     runs/lm-<arch>)"
)))]
pub struct LmArgs {
    /// Training text: plain-text files (one document each), `.jsonl` files (a `text` field per
    /// line), or token files (`.tokens`, `.bin`); any of them gzipped. Default: the shipped
    /// Shakespeare (290 documents, 1 MB).
    #[arg(long, num_args = 1..)]
    pub text: Vec<PathBuf>,
    /// A `tokenizer.json` (Hugging Face tokenizers). Without it the model reads bytes.
    #[arg(long, conflicts_with = "bytes")]
    pub tokenizer: Option<PathBuf>,
    /// Byte-level model (256 byte tokens + end of text); the default without --tokenizer.
    #[arg(long)]
    pub bytes: bool,
    /// Mamba-3 is saved in state-spaces/mamba's layout (transformers has no Mamba-3).
    #[arg(long, value_enum, default_value = "mamba")]
    pub arch: Arch,
    #[arg(long, default_value_t = 256)]
    pub d_model: usize,
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// SSM state size N (default 16 for Mamba, 64 for Mamba2 and Mamba-3).
    #[arg(long)]
    pub d_state: Option<usize>,
    /// Mamba2 and Mamba-3 channels per head.
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Optimizer steps (default: one epoch of the training rows).
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<usize>,
    /// Epochs over the training rows (instead of --steps).
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// The cosine ends at lr x this.
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// AdamW weight decay of the weight matrices (not of embeddings, norms, biases, A_log, D).
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Clip the gradient's global norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub accumulate: usize,
    /// Fraction of the documents held out for validation.
    #[arg(long, default_value_t = 0.05)]
    pub val_fraction: f64,
    /// Validation batches per evaluation (at most all validation rows).
    #[arg(long, default_value_t = 8)]
    pub val_batches: usize,
    /// Evaluate every this many steps (and at the end).
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    /// Write a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: usize,
    #[command(flatten)]
    pub run: RunArgs,
    /// Data-parallel training on several devices (`cuda:0,cuda:1`, `wgpu:0,wgpu:1`, any mix):
    /// each holds a replica of the model and takes its own micro-batch; their gradients are
    /// gathered and summed on the first, which steps the optimizer and evaluates. A step then
    /// sees batch-size x accumulate x devices rows. Replaces --device.
    #[arg(long, value_delimiter = ',', num_args = 1.., conflicts_with = "device")]
    pub devices: Vec<String>,
    /// Continue from the newest checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// f32 or bf16: bf16 runs the forward and backward in bf16 from f32 master weights (the
    /// optimizer, its state and the checkpoints stay f32; the SSM state, norms and residual
    /// stream compute in f32). f16 is refused: it needs loss scaling, which this loop has not.
    #[arg(long, value_parser = dtype_arg, default_value = "f32")]
    pub dtype: FloatDType,
    /// Train even when the memory estimate (weights, gradients, optimizer state, one
    /// micro-batch's activations and logits) exceeds what the machine has available (also
    /// SSM_ZOO_FORCE=1).
    #[arg(long)]
    pub force: bool,
}

/// A finished run and the folder it was saved in.
pub struct TrainedRun {
    pub trained: Trained,
    pub out: PathBuf,
}

/// Where the output goes and how progress is shown.
pub struct LmProgress {
    /// Show a bar (else plain lines).
    pub bar: bool,
    /// Print a line at each evaluation.
    pub verbose: bool,
}

const CHECKPOINTS: &str = "checkpoints";

/// Trains as `a` says (the loop is [`Trainer::fit`]) and saves the model, its tokenizer and
/// the metrics in the run folder.
pub fn train(a: &LmArgs, progress: &LmProgress) -> CliResult<TrainedRun> {
    check_args(a)?;
    let devices: Vec<Device> = if a.devices.is_empty() {
        vec![a.run.device()?]
    } else {
        a.devices
            .iter()
            .map(|d| Ok(ssm_backends::parse_device(Some(d))?))
            .collect::<CliResult<_>>()?
    };
    let out = a.run.out_or(match a.arch {
        Arch::Mamba => "runs/lm-mamba",
        Arch::Mamba2 => "runs/lm-mamba2",
        Arch::Mamba3 => "runs/lm-mamba3",
    });
    std::fs::create_dir_all(&out)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", out.display())))?;
    let ckpt_dir = out.join(CHECKPOINTS);
    // Refused before the text is read (the trainer checks again).
    CheckpointDir::new(&ckpt_dir)
        .to_resume(a.resume)
        .map_err(|e| lm_error(e, &out))?;

    // Data: tokenized once, cached in the run folder.
    let (tokenizer, eos, tokenizer_json) = load_tokenizer(a)?;
    let (docs, data_key) = tokens(a, &tokenizer, &tokenizer_json, eos, &out)?;
    let vocab = tokenizer.vocab_size().max(eos as usize + 1);
    let data = LmData::new(docs, eos, vocab, a.val_fraction)
        .map_err(|e| lm_error(e, &out))?
        .with_key(data_key);
    let config = TrainerConfig {
        seq_len: a.seq_len,
        batch_size: a.batch_size,
        accumulate: a.accumulate,
        length: match (a.steps, a.epochs) {
            (Some(s), _) => RunLength::Steps(s),
            (None, Some(e)) => RunLength::Epochs(e),
            (None, None) => RunLength::Epochs(1.0),
        },
        lr: a.lr,
        min_lr_ratio: a.min_lr_ratio,
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        grad_clip: a.grad_clip,
        val_batches: a.val_batches,
        eval_every: a.eval_every,
        checkpoint_every: a.checkpoint_every,
        seed: a.run.seed(),
        dtype: a.dtype,
        force: a.force,
        ..TrainerConfig::new(lm_config(a, vocab, eos))
    };
    let mut shown = Shown {
        a,
        progress,
        ckpt_dir: &ckpt_dir,
        bar: None,
        lr: 0.0,
        tokens_per_s: 0.0,
    };
    let trained = Trainer::new(config, devices)
        .with_checkpoints(&ckpt_dir, a.resume)
        .fit(&data, &mut shown);
    let trained = match trained {
        Ok(t) => t,
        Err(e) => {
            if let Some(bar) = &shown.bar {
                bar.abandon();
            }
            return Err(lm_error(e, &out));
        }
    };

    trained.save_model(&out)?;
    write_atomic(&out.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    trained.write_metrics(&out.join("metrics.json"))?;
    Ok(TrainedRun { trained, out })
}

/// The trainer's errors in the command line's words (its flags named).
fn lm_error(e: TrainError, out: &Path) -> CliError {
    match e {
        TrainError::Model(e) => CliError::Model(e),
        TrainError::EarlierRun { .. } => usage(format!(
            "{} holds checkpoints of an earlier run: pass --resume to continue it, or choose \
             another --out",
            out.display()
        )),
        TrainError::OtherSettings { dir, differences } => usage(format!(
            "{} was written by a run with other settings: {}; resume with the same flags and \
             text, or choose another --out",
            dir.display(),
            differences.join(", ")
        )),
        TrainError::ValidationRows(e) => usage(format!(
            "validation text: {e} (lower --seq-len, raise --val-fraction, or set it to 0)"
        )),
        TrainError::Diverged { step, loss } => usage(format!(
            "the loss is {loss} at step {step}: lower --lr or raise --warmup"
        )),
        TrainError::Invalid(m) => usage(m),
        e @ (TrainError::Data(_)
        | TrainError::TokenOutOfVocab { .. }
        | TrainError::Checkpoint { .. }) => CliError::Io(e.to_string()),
    }
}

/// The progress bar and the lines `zoo train lm` prints, told by the trainer.
struct Shown<'a> {
    a: &'a LmArgs,
    progress: &'a LmProgress,
    ckpt_dir: &'a Path,
    bar: Option<ProgressBar>,
    /// The last step's learning rate and the session's throughput, for the evaluation lines.
    lr: f64,
    tokens_per_s: f64,
}

impl TrainObserver for Shown<'_> {
    fn start(&mut self, run: &RunStart<'_>) {
        let a = self.a;
        if self.progress.verbose {
            match run.resumed {
                Some((step, dir)) => {
                    println!(
                        "resuming from {} (step {step} of {})",
                        dir.display(),
                        run.steps
                    )
                }
                None if a.resume => println!(
                    "no checkpoint in {}: starting from step 0",
                    self.ckpt_dir.display()
                ),
                None => {}
            }
            println!(
                "{:?}: d_model {}, {} layers, d_state {}, vocab {}; {} parameters; {} training \
                 rows of {} tokens ({} documents), {} validation rows; {} steps of {} tokens; \
                 device {:?}",
                a.arch,
                a.d_model,
                a.layers,
                run.run.d_state,
                run.run.vocab,
                run.params,
                run.train_rows,
                a.seq_len,
                run.train_docs,
                run.val_rows,
                run.steps,
                run.tokens_per_step,
                run.device,
            );
        }
        let steps = run.steps as u64;
        let bar = if self.progress.bar {
            let bar = ProgressBar::new(steps);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {elapsed_precise} (ETA {eta})  {msg}",
                )
                .expect("a valid template"),
            );
            bar.set_position(run.step as u64);
            bar
        } else {
            ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::hidden())
        };
        self.bar = Some(bar);
    }

    fn step(&mut self, s: &StepReport<'_>) {
        (self.lr, self.tokens_per_s) = (s.log.lr, s.tokens_per_s);
        if let Some(bar) = &self.bar {
            bar.set_position(s.log.step as u64);
            bar.set_message(format!(
                "loss {:.3}  lr {:.2e}  {:.0} tokens/s",
                s.log.loss, s.log.lr, s.tokens_per_s
            ));
        }
    }

    fn eval(&mut self, e: &EvalLog, train_loss: Option<f64>) {
        let (Some(train_loss), true) = (train_loss, self.progress.verbose) else {
            return;
        };
        let (lr, tok_s) = (self.lr, self.tokens_per_s);
        let line = || {
            println!(
                "step {:>6}  train loss {train_loss:.4}  val loss {:.4}  val ppl {:.3}  \
                 lr {lr:.2e}  {tok_s:.0} tokens/s",
                e.step, e.val_loss, e.val_ppl
            )
        };
        match &self.bar {
            Some(bar) => bar.suspend(line),
            None => line(),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

fn check_args(a: &LmArgs) -> CliResult {
    let positive = [
        ("--d-model", a.d_model),
        ("--layers", a.layers),
        ("--head-dim", a.head_dim),
        ("--seq-len", a.seq_len),
        ("--batch-size", a.batch_size),
        ("--accumulate", a.accumulate),
        ("--val-batches", a.val_batches),
        ("--eval-every", a.eval_every),
        ("--checkpoint-every", a.checkpoint_every),
    ];
    if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(usage(format!("{name} must be at least 1")));
    }
    if a.steps == Some(0) || a.epochs.is_some_and(|e| e.is_nan() || e <= 0.0) {
        return Err(usage("--steps and --epochs must be positive"));
    }
    if !(a.lr > 0.0 && a.lr <= 1.0) {
        return Err(usage(format!("--lr must be in (0, 1], found {}", a.lr)));
    }
    if !(0.0..=1.0).contains(&a.min_lr_ratio) {
        return Err(usage("--min-lr-ratio must be in [0, 1]"));
    }
    if a.weight_decay.is_nan() || a.weight_decay < 0.0 || a.grad_clip.is_nan() || a.grad_clip < 0.0
    {
        return Err(usage("--weight-decay and --grad-clip must be at least 0"));
    }
    if a.dtype == FloatDType::F16 {
        return Err(usage(
            "--dtype f16 training needs loss scaling (f16 gradients underflow), which this loop \
             has not: use --dtype bf16 (same range as f32) or f32",
        ));
    }
    if a.arch != Arch::Mamba && !(2 * a.d_model).is_multiple_of(a.head_dim) {
        return Err(usage(format!(
            "{:?} needs --head-dim to divide 2 x --d-model = {}, found {}",
            a.arch,
            2 * a.d_model,
            a.head_dim
        )));
    }
    Ok(())
}

fn data_err(e: ssm_datasets::DataFileError) -> CliError {
    CliError::Io(e.to_string())
}

/// The model's config: the vocabulary rounded up to a multiple of 8 (written as such into
/// `config.json`, so transformers sees the same embedding).
fn lm_config(a: &LmArgs, vocab: usize, eos: u32) -> MambaLmConfig {
    let mut c = MambaLmConfig::new(a.d_model, a.layers, vocab.div_ceil(8) * 8)
        .with_pad_vocab_size_multiple(1)
        .with_eos_token_id(Some(eos as usize));
    match a.arch {
        Arch::Mamba => c.d_state = a.d_state.unwrap_or(16),
        Arch::Mamba2 => {
            c.d_state = a.d_state.unwrap_or(64);
            c.mamba2 = Some(Mamba2Settings::new().with_head_dim(a.head_dim));
        }
        Arch::Mamba3 => {
            c.d_state = a.d_state.unwrap_or(64);
            c.mamba3 = Some(Mamba3Settings::new().with_head_dim(a.head_dim));
        }
    }
    c
}

/// The tokenizer, its end-of-text id and its `tokenizer.json` text.
fn load_tokenizer(a: &LmArgs) -> CliResult<(TextTokenizer, u32, String)> {
    match &a.tokenizer {
        None => Ok((
            TextTokenizer::bytes(),
            BYTE_EOS as u32,
            byte_level_tokenizer_json(),
        )),
        Some(p) => {
            let json = std::fs::read_to_string(p)
                .map_err(|e| CliError::Io(format!("cannot read {}: {e}", p.display())))?;
            let t = TextTokenizer::from_json(&json)
                .map_err(|e| CliError::Io(format!("{}: {e}", p.display())))?;
            let eos = t.eos_token_id().ok_or_else(|| {
                usage(format!(
                    "{} has no end-of-text token (<|endoftext|>, </s>, <eos> or [SEP])",
                    p.display()
                ))
            })?;
            Ok((t, eos as u32, json))
        }
    }
}

/// The documents as tokens, from the cache in `out` when it holds this text under this
/// tokenizer, and the cache key (a hash of the input files' contents and the tokenizer's
/// `tokenizer.json` text).
fn tokens(
    a: &LmArgs,
    tokenizer: &TextTokenizer,
    tokenizer_json: &str,
    eos: u32,
    out: &Path,
) -> CliResult<(TokenDocs, String)> {
    let files = if a.text.is_empty() {
        vec![default_text_path()]
    } else {
        a.text.clone()
    };
    // FNV-1a, 64 bits: stable across builds and machines.
    let mut h = ContentKey::new();
    h.update(tokenizer_json.as_bytes());
    for f in &files {
        let bytes = std::fs::read(f)
            .map_err(|e| CliError::Io(format!("cannot read {}: {e}", f.display())))?;
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let key = h.hex();
    let cache = out.join(format!("tokens-{key}.tokens"));
    if cache.is_file()
        && let Ok(docs) = TokenDocs::read(&cache, eos)
    {
        return Ok((docs, key));
    }
    let mut docs = Vec::new();
    for f in &files {
        let name = f.to_string_lossy();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".tokens") || name.ends_with(".bin") {
            docs.extend(TokenDocs::read(f, eos).map_err(data_err)?.docs);
            continue;
        }
        for text in read_documents(f).map_err(data_err)? {
            let ids: Vec<u32> = if a.tokenizer.is_none() {
                text.bytes().map(u32::from).collect()
            } else {
                tokenizer
                    .encode(&text)?
                    .into_iter()
                    .map(|i| i as u32)
                    .collect()
            };
            if !ids.is_empty() {
                docs.push(ids);
            }
        }
    }
    let docs = TokenDocs { docs };
    write_atomic(&cache, &docs.to_bytes())?;
    Ok((docs, key))
}
