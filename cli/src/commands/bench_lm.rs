//! `zoo bench lm`: prefill and decode throughput of a language model at a published shape with
//! random weights (no download), as one JSON object.

use crate::common::args::{DeviceArgs, PrecisionArgs};
use crate::common::choices::Arch;
use crate::common::error::{CliError, CliResult, io};
use crate::common::measure::{median, sync};
use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::Args;
use ssm_models::lm::{CausalLm, Mamba2Settings, Mamba3Settings, MambaLmConfig};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct LmBenchArgs {
    #[arg(long, value_enum, default_value_t = Arch::Mamba)]
    arch: Arch,
    /// Model width (mamba-130m: 768).
    #[arg(long, default_value_t = 768)]
    d_model: usize,
    /// Layers (mamba-130m: 24).
    #[arg(long, default_value_t = 24)]
    layers: usize,
    #[arg(long, default_value_t = 50280)]
    vocab: usize,
    /// SSM state size (default: 16 for mamba, 128 for mamba2 and mamba3).
    #[arg(long)]
    d_state: Option<usize>,
    /// Mamba2's and Mamba-3's channels per head.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Mamba2's and Mamba-3's SSD chunk length (default 256 for mamba2, 64 for mamba3).
    #[arg(long)]
    chunk_size: Option<usize>,
    /// Prefill length.
    #[arg(long, default_value_t = 512)]
    prefill_len: usize,
    /// Rows prefilled together (the timed prefills; decoding is batch 1).
    #[arg(long, default_value_t = 1)]
    prefill_batch: usize,
    /// Prompt length before decoding.
    #[arg(long, default_value_t = 16)]
    prompt_len: usize,
    /// Tokens decoded.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Rows decoded together (each its own prompt of `--prompt-len` tokens).
    #[arg(long, default_value_t = 1)]
    decode_batch: usize,
    /// Also time training steps (forward, backward, AdamW; `zoo train lm`'s step) of this many
    /// rows of `--train-len` tokens (0: no training figure).
    #[arg(long, default_value_t = 0)]
    train_batch: usize,
    /// Tokens per training row.
    #[arg(long, default_value_t = 2048)]
    train_len: usize,
    /// Timed training steps (after one untimed step).
    #[arg(long, default_value_t = 2)]
    train_steps: usize,
    /// Timed repetitions of the prefill (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Prompts generated from together for the batch figure (with `--mixed-lengths`).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Also time `--batch` prompts with lengths spread over [L/4, L] (L = `--prompt-len`)
    /// generated as one batch, against the same prompts generated one by one, in this run.
    #[arg(long)]
    mixed_lengths: bool,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    precision: PrecisionArgs,
    /// Run even when the memory estimate exceeds what the machine has available (also
    /// SSM_ZOO_FORCE=1).
    #[arg(long)]
    force: bool,
}

fn tokens(n: usize, vocab: usize, device: &Device) -> Tensor<2, Int> {
    rows_of_tokens(1, n, vocab, device)
}

/// `rows` rows of `n` made-up token ids (each row its own).
fn rows_of_tokens(rows: usize, n: usize, vocab: usize, device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = (0..rows * n)
        .map(|i| ((i * 7919 + 13) % vocab) as i64)
        .collect();
    Tensor::from_data(TensorData::new(ids, [rows, n]), device)
}

