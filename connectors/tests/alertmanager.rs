//! The Alertmanager sink against a real Alertmanager: Debian's `prometheus-alertmanager`,
//! which `scripts/test` installs. A missing binary fails the test.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use vigil_connectors::sinks::{AlertmanagerConfig, SinkContext};
use vigil_engine::lifecycle::AlertState::{Firing, Resolved};

use common::{event, eventually, now_ms};

const BINARY: &str = "prometheus-alertmanager";

/// A running Alertmanager, killed on drop.
struct Alertmanager {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(BINARY))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{BINARY} not found on PATH: run scripts/test, which installs it \
                 (apt-get install prometheus-alertmanager)"
            )
        })
}

impl Alertmanager {
    /// Starts Alertmanager on a free loopback port, clustering off, with a temp config
    /// and storage, and waits until it is ready.
    async fn start() -> Self {
        let binary = find_binary();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let ready = format!("{}/-/ready", am.url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(&ready).await {
                if r.status().is_success() {
                    return am;
                }
            }
            let exited = am.child.try_wait().unwrap();
            if exited.is_some() || tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(am.dir.path().join("log")).unwrap_or_default();
                panic!("alertmanager did not become ready (exit: {exited:?}); its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /api/v2/alerts{query}`.
    async fn alerts(&self, query: &str) -> Vec<Value> {
        let url = format!("{}/api/v2/alerts{query}", self.url);
        let resp = reqwest::get(url).await.unwrap().error_for_status().unwrap();
        serde_json::from_slice::<Vec<Value>>(&resp.bytes().await.unwrap()).unwrap()
    }
}

#[tokio::test]
async fn alerts_fire_and_resolve_in_a_real_alertmanager() {
    let am = Alertmanager::start().await;
    let ctx = SinkContext {
        generator_url: "http://vigil.test:9898".into(),
        eval_interval: Duration::from_secs(10),
    };
    let sink = AlertmanagerConfig::new(format!("{}/", am.url))
        .build(&ctx)
        .unwrap();
    let stats = sink.stats();
    let (tx, rx) = mpsc::channel(16);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(sink.run(rx, stop_rx));

    let now = now_ms();
    let active_at = now - 60_000;
    let firing = event("VigilItest", "node-7", Firing, now, active_at);
    tx.send(firing.clone()).await.unwrap();
    let listed = eventually(Duration::from_secs(10), "the firing alert", || async {
        let alerts = am.alerts("").await;
        (alerts.len() == 1).then(|| alerts[0].clone())
    })
    .await;
    assert_eq!(
        listed["labels"],
        serde_json::to_value(&firing.labels).unwrap()
    );
    assert_eq!(
        listed["annotations"],
        serde_json::to_value(&firing.annotations).unwrap()
    );
    assert_eq!(listed["status"]["state"], "active");
    assert_eq!(
        listed["generatorURL"],
        format!(
            "http://vigil.test:9898/#/alerts?fingerprint={:016x}",
            firing.fingerprint
        )
        .as_str()
    );
    let starts_at = humantime::parse_rfc3339(listed["startsAt"].as_str().unwrap()).unwrap();
    let ends_at = humantime::parse_rfc3339(listed["endsAt"].as_str().unwrap()).unwrap();
    let ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
    };
    assert_eq!(ms(starts_at), active_at);
    // endsAt = send time + 4 × max(10s, 1m).
    let lifetime = ms(ends_at) - now;
    assert!(
        (239_000..250_000).contains(&lifetime),
        "endsAt {lifetime}ms ahead"
    );

    // Resolved: endsAt in the past, so Alertmanager 0.25 lists it no more (neither
    // plainly nor under ?active=true).
    let resolved = now_ms() - 1;
    tx.send(event("VigilItest", "node-7", Resolved, resolved, active_at))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the resolve", || async {
        am.alerts("").await.is_empty().then_some(())
    })
    .await;
    assert!(am.alerts("?active=true").await.is_empty());

    stop.send(true).unwrap();
    task.await.unwrap();
    let s = stats.snapshot();
    assert_eq!((s.failed_total, s.retries_total), (0, 0));
    // The firing and the resolve, then the resolve again in the shutdown flush.
    assert_eq!(s.sent_total, 3);
}
