//! `GET /metrics`: Vigil's own metrics in the Prometheus text exposition format.

use std::fmt::Write as _;
use std::time::SystemTime;

use vigil_connectors::otlp::OtlpStatsSnapshot;

use super::engine::Status;
use super::record::RecordStats;
use super::reload::ReloadStatus;
use super::SinkMeter;

/// A fixed-bucket histogram (seconds).
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Buckets for in-process latencies, 10 µs to 1 s.
    pub(crate) fn latency() -> Self {
        const B: &[f64] = &[
            1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0,
        ];
        Histogram {
            bounds: B,
            counts: vec![0; B.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Finer buckets for request-to-decision latencies, 100 µs to 1 s.
    pub(crate) fn intake_latency() -> Self {
        const B: &[f64] = &[
            1e-4, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1.5e-3, 2e-3, 3e-3, 4e-3, 5e-3, 7.5e-3, 0.01, 0.025,
            0.05, 0.1, 0.25, 0.5, 1.0,
        ];
        Histogram {
            bounds: B,
            counts: vec![0; B.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub(crate) fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn single(out: &mut String, name: &str, help: &str, kind: &str, v: impl std::fmt::Display) {
    header(out, name, help, kind);
    let _ = writeln!(out, "{name} {v}");
}

/// Renders every metric.
pub(crate) fn render(
    s: &Status,
    reload: &ReloadStatus,
    sinks: &[SinkMeter],
    intake_full: u64,
    otlp: Option<&OtlpStatsSnapshot>,
    record: Option<&RecordStats>,
) -> String {
    let mut out = String::new();
    let st = &s.stats;
    single(
        &mut out,
        "vigil_samples_received_total",
        "Samples handed to the engine.",
        "counter",
        st.received,
    );
    single(
        &mut out,
        "vigil_samples_evaluated_total",
        "Samples evaluated.",
        "counter",
        st.evaluated,
    );
    header(
        &mut out,
        "vigil_samples_dropped_total",
        "Samples dropped, by reason.",
        "counter",
    );
    let refused: u64 = s.rule_stats.iter().map(|r| r.refused).sum();
    for (reason, n) in [
        ("late", st.late),
        ("duplicate", st.duplicate),
        ("non_finite", st.non_finite),
        ("out_of_range", st.out_of_range),
        ("unknown_series", st.unknown_series),
        ("series_limit", refused),
        ("intake_full", intake_full),
    ] {
        let _ = writeln!(
            out,
            "vigil_samples_dropped_total{{reason=\"{reason}\"}} {n}"
        );
    }
    single(
        &mut out,
        "vigil_stale_markers_total",
        "Staleness markers received.",
        "counter",
        st.stale_markers,
    );
    single(&mut out, "vigil_series", "Live series.", "gauge", s.series);
    single(
        &mut out,
        "vigil_series_expired_total",
        "Series expired after going silent.",
        "counter",
        st.expired_series,
    );
    single(
        &mut out,
        "vigil_buffered_samples",
        "Samples waiting for the watermark.",
        "gauge",
        s.buffered,
    );
    single(
        &mut out,
        "vigil_engine_heap_bytes",
        "Approximate heap bytes of engine state.",
        "gauge",
        s.heap_bytes,
    );
    if let Some(t) = s.last_sample_wall_ms {
        single(
            &mut out,
            "vigil_last_intake_timestamp_seconds",
            "Wall time of the last intake batch.",
            "gauge",
            t as f64 / 1000.0,
        );
    }
    if let Some(w) = s.watermark {
        single(
            &mut out,
            "vigil_watermark_seconds",
            "Event-time watermark.",
            "gauge",
            w as f64 / 1000.0,
        );
    }
    header(
        &mut out,
        "vigil_rule_series",
        "Live states per rule.",
        "gauge",
    );
    for (r, rs) in s.rules.rules.iter().zip(&s.rule_stats) {
        let _ = writeln!(
            out,
            "vigil_rule_series{{group=\"{}\",rule=\"{}\"}} {}",
            escape(&r.group),
            escape(&r.name),
            rs.states
        );
    }
    header(
        &mut out,
        "vigil_rule_evaluations_total",
        "Detector evaluations per rule.",
        "counter",
    );
    for (r, rs) in s.rules.rules.iter().zip(&s.rule_stats) {
        let _ = writeln!(
            out,
            "vigil_rule_evaluations_total{{group=\"{}\",rule=\"{}\"}} {}",
            escape(&r.group),
            escape(&r.name),
            rs.evaluations
        );
    }
    header(
        &mut out,
        "vigil_rule_samples_refused_total",
        "Samples refused because the rule reached max_series.",
        "counter",
    );
    for (r, rs) in s.rules.rules.iter().zip(&s.rule_stats) {
        let _ = writeln!(
            out,
            "vigil_rule_samples_refused_total{{group=\"{}\",rule=\"{}\"}} {}",
            escape(&r.group),
            escape(&r.name),
            rs.refused
        );
    }
    header(&mut out, "vigil_alerts", "Alerts by state.", "gauge");
    let _ = writeln!(
        out,
        "vigil_alerts{{state=\"pending\"}} {}",
        s.alerts_pending
    );
    let _ = writeln!(out, "vigil_alerts{{state=\"firing\"}} {}", s.alerts_firing);
    header(
        &mut out,
        "vigil_intents_total",
        "Action intents by action and outcome.",
        "counter",
    );
    for (action, n) in &s.intents {
        let _ = writeln!(
            out,
            "vigil_intents_total{{action=\"{action}\",outcome=\"dry_run\"}} {n}"
        );
    }
    s.batch_seconds.render(
        &mut out,
        "vigil_batch_duration_seconds",
        "Time to evaluate one intake batch (routing, windows, detectors, lifecycle).",
    );
    header(
        &mut out,
        "vigil_rule_reloads_total",
        "Rule reloads by result.",
        "counter",
    );
    let _ = writeln!(
        out,
        "vigil_rule_reloads_total{{result=\"success\"}} {}",
        reload.successes
    );
    let _ = writeln!(
        out,
        "vigil_rule_reloads_total{{result=\"failure\"}} {}",
        reload.failures
    );
    single(
        &mut out,
        "vigil_rule_last_reload_successful",
        "Whether the last rule reload succeeded.",
        "gauge",
        u8::from(reload.last_error.is_none()),
    );
    let cp = &s.checkpoint;
    header(
        &mut out,
        "vigil_checkpoint_writes_total",
        "Checkpoint writes by result.",
        "counter",
    );
    let _ = writeln!(
        out,
        "vigil_checkpoint_writes_total{{result=\"success\"}} {}",
        cp.writes_ok
    );
    let _ = writeln!(
        out,
        "vigil_checkpoint_writes_total{{result=\"failure\"}} {}",
        cp.writes_failed
    );
    if let Some(t) = cp.last_success {
        let age = SystemTime::now()
            .duration_since(t)
            .map_or(0.0, |d| d.as_secs_f64());
        single(
            &mut out,
            "vigil_checkpoint_age_seconds",
            "Seconds since the last successful checkpoint.",
            "gauge",
            age,
        );
    }
    header(
        &mut out,
        "vigil_sink_sent_total",
        "Alert notifications delivered, per sink.",
        "counter",
    );
    for m in sinks {
        let _ = writeln!(
            out,
            "vigil_sink_sent_total{{sink=\"{}\"}} {}",
            escape(&m.name),
            m.stats.snapshot().sent_total
        );
    }
    header(
        &mut out,
        "vigil_sink_failed_total",
        "Alert deliveries that failed, per sink.",
        "counter",
    );
    for m in sinks {
        let _ = writeln!(
            out,
            "vigil_sink_failed_total{{sink=\"{}\"}} {}",
            escape(&m.name),
            m.stats.snapshot().failed_total
        );
    }
    header(
        &mut out,
        "vigil_sink_dropped_total",
        "Alert notifications dropped (queue full), per sink.",
        "counter",
    );
    for m in sinks {
        let _ = writeln!(
            out,
            "vigil_sink_dropped_total{{sink=\"{}\"}} {}",
            escape(&m.name),
            m.stats.snapshot().dropped_total
        );
    }
    if let Some(o) = otlp {
        render_otlp(&mut out, o, &s.otlp_seconds);
    }
    if let Some(r) = record {
        render_record(&mut out, r);
    }
    out
}

/// The `vigil_record_*` families (only when recording).
fn render_record(out: &mut String, r: &RecordStats) {
    use std::sync::atomic::Ordering::Relaxed;
    single(
        out,
        "vigil_record_samples_total",
        "Samples written to the recording.",
        "counter",
        r.samples.load(Relaxed),
    );
    header(
        out,
        "vigil_record_dropped_samples_total",
        "Samples (OTLP: data points) not recorded, by reason: queue_full (the writer could not keep up), write_error.",
        "counter",
    );
    for (reason, n) in [
        ("queue_full", r.dropped_queue_full.load(Relaxed)),
        ("write_error", r.dropped_write_error.load(Relaxed)),
    ] {
        let _ = writeln!(
            out,
            "vigil_record_dropped_samples_total{{reason=\"{reason}\"}} {n}"
        );
    }
    single(
        out,
        "vigil_record_files_total",
        "Recording files completed (closed and renamed into place).",
        "counter",
        r.files.load(Relaxed),
    );
    single(
        out,
        "vigil_record_bytes_total",
        "Bytes of the completed recording files.",
        "counter",
        r.bytes.load(Relaxed),
    );
    single(
        out,
        "vigil_record_errors_total",
        "Recording write errors (the file being written is abandoned).",
        "counter",
        r.errors.load(Relaxed),
    );
    single(
        out,
        "vigil_record_queue_batches",
        "Batches waiting for the recording writer.",
        "gauge",
        r.queued.load(Relaxed),
    );
}

/// The `vigil_otlp_*` families.
fn render_otlp(out: &mut String, o: &OtlpStatsSnapshot, latency: &Histogram) {
    header(
        out,
        "vigil_otlp_requests_total",
        "OTLP export requests by protocol and outcome.",
        "counter",
    );
    for (p, outcome, n) in &o.requests {
        let _ = writeln!(
            out,
            "vigil_otlp_requests_total{{protocol=\"{}\",outcome=\"{}\"}} {n}",
            p.as_str(),
            outcome.as_str()
        );
    }
    header(
        out,
        "vigil_otlp_data_points_received_total",
        "OTLP data points in decoded requests, by protocol.",
        "counter",
    );
    for (p, n) in &o.points_received {
        let _ = writeln!(
            out,
            "vigil_otlp_data_points_received_total{{protocol=\"{}\"}} {n}",
            p.as_str()
        );
    }
    header(
        out,
        "vigil_otlp_data_points_rejected_total",
        "OTLP data points not turned into samples, by reason.",
        "counter",
    );
    for (r, n) in &o.rejected {
        let _ = writeln!(
            out,
            "vigil_otlp_data_points_rejected_total{{reason=\"{}\"}} {n}",
            r.as_str()
        );
    }
    header(
        out,
        "vigil_otlp_data_points_flagged_total",
        "Accepted OTLP data points with a special value or time: missing_timestamp (receive time used), no_recorded_value (stale marker), non_finite (NaN/Inf, dropped by the engine).",
        "counter",
    );
    for (f, n) in &o.flagged {
        let _ = writeln!(
            out,
            "vigil_otlp_data_points_flagged_total{{kind=\"{}\"}} {n}",
            f.as_str()
        );
    }
    single(
        out,
        "vigil_otlp_samples_total",
        "Samples mapped from OTLP data points.",
        "counter",
        o.samples,
    );
    single(
        out,
        "vigil_otlp_delta_series",
        "Running totals kept for delta-temporality OTLP series.",
        "gauge",
        o.delta_series,
    );
    latency.render(
        out,
        "vigil_otlp_request_to_decision_seconds",
        "From receiving an OTLP request to the end of its evaluation and alert dispatch.",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Histogram::latency();
        h.observe(0.002);
        h.observe(0.3);
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.001\"} 0\n"));
        assert!(out.contains("x_bucket{le=\"0.005\"} 1\n"));
        assert!(out.contains("x_bucket{le=\"0.5\"} 2\n"));
        assert!(out.contains("x_count 2\n"));
    }
}
