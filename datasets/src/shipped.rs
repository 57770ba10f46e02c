//! Where the data that ships with the sources (`datasets/data/`) is found at run time. The
//! folder this crate was compiled from is only a hint: a binary that was installed, copied, or
//! built in a target folder shared with another checkout must still find it.

use std::path::{Path, PathBuf};

/// The environment variable naming the folder that holds the shipped data files.
pub const DATA_DIR_VAR: &str = "SSM_ZOO_DATA_DIR";

/// The shipped data file `name`: under [`DATA_DIR_VAR`] when it is set; else the first that
/// exists of `data/<name>` in the folder this crate was compiled from and `datasets/data/<name>`
/// under the current folder, the running executable's folder, or any folder above either (a
/// checkout's root, or a build folder kept inside one); else the compiled-in path, which the
/// reader's error then names.
pub fn shipped_data(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os(DATA_DIR_VAR) {
        return Path::new(&dir).join(name);
    }
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name);
    if compiled.exists() {
        return compiled;
    }
    let rel = Path::new("datasets").join("data").join(name);
    let starts = [
        std::env::current_dir().ok(),
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf)),
    ];
    starts
        .into_iter()
        .flatten()
        .flat_map(|start| {
            start
                .ancestors()
                .map(|dir| dir.join(&rel))
                .collect::<Vec<_>>()
        })
        .find(|p| p.exists())
        .unwrap_or(compiled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_text_is_found() {
        assert!(shipped_data("shakespeare.jsonl.gz").is_file());
    }
}
