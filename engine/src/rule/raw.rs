//! The rule file as written: serde types, strict (`deny_unknown_fields`), with the
//! documented defaults. [`super::compile`] turns them into runnable rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::detector::DetectConfig;
use crate::duration::Duration;

/// One rule file: one group.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    /// Group name, unique across the rule set.
    pub group: String,
    /// Expected sample period of the group's signals; also the step of aggregate,
    /// quantile, absent and compound rules.
    pub interval: Duration,
    /// Labels added to every alert of the group.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How long a series may stay silent before its state expires (default 5m).
    #[serde(default = "default_staleness")]
    pub staleness: Duration,
    /// The rules, each parsed on its own so that all their errors are reported.
    pub rules: Vec<serde_yaml::Value>,
}

const fn default_staleness() -> Duration {
    Duration::from_secs(300)
}

/// One rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Alert name.
    pub name: String,
    /// PromQL vector selector.
    #[serde(default)]
    pub select: Option<String>,
    /// Labels identifying one state (default: all but `__name__`).
    #[serde(default)]
    pub by: Option<Vec<String>>,
    /// Counter → per-second rate over this range.
    #[serde(default)]
    pub rate: Option<Duration>,
    /// Cross-series aggregation per step.
    #[serde(default)]
    pub aggregate: Option<RawAggregate>,
    /// Histogram quantile from `_bucket` series.
    #[serde(default)]
    pub quantile: Option<f64>,
    /// The detector.
    #[serde(default)]
    pub detect: Option<DetectConfig>,
    /// Combination of other rules.
    #[serde(default)]
    pub compound: Option<RawCompound>,
    /// Pending time before firing (default 0s).
    #[serde(default, rename = "for")]
    pub for_: Duration,
    /// Time to keep firing after the condition cleared (default 0s).
    #[serde(default)]
    pub keep_firing_for: Duration,
    /// Minimum age of a state before it may fire (default 0s).
    #[serde(default)]
    pub new_series_delay: Duration,
    /// Flap damping.
    #[serde(default)]
    pub flapping: Option<RawFlapping>,
    /// Severity label (default warning).
    #[serde(default)]
    pub severity: Severity,
    /// Extra labels (templated).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations (templated).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// What to do when the rule fires (default `[alert]`).
    #[serde(default = "default_actions")]
    pub actions: Vec<RawAction>,
    /// Cap on states of this rule (default 100000).
    #[serde(default = "default_max_series")]
    pub max_series: u32,
}

fn default_actions() -> Vec<RawAction> {
    vec![RawAction::Alert]
}

const fn default_max_series() -> u32 {
    100_000
}

/// `aggregate:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAggregate {
    /// How values combine.
    pub op: AggregateOp,
    /// Grouping labels (default: none, one group).
    #[serde(default)]
    pub by: Vec<String>,
}

/// Aggregation operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggregateOp {
    /// Sum.
    Sum,
    /// Mean.
    Avg,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Number of series.
    Count,
}

/// `compound:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompound {
    /// All of these rules.
    #[serde(default)]
    pub all: Vec<String>,
    /// Any of these rules.
    #[serde(default)]
    pub any: Vec<String>,
    /// How recently each must have fired.
    pub within: Duration,
    /// Labels the rules are joined on.
    pub on: Vec<String>,
}

/// `flapping:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlapping {
    /// More condition changes than this within `within` is flapping.
    pub max_changes: u32,
    /// The span over which changes are counted.
    pub within: Duration,
}

/// Alert severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Needs a look.
    #[default]
    Warning,
    /// Needs action.
    Critical,
    /// Wake someone up.
    Page,
}

impl Severity {
    /// As written in rule files and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Page => "page",
        }
    }
}

/// One entry of `actions:`: `alert`, or a one-key map such as `isolate: { node: ... }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RawAction {
    /// Send the alert to the alert sinks.
    Alert,
    /// Cordon and taint a node.
    Isolate(RawTarget),
    /// Evict pods (all of a node's, or one pod) through the Eviction API.
    Evict(RawTarget),
    /// Cordon, then evict every pod of a node.
    Drain(RawTarget),
}

/// Target of an intent; every field is a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// Node name.
    pub node: String,
    /// Namespace of the pod (evict only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pod name (evict only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

impl<'de> Deserialize<'de> for RawAction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const KINDS: &[&str] = &["alert", "isolate", "evict", "drain"];
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawAction;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`alert` or a map such as `isolate: { node: \"{{ $labels.node }}\" }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawAction, E> {
                match v {
                    "alert" => Ok(RawAction::Alert),
                    "isolate" | "evict" | "drain" => Err(E::custom(format!(
                        "`{v}` needs a target, e.g. `{v}: {{ node: \"{{{{ $labels.node }}}}\" }}`"
                    ))),
                    _ => Err(E::unknown_variant(v, KINDS)),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawAction, A::Error> {
                use serde::de::Error;
                let kind: String = map
                    .next_key()?
                    .ok_or_else(|| A::Error::custom("empty action"))?;
                let action = match kind.as_str() {
                    "isolate" => RawAction::Isolate(map.next_value()?),
                    "evict" => RawAction::Evict(map.next_value()?),
                    "drain" => RawAction::Drain(map.next_value()?),
                    _ => return Err(A::Error::unknown_variant(&kind, KINDS)),
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(A::Error::custom("one action per list entry"));
                }
                Ok(action)
            }
        }
        d.deserialize_any(V)
    }
}
