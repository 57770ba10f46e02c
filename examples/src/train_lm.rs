//! `zoo train lm`: a Mamba, Mamba2 or Mamba-3 language model trained on text with the reference
//! recipe (`ssm_models::lm::train`), on packed documents that never see each other, with atomic
//! checkpoints that a run killed at any moment resumes from exactly, and the result saved as a
//! Hugging Face model directory (`config.json`, `model.safetensors`, `tokenizer.json`; Mamba-3,
//! which transformers lacks, in state-spaces/mamba's layout).
//!
//! The loop is ours, on Burn's optimizer, gradient accumulator and burnpack store, rather than
//! burn-train's `Learner`: the Learner checkpoints at epoch ends only and restarts an epoch's
//! data from its beginning, where this needs a checkpoint every N steps and a resume that
//! continues the same batch stream.

use crate::common::{CliError, CliResult, device, usage};
use crate::train::{load_weights, save_weights};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, FloatDType};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use ssm_datasets::text::{PackedRows, TokenDocs, batch_rows, default_text_path, read_documents};
use ssm_models::io::write_atomic;
use ssm_models::lm::tokenizer::{BYTE_EOS, TextTokenizer, byte_level_tokenizer_json};
use ssm_models::lm::train::{PackedLm, clip_grad_norm, lm_optimizer, token_losses, warmup_cosine};
use ssm_models::lm::{Mamba2Settings, Mamba3Settings, MambaLm, MambaLmConfig};
use ssm_models::precision::{cast_params, check_dtype, dtype_name};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The language-model architectures `zoo train lm` builds.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Mamba,
    Mamba2,
    /// Mamba-3 (SISO); saved in state-spaces/mamba's layout (transformers has no Mamba-3).
    Mamba3,
}

#[derive(Args, Debug, Clone, Serialize, Deserialize)]
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
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The run folder: checkpoints, token cache, metrics, and the final model (default
    /// runs/lm-<arch>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu, ndarray, wgpu, wgpu:N, cuda:N (default cpu).
    #[arg(long, default_value = "cpu")]
    pub device: String,
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
    #[arg(long, value_parser = crate::common::dtype_arg, default_value = "f32")]
    pub dtype: FloatDType,
}

/// The settings that decide a run's trajectory: a checkpoint resumes only under the same ones.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct RunKey {
    arch: Arch,
    d_model: usize,
    layers: usize,
    d_state: usize,
    head_dim: usize,
    vocab: usize,
    seq_len: usize,
    batch_size: usize,
    accumulate: usize,
    replicas: usize,
    steps: usize,
    lr: f64,
    min_lr_ratio: f64,
    warmup: usize,
    weight_decay: f64,
    grad_clip: f64,
    seed: u64,
    data: String,
    /// The compute dtype (runs from before the option existed were f32).
    #[serde(default = "f32_name")]
    dtype: String,
}

fn f32_name() -> String {
    "f32".into()
}

/// One optimizer step's record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StepLog {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

/// One evaluation.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EvalLog {
    pub step: usize,
    pub val_loss: f64,
    pub val_ppl: f64,
}

/// What a checkpoint holds besides the model and the optimizer.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct TrainState {
    run: RunKey,
    /// Steps done.
    step: usize,
    history: Vec<StepLog>,
    evals: Vec<EvalLog>,
}

/// A finished run.
pub struct Trained {
    pub model: MambaLm,
    pub evals: Vec<EvalLog>,
    pub out: PathBuf,
}

/// Where the output goes and how progress is shown.
pub struct Progress {
    /// Show a bar (else plain lines).
    pub bar: bool,
    /// Print a line at each evaluation.
    pub verbose: bool,
}

pub fn run(a: LmArgs) -> CliResult {
    let trained = train(
        &a,
        &Progress {
            bar: true,
            verbose: true,
        },
    )?;
    let last = trained.evals.last();
    println!(
        "saved {} (config.json, model.safetensors, tokenizer.json, metrics.json){}",
        trained.out.display(),
        last.map_or(String::new(), |e| format!(
            "; validation loss {:.4} nats/token, perplexity {:.3}",
            e.val_loss, e.val_ppl
        ))
    );
    Ok(())
}

const CHECKPOINTS: &str = "checkpoints";

