//! A synthetic Kubernetes fleet: metrics, the rules that watch them, and sample batches.
//!
//! [`METRICS`] are 10 metric names, each exported once per pod. A [`Fleet`] holds
//! `per_metric` pods' worth of series of some of them (10 × 10 000 = 100 000 series for
//! the evaluator figure), interned the way a connector does, and writes one sample per
//! series per 10 s step with [`Fleet::fill`].
//!
//! Values are deterministic hashes of (series, step): gauges are noisy around a
//! per-series level (triangular noise, ±`noise` relative, so no z-score ever reaches
//! 3 from noise alone) with a rare spike (1 sample in [`SPIKE_ONE_IN`]) that the rules are
//! meant to catch; counters grow at a per-series rate with jitter and never reset.
//! [`RULES`] is a realistic rule group over them: zscore, ewma, threshold and growth
//! detectors, two with `rate`, two with `by`, one `aggregate`.

use vigil_engine::{Evaluator, RuleSet, Sample, SeriesId};

use crate::{mix, unit};

/// Group interval and sample period, ms.
pub const STEP_MS: i64 = 10_000;

/// Event time of step 0 (a multiple of every interval used).
pub const T0: i64 = 1_700_000_040_000;

/// One sample in this many is a spike (gauges only).
pub const SPIKE_ONE_IN: u64 = 20_000;

/// How a metric's values evolve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// A level in `[base/2, 3·base/2)` per series, relative noise `noise`, spikes that
    /// multiply the value by `spike`.
    Gauge {
        /// Typical level.
        base: f64,
        /// Relative half-width of the (triangular) noise.
        noise: f64,
        /// Factor applied by a spike.
        spike: f64,
    },
    /// A counter growing at a per-series rate in `[rate/2, 3·rate/2)` per second.
    Counter {
        /// Typical rate, per second.
        rate: f64,
    },
}

/// A metric exported by every pod of the fleet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    /// Metric name.
    pub name: &'static str,
    /// Value shape.
    pub shape: Shape,
}

const fn gauge(name: &'static str, base: f64, noise: f64, spike: f64) -> Metric {
    Metric {
        name,
        shape: Shape::Gauge { base, noise, spike },
    }
}

const fn counter(name: &'static str, rate: f64) -> Metric {
    Metric {
        name,
        shape: Shape::Counter { rate },
    }
}

/// The fleet's metrics, one rule of [`RULES`] each, in the same order.
pub const METRICS: [Metric; 10] = [
    gauge("http_request_duration_seconds", 0.05, 0.2, 8.0),
    gauge("queue_depth", 40.0, 0.3, 6.0),
    counter("container_cpu_cfs_throttled_periods_total", 2.0),
    gauge("container_memory_working_set_bytes", 2.5e8, 0.02, 3.0),
    counter("http_requests_total", 150.0),
    gauge("process_cpu_usage", 0.4, 0.25, 4.0),
    gauge("node_filesystem_free_ratio", 0.5, 0.05, 0.05),
    gauge("go_goroutines", 300.0, 0.1, 5.0),
    gauge("process_open_fds", 120.0, 0.1, 4.0),
    counter("node_network_receive_errs_total", 0.5),
];

/// The 10 rules of the evaluator figure: one per metric of [`METRICS`], so 100 000 series
/// spread as 10 000 per rule. zscore ×3 (one on a `rate`, one with `by`), ewma ×2 (one on
/// a `rate`), threshold ×2, growth ×2 (one with `by`), and one `rate` + `aggregate` by
/// node + zscore (a step rule: 10 000 series into 200 states).
pub const RULES: &str = r#"
group: fleet
interval: 10s
labels: { team: platform }
rules:
  - name: LatencyAnomaly
    select: 'http_request_duration_seconds{job="api"}'
    detect:
      zscore: { window: 15m, threshold: 3.5, min_samples: 30, direction: up }
    for: 1m
    severity: warning
    annotations:
      summary: 'latency of {{ $labels.namespace }}/{{ $labels.pod }} is {{ $value | printf "%.3f" }}s'

  - name: QueueDepthAnomaly
    select: 'queue_depth{namespace=~"ns-.*"}'
    by: [namespace, pod, node]
    detect:
      zscore: { window: 15m, threshold: 3.5, min_samples: 30 }
    for: 30s
    annotations:
      summary: 'queue of {{ $labels.pod }} holds {{ $value }} items'

  - name: CpuThrottlingAnomaly
    select: 'container_cpu_cfs_throttled_periods_total'
    rate: 1m
    detect:
      zscore: { window: 15m, threshold: 4.0, min_samples: 30, direction: up }
    for: 2m
    severity: critical
    actions:
      - alert
      - isolate: { node: "{{ $labels.node }}" }

  - name: MemoryDrift
    select: 'container_memory_working_set_bytes{container!=""}'
    detect:
      ewma: { halflife: 5m, threshold: 4.0, warmup: 20, direction: up }
    for: 1m

  - name: RequestRateAnomaly
    select: 'http_requests_total'
    rate: 1m
    detect:
      ewma: { alpha: 0.05, threshold: 4.0, warmup: 20, recover: 1.0 }
    for: 1m
    annotations:
      summary: '{{ $labels.pod }} serves {{ $value | humanize }} req/s'

  - name: HighCpu
    select: 'process_cpu_usage'
    detect:
      threshold: { above: 0.9, recover_above: 0.8 }
    for: 1m
    severity: warning

  - name: LowFreeDisk
    select: 'node_filesystem_free_ratio'
    detect:
      threshold: { below: 0.05, recover_below: 0.1 }
    severity: critical

  - name: GoroutineLeak
    select: 'go_goroutines{pod!=""}'
    by: [namespace, pod, node]
    detect:
      growth: { ratio: 0.2, samples: 10 }
    for: 2m
    keep_firing_for: 2m

  - name: OpenFdsGrowth
    select: 'process_open_fds'
    detect:
      growth: { ratio: 0.3, samples: 5 }

  - name: NodeNetworkErrors
    select: 'node_network_receive_errs_total'
    rate: 1m
    aggregate: { op: sum, by: [node] }
    detect:
      zscore: { window: 15m, threshold: 4.0, min_samples: 30, direction: up }
    for: 1m
