//! `threshold`: the value leaves a static range, with optional recovery levels.

use serde::{Deserialize, Serialize};

use super::{ParamError, Verdict};

/// Settings of the `threshold` detector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// Fire when the value is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Fire when the value is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Once active, stay active until the value is at or below this (default `above`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_above: Option<f64>,
    /// Once active, stay active until the value is at or above this (default `below`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_below: Option<f64>,
}

impl ThresholdConfig {
    pub(super) fn validate(&self) -> Result<(), Vec<ParamError>> {
        let mut errs = Vec::new();
        let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
        for (name, v) in [
            ("above", self.above),
            ("below", self.below),
            ("recover_above", self.recover_above),
            ("recover_below", self.recover_below),
        ] {
            if !finite(v) {
                errs.push((name.into(), "must be a finite number".into()));
            }
        }
        if self.above.is_none() && self.below.is_none() {
            errs.push((String::new(), "set `above`, `below` or both".into()));
        }
        if let (Some(a), Some(r)) = (self.above, self.recover_above) {
            if r > a {
                errs.push((
                    "recover_above".into(),
                    format!("{r} must not exceed above ({a})"),
                ));
            }
        } else if self.recover_above.is_some() {
            errs.push(("recover_above".into(), "needs `above`".into()));
        }
        if let (Some(b), Some(r)) = (self.below, self.recover_below) {
            if r < b {
                errs.push((
                    "recover_below".into(),
                    format!("{r} must not be below below ({b})"),
                ));
            }
        } else if self.recover_below.is_some() {
            errs.push(("recover_below".into(), "needs `below`".into()));
        }
        if let (Some(a), Some(b)) = (self.above, self.below) {
            if b > a {
                errs.push((
                    "below".into(),
                    format!("{b} is above `above` ({a}): every value would fire"),
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    pub(super) fn observe(&self, x: f64, active: bool) -> Verdict {
        let mut anomalous = false;
        let mut score: f64 = 0.0;
        if let Some(a) = self.above {
            let limit = if active {
                self.recover_above.unwrap_or(a)
            } else {
                a
            };
            anomalous |= x > limit;
            score = score.max(logistic(x - a, a));
        }
        if let Some(b) = self.below {
            let limit = if active {
                self.recover_below.unwrap_or(b)
            } else {
                b
            };
            anomalous |= x < limit;
            score = score.max(logistic(b - x, b));
        }
        Verdict {
            anomalous,
            score,
            band: Some((
                self.below.unwrap_or(f64::NEG_INFINITY),
                self.above.unwrap_or(f64::INFINITY),
            )),
        }
    }
}

/// 0.5 at `d == 0`, rising with `d` on the scale of the threshold itself.
fn logistic(d: f64, threshold: f64) -> f64 {
    let scale = (threshold.abs() * 0.1).max(1e-9);
    1.0 / (1.0 + (-d / scale).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis() {
        let c = ThresholdConfig {
            above: Some(10.0),
            recover_above: Some(5.0),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        assert!(!c.observe(8.0, false).anomalous);
        assert!(c.observe(11.0, false).anomalous);
        assert!(
            c.observe(8.0, true).anomalous,
            "stays active above the recovery level"
        );
        assert!(!c.observe(5.0, true).anomalous);
        assert!((c.observe(10.0, false).score - 0.5).abs() < 1e-12);
    }

    #[test]
    fn below_and_validation() {
        let c = ThresholdConfig {
            below: Some(1.0),
            ..Default::default()
        };
        assert!(c.observe(0.5, false).anomalous);
        assert!(!c.observe(1.5, false).anomalous);
        let bad = ThresholdConfig {
            above: Some(1.0),
            recover_above: Some(2.0),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err()[0].0, "recover_above");
        assert!(ThresholdConfig::default().validate().is_err());
    }
}
