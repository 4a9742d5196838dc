//! The `vigil check` and `vigil test` commands through the real binary: exit codes, and
//! what a user sees on success and on each kind of failure.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use tempfile::TempDir;

const VALID: &str = r#"group: node
interval: 10s
rules:
  - name: NodeHot
    select: node_temp_celsius
    by: [node]
    detect:
      threshold: { above: 90 }
    for: 20s
    severity: critical
    annotations:
      summary: "node {{ $labels.node }} at {{ $value }} degrees"
    actions:
      - alert
      - isolate: { node: "{{ $labels.node }}" }
"#;

/// Line 8 misspells `threshold`.
const TYPO: &str = r#"group: node
interval: 10s
rules:
  - name: NodeHot
    select: node_temp_celsius
    by: [node]
    detect:
      thresold: { above: 90 }
"#;

/// A test of `VALID`: the node heats up at 40s, fires at 60s, is isolated.
fn test_file(rule_file: &str, exp_node: &str) -> String {
    format!(
        r#"rule_files: [{rule_file}]
tests:
  - name: node heats up
    interval: 10s
    input_series:
      - series: 'node_temp_celsius{{node="n1"}}'
        values: '50x3 95x6'
    alert_rule_test:
      - eval_time: 30s
        alertname: NodeHot
        exp_alerts: []
      - eval_time: 70s
        alertname: NodeHot
        exp_alerts:
          - exp_labels: {{ severity: critical, node: {exp_node} }}
            exp_annotations: {{ summary: "node {exp_node} at 95 degrees" }}
        exp_actions:
          - {{ action: isolate, node: {exp_node} }}
"#
    )
}

fn vigil(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run vigil")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A temporary directory holding `files` (name, content).
fn dir_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, content) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(path, content).expect("write");
    }
    dir
}

#[test]
fn check_valid_directory_exits_0_and_says_ok() {
    let dir = dir_with(&[
        ("rules/node.yaml", VALID),
        // Rule tests live next to the rules and are not rule files.
        (
            "rules/tests/node.test.yaml",
            &test_file("../node.yaml", "n1"),
        ),
    ]);
    let out = vigil(&["check", "rules"], dir.path());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("OK"), "{stdout}");
    assert!(
        stdout.contains("1 rules in 1 groups from 1 files"),
        "{stdout}"
    );
}

#[test]
fn check_typo_exits_1_with_file_line_column() {
    let dir = dir_with(&[("rules/node.yaml", TYPO)]);
    let out = vigil(&["check", "rules"], dir.path());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    let expected = format!("rules{}node.yaml:8:7: ", std::path::MAIN_SEPARATOR);
    assert!(first.starts_with(&expected), "{stderr}");
    assert!(first.contains("unknown field `thresold`"), "{stderr}");
    assert!(
        first.contains("`threshold`"),
        "the message lists the valid fields: {stderr}"
    );
    assert!(stderr.contains("1 error"), "{stderr}");
}

#[test]
fn check_reports_every_error_of_every_file() {
    let dir = dir_with(&[
        ("a.yaml", TYPO),
        (
            "b.yaml",
            "group: b\ninterval: 10s\nrules:\n  - name: X\n    select: 'x{'\n    detect: { threshold: { above: 1 } }\n  - name: Y\n    select: y\n    detect: { threshold: { above: 1 } }\n    for: 5mins\n",
        ),
    ]);
    let out = vigil(&["check", "a.yaml", "b.yaml"], dir.path());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    for expected in ["a.yaml:8:7: ", "b.yaml:5:5: ", "b.yaml:10:5: ", "3 errors"] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn check_missing_path_exits_1() {
    let dir = dir_with(&[]);
    let out = vigil(&["check", "nowhere"], dir.path());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("nowhere"), "{stderr}");
    assert!(stderr.contains("no such file or directory"), "{stderr}");
}

#[test]
fn test_passing_exits_0() {
    let dir = dir_with(&[
        ("rules/node.yaml", VALID),
        (
            "rules/tests/node.test.yaml",
            &test_file("../node.yaml", "n1"),
        ),
    ]);
    let out = vigil(&["test", "rules/tests/node.test.yaml"], dir.path());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("node.test.yaml: ok (3 checks)"), "{stdout}");
    assert!(
        stdout.contains("0 failed checks, 0 files failed"),
        "{stdout}"
    );
}

#[test]
fn test_failing_exits_1_with_a_diff() {
    let dir = dir_with(&[
        ("rules/node.yaml", VALID),
        // Expects node n2; the alert and the intent are for n1.
        (
            "rules/tests/node.test.yaml",
            &test_file("../node.yaml", "n2"),
        ),
    ]);
    let out = vigil(&["test", "rules/tests/node.test.yaml"], dir.path());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("node.test.yaml: FAILED"), "{stdout}");
    assert!(
        stdout.contains("test \"node heats up\", alertname NodeHot at 1m10s:"),
        "the failure says which test, rule and time: {stdout}"
    );
    // Expected and got, side by side.
    for expected in [
        r#"- expected firing: {alertname="NodeHot", node="n2", severity="critical"}"#,
        r#"+ got firing:      {alertname="NodeHot", node="n1", severity="critical"}"#,
        "- expected: isolate node=n2",
        "+ got:      isolate node=n1",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("2 failed checks, 1 files failed"),
        "{stdout}"
    );
}

#[test]
fn test_with_missing_rule_file_exits_1_and_names_it() {
    let dir = dir_with(&[("tests/node.test.yaml", &test_file("../missing.yaml", "n1"))]);
    let out = vigil(&["test", "tests/node.test.yaml"], dir.path());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("node.test.yaml: ERROR"), "{all}");
    assert!(all.contains("rule files do not load"), "{all}");
    assert!(
        all.contains("missing.yaml"),
        "the missing file is named: {all}"
    );
    assert!(all.contains("no such file or directory"), "{all}");
}

#[test]
fn test_with_broken_rule_file_shows_its_diagnostics() {
    let dir = dir_with(&[
        ("rules/node.yaml", TYPO),
        (
            "rules/tests/node.test.yaml",
            &test_file("../node.yaml", "n1"),
        ),
    ]);
    let out = vigil(&["test", "rules/tests/node.test.yaml"], dir.path());
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("node.yaml:8:7: "), "{stdout}");
    assert!(stdout.contains("unknown field `thresold`"), "{stdout}");
}

#[test]
fn help_lists_check_and_test() {
    let out = vigil(&["--help"], Path::new("."));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    for cmd in ["check", "test"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(cmd)),
            "`{cmd}` is not listed:\n{stdout}"
        );
    }
}

#[test]
fn no_arguments_is_a_usage_error() {
    let out = vigil(&["check"], Path::new("."));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Usage"), "{stderr}");
}
