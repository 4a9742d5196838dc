//! Property tests of the engine: the parsers never panic, round trips hold, snapshot and
//! restore are invisible in the output, chunking and reordering within the lateness do not
//! change the output, and bad samples never panic the evaluator.
//!
//! Tests marked `#[ignore]` reproduce a documented limitation or a known bug; each says which. Run them with
//! `cargo test -p vigil-engine --test properties -- --ignored`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use vigil_engine::eval::MAX_TS;
use vigil_engine::labels::{encode, Labels};
use vigil_engine::rule::{RuleErrors, Source};
use vigil_engine::ruletest::notation::{self, Value};
use vigil_engine::selector::Selector;
use vigil_engine::series::STALE_MARKER;
use vigil_engine::template::{Template, Vars};
use vigil_engine::{Duration, Evaluator, EvaluatorConfig, RuleSet, Sample};

/// `cases` cases, or `PROPTEST_CASES` for a deeper run.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        // Failures print a minimal case; no regression files next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings made of `tokens` (mostly) and arbitrary characters, so that random input gets
/// past the first character of a parser.
fn soup(tokens: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            6 => prop::sample::select(tokens).prop_map(str::to_string),
            1 => any::<char>().prop_map(String::from),
        ],
        0..max,
    )
    .prop_map(|v| v.concat())
}

// ---------------------------------------------------------------------------------------
// Durations

#[rustfmt::skip]
const DURATION_TOKENS: &[&str] = &[
    "0", "1", "5", "10", "90", "ms", "s", "m", "h", "d", "w", "y", "-", "+", " ", ".", "e",
    "9223372036854775807", "292471208", "18446744073709551616",
];

const UNITS: [(&str, i64); 7] = [
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn duration_parse_never_panics(any in any::<String>(), tokens in soup(DURATION_TOKENS, 8)) {
        for input in [&any, &tokens] {
            if let Ok(d) = Duration::parse(input) {
                prop_assert!(d.as_millis() >= 0);
                prop_assert_eq!(Duration::parse(&d.to_string()), Ok(d), "{:?}", input);
            }
        }
    }

    #[test]
    fn duration_display_parse_round_trips(
        ms in prop_oneof![0..100_000i64, 0..=i64::MAX, Just(i64::MAX)],
    ) {
        let d = Duration::from_millis(ms);
        let shown = d.to_string();
        prop_assert_eq!(Duration::parse(&shown), Ok(d), "{}", shown);
        prop_assert_eq!(d.as_millis(), ms);
    }

    /// `<n><unit>...` with units from largest to smallest parses to the sum.
    #[test]
    fn duration_parse_sums_units(parts in prop::collection::vec((0..1000i64, any::<bool>()), 1..=7)) {
        let mut text = String::new();
        let mut total = 0;
        for (i, (n, _)) in parts.iter().enumerate().filter(|(_, (_, keep))| *keep) {
            let (unit, ms) = UNITS[i];
            let _ = write!(text, "{n}{unit}");
            total += n * ms;
        }
        prop_assume!(!text.is_empty());
        prop_assert_eq!(Duration::parse(&text).map(Duration::as_millis), Ok(total), "{}", text);
    }
}

// ---------------------------------------------------------------------------------------
// Selectors

#[rustfmt::skip]
const SELECTOR_TOKENS: &[&str] = &[
    "x", "go_goroutines", "ns:metric:rate5m", "__name__", "pod", "{", "}", ",", "=", "!=", "=~",
    "!~", "\"", "'", "`", "\\", "\\\"", "api-.*", ".*", "(", ")", "[5m]", "[", "|", " ", "rate(",
    "\"a\"", "\"\"", "é", "0",
];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn selector_parse_never_panics(any in any::<String>(), tokens in soup(SELECTOR_TOKENS, 16)) {
        for input in [&any, &tokens] {
            if let Ok(sel) = Selector::parse(input) {
                prop_assert!(!sel.matchers.is_empty());
                // Matching never panics either, whatever the label set.
                let _ = sel.matches(&encode(&labels_of(&[("__name__", "x"), ("pod", input)])));
            }
        }
    }
}

const LABEL_NAMES: &[&str] = &["__name__", "a", "b", "node", "pod"];
const LABEL_VALUES: &[&str] = &["", "x", "y", "a\"b", "é", "\\", "x y", "1", "it's", "tab\t"];

fn label_set() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map(
        prop::sample::select(LABEL_NAMES).prop_map(str::to_string),
        prop::sample::select(LABEL_VALUES).prop_map(str::to_string),
        0..=LABEL_NAMES.len(),
    )
}

/// A Go-style double-quoted string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn labels_of(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

proptest! {
    #![proptest_config(config(256))]

    /// `=` and `!=` selectors agree with a naive reading: a missing label is "", and a
    /// selector whose every matcher accepts "" is rejected.
    #[test]
    fn selector_matches_like_a_naive_reference(
        labels in label_set(),
        matchers in prop::collection::vec(
            (prop::sample::select(LABEL_NAMES), any::<bool>(), prop::sample::select(LABEL_VALUES)),
            1..4,
        ),
        quote_names in any::<bool>(),
        metric_prefix in any::<bool>(),
    ) {
        let mut text = String::new();
        let mut rest = &matchers[..];
        // `metric{...}` form for a leading `__name__="ident"` matcher.
        if let Some((("__name__", true, v), tail)) = matchers.split_first().map(|(m, t)| (*m, t)) {
            if metric_prefix && !v.is_empty() && v.chars().all(|c| c.is_ascii_alphabetic()) {
                text.push_str(v);
                rest = tail;
            }
        }
        let inner: Vec<String> = rest
            .iter()
            .map(|(name, eq, value)| {
                let name = if quote_names { quote(name) } else { name.to_string() };
                format!("{name}{}{}", if *eq { "=" } else { "!=" }, quote(value))
            })
            .collect();
        if !inner.is_empty() || text.is_empty() {
            let _ = write!(text, "{{{}}}", inner.join(", "));
        }
        let naive = |get: &dyn Fn(&str) -> String| {
            matchers.iter().all(|(name, eq, value)| (get(name) == *value) == *eq)
        };
        let matches_empty = naive(&|_| String::new());
        match Selector::parse(&text) {
            Err(e) => prop_assert!(matches_empty, "{text}: rejected: {e}"),
            Ok(sel) => {
                prop_assert!(!matches_empty, "{text}: accepted, but every matcher matches \"\"");
                let expected = naive(&|n| labels.get(n).cloned().unwrap_or_default());
                prop_assert_eq!(sel.matches(&encode(&labels)), expected, "{} on {:?}", text, labels);
            }
        }
    }

    /// A regex matcher of an escaped literal is equality; regexes are fully anchored.
    #[test]
    fn selector_regex_is_anchored(
        labels in label_set(),
        value in prop::sample::select(LABEL_VALUES).prop_filter("non-empty", |v| !v.is_empty()),
        prefix in any::<bool>(),
    ) {
        let re = if prefix { format!("{}.*", regex::escape(value)) } else { regex::escape(value) };
        let text = format!("{{pod=~{}}}", quote(&re));
        let sel = Selector::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let got = labels.get("pod").cloned().unwrap_or_default();
        let expected = if prefix { got.starts_with(value) } else { got == value };
        prop_assert_eq!(sel.matches(&encode(&labels)), expected, "{} on {:?}", text, labels);
    }
}

// ---------------------------------------------------------------------------------------
// Expanding notation of rule tests

#[rustfmt::skip]
const NOTATION_TOKENS: &[&str] = &[
    "1", "-2", "+3", "0.5", "1e3", "e", "E", "x", "x3", "x0", "_", "_x", "_x2", "stale", " ", "Inf",
    "-Inf", "NaN", "+", "-", "99999999999999999999", "x18446744073709551615", "x99999999999",
    "1000001",
];

