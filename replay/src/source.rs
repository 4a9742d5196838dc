//! Recording inputs as a stream of [`Chunk`]s in event-time order.
//!
//! Every reader yields chunks: a table of distinct label sets and rows pointing into it.
//! Label sets are shared ([`Arc`]) and parsed once per distinct text by a reader's
//! [`SeriesCache`], so the same series is the same `Arc` in every chunk of an input:
//! the replay driver maps it to an engine series id once, not once per chunk.
//! The format is chosen from the file name: `.jsonl`/`.ndjson` (samples), `.csv` (NAB
//! style `timestamp,value`, one series a file, metric named after the file),
//! `.otlp.jsonl`/`.otlp.json` (OpenTelemetry Collector file exporter), `.parquet`,
//! `.arrow`/`.ipc` (Arrow IPC file). Text formats may be compressed: `.gz`, `.zst`.
//! Several inputs merge in event-time order (each input must be in time order; a
//! sample that goes back in time is handled by the engine's lateness rules).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vigil_engine::labels::{Labels, METRIC_NAME};

use crate::jsonl::{parse_fields, parse_labels, parse_rfc3339};
use crate::ReadError;

/// Rows of samples with their label sets stored once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// Distinct label sets (with `__name__`).
    pub series: Vec<Arc<Labels>>,
    /// (index into `series`, ts ms, value), in time order.
    pub rows: Vec<(u32, i64, f64)>,
}

impl Chunk {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Fast hashing for the readers' maps (keys are label text and pointers, not
/// attacker-chosen at a scale where flooding matters: inputs are local files).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Label sets by their text, parsed once per input. Bounded: cleared when it holds
/// [`SeriesCache::MAX`] sets (a churn of millions of series only costs re-parsing).
#[derive(Debug, Default)]
pub(crate) struct SeriesCache {
    sets: FastMap<Box<str>, Arc<Labels>>,
    key: String,
}

impl SeriesCache {
    const MAX: usize = 1 << 20;

    /// The label set of `metric` with labels written as `text`, parsed by `parse` on a
    /// miss. `text` identifies the set (two spellings of one set are two entries
    /// holding equal labels, which the engine interns to one series).
    pub(crate) fn get(
        &mut self,
        metric: &str,
        text: &str,
        parse: impl FnOnce() -> Result<Labels, String>,
    ) -> Result<Arc<Labels>, String> {
        self.key.clear();
        self.key.push_str(metric);
        self.key.push('\u{1}');
        self.key.push_str(text);
        if let Some(l) = self.sets.get(self.key.as_str()) {
            return Ok(Arc::clone(l));
        }
        let l = Arc::new(parse()?);
        if self.sets.len() >= Self::MAX {
            self.sets.clear();
        }
        self.sets.insert(self.key.as_str().into(), Arc::clone(&l));
        Ok(l)
    }
}

/// Builds chunks, deduplicating label sets.
#[derive(Debug, Default)]
pub(crate) struct ChunkBuilder {
    chunk: Chunk,
    index: HashMap<Labels, u32>,
    /// Shared label sets by address. Every key is the address of an `Arc` that
    /// `chunk.series` holds until `take` clears both, so no address is reused meanwhile.
    shared: FastMap<usize, u32>,
}

impl ChunkBuilder {
    pub(crate) fn push(&mut self, labels: Labels, ts: i64, value: f64) {
        let next = self.chunk.series.len() as u32;
        let i = match self.index.get(&labels) {
            Some(&i) => i,
            None => {
                self.chunk.series.push(Arc::new(labels.clone()));
                self.index.insert(labels, next);
                next
            }
        };
        self.chunk.rows.push((i, ts, value));
    }

    /// Pushes a sample of a shared label set (from a [`SeriesCache`]).
    pub(crate) fn push_shared(&mut self, labels: &Arc<Labels>, ts: i64, value: f64) {
        let next = self.chunk.series.len() as u32;
        let i = *self
            .shared
            .entry(Arc::as_ptr(labels) as usize)
            .or_insert_with(|| {
                self.chunk.series.push(Arc::clone(labels));
                next
            });
        self.chunk.rows.push((i, ts, value));
    }

