//! Alert sinks: where [`AlertEvent`]s go once the engine has decided them.
//!
//! Each sink is a serde config type (`*Config`) that [builds](AlertmanagerConfig::build)
//! the running component (`*Sink`), whose `run` consumes alert events from a channel
//! until the channel closes or shutdown is signalled, then flushes once. Every sink
//! shares its counters as an `Arc<`[`SinkStats`]`>` for `/metrics`.
//!
//! - [`alertmanager`]: Alertmanager API v2, with Prometheus' re-send semantics;
//! - [`webhook`]: a JSON batch per POST, bounded queue, retries with backoff;
//! - [`stdout`]: one JSON line per transition.

pub mod alertmanager;
pub mod stdout;
pub mod webhook;

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use alertmanager::{AlertmanagerConfig, AlertmanagerSink};
pub use stdout::{StdoutConfig, StdoutSink};
#[doc(no_inline)]
pub use vigil_engine::eval::AlertEvent;
pub use webhook::{WebhookConfig, WebhookSink};

/// What every sink is told about the service it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkContext {
    /// Base URL of this Vigil, e.g. `http://127.0.0.1:9898`; alerts link back to
    /// `{generator_url}/#/alerts?fingerprint={hex}`.
    pub generator_url: String,
    /// Rule evaluation interval (the largest group interval); an Alertmanager alert
    /// lives `4 × max(eval_interval, resend_delay)` past each send.
    pub eval_interval: StdDuration,
}

/// Counters of one sink, shared with whoever serves `/metrics`. Counts are in alerts,
/// except `retries_total` (requests).
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Alerts delivered (a re-sent alert counts at each send).
    pub sent_total: AtomicU64,
    /// Alerts whose delivery failed for good (webhook) or until the next re-send
    /// (Alertmanager).
    pub failed_total: AtomicU64,
    /// Alerts dropped unsent: full queue, or still queued when the shutdown flush ran
    /// out of time.
    pub dropped_total: AtomicU64,
    /// Requests that repeat a failed one.
    pub retries_total: AtomicU64,
    /// Alerts waiting (webhook: queued; Alertmanager: held for re-sending).
    pub queue_len: AtomicU64,
}

/// A plain copy of [`SinkStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SinkStatsSnapshot {
    /// See [`SinkStats::sent_total`].
    pub sent_total: u64,
    /// See [`SinkStats::failed_total`].
    pub failed_total: u64,
    /// See [`SinkStats::dropped_total`].
    pub dropped_total: u64,
    /// See [`SinkStats::retries_total`].
    pub retries_total: u64,
    /// See [`SinkStats::queue_len`].
    pub queue_len: u64,
}

impl SinkStats {
    /// Reads every counter (each atomically, not all at one instant).
    pub fn snapshot(&self) -> SinkStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkStatsSnapshot {
            sent_total: get(&self.sent_total),
            failed_total: get(&self.failed_total),
            dropped_total: get(&self.dropped_total),
            retries_total: get(&self.retries_total),
            queue_len: get(&self.queue_len),
        }
    }
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

fn set(gauge: &AtomicU64, n: usize) {
    gauge.store(n as u64, Ordering::Relaxed);
}

/// Why a sink config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A field has a bad value.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, e.g. `url` or `headers.X-Scope`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `bearer_token_env` names an unset variable and there is no `bearer_token`.
    #[error(
        "bearer_token_env: environment variable {var} is not set and no bearer_token is configured"
    )]
    MissingBearerToken {
        /// The variable.
        var: String,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

fn invalid(field: impl Into<String>, reason: impl fmt::Display) -> SinkError {
    SinkError::Invalid {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// A string kept out of logs: `Debug` prints `Secret(***)`. Serialized as is.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The settings an HTTP sink shares, borrowed from its config.
struct HttpSettings<'a> {
    sink: &'static str,
    url: &'a str,
    headers: &'a BTreeMap<String, String>,
    bearer_token: Option<&'a Secret>,
    bearer_token_env: Option<&'a str>,
    timeout: vigil_engine::Duration,
}

/// `timeout`-style config durations: must be positive.
fn positive(field: &str, d: vigil_engine::Duration) -> Result<StdDuration, SinkError> {
    if d.is_zero() {
        return Err(invalid(field, "must be greater than 0s"));
    }
    Ok(to_std(d))
}

fn to_std(d: vigil_engine::Duration) -> StdDuration {
    StdDuration::from_millis(d.as_millis().unsigned_abs())
}

/// The bearer token: from `env` when it names a set, non-empty variable (logged at
/// info, the token never is), else `token`.
fn resolve_token(
    sink: &str,
    token: Option<&Secret>,
    env: Option<&str>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, SinkError> {
    if let Some(var) = env {
        match lookup(var).map(|v| v.trim().to_string()) {
            Some(v) if !v.is_empty() => {
                tracing::info!(sink, var, "bearer token taken from the environment");
                return Ok(Some(v));
            }
            _ if token.is_none() => return Err(SinkError::MissingBearerToken { var: var.into() }),
            _ => {}
        }
    }
    Ok(token.map(|t| t.0.clone()))
}

/// A JSON POST endpoint. Tests swap in a scripted mock.
#[derive(Debug)]
enum HttpTarget {
    Real {
        client: reqwest::Client,
        url: reqwest::Url,
    },
    #[cfg(test)]
    Mock(testutil::Mock),
}

/// Why a POST failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PostError {
    /// The server answered with a non-2xx status.
    Status(u16),
    /// No answer: connect error, timeout, broken connection.
    Transport(String),
}

impl PostError {
    /// 5xx, 429 and transport errors are worth retrying; other statuses are not.
    fn retryable(&self) -> bool {
        match self {
            PostError::Status(s) => *s >= 500 || *s == 429,
            PostError::Transport(_) => true,
        }
    }
}

impl fmt::Display for PostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostError::Status(s) => write!(f, "HTTP status {s}"),
            PostError::Transport(e) => f.write_str(e),
        }
    }
}

