//! `vigil run` end to end: the real binary on a loopback port, driven over HTTP.
//! Covers the API shapes, hot reload (valid, invalid, ConfigMap symlink swap),
//! checkpoint/restore across kill -9, and graceful shutdown.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{jsonl, Vigil};

const RULES: &str = r#"group: svc
interval: 10s
rules:
  - name: HighLatency
    select: 'latency_seconds{service=~".+"}'
    by: [service]
    detect: { threshold: { above: 1 } }
    severity: critical
    annotations:
      summary: "{{ $labels.service }} latency {{ $value }}s"
  - name: SlowBurn
    select: latency_seconds
    by: [service]
    for: 1h
    detect: { threshold: { above: 0.5 } }
"#;

const CONFIG: &str = "engine:\n  lateness: 0s\n  idle_advance: 1h\ncheckpoint:\n  interval: 1s\n";

const T0: i64 = 1_793_613_600_000;

fn setup(dir: &Path) {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/svc.yaml"), RULES).unwrap();
    std::fs::write(dir.join("vigil.yaml"), CONFIG).unwrap();
}

fn start(dir: &Path) -> Vigil {
    Vigil::start(
        dir,
        &[
            "--config",
            "vigil.yaml",
            "--rules",
            "rules",
            "--state-dir",
            "state",
        ],
    )
}

