//! `record:` / `--record DIR`: everything the engine ingests, written to Parquet files
//! that `vigil replay` reads (the [`Recorder`] of `vigil record`).
//!
//! The engine task hands each batch over after evaluating it, with a non-blocking
//! send on a bounded queue ([`RecordTx::samples`], [`RecordTx::otlp`]): JSON import
//! and demo batches as the label sets and samples they already are; OTLP requests as
//! the prepared request itself, mapped to samples again on the writer thread by its own
//! [`Mapper`] (same config, same request order, so the same samples the engine got,
//! delta running totals included). Nothing is copied on the engine task. When the
//! queue is full the batch is dropped, counted in
//! `vigil_record_dropped_samples_total{reason="queue_full"}` and logged (at most every
//! 10 s); intake never waits for the disk.
//!
//! The writer thread owns the files: it rotates them by size and by event time (the
//! recorder's rules) and by wall-clock age, and closes the last one when the engine
//! stops (SIGTERM/SIGINT), so every file but one being written is complete. A write
//! error abandons the file being written (its `.parquet.tmp` stays), is logged and
//! counted, and the next batch starts a new file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};
use vigil_connectors::otlp::{ExportMetricsServiceRequest, Mapper, MappingConfig, OtlpStats};
use vigil_engine::series::SeriesRegistry;
use vigil_engine::{Labels, Sample};
use vigil_replay::columnar::{RecordError, Recorder, Rotation};

use super::config::RecordConfig;
use super::engine::IngestBatch;

/// Counters of the recording, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct RecordStats {
    /// Samples written to files.
    pub(crate) samples: AtomicU64,
    /// Samples dropped: the writer's queue was full.
    pub(crate) dropped_queue_full: AtomicU64,
    /// Samples dropped: writing them failed.
    pub(crate) dropped_write_error: AtomicU64,
    /// Completed files.
    pub(crate) files: AtomicU64,
    /// Bytes of the completed files.
    pub(crate) bytes: AtomicU64,
    /// Write errors.
    pub(crate) errors: AtomicU64,
    /// Batches waiting for the writer.
    pub(crate) queued: AtomicU64,
}

enum Msg {
    Samples(IngestBatch),
    Otlp {
        request: Box<ExportMetricsServiceRequest>,
        received_ms: i64,
        /// Data points, for the drop count.
        points: u64,
    },
}

impl Msg {
    fn samples(&self) -> u64 {
        match self {
            Msg::Samples(b) => b.samples.len() as u64,
            Msg::Otlp { points, .. } => *points,
        }
    }
}

/// The engine task's end of the recording queue.
pub(crate) struct RecordTx {
    tx: SyncSender<Msg>,
    stats: Arc<RecordStats>,
    /// Drops not logged yet, and when the last drop was logged.
    unlogged: u64,
    last_log: Option<Instant>,
}

impl RecordTx {
    /// Queues an import/demo batch after the engine evaluated it.
    pub(crate) fn samples(&mut self, batch: IngestBatch) {
        if !batch.samples.is_empty() {
            self.send(Msg::Samples(batch));
        }
    }

    /// Queues an OTLP request after the engine mapped and evaluated it.
    pub(crate) fn otlp(
        &mut self,
        request: Box<ExportMetricsServiceRequest>,
        received_ms: i64,
        points: u64,
    ) {
        self.send(Msg::Otlp {
            request,
            received_ms,
            points,
        });
    }

    fn send(&mut self, msg: Msg) {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                let n = msg.samples();
                self.stats
                    .dropped_queue_full
                    .fetch_add(n, Ordering::Relaxed);
                self.unlogged += n;
                if self
                    .last_log
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                {
                    warn!(
                        dropped = self.unlogged,
                        "recording cannot keep up: its queue is full and batches are dropped (vigil_record_dropped_samples_total)"
                    );
                    self.unlogged = 0;
                    self.last_log = Some(Instant::now());
                }
            }
        }
    }
}

/// The writer thread; [`RecordWriter::join`] waits until its last file is closed.
pub(crate) struct RecordWriter {
    thread: std::thread::JoinHandle<()>,
}

impl RecordWriter {
    /// Waits for the thread (after every [`RecordTx`] was dropped).
    pub(crate) fn join(self) {
        if self.thread.join().is_err() {
            error!("the recording thread panicked");
        }
    }
}

