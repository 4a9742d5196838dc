//! Golden diagnostics: every directory under `tests/rule_errors/` holds rule files with a
//! mistake and `error.txt`, the exact `file:line:column: message` lines `vigil check`
//! prints for them (file names relative to the case directory).
//!
//! `UPDATE_GOLDEN=1 cargo test -p vigil-engine --test rule_errors` rewrites the goldens;
//! review the diff by eye: each position must point at the offending field, each message
//! must say what is wrong and what to do.

use std::fs;
use std::path::{Path, PathBuf};

use vigil_engine::RuleSet;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rule_errors");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.map(|e| e.path()).unwrap_or_else(|e| panic!("{e}")))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The diagnostics for the rule files of `dir`, one per line, paths relative to `dir`.
fn render(dir: &Path) -> String {
    match RuleSet::load(&[dir.to_path_buf()]) {
        Ok(set) => format!("no error: {} rules loaded\n", set.rules.len()),
        Err(errs) => {
            let prefix = format!("{}{}", dir.display(), std::path::MAIN_SEPARATOR);
            // Messages may name other files too ("also in ..."): strip the prefix everywhere.
            format!("{errs}\n").replace(&prefix, "")
        }
    }
}

#[test]
fn rule_errors_match_goldens() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let cases = cases();
    assert!(
        cases.len() >= 15,
        "rule_errors/ has only {} cases",
        cases.len()
    );
    let mut failures = Vec::new();
    for dir in &cases {
        let got = render(dir);
        let golden = dir.join("error.txt");
        if update {
            fs::write(&golden, &got).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
            continue;
        }
        let want = fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}:\n--- expected (error.txt)\n{want}+++ got\n{got}",
                dir.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden(s) differ (UPDATE_GOLDEN=1 rewrites them):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every case is a mistake: a golden that says "no error" is a broken case.
#[test]
fn every_case_is_an_error() {
    for dir in cases() {
        assert!(
            RuleSet::load(std::slice::from_ref(&dir)).is_err(),
            "{} loads without error",
            dir.display()
        );
    }
}
