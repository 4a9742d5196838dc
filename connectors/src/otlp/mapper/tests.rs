//! Unit tests of the mapping: one per metric type and per special value, through
//! [`prepare`](crate::otlp::prepare) and [`Mapper::map`] into a real series registry.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{
    any_value::Value as Any, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point::Value,
    summary_data_point::ValueAtQuantile, AggregationTemporality, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use vigil_engine::series::is_stale_marker;

use super::*;
use crate::otlp::{prepare, Limits, Prepared};

const T: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z in ns
const T_MS: i64 = 1_767_225_600_000;
const RECEIVED: i64 = 1_800_000_000_000;

pub(crate) fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn kv_any(k: &str, v: Any) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

pub(crate) fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("k8s.node.name", "n1"),
                    kv("k8s.pod.name", "api-1"),
                    kv("k8s.namespace.name", "prod"),
                    kv("service.name", "api"),
                    kv("host", "resource-host"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "io.vigil.test".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub(crate) fn number(t: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: t,
        value: Some(Value::AsDouble(v)),
        ..Default::default()
    }
}

pub(crate) fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn sum(
    name: &str,
    temporality: AggregationTemporality,
    monotonic: bool,
    points: Vec<NumberDataPoint>,
) -> Metric {
    Metric {
        name: name.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

/// A mapped sample with its labels.
#[derive(Debug, Clone)]
struct Got {
    labels: BTreeMap<String, String>,
    ts: i64,
    value: f64,
}

struct Harness {
    mapper: Mapper,
    series: SeriesRegistry,
    stats: Arc<OtlpStats>,
}

impl Harness {
    fn new() -> Self {
        Self::with(MappingConfig::default())
    }

    fn with(config: MappingConfig) -> Self {
        let stats = Arc::new(OtlpStats::default());
        Harness {
            mapper: Mapper::new(config, Arc::clone(&stats)),
            series: SeriesRegistry::default(),
            stats,
        }
    }

    fn run(&mut self, mut req: ExportMetricsServiceRequest) -> (Prepared, Vec<Got>) {
        let p = prepare(&mut req, &Limits::default());
        let mut out = Vec::new();
        let s = self.mapper.map(&req, RECEIVED, &mut self.series, &mut out);
        assert_eq!(s.samples as usize, out.len());
        let got = out
            .iter()
            .map(|s| Got {
                labels: self.series.labels(s.series).unwrap(),
                ts: s.ts,
                value: s.value,
            })
            .collect();
        (p, got)
    }
}

fn named<'a>(got: &'a [Got], name: &str) -> Vec<&'a Got> {
    got.iter()
        .filter(|g| g.labels["__name__"] == name)
        .collect()
}

fn buckets(got: &[Got], name: &str) -> Vec<(String, f64)> {
    named(got, name)
        .iter()
        .map(|g| (g.labels["le"].clone(), g.value))
        .collect()
}

#[test]
fn gauge_labels_aliases_scope_and_precedence() {
    let mut h = Harness::new();
    let req = request(vec![gauge(
        "system.cpu.utilization",
        vec![number(
            T,
            0.5,
            vec![
                kv("cpu", "0"),
                kv("host", "point-host"),
                kv("k8s.container.name", "app"),
                kv("empty", ""),
            ],
        )],
    )]);
    let (p, got) = h.run(req);
    assert_eq!((p.received, p.accepted, p.invalid), (1, 1, 0));
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g.ts, T_MS);
    assert_eq!(g.value, 0.5);
    let want: BTreeMap<String, String> = [
        ("__name__", "system_cpu_utilization"),
        ("cpu", "0"),
        ("host", "point-host"),
        ("k8s.container.name", "app"),
        ("container", "app"),
        ("k8s.node.name", "n1"),
        ("node", "n1"),
        ("k8s.pod.name", "api-1"),
        ("pod", "api-1"),
        ("k8s.namespace.name", "prod"),
        ("namespace", "prod"),
        ("service.name", "api"),
        ("service", "api"),
        ("otel_scope_name", "io.vigil.test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(
        g.labels, want,
        "point attributes win; empty values are dropped"
    );
}

#[test]
fn an_explicit_label_wins_over_an_alias_of_a_resource_attribute() {
    let mut h = Harness::new();
    let req = request(vec![gauge(
        "g",
        vec![number(T, 1.0, vec![kv("node", "explicit")])],
    )]);
    let (_, got) = h.run(req);
    assert_eq!(got[0].labels["node"], "explicit");
    assert_eq!(got[0].labels["k8s.node.name"], "n1");
}

