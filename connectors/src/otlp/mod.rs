//! OTLP metrics receivers: gRPC `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`
//! (default `127.0.0.1:4317`) and HTTP `POST /v1/metrics` (default `127.0.0.1:4318`,
//! `application/x-protobuf` and `application/json`, gzip), with the OTLP response
//! semantics: partial success with rejected data point counts, `400` for undecodable
//! bodies, `413` over the size limit, `429` / `RESOURCE_EXHAUSTED` with a retry delay
//! when the engine's intake queue is full; optional bearer-token auth and TLS on both.
//!
//! The work is split so that the engine task does as little as possible:
//!
//! 1. on the receiving task (one per connection), the request is decoded and
//!    [`prepare`]d: metric names are normalised to the Prometheus charset, non-string
//!    attribute values become strings, invalid points are dropped and counted, and the
//!    per-request point limit applies — all in place, in the decoded request;
//! 2. the prepared request travels, boxed, through the engine's bounded intake queue as
//!    an [`OtlpBatch`] ([`Intake::try_send`]: a full queue is answered with a retry
//!    delay, never buffered);
//! 3. on the engine task, a [`Mapper`] turns it into samples, interning borrowed
//!    `&str` label pairs straight into the engine's series registry.
//!
//! The mapping (metric types, labels, special values) is documented in the crate README.

mod grpc;
mod http;
mod mapper;
mod prepare;
mod server;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vigil_engine::Duration;

pub use mapper::{normalize_metric_name, MapSummary, Mapper, MappingConfig, ALIASES, SCOPE_LABEL};
#[doc(no_inline)]
pub use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
pub use prepare::{prepare, Limits, Prepared};

/// The generated OTLP types (`opentelemetry-proto`), for building requests.
pub use opentelemetry_proto as proto;

/// Config of the OTLP receivers (`otlp:` in `vigil run`'s config file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Run the receivers (default `true`).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// gRPC listen address; `null` turns gRPC off (default `127.0.0.1:4317`).
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: Option<SocketAddr>,
    /// HTTP listen address; `null` turns HTTP off (default `127.0.0.1:4318`).
    #[serde(default = "default_http_listen")]
    pub http_listen: Option<SocketAddr>,
    /// Largest request body, in bytes, compressed and again after decompression
    /// (default 67108864 = 64 MiB, the OTLP recommendation).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Data points accepted from one request; the rest are rejected as a partial
    /// success (default 100000).
    #[serde(default = "default_max_points")]
    pub max_points_per_request: usize,
    /// Delay a client is told to wait when the intake queue is full: HTTP
    /// `Retry-After` (whole seconds, at least 1) and gRPC `RetryInfo` (default `1s`).
    #[serde(default = "default_retry_after")]
    pub retry_after: Duration,
    /// Required `Authorization: Bearer …` token on both listeners (default none: no
    /// auth). Requests without it get `401` / `UNAUTHENTICATED`.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Environment variable holding the token; when set and non-empty it overrides
    /// `bearer_token` (default none).
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// Serve both listeners over TLS (default none: plaintext).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How OTLP data becomes samples.
    #[serde(default)]
    pub mapping: MappingConfig,
}

/// TLS for both listeners: a certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

fn default_enabled() -> bool {
    true
}

fn default_grpc_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 4317)))
}

fn default_http_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 4318)))
}

fn default_max_request_bytes() -> usize {
    64 << 20
}

fn default_max_points() -> usize {
    100_000
}

fn default_retry_after() -> Duration {
    Duration::from_secs(1)
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            enabled: default_enabled(),
            grpc_listen: default_grpc_listen(),
            http_listen: default_http_listen(),
            max_request_bytes: default_max_request_bytes(),
            max_points_per_request: default_max_points(),
            retry_after: default_retry_after(),
            bearer_token: None,
            bearer_token_env: None,
            tls: None,
            mapping: MappingConfig::default(),
        }
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

