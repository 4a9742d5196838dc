//! Evaluator behaviour tests over small rule sets.

use super::*;
use crate::rule::Source;

fn rules(yaml: &str) -> Arc<RuleSet> {
    Arc::new(
        RuleSet::from_sources(&[Source {
            name: "t.yaml".into(),
            text: yaml.into(),
        }])
        .unwrap_or_else(|e| panic!("{e}")),
    )
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn states(events: &[Event]) -> Vec<(i64, &'static str)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Alert(a) => Some((a.ts, a.state.as_str())),
            Event::Intent(_) => None,
        })
        .collect()
}

const THRESHOLD: &str = "group: g\ninterval: 10s\nrules:\n  - name: High\n    select: x\n    detect: { threshold: { above: 5 } }\n    for: 20s\n";

#[test]
fn threshold_pending_firing_resolved() {
    let mut ev = Evaluator::new(rules(THRESHOLD), EvaluatorConfig::default());
    let id = ev.intern(&labels(&[("__name__", "x"), ("pod", "a")]));
    let vals = [1.0, 9.0, 9.0, 9.0, 1.0];
    let samples: Vec<Sample> = vals
        .iter()
        .enumerate()
        .map(|(i, &v)| Sample {
            series: id,
            ts: i as i64 * 10_000,
            value: v,
        })
        .collect();
    ev.ingest(&samples);
    ev.flush();
    let ev_out = ev.drain_events();
    assert_eq!(
        states(&ev_out),
        [
            (10_000, "pending"),
            (30_000, "firing"),
            (40_000, "resolved")
        ]
    );
    let Event::Alert(a) = &ev_out[1] else {
        panic!()
    };
    assert_eq!(
        a.labels,
        labels(&[("alertname", "High"), ("pod", "a"), ("severity", "warning")])
    );
}

#[test]
fn late_duplicate_and_non_finite_samples_are_counted() {
    let cfg = EvaluatorConfig {
        lateness_ms: 10_000,
        ..EvaluatorConfig::default()
    };
    let mut ev = Evaluator::new(rules(THRESHOLD), cfg);
    let id = ev.intern(&labels(&[("__name__", "x")]));
    let s = |ts: i64, value: f64| Sample {
        series: id,
        ts,
        value,
    };
    ev.ingest(&[
        s(20_000, 1.0),
        s(10_000, 1.0),
        s(10_000, 2.0),
        s(30_000, f64::NAN),
    ]);
    assert_eq!(ev.watermark(), Some(10_000));
    ev.ingest(&[s(5_000, 1.0), s(40_000, f64::INFINITY), s(45_000, 1.0)]);
    ev.flush();
    let st = ev.stats();
    assert_eq!((st.late, st.duplicate, st.non_finite), (1, 1, 2));
    assert_eq!(st.evaluated, 3);
    assert_eq!(ev.rule_stats(0).samples, 3);
}