#[test]
fn metric_names_are_normalised() {
    assert_eq!(normalize_metric_name("http_requests_total"), None);
    assert_eq!(normalize_metric_name("ns:metric_1"), None);
    assert_eq!(
        normalize_metric_name("http.server.request.duration").as_deref(),
        Some("http_server_request_duration")
    );
    assert_eq!(
        normalize_metric_name("1st-metric").as_deref(),
        Some("_1st_metric")
    );
    assert_eq!(normalize_metric_name("temp.°C").as_deref(), Some("temp__C"));
}

#[test]
fn non_string_attribute_values_become_strings() {
    let mut h = Harness::new();
    let req = request(vec![gauge(
        "g",
        vec![number(
            T,
            1.0,
            vec![
                kv_any("b", Any::BoolValue(true)),
                kv_any("i", Any::IntValue(-42)),
                kv_any("d", Any::DoubleValue(0.25)),
                kv_any("bytes", Any::BytesValue(vec![0xde, 0xad])),
                kv_any(
                    "arr",
                    Any::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(Any::IntValue(1)),
                            },
                            AnyValue {
                                value: Some(Any::StringValue("x".into())),
                            },
                        ],
                    }),
                ),
                kv_any("", Any::StringValue("dropped".into())),
            ],
        )],
    )]);
    let (_, got) = h.run(req);
    let l = &got[0].labels;
    assert_eq!(l["b"], "true");
    assert_eq!(l["i"], "-42");
    assert_eq!(l["d"], "0.25");
    assert_eq!(l["bytes"], "dead");
    assert_eq!(l["arr"], r#"[1,"x"]"#);
    assert!(!l.contains_key(""));
}

#[test]
fn cumulative_monotonic_sum_is_a_counter_as_is() {
    let mut h = Harness::new();
    let pts = vec![
        number(T, 10.0, vec![]),
        number(T + 10_000_000_000, 25.0, vec![]),
    ];
    let (_, got) = h.run(request(vec![sum(
        "http.requests",
        AggregationTemporality::Cumulative,
        true,
        pts,
    )]));
    let v: Vec<(i64, f64)> = got.iter().map(|g| (g.ts, g.value)).collect();
    assert_eq!(v, vec![(T_MS, 10.0), (T_MS + 10_000, 25.0)]);
    assert_eq!(got[0].labels["__name__"], "http_requests");
}

#[test]
fn non_monotonic_sum_is_a_gauge() {
    let mut h = Harness::new();
    let pts = vec![
        number(T, 5.0, vec![]),
        number(T + 1_000_000_000, 3.0, vec![]),
    ];
    let (_, got) = h.run(request(vec![sum(
        "queue.size",
        AggregationTemporality::Cumulative,
        false,
        pts,
    )]));
    assert_eq!(
        got.iter().map(|g| g.value).collect::<Vec<_>>(),
        vec![5.0, 3.0]
    );
}

#[test]
fn delta_sums_accumulate_per_series_across_requests() {
    let mut h = Harness::new();
    let req = |t: u64, a: f64, b: f64| {
        request(vec![sum(
            "jobs.done",
            AggregationTemporality::Delta,
            true,
            vec![
                number(t, a, vec![kv("queue", "a")]),
                number(t, b, vec![kv("queue", "b")]),
            ],
        )])
    };
    let (_, g1) = h.run(req(T, 3.0, 10.0));
    let (_, g2) = h.run(req(T + 10_000_000_000, 4.0, 0.0));
    let (_, g3) = h.run(req(T + 20_000_000_000, 1.0, 5.0));
    let vals = |g: &[Got]| {
        g.iter()
            .map(|x| (x.labels["queue"].clone(), x.value))
            .collect::<Vec<_>>()
    };
    assert_eq!(vals(&g1), vec![("a".into(), 3.0), ("b".into(), 10.0)]);
    assert_eq!(vals(&g2), vec![("a".into(), 7.0), ("b".into(), 10.0)]);
    assert_eq!(vals(&g3), vec![("a".into(), 8.0), ("b".into(), 15.0)]);
    assert_eq!(h.mapper.delta_series(), 2);
    assert_eq!(h.stats.snapshot().delta_series, 2);
}