/// Why the receivers could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// A field has a bad value.
    #[error("otlp.{field}: {reason}")]
    Invalid {
        /// The field, e.g. `max_request_bytes`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `bearer_token_env` names an unset variable and there is no `bearer_token`.
    #[error("otlp.bearer_token_env: environment variable {var} is not set and no bearer_token is configured")]
    MissingBearerToken {
        /// The variable.
        var: String,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("otlp.tls: {0}")]
    Tls(String),
    /// A listener could not bind.
    #[error("OTLP {protocol} receiver cannot listen on {addr}: {source}")]
    Bind {
        /// `grpc` or `http`.
        protocol: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

fn invalid(field: &str, reason: impl fmt::Display) -> OtlpError {
    OtlpError::Invalid {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// A decoded, [`prepare`]d export request on its way to the engine task.
#[derive(Debug)]
pub struct OtlpBatch {
    /// The request, normalised in place by [`prepare`].
    pub request: Box<ExportMetricsServiceRequest>,
    /// Wall-clock receive time, ms since the epoch: the timestamp of points without one.
    pub received_ms: i64,
    /// When the request started to arrive, for the receive-to-decision latency.
    pub received_at: Instant,
    /// Data points in the request (after preparation).
    pub points: u64,
    /// Which listener it came through.
    pub protocol: Protocol,
}

/// Why [`Intake::try_send`] did not take a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// The queue is full: the client should retry later.
    #[error("the intake queue is full")]
    Full,
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Closed,
}

/// Where prepared batches go: the engine's bounded intake queue. `try_send` must not
/// block or buffer without bound; a full queue is reported as [`IntakeError::Full`].
pub trait Intake: Send + Sync + 'static {
    /// Queues `batch` if there is room.
    fn try_send(&self, batch: OtlpBatch) -> Result<(), IntakeError>;
}

/// Which listener a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP.
    Http,
}

impl Protocol {
    /// `grpc` or `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Every data point accepted.
    Success,
    /// Accepted with some data points rejected (partial success).
    Partial,
    /// Undecodable body or invalid request (`400` / `INVALID_ARGUMENT`).
    BadRequest,
    /// Over `max_request_bytes` (`413` / `RESOURCE_EXHAUSTED` from the gRPC codec).
    TooLarge,
    /// Missing or wrong bearer token (`401` / `UNAUTHENTICATED`).
    Unauthorized,
    /// Content type or encoding not supported (`415`), or not found (`404`/`405`).
    Unsupported,
    /// The intake queue was full (`429` / `RESOURCE_EXHAUSTED` with a retry delay).
    IntakeFull,
    /// The engine has stopped (`503` / `UNAVAILABLE`).
    Unavailable,
}

impl Outcome {
    /// Every outcome, in the order of [`OtlpStats`]' counters.
    pub const ALL: [Outcome; 8] = [
        Outcome::Success,
        Outcome::Partial,
        Outcome::BadRequest,
        Outcome::TooLarge,
        Outcome::Unauthorized,
        Outcome::Unsupported,
        Outcome::IntakeFull,
        Outcome::Unavailable,
    ];

    /// The label value in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::BadRequest => "bad_request",
            Outcome::TooLarge => "too_large",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Unsupported => "unsupported",
            Outcome::IntakeFull => "intake_full",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// Why data points were rejected (not turned into samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Malformed point: no value, bucket counts that do not match the bounds, an
    /// unspecified temporality, a metric without a name or data, …
    Invalid,
    /// Beyond `max_points_per_request`.
    TooMany,
    /// The whole request was refused because the intake queue was full.
    IntakeFull,
    /// A new delta series while `mapping.max_delta_series` accumulators are live.
    DeltaStateFull,
}

impl Rejection {
    /// Every reason, in the order of [`OtlpStats`]' counters.
    pub const ALL: [Rejection; 4] = [
        Rejection::Invalid,
        Rejection::TooMany,
        Rejection::IntakeFull,
        Rejection::DeltaStateFull,
    ];

    /// The label value in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Invalid => "invalid",
            Rejection::TooMany => "too_many_points",
            Rejection::IntakeFull => "intake_full",
            Rejection::DeltaStateFull => "delta_state_full",
        }
    }
}

/// Accepted data points with a special value or time, each with defined behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flagged {
    /// `time_unix_nano` was 0: the receive time was used.
    MissingTimestamp,
    /// The no-recorded-value flag: mapped to the staleness marker.
    NoRecordedValue,
    /// NaN or ±Inf value: passed on, dropped and counted by the engine.
    NonFinite,
}

