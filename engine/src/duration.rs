//! Prometheus-style durations (`500ms`, `10s`, `1m30s`, `2h`) as event-time milliseconds.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of event time in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(i64);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. 500ms, 10s, 1m30s, 2h)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

const UNITS: [(&str, i64); 7] = [
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl Duration {
    /// Zero.
    pub const ZERO: Duration = Duration(0);

    /// A duration of `ms` milliseconds; negative values clamp to zero.
    pub const fn from_millis(ms: i64) -> Self {
        Duration(if ms < 0 { 0 } else { ms })
    }

    /// A duration of `s` seconds.
    pub const fn from_secs(s: i64) -> Self {
        Duration::from_millis(s * 1000)
    }

    /// Milliseconds in this duration.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Whether this is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Parses `1h30m`, `10s`, `500ms`, `0`.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let err = |reason| DurationError {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s == "0" {
            return Ok(Duration(0));
        }
        let mut rest = s;
        let mut total: i64 = 0;
        let mut last_unit = usize::MAX;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err(if rest.starts_with('-') {
                    "negative durations are not allowed"
                } else {
                    "expected a number"
                }));
            }
            let n: i64 = rest[..digits]
                .parse()
                .map_err(|_| err("number too large"))?;
            rest = &rest[digits..];
            // "ms" must be tried before "m".
            let unit = [6usize, 0, 1, 2, 3, 4, 5]
                .into_iter()
                .find(|&i| rest.starts_with(UNITS[i].0))
                .ok_or_else(|| err("missing or unknown unit (ms, s, m, h, d, w, y)"))?;
            if last_unit != usize::MAX && unit <= last_unit {
                return Err(err("units must go from largest to smallest, each once"));
            }
            last_unit = unit;
            rest = &rest[UNITS[unit].0.len()..];
            total = n
                .checked_mul(UNITS[unit].1)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("too large"))?;
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (unit, ms) in UNITS {
            if rest >= ms {
                write!(f, "{}{unit}", rest / ms)?;
                rest %= ms;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Int(u64),
        }
        match Repr::deserialize(d)? {
            Repr::Text(s) => Duration::parse(&s).map_err(serde::de::Error::custom),
            Repr::Int(0) => Ok(Duration::ZERO),
            Repr::Int(n) => Err(serde::de::Error::custom(format!(
                "invalid duration {n}: a number needs a unit, e.g. {n}s"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!(Duration::parse("1h30m").unwrap().as_millis(), 5_400_000);
        assert_eq!(Duration::parse("500ms").unwrap().as_millis(), 500);
        assert_eq!(Duration::parse("1m500ms").unwrap().as_millis(), 60_500);
        assert_eq!(Duration::parse("0s").unwrap(), Duration::ZERO);
        assert_eq!(Duration::parse("0").unwrap(), Duration::ZERO);
        assert_eq!(Duration::parse("2d").unwrap().as_millis(), 172_800_000);
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in [
            "",
            "10",
            "-5s",
            "5x",
            "s",
            "1s1m",
            "1m1m",
            "99999999999999999y",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["1h30m", "10s", "500ms", "0s", "1d2h3m4s5ms"] {
            assert_eq!(Duration::parse(s).unwrap().to_string(), s);
        }
    }
}
