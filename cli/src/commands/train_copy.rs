//! `zoo train selective-copying`: trains a small Mamba on the selective-copying task of the
//! Mamba paper for a fixed number of steps (seeded: the same result on any machine and under
//! any load), then reports held-out accuracy and decoded examples.

use crate::common::args::{DeviceArgs, SeedArgs};
use crate::common::error::{CliError, CliResult};
use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Int, Tensor};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ssm_datasets::selective_copying::{FIRST_SYMBOL, make_item};
use ssm_datasets::{CopyBatcher, SelectiveCopyingConfig};
use ssm_models::lm::{CausalLm, MambaLm, MambaLmConfig};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Optimizer steps.
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    /// Context length holding the data tokens.
    #[arg(long, default_value_t = 48)]
    context_len: usize,
    /// Data tokens to copy.
    #[arg(long, default_value_t = 6)]
    n_copy: usize,
    /// Distinct data tokens.
    #[arg(long, default_value_t = 8)]
    n_symbols: usize,
    #[arg(long, default_value_t = 64)]
    d_model: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    seed: SeedArgs,
}

/// One decoded example: input, target, prediction.
type Example = (Vec<usize>, Vec<usize>, Vec<usize>);

/// Seeds of the training stream and of the held-out set: disjoint streams.
const TRAIN_STREAM: u64 = 1;
const TEST_STREAM: u64 = 1_000_003;

fn accuracy(
    model: &MambaLm,
    task: &SelectiveCopyingConfig,
    n: usize,
    seed: u64,
    device: &burn::tensor::Device,
) -> (f64, f64, Vec<Example>) {
    let items: Vec<_> = (0..n).map(|i| make_item(task, seed, i)).collect();
    let batch = CopyBatcher.batch(items.clone(), device);
    let logits = model.forward(batch.inputs);
    let l = task.seq_len();
    let pred = logits
        .narrow(1, l - task.n_copy, task.n_copy)
        .argmax(2)
        .squeeze_dim::<2>(2);
    let pred: Vec<usize> = pred
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("int predictions")
        .into_iter()
        .map(|x| x as usize)
        .collect();
    let mut tokens_ok = 0;
    let mut rows_ok = 0;
    let mut examples = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = &pred[i * task.n_copy..(i + 1) * task.n_copy];
        let ok = p.iter().zip(&item.target).filter(|(a, b)| a == b).count();
        tokens_ok += ok;
        rows_ok += usize::from(ok == task.n_copy);
        if examples.len() < 4 {
            examples.push((item.input.clone(), item.target.clone(), p.to_vec()));
        }
    }
    (
        tokens_ok as f64 / (n * task.n_copy) as f64,
        rows_ok as f64 / n as f64,
        examples,
    )
}

fn show(tokens: &[usize]) -> String {
    tokens
        .iter()
        .map(|&t| match t {
            0 => '.',
            1 => '?',
            t => char::from(b'A' + (t - FIRST_SYMBOL) as u8),
        })
        .collect()
}

pub fn run(a: CopyArgs) -> CliResult {
    let task = SelectiveCopyingConfig {
        context_len: a.context_len,
        n_copy: a.n_copy,
        n_symbols: a.n_symbols,
    };
    task.validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if a.n_symbols > 26 {
        return Err(CliError::Usage("--n-symbols must be at most 26".into()));
    }
    if a.steps == 0 {
        return Err(CliError::Usage("--steps must be at least 1".into()));
    }
    let seed = a.seed.seed;
    let device = a.device.resolve()?;
    device.seed(seed);
    let train_device = device.clone().autodiff();
    let config = MambaLmConfig::new(a.d_model, a.layers, task.vocab_size())
        .with_pad_vocab_size_multiple(1)
        .with_tie_embeddings(false);
    config.validate()?;
    let mut model = config.try_init(&train_device)?;
    model.check_fits(a.batch_size, task.seq_len(), true, false)?;
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);

    println!(
        "Selective copying (Gu & Dao 2023): {} data tokens hidden among {} noise positions; \
         the model must output them in order after the markers.",
        task.n_copy, task.context_len
    );
    println!(
        "Mamba: d_model {}, {} layers, d_state {}; {} parameters; device {:?}; {} steps",
        a.d_model,
        a.layers,
        config.d_state,
        model.num_params(),
        device,
        a.steps
    );
    let bar = ProgressBar::new(a.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} steps  {elapsed_precise} (ETA {eta})  {msg}",
        )
        .expect("valid template"),
    );
    let start = Instant::now();
    let mut step = 0usize;
    let mut ema_loss = None::<f64>;
    while step < a.steps {
        let items: Vec<_> = (0..a.batch_size)
            .map(|i| make_item(&task, TRAIN_STREAM + seed, step * a.batch_size + i))
            .collect();
        let batch = CopyBatcher.batch(items, &train_device);
        let logits = model.forward(batch.inputs);
        let l = task.seq_len();
        let logits = logits
            .narrow(1, l - task.n_copy, task.n_copy)
            .reshape([a.batch_size * task.n_copy, task.vocab_size()]);
        let targets: Tensor<1, Int> = batch.targets.reshape([a.batch_size * task.n_copy]);
        let loss = loss_fn.forward(logits, targets);
        let value = loss.clone().into_scalar::<f32>() as f64;
        ema_loss = Some(ema_loss.map_or(value, |e| 0.95 * e + 0.05 * value));
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(a.lr, model, grads);
        step += 1;
        bar.set_position(step as u64);
        bar.set_message(format!("loss {:.3}", ema_loss.unwrap_or(value)));
    }
    bar.finish();
    let elapsed = start.elapsed().as_secs_f64();
    let model = model.valid();
    let eval_device = device.clone();
    let model = model.to_device(&eval_device);
    let (tok_acc, row_acc, examples) =
        accuracy(&model, &task, 512, TEST_STREAM + seed, &eval_device);
    println!(
        "trained {step} steps ({:.1} steps/s, batch {}); final loss {:.3}",
        step as f64 / elapsed,
        a.batch_size,
        ema_loss.unwrap_or(f64::NAN)
    );
    println!(
        "held-out accuracy on 512 new sequences: {:.1}% of tokens, {:.1}% of sequences fully copied \
         (chance: {:.1}% of tokens)",
        100.0 * tok_acc,
        100.0 * row_acc,
        100.0 / task.n_symbols as f64
    );
    println!("examples ('.' noise, '?' marker, letters data):");
    for (input, target, pred) in examples {
        let mark = if target == pred { "ok" } else { "--" };
        println!(
            "  {}  ->  {}  (want {})  {mark}",
            show(&input),
            show(&pred),
            show(&target)
        );
    }
    Ok(())
}
