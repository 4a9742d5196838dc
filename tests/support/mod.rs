//! Helpers for tests that run the real `vigil` binary: start `vigil run` on a free
//! loopback port, talk HTTP to it, stop it.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `vigil run`.
pub struct Vigil {
    pub child: Child,
    pub port: u16,
    pub stdout: PathBuf,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Vigil {
    /// Starts `vigil run` in `dir` with `args`, stdout captured to `dir/stdout-<port>.log`.
    pub fn start(dir: &Path, args: &[&str]) -> Vigil {
        let port = free_port();
        let stdout = dir.join(format!("stdout-{port}.log"));
        let stderr = dir.join(format!("stderr-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("run")
            .args(["--http", &format!("127.0.0.1:{port}")])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let v = Vigil {
            child,
            port,
            stdout,
        };
        v.wait_until(Duration::from_secs(30), "healthz", || {
            v.get("/healthz").0 == 200
        });
        v
    }

    /// Polls `f` until true, panicking with the log after `limit`.
    pub fn wait_until(&self, limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(
            self.stdout
                .with_file_name(format!("stderr-{}.log", self.port)),
        )
        .unwrap_or_default();
        panic!("timed out waiting for {what}; vigil stderr:\n{log}");
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        request(self.port, "GET", path, "")
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, String) {
        request(self.port, "POST", path, body)
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The value of an unlabelled or exactly-labelled sample in /metrics.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "vigil did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown work at all.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 exchange (Connection: close).
pub fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    (code, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// JSONL lines for `metric{labels}` at `(ts, value)` points.
pub fn jsonl(metric: &str, labels: &str, points: &[(i64, f64)]) -> String {
    points
        .iter()
        .map(|(ts, v)| {
            format!("{{\"ts\":{ts},\"metric\":\"{metric}\",\"labels\":{labels},\"value\":{v}}}\n")
        })
        .collect()
}

/// An alert as both `/api/v1/alerts` and `vigil replay --output json` show it:
/// (rule, labels as sorted JSON, state).
pub type AlertKey = (String, String, String);

fn labels_text(v: &serde_json::Value) -> String {
    let m: BTreeMap<String, String> = serde_json::from_value(v.clone()).unwrap();
    serde_json::to_string(&m).unwrap()
}

/// The pending and firing alerts of a running `vigil run`.
pub fn live_alerts(v: &Vigil) -> BTreeSet<AlertKey> {
    let a = v.json("/api/v1/alerts");
    a["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["rule"].as_str().unwrap().to_string(),
                labels_text(&x["labels"]),
                x["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Runs `vigil replay --output json ARGS` in `dir` and returns the alerts its event
/// stream leaves pending or firing (the last transition of each rule and label set),
/// with the raw output.
pub fn replay_alerts(dir: &Path, args: &[&str]) -> (BTreeSet<AlertKey>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("replay")
        .args(["--output", "json"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "vigil replay {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut last: BTreeMap<(String, String), String> = BTreeMap::new();
    for line in stdout.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["type"] != "alert" {
            continue;
        }
        last.insert(
            (
                e["rule"].as_str().unwrap().to_string(),
                labels_text(&e["labels"]),
            ),
            e["state"].as_str().unwrap().to_string(),
        );
    }
    let active = last
        .into_iter()
        .filter(|(_, s)| s == "pending" || s == "firing")
        .map(|((r, l), s)| (r, l, s))
        .collect();
    (active, stdout)
}

/// The files of a recording directory: complete Parquet files, and leftovers.
pub fn recording_files(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .partition(|f| f.extension().is_some_and(|e| e == "parquet"))
}
