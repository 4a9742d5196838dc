//! JSONL recordings: one sample a line.
//!
//! `{"ts": 1793613600000, "metric": "node_load1", "labels": {"node": "n1"}, "value": 0.5}`
//! where `ts` is epoch milliseconds or an RFC 3339 string and `value` a number or one of
//! the strings `"NaN"`, `"+Inf"`, `"-Inf"` (or a decimal in a string, as Prometheus
//! writes them). Blank lines are skipped. Every error names the line.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::BufRead;

use serde::Deserialize;
use serde_json::value::RawValue;
use vigil_engine::labels::{Labels, METRIC_NAME};

/// One sample of a recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Event time, ms since the epoch.
    pub ts: i64,
    /// Labels including `__name__`.
    pub labels: Labels,
    /// Value.
    pub value: f64,
}

pub use crate::ReadError;

/// A line as written: numbers and labels kept as raw JSON text until needed, so a
/// series seen before costs no label parsing and no allocation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line<'a> {
    #[serde(borrow)]
    ts: &'a RawValue,
    #[serde(borrow)]
    metric: Cow<'a, str>,
    #[serde(borrow, default)]
    labels: Option<&'a RawValue>,
    #[serde(borrow)]
    value: &'a RawValue,
}

/// The fields of one line, with the labels still JSON text (see [`parse_labels`]).
#[derive(Debug, PartialEq)]
pub(crate) struct Fields<'a> {
    pub(crate) ts: i64,
    pub(crate) metric: Cow<'a, str>,
    /// The `labels` object as written (`""` when absent).
    pub(crate) labels: &'a str,
    pub(crate) value: f64,
}

/// Parses one line, leaving the labels as text.
pub(crate) fn parse_fields(line: &str) -> Result<Fields<'_>, String> {
    match scan(line) {
        Some(f) => Ok(f),
        None => parse_fields_serde(line),
    }
}

/// Parses one line with serde (any valid spelling; the error messages).
fn parse_fields_serde(line: &str) -> Result<Fields<'_>, String> {
    let l: Line = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if l.metric.is_empty() {
        return Err("metric is empty".into());
    }
    Ok(Fields {
        ts: parse_ts(l.ts.get())?,
        value: parse_value(l.value.get())?,
        metric: l.metric,
        labels: l.labels.map_or("", RawValue::get),
    })
}

