//! promtool's expanding notation for input series: `1 2 3`, `a+bxn`, `a-bxn`, `axn`,
//! `_` (missing), `_xn` (n missing), `stale`.

/// One expanded value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A sample.
    Sample(f64),
    /// No sample at this step.
    Missing,
    /// A staleness marker.
    Stale,
}

fn number(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Expands a `values:` string.
pub fn expand(src: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for tok in src.split_whitespace() {
        let bad = |why: &str| format!("invalid value {tok:?} in {src:?}: {why}");
        if tok == "_" {
            out.push(Value::Missing);
            continue;
        }
        if tok == "stale" {
            out.push(Value::Stale);
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n
                .parse()
                .ok()
                .filter(|&n| n <= 1_000_000)
                .ok_or_else(|| bad("expected _xN with N at most 1000000"))?;
            out.extend(std::iter::repeat_n(Value::Missing, n));
            continue;
        }
        let Some(x) = tok.rfind('x') else {
            out.push(Value::Sample(
                number(tok).ok_or_else(|| bad("not a number"))?,
            ));
            continue;
        };
        let times: usize = tok[x + 1..]
            .parse()
            .map_err(|_| bad("expected a count after x"))?;
        if times > 1_000_000 {
            return Err(bad("more than 1000000 repetitions"));
        }
        let head = &tok[..x];
        // Split `a+b` / `a-b` at the last sign that is not leading and not an exponent's.
        let split = head.char_indices().rev().find(|&(i, c)| {
            (c == '+' || c == '-') && i > 0 && !matches!(head.as_bytes()[i - 1], b'e' | b'E')
        });
        let (start, step) = match split {
            Some((i, c)) => {
                let a = number(&head[..i]).ok_or_else(|| bad("not a number before the step"))?;
                let b = number(&head[i + 1..]).ok_or_else(|| bad("not a number as the step"))?;
                (a, if c == '-' { -b } else { b })
            }
            None => (number(head).ok_or_else(|| bad("not a number"))?, 0.0),
        };
        out.extend((0..=times).map(|k| Value::Sample(start + step * k as f64)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Value::*;

    #[test]
    fn promtool_examples() {
        assert_eq!(
            expand("-2+4x3").unwrap(),
            [Sample(-2.0), Sample(2.0), Sample(6.0), Sample(10.0)]
        );
        assert_eq!(
            expand(" 1-2x4").unwrap(),
            [1.0, -1.0, -3.0, -5.0, -7.0].map(Sample)
        );
        assert_eq!(expand(" 1x4").unwrap(), [Sample(1.0); 5]);
        assert_eq!(
            expand(" 1 _x3 stale").unwrap(),
            [Sample(1.0), Missing, Missing, Missing, Stale]
        );
        assert_eq!(
            expand("1e3+1e2x1").unwrap(),
            [Sample(1000.0), Sample(1100.0)]
        );
        assert_eq!(expand("1.5e-3").unwrap(), [Sample(0.0015)]);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["abc", "1+x3", "1+2xq", "_xq", "1x99999999"] {
            assert!(expand(bad).is_err(), "{bad}");
        }
    }
}
