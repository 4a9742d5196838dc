//! NAB mode (`vigil replay --nab DATA_DIR --rules PATH --out RESULTS_DIR`): score every
//! CSV of the Numenta Anomaly Benchmark layout with the rules' detector scores and
//! write result files the NAB scorer reads.
//!
//! Every `DATA_DIR/<category>/<file>.csv` is evaluated alone, by a fresh evaluator
//! that records every evaluation of every state (`trace_all`), and gives
//! `RESULTS_DIR/<detector>/<category>/<detector>_<file>.csv` with the header
//! `timestamp,value,anomaly_score` and one row per input row (timestamp and value
//! copied as written in the input). A row's `anomaly_score` is the detector score in
//! [0, 1] of the evaluation at that row's time, the highest over rules when several
//! rules select the file's series, and 0 where no detector had a verdict (warm-up, or
//! a value the engine drops, such as NaN); rows with the same timestamp share its
//! score. Step rules (`aggregate`) evaluate at interval steps: a step's score goes to
//! the last row at or before it.
//!
//! The evaluator is driven here rather than through [`crate::driver::replay`]: the rows
//! are read once (their text is copied to the results) and the traced histories are
//! read before every gap long enough for the state to expire, since an expired state
//! takes its history with it.
//!
//! The CSV reader names the series after the file ([`crate::source::csv_metric`]), so
//! NAB rules select every series: `select: '{__name__=~".+"}'` (see
//! `examples/nab/rules.yaml`). NAB files have gaps of hours or days; give the group a
//! `staleness` longer than them, or states expire in the gaps and their detectors
//! start over (the scores written are still every evaluation's).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vigil_engine::labels::{self, Labels, METRIC_NAME};
use vigil_engine::rule::{Rule, RuleKind};
use vigil_engine::template::Vars;
use vigil_engine::{Evaluator, EvaluatorConfig, RuleSet, Sample};

use crate::source::{csv_metric, parse_csv};

/// Scores every `data_dir/<category>/*.csv` with `rules` and writes
/// `out_dir/<detector>/<category>/<detector>_<file>.csv`. Returns the number of files
/// written. Prints nothing.
pub fn run(
    data_dir: &Path,
    out_dir: &Path,
    detector: &str,
    rules: Arc<RuleSet>,
) -> Result<usize, String> {
    if detector.is_empty() || detector.contains(['/', '\\']) || detector == "." || detector == ".."
    {
        return Err(format!(
            "--detector {detector:?}: must be a plain name (it names a directory)"
        ));
    }
    let files = list(data_dir)?;
    if files.is_empty() {
        return Err(format!(
            "{}: no NAB data: expected CSV files in category directories, {}/<category>/<file>.csv",
            data_dir.display(),
            data_dir.display()
        ));
    }
    for (category, file) in &files {
        let rows = read_rows(file)?;
        let scores = score_rows(file, &rows, Arc::clone(&rules));
        let dir = out_dir.join(detector).join(category);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("series.csv");
        let out = dir.join(format!("{detector}_{name}"));
        let mut text = String::with_capacity(rows.len() * 48 + 32);
        text.push_str("timestamp,value,anomaly_score\n");
        for (row, score) in rows.iter().zip(&scores) {
            let _ = writeln!(text, "{},{},{}", row.ts_text, row.value_text, score);
        }
        std::fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(files.len())
}

/// (category, file) of every `*.csv` one level below `data_dir`, sorted.
fn list(data_dir: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let read = |p: &Path| -> Result<Vec<PathBuf>, String> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        v.sort();
        Ok(v)
    };
    let mut out = Vec::new();
    for dir in read(data_dir)?.into_iter().filter(|p| p.is_dir()) {
        let Some(category) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        for f in read(&dir)? {
            if f.is_file()
                && f.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
            {
                out.push((category.clone(), f));
            }
        }
    }
    Ok(out)
}

/// One input row, as written and as parsed.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    ts_text: String,
    value_text: String,
    ts: i64,
    value: f64,
}

fn read_rows(path: &Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty()
            || (i == 0 && line.trim_start_matches('\u{feff}').starts_with("timestamp"))
        {
            continue;
        }
        let (ts, value) =
            parse_csv(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        let (ts_text, value_text) = line.split_once(',').unwrap_or((line, ""));
        rows.push(Row {
            ts_text: ts_text.trim().to_string(),
            value_text: value_text.trim().to_string(),
            ts,
            value,
        });
    }
    Ok(rows)
}

