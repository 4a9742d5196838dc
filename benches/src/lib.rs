//! Benchmarks live in `benches/`; see BENCHMARKS.md for the figures and commands.
