//! `vigil backtest`: parameter grids over rule files.
//!
//! `--set detect.zscore.threshold=2.5,3,3.5` (repeatable) is parsed by
//! [`parameter_grid`] into every combination of assignments; [`rules_with`] loads the
//! rule files as YAML, writes one combination into every rule that has the parameter's
//! parent (or only into `--rule NAME`), and compiles the result, so each combination
//! replays against exactly the rules in git but for the parameters being tuned.

use std::path::PathBuf;

use serde_yaml::Value;
use vigil_engine::rule::{RuleSet, Source};

/// Parses `path=v1,v2,...` strings into the cartesian product of assignments, the first
/// `--set` varying slowest: `["a=1,2", "b=x"]` gives `[[(a,1),(b,x)], [(a,2),(b,x)]]`.
///
/// A path is dot-separated (`detect.zscore.threshold`, `for`); a segment that is a
/// number indexes a list. Values are trimmed and must not be empty; a path may appear
/// in one `--set` only.
pub fn parameter_grid(sets: &[String]) -> Result<Vec<Vec<(String, String)>>, String> {
    if sets.is_empty() {
        return Err(
            "no parameters: give --set PATH=V1,V2,... (e.g. detect.zscore.threshold=2.5,3,3.5)"
                .into(),
        );
    }
    let mut axes: Vec<(String, Vec<String>)> = Vec::new();
    for set in sets {
        let (path, values) = set.split_once('=').ok_or_else(|| {
            format!(
                "--set {set:?}: expected PATH=V1,V2,... (e.g. detect.zscore.threshold=2.5,3,3.5)"
            )
        })?;
        let path = path.trim();
        if path.is_empty() {
            return Err(format!(
                "--set {set:?}: the parameter path before '=' is empty"
            ));
        }
        if let Some(bad) = path
            .split('.')
            .find(|s| s.trim().is_empty() || s.trim() != *s)
        {
            return Err(format!(
                "--set {set:?}: bad path {path:?}: segments are separated by single dots and may not be empty or padded ({bad:?})"
            ));
        }
        if axes.iter().any(|(p, _)| p == path) {
            return Err(format!(
                "--set {set:?}: {path} is given more than once; list all its values in one --set"
            ));
        }
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        if values.iter().any(String::is_empty) {
            return Err(format!(
                "--set {set:?}: empty value; expected PATH=V1,V2,... with no empty values"
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = values.iter().find(|v| !seen.insert(v.as_str())) {
            return Err(format!("--set {set:?}: value {dup:?} is listed twice"));
        }
        axes.push((path.to_string(), values));
    }
    let mut grid: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (path, values) in &axes {
        let mut next = Vec::with_capacity(grid.len() * values.len());
        for combo in &grid {
            for v in values {
                let mut c = combo.clone();
                c.push((path.clone(), v.clone()));
                next.push(c);
            }
        }
        grid = next;
    }
    Ok(grid)
}

/// A `--set` value as YAML: a number, bool, null or string (`5m` stays a string).
fn scalar(path: &str, text: &str) -> Result<Value, String> {
    match serde_yaml::from_str::<Value>(text) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::String(_) | Value::Null)) => Ok(v),
        Ok(_) => Err(format!(
            "{path}={text}: not a scalar value (a number, true/false or a string)"
        )),
        // Not valid YAML on its own (e.g. "a: b: c"): take it as a plain string.
        Err(_) => Ok(Value::String(text.to_string())),
    }
}

/// One step into a mapping (by key) or a list (by index).
fn child_mut<'a>(v: &'a mut Value, seg: &str) -> Option<&'a mut Value> {
    match v {
        Value::Mapping(m) => m.get_mut(seg),
        Value::Sequence(s) => seg.parse::<usize>().ok().and_then(|i| s.get_mut(i)),
        _ => None,
    }
}

/// Sets `path` below `rule` when its parent exists; whether it was set.
fn set_path(rule: &mut Value, path: &[&str], value: &Value) -> bool {
    let Some((leaf, parents)) = path.split_last() else {
        return false;
    };
    let mut node = rule;
    for seg in parents {
        match child_mut(node, seg) {
            Some(n) => node = n,
            None => return false,
        }
    }
    match node {
        Value::Mapping(m) => {
            m.insert(Value::String((*leaf).to_string()), value.clone());
            true
        }
        Value::Sequence(s) => match leaf.parse::<usize>().ok().and_then(|i| s.get_mut(i)) {
            Some(slot) => {
                *slot = value.clone();
                true
            }
            None => false,
        },
        _ => false,
    }
}

