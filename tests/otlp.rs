//! OTLP intake end to end through the real `vigil run`: protobuf and gzip JSON over
//! OTLP/HTTP turn into alerts; `/metrics` counts requests, points and latency; a bad
//! body is a 400; a listener address set by flag must bind, a default one may be busy.
//! (Every error path of the receivers, gRPC and TLS are tested in the connectors crate;
//! a real OpenTelemetry SDK in tests/otlp_python.rs.)

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use support::{free_port, Vigil};
use vigil_connectors::otlp::proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_connectors::otlp::proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use vigil_connectors::otlp::proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use vigil_connectors::otlp::proto::tonic::resource::v1::Resource;

const RULES: &str = r#"group: otlp
interval: 1s
rules:
  - name: HotNode
    select: 'node_temperature_celsius{namespace="prod"}'
    by: [node]
    detect: { threshold: { above: 80 } }
    severity: critical
    actions:
      - alert
      - isolate: { node: "{{ $labels.node }}" }
  - name: SlowApi
    select: http_server_duration_bucket
    quantile: 0.99
    aggregate: { op: sum, by: [service] }
    detect: { threshold: { above: 0.5 } }
"#;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Node n1 runs hot; every request of service api takes ~0.8 s.
fn request(t: u64) -> ExportMetricsServiceRequest {
    let temp = |node: &str, v: f64| NumberDataPoint {
        attributes: vec![kv("k8s.node.name", node)],
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "api"), kv("k8s.namespace.name", "prod")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "node.temperature.celsius".into(),
                        data: Some(Data::Gauge(Gauge {
                            data_points: vec![temp("n1", 95.0), temp("n2", 40.0)],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "http.server.duration".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: t,
                                count: 10,
                                sum: Some(8.0),
                                bucket_counts: vec![0, 0, 10, 0],
                                explicit_bounds: vec![0.1, 0.5, 1.0],
                                ..Default::default()
                            }],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One HTTP/1.1 POST with a binary body; (status, headers and body as text).
fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    // A stored (uncompressed) gzip member: header, deflate "stored" blocks, CRC, size.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let chunks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, c) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let n = c.len() as u16;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(c);
    }
    let crc = data.iter().fold(!0u32, |mut crc, &b| {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
        crc
    });
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn setup(dir: &Path) {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/otlp.yaml"), RULES).unwrap();
    std::fs::write(
        dir.join("vigil.yaml"),
        "engine:\n  lateness: 0s\n  idle_advance: 1s\n",
    )
    .unwrap();
}

fn firing(v: &Vigil) -> Vec<String> {
    let a = v.json("/api/v1/alerts");
    let mut out: Vec<String> = a["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["state"] == "firing")
        .map(|x| {
            format!(
                "{}{{node={},service={}}}",
                x["labels"]["alertname"].as_str().unwrap_or(""),
                x["labels"]["node"].as_str().unwrap_or(""),
                x["labels"]["service"].as_str().unwrap_or("")
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn otlp_http_protobuf_and_gzip_json_fire_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let (grpc, http) = (free_port(), free_port());
    let v = Vigil::start(
        tmp.path(),
        &[
            "--config",
            "vigil.yaml",
            "--rules",
            "rules",
            "--state-dir",
            "state",
            "--otlp-grpc",
            &format!("127.0.0.1:{grpc}"),
            "--otlp-http",
            &format!("127.0.0.1:{http}"),
        ],
    );
    assert_eq!(v.get("/readyz").0, 200);
    let t0 = now_ns();
    // Protobuf, three points a second apart.
    for i in 0..3u64 {
        let body = request(t0 + i * 1_000_000_000).encode_to_vec();
        let (code, resp) = post(
            http,
            "/v1/metrics",
            &[("Content-Type", "application/x-protobuf")],
            &body,
        );
        assert_eq!(code, 200, "{resp}");
        assert!(resp.contains("application/x-protobuf"), "{resp}");
    }
    // OTLP/JSON, gzip.
    let json = serde_json::to_vec(&request(t0 + 3_000_000_000)).unwrap();
    let (code, resp) = post(
        http,
        "/v1/metrics",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip(&json),
    );
    assert_eq!(code, 200, "{resp}");
    // Not OTLP at all.
    let (code, resp) = post(
        http,
        "/v1/metrics",
        &[("Content-Type", "application/x-protobuf")],
        b"\xff\xff\xff",
    );
    assert_eq!(code, 400, "{resp}");

    let want = vec![
        "HotNode{node=n1,service=}".to_string(),
        "SlowApi{node=,service=api}".to_string(),
    ];
    let start = Instant::now();
    let mut got = Vec::new();
    while start.elapsed() < Duration::from_secs(30) {
        got = firing(&v);
        if got == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, want);

    let m = |s: &str| v.metric(s).unwrap_or(-1.0);
    assert_eq!(
        m(r#"vigil_otlp_requests_total{protocol="http",outcome="success"}"#),
        4.0
    );
    assert_eq!(
        m(r#"vigil_otlp_requests_total{protocol="http",outcome="bad_request"}"#),
        1.0
    );
    assert_eq!(
        m(r#"vigil_otlp_data_points_received_total{protocol="http"}"#),
        12.0
    );
    // 2 gauge samples + count, sum and 4 buckets per request.
    assert_eq!(m("vigil_otlp_samples_total"), 4.0 * 8.0);
    assert_eq!(m("vigil_otlp_request_to_decision_seconds_count"), 4.0);
    assert_eq!(
        m(r#"vigil_samples_dropped_total{reason="intake_full"}"#),
        0.0
    );
    let status = v.terminate();
    assert!(status.success(), "{status}");
}

#[test]
fn an_otlp_address_set_by_flag_must_bind() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config", "vigil.yaml", "--rules", "rules"])
        .args(["--state-dir", "state", "--http"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--otlp-grpc", "127.0.0.1:0", "--otlp-http"])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("vigil kept running with its OTLP address taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(
        err.contains("OTLP http receiver cannot listen on"),
        "stderr: {err}"
    );
}

#[test]
fn a_busy_default_otlp_port_does_not_stop_vigil() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    // Hold the default HTTP port if nobody else does; either way it is busy or free
    // and vigil must start.
    let _held = std::net::TcpListener::bind("127.0.0.1:4318");
    let v = Vigil::start(
        tmp.path(),
        &[
            "--config",
            "vigil.yaml",
            "--rules",
            "rules",
            "--state-dir",
            "state",
        ],
    );
    assert_eq!(v.get("/readyz").0, 200);
    let status = v.terminate();
    assert!(status.success(), "{status}");
}