/// Starts the writer thread recording into `config.dir` (which must be set).
/// `lateness_ms` (the engine's) goes into every file's footer, for replay.
pub(crate) fn start(
    config: &RecordConfig,
    mapping: MappingConfig,
    lateness_ms: i64,
) -> anyhow::Result<(RecordTx, RecordWriter, Arc<RecordStats>)> {
    let dir = config
        .dir
        .clone()
        .ok_or_else(|| anyhow::anyhow!("record.dir is not set"))?;
    let rotation = Rotation {
        max_bytes: config.max_bytes.max(1),
        max_age_ms: config.max_age.as_millis().max(1),
    };
    // Fail at start, not at the first sample, when the directory is unusable.
    let recorder = Recorder::new(&dir, rotation)?.with_lateness(lateness_ms);
    let stats = Arc::new(RecordStats::default());
    let (tx, rx) = sync_channel(config.queue.max(1));
    let mut writer = Writer {
        dir: dir.clone(),
        rotation,
        recorder: Some(recorder),
        lateness_ms,
        opened: None,
        max_wall: Duration::from_millis(config.max_age.as_millis().max(1) as u64),
        stats: Arc::clone(&stats),
        otlp: OtlpLabels::new(mapping),
        closed: 0,
        retry_at: None,
    };
    let thread = std::thread::Builder::new()
        .name("vigil-record".into())
        .spawn(move || writer.run(rx))?;
    info!(dir = %dir.display(), max_bytes = rotation.max_bytes, max_age = %config.max_age, "recording ingested samples to Parquet");
    Ok((
        RecordTx {
            tx,
            stats: Arc::clone(&stats),
            unlogged: 0,
            last_log: None,
        },
        RecordWriter { thread },
        stats,
    ))
}

/// OTLP requests → labelled samples, with the engine's mapping.
struct OtlpLabels {
    mapper: Mapper,
    registry: SeriesRegistry,
    labels: Vec<Option<Labels>>,
    samples: Vec<Sample>,
}

/// The writer's own registry is reset past this many series (ids only live for one
/// request).
const MAX_SERIES: usize = 1 << 20;

impl OtlpLabels {
    fn new(mapping: MappingConfig) -> Self {
        OtlpLabels {
            // Its own counters: the receivers' are counted once, by the engine's mapper.
            mapper: Mapper::new(mapping, Arc::new(OtlpStats::default())),
            registry: SeriesRegistry::default(),
            labels: Vec::new(),
            samples: Vec::new(),
        }
    }

    fn map(
        &mut self,
        request: &ExportMetricsServiceRequest,
        received_ms: i64,
        mut each: impl FnMut(&Labels, i64, f64) -> Result<(), RecordError>,
    ) -> Result<(), RecordError> {
        if self.labels.len() > MAX_SERIES {
            self.registry = SeriesRegistry::default();
            self.labels.clear();
        }
        self.samples.clear();
        self.mapper
            .map(request, received_ms, &mut self.registry, &mut self.samples);
        for s in &self.samples {
            let i = s.series as usize;
            if i >= self.labels.len() {
                self.labels.resize(i + 1, None);
            }
            if self.labels[i].is_none() {
                self.labels[i] = self.registry.labels(s.series);
            }
            if let Some(l) = &self.labels[i] {
                each(l, s.ts, s.value)?;
            }
        }
        Ok(())
    }
}

