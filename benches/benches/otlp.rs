//! OTLP ingestion load generator; figures and commands in BENCHMARKS.md.
//!
//! Workload: the fleet of `vigil_benches::fleet` (100 000 series = 10 metrics × 10 000
//! pods, the 10 rules of `fleet::RULES`), exported the way an OpenTelemetry SDK or
//! Collector sends it: one `ResourceMetrics` per pod (`k8s.pod.name`, `k8s.node.name`,
//! `k8s.namespace.name`, `k8s.container.name`, `service.name`, `job`, `instance`), its 10
//! metrics with one data point each (gauges as Gauge, counters as monotonic cumulative
//! Sum), 100 pods per request: **1 000 data points per request**, 100 requests per 10 s
//! step. Values are the fleet's deterministic values. Each pod exports at its own offset
//! within the step, as SDKs with their own timers do, so timestamps rise from request to
//! request; the last end-to-end phase gives every point of a step the same timestamp.
//! The bench runs on the allocator the `vigil` binary uses (mimalloc).
//!
//! 1. In process, one thread, thread CPU time, in the same run and over the same encoded
//!    requests: decode only (`ExportMetricsServiceRequest::decode`, the baseline) against
//!    the whole intake path: decode, `prepare` (the receiving task's share), `Mapper::map`,
//!    `Evaluator::ingest` and `drain_events` (the engine task's share). Windows are full
//!    (warm-up steps first). Prints points/s of each and the ratio to the baseline.
//! 2. End to end, when `VIGIL_BIN` names a `vigil` binary: starts `vigil run` on loopback
//!    with the same rules and sends OTLP/HTTP protobuf requests on a few keep-alive
//!    connections (429s are retried after 1 ms and counted) in three phases: 60 steps
//!    (6 M points) as fast as it answers (the most it takes); 300 steps paced at
//!    1 000 requests/s, 1 M points/s, for 30 s (the latency at the target load, over a
//!    whole default checkpoint period); 60 steps paced with aligned timestamps (the
//!    worst case). After each it reads `/metrics`: the p99 from request received to
//!    alert decision (`vigil_otlp_request_to_decision_seconds`) and the checkpoints
//!    written during the phase. It stops the process it started.
//!
//! `cargo bench -p vigil-benches --no-default-features --features otlp --bench otlp`
//! (add `VIGIL_BIN=target/release/vigil` after `cargo build --release` for part 2).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use vigil_benches::fleet::{self, Fleet, Shape, METRICS, STEP_MS, T0};
use vigil_benches::{mix, thread_cpu_time};
use vigil_connectors::otlp::proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_connectors::otlp::proto::tonic::common::v1::{
    any_value, AnyValue, InstrumentationScope, KeyValue,
};
use vigil_connectors::otlp::proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use vigil_connectors::otlp::proto::tonic::resource::v1::Resource;
use vigil_connectors::otlp::{prepare, Limits, Mapper, MappingConfig, OtlpStats};
use vigil_engine::{Evaluator, EvaluatorConfig, Sample};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PODS: usize = 10_000;
const PODS_PER_REQUEST: usize = 100;
const POINTS_PER_REQUEST: usize = PODS_PER_REQUEST * METRICS.len();
/// In-process steps: warm-up (windows fill: zscore needs 30 points) and measured.
const WARMUP_STEPS: u64 = 40;
const MEASURED_STEPS: u64 = 20;
/// End-to-end steps sent in the saturating and the aligned phase (100 requests each).
const E2E_STEPS: u64 = 60;
/// Steps of the paced phase: 30 s at the target, one default checkpoint period, so its
/// figures include a checkpoint (the first is due 30 s after start).
const PACED_STEPS: u64 = 300;
/// The paced phase's interval between requests: 1 000 requests/s, 1 M points/s.
const PACE: Duration = Duration::from_millis(1);
const E2E_CONNECTIONS: usize = 4;

fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
        ..Default::default()
    }
}

/// The fleet's values, one `Vec<Sample>` per step, in series order (metric-major).
struct Values {
    fleet: Fleet,
    buf: Vec<Sample>,
    /// Each pod exports at its own offset within the step (as SDKs with their own timers
    /// do), so timestamps rise request by request; else every point of a step has the
    /// step's timestamp (the worst case: one request releases the whole step).
    spread: bool,
}

