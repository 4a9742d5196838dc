//! Per-rule state: input slots (one per series a rule reads) and states (one per
//! distinct key, e.g. per node after `aggregate: {by: [node]}`), in slabs indexed by
//! `u32` so the per-sample path is array indexing, not hashing.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::RuleStats;
use crate::detector::{DetectorState, Verdict};
use crate::labels::{LabelBuf, LabelIndex};
use crate::lifecycle::Track;
use crate::rule::{Rule, RuleKind};
use crate::series::SeriesId;
use crate::signal::CounterRate;

/// A vector with stable indices and slot reuse.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
    live: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }
}

impl<T> Slab<T> {
    pub(super) fn insert(&mut self, v: T) -> u32 {
        self.live += 1;
        match self.free.pop() {
            Some(i) => {
                self.items[i as usize] = Some(v);
                i
            }
            None => {
                self.items.push(Some(v));
                (self.items.len() - 1) as u32
            }
        }
    }

    /// Panics on a free slot: callers hold only live indices.
    #[inline]
    pub(super) fn get(&self, i: u32) -> &T {
        self.items[i as usize].as_ref().expect("live slab slot")
    }

    #[inline]
    pub(super) fn get_mut(&mut self, i: u32) -> &mut T {
        self.items[i as usize].as_mut().expect("live slab slot")
    }

    pub(super) fn remove(&mut self, i: u32) -> Option<T> {
        let v = self.items.get_mut(i as usize)?.take()?;
        self.live -= 1;
        self.free.push(i);
        Some(v)
    }

    pub(super) fn live(&self) -> usize {
        self.live
    }

    pub(super) fn contains(&self, i: u32) -> bool {
        self.items.get(i as usize).is_some_and(Option::is_some)
    }

    pub(super) fn slots(&self) -> usize {
        self.items.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|v| (i as u32, v)))
    }
}

/// One series as a rule reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Input {
    pub(super) series: SeriesId,
    /// The state this series feeds.
    pub(super) key: u32,
    pub(super) last_ts: i64,
    /// Latest value after `rate`.
    pub(super) value: f64,
    /// Bucket bound of a `_bucket` series (quantile rules).
    pub(super) le: f64,
    pub(super) rate: Option<Box<CounterRate>>,
}

/// One evaluation of a state, for charts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Event time, ms.
    pub ts: i64,
    /// Value given to the detector.
    pub value: f64,
    /// Lower edge of the detector's normal band (NaN when it has none).
    pub lo: f64,
    /// Upper edge of the band.
    pub hi: f64,
    /// Detector score.
    pub score: f64,
}

/// Recent evaluations of a state (boxed in [`Key`] so quiet states pay one pointer).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct History(pub(super) VecDeque<Point>, usize);

/// One state: detector memory and alert lifecycle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Key {
    pub(super) labels: LabelBuf,
    pub(super) born: i64,
    pub(super) last_seen: i64,
    /// Inputs feeding this state.
    pub(super) refs: u32,
    pub(super) detector: DetectorState,
    pub(super) track: Track,
    /// Compound rules: when each referenced rule last fired for this key.
    pub(super) fired: Box<[i64]>,
    /// Evaluations since the state first became active (None until then, so quiet
    /// states cost no history memory).
    pub(super) history: Option<Box<History>>,
    /// History recorded from birth (reports, NAB), never freed early.
    pub(super) traced: bool,
}

impl Key {
    pub(super) fn new(rule: &Rule, born: i64) -> Self {
        Key {
            labels: LabelBuf::default(),
            born,
            last_seen: born,
            refs: 0,
            detector: rule
                .detector
                .as_ref()
                .map_or(DetectorState::Stateless, |d| d.new_state()),
            track: Track::default(),
            fired: match &rule.kind {
                RuleKind::Compound(c) => vec![i64::MIN; c.refs.len()].into_boxed_slice(),
                _ => Box::default(),
            },
            history: None,
            traced: false,
        }
    }

    /// Starts recording every evaluation from now on (traced states).
    pub(super) fn trace(&mut self) {
        self.traced = true;
        self.history.get_or_insert_with(Box::default);
    }

