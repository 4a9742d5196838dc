//! Alertmanager API v2 sink, with Prometheus' sending semantics.
//!
//! Firing and resolved alerts of rules with `actions: [alert]` are POSTed to
//! `{url}/api/v2/alerts` as soon as they change, and every alert the sink holds is sent
//! again every `resend_delay`: a firing alert with `endsAt = now + 4 ×
//! max(eval_interval, resend_delay)` (so Alertmanager resolves it by itself if Vigil
//! goes away), a resolved one with `endsAt` = its resolve time, for `resolved_retention`
//! after it resolved. A failed POST is logged, counted and repaired by the next re-send.
//! Pending and inactive transitions are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use vigil_engine::eval::AlertEvent;
use vigil_engine::lifecycle::AlertState;
use vigil_engine::{Duration, Labels};

use super::{
    add, generator_link, positive, rfc3339, set, shutdown_signal, to_std, Clock, HttpSettings,
    HttpTarget, Secret, SinkContext, SinkError, SinkStats,
};

/// Alerts per POST, as Prometheus' `--alertmanager.notification-batch-size`.
const MAX_BATCH: usize = 256;

/// Config of the Alertmanager sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Alertmanager base URL, e.g. `http://alertmanager:9093` (required; no default).
    /// Alerts go to `{url}/api/v2/alerts`.
    pub url: String,
    /// How often every held alert is sent again (default `1m`).
    #[serde(default = "default_resend_delay")]
    pub resend_delay: Duration,
    /// How long a resolved alert keeps being re-sent (default `15m`).
    #[serde(default = "default_resolved_retention")]
    pub resolved_retention: Duration,
    /// Timeout of one POST; also bounds the final flush at shutdown (default `10s`).
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
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

fn default_resend_delay() -> Duration {
    Duration::from_secs(60)
}

fn default_resolved_retention() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
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

impl AlertmanagerConfig {
    /// A config for `url` with every other field at its default.
    pub fn new(url: impl Into<String>) -> Self {
        AlertmanagerConfig {
            url: url.into(),
            resend_delay: default_resend_delay(),
            resolved_retention: default_resolved_retention(),
            timeout: default_timeout(),
            headers: default_headers(),
            bearer_token: default_bearer_token(),
            bearer_token_env: default_bearer_token_env(),
        }
    }

    /// Validates the config and builds the sink.
    pub fn build(self, ctx: &SinkContext) -> Result<AlertmanagerSink, SinkError> {
        let resend_delay = positive("resend_delay", self.resend_delay)?;
        let target = HttpTarget::new(
            &HttpSettings {
                sink: "alertmanager",
                url: &self.url,
                headers: &self.headers,
                bearer_token: self.bearer_token.as_ref(),
                bearer_token_env: self.bearer_token_env.as_deref(),
                timeout: self.timeout,
            },
            "/api/v2/alerts",
        )?;
        let lifetime = ctx.eval_interval.max(resend_delay).saturating_mul(4);
        Ok(AlertmanagerSink {
            target: Arc::new(target),
            generator_url: ctx.generator_url.clone(),
            resend_delay,
            resolved_retention_ms: self.resolved_retention.as_millis(),
            lifetime_ms: i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX),
            timeout: to_std(self.timeout),
            stats: Arc::default(),
            clock: Clock::System,
        })
    }
}

/// The running Alertmanager sink; see the [module docs](self).
#[derive(Debug)]
pub struct AlertmanagerSink {
    target: Arc<HttpTarget>,
    generator_url: String,
    resend_delay: StdDuration,
    resolved_retention_ms: i64,
    lifetime_ms: i64,
    timeout: StdDuration,
    stats: Arc<SinkStats>,
    clock: Clock,
}

/// One alert held for re-sending.
#[derive(Debug)]
struct HeldAlert {
    labels: Labels,
    annotations: Labels,
    active_at: i64,
    /// Resolved: the resolve's event time, and the wall time the sink saw it.
    resolved: Option<(i64, i64)>,
}

/// The alerts held, by fingerprint, and those changed since the last send.
#[derive(Debug, Default)]
struct Held {
    alerts: BTreeMap<u64, HeldAlert>,
    changed: BTreeSet<u64>,
}

