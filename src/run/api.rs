//! The HTTP API and UI (axum), in the shapes of the Prometheus HTTP API where one exists
//! (`/api/v1/alerts`, `/api/v1/rules`), so Grafana and scripts already know them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use vigil_engine::eval::{ActiveAlert, Event};
use vigil_engine::rule::{Rule, RuleKind};

use vigil_replay::jsonl::parse_line;

use super::engine::{EngineHandle, IngestBatch};
use super::reload::{SharedStatus, Trigger};
use super::{Shared, SinkMeter};

/// What handlers share.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) engine: EngineHandle,
    pub(crate) reload: SharedStatus,
    pub(crate) reload_tx: mpsc::Sender<Trigger>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) sinks: Arc<Vec<SinkMeter>>,
    /// OTLP receiver counters (None: receivers off).
    pub(crate) otlp: Option<Arc<vigil_connectors::otlp::OtlpStats>>,
    /// Recording counters (None: not recording).
    pub(crate) record: Option<Arc<super::record::RecordStats>>,
}

/// The router.
pub(crate) fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(ui))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/series", get(series))
        .route("/api/v1/events", get(events))
        .route("/api/v1/import", post(import))
        .route("/-/reload", post(reload))
        .layer(axum::extract::DefaultBodyLimit::max(IMPORT_LIMIT))
        .with_state(api)
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "error", "errorType": "unavailable", "error": "the engine has stopped"}))).into_response()
}

fn alert_json(a: &ActiveAlert) -> Value {
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": rfc3339(a.active_at),
        "firedAt": a.fired_at.map(rfc3339),
        "value": a.value.to_string(),
        "score": a.score,
        "fingerprint": format!("{:016x}", a.fingerprint),
        "flapping": a.flapping,
        "rule": &*a.rule,
    })
}

async fn alerts(State(api): State<Api>) -> Response {
    match api.engine.alerts().await {
        Ok(list) => Json(json!({"status": "success", "data": {"alerts": list.iter().map(alert_json).collect::<Vec<_>>()}})).into_response(),
        Err(_) => unavailable(),
    }
}

fn query_of(r: &Rule) -> String {
    let sel = r
        .selector
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let det = r.detector.as_ref().map(|d| d.kind()).unwrap_or("compound");
    match &r.kind {
        RuleKind::Compound(c) => {
            let mode = if c.mode == vigil_engine::rule::CompoundMode::All {
                "all"
            } else {
                "any"
            };
            format!("compound {mode} within {}ms on {:?}", c.within_ms, c.on)
        }
        RuleKind::Aggregate { op, by } => format!("{det}({op:?} by {by:?} ({sel}))"),
        RuleKind::Quantile { q, .. } => format!("{det}(quantile {q} of {sel})"),
        _ => format!("{det}({sel})"),
    }
}