    /// Appends an evaluation to the history (at most `limit` points), starting it
    /// (seeded with the detector's window) when the state first becomes active.
    pub(super) fn record(
        &mut self,
        rule: &Rule,
        ts: i64,
        value: f64,
        verdict: Verdict,
        limit: usize,
    ) {
        if limit == 0 {
            return;
        }
        if self.history.is_none() {
            if !self.track.is_active() {
                return;
            }
            let mut h = VecDeque::new();
            if let Some(det) = &rule.detector {
                h.extend(
                    det.window_points(&self.detector)
                        .into_iter()
                        .filter(|&(t, _)| t < ts)
                        .map(|(t, v)| Point {
                            ts: t,
                            value: v,
                            lo: f64::NAN,
                            hi: f64::NAN,
                            score: f64::NAN,
                        }),
                );
            }
            self.history = Some(Box::new(History(h, 0)));
        }
        if let Some(History(h, since_active)) = self.history.as_deref_mut() {
            // An alert long over: once the history no longer reaches back to the time
            // it was active (and the state is not traced from birth), free it.
            *since_active = if self.track.is_active() {
                0
            } else {
                *since_active + 1
            };
            if *since_active >= limit && !self.traced {
                self.history = None;
                return;
            }
            while h.len() >= limit {
                h.pop_front();
            }
            let (lo, hi) = verdict.band.unwrap_or((f64::NAN, f64::NAN));
            h.push_back(Point {
                ts,
                value,
                lo,
                hi,
                score: verdict.score,
            });
        }
    }
}

/// States of one rule, findable by their labels.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct KeyTable {
    slab: Slab<Key>,
    #[serde(skip)]
    index: LabelIndex,
}

impl KeyTable {
    pub(super) fn find(&self, buf: &[u8]) -> Option<u32> {
        let slab = &self.slab;
        self.index.find(buf, |k| &slab.get(k).labels)
    }

    pub(super) fn insert(&mut self, buf: &[u8], mut key: Key) -> u32 {
        key.labels = buf.into();
        let k = self.slab.insert(key);
        let slab = &self.slab;
        self.index.insert(buf, k, |j| &slab.get(j).labels);
        k
    }

    pub(super) fn remove(&mut self, k: u32) {
        if let Some(key) = self.slab.remove(k) {
            self.index.remove(&key.labels, k);
        }
    }

    pub(super) fn contains(&self, k: u32) -> bool {
        self.slab.contains(k)
    }

    #[inline]
    pub(super) fn get(&self, k: u32) -> &Key {
        self.slab.get(k)
    }

    #[inline]
    pub(super) fn get_mut(&mut self, k: u32) -> &mut Key {
        self.slab.get_mut(k)
    }

    pub(super) fn live(&self) -> usize {
        self.slab.live()
    }

    pub(super) fn slots(&self) -> usize {
        self.slab.slots()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &Key)> {
        self.slab.iter()
    }

    pub(super) fn reindex(&mut self) {
        self.index = LabelIndex::default();
        let slab = &self.slab;
        for (k, key) in slab.iter() {
            self.index.insert(&key.labels, k, |j| &slab.get(j).labels);
        }
    }
}

/// Everything the evaluator keeps for one rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RuleState {
    pub(super) inputs: Slab<Input>,
    pub(super) keys: KeyTable,
    /// Next step time of a step rule.
    pub(super) next_step: i64,
    pub(super) stats: RuleStats,
    pub(super) cap_noticed: bool,
}

impl RuleState {
    pub(super) fn new() -> Self {
        RuleState {
            inputs: Slab::default(),
            keys: KeyTable::default(),
            next_step: i64::MIN,
            stats: RuleStats::default(),
            cap_noticed: false,
        }
    }

    /// Approximate heap bytes: slots, labels, windows, index.
    pub(super) fn heap_bytes(&self) -> usize {
        let inputs = self.inputs.items.capacity() * std::mem::size_of::<Option<Input>>()
            + self
                .inputs
                .iter()
                .map(|(_, i)| {
                    i.rate
                        .as_ref()
                        .map_or(0, |r| std::mem::size_of::<CounterRate>() + r.heap_bytes())
                })
                .sum::<usize>();
        let keys = self.keys.slab.items.capacity() * std::mem::size_of::<Option<Key>>()
            + self
                .keys
                .iter()
                .map(|(_, k)| {
                    k.labels.len()
                        + k.detector.heap_bytes()
                        + k.fired.len() * 8
                        + k.track.heap_bytes()
                        + k.history
                            .as_ref()
                            .map_or(0, |h| h.0.capacity() * std::mem::size_of::<Point>())
                })
                .sum::<usize>();
        inputs
            + keys
            + self.keys.index.heap_bytes()
            + (self.inputs.free.capacity() + self.keys.slab.free.capacity()) * 4
    }
}