#[test]
fn delta_totals_expire_after_the_retention_and_restart() {
    let mut h = Harness::with(MappingConfig {
        delta_retention: Duration::from_secs(60),
        ..MappingConfig::default()
    });
    let one = |t: u64, attrs: Vec<KeyValue>| {
        request(vec![sum(
            "d",
            AggregationTemporality::Delta,
            true,
            vec![number(t, 2.0, attrs)],
        )])
    };
    h.run(one(T, vec![kv("s", "old")]));
    h.run(one(T, vec![kv("s", "x")]));
    h.run(one(T + 30_000_000_000, vec![kv("s", "x")]));
    // Two minutes later "old" is gone, "x" restarts from its new delta after its own gap.
    let (_, g) = h.run(one(T + 200_000_000_000, vec![kv("s", "x")]));
    assert_eq!(g[0].value, 6.0, "sweeps run after a request is mapped");
    let (_, g) = h.run(one(T + 400_000_000_000, vec![kv("s", "old")]));
    assert_eq!(g[0].value, 2.0, "old expired and restarted");
}

#[test]
fn delta_accumulators_are_capped() {
    let mut h = Harness::with(MappingConfig {
        max_delta_series: 1,
        ..MappingConfig::default()
    });
    let (_, g) = h.run(request(vec![sum(
        "d",
        AggregationTemporality::Delta,
        true,
        vec![
            number(T, 1.0, vec![kv("s", "a")]),
            number(T, 1.0, vec![kv("s", "b")]),
        ],
    )]));
    assert_eq!(g.len(), 1);
    assert_eq!(h.stats.rejected(Rejection::DeltaStateFull), 1);
}

fn histogram_metric(
    temporality: AggregationTemporality,
    points: Vec<HistogramDataPoint>,
) -> Metric {
    Metric {
        name: "http.server.duration".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: temporality as i32,
        })),
        ..Default::default()
    }
}

fn hist_point(t: u64, counts: Vec<u64>, bounds: Vec<f64>, sum: f64) -> HistogramDataPoint {
    HistogramDataPoint {
        time_unix_nano: t,
        count: counts.iter().sum(),
        sum: Some(sum),
        bucket_counts: counts,
        explicit_bounds: bounds,
        ..Default::default()
    }
}

#[test]
fn histogram_buckets_become_cumulative_le_series() {
    let mut h = Harness::new();
    let (_, got) = h.run(request(vec![histogram_metric(
        AggregationTemporality::Cumulative,
        vec![hist_point(T, vec![5, 3, 2, 1], vec![0.1, 0.5, 1.0], 4.2)],
    )]));
    assert_eq!(named(&got, "http_server_duration_count")[0].value, 11.0);
    assert_eq!(named(&got, "http_server_duration_sum")[0].value, 4.2);
    assert_eq!(
        buckets(&got, "http_server_duration_bucket"),
        vec![
            ("0.1".into(), 5.0),
            ("0.5".into(), 8.0),
            ("1".into(), 10.0),
            ("+Inf".into(), 11.0)
        ]
    );
    assert!(got.iter().all(|g| g.labels["node"] == "n1" && g.ts == T_MS));
}

#[test]
fn delta_histograms_accumulate_every_series() {
    let mut h = Harness::new();
    let mk = |t, counts| {
        request(vec![histogram_metric(
            AggregationTemporality::Delta,
            vec![hist_point(t, counts, vec![1.0], 1.0)],
        )])
    };
    h.run(mk(T, vec![1, 1]));
    let (_, got) = h.run(mk(T + 10_000_000_000, vec![2, 0]));
    assert_eq!(named(&got, "http_server_duration_count")[0].value, 4.0);
    assert_eq!(named(&got, "http_server_duration_sum")[0].value, 2.0);
    assert_eq!(
        buckets(&got, "http_server_duration_bucket"),
        vec![("1".into(), 3.0), ("+Inf".into(), 4.0)]
    );
}

#[test]
fn histogram_without_sum_or_buckets() {
    let mut h = Harness::new();
    let mut p = hist_point(T, vec![], vec![], 0.0);
    p.sum = None;
    p.count = 7;
    let (_, got) = h.run(request(vec![histogram_metric(
        AggregationTemporality::Cumulative,
        vec![p],
    )]));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels["__name__"], "http_server_duration_count");
}

