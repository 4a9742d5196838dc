//! PromQL vector selectors: `metric{label="v", l!="v", l=~"re", l!~"re"}`.
//!
//! Regexes are fully anchored, as in Prometheus (`pod=~"api-.*"` matches `api-1`, not
//! `xapi-1`). A missing label matches as the empty string. Range vectors, offsets and
//! functions are not selectors and are rejected with a hint.

use std::fmt;

use regex::Regex;

use crate::labels::{self, METRIC_NAME};

/// How a matcher compares a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

/// One `label op "value"` matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// Right-hand side as written.
    pub value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// Builds a matcher, compiling (and anchoring) its regex.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, SelectorError> {
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(Regex::new(&format!("^(?s:{value})$")).map_err(|e| {
                    SelectorError(format!("invalid regex {value:?} for label {name}: {e}"))
                })?)
            }
            _ => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Whether `v` (empty for a missing label) satisfies this matcher.
    pub fn matches(&self, v: &str) -> bool {
        match (&self.op, &self.regex) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(v),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }
}

/// A parsed vector selector.
#[derive(Debug, Clone)]
pub struct Selector {
    /// All matchers, the metric name as an `__name__` equality matcher.
    pub matchers: Vec<Matcher>,
    source: String,
}

/// A selector that could not be parsed; the message says where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(String);

