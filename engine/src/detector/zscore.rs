//! `zscore`: how many standard deviations a point lies from a sliding window of the
//! points before it.
//!
//! The window is a ring of one f64 per `interval` slot (8 bytes a point; the latest
//! sample in a slot wins), so time-based eviction is implicit: advancing to a new slot
//! clears the slots that fell out of the window. Sums are kept relative to a shift and
//! recomputed from the ring once per window length, which bounds floating-point drift
//! (amortised O(1), tested over 10^8 updates).

use serde::{Deserialize, Serialize};

use super::{is_flat, ratio_score, zscore, Direction, ParamError, Verdict};
use crate::duration::Duration;

/// Settings of the `zscore` detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZScoreConfig {
    /// Length of the sliding window (required).
    pub window: Duration,
    /// |z| above which a point is anomalous (default 3).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Points the window needs before any decision (default 10).
    #[serde(default = "default_min_samples")]
    pub min_samples: u32,
    /// Which side counts (default both).
    #[serde(default)]
    pub direction: Direction,
    /// Hysteresis: once active, stay active while z exceeds this (default `threshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover: Option<f64>,
}

const fn default_threshold() -> f64 {
    3.0
}
const fn default_min_samples() -> u32 {
    10
}

/// Derived sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Slots in the ring.
    pub capacity: usize,
    /// Slot width in ms (the group interval).
    pub slot_ms: i64,
}

/// Largest window, in slots, that a rule may ask for.
const MAX_CAPACITY: usize = 1 << 20;

/// Bit offsets of the fields packed in `ZScoreState::meta` (21 bits each).
const HEAD_IDX: u32 = 0;
const COUNT: u32 = 21;
const SINCE: u32 = 42;
const FIELD_MASK: u64 = (1 << 21) - 1;

impl ZScoreConfig {
    pub(super) fn compile(&self, interval: Duration) -> Result<Params, Vec<ParamError>> {
        let mut errs = Vec::new();
        let slot_ms = interval.as_millis().max(1);
        let capacity =
            self.window.as_millis() / slot_ms + i64::from(self.window.as_millis() % slot_ms != 0);
        if capacity < 2 {
            errs.push((
                "window".into(),
                format!(
                    "{} must span at least 2 intervals of {interval}",
                    self.window
                ),
            ));
        } else if capacity as usize > MAX_CAPACITY {
            errs.push((
                "window".into(),
                format!(
                    "{} is {capacity} intervals; at most {MAX_CAPACITY}",
                    self.window
                ),
            ));
        }
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
        if self.min_samples < 2 {
            errs.push((
                "min_samples".into(),
                "must be at least 2 (a variance needs two points)".into(),
            ));
        } else if i64::from(self.min_samples) >= capacity {
            // A point is scored against the window before it joins: at most
            // capacity - 1 points.
            errs.push((
                "min_samples".into(),
                format!(
                    "{} must be below the window's {capacity} points (a point is scored against the {} before it), or the detector never decides",
                    self.min_samples,
                    capacity - 1
                ),
            ));
        }
        if errs.is_empty() {
            Ok(Params {
                capacity: capacity as usize,
                slot_ms,
            })
        } else {
            Err(errs)
        }
    }
}

/// Running moments of a sliding window. The window itself (`capacity` slots of one f64,
/// NaN when empty) is kept by the caller and passed to each call (the evaluator keeps
/// the windows of a rule's states in one arena).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZScoreState {
    /// Slot number (ts / slot_ms) of the newest point; i64::MIN before the first.
    head: i64,
    /// Ring index of `head` (head mod capacity), kept to avoid a division per point.
    /// Ring index of `head` (head mod capacity, kept to avoid a division per point),
    /// points in the window, and updates since the sums were last recomputed: 21 bits
    /// each (capacity is at most 2^20), packed in one word.
    meta: u64,
    shift: f64,
    s1: f64,
    s2: f64,
}

