//! `vigil replay`, `vigil backtest` and `vigil record`: recordings through the rules,
//! offline.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use vigil_engine::eval::Event;
use vigil_engine::rule::RuleSet;
use vigil_engine::{Duration, EvaluatorConfig};
use vigil_replay::columnar::{Recorder, Rotation};
use vigil_replay::expect::{Expectations, Score};
use vigil_replay::filter::Filter;
use vigil_replay::source::{expand_inputs, OnBad};
use vigil_replay::{output, replay, Options, Progress};

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// A readable timeline (default on a terminal).
    Table,
    /// One JSON object a line, in event-time order (default otherwise).
    Json,
    /// Nothing on stdout (use with --report or --expect).
    None,
}

/// `vigil replay` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// Rule files or directories.
    #[arg(long, required = true)]
    rules: Vec<PathBuf>,
    /// Keep only samples matching this DataFusion SQL predicate over ts, metric,
    /// labels, value, e.g. "labels['node'] = 'n07'".
    #[arg(long = "where")]
    filter: Option<String>,
    /// Only samples at or after this time (RFC 3339 or epoch ms).
    #[arg(long)]
    from: Option<String>,
    /// Only samples before this time (RFC 3339 or epoch ms).
    #[arg(long)]
    to: Option<String>,
    /// Output format (default: table on a terminal, json otherwise).
    #[arg(long, value_enum)]
    output: Option<OutputFormat>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Score against labelled incidents; exit 1 when an expectation fails.
    #[arg(long)]
    expect: Option<PathBuf>,
    /// How far back in time a recording may go and still be evaluated. Default: the
    /// lateness of the live run that made the recording (`vigil run --record` stores
    /// it in each file), else 0s.
    #[arg(long)]
    lateness: Option<Duration>,
    /// Skip malformed lines (counted) instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
    /// Stop after this many input rows and write a checkpoint to --checkpoint.
    #[arg(long, requires = "checkpoint")]
    stop_after: Option<u64>,
    /// Checkpoint file written at --stop-after.
    #[arg(long, requires = "stop_after")]
    checkpoint: Option<PathBuf>,
    /// Continue a replay from a checkpoint (same inputs and rules).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// NAB mode: score every CSV under this directory (needs --out).
    #[arg(long, requires = "out", conflicts_with_all = ["inputs", "expect", "report"])]
    nab: Option<PathBuf>,
    /// NAB mode: results directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// NAB mode: detector name in the results layout.
    #[arg(long, default_value = "vigil")]
    detector: String,
    /// Recordings: *.jsonl, *.csv, *.otlp.jsonl, *.parquet, *.arrow (.gz/.zst), or directories.
    inputs: Vec<PathBuf>,
}

/// `vigil backtest` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct BacktestArgs {
    /// Rule files or directories.
    #[arg(long, required = true)]
    rules: Vec<PathBuf>,
    /// A rule parameter and the values to try, e.g. detect.zscore.threshold=2.5,3,3.5
    /// (repeatable: every combination is replayed).
    #[arg(long = "set", required = true)]
    sets: Vec<String>,
    /// Only change this rule (default: every rule that has the parameter).
    #[arg(long)]
    rule: Option<String>,
    /// Labelled incidents to score each run against.
    #[arg(long, required = true)]
    expect: PathBuf,
    /// Recordings.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// `vigil record` flags: converts recordings to the Parquet files `vigil run --record`
/// writes from live intake (same writer, same rotation rules and defaults).
#[derive(Debug, clap::Args)]
pub(crate) struct RecordArgs {
    /// Directory for the Parquet files.
    #[arg(long)]
    out: PathBuf,
    /// Start a new file past this size in bytes (default 256 MiB).
    #[arg(long, default_value_t = 256 << 20)]
    max_bytes: u64,
    /// Start a new file after this much event time (default 1h).
    #[arg(long, default_value = "1h")]
    max_age: Duration,
    /// Recordings to convert (any format replay reads).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

fn parse_time(s: &str) -> Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    vigil_replay::jsonl::parse_rfc3339(s).map_err(anyhow::Error::msg)
}

