//! OTLP-JSON lines, as the OpenTelemetry Collector's file exporter writes them: one
//! `ExportMetricsServiceRequest` in the OTLP/JSON encoding a line.
//!
//! Mapping (the same as the live OTLP receiver): metric name → `__name__` in the
//! Prometheus charset; resource, scope (`otel_scope_name`) and point attributes →
//! labels, with the Kubernetes aliases `node`, `pod`, `namespace`, `container`,
//! `service` added; gauges and sums → their value (a line holds cumulative sums as
//! they were written); histograms → cumulative `<name>_bucket{le}`, `<name>_sum`,
//! `<name>_count`; summaries → `<name>{quantile}`, `_sum`, `_count`. A point with the
//! no-recorded-value flag becomes a staleness marker.

use serde_json::Value;
use vigil_engine::labels::{Labels, METRIC_NAME};
use vigil_engine::series::STALE_MARKER;

const ALIASES: [(&str, &str); 5] = [
    ("k8s.node.name", "node"),
    ("k8s.pod.name", "pod"),
    ("k8s.namespace.name", "namespace"),
    ("k8s.container.name", "container"),
    ("service.name", "service"),
];

/// A sample: labels, ts ms, value.
pub type Point = (Labels, i64, f64);

fn prom_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn any_value(v: &Value) -> String {
    let Some(obj) = v.as_object() else {
        return String::new();
    };
    // An AnyValue has exactly one field set.
    match obj.iter().next() {
        Some((_, Value::String(s))) => s.clone(),
        Some((_, Value::Number(n))) => n.to_string(),
        Some((_, Value::Bool(b))) => b.to_string(),
        Some((_, other)) => other.to_string(),
        None => String::new(),
    }
}

fn add_attributes(labels: &mut Labels, attrs: Option<&Value>) {
    for kv in attrs.and_then(Value::as_array).into_iter().flatten() {
        let (Some(k), Some(v)) = (kv.get("key").and_then(Value::as_str), kv.get("value")) else {
            continue;
        };
        let v = any_value(v);
        if let Some((_, alias)) = ALIASES.iter().find(|(key, _)| *key == k) {
            labels.insert((*alias).to_string(), v.clone());
        }
        labels.insert(k.to_string(), v);
    }
}

fn nanos(p: &Value, field: &str) -> Option<i64> {
    let v = p.get(field)?;
    let n: i128 = match v {
        Value::String(s) => s.parse().ok()?,
        Value::Number(n) => i128::from(n.as_i64()?),
        _ => return None,
    };
    (n > 0).then_some((n / 1_000_000) as i64)
}

fn number(p: &Value) -> Option<f64> {
    if let Some(d) = p.get("asDouble") {
        return match d {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => match s.as_str() {
                "NaN" => Some(f64::NAN),
                "Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                s => s.parse().ok(),
            },
            _ => None,
        };
    }
    match p.get("asInt")? {
        Value::String(s) => s.parse::<i64>().ok().map(|i| i as f64),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn u64_of(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::String(s) => s.parse::<u64>().ok().map(|u| u as f64),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn no_value(p: &Value) -> bool {
    p.get("flags")
        .and_then(Value::as_u64)
        .is_some_and(|f| f & 1 == 1)
}

/// Parses one line into samples.
pub fn parse_line(line: &str) -> Result<Vec<Point>, String> {
    let doc: Value = serde_json::from_str(line).map_err(|e| format!("not OTLP JSON: {e}"))?;
    let rms = doc
        .get("resourceMetrics")
        .and_then(Value::as_array)
        .ok_or("no resourceMetrics: not an OTLP metrics export")?;
    let mut out = Vec::new();
    for rm in rms {
        let mut base = Labels::new();
        add_attributes(&mut base, rm.pointer("/resource/attributes"));
        for sm in rm
            .get("scopeMetrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut scope = base.clone();
            if let Some(name) = sm
                .pointer("/scope/name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                scope.insert("otel_scope_name".into(), name.to_string());
            }
            for m in sm
                .get("metrics")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = prom_name(
                    m.get("name")
                        .and_then(Value::as_str)
                        .ok_or("metric without a name")?,
                );
                map_metric(&name, m, &scope, &mut out)?;
            }
        }
    }
    Ok(out)
}

fn point_labels(scope: &Labels, name: &str, p: &Value) -> Labels {
    let mut l = scope.clone();
    add_attributes(&mut l, p.get("attributes"));
    l.insert(METRIC_NAME.into(), name.to_string());
    l
}

fn map_metric(name: &str, m: &Value, scope: &Labels, out: &mut Vec<Point>) -> Result<(), String> {
    let points = |kind: &str| {
        m.pointer(&format!("/{kind}/dataPoints"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    if m.get("gauge").is_some() || m.get("sum").is_some() {
        let kind = if m.get("gauge").is_some() {
            "gauge"
        } else {
            "sum"
        };
        for p in points(kind) {
            let ts = nanos(&p, "timeUnixNano")
                .ok_or_else(|| format!("{name}: data point without timeUnixNano"))?;
            let v = if no_value(&p) {
                STALE_MARKER
            } else {
                number(&p).ok_or_else(|| format!("{name}: data point without a value"))?
            };
            out.push((point_labels(scope, name, &p), ts, v));
        }
    } else if m.get("histogram").is_some() {
        for p in points("histogram") {
            let ts = nanos(&p, "timeUnixNano")
                .ok_or_else(|| format!("{name}: data point without timeUnixNano"))?;
            let stale = no_value(&p);
            let base = point_labels(scope, name, &p);
            let series = |suffix: &str| {
                let mut l = base.clone();
                l.insert(METRIC_NAME.into(), format!("{name}{suffix}"));
                l
            };
            let val = |v: f64| if stale { STALE_MARKER } else { v };
            let counts: Vec<f64> = p
                .get("bucketCounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| u64_of(Some(c)))
                .collect();
            let bounds: Vec<f64> = p
                .get("explicitBounds")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .collect();
            let mut cum = 0.0;
            for (i, c) in counts.iter().enumerate() {
                cum += c;
                let le = bounds.get(i).map_or("+Inf".to_string(), |b| b.to_string());
                let mut l = series("_bucket");
                l.insert("le".into(), le);
                out.push((l, ts, val(cum)));
            }
            if let Some(count) = u64_of(p.get("count")) {
                out.push((series("_count"), ts, val(count)));
            }
            if let Some(sum) = p.get("sum").and_then(Value::as_f64) {
                out.push((series("_sum"), ts, val(sum)));
            }
        }
    } else if m.get("summary").is_some() {
        for p in points("summary") {
            let ts = nanos(&p, "timeUnixNano")
                .ok_or_else(|| format!("{name}: data point without timeUnixNano"))?;
            let base = point_labels(scope, name, &p);
            for q in p
                .get("quantileValues")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let mut l = base.clone();
                l.insert(
                    "quantile".into(),
                    q.get("quantile")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0)
                        .to_string(),
                );
                out.push((
                    l,
                    ts,
                    q.get("value").and_then(Value::as_f64).unwrap_or(f64::NAN),
                ));
            }
            let mut c = base.clone();
            c.insert(METRIC_NAME.into(), format!("{name}_count"));
            out.push((c, ts, u64_of(p.get("count")).unwrap_or(f64::NAN)));
            let mut s = base;
            s.insert(METRIC_NAME.into(), format!("{name}_sum"));
            out.push((
                s,
                ts,
                p.get("sum").and_then(Value::as_f64).unwrap_or(f64::NAN),
            ));
        }
    }
    Ok(())
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
    }
}