impl Values {
    fn new() -> Self {
        let mut scratch = Evaluator::new(Arc::new(fleet::rules()), EvaluatorConfig::default());
        Values {
            fleet: Fleet::intern(&mut scratch, &METRICS, PODS),
            buf: Vec::new(),
            spread: true,
        }
    }

    /// The 100 encoded requests of `step`.
    fn step(&mut self, step: u64) -> Vec<Vec<u8>> {
        self.fleet.fill(step, &mut self.buf);
        let t_ns = ((T0 + step as i64 * STEP_MS) as u64) * 1_000_000;
        let offset_ns = |p: usize| {
            if self.spread {
                p as u64 * STEP_MS as u64 * 1_000_000 / PODS as u64
            } else {
                0
            }
        };
        (0..PODS / PODS_PER_REQUEST)
            .map(|r| {
                let resource_metrics = (r * PODS_PER_REQUEST..(r + 1) * PODS_PER_REQUEST)
                    .map(|p| self.pod(p, t_ns + offset_ns(p)))
                    .collect();
                ExportMetricsServiceRequest { resource_metrics }.encode_to_vec()
            })
            .collect()
    }

    fn pod(&self, p: usize, t_ns: u64) -> ResourceMetrics {
        let h = mix(p as u64);
        let attrs = vec![
            kv("k8s.pod.name", format!("api-{:08x}-{:05}", h as u32, p)),
            kv("k8s.node.name", format!("node-{:03}", p % 200)),
            kv("k8s.namespace.name", format!("ns-{}", p % 20)),
            kv("k8s.container.name", "app".into()),
            kv("service.name", "api".into()),
            kv("job", "api".into()),
            kv(
                "instance",
                format!(
                    "10.{}.{}.{}:8080",
                    (p >> 16) & 0xff,
                    (p >> 8) & 0xff,
                    p & 0xff
                ),
            ),
        ];
        let metrics = METRICS
            .iter()
            .enumerate()
            .map(|(m, metric)| {
                let point = NumberDataPoint {
                    time_unix_nano: t_ns,
                    start_time_unix_nano: (T0 as u64) * 1_000_000,
                    value: Some(number_data_point::Value::AsDouble(
                        self.buf[m * PODS + p].value,
                    )),
                    ..Default::default()
                };
                let data = match metric.shape {
                    Shape::Gauge { .. } => Data::Gauge(Gauge {
                        data_points: vec![point],
                    }),
                    Shape::Counter { .. } => Data::Sum(Sum {
                        data_points: vec![point],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    }),
                };
                Metric {
                    name: metric.name.into(),
                    data: Some(data),
                    ..Default::default()
                }
            })
            .collect();
        ResourceMetrics {
            resource: Some(Resource {
                attributes: attrs,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "io.opentelemetry.runtime".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

struct Pipeline {
    ev: Evaluator,
    mapper: Mapper,
    samples: Vec<Sample>,
    events: u64,
}

impl Pipeline {
    fn new() -> Self {
        Pipeline {
            ev: Evaluator::new(Arc::new(fleet::rules()), EvaluatorConfig::default()),
            mapper: Mapper::new(MappingConfig::default(), Arc::new(OtlpStats::default())),
            samples: Vec::new(),
            events: 0,
        }
    }

    /// Decode + prepare (receiving task), then map + ingest + drain (engine task);
    /// returns the CPU time of each share.
    fn run(&mut self, body: &[u8]) -> (Duration, Duration) {
        let t0 = thread_cpu_time();
        let mut req = ExportMetricsServiceRequest::decode(body).expect("decodes");
        let p = prepare(&mut req, &Limits::default());
        assert_eq!(p.accepted as usize, POINTS_PER_REQUEST);
        let t1 = thread_cpu_time();
        self.samples.clear();
        self.mapper
            .map(&req, 0, self.ev.series_mut(), &mut self.samples);
        self.ev.ingest(&self.samples);
        self.events += self.ev.drain_events().len() as u64;
        drop(req);
        let t2 = thread_cpu_time();
        (t1 - t0, t2 - t1)
    }
}

fn per_sec(points: u64, d: Duration) -> f64 {
    points as f64 / d.as_secs_f64()
}

/// Runs part 1; returns the decode-only baseline in points/s.
fn in_process(values: &mut Values) -> f64 {
    let mut pipe = Pipeline::new();
    let started = Instant::now();
    for step in 0..WARMUP_STEPS {
        for body in values.step(step) {
            pipe.run(&body);
        }
    }
    println!(
        "warm-up: {WARMUP_STEPS} steps of {} points in {:.1} s wall; {} series interned",
        PODS * METRICS.len(),
        started.elapsed().as_secs_f64(),
        pipe.ev.series().len()
    );
    let (mut decode, mut recv, mut engine) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut points, mut bytes) = (0u64, 0u64);
    let mut per_request = Vec::new();
    for step in WARMUP_STEPS..WARMUP_STEPS + MEASURED_STEPS {
        let bodies = values.step(step);
        // Baseline first, then the whole path, over the same bytes.
        let t = thread_cpu_time();
        for body in &bodies {
            let req = ExportMetricsServiceRequest::decode(&body[..]).expect("decodes");
            std::hint::black_box(&req);
        }
        decode += thread_cpu_time() - t;
        for body in &bodies {
            let (r, e) = pipe.run(body);
            recv += r;
            engine += e;
            per_request.push(e);
            bytes += body.len() as u64;
        }
        points += (bodies.len() * POINTS_PER_REQUEST) as u64;
    }
    let full = recv + engine;
    println!(
        "measured: {MEASURED_STEPS} steps, {points} points, {} requests of {POINTS_PER_REQUEST} points, {:.1} bytes/point (protobuf)",
        points / POINTS_PER_REQUEST as u64,
        bytes as f64 / points as f64
    );
    println!("| path (one thread, CPU time) | ns/point | M points/s | × decode-only |");
    println!("| --- | ---: | ---: | ---: |");
    let row = |name: &str, d: Duration| {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} |",
            d.as_nanos() as f64 / points as f64,
            per_sec(points, d) / 1e6,
            d.as_secs_f64() / decode.as_secs_f64()
        );
    };
    row("decode only (baseline)", decode);
    row("receiving task: decode + prepare", recv);
    row("engine task: map + ingest + drain", engine);
    row("whole path on one core", full);
    println!(
        "into the engine with decode on one core and the engine task on the other: {:.2} M points/s (the slower stage)",
        per_sec(points, recv.max(engine)) / 1e6
    );
    per_request.sort();
    let pct = |q| percentile_ms(&per_request, q);
    println!(
        "engine task per request (CPU): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    println!("alert events during the measured steps: {}", pipe.events);
    // A periodic checkpoint: the engine task copies the evaluator; a thread of its own
    // serialises the copy and writes it.
    let t = Instant::now();
    let copy = pipe.ev.clone();
    let copied = t.elapsed();
    let t = Instant::now();
    let snap = copy.snapshot();
    println!(
        "a checkpoint of this state: the engine task copies it in {:.1} ms; serialising the copy ({:.1} MiB) takes {:.1} ms off the engine task",
        copied.as_secs_f64() * 1e3,
        snap.len() as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64() * 1e3
    );
    per_sec(points, decode)
}

/// A minimal HTTP/1.1 keep-alive client.
struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Conn {
    fn new(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    /// POSTs a protobuf body; returns the status.
    fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<u16> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.w.write_all(head.as_bytes())?;
        self.w.write_all(body)?;
        self.read_response().map(|(s, _)| s)
    }

    fn get(&mut self, path: &str) -> std::io::Result<String> {
        let head = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        self.w.write_all(head.as_bytes())?;
        self.read_response().map(|(_, b)| b)
    }

    fn read_response(&mut self) -> std::io::Result<(u16, String)> {
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (mut len, mut chunked) = (0usize, false);
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.r.read_line(&mut line)?;
                let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                self.r.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body.resize(len, 0);
            self.r.read_exact(&mut body)?;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The cumulative buckets of a histogram in `/metrics` text.
fn histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, v) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v.trim().parse().ok()?))
        })
        .collect()
}

