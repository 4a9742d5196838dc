//! The engine task: the one owner of the [`Evaluator`]. Sources, the HTTP API, the
//! reloader and the checkpointer talk to it through [`EngineHandle`]; it hands alert
//! transitions to the sinks and logs action intents (the actuator is dry-run).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, info_span, warn};
use vigil_connectors::otlp::{ExportMetricsServiceRequest, IntakeError, Mapper, OtlpBatch};
use vigil_engine::eval::{
    ActiveAlert, AlertEvent, Event, Intent, Notice, RuleStats, SeriesHistory, Stats,
};
use vigil_engine::lifecycle::AlertState;
use vigil_engine::{Evaluator, Labels, RuleSet, Sample};

use super::checkpoint::Checkpointer;
use super::metrics::Histogram;
use super::reclaim::Reclaimer;
use super::record::RecordTx;

/// Samples from a source: distinct label sets, and samples pointing into them.
#[derive(Debug, Default)]
pub(crate) struct IngestBatch {
    /// Label sets (with `__name__`).
    pub(crate) series: Vec<Labels>,
    /// (index into `series`, ts ms, value).
    pub(crate) samples: Vec<(u32, i64, f64)>,
}

/// How many recent events the UI can show.
const RECENT_EVENTS: usize = 500;

/// Everything the API shows about the engine.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    pub(crate) rules: Arc<RuleSet>,
    pub(crate) rule_stats: Vec<RuleStats>,
    pub(crate) stats: Stats,
    pub(crate) watermark: Option<i64>,
    pub(crate) buffered: usize,
    pub(crate) series: usize,
    pub(crate) heap_bytes: usize,
    pub(crate) alerts_pending: usize,
    pub(crate) alerts_firing: usize,
    pub(crate) intents: Vec<(&'static str, u64)>,
    pub(crate) batch_seconds: Histogram,
    pub(crate) checkpoint: super::checkpoint::CheckpointStatus,
    pub(crate) last_sample_wall_ms: Option<i64>,
    /// OTLP: from receiving a request to the end of its evaluation and dispatch.
    pub(crate) otlp_seconds: Histogram,
}

enum Command {
    Ingest(IngestBatch),
    /// A decoded OTLP request, mapped to samples on the engine task.
    Otlp(OtlpBatch),
    Alerts(oneshot::Sender<Vec<ActiveAlert>>),
    Status(oneshot::Sender<Status>),
    Events(oneshot::Sender<Vec<Event>>),
    History(String, u64, oneshot::Sender<Option<SeriesHistory>>),
    Swap(Arc<RuleSet>, oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// A cheap, cloneable way to talk to the engine task.
#[derive(Clone)]
pub(crate) struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

/// The engine task has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the engine has stopped")]
pub(crate) struct EngineGone;

impl EngineHandle {
    /// Queues a batch, waiting for room.
    pub(crate) async fn ingest(&self, batch: IngestBatch) -> Result<(), EngineGone> {
        self.tx
            .send(Command::Ingest(batch))
            .await
            .map_err(|_| EngineGone)
    }

    /// Queues a prepared OTLP request if the intake queue has room; never waits (a
    /// full queue is the receivers' backpressure: they answer 429/RESOURCE_EXHAUSTED).
    pub(crate) fn try_ingest_otlp(&self, batch: OtlpBatch) -> Result<(), IntakeError> {
        self.try_send(Command::Otlp(batch))
    }

    fn try_send(&self, cmd: Command) -> Result<(), IntakeError> {
        self.tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => IntakeError::Full,
            mpsc::error::TrySendError::Closed(_) => IntakeError::Closed,
        })
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineGone> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| EngineGone)?;
        rx.await.map_err(|_| EngineGone)
    }

    pub(crate) async fn alerts(&self) -> Result<Vec<ActiveAlert>, EngineGone> {
        self.ask(Command::Alerts).await
    }

    pub(crate) async fn status(&self) -> Result<Status, EngineGone> {
        self.ask(Command::Status).await
    }

    pub(crate) async fn recent_events(&self) -> Result<Vec<Event>, EngineGone> {
        self.ask(Command::Events).await
    }

    pub(crate) async fn history(
        &self,
        rule: String,
        fingerprint: u64,
    ) -> Result<Option<SeriesHistory>, EngineGone> {
        self.ask(|tx| Command::History(rule, fingerprint, tx)).await
    }

    /// Swaps in a new, already validated rule set; state of unchanged rules survives.
    pub(crate) async fn swap_rules(&self, rules: Arc<RuleSet>) -> Result<(), EngineGone> {
        self.ask(|tx| Command::Swap(rules, tx)).await
    }

    /// Stops intake, evaluates what is queued, writes a last checkpoint, and stops.
    pub(crate) async fn shutdown(&self) -> Result<(), EngineGone> {
        self.ask(Command::Shutdown).await
    }
}

