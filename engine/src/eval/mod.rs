//! The evaluator: routes samples to rules, keeps per-(rule, state) windows and detector
//! state, runs the alert lifecycle and emits alert transitions and action intents.
//!
//! Time is event time only. Samples are buffered until the watermark passes them, then
//! evaluated in timestamp order, so the same input gives the same output however it was
//! chunked or (within the allowed lateness) reordered. Rules that work on steps
//! (aggregate, quantile, absent, compound) run at every multiple of their group interval
//! once the watermark has passed it; state expiry runs on a fixed event-time sweep.
//!
//! Outputs are [`Event`]s, drained with [`Evaluator::drain_events`]; within one release
//! they are ordered by (timestamp, rule, fingerprint), so two runs over the same input
//! give identical event streams.

mod buffer;
mod snapshot;
mod state;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use buffer::Buffer;
pub use snapshot::{SnapshotError, SNAPSHOT_VERSION};
pub use state::Point;
use state::{Input, Key, KeyLabels, Reading, RuleState};

use crate::detector::Verdict;
use crate::labels::{self, Labels, METRIC_NAME};
use crate::lifecycle::AlertState;
use crate::rule::{Action, AggregateOp, CompoundMode, Rule, RuleKind, RuleSet};
use crate::series::{is_stale_marker, Route, Routes, Sample, SeriesId, SeriesRegistry, REFUSED};
use crate::signal::bucket_quantile;
use crate::template::Vars;

/// Evaluator settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluatorConfig {
    /// How far behind the newest sample the watermark trails, ms (default 0).
    pub lateness_ms: i64,
    /// Evaluations kept per state history for charts (default 720: 2 h at 10 s).
    pub history_points: usize,
    /// Record the history of every state from its first sample, not only of states
    /// that became active (replay reports, NAB scoring). Default off.
    pub trace_all: bool,
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        EvaluatorConfig {
            lateness_ms: 0,
            history_points: 720,
            trace_all: false,
        }
    }
}

/// Latest accepted timestamp (9999-12-31T23:59:59.999Z); samples outside
/// `0..=MAX_TS` (before 1970, or in micro- or nanoseconds by mistake) are dropped and
/// counted as out of range.
pub const MAX_TS: i64 = 253_402_300_799_999;

/// How long `absent` and compound states are remembered without samples.
const ABSENT_RETENTION_MS: i64 = 24 * 3_600_000;
/// Event-time period of the expiry sweep.
const SWEEP_MS: i64 = 30_000;

/// An alert changed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Event time of the change, ms.
    pub ts: i64,
    /// Rule name.
    pub rule: Arc<str>,
    /// New state: pending, firing, resolved, or inactive (a pending alert that cleared).
    pub state: AlertState,
    /// Alert labels (state labels, group and rule labels, alertname, severity).
    pub labels: Labels,
    /// Rendered annotations.
    pub annotations: Labels,
    /// Signal value at the change.
    pub value: f64,
    /// Detector score at the change.
    pub score: f64,
    /// When the condition became true.
    pub active_at: i64,
    /// Stable hash of `labels`.
    pub fingerprint: u64,
    /// Held by flap damping.
    pub flapping: bool,
    /// Whether the rule sends this alert to alert sinks (`actions: [alert]`).
    pub notify: bool,
}

/// A rule asks the actuator to act.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    /// Event time, ms.
    pub ts: i64,
    /// Rule name.
    pub rule: Arc<str>,
    /// What to do.
    pub action: Action,
    /// Target node.
    pub node: String,
    /// Pod namespace (evict of one pod).
    pub namespace: Option<String>,
    /// Pod name (evict of one pod).
    pub pod: Option<String>,
    /// Labels of the alert that asked.
    pub labels: Labels,
    /// Fingerprint of that alert.
    pub fingerprint: u64,
}

/// Something the evaluator decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// An alert state change.
    Alert(AlertEvent),
    /// An action intent.
    Intent(Intent),
}

impl Event {
    /// Event time.
    pub fn ts(&self) -> i64 {
        match self {
            Event::Alert(a) => a.ts,
            Event::Intent(i) => i.ts,
        }
    }

    fn order(&self) -> (i64, &str, u64, u8) {
        match self {
            Event::Alert(a) => (a.ts, &a.rule, a.fingerprint, 0),
            Event::Intent(i) => (i.ts, &i.rule, i.fingerprint, 1 + i.action as u8),
        }
    }
}

/// A pending or firing alert, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveAlert {
    /// Rule name.
    pub rule: Arc<str>,
    /// Pending or firing.
    pub state: AlertState,
    /// Alert labels.
    pub labels: Labels,
    /// Rendered annotations.
    pub annotations: Labels,
    /// Last value.
    pub value: f64,
    /// Last score.
    pub score: f64,
    /// Pending since.
    pub active_at: i64,
    /// Firing since (pending: None).
    pub fired_at: Option<i64>,
    /// Fingerprint.
    pub fingerprint: u64,
    /// Held by flap damping.
    pub flapping: bool,
}

/// What [`Evaluator::series_history`] returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesHistory {
    /// Rule name.
    pub rule: Arc<str>,
    /// Alert labels.
    pub labels: Labels,
    /// Current state (inactive once resolved).
    pub state: AlertState,
    /// Pending since.
    pub active_at: Option<i64>,
    /// Firing since.
    pub fired_at: Option<i64>,
    /// Evaluations, oldest first.
    pub points: Vec<Point>,
}

