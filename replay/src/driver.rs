//! Deterministic replay: a chunk stream through the evaluator, reading on one thread
//! and evaluating on the caller's, with optional time range, SQL filter, and a
//! checkpoint/resume point.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_engine::eval::{Event, Stats};
use vigil_engine::labels::Labels;
use vigil_engine::series::{Generation, SeriesId};
use vigil_engine::{Evaluator, EvaluatorConfig, RuleSet, Sample};

use crate::filter::Filter;
use crate::source::{self, Chunk, FastMap, OnBad, ReadStats};
use crate::ReadError;

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Evaluator settings (lateness: how far a recording may go back in time).
    pub engine: EvaluatorConfig,
    /// Only samples at or after this time, ms.
    pub from: Option<i64>,
    /// Only samples before this time, ms.
    pub to: Option<i64>,
    /// `--where` SQL predicate.
    pub filter: Option<Arc<Filter>>,
    /// Skip malformed lines (counted) instead of stopping.
    pub on_bad: OnBad,
    /// Stop after this many input rows and write a checkpoint to the path.
    pub checkpoint: Option<(u64, PathBuf)>,
    /// Continue from a checkpoint written by `checkpoint`.
    pub resume: Option<PathBuf>,
    /// (rule, fingerprint) of alerts whose whole history to record (reports).
    pub trace: Vec<(String, u64)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            engine: EvaluatorConfig::default(),
            from: None,
            to: None,
            filter: None,
            on_bad: OnBad::Fail,
            checkpoint: None,
            resume: None,
            trace: Vec::new(),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Rows read from the inputs.
    pub rows_read: u64,
    /// Rows given to the engine (after range and filter).
    pub rows_evaluated: u64,
    /// Lines skipped as malformed.
    pub skipped_lines: u64,
    /// Engine counters.
    pub stats: Stats,
    /// Seconds the reader thread spent reading and parsing.
    pub read_secs: f64,
    /// Seconds spent filtering and evaluating.
    pub eval_secs: f64,
    /// Wall-clock seconds.
    pub wall_secs: f64,
    /// Whether the run stopped at a checkpoint.
    pub stopped_at_checkpoint: bool,
}

/// A replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The filter failed on a batch.
    #[error("--where: {0}")]
    Filter(String),
    /// A checkpoint could not be written or read.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// File.
        path: String,
        /// What failed.
        message: String,
    },
}

/// Progress of a running replay.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Input bytes read.
    pub bytes_read: u64,
    /// Input bytes in all.
    pub bytes_total: u64,
    /// Rows read.
    pub rows: u64,
}

const CHECKPOINT_MAGIC: &[u8; 8] = b"VGLRPL1\0";

