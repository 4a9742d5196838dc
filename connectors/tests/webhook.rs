//! The webhook sink against a local HTTP server that fails on purpose.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use vigil_connectors::sinks::{Secret, SinkContext, SinkStats, WebhookConfig};
use vigil_engine::lifecycle::AlertState::{Firing, Resolved};
use vigil_engine::Duration as VDuration;

use common::{event, eventually, now_ms};

/// A receiver answering `fail_status` to its first `fail_first` requests, then 200.
#[derive(Clone)]
struct Hook {
    fail_first: usize,
    fail_status: StatusCode,
    calls: Arc<AtomicUsize>,
    accepted: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
}

async fn receive(
    State(hook): State<Hook>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    if hook.calls.fetch_add(1, Ordering::SeqCst) < hook.fail_first {
        return hook.fail_status;
    }
    hook.accepted.lock().unwrap().push((headers, body));
    StatusCode::OK
}

/// Serves a [`Hook`] on a free loopback port; returns its URL.
async fn serve(fail_first: usize, fail_status: StatusCode) -> (String, Hook) {
    let hook = Hook {
        fail_first,
        fail_status,
        calls: Arc::default(),
        accepted: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(hook.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hook)
}

fn ctx() -> SinkContext {
    SinkContext {
        generator_url: "http://vigil.test:9898".into(),
        eval_interval: Duration::from_secs(10),
    }
}

/// Fast retries for tests.
fn config(url: &str) -> WebhookConfig {
    WebhookConfig {
        initial_backoff: VDuration::from_millis(10),
        max_backoff: VDuration::from_millis(50),
        ..WebhookConfig::new(url)
    }
}

struct Running {
    tx: mpsc::Sender<vigil_engine::eval::AlertEvent>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<SinkStats>,
}

fn start(cfg: WebhookConfig) -> Running {
    let sink = cfg.build(&ctx()).unwrap();
    let stats = sink.stats();
    let (tx, rx) = mpsc::channel(16);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(sink.run(rx, stop_rx));
    Running {
        tx,
        stop,
        task,
        stats,
    }
}

#[tokio::test]
async fn retries_503_then_delivers_once() {
    let (url, hook) = serve(2, StatusCode::SERVICE_UNAVAILABLE).await;
    let cfg = WebhookConfig {
        headers: [("X-Team".to_string(), "sre".to_string())].into(),
        bearer_token: Some(Secret("s3cret".into())),
        ..config(&url)
    };
    let hook_sink = start(cfg);
    let now = now_ms();
    let ev = event("DiskFull", "n1", Firing, now, now - 60_000);
    hook_sink.tx.send(ev.clone()).await.unwrap();
    let stats = &hook_sink.stats;
    eventually(Duration::from_secs(5), "delivery", || async {
        (stats.snapshot().sent_total == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = stats.snapshot();
    assert_eq!((s.sent_total, s.retries_total, s.failed_total), (1, 2, 0));
    assert_eq!(hook.calls.load(Ordering::SeqCst), 3);
    let accepted = hook.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1, "delivered exactly once");
    let (headers, body) = &accepted[0];
    assert_eq!(headers["authorization"], "Bearer s3cret");
    assert_eq!(headers["x-team"], "sre");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["version"], "1");
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["status"], "firing");
    assert_eq!(
        alerts[0]["labels"],
        serde_json::to_value(&ev.labels).unwrap()
    );
    assert_eq!(
        alerts[0]["fingerprint"],
        format!("{:016x}", ev.fingerprint).as_str()
    );
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let (url, hook) = serve(usize::MAX, StatusCode::BAD_REQUEST).await;
    let sink = start(config(&url));
    let now = now_ms();
    sink.tx
        .send(event("DiskFull", "n1", Firing, now, now))
        .await
        .unwrap();
    let stats = &sink.stats;
    eventually(Duration::from_secs(5), "the failure", || async {
        (stats.snapshot().failed_total == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = stats.snapshot();
    assert_eq!((s.sent_total, s.retries_total, s.failed_total), (0, 0, 1));
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connection_errors_are_retried_until_max_retries() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = WebhookConfig {
        max_retries: 2,
        ..config(&format!("http://127.0.0.1:{port}/hook"))
    };
    let sink = start(cfg);
    let now = now_ms();
    sink.tx
        .send(event("DiskFull", "n1", Firing, now, now))
        .await
        .unwrap();
    let stats = &sink.stats;
    eventually(Duration::from_secs(5), "the failure", || async {
        (stats.snapshot().failed_total == 1).then_some(())
    })
    .await;
    assert_eq!(stats.snapshot().retries_total, 2);
}

#[tokio::test]
async fn shutdown_flushes_the_queue() {
    let (url, hook) = serve(0, StatusCode::OK).await;
    let sink = start(config(&url));
    let now = now_ms();
    sink.tx
        .send(event("DiskFull", "n1", Firing, now - 1000, now - 2000))
        .await
        .unwrap();
    sink.tx
        .send(event("DiskFull", "n1", Resolved, now, now - 2000))
        .await
        .unwrap();
    sink.stop.send(true).unwrap();
    sink.task.await.unwrap();
    let statuses: Vec<Value> = hook
        .accepted
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, body)| body["alerts"].as_array().unwrap().clone())
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(statuses, ["firing", "resolved"]);
    assert_eq!(sink.stats.snapshot().sent_total, 2);
}
