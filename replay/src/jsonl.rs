//! JSONL recordings: one sample a line.
//!
//! `{"ts": 1793613600000, "metric": "node_load1", "labels": {"node": "n1"}, "value": 0.5}`
//! where `ts` is epoch milliseconds or an RFC 3339 string and `value` a number or one of
//! the strings `"NaN"`, `"+Inf"`, `"-Inf"` (or a decimal in a string, as Prometheus
//! writes them). Blank lines are skipped. Every error names the line.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde::Deserialize;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    ts: TsRepr,
    metric: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    value: ValueRepr,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TsRepr {
    Millis(i64),
    Float(f64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ValueRepr {
    Number(f64),
    Text(String),
}

/// Parses one line.
pub fn parse_line(line: &str) -> Result<Record, String> {
    let l: Line = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let ts = match l.ts {
        TsRepr::Millis(ms) => ms,
        TsRepr::Float(f) if f.is_finite() && f.abs() < 9.0e15 => f as i64,
        TsRepr::Float(f) => return Err(format!("ts {f} is out of range")),
        TsRepr::Text(s) => parse_rfc3339(&s)?,
    };
    let value = match l.value {
        ValueRepr::Number(v) => v,
        ValueRepr::Text(s) => match s.as_str() {
            "NaN" => f64::NAN,
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .map_err(|_| format!("value {other:?} is not a number"))?,
        },
    };
    if l.metric.is_empty() {
        return Err("metric is empty".into());
    }
    if l.labels.contains_key(METRIC_NAME) {
        return Err(format!(
            "labels must not contain {METRIC_NAME}; use \"metric\""
        ));
    }
    let mut labels: Labels = l.labels;
    labels.insert(METRIC_NAME.into(), l.metric);
    Ok(Record { ts, labels, value })
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
}
