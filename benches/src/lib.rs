//! Benchmarks of the SSM zoo: see `benches/` (criterion) and `zoo bench`.
