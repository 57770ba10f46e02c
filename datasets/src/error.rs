//! The one error type of the crate: reading the line-oriented files (digits, series, graphs) and
//! the image formats, settings that cannot be used, and getting a benchmark into the cache.
//! Each message names the file (and the line, where it applies) or says what was tried.

use std::path::PathBuf;

/// What went wrong reading or getting data.
#[derive(Debug, thiserror::Error)]
pub enum DataFileError {
    /// A file or folder that cannot be read (missing, unreadable): check the path.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A line of a line-oriented file (digits, series, graphs, token ids) that does not parse.
    #[error("{path}, line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line, counted from 1 (0: the file as a whole, e.g. one with no records).
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// A file whose format is wrong (an image or a binary data set).
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A gzip file that expands past its limit ([`crate::files::gunzip_limit`]).
    #[error(
        "{path} expands to more than {limit} bytes when gunzipped (from {compressed} bytes): \
         a damaged file or a gzip bomb? If the data is real, set SSM_ZOO_MAX_GUNZIP_BYTES to \
         a larger byte count"
    )]
    TooLarge {
        /// The gzip file.
        path: PathBuf,
        /// The limit in bytes (`SSM_ZOO_MAX_GUNZIP_BYTES`, else a multiple of `compressed`).
        limit: u64,
        /// The gzip file's own size in bytes.
        compressed: u64,
    },
    /// Contents that parse but cannot be used (sizes, settings).
    #[error("{0}")]
    Invalid(String),
    /// A benchmark name that is not one of the known ones.
    #[error("unknown data set {0:?}: expected one of etth1, ettm1, weather, electricity")]
    UnknownDataSet(String),
    /// No cache folder can be found: none of `SSM_ZOO_CACHE`, `XDG_CACHE_HOME` and `HOME` is set.
    #[error("no cache folder: set SSM_ZOO_CACHE (or HOME / XDG_CACHE_HOME)")]
    NoCacheDir,
    /// The cache folder cannot be created, or a downloaded file cannot be moved into it.
    #[error("cannot use the cache folder {path}: {source}")]
    Cache {
        /// The cache folder, or the file's place in it.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Every mirror failed; says which and how to get the file by other means.
    #[error(
        "could not download {file} ({tried}); download it by hand (or copy it from another \
         machine) to {target}, or read it with --csv"
    )]
    Failed {
        /// The benchmark's file name.
        file: String,
        /// Each mirror tried with why it failed, separated by `; `.
        tried: String,
        /// Where the file is expected in the cache: put a copy there to skip the download.
        target: PathBuf,
    },
    /// A downloaded or given file that is not the benchmark's series.
    #[error("{path} is not the {name} series: {message}")]
    NotTheSeries {
        /// The benchmark's name.
        name: String,
        /// The file checked.
        path: PathBuf,
        /// What differs (a read error, or the row and variable counts).
        message: String,
    },
}