/// Engine-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Samples handed to [`Evaluator::ingest`].
    pub received: u64,
    /// Samples evaluated.
    pub evaluated: u64,
    /// Dropped: older than the watermark.
    pub late: u64,
    /// Dropped: same series and timestamp as an evaluated sample.
    pub duplicate: u64,
    /// Dropped: NaN or ±Inf.
    pub non_finite: u64,
    /// Dropped: timestamp outside 1970..9999 (ms).
    #[serde(default)]
    pub out_of_range: u64,
    /// Dropped: series id not interned (or expired).
    pub unknown_series: u64,
    /// Staleness markers seen.
    pub stale_markers: u64,
    /// Series expired after going silent.
    pub expired_series: u64,
}

/// Per-rule counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    /// Samples routed to the rule.
    pub samples: u64,
    /// Samples dropped because the rule reached `max_series`.
    pub refused: u64,
    /// Detector evaluations.
    pub evaluations: u64,
    /// Live states.
    pub states: u64,
}

/// Something worth a log line, raised once per cause (the engine does no I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A rule reached its series cap; further new series are refused and counted.
    SeriesCapReached {
        /// Rule name.
        rule: Arc<str>,
        /// The cap.
        cap: u32,
    },
}

/// The event-time rule evaluator.
#[derive(Debug, Clone)]
pub struct Evaluator {
    rules: Arc<RuleSet>,
    config: EvaluatorConfig,
    series: SeriesRegistry,
    states: Vec<RuleState>,
    watermark: i64,
    max_seen: i64,
    pending: Buffer,
    stats: Stats,
    events: Vec<Event>,
    /// Earliest step time of any step rule, or the next sweep.
    next_due: i64,
    /// Next expiry sweep: a multiple of [`SWEEP_MS`] no later than the first sweep
    /// that can expire anything (see [`Evaluator::next_expiry`]). Whatever is created
    /// later lowers it again ([`Evaluator::expiry_at`]), so sweeps skipped over an idle
    /// stretch change nothing.
    next_sweep: i64,
    /// Largest staleness of any rule: a series expires that long after its last sample.
    max_staleness: i64,
    notices: Vec<Notice>,
    /// (rule, fingerprint) of alerts whose whole history is recorded.
    traced: std::collections::HashSet<(Arc<str>, u64)>,
    scratch: Scratch,
}

#[derive(Debug, Clone, Default)]
struct Scratch {
    buf: Vec<u8>,
    compound: Vec<(usize, usize, Box<[u8]>, i64)>,
    acc: Vec<(f64, u32)>,
    buckets: Vec<(u32, f64, f64)>,
    pairs: Vec<(f64, f64)>,
}

const UNSTARTED: i64 = i64::MIN;

impl Evaluator {
    /// An evaluator for `rules` with no state.
    pub fn new(rules: Arc<RuleSet>, config: EvaluatorConfig) -> Self {
        let states = rules.rules.iter().map(RuleState::new).collect();
        let max_staleness = rules
            .rules
            .iter()
            .map(|r| r.staleness_ms)
            .max()
            .unwrap_or(300_000);
        Evaluator {
            rules,
            config,
            series: SeriesRegistry::default(),
            states,
            watermark: UNSTARTED,
            max_seen: UNSTARTED,
            pending: Buffer::default(),
            stats: Stats::default(),
            events: Vec::new(),
            next_due: UNSTARTED,
            next_sweep: UNSTARTED,
            max_staleness,
            notices: Vec::new(),
            traced: std::collections::HashSet::new(),
            scratch: Scratch::default(),
        }
    }

    /// The settings this evaluator runs with.
    pub fn config(&self) -> EvaluatorConfig {
        self.config
    }

    /// The rule set being evaluated.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Interns a label set; use the id in [`Sample`]s.
    pub fn intern(&mut self, labels: &Labels) -> SeriesId {
        self.series.intern(labels)
    }

    /// The series registry, for interning borrowed label pairs.
    pub fn series_mut(&mut self) -> &mut SeriesRegistry {
        &mut self.series
    }

    /// The series registry.
    pub fn series(&self) -> &SeriesRegistry {
        &self.series
    }

    /// Current watermark: every sample with a smaller timestamp has been evaluated.
    pub fn watermark(&self) -> Option<i64> {
        (self.watermark != UNSTARTED).then_some(self.watermark)
    }

    /// Engine-wide counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counters of rule `i` (index in the rule set).
    pub fn rule_stats(&self, i: usize) -> RuleStats {
        let s = &self.states[i];
        let mut r = s.stats.clone();
        r.states = s.keys.live() as u64;
        r
    }

