//! `zoo data`: the long-horizon forecasting benchmarks (ETTh1, ETTm1, Weather, Electricity) —
//! where they are cached, and downloading them into the cache.

use crate::common::{CliError, CliResult};
use clap::{Args, Subcommand};
use ssm_datasets::download::{BENCHMARKS, Benchmark, benchmark, cache_dir, fetch_into};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// The benchmarks, their sizes and whether each is in the cache (one JSON object).
    List,
    /// Download benchmarks into the cache (each checked against its published size).
    Fetch(FetchArgs),
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// etth1, ettm1, weather, electricity (or `all`).
    #[arg(required = true)]
    names: Vec<String>,
    /// Download from this URL instead of the built-in mirrors (repeatable, tried in order;
    /// `file://` works for a copy on disk). Only with one name.
    #[arg(long)]
    mirror: Vec<String>,
}

fn io(e: impl std::fmt::Display) -> CliError {
    CliError::Io(e.to_string())
}

/// The cached file of a benchmark, downloaded first if needed (a progress bar on stderr when
/// it is a terminal; otherwise the download tool's message goes into the error).
pub(crate) fn benchmark_file(name: &str, mirrors: &[String]) -> CliResult<PathBuf> {
    let b = benchmark(name).map_err(|e| CliError::Usage(e.to_string()))?;
    fetch_with(b, mirrors)
}

fn fetch_with(b: &Benchmark, mirrors: &[String]) -> CliResult<PathBuf> {
    let dir = cache_dir().map_err(io)?;
    let urls: Vec<String> = if mirrors.is_empty() {
        b.urls.iter().map(|u| u.to_string()).collect()
    } else {
        mirrors.to_vec()
    };
    if !b.path_in(&dir).is_file() {
        eprintln!("downloading {} into {}", b.file, dir.display());
    }
    fetch_into(b, &dir, &urls, std::io::stderr().is_terminal()).map_err(io)
}

pub fn run(what: DataCommand) -> CliResult {
    match what {
        DataCommand::List => {
            let dir = cache_dir().map_err(io)?;
            let sets: Vec<serde_json::Value> = BENCHMARKS
                .iter()
                .map(|b| {
                    let path = b.path_in(&dir);
                    serde_json::json!({
                        "name": b.name,
                        "file": b.file,
                        "rows": b.rows,
                        "variables": b.variables,
                        "about": b.about,
                        "cached": path.is_file(),
                        "path": path.display().to_string(),
                        "mirrors": b.urls,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({ "cache": dir.display().to_string(), "datasets": sets })
            );
            Ok(())
        }
        DataCommand::Fetch(a) => {
            let all = a.names.iter().any(|n| n == "all");
            let chosen: Vec<&Benchmark> = if all {
                BENCHMARKS.iter().collect()
            } else {
                a.names
                    .iter()
                    .map(|n| benchmark(n).map_err(|e| CliError::Usage(e.to_string())))
                    .collect::<CliResult<_>>()?
            };
            if !a.mirror.is_empty() && chosen.len() != 1 {
                return Err(CliError::Usage(
                    "--mirror goes with exactly one data set".into(),
                ));
            }
            for b in chosen {
                let path = fetch_with(b, &a.mirror)?;
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}
