//! Heap held by the evaluator per series, measured with a counting global allocator.
//!
//! `cargo bench -p vigil-benches --bench memory` prints a Markdown table (the one in
//! BENCHMARKS.md). Each scenario builds an evaluator, interns its series, feeds steps
//! until the windows are full, flushes, drains the events, and reports the live heap
//! growth since before the evaluator was built, per series, with the window points
//! (8 bytes each) taken out, next to `Evaluator::heap_bytes()`.

use std::collections::HashSet;
use std::sync::Arc;

use vigil_benches::alloc::{live_allocations, live_bytes, CountingAlloc};
use vigil_benches::compile;
use vigil_benches::fleet::{self, Fleet, Metric, METRICS};
use vigil_engine::lifecycle::AlertState;
use vigil_engine::rule::RuleKind;
use vigil_engine::{labels, Evaluator, EvaluatorConfig, Event, RuleSet, Sample, SeriesId};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// One zscore rule, 15m window at 10s: 90 points per state.
const ZSCORE_RULE: &str = r#"
group: mem
interval: 10s
rules:
  - name: LatencyAnomaly
    select: 'http_request_duration_seconds'
    detect:
      zscore: { window: 15m, threshold: 3.5, min_samples: 30, direction: up }
    for: 1m
"#;

const SERIES: usize = 100_000;
/// Steps fed: more than the 90-slot window.
const STEPS: u64 = 100;

struct Scenario {
    name: &'static str,
    rules: RuleSet,
    metrics: &'static [Metric],
    /// Window points held per series (8 bytes each), taken out of the figure.
    points_per_series: f64,
    /// Samples per `ingest` call; with `stagger`, timestamps are spread over the step.
    chunk: usize,
    stagger: bool,
    /// Gauge spikes (1 sample in 20 000) that make states pending or firing.
    spikes: bool,
}

struct Figures {
    series: usize,
    /// Live heap of the evaluator after interning, bytes.
    after_intern: usize,
    /// Live heap of the evaluator at the end, bytes.
    total: usize,
    /// Largest live heap of the evaluator seen between two `ingest` calls (samples
    /// waiting for the watermark included), bytes.
    peak: usize,
    heap_bytes: usize,
    allocations: usize,
    /// States that were ever pending or firing (each keeps an alert history).
    activated: usize,
    /// Encoded label bytes: the series' own, and the copies the rules' states keep.
    series_labels: usize,
    state_labels: usize,
}

/// Encoded label bytes of the series and of the states the rules derive from them that
/// keep their own copy (states of rules with `by`, `aggregate` or `quantile`; a state of
/// a rule without them shares its series' labels).
fn label_bytes(ev: &Evaluator, ids: &[SeriesId]) -> (usize, usize) {
    let encoded: Vec<Box<[u8]>> = ids
        .iter()
        .map(|&id| labels::encode(&ev.series().labels(id).expect("live series")))
        .collect();
    let series = encoded.iter().map(|b| b.len()).sum();
    let mut states = 0;
    let mut buf = Vec::new();
    for rule in &ev.rules().rules {
        let Some(sel) = &rule.selector else { continue };
        let shared =
            rule.by.is_none() && matches!(rule.kind, RuleKind::Direct | RuleKind::Absent { .. });
        if shared {
            continue;
        }
        let mut keys = HashSet::new();
        for enc in encoded.iter().filter(|b| sel.matches(b)) {
            match (&rule.kind, &rule.by) {
                (RuleKind::Aggregate { by, .. }, _) | (_, Some(by)) => {
                    labels::project(enc, by, &mut buf)
                }
                _ => labels::without(enc, &[labels::METRIC_NAME], &mut buf),
            }
            keys.insert(buf.clone());
        }
        states += keys.iter().map(Vec::len).sum::<usize>();
    }
    (series, states)
}

