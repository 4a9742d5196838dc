//! The `--report FILE.html` of `vigil replay`: one self-contained HTML page (inline
//! CSS and SVG; no scripts, fonts or any other network reference), deterministic (the
//! same inputs and rules give the same bytes: no "generated at", stable orders, fixed
//! number formatting).
//!
//! At the top, a summary of the rules that fired (series, firing episodes, first
//! firing, intents) and, with `--expect`, the score table. Then, per fired rule and per
//! fired series (at most [`MAX_SERIES_PER_RULE`] a rule, the first to fire), a chart of
//! the signal the detector saw with its normal band (or threshold), the pending and
//! firing spans shaded and the intents marked.
//!
//! The events say when alerts changed state, not what the signal was, so the report
//! replays the inputs a second time with the fired series traced
//! ([`crate::driver::Options::trace`]): their every evaluation is kept from the
//! state's first sample. A state that expired (its series went silent) loses its
//! history; for those, a few more passes stop at the end of their earlier episodes to
//! recover it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use vigil_engine::detector::DetectorSpec;
use vigil_engine::eval::{Event, Intent, Point};
use vigil_engine::lifecycle::AlertState;
use vigil_engine::rule::{CompoundMode, Rule, RuleKind};
use vigil_engine::{Labels, RuleSet};

use crate::driver::{replay, Options};
use crate::expect::{Expectations, Score};

/// Series charted per rule; the rest are listed as capped.
pub const MAX_SERIES_PER_RULE: usize = 12;
/// Extra replay passes spent recovering the history of states that expired.
const MAX_RECOVERY_PASSES: usize = 4;
/// False positives listed in the score table.
const MAX_FALSE_POSITIVES: usize = 50;

/// Builds the report of a replay of `inputs` through `rules` with `opts` whose events
/// were `events` (in event-time order), scored against `expectations` if given.
/// Replays the inputs again (to trace the fired series), so it costs about one more
/// replay.
pub fn build(
    inputs: &[PathBuf],
    rules: Arc<RuleSet>,
    opts: &Options,
    events: &[Event],
    expectations: Option<&Expectations>,
) -> Result<String, String> {
    let alerts = collect(events);
    let fired = fired_by_rule(&alerts, &rules);
    let charted: Vec<(String, u64)> = fired
        .iter()
        .flat_map(|f| f.series.iter().take(MAX_SERIES_PER_RULE).cloned())
        .collect();
    let histories = if charted.is_empty() {
        Histories::default()
    } else {
        trace_histories(inputs, &rules, opts, &charted, &alerts)?
    };

    let mut h = String::with_capacity(64 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str("<title>Vigil replay report</title>\n<style>\n");
    h.push_str(CSS);
    h.push_str("</style>\n</head>\n<body>\n<h1>Vigil replay report</h1>\n");
    meta(&mut h, inputs, &rules, opts, events, &histories);
    summary_table(&mut h, &fired, &alerts, &rules);
    if let Some(exp) = expectations {
        score_table(&mut h, exp, events);
    }
    for (i, f) in fired.iter().enumerate() {
        rule_section(&mut h, i, f, &alerts, &rules, &histories, expectations);
    }
    h.push_str("</body>\n</html>\n");
    Ok(h)
}

/// One alert (rule, fingerprint) as the events tell it.
#[derive(Debug, Default)]
struct AlertLog<'a> {
    labels: Labels,
    /// (ts, state) transitions in order.
    changes: Vec<(i64, AlertState)>,
    intents: Vec<&'a Intent>,
    /// Annotations of the first firing transition.
    annotations: Labels,
}

impl AlertLog<'_> {
    fn first(&self, state: AlertState) -> Option<i64> {
        self.changes.iter().find(|c| c.1 == state).map(|c| c.0)
    }

    fn firing_episodes(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| c.1 == AlertState::Firing)
            .count()
    }

    /// (start, end, firing?) spans; `end` None while still open at the end.
    fn spans(&self) -> Vec<(i64, Option<i64>, bool)> {
        let mut out = Vec::new();
        let (mut pending, mut firing): (Option<i64>, Option<i64>) = (None, None);
        for &(ts, st) in &self.changes {
            match st {
                AlertState::Pending => {
                    pending.get_or_insert(ts);
                }
                AlertState::Firing => {
                    if let Some(p) = pending.take() {
                        out.push((p, Some(ts), false));
                    }
                    firing.get_or_insert(ts);
                }
                AlertState::Resolved | AlertState::Inactive => {
                    if let Some(p) = pending.take() {
                        out.push((p, Some(ts), false));
                    }
                    if let Some(f) = firing.take() {
                        out.push((f, Some(ts), true));
                    }
                }
            }
        }
        if let Some(p) = pending {
            out.push((p, None, false));
        }
        if let Some(f) = firing {
            out.push((f, None, true));
        }
        out
    }
}

type Alerts<'a> = BTreeMap<(String, u64), AlertLog<'a>>;

fn collect(events: &[Event]) -> Alerts<'_> {
    let mut out: Alerts<'_> = BTreeMap::new();
    for e in events {
        match e {
            Event::Alert(a) => {
                let log = out.entry((a.rule.to_string(), a.fingerprint)).or_default();
                if log.labels.is_empty() {
                    log.labels = a.labels.clone();
                }
                if a.state == AlertState::Firing && log.annotations.is_empty() {
                    log.annotations = a.annotations.clone();
                }
                log.changes.push((a.ts, a.state));
            }
            Event::Intent(i) => {
                let log = out.entry((i.rule.to_string(), i.fingerprint)).or_default();
                if log.labels.is_empty() {
                    log.labels = i.labels.clone();
                }
                log.intents.push(i);
            }
        }
    }
    out
}

