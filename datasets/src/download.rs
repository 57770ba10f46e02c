//! The long-horizon forecasting benchmarks (ETTh1, ETTm1, Weather, Electricity), downloaded once
//! into a cache and checked.
//!
//! The files are the ones the references train on (the Autoformer / Time-Series-Library
//! layout: a `date` column, then the variables; the target `OT` last). [`fetch`] returns the
//! cached file when it is there; otherwise it tries each mirror in turn with the system's `curl`
//! (or `wget`), checks that the file reads as a series of the published size, and only then
//! moves it into the cache, so a cached file is a complete, checked one (it is not read again
//! until it is used). An interrupted or wrong download never lands in the cache.
//!
//! The cache is `$SSM_ZOO_CACHE/datasets` when that variable is set, otherwise
//! `$XDG_CACHE_HOME/ssm-zoo/datasets` or `~/.cache/ssm-zoo/datasets`. A machine without
//! internet can take a copy of the file put there by hand ([`Benchmark::check`] tells whether it
//! is the right one), or read any such CSV directly with [`crate::timeseries::read_series_csv`].

use crate::timeseries::{Missing, SeriesError, read_series_csv};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One benchmark series: its file name, its mirrors and the size it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Benchmark {
    /// The name used on the command line (`etth1`, `ettm1`, `weather`, `electricity`).
    pub name: &'static str,
    /// The file name in the cache (the references' names: the ETT split rules key on it).
    pub file: &'static str,
    /// Mirrors, tried in order.
    pub urls: &'static [&'static str],
    /// Time steps.
    pub rows: usize,
    /// Variables (the date column not counted).
    pub variables: usize,
    /// What it is, for `zoo data list`.
    pub about: &'static str,
}

/// The benchmarks the downloader knows.
pub const BENCHMARKS: [Benchmark; 4] = [
    Benchmark {
        name: "etth1",
        file: "ETTh1.csv",
        urls: &[
            "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/ETTh1.csv",
            "https://huggingface.co/datasets/thuml/Time-Series-Library/resolve/main/ETT-small/ETTh1.csv",
        ],
        rows: 17_420,
        variables: 7,
        about: "electricity transformer 1, hourly, 2016-07 to 2018-06 (Zhou et al., Informer)",
    },
    Benchmark {
        name: "ettm1",
        file: "ETTm1.csv",
        urls: &[
            "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/ETTm1.csv",
            "https://huggingface.co/datasets/thuml/Time-Series-Library/resolve/main/ETT-small/ETTm1.csv",
        ],
        rows: 69_680,
        variables: 7,
        about: "electricity transformer 1, every 15 minutes, 2016-07 to 2018-06",
    },
    Benchmark {
        name: "weather",
        file: "weather.csv",
        urls: &[
            "https://huggingface.co/datasets/thuml/Time-Series-Library/resolve/main/weather/weather.csv",
        ],
        rows: 52_696,
        variables: 21,
        about: "21 meteorological indicators every 10 minutes, Jena, 2020 (Autoformer)",
    },
    Benchmark {
        name: "electricity",
        file: "electricity.csv",
        urls: &[
            "https://huggingface.co/datasets/thuml/Time-Series-Library/resolve/main/electricity/electricity.csv",
        ],
        rows: 26_304,
        variables: 321,
        about: "hourly consumption of 321 clients, 2016-07 to 2019-07 (Autoformer)",
    },
];

/// What went wrong getting a benchmark (the crate's one error type).
pub type DownloadError = crate::error::DataFileError;

/// The benchmark of a name (`etth1`, `ETTh1`, `ETTh1.csv`, ... — case-insensitive).
pub fn benchmark(name: &str) -> Result<&'static Benchmark, DownloadError> {
    let n = name.to_ascii_lowercase();
    BENCHMARKS
        .iter()
        .find(|b| b.name == n || b.file.to_ascii_lowercase() == n)
        .ok_or_else(|| DownloadError::UnknownDataSet(name.into()))
}

/// The cache folder: `$SSM_ZOO_CACHE/datasets`, else `$XDG_CACHE_HOME/ssm-zoo/datasets`, else
/// `$HOME/.cache/ssm-zoo/datasets`.
pub fn cache_dir() -> Result<PathBuf, DownloadError> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(root) = var("SSM_ZOO_CACHE") {
        return Ok(root.join("datasets"));
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return Ok(xdg.join("ssm-zoo").join("datasets"));
    }
    var("HOME")
        .map(|h| h.join(".cache").join("ssm-zoo").join("datasets"))
        .ok_or(DownloadError::NoCacheDir)
}

