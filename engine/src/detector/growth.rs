//! `growth`: steady growth by at least `ratio` over `samples` consecutive steps
//! (goroutine and memory leaks, queue build-up).

use serde::{Deserialize, Serialize};

use super::{ratio_score, ParamError, Verdict};

/// Settings of the `growth` detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrowthConfig {
    /// Relative growth over the steps that fires, e.g. 0.3 for +30% (required).
    pub ratio: f64,
    /// Consecutive non-decreasing steps required (required).
    pub samples: u32,
    /// Hysteresis: once active, stay active while growth is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover: Option<f64>,
}

impl GrowthConfig {
    pub(super) fn validate(&self) -> Result<(), Vec<ParamError>> {
        let mut errs = Vec::new();
        if !(self.ratio.is_finite() && self.ratio > 0.0) {
            errs.push(("ratio".into(), "must be a positive number".into()));
        }
        if !(1..=10_000).contains(&self.samples) {
            errs.push(("samples".into(), "must be between 1 and 10000".into()));
        }
        if let Some(r) = self.recover {
            if !(r.is_finite() && r >= 0.0 && r <= self.ratio) {
                errs.push((
                    "recover".into(),
                    format!("must be between 0 and ratio ({})", self.ratio),
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// The last `samples + 1` values and the current run of non-decreasing steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrowthState {
    recent: Box<[f64]>,
    next: u32,
    seen: u32,
    run: u32,
}

impl GrowthState {
    pub(super) fn new(c: &GrowthConfig) -> Self {
        GrowthState {
            recent: vec![f64::NAN; c.samples as usize + 1].into_boxed_slice(),
            next: 0,
            seen: 0,
            run: 0,
        }
    }

    /// Whether a state read from a snapshot fits `c`.
    pub(super) fn fits(&self, c: &GrowthConfig) -> bool {
        self.recent.len() == c.samples as usize + 1 && (self.next as usize) < self.recent.len()
    }

    /// Values kept.
    pub fn capacity(&self) -> usize {
        self.recent.len()
    }

    pub(super) fn observe(&mut self, c: &GrowthConfig, x: f64, active: bool) -> Verdict {
        let len = self.recent.len() as u32;
        if self.seen > 0 {
            let prev = self.recent[((self.next + len - 1) % len) as usize];
            self.run = if x >= prev { self.run + 1 } else { 0 };
        }
        // With `samples + 1` slots, the one after `next` holds the value `samples` steps back.
        let old = self.recent[((self.next + 1) % len) as usize];
        self.recent[self.next as usize] = x;
        self.next = (self.next + 1) % len;
        self.seen = self.seen.saturating_add(1);
        if self.seen <= c.samples {
            return Verdict::UNKNOWN;
        }
        let growth = if old > 0.0 {
            (x - old) / old
        } else if x > old {
            f64::INFINITY
        } else {
            0.0
        };
        let steady = self.run >= c.samples;
        let limit = if active {
            c.recover.unwrap_or(c.ratio)
        } else {
            c.ratio
        };
        Verdict {
            anomalous: steady && growth >= limit,
            score: if steady {
                ratio_score(growth, c.ratio)
            } else {
                0.0
            },
            band: (old > 0.0).then_some((f64::NEG_INFINITY, old * (1.0 + c.ratio))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GrowthConfig {
        GrowthConfig {
            ratio: 0.3,
            samples: 5,
            recover: None,
        }
    }

    #[test]
    fn fires_on_steady_growth_only() {
        let c = cfg();
        let mut s = GrowthState::new(&c);
        let vals = [100.0, 110.0, 120.0, 125.0, 128.0];
        for v in vals {
            assert!(!s.observe(&c, v, false).anomalous);
        }
        // 100 -> 131 over 5 non-decreasing steps: +31%.
        let v = s.observe(&c, 131.0, false);
        assert!(v.anomalous, "{v:?}");
        // A dip breaks the run.
        assert!(!s.observe(&c, 90.0, false).anomalous);
        for v in [200.0, 210.0, 220.0, 230.0] {
            assert!(!s.observe(&c, v, false).anomalous, "run of {v} too short");
        }
        assert!(
            s.observe(&c, 240.0, false).anomalous,
            "90 -> 240 over 5 rising steps"
        );
    }

    #[test]
    fn slow_growth_does_not_fire() {
        let c = cfg();
        let mut s = GrowthState::new(&c);
        for i in 0..50 {
            assert!(!s.observe(&c, 100.0 + i as f64, false).anomalous);
        }
    }
}
