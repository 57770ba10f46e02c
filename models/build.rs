//! Turns the Rust examples of the workspace's README (its ```` ```rust ```` blocks) into macros
//! `readme_example_0!()`, `readme_example_1!()`, ... in `$OUT_DIR/readme_examples.rs`, each
//! expanding to the block's items, which `tests/readme.rs` expands inside a test module and runs:
//! the README's code is tested exactly as a reader sees it (its private items included). Outside
//! the workspace (a packaged crate, no README beside it) the file is empty.

use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let readme = Path::new(&manifest).join("../README.md");
    println!("cargo:rerun-if-changed={}", readme.display());
    let text = std::fs::read_to_string(&readme).unwrap_or_default();
    let mut modules = String::new();
    let mut block: Option<String> = None;
    let mut count = 0;
    for line in text.lines() {
        let fence = line.trim();
        match block.as_mut() {
            None if fence == "```rust" => block = Some(String::new()),
            Some(code) if fence == "```" => {
                assert!(
                    !code.contains('$'),
                    "README example {count}: a `$` breaks macro_rules"
                );
                modules.push_str(&format!(
                    "/// README.md's Rust example {count}.\nmacro_rules! readme_example_{count} {{\n    () => {{\n{code}    }};\n}}\n"
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
    std::fs::write(Path::new(&out).join("readme_examples.rs"), modules)
        .expect("cannot write readme_examples.rs");
}
