//! Workloads shared by Vigil's benchmarks (figures and commands in BENCHMARKS.md).
//!
//! - [`fleet`]: a synthetic fleet (10 metrics × N series each, Kubernetes-style labels),
//!   the 10 rules that watch it, and deterministic sample batches, one sample per series
//!   per 10 s step;
//! - [`alloc`]: a counting global allocator for heap measurements.
//!
//! Everything is deterministic: values are a hash of (series, step), so two runs feed the
//! engine exactly the same samples.

pub mod alloc;
pub mod fleet;

use vigil_engine::rule::Source;
use vigil_engine::RuleSet;

/// Compiles one rule file held in memory; panics on a rule error (benchmarks only).
pub fn compile(name: &str, text: &str) -> RuleSet {
    RuleSet::from_sources(&[Source {
        name: name.into(),
        text: text.into(),
    }])
    .unwrap_or_else(|e| panic!("benchmark rules do not compile:\n{e}"))
}

/// splitmix64: a fast, well-mixed hash of a counter.
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform value in [0, 1) from a hash.
#[inline]
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}