/// A rule that fired and its fired series, first to fire first.
struct Fired {
    rule: String,
    first_firing: i64,
    series: Vec<(String, u64)>,
}

fn fired_by_rule(alerts: &Alerts<'_>, rules: &RuleSet) -> Vec<Fired> {
    // Series of a rule: first to fire first, then by labels (readable and stable).
    let mut by_rule: BTreeMap<&str, Vec<(i64, &Labels, u64)>> = BTreeMap::new();
    for ((rule, fp), log) in alerts {
        if let Some(t) = log.first(AlertState::Firing) {
            by_rule
                .entry(rule.as_str())
                .or_default()
                .push((t, &log.labels, *fp));
        }
    }
    let order = |name: &str| {
        rules
            .rules
            .iter()
            .position(|r| &*r.name == name)
            .unwrap_or(usize::MAX)
    };
    let mut out: Vec<Fired> = by_rule
        .into_iter()
        .map(|(rule, mut v)| {
            v.sort_unstable();
            Fired {
                rule: rule.to_string(),
                first_firing: v[0].0,
                series: v
                    .into_iter()
                    .map(|(_, _, fp)| (rule.to_string(), fp))
                    .collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (a.first_firing, order(&a.rule), &a.rule).cmp(&(b.first_firing, order(&b.rule), &b.rule))
    });
    out
}

/// Traced histories of the charted series.
#[derive(Debug, Default)]
struct Histories {
    points: BTreeMap<(String, u64), Vec<Point>>,
    /// Series whose history starts after their first transition (expired, not
    /// recovered): where it starts.
    incomplete: BTreeMap<(String, u64), i64>,
    /// Rows read by the tracing pass.
    rows: u64,
    passes: usize,
}

fn trace_pass(
    inputs: &[PathBuf],
    rules: &Arc<RuleSet>,
    base: &Options,
    trace: &[(String, u64)],
    to: Option<i64>,
) -> Result<(u64, vigil_engine::Evaluator), String> {
    static PASS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut o = base.clone();
    o.trace = trace.to_vec();
    o.engine.history_points = usize::MAX;
    if let Some(t) = to {
        o.to = Some(o.to.map_or(t, |x| x.min(t)));
    }
    // A run that stopped at a checkpoint is charted up to the same row, without
    // overwriting the user's checkpoint file.
    let scratch = base.checkpoint.as_ref().map(|(rows, _)| {
        let n = PASS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "vigil-report-{}-{n}.checkpoint",
            std::process::id()
        ));
        (*rows, p)
    });
    o.checkpoint.clone_from(&scratch);
    let r = replay(inputs, Arc::clone(rules), &o, &mut |_| {}, &mut |_| {});
    if let Some((_, p)) = &scratch {
        let _ = std::fs::remove_file(p);
    }
    let (summary, ev) = r.map_err(|e| format!("report: tracing replay: {e}"))?;
    Ok((summary.rows_read, ev))
}

fn trace_histories(
    inputs: &[PathBuf],
    rules: &Arc<RuleSet>,
    opts: &Options,
    charted: &[(String, u64)],
    alerts: &Alerts<'_>,
) -> Result<Histories, String> {
    let mut out = Histories::default();
    let (rows, ev) = trace_pass(inputs, rules, opts, charted, None)?;
    out.rows = rows;
    out.passes = 1;
    let absorb = |ev: &vigil_engine::Evaluator,
                  points: &mut BTreeMap<(String, u64), Vec<Point>>| {
        for key in charted {
            let Some(hist) = ev.series_history(&key.0, key.1) else {
                continue;
            };
            let have = points.entry(key.clone()).or_default();
            // Earlier lifetimes go before the recorded ones.
            let start = have.first().map_or(i64::MAX, |p| p.ts);
            let mut older: Vec<Point> = hist.points.into_iter().filter(|p| p.ts < start).collect();
            older.append(have);
            *have = older;
        }
    };
    absorb(&ev, &mut out.points);
    drop(ev);
    let start_of = |points: &BTreeMap<(String, u64), Vec<Point>>, key: &(String, u64)| {
        points
            .get(key)
            .and_then(|v| v.first())
            .map_or(i64::MAX, |p| p.ts)
    };
    // Cuts already replayed up to: just after the end of an episode (the resolving
    // evaluation included), else just before it (an expiry at a sweep that a sample at
    // the same time would run).
    let mut tried = std::collections::BTreeSet::new();
    for _ in 0..MAX_RECOVERY_PASSES {
        // The latest end of an episode before the recorded history of a series whose
        // first transition it does not reach: the state was alive then.
        let cut = charted
            .iter()
            .filter_map(|key| {
                let log = alerts.get(key)?;
                let start = start_of(&out.points, key);
                let first = log.changes.first()?.0;
                if first >= start {
                    return None;
                }
                let end = log
                    .changes
                    .iter()
                    .filter(|(ts, st)| {
                        *ts < start && matches!(st, AlertState::Resolved | AlertState::Inactive)
                    })
                    .map(|c| c.0)
                    .max()?;
                [end.saturating_add(1), end]
                    .into_iter()
                    .find(|c| !tried.contains(c))
            })
            .max();
        let Some(cut) = cut else { break };
        tried.insert(cut);
        let (_, ev) = trace_pass(inputs, rules, opts, charted, Some(cut))?;
        out.passes += 1;
        absorb(&ev, &mut out.points);
    }
    for key in charted {
        if let Some(first) = alerts.get(key).and_then(|l| l.changes.first()) {
            let start = start_of(&out.points, key);
            if first.0 < start {
                out.incomplete.insert(key.clone(), start);
            }
        }
    }
    Ok(out)
}