#[derive(Debug, Clone)]
enum Tok {
    Number(i32),
    Series(i32, i32, u16),
    Missing(u16),
    Stale,
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn notation_never_panics(any in any::<String>(), tokens in soup(NOTATION_TOKENS, 10)) {
        for input in [&any, &tokens] {
            if let Ok(values) = notation::expand(input) {
                // Repetitions are capped; a huge count is an error, not an allocation.
                prop_assert!(values.len() <= 10 * 1_000_001, "{:?}", input);
            }
        }
    }

    /// Well-formed input expands to the documented number of values.
    #[test]
    fn notation_expands_as_documented(toks in prop::collection::vec(
        prop_oneof![
            any::<i32>().prop_map(Tok::Number),
            (any::<i32>(), any::<i32>(), 0..50u16).prop_map(|(a, b, n)| Tok::Series(a, b, n)),
            (0..50u16).prop_map(Tok::Missing),
            Just(Tok::Stale),
        ],
        0..8,
    )) {
        let mut text = String::new();
        let mut expected = Vec::new();
        for t in &toks {
            match *t {
                Tok::Number(a) => {
                    let _ = write!(text, "{a} ");
                    expected.push(Value::Sample(f64::from(a)));
                }
                Tok::Series(a, b, n) => {
                    let _ = write!(text, "{a}{b:+}x{n} ");
                    expected.extend((0..=n).map(|k| Value::Sample(f64::from(a) + f64::from(b) * f64::from(k))));
                }
                Tok::Missing(n) => {
                    let _ = write!(text, "_x{n} ");
                    expected.extend((0..n).map(|_| Value::Missing));
                }
                Tok::Stale => {
                    text.push_str("stale ");
                    expected.push(Value::Stale);
                }
            }
        }
        prop_assert_eq!(notation::expand(&text), Ok(expected), "{}", text);
    }
}

// ---------------------------------------------------------------------------------------
// Templates

