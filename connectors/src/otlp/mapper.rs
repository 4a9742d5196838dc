//! OTLP data points → engine samples, on the engine task. The table is in the crate
//! README; in short:
//!
//! | OTLP | samples |
//! | --- | --- |
//! | Gauge, non-monotonic cumulative Sum | `<name>` = value |
//! | monotonic cumulative Sum | `<name>` = value (a counter: rules use `rate:`) |
//! | delta Sum | `<name>` = running total of the deltas, per series |
//! | Histogram | `<name>_count`, `<name>_sum`, cumulative `<name>_bucket{le}` incl. `+Inf` |
//! | ExponentialHistogram | the same, exponential buckets as `le` bounds |
//! | Summary | `<name>{quantile}`, `<name>_sum`, `<name>_count` |
//!
//! Labels: `__name__`, then the point's attributes, then `otel_scope_name`, then the
//! resource's attributes (an earlier one wins over a later one of the same name), each
//! Kubernetes attribute also under its short alias (`k8s.node.name` → `node`, …).
//!
//! Strings are borrowed from the request (which [`prepare`](super::prepare) normalised)
//! and interned with [`SeriesRegistry::intern_pairs`]; nothing is allocated per data
//! point but the `le` strings of histogram buckets. A series seen before is found by a
//! hash of its inputs instead ([`ids`]), except the points of delta sums, whose running
//! totals are keyed by their sorted labels.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint,
    SummaryDataPoint,
};
use serde::{Deserialize, Serialize};
use vigil_engine::series::{SeriesRegistry, STALE_MARKER};
use vigil_engine::{Duration, Sample};

use super::prepare::push_f64;
use super::{OtlpError, OtlpStats, Rejection};
use ids::IdCache;

mod ids;

/// `DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK`.
pub(crate) const NO_RECORDED_VALUE: u32 = 1;
/// Valid exponential histogram scales (the OTLP data model's range).
pub(crate) const MIN_EXP_SCALE: i32 = -10;
/// See [`MIN_EXP_SCALE`].
pub(crate) const MAX_EXP_SCALE: i32 = 20;

/// Kubernetes and service attributes and the label they are also exposed as.
pub const ALIASES: [(&str, &str); 5] = [
    ("k8s.node.name", "node"),
    ("k8s.pod.name", "pod"),
    ("k8s.namespace.name", "namespace"),
    ("k8s.container.name", "container"),
    ("service.name", "service"),
];

/// The label holding the instrumentation scope's name.
pub const SCOPE_LABEL: &str = "otel_scope_name";

/// `otlp.mapping:`: how OTLP data becomes samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// A delta series' running total is forgotten after this long without a point
    /// (event time); it then restarts from 0, which `rate:` reads as a counter reset
    /// (default `1h`).
    #[serde(default = "default_delta_retention")]
    pub delta_retention: Duration,
    /// Running totals kept at most; points of new delta series beyond it are rejected
    /// and counted (default 1000000).
    #[serde(default = "default_max_delta_series")]
    pub max_delta_series: usize,
    /// Exponential histograms finer than this scale are downscaled to it (buckets
    /// merged exactly), so a series' `le` bounds stay put when the SDK rescales and a
    /// histogram yields at most `2^scale` buckets per power of two (default 3: bounds
    /// 2^(k/8), a relative bucket width under 9.1%).
    #[serde(default = "default_exp_scale")]
    pub exponential_max_scale: i32,
}

fn default_delta_retention() -> Duration {
    Duration::from_secs(3600)
}

fn default_max_delta_series() -> usize {
    1_000_000
}

fn default_exp_scale() -> i32 {
    3
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            delta_retention: default_delta_retention(),
            max_delta_series: default_max_delta_series(),
            exponential_max_scale: default_exp_scale(),
        }
    }
}

impl MappingConfig {
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) fn validate(&self) -> Result<(), OtlpError> {
        if !(MIN_EXP_SCALE..=MAX_EXP_SCALE).contains(&self.exponential_max_scale) {
            return Err(super::invalid(
                "mapping.exponential_max_scale",
                "must be within [-10, 20]",
            ));
        }
        if self.delta_retention.is_zero() {
            return Err(super::invalid(
                "mapping.delta_retention",
                "must be greater than 0s",
            ));
        }
        Ok(())
    }
}

