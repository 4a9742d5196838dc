//! Annotation and target templates: the subset of Prometheus' Go templates that alert
//! rules use in practice.
//!
//! Supported inside `{{ }}`: `$labels.name`, `index $labels "name"`, `$value`, `$score`,
//! each optionally piped through `humanize` or `printf "%.Nf"` (also written
//! `printf "%.Nf" $value`). Anything else is rejected when the rule is compiled.

use std::fmt::Write as _;

use crate::labels::Labels;

/// A compiled template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Label(String, Format),
    Value(Format),
    Score(Format),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Plain,
    Humanize,
    Fixed(usize),
}

/// Values a template can refer to.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// `$labels`.
    pub labels: &'a Labels,
    /// `$value`: the signal value.
    pub value: f64,
    /// `$score`: the detector score.
    pub score: f64,
}

impl Template {
    /// Compiles `src`, or says what is wrong with it.
    pub fn parse(src: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = src;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed {{{{ in template {src:?}"))?;
            parts.push(parse_action(
                after[..end].trim_matches(|c: char| c == '-' || c.is_whitespace()),
            )?);
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("stray }}}} in template {src:?}"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Whether the template has no placeholders.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Renders with `vars`; a missing label renders as the empty string, as in Prometheus.
    pub fn render(&self, vars: Vars<'_>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Label(name, f) => {
                    if let Some(v) = vars.labels.get(name) {
                        match (f, v.parse::<f64>()) {
                            (Format::Plain, _) | (_, Err(_)) => out.push_str(v),
                            (f, Ok(x)) => format_number(&mut out, x, *f),
                        }
                    }
                }
                Part::Value(f) => format_number(&mut out, vars.value, *f),
                Part::Score(f) => format_number(&mut out, vars.score, *f),
            }
        }
        out
    }
}

fn parse_action(action: &str) -> Result<Part, String> {
    let unsupported = || {
        format!(
            "unsupported template expression {{{{ {action} }}}}: use $labels.NAME, $value or $score, \
             optionally | humanize or | printf \"%.2f\""
        )
    };
    let mut stages: Vec<&str> = action.split('|').map(str::trim).collect();
    let mut format = Format::Plain;
    if stages.len() > 2 {
        return Err(unsupported());
    }
    if stages.len() == 2 {
        format = parse_format(stages[1]).ok_or_else(unsupported)?;
        stages.truncate(1);
    }
    let mut operand = stages[0];
    // `printf "%.2f" $value` prefix form.
    if let Some(rest) = operand.strip_prefix("printf") {
        let rest = rest.trim_start();
        let q_end = rest
            .get(1..)
            .and_then(|r| r.find('"'))
            .ok_or_else(unsupported)?;
        format = parse_format(&format!("printf {}", &rest[..q_end + 2])).ok_or_else(unsupported)?;
        operand = rest[q_end + 2..].trim();
    } else if let Some(rest) = operand.strip_prefix("humanize ") {
        format = Format::Humanize;
        operand = rest.trim();
    }
    if operand == "$value" {
        return Ok(Part::Value(format));
    }
    if operand == "$score" {
        return Ok(Part::Score(format));
    }
    if let Some(name) = operand.strip_prefix("$labels.") {
        if is_label_name(name) {
            return Ok(Part::Label(name.to_string(), format));
        }
    }
    if let Some(rest) = operand.strip_prefix("index $labels ") {
        let name = rest.trim().trim_matches('"');
        if is_label_name(name) {
            return Ok(Part::Label(name.to_string(), format));
        }
    }
    Err(unsupported())
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn parse_format(stage: &str) -> Option<Format> {
    if stage == "humanize" {
        return Some(Format::Humanize);
    }
    let spec = stage
        .strip_prefix("printf")?
        .trim()
        .strip_prefix('"')?
        .strip_suffix('"')?;
    let digits = spec.strip_prefix("%.")?.strip_suffix('f')?;
    digits
        .parse()
        .ok()
        .filter(|&d: &usize| d <= 17)
        .map(Format::Fixed)
}

fn format_number(out: &mut String, x: f64, f: Format) {
    match f {
        Format::Plain => {
            let _ = write!(out, "{x}");
        }
        Format::Fixed(d) => {
            let _ = write!(out, "{x:.d$}");
        }
        Format::Humanize => humanize(out, x),
    }
}

/// Prometheus' `humanize`: SI prefixes, 4 significant digits.
fn humanize(out: &mut String, x: f64) {
    if x == 0.0 || !x.is_finite() {
        let _ = write!(out, "{x}");
        return;
    }
    const BIG: [&str; 8] = ["k", "M", "G", "T", "P", "E", "Z", "Y"];
    const SMALL: [&str; 8] = ["m", "u", "n", "p", "f", "a", "z", "y"];
    let mut v = x;
    let mut prefix = "";
    if x.abs() >= 1000.0 {
        for p in BIG {
            if v.abs() < 1000.0 {
                break;
            }
            v /= 1000.0;
            prefix = p;
        }
    } else if x.abs() < 1.0 {
        for p in SMALL {
            if v.abs() >= 1.0 {
                break;
            }
            v *= 1000.0;
            prefix = p;
        }
    }
    // Four significant digits, like Go's %.4g.
    let decimals = (3 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    let _ = write!(out, "{s}{prefix}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(labels: &Labels) -> Vars<'_> {
        Vars {
            labels,
            value: 1234.5678,
            score: 0.75,
        }
    }

    #[test]
    fn renders_labels_and_values() {
        let mut l = Labels::new();
        l.insert("pod".into(), "api-1".into());
        let t = Template::parse("{{ $labels.pod }} at {{ $value | printf \"%.1f\" }} ({{ $value | humanize }}, {{printf \"%.2f\" $score}}){{ $labels.none }}").unwrap();
        assert_eq!(t.render(vars(&l)), "api-1 at 1234.6 (1.235k, 0.75)");
        assert!(Template::parse("static").unwrap().is_static());
        assert_eq!(
            Template::parse("{{ index $labels \"pod\" }}")
                .unwrap()
                .render(vars(&l)),
            "api-1"
        );
    }

    #[test]
    fn rejects_unsupported() {
        for bad in [
            "{{ $labels.pod",
            "{{ $externalLabels.x }}",
            "{{ $value | title }}",
            "x }}",
            "{{ range . }}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn humanize_small_and_large() {
        let mut s = String::new();
        humanize(&mut s, 0.00123);
        s.push(' ');
        humanize(&mut s, 5_000_000.0);
        s.push(' ');
        humanize(&mut s, 12.0);
        assert_eq!(s, "1.23m 5M 12");
    }
}