/// Trains as `a` says; see the module doc.
pub fn train(a: &LmArgs, progress: &Progress) -> CliResult<Trained> {
    check_args(a)?;
    let devices: Vec<Device> = if a.devices.is_empty() {
        vec![device(Some(&a.device))?]
    } else {
        a.devices
            .iter()
            .map(|d| device(Some(d)))
            .collect::<CliResult<_>>()?
    };
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(match a.arch {
            Arch::Mamba => "runs/lm-mamba",
            Arch::Mamba2 => "runs/lm-mamba2",
            Arch::Mamba3 => "runs/lm-mamba3",
        })
    });
    std::fs::create_dir_all(&out)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", out.display())))?;
    let ckpt_dir = out.join(CHECKPOINTS);
    let newest = checkpoints(&ckpt_dir).pop();
    if newest.is_some() && !a.resume {
        return Err(usage(format!(
            "{} holds checkpoints of an earlier run: pass --resume to continue it, or choose \
             another --out",
            out.display()
        )));
    }

    // Data: tokenized once, cached in the run folder.
    let (tokenizer, eos, tokenizer_json) = load_tokenizer(a)?;
    let (docs, data_key) = tokens(a, &tokenizer, &tokenizer_json, eos, &out)?;
    let vocab = tokenizer.vocab_size().max(eos as usize + 1);
    if let Some(m) = docs.max_id()
        && m as usize >= vocab
    {
        return Err(CliError::Io(format!(
            "the text holds token id {m}, outside the vocabulary of {vocab}"
        )));
    }
    let (train_docs, val_docs) = docs.split(a.val_fraction).map_err(data_err)?;
    let train_rows = PackedRows::new(&train_docs, eos, a.seq_len).map_err(data_err)?;
    let val_rows = if val_docs.docs.is_empty() {
        None
    } else {
        Some(PackedRows::new(&val_docs, eos, a.seq_len).map_err(|e| {
            CliError::Usage(format!(
                "validation text: {e} (lower --seq-len, raise --val-fraction, or set it to 0)"
            ))
        })?)
    };
    let micro = a.batch_size;
    let replicas = devices.len();
    let per_step = micro * a.accumulate * replicas;
    let steps = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => ((e * train_rows.len() as f64) / per_step as f64).ceil() as usize,
        (None, None) => train_rows.len().div_ceil(per_step),
    }
    .max(1);

    let config = lm_config(a, vocab, eos);
    config.validate()?;
    let run_key = RunKey {
        arch: a.arch,
        d_model: a.d_model,
        layers: a.layers,
        d_state: config.d_state,
        head_dim: a.head_dim,
        vocab,
        seq_len: a.seq_len,
        batch_size: a.batch_size,
        accumulate: a.accumulate,
        replicas,
        steps,
        lr: a.lr,
        min_lr_ratio: a.min_lr_ratio,
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        grad_clip: a.grad_clip,
        seed: a.seed,
        data: data_key,
        dtype: dtype_name(a.dtype).to_string(),
    };

    for d in &devices {
        check_dtype(d, a.dtype)?;
    }
    let device = devices[0].clone();
    device.seed(a.seed);
    let train_device = device.clone().autodiff();
    let mut model = config.try_init(&train_device)?;
    model.check_fits(a.batch_size, a.seq_len, true, false)?;
    let mut optim = lm_optimizer(a.weight_decay);
    let mut state = TrainState {
        run: run_key.clone(),
        step: 0,
        history: Vec::new(),
        evals: Vec::new(),
    };
    if let Some((step, dir)) = &newest {
        let (m, o, s) = load_checkpoint(dir, model, optim, &run_key)?;
        (model, optim, state) = (m, o, s);
        if progress.verbose {
            println!("resuming from {} (step {step} of {steps})", dir.display());
        }
    } else if a.resume && progress.verbose {
        println!(
            "no checkpoint in {}: starting from step 0",
            ckpt_dir.display()
        );
    }
    if progress.verbose {
        println!(
            "{:?}: d_model {}, {} layers, d_state {}, vocab {vocab}; {} parameters; {} training \
             rows of {} tokens ({} documents), {} validation rows; {steps} steps of {} tokens; \
             device {device:?}",
            a.arch,
            a.d_model,
            a.layers,
            config.d_state,
            model.num_params(),
            train_rows.len(),
            a.seq_len,
            train_docs.docs.len(),
            val_rows.as_ref().map_or(0, PackedRows::len),
            per_step * a.seq_len,
        );
    }

    let bar = if progress.bar {
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {elapsed_precise} (ETA {eta})  {msg}",
            )
            .expect("a valid template"),
        );
        bar.set_position(state.step as u64);
        bar
    } else {
        ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::hidden())
    };
    if state.step == 0
        && let Some(val) = &val_rows
    {
        // The untrained model's loss: where the curve starts (about ln(vocab)).
        let val_loss = evaluate(&model.valid(), val, a.val_batches, micro, &device, a.dtype)?;
        state.evals.push(EvalLog {
            step: 0,
            val_loss,
            val_ppl: val_loss.exp(),
        });
    }
    let start = Instant::now();
    let start_step = state.step;
    let plan = StepPlan {
        rows: &train_rows,
        devices: &devices,
        micro,
        accumulate: a.accumulate,
        seed: a.seed,
        steps,
        warmup: a.warmup,
        lr: a.lr,
        min_lr: a.lr * a.min_lr_ratio,
        grad_clip: a.grad_clip,
        dtype: a.dtype,
    };
    while state.step < steps {
        let (next, log) = train_step(model, &mut optim, &plan, state.step)?;
        model = next;
        let StepLog {
            loss: loss_sum, lr, ..
        } = log;
        state.step += 1;
        state.history.push(log);
        let done = state.step - start_step;
        let tok_s = (done * per_step * a.seq_len) as f64 / start.elapsed().as_secs_f64();
        bar.set_position(state.step as u64);
        bar.set_message(format!(
            "loss {loss_sum:.3}  lr {lr:.2e}  {tok_s:.0} tokens/s"
        ));
        if !loss_sum.is_finite() {
            bar.abandon();
            return Err(CliError::Usage(format!(
                "the loss is {loss_sum} at step {}: lower --lr or raise --warmup",
                state.step
            )));
        }
        let last = state.step == steps;
        if let Some(val) = &val_rows
            && (state.step.is_multiple_of(a.eval_every) || last)
        {
            let val_loss = evaluate(&model.valid(), val, a.val_batches, micro, &device, a.dtype)?;
            let e = EvalLog {
                step: state.step,
                val_loss,
                val_ppl: val_loss.exp(),
            };
            if progress.verbose {
                let n = a.eval_every.min(state.history.len());
                let train_loss = state.history[state.history.len() - n..]
                    .iter()
                    .map(|h| h.loss)
                    .sum::<f64>()
                    / n as f64;
                bar.suspend(|| {
                    println!(
                        "step {:>6}  train loss {train_loss:.4}  val loss {:.4}  val ppl {:.3}  \
                         lr {lr:.2e}  {tok_s:.0} tokens/s",
                        e.step, e.val_loss, e.val_ppl
                    )
                });
            }
            state.evals.push(e);
        }
        if state.step.is_multiple_of(a.checkpoint_every) || last {
            save_checkpoint(&ckpt_dir, &model, &optim, &state)?;
        }
    }
    bar.finish();
    let elapsed = start.elapsed().as_secs_f64();

    let model = model.valid();
    if config.mamba3.is_some() {
        model.save_state_spaces(&config, &out)?;
    } else {
        model.save_hf(&config, &out)?;
    }
    write_atomic(&out.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    let trained_tokens = (state.step - start_step) * per_step * a.seq_len;
    let metrics = serde_json::json!({
        "arch": a.arch,
        "parameters": model.num_params(),
        "steps": state.step,
        "tokens_per_step": per_step * a.seq_len,
        "train_loss": state.history.last().map(|h| h.loss),
        "val_loss": state.evals.last().map(|e| e.val_loss),
        "val_ppl": state.evals.last().map(|e| e.val_ppl),
        "tokens_per_s_this_session": trained_tokens as f64 / elapsed.max(1e-9),
        "history": state.history,
        "evals": state.evals,
        "run": state.run,
    });
    write_atomic(
        &out.join("metrics.json"),
        (serde_json::to_string_pretty(&metrics).expect("JSON") + "\n").as_bytes(),
    )?;
    Ok(Trained {
        model,
        evals: state.evals,
        out,
    })
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

/// FNV-1a, 64 bits: the token cache's key (stable across builds and machines).
fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x0000_0100_0000_01B3);
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
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    fnv1a(&mut h, tokenizer_json.as_bytes());
    for f in &files {
        let bytes = std::fs::read(f)
            .map_err(|e| CliError::Io(format!("cannot read {}: {e}", f.display())))?;
        fnv1a(&mut h, &(bytes.len() as u64).to_le_bytes());
        fnv1a(&mut h, &bytes);
    }
    let key = format!("{h:016x}");
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

