//! Alert lifecycle per state: inactive → pending (`for`) → firing → resolved
//! (`keep_firing_for`), as Prometheus does it, plus warm-up of new states and flap damping.

use serde::{Deserialize, Serialize};

use crate::rule::Rule;

/// Where an alert is in its lifecycle.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Not active.
    #[default]
    Inactive,
    /// Condition true, waiting out `for`.
    Pending,
    /// Firing.
    Firing,
    /// Was firing; the condition cleared (a transition, never a resting state).
    Resolved,
}

impl AlertState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

const NONE: i64 = i64::MIN;

/// Lifecycle memory of one state. Most states are never active, so everything but the
/// current state lives in a [`Detail`] allocated when the condition first holds (or
/// flips, with flap damping) and dropped once the state is inactive with nothing left to
/// remember.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// Current state: Inactive, Pending or Firing.
    pub state: AlertState,
    last_cond: bool,
    detail: Option<Box<Detail>>,
}

/// The part of a [`Track`] that matters only around an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Detail {
    active_at: i64,
    fired_at: i64,
    keep_firing_since: i64,
    value: f64,
    score: f64,
    flapping: bool,
    /// Timestamps of recent condition changes (flap damping only).
    changes: Vec<i64>,
}

impl Default for Detail {
    fn default() -> Self {
        Detail {
            active_at: NONE,
            fired_at: NONE,
            keep_firing_since: NONE,
            value: f64::NAN,
            score: 0.0,
            flapping: false,
            changes: Vec::new(),
        }
    }
}

impl Track {
    /// Heap bytes held (the detail and its flap history).
    pub fn heap_bytes(&self) -> usize {
        self.detail.as_ref().map_or(0, |d| {
            std::mem::size_of::<Detail>() + d.changes.capacity() * 8
        })
    }

    /// Whether pending or firing (detectors then apply their recovery threshold).
    #[inline]
    pub fn is_active(&self) -> bool {
        self.state != AlertState::Inactive
    }

    /// When the condition became true (pending since); `i64::MIN` when inactive.
    pub fn active_at(&self) -> i64 {
        self.detail.as_ref().map_or(NONE, |d| d.active_at)
    }

    /// When the alert started firing; `i64::MIN` when not firing.
    pub fn fired_at(&self) -> i64 {
        self.detail.as_ref().map_or(NONE, |d| d.fired_at)
    }

    /// Value of the last evaluation of an active state (or of its last transition).
    pub fn value(&self) -> f64 {
        self.detail.as_ref().map_or(f64::NAN, |d| d.value)
    }

    /// Score of the last evaluation of an active state (or of its last transition).
    pub fn score(&self) -> f64 {
        self.detail.as_ref().map_or(0.0, |d| d.score)
    }

    /// Held by flap damping.
    pub fn flapping(&self) -> bool {
        self.detail.as_ref().is_some_and(|d| d.flapping)
    }