"#;

/// [`RULES`], compiled.
pub fn rules() -> RuleSet {
    crate::compile("fleet.yaml", RULES)
}

/// Namespaces, and nodes pods are spread over.
const NAMESPACES: usize = 20;
const NODES: usize = 200;

/// Interned series of some metrics of the fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    metrics: Vec<Metric>,
    per_metric: usize,
    ids: Vec<SeriesId>,
    /// Per series: the level (gauge) or rate (counter) and its shape.
    levels: Vec<f64>,
    shapes: Vec<Shape>,
    /// Spread the samples of a step over the step (ts offset by series) instead of
    /// giving them all the step's timestamp.
    stagger: bool,
    /// One gauge sample in this many is a spike; 0: none.
    spike_one_in: u64,
}

impl Fleet {
    /// Interns `per_metric` series of each of `metrics` into `ev`, metric-major (series
    /// `m * per_metric + p` is metric `m` of pod `p`). Labels: `__name__`, `container`,
    /// `instance`, `job`, `namespace`, `node`, `pod`, as a Kubernetes scrape gives them.
    pub fn intern(ev: &mut Evaluator, metrics: &[Metric], per_metric: usize) -> Fleet {
        let n = metrics.len() * per_metric;
        let mut ids = Vec::with_capacity(n);
        let mut levels = Vec::with_capacity(n);
        let mut shapes = Vec::with_capacity(n);
        for (m, metric) in metrics.iter().enumerate() {
            for p in 0..per_metric {
                let h = mix(p as u64);
                let pod = format!("api-{:08x}-{:05}", h as u32, p);
                let instance = format!(
                    "10.{}.{}.{}:8080",
                    (p >> 16) & 0xff,
                    (p >> 8) & 0xff,
                    p & 0xff
                );
                let namespace = format!("ns-{}", p % NAMESPACES);
                let node = format!("node-{:03}", p % NODES);
                let mut pairs = [
                    ("__name__", metric.name),
                    ("container", "app"),
                    ("instance", instance.as_str()),
                    ("job", "api"),
                    ("namespace", namespace.as_str()),
                    ("node", node.as_str()),
                    ("pod", pod.as_str()),
                ];
                ids.push(ev.series_mut().intern_pairs(&mut pairs));
                let spread = 0.5 + unit(mix(((m as u64) << 32) ^ p as u64 ^ 0x5eed));
                levels.push(spread);
                shapes.push(metric.shape);
            }
        }
        Fleet {
            metrics: metrics.to_vec(),
            per_metric,
            ids,
            levels,
            shapes,
            stagger: false,
            spike_one_in: SPIKE_ONE_IN,
        }
    }

    /// No spikes: only noise, which no rule of [`RULES`] fires on.
    pub fn without_spikes(mut self) -> Self {
        self.spike_one_in = 0;
        self
    }

    /// Spread each step's samples over the step, in series order (see [`Fleet::fill`]).
    pub fn staggered(mut self) -> Self {
        self.stagger = true;
        self
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the fleet has no series.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Metrics and series per metric.
    pub fn shape(&self) -> (&[Metric], usize) {
        (&self.metrics, self.per_metric)
    }

    /// Series ids, metric-major.
    pub fn ids(&self) -> &[SeriesId] {
        &self.ids
    }

    /// Replaces `out` with one sample per series for step `step`, in series order, at
    /// `T0 + step * STEP_MS` (staggered: plus an offset growing with the series index,
    /// below one step, so the batch is still in timestamp order).
    pub fn fill(&self, step: u64, out: &mut Vec<Sample>) {
        out.clear();
        let n = self.ids.len() as i64;
        let t = T0 + step as i64 * STEP_MS;
        for (i, (&id, (&level, shape))) in self
            .ids
            .iter()
            .zip(self.levels.iter().zip(&self.shapes))
            .enumerate()
        {
            let h = mix(((i as u64) << 24) ^ step.wrapping_mul(0x9e37_79b9));
            let value = match *shape {
                Shape::Gauge { base, noise, spike } => {
                    let tri = unit(h) + unit(mix(h)) - 1.0;
                    let v = base * level * (1.0 + noise * tri);
                    if self.spike_one_in != 0 && h % self.spike_one_in == 0 {
                        v * spike
                    } else {
                        v
                    }
                }
                Shape::Counter { rate } => {
                    // Increments of (5..15 s) × rate: jittered, never negative.
                    let per_s = rate * level;
                    per_s * (STEP_MS as f64 / 1000.0) * (step as f64 + 0.5 * unit(h))
                }
            };
            let ts = if self.stagger {
                t + i as i64 * STEP_MS / n
            } else {
                t
            };
            out.push(Sample {
                series: id,
                ts,
                value,
            });
        }
    }
}
