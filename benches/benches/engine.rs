//! Criterion benchmarks of the engine; figures and commands in BENCHMARKS.md.
//!
//! - `detector/*`: one `DetectorSpec::observe` per sample, on a state built from a
//!   compiled rule (zscore with a 15m window at 10s = 90 slots; ewma), on one hot state
//!   and round-robin over 10 000 states (one step of a 10 000-series rule).
//! - `evaluator/*`: `Evaluator::ingest` of one 100 000-sample batch per 10 s step (100 000
//!   series, 10 rules, windows full) against a bare loop that sums the same samples into
//!   a `Vec<f64>` indexed by series id.
//!
//! Times are the benchmark thread's CPU time ([`vigil_benches::thread_cpu_time`]), so
//! other processes sharing the machine's cores do not inflate them.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use vigil_benches::fleet::{self, Fleet, METRICS, STEP_MS, T0};
use vigil_benches::{compile, cpu_timed, mix, thread_cpu_time, unit};
use vigil_engine::detector::{DetectorSpec, DetectorState};
use vigil_engine::{Evaluator, EvaluatorConfig, Event, Sample};

/// The detectors under test, as a rule file writes them.
const DETECTOR_RULES: &str = r#"
group: detectors
interval: 10s
rules:
  - name: ZScore
    select: x
    detect:
      zscore: { window: 15m, threshold: 3.5, min_samples: 30, direction: up }
  - name: Ewma
    select: x
    detect:
      ewma: { halflife: 5m, threshold: 4.0, warmup: 20 }
"#;

/// Values fed to the detectors: triangular noise ±10% around 100.
fn values(n: usize) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            let h = mix(i);
            100.0 * (1.0 + 0.1 * (unit(h) + unit(mix(h)) - 1.0))
        })
        .collect()
}

fn detectors(c: &mut Criterion) {
    let rules = compile("detectors.yaml", DETECTOR_RULES);
    let mut g = c.benchmark_group("detector");
    for (name, rule) in [("zscore_90", 0), ("ewma", 1)] {
        let spec: DetectorSpec = rules.rules[rule].detector.clone().expect("detector");

        // One state, hot in cache: a sample per step, so every zscore update evicts the
        // oldest slot and inserts the new point (the steady state of a full window).
        const N: usize = 10_000;
        let xs = values(N);
        let mut state = spec.new_state();
        // The window the evaluator keeps for each state in its rule's arena.
        let w = spec.window_slots();
        let mut window = vec![f64::NAN; w];
        let mut ts = T0;
        for &x in &xs {
            ts += STEP_MS;
            spec.observe(&mut state, &mut window, ts, x, false);
        }
        g.throughput(Throughput::Elements(N as u64));
        g.bench_function(BenchmarkId::new(name, "1 state"), |b| {
            b.iter_custom(|iters| {
                cpu_timed(iters, || {
                    for &x in &xs {
                        ts += STEP_MS;
                        black_box(spec.observe(&mut state, &mut window, ts, black_box(x), false));
                    }
                })
            })
        });

        // 10 000 states (one rule's worth of series), each updated once per step with a
        // value that changes from step to step (a window of 2N values, shifted per step).
        let xs2 = values(2 * N);
        let mut states: Vec<DetectorState> = (0..N).map(|_| spec.new_state()).collect();
        // Windows contiguous, one after the other, as in the evaluator's arena.
        let mut windows = vec![f64::NAN; N * w];
        let mut ts = T0;
        let mut step = 0usize;
        let mut feed = |states: &mut [DetectorState], ts: i64| {
            step += 1;
            let off = step * 7919 % N;
            for (i, (s, &x)) in states.iter_mut().zip(&xs2[off..off + N]).enumerate() {
                let window = &mut windows[i * w..(i + 1) * w];
                black_box(spec.observe(s, window, ts, black_box(x), false));
            }
        };
        for _ in 0..100 {
            ts += STEP_MS;
            feed(&mut states, ts);
        }
        g.bench_function(BenchmarkId::new(name, "10k states"), |b| {
            b.iter_custom(|iters| {
                cpu_timed(iters, || {
                    ts += STEP_MS;
                    feed(&mut states, ts);
                })
            })
        });
    }
    g.finish();
}

/// Series per metric: 10 metrics × 10 000 = 100 000 series.
const PER_METRIC: usize = 10_000;
/// Steps fed before measuring: the 15m zscore windows (90 slots) are full, the ewma
/// warm-ups (20) and growth histories (11) are past, and several sweeps have run.
const WARM_STEPS: u64 = 120;

