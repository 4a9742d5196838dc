//! Generic webhook sink: firing and resolved alerts of rules with `actions: [alert]`,
//! POSTed as JSON batches (body in the crate README).
//!
//! Events wait in a bounded queue (a full queue drops the newest event, counted and
//! logged at most every 10s), so a slow receiver never blocks the engine. One batch is
//! in flight at a time, retried on 5xx, 429 and connection errors with exponential
//! backoff and full jitter; other 4xx answers fail the batch at once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout_at, Instant};
use vigil_engine::eval::AlertEvent;
use vigil_engine::lifecycle::AlertState;
use vigil_engine::{Duration, Labels};

use super::{
    add, generator_link, invalid, positive, rfc3339, set, shutdown_signal, to_std, HttpSettings,
    HttpTarget, Secret, SinkContext, SinkError, SinkStats,
};

/// Alerts per POST.
const MAX_BATCH: usize = 256;
/// Queue-full warnings are logged at most this often.
const DROP_LOG_EVERY: StdDuration = StdDuration::from_secs(10);

/// Config of the webhook sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receiver URL, POSTed to as is (required; no default).
    pub url: String,
    /// Timeout of one POST; also bounds the final flush at shutdown (default `5s`).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Retries of a batch after its first attempt (default `5`).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Backoff ceiling of the first retry, doubling at each retry (default `500ms`).
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: Duration,
    /// Largest backoff ceiling (default `30s`).
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Duration,
    /// Alerts waiting to be sent; when full the newest is dropped (default `1000`).
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// Extra HTTP headers, name → value (default none).
    #[serde(default = "default_headers")]
    pub headers: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer …` (default none).
    #[serde(default = "default_bearer_token")]
    pub bearer_token: Option<Secret>,
    /// Environment variable holding the bearer token; when set and non-empty it
    /// overrides `bearer_token` (default none).
    #[serde(default = "default_bearer_token_env")]
    pub bearer_token_env: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_max_retries() -> u32 {
    5
}

fn default_initial_backoff() -> Duration {
    Duration::from_millis(500)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

fn default_queue_size() -> usize {
    1000
}

fn default_headers() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn default_bearer_token() -> Option<Secret> {
    None
}

fn default_bearer_token_env() -> Option<String> {
    None
}

impl WebhookConfig {
    /// A config for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            timeout: default_timeout(),
            max_retries: default_max_retries(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            queue_size: default_queue_size(),
            headers: default_headers(),
            bearer_token: default_bearer_token(),
            bearer_token_env: default_bearer_token_env(),
        }
    }

    /// Validates the config and builds the sink.
    pub fn build(self, ctx: &SinkContext) -> Result<WebhookSink, SinkError> {
        let initial = positive("initial_backoff", self.initial_backoff)?;
        let max = positive("max_backoff", self.max_backoff)?;
        if max < initial {
            return Err(invalid(
                "max_backoff",
                "must not be less than initial_backoff",
            ));
        }
        if self.queue_size == 0 {
            return Err(invalid("queue_size", "must be at least 1"));
        }
        let target = HttpTarget::new(
            &HttpSettings {
                sink: "webhook",
                url: &self.url,
                headers: &self.headers,
                bearer_token: self.bearer_token.as_ref(),
                bearer_token_env: self.bearer_token_env.as_deref(),
                timeout: self.timeout,
            },
            "",
        )?;
        Ok(WebhookSink {
            target: Arc::new(target),
            generator_url: ctx.generator_url.clone(),
            retry: Retry {
                max_retries: self.max_retries,
                initial,
                max,
            },
            queue_size: self.queue_size,
            timeout: to_std(self.timeout),
            stats: Arc::default(),
        })
    }
}

/// The running webhook sink; see the [module docs](self).
#[derive(Debug)]
pub struct WebhookSink {
    target: Arc<HttpTarget>,
    generator_url: String,
    retry: Retry,
    queue_size: usize,
    timeout: StdDuration,
    stats: Arc<SinkStats>,
}

/// Retry policy: exponential backoff with full jitter.
#[derive(Debug, Clone, Copy)]
struct Retry {
    max_retries: u32,
    initial: StdDuration,
    max: StdDuration,
}

impl Retry {
    /// Ceiling of the wait before retry `n` (0-based): `min(max, initial × 2ⁿ)`.
    fn ceiling(&self, n: u32) -> StdDuration {
        self.initial
            .saturating_mul(2u32.saturating_pow(n))
            .min(self.max)
    }

    /// The wait before retry `n`: uniform in `[0, ceiling(n)]`.
    fn delay(&self, n: u32) -> StdDuration {
        let ceiling = u64::try_from(self.ceiling(n).as_nanos()).unwrap_or(u64::MAX);
        StdDuration::from_nanos(fastrand::u64(0..=ceiling))
    }
}

/// The POST body.
#[derive(Debug, Serialize)]
struct Body<'a> {
    version: &'static str,
    alerts: Vec<WebhookAlert<'a>>,
}

/// One alert of a [`Body`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert<'a> {
    status: &'static str,
    labels: &'a Labels,
    annotations: &'a Labels,
    starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

/// Rate limit of the queue-full warning.
#[derive(Debug, Default)]
struct DropLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl DropLog {
    /// Notes a drop; returns the drops to log now, if it is time to log.
    fn note(&mut self) -> Option<u64> {
        self.unlogged += 1;
        if self.last.is_some_and(|t| t.elapsed() < DROP_LOG_EVERY) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.unlogged))
    }
}

impl WebhookSink {
    /// The sink's counters (`queue_len`: alerts queued, not counting the batch in
    /// flight).
    pub fn stats(&self) -> Arc<SinkStats> {
        Arc::clone(&self.stats)
    }

    /// Sends alert events until `rx` closes or `shutdown` turns true (or its sender is
    /// dropped), then, within `timeout`, lets the batch in flight finish and sends what
    /// is queued once each; what is left is counted as dropped.
    pub async fn run(self, mut rx: mpsc::Receiver<AlertEvent>, shutdown: watch::Receiver<bool>) {
        let shutdown = shutdown_signal(shutdown);
        tokio::pin!(shutdown);
        let mut queue = VecDeque::new();
        let mut inflight: Option<(JoinHandle<()>, usize)> = None;
        let mut drops = DropLog::default();
        tracing::info!(sink = "webhook", url = %self.target.display_url(), "sending alerts");
        loop {
            if inflight.is_none() && !queue.is_empty() {
                let (body, n) = self.next_body(&mut queue);
                let task = tokio::spawn(deliver(self.shared(), self.retry, body, n));
                inflight = Some((task, n));
            }
            set(&self.stats.queue_len, queue.len());
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = async { (&mut inflight.as_mut().expect("guarded").0).await }, if inflight.is_some() => {
                    inflight = None;
                }
                ev = rx.recv() => match ev {
                    Some(ev) => self.enqueue(&mut queue, ev, &mut drops),
                    None => break,
                },
            }
        }
        while let Ok(ev) = rx.try_recv() {
            self.enqueue(&mut queue, ev, &mut drops);
        }
        let deadline = Instant::now() + self.timeout;
        let mut lost = 0;
        if let Some((task, n)) = inflight {
            let abort = task.abort_handle();
            if timeout_at(deadline, task).await.is_err() {
                abort.abort();
                lost += n;
            }
        }
        let once = Retry {
            max_retries: 0,
            ..self.retry
        };
        while lost == 0 && !queue.is_empty() {
            let (body, n) = self.next_body(&mut queue);
            if timeout_at(deadline, deliver(self.shared(), once, body, n))
                .await
                .is_err()
            {
                lost += n;
            }
        }
        lost += std::mem::take(&mut queue).len();
        if lost > 0 {
            add(&self.stats.dropped_total, lost);
            tracing::warn!(
                sink = "webhook",
                alerts = lost,
                "shutdown flush timed out; alerts dropped"
            );
        }
        set(&self.stats.queue_len, 0);
    }

    fn shared(&self) -> (Arc<HttpTarget>, Arc<SinkStats>) {
        (Arc::clone(&self.target), Arc::clone(&self.stats))
    }

    fn enqueue(&self, queue: &mut VecDeque<AlertEvent>, ev: AlertEvent, drops: &mut DropLog) {
        if !ev.notify || !matches!(ev.state, AlertState::Firing | AlertState::Resolved) {
            return;
        }
        if queue.len() < self.queue_size {
            queue.push_back(ev);
            return;
        }
        add(&self.stats.dropped_total, 1);
        if let Some(dropped) = drops.note() {
            tracing::warn!(
                sink = "webhook",
                dropped,
                queue_size = self.queue_size,
                "queue full; dropping the newest alerts"
            );
        }
    }

    /// Takes up to [`MAX_BATCH`] events off `queue`: the serialized body and its size.
    fn next_body(&self, queue: &mut VecDeque<AlertEvent>) -> (Vec<u8>, usize) {
        let batch: Vec<AlertEvent> = queue.drain(..queue.len().min(MAX_BATCH)).collect();
        (self.body(&batch), batch.len())
    }

    fn body(&self, events: &[AlertEvent]) -> Vec<u8> {
        let alerts = events
            .iter()
            .map(|ev| {
                let resolved = ev.state == AlertState::Resolved;
                WebhookAlert {
                    status: if resolved { "resolved" } else { "firing" },
                    labels: &ev.labels,
                    annotations: &ev.annotations,
                    starts_at: rfc3339(ev.active_at),
                    ends_at: resolved.then(|| rfc3339(ev.ts)),
                    generator_url: generator_link(&self.generator_url, ev.fingerprint),
                    fingerprint: format!("{:016x}", ev.fingerprint),
                }
            })
            .collect();
        let body = Body {
            version: "1",
            alerts,
        };
        serde_json::to_vec(&body).expect("string maps serialize")
    }
}

/// POSTs `body` (`n` alerts), retrying as `retry` allows.
async fn deliver(
    (target, stats): (Arc<HttpTarget>, Arc<SinkStats>),
    retry: Retry,
    body: Vec<u8>,
    n: usize,
) {
    let mut retries = 0;
    loop {
        let error = match target.post(body.clone()).await {
            Ok(()) => return add(&stats.sent_total, n),
            Err(error) => error,
        };
        if !error.retryable() || retries >= retry.max_retries {
            add(&stats.failed_total, n);
            tracing::error!(
                sink = "webhook",
                url = %target.display_url(),
                alerts = n,
                retries,
                %error,
                "delivering alerts failed; dropping them"
            );
            return;
        }
        let delay = retry.delay(retries);
        tracing::warn!(sink = "webhook", %error, ?delay, "delivering alerts failed; retrying");
        sleep(delay).await;
        retries += 1;
        add(&stats.retries_total, 1);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use tokio::sync::mpsc::UnboundedReceiver;
    use vigil_engine::lifecycle::AlertState::{Firing, Pending, Resolved};

    use super::super::testutil::{self, event, T0};
    use super::*;

    fn sink(script: &[u16], cfg: WebhookConfig) -> (WebhookSink, UnboundedReceiver<(u64, Value)>) {
        let mut sink = cfg.build(&testutil::ctx()).unwrap();
        let (target, posts) = testutil::mock(script);
        sink.target = target;
        (sink, posts)
    }

    #[test]
    fn body_shape() {
        let (sink, _) = sink(&[], WebhookConfig::new("http://hook"));
        let body = sink.body(&[event(Firing, "n1", T0), event(Resolved, "n2", T0 + 90_000)]);
        let golden = json!({
            "version": "1",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "NodeDown", "node": "n1", "severity": "critical"},
                "annotations": {"summary": "n1 is down"},
                "startsAt": "2025-12-31T23:59:00.000Z",
                "generatorURL": "http://vigil:9898/#/alerts?fingerprint=79606b2dc447c3dc",
                "fingerprint": "79606b2dc447c3dc"
            }, {
                "status": "resolved",
                "labels": {"alertname": "NodeDown", "node": "n2", "severity": "critical"},
                "annotations": {"summary": "n2 is down"},
                "startsAt": "2025-12-31T23:59:00.000Z",
                "endsAt": "2026-01-01T00:01:30.000Z",
                "generatorURL": "http://vigil:9898/#/alerts?fingerprint=f9709eca26fd47f9",
                "fingerprint": "f9709eca26fd47f9"
            }]
        });
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), golden);
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let retry = WebhookConfig::new("http://hook")
            .build(&testutil::ctx())
            .unwrap()
            .retry;
        let ms = |n| retry.ceiling(n).as_millis();
        let ceilings: Vec<_> = (0..9).map(ms).collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(ms(u32::MAX), 30_000);
        for n in [0, 3, 8] {
            let ceiling = retry.ceiling(n);
            let delays: Vec<_> = (0..1000).map(|_| retry.delay(n)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling));
            // Full jitter spreads over the whole range.
            assert!(delays.iter().any(|d| *d < ceiling / 4));
            assert!(delays.iter().any(|d| *d > ceiling * 3 / 4));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_5xx_429_and_connect_errors_with_backoff() {
        let (sink, mut posts) = sink(&[503, 429, 0], WebhookConfig::new("http://hook"));
        let stats = sink.stats();
        let (tx, rx) = mpsc::channel(8);
        let (_stop, stop_rx) = watch::channel(false);
        tokio::spawn(sink.run(rx, stop_rx));
        tx.send(event(Firing, "n1", T0)).await.unwrap();
        let mut at = Vec::new();
        for _ in 0..4 {
            at.push(posts.recv().await.unwrap().0);
        }
        // Each wait is within its ceiling: 500ms, 1s, 2s.
        for (i, ceiling) in [500, 1000, 2000].into_iter().enumerate() {
            assert!(at[i + 1] - at[i] <= ceiling, "{at:?}");
        }
        tokio::task::yield_now().await;
        let s = stats.snapshot();
        assert_eq!((s.sent_total, s.retries_total, s.failed_total), (1, 3, 0));
    }

    async fn deliver_with(script: &[u16], max_retries: u32) -> (usize, SinkStats) {
        let (target, mut posts) = testutil::mock(script);
        let stats = Arc::new(SinkStats::default());
        let retry = Retry {
            max_retries,
            initial: StdDuration::from_millis(500),
            max: StdDuration::from_secs(30),
        };
        deliver((target, Arc::clone(&stats)), retry, b"{}".to_vec(), 3).await;
        let mut n = 0;
        while posts.try_recv().is_ok() {
            n += 1;
        }
        (n, Arc::into_inner(stats).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn other_4xx_fail_at_once_and_retries_run_out() {
        let (posts, stats) = deliver_with(&[400], 5).await;
        let s = stats.snapshot();
        assert_eq!((posts, s.failed_total, s.retries_total), (1, 3, 0));
        let (posts, stats) = deliver_with(&[503; 7], 5).await;
        let s = stats.snapshot();
        assert_eq!((posts, s.failed_total, s.retries_total), (6, 3, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_the_newest_and_counts() {
        let cfg = WebhookConfig {
            queue_size: 2,
            ..WebhookConfig::new("http://hook")
        };
        // The first batch never gets an answer, so the queue fills up behind it.
        let (sink, mut posts) = sink(&[u16::MAX], cfg);
        let stats = sink.stats();
        let (tx, rx) = mpsc::channel(16);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(sink.run(rx, stop_rx));
        tx.try_send(event(Pending, "ignored", T0)).unwrap();
        for i in 1..=5 {
            tx.try_send(event(Firing, &format!("n{i}"), T0)).unwrap();
        }
        sleep(StdDuration::from_millis(1)).await;
        let s = stats.snapshot();
        assert_eq!((s.dropped_total, s.queue_len), (2, 2));
        // Shutdown: the hung batch times out (dropped), and so does the queue behind it.
        stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(stats.snapshot().dropped_total, 5);
        let first = posts.recv().await.unwrap().1;
        assert_eq!(first["alerts"][0]["labels"]["node"], "n1");
    }

    #[tokio::test(start_paused = true)]
    async fn queue_full_warnings_are_rate_limited() {
        let mut log = DropLog::default();
        assert_eq!(log.note(), Some(1));
        for _ in 0..9 {
            assert_eq!(log.note(), None);
        }
        sleep(DROP_LOG_EVERY).await;
        assert_eq!(log.note(), Some(10));
    }

    #[test]
    fn config_defaults_and_validation() {
        let cfg: WebhookConfig = serde_json::from_value(json!({"url": "http://hook"})).unwrap();
        assert_eq!(cfg, WebhookConfig::new("http://hook"));
        assert_eq!(
            (cfg.timeout.to_string(), cfg.max_retries, cfg.queue_size),
            ("5s".to_string(), 5, 1000)
        );
        assert!(
            serde_json::from_value::<WebhookConfig>(json!({"url": "x", "retries": 1})).is_err()
        );
        let bad = |cfg: WebhookConfig| cfg.build(&testutil::ctx()).unwrap_err().to_string();
        let base = WebhookConfig::new("http://hook");
        let small = WebhookConfig {
            max_backoff: Duration::from_millis(100),
            ..base.clone()
        };
        assert!(bad(small).starts_with("max_backoff:"));
        let empty = WebhookConfig {
            queue_size: 0,
            ..base
        };
        assert!(bad(empty).starts_with("queue_size:"));
    }
}