impl Flagged {
    /// Every kind, in the order of [`OtlpStats`]' counters.
    pub const ALL: [Flagged; 3] = [
        Flagged::MissingTimestamp,
        Flagged::NoRecordedValue,
        Flagged::NonFinite,
    ];

    /// The label value in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Flagged::MissingTimestamp => "missing_timestamp",
            Flagged::NoRecordedValue => "no_recorded_value",
            Flagged::NonFinite => "non_finite",
        }
    }
}

/// Counters of the receivers and the mapper, shared with whoever serves `/metrics`.
#[derive(Debug, Default)]
pub struct OtlpStats {
    requests: [[AtomicU64; Outcome::ALL.len()]; 2],
    points_received: [AtomicU64; 2],
    rejected: [AtomicU64; Rejection::ALL.len()],
    flagged: [AtomicU64; Flagged::ALL.len()],
    samples: AtomicU64,
    delta_series: AtomicU64,
}

/// A plain copy of [`OtlpStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpStatsSnapshot {
    /// Requests by protocol and outcome (every pair, zeros included).
    pub requests: Vec<(Protocol, Outcome, u64)>,
    /// Data points in decoded requests, by protocol.
    pub points_received: Vec<(Protocol, u64)>,
    /// Data points rejected, by reason.
    pub rejected: Vec<(Rejection, u64)>,
    /// Accepted data points with a special value or time.
    pub flagged: Vec<(Flagged, u64)>,
    /// Samples the mapper produced.
    pub samples: u64,
    /// Live delta-to-cumulative accumulators.
    pub delta_series: u64,
}

fn proto_index(p: Protocol) -> usize {
    match p {
        Protocol::Grpc => 0,
        Protocol::Http => 1,
    }
}