const CSS: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2330;margin:24px auto;max-width:1040px;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 6px;border-bottom:1px solid #d8dce6;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 4px;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.meta,.note{color:#5b6478}.note{font-size:13px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #d8dce6;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.ok{color:#1a7f37;font-weight:600}.bad{color:#c62828;font-weight:600}
.chart{width:100%;height:auto;display:block;border:1px solid #e3e6ee;border-radius:4px;background:#fff}
.chart text{font:11px system-ui,sans-serif;fill:#5b6478}
.legend{font-size:12px;color:#5b6478;margin:2px 0 0}
.sw{display:inline-block;width:14px;height:10px;margin:0 4px 0 12px;vertical-align:middle;border:1px solid #bbb}
.sw.signal{background:#1f4e9c;height:2px;border:0}.sw.band{background:#dbe4f3}.sw.pending{background:#fbe3b8}
.sw.firing{background:#f6c5c5}.sw.intent{background:#7b1fa2;width:3px;border:0}.sw.incident{background:#9ed3a8}
.sw.threshold{border:0;border-top:2px dashed #555;height:0}
";

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// `2026-11-02 10:20:00` (UTC).
fn when(ms: i64) -> String {
    let t = crate::output::time(ms);
    t.replacen('T', " ", 1).trim_end_matches('Z').to_string()
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn dur(ms: i64) -> String {
    vigil_engine::Duration::from_millis(ms.max(0)).to_string()
}

/// Labels without `alertname` and `severity`, `k="v"` joined.
fn short_labels(l: &Labels) -> String {
    let v: Vec<String> = l
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity"))
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    if v.is_empty() {
        "{}".into()
    } else {
        format!("{{{}}}", v.join(", "))
    }
}

/// A number for humans: up to 4 significant digits, no trailing zeros.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "-".into()
        } else if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e9).contains(&a) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn describe(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if let Some(r) = rule.rate_ms {
        parts.push(format!("rate over {}", dur(r)));
    }
    match &rule.kind {
        RuleKind::Direct => {}
        RuleKind::Aggregate { op, by } => parts.push(format!(
            "{} by ({}) every {}",
            format!("{op:?}").to_lowercase(),
            by.join(", "),
            dur(rule.interval_ms)
        )),
        RuleKind::Quantile { q, by } => parts.push(format!(
            "quantile {} by ({})",
            num(*q),
            by.as_ref()
                .map_or("all labels but le".to_string(), |b| b.join(", "))
        )),
        RuleKind::Absent { after_ms } => parts.push(format!(
            "absent for {} (value: seconds without a sample)",
            dur(*after_ms)
        )),
        RuleKind::Compound(c) => parts.push(format!(
            "compound {} of {} rules within {} on ({}) (value: rules firing)",
            match c.mode {
                CompoundMode::All => "all",
                CompoundMode::Any => "any",
            },
            c.refs.len(),
            dur(c.within_ms),
            c.on.join(", ")
        )),
    }
    let dir = |d: vigil_engine::detector::Direction| format!("{d:?}").to_lowercase();
    match &rule.detector {
        Some(DetectorSpec::Threshold(t)) => {
            let mut s = String::from("threshold");
            if let Some(a) = t.above {
                let _ = write!(s, " above {}", num(a));
            }
            if let Some(b) = t.below {
                let _ = write!(s, " below {}", num(b));
            }
            parts.push(s);
        }
        Some(DetectorSpec::ZScore(z, _)) => parts.push(format!(
            "zscore over {}, threshold {}, direction {}, min {} samples",
            z.window,
            num(z.threshold),
            dir(z.direction),
            z.min_samples
        )),
        Some(DetectorSpec::Ewma(e, alpha)) => parts.push(format!(
            "ewma alpha {}, threshold {} sigma, direction {}, warm-up {} samples",
            num(*alpha),
            num(e.threshold),
            dir(e.direction),
            e.warmup
        )),
        Some(DetectorSpec::Growth(g)) => parts.push(format!(
            "growth by {}% over {} samples",
            num(g.ratio * 100.0),
            g.samples
        )),
        Some(DetectorSpec::Absent(_)) | None => {}
    }
    if rule.for_ms > 0 {
        parts.push(format!("for {}", dur(rule.for_ms)));
    }
    if rule.keep_firing_for_ms > 0 {
        parts.push(format!("keep firing for {}", dur(rule.keep_firing_for_ms)));
    }
    parts.join("; ")
}

fn meta(
    h: &mut String,
    inputs: &[PathBuf],
    rules: &RuleSet,
    opts: &Options,
    events: &[Event],
    hist: &Histories,
) {
    let names: Vec<String> = inputs
        .iter()
        .map(|p| format!("<code>{}</code>", esc(&p.display().to_string())))
        .collect();
    let transitions = events
        .iter()
        .filter(|e| matches!(e, Event::Alert(_)))
        .count();
    let intents = events.len() - transitions;
    let _ = writeln!(
        h,
        "<p class=\"meta\">Inputs: {}<br>{} in {}; {}, {}.",
        names.join(", "),
        plural(rules.rules.len(), "rule"),
        plural(rules.groups.len(), "group"),
        plural(transitions, "alert transition"),
        plural(intents, "intent")
    );
    let mut scope = Vec::new();
    if let Some(f) = opts.from {
        scope.push(format!("from {}", when(f)));
    }
    if let Some(t) = opts.to {
        scope.push(format!("to {}", when(t)));
    }
    if let Some(f) = &opts.filter {
        scope.push(format!("where <code>{}</code>", esc(f.sql())));
    }
    if let Some((rows, _)) = &opts.checkpoint {
        scope.push(format!("stopped after {rows} rows"));
    }
    if opts.resume.is_some() {
        scope.push("resumed from a checkpoint (states restored from it are charted from the checkpoint on)".into());
    }
    if !scope.is_empty() {
        let _ = write!(h, "<br>Samples {}.", scope.join(", "));
    }
    if hist.passes > 0 {
        let _ = write!(
            h,
            "<br>Signals of fired series from {} tracing pass{} over {} rows.",
            hist.passes,
            if hist.passes == 1 { "" } else { "es" },
            hist.rows
        );
    }
    h.push_str("</p>\n");
}

fn summary_table(h: &mut String, fired: &[Fired], alerts: &Alerts<'_>, rules: &RuleSet) {
    h.push_str("<h2 id=\"summary\">Summary</h2>\n");
    if fired.is_empty() {
        h.push_str("<p>No rule fired.</p>\n");
    } else {
        h.push_str("<table>\n<tr><th>Rule</th><th>Severity</th><th>Series fired</th><th>Firing episodes</th><th>First firing</th><th>Intents</th></tr>\n");
        for (i, f) in fired.iter().enumerate() {
            let episodes: usize = f
                .series
                .iter()
                .filter_map(|k| alerts.get(k))
                .map(AlertLog::firing_episodes)
                .sum();
            let mut intents: BTreeMap<(String, String), usize> = BTreeMap::new();
            for k in &f.series {
                for it in alerts
                    .get(k)
                    .map(|l| l.intents.as_slice())
                    .unwrap_or_default()
                {
                    *intents
                        .entry((it.action.as_str().to_string(), it.node.clone()))
                        .or_default() += 1;
                }
            }
            let intents: Vec<String> = intents
                .iter()
                .map(|((a, n), c)| {
                    format!(
                        "{} node={}{}",
                        esc(a),
                        esc(n),
                        if *c > 1 {
                            format!(" ×{c}")
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
            let severity = rules.rule(&f.rule).map_or("", |r| r.severity.as_str());
            let _ = writeln!(
                h,
                "<tr><td><a href=\"#rule-{i}\">{}</a></td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&f.rule),
                esc(severity),
                f.series.len(),
                episodes,
                when(f.first_firing),
                if intents.is_empty() { "-".into() } else { intents.join("<br>") }
            );
        }
        h.push_str("</table>\n");
    }
    // Rules that went pending but never fired.
    let mut pending_only: BTreeMap<&str, usize> = BTreeMap::new();
    for ((rule, _), log) in alerts {
        if log.first(AlertState::Pending).is_some() && !fired.iter().any(|f| &f.rule == rule) {
            *pending_only.entry(rule.as_str()).or_default() += 1;
        }
    }
    if !pending_only.is_empty() {
        let v: Vec<String> = pending_only
            .iter()
            .map(|(r, n)| format!("{} ({n} series)", esc(r)))
            .collect();
        let _ = writeln!(
            h,
            "<p class=\"note\">Pending but never firing: {}.</p>",
            v.join(", ")
        );
    }
}

fn score_table(h: &mut String, exp: &Expectations, events: &[Event]) {
    let s = Score::compute(exp, events);
    h.push_str("<h2 id=\"score\">Expectations</h2>\n");
    let verdict = if s.passed {
        "<span class=\"ok\">PASS</span>"
    } else {
        "<span class=\"bad\">FAIL</span>"
    };
    let _ = writeln!(
        h,
        "<p>{verdict} &nbsp; precision <b>{:.3}</b>{} &nbsp; recall <b>{:.3}</b> (at least {}) &nbsp; true positives {} &nbsp; false positives {} &nbsp; median delay {}</p>",
        s.precision,
        exp.min_precision.map_or(String::new(), |p| format!(" (at least {})", num(p))),
        s.recall,
        num(exp.min_recall.unwrap_or(1.0)),
        s.true_positives,
        s.false_positives.len(),
        s.median_delay_ms().map_or("-".into(), dur)
    );
    if !s.alerts.is_empty() {
        h.push_str("<table>\n<tr><th>Incident</th><th>Rule</th><th>Labels</th><th>Result</th><th>Delay</th></tr>\n");
        for a in &s.alerts {
            let labels: Labels = a.labels.clone();
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                esc(&a.incident),
                esc(&a.rule),
                esc(&short_labels(&labels)),
                if a.delay_ms.is_some() { "<span class=\"ok\">detected</span>" } else { "<span class=\"bad\">missed</span>" },
                a.delay_ms.map_or("-".into(), dur)
            );
        }
        h.push_str("</table>\n");
    }
    if !s.missing_actions.is_empty() {
        h.push_str("<p><b>Missing actions</b></p>\n<table>\n<tr><th>Incident</th><th>Action</th><th>Node</th></tr>\n");
        for (inc, action, node) in &s.missing_actions {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(inc),
                esc(action),
                esc(node)
            );
        }
        h.push_str("</table>\n");
    }
    if !s.unexpected_actions.is_empty() {
        let _ = writeln!(
            h,
            "<p><b>Actions outside the incidents</b>{}</p>\n<table>\n<tr><th>Time</th><th>Rule</th><th>Action</th><th>Node</th></tr>",
            if exp.forbid_other_actions { " (forbidden)" } else { "" }
        );
        for (ts, rule, action, node) in &s.unexpected_actions {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(*ts),
                esc(rule),
                esc(action),
                esc(node)
            );
        }
        h.push_str("</table>\n");
    }
    if !s.false_positives.is_empty() {
        h.push_str("<p><b>False positives</b> (firing alerts matching no incident)</p>\n<table>\n<tr><th>Time</th><th>Rule</th><th>Labels</th></tr>\n");
        for (ts, rule, labels) in s.false_positives.iter().take(MAX_FALSE_POSITIVES) {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
                when(*ts),
                esc(rule),
                esc(&short_labels(labels))
            );
        }
        h.push_str("</table>\n");
        if s.false_positives.len() > MAX_FALSE_POSITIVES {
            let _ = writeln!(
                h,
                "<p class=\"note\">… and {} more.</p>",
                s.false_positives.len() - MAX_FALSE_POSITIVES
            );
        }
    }
}

fn rule_section(
    h: &mut String,
    i: usize,
    f: &Fired,
    alerts: &Alerts<'_>,
    rules: &RuleSet,
    hist: &Histories,
    exp: Option<&Expectations>,
) {
    let rule = rules.rule(&f.rule);
    let _ = writeln!(h, "<h2 id=\"rule-{i}\">{}</h2>", esc(&f.rule));
    if let Some(r) = rule {
        let _ = writeln!(
            h,
            "<p class=\"meta\">Group <code>{}</code> ({}), every {}; {}; severity {}.</p>",
            esc(&r.group),
            esc(&r.file),
            dur(r.interval_ms),
            esc(&describe(r)),
            r.severity.as_str()
        );
    }
    if f.series.len() > MAX_SERIES_PER_RULE {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} series fired; charting the first {} to fire (capped).</p>",
            f.series.len(),
            MAX_SERIES_PER_RULE
        );
    }
    for key in f.series.iter().take(MAX_SERIES_PER_RULE) {
        let Some(log) = alerts.get(key) else { continue };
        let _ = writeln!(h, "<h3>{}</h3>", esc(&short_labels(&log.labels)));
        if let Some(summary) = log
            .annotations
            .get("summary")
            .or_else(|| log.annotations.get("description"))
        {
            let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(summary));
        }
        let spans: Vec<String> = log
            .spans()
            .iter()
            .filter(|s| s.2)
            .map(|&(a, b, _)| match b {
                Some(b) => format!("{} for {}", when(a), dur(b - a)),
                None => format!("{} until the end", when(a)),
            })
            .collect();
        let _ = writeln!(h, "<p class=\"note\">Firing: {}.</p>", spans.join("; "));
        let points = hist.points.get(key).map(Vec::as_slice).unwrap_or_default();
        if points.is_empty() {
            h.push_str("<p class=\"note\">No signal was recorded for this series (its state was gone at the end of the tracing replay).</p>\n");
        } else if let Some(first) = hist.incomplete.get(key) {
            let _ = writeln!(
                h,
                "<p class=\"note\">The signal before {} is not shown: the series went silent and its state expired.</p>",
                when(*first)
            );
        }
        chart(h, rule, log, points, exp);
    }
}

/// Plot geometry.
const W: f64 = 960.0;
const H: f64 = 260.0;
const L: f64 = 64.0;
const R: f64 = 16.0;
const T: f64 = 12.0;
const B: f64 = 34.0;

struct Scale {
    t0: i64,
    t1: i64,
    y0: f64,
    y1: f64,
}

impl Scale {
    fn x(&self, ts: i64) -> f64 {
        L + (ts - self.t0) as f64 / (self.t1 - self.t0).max(1) as f64 * (W - L - R)
    }

    /// Value to pixel, clamped to the plot (infinite band edges become its border).
    fn y(&self, v: f64) -> f64 {
        let f = if v == f64::INFINITY {
            1.0
        } else if v == f64::NEG_INFINITY {
            0.0
        } else {
            ((v - self.y0) / (self.y1 - self.y0)).clamp(-0.02, 1.02)
        };
        H - B - f * (H - T - B)
    }
}

fn px(v: f64) -> String {
    format!("{v:.1}")
}

/// 1, 2 or 5 × 10^k near `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    p * if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    }
}

const TIME_STEPS: [i64; 22] = [
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
    1_209_600_000,
    2_592_000_000,
];

fn time_label(ms: i64, step: i64) -> String {
    let w = when(ms); // YYYY-MM-DD HH:MM:SS
    if step >= 86_400_000 {
        w[5..10].to_string()
    } else if step >= 60_000 {
        w[11..16].to_string()
    } else {
        w[11..19].to_string()
    }
}

/// A column of the chart: the points that fall on one pixel (or one point).
struct Col {
    x: f64,
    /// (ts, value) of the lowest and highest value, in time order.
    lo_pt: (i64, f64),
    hi_pt: (i64, f64),
    band: Option<(f64, f64)>,
    ts: i64,
}

fn columns(points: &[Point], s: &Scale) -> Vec<Col> {
    let dense = points.len() as f64 > 2.0 * (W - L - R);
    let mut out: Vec<Col> = Vec::new();
    for p in points {
        let x = s.x(p.ts);
        let band = (!p.lo.is_nan() && !p.hi.is_nan()).then_some((p.lo, p.hi));
        let key = if dense { x.round() } else { x };
        match out.last_mut() {
            Some(c) if dense && c.x == key => {
                if p.value.is_finite() {
                    if !c.lo_pt.1.is_finite() || p.value < c.lo_pt.1 {
                        c.lo_pt = (p.ts, p.value);
                    }
                    if !c.hi_pt.1.is_finite() || p.value > c.hi_pt.1 {
                        c.hi_pt = (p.ts, p.value);
                    }
                }
                c.band = match (c.band, band) {
                    (Some((a, b)), Some((x, y))) => Some((a.min(x), b.max(y))),
                    (a, b) => a.or(b),
                };
            }
            _ => out.push(Col {
                x: key,
                lo_pt: (p.ts, p.value),
                hi_pt: (p.ts, p.value),
                band,
                ts: p.ts,
            }),
        }
    }
    out
}

fn chart(
    h: &mut String,
    rule: Option<&Rule>,
    log: &AlertLog<'_>,
    points: &[Point],
    exp: Option<&Expectations>,
) {
    let spans = log.spans();
    // Time domain: the signal and every transition and intent.
    let mut t0 = i64::MAX;
    let mut t1 = i64::MIN;
    for ts in points
        .iter()
        .map(|p| p.ts)
        .chain(log.changes.iter().map(|c| c.0))
        .chain(log.intents.iter().map(|i| i.ts))
    {
        t0 = t0.min(ts);
        t1 = t1.max(ts);
    }
    if t0 >= t1 {
        t0 = t0.saturating_sub(60_000);
        t1 = t1.saturating_add(60_000);
    }
    // A little room at both ends for markers at the edges.
    let room = (t1 - t0) / 100;
    (t0, t1) = (t0.saturating_sub(room), t1.saturating_add(room));
    // Value domain: the signal, widened by the band up to one span of the signal on
    // either side (a band far off the signal would flatten it), and the thresholds.
    let finite = |v: &f64| v.is_finite();
    let (mut vmin, mut vmax) = points
        .iter()
        .map(|p| p.value)
        .filter(finite)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !vmin.is_finite() {
        (vmin, vmax) = (0.0, 1.0);
    }
    let span = (vmax - vmin)
        .max(vmax.abs().max(vmin.abs()) * 0.1)
        .max(1e-9);
    let (lim_lo, lim_hi) = (vmin - span, vmax + span);
    let mut thresholds: Vec<(&str, f64)> = Vec::new();
    if let Some(DetectorSpec::Threshold(t)) = rule.and_then(|r| r.detector.as_ref()) {
        thresholds.extend(t.above.map(|a| ("above", a)));
        thresholds.extend(t.below.map(|b| ("below", b)));
    }
    let (mut y0, mut y1) = (vmin, vmax);
    for v in points.iter().flat_map(|p| [p.lo, p.hi]).filter(finite) {
        y0 = y0.min(v.max(lim_lo));
        y1 = y1.max(v.min(lim_hi));
    }
    // Thresholds always show: the signal against them is the point of the chart.
    for &(_, v) in &thresholds {
        y0 = y0.min(v);
        y1 = y1.max(v);
    }
    if y1 - y0 < 1e-12 {
        let d = (y0.abs() * 0.1).max(1.0);
        y0 -= d;
        y1 += d;
    }
    let pad = (y1 - y0) * 0.05;
    let step = nice_step((y1 - y0 + 2.0 * pad) / 5.0);
    let s = Scale {
        t0,
        t1,
        y0: ((y0 - pad) / step).floor() * step,
        y1: ((y1 + pad) / step).ceil() * step,
    };
    let (top, bottom, left, right) = (T, H - B, L, W - R);

    let title = format!(
        "{} {}",
        log.labels.get("alertname").map_or("", String::as_str),
        short_labels(&log.labels)
    );
    let _ = writeln!(
        h,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(&title)
    );
    let _ = writeln!(h, "<title>{}</title>", esc(&title));
    let _ = writeln!(
        h,
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fbfcfe\"/>",
        px(left),
        px(top),
        px(right - left),
        px(bottom - top)
    );

    // Spans.
    for &(a, b, firing) in &spans {
        let end = b.unwrap_or(t1);
        let (x0, x1) = (s.x(a), s.x(end).max(s.x(a) + 1.0));
        let (class, fill) = if firing {
            ("firing", "#d0021b")
        } else {
            ("pending", "#f5a623")
        };
        let _ = writeln!(
            h,
            "<rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" fill-opacity=\"{}\"><title>{class} {} – {}</title></rect>",
            px(x0),
            px(top),
            px(x1 - x0),
            px(bottom - top),
            if firing { "0.16" } else { "0.2" },
            when(a),
            b.map_or("end".to_string(), when)
        );
    }
    // Incident windows (with --expect), as a strip along the bottom.
    if let Some(exp) = exp {
        for inc in &exp.incidents {
            let (Some(a), Some(b)) = (time_spec(&inc.from), time_spec(&inc.to)) else {
                continue;
            };
            if b < t0 || a > t1 {
                continue;
            }
            let (x0, x1) = (s.x(a.max(t0)), s.x(b.min(t1)));
            let _ = writeln!(
                h,
                "<rect class=\"incident\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"5\" fill=\"#2e9e4b\" fill-opacity=\"0.5\"><title>incident {}: {} – {}</title></rect>",
                px(x0),
                px(bottom - 5.0),
                px((x1 - x0).max(1.0)),
                esc(&inc.name),
                when(a),
                when(b)
            );
        }
    }

    // Grid and axes.
    let mut v = s.y0;
    let mut guard = 0;
    while v <= s.y1 + step * 1e-6 && guard < 50 {
        let y = s.y(v);
        let _ = writeln!(
            h,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#e6e9f0\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            px(left),
            px(y),
            px(right),
            px(y),
            px(left - 6.0),
            px(y + 4.0),
            esc(&num(v))
        );
        v += step;
        guard += 1;
    }
    let tstep = TIME_STEPS
        .iter()
        .copied()
        .find(|st| (t1 - t0) / st <= 8)
        .unwrap_or(TIME_STEPS[TIME_STEPS.len() - 1]);
    let mut t = t0.div_euclid(tstep) * tstep;
    if t < t0 {
        t += tstep;
    }
    while t <= t1 {
        let x = s.x(t);
        let _ = writeln!(
            h,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#e6e9f0\"/><text x=\"{}\" y=\"{}\" text-anchor=\"{}\">{}</text>",
            px(x),
            px(top),
            px(x),
            px(bottom),
            px(x),
            px(bottom + 14.0),
            // Labels at the edges stay inside the chart.
            if x - left < 30.0 {
                "start"
            } else if right - x < 30.0 {
                "end"
            } else {
                "middle"
            },
            time_label(t, tstep)
        );
        t += tstep;
    }
    let _ = writeln!(
        h,
        "<text x=\"{}\" y=\"{}\">{} – {} UTC</text>",
        px(left),
        px(H - 4.0),
        when(t0),
        if when(t0)[..10] == when(t1)[..10] {
            when(t1)[11..].to_string()
        } else {
            when(t1)
        }
    );

    // Band and signal.
    let cols = columns(points, &s);
    let gap = {
        let mut d: Vec<i64> = points
            .windows(2)
            .map(|w| w[1].ts - w[0].ts)
            .filter(|&d| d > 0)
            .collect();
        d.sort_unstable();
        let median = d.get(d.len() / 2).copied().unwrap_or(0);
        (3 * median)
            .max(3 * rule.map_or(0, |r| r.interval_ms))
            .max(1)
    };
    let mut runs: Vec<&[Col]> = Vec::new();
    let mut start = 0;
    for i in 0..=cols.len() {
        let brk = i == cols.len()
            || cols[i].band.is_none()
            || (i > start && cols[i].ts - cols[i - 1].ts > gap);
        if brk {
            if i > start {
                runs.push(&cols[start..i]);
            }
            start = if i < cols.len() && cols[i].band.is_none() {
                i + 1
            } else {
                i
            };
        }
    }
    for run in runs {
        let mut pts: Vec<String> = Vec::with_capacity(run.len() * 2 + 2);
        let single = run.len() == 1;
        for c in run {
            let (_, hi) = c.band.unwrap_or((f64::NAN, f64::NAN));
            if single {
                pts.push(format!("{},{}", px(c.x - 1.0), px(s.y(hi))));
                pts.push(format!("{},{}", px(c.x + 1.0), px(s.y(hi))));
            } else {
                pts.push(format!("{},{}", px(c.x), px(s.y(hi))));
            }
        }
        for c in run.iter().rev() {
            let (lo, _) = c.band.unwrap_or((f64::NAN, f64::NAN));
            if single {
                pts.push(format!("{},{}", px(c.x + 1.0), px(s.y(lo))));
                pts.push(format!("{},{}", px(c.x - 1.0), px(s.y(lo))));
            } else {
                pts.push(format!("{},{}", px(c.x), px(s.y(lo))));
            }
        }
        let _ = writeln!(h, "<polygon class=\"band\" points=\"{}\" fill=\"#1f4e9c\" fill-opacity=\"0.14\" stroke=\"none\"/>", pts.join(" "));
    }
    for (name, v) in &thresholds {
        let y = s.y(*v);
        let _ = writeln!(
            h,
            "<line class=\"threshold\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#555\" stroke-dasharray=\"5 4\"><title>{name} {}</title></line>",
            px(left),
            px(y),
            px(right),
            px(y),
            esc(&num(*v))
        );
    }
    let mut d = String::new();
    let mut prev: Option<i64> = None;
    for c in &cols {
        let mut pair = [c.lo_pt, c.hi_pt];
        if pair[0].0 > pair[1].0 {
            pair.swap(0, 1);
        }
        let n = if pair[0] == pair[1] { 1 } else { 2 };
        for &(ts, v) in &pair[..n] {
            if !v.is_finite() {
                prev = None;
                continue;
            }
            let cmd = if prev.is_some_and(|p| ts - p <= gap) {
                'L'
            } else {
                'M'
            };
            let _ = write!(d, "{cmd}{},{}", px(c.x), px(s.y(v)));
            prev = Some(ts);
        }
    }
    if !d.is_empty() {
        let _ = writeln!(h, "<path class=\"signal\" d=\"{d}\" fill=\"none\" stroke=\"#1f4e9c\" stroke-width=\"1.4\" stroke-linejoin=\"round\"/>");
        // Lone points (no neighbour to draw a line to) as dots.
        let lone = cols.len() == 1;
        if lone {
            let c = &cols[0];
            if c.lo_pt.1.is_finite() {
                let _ = writeln!(
                    h,
                    "<circle cx=\"{}\" cy=\"{}\" r=\"2.5\" fill=\"#1f4e9c\"/>",
                    px(c.x),
                    px(s.y(c.lo_pt.1))
                );
            }
        }
    }
    // Intents.
    for it in &log.intents {
        let x = s.x(it.ts);
        let near_right = right - x < 60.0;
        let mut what = format!("{} node={}", it.action.as_str(), it.node);
        if let (Some(ns), Some(pod)) = (&it.namespace, &it.pod) {
            let _ = write!(what, " pod={ns}/{pod}");
        }
        let _ = writeln!(
            h,
            "<g class=\"intent\"><title>intent at {}: {}</title><line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#7b1fa2\" stroke-width=\"1.5\" stroke-dasharray=\"3 2\"/><path d=\"M{},{}l-5,-8h10z\" fill=\"#7b1fa2\"/><text x=\"{}\" y=\"{}\" text-anchor=\"{}\" style=\"fill:#7b1fa2\">{}</text></g>",
            when(it.ts),
            esc(&what),
            px(x),
            px(top),
            px(x),
            px(bottom),
            px(x),
            px(top + 9.0),
            px(if near_right { x - 7.0 } else { x + 7.0 }),
            px(top + 10.0),
            if near_right { "end" } else { "start" },
            esc(it.action.as_str())
        );
    }
    let _ = writeln!(
        h,
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#c9cedb\"/>",
        px(left),
        px(top),
        px(right - left),
        px(bottom - top)
    );
    h.push_str("</svg>\n");
    let mut legend = String::from("<p class=\"legend\"><span class=\"sw signal\"></span>signal");
    if cols.iter().any(|c| c.band.is_some()) {
        legend.push_str("<span class=\"sw band\"></span>normal band");
    }
    if !thresholds.is_empty() {
        legend.push_str("<span class=\"sw threshold\"></span>threshold");
    }
    if spans.iter().any(|s| !s.2) {
        legend.push_str("<span class=\"sw pending\"></span>pending");
    }
    if spans.iter().any(|s| s.2) {
        legend.push_str("<span class=\"sw firing\"></span>firing");
    }
    if !log.intents.is_empty() {
        legend.push_str("<span class=\"sw intent\"></span>intent");
    }
    if exp.is_some() {
        legend.push_str("<span class=\"sw incident\"></span>incident window");
    }
    legend.push_str("</p>\n");
    h.push_str(&legend);
}

fn time_spec(t: &crate::expect::TimeSpec) -> Option<i64> {
    match t {
        crate::expect::TimeSpec::Millis(m) => Some(*m),
        crate::expect::TimeSpec::Text(s) => crate::jsonl::parse_rfc3339(s).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_matters() {
        assert_eq!(
            esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn numbers_and_times() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1234.5678), "1235");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(12.25), "12.25");
        assert_eq!(num(-3.0), "-3");
        assert_eq!(num(f64::NAN), "-");
        assert_eq!(num(1.5e12), "1.500e12");
        assert_eq!(when(0), "1970-01-01 00:00:00");
        assert_eq!(dur(90_000), "1m30s");
        assert_eq!(nice_step(0.23), 0.5);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(time_label(3_600_000, 600_000), "01:00");
    }

    fn alert(ts: i64, state: AlertState) -> Event {
        Event::Alert(vigil_engine::eval::AlertEvent {
            ts,
            rule: Arc::from("R"),
            state,
            labels: [("alertname", "R"), ("node", "n1")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: Labels::new(),
            value: 1.0,
            score: 1.0,
            active_at: ts,
            fingerprint: 7,
            flapping: false,
            notify: true,
        })
    }

    #[test]
    fn spans_from_transitions() {
        let events = vec![
            alert(10, AlertState::Pending),
            alert(20, AlertState::Firing),
            alert(30, AlertState::Resolved),
            alert(40, AlertState::Pending),
            alert(45, AlertState::Inactive),
            alert(50, AlertState::Firing),
        ];
        let a = collect(&events);
        let log = &a[&("R".to_string(), 7)];
        assert_eq!(
            log.spans(),
            vec![
                (10, Some(20), false),
                (20, Some(30), true),
                (40, Some(45), false),
                (50, None, true)
            ]
        );
        assert_eq!(log.firing_episodes(), 2);
    }

    #[test]
    fn dense_signals_are_decimated_per_pixel() {
        let points: Vec<Point> = (0..100_000)
            .map(|i| Point {
                ts: i * 1000,
                value: if i == 50_000 { 100.0 } else { (i % 10) as f64 },
                lo: -1.0,
                hi: 11.0,
                score: 0.1,
            })
            .collect();
        let s = Scale {
            t0: 0,
            t1: 99_999_000,
            y0: 0.0,
            y1: 100.0,
        };
        let cols = columns(&points, &s);
        assert!(cols.len() <= (W - L - R) as usize + 2, "{}", cols.len());
        // The spike survives.
        assert!(cols.iter().any(|c| c.hi_pt.1 == 100.0));
    }
}
