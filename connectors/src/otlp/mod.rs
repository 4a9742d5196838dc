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

#[cfg(feature = "otlp")]
mod grpc;
#[cfg(feature = "otlp")]
mod http;
mod mapper;
mod prepare;
#[cfg(feature = "otlp")]
mod receiver;
#[cfg(feature = "otlp")]
mod server;
#[cfg(all(test, feature = "otlp"))]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use vigil_engine::Duration;

#[cfg(feature = "otlp")]
pub(crate) use receiver::Shared;
#[cfg(feature = "otlp")]
pub use receiver::{OtlpReceiver, OtlpServers};

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

#[cfg_attr(not(feature = "otlp"), allow(dead_code))]
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