pub fn run(a: LmBenchArgs) -> CliResult {
    if a.prefill_len == 0
        || a.prompt_len == 0
        || a.decode_tokens == 0
        || a.repeats == 0
        || a.batch == 0
        || a.prefill_batch == 0
        || a.decode_batch == 0
        || (a.train_batch > 0 && (a.train_len == 0 || a.train_steps == 0))
    {
        return Err(CliError::Usage(
            "lengths, token counts and repeats must be at least 1".into(),
        ));
    }
    let device = a.device.resolve()?;
    let d_state = a.d_state.unwrap_or(match a.arch {
        Arch::Mamba => 16,
        Arch::Mamba2 | Arch::Mamba3 => 128,
    });
    let mut config = MambaLmConfig::new(a.d_model, a.layers, a.vocab).with_d_state(d_state);
    match a.arch {
        Arch::Mamba => {}
        Arch::Mamba2 => {
            config.mamba2 = Some(
                Mamba2Settings::new()
                    .with_head_dim(a.head_dim)
                    .with_chunk_size(a.chunk_size.unwrap_or(256)),
            )
        }
        Arch::Mamba3 => {
            config.mamba3 = Some(
                Mamba3Settings::new()
                    .with_head_dim(a.head_dim)
                    .with_chunk_size(a.chunk_size.unwrap_or(64)),
            )
        }
    }
    config.validate()?;
    // Sized before anything is allocated (the timed prefill keeps every position's logits).
    config
        .inference_memory(a.prefill_batch, a.prefill_len, true)
        .check(&device, a.force || ssm_models::memory::forced_by_env())?;
    let model = a.precision.apply(config.try_init(&device)?, &device)?;
    // The timed full prefill keeps the logits of every position; the decode prompt is short.
    model.check_fits(a.prefill_batch, a.prefill_len, true, true)?;

    // Warm-up: first kernel compilations and autotune stay out of the figures.
    let (logits, _) = model.prefill(tokens(a.prompt_len.min(8), a.vocab, &device));
    let _ = logits.into_data();
    sync(&device)?;

    let prefill_ids = || rows_of_tokens(a.prefill_batch, a.prefill_len, a.vocab, &device);
    let mut times = Vec::with_capacity(a.repeats);
    for _ in 0..a.repeats {
        let ids = prefill_ids();
        sync(&device)?;
        let t = Instant::now();
        let (logits, _) = model.prefill(ids);
        let _ = logits.narrow(1, a.prefill_len - 1, 1).into_data();
        times.push(t.elapsed().as_secs_f64());
    }
    let prefill_s = median(times);
    // The same prefill with the LM head on the last position only (what generation runs, and
    // what llama.cpp's `llama-bench -p` measures).
    let mut times = Vec::with_capacity(a.repeats);
    let mut prefill_launches = None;
    for _ in 0..a.repeats {
        let ids = prefill_ids();
        sync(&device)?;
        let launches = Launches::start();
        let t = Instant::now();
        let (logits, _) = model.prefill_last(ids);
        let _ = logits.into_data();
        times.push(t.elapsed().as_secs_f64());
        prefill_launches = launches.per_token(1).0;
    }
    let prefill_last_s = median(times);
    let prefill_tokens = (a.prefill_batch * a.prefill_len) as f64;

    let (logits, mut cache) = model.prefill(rows_of_tokens(
        a.decode_batch,
        a.prompt_len,
        a.vocab,
        &device,
    ));
    let mut next = logits
        .narrow(1, a.prompt_len - 1, 1)
        .squeeze_dim::<2>(1)
        .argmax(1)
        .squeeze_dim::<1>(1);
    // One untimed step warms the decode path.
    let (l, c) = model.step(next.clone(), cache);
    cache = c;
    let _ = l.into_data();
    sync(&device)?;
    let launches = Launches::start();
    let t = Instant::now();
    for _ in 0..a.decode_tokens {
        let (logits, c) = model.step(next, cache);
        cache = c;
        next = logits.argmax(1).squeeze_dim::<1>(1);
        // Reading the token back is what a generation loop does each step.
        let _ = next.clone().into_data();
    }
    let decode_s = t.elapsed().as_secs_f64();
    // Launches per decoding step (each step decodes one token of every row).
    let (per_token, by_kernel) = launches.per_token(a.decode_tokens);
    let mixed = a
        .mixed_lengths
        .then(|| mixed_batch(&model, &a, &device))
        .transpose()?;
    let parameters = burn::module::Module::num_params(&model);
    // The bound of decoding: each step reads every weight once (an untied embedding: one row
    // per token; the tied one is read whole as the head), at the machine's read bandwidth
    // measured here, in this process.
    let stored = ssm_models::quantize::stored_bytes(&model);
    let untied_embedding = if config.tie_embeddings {
        0
    } else {
        // The rows of the embedding a step does not read, at its bytes per row.
        let rows = a.vocab - a.decode_batch.min(a.vocab);
        ssm_models::quantize::stored_bytes(&model.backbone.embeddings) / a.vocab * rows
    };
    let weight_bytes = stored - untied_embedding;
    let read_gb_s = crate::common::bandwidth::read_gb_s(weight_bytes, &device)?;
    let decode_tokens_per_s = (a.decode_tokens * a.decode_batch) as f64 / decode_s;
    let bound = read_gb_s * 1e9 * a.decode_batch as f64 / weight_bytes as f64;
    // The inference model's memory back before the training model is built.
    drop(model);
    let training = (a.train_batch > 0)
        .then(|| train_tokens_per_s(&config, &a, &device))
        .transpose()?;

    let report = serde_json::json!({
        "arch": format!("{:?}", a.arch).to_lowercase(),
        "device": format!("{device:?}"),
        "dtype": ssm_models::precision::dtype_name(a.precision.dtype),
        "quantize": a.precision.quantize.map(|q| q.to_string()),
        "d_model": a.d_model,
        "layers": a.layers,
        "vocab": a.vocab,
        "parameters": parameters,
        "d_state": d_state,
        "head_dim": (a.arch != Arch::Mamba).then_some(a.head_dim),
        "prefill_batch": a.prefill_batch,
        "prefill_len": a.prefill_len,
        "prefill_tokens_per_s": prefill_tokens / prefill_s,
        "prefill_last_tokens_per_s": prefill_tokens / prefill_last_s,
        "prefill_last_kernel_launches": prefill_launches,

        "decode_prompt_len": a.prompt_len,
        "decode_tokens": a.decode_tokens,
        "decode_batch": a.decode_batch,
        "decode_tokens_per_s": decode_tokens_per_s,
        "weights_bytes_per_step": weight_bytes,
        "weights_bytes_per_token": weight_bytes as f64 / a.decode_batch as f64,
        "read_gb_s": read_gb_s,
        "decode_bound_tokens_per_s": bound,
        "decode_fraction_of_bound": decode_tokens_per_s / bound,
        "decode_ms_per_token": decode_s * 1e3 / a.decode_tokens as f64,
        "kernel_launches_per_token": per_token,
        "kernel_launches_per_token_per_layer": per_token.map(|p| p / a.layers as f64),
        "kernel_launches_per_token_by_kernel": by_kernel,
        "mixed_batch": mixed,
        "training": training,
    });
    println!("{report}");
    Ok(())
}