impl ZScoreState {
    pub(super) fn new() -> Self {
        ZScoreState {
            head: i64::MIN,
            meta: 0,
            shift: 0.0,
            s1: 0.0,
            s2: 0.0,
        }
    }

    #[inline]
    fn field(&self, at: u32) -> u32 {
        ((self.meta >> at) & FIELD_MASK) as u32
    }

    #[inline]
    fn set_field(&mut self, at: u32, v: u32) {
        self.meta = (self.meta & !(FIELD_MASK << at)) | (u64::from(v) & FIELD_MASK) << at;
    }

    #[inline]
    fn count(&self) -> u32 {
        self.field(COUNT)
    }

    #[inline]
    fn head_idx(&self) -> u32 {
        self.field(HEAD_IDX)
    }

    #[inline]
    fn since_recompute(&self) -> u32 {
        self.field(SINCE)
    }

    /// Mean and population standard deviation of the window.
    pub fn moments(&self) -> (f64, f64) {
        if self.count() == 0 {
            return (f64::NAN, f64::NAN);
        }
        let n = f64::from(self.count());
        let m1 = self.s1 / n;
        let var = (self.s2 / n - m1 * m1).max(0.0);
        (self.shift + m1, var.sqrt())
    }

    /// The window's points as (slot start ts, value), oldest first.
    pub fn points(&self, p: &Params, ring: &[f64]) -> Vec<(i64, f64)> {
        if self.head == i64::MIN || ring.len() != p.capacity {
            return Vec::new();
        }
        let cap = ring.len() as i64;
        (self.head - cap + 1..=self.head)
            .map(|slot| (slot * p.slot_ms, ring[slot.rem_euclid(cap) as usize]))
            .filter(|(_, v)| !v.is_nan())
            .collect()
    }

    /// Whether a state read from a snapshot fits `p`.
    pub(super) fn fits(&self, p: &Params) -> bool {
        (self.head_idx() as usize) < p.capacity && self.count() as usize <= p.capacity
    }

