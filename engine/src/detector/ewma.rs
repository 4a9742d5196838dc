//! `ewma`: distance from an exponentially weighted mean, in exponentially weighted
//! standard deviations (West's incremental update; no cancellation, so no drift).

use serde::{Deserialize, Serialize};

use super::{ratio_score, zscore, Direction, ParamError, Verdict};
use crate::duration::Duration;

/// Settings of the `ewma` detector. Exactly one of `alpha` and `halflife`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EwmaConfig {
    /// Weight of each new point, 0 < alpha <= 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Time for a point's weight to halve; alpha = 1 - 2^(-interval / halflife).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halflife: Option<Duration>,
    /// Deviation, in sigmas, above which a point is anomalous (default 3).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Points seen before any decision (default 10).
    #[serde(default = "default_warmup")]
    pub warmup: u32,
    /// Which side counts (default both).
    #[serde(default)]
    pub direction: Direction,
    /// Hysteresis: once active, stay active while the deviation exceeds this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover: Option<f64>,
}

const fn default_threshold() -> f64 {
    3.0
}
const fn default_warmup() -> u32 {
    10
}

impl EwmaConfig {
    pub(super) fn compile(&self, interval: Duration) -> Result<f64, Vec<ParamError>> {
        let mut errs = Vec::new();
        let alpha = match (self.alpha, self.halflife) {
            (Some(a), None) if a > 0.0 && a <= 1.0 => a,
            (Some(_), None) => {
                errs.push(("alpha".into(), "must be in (0, 1]".into()));
                1.0
            }
            (None, Some(h)) if !h.is_zero() => {
                1.0 - (-(interval.as_millis() as f64) / h.as_millis() as f64).exp2()
            }
            (None, Some(_)) => {
                errs.push(("halflife".into(), "must be positive".into()));
                1.0
            }
            (Some(_), Some(_)) => {
                errs.push((
                    "halflife".into(),
                    "set either alpha or halflife, not both".into(),
                ));
                1.0
            }
            (None, None) => {
                errs.push((String::new(), "set alpha or halflife".into()));
                1.0
            }
        };
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            errs.push(("threshold".into(), "must be a positive number".into()));
        }
        if let Some(r) = self.recover {
            if !(r.is_finite() && r >= 0.0 && r <= self.threshold) {
                errs.push((
                    "recover".into(),
                    format!("must be between 0 and threshold ({})", self.threshold),
                ));
            }
        }
        if self.warmup < 2 {
            errs.push(("warmup".into(), "must be at least 2".into()));
        }
        if errs.is_empty() {
            Ok(alpha)
        } else {
            Err(errs)
        }
    }
}

/// Exponentially weighted mean and variance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EwmaState {
    n: u32,
    mean: f64,
    var: f64,
}

impl EwmaState {
    /// Current mean and standard deviation.
    pub fn moments(&self) -> (f64, f64) {
        (self.mean, self.var.sqrt())
    }

    pub(super) fn observe(&mut self, c: &EwmaConfig, alpha: f64, x: f64, active: bool) -> Verdict {
        let verdict = if self.n >= c.warmup {
            let sd = self.var.sqrt();
            let d = c.direction.signed(zscore(x, self.mean, sd));
            let limit = if active {
                c.recover.unwrap_or(c.threshold)
            } else {
                c.threshold
            };
            Verdict {
                anomalous: d > limit,
                score: ratio_score(d, c.threshold),
                band: Some((self.mean - c.threshold * sd, self.mean + c.threshold * sd)),
            }
        } else {
            Verdict::UNKNOWN
        };
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let diff = x - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + diff * incr);
        }
        self.n = self.n.saturating_add(1);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EwmaConfig {
        EwmaConfig {
            alpha: Some(0.1),
            halflife: None,
            threshold: 3.0,
            warmup: 5,
            direction: Direction::Both,
            recover: None,
        }
    }

    #[test]
    fn halflife_resolves_to_alpha() {
        let mut c = cfg();
        c.alpha = None;
        c.halflife = Some(Duration::from_secs(10));
        let a = c.compile(Duration::from_secs(10)).unwrap();
        assert!((a - 0.5).abs() < 1e-12);
        c.alpha = Some(0.2);
        assert!(c.compile(Duration::from_secs(10)).is_err(), "both set");
    }

    #[test]
    fn warmup_then_detects_spike() {
        let c = cfg();
        let mut s = EwmaState::default();
        for i in 0..4 {
            assert_eq!(
                s.observe(&c, 0.1, 10.0 + (i % 2) as f64, false),
                Verdict::UNKNOWN
            );
        }
        for i in 0..100 {
            assert!(!s.observe(&c, 0.1, 10.0 + (i % 2) as f64, false).anomalous);
        }
        let v = s.observe(&c, 0.1, 20.0, false);
        assert!(v.anomalous && v.score > 0.5);
    }

    #[test]
    fn no_drift_over_1e8_updates() {
        let c = cfg();
        let mut s = EwmaState::default();
        let mut x: u64 = 42;
        for _ in 0..100_000_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = 1e6 + ((x >> 33) % 2) as f64; // 1e6 or 1e6+1, equally likely
            s.observe(&c, 0.1, v, false);
        }
        let (m, sd) = s.moments();
        assert!((m - (1e6 + 0.5)).abs() < 0.5, "mean {m}");
        // Stationary EW variance of a fair coin with unit gap is about 0.25.
        assert!(sd > 0.3 && sd < 0.7, "sd {sd}");
    }
}
