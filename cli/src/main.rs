//! `zoo`: one command line for the SSM zoo.
//!
//! ```text
//! zoo demo                                  train a small Mamba LM on Shakespeare, then let it write (CPU)
//! zoo train lm --text FILE... --arch mamba2  train a language model, saved in the Hugging Face layout
//! zoo logits   --model DIR --ids "1,2;3,4" --out logits.safetensors
//! zoo generate --model DIR --prompt "Mamba is" --max-new-tokens 32
//! zoo quantize --model DIR --out DIR_Q8      8-bit weights, quantized once (CPU)
//! zoo bench lm [--arch mamba] [--d-model 768] [--layers 24] [--device wgpu]
//! zoo train s4d-digits | s5-digits | vim-digits | vmamba-digits
//! zoo classify --model vim_t_midclstok_76p1acc.pth cat.jpg dog.png
//! ```
//!
//! This file is the command tree and the error printing; each command is a module of
//! [`commands`], and what they share is in [`common`].

mod commands;
mod common;

use clap::{Parser, Subcommand};
use commands::{
    bench_compare, bench_lm, bench_scan, bench_vision, classify, data, demo, devices, eval,
    forecast, generate, logits, quantize, selftest, train_copy, train_digits, train_graph,
    train_lm, train_series, train_vision,
};
use ssm_models::classify::LayerKind;
use std::process::ExitCode;

/// Heap use is counted (for `zoo bench compare`'s peak memory).
#[global_allocator]
static ALLOCATOR: common::memory::Counting = common::memory::Counting;

#[derive(Parser, Debug)]
#[command(
    name = "zoo",
    version,
    about = "State space models on any Burn backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a small byte-level Mamba on the shipped Shakespeare (fixed steps) and let it write.
    Demo(demo::DemoArgs),
    /// Write the logits of a model for rows of token ids to a safetensors file.
    Logits(logits::LogitsArgs),
    /// Generate text or tokens from a model directory.
    Generate(generate::GenerateArgs),
    /// Write a language model's folder again with 8-bit weights (quantized once, CPU).
    Quantize(quantize::QuantizeArgs),
    /// Train a model with burn-train (progress shown, checkpoints and the final model saved).
    Train {
        #[command(subcommand)]
        task: TrainTask,
    },
    /// Test accuracy of a model saved by `zoo train`.
    Eval(eval::EvalArgs),
    /// Top classes of images under a Vim or VMamba checkpoint (or a `zoo train` folder).
    Classify(classify::ClassifyArgs),
    /// Test MSE/MAE of a forecaster from `zoo train s-mamba|time-machine`, and a forecast plot.
    Forecast(forecast::ForecastArgs),
    /// The forecasting benchmarks: list them, download them into the cache.
    Data {
        #[command(subcommand)]
        what: data::DataCommand,
    },
    /// The devices this build reaches (one JSON object per line) and which `--device auto` picks.
    Devices(devices::DevicesArgs),
    /// Every kernel against its portable body on a device, then the shipped model fixtures
    /// against the reference logits: a table, a JSON with --json, exit code 1 on any failure.
    Selftest(selftest::SelftestArgs),
    /// Benchmarks (prints one JSON object).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

/// The variants name the command-line tasks (`s4d-digits`, ...), hence the shared suffix.
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand, Debug)]
enum TrainTask {
    /// An S4D classifier on sequential digits (L = 64, 10 classes).
    S4dDigits(train_digits::TrainArgs),
    /// An S5 classifier on sequential digits (L = 64, 10 classes).
    S5Digits(train_digits::TrainArgs),
    /// A small Vim (bidirectional Mamba over patches) on the digits upsampled to 16x16.
    VimDigits(train_vision::VisionArgs),
    /// A small VMamba (2D cross-scan stages) on the digits upsampled to 16x16.
    VmambaDigits(train_vision::VisionArgs),
    /// An isotropic S4ND classifier (2-D SSM convolutions over the pixels) on the digits
    /// upsampled to 16x16; `zoo eval --img-size` evaluates it at another resolution.
    S4ndDigits(train_vision::VisionArgs),
    /// S-Mamba forecasting a multivariate series (MSE), against linear and last-value baselines.
    SMamba(train_series::SeriesArgs),
    /// TimeMachine (RevIN, four Mambas at two scales) on the same data, against the baselines.
    TimeMachine(train_series::SeriesArgs),
    /// Graph-Mamba on node (stochastic block model, karate club) or graph (TU) classification.
    GraphMamba(train_graph::GraphArgs),
    /// A Mamba or Mamba2 language model on text (packed documents, AdamW, warm-up + cosine,
    /// resumable checkpoints); saved as a Hugging Face model directory.
    Lm(common::lm::LmArgs),
    /// A small Mamba on the selective-copying task of the Mamba paper (fixed steps, seeded).
    SelectiveCopying(train_copy::CopyArgs),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Language-model prefill and decode tokens per second.
    Lm(bench_lm::LmBenchArgs),
    /// The selective scan's effective bandwidth against a device-to-device copy (same run).
    Scan(bench_scan::ScanBenchArgs),
    /// Image-classifier forward throughput (images/s) of Vim and VMamba, in one run.
    Vision(bench_vision::VisionBenchArgs),
    /// Mamba, Mamba2 and a Transformer at equal size: training perplexity and tokens/s, then
    /// inference time and peak memory against sequence length (with S4D); table, JSON, PNG.
    Compare(bench_compare::CompareArgs),
}