/// Whether `c` may appear in a Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
fn name_char(c: u8, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':' || (!first && c.is_ascii_digit())
}

/// The Prometheus form of an OTLP metric name, or None when it already is one: every
/// character outside `[a-zA-Z0-9_:]` becomes `_` (a multi-byte character becomes one
/// `_`), and a leading digit gets a `_` in front. No unit or `_total` suffix is added.
pub fn normalize_metric_name(name: &str) -> Option<String> {
    let b = name.as_bytes();
    if !b.is_empty() && b.iter().enumerate().all(|(i, &c)| name_char(c, i == 0)) {
        return None;
    }
    let mut out = String::with_capacity(name.len() + 1);
    if b.first().is_some_and(u8::is_ascii_digit) {
        out.push('_');
    }
    for c in name.chars() {
        out.push(if c.is_ascii() && name_char(c as u8, false) {
            c
        } else {
            '_'
        });
    }
    Some(out)
}

/// What one [`Mapper::map`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapSummary {
    /// Data points mapped.
    pub points: u64,
    /// Samples written.
    pub samples: u64,
    /// Data points rejected: a new delta series with the accumulators full.
    pub rejected: u64,
}

#[derive(Debug, Clone, Copy)]
struct Running {
    total: f64,
    last_ms: i64,
}

/// Turns prepared OTLP requests into samples. Owned by the engine task; it keeps the
/// running totals of delta series.
#[derive(Debug)]
pub struct Mapper {
    config: MappingConfig,
    stats: Arc<OtlpStats>,
    /// Running totals of delta series, by a hash of their labels.
    deltas: HashMap<u64, Running>,
    max_ms: i64,
    next_sweep_ms: i64,
    /// Recycled allocation of the label pairs.
    pairs: Vec<(&'static str, &'static str)>,
    ids: IdCache,
    /// `le` / `quantile` strings of the current point.
    text: String,
    bounds: Vec<(f64, f64, usize, usize)>,
}

/// Reuses a vector's allocation for borrows of another lifetime (the in-place
/// `collect` specialisation keeps the buffer; the vector is empty either way).
fn recycle<'a, 'b>(mut v: Vec<(&'a str, &'a str)>) -> Vec<(&'b str, &'b str)> {
    v.clear();
    v.into_iter().map(|_| ("", "")).collect()
}

/// How often (event time) expired delta totals are swept.
const SWEEP_MS: i64 = 60_000;

/// The label value of an attribute that [`prepare`](super::prepare) made a string;
/// None (skipped) when empty or not a string.
#[inline]
fn str_value(kv: &KeyValue) -> Option<&str> {
    match kv.value.as_ref()?.value.as_ref()? {
        Any::StringValue(s) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    }
}

#[inline]
fn alias(key: &str) -> Option<&'static str> {
    // Cheap reject: every aliased key starts with `k8s.` or `service.`.
    match key.as_bytes().first() {
        Some(b'k') | Some(b's') => ALIASES.iter().find(|(k, _)| *k == key).map(|(_, a)| *a),
        _ => None,
    }
}

/// Pushes attributes, then the aliases of the aliased ones.
fn push_attrs<'a>(pairs: &mut Vec<(&'a str, &'a str)>, attrs: &'a [KeyValue]) {
    let start = pairs.len();
    for kv in attrs {
        if let Some(v) = str_value(kv) {
            pairs.push((kv.key.as_str(), v));
        }
    }
    for i in start..pairs.len() {
        if let Some(a) = alias(pairs[i].0) {
            pairs.push((a, pairs[i].1));
        }
    }
}

#[inline]
fn ts_ms(time_unix_nano: u64, received_ms: i64) -> i64 {
    if time_unix_nano == 0 {
        received_ms
    } else {
        (time_unix_nano / 1_000_000) as i64
    }
}

/// A NaN from the wire must never read as the staleness marker.
#[inline]
fn sanitize(v: f64) -> f64 {
    if v.is_nan() {
        f64::NAN
    } else {
        v
    }
}

