//! One OTLP mapping: the same export gives identical samples (labels, timestamps,
//! values, delta running totals included) whether the live receiver takes it or the
//! replay reader reads it from an OTLP-JSON file (the Collector's file exporter).
//!
//! - in process: the receiver's path (protobuf decode, `prepare`, the engine task's
//!   `Mapper`) against `vigil_replay::source::open` of the `.otlp.jsonl` file;
//! - end to end: the lines posted to a recording `vigil run` over OTLP/HTTP JSON, the
//!   Parquet recording read back, against the same file through the replay reader.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use support::{free_port, recording_files, Vigil};
use vigil_connectors::otlp::{
    prepare, ExportMetricsServiceRequest, Limits, Mapper, MappingConfig, OtlpStats,
};
use vigil_engine::series::SeriesRegistry;
use vigil_engine::Labels;
use vigil_replay::source::{open, OnBad, ReadStats};

/// Every metric type, delta and cumulative, special values, non-string attributes,
/// scope and Kubernetes resource attributes; two exports, so delta totals carry over.
fn lines() -> Vec<String> {
    (0..2u64)
        .map(|i| {
            let t = 1_793_613_600 + i * 10;
            let ns = format!("\"{t}000000000\"");
            format!(
                r#"{{"resourceMetrics":[{{"resource":{{"attributes":[
{{"key":"k8s.node.name","value":{{"stringValue":"n1"}}}},
{{"key":"k8s.pod.name","value":{{"stringValue":"api-0"}}}},
{{"key":"service.name","value":{{"stringValue":"api"}}}},
{{"key":"host.cores","value":{{"intValue":"8"}}}}]}},
"scopeMetrics":[{{"scope":{{"name":"io.vigil.test","version":"1"}},"metrics":[
{{"name":"queue.depth","gauge":{{"dataPoints":[
  {{"attributes":[{{"key":"queue","value":{{"stringValue":"ingest"}}}},{{"key":"hot","value":{{"boolValue":true}}}}],"timeUnixNano":{ns},"asDouble":{g}}},
  {{"attributes":[{{"key":"queue","value":{{"stringValue":"gone"}}}}],"timeUnixNano":{ns},"flags":1}}]}}}},
{{"name":"jobs.done","sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[
  {{"timeUnixNano":{ns},"asInt":"{c}"}}]}}}},
{{"name":"jobs.delta","sum":{{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[
  {{"timeUnixNano":{ns},"asInt":"7"}}]}}}},
{{"name":"request.duration","histogram":{{"aggregationTemporality":2,"dataPoints":[
  {{"timeUnixNano":{ns},"count":"6","sum":3.5,"bucketCounts":["1","2","3"],"explicitBounds":[0.1,1.0]}}]}}}},
{{"name":"request.size","exponentialHistogram":{{"aggregationTemporality":1,"dataPoints":[
  {{"timeUnixNano":{ns},"count":"4","sum":9000,"scale":5,"zeroCount":"1","positive":{{"offset":300,"bucketCounts":["1","0","2"]}}}}]}}}},
{{"name":"rpc.latency","summary":{{"dataPoints":[
  {{"timeUnixNano":{ns},"count":"10","sum":2.5,"quantileValues":[{{"quantile":0.5,"value":0.2}},{{"quantile":0.99,"value":0.9}}]}}]}}}}
]}}]}}]}}"#,
                g = 100.0 + i as f64 * 50.5,
                c = 1000 + i * 250,
            )
            .replace('\n', "")
        })
        .collect()
}

/// (labels, ts, value bits): NaN and the staleness marker compare by bits.
type Row = (Labels, i64, u64);

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    rows
}

/// The receiver's path: the protobuf bytes an exporter would send, decoded, prepared
/// and mapped as the engine task maps them.
fn through_the_receiver(lines: &[String]) -> Vec<Row> {
    let mut mapper = Mapper::new(MappingConfig::default(), Arc::new(OtlpStats::default()));
    let mut registry = SeriesRegistry::default();
    let mut rows = Vec::new();
    for line in lines {
        let typed: ExportMetricsServiceRequest = serde_json::from_str(line).unwrap();
        let wire = typed.encode_to_vec();
        let mut req = ExportMetricsServiceRequest::decode(wire.as_slice()).unwrap();
        let p = prepare(&mut req, &Limits::default());
        assert_eq!(p.invalid, 0, "{p:?}");
        let mut out = Vec::new();
        mapper.map(&req, 0, &mut registry, &mut out);
        for s in out {
            rows.push((registry.labels(s.series).unwrap(), s.ts, s.value.to_bits()));
        }
    }
    sorted(rows)
}

