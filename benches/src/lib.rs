//! Workloads shared by Vigil's benchmarks (figures and commands in BENCHMARKS.md).
//!
//! - [`fleet`]: a synthetic fleet (10 metrics × N series each, Kubernetes-style labels),
//!   the 10 rules that watch it, and deterministic sample batches, one sample per series
//!   per 10 s step;
//! - [`alloc`]: a counting global allocator for heap measurements;
//! - [`thread_cpu_time`]: the clock the benchmarks use.
//!
//! Everything is deterministic: values are a hash of (series, step), so two runs feed the
//! engine exactly the same samples.

pub mod alloc;
pub mod fleet;

use std::time::Duration;

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

/// CPU time used so far by the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
///
/// The benchmarks time with this clock rather than the wall clock: on a small shared
/// machine, time spent waiting for a core while other processes run is not the engine's.
/// What it cannot remove is the slowdown from sharing caches and memory bandwidth.
#[allow(unsafe_code)] // one libc call
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the valid pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` `iters` times and returns the thread CPU time it took (for criterion's
/// `iter_custom`).
pub fn cpu_timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = thread_cpu_time();
    for _ in 0..iters {
        f();
    }
    thread_cpu_time() - start
}