fn checkpoint_err(path: &Path, message: impl ToString) -> ReplayError {
    ReplayError::Checkpoint {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Replays `inputs` through `rules`, calling `on_event` for every event in event-time
/// order and `on_progress` about every 100 ms. Returns the summary and the evaluator
/// (for its final state).
pub fn replay(
    inputs: &[PathBuf],
    rules: Arc<RuleSet>,
    opts: &Options,
    on_event: &mut dyn FnMut(&Event),
    on_progress: &mut dyn FnMut(Progress),
) -> Result<(Summary, Evaluator), ReplayError> {
    let started = Instant::now();
    let mut stats = ReadStats::default();
    for p in inputs {
        stats.bytes_total += std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    }
    let stats = Arc::new(stats);
    let mut streams = Vec::new();
    for p in inputs {
        streams.push(source::open(p, opts.on_bad, &stats)?);
    }
    let (mut ev, mut skip) = match &opts.resume {
        None => (Evaluator::new(Arc::clone(&rules), opts.engine), 0u64),
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| checkpoint_err(path, e))?;
            let body = bytes
                .strip_prefix(CHECKPOINT_MAGIC)
                .ok_or_else(|| checkpoint_err(path, "not a replay checkpoint"))?;
            let (rows, snap) = body
                .split_first_chunk::<8>()
                .ok_or_else(|| checkpoint_err(path, "truncated"))?;
            let ev = Evaluator::restore(Arc::clone(&rules), opts.engine, snap)
                .map_err(|e| checkpoint_err(path, e))?;
            (ev, u64::from_le_bytes(*rows))
        }
    };
    for (rule, fp) in &opts.trace {
        ev.trace(rule, *fp);
    }
    let mut summary = Summary {
        rows_read: skip,
        ..Summary::default()
    };
    let resumed_rows = skip;

    // Reader thread: parse ahead while the engine evaluates.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Chunk, ReadError>>(4);
    let reader = std::thread::Builder::new()
        .name("vigil-replay-read".into())
        .spawn(move || {
            let t = Instant::now();
            for c in source::merge(streams) {
                let stop = c.is_err();
                if tx.send(c).is_err() || stop {
                    break;
                }
            }
            t.elapsed().as_secs_f64()
        })
        .map_err(|e| {
            ReplayError::Read(ReadError::Io {
                source_name: "reader thread".into(),
                source: e,
            })
        })?;

    let mut last_progress = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut ids = SeriesIds::default();
    let mut eval_time = Duration::ZERO;
    let mut outcome: Result<(), ReplayError> = Ok(());
    for chunk in rx.iter() {
        let mut chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                outcome = Err(e.into());
                break;
            }
        };
        // Resume: rows before the checkpoint were evaluated already.
        if skip > 0 {
            let n = (skip as usize).min(chunk.rows.len());
            chunk.rows.drain(..n);
            skip -= n as u64;
            if chunk.rows.is_empty() {
                continue;
            }
        }
        let mut stop = false;
        if let Some((limit, _)) = &opts.checkpoint {
            let room = limit.saturating_sub(summary.rows_read);
            if (chunk.rows.len() as u64) >= room {
                chunk.rows.truncate(room as usize);
                stop = true;
            }
        }
        summary.rows_read += chunk.rows.len() as u64;
        let t = Instant::now();
        if let Err(e) = evaluate_chunk(&mut ev, &chunk, opts, &mut samples, &mut ids, &mut summary)
        {
            outcome = Err(e);
            break;
        }
        for e in ev.drain_events() {
            on_event(&e);
        }
        eval_time += t.elapsed();
        if last_progress.elapsed() >= Duration::from_millis(100) {
            last_progress = Instant::now();
            on_progress(Progress {
                bytes_read: stats.bytes_read.load(Ordering::Relaxed),
                bytes_total: stats.bytes_total,
                rows: summary.rows_read,
            });
        }
        if stop {
            summary.stopped_at_checkpoint = true;
            break;
        }
    }
    drop(rx);
    summary.read_secs = reader.join().unwrap_or(0.0);
    outcome?;
    if let (true, Some((_, path))) = (summary.stopped_at_checkpoint, &opts.checkpoint) {
        let mut bytes = CHECKPOINT_MAGIC.to_vec();
        bytes.extend_from_slice(&summary.rows_read.to_le_bytes());
        bytes.extend(ev.snapshot());
        std::fs::write(path, bytes).map_err(|e| checkpoint_err(path, e))?;
    } else {
        let t = Instant::now();
        ev.flush();
        for e in ev.drain_events() {
            on_event(&e);
        }
        eval_time += t.elapsed();
    }
    if skip > 0 {
        return Err(checkpoint_err(
            opts.resume.as_deref().unwrap_or(Path::new("")),
            format!("the inputs have fewer rows than the checkpoint's {resumed_rows}: not the same inputs"),
        ));
    }
    summary.skipped_lines = stats.skipped.load(Ordering::Relaxed);
    summary.stats = ev.stats().clone();
    summary.eval_secs = eval_time.as_secs_f64();
    summary.wall_secs = started.elapsed().as_secs_f64();
    Ok((summary, ev))
}

