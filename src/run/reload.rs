//! Hot reload of the rule set: on changes in the rules directories (the `notify` crate),
//! on SIGHUP and on `POST /-/reload`. The new set is validated in full before it is
//! swapped in; an invalid set is rejected whole and the old one keeps running.
//!
//! Directories are watched, not files: a Kubernetes ConfigMap volume replaces its
//! content by atomically swapping a `..data` symlink, which an inode watch on a single
//! file never sees, but which shows up as events in the directory.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use vigil_engine::rule::{rule_files, RuleSet};

use super::engine::EngineHandle;

/// Outcome history of reloads, for the API and metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReloadStatus {
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    /// Error of the last attempt, when it failed.
    pub(crate) last_error: Option<String>,
    pub(crate) last_success: Option<SystemTime>,
}

/// Why a reload was asked for.
pub(crate) enum Trigger {
    /// A file changed in a watched directory.
    Watch,
    /// SIGHUP.
    Signal,
    /// `POST /-/reload`; the reply says what happened.
    Http(oneshot::Sender<Result<String, String>>),
}

/// Shared reload status.
pub(crate) type SharedStatus = Arc<Mutex<ReloadStatus>>;

/// Loads and validates the rule set at `paths`, with a digest of the files' content.
pub(crate) fn load(paths: &[PathBuf]) -> Result<(RuleSet, u64), String> {
    let files = rule_files(paths).map_err(|e| e.to_string())?;
    let mut h = DefaultHasher::new();
    for f in &files {
        f.hash(&mut h);
        std::fs::read(f)
            .map_err(|e| format!("{}: {e}", f.display()))?
            .hash(&mut h);
    }
    let set = RuleSet::load(&files).map_err(|e| e.to_string())?;
    Ok((set, h.finish()))
}

/// Watches the directories holding `paths`; events become [`Trigger::Watch`].
pub(crate) fn watch(
    paths: &[PathBuf],
    tx: mpsc::Sender<Trigger>,
) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.try_send(Trigger::Watch);
        }
    })?;
    for p in paths {
        let dir = if p.is_dir() {
            p.clone()
        } else {
            p.parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// Runs reloads until every trigger sender is gone.
pub(crate) async fn run(
    paths: Vec<PathBuf>,
    engine: EngineHandle,
    status: SharedStatus,
    mut digest: u64,
    mut rx: mpsc::Receiver<Trigger>,
) {
    let mut next: Option<Trigger> = None;
    loop {
        let trigger = match next.take() {
            Some(t) => t,
            None => match rx.recv().await {
                Some(t) => t,
                None => return,
            },
        };
        let (reply, explicit) = match trigger {
            Trigger::Watch => {
                // Let a burst of events (editor saves, symlink swaps) settle; an
                // explicit request that arrives meanwhile is kept for the next round.
                tokio::time::sleep(Duration::from_millis(300)).await;
                while let Ok(t) = rx.try_recv() {
                    if !matches!(t, Trigger::Watch) {
                        next = Some(t);
                        break;
                    }
                }
                (None, false)
            }
            Trigger::Signal => (None, true),
            Trigger::Http(tx) => (Some(tx), true),
        };
        let p = paths.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&p))
            .await
            .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
        let outcome = match loaded {
            Ok((_, d)) if d == digest && !explicit => continue,
            Ok((set, d)) => {
                let n = set.rules.len();
                if engine.swap_rules(Arc::new(set)).await.is_err() {
                    return;
                }
                digest = d;
                let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
                s.successes += 1;
                s.last_error = None;
                s.last_success = Some(SystemTime::now());
                info!(rules = n, "rules reloaded");
                Ok(format!("reloaded {n} rules"))
            }
            Err(e) => {
                let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
                s.failures += 1;
                s.last_error = Some(e.clone());
                warn!(error = %e, "rule reload rejected; the previous rules keep running");
                Err(e)
            }
        };
        if let Some(tx) = reply {
            let _ = tx.send(outcome);
        }
    }
}
