//! `vigil replay`, `vigil record` and `vigil backtest` through the real binary, on the
//! bundled node-avalanche incident and on small generated recordings.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

const INCIDENT: &str = "examples/incidents/node-avalanche/recording.jsonl";
const EXPECT: &str = "examples/incidents/node-avalanche/expect.yaml";

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "vigil failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn replay_is_deterministic_and_finds_the_incident() {
    let a = stdout(&vigil(&[
        "replay", "--rules", "rules/", "--output", "json", INCIDENT,
    ]));
    let b = stdout(&vigil(&[
        "replay", "--rules", "rules/", "--output", "json", INCIDENT,
    ]));
    assert_eq!(a, b, "two runs over the same input give identical bytes");
    let lines: Vec<serde_json::Value> = a
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ts: Vec<i64> = lines.iter().map(|l| l["ts"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "event-time order");
    let isolate = lines
        .iter()
        .find(|l| l["type"] == "intent")
        .expect("an intent");
    assert_eq!(
        (
            isolate["action"].as_str(),
            isolate["node"].as_str(),
            isolate["rule"].as_str()
        ),
        (Some("isolate"), Some("ip-10-0-1-12"), Some("NodeAvalanche"))
    );
    assert!(lines.iter().any(|l| l["rule"] == "NodeHeartbeatMissing"
        && l["state"] == "firing"
        && l["labels"]["node"] == "ip-10-0-1-14"));
    let table = stdout(&vigil(&[
        "replay", "--rules", "rules/", "--output", "table", INCIDENT,
    ]));
    assert!(
        table.contains("INTENT") && table.contains("FIRING"),
        "{table}"
    );
}

#[test]
fn expect_gates_pass_and_fail() {
    let ok = vigil(&[
        "replay", "--rules", "rules/", "--output", "none", "--expect", EXPECT, INCIDENT,
    ]);
    let err = String::from_utf8_lossy(&ok.stderr).to_string();
    assert!(ok.status.success(), "{err}");
    assert!(
        err.contains("precision 1.000  recall 1.000") && err.contains("PASS"),
        "{err}"
    );
    assert!(
        err.contains("detected") && err.contains("NodeAvalanche"),
        "{err}"
    );
    // A window where nothing happens: the expected alert is missed, exit 1.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("expect.yaml");
    std::fs::write(&bad, "incidents:\n  - name: quiet\n    from: 2026-11-02T10:00:00Z\n    to: 2026-11-02T10:05:00Z\n    alerts:\n      - rule: NodeAvalanche\n").unwrap();
    let fail = vigil(&[
        "replay",
        "--rules",
        "rules/",
        "--output",
        "none",
        "--expect",
        bad.to_str().unwrap(),
        INCIDENT,
    ]);
    let err = String::from_utf8_lossy(&fail.stderr).to_string();
    assert_eq!(fail.status.code(), Some(1), "{err}");
    assert!(
        err.contains("MISSED") && err.contains("false positive") && err.contains("FAIL"),
        "{err}"
    );
}

#[test]
fn checkpoint_and_resume_mid_replay_give_the_same_output() {
    let full = stdout(&vigil(&[
        "replay", "--rules", "rules/", "--output", "json", INCIDENT,
    ]));
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp.bin");
    let cp = cp.to_str().unwrap();
    let first = stdout(&vigil(&[
        "replay",
        "--rules",
        "rules/",
        "--output",
        "json",
        "--stop-after",
        "1700",
        "--checkpoint",
        cp,
        INCIDENT,
    ]));
    let rest = stdout(&vigil(&[
        "replay", "--rules", "rules/", "--output", "json", "--resume", cp, INCIDENT,
    ]));
    assert!(
        !first.is_empty() && !rest.is_empty(),
        "the split falls inside the incident"
    );
    assert_eq!(format!("{first}{rest}"), full);
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn gz(path: &Path, text: &str) {
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap();
}

const RULE: &str = "group: g\ninterval: 10s\nrules:\n  - name: Hot\n    select: temp\n    by: [node]\n    detect: { threshold: { above: 50 } }\n";

fn sample(ts: i64, node: &str, v: f64) -> String {
    format!(
        "{{\"ts\":{ts},\"metric\":\"temp\",\"labels\":{{\"node\":\"{node}\"}},\"value\":{v}}}\n"
    )
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("rules.yaml"), RULE);
    let rules = dir.path().join("rules.yaml");
    (dir, rules)
}