/// The fingerprint of the alert that `rule` would raise for the series `series`,
/// as the evaluator computes it; None for rules whose states are not per series
/// (histogram quantiles, compound rules).
fn alert_fingerprint(rule: &Rule, series: &Labels) -> Option<u64> {
    let buf = labels::encode(series);
    let mut key = Vec::new();
    match &rule.kind {
        RuleKind::Aggregate { by, .. } => labels::project(&buf, by, &mut key),
        RuleKind::Direct | RuleKind::Absent { .. } => match &rule.by {
            Some(by) => labels::project(&buf, by, &mut key),
            None => labels::without(&buf, &[METRIC_NAME], &mut key),
        },
        RuleKind::Quantile { .. } | RuleKind::Compound(_) => return None,
    }
    let base = labels::decode(&key);
    let mut alert = base.clone();
    for (k, t) in &rule.labels {
        let v = t.render(Vars {
            labels: &base,
            value: f64::NAN,
            score: f64::NAN,
        });
        alert.insert(k.clone(), v);
    }
    alert.insert("alertname".into(), rule.name.to_string());
    alert.insert("severity".into(), rule.severity.as_str().into());
    Some(labels::fingerprint(&labels::encode(&alert)))
}

/// Evaluates the rows (one series) and returns the score of each row.
fn score_rows(path: &Path, rows: &[Row], rules: Arc<RuleSet>) -> Vec<f64> {
    let config = EvaluatorConfig {
        lateness_ms: 0,
        history_points: usize::MAX,
        trace_all: true,
    };
    let mut series = Labels::new();
    series.insert(METRIC_NAME.into(), csv_metric(path));
    let targets: Vec<(Arc<str>, u64)> = rules
        .rules
        .iter()
        .filter(|r| {
            r.selector
                .as_ref()
                .is_some_and(|s| s.matches(&labels::encode(&series)))
        })
        .filter_map(|r| Some((Arc::clone(&r.name), alert_fingerprint(r, &series)?)))
        .collect();
    // States expire in long gaps (history and all): read the histories before each gap
    // longer than half the shortest staleness, and at the end.
    let gap = rules
        .rules
        .iter()
        .map(|r| r.staleness_ms)
        .min()
        .unwrap_or(300_000)
        .max(2)
        / 2;
    let mut ev = Evaluator::new(rules, config);
    // Samples carry the series id; an expired series is interned anew.
    let ingest = |ev: &mut Evaluator, batch: &mut Vec<(i64, f64)>| {
        let id = ev.intern(&series);
        let samples: Vec<Sample> = batch
            .drain(..)
            .map(|(ts, value)| Sample {
                series: id,
                ts,
                value,
            })
            .collect();
        ev.ingest(&samples);
    };
    let mut by_ts: BTreeMap<i64, f64> = BTreeMap::new();
    let harvest = |ev: &Evaluator, by_ts: &mut BTreeMap<i64, f64>| {
        for (rule, fp) in &targets {
            if let Some(h) = ev.series_history(rule, *fp) {
                for p in h.points {
                    let s = if p.score.is_nan() {
                        0.0
                    } else {
                        p.score.clamp(0.0, 1.0)
                    };
                    let e = by_ts.entry(p.ts).or_insert(0.0);
                    *e = e.max(s);
                }
            }
        }
    };
    let mut batch: Vec<(i64, f64)> = Vec::with_capacity(4096);
    let mut prev: Option<i64> = None;
    for r in rows {
        if let Some(p) = prev {
            if r.ts - p >= gap {
                ingest(&mut ev, &mut batch);
                ev.advance_watermark(p.saturating_add(1));
                harvest(&ev, &mut by_ts);
            }
        }
        if prev.is_none_or(|p| r.ts > p) {
            prev = Some(r.ts);
        }
        batch.push((r.ts, r.value));
        if batch.len() >= 4096 {
            ingest(&mut ev, &mut batch);
        }
    }
    ingest(&mut ev, &mut batch);
    ev.flush();
    harvest(&ev, &mut by_ts);
    // A step evaluation scores the last row at or before it.
    let mut times: Vec<i64> = rows.iter().map(|r| r.ts).collect();
    times.sort_unstable();
    times.dedup();
    let mut row_score: BTreeMap<i64, f64> = BTreeMap::new();
    for (ts, s) in by_ts {
        let i = times.partition_point(|&t| t <= ts);
        if i == 0 {
            continue;
        }
        let e = row_score.entry(times[i - 1]).or_insert(0.0);
        *e = e.max(s);
    }
    rows.iter()
        .map(|r| row_score.get(&r.ts).copied().unwrap_or(0.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_engine::rule::Source;

    fn rules(detect: &str, extra: &str) -> Arc<RuleSet> {
        let text = format!(
            "group: nab\ninterval: 5m\nstaleness: 30d\nrules:\n  - name: Nab\n    select: '{{__name__=~\".+\"}}'\n{extra}    detect:\n      {detect}\n"
        );
        Arc::new(
            RuleSet::from_sources(&[Source {
                name: "nab.yaml".into(),
                text,
            }])
            .unwrap(),
        )
    }

    fn write_csv(dir: &Path, category: &str, name: &str, values: &[f64], step_s: i64) -> PathBuf {
        let d = dir.join(category);
        std::fs::create_dir_all(&d).unwrap();
        let mut text = String::from("timestamp,value\n");
        for (i, v) in values.iter().enumerate() {
            let t = time::OffsetDateTime::from_unix_timestamp(1_396_310_400 + i as i64 * step_s)
                .unwrap();
            let _ = writeln!(
                text,
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{v}",
                t.year(),
                t.month() as u8,
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
        }
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn read_scores(p: &Path) -> Vec<f64> {
        let text = std::fs::read_to_string(p).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
        lines
            .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
            .collect()
    }

    fn wave(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 10.0 + ((i * 7919) % 13) as f64 * 0.1)
            .collect()
    }

    #[test]
    fn scores_every_row_and_flags_the_spike() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut v = wave(300);
        v[200] = 50.0;
        write_csv(&data, "cat", "spiky.csv", &v, 300);
        write_csv(&data, "cat", "flat.csv", &[5.0; 100], 300);
        std::fs::write(data.join("README.md"), "not data").unwrap();
        let out = dir.path().join("results");
        let n = run(
            &data,
            &out,
            "vigil",
            rules("zscore: { window: 1h, min_samples: 10 }", ""),
        )
        .unwrap();
        assert_eq!(n, 2);
        let s = read_scores(&out.join("vigil/cat/vigil_spiky.csv"));
        assert_eq!(s.len(), 300);
        assert!(s.iter().all(|x| (0.0..=1.0).contains(x)));
        assert_eq!(s[0], 0.0, "warm-up has no verdict");
        assert!(s[200] > 0.9, "{}", s[200]);
        assert!(s[150] < 0.5, "{}", s[150]);
        let f = read_scores(&out.join("vigil/cat/vigil_flat.csv"));
        assert_eq!(f.len(), 100);
        assert!(f.iter().all(|&x| x == 0.0));
        // Rows are copied as written.
        let text = std::fs::read_to_string(out.join("vigil/cat/vigil_spiky.csv")).unwrap();
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .starts_with("2014-04-01 00:00:00,10,"),
            "{text:.80}"
        );
    }

    #[test]
    fn keeps_scores_across_gaps_longer_than_staleness() {
        // Default staleness (5m), blocks of 1-minute samples a day apart: the state may
        // expire in each gap (history and all); every block keeps its scores.
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let d = data.join("c");
        std::fs::create_dir_all(&d).unwrap();
        let mut text = String::from("timestamp,value\n");
        for block in 0..3i64 {
            for i in 0..40i64 {
                let t = 1_396_310_400 + block * 86_400 + i * 60;
                let v = if i == 30 {
                    100.0
                } else {
                    10.0 + (i % 3) as f64
                };
                let t = time::OffsetDateTime::from_unix_timestamp(t).unwrap();
                let _ = writeln!(
                    text,
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{v}",
                    t.year(),
                    t.month() as u8,
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                );
            }
        }
        std::fs::write(d.join("gappy.csv"), text).unwrap();
        let text = "group: g\ninterval: 1m\nrules:\n  - name: Nab\n    select: '{__name__=~\".+\"}'\n    detect:\n      zscore: { window: 30m, min_samples: 10 }\n";
        let set = Arc::new(
            RuleSet::from_sources(&[Source {
                name: "g.yaml".into(),
                text: text.into(),
            }])
            .unwrap(),
        );
        let out = dir.path().join("out");
        run(&data, &out, "det", set).unwrap();
        let s = read_scores(&out.join("det/c/det_gappy.csv"));
        assert_eq!(s.len(), 120);
        for block in 0..3 {
            assert!(
                s[block * 40 + 30] > 0.9,
                "block {block}: {}",
                s[block * 40 + 30]
            );
            assert_eq!(s[block * 40], 0.0);
        }
    }

    #[test]
    fn step_rules_and_fingerprints() {
        // An aggregate rule with a templated label: scores land on rows.
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut v = wave(200);
        v[150] = 80.0;
        write_csv(&data, "c", "agg.csv", &v, 300);
        let set = rules(
            "zscore: { window: 2h, min_samples: 10 }",
            "    aggregate: { op: max, by: [] }\n    labels: { team: \"{{ $labels.x }}nab\" }\n",
        );
        let out = dir.path().join("out");
        run(&data, &out, "v", set).unwrap();
        let s = read_scores(&out.join("v/c/v_agg.csv"));
        assert_eq!(s.len(), 200);
        let max = s.iter().cloned().fold(0.0, f64::max);
        assert!(max > 0.9, "{max}");
        assert!(s[100] > 0.0 && s[100] < 0.5, "{}", s[100]);
    }

    #[test]
    fn errors() {
        let dir = tempfile::tempdir().unwrap();
        let set = rules("zscore: { window: 1h }", "");
        let e = run(dir.path(), &dir.path().join("o"), "v", Arc::clone(&set)).unwrap_err();
        assert!(e.contains("no NAB data"), "{e}");
        assert!(run(dir.path(), dir.path(), "a/b", Arc::clone(&set))
            .unwrap_err()
            .contains("plain name"));
        let d = dir.path().join("c");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("bad.csv"),
            "timestamp,value\n2014-04-01 00:00:00,1\nnope\n",
        )
        .unwrap();
        let e = run(dir.path(), &dir.path().join("o"), "v", set).unwrap_err();
        assert!(e.contains("bad.csv:3:"), "{e}");
    }
}