    /// Applies one evaluation at `ts`. Returns the new state when it changed:
    /// Pending, Firing, Resolved (was firing) or Inactive (a pending alert dropped).
    pub fn step(
        &mut self,
        rule: &Rule,
        ts: i64,
        cond: bool,
        value: f64,
        score: f64,
        born: i64,
    ) -> Option<AlertState> {
        let cond = cond && ts.saturating_sub(born) >= rule.new_series_delay_ms;
        let flips = rule.flapping.is_some() && cond != self.last_cond;
        if self.state == AlertState::Inactive {
            // Kept after the last transition (its value was reported); dropped once
            // flap damping no longer needs its changes (older than the span never
            // count again, as time only moves forward).
            let idle = |d: &Detail| {
                !d.flapping
                    && rule
                        .flapping
                        .is_none_or(|(_, span)| d.changes.iter().all(|&t| t <= ts - span))
            };
            if self.detail.as_deref().is_some_and(idle) {
                self.detail = None;
            }
            if !cond && !flips && self.detail.is_none() {
                self.last_cond = cond;
                return None;
            }
        }
        let d = self.detail.get_or_insert_with(Box::default);
        d.value = value;
        d.score = score;
        if let Some((max_changes, span)) = rule.flapping {
            if cond != self.last_cond {
                if d.changes.len() > max_changes as usize {
                    d.changes.remove(0);
                }
                d.changes.push(ts);
            }
            let recent = d.changes.iter().filter(|&&t| t > ts - span).count();
            if recent > max_changes as usize {
                d.flapping = true;
            } else if d.flapping && recent == 0 {
                d.flapping = false;
            }
        }
        self.last_cond = cond;
        if d.flapping {
            d.keep_firing_since = NONE;
            if self.state != AlertState::Firing {
                if self.state == AlertState::Inactive {
                    d.active_at = ts;
                }
                self.state = AlertState::Firing;
                d.fired_at = ts;
                return Some(AlertState::Firing);
            }
            return None;
        }
        if cond {
            d.keep_firing_since = NONE;
            match self.state {
                AlertState::Inactive => {
                    d.active_at = ts;
                    if rule.for_ms == 0 {
                        self.state = AlertState::Firing;
                        d.fired_at = ts;
                        return Some(AlertState::Firing);
                    }
                    self.state = AlertState::Pending;
                    Some(AlertState::Pending)
                }
                AlertState::Pending if ts - d.active_at >= rule.for_ms => {
                    self.state = AlertState::Firing;
                    d.fired_at = ts;
                    Some(AlertState::Firing)
                }
                _ => None,
            }
        } else {
            match self.state {
                AlertState::Pending => {
                    self.state = AlertState::Inactive;
                    d.active_at = NONE;
                    Some(AlertState::Inactive)
                }
                AlertState::Firing => {
                    if rule.keep_firing_for_ms > 0 {
                        if d.keep_firing_since == NONE {
                            d.keep_firing_since = ts;
                        }
                        if ts - d.keep_firing_since < rule.keep_firing_for_ms {
                            return None;
                        }
                    }
                    self.state = AlertState::Inactive;
                    d.active_at = NONE;
                    d.fired_at = NONE;
                    d.keep_firing_since = NONE;
                    d.flapping = false;
                    Some(AlertState::Resolved)
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{RuleSet, Source};

    fn rule(extra: &str) -> Rule {
        let text = format!(
            "group: g\ninterval: 1m\nrules:\n  - name: R\n    select: x\n    detect: {{ threshold: {{ above: 1 }} }}\n{extra}"
        );
        let set = RuleSet::from_sources(&[Source {
            name: "t.yaml".into(),
            text,
        }])
        .unwrap();
        set.rules[0].clone()
    }

    const M: i64 = 60_000;

    #[test]
    fn for_and_keep_firing_for_like_prometheus() {
        let r = rule("    for: 2m\n    keep_firing_for: 5m\n");
        let mut t = Track::default();
        assert_eq!(
            t.step(&r, 30 * M, true, 0.0, 0.0, 0),
            Some(AlertState::Pending)
        );
        assert_eq!(t.step(&r, 31 * M, true, 0.0, 0.0, 0), None);
        assert_eq!(
            t.step(&r, 32 * M, true, 0.0, 0.0, 0),
            Some(AlertState::Firing)
        );
        assert_eq!(t.step(&r, 33 * M, true, 0.0, 0.0, 0), None);
        for m in 34..39 {
            assert_eq!(
                t.step(&r, m * M, false, 0.0, 0.0, 0),
                None,
                "kept firing at {m}m"
            );
        }
        assert_eq!(
            t.step(&r, 39 * M, false, 0.0, 0.0, 0),
            Some(AlertState::Resolved)
        );
    }

    #[test]
    fn one_false_evaluation_drops_pending() {
        let r = rule("    for: 2m\n");
        let mut t = Track::default();
        t.step(&r, 0, true, 0.0, 0.0, 0);
        assert_eq!(
            t.step(&r, M, false, 0.0, 0.0, 0),
            Some(AlertState::Inactive)
        );
        assert_eq!(
            t.step(&r, 2 * M, true, 0.0, 0.0, 0),
            Some(AlertState::Pending)
        );
    }

    #[test]
    fn new_series_delay_suppresses_young_states() {
        let r = rule("    new_series_delay: 5m\n");
        let mut t = Track::default();
        assert_eq!(t.step(&r, 4 * M, true, 0.0, 0.0, 0), None);
        assert_eq!(
            t.step(&r, 5 * M, true, 0.0, 0.0, 0),
            Some(AlertState::Firing)
        );
    }

    #[test]
    fn flapping_is_held_then_released() {
        let r = rule("    flapping: { max_changes: 3, within: 10m }\n");
        let mut t = Track::default();
        let mut seen = Vec::new();
        for m in 0..6 {
            seen.push(t.step(&r, m * M, m % 2 == 0, 0.0, 0.0, 0));
        }
        // true(F) false(R) true(F) false -> 4th change: flapping, held firing.
        assert_eq!(
            seen[..3],
            [
                Some(AlertState::Firing),
                Some(AlertState::Resolved),
                Some(AlertState::Firing)
            ]
        );
        assert!(t.flapping() && t.state == AlertState::Firing);
        assert_eq!(seen[3..], [None, None, None]);
        // Quiet (false) for 10m: released, then resolves.
        let mut out = None;
        for m in 6..20 {
            if let Some(s) = t.step(&r, m * M, false, 0.0, 0.0, 0) {
                out = Some((m, s));
                break;
            }
        }
        assert_eq!(
            out,
            Some((15, AlertState::Resolved)),
            "last change at 5m, quiet span 10m"
        );
        assert!(!t.flapping());
    }
}
