//! OTLP-JSON lines, as the OpenTelemetry Collector's file exporter writes them: one
//! `ExportMetricsServiceRequest` in the OTLP/JSON encoding a line.
//!
//! Each line is decoded into the `opentelemetry-proto` message types and mapped with
//! the live OTLP receiver's own code (`vigil_connectors::otlp::{prepare, Mapper}`, the
//! `otlp-map` feature: no servers), so a recorded export and the same export received
//! live give identical series and values. The mapping is documented in the connectors
//! README: metric name → `__name__` in the Prometheus charset; point attributes, scope
//! (`otel_scope_name`) and resource attributes → labels, with the Kubernetes aliases
//! `node`, `pod`, `namespace`, `container`, `service`; gauges and cumulative sums →
//! their value; delta sums and histograms → running totals per series, kept across
//! the lines of one file ([`Decoder`]); histograms (explicit and exponential) →
//! cumulative `<name>_bucket{le}`, `<name>_sum`, `<name>_count`; summaries →
//! `<name>{quantile}`, `_sum`, `_count`; the no-recorded-value flag → a staleness
//! marker.
//!
//! Differences from the receiver, where a file has no request to answer: a data point
//! without a timestamp, or one the receiver would reject as invalid, makes the line
//! malformed (an error with file and line, or skipped and counted with `--skip-bad`);
//! `"NaN"`, `"Infinity"` and `"-Infinity"` (protojson's spelling of non-finite doubles)
//! are read as such values.

use std::sync::Arc;

use serde_json::Value;
use vigil_connectors::otlp::proto::tonic::metrics::v1::{metric::Data, number_data_point};
use vigil_connectors::otlp::{
    prepare, ExportMetricsServiceRequest, Limits, Mapper, MappingConfig, OtlpStats,
};
use vigil_engine::labels::Labels;
use vigil_engine::series::SeriesRegistry;
use vigil_engine::Sample;

/// A sample: labels, ts ms, value.
pub type Point = (Labels, i64, f64);

/// Decodes the lines of one OTLP-JSON file; keeps the running totals of delta series
/// from line to line, as the live receiver does from request to request.
#[derive(Debug)]
pub struct Decoder {
    mapper: Mapper,
    registry: SeriesRegistry,
    /// Decoded labels by series id (ids only live in this decoder's registry).
    labels: Vec<Option<Labels>>,
    samples: Vec<Sample>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(MappingConfig::default())
    }
}

/// The decoder's registry is reset past this many series.
const MAX_SERIES: usize = 1 << 20;

impl Decoder {
    /// A decoder with the given mapping settings (`otlp.mapping` of `vigil run`).
    pub fn new(config: MappingConfig) -> Self {
        Decoder {
            mapper: Mapper::new(config, Arc::new(OtlpStats::default())),
            registry: SeriesRegistry::default(),
            labels: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// Parses one line into samples.
    pub fn parse_line(&mut self, line: &str) -> Result<Vec<Point>, String> {
        let mut req = decode(line)?;
        let p = prepare(
            &mut req,
            &Limits {
                max_points: usize::MAX,
            },
        );
        if p.invalid > 0 {
            return Err(format!("invalid data points: {}", p.message));
        }
        if p.missing_timestamp > 0 {
            return Err(format!(
                "{} data points without timeUnixNano",
                p.missing_timestamp
            ));
        }
        self.map(&req)
    }

    /// Maps a prepared request to labelled samples.
    fn map(&mut self, req: &ExportMetricsServiceRequest) -> Result<Vec<Point>, String> {
        if self.labels.len() > MAX_SERIES {
            self.registry = SeriesRegistry::default();
            self.labels.clear();
        }
        self.samples.clear();
        self.mapper
            .map(req, 0, &mut self.registry, &mut self.samples);
        let mut out = Vec::with_capacity(self.samples.len());
        for s in &self.samples {
            let i = s.series as usize;
            if i >= self.labels.len() {
                self.labels.resize(i + 1, None);
            }
            if self.labels[i].is_none() {
                self.labels[i] = self.registry.labels(s.series);
            }
            let labels = self.labels[i]
                .clone()
                .ok_or("internal: a mapped series has no labels")?;
            out.push((labels, s.ts, s.value));
        }
        Ok(out)
    }
}

/// Parses one line into samples, with no state carried over from other lines (delta
/// series start from 0); [`Decoder`] keeps it.
pub fn parse_line(line: &str) -> Result<Vec<Point>, String> {
    Decoder::default().parse_line(line)
}

/// Stand-ins for protojson's non-finite doubles while the typed decoder, which only
/// takes numbers, reads the line; put back afterwards. Values this close to `f64::MAX`
/// do not occur in metrics.
const NAN_STAND_IN: f64 = 1.797_693_134_862_315_5e308;
const INF_STAND_IN: f64 = f64::MAX;

fn decode(line: &str) -> Result<ExportMetricsServiceRequest, String> {
    if !(line.contains("NaN") || line.contains("Infinity")) {
        let req = serde_json::from_str::<ExportMetricsServiceRequest>(line)
            .map_err(|e| format!("not OTLP JSON: {e}"))?;
        if req.resource_metrics.is_empty() && !line.contains("resourceMetrics") {
            return Err("no resourceMetrics: not an OTLP metrics export".into());
        }
        return Ok(req);
    }
    // protojson writes non-finite doubles as strings, which the typed decoder does not
    // take: read them through stand-ins.
    let mut doc: Value = serde_json::from_str(line).map_err(|e| format!("not OTLP JSON: {e}"))?;
    let mut found = false;
    replace_non_finite(&mut doc, &mut found);
    let mut req: ExportMetricsServiceRequest =
        serde_json::from_value(doc).map_err(|e| format!("not OTLP JSON: {e}"))?;
    if found {
        restore_non_finite(&mut req);
    }
    Ok(req)
}

fn replace_non_finite(v: &mut Value, found: &mut bool) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let double_field =
                    matches!(k.as_str(), "asDouble" | "sum" | "min" | "max" | "value");
                if let (true, Value::String(s)) = (double_field, &*x) {
                    let stand_in = match s.as_str() {
                        "NaN" => NAN_STAND_IN,
                        "Infinity" => INF_STAND_IN,
                        "-Infinity" => -INF_STAND_IN,
                        _ => continue,
                    };
                    *found = true;
                    *x = serde_json::Number::from_f64(stand_in).map_or(Value::Null, Value::Number);
                } else {
                    replace_non_finite(x, found);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| replace_non_finite(x, found)),
        _ => {}
    }
}

