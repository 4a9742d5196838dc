//! Frees what the engine thread is done with on a thread of its own.
//!
//! A decoded OTLP request of 1 000 points is thousands of small allocations, made on
//! the runtime's workers. Freeing them on the engine thread took a fifth of its time at
//! 1 M points/s; the engine hands them here instead. The queue is bounded: when it is
//! full (or the thread could not start), the engine frees inline, as it did before.

use std::sync::mpsc::{self, SyncSender, TrySendError};

use tracing::warn;

/// Values waiting to be dropped; beyond this the caller drops them itself.
const QUEUE: usize = 256;

/// The sending side of the reclaim thread (which ends when this is dropped).
pub(crate) struct Reclaimer<T: Send + 'static> {
    tx: Option<SyncSender<T>>,
}

impl<T: Send + 'static> Reclaimer<T> {
    /// Starts the thread, named `name`.
    pub(crate) fn spawn(name: &str) -> Self {
        let (tx, rx) = mpsc::sync_channel::<T>(QUEUE);
        let started = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || rx.into_iter().for_each(drop));
        match started {
            Ok(_) => Reclaimer { tx: Some(tx) },
            Err(e) => {
                warn!(error = %e, thread = name, "could not start a reclaim thread; freeing on the engine thread");
                Reclaimer { tx: None }
            }
        }
    }

    /// Drops `value` on the reclaim thread, or here when its queue is full.
    pub(crate) fn free(&self, value: T) {
        if let Some(tx) = &self.tx {
            match tx.try_send(value) {
                Ok(()) => {}
                Err(TrySendError::Full(v) | TrySendError::Disconnected(v)) => drop(v),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::thread::ThreadId;

    /// Records the thread it is dropped on.
    struct Witness(Arc<Mutex<Vec<ThreadId>>>);

    impl Drop for Witness {
        fn drop(&mut self) {
            self.0.lock().unwrap().push(std::thread::current().id());
        }
    }

    #[test]
    fn values_are_dropped_off_the_calling_thread() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reclaim = Reclaimer::spawn("test-reclaim");
        for _ in 0..10 {
            reclaim.free(Witness(Arc::clone(&seen)));
        }
        drop(reclaim);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while seen.lock().unwrap().len() < 10 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 10, "every value is dropped");
        let here = std::thread::current().id();
        assert!(
            seen.iter().all(|t| *t != here),
            "dropped on the reclaim thread"
        );
    }
}
