//! The forecasting benchmarks' files in the cache, downloaded first where needed (`zoo data
//! fetch`, `zoo train s-mamba --dataset`).

use super::error::{CliError, CliResult, io};
use ssm_datasets::download::{Benchmark, benchmark, cache_dir, fetch_into};
use std::io::IsTerminal;
use std::path::PathBuf;

/// The cached file of a benchmark, downloaded first if needed (a progress bar on stderr when
/// it is a terminal; otherwise the download tool's message goes into the error).
pub fn benchmark_file(name: &str, mirrors: &[String]) -> CliResult<PathBuf> {
    let b = benchmark(name).map_err(|e| CliError::Usage(e.to_string()))?;
    fetch_with(b, mirrors)
}

/// The cached file of `b`, downloaded first from `mirrors` (default: its own URLs) if needed.
pub fn fetch_with(b: &Benchmark, mirrors: &[String]) -> CliResult<PathBuf> {
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
