//! The receivers themselves (feature `otlp`): config validation, the listeners, and
//! what their request handlers share.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    grpc, http, invalid, prepare, server, ExportMetricsPartialSuccess, ExportMetricsServiceRequest,
    ExportMetricsServiceResponse, Flagged, Intake, IntakeError, Limits, OtlpBatch, OtlpConfig,
    OtlpError, OtlpStats, Outcome, Protocol, Rejection,
};
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

    pub(super) fn build_with_env(
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
    pub(super) auth: Option<Box<[u8]>>,
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
