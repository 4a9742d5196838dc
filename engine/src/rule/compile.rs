//! Validation and compilation of raw rule files into [`Rule`]s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::locate::Locations;
use super::raw::{AggregateOp, RawAction, RawGroup, RawRule, RawTarget, Severity};
use super::{Diagnostic, Group, RuleErrors, RuleSet, Source};
use crate::detector::DetectorSpec;
use crate::duration::Duration;
use crate::labels::{fingerprint, METRIC_NAME};
use crate::selector::Selector;
use crate::template::Template;

/// How a rule turns samples into detector input.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Every sample (or its rate) of a state goes straight to the detector.
    Direct,
    /// At every step, the latest values of the series are combined per group.
    Aggregate {
        /// Operator.
        op: AggregateOp,
        /// Grouping labels (sorted).
        by: Vec<String>,
    },
    /// At every step, a quantile is interpolated from `_bucket` series per group.
    Quantile {
        /// The quantile, 0 < q < 1.
        q: f64,
        /// Grouping labels (sorted); None = all labels but `le`.
        by: Option<Vec<String>>,
    },
    /// At every step, a state is anomalous when its series has been silent too long.
    Absent {
        /// Silence, in ms, that counts as absent.
        after_ms: i64,
    },
    /// At every step, combines the firing alerts of other rules.
    Compound(CompoundSpec),
}

/// `all` or `any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompoundMode {
    /// Every referenced rule.
    All,
    /// At least one referenced rule.
    Any,
}

/// A compiled compound condition.
#[derive(Debug, Clone, PartialEq)]
pub struct CompoundSpec {
    /// All or any.
    pub mode: CompoundMode,
    /// Indices of the referenced rules.
    pub refs: Vec<usize>,
    /// How recently each must have been firing, ms.
    pub within_ms: i64,
    /// Join labels (sorted).
    pub on: Vec<String>,
}

/// Kinds of action intent.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Cordon and taint.
    Isolate,
    /// Evict through the Eviction API.
    Evict,
    /// Cordon and evict all pods.
    Drain,
}

impl Action {
    /// As written in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Isolate => "isolate",
            Action::Evict => "evict",
            Action::Drain => "drain",
        }
    }
}

/// A compiled action.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentSpec {
    /// What to do.
    pub action: Action,
    /// Node template.
    pub node: Template,
    /// Namespace template (evict of one pod).
    pub namespace: Option<Template>,
    /// Pod template (evict of one pod).
    pub pod: Option<Template>,
}

/// A runnable rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Alert name.
    pub name: Arc<str>,
    /// Group name.
    pub group: Arc<str>,
    /// Source file.
    pub file: Arc<str>,
    /// Group interval, ms.
    pub interval_ms: i64,
    /// Silence after which a state expires, ms.
    pub staleness_ms: i64,
    /// Signal shaping.
    pub kind: RuleKind,
    /// Which series feed the rule (None for compound rules).
    pub selector: Option<Selector>,
    /// State labels for direct rules (sorted); None = all labels but `__name__`.
    pub by: Option<Vec<String>>,
    /// Counter rate range, ms.
    pub rate_ms: Option<i64>,
    /// The detector (None for absent and compound rules).
    pub detector: Option<DetectorSpec>,
    /// Pending time, ms.
    pub for_ms: i64,
    /// Keep-firing time, ms.
    pub keep_firing_for_ms: i64,
    /// Minimum state age before firing, ms.
    pub new_series_delay_ms: i64,
    /// (max changes, span ms).
    pub flapping: Option<(u32, i64)>,
    /// Severity.
    pub severity: Severity,
    /// Group labels then rule labels (rule wins), as templates.
    pub labels: Vec<(String, Template)>,
    /// Annotations.
    pub annotations: Vec<(String, Template)>,
    /// Whether the alert goes to alert sinks.
    pub notify: bool,
    /// Intents to emit when the alert starts firing.
    pub intents: Vec<IntentSpec>,
    /// Cap on states.
    pub max_series: u32,
    /// Hash of the rule's definition: state survives a reload only if it is unchanged.
    pub definition: u64,
    /// Compound rules that reference this one: (compound rule index, position in refs).
    pub dependents: Vec<(usize, usize)>,
}

