//! Vigil's engine: an event-time evaluator of anomaly-detection rules, with no I/O.
//!
//! Start reading at [`rule`] (the rule language: [`rule::RuleSet::load`]) and
//! [`eval::Evaluator`] (samples in, alert transitions and action intents out). The
//! pieces underneath:
//!
//! - [`labels`] and [`series`]: label sets stored once, series interned to `u32` ids;
//! - [`selector`]: PromQL vector selectors that route series to rules;
//! - [`signal`]: counter rates and histogram quantiles;
//! - [`detector`]: threshold, z-score, EWMA, growth (and absence, in the evaluator);
//! - [`lifecycle`]: pending → firing → resolved, hysteresis, flap damping;
//! - [`template`]: `{{ $labels.x }}` annotations and intent targets;
//! - [`ruletest`]: `promtool test rules`-style rule unit tests.
//!
//! The engine never reads a clock: time is the samples' own, advanced by a watermark,
//! so live evaluation and replay of a recording give the same events.
#![doc = include_str!("../README.md")]

pub mod detector;
pub mod duration;
pub mod eval;
pub mod labels;
pub mod lifecycle;
mod paged;
pub mod rule;
pub mod ruletest;
pub mod selector;
pub mod series;
pub mod signal;
mod symbols;
pub mod template;

pub use duration::Duration;
pub use eval::{Evaluator, EvaluatorConfig, Event};
pub use labels::Labels;
pub use rule::RuleSet;
pub use series::{Sample, SeriesId};