async fn rules(State(api): State<Api>) -> Response {
    let (Ok(status), Ok(alerts)) = (api.engine.status().await, api.engine.alerts().await) else {
        return unavailable();
    };
    let reload = api.reload.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let groups: Vec<Value> = status
        .rules
        .groups
        .iter()
        .map(|g| {
            let rules: Vec<Value> = g
                .rules
                .iter()
                .map(|&i| {
                    let r = &status.rules.rules[i];
                    let rs = &status.rule_stats[i];
                    let mine: Vec<&ActiveAlert> = alerts.iter().filter(|a| a.rule == r.name).collect();
                    let state = if mine.iter().any(|a| a.state == vigil_engine::lifecycle::AlertState::Firing) {
                        "firing"
                    } else if mine.is_empty() {
                        "inactive"
                    } else {
                        "pending"
                    };
                    let (health, last_error) = if rs.refused > 0 {
                        ("err", format!("series cap of {} reached: {} samples of new series refused", r.max_series, rs.refused))
                    } else {
                        ("ok", String::new())
                    };
                    let annotations: BTreeMap<&str, String> = r.annotations.iter().map(|(k, _)| (k.as_str(), String::new())).collect();
                    json!({
                        "type": "alerting",
                        "name": &*r.name,
                        "query": query_of(r),
                        "detector": r.detector.as_ref().map(|d| d.kind()).unwrap_or("compound"),
                        "duration": r.for_ms as f64 / 1000.0,
                        "keepFiringFor": r.keep_firing_for_ms as f64 / 1000.0,
                        "labels": {"severity": r.severity.as_str()},
                        "annotations": annotations,
                        "state": state,
                        "health": health,
                        "lastError": last_error,
                        "series": rs.states,
                        "samples": rs.samples,
                        "evaluations": rs.evaluations,
                        "refused": rs.refused,
                        "alerts": mine.iter().map(|a| alert_json(a)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({"name": &*g.name, "file": g.file, "interval": g.interval_ms as f64 / 1000.0, "rules": rules})
        })
        .collect();
    Json(json!({
        "status": "success",
        "data": {
            "groups": groups,
            "reload": {
                "successes": reload.successes,
                "failures": reload.failures,
                "lastError": reload.last_error,
            }
        }
    }))
    .into_response()
}

async fn readyz(State(api): State<Api>) -> Response {
    let Ok(status) = api.engine.status().await else {
        return unavailable();
    };
    let mut problems = Vec::new();
    if status.rules.rules.is_empty() {
        problems.push("no rules loaded".to_string());
    }
    if !api.shared.sources_ready.load(Ordering::Relaxed) {
        problems.push("sources not started".to_string());
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    let Ok(status) = api.engine.status().await else {
        return unavailable();
    };
    let reload = api.reload.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let body = super::metrics::render(
        &status,
        &reload,
        &api.sinks,
        api.shared.intake_full.load(Ordering::Relaxed),
        api.otlp.as_ref().map(|o| o.snapshot()).as_ref(),
        api.record.as_deref(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct SeriesQuery {
    rule: String,
    fingerprint: Option<String>,
    /// JSON object of labels the alert must carry, e.g. `{"node":"n1"}`.
    labels: Option<String>,
}

fn bad_request(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"status": "error", "errorType": "bad_data", "error": msg.into()})),
    )
        .into_response()
}

async fn series(State(api): State<Api>, Query(q): Query<SeriesQuery>) -> Response {
    let fp = match (&q.fingerprint, &q.labels) {
        (Some(f), _) => match u64::from_str_radix(f, 16) {
            Ok(fp) => fp,
            Err(_) => return bad_request(format!("fingerprint {f:?} is not hex")),
        },
        (None, Some(l)) => {
            let want: BTreeMap<String, String> = match serde_json::from_str(l) {
                Ok(w) => w,
                Err(e) => {
                    return bad_request(format!("labels must be a JSON object of strings: {e}"))
                }
            };
            let Ok(alerts) = api.engine.alerts().await else {
                return unavailable();
            };
            match alerts.iter().find(|a| *a.rule == *q.rule && want.iter().all(|(k, v)| a.labels.get(k) == Some(v))) {
                Some(a) => a.fingerprint,
                None => return (StatusCode::NOT_FOUND, Json(json!({"status": "error", "errorType": "not_found", "error": "no active alert of that rule has those labels"}))).into_response(),
            }
        }
        (None, None) => return bad_request("give fingerprint=<hex> or labels=<json object>"),
    };
    match api.engine.history(q.rule.clone(), fp).await {
        Ok(Some(h)) => {
            let points: Vec<Value> = h
                .points
                .iter()
                .map(|p| json!([p.ts, finite(p.value), finite(p.lo), finite(p.hi)]))
                .collect();
            Json(json!({"status": "success", "data": {
                "rule": &*h.rule,
                "labels": h.labels,
                "state": h.state.as_str(),
                "activeAt": h.active_at,
                "firedAt": h.fired_at,
                "columns": ["ts", "value", "lo", "hi"],
                "points": points,
            }}))
            .into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({"status": "error", "errorType": "not_found", "error": format!("no state of rule {:?} with that fingerprint", q.rule)}))).into_response(),
        Err(_) => unavailable(),
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

async fn events(State(api): State<Api>) -> Response {
    let Ok(events) = api.engine.recent_events().await else {
        return unavailable();
    };
    let list: Vec<Value> = events
        .iter()
        .map(|e| match e {
            Event::Alert(a) => json!({"type": "alert", "ts": a.ts, "rule": &*a.rule, "state": a.state.as_str(), "labels": a.labels, "value": finite(a.value), "fingerprint": format!("{:016x}", a.fingerprint)}),
            Event::Intent(i) => json!({"type": "intent", "ts": i.ts, "rule": &*i.rule, "action": i.action.as_str(), "node": i.node, "labels": i.labels, "fingerprint": format!("{:016x}", i.fingerprint), "dryRun": true}),
        })
        .collect();
    Json(json!({"status": "success", "data": {"events": list}})).into_response()
}

/// Largest accepted import body.
const IMPORT_LIMIT: usize = 64 << 20;

/// `POST /api/v1/import`: samples as JSONL, in the recording format
/// (`{"ts":..,"metric":..,"labels":{..},"value":..}` a line). Good lines are ingested;
/// bad ones are counted and the first few reported with their line numbers.
async fn import(State(api): State<Api>, body: String) -> Response {
    let mut batch = IngestBatch::default();
    let mut index: HashMap<vigil_engine::Labels, u32> = HashMap::new();
    let (mut rejected, mut errors) = (0u64, Vec::new());
    for (n, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(r) => {
                let next = index.len() as u32;
                let i = *index.entry(r.labels).or_insert_with_key(|l| {
                    batch.series.push(l.clone());
                    next
                });
                batch.samples.push((i, r.ts, r.value));
            }
            Err(e) => {
                rejected += 1;
                if errors.len() < 10 {
                    errors.push(format!("line {}: {e}", n + 1));
                }
            }
        }
    }
    let accepted = batch.samples.len();
    if accepted > 0 && api.engine.ingest(batch).await.is_err() {
        return unavailable();
    }
    let code = if accepted == 0 && rejected > 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (
        code,
        Json(json!({"accepted": accepted, "rejected": rejected, "errors": errors})),
    )
        .into_response()
}

async fn reload(State(api): State<Api>) -> Response {
    let (tx, rx) = oneshot::channel();
    if api.reload_tx.send(Trigger::Http(tx)).await.is_err() {
        return unavailable();
    }
    match rx.await {
        Ok(Ok(msg)) => (StatusCode::OK, format!("{msg}\n")).into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            format!("reload rejected; the previous rules keep running:\n{e}\n"),
        )
            .into_response(),
        Err(_) => unavailable(),
    }
}

async fn ui() -> Html<&'static str> {
    Html(include_str!("ui/index.html"))
}
