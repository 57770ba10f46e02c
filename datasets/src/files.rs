//! Reading a data file whole, plain or gzipped (a name ending in `.gz`), with a bound on what a
//! gzip stream may expand to. Deflate reaches about 1000:1, so a small crafted or damaged file
//! (a "gzip bomb") would otherwise fill the memory before any reader sees a byte; real data
//! compresses far less (text 3-4x, MNIST's images 5x), so the bound is [`MAX_GUNZIP_RATIO`]
//! times the compressed size, at least [`MIN_GUNZIP_LIMIT`], and `SSM_ZOO_MAX_GUNZIP_BYTES`
//! sets it outright for data that is real and more compressible than that. Concatenated gzip
//! members (`cat a.gz b.gz`, pigz, bgzip) are read to the end, not cut after the first.

use crate::error::DataFileError;
use std::io::Read;
use std::path::Path;

/// The environment variable that sets the most bytes a `.gz` data file may expand to.
pub const GUNZIP_LIMIT_VAR: &str = "SSM_ZOO_MAX_GUNZIP_BYTES";
/// Without [`GUNZIP_LIMIT_VAR`], a `.gz` file may expand to this many times its size...
pub const MAX_GUNZIP_RATIO: u64 = 256;
/// ...or to this many bytes (64 MiB), whichever is larger.
pub const MIN_GUNZIP_LIMIT: u64 = 64 << 20;

/// The most bytes a gzip file of `compressed` bytes may expand to: `setting` (the value of
/// [`GUNZIP_LIMIT_VAR`], if set) as a byte count, else the larger of [`MIN_GUNZIP_LIMIT`] and
/// [`MAX_GUNZIP_RATIO`] × `compressed`.
pub fn gunzip_limit(compressed: u64, setting: Option<&str>) -> Result<u64, DataFileError> {
    match setting {
        Some(s) => s.trim().parse().map_err(|_| {
            DataFileError::Invalid(format!(
                "{GUNZIP_LIMIT_VAR} must be a byte count (a whole number), not {s:?}"
            ))
        }),
        None => Ok(compressed
            .saturating_mul(MAX_GUNZIP_RATIO)
            .max(MIN_GUNZIP_LIMIT)),
    }
}

/// A whole file, gunzipped when its name ends in `.gz` (within [`gunzip_limit`], read from
/// the environment).
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, DataFileError> {
    let setting = std::env::var(GUNZIP_LIMIT_VAR).ok();
    read_bytes_within(path, setting.as_deref())
}

fn read_bytes_within(path: &Path, setting: Option<&str>) -> Result<Vec<u8>, DataFileError> {
    let io = |source| DataFileError::Io {
        path: path.into(),
        source,
    };
    if path.extension().is_none_or(|e| e != "gz") {
        return std::fs::read(path).map_err(io);
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let compressed = file.metadata().map_err(io)?.len();
    let limit = gunzip_limit(compressed, setting)?;
    let mut bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file))
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(DataFileError::TooLarge {
            path: path.into(),
            limit,
            compressed,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(chunks: &[&[u8]], repeat: usize) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        for _ in 0..repeat {
            for c in chunks {
                enc.write_all(c).unwrap();
            }
        }
        enc.finish().unwrap()
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_the_limit() {
        // 80 MiB of zeros compress to about 80 KB: 1000:1, past both bounds.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.jsonl.gz");
        let zeros = vec![0u8; 1 << 20];
        std::fs::write(&path, gzip(&[&zeros], 80)).unwrap();
        let compressed = std::fs::metadata(&path).unwrap().len();
        assert!(compressed < 200_000, "{compressed}");
        let err = read_bytes_within(&path, None).unwrap_err();
        assert!(
            matches!(err, DataFileError::TooLarge { limit, .. } if limit == MIN_GUNZIP_LIMIT),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains("bomb.jsonl.gz"), "{message}");
        assert!(message.contains(GUNZIP_LIMIT_VAR), "{message}");
        // Set outright, the limit admits it (or refuses it lower).
        let whole = read_bytes_within(&path, Some("83886080")).unwrap();
        assert_eq!(whole.len(), 80 << 20);
        assert!(whole.iter().all(|&b| b == 0));
        assert!(matches!(
            read_bytes_within(&path, Some("1000")),
            Err(DataFileError::TooLarge { limit: 1000, .. })
        ));
    }

    #[test]
    fn the_limit_scales_with_the_compressed_size() {
        assert_eq!(gunzip_limit(10, None).unwrap(), MIN_GUNZIP_LIMIT);
        assert_eq!(gunzip_limit(1 << 30, None).unwrap(), 256 << 30);
        assert_eq!(gunzip_limit(u64::MAX, None).unwrap(), u64::MAX);
        assert_eq!(gunzip_limit(10, Some(" 5000 ")).unwrap(), 5000);
        let err = gunzip_limit(10, Some("5 GB")).unwrap_err().to_string();
        assert!(
            err.contains(GUNZIP_LIMIT_VAR) && err.contains("5 GB"),
            "{err}"
        );
    }

    #[test]
    fn concatenated_members_and_plain_files_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.txt.gz");
        let mut both = gzip(&[b"first member, "], 1);
        both.extend(gzip(&[b"second member"], 1));
        std::fs::write(&path, both).unwrap();
        assert_eq!(
            read_bytes_within(&path, None).unwrap(),
            b"first member, second member"
        );
        let plain = dir.path().join("plain.txt");
        std::fs::write(&plain, b"as is").unwrap();
        assert_eq!(read_bytes_within(&plain, None).unwrap(), b"as is");
        // A damaged stream is an error naming the file, not a short read.
        let bad = dir.path().join("bad.txt.gz");
        let mut g = gzip(&[b"some text that is long enough to matter"], 20);
        let n = g.len();
        g.truncate(n - 12);
        std::fs::write(&bad, g).unwrap();
        let err = read_bytes_within(&bad, None).unwrap_err().to_string();
        assert!(err.contains("bad.txt.gz"), "{err}");
    }
}
