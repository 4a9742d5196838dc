//! Vigil's own traces: with `telemetry.otlp_endpoint` set, `vigil run` exports the
//! spans of each intake batch (batch → detect → dispatch) over OTLP/HTTP protobuf. A
//! loopback receiver decodes what arrives.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use support::{jsonl, Vigil};

/// Accepts OTLP/HTTP POSTs, answering 200, and passes (path, body) on.
fn receiver() -> (u16, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if r.read_line(&mut first).is_err() {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut s = stream;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n");
            let _ = tx.send((path, body));
        }
    });
    (port, rx)
}

#[test]
fn batches_are_traced_over_otlp_http() {
    let (port, rx) = receiver();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/r.yaml"),
        "group: g\ninterval: 10s\nrules:\n  - name: High\n    select: x\n    detect: { threshold: { above: 1 } }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("vigil.yaml"),
        format!("engine: {{ lateness: 0s, idle_advance: 1h }}\ntelemetry:\n  otlp_endpoint: http://127.0.0.1:{port}\n"),
    )
    .unwrap();
    // Export quickly instead of every 5 s (the SDK reads this variable).
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "100");
    let v = Vigil::start(
        dir.path(),
        &[
            "--config",
            "vigil.yaml",
            "--rules",
            "rules",
            "--state-dir",
            "state",
        ],
    );
    let body = jsonl("x", "{}", &[(1_000, 5.0), (11_000, 5.0)]);
    assert_eq!(v.post("/api/v1/import", &body).0, 200);

    let mut names = Vec::new();
    while let Ok((path, body)) = rx.recv_timeout(Duration::from_secs(20)) {
        assert_eq!(path, "/v1/traces");
        let req = ExportTraceServiceRequest::decode(body.as_slice())
            .expect("an OTLP protobuf trace export");
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                names.extend(ss.spans.iter().map(|s| s.name.clone()));
            }
        }
        if ["batch", "detect", "dispatch"]
            .iter()
            .all(|n| names.iter().any(|m| m == n))
        {
            return;
        }
    }
    panic!("spans batch, detect and dispatch not all received; got {names:?}");
}