#[rustfmt::skip]
const TEMPLATE_TOKENS: &[&str] = &[
    "{{", "}}", "{{-", "-}}", " ", "$labels", "$labels.", "pod", "n", ".", "$value", "$score", "|",
    "humanize", "humanize ", "printf", " \"%.2f\"", "\"%.17f\"", "\"%.18f\"", "\"", "%",
    "index $labels ", "\"pod\"", "range", "é", "text ",
];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn template_parse_and_render_never_panic(
        any in any::<String>(),
        tokens in soup(TEMPLATE_TOKENS, 12),
        value in prop_oneof![any::<f64>(), Just(f64::MIN_POSITIVE / 3.0), Just(-1e-310), Just(1e300)],
        score in any::<f64>(),
        n in prop::sample::select(&["", "1e-320", "-0", "NaN", "inf", "12345678901234567890", "x"][..]),
    ) {
        let labels = labels_of(&[("pod", "api-1"), ("n", n)]);
        for src in [&any, &tokens] {
            if let Ok(t) = Template::parse(src) {
                let _ = t.render(Vars { labels: &labels, value, score });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rule files

/// A valid rule file using every feature; mutated below.
const VALID_RULES: &str = r#"group: mixed
interval: 10s
staleness: 2m
labels: { team: platform }
rules:
  - name: High
    select: 'x{pod=~"api-.*", node!=""}'
    by: [node, pod]
    detect:
      threshold: { above: 5, recover_above: 4, below: -5 }
    for: 20s
    keep_firing_for: 1m
    new_series_delay: 30s
    flapping: { max_changes: 3, within: 5m }
    severity: critical
    labels: { tier: "{{ $labels.node }}" }
    annotations:
      summary: 'value {{ $value | printf "%.2f" }} on {{ $labels.pod }} ({{ $value | humanize }})'
    actions:
      - alert
      - isolate: { node: "{{ $labels.node }}" }
      - evict: { node: "{{ $labels.node }}", namespace: "{{ $labels.namespace }}", pod: "{{ $labels.pod }}" }
  - name: Spiky
    select: x
    rate: 1m
    aggregate: { op: sum, by: [node] }
    detect:
      zscore: { window: 5m, threshold: 2.5, min_samples: 5, direction: up, recover: 1 }
  - name: Drifting
    select: '{__name__=~"x|y"}'
    detect:
      ewma: { halflife: 1m, threshold: 3, warmup: 5, direction: both }
  - name: Leaking
    select: y
    detect:
      growth: { ratio: 0.3, samples: 3, recover: 0.1 }
    actions: [drain: { node: "{{ $labels.node }}" }]
  - name: Gone
    select: x
    by: [node]
    detect: { absent: { intervals: 3 } }
  - name: Slow
    select: 'latency_bucket'
    quantile: 0.99
    aggregate: { op: sum, by: [node] }
    detect: { threshold: { above: 0.5 } }
  - name: Both
    compound: { all: [High, Gone], within: 2m, on: [node] }
    for: 10s
"#;

fn sources(text: &str) -> [Source; 1] {
    [Source {
        name: "mutated.yaml".into(),
        text: text.into(),
    }]
}

/// Lines as YAML counts them: `\r\n`, `\r`, `\n` and the Unicode breaks end a line.
fn yaml_lines(text: &str) -> usize {
    1 + text
        .replace("\r\n", "\n")
        .chars()
        .filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'))
        .count()
}

/// Every diagnostic points inside the file and says something.
fn check_diagnostics(
    text: &str,
    result: &Result<RuleSet, RuleErrors>,
) -> Result<(), TestCaseError> {
    if let Err(errs) = result {
        prop_assert!(!errs.0.is_empty(), "an error without diagnostics");
        let lines = yaml_lines(text);
        for d in &errs.0 {
            prop_assert!(
                d.line >= 1 && d.line <= lines + 1 && d.column >= 1,
                "{d} is outside the {lines}-line file:\n{text}"
            );
            prop_assert!(!d.message.trim().is_empty(), "{}", d);
        }
    }
    Ok(())
}

/// Samples for the series the rule files above select.
fn smoke_samples(ev: &mut Evaluator) -> Vec<Sample> {
    let series: Vec<Labels> = [
        &[
            ("__name__", "x"),
            ("node", "n1"),
            ("pod", "api-1"),
            ("namespace", "prod"),
        ][..],
        &[("__name__", "y"), ("node", "n1")][..],
        &[
            ("__name__", "latency_bucket"),
            ("node", "n1"),
            ("le", "0.5"),
        ][..],
        &[
            ("__name__", "latency_bucket"),
            ("node", "n1"),
            ("le", "+Inf"),
        ][..],
    ]
    .iter()
    .copied()
    .map(labels_of)
    .collect();
    let ids: Vec<u32> = series.iter().map(|l| ev.intern(l)).collect();
    let mut out = Vec::new();
    for step in 0..40i64 {
        for (j, &id) in ids.iter().enumerate() {
            if step % 7 == 3 && j == 0 {
                continue;
            }
            let value = match step {
                10..=14 => 100.0 * (step as f64),
                _ => (step * (j as i64 + 1)) as f64,
            };
            out.push(Sample {
                series: id,
                ts: step * 10_000,
                value,
            });
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(Index, char),
    Delete(Index),
    Replace(Index, char),
    DuplicateLine(Index),
    DeleteLine(Index),
}

fn yaml_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(&[
            ':', ' ', '\n', '-', '{', '}', '[', ']', '"', '\'', '#', '&', '*', '!', '|', '>',
            '%', '@', ',', '?', '0', '9', 'x', 's', 'm', '\t', '$', '.', '~', '=',
        ][..]),
        1 => any::<char>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), yaml_char()).prop_map(|(i, c)| Edit::Insert(i, c)),
        3 => any::<Index>().prop_map(Edit::Delete),
        3 => (any::<Index>(), yaml_char()).prop_map(|(i, c)| Edit::Replace(i, c)),
        1 => any::<Index>().prop_map(Edit::DuplicateLine),
        1 => any::<Index>().prop_map(Edit::DeleteLine),
    ]
}

fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        match e {
            Edit::Insert(i, c) => {
                let at = i.index(chars.len() + 1);
                chars.insert(at, *c);
            }
            Edit::Delete(i) if !chars.is_empty() => {
                chars.remove(i.index(chars.len()));
            }
            Edit::Replace(i, c) if !chars.is_empty() => {
                let at = i.index(chars.len());
                chars[at] = *c;
            }
            Edit::DuplicateLine(i) | Edit::DeleteLine(i) => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.split('\n').collect();
                let at = i.index(lines.len());
                if matches!(e, Edit::DuplicateLine(_)) {
                    lines.insert(at, lines[at]);
                } else {
                    lines.remove(at);
                }
                chars = lines.join("\n").chars().collect();
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

#[rustfmt::skip]
const RULE_TOKENS: &[&str] = &[
    "group: g\n", "interval: 10s\n", "rules:\n", "  - name: A\n", "    select: x\n", "    detect: ",
    "{ threshold: { above: 1 } }\n", "{ zscore: { window: 1m } }\n",
    "    compound: { any: [A], within: 1m, on: [node] }\n", "    for: ", "5m", "\n", ": ", "- ",
    "[", "]", "{", "}", "&a ", "*a", "<<: *a\n", "!!str ", "? ", "|\n", "'", "\"", "#", "---\n",
    "...\n", "~", "null", "  ",
];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn rule_files_never_panic_on_arbitrary_text(
        any in any::<String>(),
        tokens in soup(RULE_TOKENS, 24),
    ) {
        for text in [&any, &tokens] {
            let r = RuleSet::from_sources(&sources(text));
            check_diagnostics(text, &r)?;
        }
    }

    /// Random edits of a valid file: parse or a diagnostic inside the file; what still
    /// compiles evaluates samples without panicking.
    #[test]
    fn mutated_rule_files_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        let text = mutate(VALID_RULES, &edits);
        let r = RuleSet::from_sources(&sources(&text));
        check_diagnostics(&text, &r)?;
        if let Ok(set) = r {
            let mut ev = Evaluator::new(Arc::new(set), EvaluatorConfig::default());
            let samples = smoke_samples(&mut ev);
            ev.ingest(&samples);
            ev.flush();
            let _ = ev.drain_events();
            let _ = ev.alerts();
        }
    }

    /// Durations and counts anywhere in their range: an error or a rule set, never a panic.
    #[test]
    fn extreme_parameters_never_panic(
        interval in prop_oneof![1..100_000i64, 1..=i64::MAX],
        window in prop_oneof![0..10_000_000i64, 0..=i64::MAX, Just(i64::MAX)],
        other in prop_oneof![0..10_000_000i64, 0..=i64::MAX],
        count in prop_oneof![0..20u32, any::<u32>()],
        ratio in prop_oneof![-1.0..2.0f64, any::<f64>()],
    ) {
        let d = |ms: i64| format!("{ms}ms");
        let text = format!(
            "group: g\ninterval: {}\nstaleness: {}\nrules:\n\
             - name: Z\n  select: x\n  detect: {{ zscore: {{ window: {}, min_samples: {count} }} }}\n  for: {}\n  keep_firing_for: {}\n\
             - name: E\n  select: x\n  detect: {{ ewma: {{ halflife: {}, warmup: {count}, threshold: {ratio} }} }}\n  new_series_delay: {}\n\
             - name: G\n  select: x\n  rate: {}\n  detect: {{ growth: {{ ratio: {ratio}, samples: {count} }} }}\n  flapping: {{ max_changes: {count}, within: {} }}\n\
             - name: A\n  select: x\n  detect: {{ absent: {{ intervals: {count} }} }}\n\
             - name: C\n  compound: {{ any: [Z, A], within: {}, on: [node] }}\n",
            d(interval), d(other.max(interval)), d(window), d(other), d(window), d(window),
            d(other), d(window), d(other), d(window),
        );
        let r = RuleSet::from_sources(&sources(&text));
        check_diagnostics(&text, &r)?;
        if let Ok(set) = r {
            let mut ev = Evaluator::new(Arc::new(set), EvaluatorConfig::default());
            let id = ev.intern(&labels_of(&[("__name__", "x"), ("node", "n1")]));
            let samples: Vec<Sample> =
                (0..20).map(|i| Sample { series: id, ts: i * 10_000, value: (i % 5) as f64 }).collect();
            ev.ingest(&samples);
            ev.flush();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The evaluator: random rules and random sample streams

/// The series of the scenarios, by index.
const SERIES: [&[(&str, &str)]; 4] = [
    &[("__name__", "x"), ("node", "n1"), ("pod", "a")],
    &[("__name__", "x"), ("node", "n1"), ("pod", "b")],
    &[("__name__", "x"), ("node", "n2"), ("pod", "c")],
    &[("__name__", "y"), ("node", "n2"), ("pod", "d")],
];

const SELECTS: &[&str] = &["x", "'{__name__=~\"x|y\"}'", "'x{pod!=\"b\"}'", "y"];

#[derive(Debug, Clone)]
enum Shape {
    Direct,
    ByNode,
    Rate,
    Aggregate(&'static str),
}

#[derive(Debug, Clone)]
struct RuleGen {
    select: &'static str,
    shape: Shape,
    detect: String,
    for_s: u32,
    keep_s: u32,
    delay_s: u32,
    flapping: bool,
    intent: bool,
}

fn direction() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["up", "down", "both"][..])
}

/// `(detect block, is absent)`; parameters are valid for a 1s interval.
fn detect() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        (0.0..20.0f64, prop::option::of(0.0..5.0f64), prop::option::of(-5.0..5.0f64)).prop_map(
            |(above, rec, below)| {
                let mut s = format!("threshold: {{ above: {above}");
                if let Some(r) = rec {
                    let _ = write!(s, ", recover_above: {}", above - r);
                }
                if let Some(b) = below {
                    let _ = write!(s, ", below: {}", b.min(above));
                }
                (s + " }", false)
            }
        ),
        (
            prop::sample::select(&[3u32, 5, 10, 20][..]),
            0.5..4.0f64,
            any::<Index>(),
            direction(),
            prop::option::of(0.0..1.0f64),
        )
            .prop_map(|(window, t, min, dir, rec)| {
                // Below the window: a point is scored against the capacity - 1 before it.
                let min_samples = 2 + min.index(window as usize - 2);
                let mut s = format!(
                    "zscore: {{ window: {window}s, threshold: {t}, min_samples: {min_samples}, direction: {dir}"
                );
                if let Some(r) = rec {
                    let _ = write!(s, ", recover: {}", t * r);
                }
                (s + " }", false)
            }),
        (
            prop_oneof![
                (0.05..=1.0f64).prop_map(|a| format!("alpha: {a}")),
                prop::sample::select(&["2s", "5s", "500ms"][..]).prop_map(|h| format!("halflife: {h}")),
            ],
            0.5..4.0f64,
            2..10u32,
            direction(),
            prop::option::of(0.0..1.0f64),
        )
            .prop_map(|(weight, t, warmup, dir, rec)| {
                let mut s = format!("ewma: {{ {weight}, threshold: {t}, warmup: {warmup}, direction: {dir}");
                if let Some(r) = rec {
                    let _ = write!(s, ", recover: {}", t * r);
                }
                (s + " }", false)
            }),
        (0.01..1.0f64, 1..5u32, prop::option::of(0.0..1.0f64)).prop_map(|(ratio, samples, rec)| {
            let mut s = format!("growth: {{ ratio: {ratio}, samples: {samples}");
            if let Some(r) = rec {
                let _ = write!(s, ", recover: {}", ratio * r);
            }
            (s + " }", false)
        }),
        (1..5u32).prop_map(|n| (format!("absent: {{ intervals: {n} }}"), true)),
    ]
}

fn rule_gen() -> impl Strategy<Value = RuleGen> {
    (
        prop::sample::select(SELECTS),
        prop_oneof![
            3 => Just(Shape::Direct),
            2 => Just(Shape::ByNode),
            1 => Just(Shape::Rate),
            1 => prop::sample::select(&["sum", "avg", "min", "max", "count"][..]).prop_map(Shape::Aggregate),
        ],
        detect(),
        prop::sample::select(&[0u32, 0, 1, 3, 10][..]),
        prop::sample::select(&[0u32, 0, 2, 10][..]),
        prop::sample::select(&[0u32, 0, 0, 5][..]),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(select, shape, (detect, absent), for_s, keep_s, delay_s, flapping, intent)| {
            RuleGen {
                select,
                // `absent` takes no rate or aggregate.
                shape: if absent && matches!(shape, Shape::Rate | Shape::Aggregate(_)) {
                    Shape::ByNode
                } else {
                    shape
                },
                detect,
                for_s,
                keep_s,
                delay_s,
                flapping,
                intent,
            }
        })
}

