//! Replay throughput, end to end: a synthetic fleet recording is generated (Parquet via
//! `vigil record`'s writer, and JSONL), then replayed through the shipped rule pack.
//! Reports samples/s and the share of time spent reading vs evaluating (the reader
//! runs on its own thread), plus a read-only pass over the same file as baseline.
//!
//! `cargo bench -p vigil-benches --bench replay` replays 10 k series x 6000 steps of
//! 10 s = 60 M samples (the figure; its "7 days" at 10 s would be 605 M samples
//! for 10 k series, so the sample count is what is reproduced). `VIGIL_BENCH_STEPS`
//! changes the number of steps.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use vigil_benches::thread_cpu_time;
use vigil_engine::labels::Labels;
use vigil_engine::RuleSet;
use vigil_replay::columnar::{Recorder, Rotation};
use vigil_replay::source::{open, OnBad, ReadStats};
use vigil_replay::{replay, Options};

const SERIES: usize = 10_000;
const STEP_MS: i64 = 10_000;
const START: i64 = 1_793_613_600_000;

/// 10 k series shaped like the rule pack's inputs: per-container throttling counters
/// (by node), goroutines per pod, memory PSI counters and kubelet heartbeats per node.
fn fleet() -> Vec<Labels> {
    let mut out = Vec::with_capacity(SERIES);
    let l = |pairs: &[(&str, String)]| -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let nodes = 200;
    for n in 0..nodes {
        out.push(l(&[
            ("__name__", "kubelet_node_name".into()),
            ("node", format!("node-{n:03}")),
        ]));
        out.push(l(&[
            (
                "__name__",
                "node_pressure_memory_waiting_seconds_total".into(),
            ),
            ("node", format!("node-{n:03}")),
        ]));
    }
    let mut i = 0;
    while out.len() < SERIES {
        let node = format!("node-{:03}", i % nodes);
        let pod = format!("app-{i:05}");
        out.push(l(&[
            (
                "__name__",
                "container_cpu_cfs_throttled_periods_total".into(),
            ),
            ("container", "app".into()),
            ("namespace", "prod".into()),
            ("node", node.clone()),
            ("pod", pod.clone()),
        ]));
        if out.len() < SERIES {
            out.push(l(&[
                ("__name__", "go_goroutines".into()),
                ("namespace", "prod".into()),
                ("node", node),
                ("pod", pod),
            ]));
        }
        i += 1;
    }
    out
}

fn value(series: usize, step: i64, labels: &Labels) -> f64 {
    let noise = ((series as i64 * 7919 + step * 104_729) % 1000) as f64 / 1000.0;
    match labels["__name__"].as_str() {
        "kubelet_node_name" => 1.0,
        "go_goroutines" => 200.0 + 20.0 * noise,
        // Counters: cumulative.
        _ => step as f64 * (1.0 + noise * 0.1),
    }
}

/// Writes the recording with `vigil record`'s writer and prints its CPU time per
/// sample against a baseline over the same loop that only computes the values.
fn generate_parquet(dir: &Path, steps: i64, series: &[Labels]) -> Vec<PathBuf> {
    let mut rec = Recorder::new(
        dir,
        Rotation {
            max_bytes: u64::MAX,
            max_age_ms: i64::MAX,
        },
    )
    .unwrap();
    let t = thread_cpu_time();
    let mut sum = 0.0;
    for step in 0..steps {
        for (i, l) in series.iter().enumerate() {
            sum += value(i, step, l);
        }
    }
    std::hint::black_box(sum);
    let baseline = thread_cpu_time() - t;
    let t = thread_cpu_time();
    for step in 0..steps {
        for (i, l) in series.iter().enumerate() {
            rec.record(l, START + step * STEP_MS, value(i, step, l))
                .unwrap();
        }
    }
    let files = rec.finish().unwrap();
    let recording = thread_cpu_time() - t;
    let n = (steps * SERIES as i64) as f64;
    println!(
        "recording (Recorder::record, one thread, CPU time): {:.1} ns/sample ({:.2} M samples/s); computing the values alone: {:.1} ns/sample; ratio {:.1}x",
        recording.as_secs_f64() * 1e9 / n,
        n / recording.as_secs_f64() / 1e6,
        baseline.as_secs_f64() * 1e9 / n,
        recording.as_secs_f64() / baseline.as_secs_f64()
    );
    files
}

