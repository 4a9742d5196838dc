//! The HTML report of a small generated recording: self-contained (no network
//! reference), one chart per fired series with the detector band and the firing span,
//! intents marked, the per-rule cap, label text escaped, the `--expect` score table,
//! a series whose state expired still charted, and the same bytes on every build.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vigil_engine::rule::Source;
use vigil_engine::{Event, RuleSet};
use vigil_replay::expect::Expectations;
use vigil_replay::{replay, Options};

const T0: i64 = 1_700_000_000_000;
const STEP: i64 = 10_000;
const SCRIPT: &str = "<script>alert(1)</script>";

const RULES: &str = r#"group: report-test
interval: 10s
rules:
  - name: Spike
    select: 'cpu'
    detect:
      zscore: { window: 5m, threshold: 3, min_samples: 10, direction: up }
    for: 10s
    annotations:
      summary: "cpu of {{ $labels.node }} spiked to {{ $value }}"
    actions:
      - alert
      - isolate: { node: "{{ $labels.node }}" }
  - name: Many
    select: 'many'
    detect:
      threshold: { above: 1000 }
"#;

fn line(out: &mut String, i: i64, metric: &str, labels: &[(&str, &str)], value: f64) {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let _ = writeln!(
        out,
        "{}",
        serde_json::json!({"ts": T0 + i * STEP, "metric": metric, "labels": labels, "value": value})
    );
}

/// 20 minutes at 10 s: cpu spikes on n1 (i = 60..65), on a node whose name is a
/// script tag (i = 90..95) and on "gone" (i = 35..40), which then goes silent at
/// i = 50 and expires; n3 never spikes; 14 `many` series cross a threshold.
fn recording(dir: &Path) -> PathBuf {
    let mut s = String::new();
    for i in 0..120i64 {
        let base = 10.0 + ((i * 7) % 5) as f64 * 0.1;
        let spike = |from: i64| {
            if (from..from + 5).contains(&i) {
                50.0 + 10.0 * (i - from) as f64
            } else {
                base
            }
        };
        line(&mut s, i, "cpu", &[("node", "n1")], spike(60));
        line(&mut s, i, "cpu", &[("node", SCRIPT)], spike(90));
        line(&mut s, i, "cpu", &[("node", "n3")], base);
        if i < 50 {
            line(&mut s, i, "cpu", &[("node", "gone")], spike(35));
        }
        if (100..110).contains(&i) {
            for k in 0..14 {
                line(&mut s, i, "many", &[("i", &format!("{k:02}"))], 2000.0);
            }
        }
    }
    let p = dir.join("rec.jsonl");
    std::fs::write(&p, s).unwrap();
    p
}

fn rules() -> Arc<RuleSet> {
    Arc::new(
        RuleSet::from_sources(&[Source {
            name: "report-test.yaml".into(),
            text: RULES.into(),
        }])
        .unwrap(),
    )
}

fn expectations(dir: &Path) -> Expectations {
    let p = dir.join("expect.yaml");
    std::fs::write(
        &p,
        format!(
            "incidents:\n  - name: n1 spikes\n    from: {}\n    to: {}\n    alerts:\n      - rule: Spike\n        labels: {{ node: n1 }}\n    actions:\n      - {{ action: isolate, node: n1 }}\n  - name: n3 never spikes\n    from: {}\n    to: {}\n    alerts:\n      - rule: Spike\n        labels: {{ node: n3 }}\n",
            T0 + 55 * STEP,
            T0 + 70 * STEP,
            T0,
            T0 + 119 * STEP
        ),
    )
    .unwrap();
    Expectations::load(&p).unwrap()
}

/// The `<svg>...</svg>` elements of the page, each with the `<h3>` before it.
fn charts(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<svg") {
        let head = &rest[..start];
        let h3 = head
            .rfind("<h3>")
            .map(|i| head[i..].to_string())
            .unwrap_or_default();
        let end = rest[start..].find("</svg>").expect("closed svg") + start + 6;
        out.push((h3, rest[start..end].to_string()));
        rest = &rest[end..];
    }
    out
}