#[test]
fn malformed_histograms_are_rejected_with_a_message() {
    let mut h = Harness::new();
    let (p, got) = h.run(request(vec![histogram_metric(
        AggregationTemporality::Cumulative,
        vec![
            hist_point(T, vec![1, 2], vec![0.5, 1.0], 1.0),
            hist_point(T, vec![1, 2, 3], vec![1.0, 0.5], 1.0),
            hist_point(T, vec![1, 2], vec![1.0], 1.0),
        ],
    )]));
    assert_eq!((p.received, p.accepted, p.invalid), (3, 1, 2));
    assert!(p.message.contains("http_server_duration"), "{}", p.message);
    assert_eq!(got.len(), 4);
}

fn exp_point(
    scale: i32,
    zero: u64,
    pos: (i32, Vec<u64>),
    neg: (i32, Vec<u64>),
) -> ExponentialHistogramDataPoint {
    let count = zero + pos.1.iter().sum::<u64>() + neg.1.iter().sum::<u64>();
    ExponentialHistogramDataPoint {
        time_unix_nano: T,
        count,
        sum: Some(1.0),
        scale,
        zero_count: zero,
        positive: Some(Buckets {
            offset: pos.0,
            bucket_counts: pos.1,
        }),
        negative: Some(Buckets {
            offset: neg.0,
            bucket_counts: neg.1,
        }),
        ..Default::default()
    }
}

fn exp_metric(p: ExponentialHistogramDataPoint) -> Metric {
    Metric {
        name: "latency".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![p],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    }
}

#[test]
fn exponential_buckets_become_le_bounds() {
    // Scale 0: base 2; bucket i holds (2^i, 2^(i+1)].
    let mut h = Harness::new();
    let (_, got) = h.run(request(vec![exp_metric(exp_point(
        0,
        2,
        (1, vec![3, 0, 4]),
        (0, vec![1]),
    ))]));
    assert_eq!(
        buckets(&got, "latency_bucket"),
        vec![
            ("-1".into(), 1.0),  // negative bucket 0: [-2, -1)
            ("0".into(), 3.0),   // zero bucket
            ("2".into(), 3.0),   // lower bound of positive bucket 1
            ("4".into(), 6.0),   // (2, 4]
            ("8".into(), 6.0),   // (4, 8]
            ("16".into(), 10.0), // (8, 16]
            ("+Inf".into(), 10.0)
        ]
    );
    assert_eq!(named(&got, "latency_count")[0].value, 10.0);
}

#[test]
fn fine_exponential_scales_are_downscaled_exactly() {
    // Scale 5 → 3: indices shift right by 2, so 8 fine buckets become 2 coarse ones.
    let mut h = Harness::new();
    let (_, got) = h.run(request(vec![exp_metric(exp_point(
        5,
        0,
        (0, vec![1; 8]),
        (0, vec![]),
    ))]));
    let b = buckets(&got, "latency_bucket");
    let base = 2f64.powf(1.0 / 8.0);
    let les: Vec<f64> = b
        .iter()
        .map(|(le, _)| le.replace("+Inf", "inf").parse().unwrap())
        .collect();
    assert_eq!(
        b.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![0.0, 4.0, 8.0, 8.0]
    );
    assert!((les[0] - 1.0).abs() < 1e-12);
    assert!((les[1] - base).abs() < 1e-12);
    assert!((les[2] - base * base).abs() < 1e-12);
    assert!(les[3].is_infinite());
}

#[test]
fn a_quantile_over_mapped_buckets_matches_histogram_quantile() {
    let mut h = Harness::new();
    let (_, got) = h.run(request(vec![histogram_metric(
        AggregationTemporality::Cumulative,
        vec![hist_point(
            T,
            vec![50, 40, 10, 0],
            vec![0.1, 0.5, 1.0],
            10.0,
        )],
    )]));
    let mut b: Vec<(f64, f64)> = buckets(&got, "http_server_duration_bucket")
        .into_iter()
        .map(|(le, c)| {
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                c,
            )
        })
        .collect();
    let q = vigil_engine::signal::bucket_quantile(0.99, &mut b);
    assert!((q - 0.95).abs() < 1e-12, "{q}");
}