/// Engine series ids of the readers' shared label sets, so a series is interned once,
/// not once per chunk. The engine reuses the ids of expired series, so the map is
/// dropped whenever the registry's generation changes; it holds the label sets it maps,
/// so no address in it is reused meanwhile.
#[derive(Default)]
struct SeriesIds {
    known: FastMap<usize, (Arc<Labels>, SeriesId)>,
    generation: Option<Generation>,
    /// This chunk's ids, by index into its `series`.
    chunk: Vec<SeriesId>,
}

impl SeriesIds {
    /// Bound on `known` (cleared when reached, like the readers' caches).
    const MAX: usize = 1 << 20;

    fn map(&mut self, ev: &mut Evaluator, series: &[Arc<Labels>]) {
        let generation = Some(ev.series().generation());
        if generation != self.generation || self.known.len() >= Self::MAX {
            self.known.clear();
            self.generation = generation;
        }
        self.chunk.clear();
        for l in series {
            let id = match self.known.get(&(Arc::as_ptr(l) as usize)) {
                Some(&(_, id)) => id,
                None => {
                    let id = ev.intern(l);
                    self.known
                        .insert(Arc::as_ptr(l) as usize, (Arc::clone(l), id));
                    id
                }
            };
            self.chunk.push(id);
        }
    }
}

fn evaluate_chunk(
    ev: &mut Evaluator,
    chunk: &Chunk,
    opts: &Options,
    samples: &mut Vec<Sample>,
    ids: &mut SeriesIds,
    summary: &mut Summary,
) -> Result<(), ReplayError> {
    let keep = match &opts.filter {
        Some(f) => Some(f.evaluate(chunk).map_err(ReplayError::Filter)?),
        None => None,
    };
    ids.map(ev, &chunk.series);
    let ids = &ids.chunk;
    samples.clear();
    for (row, &(s, ts, value)) in chunk.rows.iter().enumerate() {
        if opts.from.is_some_and(|f| ts < f) || opts.to.is_some_and(|t| ts >= t) {
            continue;
        }
        if keep.as_ref().is_some_and(|k| !k[row]) {
            continue;
        }
        samples.push(Sample {
            series: ids[s as usize],
            ts,
            value,
        });
    }
    summary.rows_evaluated += samples.len() as u64;
    ev.ingest(samples);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str) -> Arc<Labels> {
        Arc::new(Labels::from([(
            vigil_engine::labels::METRIC_NAME.to_string(),
            name.to_string(),
        )]))
    }

    #[test]
    fn series_ids_are_cached_until_the_engine_reuses_an_id() {
        let rules = Arc::new(
            RuleSet::from_sources(&[vigil_engine::rule::Source {
                name: "t.yaml".into(),
                text: "group: g\ninterval: 10s\nrules:\n  - name: T\n    select: '{__name__=~\"a|b\"}'\n    detect: { threshold: { above: 1 } }\n".into(),
            }])
            .unwrap(),
        );
        let mut ev = Evaluator::new(rules, EvaluatorConfig::default());
        let mut ids = SeriesIds::default();
        let a = labels("a");
        ids.map(&mut ev, std::slice::from_ref(&a));
        let id_a = ids.chunk[0];
        ids.map(&mut ev, std::slice::from_ref(&a));
        assert_eq!(ids.chunk, [id_a]);
        assert_eq!(ids.known.len(), 1, "a second chunk of `a` is a cache hit");
        ev.ingest(&[Sample {
            series: id_a,
            ts: 0,
            value: 0.0,
        }]);
        // `a` goes silent past staleness and expires; `b` takes its id.
        ev.advance_watermark(3_600_000);
        assert!(ev.series().removals() > 0);
        let b = labels("b");
        ids.map(&mut ev, std::slice::from_ref(&b));
        let id_b = ids.chunk[0];
        ids.map(&mut ev, std::slice::from_ref(&a));
        let again = ids.chunk[0];
        assert_ne!(again, id_b, "`a` must not get `b`'s id from a stale cache");
        assert_eq!(ev.series().labels(again).as_ref(), Some(&*a));
        assert_eq!(ev.series().labels(id_b).as_ref(), Some(&*b));
    }
}