#[test]
fn report_is_self_contained_escaped_complete_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let input = vec![recording(dir.path())];
    let rules = rules();
    let opts = Options::default();
    let mut events: Vec<Event> = Vec::new();
    replay(
        &input,
        Arc::clone(&rules),
        &opts,
        &mut |e| events.push(e.clone()),
        &mut |_| {},
    )
    .unwrap();
    let exp = expectations(dir.path());

    let html = vigil_replay::report::build(&input, Arc::clone(&rules), &opts, &events, Some(&exp))
        .unwrap();
    let again = vigil_replay::report::build(&input, Arc::clone(&rules), &opts, &events, Some(&exp))
        .unwrap();
    assert_eq!(
        html.as_bytes(),
        again.as_bytes(),
        "two builds give the same bytes"
    );
    if let Some(p) = std::env::var_os("VIGIL_REPORT_TEST_OUT") {
        std::fs::write(p, &html).unwrap();
    }

    // Self-contained: nothing fetched, no scripts.
    assert!(html.starts_with("<!DOCTYPE html>"));
    for banned in [
        "http://", "https://", "<script", "<link", "@import", "url(", " src=", "//fonts",
    ] {
        assert!(!html.contains(banned), "the report contains {banned:?}");
    }
    // The label with a script tag is escaped, in headings and in the tables.
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains(SCRIPT));

    // Summary and the score table.
    assert!(html.contains("<h2 id=\"summary\">Summary</h2>"));
    assert!(html.contains(">Spike</a>") && html.contains(">Many</a>"));
    assert!(html.contains("isolate node=n1"));
    assert!(html.contains("<h2 id=\"score\">Expectations</h2>"));
    assert!(
        html.contains("<span class=\"bad\">FAIL</span>"),
        "n3 never fires: recall 0.5"
    );
    assert!(html.contains("detected") && html.contains("missed"));
    assert!(html.contains("recall <b>0.500</b>"));
    assert!(html.contains("False positives"));

    // One chart per fired series: Spike on n1, the script node and "gone"; Many capped
    // at 12 of its 14 series.
    let charts = charts(&html);
    assert_eq!(
        charts.len(),
        3 + vigil_replay::report::MAX_SERIES_PER_RULE,
        "{}",
        charts.len()
    );
    assert!(html.contains("14 series fired; charting the first 12"));
    for (h3, svg) in &charts {
        assert!(svg.contains("class=\"firing\""), "{h3}: no firing span");
        assert!(svg.contains("<polygon class=\"band\""), "{h3}: no band");
        assert!(svg.contains("class=\"signal\""), "{h3}: no signal");
    }
    let spike: Vec<&(String, String)> = charts
        .iter()
        .filter(|(h3, _)| h3.contains("node="))
        .collect();
    assert_eq!(spike.len(), 3);
    for (h3, svg) in &spike {
        assert!(
            svg.contains("class=\"pending\""),
            "{h3}: for: 10s gives a pending span"
        );
        assert!(
            svg.contains("<g class=\"intent\">"),
            "{h3}: isolate intent marked"
        );
    }
    // The threshold rule draws its threshold.
    assert!(charts
        .iter()
        .any(|(h3, svg)| h3.contains("i=") && svg.contains("class=\"threshold\"")));
    // "gone" expired after it went silent; its signal was recovered.
    let gone = spike
        .iter()
        .find(|(h3, _)| h3.contains("node=&quot;gone&quot;"))
        .expect("gone charted");
    let d = gone
        .1
        .split("class=\"signal\" d=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    // i = 0..50 were evaluated (the first is the state's birth).
    assert!(
        d.matches('L').count() >= 40,
        "the recovered signal has its points: {d}"
    );
    assert!(!html.contains("No signal was recorded"));

    // Without expectations: no score table, still deterministic.
    let plain =
        vigil_replay::report::build(&input, Arc::clone(&rules), &opts, &events, None).unwrap();
    assert!(!plain.contains("Expectations"));
    assert_eq!(
        plain,
        vigil_replay::report::build(&input, rules, &opts, &events, None).unwrap()
    );
}

#[test]
fn report_of_a_quiet_replay() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("quiet.jsonl");
    let mut s = String::new();
    for i in 0..30 {
        line(
            &mut s,
            i,
            "cpu",
            &[("node", "n1")],
            10.0 + (i % 3) as f64 * 0.1,
        );
    }
    std::fs::write(&p, s).unwrap();
    let html = vigil_replay::report::build(&[p], rules(), &Options::default(), &[], None).unwrap();
    assert!(html.contains("No rule fired."));
    assert!(!html.contains("<svg"));
}