/// Settings of the engine task.
pub(crate) struct EngineSettings {
    pub(crate) lateness_ms: i64,
    /// None: never advance the watermark from the wall clock (demo, replay-like runs).
    pub(crate) idle_advance: Option<std::time::Duration>,
    pub(crate) checkpoint_every: std::time::Duration,
    pub(crate) queue: usize,
}

/// The running engine task.
pub(crate) struct Engine {
    ev: Evaluator,
    settings: EngineSettings,
    sinks: Vec<mpsc::Sender<AlertEvent>>,
    /// Sinks that deduplicate (Alertmanager): told about restored firing alerts.
    dedup_sinks: Vec<mpsc::Sender<AlertEvent>>,
    recent: VecDeque<Event>,
    intents: [(&'static str, u64); 3],
    batch_seconds: Histogram,
    checkpointer: Checkpointer,
    /// Last intake (or start): the idle clock counts from here.
    last_sample: Instant,
    last_sample_wall_ms: Option<i64>,
    /// OTLP data points → samples (holds the delta running totals).
    mapper: Option<Mapper>,
    /// Reused sample buffer of OTLP batches.
    scratch: Vec<Sample>,
    otlp_seconds: Histogram,
    /// `--record`: every ingested batch is handed to the recording after evaluation.
    recorder: Option<RecordTx>,
    /// Frees evaluated OTLP requests off this thread (when not recording them).
    reclaim: Reclaimer<Box<ExportMetricsServiceRequest>>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Engine {
    pub(crate) fn new(
        ev: Evaluator,
        settings: EngineSettings,
        sinks: Vec<mpsc::Sender<AlertEvent>>,
        dedup_sinks: Vec<mpsc::Sender<AlertEvent>>,
        checkpointer: Checkpointer,
        mapper: Option<Mapper>,
        recorder: Option<RecordTx>,
    ) -> Self {
        Engine {
            ev,
            settings,
            sinks,
            dedup_sinks,
            recent: VecDeque::with_capacity(RECENT_EVENTS),
            intents: [("isolate", 0), ("evict", 0), ("drain", 0)],
            batch_seconds: Histogram::latency(),
            checkpointer,
            last_sample: Instant::now(),
            last_sample_wall_ms: None,
            mapper,
            scratch: Vec::new(),
            otlp_seconds: Histogram::intake_latency(),
            recorder,
            reclaim: Reclaimer::spawn("vigil-reclaim"),
        }
    }

    /// Starts the engine on a thread of its own, with a current-thread runtime for its
    /// timers and channels: it is CPU-bound, so it must neither wait behind request
    /// decoding on the runtime's workers nor hold one the HTTP API needs. It ends when
    /// every handle is dropped, after a last checkpoint.
    pub(crate) fn spawn(self) -> std::io::Result<(EngineHandle, tokio::task::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(self.settings.queue.max(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let task = tokio::task::spawn_blocking(move || rt.block_on(self.run(rx)));
        Ok((EngineHandle { tx }, task))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.resend_restored();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_checkpoint = Instant::now();
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        rx.close();
                        while let Some(cmd) = rx.recv().await {
                            self.handle(cmd).await;
                        }
                        self.checkpointer.write(self.ev.snapshot()).await;
                        info!("engine stopped after a final checkpoint");
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick(&mut last_checkpoint),
            }
        }
        // Intake has stopped and queued batches are drained: last checkpoint.
        self.checkpointer.write(self.ev.snapshot()).await;
        info!("engine stopped after a final checkpoint");
    }

    /// Once a second: the idle advance, and checkpoints. A finished checkpoint is
    /// accounted on the next tick, not when the next one is due, so its metrics lag by
    /// a second, not by a period.
    fn on_tick(&mut self, last_checkpoint: &mut Instant) {
        self.idle_advance();
        let busy = self.checkpointer.busy();
        if !busy
            && self.checkpointer.enabled()
            && last_checkpoint.elapsed() >= self.settings.checkpoint_every
        {
            self.checkpointer.start(self.ev.clone());
            *last_checkpoint = Instant::now();
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Ingest(batch) => self.ingest(batch),
            Command::Otlp(batch) => self.ingest_otlp(batch),
            Command::Alerts(tx) => {
                let _ = tx.send(self.ev.alerts());
            }
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::Events(tx) => {
                let _ = tx.send(self.recent.iter().cloned().collect());
            }
            Command::History(rule, fp, tx) => {
                let _ = tx.send(self.ev.series_history(&rule, fp));
            }
            Command::Swap(rules, tx) => {
                self.swap(rules);
                let _ = tx.send(());
            }
            Command::Shutdown(tx) => {
                let _ = tx.send(());
            }
        }
    }

    fn ingest(&mut self, batch: IngestBatch) {
        let _span = info_span!("batch", samples = batch.samples.len()).entered();
        let started = Instant::now();
        let ids: Vec<u32> = batch.series.iter().map(|l| self.ev.intern(l)).collect();
        let samples: Vec<Sample> = batch
            .samples
            .iter()
            .filter_map(|&(i, ts, value)| {
                ids.get(i as usize)
                    .map(|&series| Sample { series, ts, value })
            })
            .collect();
        info_span!("detect", series = ids.len()).in_scope(|| self.ev.ingest(&samples));
        self.batch_seconds.observe(started.elapsed().as_secs_f64());
        self.last_sample = Instant::now();
        self.last_sample_wall_ms = Some(now_ms());
        info_span!("dispatch").in_scope(|| self.dispatch());
        if let Some(r) = &mut self.recorder {
            r.samples(batch);
        }
    }

    fn ingest_otlp(&mut self, batch: OtlpBatch) {
        let Some(mapper) = self.mapper.as_mut() else {
            return;
        };
        let _span = info_span!("otlp_batch", points = batch.points).entered();
        let started = Instant::now();
        let mut samples = std::mem::take(&mut self.scratch);
        samples.clear();
        info_span!("map").in_scope(|| {
            mapper.map(
                &batch.request,
                batch.received_ms,
                self.ev.series_mut(),
                &mut samples,
            )
        });
        info_span!("detect", samples = samples.len()).in_scope(|| self.ev.ingest(&samples));
        self.scratch = samples;
        self.batch_seconds.observe(started.elapsed().as_secs_f64());
        self.last_sample = Instant::now();
        self.last_sample_wall_ms = Some(now_ms());
        info_span!("dispatch").in_scope(|| self.dispatch());
        self.otlp_seconds
            .observe(batch.received_at.elapsed().as_secs_f64());
        // The request goes to the recording (mapped again there, off this task), or
        // to the reclaim thread to be freed. Large buffers are not kept.
        match &mut self.recorder {
            Some(r) => r.otlp(batch.request, batch.received_ms, batch.points),
            None => self.reclaim.free(batch.request),
        }
        if self.scratch.capacity() > 1 << 20 {
            self.scratch = Vec::new();
        }
    }

    fn idle_advance(&mut self) {
        let Some(idle) = self.settings.idle_advance else {
            return;
        };
        if self.last_sample.elapsed() < idle {
            return;
        }
        self.ev
            .advance_watermark(now_ms() - self.settings.lateness_ms);
        self.dispatch();
    }

    fn swap(&mut self, rules: Arc<RuleSet>) {
        let config = self.ev.config();
        match Evaluator::restore(Arc::clone(&rules), config, &self.ev.snapshot()) {
            Ok(ev) => self.ev = ev,
            Err(e) => {
                // A snapshot of a live evaluator always restores; keep going regardless.
                warn!(error = %e, "state could not be carried over the reload; starting empty");
                self.ev = Evaluator::new(rules, config);
            }
        }
    }

    /// After a restart, firing alerts are re-announced to deduplicating sinks only, so
    /// Alertmanager keeps them alive without a new notification.
    fn resend_restored(&mut self) {
        for a in self
            .ev
            .alerts()
            .into_iter()
            .filter(|a| a.state == AlertState::Firing)
        {
            let event = AlertEvent {
                ts: a.fired_at.unwrap_or(a.active_at),
                rule: a.rule,
                state: AlertState::Firing,
                labels: a.labels,
                annotations: a.annotations,
                value: a.value,
                score: a.score,
                active_at: a.active_at,
                fingerprint: a.fingerprint,
                flapping: a.flapping,
                notify: true,
            };
            for s in &self.dedup_sinks {
                let _ = s.try_send(event.clone());
            }
        }
    }

    fn dispatch(&mut self) {
        for n in self.ev.take_notices() {
            match n {
                Notice::SeriesCapReached { rule, cap } => {
                    warn!(%rule, cap, "rule reached its series cap: samples of new series are dropped and counted")
                }
            }
        }
        for event in self.ev.drain_events() {
            match &event {
                Event::Alert(a) => {
                    for s in &self.sinks {
                        if s.try_send(a.clone()).is_err() {
                            warn!(rule = %a.rule, "a sink's queue is full; alert transition dropped");
                        }
                    }
                }
                Event::Intent(i) => self.log_intent(i),
            }
            if self.recent.len() == RECENT_EVENTS {
                self.recent.pop_front();
            }
            self.recent.push_back(event);
        }
    }

    fn log_intent(&mut self, i: &Intent) {
        if let Some(slot) = self
            .intents
            .iter_mut()
            .find(|(a, _)| *a == i.action.as_str())
        {
            slot.1 += 1;
        }
        info!(
            rule = %i.rule,
            action = i.action.as_str(),
            node = %i.node,
            pod = i.pod.as_deref().unwrap_or(""),
            "intent (dry-run: not executed)"
        );
    }

    fn status(&self) -> Status {
        let rules = Arc::clone(self.ev.rules());
        let alerts = self.ev.alerts();
        Status {
            rule_stats: (0..rules.rules.len())
                .map(|i| self.ev.rule_stats(i))
                .collect(),
            rules,
            stats: self.ev.stats().clone(),
            watermark: self.ev.watermark(),
            buffered: self.ev.buffered(),
            series: self.ev.series().len(),
            heap_bytes: self.ev.heap_bytes(),
            alerts_pending: alerts
                .iter()
                .filter(|a| a.state == AlertState::Pending)
                .count(),
            alerts_firing: alerts
                .iter()
                .filter(|a| a.state == AlertState::Firing)
                .count(),
            intents: self.intents.to_vec(),
            batch_seconds: self.batch_seconds.clone(),
            checkpoint: self.checkpointer.status(),
            last_sample_wall_ms: self.last_sample_wall_ms,
            otlp_seconds: self.otlp_seconds.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vigil_engine::EvaluatorConfig;

    use super::*;

    /// A finished checkpoint shows in the status at the next tick (it used to wait for
    /// the next one to fall due, so `/metrics` lagged a whole period behind).
    #[test]
    fn a_finished_checkpoint_is_accounted_at_the_next_tick() {
        let dir = tempfile::tempdir().unwrap();
        let rules = Arc::new(RuleSet::from_sources(&[]).unwrap());
        let settings = EngineSettings {
            lateness_ms: 0,
            idle_advance: None,
            checkpoint_every: Duration::ZERO,
            queue: 1,
        };
        let mut engine = Engine::new(
            Evaluator::new(rules, EvaluatorConfig::default()),
            settings,
            Vec::new(),
            Vec::new(),
            Checkpointer::new(Some(dir.path().to_path_buf())),
            None,
            None,
        );
        // Due at once: the first tick starts a checkpoint; the next is due in an hour.
        let mut last = Instant::now();
        engine.on_tick(&mut last);
        engine.settings.checkpoint_every = Duration::from_secs(3600);
        assert_eq!(
            engine.checkpointer.status().writes_ok,
            0,
            "accounted at a tick"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while engine.checkpointer.status().writes_ok == 0 {
            assert!(
                Instant::now() < deadline,
                "not accounted before the next period"
            );
            std::thread::sleep(Duration::from_millis(5));
            engine.on_tick(&mut last);
        }
        assert_eq!(engine.checkpointer.status().writes_failed, 0);
        assert!(dir.path().join("checkpoint.bin").exists());
    }
}
