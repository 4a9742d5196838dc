//! A real OpenTelemetry SDK against the real `vigil run`: the Python SDK
//! (`opentelemetry-sdk` and `opentelemetry-exporter-otlp` from PyPI, pinned in
//! tests/otlp/requirements.txt) exports gauges, counters, an explicit and an
//! exponential histogram over OTLP/gRPC and over OTLP/HTTP (gzip, bearer token; one run
//! with delta temporality), and the test asserts through `/api/v1/alerts` that every
//! rule fires for both services. The service records what it ingests (`--record`);
//! after SIGTERM, `vigil replay` of that recording must give the alerts the live run
//! showed: same rules, labels and states.
//!
//! The venv is built once and cached under `$HOME/.cache/vigil/otel-venv-<hash of the
//! requirements>`. The test fails, rather than skips, when the venv cannot be made:
//! `bash scripts/test` installs what it needs (python3 with venv and pip).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{free_port, live_alerts, recording_files, replay_alerts, Vigil};

const RULES: &str = r#"group: otel
interval: 1s
rules:
  - name: QueueTooDeep
    select: 'queue_depth{namespace="prod"}'
    by: [service, node]
    detect: { threshold: { above: 100 } }
    severity: critical
  - name: SlowRequests
    select: request_duration_bucket
    quantile: 0.99
    aggregate: { op: sum, by: [service] }
    detect: { threshold: { above: 1 } }
  - name: LargeRequests
    select: request_size_bucket
    quantile: 0.5
    aggregate: { op: sum, by: [service] }
    detect: { threshold: { above: 1000 } }
  - name: JobsRate
    select: jobs_processed
    rate: 5s
    by: [service]
    detect: { threshold: { above: 10 } }
"#;

const TOKEN: &str = "python-sdk-token";

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn fail_setup(what: &str, detail: &str) -> ! {
    panic!(
        "cannot prepare the Python venv for the OpenTelemetry SDK test: {what}\n{detail}\n\
         Run `bash scripts/test` (it installs python3-venv and pip), or make `python3 -m venv` \
         and `pip install -r tests/otlp/requirements.txt` work."
    )
}

