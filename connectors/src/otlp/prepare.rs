//! Preparation of a decoded request on the receiving task, before it is queued: in
//! place, so the engine task can map it with borrowed strings only.
//!
//! - metric names are normalised to the Prometheus charset ([`normalize_metric_name`]);
//! - attribute values that are not strings become strings (bool `true`/`false`,
//!   integers in decimal, doubles in the shortest round-trip form, bytes in lowercase
//!   hex, arrays and key-value lists as JSON); attributes with an empty key are dropped;
//! - invalid data points are removed and counted, and so are points beyond
//!   [`Limits::max_points`];
//! - points without a timestamp, with the no-recorded-value flag or with a NaN/±Inf
//!   value are counted (they stay: the mapper gives each a defined meaning).

use std::fmt::Write as _;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, SummaryDataPoint,
};

use super::mapper::{normalize_metric_name, MAX_EXP_SCALE, MIN_EXP_SCALE, NO_RECORDED_VALUE};

/// Per-request limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Data points accepted from one request; later ones are rejected.
    pub max_points: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_points: 100_000,
        }
    }
}

/// What [`prepare`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// Data points in the request as received.
    pub received: u64,
    /// Data points kept.
    pub accepted: u64,
    /// Removed: malformed.
    pub invalid: u64,
    /// Removed: beyond the per-request limit.
    pub too_many: u64,
    /// Kept points without a timestamp (the receive time stands in).
    pub missing_timestamp: u64,
    /// Kept points with the no-recorded-value flag.
    pub no_recorded_value: u64,
    /// Kept points whose value is NaN or ±Inf.
    pub non_finite: u64,
    /// Why points were rejected (empty when none were): the partial-success message.
    pub message: String,
}

/// Budget and findings while walking one request.
struct Walk<'l> {
    limits: &'l Limits,
    p: Prepared,
    /// First reasons, for the message.
    reasons: Vec<String>,
}

impl Walk<'_> {
    fn reject(&mut self, metric: &str, why: &str) {
        self.p.invalid += 1;
        if self.reasons.len() < 5 && !self.reasons.iter().any(|r| r.starts_with(metric)) {
            self.reasons.push(format!("{metric}: {why}"));
        }
    }

    /// Whether one more point fits in the budget (counts it as too many otherwise).
    fn admit(&mut self) -> bool {
        if self.p.accepted as usize >= self.limits.max_points {
            self.p.too_many += 1;
            false
        } else {
            self.p.accepted += 1;
            true
        }
    }

    fn flags(&mut self, time_unix_nano: u64, flags: u32) {
        if time_unix_nano == 0 {
            self.p.missing_timestamp += 1;
        }
        if flags & NO_RECORDED_VALUE != 0 {
            self.p.no_recorded_value += 1;
        }
    }
}

/// Normalises `req` in place and drops what cannot be mapped; see the module docs.
pub fn prepare(req: &mut ExportMetricsServiceRequest, limits: &Limits) -> Prepared {
    let mut w = Walk {
        limits,
        p: Prepared::default(),
        reasons: Vec::new(),
    };
    for rm in &mut req.resource_metrics {
        if let Some(r) = &mut rm.resource {
            stringify_attrs(&mut r.attributes);
        }
        for sm in &mut rm.scope_metrics {
            for m in &mut sm.metrics {
                prepare_metric(m, &mut w);
            }
            sm.metrics.retain(|m| m.data.is_some());
        }
    }
    let mut p = w.p;
    if p.too_many > 0 {
        w.reasons.push(format!(
            "{} data points over the limit of {} per request were rejected; send smaller batches",
            p.too_many, limits.max_points
        ));
    }
    p.message = w.reasons.join("; ");
    p
}

fn prepare_metric(m: &mut Metric, w: &mut Walk<'_>) {
    let points = match &m.data {
        None => 0,
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
    };
    w.p.received += points as u64;
    if m.name.is_empty() {
        for _ in 0..points {
            w.reject("(unnamed metric)", "a metric needs a name");
        }
        m.data = None;
        return;
    }
    if let Some(n) = normalize_metric_name(&m.name) {
        m.name = n;
    }
    let name = m.name.as_str();
    let unspecified = AggregationTemporality::Unspecified as i32;
    match &mut m.data {
        None => {}
        Some(Data::Gauge(g)) => g.data_points.retain_mut(|p| number(p, name, w)),
        Some(Data::Sum(s)) => {
            if s.aggregation_temporality == unspecified {
                for _ in 0..s.data_points.len() {
                    w.reject(name, "sum with unspecified aggregation temporality");
                }
                s.data_points.clear();
            }
            s.data_points.retain_mut(|p| number(p, name, w));
        }
        Some(Data::Histogram(h)) => {
            if h.aggregation_temporality == unspecified {
                for _ in 0..h.data_points.len() {
                    w.reject(name, "histogram with unspecified aggregation temporality");
                }
                h.data_points.clear();
            }
            h.data_points.retain_mut(|p| histogram(p, name, w));
        }
        Some(Data::ExponentialHistogram(h)) => {
            if h.aggregation_temporality == unspecified {
                for _ in 0..h.data_points.len() {
                    w.reject(
                        name,
                        "exponential histogram with unspecified aggregation temporality",
                    );
                }
                h.data_points.clear();
            }
            h.data_points.retain_mut(|p| exponential(p, name, w));
        }
        Some(Data::Summary(s)) => s.data_points.retain_mut(|p| summary(p, name, w)),
    }
}

