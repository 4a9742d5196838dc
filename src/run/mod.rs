//! `vigil run`: the long-running service. Wires the engine task, the alert sinks, the
//! HTTP API and UI, rule hot reload, checkpoints, the recording of ingested samples
//! (`--record`, [`record`]) and (with `--demo`) a bundled incident recording; shuts down
//! gracefully on SIGTERM/SIGINT.

mod api;
mod checkpoint;
pub(crate) mod config;
mod demo;
mod engine;
mod metrics;
mod reclaim;
mod record;
mod reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};
use vigil_connectors::otlp::{Intake, IntakeError, Mapper, OtlpBatch};
use vigil_connectors::sinks::{SinkContext, SinkStats};
use vigil_engine::EvaluatorConfig;

use config::{Config, LogFormat};
use engine::{Engine, EngineSettings};

/// Flags that override the config file.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Configuration file (YAML); without one, the documented defaults apply.
    #[arg(long, short = 'c')]
    pub(crate) config: Option<PathBuf>,
    /// Rule files or directories (repeatable; overrides `rules:`).
    #[arg(long = "rules")]
    pub(crate) rules: Vec<PathBuf>,
    /// HTTP listen address (overrides `http.listen`, default 127.0.0.1:9898).
    #[arg(long)]
    pub(crate) http: Option<SocketAddr>,
    /// State directory for checkpoints (overrides `state_dir`, default ./.vigil).
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
    /// Log format (overrides `telemetry.log_format`).
    #[arg(long, value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    /// OTLP/gRPC listen address (overrides `otlp.grpc_listen`, default 127.0.0.1:4317).
    #[arg(long, value_name = "ADDR")]
    pub(crate) otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP listen address (overrides `otlp.http_listen`, default 127.0.0.1:4318).
    #[arg(long, value_name = "ADDR")]
    pub(crate) otlp_http: Option<SocketAddr>,
    /// Record every ingested sample to Parquet files in DIR (overrides `record.dir`);
    /// `vigil replay DIR` replays them.
    #[arg(long, value_name = "DIR")]
    pub(crate) record: Option<PathBuf>,
    /// Feed the bundled node-avalanche incident recording through the live path.
    #[arg(long)]
    pub(crate) demo: bool,
    /// Playback speed of --demo, × real time (default 40: 40 minutes in one).
    #[arg(long, default_value_t = 40.0)]
    pub(crate) demo_speed: f64,
}

/// Process-wide flags the API reads.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Sources are started.
    pub(crate) sources_ready: AtomicBool,
    /// Data points (OTLP) refused because the intake queue was full.
    pub(crate) intake_full: AtomicU64,
}

/// The OTLP receivers' way into the engine: a non-blocking send on its bounded intake
/// queue; refusals are counted in [`Shared::intake_full`].
struct EngineIntake {
    engine: engine::EngineHandle,
    shared: Arc<Shared>,
}

impl Intake for EngineIntake {
    fn try_send(&self, batch: OtlpBatch) -> Result<(), IntakeError> {
        let points = batch.points;
        let result = self.engine.try_ingest_otlp(batch);
        if result == Err(IntakeError::Full) {
            self.shared
                .intake_full
                .fetch_add(points, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }
}

/// A sink's name and counters, for /metrics.
pub(crate) struct SinkMeter {
    pub(crate) name: String,
    pub(crate) stats: Arc<SinkStats>,
}

/// Runs the service until SIGTERM/SIGINT.
pub(crate) fn run(args: RunArgs) -> Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if !args.rules.is_empty() {
        config.rules = args.rules.clone();
    }
    if let Some(http) = args.http {
        config.http.listen = http;
    }
    if let Some(dir) = &args.state_dir {
        config.state_dir = dir.clone();
    }
    if let Some(f) = args.log_format {
        config.telemetry.log_format = f;
    }
    if let Some(a) = args.otlp_grpc {
        config.otlp.grpc_listen = Some(a);
        config.otlp_listen_explicit[0] = true;
    }
    if let Some(dir) = &args.record {
        config.record.dir = Some(dir.clone());
    }
    if let Some(a) = args.otlp_http {
        config.otlp.http_listen = Some(a);
        config.otlp_listen_explicit[1] = true;
    }
    let tracer = init_telemetry(&config)?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vigil")
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config, args));
    if let Some(provider) = tracer {
        if let Err(e) = provider.shutdown() {
            eprintln!("vigil: flushing traces failed: {e}");
        }
    }
    result
}

