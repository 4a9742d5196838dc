//! Scoring a replay against labelled incidents (`--expect FILE`): per incident,
//! whether each expected alert fired inside its window and how late; every other
//! firing alert is a false positive; precision and recall over the whole run; and the
//! action intents each incident expects (optionally forbidding any others).
//!
//! ```yaml
//! incidents:
//!   - name: node ip-10-0-1-12 saturates
//!     from: 2026-11-02T10:20:00Z
//!     to: 2026-11-02T10:35:00Z
//!     alerts:
//!       - rule: NodeAvalanche
//!         labels: { node: ip-10-0-1-12 }   # a subset of the alert's labels
//!     actions:
//!       - { action: isolate, node: ip-10-0-1-12 }
//! forbid_other_actions: true      # any intent outside the incidents' expectations fails
//! min_precision: 0.5              # optional gates
//! min_recall: 1.0
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;
use vigil_engine::eval::Event;
use vigil_engine::lifecycle::AlertState;

use crate::jsonl::parse_rfc3339;

/// The expectations file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Labelled incidents.
    pub incidents: Vec<Incident>,
    /// Fail when an intent matches no incident's expected actions (default false).
    #[serde(default)]
    pub forbid_other_actions: bool,
    /// Fail below this precision (default none).
    #[serde(default)]
    pub min_precision: Option<f64>,
    /// Fail below this recall (default: every expected alert must fire, 1.0).
    #[serde(default)]
    pub min_recall: Option<f64>,
}

/// One incident window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// Name shown in reports.
    pub name: String,
    /// Window start (RFC 3339 or epoch ms).
    pub from: TimeSpec,
    /// Window end.
    pub to: TimeSpec,
    /// Alerts that must fire inside the window.
    #[serde(default)]
    pub alerts: Vec<ExpectedAlert>,
    /// Intents that must be asked for inside the window.
    #[serde(default)]
    pub actions: Vec<ExpectedAction>,
}

/// A time in an expectations file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimeSpec {
    /// Epoch milliseconds.
    Millis(i64),
    /// RFC 3339.
    Text(String),
}

impl TimeSpec {
    fn ms(&self) -> Result<i64, String> {
        match self {
            TimeSpec::Millis(m) => Ok(*m),
            TimeSpec::Text(s) => parse_rfc3339(s),
        }
    }
}

/// An alert expected to fire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAlert {
    /// Rule name.
    pub rule: String,
    /// Labels the alert must carry (a subset).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// An intent expected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAction {
    /// isolate, evict or drain.
    pub action: String,
    /// Target node.
    pub node: String,
}

impl Expectations {
    /// Loads and checks an expectations file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let e: Expectations =
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for i in &e.incidents {
            let (from, to) = (i.from.ms(), i.to.ms());
            match (from, to) {
                (Ok(f), Ok(t)) if f < t => {}
                (Ok(_), Ok(_)) => {
                    return Err(format!(
                        "{}: incident {:?}: from must be before to",
                        path.display(),
                        i.name
                    ))
                }
                (Err(e), _) | (_, Err(e)) => {
                    return Err(format!("{}: incident {:?}: {e}", path.display(), i.name))
                }
            }
        }
        Ok(e)
    }
}

/// Outcome of one expected alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertOutcome {
    /// Incident name.
    pub incident: String,
    /// Rule.
    pub rule: String,
    /// Expected labels.
    pub labels: BTreeMap<String, String>,
    /// Delay from the window start to the first firing, ms; None = missed.
    pub delay_ms: Option<i64>,
}

/// Scores of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Each expected alert.
    pub alerts: Vec<AlertOutcome>,
    /// Firing alerts matching no expectation: (ts, rule, labels).
    pub false_positives: Vec<(i64, String, BTreeMap<String, String>)>,
    /// Firing alerts that matched an expectation.
    pub true_positives: usize,
    /// Expected actions not asked for: (incident, action, node).
    pub missing_actions: Vec<(String, String, String)>,
    /// Intents matching no expectation: (ts, rule, action, node).
    pub unexpected_actions: Vec<(i64, String, String, String)>,
    /// TP / (TP + FP); 1 when nothing fired.
    pub precision: f64,
    /// Detected expected alerts / expected alerts; 1 when none expected.
    pub recall: f64,
    /// Whether every gate passed.
    pub passed: bool,
}