/// Parses the command line. A value outside a closed set of choices (`--split`, `--arch`,
/// `--models`, ...) is one line starting with `error:` and exit status 1, like every error of
/// the commands themselves; clap's other messages (help, version, unknown flags) as clap prints
/// them.
fn parse() -> Cli {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let e = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    if e.kind() == ErrorKind::InvalidValue
        && let (
            Some(ContextValue::String(arg)),
            Some(ContextValue::String(value)),
            Some(ContextValue::Strings(valid)),
        ) = (
            e.get(ContextKind::InvalidArg),
            e.get(ContextKind::InvalidValue),
            e.get(ContextKind::ValidValue),
        )
    {
        // `arg` is clap's `--flag <NAME>`.
        let flag = arg.split(' ').next().unwrap_or(arg);
        eprintln!(
            "error: {flag} {value}: unknown value '{value}' (expected {})",
            common::choices::one_of(valid)
        );
        std::process::exit(1);
    }
    e.exit()
}

fn main() -> ExitCode {
    // Output piped into a reader that stops early (`zoo devices | head -1`) ends zoo quietly, as
    // it does any Unix tool, instead of a panic in `println!` on the broken pipe.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: restoring a signal's default disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    common::headless::quiet_adapter_probing();
    common::alloc::tune_for_tensors();
    let cli = parse();

    // A GPU op that cannot run its kernel on some input runs a slower body and says so through
    // `log`, once per shape: print those warnings (`RUST_LOG` overrides the filter). The tasks
    // trained with burn-train's Learner (and their evaluation) leave logging to it, whose
    // experiment log in the run's folder records them.
    let burn_train_logs = match &cli.command {
        Command::Train { task } => {
            !matches!(task, TrainTask::Lm(_) | TrainTask::SelectiveCopying(_))
        }
        Command::Eval(_) => true,
        _ => false,
    };
    if !burn_train_logs {
        env_logger::Builder::from_env(
            env_logger::Env::default().default_filter_or("ssm_backends=warn"),
        )
        .init();
    }
    // The command's words (`train lm`), for the one line a panic becomes.
    let words: Vec<String> = std::env::args()
        .skip(1)
        .take_while(|a| !a.starts_with('-'))
        .take(2)
        .collect();
    common::memory::set_command(words.join(" "));
    common::panic::install();
    // On a worker of rayon's pool: parallel regions then start on the calling thread (see
    // `on_pool_worker`; `benches/load/run.sh` measures it on a busy machine).
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        ssm_backends::on_pool_worker(move || match cli.command {
            Command::Demo(a) => demo::run(a),
            Command::Logits(a) => logits::run(a),
            Command::Generate(a) => generate::run(a),
            Command::Quantize(a) => quantize::run(a),
            Command::Train { task } => train(task),
            Command::Eval(a) => eval::run(a),
            Command::Classify(a) => classify::run(a),
            Command::Forecast(a) => forecast::run(a),
            Command::Data { what } => data::run(what),
            Command::Devices(a) => devices::run(a),
            Command::Selftest(a) => selftest::run(a),
            Command::Bench { what } => match what {
                BenchCommand::Lm(a) => bench_lm::run(a),
                BenchCommand::Scan(a) => bench_scan::run(a),
                BenchCommand::Vision(a) => bench_vision::run(a),
                BenchCommand::Compare(a) => bench_compare::run(a),
            },
        })
    }));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "error: zoo {}: internal error: {} (a bug in zoo; RUST_BACKTRACE=1 shows the \
                 backtrace)",
                words.join(" "),
                common::panic::last()
            );
            ExitCode::FAILURE
        }
    }
}

fn train(task: TrainTask) -> common::error::CliResult {
    match task {
        TrainTask::S4dDigits(a) => train_digits::run(a, LayerKind::S4D),
        TrainTask::S5Digits(a) => train_digits::run(a, LayerKind::S5),
        TrainTask::VimDigits(a) => train_vision::vim_digits(a),
        TrainTask::VmambaDigits(a) => train_vision::vmamba_digits(a),
        TrainTask::S4ndDigits(a) => train_vision::s4nd_digits(a),
        TrainTask::SMamba(a) => train_series::s_mamba(a),
        TrainTask::TimeMachine(a) => train_series::time_machine(a),
        TrainTask::GraphMamba(a) => train_graph::graph_mamba(a),
        TrainTask::Lm(a) => train_lm::run(a),
        TrainTask::SelectiveCopying(a) => train_copy::run(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks of the command tree (the flattened shared arguments, the
    /// per-command defaults set with `mut_arg`, the conflicts naming them).
    #[test]
    fn the_command_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// A panic is recorded as one line with its message and place, not printed (`main` prints
    /// it after catching the unwinding command).
    #[test]
    fn a_panic_is_recorded_as_one_line() {
        common::panic::install_recording();
        let caught = std::panic::catch_unwind(|| {
            let n: usize = std::hint::black_box(3);
            panic!("bad size {n}\nsecond line");
        });
        assert!(caught.is_err());
        let last = common::panic::last();
        assert!(
            last.starts_with("bad size 3 second line at cli/src/main.rs:"),
            "{last}"
        );
        let _ = std::panic::take_hook();
    }
}