/// checkout is slow (fires HighLatency, SlowBurn pending for an hour); cart is fine.
fn feed(v: &Vigil) {
    let pts: Vec<(i64, f64)> = (0..7)
        .map(|i| (T0 + i * 10_000, if i >= 3 { 2.5 } else { 0.2 }))
        .collect();
    let mut body = jsonl("latency_seconds", r#"{"service":"checkout"}"#, &pts);
    body += &jsonl(
        "latency_seconds",
        r#"{"service":"cart"}"#,
        &pts.iter().map(|&(t, _)| (t, 0.1)).collect::<Vec<_>>(),
    );
    body += "this line is not json\n";
    let (code, resp) = v.post("/api/v1/import", &body);
    assert_eq!(code, 200, "{resp}");
    let r: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(r["accepted"], 14);
    assert_eq!(r["rejected"], 1);
    assert!(
        r["errors"][0].as_str().unwrap().starts_with("line 15:"),
        "{r}"
    );
}

fn alert_states(v: &Vigil) -> Vec<(String, String, String)> {
    let a = v.json("/api/v1/alerts");
    let mut out: Vec<(String, String, String)> = a["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["labels"]["alertname"].as_str().unwrap().to_string(),
                x["state"].as_str().unwrap().to_string(),
                x["activeAt"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn api_shapes() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let v = start(dir.path());
    feed(&v);
    v.wait_until(Duration::from_secs(10), "two alerts", || {
        alert_states(&v).len() == 2
    });

    let alerts = v.json("/api/v1/alerts");
    assert_eq!(alerts["status"], "success");
    let firing = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["state"] == "firing")
        .unwrap()
        .clone();
    assert_eq!(firing["labels"]["alertname"], "HighLatency");
    assert_eq!(firing["labels"]["service"], "checkout");
    assert_eq!(firing["labels"]["severity"], "critical");
    assert_eq!(firing["annotations"]["summary"], "checkout latency 2.5s");
    assert_eq!(firing["activeAt"], "2026-11-02T10:00:30Z");
    assert_eq!(firing["value"], "2.5");

    let rules = v.json("/api/v1/rules");
    let group = &rules["data"]["groups"][0];
    assert_eq!(group["name"], "svc");
    assert_eq!(group["interval"], 10.0);
    let r0 = &group["rules"][0];
    assert_eq!(r0["name"], "HighLatency");
    assert_eq!(
        (
            r0["type"].as_str(),
            r0["health"].as_str(),
            r0["state"].as_str()
        ),
        (Some("alerting"), Some("ok"), Some("firing"))
    );
    assert_eq!(r0["series"], 2, "one state per service");
    assert_eq!(group["rules"][1]["duration"], 3600.0);
    assert_eq!(
        rules["data"]["reload"]["lastError"],
        serde_json::Value::Null
    );

    let fp = firing["fingerprint"].as_str().unwrap();
    let series = v.json(&format!("/api/v1/series?rule=HighLatency&fingerprint={fp}"));
    let pts = series["data"]["points"].as_array().unwrap();
    assert!(!pts.is_empty());
    assert_eq!(
        pts[0][1], 2.5,
        "history starts when the alert becomes active"
    );
    assert_eq!(series["data"]["firedAt"], T0 + 30_000);
    let by_labels =
        v.json("/api/v1/series?rule=HighLatency&labels=%7B%22service%22%3A%22checkout%22%7D");
    assert_eq!(by_labels["data"]["labels"]["service"], "checkout");
    assert_eq!(
        v.get("/api/v1/series?rule=HighLatency&fingerprint=zz").0,
        400
    );
    assert_eq!(
        v.get("/api/v1/series?rule=HighLatency&fingerprint=1").0,
        404
    );

    assert_eq!(v.get("/healthz").0, 200);
    assert_eq!(v.get("/readyz").0, 200);
    assert_eq!(v.metric("vigil_samples_received_total"), Some(14.0));
    assert_eq!(v.metric("vigil_alerts{state=\"firing\"}"), Some(1.0));
    assert_eq!(v.metric("vigil_alerts{state=\"pending\"}"), Some(1.0));
    assert_eq!(
        v.metric("vigil_rule_series{group=\"svc\",rule=\"HighLatency\"}"),
        Some(2.0)
    );
    let (_, metrics) = v.get("/metrics");
    assert!(metrics.contains("# TYPE vigil_batch_duration_seconds histogram"));
    let (code, page) = v.get("/");
    assert_eq!(code, 200);
    assert!(page.contains("<title>Vigil</title>"));

    // The stdout sink printed the firing transition as one JSON line.
    let out = std::fs::read_to_string(&v.stdout).unwrap();
    let line = out
        .lines()
        .find(|l| l.contains("\"firing\"") && l.contains("HighLatency"))
        .expect(&out);
    let j: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(j["labels"]["service"], "checkout");
}

#[test]
fn checkpoint_survives_kill_9_without_renotifying() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let v = start(dir.path());
    feed(&v);
    v.wait_until(Duration::from_secs(10), "two alerts", || {
        alert_states(&v).len() == 2
    });
    let before = alert_states(&v);
    let writes = v
        .metric("vigil_checkpoint_writes_total{result=\"success\"}")
        .unwrap_or(0.0);
    v.wait_until(
        Duration::from_secs(10),
        "a checkpoint after the import",
        || {
            v.metric("vigil_checkpoint_writes_total{result=\"success\"}")
                .unwrap_or(0.0)
                > writes
        },
    );
    v.kill9();

    let v2 = start(dir.path());
    assert_eq!(
        alert_states(&v2),
        before,
        "firing and pending alerts (with their activeAt) survive kill -9"
    );
    // Keep going, a sample a minute (inside the 5m staleness, so the series stays live):
    // SlowBurn's `for` timer kept counting from its original activeAt (T0+30s), so it
    // fires at T0+3630s, not an hour after the restart.
    let pts: Vec<(i64, f64)> = (1..=61).map(|i| (T0 + 60_000 + i * 60_000, 2.5)).collect();
    let more = jsonl("latency_seconds", r#"{"service":"checkout"}"#, &pts);
    assert_eq!(v2.post("/api/v1/import", &more).0, 200);
    v2.wait_until(Duration::from_secs(10), "SlowBurn firing", || {
        alert_states(&v2).iter().filter(|a| a.1 == "firing").count() == 2
    });
    let slow = |states: &[(String, String, String)]| {
        states
            .iter()
            .find(|a| a.0 == "SlowBurn")
            .map(|a| a.2.clone())
    };
    assert_eq!(
        slow(&alert_states(&v2)),
        slow(&before),
        "SlowBurn keeps the activeAt it had before the restart"
    );
    let out = std::fs::read_to_string(&v2.stdout).unwrap();
    assert!(
        !out.lines().any(|l| l.contains("HighLatency")),
        "no re-notification of restored alerts:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("SlowBurn") && l.contains("firing")),
        "{out}"
    );
}

#[test]
fn sigterm_drains_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    std::fs::write(
        dir.path().join("vigil.yaml"),
        "engine:\n  lateness: 0s\n  idle_advance: 1h\ncheckpoint:\n  interval: 1h\n",
    )
    .unwrap();
    let v = start(dir.path());
    feed(&v);
    v.wait_until(Duration::from_secs(10), "two alerts", || {
        alert_states(&v).len() == 2
    });
    let before = alert_states(&v);
    let status = v.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        dir.path().join("state/checkpoint.bin").exists(),
        "checkpoint written on shutdown"
    );
    let v2 = start(dir.path());
    assert_eq!(alert_states(&v2), before);
}

