//! The web UI in a real headless Chromium: `vigil run` with one firing z-score alert,
//! the page's DOM after its scripts ran, and a screenshot whose pixels show the chart.
//!
//! Needs `chromium` on PATH (`bash scripts/test` installs it); without it the test fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{jsonl, Vigil};

const RULES: &str = r#"group: node
interval: 10s
rules:
  - name: CpuSpike
    select: cpu_usage
    by: [node]
    detect:
      zscore: { window: 10m, threshold: 3, min_samples: 10, direction: up, recover: 1 }
    for: 30s
    severity: critical
    annotations:
      summary: "{{ $labels.node }} cpu at {{ $value }}"
"#;

const CONFIG: &str = "engine:\n  lateness: 0s\n  idle_advance: 1h\n";

const T0: i64 = 1_793_613_600_000;

/// The series colour (`--value`), the panel background (`--panel`) and the firing
/// span's fill, as in index.html.
const VALUE_RGB: [u8; 3] = [0x53, 0x9b, 0xf5];
const PANEL_RGB: [u8; 3] = [0x17, 0x1d, 0x24];
const FIRING_RGBA: ([u8; 3], f64) = ([229, 83, 75], 0.18);

/// How long one Chromium run may take before the test gives up on it.
const CHROMIUM_LIMIT: Duration = Duration::from_secs(60);

/// Ten minutes of quiet CPU on n1 (around 1.0), then a steadily rising spike: z-score
/// pending at the first spike point, firing 30 s later, still firing at the end.
fn samples() -> String {
    let noise = [0.0, 0.1, -0.05, 0.08, -0.1, 0.03];
    let mut pts: Vec<(i64, f64)> = (0..60)
        .map(|i| (T0 + i * 10_000, 1.0 + noise[i as usize % noise.len()]))
        .collect();
    pts.extend((0..15).map(|k| (T0 + (60 + k) * 10_000, 3.0 + 0.2 * k as f64)));
    jsonl("cpu_usage", r#"{"node":"n1"}"#, &pts)
}

/// `chromium` on PATH, or a failure that says how to get it.
fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("`chromium` is not on PATH: this test drives the UI in a real headless Chromium; run `bash scripts/test`, which installs it (apt-get install chromium)")
    })
}

/// Runs headless Chromium on `url` with `extra` flags and a fresh profile under `dir`;
/// returns its stdout. Panics with its stderr when it fails or hangs.
fn run_chromium(dir: &Path, name: &str, extra: &[&str], url: &str) -> String {
    let profile = dir.join(format!("chromium-profile-{name}"));
    let out = dir.join(format!("chromium-{name}.out"));
    let err = dir.join(format!("chromium-{name}.err"));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start chromium");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > CHROMIUM_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium ({name}) still running after {CHROMIUM_LIMIT:?}; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "chromium ({name}) exited with {status}; stderr:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    std::fs::read_to_string(&out).unwrap()
}

/// The element that starts with `open` (e.g. `<tbody id="alerts"`), up to its `close` tag.
fn element<'a>(dom: &'a str, open: &str, close: &str) -> &'a str {
    let start = dom
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in the DOM:\n{dom}"));
    let len = dom[start..]
        .find(close)
        .unwrap_or_else(|| panic!("{open} is not closed by {close}"));
    &dom[start..start + len + close.len()]
}

/// The value of attribute `name` in the first tag of `html`.
fn attr<'a>(html: &'a str, name: &str) -> &'a str {
    let tag = &html[..html.find('>').unwrap()];
    let key = format!(" {name}=\"");
    let start = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    &tag[start..start + tag[start..].find('"').unwrap()]
}

