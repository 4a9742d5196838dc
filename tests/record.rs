//! `vigil run --record DIR` end to end: samples imported over `POST /api/v1/import`
//! into a recording service (with a rules reload in the middle) are written to Parquet
//! files that `vigil replay` turns into the same alerts the live run showed.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{jsonl, live_alerts, recording_files, replay_alerts, Vigil};

const RULES: &str = r#"group: svc
interval: 10s
rules:
  - name: HighLatency
    select: 'latency_seconds{service=~".+"}'
    by: [service]
    detect: { threshold: { above: 1 } }
    severity: critical
  - name: SlowBurn
    select: latency_seconds
    by: [service]
    for: 1h
    detect: { threshold: { above: 0.5 } }
  - name: ErrorsUp
    select: errors_total
    rate: 30s
    by: [service]
    detect: { threshold: { above: 0.5 } }
"#;

/// Event-time rotation every 30 s of samples: the recording spans several files.
const CONFIG: &str = "engine:\n  lateness: 0s\n  idle_advance: 1h\nrecord:\n  max_age: 30s\n";

const T0: i64 = 1_793_613_600_000;

fn body(from: i64, to: i64) -> String {
    let mut b = String::new();
    for i in from..to {
        let ts = T0 + i * 10_000;
        let slow = if i >= 3 { 2.5 } else { 0.2 };
        b += &jsonl(
            "latency_seconds",
            r#"{"service":"checkout"}"#,
            &[(ts, slow)],
        );
        b += &jsonl("latency_seconds", r#"{"service":"cart"}"#, &[(ts, 0.1)]);
        // checkout's errors climb 10/s from the 6th point; cart's stay flat.
        let errs = if i >= 6 { (i - 5) as f64 * 100.0 } else { 0.0 };
        b += &jsonl("errors_total", r#"{"service":"checkout"}"#, &[(ts, errs)]);
        b += &jsonl("errors_total", r#"{"service":"cart"}"#, &[(ts, 3.0)]);
    }
    b
}

fn import(v: &Vigil, body: &str) {
    let (code, resp) = v.post("/api/v1/import", body);
    assert_eq!(code, 200, "{resp}");
    let r: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(r["rejected"], 0, "{r}");
}

fn setup(dir: &Path) {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/svc.yaml"), RULES).unwrap();
    std::fs::write(dir.join("vigil.yaml"), CONFIG).unwrap();
}

#[test]
fn recorded_import_replays_to_the_same_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let v = Vigil::start(
        dir,
        &[
            "--config",
            "vigil.yaml",
            "--rules",
            "rules",
            "--state-dir",
            "state",
            "--record",
            "rec",
        ],
    );
    import(&v, &body(0, 6));
    // A rules reload in the middle does not interrupt the recording.
    let (code, resp) = v.post("/-/reload", "");
    assert_eq!(code, 200, "{resp}");
    import(&v, &body(6, 12));
    let want = 12 * 4;
    v.wait_until(Duration::from_secs(10), "48 samples recorded", || {
        v.metric("vigil_record_samples_total") == Some(f64::from(want))
    });
    assert_eq!(
        v.metric("vigil_record_dropped_samples_total{reason=\"queue_full\"}"),
        Some(0.0)
    );
    assert_eq!(v.metric("vigil_record_errors_total"), Some(0.0));
    // Event time rotation: files before the last are complete already.
    assert!(v.metric("vigil_record_files_total").unwrap() >= 2.0);

    let live = live_alerts(&v);
    let rules: Vec<&str> = live.iter().map(|a| a.0.as_str()).collect();
    for r in ["HighLatency", "SlowBurn", "ErrorsUp"] {
        assert!(rules.contains(&r), "{r} is not active live: {live:?}");
    }
    let status = v.terminate();
    assert!(status.success(), "{status}");

    let (files, other) = recording_files(&dir.join("rec"));
    assert!(other.is_empty(), "left over after SIGTERM: {other:?}");
    assert!(files.len() >= 3, "rotated every 30 s of 110 s: {files:?}");

    let (replayed, out) = replay_alerts(dir, &["--rules", "rules", "rec"]);
    assert_eq!(replayed, live, "replay output:\n{out}");
    // The directory and the files listed one by one replay alike.
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut args = vec!["--rules", "rules"];
    args.extend(names.iter().map(String::as_str));
    let (by_file, out2) = replay_alerts(dir, &args);
    assert_eq!(by_file, live);
    assert_eq!(out, out2);
}

#[test]
fn a_restart_appends_to_the_recording() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let args = [
        "--config",
        "vigil.yaml",
        "--rules",
        "rules",
        "--state-dir",
        "state",
        "--record",
        "rec",
    ];
    // The same samples twice, from restarted services: no file is replaced.
    let mut counts = Vec::new();
    for _ in 0..2 {
        let v = Vigil::start(dir, &args);
        import(&v, &body(0, 2));
        v.wait_until(Duration::from_secs(10), "8 samples recorded", || {
            v.metric("vigil_record_samples_total") == Some(8.0)
        });
        assert!(v.terminate().success());
        counts.push(recording_files(&dir.join("rec")).0.len());
    }
    assert_eq!(counts, [1, 2]);
}

#[test]
fn the_recorded_demo_replays_to_the_same_alerts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("rules");
    let samples =
        std::fs::read_to_string(root.join("examples/incidents/node-avalanche/recording.jsonl"))
            .unwrap()
            .lines()
            .count();
    let v = Vigil::start(
        dir,
        &[
            "--rules",
            rules.to_str().unwrap(),
            "--otlp-grpc",
            &format!("127.0.0.1:{}", support::free_port()),
            "--otlp-http",
            &format!("127.0.0.1:{}", support::free_port()),
            "--demo",
            "--demo-speed",
            "2400",
            "--record",
            "rec",
        ],
    );
    v.wait_until(Duration::from_secs(30), "the whole demo recorded", || {
        v.metric("vigil_record_samples_total") == Some(samples as f64)
    });
    let live = live_alerts(&v);
    assert!(!live.is_empty(), "the demo ends with alerts firing");
    assert!(v.terminate().success());
    let (replayed, out) = replay_alerts(dir, &["--rules", rules.to_str().unwrap(), "rec"]);
    assert_eq!(replayed, live, "replay output:\n{out}");
}
