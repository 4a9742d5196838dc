//! Parquet and Arrow IPC recordings: reading them as chunks, and writing them
//! ([`Recorder`], behind `vigil record`).
//!
//! Columns: `ts` (timestamp ms, or int64 ms), `metric` (utf8), `labels` (a JSON object
//! as utf8, or a map of utf8 to utf8), `value` (float64). Written files store `metric`
//! and `labels` dictionary-encoded, so a series' labels are stored and parsed once per
//! row group, not once per sample.
//!
//! A recording made by `vigil run` also stores, in each file's footer under
//! [`LATENESS_KEY`], the lateness the live engine ran with, so that a replay evaluates
//! it with the same lateness by default ([`recorded_lateness`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, MapArray, RecordBatch,
    StringDictionaryBuilder, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::WriterProperties;
use vigil_engine::labels::{Labels, METRIC_NAME};

use crate::source::{Chunk, ChunkBuilder, ChunkIter, FastMap, CHUNK_ROWS};
use crate::ReadError;

/// The schema `vigil record` writes.
pub fn recording_schema() -> SchemaRef {
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("metric", dict.clone(), false),
        Field::new("labels", dict, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

fn bad(path: &Path, message: impl Into<String>) -> ReadError {
    ReadError::Malformed {
        source_name: path.display().to_string(),
        line: 0,
        message: message.into(),
    }
}

/// Opens `path` and its size, or says which file could not be opened.
fn open_file(path: &Path) -> Result<(File, u64), ReadError> {
    let f = File::open(path).map_err(|e| ReadError::Io {
        source_name: path.display().to_string(),
        source: e,
    })?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((f, size))
}

/// A reader of the Parquet file `f` (at `path`), its footer read.
fn parquet_builder(
    path: &Path,
    f: File,
) -> Result<ParquetRecordBatchReaderBuilder<File>, ReadError> {
    ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| bad(path, format!("not a readable Parquet file: {e}")))
}

/// Reads a Parquet recording.
pub(crate) fn parquet_chunks(path: &Path, counter: Arc<AtomicU64>) -> Result<ChunkIter, ReadError> {
    let (f, size) = open_file(path)?;
    let builder = parquet_builder(path, f)?;
    let total = builder.metadata().file_metadata().num_rows().max(1) as u64;
    let reader = builder
        .with_batch_size(CHUNK_ROWS)
        .build()
        .map_err(|e| bad(path, format!("not a readable Parquet file: {e}")))?;
    let rows = reader.into_iter().map(|b| b.map_err(|e| e.to_string()));
    Ok(batches(path, rows, size, total, counter))
}

/// Reads an Arrow IPC file.
pub(crate) fn arrow_chunks(path: &Path, counter: Arc<AtomicU64>) -> Result<ChunkIter, ReadError> {
    let (f, size) = open_file(path)?;
    let reader = datafusion::arrow::ipc::reader::FileReader::try_new(f, None)
        .map_err(|e| bad(path, format!("not a readable Arrow IPC file: {e}")))?;
    // Rows are not known up front: count progress in batches.
    let total = (reader.num_batches().max(1) * CHUNK_ROWS) as u64;
    Ok(batches(
        path,
        reader.map(|b| b.map_err(|e| e.to_string())),
        size,
        total,
        counter,
    ))
}

/// Chunks of record batches; progress is reported as the share of `total_rows` read,
/// scaled to the file size.
fn batches(
    path: &Path,
    it: impl Iterator<Item = Result<RecordBatch, String>> + Send + 'static,
    size: u64,
    total_rows: u64,
    counter: Arc<AtomicU64>,
) -> ChunkIter {
    let name = path.display().to_string();
    let mut cache = SeriesCache::default();
    Box::new(it.map(move |b| {
        let batch = b.map_err(|message| ReadError::Malformed {
            source_name: name.clone(),
            line: 0,
            message,
        })?;
        counter.fetch_add(
            size.saturating_mul(batch.num_rows() as u64) / total_rows,
            Ordering::Relaxed,
        );
        cache.chunk(&batch).map_err(|message| ReadError::Malformed {
            source_name: name.clone(),
            line: 0,
            message,
        })
    }))
}

/// Label sets parsed once per distinct (metric, labels) text, and the series of each
/// dictionary key of the last dictionaries seen (a row group's batches share them).
#[derive(Default)]
struct SeriesCache {
    sets: crate::source::SeriesCache,
    /// The dictionaries `by_key` was built for (held, so their addresses stay theirs).
    dicts: Option<(ArrayRef, ArrayRef)>,
    /// Per labels key: the metric key and label set of its first row (most labels texts
    /// go with one metric). Other pairs go to `others`.
    by_key: Vec<Option<(i32, Arc<Labels>)>>,
    others: FastMap<(i32, i32), Arc<Labels>>,
}

/// Reads `v`, which must be a JSON object of strings, as labels of `metric`.
fn parse_json_labels(metric: &str, text: &str) -> Result<Labels, String> {
    let mut l: Labels = if text.is_empty() {
        Labels::new()
    } else {
        serde_json::from_str(text)
            .map_err(|e| format!("labels {text:?} are not a JSON object of strings: {e}"))?
    };
    l.insert(METRIC_NAME.into(), metric.to_string());
    Ok(l)
}

impl SeriesCache {
    /// Forgets the per-key series when the dictionaries change.
    fn use_dicts(&mut self, metric: &ArrayRef, labels: &ArrayRef) {
        let same = self
            .dicts
            .as_ref()
            .is_some_and(|(m, l)| Arc::ptr_eq(m, metric) && Arc::ptr_eq(l, labels));
        if !same {
            self.dicts = Some((Arc::clone(metric), Arc::clone(labels)));
            self.by_key.clear();
            self.by_key.resize(labels.len() + 1, None);
            self.others.clear();
        }
    }

    fn chunk(&mut self, batch: &RecordBatch) -> Result<Chunk, String> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| format!("missing column {name:?} (need ts, metric, labels, value)"))
        };
        let ts = cast(col("ts")?, &DataType::Int64).map_err(|e| format!("column ts: {e}"))?;
        let ts: &Int64Array = ts.as_primitive();
        let value =
            cast(col("value")?, &DataType::Float64).map_err(|e| format!("column value: {e}"))?;
        let value: &Float64Array = value.as_primitive();
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let metric = cast(col("metric")?, &dict).map_err(|e| format!("column metric: {e}"))?;
        let labels_col = col("labels")?;
        let labels = match labels_col.data_type() {
            DataType::Map(..) => map_to_json(labels_col.as_map())?,
            _ => Arc::clone(labels_col),
        };
        let labels = cast(&labels, &dict).map_err(|e| format!("column labels: {e}"))?;
        let (metric, labels) = (
            metric.as_dictionary::<Int32Type>(),
            labels.as_dictionary::<Int32Type>(),
        );
        if ts.null_count() > 0 || metric.null_count() > 0 {
            return Err("ts and metric must not be null".into());
        }
        self.use_dicts(metric.values(), labels.values());
        let (mvals, lvals) = (
            metric.values().as_string::<i32>(),
            labels.values().as_string::<i32>(),
        );
        let mut chunk = ChunkBuilder::default();
        let (mkeys, lkeys) = (metric.keys().values(), labels.keys().values());
        for row in 0..batch.num_rows() {
            let m = mkeys[row];
            // Null labels: the last slot of `by_key`.
            let l = if labels.is_null(row) { -1 } else { lkeys[row] };
            let slot = if l < 0 { lvals.len() } else { l as usize };
            let series = match self.by_key.get(slot) {
                Some(Some((km, set))) if *km == m => Arc::clone(set),
                Some(first) => {
                    let first_free = first.is_none();
                    let set = match self.others.get(&(m, l)) {
                        Some(set) => Arc::clone(set),
                        None => {
                            let mtext = mvals.value(m as usize);
                            let ltext = if l < 0 { "" } else { lvals.value(slot) };
                            let set = self
                                .sets
                                .get(mtext, ltext, || parse_json_labels(mtext, ltext))?;
                            if !first_free {
                                self.others.insert((m, l), Arc::clone(&set));
                            }
                            set
                        }
                    };
                    if first_free {
                        self.by_key[slot] = Some((m, Arc::clone(&set)));
                    }
                    set
                }
                None => return Err(format!("row {row}: labels key {l} out of range")),
            };
            let v = if value.is_null(row) {
                f64::NAN
            } else {
                value.values()[row]
            };
            chunk.push_shared(&series, ts.values()[row], v);
        }
        Ok(chunk.take().unwrap_or_default())
    }
}