struct FileCtx<'a> {
    file: &'a str,
    locs: Locations,
    errs: &'a mut Vec<Diagnostic>,
}

impl FileCtx<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        let (line, column) = self.locs.find(path);
        self.errs.push(Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        });
    }
}

fn serde_err_message(e: &serde_yaml::Error) -> String {
    // serde_yaml appends " at line L column C"; we print the position ourselves.
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn unknown_field_hint(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(&rest[..rest.find('`')?])
}

pub(super) fn compile(sources: &[Source]) -> Result<RuleSet, RuleErrors> {
    let mut errs = Vec::new();
    let mut set = RuleSet::default();
    // (rule index, file ctx index, path) for errors found after all files are read.
    let mut pending_compounds: Vec<(usize, usize, String, super::raw::RawCompound)> = Vec::new();
    let mut ctxs: Vec<(String, Locations)> = Vec::new();
    let mut group_names: HashMap<String, String> = HashMap::new();
    let mut rule_names: HashMap<String, String> = HashMap::new();

    for src in sources {
        let mut cx = FileCtx {
            file: &src.name,
            locs: Locations::index(&src.text),
            errs: &mut errs,
        };
        let de = serde_yaml::Deserializer::from_str(&src.text);
        let group: RawGroup = match serde_path_to_error::deserialize(de) {
            Ok(g) => g,
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let msg = serde_err_message(&inner);
                match inner.location() {
                    Some(loc) if unknown_field_hint(&msg).is_none() => cx.errs.push(Diagnostic {
                        file: src.name.clone(),
                        line: loc.line(),
                        column: loc.column(),
                        message: msg,
                    }),
                    _ => cx.err(&path, format!("{path}: {msg}")),
                }
                continue;
            }
        };
        if group.interval.is_zero() {
            cx.err("interval", "interval must be positive, e.g. 10s");
        }
        if group.staleness < group.interval {
            cx.err(
                "staleness",
                format!(
                    "staleness ({}) must be at least the interval ({})",
                    group.staleness, group.interval
                ),
            );
        }
        if let Some(first) = group_names.insert(group.group.clone(), src.name.clone()) {
            cx.err(
                "group",
                format!("duplicate group {:?} (also in {first})", group.group),
            );
        }
        for name in group.labels.keys() {
            check_label_name(&mut cx, "labels", name);
        }
        let gname: Arc<str> = group.group.as_str().into();
        let file: Arc<str> = src.name.as_str().into();
        let mut g = Group {
            name: Arc::clone(&gname),
            file: src.name.clone(),
            interval_ms: group.interval.as_millis().max(1),
            rules: Vec::new(),
        };
        for (i, value) in group.rules.iter().enumerate() {
            let base = format!("rules[{i}]");
            let raw: RawRule = match serde_path_to_error::deserialize(value.clone()) {
                Ok(r) => r,
                Err(e) => {
                    let mut path = format!("{base}.{}", e.path());
                    let msg = serde_err_message(e.inner());
                    if let Some(field) = unknown_field_hint(&msg) {
                        if !path.ends_with(field) {
                            path = format!("{path}.{field}");
                        }
                    }
                    let shown = path.trim_end_matches(".?").to_string();
                    cx.err(&path, format!("{shown}: {msg}"));
                    continue;
                }
            };
            if let Some(first) = rule_names.insert(raw.name.clone(), src.name.clone()) {
                cx.err(&format!("{base}.name"), format!("duplicate rule name {:?} (also in {first}); rule names are alert names and must be unique", raw.name));
            }
            let index = set.rules.len();
            if let Some(rule) = compile_rule(&mut cx, &base, &group, &raw, &gname, &file) {
                if let Some(c) = raw.compound.clone() {
                    pending_compounds.push((index, ctxs.len(), base.clone(), c));
                }
                g.rules.push(index);
                set.rules.push(rule);
            }
        }
        set.groups.push(g);
        ctxs.push((src.name.clone(), cx.locs));
    }

    // Compound references, now that every rule name is known.
    let names: HashMap<&str, usize> = set
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (&*r.name, i))
        .collect();
    let mut resolved = Vec::new();
    for (index, ctx, base, c) in &pending_compounds {
        let (file, locs) = &ctxs[*ctx];
        let mut err = |path: &str, msg: String| {
            let (line, column) = locs.find(path);
            errs.push(Diagnostic {
                file: file.clone(),
                line,
                column,
                message: msg,
            });
        };
        let (mode, list, field) = if c.all.is_empty() {
            (CompoundMode::Any, &c.any, "any")
        } else {
            (CompoundMode::All, &c.all, "all")
        };
        let mut refs = Vec::new();
        for (j, name) in list.iter().enumerate() {
            let path = format!("{base}.compound.{field}[{j}]");
            match names.get(name.as_str()) {
                None => err(&path, format!("compound rule refers to unknown rule {name:?}")),
                Some(&r) if r == *index => err(&path, "a compound rule cannot refer to itself".into()),
                Some(&r) if matches!(set.rules[r].kind, RuleKind::Compound(_)) => {
                    err(&path, format!("{name:?} is itself a compound rule; nesting compound rules is not supported"))
                }
                Some(&r) => {
                    if let Some(missing) = c.on.iter().find(|l| !rule_output_has(&set.rules[r], l)) {
                        err(&format!("{base}.compound.on"), format!("join label {missing:?} is not among the labels of rule {name:?}"));
                    }
                    refs.push(r);
                }
            }
        }
        resolved.push((*index, mode, refs));
    }
    for (index, mode, refs) in resolved {
        for (pos, &r) in refs.iter().enumerate() {
            set.rules[r].dependents.push((index, pos));
        }
        if let RuleKind::Compound(spec) = &mut set.rules[index].kind {
            spec.mode = mode;
            spec.refs = refs;
        }
    }

    if errs.is_empty() {
        Ok(set)
    } else {
        Err(RuleErrors(errs))
    }
}