fn subset(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

impl Score {
    /// Scores `events` (in event-time order) against `exp`.
    pub fn compute(exp: &Expectations, events: &[Event]) -> Score {
        let windows: Vec<(i64, i64)> = exp
            .incidents
            .iter()
            .map(|i| (i.from.ms().unwrap_or(0), i.to.ms().unwrap_or(0)))
            .collect();
        let mut alerts = Vec::new();
        for (i, inc) in exp.incidents.iter().enumerate() {
            let (from, to) = windows[i];
            for a in &inc.alerts {
                let first = events.iter().find_map(|e| match e {
                    Event::Alert(x)
                        if x.state == AlertState::Firing
                            && *x.rule == *a.rule
                            && x.ts >= from
                            && x.ts <= to
                            && subset(&a.labels, &x.labels) =>
                    {
                        Some(x.ts)
                    }
                    _ => None,
                });
                alerts.push(AlertOutcome {
                    incident: inc.name.clone(),
                    rule: a.rule.clone(),
                    labels: a.labels.clone(),
                    delay_ms: first.map(|t| t - from),
                });
            }
        }
        let (mut tp, mut fps) = (0, Vec::new());
        for e in events {
            let Event::Alert(x) = e else { continue };
            if x.state != AlertState::Firing {
                continue;
            }
            let expected = exp
                .incidents
                .iter()
                .zip(&windows)
                .any(|(inc, &(from, to))| {
                    x.ts >= from
                        && x.ts <= to
                        && inc
                            .alerts
                            .iter()
                            .any(|a| *a.rule == *x.rule && subset(&a.labels, &x.labels))
                });
            if expected {
                tp += 1;
            } else {
                fps.push((x.ts, x.rule.to_string(), x.labels.clone()));
            }
        }
        let mut missing_actions = Vec::new();
        for (inc, &(from, to)) in exp.incidents.iter().zip(&windows) {
            for a in &inc.actions {
                let found = events.iter().any(|e| matches!(e, Event::Intent(i) if i.action.as_str() == a.action && i.node == a.node && i.ts >= from && i.ts <= to));
                if !found {
                    missing_actions.push((inc.name.clone(), a.action.clone(), a.node.clone()));
                }
            }
        }
        let unexpected_actions: Vec<(i64, String, String, String)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Intent(i) => {
                    let ok = exp
                        .incidents
                        .iter()
                        .zip(&windows)
                        .any(|(inc, &(from, to))| {
                            i.ts >= from
                                && i.ts <= to
                                && inc
                                    .actions
                                    .iter()
                                    .any(|a| a.action == i.action.as_str() && a.node == i.node)
                        });
                    (!ok).then(|| {
                        (
                            i.ts,
                            i.rule.to_string(),
                            i.action.as_str().to_string(),
                            i.node.clone(),
                        )
                    })
                }
                Event::Alert(_) => None,
            })
            .collect();
        let precision = if tp + fps.len() == 0 {
            1.0
        } else {
            tp as f64 / (tp + fps.len()) as f64
        };
        let detected = alerts.iter().filter(|a| a.delay_ms.is_some()).count();
        let recall = if alerts.is_empty() {
            1.0
        } else {
            detected as f64 / alerts.len() as f64
        };
        let passed = recall >= exp.min_recall.unwrap_or(1.0)
            && exp.min_precision.is_none_or(|p| precision >= p)
            && missing_actions.is_empty()
            && (!exp.forbid_other_actions || unexpected_actions.is_empty());
        Score {
            alerts,
            false_positives: fps,
            true_positives: tp,
            missing_actions,
            unexpected_actions,
            precision,
            recall,
            passed,
        }
    }

    /// Median detection delay of detected alerts, ms.
    pub fn median_delay_ms(&self) -> Option<i64> {
        let mut d: Vec<i64> = self.alerts.iter().filter_map(|a| a.delay_ms).collect();
        d.sort_unstable();
        (!d.is_empty()).then(|| d[d.len() / 2])
    }

    /// A readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for a in &self.alerts {
            let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            match a.delay_ms {
                Some(d) => {
                    let _ = writeln!(
                        s,
                        "  detected  {:<30} {} {{{}}} after {}s",
                        a.incident,
                        a.rule,
                        labels.join(", "),
                        d as f64 / 1000.0
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "  MISSED    {:<30} {} {{{}}}",
                        a.incident,
                        a.rule,
                        labels.join(", ")
                    );
                }
            }
        }
        for (inc, action, node) in &self.missing_actions {
            let _ = writeln!(s, "  MISSING ACTION  {inc}: {action} node={node}");
        }
        for (ts, rule, action, node) in &self.unexpected_actions {
            let _ = writeln!(
                s,
                "  unexpected action at {}: {rule} asked to {action} node={node}",
                crate::output::time(*ts)
            );
        }
        for (ts, rule, labels) in &self.false_positives {
            let l: Vec<String> = labels
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity"))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(
                s,
                "  false positive at {}: {rule} {{{}}}",
                crate::output::time(*ts),
                l.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "precision {:.3}  recall {:.3}  true positives {}  false positives {}  median delay {}  => {}",
            self.precision,
            self.recall,
            self.true_positives,
            self.false_positives.len(),
            self.median_delay_ms().map_or("-".into(), |d| format!("{}s", d as f64 / 1000.0)),
            if self.passed { "PASS" } else { "FAIL" }
        );
        s
    }
}