/// The `q` quantile of sorted durations, in ms.
fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// `histogram_quantile` over cumulative buckets.
fn quantile(q: f64, b: &[(f64, f64)]) -> f64 {
    let mut b = b.to_vec();
    vigil_engine::signal::bucket_quantile(q, &mut b)
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Stops the `vigil run` this bench started (by its pid), even on panic.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The encoded requests of `steps`.
fn encode(values: &mut Values, steps: std::ops::Range<u64>) -> Arc<Vec<Vec<u8>>> {
    let started = Instant::now();
    let bodies: Vec<Vec<u8>> = steps.flat_map(|s| values.step(s)).collect();
    println!(
        "encoded {} requests ({} points) in {:.1} s",
        bodies.len(),
        bodies.len() * POINTS_PER_REQUEST,
        started.elapsed().as_secs_f64()
    );
    Arc::new(bodies)
}

/// What a sending phase saw.
struct Sent {
    points: u64,
    started: Instant,
    /// To the last 200 (accepted into the engine's queue).
    wall: Duration,
    /// Per request: from its scheduled (paced) or actual (unpaced) send to the 200.
    latencies: Vec<Duration>,
    retries: u64,
}

/// Sends every body over [`E2E_CONNECTIONS`] keep-alive connections, request `i` not
/// before `i × pace` when paced; 429s are retried after 1 ms and counted.
fn send(addr: SocketAddr, bodies: &Arc<Vec<Vec<u8>>>, pace: Option<Duration>) -> Sent {
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..E2E_CONNECTIONS)
        .map(|_| {
            let (bodies, next, retries) =
                (Arc::clone(bodies), Arc::clone(&next), Arc::clone(&retries));
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr).expect("connect");
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let from = match pace {
                        Some(p) => {
                            let at = started + p * i as u32;
                            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                            at
                        }
                        None => Instant::now(),
                    };
                    loop {
                        match conn.post("/v1/metrics", body).expect("post") {
                            200 => break,
                            429 => {
                                retries.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            s => panic!("status {s}"),
                        }
                    }
                    latencies.push(from.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    latencies.sort();
    Sent {
        points: (bodies.len() * POINTS_PER_REQUEST) as u64,
        started,
        wall: started.elapsed(),
        latencies,
        retries: retries.load(Ordering::Relaxed),
    }
}

/// `/metrics` once the engine has evaluated `requests` more requests than in `before`.
fn drained(admin: &mut Conn, before: &str, requests: usize) -> String {
    let n = |text: &str| {
        histogram(text, "vigil_otlp_request_to_decision_seconds")
            .last()
            .map_or(0.0, |b| b.1)
    };
    let want = n(before) + requests as f64;
    loop {
        let after = admin.get("/metrics").expect("metrics");
        if n(&after) >= want {
            return after;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Prints a phase's figures; `after` was read once the engine had evaluated it all.
/// `decode`: the in-process decode-only baseline of this run (points/s), to compare an
/// unpaced phase's rate with.
fn report(phase: &str, sent: &Sent, before: &str, after: &str, decode: Option<f64>) {
    let evaluated = sent.started.elapsed();
    let pct = |q| percentile_ms(&sent.latencies, q);
    let b0 = histogram(before, "vigil_otlp_request_to_decision_seconds");
    let b1 = histogram(after, "vigil_otlp_request_to_decision_seconds");
    let diff: Vec<(f64, f64)> = b1
        .iter()
        .zip(b0.iter().chain(std::iter::repeat(&(0.0, 0.0))))
        .map(|(a, b)| (a.0, a.1 - b.1))
        .collect();
    println!(
        "{phase}: {} points accepted in {:.2} s ({:.2} M points/s), evaluated in {:.2} s ({:.2} M points/s into the engine); 429 retries: {}",
        sent.points,
        sent.wall.as_secs_f64(),
        per_sec(sent.points, sent.wall) / 1e6,
        evaluated.as_secs_f64(),
        per_sec(sent.points, evaluated) / 1e6,
        sent.retries
    );
    if let Some(decode) = decode {
        println!(
            "  into the engine / decode-only baseline (one core, in process, this run): {:.2}",
            per_sec(sent.points, evaluated) / decode
        );
    }
    println!(
        "  client, request (scheduled) → 200: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "  server, request received → alert decision (vigil_otlp_request_to_decision_seconds, interpolated): p50 {:.2} ms, p99 {:.2} ms",
        quantile(0.5, &diff) * 1e3,
        quantile(0.99, &diff) * 1e3
    );
    let checkpoints = |text: &str, result: &str| {
        metric(
            text,
            &format!("vigil_checkpoint_writes_total{{result=\"{result}\"}}"),
        )
    };
    println!(
        "  checkpoints written during the phase: {} (failed: {})",
        checkpoints(after, "success") - checkpoints(before, "success"),
        checkpoints(after, "failure") - checkpoints(before, "failure")
    );
}

fn end_to_end(bin: PathBuf, values: &mut Values, decode: f64) {
    let dir = std::env::temp_dir().join(format!("vigil-otlp-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rules")).expect("temp dir");
    std::fs::write(dir.join("rules/fleet.yaml"), fleet::RULES).expect("rules");
    // One step of lateness: requests of adjacent steps may interleave across
    // connections. No wall-clock advance: the fleet's event time is in the past.
    std::fs::write(
        dir.join("vigil.yaml"),
        "engine:\n  lateness: 10s\n  idle_advance: 24h\n  intake_queue: 64\nsinks:\n  stdout: null\n",
    )
    .expect("config");
    let (api, otlp) = (free_port(), free_port());
    let api_addr: SocketAddr = ([127, 0, 0, 1], api).into();
    let otlp_addr: SocketAddr = ([127, 0, 0, 1], otlp).into();
    let child = Command::new(&bin)
        .args(["run", "--config", "vigil.yaml", "--rules", "rules"])
        .args(["--state-dir", "state", "--otlp-grpc", "127.0.0.1:0"])
        .args([
            "--http",
            &api_addr.to_string(),
            "--otlp-http",
            &otlp_addr.to_string(),
        ])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "warn")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut admin = loop {
        if let Ok(mut c) = Conn::new(api_addr) {
            if c.get("/readyz").is_ok() {
                break c;
            }
        }
        assert!(Instant::now() < deadline, "vigil run did not become ready");
        std::thread::sleep(Duration::from_millis(100));
    };

    // The phases, in order: as fast as it answers (the windows fill; the most it
    // takes); paced at the target, one request every millisecond (open loop: latency is
    // counted from each request's scheduled time, so a stall is not hidden); paced
    // again with every point of a step at the step's timestamp, so the request that
    // moves the watermark past a step releases all 100 000 of its samples.
    let paced = format!(
        "paced at {:.2} M points/s",
        POINTS_PER_REQUEST as f64 / PACE.as_secs_f64() / 1e6
    );
    let phases = [
        ("saturating", E2E_STEPS, None, true),
        (paced.as_str(), PACED_STEPS, Some(PACE), true),
        (
            "paced, aligned timestamps (worst case)",
            E2E_STEPS,
            Some(PACE),
            false,
        ),
    ];
    let mut next_step = 0;
    let mut after = admin.get("/metrics").expect("metrics");
    for (phase, steps, pace, spread) in phases {
        values.spread = spread;
        let bodies = encode(values, next_step..next_step + steps);
        next_step += steps;
        let before = after;
        let sent = send(otlp_addr, &bodies, pace);
        after = drained(&mut admin, &before, bodies.len());
        // Only an unpaced phase's rate says something against the decode baseline.
        report(
            phase,
            &sent,
            &before,
            &after,
            pace.is_none().then_some(decode),
        );
    }
    println!(
        "engine: {} samples evaluated, {} dropped late, {} alerts firing now",
        metric(&after, "vigil_samples_evaluated_total"),
        metric(&after, "vigil_samples_dropped_total{reason=\"late\"}"),
        metric(&after, "vigil_alerts{state=\"firing\"}")
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let mut values = Values::new();
    let decode = in_process(&mut values);
    match std::env::var_os("VIGIL_BIN") {
        // `cargo bench` runs in `benches/`: a relative path is from the workspace root.
        Some(bin) => end_to_end(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(bin),
            &mut values,
            decode,
        ),
        None => println!(
            "end to end skipped: set VIGIL_BIN to a vigil binary (cargo build --release; VIGIL_BIN=target/release/vigil)"
        ),
    }
}