fn map_to_json(m: &MapArray) -> Result<ArrayRef, String> {
    let keys = cast(m.keys(), &DataType::Utf8).map_err(|e| e.to_string())?;
    let vals = cast(m.values(), &DataType::Utf8).map_err(|e| e.to_string())?;
    let (keys, vals) = (keys.as_string::<i32>(), vals.as_string::<i32>());
    let offsets = m.value_offsets();
    let mut out = Vec::with_capacity(m.len());
    for row in 0..m.len() {
        let mut l = Labels::new();
        for i in offsets[row] as usize..offsets[row + 1] as usize {
            l.insert(keys.value(i).to_string(), vals.value(i).to_string());
        }
        out.push(serde_json::to_string(&l).map_err(|e| e.to_string())?);
    }
    Ok(Arc::new(datafusion::arrow::array::StringArray::from(out)))
}

/// Writes what the engine ingests to Parquet files, rotated by size and by time.
/// Files are written as `*.parquet.tmp` and renamed when complete, so a reader never
/// sees half a file.
pub struct Recorder {
    dir: PathBuf,
    max_bytes: u64,
    max_age_ms: i64,
    writer: Option<(ArrowWriter<File>, PathBuf, i64)>,
    ts: Vec<i64>,
    metric: StringDictionaryBuilder<Int32Type>,
    labels: StringDictionaryBuilder<Int32Type>,
    value: Vec<f64>,
    /// Each series' `metric` and `labels` column text, by its labels.
    label_text: FastMap<Labels, (String, String)>,
    seq: u64,
    files: Vec<PathBuf>,
    rows: u64,
    lateness_ms: Option<i64>,
}