/// One output series of a data point: its name, an optional extra label (`le` or
/// `quantile`), and the value.
struct Out<'a> {
    name: &'a str,
    extra: Option<(&'static str, &'a str)>,
    value: f64,
}

/// Everything that is the same for the points of one metric.
struct MetricCtx<'a, 's> {
    /// Scope and resource pairs (with aliases), appended after the point's own.
    suffix: &'s [(&'a str, &'a str)],
    /// [`IdCache::enter_scope`] of `suffix`.
    scope: u128,
    received_ms: i64,
    /// Delta temporality: values are accumulated.
    delta: bool,
}

impl Mapper {
    /// A mapper with no state; counters go to `stats`.
    pub fn new(config: MappingConfig, stats: Arc<OtlpStats>) -> Self {
        Mapper {
            config,
            stats,
            deltas: HashMap::new(),
            max_ms: i64::MIN,
            next_sweep_ms: i64::MIN,
            pairs: Vec::new(),
            ids: IdCache::default(),
            text: String::new(),
            bounds: Vec::new(),
        }
    }

    /// Live delta running totals.
    pub fn delta_series(&self) -> usize {
        self.deltas.len()
    }

    /// Maps every data point of a [`prepare`](super::prepare)d request to samples
    /// appended to `out`, interning their series into `series`. Points without a
    /// timestamp get `received_ms`.
    pub fn map(
        &mut self,
        req: &ExportMetricsServiceRequest,
        received_ms: i64,
        series: &mut SeriesRegistry,
        out: &mut Vec<Sample>,
    ) -> MapSummary {
        let start = out.len();
        let mut summary = MapSummary::default();
        let mut suffix: Vec<(&str, &str)> = Vec::new();
        let mut names = String::new();
        self.ids.sync(series);
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                suffix.clear();
                if let Some(scope) = &sm.scope {
                    if !scope.name.is_empty() {
                        suffix.push((SCOPE_LABEL, scope.name.as_str()));
                    }
                }
                if let Some(r) = &rm.resource {
                    push_attrs(&mut suffix, &r.attributes);
                }
                let scope = self.ids.enter_scope(&suffix);
                for m in &sm.metrics {
                    let Some(data) = &m.data else { continue };
                    let name = m.name.as_str();
                    let delta_of = |t: i32| t == AggregationTemporality::Delta as i32;
                    match data {
                        Data::Gauge(g) => {
                            let ctx = MetricCtx {
                                suffix: &suffix,
                                scope,
                                received_ms,
                                delta: false,
                            };
                            for p in &g.data_points {
                                self.number(p, name, &ctx, series, out, &mut summary);
                            }
                        }
                        Data::Sum(s) => {
                            let ctx = MetricCtx {
                                suffix: &suffix,
                                scope,
                                received_ms,
                                delta: delta_of(s.aggregation_temporality),
                            };
                            for p in &s.data_points {
                                self.number(p, name, &ctx, series, out, &mut summary);
                            }
                        }
                        Data::Histogram(h) => {
                            derived_names(&mut names, name);
                            let ctx = MetricCtx {
                                suffix: &suffix,
                                scope,
                                received_ms,
                                delta: delta_of(h.aggregation_temporality),
                            };
                            for p in &h.data_points {
                                self.histogram(p, &names, &ctx, series, out, &mut summary);
                            }
                        }
                        Data::ExponentialHistogram(h) => {
                            derived_names(&mut names, name);
                            let ctx = MetricCtx {
                                suffix: &suffix,
                                scope,
                                received_ms,
                                delta: delta_of(h.aggregation_temporality),
                            };
                            for p in &h.data_points {
                                self.exponential(p, &names, &ctx, series, out, &mut summary);
                            }
                        }
                        Data::Summary(s) => {
                            derived_names(&mut names, name);
                            let ctx = MetricCtx {
                                suffix: &suffix,
                                scope,
                                received_ms,
                                delta: false,
                            };
                            for p in &s.data_points {
                                self.summary(p, name, &names, &ctx, series, out, &mut summary);
                            }
                        }
                    }
                }
            }
        }
        summary.samples = (out.len() - start) as u64;
        if self.max_ms >= self.next_sweep_ms {
            self.sweep();
        }
        self.stats.samples(summary.samples);
        self.stats
            .reject(Rejection::DeltaStateFull, summary.rejected);
        self.stats.set_delta_series(self.deltas.len());
        summary
    }

    fn sweep(&mut self) {
        let keep_after = self
            .max_ms
            .saturating_sub(self.config.delta_retention.as_millis());
        self.deltas.retain(|_, r| r.last_ms >= keep_after);
        self.next_sweep_ms = self.max_ms.saturating_add(SWEEP_MS);
    }

    fn number(
        &mut self,
        p: &NumberDataPoint,
        name: &str,
        ctx: &MetricCtx<'_, '_>,
        series: &mut SeriesRegistry,
        out: &mut Vec<Sample>,
        summary: &mut MapSummary,
    ) {
        let value = match p.value {
            _ if p.flags & NO_RECORDED_VALUE != 0 => STALE_MARKER,
            Some(number_data_point::Value::AsDouble(v)) => sanitize(v),
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => return,
        };
        let ts = ts_ms(p.time_unix_nano, ctx.received_ms);
        let outs = [Out {
            name,
            extra: None,
            value,
        }];
        self.emit(&outs, &p.attributes, ts, ctx, series, out, summary);
    }

    fn histogram(
        &mut self,
        p: &HistogramDataPoint,
        names: &str,
        ctx: &MetricCtx<'_, '_>,
        series: &mut SeriesRegistry,
        out: &mut Vec<Sample>,
        summary: &mut MapSummary,
    ) {
        let ts = ts_ms(p.time_unix_nano, ctx.received_ms);
        let stale = p.flags & NO_RECORDED_VALUE != 0;
        let mut text = std::mem::take(&mut self.text);
        let mut bounds = std::mem::take(&mut self.bounds);
        text.clear();
        bounds.clear();
        if stale && !p.explicit_bounds.is_empty() {
            for &le in p.explicit_bounds.iter().chain([f64::INFINITY].iter()) {
                push_bound(&mut text, &mut bounds, le, 0.0);
            }
        } else if !stale
            && !p.bucket_counts.is_empty()
            && p.bucket_counts.len() == p.explicit_bounds.len() + 1
        {
            let mut cum = 0u64;
            for (i, &c) in p.bucket_counts.iter().enumerate() {
                cum = cum.saturating_add(c);
                let le = p.explicit_bounds.get(i).copied().unwrap_or(f64::INFINITY);
                push_bound(&mut text, &mut bounds, le, cum as f64);
            }
        }
        self.emit_histogram(
            names,
            p.count as f64,
            p.sum,
            &text,
            &bounds,
            stale,
            &p.attributes,
            ts,
            ctx,
            series,
            out,
            summary,
        );
        self.text = text;
        self.bounds = bounds;
    }

    fn exponential(
        &mut self,
        p: &ExponentialHistogramDataPoint,
        names: &str,
        ctx: &MetricCtx<'_, '_>,
        series: &mut SeriesRegistry,
        out: &mut Vec<Sample>,
        summary: &mut MapSummary,
    ) {
        let ts = ts_ms(p.time_unix_nano, ctx.received_ms);
        let stale = p.flags & NO_RECORDED_VALUE != 0;
        let mut text = std::mem::take(&mut self.text);
        let mut bounds = std::mem::take(&mut self.bounds);
        text.clear();
        bounds.clear();
        if !stale {
            exponential_bounds(p, self.config.exponential_max_scale, &mut text, &mut bounds);
        }
        self.emit_histogram(
            names,
            p.count as f64,
            p.sum,
            &text,
            &bounds,
            stale,
            &p.attributes,
            ts,
            ctx,
            series,
            out,
            summary,
        );
        self.text = text;
        self.bounds = bounds;
    }

    #[allow(clippy::too_many_arguments)]
    fn summary(
        &mut self,
        p: &SummaryDataPoint,
        name: &str,
        names: &str,
        ctx: &MetricCtx<'_, '_>,
        series: &mut SeriesRegistry,
        out: &mut Vec<Sample>,
        summary: &mut MapSummary,
    ) {
        let ts = ts_ms(p.time_unix_nano, ctx.received_ms);
        let stale = p.flags & NO_RECORDED_VALUE != 0;
        let v = |x: f64| if stale { STALE_MARKER } else { sanitize(x) };
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        let mut spans = Vec::with_capacity(p.quantile_values.len());
        for q in &p.quantile_values {
            let a = text.len();
            push_f64(&mut text, q.quantile);
            spans.push((a, text.len(), q.value));
        }
        let (count, sum, _) = split_names(names);
        let mut outs = Vec::with_capacity(2 + spans.len());
        outs.push(Out {
            name: count,
            extra: None,
            value: v(p.count as f64),
        });
        outs.push(Out {
            name: sum,
            extra: None,
            value: v(p.sum),
        });
        for &(a, b, value) in &spans {
            outs.push(Out {
                name,
                extra: Some(("quantile", &text[a..b])),
                value: v(value),
            });
        }
        self.emit(&outs, &p.attributes, ts, ctx, series, out, summary);
        self.text = text;
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_histogram(
        &mut self,
        names: &str,
        count: f64,
        sum: Option<f64>,
        text: &str,
        bounds: &[(f64, f64, usize, usize)],
        stale: bool,
        attrs: &[KeyValue],
        ts: i64,
        ctx: &MetricCtx<'_, '_>,
        series: &mut SeriesRegistry,
        out: &mut Vec<Sample>,
        summary: &mut MapSummary,
    ) {
        let v = |x: f64| if stale { STALE_MARKER } else { sanitize(x) };
        let (count_name, sum_name, bucket_name) = split_names(names);
        let mut outs = Vec::with_capacity(2 + bounds.len());
        outs.push(Out {
            name: count_name,
            extra: None,
            value: v(count),
        });
        // A stale point marks `_sum` stale even when it carries no sum.
        if let Some(s) = sum.or(stale.then_some(0.0)) {
            outs.push(Out {
                name: sum_name,
                extra: None,
                value: v(s),
            });
        }
        for &(_, cum, a, b) in bounds {
            outs.push(Out {
                name: bucket_name,
                extra: Some(("le", &text[a..b])),
                value: v(cum),
            });
        }
        self.emit(&outs, attrs, ts, ctx, series, out, summary);
    }

    /// Interns each output series of one data point and appends its sample.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        outs: &[Out<'_>],
        attrs: &[KeyValue],
        ts: i64,
        ctx: &MetricCtx<'_, '_>,
        series: &mut SeriesRegistry,
        out: &mut Vec<Sample>,
        summary: &mut MapSummary,
    ) {
        summary.points += 1;
        self.max_ms = self.max_ms.max(ts);
        let first = out.len();
        let mut pairs = recycle(std::mem::take(&mut self.pairs));
        let attr_pairs = || {
            attrs
                .iter()
                .filter_map(|kv| Some((kv.key.as_str(), str_value(kv)?)))
        };
        // Several output series hash the scope and the attributes once between them.
        let point =
            (!ctx.delta && outs.len() > 1).then(|| self.ids.point_key(ctx.scope, attr_pairs()));
        for o in outs {
            let key = (!ctx.delta).then(|| match point {
                Some(p) => self.ids.output_key(p, o.name, o.extra),
                None => self.ids.key(ctx.scope, o.name, o.extra, attr_pairs()),
            });
            if let Some(id) = key.and_then(|k| self.ids.get(k)) {
                out.push(Sample {
                    series: id,
                    ts,
                    value: o.value,
                });
                continue;
            }
            pairs.clear();
            pairs.push(("__name__", o.name));
            if let Some(e) = o.extra {
                pairs.push(e);
            }
            push_attrs(&mut pairs, attrs);
            pairs.extend_from_slice(ctx.suffix);
            let id = series.intern_pairs(&mut pairs);
            if let Some(k) = key {
                self.ids.insert(k, id);
            }
            let mut value = o.value;
            if ctx.delta && !vigil_engine::series::is_stale_marker(value) {
                // `pairs` is sorted now: hash it as the series' identity.
                let mut h = std::hash::DefaultHasher::new();
                pairs.hash(&mut h);
                let key = h.finish();
                let cap = self.config.max_delta_series;
                let len = self.deltas.len();
                match self.deltas.entry(key) {
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        let r = e.get_mut();
                        r.total += value;
                        r.last_ms = r.last_ms.max(ts);
                        value = r.total;
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        if len >= cap {
                            // The whole point is rejected; totals it already moved
                            // stay (the cap is a safety net, not a steady state).
                            summary.rejected += 1;
                            summary.points -= 1;
                            out.truncate(first);
                            self.pairs = recycle(pairs);
                            return;
                        }
                        e.insert(Running {
                            total: value,
                            last_ms: ts,
                        });
                    }
                }
            }
            out.push(Sample {
                series: id,
                ts,
                value,
            });
        }
        self.pairs = recycle(pairs);
    }
}