#[test]
fn readers_merge_compressed_inputs_and_report_bad_lines() {
    let (dir, rules) = setup();
    let d = dir.path();
    let a: String = (0..10)
        .map(|i| sample(i * 10_000, "a", if i >= 5 { 60.0 } else { 20.0 }))
        .collect();
    let b: String = (0..10)
        .map(|i| sample(i * 10_000 + 5_000, "b", 20.0))
        .collect();
    gz(&d.join("a.jsonl.gz"), &a);
    std::fs::write(
        d.join("b.jsonl.zst"),
        zstd::encode_all(b.as_bytes(), 3).unwrap(),
    )
    .unwrap();
    let out = stdout(&vigil(&[
        "replay",
        "--rules",
        rules.to_str().unwrap(),
        "--output",
        "json",
        d.join("a.jsonl.gz").to_str().unwrap(),
        d.join("b.jsonl.zst").to_str().unwrap(),
    ]));
    assert!(
        out.contains("\"state\":\"firing\"") && out.contains("\"node\":\"a\""),
        "{out}"
    );
    let plain = stdout(&vigil(&[
        "replay",
        "--rules",
        rules.to_str().unwrap(),
        "--output",
        "json",
        d.to_str().unwrap(),
    ]));
    assert_eq!(plain, out, "a directory replays its recordings merged");

    write(
        &d.join("bad.jsonl"),
        &format!(
            "{}{{\"ts\":1,\"metric\":\"temp\"}}\n{}",
            sample(0, "c", 1.0),
            sample(20_000, "c", 99.0)
        ),
    );
    let o = vigil(&[
        "replay",
        "--rules",
        rules.to_str().unwrap(),
        d.join("bad.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.jsonl:2: missing field `value`"), "{err}");
    let o = vigil(&[
        "replay",
        "--rules",
        rules.to_str().unwrap(),
        "--skip-bad",
        "--output",
        "json",
        d.join("bad.jsonl").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("1 bad lines skipped"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"node\":\"c\""));
}

#[test]
fn record_to_parquet_replays_identically_and_where_filters() {
    let (dir, rules) = setup();
    let d = dir.path();
    let text: String = (0..30)
        .flat_map(|i| {
            [
                sample(i * 10_000, "a", if i % 7 == 6 { 70.0 } else { 20.0 }),
                sample(i * 10_000, "b", 55.0),
            ]
        })
        .collect();
    write(&d.join("in.jsonl"), &text);
    let rec = d.join("rec");
    let o = vigil(&[
        "record",
        "--out",
        rec.to_str().unwrap(),
        "--max-age",
        "2m",
        d.join("in.jsonl").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files: Vec<_> = std::fs::read_dir(&rec)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert_eq!(
        files.len(),
        3,
        "rotated every 2 minutes of event time: {files:?}"
    );
    assert!(files
        .iter()
        .all(|f| f.extension().is_some_and(|e| e == "parquet")));
    let r = rules.to_str().unwrap();
    let from_jsonl = stdout(&vigil(&[
        "replay",
        "--rules",
        r,
        "--output",
        "json",
        d.join("in.jsonl").to_str().unwrap(),
    ]));
    let from_parquet = stdout(&vigil(&[
        "replay",
        "--rules",
        r,
        "--output",
        "json",
        rec.to_str().unwrap(),
    ]));
    assert_eq!(from_parquet, from_jsonl);
    let only_a = stdout(&vigil(&[
        "replay",
        "--rules",
        r,
        "--output",
        "json",
        "--where",
        "labels['node'] = 'a'",
        rec.to_str().unwrap(),
    ]));
    assert!(
        only_a.contains("\"node\":\"a\"") && !only_a.contains("\"node\":\"b\""),
        "{only_a}"
    );
    let late = stdout(&vigil(&[
        "replay",
        "--rules",
        r,
        "--output",
        "json",
        "--from",
        "200000",
        d.join("in.jsonl").to_str().unwrap(),
    ]));
    assert!(late.lines().all(
        |l| serde_json::from_str::<serde_json::Value>(l).unwrap()["ts"]
            .as_i64()
            .unwrap()
            >= 200_000
    ));
    let bad = vigil(&[
        "replay",
        "--rules",
        r,
        "--where",
        "labels[ = 1",
        d.join("in.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("columns: ts, metric"));
}

#[test]
fn backtest_prints_one_row_per_combination() {
    let out = stdout(&vigil(&[
        "backtest",
        "--rules",
        "rules/",
        "--set",
        "detect.zscore.threshold=2.5,3,3.5",
        "--expect",
        EXPECT,
        INCIDENT,
    ]));
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows[0].starts_with("detect.zscore.threshold=2.5"), "{out}");
    assert!(out.lines().next().unwrap().contains("precision"));
}

/// A recording made by `vigil run` replays with the lateness the live run had (stored
/// in its files) unless `--lateness` says otherwise.
#[test]
fn replay_takes_the_live_runs_lateness_from_the_recording() {
    use vigil_replay::columnar::{Recorder, Rotation};
    use vigil_replay::source::CHUNK_ROWS;

    let (dir, rules) = setup();
    let rec = dir.path().join("rec");
    let series = |node: &str| {
        vigil_engine::Labels::from([
            ("__name__".to_string(), "temp".to_string()),
            ("node".to_string(), node.to_string()),
        ])
    };
    let (a, b) = (series("a"), series("b"));
    let mut r = Recorder::new(&rec, Rotation::default())
        .unwrap()
        .with_lateness(30_000);
    // A first chunk of rows in order, then, in the next chunk, one sample 20 s older
    // than the newest: on time with the live run's 30 s, late with none.
    let n = CHUNK_ROWS as i64 + 100;
    for i in 0..n {
        r.record(&a, i * 10, 20.0).unwrap();
    }
    r.record(&b, (n - 1) * 10 - 20_000, 60.0).unwrap();
    r.finish().unwrap();

    let run = |extra: &[&str]| {
        let mut args = vec!["replay", "--rules", rules.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend(["--output", "json", rec.to_str().unwrap()]);
        let o = vigil(&args);
        (stdout(&o), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (out, err) = run(&[]);
    assert!(err.contains("lateness 30s from the recording"), "{err}");
    assert!(err.contains("dropped: 0 late"), "{err}");
    assert!(out.contains("\"Hot\""), "the on-time sample fires:\n{out}");
    let (out, err) = run(&["--lateness", "0s"]);
    assert!(!err.contains("from the recording"), "{err}");
    assert!(err.contains("dropped: 1 late"), "{err}");
    assert!(!out.contains("\"Hot\""), "{out}");
}