fn rules_yaml(rules: &[RuleGen], compound: Option<bool>) -> String {
    let mut y = String::from("group: g\ninterval: 1s\nrules:\n");
    for (i, r) in rules.iter().enumerate() {
        let _ = writeln!(y, "  - name: R{i}\n    select: {}", r.select);
        match r.shape {
            Shape::Direct => {}
            Shape::ByNode => y.push_str("    by: [node]\n"),
            Shape::Rate => y.push_str("    rate: 3s\n"),
            Shape::Aggregate(op) => {
                let _ = writeln!(y, "    aggregate: {{ op: {op}, by: [node] }}");
            }
        }
        let _ = writeln!(
            y,
            "    detect: {{ {} }}\n    for: {}s\n    keep_firing_for: {}s\n    new_series_delay: {}s",
            r.detect, r.for_s, r.keep_s, r.delay_s
        );
        if r.flapping {
            y.push_str("    flapping: { max_changes: 2, within: 10s }\n");
        }
        y.push_str(
            "    annotations: { summary: \"{{ $labels.pod }} at {{ $value | humanize }}\" }\n",
        );
        if r.intent {
            y.push_str("    actions: [alert, { isolate: { node: \"{{ $labels.node }}\" } }]\n");
        }
    }
    if let Some(all) = compound {
        let refs: Vec<String> = (0..rules.len()).map(|i| format!("R{i}")).collect();
        let _ = writeln!(
            y,
            "  - name: C\n    compound: {{ {}: [{}], within: 5s, on: [node] }}\n    for: 1s",
            if all { "all" } else { "any" },
            refs.join(", ")
        );
    }
    y
}

/// One sample as generated: series index, timestamp, value.
#[derive(Debug, Clone, Copy, PartialEq)]
struct In {
    series: usize,
    ts: i64,
    value: f64,
}

/// What one series does at one tick.
#[derive(Debug, Clone)]
struct Slot {
    present: bool,
    jitter: i64,
    duplicate: bool,
    special: Option<f64>,
}

fn special_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => prop::sample::select(vec![100.0, -100.0, 1e12, 0.0, -0.0, 1e-300]),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(STALE_MARKER),
    ]
}

fn slot() -> impl Strategy<Value = Slot> {
    (
        prop::bool::weighted(0.8),
        prop_oneof![3 => Just(0i64), 1 => 0..1000i64],
        prop::bool::weighted(0.05),
        prop::option::weighted(0.1, special_value()),
    )
        .prop_map(|(present, jitter, duplicate, special)| Slot {
            present,
            jitter,
            duplicate,
            special,
        })
}

/// How a series' values evolve: noise around a level, a ramp (a counter), or a step.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Noise(f64),
    Ramp(f64),
    Step(usize, f64),
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        (1.0..20.0f64).prop_map(Mode::Noise),
        (0.0..5.0f64).prop_map(Mode::Ramp),
        (0..100usize, 5.0..50.0f64).prop_map(|(at, h)| Mode::Step(at, h)),
    ]
}

#[derive(Debug, Clone)]
struct Scenario {
    rules: String,
    lateness_ms: i64,
    batches: Vec<Vec<In>>,
}

impl Scenario {
    fn flat(&self) -> Vec<In> {
        self.batches.iter().flatten().copied().collect()
    }
}

/// Random rules over random sample streams. With `fresh`, series may appear late, fall
/// silent for longer than the staleness (and expire) and come back; without, every
/// series has a sample evaluated in the first batch and none expires (the run is shorter
/// than the staleness), so no batch boundary has a series that was interned but never
/// evaluated. With `compound`, a compound rule over the others is added now and then.
fn scenario(fresh: bool, compound: bool) -> impl Strategy<Value = Scenario> {
    let ticks = if fresh { 5..400usize } else { 5..150usize };
    (
        (
            prop::collection::vec(rule_gen(), 1..=3),
            prop::option::weighted(0.3, any::<bool>()).prop_map(move |c| c.filter(|_| compound)),
        ),
        prop::sample::select(&[0i64, 0, 1000, 2500, 5000][..]),
        prop::collection::vec(mode(), SERIES.len()),
        prop::collection::vec(
            (
                prop::collection::vec(slot(), SERIES.len()),
                prop::bool::weighted(if fresh { 0.01 } else { 0.0 }),
                -0.5..0.5f64,
            ),
            ticks,
        ),
        prop::collection::vec(any::<Index>(), 0..20),
        prop::collection::vec(1..30usize, 1..30),
        prop::collection::vec(
            prop::option::weighted(0.3, (0..400usize, 0..400usize)),
            SERIES.len(),
        ),
    )
        .prop_map(
            move |((rules, compound), lateness_ms, modes, ticks, swaps, sizes, silences)| {
                let mut flat = Vec::new();
                let mut base = 1000;
                for (t, (slots, gap, noise)) in ticks.iter().enumerate() {
                    if *gap {
                        base += 310_000;
                    }
                    base += 1000;
                    for (s, slot) in slots.iter().enumerate() {
                        let silent = silences[s]
                            .is_some_and(|(from, len)| fresh && t >= from && t < from + len);
                        if !slot.present || silent {
                            continue;
                        }
                        let normal = match modes[s] {
                            Mode::Noise(level) => level + noise,
                            Mode::Ramp(slope) => 10.0 + slope * t as f64 + noise.abs(),
                            Mode::Step(at, h) => (if t >= at { h } else { 1.0 }) + noise,
                        };
                        let ts = base + slot.jitter;
                        flat.push(In {
                            series: s,
                            ts,
                            value: slot.special.unwrap_or(normal),
                        });
                        if slot.duplicate {
                            flat.push(In {
                                series: s,
                                ts,
                                value: normal + 1.0,
                            });
                        }
                    }
                }
                for i in swaps {
                    if flat.len() > 1 {
                        let at = i.index(flat.len() - 1);
                        flat.swap(at, at + 1);
                    }
                }
                let mut batches = Vec::new();
                if !fresh {
                    // Every series is evaluated in the first batch: the last sample lifts the
                    // watermark past the others.
                    let mut first: Vec<In> = (0..SERIES.len())
                        .map(|s| In {
                            series: s,
                            ts: 0,
                            value: 10.0,
                        })
                        .collect();
                    first.push(In {
                        series: 0,
                        ts: lateness_ms + 1000,
                        value: 10.0,
                    });
                    batches.push(first);
                }
                let mut rest = &flat[..];
                for size in sizes.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (head, tail) = rest.split_at((*size).min(rest.len()));
                    batches.push(head.to_vec());
                    rest = tail;
                }
                Scenario {
                    rules: rules_yaml(&rules, compound),
                    lateness_ms,
                    batches,
                }
            },
        )
}

fn compile(yaml: &str) -> Arc<RuleSet> {
    Arc::new(
        RuleSet::from_sources(&[Source {
            name: "gen.yaml".into(),
            text: yaml.into(),
        }])
        .unwrap_or_else(|e| panic!("generated rules do not compile:\n{e}\n{yaml}")),
    )
}

fn cfg(lateness_ms: i64) -> EvaluatorConfig {
    EvaluatorConfig {
        lateness_ms,
        ..EvaluatorConfig::default()
    }
}

/// Interns the batch's series (as a live source does before every batch) and ingests it.
fn ingest(ev: &mut Evaluator, batch: &[In]) {
    let samples: Vec<Sample> = batch
        .iter()
        .map(|s| Sample {
            series: ev.intern(&labels_of(SERIES[s.series])),
            ts: s.ts,
            value: s.value,
        })
        .collect();
    ev.ingest(&samples);
}