fn load_rules(paths: &[PathBuf]) -> Result<Arc<RuleSet>> {
    RuleSet::load(paths)
        .map(Arc::new)
        .map_err(|e| anyhow::anyhow!("rules do not load:\n{e}"))
}

/// A progress line on stderr for runs longer than a second (terminals only).
struct ProgressLine {
    started: Instant,
    shown: bool,
    enabled: bool,
}

impl ProgressLine {
    fn new() -> Self {
        ProgressLine {
            started: Instant::now(),
            shown: false,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, p: Progress) {
        let secs = self.started.elapsed().as_secs_f64();
        if !self.enabled || secs < 1.0 {
            return;
        }
        self.shown = true;
        let pct = if p.bytes_total > 0 {
            100.0 * p.bytes_read as f64 / p.bytes_total as f64
        } else {
            0.0
        };
        let width = 30usize;
        let filled = ((pct / 100.0) * width as f64).round() as usize;
        eprint!(
            "\r[{}{}] {:5.1}%  {} samples  {:.1} M samples/s ",
            "#".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width)),
            pct.min(100.0),
            p.rows,
            p.rows as f64 / secs / 1e6
        );
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

pub(crate) fn run_replay(args: ReplayArgs) -> Result<bool> {
    let rules = load_rules(&args.rules)?;
    if let Some(data) = &args.nab {
        let out = args.out.clone().context("--nab needs --out")?;
        let n = vigil_replay::nab::run(data, &out, &args.detector, rules)
            .map_err(anyhow::Error::msg)?;
        eprintln!("vigil: wrote {n} result files to {}", out.display());
        return Ok(true);
    }
    if args.inputs.is_empty() {
        bail!("no inputs: give recordings (files or directories) to replay");
    }
    let inputs = expand_inputs(&args.inputs)?;
    let lateness_ms = match args.lateness {
        Some(d) => d.as_millis(),
        None => match vigil_replay::columnar::recorded_lateness(&inputs)? {
            Some(ms) => {
                eprintln!(
                    "vigil: lateness {} from the recording (the live run's; --lateness overrides)",
                    Duration::from_millis(ms)
                );
                ms
            }
            None => 0,
        },
    };
    let opts = Options {
        engine: EvaluatorConfig {
            lateness_ms,
            ..EvaluatorConfig::default()
        },
        from: args
            .from
            .as_deref()
            .map(parse_time)
            .transpose()
            .context("--from")?,
        to: args
            .to
            .as_deref()
            .map(parse_time)
            .transpose()
            .context("--to")?,
        filter: args
            .filter
            .as_deref()
            .map(Filter::new)
            .transpose()
            .map_err(anyhow::Error::msg)?
            .map(Arc::new),
        on_bad: if args.skip_bad {
            OnBad::Skip
        } else {
            OnBad::Fail
        },
        checkpoint: args.stop_after.zip(args.checkpoint.clone()),
        resume: args.resume.clone(),
        trace: Vec::new(),
    };
    let expectations = args
        .expect
        .as_deref()
        .map(Expectations::load)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let format = args.output.unwrap_or(if std::io::stdout().is_terminal() {
        OutputFormat::Table
    } else {
        OutputFormat::Json
    });
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut events: Vec<Event> = Vec::new();
    let keep = expectations.is_some() || args.report.is_some();
    let mut progress = ProgressLine::new();
    let mut write_err = None;
    let (summary, _) = replay(
        &inputs,
        Arc::clone(&rules),
        &opts,
        &mut |e| {
            let line = match format {
                OutputFormat::Json => Some(output::json_line(e)),
                OutputFormat::Table => Some(output::table_row(e)),
                OutputFormat::None => None,
            };
            if let Some(line) = line {
                if let Err(err) = writeln!(out, "{line}") {
                    write_err.get_or_insert(err);
                }
            }
            if keep {
                events.push(e.clone());
            }
        },
        &mut |p| progress.update(p),
    )?;
    progress.finish();
    out.flush()?;
    drop(out);
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    let s = &summary.stats;
    eprintln!(
        "vigil: replayed {} samples ({} evaluated; dropped: {} late, {} duplicate, {} non-finite, {} out of range; {} bad lines skipped) in {:.2}s: {:.2} M samples/s (reading {:.2}s, evaluating {:.2}s){}",
        summary.rows_read,
        s.evaluated,
        s.late,
        s.duplicate,
        s.non_finite,
        s.out_of_range,
        summary.skipped_lines,
        summary.wall_secs,
        summary.rows_read as f64 / summary.wall_secs.max(1e-9) / 1e6,
        summary.read_secs,
        summary.eval_secs,
        if summary.stopped_at_checkpoint { "; stopped at the checkpoint" } else { "" }
    );
    if let Some(path) = &args.report {
        let html = vigil_replay::report::build(
            &inputs,
            Arc::clone(&rules),
            &opts,
            &events,
            expectations.as_ref(),
        )
        .map_err(anyhow::Error::msg)?;
        std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("vigil: report written to {}", path.display());
    }
    if let Some(exp) = &expectations {
        let score = Score::compute(exp, &events);
        eprint!("{}", score.render());
        return Ok(score.passed);
    }
    Ok(true)
}

pub(crate) fn run_backtest(args: BacktestArgs) -> Result<bool> {
    let exp = Expectations::load(&args.expect).map_err(anyhow::Error::msg)?;
    let inputs = expand_inputs(&args.inputs)?;
    let grid = vigil_replay::backtest::parameter_grid(&args.sets).map_err(anyhow::Error::msg)?;
    let files = vigil_engine::rule::rule_files(&args.rules).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "{:<48} {:>9} {:>7} {:>6} {:>4} {:>12}",
        "parameters", "precision", "recall", "TP", "FP", "median delay"
    );
    let mut all_ok = true;
    for combo in grid {
        let label: Vec<String> = combo.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let rules = match vigil_replay::backtest::rules_with(&files, &combo, args.rule.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                // One bad combination (say, a threshold below its recover level) does
                // not end the table.
                all_ok = false;
                println!(
                    "{:<48} rejected: {}",
                    label.join(" "),
                    e.lines().next().unwrap_or_default()
                );
                continue;
            }
        };
        let mut events = Vec::new();
        replay(
            &inputs,
            Arc::new(rules),
            &Options::default(),
            &mut |e| events.push(e.clone()),
            &mut |_| {},
        )?;
        let score = Score::compute(&exp, &events);
        println!(
            "{:<48} {:>9.3} {:>7.3} {:>6} {:>4} {:>12}",
            label.join(" "),
            score.precision,
            score.recall,
            score.true_positives,
            score.false_positives.len(),
            score
                .median_delay_ms()
                .map_or("-".into(), |d| format!("{}s", d as f64 / 1000.0))
        );
    }
    Ok(all_ok)
}

pub(crate) fn run_record(args: RecordArgs) -> Result<bool> {
    let inputs = expand_inputs(&args.inputs)?;
    let mut rec = Recorder::new(
        &args.out,
        Rotation {
            max_bytes: args.max_bytes,
            max_age_ms: args.max_age.as_millis().max(1),
        },
    )?;
    let stats = Arc::new(vigil_replay::source::ReadStats::default());
    let mut streams = Vec::new();
    for p in &inputs {
        streams.push(vigil_replay::source::open(p, OnBad::Fail, &stats)?);
    }
    for chunk in vigil_replay::source::merge(streams) {
        let chunk = chunk?;
        for &(s, ts, v) in &chunk.rows {
            rec.record(&chunk.series[s as usize], ts, v)?;
        }
    }
    let rows = rec.rows();
    let files = rec.finish()?;
    eprintln!(
        "vigil: recorded {rows} samples into {} Parquet files in {}",
        files.len(),
        args.out.display()
    );
    Ok(true)
}
