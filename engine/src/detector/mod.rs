//! Detectors: per-state online models that turn a value into a decision and a score.
//!
//! Each detector has a config type (serde, strict), validated into a spec, and a state
//! that is updated in O(1) per point. Every detector reports a [`Verdict`]: whether the
//! point is anomalous, a score in [0, 1] that is exactly 0.5 at the firing threshold, and
//! the band of normal values (for charts). `active` tells a detector that its alert is
//! pending or firing, so it applies its recovery threshold (hysteresis) instead of the
//! firing one.

mod ewma;
mod growth;
mod threshold;
mod zscore;

use serde::{Deserialize, Serialize};

pub use ewma::{EwmaConfig, EwmaState};
pub use growth::{GrowthConfig, GrowthState};
pub use threshold::ThresholdConfig;
pub use zscore::{ZScoreConfig, ZScoreState};

use crate::duration::Duration;

/// The outcome of scoring one point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the point is anomalous (with hysteresis applied).
    pub anomalous: bool,
    /// Anomaly score in [0, 1]; 0.5 at the firing threshold.
    pub score: f64,
    /// Range of values the detector considered normal for this point, if it has one.
    pub band: Option<(f64, f64)>,
}

impl Verdict {
    /// A point the detector cannot judge yet (warm-up).
    pub const UNKNOWN: Verdict = Verdict {
        anomalous: false,
        score: 0.0,
        band: None,
    };
}

/// Which side of normal counts as anomalous.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Only values above normal.
    Up,
    /// Only values below normal.
    Down,
    /// Both sides.
    #[default]
    Both,
}

impl Direction {
    /// The deviation counted in this direction (negative values mean "the other side").
    pub(crate) fn signed(self, z: f64) -> f64 {
        match self {
            Direction::Up => z,
            Direction::Down => -z,
            Direction::Both => z.abs(),
        }
    }
}

/// Settings of the `absent` detector.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AbsentConfig {
    /// Expected intervals without a sample before the series counts as absent (default 3).
    #[serde(default = "default_absent_intervals")]
    pub intervals: u32,
}

const fn default_absent_intervals() -> u32 {
    3
}

/// The `detect:` block of a rule: exactly one field must be set.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Static threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdConfig>,
    /// Sliding-window z-score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zscore: Option<ZScoreConfig>,
    /// Exponentially weighted mean and variance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ewma: Option<EwmaConfig>,
    /// Consecutive growth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth: Option<GrowthConfig>,
    /// No samples for N intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absent: Option<AbsentConfig>,
}

/// A validated detector, ready to build states.
#[derive(Debug, Clone, PartialEq)]
pub enum DetectorSpec {
    /// See [`ThresholdConfig`].
    Threshold(ThresholdConfig),
    /// See [`ZScoreConfig`]; `capacity` is window / interval slots.
    ZScore(ZScoreConfig, zscore::Params),
    /// See [`EwmaConfig`]; alpha resolved from the half-life.
    Ewma(EwmaConfig, f64),
    /// See [`GrowthConfig`].
    Growth(GrowthConfig),
    /// See [`AbsentConfig`].
    Absent(AbsentConfig),
}

/// A detector parameter problem: (field path below `detect`, message).
pub type ParamError = (String, String);

impl DetectConfig {
    /// Validates the block: exactly one detector, parameters in range.
    pub fn compile(&self, interval: Duration) -> Result<DetectorSpec, Vec<ParamError>> {
        let set: Vec<&str> = [
            ("threshold", self.threshold.is_some()),
            ("zscore", self.zscore.is_some()),
            ("ewma", self.ewma.is_some()),
            ("growth", self.growth.is_some()),
            ("absent", self.absent.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, s)| s.then_some(n))
        .collect();
        match set.len() {
            0 => {
                return Err(vec![(
                    String::new(),
                    "no detector: set one of threshold, zscore, ewma, growth, absent".into(),
                )])
            }
            1 => {}
            _ => {
                return Err(vec![(
                    set[1].to_string(),
                    format!(
                        "a rule has exactly one detector, found {}; split it into separate rules",
                        set.join(" and ")
                    ),
                )])
            }
        }
        let prefix = |errs: Vec<ParamError>, name: &str| {
            errs.into_iter()
                .map(|(f, m)| (format!("{name}.{f}"), m))
                .collect::<Vec<_>>()
        };
        if let Some(c) = &self.threshold {
            return c
                .validate()
                .map(|()| DetectorSpec::Threshold(c.clone()))
                .map_err(|e| prefix(e, "threshold"));
        }
        if let Some(c) = &self.zscore {
            return c
                .compile(interval)
                .map(|p| DetectorSpec::ZScore(c.clone(), p))
                .map_err(|e| prefix(e, "zscore"));
        }
        if let Some(c) = &self.ewma {
            return c
                .compile(interval)
                .map(|a| DetectorSpec::Ewma(c.clone(), a))
                .map_err(|e| prefix(e, "ewma"));
        }
        if let Some(c) = &self.growth {
            return c
                .validate()
                .map(|()| DetectorSpec::Growth(c.clone()))
                .map_err(|e| prefix(e, "growth"));
        }
        match &self.absent {
            Some(c) if c.intervals == 0 => Err(vec![(
                "absent.intervals".into(),
                "must be at least 1".into(),
            )]),
            Some(c) => Ok(DetectorSpec::Absent(c.clone())),
            None => unreachable!("exactly one detector is set"),
        }
    }
}