/// The fast path for lines in the common shape: plain-ASCII keys and metric without
/// escapes, numbers for `ts` and `value`, each field once, nothing after the object.
/// Anything else (including every malformed line) returns `None` and goes through
/// serde, which gives the answer and the error messages; the `labels` text it returns
/// is parsed (and so validated) by [`parse_labels`] the first time it is seen.
fn scan(line: &str) -> Option<Fields<'_>> {
    let b = line.as_bytes();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\r' | b'\n') {
            *i += 1;
        }
    };
    // A string without escapes: its contents.
    let string = |i: &mut usize| -> Option<&str> {
        if b.get(*i) != Some(&b'"') {
            return None;
        }
        let start = *i + 1;
        let len = b[start..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if b[start + len] != b'"' {
            return None;
        }
        *i = start + len + 1;
        line.get(start..start + len)
    };
    // A JSON number (strict grammar): its text.
    let number = |i: &mut usize| -> Option<&str> {
        let start = *i;
        if b.get(*i) == Some(&b'-') {
            *i += 1;
        }
        let digits = |i: &mut usize| {
            let s = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            *i - s
        };
        let int_start = *i;
        let n = digits(i);
        if n == 0 || (n > 1 && b[int_start] == b'0') {
            return None;
        }
        if b.get(*i) == Some(&b'.') {
            *i += 1;
            if digits(i) == 0 {
                return None;
            }
        }
        if matches!(b.get(*i), Some(b'e' | b'E')) {
            *i += 1;
            if matches!(b.get(*i), Some(b'+' | b'-')) {
                *i += 1;
            }
            if digits(i) == 0 {
                return None;
            }
        }
        line.get(start..*i)
    };
    // An object of strings to strings without escapes: its text.
    let object = |i: &mut usize| -> Option<&str> {
        let start = *i;
        if b.get(*i) != Some(&b'{') {
            return None;
        }
        *i += 1;
        ws(i);
        if b.get(*i) == Some(&b'}') {
            *i += 1;
            return line.get(start..*i);
        }
        loop {
            ws(i);
            string(i)?;
            ws(i);
            if b.get(*i) != Some(&b':') {
                return None;
            }
            *i += 1;
            ws(i);
            string(i)?;
            ws(i);
            match b.get(*i) {
                Some(b',') => *i += 1,
                Some(b'}') => {
                    *i += 1;
                    return line.get(start..*i);
                }
                _ => return None,
            }
        }
    };
    ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let (mut ts, mut metric, mut labels, mut value) = (None, None, None, None);
    loop {
        ws(&mut i);
        let key = string(&mut i)?;
        ws(&mut i);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        ws(&mut i);
        let slot = match key {
            "ts" => &mut ts,
            "metric" => &mut metric,
            "labels" => &mut labels,
            "value" => &mut value,
            _ => return None,
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(match key {
            "metric" => string(&mut i)?,
            "labels" => object(&mut i)?,
            _ => number(&mut i)?,
        });
        ws(&mut i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {
                i += 1;
                break;
            }
            _ => return None,
        }
    }
    ws(&mut i);
    let metric = metric?;
    if i != b.len() || metric.is_empty() {
        return None;
    }
    Some(Fields {
        ts: parse_ts(ts?).ok()?,
        metric: Cow::Borrowed(metric),
        labels: labels.unwrap_or(""),
        value: parse_value(value?).ok()?,
    })
}

fn parse_ts(raw: &str) -> Result<i64, String> {
    if raw.starts_with('"') {
        let s: Cow<str> = serde_json::from_str(raw).map_err(|e| format!("ts: {e}"))?;
        return parse_rfc3339(&s);
    }
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    match raw.parse::<f64>() {
        Ok(f) if f.is_finite() && f.abs() < 9.0e15 => Ok(f as i64),
        Ok(_) => Err(format!("ts {raw} is out of range")),
        Err(_) => Err(format!(
            "ts {raw} is neither epoch milliseconds nor an RFC 3339 string"
        )),
    }
}

fn parse_value(raw: &str) -> Result<f64, String> {
    if !raw.starts_with('"') {
        return raw
            .parse()
            .map_err(|_| format!("value {raw} is not a number"));
    }
    let s: Cow<str> = serde_json::from_str(raw).map_err(|e| format!("value: {e}"))?;
    match s.as_ref() {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        other => other
            .parse()
            .map_err(|_| format!("value {other:?} is not a number")),
    }
}

/// The label set of `metric` with `labels`, the text of a JSON object of strings
/// (`""` for none).
pub(crate) fn parse_labels(metric: &str, labels: &str) -> Result<Labels, String> {
    let mut out: Labels = if labels.is_empty() || labels == "null" {
        Labels::new()
    } else {
        serde_json::from_str::<BTreeMap<String, String>>(labels)
            .map_err(|e| format!("labels: {e}"))?
    };
    if out.contains_key(METRIC_NAME) {
        return Err(format!(
            "labels must not contain {METRIC_NAME}; use \"metric\""
        ));
    }
    out.insert(METRIC_NAME.into(), metric.to_string());
    Ok(out)
}

/// Parses one line.
pub fn parse_line(line: &str) -> Result<Record, String> {
    let f = parse_fields(line)?;
    Ok(Record {
        ts: f.ts,
        labels: parse_labels(&f.metric, f.labels)?,
        value: f.value,
    })
}

/// Parses an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("ts {s:?} is neither epoch milliseconds nor RFC 3339: {e}"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Streams records from a reader.
#[derive(Debug)]
pub struct JsonlReader<R> {
    input: R,
    name: String,
    line: u64,
    buf: String,
}

impl<R: BufRead> JsonlReader<R> {
    /// Reads `input`, naming it `name` in errors.
    pub fn new(input: R, name: impl Into<String>) -> Self {
        JsonlReader {
            input,
            name: name.into(),
            line: 0,
            buf: String::new(),
        }
    }
}

impl<R: BufRead> Iterator for JsonlReader<R> {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            self.line += 1;
            match self.input.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    return Some(Err(ReadError::Io {
                        source_name: self.name.clone(),
                        source,
                    }))
                }
            }
            let text = self.buf.trim();
            if text.is_empty() {
                continue;
            }
            return Some(parse_line(text).map_err(|message| ReadError::Malformed {
                source_name: self.name.clone(),
                line: self.line,
                message,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn reads_numbers_strings_and_rfc3339() {
        let input = "{\"ts\":1000,\"metric\":\"m\",\"labels\":{\"a\":\"1\"},\"value\":2.5}\n\n\
                     {\"ts\":\"1970-01-01T00:00:02+00:00\",\"metric\":\"m\",\"value\":\"NaN\"}\n";
        let recs: Vec<Record> = JsonlReader::new(input.as_bytes(), "x.jsonl")
            .map(Result::unwrap)
            .collect();
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].ts, recs[0].value), (1000, 2.5));
        assert_eq!(
            recs[0].labels.get("__name__").map(String::as_str),
            Some("m")
        );
        assert_eq!(recs[1].ts, 2000);
        assert!(recs[1].value.is_nan());
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let input = "{\"ts\":1,\"metric\":\"m\",\"value\":1}\n{\"ts\":1,\"metric\":\"m\",\"valu\":1}\n{\"ts\":\"yesterday\",\"metric\":\"m\",\"value\":1}\n";
        let errs: Vec<String> = JsonlReader::new(input.as_bytes(), "r.jsonl")
            .filter_map(Result::err)
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errs.len(), 2);
        assert!(
            errs[0].starts_with("r.jsonl:2: unknown field `valu`"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].starts_with("r.jsonl:3: ts \"yesterday\""),
            "{}",
            errs[1]
        );
    }

    #[test]
    fn every_field_has_a_clear_error() {
        let err = |line: &str| parse_line(line).unwrap_err();
        assert_eq!(
            err(r#"{"ts":1,"metric":"m","value":true}"#),
            "value true is not a number"
        );
        assert_eq!(
            err(r#"{"ts":1,"metric":"m","value":"fast"}"#),
            "value \"fast\" is not a number"
        );
        assert_eq!(
            err(r#"{"ts":1e300,"metric":"m","value":1}"#),
            "ts 1e300 is out of range"
        );
        assert!(err(r#"{"ts":1,"metric":"","value":1}"#).contains("metric is empty"));
        assert!(err(r#"{"ts":1,"metric":"m","labels":{"a":1},"value":1}"#).starts_with("labels: "));
        assert!(
            err(r#"{"ts":1,"metric":"m","labels":{"__name__":"x"},"value":1}"#)
                .contains("must not contain __name__")
        );
        assert!(err(r#"{"ts":1,"metric":"m"}"#).contains("missing field `value`"));
        let r = parse_line(
            r#"{"ts":"2026-11-02T10:00:00.5Z","metric":"a\u00e9","labels":{"k":"v\"q"},"value":"-Inf"}"#,
        )
        .unwrap();
        assert_eq!(r.ts, 1_793_613_600_500);
        assert_eq!(r.labels["__name__"], "a\u{e9}");
        assert_eq!(r.labels["k"], "v\"q");
        assert_eq!(r.value, f64::NEG_INFINITY);
    }

    /// Pieces of lines: valid and invalid JSON, escapes, odd numbers, whitespace.
    fn piece() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "{",
            "}",
            "\"ts\"",
            "\"metric\"",
            "\"labels\"",
            "\"value\"",
            "\"x\"",
            ":",
            ",",
            " ",
            "\t",
            "1",
            "-0",
            "01",
            "1.5",
            "1e3",
            "1E+3",
            "-",
            ".",
            "e",
            "9e999",
            "\"m\"",
            "\"a\\\"b\"",
            "\"\\u00e9\"",
            "\"\"",
            "\"NaN\"",
            "\"+Inf\"",
            "\"2026-11-02T10:00:00Z\"",
            "{\"k\":\"v\"}",
            "{}",
            "{\"k\":1}",
            "{\"__name__\":\"x\"}",
            "null",
            "true",
            "[1]",
            "\"é\"",
            "1793613600000",
            "\n",
        ])
        .prop_map(str::to_string)
    }

    /// A line in the common shape with some of its parts replaced.
    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(piece(), 0..24).prop_map(|p| p.concat()),
            (piece(), piece(), piece(), piece(), piece()).prop_map(|(a, b, c, d, e)| {
                format!("{{\"ts\":{a},\"metric\":{b},\"labels\":{c},\"value\":{d}}}{e}")
            }),
            (piece(), piece()).prop_map(|(a, b)| {
                format!("{{ \"value\" : {a} , \"metric\":\"m\", \"ts\":{b} }}")
            }),
        ]
    }

    proptest! {
        /// The fast path agrees with serde wherever it answers, and never panics.
        #[test]
        fn fast_path_agrees_with_serde(line in line()) {
            if let Some(fast) = scan(&line) {
                prop_assert_eq!(Ok(fast), parse_fields_serde(&line), "{}", line);
            }
            let _ = parse_line(&line);
        }
    }

    #[test]
    fn fast_path_takes_the_common_shape() {
        let f = scan(r#"{"ts":1793613600000,"metric":"m","labels":{"a":"1"},"value":-2.5e-3}"#)
            .unwrap();
        assert_eq!(
            (f.ts, f.metric.as_ref(), f.labels, f.value),
            (1_793_613_600_000, "m", r#"{"a":"1"}"#, -0.0025)
        );
        assert!(scan(r#"{"ts":1,"metric":"m","value":1,"ts":2}"#).is_none());
        assert!(scan(r#"{"ts":1,"metric":"m","value":1} x"#).is_none());
        assert!(scan(r#"{"ts":01,"metric":"m","value":1}"#).is_none());
    }
}