fn restore(v: &mut f64) {
    if *v == NAN_STAND_IN {
        *v = f64::NAN;
    } else if *v == INF_STAND_IN {
        *v = f64::INFINITY;
    } else if *v == -INF_STAND_IN {
        *v = f64::NEG_INFINITY;
    }
}

fn restore_non_finite(req: &mut ExportMetricsServiceRequest) {
    let number = |v: &mut Option<number_data_point::Value>| {
        if let Some(number_data_point::Value::AsDouble(d)) = v {
            restore(d);
        }
    };
    for rm in &mut req.resource_metrics {
        for sm in &mut rm.scope_metrics {
            for m in &mut sm.metrics {
                match &mut m.data {
                    Some(Data::Gauge(g)) => {
                        g.data_points.iter_mut().for_each(|p| number(&mut p.value))
                    }
                    Some(Data::Sum(s)) => {
                        s.data_points.iter_mut().for_each(|p| number(&mut p.value))
                    }
                    Some(Data::Histogram(h)) => {
                        for p in &mut h.data_points {
                            for x in [&mut p.sum, &mut p.min, &mut p.max].into_iter().flatten() {
                                restore(x);
                            }
                        }
                    }
                    Some(Data::ExponentialHistogram(h)) => {
                        for p in &mut h.data_points {
                            for x in [&mut p.sum, &mut p.min, &mut p.max].into_iter().flatten() {
                                restore(x);
                            }
                        }
                    }
                    Some(Data::Summary(s)) => {
                        for p in &mut s.data_points {
                            restore(&mut p.sum);
                            for q in &mut p.quantile_values {
                                restore(&mut q.value);
                            }
                        }
                    }
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_and_histogram() {
        let line = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"k8s.node.name","value":{"stringValue":"n1"}}]},"scopeMetrics":[{"scope":{"name":"app"},"metrics":[
            {"name":"queue.depth","gauge":{"dataPoints":[{"attributes":[{"key":"q","value":{"stringValue":"a"}}],"timeUnixNano":"1000000000","asInt":"7"}]}},
            {"name":"lat","histogram":{"aggregationTemporality":2,"dataPoints":[{"timeUnixNano":"2000000000","count":"3","sum":1.5,"bucketCounts":["1","2","0"],"explicitBounds":[0.1,1]}]}}
        ]}]}]}"#;
        let pts = parse_line(line).unwrap();
        let g = &pts[0];
        assert_eq!(g.0["__name__"], "queue_depth");
        assert_eq!(
            (
                g.0["node"].as_str(),
                g.0["k8s.node.name"].as_str(),
                g.0["otel_scope_name"].as_str()
            ),
            ("n1", "n1", "app")
        );
        assert_eq!((g.1, g.2), (1000, 7.0));
        let buckets: Vec<(String, f64)> = pts
            .iter()
            .filter(|p| p.0["__name__"] == "lat_bucket")
            .map(|p| (p.0["le"].clone(), p.2))
            .collect();
        assert_eq!(
            buckets,
            [
                ("0.1".to_string(), 1.0),
                ("1".to_string(), 3.0),
                ("+Inf".to_string(), 3.0)
            ]
        );
        assert!(pts
            .iter()
            .any(|p| p.0["__name__"] == "lat_count" && p.2 == 3.0));
        assert!(parse_line("{}").is_err());
        assert!(parse_line("not json").is_err());
    }

    #[test]
    fn delta_sums_accumulate_across_lines_and_non_finite_doubles_read() {
        let line = |t: u64, v: &str| {
            format!(
                r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[
                {{"name":"jobs","sum":{{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{{"timeUnixNano":"{t}000000000","asInt":"5"}}]}}}},
                {{"name":"temp","gauge":{{"dataPoints":[{{"timeUnixNano":"{t}000000000","asDouble":{v}}}]}}}}
                ]}}]}}]}}"#
            )
        };
        let mut d = Decoder::default();
        let mut jobs = Vec::new();
        let mut temps = Vec::new();
        for (t, v) in [(1, "1.5"), (2, "\"NaN\""), (3, "\"-Infinity\"")] {
            for (l, _, value) in d.parse_line(&line(t, v)).unwrap() {
                match l["__name__"].as_str() {
                    "jobs" => jobs.push(value),
                    _ => temps.push(value),
                }
            }
        }
        assert_eq!(jobs, [5.0, 10.0, 15.0]);
        assert_eq!(temps[0], 1.5);
        assert!(temps[1].is_nan() && !vigil_engine::series::is_stale_marker(temps[1]));
        assert_eq!(temps[2], f64::NEG_INFINITY);
    }

    #[test]
    fn points_without_a_timestamp_are_malformed() {
        let line = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[{"asInt":"1"}]}}]}]}]}"#;
        let err = parse_line(line).unwrap_err();
        assert!(err.contains("timeUnixNano"), "{err}");
    }
}