    pub(crate) fn push_indexed(&mut self, series: u32, ts: i64, value: f64) {
        self.chunk.rows.push((series, ts, value));
    }

    pub(crate) fn add_series(&mut self, labels: Labels) -> u32 {
        self.chunk.series.push(Arc::new(labels));
        (self.chunk.series.len() - 1) as u32
    }

    pub(crate) fn len(&self) -> usize {
        self.chunk.rows.len()
    }

    pub(crate) fn take(&mut self) -> Option<Chunk> {
        self.index.clear();
        self.shared.clear();
        let c = std::mem::take(&mut self.chunk);
        (!c.rows.is_empty()).then_some(c)
    }
}

/// Rows per chunk.
pub const CHUNK_ROWS: usize = 65_536;

/// A stream of chunks.
pub type ChunkIter = Box<dyn Iterator<Item = Result<Chunk, ReadError>> + Send>;

/// How bad lines are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBad {
    /// Stop with the error (file and line).
    #[default]
    Fail,
    /// Skip the line and count it.
    Skip,
}

/// Counters shared by the readers.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Lines skipped with `--skip-bad`.
    pub skipped: std::sync::atomic::AtomicU64,
    /// Bytes of input files (compressed size), for progress.
    pub bytes_total: u64,
    /// Bytes read so far.
    pub bytes_read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Which reader a file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON sample a line.
    Jsonl,
    /// NAB CSV.
    Csv,
    /// Collector file-exporter OTLP JSON lines.
    OtlpJson,
    /// Parquet.
    Parquet,
    /// Arrow IPC file.
    Arrow,
}

/// The format and compression of a path, from its name.
pub fn detect(path: &Path) -> Result<(Format, Option<&'static str>), ReadError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (base, comp) = if let Some(b) = name.strip_suffix(".gz") {
        (b, Some("gz"))
    } else if let Some(b) = name.strip_suffix(".zst") {
        (b, Some("zst"))
    } else {
        (name.as_str(), None)
    };
    let format = if base.ends_with(".otlp.jsonl") || base.ends_with(".otlp.json") {
        Format::OtlpJson
    } else if base.ends_with(".jsonl") || base.ends_with(".ndjson") || base.ends_with(".json") {
        Format::Jsonl
    } else if base.ends_with(".csv") {
        Format::Csv
    } else if base.ends_with(".parquet") {
        Format::Parquet
    } else if base.ends_with(".arrow") || base.ends_with(".ipc") || base.ends_with(".feather") {
        Format::Arrow
    } else {
        return Err(ReadError::Unsupported {
            source_name: path.display().to_string(),
            message: "unknown format: name recordings *.jsonl, *.csv, *.otlp.jsonl, *.parquet or *.arrow (optionally .gz or .zst)".into(),
        });
    };
    if comp.is_some() && matches!(format, Format::Parquet | Format::Arrow) {
        return Err(ReadError::Unsupported {
            source_name: path.display().to_string(),
            message: "Parquet and Arrow files compress internally; do not wrap them in gzip/zstd"
                .into(),
        });
    }
    Ok((format, comp))
}

/// Counts bytes as they are read (compressed size, for progress).
struct Counting<R> {
    inner: R,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

fn io_err(path: &Path, e: std::io::Error) -> ReadError {
    ReadError::Io {
        source_name: path.display().to_string(),
        source: e,
    }
}

/// Opens a text input, decompressing by extension.
fn open_text(
    path: &Path,
    comp: Option<&str>,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<Box<dyn BufRead + Send>, ReadError> {
    let f = File::open(path).map_err(|e| io_err(path, e))?;
    let raw = Counting { inner: f, counter };
    Ok(match comp {
        Some("gz") => Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(raw),
        )),
        Some(_) => Box::new(BufReader::with_capacity(
            1 << 16,
            zstd::stream::read::Decoder::new(raw).map_err(|e| io_err(path, e))?,
        )),
        None => Box::new(BufReader::with_capacity(1 << 16, raw)),
    })
}