fn generate_jsonl(path: &Path, steps: i64, series: &[Labels]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for step in 0..steps {
        for (i, l) in series.iter().enumerate() {
            let rest: Labels = l
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            writeln!(
                f,
                "{{\"ts\":{},\"metric\":\"{}\",\"labels\":{},\"value\":{}}}",
                START + step * STEP_MS,
                l["__name__"],
                serde_json_labels(&rest),
                value(i, step, l)
            )
            .unwrap();
        }
    }
}

fn serde_json_labels(l: &Labels) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

/// CPU time of the whole process (all threads), `CLOCK_PROCESS_CPUTIME_ID`.
#[allow(unsafe_code)] // one libc call
fn process_cpu_time() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the valid pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Reads every chunk on this thread: the reader thread's work in a replay, alone.
/// Returns (rows, wall s, CPU s).
fn read_only(files: &[PathBuf]) -> (u64, f64, f64) {
    let (t, c) = (Instant::now(), thread_cpu_time());
    let stats = Arc::new(ReadStats::default());
    let mut rows = 0u64;
    for f in files {
        for c in open(f, OnBad::Fail, &stats).unwrap() {
            rows += c.unwrap().rows.len() as u64;
        }
    }
    (
        rows,
        t.elapsed().as_secs_f64(),
        (thread_cpu_time() - c).as_secs_f64(),
    )
}

fn run(name: &str, files: &[PathBuf], rules: &Arc<RuleSet>) {
    let (rows, read_wall, read_cpu) = read_only(files);
    let mut events = 0u64;
    let cpu0 = process_cpu_time();
    let (s, _) = replay(
        files,
        Arc::clone(rules),
        &Options::default(),
        &mut |_| events += 1,
        &mut |_| {},
    )
    .unwrap();
    let cpu = process_cpu_time() - cpu0;
    // The replay's two threads: the reader (as measured alone) and the rest, which is
    // evaluation plus the channel between them.
    let eval_cpu = (cpu - read_cpu).max(0.0);
    let per = |secs: f64| secs * 1e9 / rows as f64;
    let rate = |secs: f64| rows as f64 / secs / 1e6;
    println!(
        "{name}: {rows} samples, load average {} during the run",
        load_average()
    );
    println!("| {name} | CPU ns/sample | M samples/s |");
    println!("| --- | ---: | ---: |");
    println!(
        "| read only (baseline, one thread) | {:.0} | {:.2} |",
        per(read_cpu),
        rate(read_cpu)
    );
    println!(
        "| evaluate (replay CPU minus reading) | {:.0} | {:.2} |",
        per(eval_cpu),
        rate(eval_cpu)
    );
    println!(
        "| replay, both threads' CPU | {:.0} | {:.2} |",
        per(cpu),
        rate(cpu)
    );
    println!(
        "| **replay on two cores (the slower thread)** | {:.0} | **{:.2}** |",
        per(read_cpu.max(eval_cpu)),
        rate(read_cpu.max(eval_cpu))
    );
    println!(
        "wall clock on this (shared) machine: read only {read_wall:.2}s, replay {:.2}s = {:.2} M samples/s (reader thread {:.2}s, evaluating {:.2}s); reading is {:.0}% of the CPU; {events} events",
        s.wall_secs,
        rate(s.wall_secs),
        s.read_secs,
        s.eval_secs,
        100.0 * read_cpu / cpu
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let steps: i64 = std::env::var("VIGIL_BENCH_STEPS")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(6000);
    let rules_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../rules"));
    let rules = Arc::new(RuleSet::load(&[rules_dir]).unwrap());
    let series = fleet();
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let files = generate_parquet(dir.path(), steps, &series);
    let size: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    println!(
        "generated {steps} steps x {SERIES} series (10 s apart) = {} samples of Parquet ({:.1} MiB) in {:.1}s",
        steps * SERIES as i64,
        size as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    run("parquet", &files, &rules);
    let jsonl_steps = (2_000_000 / SERIES as i64).max(1);
    let jsonl = dir.path().join("fleet.jsonl");
    generate_jsonl(&jsonl, jsonl_steps, &series);
    run("jsonl", &[jsonl], &rules);
}