fn read(path: &Path) -> Vec<Row> {
    let stats = Arc::new(ReadStats::default());
    let mut rows = Vec::new();
    for c in open(path, OnBad::Fail, &stats).unwrap() {
        let c = c.unwrap();
        for &(s, ts, v) in &c.rows {
            rows.push((Labels::clone(&c.series[s as usize]), ts, v.to_bits()));
        }
    }
    rows
}

fn write_file(dir: &Path, lines: &[String]) -> std::path::PathBuf {
    let path = dir.join("export.otlp.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn the_receiver_and_the_replay_reader_map_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = lines();
    let live = through_the_receiver(&lines);
    let replayed = sorted(read(&write_file(tmp.path(), &lines)));
    assert_eq!(replayed, live);

    // What the mapping is meant to give, so that agreeing on nothing fails too.
    let find = |name: &str, extra: &[(&str, &str)]| -> Vec<f64> {
        live.iter()
            .filter(|r| {
                r.0["__name__"] == name
                    && extra
                        .iter()
                        .all(|(k, v)| r.0.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|r| f64::from_bits(r.2))
            .collect()
    };
    assert_eq!(
        find("jobs_delta", &[]),
        [7.0, 14.0],
        "delta totals carry over"
    );
    assert_eq!(find("jobs_done", &[]), [1000.0, 1250.0]);
    assert_eq!(
        find("queue_depth", &[("queue", "ingest"), ("hot", "true")]),
        [100.0, 150.5]
    );
    let stale = find("queue_depth", &[("queue", "gone")]);
    assert!(
        stale
            .iter()
            .all(|v| vigil_engine::series::is_stale_marker(*v)),
        "{stale:?}"
    );
    assert_eq!(
        find("request_duration_bucket", &[("le", "+Inf")]),
        [6.0, 6.0]
    );
    assert_eq!(
        find("request_size_count", &[]),
        [4.0, 8.0],
        "delta histogram accumulates"
    );
    assert_eq!(find("rpc_latency", &[("quantile", "0.99")]), [0.9, 0.9]);
    let first = &live[0].0;
    for (k, v) in [
        ("node", "n1"),
        ("k8s.node.name", "n1"),
        ("pod", "api-0"),
        ("service", "api"),
        ("host.cores", "8"),
        ("otel_scope_name", "io.vigil.test"),
    ] {
        assert_eq!(
            first.get(k).map(String::as_str),
            Some(v),
            "{k} in {first:?}"
        );
    }
}

fn post_json(port: u16, body: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_recording_of_the_live_receiver_equals_the_replay_of_the_export_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rules/r.yaml"),
        "group: g\ninterval: 10s\nrules:\n  - name: Deep\n    select: queue_depth\n    detect: { threshold: { above: 120 } }\n",
    )
    .unwrap();
    let http = free_port();
    let v = Vigil::start(
        dir,
        &[
            "--rules",
            "rules",
            "--state-dir",
            "state",
            "--otlp-grpc",
            &format!("127.0.0.1:{}", free_port()),
            "--otlp-http",
            &format!("127.0.0.1:{http}"),
            "--record",
            "rec",
        ],
    );
    let lines = lines();
    for l in &lines {
        assert_eq!(post_json(http, l), 200);
    }
    v.wait_until(Duration::from_secs(10), "the recording to catch up", || {
        let mapped = v.metric("vigil_otlp_samples_total").unwrap_or(-1.0);
        mapped > 0.0 && v.metric("vigil_record_samples_total") == Some(mapped)
    });
    assert!(v.terminate().success());
    let (files, _) = recording_files(&dir.join("rec"));
    let recorded = sorted(files.iter().flat_map(|f| read(f)).collect());
    let replayed = sorted(read(&write_file(dir, &lines)));
    assert!(!recorded.is_empty());
    // Parquet keeps every value bit for bit: staleness markers and NaN included.
    let by_series = |rows: &[Row]| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in rows {
            *m.entry(r.0["__name__"].clone()).or_insert(0) += 1;
        }
        m
    };
    assert_eq!(by_series(&recorded), by_series(&replayed));
    assert_eq!(recorded, replayed);
}