/// The cached venv's python, built on first use.
fn venv_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp");
    let reqs = root.join("requirements.txt");
    let text = std::fs::read(&reqs).unwrap();
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let cache = home.join(".cache/vigil");
    let dir = cache.join(format!("otel-venv-{:016x}", fnv1a(&text)));
    let python = dir.join("bin/python");
    if dir.join(".complete").exists() && python.exists() {
        return python;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let tmp = cache.join(format!("otel-venv-tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&tmp)
        .output()
        .unwrap_or_else(|e| fail_setup("python3 is not runnable", &e.to_string()));
    if !out.status.success() {
        fail_setup(
            "`python3 -m venv` failed",
            &String::from_utf8_lossy(&out.stderr),
        );
    }
    let out = Command::new(tmp.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "-r",
        ])
        .arg(&reqs)
        .output()
        .unwrap_or_else(|e| fail_setup("the venv's python is not runnable", &e.to_string()));
    if !out.status.success() {
        fail_setup(
            "`pip install -r tests/otlp/requirements.txt` failed",
            &format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        );
    }
    std::fs::write(tmp.join(".complete"), "").unwrap();
    // Another process may have won the race: keep whichever venv is complete.
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    // `bin/python` is a symlink and pyvenv.cfg sits beside `bin/`: a moved venv still
    // finds its packages when run through its python (not through script shebangs).
    assert!(python.exists(), "venv {} has no python", dir.display());
    python
}

fn export(python: &Path, protocol: &str, endpoint: &str, service: &str, node: &str, delta: bool) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otlp/export.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .args(["--protocol", protocol, "--endpoint", endpoint])
        .args(["--service", service, "--node", node, "--token", TOKEN])
        .args(["--seconds", "4"]);
    if delta {
        cmd.arg("--delta");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "export.py over {protocol} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn firing(v: &Vigil) -> Vec<(String, String)> {
    let a = v.json("/api/v1/alerts");
    let mut out: Vec<(String, String)> = a["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["state"] == "firing")
        .map(|x| {
            (
                x["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                x["labels"]["service"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn python_sdk_over_grpc_and_http_fires_the_rules() {
    let python = venv_python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/otel.yaml"), RULES).unwrap();
    std::fs::write(
        dir.join("vigil.yaml"),
        format!("engine:\n  lateness: 2s\n  idle_advance: 1s\notlp:\n  bearer_token: {TOKEN}\n"),
    )
    .unwrap();
    let (grpc, http) = (free_port(), free_port());
    let v = Vigil::start(
        dir,
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
            "--record",
            "rec",
        ],
    );
    v.wait_until(Duration::from_secs(10), "readyz", || {
        v.get("/readyz").0 == 200
    });

    export(
        &python,
        "grpc",
        &format!("127.0.0.1:{grpc}"),
        "py-grpc",
        "n1",
        false,
    );
    export(
        &python,
        "http",
        &format!("http://127.0.0.1:{http}/v1/metrics"),
        "py-http",
        "n2",
        true,
    );

    let mut want: Vec<(String, String)> =
        ["JobsRate", "LargeRequests", "QueueTooDeep", "SlowRequests"]
            .iter()
            .flat_map(|r| {
                ["py-grpc", "py-http"]
                    .iter()
                    .map(move |s| (r.to_string(), s.to_string()))
            })
            .collect();
    want.sort();
    let mut last = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        last = firing(&v);
        if want.iter().all(|w| last.contains(w)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, metrics) = v.get("/metrics");
    assert!(
        want.iter().all(|w| last.contains(w)),
        "firing: {last:?}\nwanted: {want:?}\n/metrics:\n{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("vigil_otlp") || l.starts_with("vigil_samples"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The node alias and the raw attribute both reached the alert's series.
    let alerts = v.json("/api/v1/alerts");
    let deep = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "QueueTooDeep" && a["labels"]["service"] == "py-grpc")
        .unwrap();
    assert_eq!(deep["labels"]["node"], "n1");

    for protocol in ["grpc", "http"] {
        let ok = v
            .metric(&format!(
                "vigil_otlp_requests_total{{protocol=\"{protocol}\",outcome=\"success\"}}"
            ))
            .unwrap_or(0.0);
        assert!(ok >= 2.0, "{protocol}: {ok} successful requests");
        let unauthorized = v
            .metric(&format!(
                "vigil_otlp_requests_total{{protocol=\"{protocol}\",outcome=\"unauthorized\"}}"
            ))
            .unwrap_or(-1.0);
        assert_eq!(unauthorized, 0.0, "{protocol}: the SDK sent the token");
    }
    assert!(v.metric("vigil_otlp_delta_series").unwrap_or(0.0) >= 1.0);

    // Everything mapped was recorded (the writer runs behind the engine: wait for it).
    v.wait_until(Duration::from_secs(10), "the recording to catch up", || {
        let mapped = v.metric("vigil_otlp_samples_total").unwrap_or(-1.0);
        mapped > 0.0 && v.metric("vigil_record_samples_total") == Some(mapped)
    });
    assert_eq!(
        v.metric("vigil_record_dropped_samples_total{reason=\"queue_full\"}"),
        Some(0.0)
    );
    let live = live_alerts(&v);
    let status = v.terminate();
    assert!(status.success(), "{status}");

    // The recording replays, through the same rules and the lateness it stores, to the
    // same alerts.
    let (files, leftovers) = recording_files(&dir.join("rec"));
    assert!(
        !files.is_empty() && leftovers.is_empty(),
        "{files:?} {leftovers:?}"
    );
    let (replayed, out) = replay_alerts(dir, &["--rules", "rules", "rec"]);
    assert!(
        live.iter().any(|a| a.0 == "JobsRate" && a.2 == "firing"),
        "{live:?}"
    );
    assert_eq!(replayed, live, "replay output:\n{out}");
}