/// `x,y` pairs of an SVG `points` attribute.
fn svg_points(points: &str) -> Vec<(f64, f64)> {
    points
        .split_whitespace()
        .map(|p| {
            let (x, y) = p
                .split_once(',')
                .unwrap_or_else(|| panic!("bad SVG point {p:?}"));
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

/// An RGBA 8-bit image.
struct Image {
    width: usize,
    height: usize,
    rgba: Vec<u8>,
}

impl Image {
    fn decode(path: &Path) -> Image {
        let mut decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        decoder.set_transformations(
            png::Transformations::normalize_to_color8() | png::Transformations::ALPHA,
        );
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgba, "{info:?}");
        buf.truncate(info.buffer_size());
        Image {
            width: info.width as usize,
            height: info.height as usize,
            rgba: buf,
        }
    }

    fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 4;
        [self.rgba[i], self.rgba[i + 1], self.rgba[i + 2]]
    }

    fn near(&self, x: usize, y: usize, rgb: [u8; 3], tol: u8) -> bool {
        self.pixel(x, y)
            .iter()
            .zip(rgb)
            .all(|(&a, b)| a.abs_diff(b) <= tol)
    }

    /// Pixels within `tol` of `rgb` in every channel.
    fn matching(&self, rgb: [u8; 3], tol: u8) -> Vec<(usize, usize)> {
        let all = (0..self.height).flat_map(|y| (0..self.width).map(move |x| (x, y)));
        all.filter(|&(x, y)| self.near(x, y, rgb, tol)).collect()
    }

    /// Vertical runs `(x, first y, last y)` of at least `min` pixels near `rgb`.
    fn vertical_runs(&self, rgb: [u8; 3], tol: u8, min: usize) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        for x in 0..self.width {
            let mut start = None;
            for y in 0..=self.height {
                match (y < self.height && self.near(x, y, rgb, tol), start) {
                    (true, None) => start = Some(y),
                    (false, Some(s)) => {
                        if y - s >= min {
                            out.push((x, s, y - 1));
                        }
                        start = None;
                    }
                    _ => {}
                }
            }
        }
        out
    }
}

/// `fg` at opacity `alpha` over `bg`.
fn over(fg: [u8; 3], alpha: f64, bg: [u8; 3]) -> [u8; 3] {
    [0, 1, 2]
        .map(|i| (f64::from(bg[i]) + alpha * (f64::from(fg[i]) - f64::from(bg[i]))).round() as u8)
}