/// Opens one input as a chunk stream.
pub fn open(
    path: &Path,
    on_bad: OnBad,
    stats: &std::sync::Arc<ReadStats>,
) -> Result<ChunkIter, ReadError> {
    let (format, comp) = detect(path)?;
    let counter = std::sync::Arc::clone(&stats.bytes_read);
    Ok(match format {
        Format::Jsonl => Box::new(LineChunks::new(
            open_text(path, comp, counter)?,
            path,
            on_bad,
            stats,
            LineKind::Jsonl,
        )),
        Format::Csv => Box::new(LineChunks::new(
            open_text(path, comp, counter)?,
            path,
            on_bad,
            stats,
            LineKind::Csv(csv_metric(path)),
        )),
        Format::OtlpJson => Box::new(LineChunks::new(
            open_text(path, comp, counter)?,
            path,
            on_bad,
            stats,
            LineKind::Otlp(Box::default()),
        )),
        Format::Parquet => crate::columnar::parquet_chunks(path, counter)?,
        Format::Arrow => crate::columnar::arrow_chunks(path, counter)?,
    })
}

/// The metric name of a NAB CSV: the file stem, in the Prometheus charset.
pub fn csv_metric(path: &Path) -> String {
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("series");
    let stem = stem.split('.').next().unwrap_or(stem);
    let mut out: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

enum LineKind {
    Jsonl,
    Csv(String),
    /// Keeps delta running totals from line to line.
    Otlp(Box<crate::otlp_json::Decoder>),
}

struct LineChunks {
    input: Box<dyn BufRead + Send>,
    name: String,
    line: u64,
    on_bad: OnBad,
    stats: std::sync::Arc<ReadStats>,
    kind: LineKind,
    buf: String,
    builder: ChunkBuilder,
    cache: SeriesCache,
    done: bool,
    csv_series: Option<u32>,
}

impl LineChunks {
    fn new(
        input: Box<dyn BufRead + Send>,
        path: &Path,
        on_bad: OnBad,
        stats: &std::sync::Arc<ReadStats>,
        kind: LineKind,
    ) -> Self {
        LineChunks {
            input,
            name: path.display().to_string(),
            line: 0,
            on_bad,
            stats: std::sync::Arc::clone(stats),
            kind,
            buf: String::new(),
            builder: ChunkBuilder::default(),
            cache: SeriesCache::default(),
            done: false,
            csv_series: None,
        }
    }

    /// Parses one line into the builder.
    fn parse(&mut self, text: &str) -> Result<(), String> {
        match &mut self.kind {
            LineKind::Jsonl => {
                let f = parse_fields(text)?;
                let labels = self
                    .cache
                    .get(&f.metric, f.labels, || parse_labels(&f.metric, f.labels))?;
                self.builder.push_shared(&labels, f.ts, f.value);
            }
            LineKind::Csv(metric) => {
                if self.line == 1 && text.trim_start_matches('\u{feff}').starts_with("timestamp") {
                    return Ok(());
                }
                let (ts, value) = parse_csv(text)?;
                let s = match self.csv_series {
                    Some(s) => s,
                    None => {
                        let mut l = Labels::new();
                        l.insert(METRIC_NAME.into(), metric.clone());
                        let s = self.builder.add_series(l);
                        self.csv_series = Some(s);
                        s
                    }
                };
                self.builder.push_indexed(s, ts, value);
            }
            LineKind::Otlp(decoder) => {
                for (labels, ts, value) in decoder.parse_line(text)? {
                    self.builder.push(labels, ts, value);
                }
            }
        }
        Ok(())
    }
}

/// Parses a NAB `timestamp,value` row; timestamps are `YYYY-MM-DD HH:MM:SS` (UTC),
/// RFC 3339, or epoch milliseconds.
pub fn parse_csv(text: &str) -> Result<(i64, f64), String> {
    let (ts, value) = text.split_once(',').ok_or("expected timestamp,value")?;
    let ts = ts.trim().trim_matches('"');
    let ts = if let Ok(ms) = ts.parse::<i64>() {
        ms
    } else if ts.len() == 19 && ts.as_bytes().get(10) == Some(&b' ') {
        parse_rfc3339(&format!("{}T{}Z", &ts[..10], &ts[11..]))?
    } else {
        parse_rfc3339(ts)?
    };
    let value: f64 = value
        .trim()
        .trim_matches('"')
        .parse()
        .map_err(|_| format!("value {value:?} is not a number"))?;
    Ok((ts, value))
}

impl Iterator for LineChunks {
    type Item = Result<Chunk, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        while self.builder.len() < CHUNK_ROWS {
            self.buf.clear();
            match self.input.read_line(&mut self.buf) {
                Ok(0) => {
                    self.done = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(ReadError::Io {
                        source_name: self.name.clone(),
                        source: e,
                    }));
                }
            }
            self.line += 1;
            let text = std::mem::take(&mut self.buf);
            let trimmed = text.trim();
            if !trimmed.is_empty() {
                if let Err(message) = self.parse(trimmed) {
                    match self.on_bad {
                        OnBad::Fail => {
                            self.done = true;
                            return Some(Err(ReadError::Malformed {
                                source_name: self.name.clone(),
                                line: self.line,
                                message,
                            }));
                        }
                        OnBad::Skip => {
                            self.stats
                                .skipped
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }
            self.buf = text;
        }
        self.csv_series = None;
        self.builder.take().map(Ok)
    }
}

/// Merges inputs into one stream in event-time order (ties: input order, then row
/// order), in chunks of about [`CHUNK_ROWS`].
pub fn merge(mut inputs: Vec<ChunkIter>) -> ChunkIter {
    if inputs.len() == 1 {
        return inputs.remove(0);
    }
    Box::new(Merge {
        cursors: inputs
            .into_iter()
            .map(|it| Cursor {
                it,
                chunk: None,
                pos: 0,
            })
            .collect(),
        failed: false,
    })
}

struct Cursor {
    it: ChunkIter,
    chunk: Option<Chunk>,
    pos: usize,
}

impl Cursor {
    /// Ensures a current row; Ok(false) at the end.
    fn fill(&mut self) -> Result<bool, ReadError> {
        loop {
            if let Some(c) = &self.chunk {
                if self.pos < c.rows.len() {
                    return Ok(true);
                }
            }
            match self.it.next() {
                None => {
                    self.chunk = None;
                    return Ok(false);
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(c)) => {
                    self.chunk = Some(c);
                    self.pos = 0;
                }
            }
        }
    }

    fn ts(&self) -> i64 {
        self.chunk.as_ref().map_or(i64::MAX, |c| c.rows[self.pos].1)
    }
}

struct Merge {
    cursors: Vec<Cursor>,
    failed: bool,
}

impl Iterator for Merge {
    type Item = Result<Chunk, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut out = Chunk::default();
        let mut remap: HashMap<(usize, u32), u32> = HashMap::new();
        while out.rows.len() < CHUNK_ROWS {
            let mut best: Option<(i64, usize)> = None;
            for (i, c) in self.cursors.iter_mut().enumerate() {
                match c.fill() {
                    Ok(true) => {
                        let ts = c.ts();
                        if best.is_none_or(|(b, _)| ts < b) {
                            best = Some((ts, i));
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
            }
            let Some((_, i)) = best else { break };
            // Take this input's rows up to the next input's time.
            let limit = self
                .cursors
                .iter()
                .enumerate()
                .filter(|&(j, c)| j != i && c.chunk.is_some())
                .map(|(j, c)| (c.ts(), j))
                .min()
                .unwrap_or((i64::MAX, usize::MAX));
            let Cursor { chunk, pos, .. } = &mut self.cursors[i];
            let Some(chunk) = chunk.as_ref() else { break };
            while *pos < chunk.rows.len() && out.rows.len() < CHUNK_ROWS {
                let (s, ts, v) = chunk.rows[*pos];
                if (ts, i) > limit {
                    break;
                }
                let o = *remap.entry((i, s)).or_insert_with(|| {
                    out.series.push(Arc::clone(&chunk.series[s as usize]));
                    (out.series.len() - 1) as u32
                });
                out.rows.push((o, ts, v));
                *pos += 1;
            }
        }
        (!out.rows.is_empty()).then_some(Ok(out))
    }
}

/// Expands directories into their recording files (sorted); files are kept as given.
pub fn expand_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| io_err(p, e))?;
            let mut found: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| f.is_file() && detect(f).is_ok())
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(rows: &[(&str, i64)]) -> Chunk {
        let mut b = ChunkBuilder::default();
        for &(name, ts) in rows {
            let mut l = Labels::new();
            l.insert(METRIC_NAME.into(), name.into());
            b.push(l, ts, ts as f64);
        }
        b.take().unwrap()
    }

    #[test]
    fn merge_orders_by_time_then_input() {
        let a: ChunkIter =
            Box::new(vec![Ok(chunk(&[("a", 1), ("a", 3)])), Ok(chunk(&[("a", 5)]))].into_iter());
        let b: ChunkIter = Box::new(vec![Ok(chunk(&[("b", 1), ("b", 2), ("b", 6)]))].into_iter());
        let merged: Vec<(String, i64)> = merge(vec![a, b])
            .flat_map(|c| {
                let c = c.unwrap();
                c.rows
                    .iter()
                    .map(|&(s, ts, _)| (c.series[s as usize][METRIC_NAME].clone(), ts))
                    .collect::<Vec<_>>()
            })
            .collect();
        let expect: Vec<(String, i64)> =
            [("a", 1), ("b", 1), ("b", 2), ("a", 3), ("a", 5), ("b", 6)]
                .iter()
                .map(|(n, t)| (n.to_string(), *t))
                .collect();
        assert_eq!(merged, expect);
    }

    #[test]
    fn jsonl_series_are_shared_across_chunks_and_spellings_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut text = String::new();
        for i in 0..CHUNK_ROWS + 10 {
            // The same labels spelt two ways: one series for the engine.
            let labels = if i % 2 == 0 {
                r#"{"a":"1","b":"2"}"#
            } else {
                r#"{ "b": "2", "a": "1" }"#
            };
            text += &format!(
                "{{\"ts\":{i},\"metric\":\"m\",\"labels\":{labels},\"value\":\"{}\"}}\n",
                if i == 3 {
                    "+Inf".to_string()
                } else {
                    i.to_string()
                }
            );
        }
        std::fs::write(&path, text).unwrap();
        let stats = std::sync::Arc::new(ReadStats::default());
        let chunks: Vec<Chunk> = open(&path, OnBad::Fail, &stats)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].series.len(), 2, "one set per spelling");
        assert!(Arc::ptr_eq(&chunks[0].series[0], &chunks[1].series[0]));
        let want = Labels::from([
            ("__name__".to_string(), "m".to_string()),
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]);
        assert!(chunks[0].series.iter().all(|s| **s == want));
        assert_eq!(chunks[0].rows[3].2, f64::INFINITY);
        assert_eq!(chunks[1].rows.last().unwrap().1, (CHUNK_ROWS + 9) as i64);
    }

    #[test]
    fn nab_csv_rows() {
        assert_eq!(
            parse_csv("2014-04-01 00:00:00,20.5").unwrap(),
            (1_396_310_400_000, 20.5)
        );
        assert_eq!(parse_csv("1000,1").unwrap(), (1000, 1.0));
        assert!(parse_csv("2014-04-01 00:00:00;20.5").is_err());
        assert_eq!(
            csv_metric(Path::new("/x/ec2_cpu_utilization_825cc2.csv.gz")),
            "ec2_cpu_utilization_825cc2"
        );
        assert_eq!(
            csv_metric(Path::new("exchange-2_cpc_results.csv")),
            "exchange_2_cpc_results"
        );
    }

    #[test]
    fn detects_formats() {
        assert_eq!(
            detect(Path::new("a.jsonl.gz")).unwrap(),
            (Format::Jsonl, Some("gz"))
        );
        assert_eq!(
            detect(Path::new("a.otlp.jsonl")).unwrap(),
            (Format::OtlpJson, None)
        );
        assert_eq!(
            detect(Path::new("a.parquet")).unwrap(),
            (Format::Parquet, None)
        );
        assert!(detect(Path::new("a.parquet.gz")).is_err());
        assert!(detect(Path::new("a.txt")).is_err());
    }
}