fn number(p: &mut NumberDataPoint, name: &str, w: &mut Walk<'_>) -> bool {
    let no_value = p.flags & NO_RECORDED_VALUE != 0;
    let finite = match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v.is_finite(),
        Some(number_data_point::Value::AsInt(_)) => true,
        None if no_value => true,
        None => {
            w.reject(name, "data point without a value");
            return false;
        }
    };
    if !w.admit() {
        return false;
    }
    if !finite && !no_value {
        w.p.non_finite += 1;
    }
    w.flags(p.time_unix_nano, p.flags);
    stringify_attrs(&mut p.attributes);
    true
}

fn histogram(p: &mut HistogramDataPoint, name: &str, w: &mut Walk<'_>) -> bool {
    if p.flags & NO_RECORDED_VALUE == 0 {
        if !p.bucket_counts.is_empty() && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
            w.reject(
                name,
                "histogram bucket_counts must have one more element than explicit_bounds",
            );
            return false;
        }
        if p.explicit_bounds.iter().any(|b| !b.is_finite())
            || p.explicit_bounds.windows(2).any(|b| b[0] >= b[1])
        {
            w.reject(
                name,
                "histogram explicit_bounds must be finite and strictly increasing",
            );
            return false;
        }
        if p.sum.is_some_and(|s| !s.is_finite()) {
            w.p.non_finite += 1;
        }
    }
    if !w.admit() {
        return false;
    }
    w.flags(p.time_unix_nano, p.flags);
    stringify_attrs(&mut p.attributes);
    true
}

fn exponential(p: &mut ExponentialHistogramDataPoint, name: &str, w: &mut Walk<'_>) -> bool {
    if p.flags & NO_RECORDED_VALUE == 0 {
        if !(MIN_EXP_SCALE..=MAX_EXP_SCALE).contains(&p.scale) {
            w.reject(name, "exponential histogram scale outside [-10, 20]");
            return false;
        }
        let bad = |b: &Option<Buckets>| {
            b.as_ref().is_some_and(|b| {
                i64::from(b.offset) + b.bucket_counts.len() as i64 > i64::from(i32::MAX)
            })
        };
        if bad(&p.positive)
            || bad(&p.negative)
            || p.zero_threshold.is_nan()
            || p.zero_threshold < 0.0
        {
            w.reject(name, "exponential histogram buckets out of range");
            return false;
        }
        if p.sum.is_some_and(|s| !s.is_finite()) {
            w.p.non_finite += 1;
        }
    }
    if !w.admit() {
        return false;
    }
    w.flags(p.time_unix_nano, p.flags);
    stringify_attrs(&mut p.attributes);
    true
}

fn summary(p: &mut SummaryDataPoint, name: &str, w: &mut Walk<'_>) -> bool {
    if p.flags & NO_RECORDED_VALUE == 0
        && p.quantile_values
            .iter()
            .any(|q| !(0.0..=1.0).contains(&q.quantile))
    {
        w.reject(name, "summary quantiles must be within [0, 1]");
        return false;
    }
    if !w.admit() {
        return false;
    }
    w.flags(p.time_unix_nano, p.flags);
    stringify_attrs(&mut p.attributes);
    true
}

/// Attribute values become strings in place; empty keys are dropped.
fn stringify_attrs(attrs: &mut Vec<KeyValue>) {
    let mut empty_key = false;
    for kv in attrs.iter_mut() {
        empty_key |= kv.key.is_empty();
        let text = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Any::StringValue(_)) => continue,
            None => String::new(),
            Some(v) => any_to_string(v),
        };
        kv.value = Some(AnyValue {
            value: Some(Any::StringValue(text)),
        });
    }
    if empty_key {
        attrs.retain(|kv| !kv.key.is_empty());
    }
}

/// The label value of an attribute value.
pub(crate) fn any_to_string(v: &Any) -> String {
    match v {
        Any::StringValue(s) => s.clone(),
        Any::BoolValue(b) => b.to_string(),
        Any::IntValue(i) => i.to_string(),
        Any::DoubleValue(d) => format_f64(*d),
        Any::BytesValue(b) => {
            let mut s = String::with_capacity(b.len() * 2);
            for byte in b {
                let _ = write!(s, "{byte:02x}");
            }
            s
        }
        Any::StringValueStrindex(i) => i.to_string(),
        Any::ArrayValue(_) | Any::KvlistValue(_) => {
            serde_json::to_string(&any_to_json(v)).unwrap_or_default()
        }
    }
}

fn any_to_json(v: &Any) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Any::StringValue(s) => J::String(s.clone()),
        Any::BoolValue(b) => J::Bool(*b),
        Any::IntValue(i) => J::from(*i),
        Any::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or(J::Null, J::Number),
        Any::ArrayValue(a) => J::Array(
            a.values
                .iter()
                .map(|x| x.value.as_ref().map_or(J::Null, any_to_json))
                .collect(),
        ),
        Any::KvlistValue(kv) => J::Object(
            kv.values
                .iter()
                .map(|x| {
                    (
                        x.key.clone(),
                        x.value
                            .as_ref()
                            .and_then(|v| v.value.as_ref())
                            .map_or(J::Null, any_to_json),
                    )
                })
                .collect(),
        ),
        Any::BytesValue(_) | Any::StringValueStrindex(_) => J::String(any_to_string(v)),
    }
}

/// A float as a label value: shortest round-trip decimal, `+Inf`, `-Inf`, `NaN`; `-0`
/// is `0`.
pub(crate) fn format_f64(v: f64) -> String {
    let mut s = String::new();
    push_f64(&mut s, v);
    s
}

/// Appends [`format_f64`] of `v` to `out`.
pub(crate) fn push_f64(out: &mut String, v: f64) {
    if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.is_nan() {
        out.push_str("NaN");
    } else if v == 0.0 {
        out.push('0');
    } else {
        let _ = write!(out, "{v}");
    }
}