/// Events as text (values may be NaN, which `==` would never match).
fn drain(ev: &mut Evaluator, out: &mut Vec<String>) {
    out.extend(ev.drain_events().iter().map(|e| format!("{e:?}")));
}

/// Runs `batches` then flushes; the events, and the active alerts at the end.
fn run(rules: &Arc<RuleSet>, lateness_ms: i64, batches: &[Vec<In>]) -> (Vec<String>, String) {
    let mut ev = Evaluator::new(Arc::clone(rules), cfg(lateness_ms));
    let mut events = Vec::new();
    for b in batches {
        ingest(&mut ev, b);
        drain(&mut ev, &mut events);
    }
    ev.flush();
    drain(&mut ev, &mut events);
    (events, format!("{:?}", ev.alerts()))
}

/// Runs `batches[..cut]`, snapshots, restores into a new evaluator and runs the rest.
/// Also returns the snapshot and the snapshot of the restored evaluator.
fn run_with_restore(
    rules: &Arc<RuleSet>,
    lateness_ms: i64,
    batches: &[Vec<In>],
    cut: usize,
) -> ((Vec<String>, String), Vec<u8>, Vec<u8>) {
    let mut ev = Evaluator::new(Arc::clone(rules), cfg(lateness_ms));
    let mut events = Vec::new();
    for b in &batches[..cut] {
        ingest(&mut ev, b);
        drain(&mut ev, &mut events);
    }
    let snap = ev.snapshot();
    drop(ev);
    let mut ev = Evaluator::restore(Arc::clone(rules), cfg(lateness_ms), &snap)
        .unwrap_or_else(|e| panic!("a fresh snapshot does not restore: {e}"));
    let again = ev.snapshot();
    for b in &batches[cut..] {
        ingest(&mut ev, b);
        drain(&mut ev, &mut events);
    }
    ev.flush();
    drain(&mut ev, &mut events);
    ((events, format!("{:?}", ev.alerts())), snap, again)
}

/// The first difference between two event streams, readably.
fn first_difference(what: &str, a: &[String], b: &[String]) -> Option<String> {
    if a == b {
        return None;
    }
    let i = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    Some(format!(
        "{what}: event streams differ at #{i} (lengths {} and {}):\n  expected: {}\n  got:      {}",
        a.len(),
        b.len(),
        a.get(i).map_or("<end>", String::as_str),
        b.get(i).map_or("<end>", String::as_str),
    ))
}

fn check_restore(s: &Scenario, cut: Index) -> Result<(), TestCaseError> {
    let rules = compile(&s.rules);
    let cut = cut.index(s.batches.len() + 1);
    let (events, alerts) = run(&rules, s.lateness_ms, &s.batches);
    let ((restored, restored_alerts), snap, again) =
        run_with_restore(&rules, s.lateness_ms, &s.batches, cut);
    if let Some(d) = first_difference("snapshot/restore", &events, &restored) {
        return Err(TestCaseError::fail(format!(
            "{d}\ncut after batch {cut}\n{}",
            s.rules
        )));
    }
    prop_assert_eq!(alerts, restored_alerts);
    prop_assert!(
        snap == again,
        "restore then snapshot changed the bytes (cut after batch {})",
        cut
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    /// Snapshot, restore and go on = never stopped; a restored snapshot snapshots to the
    /// same bytes. Every series has had a sample evaluated at every cut (see
    /// `snapshot_restore_with_fresh_and_expiring_series` for the general case).
    #[test]
    fn snapshot_restore_is_invisible(s in scenario(false, true), cut in any::<Index>()) {
        check_restore(&s, cut)?;
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// As above, with series that are interned but not yet evaluated at the cut, series
    /// that expire and come back (their ids reused), and late arrivals.
    #[test]
    fn snapshot_restore_with_fresh_and_expiring_series(s in scenario(true, true), cut in any::<Index>()) {
        check_restore(&s, cut)?;
    }
}

/// Sorted by timestamp (stably: the first of two equal samples stays first).
fn sorted(mut v: Vec<In>) -> Vec<In> {
    v.sort_by_key(|s| s.ts);
    v
}

fn chunks(v: &[In], sizes: &[usize]) -> Vec<Vec<In>> {
    let mut out = Vec::new();
    let mut rest = v;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at((*size).min(rest.len()));
        out.push(head.to_vec());
        rest = tail;
    }
    out
}

fn check_chunking(s: &Scenario, sizes: &[usize]) -> Result<(), TestCaseError> {
    let rules = compile(&s.rules);
    let input = sorted(s.flat());
    let (whole, whole_alerts) = run(&rules, 0, std::slice::from_ref(&input));
    let (chunked, chunked_alerts) = run(&rules, 0, &chunks(&input, sizes));
    if let Some(d) = first_difference("one batch vs chunks", &whole, &chunked) {
        return Err(TestCaseError::fail(format!("{d}\n{}", s.rules)));
    }
    prop_assert_eq!(whole_alerts, chunked_alerts);
    Ok(())
}

/// Shuffles `input` (sorted, one sample per series and timestamp) within windows of
/// `window` ms, then chunks it: with lateness >= window, nothing is late.
fn check_reordering(
    s: &Scenario,
    window: i64,
    lateness: i64,
    keys: &[u32],
    sizes: &[usize],
    split_ties: bool,
) -> Result<(), TestCaseError> {
    let rules = compile(&s.rules);
    let mut seen = HashSet::new();
    let input: Vec<In> = sorted(s.flat())
        .into_iter()
        .filter(|x| seen.insert((x.series, x.ts)))
        .collect();
    // Without `split_ties`, samples with one timestamp move together and keep their order.
    let mut shuffled: Vec<(i64, u32, i64, In)> = input
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let key = if split_ties {
                i
            } else {
                x.ts.rem_euclid(1 << 20) as usize
            };
            (
                x.ts.div_euclid(window),
                keys[key % keys.len()],
                if split_ties { 0 } else { x.ts },
                *x,
            )
        })
        .collect();
    shuffled.sort_by_key(|(w, k, ts, _)| (*w, *k, *ts));
    let shuffled: Vec<In> = shuffled.into_iter().map(|(.., x)| x).collect();
    let (reference, reference_alerts) = run(&rules, 0, std::slice::from_ref(&input));
    let (got, got_alerts) = run(&rules, lateness, &chunks(&shuffled, sizes));
    if let Some(d) = first_difference(
        "in order vs reordered within the lateness",
        &reference,
        &got,
    ) {
        return Err(TestCaseError::fail(format!(
            "{d}\nwindow {window}ms, lateness {lateness}ms\n{}",
            s.rules
        )));
    }
    prop_assert_eq!(reference_alerts, got_alerts);
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    /// In-order input, lateness 0: one batch or many, the same events. (Without compound
    /// rules: see `compound_steps_do_not_depend_on_how_the_watermark_moves`.)
    #[test]
    fn chunking_does_not_change_events(
        s in scenario(false, false),
        sizes in prop::collection::vec(1..40usize, 1..20),
    ) {
        check_chunking(&s, &sizes)?;
    }

    /// Samples shuffled within windows shorter than the lateness, then chunked: the same
    /// events as the sorted input in one batch.
    #[test]
    fn reordering_within_lateness_does_not_change_events(
        s in scenario(false, false),
        window in 1..3000i64,
        extra in 0..2000i64,
        keys in prop::collection::vec(any::<u32>(), 1..64),
        sizes in prop::collection::vec(1..40usize, 1..20),
    ) {
        check_reordering(&s, window, window + extra, &keys, &sizes, false)?;
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// As above, also reordering samples of different series that share a timestamp.
    #[test]
    #[ignore = "known limitation (docs/rules.md, `by`): samples of different series with one timestamp that feed one state are applied in arrival order; series ids follow interning order, so a deterministic tie-break would compare labels for every tied sample"]
    fn reordering_equal_timestamps_does_not_change_events(
        s in scenario(false, false),
        window in 1..3000i64,
        extra in 0..2000i64,
        keys in prop::collection::vec(any::<u32>(), 1..64),
        sizes in prop::collection::vec(1..40usize, 1..20),
    ) {
        check_reordering(&s, window, window + extra, &keys, &sizes, true)?;
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Chunking with series that fall silent for longer than the staleness.
    #[test]
    fn chunking_does_not_change_events_with_expiry(
        s in scenario(true, false),
        sizes in prop::collection::vec(1..40usize, 1..20),
    ) {
        check_chunking(&s, &sizes)?;
    }

    /// Chunking and reordering within the lateness, with compound rules.
    #[test]
    fn reordering_with_compound_rules_does_not_change_events(
        s in scenario(false, true),
        window in 1..3000i64,
        extra in 0..2000i64,
        keys in prop::collection::vec(any::<u32>(), 1..64),
        sizes in prop::collection::vec(1..40usize, 1..20),
    ) {
        check_reordering(&s, window, window + extra, &keys, &sizes, false)?;
    }
}

// ---------------------------------------------------------------------------------------
// Bad samples

#[derive(Debug, Clone)]
enum Op {
    Ingest(Vec<(u32, i64, f64)>),
    Advance(i64),
    Flush,
    SnapshotRestore,
}

fn bad_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => -10.0..10.0f64,
        1 => any::<f64>(),
        1 => prop::sample::select(vec![
            f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, f64::MIN, f64::MIN_POSITIVE,
            -0.0, 5e-324, STALE_MARKER, f64::from_bits(0x7ff8_0000_0000_0001),
        ]),
    ]
}