/// Logs (text or JSON, on stderr) and, when an OTLP endpoint is configured, traces.
fn init_telemetry(config: &Config) -> Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.telemetry.log_level))
        .context("invalid telemetry.log_level")?;
    let logs = match config.telemetry.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let Some(endpoint) = &config.telemetry.otlp_endpoint else {
        tracing_subscriber::registry()
            .with(filter)
            .with(logs)
            .init();
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .context("telemetry.otlp_endpoint: cannot build the OTLP exporter")?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("vigil")
                .build(),
        )
        .build();
    let traces = tracing_opentelemetry::layer().with_tracer(provider.tracer("vigil"));
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .init();
    info!(%endpoint, "exporting traces over OTLP/HTTP");
    Ok(Some(provider))
}

async fn serve(config: Config, args: RunArgs) -> Result<()> {
    let (rules, digest) =
        reload::load(&config.rules).map_err(|e| anyhow::anyhow!("rules do not load:\n{e}"))?;
    let rules = Arc::new(rules);
    info!(rules = rules.rules.len(), groups = rules.groups.len(), paths = ?config.rules, "rules loaded");
    let eval_config = EvaluatorConfig {
        lateness_ms: config.engine.lateness.as_millis(),
        ..EvaluatorConfig::default()
    };
    match config.actuator.mode {
        config::ActuatorMode::DryRun => {
            info!("actuator: dry-run (intents are logged and counted, nothing is changed)")
        }
    }
    // A demo replays a past incident rebased to now: a checkpoint of an earlier demo
    // would make all of it late. Demos keep no state unless a state dir is given.
    let state_dir = if args.demo && args.state_dir.is_none() {
        info!("demo: checkpoints off (pass --state-dir to keep them)");
        None
    } else {
        Some(config.state_dir.clone())
    };
    let ev = checkpoint::restore(state_dir.as_deref(), Arc::clone(&rules), eval_config);

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let listen = listener.local_addr()?;
    let external = config
        .http
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{listen}"));

    // Sinks stop after the engine's last events; intake (HTTP, demo) stops first.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (sink_stop_tx, sink_stop_rx) = watch::channel(false);
    let ctx = SinkContext {
        generator_url: external.clone(),
        eval_interval: Duration::from_millis(
            rules
                .groups
                .iter()
                .map(|g| g.interval_ms)
                .max()
                .unwrap_or(10_000) as u64,
        ),
    };
    let mut senders = Vec::new();
    let mut dedup = Vec::new();
    let mut meters = Vec::new();
    let mut sink_tasks = Vec::new();
    if let Some(c) = config.sinks.stdout.clone() {
        let sink = c.build(&ctx).context("stdout sink")?;
        let (tx, rx) = mpsc::channel(4096);
        meters.push(SinkMeter {
            name: "stdout".into(),
            stats: sink.stats(),
        });
        senders.push(tx);
        sink_tasks.push(tokio::spawn(sink.run(rx, sink_stop_rx.clone())));
    }
    for (i, c) in config.sinks.alertmanager.iter().enumerate() {
        let sink = c
            .clone()
            .build(&ctx)
            .with_context(|| format!("sinks.alertmanager[{i}]"))?;
        let (tx, rx) = mpsc::channel(16_384);
        meters.push(SinkMeter {
            name: format!("alertmanager[{i}]"),
            stats: sink.stats(),
        });
        dedup.push(tx.clone());
        senders.push(tx);
        sink_tasks.push(tokio::spawn(sink.run(rx, sink_stop_rx.clone())));
    }
    for (i, c) in config.sinks.webhook.iter().enumerate() {
        let sink = c
            .clone()
            .build(&ctx)
            .with_context(|| format!("sinks.webhook[{i}]"))?;
        let (tx, rx) = mpsc::channel(16_384);
        meters.push(SinkMeter {
            name: format!("webhook[{i}]"),
            stats: sink.stats(),
        });
        senders.push(tx);
        sink_tasks.push(tokio::spawn(sink.run(rx, sink_stop_rx.clone())));
    }

    // OTLP receivers: validated now, started once the engine runs. A listener left at
    // its default address may fail to bind (a local Collector, a second Vigil): it is
    // then logged and stays off; an address set in the config or by flag must bind.
    let otlp = if config.otlp.enabled {
        let [grpc_set, http_set] = config.otlp_listen_explicit;
        Some(
            config
                .otlp
                .clone()
                .build()
                .context("invalid otlp config")?
                .optional_listeners(!grpc_set, !http_set),
        )
    } else {
        info!("OTLP receivers off (otlp.enabled: false)");
        None
    };
    let otlp_stats = otlp.as_ref().map(|o| o.stats());
    let mapper = otlp_stats
        .as_ref()
        .map(|s| Mapper::new(config.otlp.mapping.clone(), Arc::clone(s)));

    // Recording: a writer thread fed by the engine task, closed after it.
    let (record_tx, record_writer, record_stats) = if config.record.dir.is_some() {
        let (tx, writer, stats) = record::start(
            &config.record,
            config.otlp.mapping.clone(),
            config.engine.lateness.as_millis(),
        )
        .context("cannot start the recording (record:)")?;
        (Some(tx), Some(writer), Some(stats))
    } else {
        (None, None, None)
    };

    // Engine.
    let settings = EngineSettings {
        lateness_ms: config.engine.lateness.as_millis(),
        idle_advance: if args.demo {
            info!("demo: the watermark follows the recording only (no wall-clock advance)");
            None
        } else {
            Some(Duration::from_millis(
                config.engine.idle_advance.as_millis().max(1) as u64,
            ))
        },
        checkpoint_every: Duration::from_millis(
            config.checkpoint.interval.as_millis().max(1000) as u64
        ),
        queue: config.engine.intake_queue,
    };
    let (engine, engine_task) = Engine::new(
        ev,
        settings,
        senders,
        dedup,
        checkpoint::Checkpointer::new(state_dir),
        mapper,
        record_tx,
    )
    .spawn()
    .context("cannot start the engine's runtime")?;

    // Reload: directory watch, SIGHUP, POST /-/reload.
    let reload_status: reload::SharedStatus = Arc::new(Mutex::new(reload::ReloadStatus::default()));
    let (reload_tx, reload_rx) = mpsc::channel(16);
    let _watcher = match reload::watch(&config.rules, reload_tx.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, "cannot watch the rules directories; reload with SIGHUP or POST /-/reload");
            None
        }
    };
    tokio::spawn(reload::run(
        config.rules.clone(),
        engine.clone(),
        Arc::clone(&reload_status),
        digest,
        reload_rx,
    ));
    let hup_tx = reload_tx.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            info!("SIGHUP: reloading rules");
            let _ = hup_tx.send(reload::Trigger::Signal).await;
        }
    });

    // HTTP.
    let shared = Arc::new(Shared::default());
    let app = api::router(api::Api {
        engine: engine.clone(),
        reload: Arc::clone(&reload_status),
        reload_tx,
        shared: Arc::clone(&shared),
        sinks: Arc::new(meters),
        otlp: otlp_stats,
        record: record_stats,
    });
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.changed().await;
            })
            .await
    });
    info!(%listen, ui = %external, "HTTP API and UI listening");

    // Sources.
    let otlp_servers = match otlp {
        Some(receiver) => {
            let intake: Arc<dyn Intake> = Arc::new(EngineIntake {
                engine: engine.clone(),
                shared: Arc::clone(&shared),
            });
            Some(receiver.start(intake, stop_rx.clone()).await?)
        }
        None => None,
    };
    let demo = args.demo.then(|| {
        let (engine, stop) = (engine.clone(), stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = demo::play(engine, args.demo_speed, stop).await {
                error!(error = %format!("{e:#}"), "demo failed");
            }
        })
    });
    shared
        .sources_ready
        .store(true, std::sync::atomic::Ordering::Relaxed);

    shutdown_signal().await;
    info!("shutting down: stopping intake");
    let _ = stop_tx.send(true);
    if let Some(d) = demo {
        let _ = d.await;
    }
    if let Some(servers) = otlp_servers {
        servers.wait().await;
    }
    if engine.shutdown().await.is_err() {
        warn!("the engine had already stopped");
    }
    let _ = engine_task.await;
    // The engine task has ended and dropped its end of the queue: the writer drains
    // it and closes the last file.
    if let Some(w) = record_writer {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    let _ = sink_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        for t in sink_tasks {
            let _ = t.await;
        }
    })
    .await;
    let _ = http.await;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM"),
        _ = int.recv() => info!("SIGINT"),
    }
}
