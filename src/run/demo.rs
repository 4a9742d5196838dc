//! `vigil run --demo`: feeds a bundled incident recording through the live intake path,
//! accelerated, so a newcomer sees alerts fire within a minute.
//!
//! The recording (`examples/incidents/node-avalanche/`) is 40 minutes of a 4-node
//! cluster in which one node saturates (CPU throttling, then memory pressure: the
//! compound NodeAvalanche rule asks to isolate it), one node stops reporting and one pod
//! leaks goroutines. Timestamps are shifted so the recording ends now.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::info;
use vigil_engine::Labels;
use vigil_replay::jsonl::parse_line;

use super::engine::{now_ms, EngineHandle, IngestBatch};

const RECORDING: &str = include_str!("../../examples/incidents/node-avalanche/recording.jsonl");

/// Plays the recording at `speed` × real time.
pub(crate) async fn play(
    engine: EngineHandle,
    speed: f64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let mut records = Vec::new();
    for (i, line) in RECORDING.lines().enumerate() {
        records.push(
            parse_line(line)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("demo recording line {}", i + 1))?,
        );
    }
    let (Some(first), Some(last)) = (records.first().map(|r| r.ts), records.last().map(|r| r.ts))
    else {
        return Ok(());
    };
    let shift = now_ms() - last;
    info!(
        samples = records.len(),
        minutes = (last - first) / 60_000,
        speed,
        "demo: playing the node-avalanche recording; watch the alerts below, the UI and /api/v1/alerts"
    );
    let started = Instant::now();
    let mut next = 0;
    while next < records.len() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return Ok(()),
        }
        let upto = first + (started.elapsed().as_secs_f64() * speed * 1000.0) as i64;
        let mut batch = IngestBatch::default();
        let mut index: HashMap<&Labels, u32> = HashMap::new();
        while next < records.len() && records[next].ts <= upto {
            let r = &records[next];
            let i = *index.entry(&r.labels).or_insert_with(|| {
                batch.series.push(r.labels.clone());
                (batch.series.len() - 1) as u32
            });
            batch.samples.push((i, r.ts + shift, r.value));
            next += 1;
        }
        if !batch.samples.is_empty() && engine.ingest(batch).await.is_err() {
            return Ok(());
        }
    }
    info!("demo: recording finished; the service keeps running (Ctrl-C to stop)");
    Ok(())
}
