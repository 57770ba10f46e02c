//! One module per command (`zoo train` and `zoo bench`: one per task), each holding its clap
//! arguments and its `run`; they use `crate::common` and never each other.

pub mod bench_compare;
pub mod bench_lm;
pub mod bench_scan;
pub mod bench_vision;
pub mod classify;
pub mod data;
pub mod demo;
pub mod devices;
pub mod eval;
pub mod forecast;
pub mod generate;
pub mod logits;
pub mod quantize;
pub mod selftest;
pub mod train_copy;
pub mod train_digits;
pub mod train_graph;
pub mod train_lm;
pub mod train_series;
pub mod train_vision;