#[test]
fn summaries_become_quantile_series() {
    let mut h = Harness::new();
    let m = Metric {
        name: "rpc.latency".into(),
        data: Some(Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                time_unix_nano: T,
                count: 100,
                sum: 12.5,
                quantile_values: vec![
                    ValueAtQuantile {
                        quantile: 0.5,
                        value: 0.1,
                    },
                    ValueAtQuantile {
                        quantile: 0.99,
                        value: 0.9,
                    },
                ],
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let (_, got) = h.run(request(vec![m]));
    assert_eq!(named(&got, "rpc_latency_count")[0].value, 100.0);
    assert_eq!(named(&got, "rpc_latency_sum")[0].value, 12.5);
    let q: Vec<(String, f64)> = named(&got, "rpc_latency")
        .iter()
        .map(|g| (g.labels["quantile"].clone(), g.value))
        .collect();
    assert_eq!(q, vec![("0.5".into(), 0.1), ("0.99".into(), 0.9)]);
}

#[test]
fn special_values_and_times() {
    let mut h = Harness::new();
    let mut stale = number(T, 0.0, vec![kv("k", "stale")]);
    stale.flags = NO_RECORDED_VALUE;
    stale.value = None;
    let no_value = NumberDataPoint {
        time_unix_nano: T,
        attributes: vec![kv("k", "none")],
        ..Default::default()
    };
    // A NaN whose bits are the staleness marker's must stay an ordinary NaN.
    let tricky = number(T, STALE_MARKER, vec![kv("k", "nan")]);
    let inf = number(T, f64::INFINITY, vec![kv("k", "inf")]);
    let untimed = number(0, 1.0, vec![kv("k", "untimed")]);
    let int = NumberDataPoint {
        time_unix_nano: T,
        attributes: vec![kv("k", "int")],
        value: Some(Value::AsInt(7)),
        ..Default::default()
    };
    let (p, got) = h.run(request(vec![gauge(
        "g",
        vec![stale, no_value, tricky, inf, untimed, int],
    )]));
    assert_eq!((p.received, p.accepted, p.invalid), (6, 5, 1));
    assert_eq!(
        (p.no_recorded_value, p.non_finite, p.missing_timestamp),
        (1, 2, 1)
    );
    let by: BTreeMap<String, &Got> = got.iter().map(|g| (g.labels["k"].clone(), g)).collect();
    assert!(is_stale_marker(by["stale"].value));
    assert!(by["nan"].value.is_nan() && !is_stale_marker(by["nan"].value));
    assert_eq!(by["inf"].value, f64::INFINITY);
    assert_eq!(by["untimed"].ts, RECEIVED);
    assert_eq!(by["int"].value, 7.0);
    assert!(!by.contains_key("none"));
}

#[test]
fn a_stale_histogram_marks_its_series_stale() {
    let mut h = Harness::new();
    let p = HistogramDataPoint {
        time_unix_nano: T,
        explicit_bounds: vec![1.0],
        flags: NO_RECORDED_VALUE,
        ..Default::default()
    };
    let (_, got) = h.run(request(vec![histogram_metric(
        AggregationTemporality::Cumulative,
        vec![p],
    )]));
    assert_eq!(got.len(), 4, "count, sum, le=1, le=+Inf");
    assert!(got.iter().all(|g| is_stale_marker(g.value)));
}

#[test]
fn the_point_limit_rejects_the_rest_of_the_request() {
    let mut req = request(vec![
        gauge("a", (0..3).map(|i| number(T, i as f64, vec![])).collect()),
        gauge("b", (0..3).map(|i| number(T, i as f64, vec![])).collect()),
    ]);
    let p = prepare(&mut req, &Limits { max_points: 4 });
    assert_eq!((p.received, p.accepted, p.too_many), (6, 4, 2));
    assert!(p.message.contains("limit of 4"), "{}", p.message);
    let left: usize = req.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(left, 4);
}

#[test]
fn unnamed_metrics_and_unspecified_temporality_are_invalid() {
    let mut h = Harness::new();
    let (p, got) = h.run(request(vec![
        gauge("", vec![number(T, 1.0, vec![])]),
        sum(
            "s",
            AggregationTemporality::Unspecified,
            true,
            vec![number(T, 1.0, vec![])],
        ),
        gauge("ok", vec![number(T, 1.0, vec![])]),
    ]));
    assert_eq!((p.received, p.accepted, p.invalid), (3, 1, 2));
    assert_eq!(got.len(), 1);
}

#[test]
fn series_are_interned_once() {
    let mut h = Harness::new();
    let mk = |t| request(vec![gauge("g", vec![number(t, 1.0, vec![kv("a", "1")])])]);
    h.run(mk(T));
    h.run(mk(T + 1));
    assert_eq!(h.series.len(), 1);
}

/// A request of `pods` resources with a gauge (with point attributes) and a histogram
/// each: the shape the id cache serves.
fn fleet_request(pods: usize, t: u64, attr_order_swapped: bool) -> ExportMetricsServiceRequest {
    let resource_metrics = (0..pods)
        .map(|p| {
            let mut attrs = vec![kv("k8s.pod.name", &format!("api-{p}")), kv("zone", "a")];
            if attr_order_swapped {
                attrs.reverse();
            }
            let mut point_attrs = vec![kv("code", "200"), kv("path", "/")];
            if attr_order_swapped {
                point_attrs.reverse();
            }
            ResourceMetrics {
                resource: Some(Resource {
                    attributes: attrs,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        gauge("g", vec![number(t, p as f64, point_attrs)]),
                        histogram_metric(
                            AggregationTemporality::Cumulative,
                            vec![hist_point(t, vec![1, 2, 3], vec![0.1, 1.0], 2.0)],
                        ),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

#[test]
fn cached_ids_give_the_labels_of_a_fresh_interning() {
    let mut cached = Harness::new();
    for (i, swapped) in [false, false, true, false, true].into_iter().enumerate() {
        let req = fleet_request(50, T + i as u64 * 1_000_000_000, swapped);
        let (_, got) = cached.run(req.clone());
        let (_, want) = Harness::new().run(req);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((&g.labels, g.ts), (&w.labels, w.ts));
            assert!(g.value == w.value || (g.value.is_nan() && w.value.is_nan()));
        }
    }
    // 50 pods × (g + h_count + h_sum + 3 buckets): the swapped order adds keys, not series.
    assert_eq!(cached.series.len(), 50 * 6);
    assert_eq!(cached.mapper.ids.len(), 2 * 50 * 6);
}

#[test]
fn cached_ids_follow_a_scope_whose_metrics_change_order() {
    let mut cached = Harness::new();
    let names = ["a", "b", "c", "d", "e"];
    // In order, rotated, reversed, with one left out and one new, then in order again.
    let orders: [&[usize]; 5] = [
        &[0, 1, 2, 3],
        &[2, 3, 0, 1],
        &[3, 2, 1, 0],
        &[0, 4, 2],
        &[0, 1, 2, 3],
    ];
    for (i, order) in orders.into_iter().enumerate() {
        let t = T + i as u64 * 1_000_000_000;
        let req = request(
            order
                .iter()
                .map(|&m| gauge(names[m], vec![number(t, m as f64, vec![kv("code", "200")])]))
                .collect(),
        );
        let (_, got) = cached.run(req.clone());
        let (_, want) = Harness::new().run(req);
        let view = |g: &[Got]| {
            g.iter()
                .map(|g| (g.labels.clone(), g.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(view(&got), view(&want), "order {order:?}");
    }
    assert_eq!(cached.series.len(), 5);
    assert_eq!(cached.mapper.ids.len(), 5);
}

#[test]
fn points_differing_in_one_attribute_value_are_different_series() {
    let mut h = Harness::new();
    for code in ["200", "500", "200"] {
        let (_, got) = h.run(request(vec![gauge(
            "g",
            vec![number(T, 1.0, vec![kv("code", code)])],
        )]));
        assert_eq!(got[0].labels["code"], code);
    }
    assert_eq!(h.series.len(), 2);
}

#[test]
fn the_id_cache_is_dropped_when_the_registry_changes() {
    let mut h = Harness::new();
    let req = || request(vec![gauge("a", vec![number(T, 1.0, vec![])])]);
    let (_, got) = h.run(req());
    assert_eq!(got[0].labels["__name__"], "a");
    // Another registry (an evaluator replaced on reload) where that id names another
    // series: the cache must not answer for it.
    h.series = SeriesRegistry::default();
    h.series.intern_pairs(&mut [("__name__", "other")]);
    let (_, got) = h.run(req());
    assert_eq!(got[0].labels["__name__"], "a");
    assert_eq!(h.series.len(), 2);
}

#[test]
fn the_id_cache_is_dropped_when_a_series_expires() {
    use vigil_engine::{Evaluator, EvaluatorConfig, RuleSet};
    let rules = RuleSet::from_sources(&[vigil_engine::rule::Source {
        name: "t.yaml".into(),
        text: "group: g\ninterval: 10s\nrules:\n  - name: T\n    select: '{__name__=~\"a|b\"}'\n    detect: { threshold: { above: 1 } }\n".into(),
    }])
    .unwrap();
    let mut ev = Evaluator::new(Arc::new(rules), EvaluatorConfig::default());
    let mut mapper = Mapper::new(MappingConfig::default(), Arc::new(OtlpStats::default()));
    let mut map = |ev: &mut Evaluator, name: &str| {
        let mut req = request(vec![gauge(name, vec![number(T, 0.0, vec![])])]);
        prepare(&mut req, &Limits::default());
        let mut out = Vec::new();
        mapper.map(&req, RECEIVED, ev.series_mut(), &mut out);
        out[0].series
    };
    let id_a = map(&mut ev, "a");
    ev.ingest(&[Sample {
        series: id_a,
        ts: T_MS,
        value: 0.0,
    }]);
    // `a` goes silent past staleness and expires; `b` takes its id.
    ev.advance_watermark(T_MS + 3_600_000);
    assert!(ev.series().labels(id_a).is_none(), "`a` expired");
    let id_b = map(&mut ev, "b");
    assert_eq!(id_b, id_a, "the freed id is reused");
    let again = map(&mut ev, "a");
    assert_ne!(again, id_b, "`a` must not get `b`'s id from a stale cache");
    assert_eq!(ev.series().labels(again).unwrap()["__name__"], "a");
}

mod cache_properties {
    use proptest::prelude::*;

    use super::*;

    /// Few keys, so that requests share series and differ in one value: they collide
    /// with each other, with aliases and with the scope and `le` labels.
    const KEYS: [&str; 5] = ["a", "pod", "k8s.pod.name", "otel_scope_name", "le"];

    fn attrs() -> impl Strategy<Value = Vec<(usize, u8)>> {
        prop::collection::vec((0..KEYS.len(), 0u8..3), 0..3)
    }

    fn to_kv(a: &[(usize, u8)]) -> Vec<KeyValue> {
        // Value 0 is empty: skipped as a label.
        a.iter()
            .map(|&(k, v)| kv(KEYS[k], ["", "x", "y"][v as usize]))
            .collect()
    }

    /// (resource attrs, scope name, [(metric, is histogram, point attrs)]).
    type Shape = (Vec<(usize, u8)>, u8, Vec<(u8, bool, Vec<(usize, u8)>)>);

    fn build(shapes: &[Shape]) -> ExportMetricsServiceRequest {
        let resource_metrics = shapes
            .iter()
            .map(|(res, scope, metrics)| ResourceMetrics {
                resource: Some(Resource {
                    attributes: to_kv(res),
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: ["", "s1", "s2"][*scope as usize % 3].into(),
                        ..Default::default()
                    }),
                    metrics: metrics
                        .iter()
                        .map(|(m, hist, pa)| {
                            if *hist {
                                let mut p = hist_point(T, vec![1, 1], vec![1.0], 1.0);
                                p.attributes = to_kv(pa);
                                histogram_metric(AggregationTemporality::Cumulative, vec![p])
                            } else {
                                gauge(&format!("m{m}"), vec![number(T, 1.0, to_kv(pa))])
                            }
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        ExportMetricsServiceRequest { resource_metrics }
    }

    fn shapes() -> impl Strategy<Value = Vec<Shape>> {
        prop::collection::vec(
            (
                attrs(),
                0u8..3,
                prop::collection::vec((0u8..2, any::<bool>(), attrs()), 1..4),
            ),
            1..4,
        )
    }

    proptest! {
        /// Whatever came before, a cached mapping labels every sample as interning it
        /// afresh does.
        #[test]
        fn cached_mapping_equals_fresh_mapping(requests in prop::collection::vec(shapes(), 1..6)) {
            let mut cached = Harness::new();
            for shapes in &requests {
                let req = build(shapes);
                let (_, got) = cached.run(req.clone());
                let (_, want) = Harness::new().run(req);
                let labels = |g: &[Got]| g.iter().map(|g| g.labels.clone()).collect::<Vec<_>>();
                prop_assert_eq!(labels(&got), labels(&want));
            }
        }
    }
}