impl Benchmark {
    /// Where the file lives in a cache folder.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(self.file)
    }

    /// Checks that a file reads as this series: dates, `variables` numeric columns, `rows`
    /// rows (empty cells are allowed; the readers interpolate them).
    pub fn check(&self, path: &Path) -> Result<(), DownloadError> {
        let invalid = |message: String| DownloadError::NotTheSeries {
            name: self.name.into(),
            path: path.into(),
            message,
        };
        let frame = read_series_csv(path, Missing::Interpolate)
            .map_err(|e: SeriesError| invalid(e.to_string()))?;
        if frame.len() != self.rows || frame.channels() != self.variables {
            return Err(invalid(format!(
                "{} rows x {} variables, expected {} x {}",
                frame.len(),
                frame.channels(),
                self.rows,
                self.variables
            )));
        }
        Ok(())
    }
}

/// The cached file of a benchmark, downloading it from its mirrors first when it is not in the
/// cache ([`cache_dir`]). `progress` shows the download tool's progress bar on stderr.
pub fn fetch(b: &Benchmark, progress: bool) -> Result<PathBuf, DownloadError> {
    let urls: Vec<String> = b.urls.iter().map(|u| u.to_string()).collect();
    fetch_into(b, &cache_dir()?, &urls, progress)
}

/// [`fetch`] with an explicit cache folder and mirrors (tried in order; `file://` URLs work
/// with curl, for a copy on a local or network disk).
pub fn fetch_into(
    b: &Benchmark,
    dir: &Path,
    urls: &[String],
    progress: bool,
) -> Result<PathBuf, DownloadError> {
    let target = b.path_in(dir);
    if target.is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(dir).map_err(|source| DownloadError::Cache {
        path: dir.into(),
        source,
    })?;
    let part = dir.join(format!(".{}.part-{}", b.file, std::process::id()));
    let mut tried = Vec::new();
    for url in urls {
        let outcome = download(url, &part, progress).and_then(|()| {
            b.check(&part).map_err(|e| match e {
                DownloadError::NotTheSeries { message, .. } => {
                    format!("not the {} series: {message}", b.name)
                }
                other => other.to_string(),
            })
        });
        match outcome {
            Ok(()) => {
                std::fs::rename(&part, &target).map_err(|source| DownloadError::Cache {
                    path: target.clone(),
                    source,
                })?;
                return Ok(target);
            }
            Err(why) => {
                let _ = std::fs::remove_file(&part);
                tried.push(format!("{url}: {why}"));
            }
        }
    }
    if tried.is_empty() {
        tried.push("no mirror given".into());
    }
    Err(DownloadError::Failed {
        file: b.file.into(),
        tried: tried.join("; "),
        target,
    })
}