/// The footer key of the live engine's lateness (ms, decimal) in a recording.
pub const LATENESS_KEY: &str = "vigil.lateness_ms";

/// The lateness (ms) the live engine that recorded `paths` ran with: the largest
/// found in their footers, None when no file has one (files from `vigil record` or
/// another writer). Files other than Parquet are skipped.
pub fn recorded_lateness(paths: &[PathBuf]) -> Result<Option<i64>, ReadError> {
    let mut found: Option<i64> = None;
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("parquet") {
            continue;
        }
        let (f, _) = open_file(path)?;
        let entry = parquet_builder(path, f)?
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kvs| kvs.iter().find(|kv| kv.key == LATENESS_KEY))
            .and_then(|kv| kv.value.clone());
        if let Some(text) = entry {
            let ms = text
                .parse::<i64>()
                .ok()
                .filter(|ms| *ms >= 0)
                .ok_or_else(|| {
                    bad(
                        path,
                        format!("{LATENESS_KEY} in the footer is not a lateness in ms: {text:?}"),
                    )
                })?;
            found = Some(found.map_or(ms, |f| f.max(ms)));
        }
    }
    Ok(found)
}

/// A series' `metric` and `labels` column text: its name, and its other labels as a
/// JSON object.
fn label_columns(labels: &Labels) -> (String, String) {
    let metric = labels.get(METRIC_NAME).cloned().unwrap_or_default();
    let rest: Labels = labels
        .iter()
        .filter(|(k, _)| *k != METRIC_NAME)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let json = serde_json::to_string(&rest).unwrap_or_else(|_| "{}".into());
    (metric, json)
}

/// Rotation settings.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// Start a new file past this many bytes.
    pub max_bytes: u64,
    /// Start a new file after this much event time, ms.
    pub max_age_ms: i64,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 256 << 20,
            max_age_ms: 3_600_000,
        }
    }
}

/// A recording could not be written.
#[derive(Debug, thiserror::Error)]
#[error("recording to {path}: {message}")]
pub struct RecordError {
    /// File or directory.
    pub path: String,
    /// What failed.
    pub message: String,
}

