//! The rule language: parse rule files, validate them (collecting every error with its
//! `file:line:column`), and compile them into a [`RuleSet`] the evaluator runs.
//!
//! Parsing is two-phase (raw serde types in [`raw`], then [`compile`]): the raw phase
//! catches syntax, unknown fields and bad durations; the compile phase catches bad
//! selectors, templates, out-of-range parameters, duplicate names and dangling compound
//! references. Every rule is checked even after an error, so `vigil check` reports all
//! problems at once.

mod compile;
mod locate;
pub mod raw;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use compile::{Action, CompoundMode, CompoundSpec, IntentSpec, Rule, RuleKind};
pub use raw::{AggregateOp, Severity};

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a rule set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleErrors(pub Vec<Diagnostic>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// A group as loaded.
#[derive(Debug, Clone)]
pub struct Group {
    /// Name.
    pub name: Arc<str>,
    /// File it came from.
    pub file: String,
    /// Interval in ms.
    pub interval_ms: i64,
    /// Indices of its rules in [`RuleSet::rules`].
    pub rules: Vec<usize>,
}

/// A validated, compiled set of rules.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// All rules, in file order.
    pub rules: Vec<Rule>,
    /// All groups.
    pub groups: Vec<Group>,
}

/// A rule file's name and text.
#[derive(Debug, Clone)]
pub struct Source {
    /// Name used in diagnostics.
    pub name: String,
    /// YAML text.
    pub text: String,
}

impl RuleSet {
    /// Compiles rule files from memory.
    pub fn from_sources(sources: &[Source]) -> Result<RuleSet, RuleErrors> {
        compile::compile(sources)
    }

    /// Loads rule files and directories (`*.yaml`, `*.yml`, not recursing into `tests/`),
    /// sorted by path.
    pub fn load(paths: &[PathBuf]) -> Result<RuleSet, RuleErrors> {
        let files = rule_files(paths)?;
        let mut sources = Vec::new();
        let mut errs = Vec::new();
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(text) => sources.push(Source {
                    name: f.display().to_string(),
                    text,
                }),
                Err(e) => errs.push(Diagnostic {
                    file: f.display().to_string(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        match (compile::compile(&sources), errs.is_empty()) {
            (Ok(set), true) => Ok(set),
            (Ok(_), false) => Err(RuleErrors(errs)),
            (Err(RuleErrors(more)), _) => {
                errs.extend(more);
                Err(RuleErrors(errs))
            }
        }
    }

    /// The rule called `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.name == name)
    }
}

/// Expands directories into their rule files (sorted); files are taken as given.
pub fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RuleErrors> {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut found: Vec<PathBuf> = rd
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|f| f.is_file() && is_yaml(f))
                        .collect();
                    found.sort();
                    out.extend(found);
                }
                Err(e) => errs.push(io_diag(p, &e)),
            }
        } else if p.exists() {
            out.push(p.clone());
        } else {
            errs.push(Diagnostic {
                file: p.display().to_string(),
                line: 0,
                column: 0,
                message: "no such file or directory".into(),
            });
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(RuleErrors(errs))
    }
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

fn io_diag(p: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic {
        file: p.display().to_string(),
        line: 0,
        column: 0,
        message: e.to_string(),
    }
}
