//! NAB mode over files of the development subset of NAB (`../shared/datasets/nab-dev`,
//! read in place) with the shipped `examples/nab/rules.yaml`: the results layout, one
//! row per input row, scores in [0, 1], a high score in the labelled window of
//! `art_daily_jumpsup` and low scores on the files without anomalies.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vigil_engine::RuleSet;

const FILES: [(&str, &str); 3] = [
    ("artificialWithAnomaly", "art_daily_jumpsup.csv"),
    ("artificialNoAnomaly", "art_daily_small_noise.csv"),
    ("artificialNoAnomaly", "art_flatline.csv"),
];

fn nab_dev() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/nab-dev");
    p.join("data").is_dir().then_some(p)
}

fn rules() -> Arc<RuleSet> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nab/rules.yaml");
    Arc::new(RuleSet::load(&[p]).expect("examples/nab/rules.yaml compiles"))
}

/// `YYYY-MM-DD HH:MM:SS` sorts as time.
fn in_window(ts: &str, windows: &[(String, String)]) -> bool {
    windows
        .iter()
        .any(|(a, b)| ts >= &a[..19] && ts <= &b[..19])
}

#[test]
fn nab_results_layout_rows_and_scores() {
    let Some(nab) = nab_dev() else {
        eprintln!("skipped: ../shared/datasets/nab-dev is not here");
        return;
    };
    // A data directory with three files of the subset, linked (not copied).
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (cat, file) in FILES {
        std::fs::create_dir_all(data.join(cat)).unwrap();
        let src = nab.join("data").join(cat).join(file);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&src, data.join(cat).join(file)).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&src, data.join(cat).join(file)).unwrap();
    }
    let out = tmp.path().join("results");
    let n = vigil_replay::nab::run(&data, &out, "vigil", rules()).unwrap();
    assert_eq!(n, 3);

    let windows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(nab.join("windows.json")).unwrap()).unwrap();
    for (cat, file) in FILES {
        let input = std::fs::read_to_string(nab.join("data").join(cat).join(file)).unwrap();
        let input: Vec<&str> = input
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .collect();
        let path = out.join("vigil").join(cat).join(format!("vigil_{file}"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
        let rows: Vec<(&str, f64)> = lines
            .map(|l| {
                let (rest, score) = l.rsplit_once(',').unwrap();
                (rest, score.parse::<f64>().unwrap())
            })
            .collect();
        assert_eq!(rows.len(), input.len(), "{file}: one row per input row");
        for ((rest, score), inp) in rows.iter().zip(&input) {
            assert_eq!(rest, inp, "{file}: timestamp and value as in the input");
            assert!((0.0..=1.0).contains(score), "{file}: score {score}");
        }
        let win: Vec<(String, String)> = windows[format!("{cat}/{file}")]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w[0].as_str().unwrap().to_string(),
                    w[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let (mut inside, mut outside): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        for (rest, score) in &rows {
            let ts = &rest[..19];
            if in_window(ts, &win) {
                inside.push(*score);
            } else {
                outside.push(*score);
            }
        }
        let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let mean = |v: &[f64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        eprintln!(
            "{cat}/{file}: {} rows; inside the windows: {} rows, mean {:.3}, max {:.3}; outside: mean {:.3}, max {:.3}",
            rows.len(),
            inside.len(),
            mean(&inside),
            max(&inside),
            mean(&outside),
            max(&outside)
        );
        match file {
            "art_daily_jumpsup.csv" => {
                assert!(!inside.is_empty());
                assert!(max(&inside) >= 0.5, "the jump fires: {}", max(&inside));
                assert!(
                    max(&inside) > max(&outside),
                    "{} vs {}",
                    max(&inside),
                    max(&outside)
                );
                assert!(
                    mean(&inside) > mean(&outside),
                    "{} vs {}",
                    mean(&inside),
                    mean(&outside)
                );
                // Warm-up: the first half day (144 samples) has no verdict.
                assert!(rows[..144].iter().all(|r| r.1 == 0.0));
                assert!(rows[144..].iter().any(|r| r.1 > 0.0));
            }
            "art_flatline.csv" => assert!(
                rows.iter().all(|r| r.1 == 0.0),
                "a flat line is never anomalous"
            ),
            _ => assert!(
                max(&outside) < 0.5,
                "{file}: no anomaly, yet max score {}",
                max(&outside)
            ),
        }
    }

    // Deterministic: a second run writes the same bytes.
    let again = tmp.path().join("again");
    vigil_replay::nab::run(&data, &again, "vigil", rules()).unwrap();
    for (cat, file) in FILES {
        let name = format!("vigil_{file}");
        assert_eq!(
            std::fs::read(out.join("vigil").join(cat).join(&name)).unwrap(),
            std::fs::read(again.join("vigil").join(cat).join(&name)).unwrap()
        );
    }
}
