//! The `vigil run` configuration file (YAML, strict) with its documented defaults.
//! Every field is optional; `vigil run` with no file runs on these defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;
use vigil_connectors::otlp::OtlpConfig;
use vigil_connectors::sinks::{AlertmanagerConfig, StdoutConfig, WebhookConfig};
use vigil_engine::Duration;

/// Root of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Rule files or directories (default `./rules`).
    #[serde(default = "default_rules")]
    pub(crate) rules: Vec<PathBuf>,
    /// Where checkpoints are written (default `./.vigil`).
    #[serde(default = "default_state_dir")]
    pub(crate) state_dir: PathBuf,
    /// HTTP API and UI.
    #[serde(default)]
    pub(crate) http: HttpConfig,
    /// Event-time engine settings.
    #[serde(default)]
    pub(crate) engine: EngineConfig,
    /// Checkpoint settings.
    #[serde(default)]
    pub(crate) checkpoint: CheckpointConfig,
    /// OTLP metrics receivers (gRPC 127.0.0.1:4317, HTTP 127.0.0.1:4318, on by
    /// default; every field is documented in the connectors README).
    #[serde(default)]
    pub(crate) otlp: OtlpConfig,
    /// Where alerts go.
    #[serde(default)]
    pub(crate) sinks: SinksConfig,
    /// Action intents.
    #[serde(default)]
    pub(crate) actuator: ActuatorConfig,
    /// Logs and traces of Vigil itself.
    #[serde(default)]
    pub(crate) telemetry: TelemetryConfig,
    /// Recording of everything the engine ingests to Parquet files (off by default).
    #[serde(default)]
    pub(crate) record: RecordConfig,
    /// Whether `otlp.grpc_listen` / `otlp.http_listen` were set (in the file or by
    /// flag) rather than left at their defaults: only those must bind.
    #[serde(skip)]
    pub(crate) otlp_listen_explicit: [bool; 2],
}

fn default_rules() -> Vec<PathBuf> {
    vec![PathBuf::from("rules")]
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".vigil")
}

/// `http:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpConfig {
    /// Listen address of the API and UI (default 127.0.0.1:9898).
    #[serde(default = "default_listen")]
    pub(crate) listen: SocketAddr,
    /// URL under which users reach this instance, used in alert links (default
    /// `http://<listen>`).
    #[serde(default)]
    pub(crate) external_url: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9898))
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            external_url: None,
        }
    }
}

/// `engine:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EngineConfig {
    /// How late a sample may arrive (behind the newest) and still be evaluated
    /// (default 10s). Later samples are dropped and counted.
    #[serde(default = "default_lateness")]
    pub(crate) lateness: Duration,
    /// After this long without any sample, the watermark follows the wall clock (minus
    /// `lateness`) so absence rules fire when everything goes quiet (default 30s).
    #[serde(default = "default_idle")]
    pub(crate) idle_advance: Duration,
    /// Capacity of the intake queue in batches; a full queue pushes back on sources
    /// (default 64).
    #[serde(default = "default_queue")]
    pub(crate) intake_queue: usize,
}

fn default_lateness() -> Duration {
    Duration::from_secs(10)
}
fn default_idle() -> Duration {
    Duration::from_secs(30)
}
const fn default_queue() -> usize {
    64
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lateness: default_lateness(),
            idle_advance: default_idle(),
            intake_queue: default_queue(),
        }
    }
}

/// `checkpoint:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckpointConfig {
    /// Period of checkpoints; also written on shutdown (default 30s).
    #[serde(default = "default_checkpoint_interval")]
    pub(crate) interval: Duration,
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(30)
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval: default_checkpoint_interval(),
        }
    }
}

/// `sinks:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SinksConfig {
    /// Print every alert transition as a JSON line on stdout (default on).
    #[serde(default = "default_stdout")]
    pub(crate) stdout: Option<StdoutConfig>,
    /// Alertmanager instances (API v2).
    #[serde(default)]
    pub(crate) alertmanager: Vec<AlertmanagerConfig>,
    /// Generic JSON webhooks.
    #[serde(default)]
    pub(crate) webhook: Vec<WebhookConfig>,
}

fn default_stdout() -> Option<StdoutConfig> {
    Some(StdoutConfig::default())
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            stdout: default_stdout(),
            alertmanager: Vec::new(),
            webhook: Vec::new(),
        }
    }
}

/// `actuator:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActuatorConfig {
    /// `dry-run` (default): intents are logged and counted, nothing is changed.
    #[serde(default)]
    pub(crate) mode: ActuatorMode,
}

/// What the actuator does with intents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ActuatorMode {
    /// Log and count only.
    #[default]
    DryRun,
}

