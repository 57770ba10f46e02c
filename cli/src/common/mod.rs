//! What the commands share. Each command (`crate::commands::*`) uses these modules and never
//! another command; these modules use each other in one direction only (`error` and `choices`
//! at the bottom, `lm`, `image`, `graph`, `series` above them).

pub mod alloc;
pub mod args;
pub mod bandwidth;
pub mod choices;
pub mod download;
pub mod error;
pub mod graph;
pub mod headless;
pub mod image;
pub mod lm;
pub mod measure;
pub mod memory;
pub mod panic;
pub mod plot;
pub mod progress;
pub mod run_file;
pub mod sequence;
pub mod series;