fn run(s: &Scenario) -> Figures {
    let base = live_bytes();
    let base_allocs = live_allocations();
    let mut ev = Evaluator::new(Arc::new(s.rules.clone()), EvaluatorConfig::default());
    let per_metric = SERIES / s.metrics.len();
    let mut fleet = Fleet::intern(&mut ev, s.metrics, per_metric);
    if s.stagger {
        fleet = fleet.staggered();
    }
    if !s.spikes {
        fleet = fleet.without_spikes();
    }
    // The fleet's own arrays (ids, levels, shapes) belong to the harness.
    let harness = fleet.len() * (4 + 8 + std::mem::size_of::<fleet::Shape>());
    let after_intern = live_bytes() - base - harness;
    let mut batch = Vec::with_capacity(fleet.len());
    let mut activated = HashSet::new();
    let mut drain = |ev: &mut Evaluator| {
        for e in ev.drain_events() {
            if let Event::Alert(a) = e {
                if matches!(a.state, AlertState::Pending | AlertState::Firing) {
                    activated.insert((a.rule, a.fingerprint));
                }
            }
        }
    };
    let mut peak = 0;
    for step in 0..STEPS {
        fleet.fill(step, &mut batch);
        for chunk in batch.chunks(s.chunk) {
            ev.ingest(chunk);
            drain(&mut ev);
            // Without the harness's arrays and batch (the set of activated alerts,
            // a few KB, is counted against the evaluator here).
            let harness_now = harness + batch.capacity() * std::mem::size_of::<Sample>();
            peak = peak.max(live_bytes() - base - harness_now);
        }
    }
    ev.flush();
    drain(&mut ev);
    let series = fleet.len();
    let (series_labels, state_labels) = label_bytes(&ev, fleet.ids());
    assert_eq!(
        ev.stats().evaluated,
        STEPS * series as u64,
        "every sample evaluated"
    );
    drop((batch, fleet));
    let activated = activated.len();
    // Only the evaluator is left of what was allocated since `base`.
    let figures = Figures {
        series,
        after_intern,
        total: live_bytes() - base,
        peak,
        heap_bytes: ev.heap_bytes(),
        allocations: live_allocations() - base_allocs,
        activated,
        series_labels,
        state_labels,
    };
    drop(ev);
    figures
}

fn main() {
    let zscore = |name, chunk, stagger, spikes| Scenario {
        name,
        rules: compile("mem.yaml", ZSCORE_RULE),
        metrics: &METRICS[..1],
        points_per_series: 90.0,
        chunk,
        stagger,
        spikes,
    };
    // Window points per series, averaged over the fleet's 10 rules: zscore rules 0-2
    // hold 90, rule 9 (aggregate) 90 per node state (200 states for 10 000 series), the
    // growth rules 11 and 6, and the 3 `rate` rules a ring of 8 (ts, value) pairs (1m
    // range at 10s), i.e. 16 eight-byte words.
    let fleet_points = (3.0 * 90.0 + 90.0 * 200.0 / 10_000.0 + 11.0 + 6.0 + 3.0 * 16.0) / 10.0;
    let fleet = |name, spikes| Scenario {
        name,
        rules: fleet::rules(),
        metrics: &METRICS,
        points_per_series: fleet_points,
        chunk: 1_000,
        stagger: true,
        spikes,
    };
    let scenarios = [
        zscore(
            "1 zscore rule, no spikes, 1k-sample batches",
            1_000,
            true,
            false,
        ),
        zscore(
            "1 zscore rule, spikes, 1k-sample batches",
            1_000,
            true,
            true,
        ),
        zscore(
            "1 zscore rule, no spikes, one 100k-sample batch per step",
            SERIES,
            false,
            false,
        ),
        fleet("10-rule fleet, no spikes, 1k-sample batches", false),
        fleet("10-rule fleet, spikes, 1k-sample batches", true),
    ];
    println!(
        "{SERIES} series, {STEPS} steps of 10 s; live heap of the evaluator (requested bytes), per series"
    );
    println!();
    println!(
        "| scenario | after interning | at the end | window points | **end − 8 × points** | peak between batches − 8 × points | of which labels (series + states) | `heap_bytes()` | allocations | states ever active |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for s in &scenarios {
        let f = run(s);
        let per = |b: usize| b as f64 / f.series as f64;
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | **{:.0}** | {:.0} | {:.0} + {:.0} | {:.0} | {:.2} | {} |",
            s.name,
            per(f.after_intern),
            per(f.total),
            s.points_per_series,
            per(f.total) - 8.0 * s.points_per_series,
            per(f.peak) - 8.0 * s.points_per_series,
            per(f.series_labels),
            per(f.state_labels),
            per(f.heap_bytes),
            per(f.allocations),
            f.activated,
        );
    }
}