impl Held {
    fn apply(&mut self, ev: AlertEvent, now: i64) {
        let resolved = match ev.state {
            _ if !ev.notify => return,
            AlertState::Firing => None,
            AlertState::Resolved => Some((ev.ts, now)),
            AlertState::Pending | AlertState::Inactive => return,
        };
        let held = HeldAlert {
            labels: ev.labels,
            annotations: ev.annotations,
            active_at: ev.active_at,
            resolved,
        };
        self.alerts.insert(ev.fingerprint, held);
        self.changed.insert(ev.fingerprint);
    }

    /// Forgets alerts resolved more than `retention_ms` ago.
    fn prune(&mut self, now: i64, retention_ms: i64) {
        self.alerts.retain(|_, a| {
            a.resolved
                .is_none_or(|(_, seen)| seen >= now - retention_ms)
        });
    }
}

/// One element of the `POST /api/v2/alerts` array.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert<'a> {
    labels: &'a Labels,
    annotations: &'a Labels,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
}

/// Serialized POST bodies with their alert counts.
type Bodies = Vec<(usize, Vec<u8>)>;

impl AlertmanagerSink {
    /// The sink's counters (`queue_len`: alerts held for re-sending).
    pub fn stats(&self) -> Arc<SinkStats> {
        Arc::clone(&self.stats)
    }

    /// Sends alert events until `rx` closes or `shutdown` turns true (or its sender is
    /// dropped), then sends every held alert once more, within `timeout`.
    pub async fn run(self, mut rx: mpsc::Receiver<AlertEvent>, shutdown: watch::Receiver<bool>) {
        let shutdown = shutdown_signal(shutdown);
        tokio::pin!(shutdown);
        let mut tick = interval_at(Instant::now() + self.resend_delay, self.resend_delay);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut held = Held::default();
        let mut inflight: Option<JoinHandle<bool>> = None;
        let (mut resend_all, mut failing) = (false, false);
        tracing::info!(sink = "alertmanager", url = %self.target.display_url(), "sending alerts");
        loop {
            if inflight.is_none() {
                let now = self.clock.now_ms();
                let due: Vec<u64> = if std::mem::take(&mut resend_all) {
                    held.prune(now, self.resolved_retention_ms);
                    held.changed.clear();
                    held.alerts.keys().copied().collect()
                } else {
                    std::mem::take(&mut held.changed).into_iter().collect()
                };
                if !due.is_empty() {
                    let bodies = self.bodies(&held, &due, now);
                    inflight = Some(tokio::spawn(send(
                        Arc::clone(&self.target),
                        Arc::clone(&self.stats),
                        failing,
                        bodies,
                    )));
                }
            }
            set(&self.stats.queue_len, held.alerts.len());
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                done = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                    inflight = None;
                    failing = done.unwrap_or(true);
                }
                _ = tick.tick() => resend_all = true,
                ev = rx.recv() => match ev {
                    Some(ev) => held.apply(ev, self.clock.now_ms()),
                    None => break,
                },
            }
        }
        if let Some(task) = inflight {
            task.abort();
        }
        while let Ok(ev) = rx.try_recv() {
            held.apply(ev, self.clock.now_ms());
        }
        let now = self.clock.now_ms();
        held.prune(now, self.resolved_retention_ms);
        let all: Vec<u64> = held.alerts.keys().copied().collect();
        let bodies = self.bodies(&held, &all, now);
        let flush = send(
            Arc::clone(&self.target),
            Arc::clone(&self.stats),
            failing,
            bodies,
        );
        if tokio::time::timeout(self.timeout, flush).await.is_err() {
            tracing::warn!(sink = "alertmanager", "final flush timed out");
        }
        set(&self.stats.queue_len, 0);
    }

    /// The POST bodies for the alerts `fingerprints`, at most [`MAX_BATCH`] each.
    fn bodies(&self, held: &Held, fingerprints: &[u64], now: i64) -> Bodies {
        fingerprints
            .chunks(MAX_BATCH)
            .map(|chunk| {
                let alerts: Vec<PostableAlert<'_>> = chunk
                    .iter()
                    .filter_map(|fp| Some((*fp, held.alerts.get(fp)?)))
                    .map(|(fp, a)| PostableAlert {
                        labels: &a.labels,
                        annotations: &a.annotations,
                        starts_at: rfc3339(a.active_at),
                        ends_at: rfc3339(a.resolved.map_or(now + self.lifetime_ms, |(ts, _)| ts)),
                        generator_url: generator_link(&self.generator_url, fp),
                    })
                    .collect();
                let body = serde_json::to_vec(&alerts).expect("string maps serialize");
                (alerts.len(), body)
            })
            .collect()
    }
}