/// What one optimizer step needs to know.
pub struct StepPlan<'a> {
    pub rows: &'a PackedRows,
    /// The first is the main device (plain, not autodiff); one replica per device.
    pub devices: &'a [Device],
    /// Rows per micro-batch.
    pub micro: usize,
    /// Micro-batch rounds per step (each round one micro-batch per device).
    pub accumulate: usize,
    pub seed: u64,
    /// Total steps (for the schedule).
    pub steps: usize,
    pub warmup: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub grad_clip: f64,
    /// The dtype the forward and backward run in (f32 master weights whatever it is).
    pub dtype: FloatDType,
}

/// Optimizer step `step` (0-based) of the recipe: the step's micro-batches (a deterministic
/// function of the seed and the step) forward and backward on every device, the gradients
/// summed on the main device in a fixed order, clipped, and AdamW at the scheduled rate.
/// Returns the updated model and the step's record (`step` is then the steps done).
pub fn train_step<M: PackedLm>(
    model: M,
    optim: &mut ModuleOptimizer,
    plan: &StepPlan,
    step: usize,
) -> CliResult<(M, StepLog)> {
    let lr = warmup_cosine(step, plan.steps, plan.warmup, plan.lr, plan.min_lr);
    let replicas = plan.devices.len();
    let main = &plan.devices[0];
    let micros = plan.accumulate * replicas;
    let mut accum = GradientsAccumulator::new();
    let mut loss_sum = 0.0;
    // The other devices' replicas of this step's weights.
    let copies: Vec<M> = plan.devices[1..]
        .iter()
        .map(|d| model.clone().fork(&d.clone().autodiff()))
        .collect();
    for round in 0..plan.accumulate {
        let first = step * micros + round * replicas;
        let work = |replica: &M, i: usize| {
            let k = (first + i) as u64;
            let rows = batch_rows(plan.rows.len(), plan.micro, plan.seed, k);
            micro_step(replica, plan.rows, &rows, micros, main, plan.dtype)
        };
        let results: Vec<CliResult<(f64, GradientsParams)>> = if replicas == 1 {
            vec![work(&model, 0)]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = copies
                    .iter()
                    .enumerate()
                    .map(|(j, replica)| scope.spawn(move || work(replica, j + 1)))
                    .collect();
                let mut out = vec![work(&model, 0)];
                out.extend(
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("a replica's thread does not panic")),
                );
                out
            })
        };
        // Summed in device order, as one device accumulating these micro-batches would.
        for r in results {
            let (loss, grads) = r?;
            loss_sum += loss;
            accum.accumulate(&model, grads);
        }
    }
    let mut grads = accum.grads();
    let grad_norm = clip_grad_norm(&model, &mut grads, plan.grad_clip);
    let model = optim.step(lr, model, grads);
    Ok((
        model,
        StepLog {
            step: step + 1,
            loss: loss_sum,
            lr,
            grad_norm,
        },
    ))
}