#[test]
fn ui_renders_alerts_and_chart() {
    let started = Instant::now();
    chromium(); // fail first thing, not after starting the service
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("rules")).unwrap();
    std::fs::write(d.join("rules/node.yaml"), RULES).unwrap();
    std::fs::write(d.join("vigil.yaml"), CONFIG).unwrap();
    let v = Vigil::start(
        d,
        &[
            "--config",
            "vigil.yaml",
            "--rules",
            "rules",
            "--state-dir",
            "state",
        ],
    );

    let (code, resp) = v.post("/api/v1/import", &samples());
    assert_eq!(code, 200, "{resp}");
    let firing = || {
        let a = v.json("/api/v1/alerts");
        a["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["state"] == "firing")
            .cloned()
    };
    v.wait_until(Duration::from_secs(10), "CpuSpike firing", || {
        firing().is_some()
    });
    let alert = firing().unwrap();
    assert_eq!(alert["labels"]["alertname"], "CpuSpike");
    let fp = alert["fingerprint"].as_str().unwrap();
    let series = v.json(&format!("/api/v1/series?rule=CpuSpike&fingerprint={fp}"));
    let points = series["data"]["points"].as_array().unwrap();
    let with_value = points.iter().filter(|p| !p[1].is_null()).count();
    let with_band = points
        .iter()
        .filter(|p| !p[2].is_null() || !p[3].is_null())
        .count();
    assert!(
        with_value > 60 && with_band > 1,
        "the window seeds the history, the band follows: {series}"
    );
    let (active_at, fired_at) = (&series["data"]["activeAt"], &series["data"]["firedAt"]);
    assert!(
        active_at.as_i64().unwrap() < fired_at.as_i64().unwrap(),
        "pending, then firing: {series}"
    );
    let url = format!("http://127.0.0.1:{}/", v.port);

    // 1. The DOM once the page's scripts have fetched the API and rendered.
    let t = Instant::now();
    let dom = run_chromium(
        d,
        "dom",
        &["--virtual-time-budget=5000", "--dump-dom"],
        &url,
    );
    let dom_secs = t.elapsed().as_secs_f64();
    std::fs::write(d.join("ui.html"), &dom).unwrap();
    let counts = element(&dom, r#"<span id="counts">"#, "</span></span>");
    assert!(
        counts.contains(r#"<span class="pill firing">1 firing</span>"#),
        "the page did not reach the API:\n{counts}"
    );

    let alerts = element(&dom, r#"<tbody id="alerts">"#, "</tbody>");
    let row = element(alerts, "<tr", "</tr>");
    assert!(
        row.contains("CpuSpike"),
        "first alert row is CpuSpike:\n{alerts}"
    );
    assert!(
        row.contains(r#"<span class="pill firing">firing</span>"#),
        "with a firing pill:\n{row}"
    );
    assert!(row.contains("n1 cpu at"), "and its summary:\n{row}");
    assert_eq!(attr(row, "data-fp"), fp);
    assert!(
        attr(row, "class").contains("selected"),
        "the first alert is selected for the chart:\n{row}"
    );

    let rules = element(&dom, r#"<tbody id="rules">"#, "</tbody>");
    assert!(
        rules.contains("CpuSpike") && rules.contains("<code>zscore</code>"),
        "rules table:\n{rules}"
    );
    assert!(
        rules.contains(r#"<span class="pill firing">firing</span>"#),
        "rule state:\n{rules}"
    );

    let chart = element(&dom, r#"<div class="dim" id="chart-body">"#, "</svg>");
    assert!(chart.contains("<b>CpuSpike</b>"), "chart title:\n{chart}");
    let svg = element(chart, "<svg", "</svg>");
    let value = svg_points(attr(
        element(svg, r#"<polyline class="value""#, ">"),
        "points",
    ));
    assert_eq!(
        value.len(),
        with_value,
        "one polyline point per series point:\n{svg}"
    );
    assert!(
        value.windows(2).all(|w| w[0].0 < w[1].0),
        "x increases with time: {value:?}"
    );
    let band = svg_points(attr(
        element(svg, r#"<polygon class="band""#, ">"),
        "points",
    ));
    assert_eq!(
        band.len(),
        2 * with_band,
        "upper and lower edge of each banded point:\n{svg}"
    );
    let firing_span = element(svg, r#"<rect class="firing-span""#, ">");
    let width: f64 = attr(firing_span, "width").parse().unwrap();
    assert!(width > 0.0, "{firing_span}");
    let pending_span = element(svg, r#"<rect class="pending-span""#, ">");
    assert!(
        attr(pending_span, "width").parse::<f64>().unwrap() > 0.0,
        "{pending_span}"
    );
    let vals = value.iter().map(|p| p.1);
    assert!(
        vals.clone().fold(f64::MIN, f64::max) - vals.fold(f64::MAX, f64::min) > 100.0,
        "the spike spans the chart: {value:?}"
    );

    // 2. The pixels: the chart really rendered, not just its DOM.
    let t = Instant::now();
    let shot = d.join("ui.png");
    run_chromium(
        d,
        "png",
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
            "--virtual-time-budget=5000",
        ],
        &url,
    );
    let png_secs = t.elapsed().as_secs_f64();
    let _ = std::fs::copy(&shot, "/tmp/vigil-ui.png");
    let img = Image::decode(&shot);
    assert_eq!((img.width, img.height), (1280, 900));

    // The firing span: columns of its tint, each with a long vertical run of it (the
    // antialiased edges of red text and pills elsewhere on the page have none), in the
    // right-hand column of the page.
    let tint = over(FIRING_RGBA.0, FIRING_RGBA.1, PANEL_RGB);
    let runs = img.vertical_runs(tint, 3, 30);
    let columns = runs
        .iter()
        .map(|r| r.0)
        .collect::<std::collections::BTreeSet<_>>();
    assert!(
        columns.len() >= 20,
        "{} columns with a tall run of the firing tint {tint:?} in {}",
        columns.len(),
        shot.display()
    );
    let (x0, x1) = (*columns.first().unwrap(), *columns.last().unwrap());
    let y0 = runs.iter().map(|r| r.1).min().unwrap();
    let y1 = runs.iter().map(|r| r.2).max().unwrap();
    assert!(
        x0 > img.width / 2 && y1 - y0 > 150,
        "firing span at x {x0}..{x1}, y {y0}..{y1} in {}",
        shot.display()
    );
    // The series line crosses it in the series colour.
    let line = img
        .matching(VALUE_RGB, 8)
        .into_iter()
        .filter(|&(x, y)| (x0..=x1).contains(&x) && (y0..=y1).contains(&y))
        .count();
    assert!(
        line > 10,
        "{line} pixels of the series colour inside the firing span in {}",
        shot.display()
    );

    eprintln!(
        "ui test: {:.1} s in all (chromium: dump-dom {dom_secs:.1} s, screenshot {png_secs:.1} s); screenshot {} (copy in /tmp/vigil-ui.png)",
        started.elapsed().as_secs_f64(),
        shot.display()
    );
}