    /// Takes the notices raised since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Takes the events decided since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Samples waiting for the watermark.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Adds samples. Samples older than the watermark are dropped as late; the rest
    /// are evaluated once the watermark (newest timestamp − lateness) passes them.
    pub fn ingest(&mut self, samples: &[Sample]) {
        self.stats.received += samples.len() as u64;
        self.pending.reserve(samples.len());
        let mut max = self.max_seen;
        let sorted_tail = self.pending.last().map_or(UNSTARTED, |s| s.ts);
        let mut in_order = true;
        let mut prev = sorted_tail;
        let mut appended = 0;
        for s in samples {
            if !(0..=MAX_TS).contains(&s.ts) {
                self.stats.out_of_range += 1;
                continue;
            }
            if s.ts < self.watermark {
                self.stats.late += 1;
                continue;
            }
            if !s.value.is_finite() && !is_stale_marker(s.value) {
                self.stats.non_finite += 1;
                continue;
            }
            if let Some(e) = self
                .series
                .entries
                .get_mut(s.series as usize)
                .filter(|e| e.live)
            {
                e.buffered += 1;
            } else {
                self.stats.unknown_series += 1;
                continue;
            }
            in_order &= s.ts >= prev;
            prev = s.ts;
            max = max.max(s.ts);
            self.pending.push(*s);
            appended += 1;
        }
        if !in_order {
            // Stable: among equal timestamps, arrival order decides (first wins). The
            // buffer was sorted, so only its part after the batch's oldest sample moves:
            // sort the batch, then merge it with that part (its two sorted runs).
            let live = self.pending.live_mut();
            let start = live.len() - appended;
            live[start..].sort_by_key(|s| s.ts);
            let oldest = live[start].ts;
            let from = live[..start].partition_point(|s| s.ts <= oldest);
            live[from..].sort_by_key(|s| s.ts);
        }
        self.max_seen = max;
        if max != UNSTARTED {
            self.advance_watermark(max.saturating_sub(self.config.lateness_ms));
        }
    }

    /// Moves the watermark forward to `ts` (never back) and evaluates what it passes.
    /// The live service calls this from the wall clock when intake is idle, so that
    /// absence rules fire when everything goes quiet.
    pub fn advance_watermark(&mut self, ts: i64) {
        let ts = ts.clamp(0, MAX_TS + 1);
        if ts <= self.watermark {
            return;
        }
        if std::mem::take(&mut self.series.fresh) && self.next_sweep != UNSTARTED {
            // Series interned since the last release: the next sweep (the first one
            // not run yet) starts their staleness clocks.
            self.lower_next_sweep(ceil_to(self.watermark, SWEEP_MS));
        }
        self.watermark = ts;
        self.release();
    }

    /// Evaluates every buffered sample (end of a replay).
    pub fn flush(&mut self) {
        if self.max_seen != UNSTARTED {
            self.advance_watermark(self.max_seen.saturating_add(1));
        }
    }

    fn release(&mut self) {
        let w = self.watermark;
        let n = self.pending.live().partition_point(|s| s.ts < w);
        let first_event = self.events.len();
        // Evaluated in place (nothing is buffered while a release runs), then dropped
        // from the buffer: no second buffer as large as the largest release.
        let pending = std::mem::take(&mut self.pending);
        let batch = &pending.live()[..n];
        if self.next_sweep == UNSTARTED {
            if let Some(first) = batch.first() {
                self.start_clocks(first.ts);
            }
        }
        let rules = Arc::clone(&self.rules);
        for s in batch {
            if s.ts > self.next_due {
                self.run_steps_before(s.ts);
            }
            self.process(&rules, *s);
        }
        self.pending = pending;
        self.pending.consume(n);
        if self.next_sweep != UNSTARTED && w > self.next_due {
            self.run_steps_before(w);
        }
        if self.events.len() - first_event > 1 {
            self.events[first_event..].sort_by(|a, b| {
                let (x, y) = (a.order(), b.order());
                x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
            });
        }
    }

    fn start_clocks(&mut self, first_ts: i64) {
        let align = |ts: i64, step: i64| ts.div_euclid(step) * step;
        for (st, rule) in self.states.iter_mut().zip(&self.rules.rules) {
            if rule.kind != RuleKind::Direct {
                st.next_step = align(first_ts, rule.interval_ms);
            }
        }
        self.next_sweep = align(first_ts, SWEEP_MS) + SWEEP_MS;
        self.recompute_next_due();
    }

    fn recompute_next_due(&mut self) {
        self.next_due = self
            .states
            .iter()
            .map(|s| s.next_step)
            .filter(|&t| t != UNSTARTED)
            .fold(self.next_sweep, i64::min);
    }

    /// Runs every step (and sweep) scheduled strictly before `limit`, in time order:
    /// plain step rules, then compound rules, then the sweep.
    fn run_steps_before(&mut self, limit: i64) {
        while self.next_due < limit {
            let t = self.next_due;
            for phase in 0..2 {
                for i in 0..self.states.len() {
                    let is_compound = matches!(self.rules.rules[i].kind, RuleKind::Compound(_));
                    if self.states[i].next_step == t && (phase == 1) == is_compound {
                        self.step_rule(i, t);
                        let rule = &self.rules.rules[i];
                        let st = &mut self.states[i];
                        // A rule with no state and no input has nothing to evaluate until
                        // a sample arrives (at `limit` at the earliest): skip its idle
                        // steps. A compound rule gets its states from other rules'
                        // evaluations, possibly at steps before `limit`: the first one
                        // brings its next step back (`apply_compound_updates`).
                        st.next_step = if st.keys.live() == 0 && st.inputs.live() == 0 {
                            let skip = (limit - 1 - t).div_euclid(rule.interval_ms).max(0);
                            t + (skip + 1) * rule.interval_ms
                        } else {
                            t + rule.interval_ms
                        };
                    }
                }
            }
            if self.next_sweep == t {
                self.sweep(t);
                self.next_sweep = self.next_expiry(t);
            }
            self.recompute_next_due();
        }
    }