fn ops(ts: BoxedStrategy<i64>) -> impl Strategy<Value = Vec<Op>> {
    let sample = (
        prop_oneof![8 => 0..6u32, 1 => any::<u32>()],
        ts.clone(),
        bad_value(),
    );
    prop::collection::vec(
        prop_oneof![
            8 => prop::collection::vec(sample, 0..20).prop_map(Op::Ingest),
            1 => ts.prop_map(Op::Advance),
            1 => Just(Op::Flush),
            1 => Just(Op::SnapshotRestore),
        ],
        1..25,
    )
}

/// A rule of every kind.
const ALL_KINDS: &str = r#"group: g
interval: 10s
rules:
  - name: T
    select: x
    detect: { threshold: { above: 5 } }
    for: 20s
    keep_firing_for: 30s
    flapping: { max_changes: 2, within: 1m }
    actions: [alert, { evict: { node: "{{ $labels.node }}", namespace: "{{ $labels.ns }}", pod: "{{ $labels.pod }}" } }]
  - name: Z
    select: x
    by: [node]
    detect: { zscore: { window: 1m, min_samples: 3 } }
  - name: E
    select: x
    rate: 30s
    detect: { ewma: { alpha: 0.5, warmup: 2 } }
    new_series_delay: 20s
  - name: G
    select: x
    detect: { growth: { ratio: 0.1, samples: 2 } }
  - name: A
    select: x
    by: [node]
    detect: { absent: { intervals: 2 } }
  - name: S
    select: x
    aggregate: { op: avg, by: [node] }
    detect: { threshold: { below: 0 } }
  - name: Q
    select: h_bucket
    quantile: 0.9
    detect: { threshold: { above: 1 } }
  - name: C
    compound: { any: [T, A], within: 1m, on: [node] }
"#;

const BAD_SERIES: [&[(&str, &str)]; 4] = [
    &[
        ("__name__", "x"),
        ("node", "n1"),
        ("pod", "a"),
        ("ns", "prod"),
    ],
    &[("__name__", "x"), ("node", "n2")],
    &[("__name__", "h_bucket"), ("le", "1")],
    &[("__name__", "h_bucket"), ("le", "+Inf")],
];

/// Runs `ops` over the rules of [`ALL_KINDS`] (without the compound rule unless
/// `compound`), restoring every snapshot when `restore`.
fn run_ops_with(ops: &[Op], lateness_ms: i64, restore: bool, compound: bool) {
    let rules = if compound {
        ALL_KINDS
    } else {
        ALL_KINDS.split("  - name: C\n").next().unwrap_or(ALL_KINDS)
    };
    let rules = compile(rules);
    let mut ev = Evaluator::new(Arc::clone(&rules), cfg(lateness_ms));
    for op in ops {
        match op {
            Op::Ingest(samples) => {
                let ids: Vec<u32> = BAD_SERIES
                    .iter()
                    .map(|l| ev.intern(&labels_of(l)))
                    .collect();
                let batch: Vec<Sample> = samples
                    .iter()
                    .map(|&(s, ts, value)| Sample {
                        // Indices past the interned series stay as raw (unknown) ids.
                        series: ids.get(s as usize).copied().unwrap_or(s),
                        ts,
                        value,
                    })
                    .collect();
                ev.ingest(&batch);
            }
            Op::Advance(ts) => ev.advance_watermark(*ts),
            Op::Flush => ev.flush(),
            Op::SnapshotRestore if !restore => {
                let _ = ev.snapshot();
            }
            Op::SnapshotRestore => {
                let snap = ev.snapshot();
                ev = Evaluator::restore(Arc::clone(&rules), cfg(lateness_ms), &snap)
                    .unwrap_or_else(|e| panic!("a fresh snapshot does not restore: {e}"));
            }
        }
        let _ = ev.drain_events();
    }
    ev.flush();
    let _ = ev.alerts();
    let _ = ev.stats();
}

/// Timestamps within a few hours of `base` (epoch, now, before 1970, year 2286).
fn near(base: i64) -> BoxedStrategy<i64> {
    prop_oneof![
        4 => (0..3_600_000i64).prop_map(move |d| base + d),
        1 => (-600_000..14_400_000i64).prop_map(move |d| base + d),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(128))]

    /// NaN, ±Inf, huge values, unknown ids, negative timestamps, late and duplicate
    /// samples, watermark jumps, snapshots: never a panic. (Restoring the snapshots is
    /// left to `bad_samples_with_restores_never_panic`.)
    #[test]
    fn bad_samples_never_panic(
        (ops, lateness) in prop::sample::select(&[0i64, 1_700_000_000_000, -86_400_000_000, 10_000_000_000_000][..])
            .prop_flat_map(|base| (ops(near(base)), prop::sample::select(&[0i64, 10_000, 3_600_000][..]))),
    ) {
        run_ops_with(&ops, lateness, false, true);
    }

    /// As above, restoring every snapshot.
    #[test]
    fn bad_samples_with_restores_never_panic(
        (ops, lateness) in prop::sample::select(&[0i64, 1_700_000_000_000, -86_400_000_000, 10_000_000_000_000][..])
            .prop_flat_map(|base| (ops(near(base)), prop::sample::select(&[0i64, 10_000, 3_600_000][..]))),
    ) {
        run_ops_with(&ops, lateness, true, true);
    }

    /// Timestamps anywhere in i64 (almost all outside the accepted range).
    #[test]
    fn extreme_timestamps_never_panic(ops in ops(prop_oneof![
        any::<i64>(),
        prop::sample::select(vec![i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1, -1, MAX_TS + 1]),
    ].boxed())) {
        run_ops_with(&ops, 0, true, true);
    }

    /// Timestamps anywhere in the accepted range (1970..9999), with jumps across it, and
    /// no compound rule.
    #[test]
    fn jumps_across_the_accepted_range_never_panic(ops in ops(prop_oneof![
        0..=MAX_TS,
        prop::sample::select(vec![0, 1, MAX_TS, MAX_TS - 1]),
    ].boxed())) {
        run_ops_with(&ops, 0, true, false);
    }

    /// Timestamps anywhere in the accepted range (1970..9999), with jumps across it.
    #[test]
    fn jumps_across_the_accepted_range_with_compound_rules_never_panic(ops in ops(prop_oneof![
        0..=MAX_TS,
        prop::sample::select(vec![0, 1, MAX_TS, MAX_TS - 1]),
    ].boxed())) {
        run_ops_with(&ops, 0, true, true);
    }

    /// A damaged snapshot is an error or restores into an evaluator that works.
    #[test]
    fn damaged_snapshots_never_panic(
        edits in prop::collection::vec((any::<Index>(), any::<u8>()), 1..4),
        cut in prop::option::of(any::<Index>()),
    ) {
        let bytes = damaged_snapshot_of_all_kinds(|bytes| {
            for (i, b) in &edits {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            if let Some(c) = cut {
                bytes.truncate(c.index(bytes.len()));
            }
        });
        restore_and_run(&bytes);
    }
}