    /// Points currently in the window.
    pub fn len(&self) -> u32 {
        self.count()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    #[inline]
    fn remove_at(&mut self, ring: &mut [f64], i: usize) {
        let old = ring[i];
        if !old.is_nan() {
            let d = old - self.shift;
            self.s1 -= d;
            self.s2 -= d * d;
            self.meta -= 1 << COUNT;
            ring[i] = f64::NAN;
        }
    }

    fn recompute(&mut self, ring: &[f64]) {
        let (mut n, mut sum) = (0u32, 0.0);
        for &v in ring.iter().filter(|v| !v.is_nan()) {
            n += 1;
            sum += v;
        }
        self.shift = if n > 0 { sum / f64::from(n) } else { 0.0 };
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in ring.iter().filter(|v| !v.is_nan()) {
            let d = v - self.shift;
            s1 += d;
            s2 += d * d;
        }
        (self.s1, self.s2) = (s1, s2);
        self.set_field(COUNT, n);
        self.set_field(SINCE, 0);
    }

    /// Scores `x` at `ts` and folds it into the window `ring` (`p.capacity` slots).
    pub(super) fn observe(
        &mut self,
        c: &ZScoreConfig,
        p: &Params,
        ring: &mut [f64],
        ts: i64,
        x: f64,
        active: bool,
    ) -> Verdict {
        let cap = ring.len();
        debug_assert_eq!(cap, p.capacity);
        // The slot of `ts`: the same or the next slot (the common cases) without an
        // integer division.
        let slot = if self.head == i64::MIN {
            ts.div_euclid(p.slot_ms)
        } else {
            let off = ts - self.head * p.slot_ms;
            if (0..p.slot_ms).contains(&off) {
                self.head
            } else if (p.slot_ms..2 * p.slot_ms).contains(&off) {
                self.head + 1
            } else {
                ts.div_euclid(p.slot_ms)
            }
        };
        let mut head_idx = self.head_idx() as usize;
        if self.head == i64::MIN {
            self.head = slot;
            self.shift = x;
            head_idx = slot.rem_euclid(cap as i64) as usize;
        } else if slot > self.head {
            let gap = (slot - self.head).min(cap as i64) as usize;
            for _ in 0..gap {
                head_idx = if head_idx + 1 == cap { 0 } else { head_idx + 1 };
                self.remove_at(ring, head_idx);
            }
            if slot - self.head > cap as i64 {
                head_idx = slot.rem_euclid(cap as i64) as usize;
            }
            self.head = slot;
        }
        self.set_field(HEAD_IDX, head_idx as u32);
        // Score against the window as it is before this point joins it. Decided as
        // d > limit * sd and scored as d / (d + threshold * sd): the same as comparing
        // and scoring z = d / sd (`ratio_score`), with one division fewer.
        let count = self.count();
        let verdict = if count >= c.min_samples {
            let inv_n = 1.0 / f64::from(count);
            let m1 = self.s1 * inv_n;
            let sd = (self.s2 * inv_n - m1 * m1).max(0.0).sqrt();
            let mean = self.shift + m1;
            let limit = if active {
                c.recover.unwrap_or(c.threshold)
            } else {
                c.threshold
            };
            let band = Some((mean - c.threshold * sd, mean + c.threshold * sd));
            if is_flat(sd, mean) {
                let d = c.direction.signed(zscore(x, mean, sd));
                Verdict {
                    anomalous: d > limit,
                    score: ratio_score(d, c.threshold),
                    band,
                }
            } else {
                // Branch-free: whether a point lies above or below the mean is a coin
                // flip on noisy data, too costly to predict. A deviation clamped to 0
                // scores 0 (`max` also turns the 0/0 of an underflowing `sd` into 0).
                let d = c.direction.signed(x - mean).max(0.0);
                Verdict {
                    anomalous: d > limit * sd,
                    score: (d / (d + c.threshold * sd)).max(0.0),
                    band,
                }
            }
        } else {
            Verdict::UNKNOWN
        };
        if slot > self.head - cap as i64 {
            let idx = if slot == self.head {
                head_idx
            } else {
                slot.rem_euclid(cap as i64) as usize
            };
            self.remove_at(ring, idx);
            ring[idx] = x;
            let d = x - self.shift;
            self.s1 += d;
            self.s2 += d * d;
            self.meta += 1 << COUNT | 1 << SINCE;
            if self.since_recompute() as usize >= cap {
                self.recompute(ring);
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state with its own window.
    #[derive(Clone)]
    struct Owned {
        s: ZScoreState,
        ring: Vec<f64>,
    }

    impl Owned {
        fn new(p: &Params) -> Self {
            Owned {
                s: ZScoreState::new(),
                ring: vec![f64::NAN; p.capacity],
            }
        }
        fn observe(&mut self, c: &ZScoreConfig, p: &Params, ts: i64, x: f64, a: bool) -> Verdict {
            self.s.observe(c, p, &mut self.ring, ts, x, a)
        }
        fn moments(&self) -> (f64, f64) {
            self.s.moments()
        }
        fn len(&self) -> u32 {
            self.s.len()
        }
    }

    fn cfg(window_s: i64, min: u32) -> (ZScoreConfig, Params) {
        let c = ZScoreConfig {
            window: Duration::from_secs(window_s),
            threshold: 3.0,
            min_samples: min,
            direction: Direction::Both,
            recover: None,
        };
        let p = c.compile(Duration::from_secs(1)).unwrap();
        (c, p)
    }

    #[test]
    fn scores_against_window_before_the_point() {
        // 30 points alternating 0/2 (mean 1, sd 1) then one at z = 9, not capped at sqrt(n-1).
        let (c, p) = cfg(40, 10);
        let mut s = Owned::new(&p);
        for i in 0..30 {
            s.observe(&c, &p, i * 1000, if i % 2 == 0 { 0.0 } else { 2.0 }, false);
        }
        let (mean, sd) = s.moments();
        let v = s.observe(&c, &p, 30_000, mean + 9.0 * sd, false);
        assert!(v.anomalous);
        assert!((v.score - 9.0 / 12.0).abs() < 1e-9, "score {}", v.score);
    }

    #[test]
    fn min_samples_and_flat_windows() {
        let (c, p) = cfg(60, 5);
        let mut s = Owned::new(&p);
        for i in 0..4 {
            assert_eq!(s.observe(&c, &p, i * 1000, 5.0, false), Verdict::UNKNOWN);
        }
        s.observe(&c, &p, 4000, 5.0, false);
        let same = s.observe(&c, &p, 5000, 5.0, false);
        assert!(
            !same.anomalous && same.score == 0.0,
            "equal point on a flat window is normal"
        );
        let diff = s.observe(&c, &p, 6000, 5.001, false);
        assert!(
            diff.anomalous && diff.score == 1.0,
            "any change on a flat window is z=inf"
        );
    }

    #[test]
    fn time_based_eviction_across_gaps() {
        let (c, p) = cfg(10, 2);
        let mut s = Owned::new(&p);
        for i in 0..10 {
            s.observe(&c, &p, i * 1000, i as f64, false);
        }
        assert_eq!(s.len(), 10);
        // 25 s later every old point has left the window.
        s.observe(&c, &p, 35_000, 1.0, false);
        assert_eq!(s.len(), 1);
        s.observe(&c, &p, 36_000, 3.0, false);
        let (mean, sd) = s.moments();
        assert!((mean - 2.0).abs() < 1e-12 && (sd - 1.0).abs() < 1e-12);
    }

    #[test]
    fn direction_and_recover() {
        let mut c = cfg(60, 5).0;
        c.direction = Direction::Up;
        c.recover = Some(1.0);
        let p = c.compile(Duration::from_secs(1)).unwrap();
        let mut s = Owned::new(&p);
        for i in 0..20 {
            s.observe(&c, &p, i * 1000, if i % 2 == 0 { 9.0 } else { 11.0 }, false);
        }
        assert!(
            !s.clone().observe(&c, &p, 20_000, 0.0, false).anomalous,
            "down ignored"
        );
        assert!(
            !s.clone().observe(&c, &p, 20_000, 12.0, false).anomalous,
            "z=2 < 3"
        );
        assert!(
            s.clone().observe(&c, &p, 20_000, 12.0, true).anomalous,
            "z=2 > recover 1"
        );
    }

    #[test]
    fn scores_below_the_mean_are_zero() {
        let (mut c, p) = cfg(40, 10);
        c.direction = Direction::Up;
        let mut s = Owned::new(&p);
        for i in 0..30 {
            s.observe(&c, &p, i * 1000, if i % 2 == 0 { 0.0 } else { 2.0 }, false);
        }
        for (x, score) in [(1.0, 0.0), (0.0, 0.0), (-5.0, 0.0), (4.0, 3.0 / 6.0)] {
            let v = s.clone().observe(&c, &p, 30_000, x, false);
            assert!((v.score - score).abs() < 1e-12, "x = {x}: {}", v.score);
        }
        // A window of tiny subnormal values: sd underflows, the score stays a number.
        let mut tiny = Owned::new(&p);
        for i in 0..30 {
            tiny.observe(&c, &p, i * 1000, f64::from_bits(i as u64 % 2), false);
        }
        let v = tiny.observe(&c, &p, 30_000, 0.0, false);
        assert!(!v.score.is_nan() && !v.anomalous);
    }

    #[test]
    fn no_drift_over_1e8_updates() {
        // A large offset with small noise is the worst case for running sums.
        let (c, p) = cfg(100, 10);
        let mut s = Owned::new(&p);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..100_000_000i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = 1e9 + (x % 1000) as f64 * 1e-3;
            s.observe(&c, &p, i * 1000, v, false);
        }
        let vals: Vec<f64> = s.ring.iter().copied().filter(|v| !v.is_nan()).collect();
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let (m, d) = s.moments();
        assert!((m - mean).abs() < 1e-6, "mean drifted: {m} vs {mean}");
        assert!((d - sd).abs() / sd < 1e-6, "sd drifted: {d} vs {sd}");
    }
}