struct Writer {
    dir: PathBuf,
    rotation: Rotation,
    /// None after a write error, until the next batch (retried at most every 10 s).
    recorder: Option<Recorder>,
    /// The engine's lateness, stored in each file's footer.
    lateness_ms: i64,
    /// When the open file was started (wall clock).
    opened: Option<Instant>,
    max_wall: Duration,
    stats: Arc<RecordStats>,
    otlp: OtlpLabels,
    /// Files of the current recorder already counted.
    closed: usize,
    retry_at: Option<Instant>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) {
        let tick = self.max_wall.min(Duration::from_secs(1));
        loop {
            match rx.recv_timeout(tick) {
                Ok(msg) => {
                    self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                    self.write(msg);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.opened.is_some_and(|t| t.elapsed() >= self.max_wall) {
                if let Some(r) = self.recorder.as_mut() {
                    let result = r.rotate();
                    self.after(result);
                }
                self.opened = None;
            }
        }
        if let Some(r) = self.recorder.take() {
            let rows = r.rows();
            let done = r.files().len();
            match r.finish() {
                Ok(files) => {
                    self.count_files(&files[done.min(files.len())..]);
                    info!(
                        samples = rows,
                        files = self.stats.files.load(Ordering::Relaxed),
                        dir = %self.dir.display(),
                        "recording closed"
                    );
                }
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    error!(error = %e, "recording: the last file could not be closed");
                }
            }
        }
    }

    fn write(&mut self, msg: Msg) {
        let n = msg.samples();
        if self.recorder.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                self.stats
                    .dropped_write_error
                    .fetch_add(n, Ordering::Relaxed);
                return;
            }
            match Recorder::new(&self.dir, self.rotation).map(|r| r.with_lateness(self.lateness_ms))
            {
                Ok(r) => {
                    self.recorder = Some(r);
                    self.closed = 0;
                }
                Err(e) => {
                    self.failed(e, n);
                    return;
                }
            }
        }
        let Some(r) = self.recorder.as_mut() else {
            return;
        };
        let mut written = 0u64;
        let result = match &msg {
            Msg::Samples(b) => b
                .samples
                .iter()
                .filter_map(|&(i, ts, v)| b.series.get(i as usize).map(|l| (l, ts, v)))
                .try_for_each(|(l, ts, v)| {
                    r.record(l, ts, v)?;
                    written += 1;
                    Ok(())
                }),
            Msg::Otlp {
                request,
                received_ms,
                ..
            } => self.otlp.map(request, *received_ms, |l, ts, v| {
                r.record(l, ts, v)?;
                written += 1;
                Ok(())
            }),
        };
        if self.opened.is_none() && self.recorder.as_ref().is_some_and(Recorder::is_open) {
            self.opened = Some(Instant::now());
        }
        self.stats.samples.fetch_add(written, Ordering::Relaxed);
        match result {
            Ok(()) => self.after(Ok(())),
            Err(e) => self.failed(e, n.saturating_sub(written)),
        }
    }

    /// Counts written samples and newly completed files, or handles an error.
    fn after(&mut self, result: Result<(), RecordError>) {
        match result {
            Ok(()) => {
                if let Some(r) = &self.recorder {
                    let files = r.files();
                    let rotated = files.len() > self.closed;
                    if rotated {
                        let new: Vec<PathBuf> = files[self.closed..].to_vec();
                        self.closed = files.len();
                        self.count_files(&new);
                    }
                    // A file opened by a size or event-time rotation starts its own
                    // wall-clock age.
                    self.opened = match (r.is_open(), rotated) {
                        (false, _) => None,
                        (true, true) => Some(Instant::now()),
                        (true, false) => self.opened,
                    };
                }
            }
            Err(e) => self.failed(e, 0),
        }
    }

    fn count_files(&self, files: &[PathBuf]) {
        for f in files {
            self.stats.files.fetch_add(1, Ordering::Relaxed);
            let bytes = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn failed(&mut self, e: RecordError, dropped: u64) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        self.stats
            .dropped_write_error
            .fetch_add(dropped, Ordering::Relaxed);
        error!(error = %e, "recording failed: the file being written is abandoned; retrying in 10s");
        self.recorder = None;
        self.opened = None;
        self.retry_at = Some(Instant::now() + Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_connectors::otlp::proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use vigil_connectors::otlp::proto::tonic::metrics::v1::{
        metric::Data, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum,
    };
    use vigil_connectors::otlp::proto::tonic::resource::v1::Resource;
    use vigil_engine::labels::METRIC_NAME;
    use vigil_replay::source::{open, OnBad, ReadStats};

    fn batch(n: usize) -> IngestBatch {
        let mut l = Labels::new();
        l.insert(METRIC_NAME.into(), "m".into());
        IngestBatch {
            series: vec![l],
            samples: (0..n).map(|i| (0, i as i64, 1.0)).collect(),
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (tx, rx) = sync_channel(1);
        let stats = Arc::new(RecordStats::default());
        let mut r = RecordTx {
            tx,
            stats: Arc::clone(&stats),
            unlogged: 0,
            last_log: None,
        };
        let started = Instant::now();
        for _ in 0..3 {
            r.samples(batch(5));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 10);
        assert_eq!(stats.queued.load(Ordering::Relaxed), 1);
        assert_eq!(rx.try_recv().unwrap().samples(), 5);
        // The writer gone (thread ended): counted as dropped too, never an error.
        drop(rx);
        r.samples(batch(2));
        assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 12);
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn request(t_s: u64, depth: f64, delta: i64) -> ExportMetricsServiceRequest {
        let point = |v: number_data_point::Value| NumberDataPoint {
            attributes: vec![kv("queue", "q1")],
            time_unix_nano: t_s * 1_000_000_000,
            value: Some(v),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("k8s.node.name", "n1")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: "queue_depth".into(),
                            data: Some(Data::Gauge(Gauge {
                                data_points: vec![point(number_data_point::Value::AsDouble(depth))],
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "jobs".into(),
                            data: Some(Data::Sum(Sum {
                                data_points: vec![point(number_data_point::Value::AsInt(delta))],
                                aggregation_temporality: AggregationTemporality::Delta as i32,
                                is_monotonic: true,
                            })),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// What the recording holds: (labels, ts, value) rows in file order.
    fn read_back(files: &[PathBuf]) -> Vec<(Labels, i64, f64)> {
        let stats = Arc::new(ReadStats::default());
        let mut rows = Vec::new();
        for f in files {
            for c in open(f, OnBad::Fail, &stats).unwrap() {
                let c = c.unwrap();
                for &(s, ts, v) in &c.rows {
                    rows.push((Labels::clone(&c.series[s as usize]), ts, v));
                }
            }
        }
        rows
    }

    #[test]
    fn otlp_requests_are_recorded_as_the_engine_maps_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = RecordConfig {
            dir: Some(dir.path().join("rec")),
            ..RecordConfig::default()
        };
        let requests: Vec<_> = (0..3)
            .map(|i| request(1000 + i, 10.0 * i as f64, 5))
            .collect();

        // The engine's side: one mapper over the same requests, in the same order.
        let mut engine = Mapper::new(MappingConfig::default(), Arc::new(OtlpStats::default()));
        let mut registry = SeriesRegistry::default();
        let mut want = Vec::new();
        for r in &requests {
            let mut out = Vec::new();
            engine.map(r, 0, &mut registry, &mut out);
            for s in out {
                want.push((registry.labels(s.series).unwrap(), s.ts, s.value));
            }
        }

        let (mut tx, writer, stats) = start(&config, MappingConfig::default(), 0).unwrap();
        for r in requests {
            tx.otlp(Box::new(r), 0, 2);
        }
        tx.samples(batch(2));
        drop(tx);
        writer.join();
        let files: Vec<PathBuf> = recording_files(&dir.path().join("rec"));
        let got = read_back(&files);
        assert_eq!(got[..want.len()], want[..]);
        assert_eq!(got.len(), want.len() + 2);
        // The delta sum was recorded as its running total, as the engine saw it.
        let jobs: Vec<f64> = got
            .iter()
            .filter(|r| r.0[METRIC_NAME] == "jobs")
            .map(|r| r.2)
            .collect();
        assert_eq!(jobs, [5.0, 10.0, 15.0]);
        assert_eq!(got[0].0["node"], "n1");
        assert_eq!(stats.samples.load(Ordering::Relaxed), 8);
        assert_eq!(stats.files.load(Ordering::Relaxed), 1);
        assert!(stats.bytes.load(Ordering::Relaxed) > 0);
    }

    fn recording_files(dir: &std::path::Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        assert!(
            v.iter()
                .all(|f| f.extension().is_some_and(|e| e == "parquet")),
            "{v:?}"
        );
        v
    }

    #[test]
    fn files_are_completed_after_max_age_on_the_wall_clock() {
        let dir = tempfile::tempdir().unwrap();
        let config = RecordConfig {
            dir: Some(dir.path().join("rec")),
            max_age: vigil_engine::Duration::from_secs(1),
            ..RecordConfig::default()
        };
        let (mut tx, writer, stats) = start(&config, MappingConfig::default(), 0).unwrap();
        // Five samples within 5 ms of event time: only the wall clock can rotate.
        tx.samples(batch(5));
        let started = Instant::now();
        while stats.files.load(Ordering::Relaxed) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no file completed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let done = recording_files(&dir.path().join("rec"));
        assert_eq!(read_back(&done).len(), 5, "complete while still recording");
        tx.samples(batch(3));
        drop(tx);
        writer.join();
        assert_eq!(stats.files.load(Ordering::Relaxed), 2);
        assert_eq!(stats.samples.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn an_unusable_directory_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let config = RecordConfig {
            dir: Some(file.join("rec")),
            ..RecordConfig::default()
        };
        let err = start(&config, MappingConfig::default(), 0).err().unwrap();
        assert!(err.to_string().contains("rec"), "{err}");
    }
}