    /// Evaluates one released sample. `rules` is the evaluator's own rule set, held by
    /// the caller so the per-sample path does not touch the `Arc`'s counter.
    fn process(&mut self, rules: &RuleSet, s: Sample) {
        let entry = &mut self.series.entries[s.series as usize];
        if !entry.live {
            self.stats.unknown_series += 1;
            return;
        }
        entry.buffered = entry.buffered.saturating_sub(1);
        if s.ts <= entry.last_ts() {
            self.stats.duplicate += 1;
            if entry.buffered == 0 && entry.routes.is_none() {
                // An expired series kept for this sample: the next sweep removes it.
                let at = entry
                    .last_ts()
                    .saturating_add(self.max_staleness)
                    .max(s.ts - 1);
                self.expiry_at(at);
            }
            return;
        }
        entry.set_last_ts(s.ts);
        let expires = s.ts.saturating_add(self.max_staleness);
        if expires < self.next_sweep {
            // A new or revived series (a live one was already due no earlier).
            self.expiry_at(expires);
        }
        if is_stale_marker(s.value) {
            self.stats.stale_markers += 1;
            return;
        }
        self.stats.evaluated += 1;
        if self.series.entries[s.series as usize].routes.is_none() {
            let routes = self.route(s.series, s.ts);
            self.series.entries[s.series as usize].routes = routes;
        }
        let routes = self.series.entries[s.series as usize].routes.take();
        for r in routes.as_slice() {
            self.on_sample(&rules.rules[r.rule as usize], *r, s.ts, s.value);
        }
        self.series.entries[s.series as usize].routes = routes;
        if !self.scratch.compound.is_empty() {
            self.apply_compound_updates();
        }
    }

    /// Finds the rules a series feeds and gives it an input slot in each.
    fn route(&mut self, id: SeriesId, ts: i64) -> Routes {
        let mut routes = Vec::new();
        let rules = Arc::clone(&self.rules);
        let mut labels = Vec::new();
        self.series.write_labels(id, false, &mut labels);
        for (i, rule) in rules.rules.iter().enumerate() {
            let Some(sel) = &rule.selector else { continue };
            if !sel.matches(&labels) {
                continue;
            }
            let input = self.add_input(i, id, ts);
            routes.push(Route {
                rule: i as u32,
                input,
            });
        }
        Routes::from_vec(routes)
    }

    /// Creates the input slot of series `id` in rule `i` (and its state if new).
    fn add_input(&mut self, i: usize, id: SeriesId, born: i64) -> u32 {
        let rules = Arc::clone(&self.rules);
        let rule = &rules.rules[i];
        let mut series_labels = Vec::new();
        self.series.write_labels(id, false, &mut series_labels);
        let labels = &series_labels;
        let buf = &mut self.scratch.buf;
        let mut le = f64::NAN;
        // A state of a rule without `by` keeps no labels of its own: they are the
        // series' (without `__name__`).
        let mut derived = false;
        match &rule.kind {
            RuleKind::Aggregate { by, .. } => labels::project(labels, by, buf),
            RuleKind::Quantile { by, .. } => {
                le = labels::get(labels, "le")
                    .and_then(parse_le)
                    .unwrap_or(f64::NAN);
                match by {
                    Some(by) => labels::project(labels, by, buf),
                    None => labels::without(labels, &[METRIC_NAME, "le"], buf),
                }
            }
            _ => match &rule.by {
                Some(by) => labels::project(labels, by, buf),
                None => {
                    labels::without(labels, &[METRIC_NAME], buf);
                    derived = true;
                }
            },
        }
        let st = &mut self.states[i];
        let series = &self.series;
        // A one-to-one rule has no index: a new series has no state yet.
        let found = if st.one_to_one {
            None
        } else {
            st.keys.find(buf, series)
        };
        let key = match found {
            Some(k) => k,
            None if st.keys.live() >= rule.max_series as usize => {
                if !st.cap_noticed {
                    st.cap_noticed = true;
                    self.notices.push(Notice::SeriesCapReached {
                        rule: Arc::clone(&rule.name),
                        cap: rule.max_series,
                    });
                }
                return REFUSED;
            }
            None => {
                let labels = if derived {
                    KeyLabels::Series(id)
                } else {
                    KeyLabels::Own(buf.as_slice().into())
                };
                let k = st.keys.insert(buf, labels, Key::new(rule, born), series);
                st.windows.reset(k);
                st.set_born(rule, k, born);
                if matches!(rule.kind, RuleKind::Absent { .. }) {
                    // Kept past its inputs' expiry.
                    self.expiry_at(born.saturating_add(ABSENT_RETENTION_MS));
                }
                self.maybe_trace(i, k);
                k
            }
        };
        let st = &mut self.states[i];
        st.keys.get_mut(key).refs += 1;
        if st.one_to_one {
            // The route leads to the state itself.
            return key;
        }
        let slot = st.inputs.insert(Input::new(id, key));
        if rule.rate_ms.is_some() {
            // A fresh history (a reused slot's was reset when it was freed).
            *st.rate_mut(slot) = Default::default();
        }
        if matches!(
            rule.kind,
            RuleKind::Aggregate { .. } | RuleKind::Quantile { .. }
        ) {
            *st.reading_mut(slot) = Reading {
                last_ts: UNSTARTED,
                value: f64::NAN,
                le,
            };
        }
        slot
    }

