//! `zoo data`: the long-horizon forecasting benchmarks (ETTh1, ETTm1, Weather, Electricity) —
//! where they are cached, and downloading them into the cache.

use crate::common::download::fetch_with;
use crate::common::error::{CliError, CliResult, io};
use clap::{Args, Subcommand};
use ssm_datasets::download::{BENCHMARKS, Benchmark, benchmark, cache_dir};

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