/// Downloads one URL to `out` with curl, or wget where curl is missing. With `progress` the
/// tool's own progress bar and messages go to stderr; without, its message is in the error.
fn download(url: &str, out: &Path, progress: bool) -> Result<(), String> {
    let mut curl = Command::new("curl");
    curl.args(["--fail", "--location", "--show-error", "--retry", "2"])
        .args(["--connect-timeout", "30"])
        .arg(if progress {
            "--progress-bar"
        } else {
            "--silent"
        })
        .arg("--output")
        .arg(out)
        .arg(url);
    let mut wget = Command::new("wget");
    wget.args(["--tries=3", "--timeout=30"])
        .arg(if progress {
            "--show-progress"
        } else {
            "--quiet"
        })
        .arg("-O")
        .arg(out)
        .arg(url);
    let run = |c: &mut Command| -> std::io::Result<(std::process::ExitStatus, String)> {
        if progress {
            c.status().map(|s| (s, String::new()))
        } else {
            c.output().map(|o| {
                let text = String::from_utf8_lossy(&o.stderr);
                let last = text.lines().rev().find(|l| !l.trim().is_empty());
                (o.status, last.unwrap_or("").trim().to_string())
            })
        }
    };
    let (tool, (status, message)) = match run(&mut curl) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match run(&mut wget) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("neither curl nor wget is installed".into());
            }
            Err(e) => return Err(format!("cannot run wget: {e}")),
            Ok(r) => ("wget", r),
        },
        Err(e) => return Err(format!("cannot run curl: {e}")),
        Ok(r) => ("curl", r),
    };
    if status.success() {
        Ok(())
    } else if message.is_empty() {
        Err(format!("download failed ({tool}: {status})"))
    } else {
        Err(format!("download failed: {message}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    // A tiny series in the benchmark layout.
    const TINY: Benchmark = Benchmark {
        name: "tiny",
        file: "tiny.csv",
        urls: &[],
        rows: 3,
        variables: 2,
        about: "test",
    };

    fn source(dir: &Path, name: &str, text: &str) -> String {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        format!("file://{}", p.display())
    }

    const GOOD: &str = "date,a,OT\n2020-01-01 00:00:00,1,2\n2020-01-01 01:00:00,3,4\n\
                        2020-01-01 02:00:00,5,6\n";

    #[test]
    fn names_resolve_case_insensitively() {
        assert_eq!(benchmark("ETTh1").unwrap().file, "ETTh1.csv");
        assert_eq!(benchmark("etth1.csv").unwrap().name, "etth1");
        assert_eq!(benchmark("Electricity").unwrap().variables, 321);
        let e = benchmark("traffic").unwrap_err().to_string();
        assert!(e.contains("\"traffic\"") && e.contains("weather"), "{e}");
        for b in &BENCHMARKS {
            assert!(!b.urls.is_empty() && b.urls.iter().all(|u| u.starts_with("https://")));
            assert!(b.urls.iter().all(|u| u.ends_with(b.file)), "{}", b.name);
        }
    }

    #[test]
    fn downloads_once_then_uses_the_cache() {
        if Command::new("curl").arg("--version").output().is_err() {
            ssm_backends::testing::skip(
                "downloads_once_then_uses_the_cache",
                "curl is not installed",
            );
            return;
        }
        let src = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let url = source(src.path(), "tiny.csv", GOOD);
        let got = fetch_into(&TINY, cache.path(), std::slice::from_ref(&url), false).unwrap();
        assert_eq!(got, cache.path().join("tiny.csv"));
        assert_eq!(std::fs::read_to_string(&got).unwrap(), GOOD);
        // The source gone, the cached file still answers and nothing else is left around.
        std::fs::remove_file(src.path().join("tiny.csv")).unwrap();
        assert_eq!(fetch_into(&TINY, cache.path(), &[url], false).unwrap(), got);
        let names: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_failing_mirror_falls_back_and_bad_files_never_land() {
        if Command::new("curl").arg("--version").output().is_err() {
            ssm_backends::testing::skip(
                "a_failing_mirror_falls_back_and_bad_files_never_land",
                "curl is not installed",
            );
            return;
        }
        let src = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let missing = format!("file://{}/nothing.csv", src.path().display());
        let short = source(src.path(), "short.csv", "date,a,OT\n2020-01-01,1,2\n");
        let junk = source(src.path(), "junk.csv", "<html>rate limited</html>\n");
        let good = source(src.path(), "good.csv", GOOD);

        // Every mirror bad: the error lists each with its reason, and the cache stays empty.
        let e = fetch_into(
            &TINY,
            cache.path(),
            &[missing.clone(), short.clone(), junk],
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&missing) && e.contains("download failed: curl: (37)"),
            "{e}"
        );
        assert!(
            e.contains(&short) && e.contains("1 rows x 2 variables, expected 3 x 2"),
            "{e}"
        );
        assert!(
            e.contains("junk.csv") && e.contains("not the tiny series"),
            "{e}"
        );
        assert!(e.contains("tiny.csv") && e.contains("--csv"), "{e}");
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);

        // A later good mirror is used.
        let got = fetch_into(&TINY, cache.path(), &[missing, short, good], false).unwrap();
        assert_eq!(std::fs::read_to_string(got).unwrap(), GOOD);
    }

    #[test]
    fn check_names_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let url = source(dir.path(), "x.csv", GOOD);
        let path = PathBuf::from(url.trim_start_matches("file://"));
        TINY.check(&path).unwrap();
        let e = benchmark("etth1")
            .unwrap()
            .check(&path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not the etth1 series") && e.contains("expected 17420 x 7"),
            "{e}"
        );
    }
}