/// Training steps (`zoo train lm`'s step: forward, backward, clipping, AdamW) of
/// `--train-batch` rows of `--train-len` random tokens on a fresh model: tokens per second over
/// `--train-steps` steps after one untimed step.
fn train_tokens_per_s(
    config: &MambaLmConfig,
    a: &LmBenchArgs,
    device: &Device,
) -> CliResult<serde_json::Value> {
    use ssm_datasets::text::{PackedRows, TokenDocs};
    use ssm_models::lm::train::{StepPlan, lm_optimizer, train_step};
    config
        .training_memory(
            a.train_batch,
            a.train_len,
            a.precision.dtype != burn::tensor::FloatDType::F32,
        )
        .check(device, a.force || ssm_models::memory::forced_by_env())?;
    let rows_needed = a.train_batch * (a.train_steps + 1);
    // One document of random tokens, long enough for every step's rows (the end-of-text token
    // is the vocabulary's last id).
    let eos = (a.vocab - 1) as u32;
    let doc: Vec<u32> = (0..rows_needed * a.train_len)
        .map(|i| ((i * 7919 + 13) % (a.vocab - 1)) as u32)
        .collect();
    let rows = PackedRows::new(&TokenDocs { docs: vec![doc] }, eos, a.train_len).map_err(io)?;
    let mut model = config.try_init(&device.clone().autodiff())?;
    let mut optim = lm_optimizer(0.1);
    let devices = [device.clone()];
    let plan = StepPlan {
        rows: &rows,
        devices: &devices,
        micro: a.train_batch,
        accumulate: 1,
        seed: 0,
        steps: a.train_steps + 1,
        warmup: 1,
        lr: 1e-3,
        min_lr: 1e-4,
        grad_clip: 1.0,
        dtype: a.precision.dtype,
    };
    let (next, _) = train_step(model, &mut optim, &plan, 0)?;
    model = next;
    sync(device)?;
    let t = Instant::now();
    for step in 1..=a.train_steps {
        let (next, log) = train_step(model, &mut optim, &plan, step)?;
        model = next;
        if !log.loss.is_finite() {
            return Err(io(format!("the loss is {} at step {step}", log.loss)));
        }
    }
    sync(device)?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "batch": a.train_batch,
        "len": a.train_len,
        "steps": a.train_steps,
        "tokens_per_s": (a.train_steps * a.train_batch * a.train_len) as f64 / seconds,
    }))
}