impl HttpTarget {
    /// Builds a client for `settings`; a non-empty `path` is appended to the URL.
    fn new(s: &HttpSettings<'_>, path: &str) -> Result<Self, SinkError> {
        let full = match path {
            "" => s.url.to_string(),
            _ => format!("{}{path}", s.url.trim_end_matches('/')),
        };
        let url = reqwest::Url::parse(&full).map_err(|e| invalid("url", e))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("url", "scheme must be http or https"));
        }
        let timeout = positive("timeout", s.timeout)?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in s.headers {
            let field = || format!("headers.{name}");
            let name = HeaderName::try_from(name.as_str()).map_err(|e| invalid(field(), e))?;
            let value = HeaderValue::try_from(value.as_str()).map_err(|e| invalid(field(), e))?;
            headers.insert(name, value);
        }
        let token = resolve_token(s.sink, s.bearer_token, s.bearer_token_env, |v| {
            std::env::var(v).ok()
        })?;
        if let Some(token) = token {
            if headers.contains_key(AUTHORIZATION) {
                return Err(invalid(
                    "headers.Authorization",
                    "conflicts with bearer_token; set one of them",
                ));
            }
            let mut value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| invalid("bearer_token", "not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .default_headers(headers)
            .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()?;
        Ok(HttpTarget::Real { client, url })
    }

    /// The URL without credentials, for logs.
    fn display_url(&self) -> String {
        match self {
            HttpTarget::Real { url, .. } => {
                let mut url = url.clone();
                let _ = url.set_password(None);
                url.to_string()
            }
            #[cfg(test)]
            HttpTarget::Mock(_) => "mock".into(),
        }
    }

    /// POSTs a JSON body; Ok on 2xx.
    async fn post(&self, body: Vec<u8>) -> Result<(), PostError> {
        match self {
            HttpTarget::Real { client, url } => {
                let resp = client
                    .post(url.clone())
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| PostError::Transport(error_chain(&e.without_url())))?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(PostError::Status(resp.status().as_u16()))
                }
            }
            #[cfg(test)]
            HttpTarget::Mock(mock) => mock.post(body).await,
        }
    }
}

/// `e: cause: cause`, as reqwest's top-level message hides the cause.
fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// RFC 3339 with milliseconds, UTC, from epoch milliseconds (negative clamps to 1970).
fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + StdDuration::from_millis(ms.max(0).unsigned_abs());
    humantime::format_rfc3339_millis(t).to_string()
}

/// `{generator_url}/#/alerts?fingerprint={hex}`.
fn generator_link(base: &str, fingerprint: u64) -> String {
    format!(
        "{}/#/alerts?fingerprint={fingerprint:016x}",
        base.trim_end_matches('/')
    )
}

/// Resolves when `shutdown` turns true or its sender is dropped.
async fn shutdown_signal(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// Wall-clock milliseconds; tests run on tokio's paused clock from a fixed origin.
#[derive(Debug, Clone, Copy)]
enum Clock {
    System,
    #[cfg(test)]
    Virtual {
        origin_ms: i64,
        start: tokio::time::Instant,
    },
}

impl Clock {
    fn now_ms(self) -> i64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            #[cfg(test)]
            Clock::Virtual { origin_ms, start } => {
                origin_ms + i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
            }
        }
    }
}

#[cfg(test)]
mod testutil {
    //! A scripted HTTP endpoint and alert-event builders for the sinks' unit tests.

    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use tokio::sync::mpsc;
    use tokio::time::Instant;
    use vigil_engine::lifecycle::AlertState;
    use vigil_engine::Labels;

    use super::*;

    /// Test wall clock origin: 2026-01-01T00:00:00Z.
    pub(super) const T0: i64 = 1_767_225_600_000;

    /// A virtual clock reading [`T0`] now.
    pub(super) fn clock() -> Clock {
        Clock::Virtual {
            origin_ms: T0,
            start: Instant::now(),
        }
    }