/// `<name>_count\0<name>_sum\0<name>_bucket` into `buf`.
fn derived_names(buf: &mut String, name: &str) {
    buf.clear();
    for suffix in ["_count", "_sum", "_bucket"] {
        if !buf.is_empty() {
            buf.push('\0');
        }
        buf.push_str(name);
        buf.push_str(suffix);
    }
}

fn split_names(names: &str) -> (&str, &str, &str) {
    let mut it = names.split('\0');
    let count = it.next().unwrap_or_default();
    let sum = it.next().unwrap_or_default();
    let bucket = it.next().unwrap_or_default();
    (count, sum, bucket)
}

/// Appends a cumulative bucket `(le, count)` with its `le` text, keeping `le` strictly
/// increasing (a bound not above the previous one merges into it).
fn push_bound(text: &mut String, bounds: &mut Vec<(f64, f64, usize, usize)>, le: f64, cum: f64) {
    if let Some(last) = bounds.last_mut() {
        if le <= last.0 {
            last.1 = last.1.max(cum);
            return;
        }
    }
    let a = text.len();
    push_f64(text, le);
    bounds.push((le, cum, a, text.len()));
}

/// Buckets of `b` at `scale`, downscaled by `shift`: (index, count) with merged indices.
fn downscaled(b: Option<&Buckets>, shift: u32) -> Vec<(i64, u64)> {
    let mut v: Vec<(i64, u64)> = Vec::new();
    let Some(b) = b else { return v };
    for (k, &c) in b.bucket_counts.iter().enumerate() {
        let idx = (i64::from(b.offset) + k as i64) >> shift;
        match v.last_mut() {
            Some(last) if last.0 == idx => last.1 = last.1.saturating_add(c),
            _ => v.push((idx, c)),
        }
    }
    v
}

