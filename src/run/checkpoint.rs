//! Checkpoints of the evaluator state in the state directory: written periodically (in
//! the background: the engine only copies its state) and on shutdown, atomically (temp
//! file, fsync, rename, fsync of the directory), and restored on start. A corrupt or
//! incompatible checkpoint is reported and set aside, never fatal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{anyhow, Context, Result};
use tokio::sync::oneshot;
use tracing::{info, warn};
use vigil_engine::{Evaluator, EvaluatorConfig, RuleSet};

const FILE: &str = "checkpoint.bin";

/// What the API reports about checkpoints.
#[derive(Debug, Clone, Default)]
pub(crate) struct CheckpointStatus {
    /// Wall time of the last successful write.
    pub(crate) last_success: Option<SystemTime>,
    pub(crate) writes_ok: u64,
    pub(crate) writes_failed: u64,
    pub(crate) last_bytes: usize,
}

/// Writes checkpoints into one directory.
pub(crate) struct Checkpointer {
    dir: Option<PathBuf>,
    status: CheckpointStatus,
    /// The write in progress, on its own thread; it answers with the checkpoint's size.
    writing: Option<oneshot::Receiver<Result<usize>>>,
}

impl Checkpointer {
    /// Checkpoints into `dir`; None disables them.
    pub(crate) fn new(dir: Option<PathBuf>) -> Self {
        Checkpointer {
            dir,
            status: CheckpointStatus::default(),
            writing: None,
        }
    }

    pub(crate) fn status(&self) -> CheckpointStatus {
        self.status.clone()
    }

    /// Whether checkpoints are written at all.
    pub(crate) fn enabled(&self) -> bool {
        self.dir.is_some()
    }

    /// Whether the previous periodic write is still running (a finished one is
    /// accounted for here).
    pub(crate) fn busy(&mut self) -> bool {
        match self.writing.as_mut().map(|rx| rx.try_recv()) {
            Some(Err(oneshot::error::TryRecvError::Empty)) => true,
            Some(done) => {
                self.writing = None;
                self.account(done.ok());
                false
            }
            None => false,
        }
    }

    /// Starts checkpointing a copy of the evaluator and returns at once: the engine
    /// pays for the copy (a sixth of what serialising costs, see BENCHMARKS.md) and
    /// keeps evaluating while a thread of the lowest priority serialises and writes the
    /// copy with CPU time the engine and intake leave over. Call when not
    /// [`busy`](Self::busy).
    pub(crate) fn start(&mut self, copy: Evaluator) {
        self.spawn(move |dir| {
            lower_priority();
            let bytes = copy.snapshot();
            write_atomic(dir, &bytes).map(|()| bytes.len())
        });
    }

    /// Writes `bytes` atomically and waits for it (the final checkpoint), after any
    /// write still running; failures are logged and counted.
    pub(crate) async fn write(&mut self, bytes: Vec<u8>) {
        self.finish().await;
        self.spawn(move |dir| write_atomic(dir, &bytes).map(|()| bytes.len()));
        self.finish().await;
    }

    /// Runs `job` on a thread of its own; its answer is taken by `busy` or `finish`.
    fn spawn(&mut self, job: impl FnOnce(&Path) -> Result<usize> + Send + 'static) {
        let Some(dir) = self.dir.clone() else { return };
        let (tx, rx) = oneshot::channel();
        let started = std::thread::Builder::new()
            .name("vigil-checkpoint".into())
            .spawn(move || {
                let _ = tx.send(job(&dir));
            });
        match started {
            Ok(_) => self.writing = Some(rx),
            Err(e) => self.account(Some(Err(
                anyhow!(e).context("cannot start the checkpoint thread")
            ))),
        }
    }

    /// Waits for the write in progress, if any, and accounts for it.
    async fn finish(&mut self) {
        if let Some(rx) = self.writing.take() {
            self.account(rx.await.ok());
        }
    }

    /// Counts and logs a write's answer (None: its thread ended without one).
    fn account(&mut self, answer: Option<Result<usize>>) {
        match answer.unwrap_or_else(|| Err(anyhow!("the checkpoint thread panicked"))) {
            Ok(len) => {
                self.status.last_success = Some(SystemTime::now());
                self.status.writes_ok += 1;
                self.status.last_bytes = len;
            }
            Err(e) => {
                self.status.writes_failed += 1;
                warn!(error = %format!("{e:#}"), "checkpoint write failed");
            }
        }
    }
}