impl Recorder {
    /// Records into `dir` (created if needed).
    pub fn new(dir: impl Into<PathBuf>, rotation: Rotation) -> Result<Self, RecordError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| RecordError {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Recorder {
            dir,
            max_bytes: rotation.max_bytes,
            max_age_ms: rotation.max_age_ms,
            writer: None,
            ts: Vec::new(),
            metric: StringDictionaryBuilder::new(),
            labels: StringDictionaryBuilder::new(),
            value: Vec::new(),
            label_text: FastMap::default(),
            seq: 0,
            files: Vec::new(),
            rows: 0,
            lateness_ms: None,
        })
    }

    /// Stores the live engine's lateness in the footer of every file from now on (see
    /// [`recorded_lateness`]).
    pub fn with_lateness(mut self, lateness_ms: i64) -> Self {
        self.lateness_ms = Some(lateness_ms);
        self
    }

    /// Appends one sample.
    pub fn record(&mut self, labels: &Labels, ts: i64, value: f64) -> Result<(), RecordError> {
        if let Some((w, _, start)) = &self.writer {
            if ts - *start >= self.max_age_ms
                || w.bytes_written() as u64 + w.in_progress_size() as u64 >= self.max_bytes
            {
                self.rotate()?;
            }
        }
        if self.writer.is_none() {
            self.open(ts)?;
        }
        if self.label_text.len() > 1_000_000 && !self.label_text.contains_key(labels) {
            self.label_text.clear();
        }
        // One lookup for a known series; the text is made once per series.
        if let Some((metric, json)) = self.label_text.get(labels) {
            self.metric.append_value(metric);
            self.labels.append_value(json);
        } else {
            let (metric, json) = label_columns(labels);
            self.metric.append_value(&metric);
            self.labels.append_value(&json);
            self.label_text.insert(labels.clone(), (metric, json));
        }
        self.ts.push(ts);
        self.value.push(value);
        self.rows += 1;
        if self.ts.len() >= CHUNK_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn err(&self, message: impl ToString) -> RecordError {
        RecordError {
            path: self.dir.display().to_string(),
            message: message.to_string(),
        }
    }

    fn open(&mut self, ts: i64) -> Result<(), RecordError> {
        // Never replace a file of an earlier recording into the same directory (a
        // restarted service, the same input recorded twice).
        let path = loop {
            self.seq += 1;
            let path = self.dir.join(format!("vigil-{ts}-{:04}.parquet", self.seq));
            if !path.exists() && !path.with_extension("parquet.tmp").exists() {
                break path;
            }
        };
        let tmp = path.with_extension("parquet.tmp");
        let f = File::create(&tmp).map_err(|e| self.err(format!("{}: {e}", tmp.display())))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).map_err(|e| self.err(e))?,
            ))
            .set_max_row_group_row_count(Some(1 << 20))
            .set_key_value_metadata(
                self.lateness_ms
                    .map(|ms| vec![KeyValue::new(LATENESS_KEY.to_string(), ms.to_string())]),
            )
            .build();
        let w =
            ArrowWriter::try_new(f, recording_schema(), Some(props)).map_err(|e| self.err(e))?;
        self.writer = Some((w, path, ts));
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), RecordError> {
        if self.ts.is_empty() {
            return Ok(());
        }
        let batch = RecordBatch::try_new(
            recording_schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from(std::mem::take(
                    &mut self.ts,
                ))),
                Arc::new(self.metric.finish()),
                Arc::new(self.labels.finish()),
                Arc::new(Float64Array::from(std::mem::take(&mut self.value))),
            ],
        )
        .map_err(|e| self.err(e))?;
        if let Some((w, _, _)) = &mut self.writer {
            w.write(&batch).map_err(|e| RecordError {
                path: self.dir.display().to_string(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Closes the current file (complete, renamed into place) so the next sample
    /// starts a new one.
    pub fn rotate(&mut self) -> Result<(), RecordError> {
        self.flush_batch()?;
        if let Some((w, path, _)) = self.writer.take() {
            w.close().map_err(|e| self.err(e))?;
            std::fs::rename(path.with_extension("parquet.tmp"), &path).map_err(|e| self.err(e))?;
            self.files.push(path);
        }
        Ok(())
    }

    /// Finishes the last file; returns every file written.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, RecordError> {
        self.rotate()?;
        Ok(std::mem::take(&mut self.files))
    }

    /// Samples recorded.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The files completed so far (renamed into place), oldest first.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Whether a file is open (samples were recorded since the last rotation).
    pub fn is_open(&self) -> bool {
        self.writer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{open, OnBad, ReadStats};

    #[test]
    fn record_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recorder::new(
            dir.path(),
            Rotation {
                max_bytes: u64::MAX,
                max_age_ms: 60_000,
            },
        )
        .unwrap();
        let mut l = Labels::new();
        l.insert(METRIC_NAME.into(), "cpu".into());
        l.insert("node".into(), "n1".into());
        for i in 0..100 {
            r.record(&l, i * 1000, i as f64).unwrap();
        }
        let files = r.finish().unwrap();
        assert_eq!(files.len(), 2, "rotated after 60 s of event time");
        let stats = Arc::new(ReadStats::default());
        let mut rows = Vec::new();
        for f in &files {
            for c in open(f, OnBad::Fail, &stats).unwrap() {
                let c = c.unwrap();
                for &(s, ts, v) in &c.rows {
                    assert_eq!(*c.series[s as usize], l);
                    rows.push((ts, v));
                }
            }
        }
        assert_eq!(rows.len(), 100);
        assert_eq!(rows[99], (99_000, 99.0));
    }

    #[test]
    fn the_live_lateness_is_read_back_from_the_footers() {
        let dir = tempfile::tempdir().unwrap();
        let l = Labels::from([(METRIC_NAME.to_string(), "cpu".to_string())]);
        let write = |sub: &str, lateness: Option<i64>| {
            let mut r = Recorder::new(dir.path().join(sub), Rotation::default()).unwrap();
            if let Some(ms) = lateness {
                r = r.with_lateness(ms);
            }
            r.record(&l, 0, 1.0).unwrap();
            r.finish().unwrap()
        };
        let (plain, two, ten) = (
            write("a", None),
            write("b", Some(2_000)),
            write("c", Some(10_000)),
        );
        assert_eq!(recorded_lateness(&plain).unwrap(), None);
        assert_eq!(recorded_lateness(&two).unwrap(), Some(2_000));
        let all: Vec<PathBuf> = [plain, two, ten].concat();
        assert_eq!(
            recorded_lateness(&all).unwrap(),
            Some(10_000),
            "the largest"
        );
        let garbage = dir.path().join("x.parquet");
        std::fs::write(&garbage, b"not parquet").unwrap();
        let err = recorded_lateness(&[garbage]).unwrap_err().to_string();
        assert!(err.contains("x.parquet"), "{err}");
    }

    /// A series is one shared label set in every chunk (the driver interns it once),
    /// and series sharing a labels text under different metrics stay apart.
    #[test]
    fn chunks_share_label_sets_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Recorder::new(dir.path(), Rotation::default()).unwrap();
        let mk = |metric: &str| {
            Labels::from([
                (METRIC_NAME.to_string(), metric.to_string()),
                ("node".to_string(), "n1".to_string()),
            ])
        };
        let (cpu, mem) = (mk("cpu"), mk("mem"));
        let n = CHUNK_ROWS as i64 + 100;
        for i in 0..n {
            r.record(if i % 2 == 0 { &cpu } else { &mem }, i, i as f64)
                .unwrap();
        }
        let files = r.finish().unwrap();
        let stats = Arc::new(ReadStats::default());
        let chunks: Vec<Chunk> = open(&files[0], OnBad::Fail, &stats)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(chunks.len() >= 2);
        let find = |c: &Chunk, l: &Labels| {
            c.series
                .iter()
                .find(|s| ***s == *l)
                .map(Arc::clone)
                .unwrap()
        };
        for l in [&cpu, &mem] {
            assert!(Arc::ptr_eq(&find(&chunks[0], l), &find(&chunks[1], l)));
        }
        let mut total = 0;
        for c in &chunks {
            for &(s, ts, v) in &c.rows {
                let want = if ts % 2 == 0 { &cpu } else { &mem };
                assert_eq!(*c.series[s as usize], *want, "row at {ts}");
                assert_eq!(v, ts as f64);
                total += 1;
            }
        }
        assert_eq!(total, n);
    }

    #[test]
    fn a_second_recording_into_the_same_directory_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Labels::new();
        l.insert(METRIC_NAME.into(), "cpu".into());
        let mut files = Vec::new();
        for run in 0..2 {
            let mut r = Recorder::new(dir.path(), Rotation::default()).unwrap();
            r.record(&l, 1000, f64::from(run)).unwrap();
            assert!(r.is_open());
            files.extend(r.finish().unwrap());
        }
        assert_eq!(files.len(), 2);
        assert_ne!(files[0], files[1], "same first timestamp, distinct files");
        assert!(files.iter().all(|f| f.exists()));
    }
}