/// A snapshot of an evaluator of [`ALL_KINDS`] after a minute of samples, damaged by `f`.
fn damaged_snapshot_of_all_kinds(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let rules = compile(ALL_KINDS);
    let mut ev = Evaluator::new(Arc::clone(&rules), cfg(10_000));
    let ids: Vec<u32> = BAD_SERIES
        .iter()
        .map(|l| ev.intern(&labels_of(l)))
        .collect();
    let samples: Vec<Sample> = (0..60)
        .flat_map(|t| {
            ids.iter().map(move |&id| Sample {
                series: id,
                ts: t * 10_000,
                value: (t % 7) as f64,
            })
        })
        .collect();
    ev.ingest(&samples);
    let mut bytes = ev.snapshot();
    f(&mut bytes);
    bytes
}

/// Restores `bytes` (if they restore) and runs samples through the evaluator.
fn restore_and_run(bytes: &[u8]) {
    let rules = compile(ALL_KINDS);
    if let Ok(mut ev) = Evaluator::restore(Arc::clone(&rules), cfg(10_000), bytes) {
        let ids: Vec<u32> = BAD_SERIES
            .iter()
            .map(|l| ev.intern(&labels_of(l)))
            .collect();
        let more: Vec<Sample> = (60..80)
            .flat_map(|t| {
                ids.iter().map(move |&id| Sample {
                    series: id,
                    ts: t * 10_000,
                    value: 9.0,
                })
            })
            .collect();
        ev.ingest(&more);
        ev.flush();
        let _ = ev.alerts();
    }
}

// ---------------------------------------------------------------------------------------
// Reproducers of engine bugs found by the properties above

fn one_series(rules: &str, lateness_ms: i64) -> (Arc<RuleSet>, Evaluator, u32) {
    let rules = compile(rules);
    let mut ev = Evaluator::new(Arc::clone(&rules), cfg(lateness_ms));
    let id = ev.intern(&labels_of(&[("__name__", "x"), ("node", "n1")]));
    (rules, ev, id)
}

const THRESHOLD_AND_ABSENT: &str = "group: g\ninterval: 10s\nrules:\n  - name: T\n    select: x\n    detect: { threshold: { above: 1 } }\n  - name: A\n    select: x\n    detect: { absent: {} }\n";

#[test]
fn repetition_counts_are_capped() {
    for huge in [
        "_x18446744073709551615",
        "_x99999999999",
        "1+1x18446744073709551615",
    ] {
        assert!(notation::expand(huge).is_err(), "{huge}");
    }
}

#[test]
fn huge_windows_and_absence_spans_are_errors_not_overflows() {
    for detect in [
        "zscore: { window: 9223372036854775807ms }",
        "zscore: { window: 292471208y }",
    ] {
        let text = format!("group: g\ninterval: 10s\nrules:\n  - name: Z\n    select: x\n    detect: {{ {detect} }}\n");
        assert!(RuleSet::from_sources(&sources(&text)).is_err(), "{detect}");
    }
    // Absence after 4e9 intervals of 100000 years saturates instead of overflowing.
    let text = "group: g\ninterval: 100000y\nstaleness: 100000y\nrules:\n  - name: A\n    select: x\n    detect: { absent: { intervals: 4000000000 } }\n";
    let _ = RuleSet::from_sources(&sources(text));
}

#[test]
fn extreme_timestamps_do_not_panic() {
    for ts in [i64::MAX - 5, i64::MIN + 5] {
        let (_, mut ev, id) = one_series(THRESHOLD_AND_ABSENT, 0);
        ev.ingest(&[Sample {
            series: id,
            ts,
            value: 5.0,
        }]);
        ev.flush();
    }
}

/// Runs `f` on a thread and fails if it takes longer than `secs`.
fn within(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_secs(secs))
            .is_ok(),
        "still running after {secs}s"
    );
}

#[test]
fn jump_across_the_accepted_range_does_not_hang() {
    within(10, || {
        // The whole accepted range in one jump, with state in every kind of step rule.
        let rules = compile(ALL_KINDS);
        let mut ev = Evaluator::new(Arc::clone(&rules), cfg(0));
        let ids: Vec<u32> = BAD_SERIES
            .iter()
            .map(|l| ev.intern(&labels_of(l)))
            .collect();
        for ts in [0, 10_000, MAX_TS - 10_000, MAX_TS] {
            let batch: Vec<Sample> = ids
                .iter()
                .map(|&series| Sample {
                    series,
                    ts,
                    value: 9.0,
                })
                .collect();
            ev.ingest(&batch);
        }
        ev.flush();
    });
}

#[test]
fn expired_series_with_a_buffered_sample_does_not_hang() {
    within(10, || {
        let rules = "group: g\ninterval: 10s\nrules:\n  - name: T\n    select: x\n    detect: { threshold: { above: 1 } }\n";
        let (_, mut ev, id) = one_series(rules, 0);
        for ts in [0, 10_000, MAX_TS] {
            ev.ingest(&[Sample {
                series: id,
                ts,
                value: 5.0,
            }]);
        }
        ev.flush();
    });
}

#[test]
fn idle_compound_rule_does_not_hang() {
    within(10, || {
        let rules = "group: g\ninterval: 10s\nrules:\n  - name: T\n    select: x\n    by: [node]\n    detect: { threshold: { above: 1 } }\n  - name: C\n    compound: { any: [T], within: 1m, on: [node] }\n";
        let (_, mut ev, _) = one_series(rules, 0);
        let y = ev.intern(&labels_of(&[("__name__", "y")]));
        ev.ingest(&[Sample {
            series: y,
            ts: 0,
            value: 5.0,
        }]);
        // The live service moves the watermark from the clock when intake is idle.
        ev.advance_watermark(MAX_TS);
    });
}

#[test]
fn extreme_timestamps_do_not_hang() {
    within(10, || {
        let (_, mut ev, id) = one_series(THRESHOLD_AND_ABSENT, 0);
        // Milliseconds, then a timestamp in nanoseconds by mistake.
        ev.ingest(&[Sample {
            series: id,
            ts: 1_700_000_000_000,
            value: 5.0,
        }]);
        ev.ingest(&[Sample {
            series: id,
            ts: 1_700_000_000_000_000_000,
            value: 5.0,
        }]);
        ev.flush();
    });
}

#[test]
fn restore_of_unevaluated_series() {
    let rules = compile(
        "group: g\ninterval: 10s\nrules:\n  - name: A\n    select: x\n    detect: { absent: {} }\n",
    );
    let config = cfg(60_000);
    let series = |pod: &str| labels_of(&[("__name__", "x"), ("pod", pod)]);
    let mut ev = Evaluator::new(Arc::clone(&rules), config);
    let a = ev.intern(&series("a"));
    ev.ingest(&[
        Sample {
            series: a,
            ts: 0,
            value: 1.0,
        },
        Sample {
            series: a,
            ts: 100_000,
            value: 1.0,
        },
    ]);
    // b's first sample waits for the watermark (40s) when the snapshot is taken.
    let b = ev.intern(&series("b"));
    ev.ingest(&[Sample {
        series: b,
        ts: 90_000,
        value: 1.0,
    }]);
    // Events decided before the snapshot are not part of it.
    let _ = ev.drain_events();
    let snap = ev.snapshot();
    let mut restored = Evaluator::restore(Arc::clone(&rules), config, &snap).unwrap();
    assert!(
        restored.snapshot() == snap,
        "restore then snapshot changed the bytes"
    );
    // Panics in debug builds (`t - i64::MIN` in the absent step).
    restored.flush();
    ev.flush();
    assert_eq!(
        format!("{:?}", restored.drain_events()),
        format!("{:?}", ev.drain_events())
    );
}