    fn on_sample(&mut self, rule: &Rule, r: Route, ts: i64, v: f64) {
        let i = r.rule as usize;
        let st = &mut self.states[i];
        st.stats.samples += 1;
        if r.input == REFUSED {
            st.stats.refused += 1;
            return;
        }
        let k = if st.one_to_one {
            r.input
        } else {
            st.inputs.get(r.input).key()
        };
        let value = match rule.rate_ms {
            Some(range) => st
                .rate_mut(r.input)
                .update(ts, v, range)
                .unwrap_or(f64::NAN),
            None => v,
        };
        st.keys.get_mut(k).last_seen = ts;
        if rule.kind != RuleKind::Direct {
            if matches!(
                rule.kind,
                RuleKind::Aggregate { .. } | RuleKind::Quantile { .. }
            ) {
                let reading = st.reading_mut(r.input);
                reading.last_ts = ts;
                reading.value = value;
            }
            return;
        }
        if value.is_nan() {
            return;
        }
        let key = st.keys.get_mut(k);
        let Some(det) = &rule.detector else { return };
        let window = st.windows.get_mut(k);
        let verdict = det.observe(&mut key.detector, window, ts, value, key.track.is_active());
        st.stats.evaluations += 1;
        self.evaluate(rule, i, k, ts, verdict, value);
    }

    /// Runs the lifecycle of state `k` of rule `i` and emits what changed.
    fn evaluate(&mut self, rule: &Rule, i: usize, k: u32, ts: i64, verdict: Verdict, value: f64) {
        let st = &mut self.states[i];
        let born = st.born(k);
        let key = st.keys.get_mut(k);
        let change = key
            .track
            .step(rule, ts, verdict.anomalous, value, verdict.score, born);
        key.record(
            rule,
            st.windows.get(k),
            ts,
            value,
            verdict,
            self.config.history_points,
        );
        if let Some(change) = change {
            self.emit(rule, i, k, ts, change);
        }
        let key = self.states[i].keys.get(k);
        if key.track.state == AlertState::Firing && !rule.dependents.is_empty() {
            let mut own = Vec::new();
            key.labels.write(&self.series, &mut own);
            for &(c, pos) in &rule.dependents {
                if let RuleKind::Compound(spec) = &self.rules.rules[c].kind {
                    labels::project(&own, &spec.on, &mut self.scratch.buf);
                    self.scratch
                        .compound
                        .push((c, pos, self.scratch.buf.as_slice().into(), ts));
                }
            }
        }
    }

    fn apply_compound_updates(&mut self) {
        let updates = std::mem::take(&mut self.scratch.compound);
        for (c, pos, buf, ts) in &updates {
            let rule = &self.rules.rules[*c];
            let st = &mut self.states[*c];
            let k = match st.keys.find(buf, &self.series) {
                Some(k) => k,
                None if st.keys.live() >= rule.max_series as usize => {
                    st.stats.refused += 1;
                    continue;
                }
                None => {
                    let k = st.keys.insert(
                        buf,
                        KeyLabels::Own(buf.clone()),
                        Key::new(rule, *ts),
                        &self.series,
                    );
                    st.windows.reset(k);
                    st.set_born(rule, k, *ts);
                    // Wake the rule if it skipped its idle steps: its first step at or
                    // after `ts` (not run yet: compound rules step after the others).
                    let step = ceil_to(*ts, rule.interval_ms);
                    if st.next_step != UNSTARTED && step < st.next_step {
                        st.next_step = step;
                        self.next_due = self.next_due.min(step);
                    }
                    self.expiry_at(ts.saturating_add(ABSENT_RETENTION_MS));
                    self.maybe_trace(*c, k);
                    k
                }
            };
            let st = &mut self.states[*c];
            let key = st.keys.get_mut(k);
            key.set_fired(*pos, *ts);
            key.last_seen = *ts;
        }
        self.scratch.compound = updates;
        self.scratch.compound.clear();
    }

