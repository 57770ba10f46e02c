//! Turns the Rust examples of the workspace's documentation (the ```` ```rust ```` blocks of
//! `README.md` and of `docs/**/*.md`) into macros `<page>_example_<n>!()` in
//! `$OUT_DIR/readme_examples.rs` (`readme_example_0!()` for the README's first block,
//! `checkpoints_example_0!()` for `docs/checkpoints.md`'s), each expanding to the block's items,
//! which `tests/readme.rs` expands inside a test module and runs: the documented code is tested
//! exactly as a reader sees it (its private items included). Blocks fenced ```` ```rust,ignore
//! ```` are sketches and skipped. Outside the workspace (a packaged crate, no docs beside it)
//! the file is empty.

use std::path::{Path, PathBuf};

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let root = Path::new(&manifest).join("..");
    let mut pages = vec![root.join("README.md")];
    collect_markdown(&root.join("docs"), &mut pages);
    let docs = root.join("docs");
    println!("cargo:rerun-if-changed={}", docs.display());
    let mut macros = String::new();
    for page in &pages {
        println!("cargo:rerun-if-changed={}", page.display());
        let Ok(text) = std::fs::read_to_string(page) else {
            continue;
        };
        let stem = page
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("page")
            .to_ascii_lowercase()
            .replace(['-', '.'], "_");
        macros.push_str(&examples_of(&text, &stem, page));
    }
    std::fs::write(Path::new(&out).join("readme_examples.rs"), macros)
        .expect("cannot write readme_examples.rs");
}

/// Every `.md` file under `dir`, sorted, subfolders included.
fn collect_markdown(dir: &Path, pages: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect_markdown(&path, pages);
        } else if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
}

/// The macros of one page's ```` ```rust ```` blocks.
fn examples_of(text: &str, stem: &str, page: &Path) -> String {
    let mut macros = String::new();
    let mut block: Option<String> = None;
    let mut count = 0;
    for line in text.lines() {
        let fence = line.trim();
        match block.as_mut() {
            None if fence == "```rust" => block = Some(String::new()),
            Some(code) if fence == "```" => {
                assert!(
                    !code.contains('$'),
                    "{}: Rust example {count}: a `$` breaks macro_rules",
                    page.display()
                );
                macros.push_str(&format!(
                    "/// `{}`'s Rust example {count}.\nmacro_rules! {stem}_example_{count} {{\n    () => {{\n{code}    }};\n}}\n",
                    page.file_name().unwrap_or_default().to_string_lossy()
                ));
                count += 1;
                block = None;
            }
            Some(code) => {
                code.push_str(line);
                code.push('\n');
            }
            None => {}
        }
    }
    macros
}
