//! Helpers shared by the integration tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_engine::eval::AlertEvent;
use vigil_engine::labels::{encode, fingerprint};
use vigil_engine::lifecycle::AlertState;
use vigil_engine::Labels;

/// Wall-clock epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// An alert event of rule `rule` on node `node`.
pub(crate) fn event(
    rule: &str,
    node: &str,
    state: AlertState,
    ts: i64,
    active_at: i64,
) -> AlertEvent {
    let labels: Labels = [("alertname", rule), ("node", node), ("severity", "warning")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    AlertEvent {
        ts,
        rule: rule.into(),
        state,
        fingerprint: fingerprint(&encode(&labels)),
        labels,
        annotations: [("summary".to_string(), format!("{node} is unwell"))].into(),
        value: 42.0,
        score: 1.0,
        active_at,
        flapping: false,
        notify: true,
    }
}

/// Polls `check` every 20ms until it returns `Some`, for at most `within`.
pub(crate) async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
