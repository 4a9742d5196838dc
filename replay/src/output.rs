//! Rendering replay events: one JSON object a line (stable bytes: the same input
//! gives the same output), or a readable timeline.

use std::fmt::Write as _;

use serde_json::Value;
use vigil_engine::eval::Event;
use vigil_engine::Labels;

fn num(v: f64) -> String {
    if v.is_finite() {
        serde_json::Number::from_f64(v).map_or_else(|| "null".into(), |n| n.to_string())
    } else {
        "null".into()
    }
}

fn labels_json(l: &Labels) -> String {
    serde_json::to_string(l).unwrap_or_else(|_| "{}".into())
}

fn string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// One event as a JSON line (no newline):
/// `{"type":"alert","ts":..,"rule":..,"state":..,"labels":{..},"value":..}` or
/// `{"type":"intent","ts":..,"rule":..,"action":..,"node":..,"labels":{..}}`.
pub fn json_line(e: &Event) -> String {
    match e {
        Event::Alert(a) => format!(
            "{{\"type\":\"alert\",\"ts\":{},\"rule\":{},\"state\":\"{}\",\"labels\":{},\"value\":{}}}",
            a.ts,
            string(&a.rule),
            a.state.as_str(),
            labels_json(&a.labels),
            num(a.value)
        ),
        Event::Intent(i) => {
            let mut s = format!(
                "{{\"type\":\"intent\",\"ts\":{},\"rule\":{},\"action\":\"{}\",\"node\":{}",
                i.ts,
                string(&i.rule),
                i.action.as_str(),
                string(&i.node)
            );
            if let (Some(ns), Some(pod)) = (&i.namespace, &i.pod) {
                let _ = write!(s, ",\"namespace\":{},\"pod\":{}", string(ns), string(pod));
            }
            let _ = write!(s, ",\"labels\":{}}}", labels_json(&i.labels));
            s
        }
    }
}

/// RFC 3339 UTC with seconds.
pub fn time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

fn short_labels(l: &Labels) -> String {
    l.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One event as a timeline row.
pub fn table_row(e: &Event) -> String {
    match e {
        Event::Alert(a) => format!(
            "{}  {:<9} {:<28} {}  value={}",
            time(a.ts),
            a.state.as_str().to_uppercase(),
            &*a.rule,
            short_labels(&a.labels),
            if a.value.is_finite() {
                format!("{:.4}", a.value)
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            } else {
                "-".into()
            }
        ),
        Event::Intent(i) => format!(
            "{}  {:<9} {:<28} {} node={}",
            time(i.ts),
            "INTENT",
            &*i.rule,
            i.action.as_str(),
            i.node
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use vigil_engine::eval::{AlertEvent, Intent};
    use vigil_engine::lifecycle::AlertState;
    use vigil_engine::rule::Action;

    #[test]
    fn json_lines_have_the_documented_shape() {
        let labels: Labels = [("alertname", "X"), ("node", "n\"1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let a = Event::Alert(AlertEvent {
            ts: 5,
            rule: Arc::from("X"),
            state: AlertState::Firing,
            labels: labels.clone(),
            annotations: Labels::new(),
            value: f64::NAN,
            score: 1.0,
            active_at: 5,
            fingerprint: 1,
            flapping: false,
            notify: true,
        });
        assert_eq!(
            json_line(&a),
            r#"{"type":"alert","ts":5,"rule":"X","state":"firing","labels":{"alertname":"X","node":"n\"1"},"value":null}"#
        );
        let i = Event::Intent(Intent {
            ts: 6,
            rule: Arc::from("X"),
            action: Action::Isolate,
            node: "n1".into(),
            namespace: None,
            pod: None,
            labels,
            fingerprint: 1,
        });
        assert_eq!(
            json_line(&i),
            r#"{"type":"intent","ts":6,"rule":"X","action":"isolate","node":"n1","labels":{"alertname":"X","node":"n\"1"}}"#
        );
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
    }
}