/// Cumulative `le` buckets of an exponential histogram: negative buckets from the most
/// negative (upper bound −base^i), the zero bucket (upper bound `zero_threshold`, when
/// it or a negative bucket holds anything), the lower bound base^offset of the first
/// positive bucket, each positive bucket (upper bound base^(i+1)), and `+Inf` (the
/// point's `count`).
fn exponential_bounds(
    p: &ExponentialHistogramDataPoint,
    max_scale: i32,
    text: &mut String,
    bounds: &mut Vec<(f64, f64, usize, usize)>,
) {
    let scale = p.scale.min(max_scale);
    let shift = u32::try_from(p.scale - scale).unwrap_or(0);
    // base^i = 2^(i · 2^-scale)
    let factor = (-f64::from(scale)).exp2();
    let pow = |i: i64| (i as f64 * factor).exp2();
    let neg = downscaled(p.negative.as_ref(), shift);
    let pos = downscaled(p.positive.as_ref(), shift);
    let mut cum = 0u64;
    for &(i, c) in neg.iter().rev() {
        cum = cum.saturating_add(c);
        push_bound(text, bounds, -pow(i), cum as f64);
    }
    if p.zero_count > 0 || !neg.is_empty() {
        cum = cum.saturating_add(p.zero_count);
        push_bound(text, bounds, p.zero_threshold.max(0.0), cum as f64);
    }
    if let Some(&(first, _)) = pos.first() {
        push_bound(text, bounds, pow(first), cum as f64);
    }
    for &(i, c) in &pos {
        cum = cum.saturating_add(c);
        push_bound(text, bounds, pow(i + 1), cum as f64);
    }
    push_bound(text, bounds, f64::INFINITY, (p.count.max(cum)) as f64);
}

#[cfg(test)]
pub(crate) mod tests;
