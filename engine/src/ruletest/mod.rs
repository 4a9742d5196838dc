//! Rule unit tests in the format of `promtool test rules`, plus `exp_actions`.
//!
//! Each test group builds a fresh evaluator over its `rule_files`, expands its input
//! series into samples every `interval`, and at each `eval_time` (in time order)
//! evaluates everything up to and including that time, then compares the firing alerts
//! of `alertname` with `exp_alerts` and, when given, the intents the rule emitted so far
//! with `exp_actions`.

pub mod notation;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::duration::Duration;
use crate::eval::{Evaluator, EvaluatorConfig, Event};
use crate::labels::{Labels, METRIC_NAME};
use crate::lifecycle::AlertState;
use crate::rule::RuleSet;
use crate::selector::{MatchOp, Selector};
use crate::series::{Sample, STALE_MARKER};
use notation::Value;

/// A rule test file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Rule files, relative to the test file.
    pub rule_files: Vec<String>,
    /// Accepted for promtool compatibility; the engine evaluates on every sample and at
    /// every group interval, so it only sets the default `interval` of tests.
    #[serde(default)]
    pub evaluation_interval: Option<Duration>,
    /// Test groups.
    pub tests: Vec<TestGroup>,
}

/// One test group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestGroup {
    /// Name shown in reports.
    #[serde(default)]
    pub name: Option<String>,
    /// Spacing of input values (default `evaluation_interval`, else 1m).
    #[serde(default)]
    pub interval: Option<Duration>,
    /// Input series.
    pub input_series: Vec<InputSeries>,
    /// Expectations.
    #[serde(default)]
    pub alert_rule_test: Vec<AlertTest>,
}

/// One input series.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSeries {
    /// `metric{label="value", ...}`.
    pub series: String,
    /// Expanding notation.
    pub values: String,
}

/// Expected firing alerts (and intents) of one rule at one time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTest {
    /// Time since the start of the test.
    pub eval_time: Duration,
    /// Rule name.
    pub alertname: String,
    /// Expected firing alerts.
    #[serde(default)]
    pub exp_alerts: Vec<ExpAlert>,
    /// Expected intents emitted by the rule up to `eval_time`.
    #[serde(default)]
    pub exp_actions: Option<Vec<ExpAction>>,
}

/// One expected alert.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpAlert {
    /// Labels, `alertname` optional.
    #[serde(default)]
    pub exp_labels: BTreeMap<String, String>,
    /// Annotations that must match; annotations not listed are not compared.
    #[serde(default)]
    pub exp_annotations: Option<BTreeMap<String, String>>,
}

/// One expected intent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpAction {
    /// isolate, evict or drain.
    pub action: String,
    /// Target node.
    pub node: String,
    /// Pod namespace (evict).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Pod (evict).
    #[serde(default)]
    pub pod: Option<String>,
}

/// Outcome of one test file.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Expectations checked.
    pub checks: usize,
    /// Failed expectations, each a readable diff.
    pub failures: Vec<String>,
}

/// A test file that could not run (unreadable, invalid YAML, bad rules or series).
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct TestError {
    /// The test file.
    pub file: String,
    /// What went wrong.
    pub message: String,
}

/// Parses `metric{a="b"}` into labels (equality matchers only).
pub fn parse_series(s: &str) -> Result<Labels, String> {
    let sel = Selector::parse(s).map_err(|e| e.to_string())?;
    let mut labels = Labels::new();
    for m in &sel.matchers {
        if m.op != MatchOp::Equal {
            return Err(format!("series {s:?}: input series take only `=` matchers"));
        }
        labels.insert(m.name.clone(), m.value.clone());
    }
    if !labels.contains_key(METRIC_NAME) {
        return Err(format!("series {s:?} has no metric name"));
    }
    Ok(labels)
}

