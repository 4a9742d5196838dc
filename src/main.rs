//! The `vigil` command: a thin shell over the engine and connectors.
//!
//! - `vigil check PATH...`: validate rule files and directories.
//! - `vigil test FILE...`: run rule unit tests (`promtool test rules` format).
//! - `vigil run`: the long-running service.
//! - `vigil replay`, `vigil backtest`, `vigil record`: recordings, offline.

mod replay;
mod run;

/// mimalloc: frees from another thread than the allocating one (every OTLP request) do
/// not contend on a lock, as they do in glibc's malloc (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use vigil_engine::rule::{rule_files, RuleSet};
use vigil_engine::ruletest;

/// Streaming anomaly detection and self-healing for Kubernetes fleets.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: intake, rules, alerts, HTTP API and UI (see `vigil run --help`).
    Run(run::RunArgs),
    /// Replay recordings through rules, offline and deterministically.
    Replay(replay::ReplayArgs),
    /// Replay once per combination of rule parameters and score each run.
    Backtest(replay::BacktestArgs),
    /// Convert recordings to Parquet files, the format replay reads fastest (`vigil run
    /// --record DIR` writes the same files from live intake).
    Record(replay::RecordArgs),
    /// Validate rule files and directories; every error is printed as file:line:column.
    Check {
        /// Rule files or directories of rule files (*.yaml, *.yml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run rule unit tests written in the `promtool test rules` format (plus exp_actions).
    Test {
        /// Test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { paths } => check(&paths),
        Command::Test { files } => test(&files),
        Command::Run(args) => run::run(args).map(|()| true),
        Command::Replay(args) => replay::run_replay(args),
        Command::Backtest(args) => replay::run_backtest(args),
        Command::Record(args) => replay::run_record(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("vigil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(paths: &[PathBuf]) -> Result<bool> {
    let files = match rule_files(paths) {
        Ok(f) => f,
        Err(errs) => {
            eprintln!("{errs}");
            return Ok(false);
        }
    };
    match RuleSet::load(&files) {
        Ok(set) => {
            println!(
                "OK: {} rules in {} groups from {} files",
                set.rules.len(),
                set.groups.len(),
                files.len()
            );
            Ok(true)
        }
        Err(errs) => {
            eprintln!("{errs}");
            let n = errs.0.len();
            eprintln!("{n} error{}", if n == 1 { "" } else { "s" });
            Ok(false)
        }
    }
}

fn test(files: &[PathBuf]) -> Result<bool> {
    let (mut failed, mut checks, mut failures) = (0, 0, 0);
    for f in files {
        match ruletest::run_file(f) {
            Ok(report) => {
                checks += report.checks;
                if report.failures.is_empty() {
                    println!("{}: ok ({} checks)", f.display(), report.checks);
                } else {
                    failed += 1;
                    failures += report.failures.len();
                    println!("{}: FAILED", f.display());
                    for msg in &report.failures {
                        println!("  {}", msg.trim_end().replace('\n', "\n  "));
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!(
                    "{}: ERROR\n  {}",
                    f.display(),
                    e.message.replace('\n', "\n  ")
                );
            }
        }
    }
    println!(
        "{} files, {} checks, {} failed checks, {} files failed",
        files.len(),
        checks,
        failures,
        failed
    );
    Ok(failed == 0)
}