impl Selector {
    /// Parses a selector.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut p = Parser { s: input, pos: 0 };
        let sel = p.selector()?;
        Ok(sel)
    }

    /// Whether an encoded label set matches every matcher.
    pub fn matches(&self, buf: &[u8]) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(labels::get(buf, &m.name).unwrap_or("")))
    }

    /// The metric name, when the selector names exactly one.
    pub fn metric_name(&self) -> Option<&str> {
        self.matchers
            .iter()
            .find(|m| m.name == METRIC_NAME && m.op == MatchOp::Equal)
            .map(|m| m.value.as_str())
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> SelectorError {
        SelectorError(format!(
            "invalid selector {:?}: {what} at offset {}",
            self.s, self.pos
        ))
    }

    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.s.len() - trimmed.len();
    }

    fn ident(&mut self, metric: bool) -> Option<String> {
        let len = self
            .rest()
            .char_indices()
            .take_while(|&(i, c)| {
                c == '_'
                    || c.is_ascii_alphabetic()
                    || (i > 0 && c.is_ascii_digit())
                    || (metric && c == ':')
            })
            .map(|(i, c)| i + c.len_utf8())
            .last()?;
        let ident = self.rest()[..len].to_string();
        self.pos += len;
        Some(ident)
    }

    fn selector(&mut self) -> Result<Selector, SelectorError> {
        self.skip_ws();
        let mut matchers = Vec::new();
        if let Some(name) = self.ident(true) {
            if self.rest().trim_start().starts_with('(') {
                return Err(self.err(&format!(
                    "functions such as {name}() are not selectors; use the rule's rate/aggregate/quantile fields"
                )));
            }
            matchers.push(Matcher::new(METRIC_NAME, MatchOp::Equal, &name)?);
        }
        self.skip_ws();
        if self.rest().starts_with('{') {
            self.pos += 1;
            loop {
                self.skip_ws();
                if self.rest().starts_with('}') {
                    self.pos += 1;
                    break;
                }
                let name = self
                    .quoted()?
                    .or_else(|| self.ident(false))
                    .ok_or_else(|| self.err("expected a label name"))?;
                self.skip_ws();
                let op = [
                    ("=~", MatchOp::Regex),
                    ("!~", MatchOp::NotRegex),
                    ("!=", MatchOp::NotEqual),
                    ("=", MatchOp::Equal),
                ]
                .into_iter()
                .find(|(tok, _)| self.rest().starts_with(tok))
                .map(|(tok, op)| {
                    self.pos += tok.len();
                    op
                })
                .ok_or_else(|| self.err("expected one of =, !=, =~, !~"))?;
                self.skip_ws();
                let value = self
                    .quoted()?
                    .ok_or_else(|| self.err("expected a quoted value"))?;
                matchers.push(Matcher::new(&name, op, &value)?);
                self.skip_ws();
                if self.rest().starts_with(',') {
                    self.pos += 1;
                } else if !self.rest().starts_with('}') {
                    return Err(self.err("expected , or }"));
                }
            }
        }
        self.skip_ws();
        if self.rest().starts_with('[') {
            return Err(self.err("range selectors are not supported; use the rule's `rate:` field"));
        }
        if !self.rest().is_empty() {
            return Err(self.err("unexpected trailing input"));
        }
        if matchers.is_empty() {
            return Err(self.err("empty selector"));
        }
        if matchers.iter().all(|m| m.matches("")) {
            return Err(SelectorError(format!(
                "invalid selector {:?}: it must contain at least one matcher that does not match the empty string",
                self.s
            )));
        }
        Ok(Selector {
            matchers,
            source: self.s.trim().to_string(),
        })
    }

    /// A `"…"`, `'…'` or `` `…` `` string with Go escapes, or None if none starts here.
    fn quoted(&mut self) -> Result<Option<String>, SelectorError> {
        let Some(q) = self
            .rest()
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\'' | '`'))
        else {
            return Ok(None);
        };
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            if c == q {
                self.pos += i + 1;
                return Ok(Some(out));
            }
            if c == '\\' && q != '`' {
                let (_, e) = chars
                    .next()
                    .ok_or_else(|| self.err("unterminated escape"))?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '\\' | '"' | '\'' => out.push(e),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            } else {
                out.push(c);
            }
        }
        Err(self.err("unterminated string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{encode, Labels};

    fn series(pairs: &[(&str, &str)]) -> Box<[u8]> {
        let l: Labels = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        encode(&l)
    }

    #[test]
    fn parses_all_operators() {
        let s = Selector::parse(
            r#"http_requests_total{code=~"5..", method!="GET", path!~"/health.*", job="api",}"#,
        )
        .unwrap();
        assert_eq!(s.metric_name(), Some("http_requests_total"));
        assert_eq!(s.matchers.len(), 5);
        let hit = series(&[
            ("__name__", "http_requests_total"),
            ("code", "503"),
            ("method", "POST"),
            ("path", "/x"),
            ("job", "api"),
        ]);
        assert!(s.matches(&hit));
        let miss = series(&[
            ("__name__", "http_requests_total"),
            ("code", "5030"),
            ("method", "POST"),
            ("job", "api"),
        ]);
        assert!(!s.matches(&miss), "regex must be anchored");
    }

    #[test]
    fn missing_label_is_empty_string() {
        let s = Selector::parse(r#"up{env=""}"#).unwrap();
        assert!(s.matches(&series(&[("__name__", "up")])));
        assert!(!s.matches(&series(&[("__name__", "up"), ("env", "prod")])));
    }

    #[test]
    fn name_only_and_braces_only() {
        assert!(Selector::parse("go_goroutines").is_ok());
        assert!(Selector::parse(r#"{__name__=~"go_.*"}"#).is_ok());
        assert!(Selector::parse("ns:metric:rate5m").is_ok());
    }

    #[test]
    fn rejects_bad_selectors_with_hints() {
        for (bad, hint) in [
            ("rate(x[5m])", "functions"),
            ("x[5m]", "range selectors"),
            (r#"x{a="b""#, "expected , or }"),
            (r#"x{a=b}"#, "quoted value"),
            (r#"{a=~".*"}"#, "empty string"),
            (r#"x{a=~"("}"#, "invalid regex"),
            ("", "empty selector"),
            (r#"x{a="unterminated}"#, "unterminated"),
        ] {
            let err = Selector::parse(bad).unwrap_err().to_string();
            assert!(err.contains(hint), "{bad}: {err}");
        }
    }

    #[test]
    fn escapes() {
        let s = Selector::parse(r#"x{a="q\"uote\\"}"#).unwrap();
        assert_eq!(s.matchers[1].value, "q\"uote\\");
    }
}