/// Runs one test file.
pub fn run_file(path: &Path) -> Result<Report, TestError> {
    let err = |message: String| TestError {
        file: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let file: TestFile = serde_yaml::from_str(&text).map_err(|e| {
        let pos = e
            .location()
            .map(|l| format!("{}:{}: ", l.line(), l.column()))
            .unwrap_or_default();
        err(format!("{pos}{e}"))
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let rule_paths: Vec<PathBuf> = file.rule_files.iter().map(|f| dir.join(f)).collect();
    let rules = Arc::new(
        RuleSet::load(&rule_paths).map_err(|e| err(format!("rule files do not load:\n{e}")))?,
    );
    let mut report = Report::default();
    for (gi, group) in file.tests.iter().enumerate() {
        let interval = group
            .interval
            .or(file.evaluation_interval)
            .unwrap_or(Duration::from_secs(60));
        let name = group.name.clone().unwrap_or_else(|| format!("tests[{gi}]"));
        run_group(&rules, group, interval, &name, &mut report)
            .map_err(|m| err(format!("test {name:?}: {m}")))?;
    }
    Ok(report)
}

fn run_group(
    rules: &Arc<RuleSet>,
    group: &TestGroup,
    interval: Duration,
    name: &str,
    report: &mut Report,
) -> Result<(), String> {
    if interval.is_zero() {
        return Err("interval must be positive".into());
    }
    for t in &group.alert_rule_test {
        if rules.rule(&t.alertname).is_none() {
            return Err(format!(
                "alertname {:?} is not a rule in rule_files",
                t.alertname
            ));
        }
    }
    let mut ev = Evaluator::new(Arc::clone(rules), EvaluatorConfig::default());
    // Samples carry the index of their input series; ids are interned just before each
    // batch is ingested, as a live source does.
    let mut series = Vec::new();
    let mut samples = Vec::new();
    for (idx, s) in group.input_series.iter().enumerate() {
        series.push(parse_series(&s.series)?);
        for (i, v) in notation::expand(&s.values)?.into_iter().enumerate() {
            let ts = i as i64 * interval.as_millis();
            let series = idx as u32;
            match v {
                Value::Missing => {}
                Value::Stale => samples.push(Sample {
                    series,
                    ts,
                    value: STALE_MARKER,
                }),
                Value::Sample(value) => samples.push(Sample { series, ts, value }),
            }
        }
    }
    samples.sort_by_key(|s| s.ts);
    let mut tests: Vec<&AlertTest> = group.alert_rule_test.iter().collect();
    tests.sort_by_key(|t| t.eval_time);
    let mut fed = 0;
    let mut events: Vec<Event> = Vec::new();
    for t in tests {
        let at = t.eval_time.as_millis();
        let upto = fed + samples[fed..].partition_point(|s| s.ts <= at);
        let batch: Vec<Sample> = samples[fed..upto]
            .iter()
            .map(|s| Sample {
                series: ev.intern(&series[s.series as usize]),
                ..*s
            })
            .collect();
        ev.ingest(&batch);
        fed = upto;
        ev.advance_watermark(at + 1);
        events.extend(ev.drain_events());
        report.checks += 1;
        let head = format!(
            "test {name:?}, alertname {} at {}:",
            t.alertname, t.eval_time
        );
        let got: Vec<(Labels, Labels)> = ev
            .alerts()
            .into_iter()
            .filter(|a| *a.rule == *t.alertname && a.state == AlertState::Firing)
            .map(|a| (a.labels, a.annotations))
            .collect();
        if let Some(diff) = diff_alerts(t, &got) {
            report.failures.push(format!("{head}\n{diff}"));
        }
        if let Some(exp) = &t.exp_actions {
            report.checks += 1;
            let mut got: Vec<ExpAction> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Intent(i) if *i.rule == *t.alertname => Some(ExpAction {
                        action: i.action.as_str().to_string(),
                        node: i.node.clone(),
                        namespace: i.namespace.clone(),
                        pod: i.pod.clone(),
                    }),
                    _ => None,
                })
                .collect();
            let mut exp = exp.clone();
            got.sort();
            exp.sort();
            if got != exp {
                let mut msg = format!("{head} actions differ\n");
                for e in exp.iter().filter(|e| !got.contains(e)) {
                    let _ = writeln!(msg, "  - expected: {}", show_action(e));
                }
                for g in got.iter().filter(|g| !exp.contains(g)) {
                    let _ = writeln!(msg, "  + got:      {}", show_action(g));
                }
                if exp.iter().all(|e| got.contains(e)) && got.iter().all(|g| exp.contains(g)) {
                    let _ = writeln!(msg, "  expected {} intents, got {}", exp.len(), got.len());
                }
                report.failures.push(msg);
            }
        }
    }
    Ok(())
}

fn show_action(a: &ExpAction) -> String {
    let mut s = format!("{} node={}", a.action, a.node);
    if let (Some(ns), Some(pod)) = (&a.namespace, &a.pod) {
        let _ = write!(s, " pod={ns}/{pod}");
    }
    s
}

fn show_labels(l: &Labels) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Matches expected against firing alerts; None when they agree.
fn diff_alerts(t: &AlertTest, got: &[(Labels, Labels)]) -> Option<String> {
    let mut unmatched: Vec<&(Labels, Labels)> = got.iter().collect();
    let mut msg = String::new();
    for exp in &t.exp_alerts {
        let mut labels: Labels = exp.exp_labels.clone().into_iter().collect();
        labels.insert("alertname".into(), t.alertname.clone());
        let pos = unmatched.iter().position(|(l, a)| {
            *l == labels
                && exp
                    .exp_annotations
                    .as_ref()
                    .is_none_or(|ea| ea.iter().all(|(k, v)| a.get(k) == Some(v)))
        });
        match pos {
            Some(p) => {
                unmatched.remove(p);
            }
            None => {
                let _ = writeln!(msg, "  - expected firing: {}", show_labels(&labels));
                if let Some(ea) = &exp.exp_annotations {
                    let ea: Labels = ea.clone().into_iter().collect();
                    let _ = writeln!(msg, "      annotations:   {}", show_labels(&ea));
                }
                if let Some((_, a)) = got.iter().find(|(l, _)| *l == labels) {
                    let _ = writeln!(msg, "      got annotations: {}", show_labels(a));
                }
            }
        }
    }
    for (l, a) in &unmatched {
        if t.exp_alerts.iter().any(|e| {
            let mut el: Labels = e.exp_labels.clone().into_iter().collect();
            el.insert("alertname".into(), t.alertname.clone());
            el == *l
        }) {
            continue;
        }
        let _ = writeln!(msg, "  + got firing:      {}", show_labels(l));
        let _ = writeln!(msg, "      annotations:   {}", show_labels(a));
    }
    if msg.is_empty() {
        None
    } else {
        Some(msg)
    }
}