/// One micro-batch's forward and backward on `replica`'s device: its loss (already divided by
/// `micros`, the micro-batches of the step) and gradients moved to the main device.
fn micro_step<M: PackedLm>(
    replica: &M,
    rows: &PackedRows,
    idx: &[usize],
    micros: usize,
    main: &Device,
    dtype: FloatDType,
) -> CliResult<(f64, GradientsParams)> {
    let device = replica
        .devices()
        .into_iter()
        .next()
        .expect("a model with parameters");
    let batch = rows.batch(idx, &device);
    // In half precision the weights are cast from the f32 masters inside the recorded graph,
    // so the gradients land on the masters in f32.
    let logits = if dtype == FloatDType::F32 {
        replica.logits_packed(batch.inputs, batch.seq_idx)?
    } else {
        cast_params(replica.clone(), dtype).logits_packed(batch.inputs, batch.seq_idx)?
    };
    let loss = token_losses(logits, batch.targets)
        .mean()
        .div_scalar(micros as f64);
    let value = loss.clone().into_scalar::<f32>() as f64;
    let grads = GradientsParams::from_grads(loss.backward(), replica);
    Ok((value, grads.to_device(main, replica)))
}

/// Mean next-token loss over the first `batches` batches of the validation rows (in order).
pub fn evaluate<M: PackedLm>(
    model: &M,
    rows: &PackedRows,
    batches: usize,
    micro: usize,
    device: &Device,
    dtype: FloatDType,
) -> CliResult<f64> {
    let cast;
    let model = if dtype == FloatDType::F32 {
        model
    } else {
        cast = cast_params(model.clone(), dtype);
        &cast
    };
    let n = rows.len().min(batches * micro);
    let (mut sum, mut count) = (0.0, 0usize);
    for start in (0..n).step_by(micro) {
        let idx: Vec<usize> = (start..(start + micro).min(n)).collect();
        let batch = rows.batch(&idx, device);
        let logits = model.logits_packed(batch.inputs, batch.seq_idx)?;
        let losses = token_losses(logits, batch.targets);
        let k = losses.dims().iter().product::<usize>();
        sum += losses.sum().into_scalar::<f32>() as f64;
        count += k;
    }
    Ok(sum / count as f64)
}

