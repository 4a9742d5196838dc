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

/// Lifecycle memory of one state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// Current state: Inactive, Pending or Firing.
    pub state: AlertState,
    /// When the condition became true (pending since).
    pub active_at: i64,
    /// When the alert started firing.
    pub fired_at: i64,
    keep_firing_since: i64,
    /// Last evaluated value and score.
    pub value: f64,
    /// Last score.
    pub score: f64,
    /// Held by flap damping.
    pub flapping: bool,
    last_cond: bool,
    /// Timestamps of recent condition changes (flap damping only).
    changes: Vec<i64>,
}

impl Default for Track {
    fn default() -> Self {
        Track {
            state: AlertState::Inactive,
            active_at: NONE,
            fired_at: NONE,
            keep_firing_since: NONE,
            value: f64::NAN,
            score: 0.0,
            flapping: false,
            last_cond: false,
            changes: Vec::new(),
        }
    }
}

impl Track {
    /// Heap bytes held (flap history).
    pub fn heap_bytes(&self) -> usize {
        self.changes.capacity() * 8
    }

    /// Whether pending or firing (detectors then apply their recovery threshold).
    #[inline]
    pub fn is_active(&self) -> bool {
        self.state != AlertState::Inactive
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
        self.value = value;
        self.score = score;
        let cond = cond && ts.saturating_sub(born) >= rule.new_series_delay_ms;
        if let Some((max_changes, span)) = rule.flapping {
            if cond != self.last_cond {
                if self.changes.len() > max_changes as usize {
                    self.changes.remove(0);
                }
                self.changes.push(ts);
            }
            let recent = self.changes.iter().filter(|&&t| t > ts - span).count();
            if recent > max_changes as usize {
                self.flapping = true;
            } else if self.flapping && recent == 0 {
                self.flapping = false;
            }
        }
        self.last_cond = cond;
        if self.flapping {
            self.keep_firing_since = NONE;
            if self.state != AlertState::Firing {
                if self.state == AlertState::Inactive {
                    self.active_at = ts;
                }
                self.state = AlertState::Firing;
                self.fired_at = ts;
                return Some(AlertState::Firing);
            }
            return None;
        }
        if cond {
            self.keep_firing_since = NONE;
            match self.state {
                AlertState::Inactive => {
                    self.active_at = ts;
                    if rule.for_ms == 0 {
                        self.state = AlertState::Firing;
                        self.fired_at = ts;
                        return Some(AlertState::Firing);
                    }
                    self.state = AlertState::Pending;
                    Some(AlertState::Pending)
                }
                AlertState::Pending if ts - self.active_at >= rule.for_ms => {
                    self.state = AlertState::Firing;
                    self.fired_at = ts;
                    Some(AlertState::Firing)
                }
                _ => None,
            }
        } else {
            match self.state {
                AlertState::Pending => {
                    self.state = AlertState::Inactive;
                    self.active_at = NONE;
                    Some(AlertState::Inactive)
                }
                AlertState::Firing => {
                    if rule.keep_firing_for_ms > 0 {
                        if self.keep_firing_since == NONE {
                            self.keep_firing_since = ts;
                        }
                        if ts - self.keep_firing_since < rule.keep_firing_for_ms {
                            return None;
                        }
                    }
                    self.resolve();
                    Some(AlertState::Resolved)
                }
                _ => None,
            }
        }
    }

    /// Ends the alert (state expiry or resolution).
    pub fn resolve(&mut self) {
        self.state = AlertState::Inactive;
        self.active_at = NONE;
        self.fired_at = NONE;
        self.keep_firing_since = NONE;
        self.flapping = false;
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
        assert!(t.flapping && t.state == AlertState::Firing);
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
        assert!(!t.flapping);
    }
}