/// Prompt lengths spread evenly over [L/4, L].
fn spread_lengths(batch: usize, len: usize) -> Vec<usize> {
    let lo = (len / 4).max(1);
    (0..batch)
        .map(|i| {
            if batch == 1 {
                len
            } else {
                lo + (len - lo) * i / (batch - 1)
            }
        })
        .collect()
}

/// Greedy generation of `--decode-tokens` tokens from `--batch` prompts of mixed lengths, as
/// one batch and one prompt at a time, timed in this run: new tokens per second of each, and
/// their ratio.
fn mixed_batch<M: CausalLm>(
    model: &M,
    a: &LmBenchArgs,
    device: &Device,
) -> CliResult<serde_json::Value> {
    use ssm_models::lm::{GenerationConfig, generate};
    let lengths = spread_lengths(a.batch, a.prompt_len);
    let prompts: Vec<Vec<usize>> = lengths
        .iter()
        .enumerate()
        .map(|(r, &n)| {
            (0..n)
                .map(|i| (i * 7919 + r * 104_729 + 13) % a.vocab)
                .collect()
        })
        .collect();
    let config = GenerationConfig {
        max_new_tokens: a.decode_tokens,
        ..GenerationConfig::default()
    };
    // Warm-up of both shapes of the decode path.
    generate(model, &prompts, &config, |_, _| {})?;
    sync(device)?;
    let t = Instant::now();
    let together = generate(model, &prompts, &config, |_, _| {})?;
    sync(device)?;
    let batched_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut alone = Vec::with_capacity(prompts.len());
    for p in &prompts {
        alone.extend(generate(
            model,
            std::slice::from_ref(p),
            &config,
            |_, _| {},
        )?);
    }
    sync(device)?;
    let alone_s = t.elapsed().as_secs_f64();
    if together != alone {
        return Err(CliError::Io(
            "the batch generated other tokens than the prompts one by one".into(),
        ));
    }
    let new_tokens: usize = together.iter().map(Vec::len).sum();
    Ok(serde_json::json!({
        "batch": a.batch,
        "prompt_lengths": lengths,
        "new_tokens": new_tokens,
        "batched_tokens_per_s": new_tokens as f64 / batched_s,
        "one_by_one_tokens_per_s": new_tokens as f64 / alone_s,
        "speedup": alone_s / batched_s,
    }))
}

/// Kernel launches counted by the CubeCL runtime (wgpu, cuda); nothing on the CPU backends,
/// which launch no kernels.
struct Launches {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    counter: ssm_backends::LaunchCounter,
}

impl Launches {
    fn start() -> Self {
        Self {
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            counter: ssm_backends::LaunchCounter::start(),
        }
    }

    /// Launches per decoded token, in all and by kernel (short names), or `None` and an empty
    /// map where the runtime saw no launch (a CPU device).
    fn per_token(self, tokens: usize) -> (Option<f64>, serde_json::Map<String, serde_json::Value>) {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        {
            let total = self.counter.total();
            if total > 0 {
                let mut by = std::collections::BTreeMap::<String, usize>::new();
                for (name, n) in self.counter.counts() {
                    *by.entry(short_kernel_name(&name)).or_default() += n;
                }
                let map = by
                    .into_iter()
                    .map(|(k, n)| (k, serde_json::json!(n as f64 / tokens as f64)))
                    .collect();
                return (Some(total as f64 / tokens as f64), map);
            }
        }
        let _ = (self, tokens);
        (None, serde_json::Map::new())
    }
}

/// `a::b::kernel::Kernel<X<Y>>` -> `kernel::Kernel<X>`: the module and type of a kernel, with its
/// generic arguments shortened to their last path segment.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn short_kernel_name(name: &str) -> String {
    let base = name.split('<').next().unwrap_or(name);
    let parts: Vec<&str> = base.rsplitn(3, "::").collect();
    let mut short = match parts.as_slice() {
        [ty, module, ..] => format!("{module}::{ty}"),
        _ => base.to_string(),
    };
    if let Some(arg) = name.find('<').map(|i| &name[i + 1..]) {
        let first = arg.split([',', '<', '>']).next().unwrap_or("");
        let last = first.rsplit("::").next().unwrap_or(first);
        if !last.is_empty() {
            short.push_str(&format!("<{last}>"));
        }
    }
    short
}