fn rule_names(v: &Vigil) -> Vec<String> {
    let r = v.json("/api/v1/rules");
    r["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            g["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn reload_valid_invalid_and_configmap_symlink_swap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("vigil.yaml"), CONFIG).unwrap();
    // The layout kubelet gives a ConfigMap volume.
    let rules = d.join("rules");
    std::fs::create_dir_all(rules.join("..2026_11_01_00_00_00.1")).unwrap();
    std::fs::write(rules.join("..2026_11_01_00_00_00.1/svc.yaml"), RULES).unwrap();
    std::os::unix::fs::symlink("..2026_11_01_00_00_00.1", rules.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/svc.yaml", rules.join("svc.yaml")).unwrap();
    let v = start(d);
    feed(&v);
    v.wait_until(Duration::from_secs(10), "alerts", || {
        alert_states(&v).len() == 2
    });
    assert_eq!(rule_names(&v), ["HighLatency", "SlowBurn"]);

    // 1. A valid change arrives as an atomic ..data swap: picked up, state of the
    //    unchanged rule survives.
    let v2_rules = RULES.replace("name: SlowBurn", "name: SlowerBurn");
    std::fs::create_dir_all(rules.join("..2026_11_01_00_05_00.2")).unwrap();
    std::fs::write(rules.join("..2026_11_01_00_05_00.2/svc.yaml"), &v2_rules).unwrap();
    std::os::unix::fs::symlink("..2026_11_01_00_05_00.2", rules.join("..data_tmp")).unwrap();
    std::fs::rename(rules.join("..data_tmp"), rules.join("..data")).unwrap();
    v.wait_until(Duration::from_secs(10), "reload after symlink swap", || {
        rule_names(&v) == ["HighLatency", "SlowerBurn"]
    });
    assert_eq!(
        v.metric("vigil_rule_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    let states = alert_states(&v);
    assert!(
        states
            .iter()
            .any(|a| a.0 == "HighLatency" && a.1 == "firing"),
        "unchanged rule kept its alert: {states:?}"
    );

    // 2. An invalid change is rejected whole; the old rules keep running.
    std::fs::create_dir_all(rules.join("..2026_11_01_00_10_00.3")).unwrap();
    std::fs::write(
        rules.join("..2026_11_01_00_10_00.3/svc.yaml"),
        RULES.replace("detect:", "detekt:"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_01_00_10_00.3", rules.join("..data_tmp")).unwrap();
    std::fs::rename(rules.join("..data_tmp"), rules.join("..data")).unwrap();
    v.wait_until(Duration::from_secs(10), "rejected reload", || {
        v.metric("vigil_rule_reloads_total{result=\"failure\"}") == Some(1.0)
    });
    assert_eq!(rule_names(&v), ["HighLatency", "SlowerBurn"]);
    let r = v.json("/api/v1/rules");
    let err = r["data"]["reload"]["lastError"].as_str().unwrap();
    assert!(
        err.contains("svc.yaml:7:5") && err.contains("unknown field `detekt`"),
        "{err}"
    );
    assert_eq!(v.metric("vigil_rule_last_reload_successful"), Some(0.0));

    // 3. POST /-/reload says why it was rejected, and succeeds once fixed.
    let (code, body) = v.post("/-/reload", "");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("detekt"), "{body}");
    std::fs::write(rules.join("..2026_11_01_00_10_00.3/svc.yaml"), RULES).unwrap();
    let (code, body) = v.post("/-/reload", "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(rule_names(&v), ["HighLatency", "SlowBurn"]);
}

#[test]
fn absence_fires_when_intake_goes_quiet() {
    // With no sample for `idle_advance`, the watermark follows the wall clock, so a
    // heartbeat rule fires even though nothing arrives any more.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("rules")).unwrap();
    std::fs::write(
        d.join("rules/hb.yaml"),
        "group: hb\ninterval: 1s\nrules:\n  - name: HeartbeatMissing\n    select: heartbeat\n    by: [node]\n    detect: { absent: { intervals: 2 } }\n",
    )
    .unwrap();
    std::fs::write(
        d.join("vigil.yaml"),
        "engine:\n  lateness: 0s\n  idle_advance: 1s\n",
    )
    .unwrap();
    let v = start(d);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let body = jsonl(
        "heartbeat",
        r#"{"node":"n1"}"#,
        &[(now - 2_000, 1.0), (now - 1_000, 1.0), (now, 1.0)],
    );
    assert_eq!(v.post("/api/v1/import", &body).0, 200);
    v.wait_until(
        Duration::from_secs(15),
        "HeartbeatMissing firing after intake went quiet",
        || {
            alert_states(&v)
                .iter()
                .any(|a| a.0 == "HeartbeatMissing" && a.1 == "firing")
        },
    );
    // A sample older than the wall-clock watermark is now late: dropped and counted.
    let late = jsonl("heartbeat", r#"{"node":"n1"}"#, &[(now - 60_000, 1.0)]);
    assert_eq!(v.post("/api/v1/import", &late).0, 200);
    v.wait_until(Duration::from_secs(5), "late sample counted", || {
        v.metric("vigil_samples_dropped_total{reason=\"late\"}") == Some(1.0)
    });
}
