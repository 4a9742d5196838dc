//! Signal shaping before detection: counter rates with reset handling, and histogram
//! quantiles interpolated from cumulative buckets as PromQL's `histogram_quantile` does.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Per-series counter history over the rate range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterRate {
    points: VecDeque<(i64, f64)>,
    offset: f64,
    last_raw: f64,
}

impl CounterRate {
    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.points.capacity() * std::mem::size_of::<(i64, f64)>()
    }

    /// Adds a counter sample and returns the per-second rate over `(ts - range_ms, ts]`,
    /// or None until the range holds two samples. A decrease is a counter reset: the
    /// value before it is added back, as PromQL does.
    pub fn update(&mut self, ts: i64, v: f64, range_ms: i64) -> Option<f64> {
        if !self.points.is_empty() && v < self.last_raw {
            self.offset += self.last_raw;
        }
        self.last_raw = v;
        self.points.push_back((ts, v + self.offset));
        while self
            .points
            .front()
            .is_some_and(|&(t, _)| t <= ts - range_ms)
        {
            self.points.pop_front();
        }
        let &(t0, v0) = self.points.front()?;
        if self.points.len() < 2 || ts == t0 {
            return None;
        }
        Some((v + self.offset - v0) * 1000.0 / (ts - t0) as f64)
    }
}

/// The `q` quantile from cumulative `(le, count)` buckets sorted by `le`. Returns NaN
/// without a `+Inf` bucket or with no observations, like `histogram_quantile`.
pub fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if buckets.len() < 2 || buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Cumulative counts must not decrease (scrape races); PromQL enforces the same.
    let mut max = f64::NEG_INFINITY;
    for b in buckets.iter_mut() {
        max = max.max(b.1);
        b.1 = max;
    }
    let total = buckets[buckets.len() - 1].1;
    if total.is_nan() || total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let b = buckets
        .iter()
        .position(|&(_, c)| c >= rank)
        .unwrap_or(buckets.len() - 1);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (start, prev_count) = if b == 0 { (0.0, 0.0) } else { buckets[b - 1] };
    let (end, count) = buckets[b];
    let in_bucket = count - prev_count;
    if in_bucket <= 0.0 {
        return end;
    }
    start + (end - start) * ((rank - prev_count) / in_bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_with_reset() {
        let mut r = CounterRate::default();
        assert_eq!(r.update(0, 100.0, 60_000), None);
        assert_eq!(r.update(10_000, 110.0, 60_000), Some(1.0));
        // Reset to 5: the counter really went 110 -> 115.
        assert_eq!(r.update(20_000, 5.0, 60_000), Some(0.75));
        // Old points leave the (ts-60s, ts] range.
        assert_eq!(r.update(70_000, 55.0, 60_000), Some((165.0 - 115.0) / 50.0));
    }

    #[test]
    fn quantile_like_promql() {
        // 100 observations: 50 <= 0.1, 90 <= 0.5, 100 <= 1.
        let mut b = vec![
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((bucket_quantile(0.5, &mut b) - 0.1).abs() < 1e-12);
        assert!((bucket_quantile(0.7, &mut b) - 0.3).abs() < 1e-12);
        assert!((bucket_quantile(0.99, &mut b) - 0.95).abs() < 1e-12);
        let mut top = vec![(0.1, 10.0), (f64::INFINITY, 20.0)];
        assert_eq!(
            bucket_quantile(0.9, &mut top),
            0.1,
            "rank in +Inf bucket: upper bound of the last finite"
        );
        let mut none = vec![(0.1, 10.0), (0.5, 20.0)];
        assert!(bucket_quantile(0.5, &mut none).is_nan());
        let mut empty = vec![(0.1, 0.0), (f64::INFINITY, 0.0)];
        assert!(bucket_quantile(0.5, &mut empty).is_nan());
        let mut racy = vec![(0.1, 50.0), (0.5, 40.0), (f64::INFINITY, 100.0)];
        assert!((bucket_quantile(0.5, &mut racy) - 0.1).abs() < 1e-12);
    }
}