#[test]
fn out_of_order_within_lateness_equals_in_order() {
    let yaml = "group: g\ninterval: 1s\nrules:\n  - name: Z\n    select: x\n    detect: { zscore: { window: 20s, min_samples: 5 } }\n";
    let run = |shuffle: bool| {
        let mut ev = Evaluator::new(
            rules(yaml),
            EvaluatorConfig {
                lateness_ms: 5_000,
                ..EvaluatorConfig::default()
            },
        );
        let id = ev.intern(&labels(&[("__name__", "x")]));
        let mut samples: Vec<Sample> = (0..40)
            .map(|i| Sample {
                series: id,
                ts: i * 1000,
                value: if i == 30 { 100.0 } else { (i % 3) as f64 },
            })
            .collect();
        if shuffle {
            for c in samples.chunks_mut(4) {
                c.reverse();
            }
        }
        for c in samples.chunks(3) {
            ev.ingest(c);
        }
        ev.flush();
        (ev.drain_events(), ev.stats().late)
    };
    let (a, late_a) = run(false);
    let (b, late_b) = run(true);
    assert_eq!((late_a, late_b), (0, 0));
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn series_cap_refuses_and_counts() {
    let yaml = "group: g\ninterval: 10s\nrules:\n  - name: High\n    select: x\n    max_series: 2\n    detect: { threshold: { above: 5 } }\n";
    let mut ev = Evaluator::new(rules(yaml), EvaluatorConfig::default());
    let ids: Vec<_> = (0..5)
        .map(|i| ev.intern(&labels(&[("__name__", "x"), ("pod", &i.to_string())])))
        .collect();
    let samples: Vec<Sample> = ids
        .iter()
        .map(|&id| Sample {
            series: id,
            ts: 0,
            value: 9.0,
        })
        .collect();
    ev.ingest(&samples);
    ev.flush();
    assert_eq!(ev.rule_stats(0).refused, 3);
    assert_eq!(ev.rule_stats(0).states, 2);
    assert_eq!(ev.take_notices().len(), 1);
    assert_eq!(ev.alerts().len(), 2);
}

#[test]
fn silent_series_expire_and_resolve() {
    let mut ev = Evaluator::new(
        rules(THRESHOLD.replace("for: 20s", "for: 0s").as_str()),
        EvaluatorConfig::default(),
    );
    let id = ev.intern(&labels(&[("__name__", "x")]));
    ev.ingest(&[Sample {
        series: id,
        ts: 0,
        value: 9.0,
    }]);
    let other = ev.intern(&labels(&[("__name__", "y")]));
    ev.ingest(&[Sample {
        series: other,
        ts: 400_000,
        value: 1.0,
    }]);
    ev.flush();
    let out = ev.drain_events();
    assert_eq!(states(&out)[0], (0, "firing"));
    let (ts, state) = states(&out)[1];
    assert_eq!(state, "resolved");
    assert!(
        ts > 300_000 && ts <= 330_000,
        "resolved at the first sweep after 5m: {ts}"
    );
    assert_eq!(ev.stats().expired_series, 1);
    assert_eq!(ev.rule_stats(0).states, 0);
}

#[test]
fn aggregate_rate_by_node() {
    let yaml = "group: g\ninterval: 10s\nrules:\n  - name: Hot\n    select: c\n    rate: 30s\n    aggregate: { op: sum, by: [node] }\n    detect: { threshold: { above: 3 } }\n";
    let mut ev = Evaluator::new(rules(yaml), EvaluatorConfig::default());
    let a = ev.intern(&labels(&[("__name__", "c"), ("node", "n1"), ("pod", "a")]));
    let b = ev.intern(&labels(&[("__name__", "c"), ("node", "n1"), ("pod", "b")]));
    let c = ev.intern(&labels(&[("__name__", "c"), ("node", "n2"), ("pod", "c")]));
    let mut samples = Vec::new();
    for i in 0..10i64 {
        let ts = i * 10_000;
        samples.push(Sample {
            series: a,
            ts,
            value: (i * 20) as f64,
        }); // 2/s
        samples.push(Sample {
            series: b,
            ts,
            value: (i * 20) as f64,
        }); // 2/s
        samples.push(Sample {
            series: c,
            ts,
            value: (i * 20) as f64,
        }); // 2/s
    }
    ev.ingest(&samples);
    ev.flush();
    let alerts = ev.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].labels.get("node").map(String::as_str), Some("n1"));
    assert!((alerts[0].value - 4.0).abs() < 1e-9);
}

#[test]
fn absent_fires_when_quiet_via_watermark() {
    let yaml = "group: g\ninterval: 10s\nrules:\n  - name: Gone\n    select: heartbeat\n    by: [node]\n    detect: { absent: { intervals: 3 } }\n";
    let mut ev = Evaluator::new(rules(yaml), EvaluatorConfig::default());
    let id = ev.intern(&labels(&[("__name__", "heartbeat"), ("node", "n1")]));
    ev.ingest(
        &(0..3)
            .map(|i| Sample {
                series: id,
                ts: i * 10_000,
                value: 1.0,
            })
            .collect::<Vec<_>>(),
    );
    ev.advance_watermark(49_999);
    assert!(ev.alerts().is_empty());
    ev.advance_watermark(50_001);
    let alerts = ev.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].labels.get("node").map(String::as_str), Some("n1"));
    ev.ingest(&[Sample {
        series: id,
        ts: 60_000,
        value: 1.0,
    }]);
    ev.advance_watermark(60_001);
    assert!(ev.alerts().is_empty(), "a sample brings it back");
}

