//! Benchmarks for `ft`; see `benches/README.md` and `benches/RESULTS.md`.