impl OtlpStats {
    /// Counts a finished request.
    pub fn request(&self, protocol: Protocol, outcome: Outcome) {
        let i = Outcome::ALL.iter().position(|&o| o == outcome).unwrap_or(0);
        self.requests[proto_index(protocol)][i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts decoded data points.
    pub fn received(&self, protocol: Protocol, n: u64) {
        self.points_received[proto_index(protocol)].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts rejected data points.
    pub fn reject(&self, reason: Rejection, n: u64) {
        if n > 0 {
            let i = Rejection::ALL
                .iter()
                .position(|&r| r == reason)
                .unwrap_or(0);
            self.rejected[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts flagged data points.
    pub fn flag(&self, kind: Flagged, n: u64) {
        if n > 0 {
            let i = Flagged::ALL.iter().position(|&f| f == kind).unwrap_or(0);
            self.flagged[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Data points rejected for `reason` so far.
    pub fn rejected(&self, reason: Rejection) -> u64 {
        let i = Rejection::ALL
            .iter()
            .position(|&r| r == reason)
            .unwrap_or(0);
        self.rejected[i].load(Ordering::Relaxed)
    }

    fn samples(&self, n: u64) {
        self.samples.fetch_add(n, Ordering::Relaxed);
    }

    fn set_delta_series(&self, n: usize) {
        self.delta_series.store(n as u64, Ordering::Relaxed);
    }

    /// Reads every counter (each atomically, not all at one instant).
    pub fn snapshot(&self) -> OtlpStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let protocols = [Protocol::Grpc, Protocol::Http];
        OtlpStatsSnapshot {
            requests: protocols
                .iter()
                .flat_map(|&p| {
                    Outcome::ALL
                        .iter()
                        .enumerate()
                        .map(move |(i, &o)| (p, o, i))
                })
                .map(|(p, o, i)| (p, o, get(&self.requests[proto_index(p)][i])))
                .collect(),
            points_received: protocols
                .iter()
                .map(|&p| (p, get(&self.points_received[proto_index(p)])))
                .collect(),
            rejected: Rejection::ALL
                .iter()
                .zip(&self.rejected)
                .map(|(&r, c)| (r, get(c)))
                .collect(),
            flagged: Flagged::ALL
                .iter()
                .zip(&self.flagged)
                .map(|(&f, c)| (f, get(c)))
                .collect(),
            samples: get(&self.samples),
            delta_series: get(&self.delta_series),
        }
    }
}

/// Wall-clock milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What the request handlers of both listeners share.
pub(crate) struct Shared {
    pub(crate) intake: Arc<dyn Intake>,
    pub(crate) stats: Arc<OtlpStats>,
    pub(crate) limits: Limits,
    pub(crate) max_request_bytes: usize,
    pub(crate) retry_after: StdDuration,
    /// `Bearer <token>`, when auth is on.
    pub(crate) auth: Option<Box<[u8]>>,
}

impl Shared {
    /// Whether an `Authorization` header value passes (always, without auth).
    pub(crate) fn authorized(&self, header: Option<&[u8]>) -> bool {
        let Some(want) = &self.auth else {
            return true;
        };
        let Some(got) = header else {
            return false;
        };
        // Constant time in the token's content (the length is not secret).
        got.len() == want.len()
            && got
                .iter()
                .zip(want.iter())
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0
    }

    /// Prepares a decoded request and queues it; the response, or why not.
    pub(crate) fn submit(
        &self,
        mut request: ExportMetricsServiceRequest,
        received_at: Instant,
        protocol: Protocol,
    ) -> Result<ExportMetricsServiceResponse, IntakeError> {
        let p = prepare(&mut request, &self.limits);
        self.stats.received(protocol, p.received);
        self.stats.reject(Rejection::Invalid, p.invalid);
        self.stats.reject(Rejection::TooMany, p.too_many);
        self.stats
            .flag(Flagged::MissingTimestamp, p.missing_timestamp);
        self.stats
            .flag(Flagged::NoRecordedValue, p.no_recorded_value);
        self.stats.flag(Flagged::NonFinite, p.non_finite);
        if p.accepted > 0 {
            let batch = OtlpBatch {
                request: Box::new(request),
                received_ms: now_ms(),
                received_at,
                points: p.accepted,
                protocol,
            };
            if let Err(e) = self.intake.try_send(batch) {
                self.stats.reject(Rejection::IntakeFull, p.accepted);
                return Err(e);
            }
        }
        let rejected = p.invalid + p.too_many;
        let partial_success =
            (rejected > 0 || !p.message.is_empty()).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
                error_message: p.message.clone(),
            });
        self.stats.request(
            protocol,
            if rejected > 0 {
                Outcome::Partial
            } else {
                Outcome::Success
            },
        );
        Ok(ExportMetricsServiceResponse { partial_success })
    }
}

impl OtlpConfig {
    /// Validates the config, resolves the token and loads the TLS material.
    pub fn build(self) -> Result<OtlpReceiver, OtlpError> {
        self.build_with_env(|v| std::env::var(v).ok())
    }

    fn build_with_env(
        self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<OtlpReceiver, OtlpError> {
        if self.max_request_bytes == 0 {
            return Err(invalid("max_request_bytes", "must be greater than 0"));
        }
        if self.max_points_per_request == 0 {
            return Err(invalid("max_points_per_request", "must be greater than 0"));
        }
        self.mapping.validate()?;
        let token = match &self.bearer_token_env {
            Some(var) => match lookup(var).map(|v| v.trim().to_string()) {
                Some(v) if !v.is_empty() => {
                    tracing::info!(var = %var, "OTLP bearer token taken from the environment");
                    Some(v)
                }
                _ => match &self.bearer_token {
                    Some(t) => Some(t.0.clone()),
                    None => return Err(OtlpError::MissingBearerToken { var: var.clone() }),
                },
            },
            None => self.bearer_token.as_ref().map(|t| t.0.clone()),
        };
        if token.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("bearer_token", "must not be empty"));
        }
        let tls = self.tls.as_ref().map(server::tls_acceptor).transpose()?;
        let retry_after = StdDuration::from_millis(self.retry_after.as_millis().unsigned_abs())
            .max(StdDuration::from_secs(1));
        Ok(OtlpReceiver {
            optional: [false; 2],
            stats: Arc::new(OtlpStats::default()),
            auth: token.map(|t| format!("Bearer {t}").into_bytes().into_boxed_slice()),
            tls,
            retry_after,
            config: self,
        })
    }
}

/// The validated receivers, ready to [`start`](OtlpReceiver::start).
pub struct OtlpReceiver {
    config: OtlpConfig,
    /// gRPC, HTTP: a bind failure is logged and the listener stays off.
    optional: [bool; 2],
    stats: Arc<OtlpStats>,
    auth: Option<Box<[u8]>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    retry_after: StdDuration,
}

impl fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("config", &self.config)
            .field("auth", &self.auth.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The running receivers.
#[derive(Debug)]
pub struct OtlpServers {
    /// Where gRPC listens (None: off).
    pub grpc_addr: Option<SocketAddr>,
    /// Where HTTP listens (None: off).
    pub http_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl OtlpServers {
    /// Waits until both listeners have stopped (after shutdown was signalled, open
    /// connections finish their requests, for at most 10 s).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

impl OtlpReceiver {
    /// Counters, for `/metrics` (share them with the engine task's [`Mapper`]).
    pub fn stats(&self) -> Arc<OtlpStats> {
        Arc::clone(&self.stats)
    }

    /// The config it was built from.
    pub fn config(&self) -> &OtlpConfig {
        &self.config
    }

    /// Makes a listener optional: when its address cannot be bound (say, a local
    /// Collector already holds the default port), [`start`](Self::start) logs an error
    /// and leaves that listener off instead of failing.
    pub fn optional_listeners(mut self, grpc: bool, http: bool) -> Self {
        self.optional = [grpc, http];
        self
    }

    /// Binds the listeners and serves them until `shutdown` turns true (or its sender
    /// is dropped). Binding errors are returned at once.
    pub async fn start(
        self,
        intake: Arc<dyn Intake>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<OtlpServers, OtlpError> {
        let shared = Arc::new(Shared {
            intake,
            stats: Arc::clone(&self.stats),
            limits: Limits {
                max_points: self.config.max_points_per_request,
            },
            max_request_bytes: self.config.max_request_bytes,
            retry_after: self.retry_after,
            auth: self.auth,
        });
        let mut out = OtlpServers {
            grpc_addr: None,
            http_addr: None,
            tasks: Vec::new(),
        };
        if !self.config.enabled {
            return Ok(out);
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        if let Some((listener, local)) =
            bind("grpc", self.config.grpc_listen, self.optional[0]).await?
        {
            out.grpc_addr = Some(local);
            let svc = grpc::service(Arc::clone(&shared));
            tracing::info!(listen = %local, scheme, "OTLP/gRPC receiver listening");
            out.tasks.push(tokio::spawn(server::serve(
                listener,
                self.tls.clone(),
                svc,
                shutdown.clone(),
                "grpc",
            )));
        }
        if let Some((listener, local)) =
            bind("http", self.config.http_listen, self.optional[1]).await?
        {
            out.http_addr = Some(local);
            let svc = http::router(Arc::clone(&shared));
            tracing::info!(listen = %local, scheme, "OTLP/HTTP receiver listening on /v1/metrics");
            out.tasks.push(tokio::spawn(server::serve(
                listener,
                self.tls.clone(),
                svc,
                shutdown.clone(),
                "http",
            )));
        }
        Ok(out)
    }
}

/// Binds `addr` (None: off). An optional listener's failure is logged and yields None.
async fn bind(
    protocol: &'static str,
    addr: Option<SocketAddr>,
    optional: bool,
) -> Result<Option<(tokio::net::TcpListener, SocketAddr)>, OtlpError> {
    let Some(addr) = addr else { return Ok(None) };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            let local = l.local_addr().unwrap_or(addr);
            Ok(Some((l, local)))
        }
        Err(source) if optional => {
            tracing::error!(
                protocol,
                %addr,
                error = %source,
                "OTLP receiver cannot listen on its default address; it stays off (set otlp.{protocol}_listen or --otlp-{protocol} to choose another)"
            );
            Ok(None)
        }
        Err(source) => Err(OtlpError::Bind {
            protocol,
            addr,
            source,
        }),
    }
}