/// Per-state detector memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DetectorState {
    /// Stateless.
    Stateless,
    /// Sliding window.
    ZScore(ZScoreState),
    /// Exponential moments.
    Ewma(EwmaState),
    /// Recent values.
    Growth(GrowthState),
}

impl DetectorState {
    /// Heap bytes held (window points; not the zscore window, which the caller keeps).
    pub fn heap_bytes(&self) -> usize {
        match self {
            DetectorState::Growth(s) => s.capacity() * 8,
            _ => 0,
        }
    }
}

impl DetectorSpec {
    /// Fresh state for a new series.
    pub fn new_state(&self) -> DetectorState {
        match self {
            DetectorSpec::ZScore(..) => DetectorState::ZScore(ZScoreState::new()),
            DetectorSpec::Ewma(..) => DetectorState::Ewma(EwmaState::default()),
            DetectorSpec::Growth(c) => DetectorState::Growth(GrowthState::new(c)),
            DetectorSpec::Threshold(_) | DetectorSpec::Absent(_) => DetectorState::Stateless,
        }
    }

    /// Slots of the window that the caller keeps for each state (see
    /// [`DetectorSpec::observe`]): the zscore window, 0 for the other detectors.
    pub fn window_slots(&self) -> usize {
        match self {
            DetectorSpec::ZScore(_, p) => p.capacity,
            _ => 0,
        }
    }

    /// Scores `x` at `ts` and folds it into `state` and its `window` (of
    /// [`DetectorSpec::window_slots`] slots, all NaN for a new state).
    #[inline]
    pub fn observe(
        &self,
        state: &mut DetectorState,
        window: &mut [f64],
        ts: i64,
        x: f64,
        active: bool,
    ) -> Verdict {
        match (self, state) {
            (DetectorSpec::Threshold(c), _) => c.observe(x, active),
            (DetectorSpec::ZScore(c, p), DetectorState::ZScore(s))
                if window.len() == p.capacity =>
            {
                s.observe(c, p, window, ts, x, active)
            }
            (DetectorSpec::Ewma(c, alpha), DetectorState::Ewma(s)) => {
                s.observe(c, *alpha, x, active)
            }
            (DetectorSpec::Growth(c), DetectorState::Growth(s)) => s.observe(c, x, active),
            _ => Verdict::UNKNOWN,
        }
    }

    /// Whether `state` (from a snapshot) fits this detector: the right kind, window
    /// sizes and indices in range, so that observing it cannot panic.
    pub fn accepts(&self, state: &DetectorState) -> bool {
        match (self, state) {
            (DetectorSpec::ZScore(_, p), DetectorState::ZScore(s)) => s.fits(p),
            (DetectorSpec::Ewma(..), DetectorState::Ewma(_)) => true,
            (DetectorSpec::Growth(c), DetectorState::Growth(s)) => s.fits(c),
            (DetectorSpec::Threshold(_) | DetectorSpec::Absent(_), DetectorState::Stateless) => {
                true
            }
            _ => false,
        }
    }

    /// The points of a windowed detector's window as (ts, value), oldest first.
    pub fn window_points(&self, state: &DetectorState, window: &[f64]) -> Vec<(i64, f64)> {
        match (self, state) {
            (DetectorSpec::ZScore(_, p), DetectorState::ZScore(s)) => s.points(p, window),
            _ => Vec::new(),
        }
    }

    /// The detector's name as written in rule files.
    pub fn kind(&self) -> &'static str {
        match self {
            DetectorSpec::Threshold(_) => "threshold",
            DetectorSpec::ZScore(..) => "zscore",
            DetectorSpec::Ewma(..) => "ewma",
            DetectorSpec::Growth(_) => "growth",
            DetectorSpec::Absent(_) => "absent",
        }
    }
}

/// Score of a deviation `d` against threshold `t` (both >= 0): 0.5 at `d == t`, → 1 as
/// `d` → ∞, 0 for `d <= 0`.
#[inline]
pub(crate) fn ratio_score(d: f64, t: f64) -> f64 {
    if d.is_nan() || d <= 0.0 {
        0.0
    } else if d.is_infinite() || t <= 0.0 {
        1.0
    } else {
        d / (d + t)
    }
}

/// Whether a standard deviation is zero for practical purposes, relative to the mean.
#[inline]
pub(crate) fn is_flat(sd: f64, mean: f64) -> bool {
    sd.is_nan() || sd <= 1e-12 * mean.abs().max(f64::MIN_POSITIVE)
}

/// z of `x` against `mean`/`sd`, with the flat-window convention: equal → 0, else ±∞.
#[inline]
pub(crate) fn zscore(x: f64, mean: f64, sd: f64) -> f64 {
    if is_flat(sd, mean) {
        let d = x - mean;
        if d.abs() <= 1e-12 * mean.abs().max(1e-300) {
            0.0
        } else {
            f64::INFINITY.copysign(d)
        }
    } else {
        (x - mean) / sd
    }
}