    /// Evaluates step rule `i` at step time `t`.
    fn step_rule(&mut self, i: usize, t: i64) {
        let rules = Arc::clone(&self.rules);
        let rule = &rules.rules[i];
        match &rule.kind {
            RuleKind::Direct => {}
            RuleKind::Aggregate { op, .. } => {
                let st = &mut self.states[i];
                let acc = &mut self.scratch.acc;
                acc.clear();
                acc.resize(st.keys.slots(), (f64::NAN, 0));
                let horizon = t - rule.staleness_ms;
                for (slot, input) in st.inputs.iter() {
                    let x = st.reading(slot);
                    if x.last_ts <= horizon || x.last_ts > t || !x.value.is_finite() {
                        continue;
                    }
                    let (a, n) = &mut acc[input.key() as usize];
                    *a = match (op, *n) {
                        (_, 0) => x.value,
                        (AggregateOp::Sum | AggregateOp::Avg, _) => *a + x.value,
                        (AggregateOp::Min, _) => a.min(x.value),
                        (AggregateOp::Max, _) => a.max(x.value),
                        (AggregateOp::Count, _) => 0.0,
                    };
                    *n += 1;
                }
                let acc = std::mem::take(&mut self.scratch.acc);
                for (k, &(a, n)) in acc.iter().enumerate() {
                    if n == 0 {
                        continue;
                    }
                    let value = match op {
                        AggregateOp::Avg => a / f64::from(n),
                        AggregateOp::Count => f64::from(n),
                        _ => a,
                    };
                    self.detect_at(rule, i, k as u32, t, value);
                }
                self.scratch.acc = acc;
            }
            RuleKind::Quantile { q, .. } => {
                let st = &self.states[i];
                let horizon = t - rule.staleness_ms;
                let mut b = std::mem::take(&mut self.scratch.buckets);
                b.clear();
                b.extend(
                    st.inputs
                        .iter()
                        .map(|(slot, input)| (input.key(), st.reading(slot)))
                        .filter(|(_, x)| {
                            x.last_ts > horizon && x.value.is_finite() && !x.le.is_nan()
                        })
                        .map(|(key, x)| (key, x.le, x.value)),
                );
                b.sort_by(|x, y| {
                    (x.0, x.1)
                        .partial_cmp(&(y.0, y.1))
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                let mut pairs = std::mem::take(&mut self.scratch.pairs);
                let mut start = 0;
                while start < b.len() {
                    let k = b[start].0;
                    let end = start + b[start..].iter().take_while(|x| x.0 == k).count();
                    pairs.clear();
                    for &(_, le, v) in &b[start..end] {
                        match pairs.last_mut() {
                            Some(last) if last.0 == le => last.1 += v,
                            _ => pairs.push((le, v)),
                        }
                    }
                    let value = bucket_quantile(*q, &mut pairs);
                    if value.is_finite() {
                        self.detect_at(rule, i, k, t, value);
                    }
                    start = end;
                }
                self.scratch.buckets = b;
                self.scratch.pairs = pairs;
            }
            RuleKind::Absent { after_ms } => {
                let keys: Vec<(u32, i64)> = self.states[i]
                    .keys
                    .iter()
                    .map(|(k, key)| (k, key.last_seen))
                    .collect();
                for (k, last) in keys {
                    let silent = t - last;
                    let cond = silent >= *after_ms;
                    let score = crate::detector::ratio_score(silent as f64, *after_ms as f64);
                    self.states[i].stats.evaluations += 1;
                    let verdict = Verdict {
                        anomalous: cond,
                        score,
                        band: Some((0.0, *after_ms as f64 / 1000.0)),
                    };
                    self.evaluate(rule, i, k, t, verdict, silent as f64 / 1000.0);
                }
            }
            RuleKind::Compound(spec) => {
                let since = t - spec.within_ms;
                let keys: Vec<(u32, usize)> = self.states[i]
                    .keys
                    .iter()
                    .map(|(k, key)| {
                        (
                            k,
                            key.fired()
                                .iter()
                                .filter(|&&f| f != UNSTARTED && f >= since)
                                .count(),
                        )
                    })
                    .collect();
                for (k, recent) in keys {
                    let cond = match spec.mode {
                        CompoundMode::All => recent == spec.refs.len(),
                        CompoundMode::Any => recent > 0,
                    };
                    let score = recent as f64 / spec.refs.len().max(1) as f64;
                    self.states[i].stats.evaluations += 1;
                    let verdict = Verdict {
                        anomalous: cond,
                        score,
                        band: None,
                    };
                    self.evaluate(rule, i, k, t, verdict, recent as f64);
                }
            }
        }
        if !self.scratch.compound.is_empty() {
            self.apply_compound_updates();
        }
    }

    /// Feeds a step value to the detector of state `k` and runs its lifecycle.
    fn detect_at(&mut self, rule: &Rule, i: usize, k: u32, t: i64, value: f64) {
        let Some(det) = &rule.detector else { return };
        let st = &mut self.states[i];
        let key = st.keys.get_mut(k);
        let window = st.windows.get_mut(k);
        let verdict = det.observe(&mut key.detector, window, t, value, key.track.is_active());
        self.states[i].stats.evaluations += 1;
        self.evaluate(rule, i, k, t, verdict, value);
    }

    /// The next sweep time after `t` that can expire anything: the first multiple of
    /// the sweep period past the earliest expiry, so long silences are crossed in one
    /// jump instead of one sweep every 30 s.
    fn next_expiry(&self, t: i64) -> i64 {
        let max_staleness = self.max_staleness;
        let mut first = i64::MAX;
        // Expired series kept for their buffered samples wait for those, not a sweep.
        for e in self
            .series
            .entries
            .iter()
            .filter(|e| e.live && !(e.routes.is_none() && e.buffered > 0))
        {
            let last = if e.last_ts() != UNSTARTED {
                e.last_ts()
            } else {
                e.idle_since()
            };
            first = first.min(if last == UNSTARTED {
                t
            } else {
                last.saturating_add(max_staleness)
            });
        }
        for (rule, st) in self.rules.rules.iter().zip(&self.states) {
            let keep = match rule.kind {
                RuleKind::Absent { .. } | RuleKind::Compound(_) => ABSENT_RETENTION_MS,
                _ => rule.staleness_ms,
            };
            for (_, key) in st.keys.iter() {
                first = first.min(key.last_seen.saturating_add(keep));
            }
        }
        let next = first.min(MAX_TS + SWEEP_MS).div_euclid(SWEEP_MS) * SWEEP_MS + SWEEP_MS;
        next.max(t + SWEEP_MS)
    }

    /// Something created during evaluation can expire once event time passes `at`
    /// (at or after the sample or step being evaluated): brings the next sweep back to
    /// the first sweep after `at` if it was scheduled later.
    fn expiry_at(&mut self, at: i64) {
        if self.next_sweep != UNSTARTED {
            let sweep = at.min(MAX_TS + SWEEP_MS).div_euclid(SWEEP_MS) * SWEEP_MS + SWEEP_MS;
            self.lower_next_sweep(sweep);
        }
    }

    fn lower_next_sweep(&mut self, sweep: i64) {
        if sweep < self.next_sweep {
            self.next_sweep = sweep;
            self.next_due = self.next_due.min(sweep);
        }
    }

    /// Expires silent series and the states they leave behind.
    fn sweep(&mut self, t: i64) {
        let horizon = t - self.max_staleness;
        // Expiry looks only at evaluated samples (every sample up to `t` has been), so
        // it does not depend on how the input was batched. Expired series are removed
        // last: states may still read their labels (ascending ids).
        let mut removed = Vec::new();
        for id in 0..self.series.entries.len() {
            let e = &mut self.series.entries[id];
            if !e.live {
                continue;
            }
            let last = if e.last_ts() != UNSTARTED {
                e.last_ts()
            } else {
                // Interned but never evaluated: its staleness clock starts now.
                if e.idle_since() == UNSTARTED {
                    e.set_idle_since(t);
                }
                e.idle_since()
            };
            if last >= horizon || (e.routes.is_none() && e.buffered > 0) {
                continue;
            }
            let had_state = e.routes.is_some();
            for r in e.routes.take().as_slice() {
                if r.input != REFUSED {
                    let st = &mut self.states[r.rule as usize];
                    if st.one_to_one {
                        if st.keys.contains(r.input) {
                            st.keys.get_mut(r.input).refs -= 1;
                        }
                    } else if let Some(input) = st.remove_input(r.input) {
                        st.keys.get_mut(input.key()).refs -= 1;
                    }
                }
            }
            if had_state || e.last_ts() != UNSTARTED {
                self.stats.expired_series += 1;
            }
            if e.buffered == 0 {
                removed.push(id as u32);
            } else {
                // Samples are on their way: they start the series afresh.
                e.set_idle_since(UNSTARTED);
            }
        }
        let rules = Arc::clone(&self.rules);
        for (i, rule) in rules.rules.iter().enumerate() {
            let mut expired = Vec::new();
            let mut orphaned = Vec::new();
            for (k, key) in self.states[i].keys.iter() {
                let expires = match rule.kind {
                    RuleKind::Absent { .. } | RuleKind::Compound(_) => {
                        t - key.last_seen > ABSENT_RETENTION_MS
                    }
                    _ => key.refs == 0 && key.last_seen < t - rule.staleness_ms,
                };
                if expires {
                    expired.push(k);
                } else if let KeyLabels::Series(id) = key.labels {
                    if removed.binary_search(&id).is_ok() {
                        orphaned.push(k);
                    }
                }
            }
            for k in orphaned {
                // The state outlives the series its labels are kept with: copy them.
                let mut own = Vec::new();
                let key = self.states[i].keys.get(k);
                key.labels.write(&self.series, &mut own);
                self.states[i].keys.get_mut(k).labels = KeyLabels::Own(own.into());
            }
            for k in expired {
                let state = self.states[i].keys.get(k).track.state;
                if state != AlertState::Inactive {
                    let change = if state == AlertState::Firing {
                        AlertState::Resolved
                    } else {
                        AlertState::Inactive
                    };
                    self.emit(rule, i, k, t, change);
                }
                self.states[i].keys.remove(k, &self.series);
            }
        }
        for id in removed {
            self.series.remove(id);
        }
    }

    /// Full labels of an alert of `rule` whose state labels are `key`.
    fn alert_labels(rule: &Rule, key: &[u8]) -> Labels {
        let mut out = labels::decode(key);
        let base = out.clone();
        for (k, t) in &rule.labels {
            let v = t.render(Vars {
                labels: &base,
                value: f64::NAN,
                score: f64::NAN,
            });
            out.insert(k.clone(), v);
        }
        out.insert("alertname".into(), rule.name.to_string());
        out.insert("severity".into(), rule.severity.as_str().into());
        out
    }

    /// Rendered annotations; a state held by flap damping gets `flapping: "true"` (an
    /// annotation, not a label, so the alert keeps its identity).
    fn annotations(rule: &Rule, vars: Vars<'_>, flapping: bool) -> Labels {
        let mut out: Labels = rule
            .annotations
            .iter()
            .map(|(k, t)| (k.clone(), t.render(vars)))
            .collect();
        if flapping {
            out.insert("flapping".into(), "true".into());
        }
        out
    }

    /// The encoded labels of state `k` of rule `i`.
    fn key_labels(&self, i: usize, k: u32) -> Vec<u8> {
        let mut out = Vec::new();
        self.states[i]
            .keys
            .get(k)
            .labels
            .write(&self.series, &mut out);
        out
    }

    fn emit(&mut self, rule: &Rule, i: usize, k: u32, ts: i64, change: AlertState) {
        let labels = Self::alert_labels(rule, &self.key_labels(i, k));
        let key = self.states[i].keys.get(k);
        let fingerprint = labels::fingerprint(&labels::encode(&labels));
        let track = &key.track;
        let vars = Vars {
            labels: &labels,
            value: track.value(),
            score: track.score(),
        };
        let annotations = Self::annotations(rule, vars, track.flapping());
        let active_at = if track.active_at() == UNSTARTED {
            ts
        } else {
            track.active_at()
        };
        if change == AlertState::Firing {
            for spec in &rule.intents {
                self.events.push(Event::Intent(Intent {
                    ts,
                    rule: Arc::clone(&rule.name),
                    action: spec.action,
                    node: spec.node.render(vars),
                    namespace: spec.namespace.as_ref().map(|t| t.render(vars)),
                    pod: spec.pod.as_ref().map(|t| t.render(vars)),
                    labels: labels.clone(),
                    fingerprint,
                }));
            }
        }
        self.events.push(Event::Alert(AlertEvent {
            ts,
            rule: Arc::clone(&rule.name),
            state: change,
            labels,
            annotations,
            value: track.value(),
            score: track.score(),
            active_at,
            fingerprint,
            flapping: track.flapping(),
            notify: rule.notify,
        }));
    }

    /// Every pending or firing alert, ordered by rule and fingerprint.
    pub fn alerts(&self) -> Vec<ActiveAlert> {
        let mut out = Vec::new();
        for (i, (rule, st)) in self.rules.rules.iter().zip(&self.states).enumerate() {
            for (k, key) in st.keys.iter() {
                let track = &key.track;
                if !track.is_active() {
                    continue;
                }
                let labels = Self::alert_labels(rule, &self.key_labels(i, k));
                let fingerprint = labels::fingerprint(&labels::encode(&labels));
                let vars = Vars {
                    labels: &labels,
                    value: track.value(),
                    score: track.score(),
                };
                out.push(ActiveAlert {
                    rule: Arc::clone(&rule.name),
                    state: track.state,
                    annotations: Self::annotations(rule, vars, track.flapping()),
                    labels,
                    value: track.value(),
                    score: track.score(),
                    active_at: track.active_at(),
                    fired_at: (track.state == AlertState::Firing).then_some(track.fired_at()),
                    fingerprint,
                    flapping: track.flapping(),
                });
            }
        }
        out.sort_by(|a, b| (&a.rule, a.fingerprint).cmp(&(&b.rule, b.fingerprint)));
        out
    }

    /// The recorded history of the alert of rule `rule` with fingerprint `fingerprint`:
    /// every evaluation since the alert first became pending (preceded, for z-score
    /// rules, by the window it was scored against), with the detector's band.
    pub fn series_history(&self, rule: &str, fingerprint: u64) -> Option<SeriesHistory> {
        let i = self.rules.rules.iter().position(|r| &*r.name == rule)?;
        let rule = &self.rules.rules[i];
        self.states[i].keys.iter().find_map(|(k, key)| {
            let labels = Self::alert_labels(rule, &self.key_labels(i, k));
            (labels::fingerprint(&labels::encode(&labels)) == fingerprint).then(|| SeriesHistory {
                rule: Arc::clone(&rule.name),
                labels,
                state: key.track.state,
                active_at: (key.track.active_at() != UNSTARTED).then_some(key.track.active_at()),
                fired_at: (key.track.fired_at() != UNSTARTED).then_some(key.track.fired_at()),
                points: key
                    .history()
                    .map(|h| h.points().collect())
                    .unwrap_or_default(),
            })
        })
    }

    /// Records the full history of the alert of `rule` with `fingerprint` from its
    /// first sample (for reports); takes effect for states created afterwards.
    pub fn trace(&mut self, rule: &str, fingerprint: u64) {
        self.traced.insert((rule.into(), fingerprint));
    }

    fn maybe_trace(&mut self, i: usize, k: u32) {
        let rule = &self.rules.rules[i];
        if self.config.trace_all
            || (!self.traced.is_empty()
                && self.traced.contains(&(
                    Arc::clone(&rule.name),
                    labels::fingerprint(&labels::encode(&Self::alert_labels(
                        rule,
                        &self.key_labels(i, k),
                    ))),
                )))
        {
            self.states[i].keys.get_mut(k).trace();
        }
    }

    /// Approximate heap bytes held by series and rule state.
    pub fn heap_bytes(&self) -> usize {
        self.series.heap_bytes() + self.states.iter().map(RuleState::heap_bytes).sum::<usize>()
    }
}

/// The first multiple of `step` at or after `t`.
fn ceil_to(t: i64, step: i64) -> i64 {
    let down = t.div_euclid(step) * step;
    if down == t {
        t
    } else {
        down + step
    }
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests;