/// Events of `batches` (label sets by index in `series`), as text.
fn events_of(
    rules: &str,
    series: &[&[(&str, &str)]],
    batches: &[&[(usize, i64, f64)]],
) -> Vec<String> {
    let rules = compile(rules);
    let mut ev = Evaluator::new(rules, cfg(0));
    let mut out = Vec::new();
    for b in batches {
        let samples: Vec<Sample> = b
            .iter()
            .map(|&(s, ts, value)| Sample {
                series: ev.intern(&labels_of(series[s])),
                ts,
                value,
            })
            .collect();
        ev.ingest(&samples);
        drain(&mut ev, &mut out);
    }
    ev.flush();
    drain(&mut ev, &mut out);
    out
}

#[test]
fn expiry_does_not_depend_on_chunking() {
    let rules = "group: g\ninterval: 10s\nrules:\n  - name: High\n    select: x\n    detect: { threshold: { above: 5 } }\n";
    let series: [&[(&str, &str)]; 2] = [&[("__name__", "x")], &[("__name__", "y")]];
    // x fires, goes silent for 10 minutes (y goes on), then comes back still high.
    let samples = [
        (0, 0, 9.0),
        (0, 1_000, 9.0),
        (1, 400_000, 1.0),
        (0, 600_000, 9.0),
    ];
    let whole = events_of(rules, &series, &[&samples]);
    let chunked = events_of(
        rules,
        &series,
        &[&samples[..2], &samples[2..3], &samples[3..]],
    );
    // In one batch x never expires (one firing); in three it expires at 330s (resolved)
    // and fires again at 600s.
    assert_eq!(whole, chunked);
}

#[test]
#[ignore = "known limitation (docs/rules.md, `by`): samples of different series with one timestamp that feed one state are applied in arrival order; series ids follow interning order, so a deterministic tie-break would compare labels for every tied sample"]
fn equal_timestamps_of_one_state_do_not_depend_on_arrival_order() {
    let rules = "group: g\ninterval: 10s\nrules:\n  - name: High\n    select: x\n    by: [node]\n    detect: { threshold: { above: 5 } }\n";
    let series: [&[(&str, &str)]; 2] = [
        &[("__name__", "x"), ("node", "n1"), ("pod", "a")],
        &[("__name__", "x"), ("node", "n1"), ("pod", "b")],
    ];
    // a then b: firing then resolved at 0s; b then a: firing from 0s on.
    let ab = events_of(rules, &series, &[&[(0, 0, 9.0), (1, 0, 1.0)]]);
    let ba = events_of(rules, &series, &[&[(1, 0, 1.0), (0, 0, 9.0)]]);
    assert_eq!(ab, ba);
}

#[test]
fn damaged_snapshot_with_unknown_buffered_series_does_not_panic() {
    let rules = compile(THRESHOLD_AND_ABSENT);
    let config = cfg(10_000);
    let mut ev = Evaluator::new(Arc::clone(&rules), config);
    let id = ev.intern(&labels_of(&[("__name__", "x")]));
    assert_eq!(id, 0);
    // Buffered (the watermark is at -10s) and easy to find: series 0, ts 0, this value.
    let value = 12_345.678_f64;
    ev.ingest(&[Sample {
        series: id,
        ts: 0,
        value,
    }]);
    let mut bytes = ev.snapshot();
    let mut pattern = vec![0u8, 0];
    pattern.extend_from_slice(&value.to_le_bytes());
    let at = bytes
        .windows(pattern.len())
        .position(|w| w == pattern)
        .expect("the buffered sample is in the snapshot");
    bytes[at] = 7; // series 7: never interned
    if let Ok(mut ev) = Evaluator::restore(Arc::clone(&rules), config, &bytes) {
        ev.flush();
    }
}

#[test]
fn compound_steps_do_not_depend_on_how_the_watermark_moves() {
    // R0 fires for x at 20s (absent for 2 intervals); C must go pending at that same
    // step whether the watermark moves in one jump (replay) or step by step (the live
    // service advances it from the clock when intake is idle).
    let rules = compile(
        "group: g\ninterval: 10s\nrules:\n  - name: R0\n    select: x\n    detect: { absent: { intervals: 2 } }\n  - name: C\n    compound: { any: [R0], within: 1m, on: [node] }\n",
    );
    let run = |steps: &[i64]| {
        let mut ev = Evaluator::new(Arc::clone(&rules), cfg(0));
        let x = ev.intern(&labels_of(&[("__name__", "x"), ("node", "n1")]));
        ev.ingest(&[Sample {
            series: x,
            ts: 0,
            value: 1.0,
        }]);
        for &w in steps {
            ev.advance_watermark(w);
        }
        let mut out = Vec::new();
        drain(&mut ev, &mut out);
        out
    };
    let jump = run(&[60_000]);
    let steps = run(&(1..=6).map(|i| i * 10_000).collect::<Vec<_>>());
    assert_eq!(jump, steps);
}

#[test]
fn series_expire_after_an_idle_stretch() {
    let rules = compile(
        "group: g\ninterval: 10s\nrules:\n  - name: High\n    select: x\n    detect: { threshold: { above: 5 } }\n",
    );
    let mut ev = Evaluator::new(Arc::clone(&rules), cfg(0));
    let x = labels_of(&[("__name__", "x")]);
    let mut out = Vec::new();
    // Fires at 0, resolves when x expires at 5m30s; nothing is live afterwards.
    let id = ev.intern(&x);
    ev.ingest(&[Sample {
        series: id,
        ts: 0,
        value: 9.0,
    }]);
    ev.advance_watermark(3_600_000);
    // x comes back at 2h and fires again, then falls silent: it must expire again.
    let id = ev.intern(&x);
    ev.ingest(&[Sample {
        series: id,
        ts: 7_200_000,
        value: 9.0,
    }]);
    ev.advance_watermark(10_800_000);
    drain(&mut ev, &mut out);
    let states: Vec<&str> = out
        .iter()
        .map(|e| {
            ["Firing", "Resolved"]
                .into_iter()
                .find(|s| e.contains(&format!("state: {s}")))
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(
        states,
        ["Firing", "Resolved", "Firing", "Resolved"],
        "{out:#?}"
    );
    assert_eq!(
        ev.series().len(),
        0,
        "x is still live an hour after its last sample"
    );
}

#[test]
fn idle_compound_rule_wakes_as_if_it_had_stepped() {
    // C loses its states a day after A last fired, skips its idle steps, and must come
    // back at the step where T fires two days later, exactly as when the watermark
    // moves one interval at a time.
    let rules = compile(
        "group: g\ninterval: 10s\nrules:\n  - name: T\n    select: x\n    by: [node]\n    detect: { threshold: { above: 5 } }\n  - name: A\n    select: x\n    by: [node]\n    detect: { absent: { intervals: 3 } }\n  - name: C\n    compound: { any: [T, A], within: 1m, on: [node] }\n    for: 20s\n",
    );
    let day = 86_400_000;
    let run = |stepwise: bool| {
        let mut ev = Evaluator::new(Arc::clone(&rules), cfg(0));
        let mut out = Vec::new();
        let feed = |ev: &mut Evaluator, ts: i64, value: f64| {
            let x = ev.intern(&labels_of(&[("__name__", "x"), ("node", "n1")]));
            ev.ingest(&[Sample {
                series: x,
                ts,
                value,
            }]);
        };
        feed(&mut ev, 0, 1.0);
        let until = 3 * day + 5_000;
        if stepwise {
            for w in (1..).map(|i| i * 10_000).take_while(|&w| w < until) {
                ev.advance_watermark(w);
                drain(&mut ev, &mut out);
            }
        }
        for ts in [until, until + 10_000, until + 20_000, until + 30_000] {
            feed(&mut ev, ts, 9.0);
        }
        ev.advance_watermark(until + 600_000);
        drain(&mut ev, &mut out);
        (out, ev.rule_stats(2).evaluations)
    };
    let (jump, jump_evals) = run(false);
    let (steps, step_evals) = run(true);
    assert!(
        jump.iter().filter(|e| e.contains("rule: \"C\"")).count() >= 4,
        "{jump:#?}"
    );
    assert_eq!(jump, steps);
    assert_eq!(jump_evals, step_evals);
}
