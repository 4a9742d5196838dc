//! Stdout sink: every alert transition (pending, firing, resolved, inactive) as one
//! JSON line, `{"ts","rule","state","labels","annotations","value"}`, with `ts` in
//! RFC 3339 and a non-finite value as `null`. For debugging and piping into `jq`.

use std::io::Write;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use vigil_engine::eval::AlertEvent;
use vigil_engine::Labels;

use super::{add, rfc3339, shutdown_signal, SinkContext, SinkError, SinkStats};

/// Config of the stdout sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// Print only alerts of rules with `actions: [alert]`; `false` prints every rule's
    /// transitions (default `true`).
    #[serde(default = "default_notify_only")]
    pub notify_only: bool,
}

fn default_notify_only() -> bool {
    true
}

impl Default for StdoutConfig {
    fn default() -> Self {
        StdoutConfig {
            notify_only: default_notify_only(),
        }
    }
}

impl StdoutConfig {
    /// Builds the sink, writing to the process' standard output.
    pub fn build(self, _ctx: &SinkContext) -> Result<StdoutSink, SinkError> {
        Ok(StdoutSink {
            notify_only: self.notify_only,
            out: Box::new(std::io::stdout()),
            stats: Arc::default(),
        })
    }
}

/// The running stdout sink; see the [module docs](self).
pub struct StdoutSink {
    notify_only: bool,
    out: Box<dyn Write + Send>,
    stats: Arc<SinkStats>,
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutSink")
            .field("notify_only", &self.notify_only)
            .finish_non_exhaustive()
    }
}

/// One output line.
#[derive(Debug, Serialize)]
struct Line<'a> {
    ts: String,
    rule: &'a str,
    state: &'static str,
    labels: &'a Labels,
    annotations: &'a Labels,
    value: f64,
}

impl StdoutSink {
    /// The sink's counters (`sent_total`: lines written; `failed_total`: write errors).
    pub fn stats(&self) -> Arc<SinkStats> {
        Arc::clone(&self.stats)
    }

    /// Prints alert events until `rx` closes or `shutdown` turns true (or its sender is
    /// dropped), then prints what is already queued.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<AlertEvent>,
        shutdown: watch::Receiver<bool>,
    ) {
        let shutdown = shutdown_signal(shutdown);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                ev = rx.recv() => match ev {
                    Some(ev) => self.print(&ev),
                    None => break,
                },
            }
        }
        while let Ok(ev) = rx.try_recv() {
            self.print(&ev);
        }
    }

    fn print(&mut self, ev: &AlertEvent) {
        if self.notify_only && !ev.notify {
            return;
        }
        let line = Line {
            ts: rfc3339(ev.ts),
            rule: &ev.rule,
            state: ev.state.as_str(),
            labels: &ev.labels,
            annotations: &ev.annotations,
            value: ev.value,
        };
        let mut buf = serde_json::to_vec(&line).expect("string maps serialize");
        buf.push(b'\n');
        match self.out.write_all(&buf).and_then(|()| self.out.flush()) {
            Ok(()) => add(&self.stats.sent_total, 1),
            Err(error) => {
                add(&self.stats.failed_total, 1);
                tracing::warn!(sink = "stdout", %error, "writing an alert failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use vigil_engine::lifecycle::AlertState::{Firing, Pending};

    use super::super::testutil::{self, event, T0};
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn printed(cfg: StdoutConfig, events: Vec<AlertEvent>) -> String {
        let out = Shared::default();
        let mut sink = cfg.build(&testutil::ctx()).unwrap();
        sink.out = Box::new(out.clone());
        let (tx, rx) = mpsc::channel(16);
        let (_stop, stop_rx) = watch::channel(false);
        for ev in events {
            tx.send(ev).await.unwrap();
        }
        drop(tx);
        sink.run(rx, stop_rx).await;
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[tokio::test]
    async fn prints_one_json_line_per_transition() {
        let silent = AlertEvent {
            notify: false,
            value: f64::NAN,
            ..event(Pending, "n2", T0)
        };
        let events = vec![event(Pending, "n1", T0 + 1), silent];
        let out = printed(StdoutConfig::default(), events.clone()).await;
        assert_eq!(
            out,
            concat!(
                r#"{"ts":"2026-01-01T00:00:00.001Z","rule":"NodeDown","state":"pending","#,
                r#""labels":{"alertname":"NodeDown","node":"n1","severity":"critical"},"#,
                r#""annotations":{"summary":"n1 is down"},"value":1.0}"#,
                "\n"
            )
        );
        let all = StdoutConfig { notify_only: false };
        let out = printed(all, events).await;
        assert_eq!(out.lines().count(), 2);
        assert!(out.ends_with("\"value\":null}\n"), "{out}");
        let firing = printed(StdoutConfig::default(), vec![event(Firing, "n1", T0)]).await;
        assert!(firing.contains(r#""state":"firing""#));
    }
}