/// Puts the calling thread at nice 19: on Linux the nice value is a thread's own, and
/// `who = 0` names the calling thread. Elsewhere it would name the whole process, so
/// it does nothing there.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lower_priority() {
    // SAFETY: setpriority(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot lower the checkpoint thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

fn write_atomic(dir: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create state dir {}", dir.display()))?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let dst = dir.join(FILE);
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &dst).with_context(|| format!("cannot rename to {}", dst.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Restores the evaluator from `dir`, or starts empty (reporting why).
pub(crate) fn restore(
    dir: Option<&Path>,
    rules: Arc<RuleSet>,
    config: EvaluatorConfig,
) -> Evaluator {
    let Some(dir) = dir else {
        return Evaluator::new(rules, config);
    };
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            info!(path = %path.display(), "no checkpoint; starting with empty state");
            return Evaluator::new(rules, config);
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read checkpoint; starting with empty state");
            return Evaluator::new(rules, config);
        }
    };
    match Evaluator::restore(Arc::clone(&rules), config, &bytes) {
        Ok(ev) => {
            let alerts = ev.alerts();
            info!(
                path = %path.display(),
                series = ev.series().len(),
                alerts = alerts.len(),
                watermark = ev.watermark().unwrap_or_default(),
                "restored state from checkpoint"
            );
            ev
        }
        Err(e) => {
            let aside = dir.join(format!("{FILE}.rejected"));
            let _ = std::fs::rename(&path, &aside);
            warn!(
                path = %path.display(),
                moved_to = %aside.display(),
                error = %e,
                "checkpoint rejected; starting with empty state"
            );
            Evaluator::new(rules, config)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Arc<RuleSet> {
        let text = "group: g\ninterval: 10s\nrules:\n  - name: High\n    select: x\n    detect: { threshold: { above: 5 } }\n";
        Arc::new(
            RuleSet::from_sources(&[vigil_engine::rule::Source {
                name: "t.yaml".into(),
                text: text.into(),
            }])
            .unwrap(),
        )
    }

    #[test]
    fn corrupt_checkpoint_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"garbage").unwrap();
        let ev = restore(Some(dir.path()), rules(), EvaluatorConfig::default());
        assert!(ev.watermark().is_none());
        assert!(dir.path().join(format!("{FILE}.rejected")).exists());
        assert!(!dir.path().join(FILE).exists());
    }

    /// An evaluator with series `x` and its id.
    fn evaluator() -> (Evaluator, vigil_engine::SeriesId) {
        let mut ev = Evaluator::new(rules(), EvaluatorConfig::default());
        let id = ev.intern(
            &[("__name__".to_string(), "x".to_string())]
                .into_iter()
                .collect(),
        );
        (ev, id)
    }

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ev, id) = evaluator();
        ev.ingest(&[vigil_engine::Sample {
            series: id,
            ts: 0,
            value: 9.0,
        }]);
        ev.flush();
        write_atomic(dir.path(), &ev.snapshot()).unwrap();
        let back = restore(Some(dir.path()), rules(), EvaluatorConfig::default());
        assert_eq!(back.alerts(), ev.alerts());
        assert_eq!(back.alerts().len(), 1);
    }

    #[tokio::test]
    async fn a_periodic_checkpoint_writes_the_state_it_was_started_with() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ev, id) = evaluator();
        let sample = |ts, value| vigil_engine::Sample {
            series: id,
            ts,
            value,
        };
        ev.ingest(&[sample(0, 9.0)]);
        ev.flush();
        let mut c = Checkpointer::new(Some(dir.path().to_path_buf()));
        c.start(ev.clone());
        // The engine goes on while the copy is written: the checkpoint is of the copy.
        ev.ingest(&[sample(60_000, 1.0)]);
        ev.flush();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while c.busy() {
            assert!(std::time::Instant::now() < deadline, "write never finished");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let status = c.status();
        assert_eq!((status.writes_ok, status.writes_failed), (1, 0));
        assert!(status.last_bytes > 0);
        let back = restore(Some(dir.path()), rules(), EvaluatorConfig::default());
        assert_eq!(back.watermark(), Some(1), "the state as of the copy");
        assert_eq!(back.alerts().len(), 1);
    }
}