#[test]
fn compound_joins_on_node_and_emits_intent() {
    let yaml = r#"group: g
interval: 10s
rules:
  - name: A
    select: a
    by: [node]
    detect: { threshold: { above: 1 } }
  - name: B
    select: b
    by: [node, pod]
    detect: { threshold: { above: 1 } }
  - name: Both
    compound: { all: [A, B], within: 1m, on: [node] }
    severity: critical
    actions: [alert, { isolate: { node: "{{ $labels.node }}" } }]
"#;
    let mut ev = Evaluator::new(rules(yaml), EvaluatorConfig::default());
    let a1 = ev.intern(&labels(&[("__name__", "a"), ("node", "n1")]));
    let b1 = ev.intern(&labels(&[("__name__", "b"), ("node", "n1"), ("pod", "p")]));
    let b2 = ev.intern(&labels(&[("__name__", "b"), ("node", "n2"), ("pod", "p")]));
    ev.ingest(&[
        Sample {
            series: a1,
            ts: 0,
            value: 5.0,
        },
        Sample {
            series: b2,
            ts: 0,
            value: 5.0,
        },
        Sample {
            series: b1,
            ts: 30_000,
            value: 5.0,
        },
    ]);
    ev.advance_watermark(40_001);
    let out = ev.drain_events();
    let intents: Vec<&Intent> = out
        .iter()
        .filter_map(|e| {
            if let Event::Intent(i) = e {
                Some(i)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(intents.len(), 1, "{out:#?}");
    assert_eq!(
        (intents[0].action, intents[0].node.as_str(), intents[0].ts),
        (Action::Isolate, "n1", 30_000)
    );
    let both: Vec<_> = ev
        .alerts()
        .into_iter()
        .filter(|a| &*a.rule == "Both")
        .collect();
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].labels.get("node").map(String::as_str), Some("n1"));
}

#[test]
fn quantile_from_buckets() {
    let yaml = "group: g\ninterval: 10s\nrules:\n  - name: Slow\n    select: lat_bucket\n    quantile: 0.9\n    aggregate: { op: sum, by: [svc] }\n    detect: { threshold: { above: 0.4 } }\n";
    let mut ev = Evaluator::new(rules(yaml), EvaluatorConfig::default());
    let mut samples = Vec::new();
    for (le, count) in [("0.1", 50.0), ("0.5", 90.0), ("1", 100.0), ("+Inf", 100.0)] {
        for pod in ["a", "b"] {
            let id = ev.intern(&labels(&[
                ("__name__", "lat_bucket"),
                ("le", le),
                ("svc", "api"),
                ("pod", pod),
            ]));
            samples.push(Sample {
                series: id,
                ts: 5_000,
                value: count / 2.0,
            });
        }
    }
    ev.ingest(&samples);
    ev.advance_watermark(10_001);
    let alerts = ev.alerts();
    assert_eq!(alerts.len(), 1);
    assert!(
        (alerts[0].value - 0.5).abs() < 1e-9,
        "p90 = 0.5: {}",
        alerts[0].value
    );
}

#[test]
fn snapshot_restore_continues_identically() {
    let yaml = "group: g\ninterval: 1s\nrules:\n  - name: Z\n    select: x\n    for: 2s\n    keep_firing_for: 3s\n    detect: { zscore: { window: 20s, min_samples: 5 } }\n";
    let set = rules(yaml);
    let input: Vec<(i64, f64)> = (0..60)
        .map(|i| {
            (
                i * 1000,
                if (30..34).contains(&i) {
                    50.0
                } else {
                    (i % 4) as f64
                },
            )
        })
        .collect();
    let mut full = Evaluator::new(Arc::clone(&set), EvaluatorConfig::default());
    let id = full.intern(&labels(&[("__name__", "x")]));
    let all: Vec<Sample> = input
        .iter()
        .map(|&(ts, value)| Sample {
            series: id,
            ts,
            value,
        })
        .collect();
    full.ingest(&all);
    full.flush();
    let expect = full.drain_events();
    let mut first = Evaluator::new(Arc::clone(&set), EvaluatorConfig::default());
    let id2 = first.intern(&labels(&[("__name__", "x")]));
    assert_eq!(id, id2);
    first.ingest(&all[..31]);
    let mut got = first.drain_events();
    let mut second = Evaluator::restore(
        Arc::clone(&set),
        EvaluatorConfig::default(),
        &first.snapshot(),
    )
    .unwrap();
    second.ingest(&all[31..]);
    second.flush();
    got.extend(second.drain_events());
    assert!(!expect.is_empty());
    assert_eq!(got, expect);
}

#[test]
fn corrupt_snapshots_are_errors() {
    let set = rules(THRESHOLD);
    let ev = Evaluator::new(Arc::clone(&set), EvaluatorConfig::default());
    let good = ev.snapshot();
    assert!(matches!(
        Evaluator::restore(Arc::clone(&set), EvaluatorConfig::default(), b"nope"),
        Err(SnapshotError::BadMagic)
    ));
    let mut wrong = good.clone();
    wrong[4] = 99;
    assert!(matches!(
        Evaluator::restore(Arc::clone(&set), EvaluatorConfig::default(), &wrong),
        Err(SnapshotError::Version { found: 99, .. })
    ));
    assert!(matches!(
        Evaluator::restore(set, EvaluatorConfig::default(), &good[..good.len() - 1]),
        Err(SnapshotError::Corrupt(_))
    ));
}

#[test]
fn interned_series_without_samples_are_not_expired_early() {
    // Regression: a series interned long before its first sample was swept as silent.
    let mut ev = Evaluator::new(
        rules(THRESHOLD.replace("for: 20s", "for: 0s").as_str()),
        EvaluatorConfig::default(),
    );
    let early = ev.intern(&labels(&[("__name__", "x"), ("pod", "early")]));
    let other = ev.intern(&labels(&[("__name__", "y")]));
    ev.ingest(
        &(0..10)
            .map(|i| Sample {
                series: other,
                ts: i * 30_000,
                value: 1.0,
            })
            .collect::<Vec<_>>(),
    );
    ev.ingest(&[Sample {
        series: early,
        ts: 300_000,
        value: 9.0,
    }]);
    ev.flush();
    assert_eq!(ev.stats().unknown_series, 0);
    assert_eq!(ev.alerts().len(), 1);
}

#[test]
fn history_starts_when_active_with_the_zscore_window() {
    let yaml = "group: g\ninterval: 1s\nrules:\n  - name: Z\n    select: x\n    detect: { zscore: { window: 10s, min_samples: 5 } }\n";
    let mut ev = Evaluator::new(rules(yaml), EvaluatorConfig::default());
    let id = ev.intern(&labels(&[("__name__", "x")]));
    let samples: Vec<Sample> = (0..20)
        .map(|i| Sample {
            series: id,
            ts: i * 1000,
            value: if i == 15 { 100.0 } else { (i % 2) as f64 },
        })
        .collect();
    ev.ingest(&samples);
    ev.flush();
    let fp = match ev.drain_events().first() {
        Some(Event::Alert(a)) => a.fingerprint,
        other => panic!("{other:?}"),
    };
    let h = ev.series_history("Z", fp).unwrap();
    assert_eq!(
        h.points.first().map(|p| p.ts),
        Some(6_000),
        "seeded with the 9 window points before 15s"
    );
    let spike = h.points.iter().find(|p| p.ts == 15_000).unwrap();
    assert_eq!(spike.value, 100.0);
    assert!(
        spike.lo < 0.0 && spike.hi > 1.0 && spike.hi < 100.0,
        "{spike:?}"
    );
    assert_eq!(h.points.last().map(|p| p.ts), Some(19_000));
    assert!(ev.series_history("Z", fp ^ 1).is_none());
}

#[test]
fn expiry_does_not_depend_on_batching() {
    // Regression: expiry used the newest *received* timestamp, so one ingest call that
    // spanned a silence kept a series alive that per-sample ingest expired.
    let yaml = "group: g\ninterval: 10s\nrules:\n  - name: High\n    select: m\n    detect: { threshold: { above: 5 } }\n";
    let la = labels(&[("__name__", "m"), ("s", "a")]);
    let lb = labels(&[("__name__", "m"), ("s", "b")]);
    let mut input: Vec<(bool, i64)> = Vec::new();
    for i in 0..120i64 {
        if !(20..80).contains(&i) {
            input.push((true, i * 10_000));
        }
        input.push((false, i * 10_000 + 1));
    }
    let run = |chunk: usize| {
        let mut ev = Evaluator::new(rules(yaml), EvaluatorConfig::default());
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            // Intern before each batch, as sources do.
            let batch: Vec<Sample> = c
                .iter()
                .map(|&(a, ts)| Sample {
                    series: ev.intern(if a { &la } else { &lb }),
                    ts,
                    value: if a { 10.0 } else { 1.0 },
                })
                .collect();
            ev.ingest(&batch);
            out.extend(ev.drain_events());
        }
        ev.flush();
        out.extend(ev.drain_events());
        (states(&out), ev.stats().unknown_series)
    };
    let one = run(input.len());
    assert_eq!(one, run(1));
    assert_eq!(one, run(7));
    assert_eq!(one.1, 0);
    assert_eq!(
        one.0.iter().map(|s| s.1).collect::<Vec<_>>(),
        ["firing", "resolved", "firing"],
        "{one:?}"
    );
}