/// The checkpoint folders `step-N` in `dir`, oldest first (none when `dir` does not exist);
/// what an interrupted write leaves (`.tmp-*`) is removed.
fn checkpoints(dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp-") {
            let _ = std::fs::remove_dir_all(e.path());
        } else if let Some(n) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) {
            found.push((n, e.path()));
        }
    }
    found.sort();
    found
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Io(format!("{}: {e}", path.display()))
}

/// Writes the model, the optimizer and the run state into `.tmp-step-N`, flushes the files,
/// renames the folder to `step-N` (atomic: a crash leaves a whole checkpoint or none) and keeps
/// the two newest.
fn save_checkpoint(
    dir: &Path,
    model: &MambaLm,
    optim: &ModuleOptimizer,
    state: &TrainState,
) -> CliResult {
    let name = format!("step-{:08}", state.step);
    let tmp = dir.join(format!(".tmp-{name}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
    save_weights(model, &tmp)?;
    let optim_path = tmp.join("optim.bpk");
    optim
        .save(&optim_path)
        .map_err(|e| io_err(&optim_path, e))?;
    let json = serde_json::to_string(state).expect("JSON");
    std::fs::write(tmp.join("state.json"), json).map_err(|e| io_err(&tmp, e))?;
    for f in ["model.bpk", "optim.bpk", "state.json"] {
        let p = tmp.join(f);
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err(&p, e))?;
    }
    let dest = dir.join(&name);
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| io_err(&dest, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    // Keep the two newest.
    for (_, p) in checkpoints(dir).iter().rev().skip(2) {
        let _ = std::fs::remove_dir_all(p);
    }
    Ok(())
}

/// Restores a checkpoint into a freshly built model and optimizer; refuses one written under
/// other settings, and says which file is unreadable.
fn load_checkpoint(
    dir: &Path,
    model: MambaLm,
    optim: ModuleOptimizer,
    run: &RunKey,
) -> CliResult<(MambaLm, ModuleOptimizer, TrainState)> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| io_err(&state_path, e))?;
    let state: TrainState = serde_json::from_str(&text)
        .map_err(|e| io_err(&state_path, format!("not a checkpoint state: {e}")))?;
    if &state.run != run {
        let saved = serde_json::to_value(&state.run).expect("JSON");
        let now = serde_json::to_value(run).expect("JSON");
        let diff: Vec<String> = saved
            .as_object()
            .expect("an object")
            .iter()
            .filter(|(k, v)| now.get(k.as_str()) != Some(v))
            .map(|(k, v)| format!("{k} {v} (now {})", now[k.as_str()]))
            .collect();
        return Err(usage(format!(
            "{} was written by a run with other settings: {}; resume with the same flags and \
             text, or choose another --out",
            dir.display(),
            diff.join(", ")
        )));
    }
    let model = load_weights(model, dir)?;
    let optim_path = dir.join("optim.bpk");
    let optim = optim
        .load(&optim_path)
        .map_err(|e| io_err(&optim_path, format!("unreadable optimizer state: {e}")))?;
    Ok((model, optim, state))
}
