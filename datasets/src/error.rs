//! The one error type of the crate: reading the line-oriented files (digits, series, graphs) and
//! the image formats, settings that cannot be used, and getting a benchmark into the cache.
//! Each message names the file (and the line, where it applies) or says what was tried.

use std::path::PathBuf;

/// What went wrong reading or getting data.
#[derive(Debug, thiserror::Error)]
pub enum DataFileError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A file whose format is wrong (an image or a binary data set).
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// A gzip file that expands past its limit ([`crate::files::gunzip_limit`]).
    #[error(
        "{path} expands to more than {limit} bytes when gunzipped (from {compressed} bytes): \
         a damaged file or a gzip bomb? If the data is real, set SSM_ZOO_MAX_GUNZIP_BYTES to \
         a larger byte count"
    )]
    TooLarge {
        path: PathBuf,
        limit: u64,
        compressed: u64,
    },
    /// Contents that parse but cannot be used (sizes, settings).
    #[error("{0}")]
    Invalid(String),
    /// A benchmark name that is not one of the known ones.
    #[error("unknown data set {0:?}: expected one of etth1, ettm1, weather, electricity")]
    UnknownDataSet(String),
    #[error("no cache folder: set SSM_ZOO_CACHE (or HOME / XDG_CACHE_HOME)")]
    NoCacheDir,
    #[error("cannot use the cache folder {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every mirror failed; says which and how to get the file by other means.
    #[error(
        "could not download {file} ({tried}); download it by hand (or copy it from another \
         machine) to {target}, or read it with --csv"
    )]
    Failed {
        file: String,
        tried: String,
        target: PathBuf,
    },
    /// A downloaded or given file that is not the benchmark's series.
    #[error("{path} is not the {name} series: {message}")]
    NotTheSeries {
        name: String,
        path: PathBuf,
        message: String,
    },
}
