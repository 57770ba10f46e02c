//! `zoo`: one command line for the SSM zoo.
//!
//! ```text
//! zoo demo                                  train a small Mamba LM on Shakespeare, then let it write (CPU)
//! zoo train lm --text FILE... --arch mamba2  train a language model, saved in the Hugging Face layout
//! zoo logits   --model DIR --ids "1,2;3,4" --out logits.safetensors
//! zoo generate --model DIR --prompt "Mamba is" --max-new-tokens 32
//! zoo bench lm [--arch mamba] [--d-model 768] [--layers 24] [--device wgpu]
//! zoo train s4d-digits | s5-digits | vim-digits | vmamba-digits
//! zoo classify --model vim_t_midclstok_76p1acc.pth cat.jpg dog.png
//! ```

mod alloc;
mod bench;
mod bench_compare;
mod classify;
mod common;
mod data;
mod demo;
mod forecast;
mod generate;
mod logits;
mod memory;
mod train;
mod train_copy;
mod train_graph;
mod train_lm;
mod train_series;
mod train_vision;

use clap::{Parser, Subcommand};

/// Heap use is counted (for `zoo bench compare`'s peak memory).
#[global_allocator]
static ALLOCATOR: memory::Counting = memory::Counting;
use std::process::ExitCode;

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
    /// Train a model with burn-train (progress shown, checkpoints and the final model saved).
    Train {
        #[command(subcommand)]
        task: train::TrainTask,
    },
    /// Test accuracy of a model saved by `zoo train`.
    Eval(train::EvalArgs),
    /// Top classes of images under a Vim or VMamba checkpoint (or a `zoo train` folder).
    Classify(classify::ClassifyArgs),
    /// Test MSE/MAE of a forecaster from `zoo train s-mamba|time-machine`, and a forecast plot.
    Forecast(forecast::ForecastArgs),
    /// The forecasting benchmarks: list them, download them into the cache.
    Data {
        #[command(subcommand)]
        what: data::DataCommand,
    },
    /// Benchmarks (prints one JSON object).
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

fn main() -> ExitCode {
    alloc::tune_for_tensors();
    let cli = Cli::parse();

    // A GPU op that cannot run its kernel on some input runs a slower body and says so through
    // `log`, once per shape: print those warnings (`RUST_LOG` overrides the filter). The tasks
    // trained with burn-train's Learner (and their evaluation) leave logging to it, whose
    // experiment log in the run's folder records them.
    let burn_train_logs = match &cli.command {
        Command::Train { task } => !matches!(
            task,
            train::TrainTask::Lm(_) | train::TrainTask::SelectiveCopying(_)
        ),
        Command::Eval(_) => true,
        _ => false,
    };
    if !burn_train_logs {
        env_logger::Builder::from_env(
            env_logger::Env::default().default_filter_or("ssm_backends=warn"),
        )
        .init();
    }
    // On a worker of rayon's pool: parallel regions then start on the calling thread (see
    // `on_pool_worker`; `benches/load/run.sh` measures it on a busy machine).
    let result = ssm_backends::on_pool_worker(move || match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Logits(a) => logits::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Train { task } => train::train(task),
        Command::Eval(a) => train::eval(a),
        Command::Classify(a) => classify::run(a),
        Command::Forecast(a) => forecast::run(a),
        Command::Data { what } => data::run(what),
        Command::Bench { what } => bench::run(what),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