/// `record:`: write every sample the engine ingests (OTLP, `/api/v1/import`, the demo)
/// to Parquet files that `vigil replay` reads, off the engine's hot path.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordConfig {
    /// Directory of the Parquet files (created if needed); `null` (default): no
    /// recording. `--record DIR` sets it.
    #[serde(default)]
    pub(crate) dir: Option<PathBuf>,
    /// Start a new file past this many bytes (default 268435456 = 256 MiB, as
    /// `vigil record --max-bytes`).
    #[serde(default = "default_record_max_bytes")]
    pub(crate) max_bytes: u64,
    /// Start a new file after this much event time, and after this long on the wall
    /// clock since the file was opened, so a quiet or live recording still completes
    /// its files (default `1h`, as `vigil record --max-age`).
    #[serde(default = "default_record_max_age")]
    pub(crate) max_age: Duration,
    /// Batches waiting for the writer; when it is full, new batches are dropped and
    /// counted in `vigil_record_dropped_samples_total` (default 1024). Intake never
    /// waits for the recording.
    #[serde(default = "default_record_queue")]
    pub(crate) queue: usize,
}

const fn default_record_max_bytes() -> u64 {
    256 << 20
}
fn default_record_max_age() -> Duration {
    Duration::from_secs(3600)
}
const fn default_record_queue() -> usize {
    1024
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            dir: None,
            max_bytes: default_record_max_bytes(),
            max_age: default_record_max_age(),
            queue: default_record_queue(),
        }
    }
}

/// `telemetry:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TelemetryConfig {
    /// `text` (default) or `json` logs.
    #[serde(default)]
    pub(crate) log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax (default `info`); `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub(crate) log_level: String,
    /// OTLP/HTTP endpoint that receives Vigil's own traces (batch → detect →
    /// dispatch), e.g. `http://otel-collector:4318` (default none: no traces).
    #[serde(default)]
    pub(crate) otlp_endpoint: Option<String>,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::default(),
            log_level: default_log_level(),
            otlp_endpoint: None,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

impl Config {
    /// Loads `path`, or the defaults when None.
    pub(crate) fn load(path: Option<&std::path::Path>) -> Result<Config> {
        let Some(path) = path else {
            return Ok(serde_yaml::from_str("{}")?);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Parses config text.
    pub(crate) fn parse(text: &str) -> Result<Config> {
        let de = serde_yaml::Deserializer::from_str(text);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("{path}: {}", e.into_inner())
        })?;
        let raw: serde_yaml::Value = serde_yaml::from_str(text)?;
        let set = |key: &str| raw.get("otlp").and_then(|o| o.get(key)).is_some();
        config.otlp_listen_explicit = [set("grpc_listen"), set("http_listen")];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9898");
        assert_eq!(c.rules, vec![PathBuf::from("rules")]);
        assert!(c.sinks.stdout.is_some());
        assert_eq!(c.actuator.mode, ActuatorMode::DryRun);
        assert_eq!(c.engine.lateness, Duration::from_secs(10));
        assert!(c.otlp.enabled);
        assert_eq!(c.otlp.grpc_listen.unwrap().to_string(), "127.0.0.1:4317");
        assert_eq!(c.otlp.http_listen.unwrap().to_string(), "127.0.0.1:4318");
        assert_eq!(c.otlp.max_request_bytes, 64 << 20);
        assert_eq!(c.record.dir, None);
        assert_eq!(c.record.max_bytes, 256 << 20);
        assert_eq!(c.record.max_age, Duration::from_secs(3600));
        assert_eq!(c.record.queue, 1024);
    }

    #[test]
    fn record_section_is_strict() {
        let c = Config::parse("record:\n  dir: rec\n  max_bytes: 1000\n  max_age: 5m\n").unwrap();
        assert_eq!(c.record.dir, Some(PathBuf::from("rec")));
        assert_eq!(c.record.max_bytes, 1000);
        assert_eq!(c.record.max_age, Duration::from_secs(300));
        let err = Config::parse("record:\n  directory: rec\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("record") && err.contains("unknown field `directory`"),
            "{err}"
        );
    }

    #[test]
    fn otlp_section_is_strict_and_listeners_can_be_turned_off() {
        let c =
            Config::parse("otlp:\n  grpc_listen: null\n  http_listen: 0.0.0.0:14318\n").unwrap();
        assert!(c.otlp.grpc_listen.is_none());
        assert_eq!(c.otlp.http_listen.unwrap().port(), 14318);
        let err = Config::parse("otlp:\n  grpc: 1\n").unwrap_err().to_string();
        assert!(
            err.contains("otlp") && err.contains("unknown field `grpc`"),
            "{err}"
        );
    }

    #[test]
    fn annotated_example_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/vigil.yaml");
        let c = Config::load(Some(std::path::Path::new(path))).unwrap();
        assert_eq!(c.sinks.alertmanager.len(), 1);
        assert_eq!(c.sinks.webhook.len(), 1);
        assert_eq!(
            c.otlp,
            vigil_connectors::otlp::OtlpConfig::default(),
            "the example shows the OTLP defaults"
        );
        assert_eq!(
            c.record,
            RecordConfig::default(),
            "the example shows the record defaults"
        );
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        let err = Config::parse("http:\n  listn: 0.0.0.0:1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `listn`"), "{err}");
    }
}