    /// Answers POSTs from a script of statuses (then 200): `0` is a connect error,
    /// `u16::MAX` never answers. Each body is reported with the virtual ms it came at.
    #[derive(Debug)]
    pub(super) struct Mock {
        script: Mutex<VecDeque<u16>>,
        tx: mpsc::UnboundedSender<(u64, serde_json::Value)>,
        start: Instant,
    }

    impl Mock {
        pub(super) async fn post(&self, body: Vec<u8>) -> Result<(), PostError> {
            let at = u64::try_from(self.start.elapsed().as_millis()).unwrap();
            let _ = self.tx.send((at, serde_json::from_slice(&body).unwrap()));
            let status = self.script.lock().unwrap().pop_front().unwrap_or(200);
            match status {
                200..=299 => Ok(()),
                0 => Err(PostError::Transport("connection refused".into())),
                u16::MAX => std::future::pending().await,
                s => Err(PostError::Status(s)),
            }
        }
    }

    /// A mock target and the receiver of what it is sent.
    pub(super) fn mock(
        script: &[u16],
    ) -> (
        Arc<HttpTarget>,
        mpsc::UnboundedReceiver<(u64, serde_json::Value)>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mock = Mock {
            script: Mutex::new(script.iter().copied().collect()),
            tx,
            start: Instant::now(),
        };
        (Arc::new(HttpTarget::Mock(mock)), rx)
    }

    pub(super) fn ctx() -> SinkContext {
        SinkContext {
            generator_url: "http://vigil:9898/".into(),
            eval_interval: StdDuration::from_secs(10),
        }
    }

    pub(super) fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// An alert event of `NodeDown{node}` at `ts`, active since `T0 - 60s`.
    pub(super) fn event(state: AlertState, node: &str, ts: i64) -> AlertEvent {
        let labels = labels(&[
            ("alertname", "NodeDown"),
            ("node", node),
            ("severity", "critical"),
        ]);
        AlertEvent {
            ts,
            rule: "NodeDown".into(),
            state,
            fingerprint: vigil_engine::labels::fingerprint(&vigil_engine::labels::encode(&labels)),
            labels,
            annotations: self::labels(&[("summary", &format!("{node} is down"))]),
            value: 1.0,
            score: 1.0,
            active_at: T0 - 60_000,
            flapping: false,
            notify: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_links() {
        assert_eq!(rfc3339(testutil::T0), "2026-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            generator_link("http://v:1/", 0xab),
            "http://v:1/#/alerts?fingerprint=00000000000000ab"
        );
    }

    #[test]
    fn bearer_token_env_overrides_config() {
        let secret = Secret("from-config".into());
        let cfg = Some(&secret);
        let env = |v: &str| (v == "TOKEN").then(|| " from-env\n".to_string());
        let got = |token, var| resolve_token("t", token, var, env);
        assert_eq!(got(cfg, Some("TOKEN")).unwrap().unwrap(), "from-env");
        assert_eq!(got(cfg, Some("UNSET")).unwrap().unwrap(), "from-config");
        assert_eq!(got(None, None).unwrap(), None);
        assert!(matches!(
            got(None, Some("UNSET")),
            Err(SinkError::MissingBearerToken { var }) if var == "UNSET"
        ));
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }

    #[test]
    fn http_settings_are_validated() {
        let headers = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let token = Secret("t".into());
        let build_at =
            |url: &str, path, h: BTreeMap<String, String>, tok: Option<&Secret>, secs| {
                HttpTarget::new(
                    &HttpSettings {
                        sink: "t",
                        url,
                        headers: &h,
                        bearer_token: tok,
                        bearer_token_env: None,
                        timeout: vigil_engine::Duration::from_secs(secs),
                    },
                    path,
                )
                .map(|t| t.display_url())
                .map_err(|e| e.to_string())
            };
        let build = |url: &str, h: BTreeMap<String, String>, tok: Option<&Secret>, secs| {
            build_at(url, "/api/v2/alerts", h, tok, secs)
        };
        assert_eq!(
            build("http://u:pw@am:9093/", headers(&[]), Some(&token), 1).unwrap(),
            "http://u@am:9093/api/v2/alerts"
        );
        assert_eq!(
            build_at("http://hook/in/", "", headers(&[]), None, 1).unwrap(),
            "http://hook/in/"
        );
        assert!(build("ftp://am", headers(&[]), None, 1)
            .unwrap_err()
            .starts_with("url:"));
        assert!(build("not a url", headers(&[]), None, 1)
            .unwrap_err()
            .starts_with("url:"));
        assert!(build("http://am", headers(&[]), None, 0)
            .unwrap_err()
            .starts_with("timeout:"));
        assert!(build("http://am", headers(&[("bad name", "v")]), None, 1)
            .unwrap_err()
            .starts_with("headers.bad name:"));
        assert!(build(
            "http://am",
            headers(&[("authorization", "x")]),
            Some(&token),
            1
        )
        .unwrap_err()
        .starts_with("headers.Authorization:"));
    }
}