#[test]
fn states_keep_their_labels_after_the_series_they_share_them_with_expires() {
    // A's state (no `by`) shares x's labels. x expires after 5 minutes but the absent
    // state lives on and fires; y then reuses x's series id: A's alerts keep x's labels,
    // and the state is still found by them when x comes back.
    let yaml = "group: g\ninterval: 10s\nrules:\n  - name: A\n    select: x\n    detect: { absent: { intervals: 3 } }\n";
    let mut ev = Evaluator::new(rules(yaml), EvaluatorConfig::default());
    let x = labels(&[("__name__", "x"), ("pod", "a")]);
    let id = ev.intern(&x);
    ev.ingest(&[Sample {
        series: id,
        ts: 0,
        value: 1.0,
    }]);
    ev.advance_watermark(600_000);
    assert!(ev.series().is_empty(), "x expired");
    let y = ev.intern(&labels(&[("__name__", "y"), ("pod", "b")]));
    assert_eq!(y, id, "the id is reused");
    ev.ingest(&[Sample {
        series: y,
        ts: 600_000,
        value: 1.0,
    }]);
    let alerts = ev.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].labels.get("pod").map(String::as_str), Some("a"));
    let back = ev.intern(&x);
    ev.ingest(&[Sample {
        series: back,
        ts: 610_000,
        value: 1.0,
    }]);
    ev.advance_watermark(630_000);
    assert_eq!(ev.rule_stats(0).states, 1, "x found its state again");
    let resolved: Vec<_> = ev
        .drain_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Alert(a) if a.state == AlertState::Resolved => Some(a.labels),
            _ => None,
        })
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].get("pod").map(String::as_str), Some("a"));
    let snap = ev.snapshot();
    let back = Evaluator::restore(Arc::clone(ev.rules()), ev.config(), &snap).unwrap();
    assert_eq!(back.snapshot(), snap);
}

#[test]
fn out_of_order_batches_buffer_as_a_full_stable_sort_would() {
    let config = EvaluatorConfig {
        lateness_ms: 1 << 40,
        ..EvaluatorConfig::default()
    };
    let mut ev = Evaluator::new(rules(THRESHOLD), config);
    let id = ev.intern(&labels(&[("__name__", "x")]));
    let mut reference: Vec<Sample> = Vec::new();
    let mut seq = 0.0;
    let mut state = 0x9e37_79b9_u64;
    for batch in 0..200 {
        let n = 1 + batch % 7;
        let samples: Vec<Sample> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                seq += 1.0;
                // Few distinct timestamps, so equal ones meet across batches.
                Sample {
                    series: id,
                    ts: 1_000 * ((state >> 33) % 40) as i64 + 1_000 * batch as i64 / 10,
                    value: seq,
                }
            })
            .collect();
        ev.ingest(&samples);
        reference.extend_from_slice(&samples);
        reference.sort_by_key(|s| s.ts);
        assert_eq!(ev.pending.live(), reference, "after batch {batch}");
    }
}