/// POSTs `bodies` in turn; returns whether the last one failed. `failing` says whether
/// the previous POST failed (the next one then counts as a retry).
async fn send(
    target: Arc<HttpTarget>,
    stats: Arc<SinkStats>,
    mut failing: bool,
    bodies: Bodies,
) -> bool {
    for (n, body) in bodies {
        if failing {
            add(&stats.retries_total, 1);
        }
        match target.post(body).await {
            Ok(()) => {
                add(&stats.sent_total, n);
                if std::mem::take(&mut failing) {
                    tracing::info!(sink = "alertmanager", "sending alerts works again");
                }
            }
            Err(error) => {
                add(&stats.failed_total, n);
                failing = true;
                tracing::warn!(
                    sink = "alertmanager",
                    url = %target.display_url(),
                    alerts = n,
                    %error,
                    "sending alerts failed; the next re-send retries them"
                );
            }
        }
    }
    failing
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use tokio::sync::mpsc::UnboundedReceiver;
    use tokio::time::{sleep, timeout};
    use vigil_engine::lifecycle::AlertState::{Firing, Inactive, Pending, Resolved};

    use super::super::testutil::{self, event, T0};
    use super::*;

    type Posts = UnboundedReceiver<(u64, Value)>;

    struct Running {
        tx: mpsc::Sender<AlertEvent>,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
        stats: Arc<SinkStats>,
    }

    fn start(script: &[u16], ctx: &SinkContext) -> (Running, Posts) {
        let mut sink = AlertmanagerConfig::new("http://am:9093")
            .build(ctx)
            .unwrap();
        let (target, posts) = testutil::mock(script);
        sink.target = target;
        sink.clock = testutil::clock();
        let stats = sink.stats();
        let (tx, rx) = mpsc::channel(1024);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(sink.run(rx, stop_rx));
        let running = Running {
            tx,
            stop,
            task,
            stats,
        };
        (running, posts)
    }

    fn ends_at(post: &Value) -> &str {
        post[0]["endsAt"].as_str().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn firing_alert_payload_and_resends() {
        let (am, mut posts) = start(&[], &testutil::ctx());
        am.tx.send(event(Firing, "n1", T0)).await.unwrap();
        let (at, post) = posts.recv().await.unwrap();
        assert_eq!(at, 0);
        let golden = json!([{
            "labels": {"alertname": "NodeDown", "node": "n1", "severity": "critical"},
            "annotations": {"summary": "n1 is down"},
            "startsAt": "2025-12-31T23:59:00.000Z",
            "endsAt": "2026-01-01T00:04:00.000Z",
            "generatorURL": "http://vigil:9898/#/alerts?fingerprint=79606b2dc447c3dc"
        }]);
        assert_eq!(post, golden);
        // Re-sent every resend_delay, endsAt = now + 4 × max(10s, 1m).
        for (minute, end) in [(1, "00:05"), (2, "00:06"), (3, "00:07")] {
            let (at, post) = posts.recv().await.unwrap();
            assert_eq!(at, minute * 60_000);
            assert_eq!(ends_at(&post), format!("2026-01-01T{end}:00.000Z"));
            assert_eq!(post[0]["startsAt"], golden[0]["startsAt"]);
        }
        let stats = am.stats.snapshot();
        assert_eq!((stats.sent_total, stats.queue_len), (4, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn lifetime_follows_a_longer_eval_interval() {
        let ctx = SinkContext {
            eval_interval: StdDuration::from_secs(120),
            ..testutil::ctx()
        };
        let (am, mut posts) = start(&[], &ctx);
        am.tx.send(event(Firing, "n1", T0)).await.unwrap();
        let (_, post) = posts.recv().await.unwrap();
        assert_eq!(ends_at(&post), "2026-01-01T00:08:00.000Z");
    }

    #[tokio::test(start_paused = true)]
    async fn resolved_alerts_are_resent_for_the_retention_then_forgotten() {
        let (am, mut posts) = start(&[], &testutil::ctx());
        am.tx.send(event(Firing, "n1", T0)).await.unwrap();
        posts.recv().await.unwrap();
        sleep(StdDuration::from_secs(30)).await;
        am.tx
            .send(event(Resolved, "n1", T0 + 30_000))
            .await
            .unwrap();
        let (at, post) = posts.recv().await.unwrap();
        assert_eq!(at, 30_000);
        assert_eq!(ends_at(&post), "2026-01-01T00:00:30.000Z");
        // Re-sent at each tick while resolved less than 15m ago (seen at 30s), then gone.
        let mut ticks = Vec::new();
        let deadline = Instant::now() + StdDuration::from_secs(30 * 60);
        while let Ok(Some((at, post))) = tokio::time::timeout_at(deadline, posts.recv()).await {
            assert_eq!(ends_at(&post), "2026-01-01T00:00:30.000Z");
            ticks.push(at / 60_000);
        }
        assert_eq!(ticks, (1..=15).collect::<Vec<_>>());
        assert_eq!(am.stats.snapshot().queue_len, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ignores_pending_inactive_and_silent_alerts() {
        let (am, mut posts) = start(&[], &testutil::ctx());
        let silent = AlertEvent {
            notify: false,
            ..event(Firing, "silent", T0)
        };
        for ev in [event(Pending, "p", T0), event(Inactive, "i", T0), silent] {
            am.tx.send(ev).await.unwrap();
        }
        am.tx.send(event(Firing, "n2", T0)).await.unwrap();
        let (_, post) = posts.recv().await.unwrap();
        assert_eq!(post.as_array().unwrap().len(), 1);
        assert_eq!(post[0]["labels"]["node"], "n2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_send_is_retried_at_the_next_resend() {
        let (am, mut posts) = start(&[503], &testutil::ctx());
        am.tx.send(event(Firing, "n1", T0)).await.unwrap();
        assert_eq!(posts.recv().await.unwrap().0, 0);
        assert_eq!(posts.recv().await.unwrap().0, 60_000);
        let s = am.stats.snapshot();
        assert_eq!((s.sent_total, s.failed_total, s.retries_total), (1, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn batches_hold_at_most_256_alerts() {
        let (am, mut posts) = start(&[], &testutil::ctx());
        // Queued and stopped before the sink runs (try_send never yields): the
        // shutdown flush sends all 300.
        for i in 0..300 {
            am.tx.try_send(event(Firing, &format!("n{i}"), T0)).unwrap();
        }
        am.stop.send(true).unwrap();
        am.task.await.unwrap();
        let mut sizes = Vec::new();
        while let Ok((_, post)) = posts.try_recv() {
            sizes.push(post.as_array().unwrap().len());
        }
        assert_eq!(sizes, [256, 44]);
        assert_eq!(am.stats.snapshot().sent_total, 300);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_flushes_every_held_alert_once() {
        let (am, mut posts) = start(&[], &testutil::ctx());
        am.tx.send(event(Firing, "n1", T0)).await.unwrap();
        posts.recv().await.unwrap();
        am.tx.try_send(event(Firing, "n2", T0)).unwrap();
        am.stop.send(true).unwrap();
        am.task.await.unwrap();
        let (_, post) = posts.recv().await.unwrap();
        let nodes: Vec<_> = post
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["labels"]["node"])
            .collect();
        assert_eq!(nodes.len(), 2, "{post}");
        assert!(posts.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_final_flush_is_bounded_by_the_timeout() {
        // The first POST answers, the flush never does.
        let (am, mut posts) = start(&[200, u16::MAX], &testutil::ctx());
        am.tx.send(event(Firing, "n1", T0)).await.unwrap();
        posts.recv().await.unwrap();
        let stopped = Instant::now();
        am.stop.send(true).unwrap();
        timeout(StdDuration::from_secs(60), am.task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stopped.elapsed(), StdDuration::from_secs(10));
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let cfg: AlertmanagerConfig = serde_json::from_value(json!({"url": "http://am"})).unwrap();
        assert_eq!(cfg, AlertmanagerConfig::new("http://am"));
        assert_eq!(cfg.resend_delay.to_string(), "1m");
        assert_eq!(cfg.resolved_retention.to_string(), "15m");
        assert_eq!(cfg.timeout.to_string(), "10s");
        let err = serde_json::from_value::<AlertmanagerConfig>(json!({"url": "x", "urls": 1}));
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("unknown field `urls`"));
        let zero = AlertmanagerConfig {
            resend_delay: Duration::ZERO,
            ..cfg
        };
        assert!(zero.build(&testutil::ctx()).is_err());
    }
}