fn evaluator(c: &mut Criterion) {
    let mut ev = Evaluator::new(Arc::new(fleet::rules()), EvaluatorConfig::default());
    let fleet = Fleet::intern(&mut ev, &METRICS, PER_METRIC);
    let n = fleet.len();
    let mut batch = Vec::with_capacity(n);
    let mut events = 0usize;
    let mut step = 0u64;
    let start = Instant::now();
    while step < WARM_STEPS {
        fleet.fill(step, &mut batch);
        ev.ingest(&batch);
        events += ev.drain_events().len();
        step += 1;
    }
    let warm = start.elapsed();
    let st = ev.stats();
    eprintln!(
        "evaluator warm-up: {n} series, {} rules, {WARM_STEPS} steps in {warm:.2?} \
         ({:.2} M samples/s incl. first-sample routing); {} evaluated, {events} events \
         ({:.1} per step); heap_bytes {:.1} MB",
        ev.rules().rules.len(),
        (WARM_STEPS as f64 * n as f64) / warm.as_secs_f64() / 1e6,
        st.evaluated,
        events as f64 / WARM_STEPS as f64,
        ev.heap_bytes() as f64 / 1e6,
    );
    assert_eq!(
        st.late + st.duplicate + st.unknown_series + st.non_finite,
        0
    );

    let mut g = c.benchmark_group("evaluator");
    g.throughput(Throughput::Elements(n as u64));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(20);

    // The floor: touch every sample once, indexed by series id, with no engine at all.
    let baseline_batches: Vec<Vec<Sample>> = (0..8)
        .map(|s| {
            let mut b = Vec::new();
            fleet.fill(s, &mut b);
            b
        })
        .collect();
    let mut sums = vec![0.0f64; n];
    let mut k = 0usize;
    g.bench_function("bare_loop_100k", |b| {
        b.iter_custom(|iters| {
            cpu_timed(iters, || {
                let batch = &baseline_batches[k % baseline_batches.len()];
                k += 1;
                for s in black_box(batch) {
                    sums[s.series as usize] += s.value;
                }
                black_box(&sums);
            })
        })
    });

    // The engine: one step of the whole fleet per iteration, events drained (and
    // dropped) inside the timed region. Building the batch is not timed.
    // The bare loop is also run over each batch right after the engine (not timed for
    // criterion), so the ratio printed at the end compares the two under the same load.
    let mut events_measured = 0usize;
    let mut steps_measured = 0u64;
    let (mut engine_time, mut bare_time, mut engine_wall) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    g.bench_function("ingest_100k_series_10_rules", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                fleet.fill(step, &mut batch);
                step += 1;
                let (wall, cpu) = (Instant::now(), thread_cpu_time());
                ev.ingest(black_box(&batch));
                let out: Vec<Event> = ev.drain_events();
                let spent = thread_cpu_time() - cpu;
                engine_wall += wall.elapsed();
                total += spent;
                engine_time += spent;
                events_measured += out.len();
                steps_measured += 1;
                drop(out);
                let cpu = thread_cpu_time();
                for s in black_box(&batch) {
                    sums[s.series as usize] += s.value;
                }
                black_box(&sums);
                bare_time += thread_cpu_time() - cpu;
            }
            total
        })
    });
    g.finish();
    let per_sample = |d: Duration| d.as_secs_f64() * 1e9 / (steps_measured as f64 * n as f64);
    eprintln!(
        "evaluator vs bare loop, interleaved over the same {steps_measured} batches (CPU time): \
         {:.1} ns/sample ({:.2} M samples/s) vs {:.2} ns/sample: ratio {:.0}x; \
         evaluator wall time {:.1} ns/sample",
        per_sample(engine_time),
        1e3 / per_sample(engine_time),
        per_sample(bare_time),
        engine_time.as_secs_f64() / bare_time.as_secs_f64(),
        per_sample(engine_wall),
    );
    let st = ev.stats();
    eprintln!(
        "evaluator measured: {steps_measured} steps, {events_measured} events ({:.1} per step); \
         totals: {} evaluated, {} late, {} duplicate; heap_bytes {:.1} MB",
        events_measured as f64 / steps_measured.max(1) as f64,
        st.evaluated,
        st.late,
        st.duplicate,
        ev.heap_bytes() as f64 / 1e6,
    );
    for i in 0..ev.rules().rules.len() {
        let rs = ev.rule_stats(i);
        eprintln!(
            "  {:<22} states {:>6}  samples {:>9}  evaluations {:>9}",
            ev.rules().rules[i].name,
            rs.states,
            rs.samples,
            rs.evaluations
        );
    }
}

criterion_group!(benches, detectors, evaluator);
criterion_main!(benches);