fn rule_name(rule: &Value) -> Option<&str> {
    rule.get("name").and_then(Value::as_str)
}

/// Loads `files` (rule files, as [`vigil_engine::rule::rule_files`] lists them), applies
/// one combination of [`parameter_grid`] to every rule that has each path's parent
/// (`detect.zscore.threshold` applies to rules with a `detect.zscore` block; the leaf
/// may be absent and is then added), or only to the rule named `only_rule`, and
/// compiles the result. A path no rule has is an error, as is an `only_rule` that
/// names no rule. Files the combination does not touch are compiled from their
/// original text (diagnostics keep their line numbers).
pub fn rules_with(
    files: &[PathBuf],
    combo: &[(String, String)],
    only_rule: Option<&str>,
) -> Result<RuleSet, String> {
    let mut docs: Vec<(PathBuf, String, Option<Value>, bool)> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        // Parsed only when something is to change (the compiler reports bad YAML better).
        let doc = if combo.is_empty() && only_rule.is_none() {
            None
        } else {
            Some(
                serde_yaml::from_str::<Value>(&text)
                    .map_err(|e| format!("{}: {e}", f.display()))?,
            )
        };
        docs.push((f.clone(), text, doc, false));
    }
    if let Some(name) = only_rule {
        let found = docs
            .iter()
            .filter_map(|(_, _, d, _)| d.as_ref()?.get("rules")?.as_sequence())
            .flatten()
            .any(|r| rule_name(r) == Some(name));
        if !found {
            return Err(format!(
                "--rule {name}: no rule of that name in the rule files"
            ));
        }
    }
    for (path, text) in combo {
        let segs: Vec<&str> = path.split('.').collect();
        let value = scalar(path, text)?;
        let mut applied = 0usize;
        for (_, _, doc, changed) in &mut docs {
            let Some(Value::Sequence(rules)) = doc.as_mut().and_then(|d| d.get_mut("rules")) else {
                continue;
            };
            for rule in rules.iter_mut() {
                if only_rule.is_some_and(|n| rule_name(rule) != Some(n)) {
                    continue;
                }
                if set_path(rule, &segs, &value) {
                    applied += 1;
                    *changed = true;
                }
            }
        }
        if applied == 0 {
            let parent = segs[..segs.len() - 1].join(".");
            let whom = match only_rule {
                Some(n) => format!("rule {n} has"),
                None => "no rule has".to_string(),
            };
            return Err(if parent.is_empty() {
                format!("--set {path}: {whom} no such field")
            } else if only_rule.is_some() {
                format!("--set {path}: {whom} no {parent}")
            } else {
                format!("--set {path}: {whom} {parent}")
            });
        }
    }
    let touched: Vec<String> = combo.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut sources = Vec::with_capacity(docs.len());
    for (f, text, doc, changed) in docs {
        let text = match doc {
            Some(d) if changed => {
                serde_yaml::to_string(&d).map_err(|e| format!("{}: {e}", f.display()))?
            }
            _ => text,
        };
        sources.push(Source {
            name: f.display().to_string(),
            text,
        });
    }
    RuleSet::from_sources(&sources).map_err(|e| {
        format!(
            "the rules with {} do not compile (positions in changed files are those of the file as rewritten with the parameters):\n{e}",
            touched.join(" ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn grid_is_the_cartesian_product_first_set_slowest() {
        let g = parameter_grid(&s(&["detect.zscore.threshold=2.5, 3,3.5", "for=0s,1m"])).unwrap();
        assert_eq!(g.len(), 6);
        assert_eq!(
            g[0],
            pairs(&[("detect.zscore.threshold", "2.5"), ("for", "0s")])
        );
        assert_eq!(
            g[1],
            pairs(&[("detect.zscore.threshold", "2.5"), ("for", "1m")])
        );
        assert_eq!(
            g[5],
            pairs(&[("detect.zscore.threshold", "3.5"), ("for", "1m")])
        );
        assert_eq!(
            parameter_grid(&s(&["a=1"])).unwrap(),
            vec![pairs(&[("a", "1")])]
        );
    }

    #[test]
    fn grid_rejects_malformed_sets() {
        for (bad, why) in [
            ("detect.zscore.threshold", "expected PATH=V1,V2"),
            ("=1,2", "path before '=' is empty"),
            ("a..b=1", "bad path"),
            ("a.=1", "bad path"),
            ("a=", "empty value"),
            ("a=1,,2", "empty value"),
            ("a=1,1", "listed twice"),
        ] {
            let e = parameter_grid(&s(&[bad])).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(parameter_grid(&s(&["a=1", "a=2"]))
            .unwrap_err()
            .contains("more than once"));
        assert!(parameter_grid(&[]).unwrap_err().contains("no parameters"));
    }

    const RULES: &str = "group: g
interval: 10s
rules:
  - name: Z
    select: 'm'
    detect:
      zscore: { window: 5m, threshold: 3 }
  - name: Z2
    select: 'n'
    detect:
      zscore: { window: 5m }
  - name: T
    select: 'm'
    detect:
      threshold: { above: 10 }
";

    fn files(dir: &tempfile::TempDir) -> Vec<PathBuf> {
        let p = dir.path().join("g.yaml");
        std::fs::write(&p, RULES).unwrap();
        vec![p]
    }

    fn zscore(set: &RuleSet, name: &str) -> vigil_engine::detector::ZScoreConfig {
        match set.rule(name).unwrap().detector.as_ref().unwrap() {
            vigil_engine::detector::DetectorSpec::ZScore(c, _) => c.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sets_the_leaf_in_every_rule_with_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(&dir);
        let set = rules_with(&f, &pairs(&[("detect.zscore.threshold", "2.5")]), None).unwrap();
        assert_eq!(zscore(&set, "Z").threshold, 2.5);
        // Absent leaf: added.
        assert_eq!(zscore(&set, "Z2").threshold, 2.5);
        match set.rule("T").unwrap().detector.as_ref().unwrap() {
            vigil_engine::detector::DetectorSpec::Threshold(t) => assert_eq!(t.above, Some(10.0)),
            other => panic!("{other:?}"),
        }
        // Only one rule; a string value (duration) and an integer.
        let set = rules_with(
            &f,
            &pairs(&[("detect.zscore.threshold", "4"), ("for", "1m")]),
            Some("Z2"),
        )
        .unwrap();
        assert_eq!(zscore(&set, "Z").threshold, 3.0);
        assert_eq!(zscore(&set, "Z2").threshold, 4.0);
        assert_eq!(set.rule("Z2").unwrap().for_ms, 60_000);
        assert_eq!(set.rule("Z").unwrap().for_ms, 0);
        // No combination: the files as they are.
        assert_eq!(rules_with(&f, &[], None).unwrap().rules.len(), 3);
    }

    #[test]
    fn clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(&dir);
        let e = rules_with(&f, &pairs(&[("detect.ewma.alpha", "0.3")]), None).unwrap_err();
        assert!(e.contains("no rule has detect.ewma"), "{e}");
        let e = rules_with(&f, &pairs(&[("detect.zscore.threshold", "1")]), Some("T")).unwrap_err();
        assert!(e.contains("rule T has no detect.zscore"), "{e}");
        let e = rules_with(
            &f,
            &pairs(&[("detect.zscore.threshold", "1")]),
            Some("Nope"),
        )
        .unwrap_err();
        assert!(e.contains("no rule of that name"), "{e}");
        // A value the engine rejects: the compile error names the combination.
        let e = rules_with(&f, &pairs(&[("detect.zscore.threshold", "-1")]), None).unwrap_err();
        assert!(
            e.contains("detect.zscore.threshold=-1 do not compile"),
            "{e}"
        );
        assert!(e.contains("threshold"), "{e}");
        let e = rules_with(&[dir.path().join("missing.yaml")], &[], None).unwrap_err();
        assert!(e.contains("missing.yaml"), "{e}");
    }

    #[test]
    fn scalars() {
        assert_eq!(scalar("p", "3").unwrap(), Value::Number(3.into()));
        assert_eq!(scalar("p", "true").unwrap(), Value::Bool(true));
        assert_eq!(scalar("p", "5m").unwrap(), Value::String("5m".into()));
        assert!(scalar("p", "{a: 1}").is_err());
    }
}