/// Whether alerts of `rule` can carry label `l`.
fn rule_output_has(rule: &Rule, l: &str) -> bool {
    match &rule.kind {
        RuleKind::Aggregate { by, .. } => by.iter().any(|b| b == l),
        RuleKind::Quantile { by: Some(by), .. } => by.iter().any(|b| b == l),
        RuleKind::Compound(c) => c.on.iter().any(|b| b == l),
        _ => rule.by.as_ref().is_none_or(|by| by.iter().any(|b| b == l)),
    }
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn check_label_name(cx: &mut FileCtx<'_>, path: &str, name: &str) {
    if !is_label_name(name) {
        cx.err(
            path,
            format!("{name:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
        );
    }
}

fn sorted_labels(cx: &mut FileCtx<'_>, path: &str, names: &[String]) -> Vec<String> {
    for n in names {
        check_label_name(cx, path, n);
    }
    let mut v = names.to_vec();
    v.sort();
    v.dedup();
    v
}

fn template(cx: &mut FileCtx<'_>, path: &str, src: &str) -> Template {
    Template::parse(src).unwrap_or_else(|e| {
        cx.err(path, e);
        Template::parse("").unwrap_or_else(|_| unreachable!("the empty template parses"))
    })
}

fn compile_rule(
    cx: &mut FileCtx<'_>,
    base: &str,
    group: &RawGroup,
    raw: &RawRule,
    gname: &Arc<str>,
    file: &Arc<str>,
) -> Option<Rule> {
    let before = cx.errs.len();
    let at = |f: &str| format!("{base}.{f}");
    if !is_label_name(&raw.name) {
        cx.err(
            &at("name"),
            format!("rule name {:?} must match [a-zA-Z_][a-zA-Z0-9_]*", raw.name),
        );
    }
    let interval = group.interval;
    let mut selector = None;
    let mut detector = None;
    let kind;
    if let Some(c) = &raw.compound {
        for (set, field) in [
            (raw.select.is_some(), "select"),
            (raw.by.is_some(), "by"),
            (raw.rate.is_some(), "rate"),
            (raw.aggregate.is_some(), "aggregate"),
            (raw.quantile.is_some(), "quantile"),
            (raw.detect.is_some(), "detect"),
        ] {
            if set {
                cx.err(
                    &at(field),
                    format!("a compound rule combines other rules and takes no `{field}`"),
                );
            }
        }
        if c.all.is_empty() == c.any.is_empty() {
            cx.err(
                &at("compound"),
                "set exactly one of `all` and `any`, with at least one rule",
            );
        }
        if c.within.is_zero() {
            cx.err(&at("compound.within"), "must be positive, e.g. 2m");
        }
        if c.on.is_empty() {
            cx.err(
                &at("compound.on"),
                "name the labels the rules are joined on, e.g. [node]",
            );
        }
        kind = RuleKind::Compound(CompoundSpec {
            mode: CompoundMode::All,
            refs: Vec::new(),
            within_ms: c.within.as_millis(),
            on: sorted_labels(cx, &at("compound.on"), &c.on),
        });
    } else {
        match &raw.select {
            None => cx.err(
                &at("name"),
                "missing `select` (a PromQL vector selector) or `compound`",
            ),
            Some(s) => match Selector::parse(s) {
                Ok(sel) => selector = Some(sel),
                Err(e) => cx.err(&at("select"), e.to_string()),
            },
        }
        match &raw.detect {
            None => cx.err(
                &at("name"),
                "missing `detect`: one of threshold, zscore, ewma, growth, absent",
            ),
            Some(d) => match d.compile(interval) {
                Ok(spec) => detector = Some(spec),
                Err(list) => {
                    for (f, m) in list {
                        let path = if f.is_empty() {
                            at("detect")
                        } else {
                            at(&format!("detect.{f}"))
                        };
                        let shown = path
                            .strip_prefix(&format!("{base}."))
                            .unwrap_or(&path)
                            .to_string();
                        cx.err(&path, format!("{shown}: {m}"));
                    }
                }
            },
        }
        if let Some(r) = raw.rate {
            if r.as_millis() <= interval.as_millis() {
                cx.err(&at("rate"), format!("rate range {r} must exceed the interval ({interval}) so it holds two samples"));
            }
        }
        if raw.by.is_some() && (raw.aggregate.is_some() || raw.quantile.is_some()) {
            cx.err(
                &at("by"),
                "with `aggregate` or `quantile`, group with `aggregate.by` instead of `by`",
            );
        }
        if let Some(q) = raw.quantile {
            if !(q > 0.0 && q < 1.0) {
                cx.err(
                    &at("quantile"),
                    format!("{q} must be between 0 and 1 (exclusive), e.g. 0.99"),
                );
            }
            if let Some(a) = &raw.aggregate {
                if a.op != AggregateOp::Sum {
                    cx.err(
                        &at("aggregate.op"),
                        "with `quantile`, buckets are summed: op must be sum",
                    );
                }
            }
        }
        kind = match (&detector, raw.quantile, &raw.aggregate) {
            (Some(DetectorSpec::Absent(a)), _, _) => {
                for (set, field) in [
                    (raw.rate.is_some(), "rate"),
                    (raw.aggregate.is_some(), "aggregate"),
                    (raw.quantile.is_some(), "quantile"),
                ] {
                    if set {
                        cx.err(
                            &at(field),
                            format!("`absent` watches for missing samples and takes no `{field}`"),
                        );
                    }
                }
                RuleKind::Absent {
                    after_ms: i64::from(a.intervals).saturating_mul(interval.as_millis()),
                }
            }
            (_, Some(q), agg) => RuleKind::Quantile {
                q,
                by: agg
                    .as_ref()
                    .map(|a| sorted_labels(cx, &at("aggregate.by"), &a.by)),
            },
            (_, None, Some(a)) => RuleKind::Aggregate {
                op: a.op,
                by: sorted_labels(cx, &at("aggregate.by"), &a.by),
            },
            _ => RuleKind::Direct,
        };
    }
    let by = raw.by.as_ref().map(|b| sorted_labels(cx, &at("by"), b));
    if let Some(f) = &raw.flapping {
        if f.max_changes == 0 {
            cx.err(&at("flapping.max_changes"), "must be at least 1");
        }
        if f.within.is_zero() {
            cx.err(&at("flapping.within"), "must be positive");
        }
    }
    if raw.max_series == 0 {
        cx.err(&at("max_series"), "must be at least 1");
    }
    let mut labels: BTreeMap<String, Template> = BTreeMap::new();
    for (k, v) in &group.labels {
        labels.insert(k.clone(), template(cx, "labels", v));
    }
    for (k, v) in &raw.labels {
        let path = at(&format!("labels.{k}"));
        check_label_name(cx, &path, k);
        if matches!(k.as_str(), "alertname" | "severity" | METRIC_NAME) {
            cx.err(
                &path,
                format!("label {k:?} is set by Vigil; use the rule's `name`/`severity`"),
            );
        }
        labels.insert(k.clone(), template(cx, &path, v));
    }
    let annotations = raw
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), template(cx, &at(&format!("annotations.{k}")), v)))
        .collect();
    let mut notify = false;
    let mut intents = Vec::new();
    for (j, a) in raw.actions.iter().enumerate() {
        let path = at(&format!("actions[{j}]"));
        let (action, t): (Action, &RawTarget) = match a {
            RawAction::Alert => {
                notify = true;
                continue;
            }
            RawAction::Isolate(t) => (Action::Isolate, t),
            RawAction::Evict(t) => (Action::Evict, t),
            RawAction::Drain(t) => (Action::Drain, t),
        };
        if action != Action::Evict && (t.pod.is_some() || t.namespace.is_some()) {
            cx.err(
                &path,
                format!(
                    "{} targets a node; `pod` and `namespace` are for evict",
                    action.as_str()
                ),
            );
        }
        if t.pod.is_some() != t.namespace.is_some() {
            cx.err(&path, "evicting one pod needs both `namespace` and `pod`");
        }
        intents.push(IntentSpec {
            action,
            node: template(cx, &path, &t.node),
            namespace: t.namespace.as_deref().map(|s| template(cx, &path, s)),
            pod: t.pod.as_deref().map(|s| template(cx, &path, s)),
        });
    }
    if cx.errs.len() > before {
        return None;
    }
    let definition = {
        let mut bytes = postcard::to_allocvec(raw).unwrap_or_default();
        bytes.extend(
            postcard::to_allocvec(&(group.interval, group.staleness, &group.labels))
                .unwrap_or_default(),
        );
        fingerprint(&bytes)
    };
    Some(Rule {
        name: raw.name.as_str().into(),
        group: Arc::clone(gname),
        file: Arc::clone(file),
        interval_ms: interval.as_millis().max(1),
        staleness_ms: group.staleness.as_millis(),
        kind,
        selector,
        by,
        rate_ms: raw.rate.map(Duration::as_millis),
        detector,
        for_ms: raw.for_.as_millis(),
        keep_firing_for_ms: raw.keep_firing_for.as_millis(),
        new_series_delay_ms: raw.new_series_delay.as_millis(),
        flapping: raw
            .flapping
            .as_ref()
            .map(|f| (f.max_changes, f.within.as_millis())),
        severity: raw.severity,
        labels: labels.into_iter().collect(),
        annotations,
        notify,
        intents,
        max_series: raw.max_series,
        definition,
        dependents: Vec::new(),
    })
}
