//! Per-rule state: input slots (one per series a rule reads) and states (one per
//! distinct key, e.g. per node after `aggregate: {by: [node]}`), in slabs indexed by
//! `u32` so the per-sample path is array indexing, not hashing.

use std::collections::VecDeque;
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

use super::RuleStats;
use crate::detector::{DetectorState, Verdict};
use hashbrown::HashTable;

use crate::labels::{self, LabelBuf};
use crate::lifecycle::Track;
use crate::paged::Paged;
use crate::rule::{Rule, RuleKind};
use crate::series::{SeriesId, SeriesRegistry};
use crate::signal::CounterRate;

/// A vector with stable indices and slot reuse, stored in pages (no doubling spare).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Slab<T> {
    items: Paged<Option<T>>,
    free: Vec<u32>,
    live: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            items: Paged::default(),
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

    /// Heap bytes of the slots and the free list (not the items' own heap).
    pub(super) fn heap_bytes(&self) -> usize {
        self.items.heap_bytes() + self.free.capacity() * 4
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
    /// The state this series feeds, plus one (so a free slot costs no tag).
    key1: NonZeroU32,
}

impl Input {
    pub(super) fn new(series: SeriesId, key: u32) -> Self {
        Input {
            series,
            key1: NonZeroU32::MIN.saturating_add(key),
        }
    }

    /// The state this series feeds.
    #[inline]
    pub(super) fn key(&self) -> u32 {
        self.key1.get() - 1
    }
}

/// The latest sample of an input of an aggregate or quantile rule, which combines its
/// inputs at each step (kept apart from [`Input`], so other rules do not pay for it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct Reading {
    pub(super) last_ts: i64,
    /// Latest value after `rate`.
    pub(super) value: f64,
    /// Bucket bound of a `_bucket` series (quantile rules).
    pub(super) le: f64,
}

const NO_READING: Reading = Reading {
    last_ts: i64::MIN,
    value: f64::NAN,
    le: f64::NAN,
};

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

/// Points an alert history grows by.
const HISTORY_GROWTH: usize = 32;

/// Recent evaluations of a state: the window it was first scored against when it
/// became active (`seed`, as (ts, value): 16 bytes a point instead of 40), then every
/// evaluation since. At most `limit` points in all; the oldest go first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct History {
    seed: VecDeque<(i64, f64)>,
    points: VecDeque<Point>,
    /// Evaluations since the state was last active.
    since_active: usize,
}

impl History {
    /// Every point, oldest first (seed points have no band and no score).
    pub(super) fn points(&self) -> impl Iterator<Item = Point> + '_ {
        self.seed
            .iter()
            .map(|&(ts, value)| Point {
                ts,
                value,
                lo: f64::NAN,
                hi: f64::NAN,
                score: f64::NAN,
            })
            .chain(self.points.iter().copied())
    }

    fn heap_bytes(&self) -> usize {
        self.seed.capacity() * 16 + self.points.capacity() * std::mem::size_of::<Point>()
    }
}

/// Where a state's labels are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum KeyLabels {
    /// Its own encoded copy.
    Own(LabelBuf),
    /// The labels of this series without `__name__` (the state of a rule without `by`:
    /// its labels are stored once, with the series). Turned into `Own` before the
    /// series is removed.
    Series(SeriesId),
}

impl KeyLabels {
    /// Writes the encoded labels to `out` (cleared first).
    pub(super) fn write(&self, series: &SeriesRegistry, out: &mut Vec<u8>) {
        match self {
            KeyLabels::Own(buf) => {
                out.clear();
                out.extend_from_slice(buf);
            }
            KeyLabels::Series(id) => series.write_labels(*id, true, out),
        }
    }

    /// Whether the encoded labels are `buf` (`scratch` is overwritten).
    fn equals(&self, buf: &[u8], series: &SeriesRegistry, scratch: &mut Vec<u8>) -> bool {
        match self {
            KeyLabels::Own(own) => **own == *buf,
            KeyLabels::Series(_) => {
                self.write(series, scratch);
                *scratch == buf
            }
        }
    }

    /// The hash the state index files this state under.
    fn hash(&self, series: &SeriesRegistry) -> u64 {
        match self {
            KeyLabels::Own(own) => labels::fast_hash(own),
            KeyLabels::Series(_) => {
                let mut buf = Vec::new();
                self.write(series, &mut buf);
                labels::fast_hash(&buf)
            }
        }
    }

    /// Heap bytes held.
    fn heap_bytes(&self) -> usize {
        match self {
            KeyLabels::Own(buf) => buf.len(),
            KeyLabels::Series(_) => 0,
        }
    }
}

/// One state: detector memory and alert lifecycle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Key {
    pub(super) labels: KeyLabels,
    pub(super) last_seen: i64,
    /// Inputs feeding this state.
    pub(super) refs: u32,
    pub(super) detector: DetectorState,
    pub(super) track: Track,
    /// What few states need (None for the others, which then pay one pointer).
    pub(super) extra: Option<Box<Extra>>,
}

/// The rarely used part of a [`Key`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Extra {
    /// Compound rules: when each referenced rule last fired for this key.
    pub(super) fired: Box<[i64]>,
    /// Evaluations since the state first became active (None until then, so quiet
    /// states cost no history memory).
    pub(super) history: Option<History>,
    /// History recorded from birth (reports, NAB), never freed early.
    pub(super) traced: bool,
}

impl Key {
    pub(super) fn new(rule: &Rule, born: i64) -> Self {
        Key {
            labels: KeyLabels::Own(LabelBuf::default()),
            last_seen: born,
            refs: 0,
            detector: rule
                .detector
                .as_ref()
                .map_or(DetectorState::Stateless, |d| d.new_state()),
            track: Track::default(),
            extra: match &rule.kind {
                RuleKind::Compound(c) => Some(Box::new(Extra {
                    fired: vec![i64::MIN; c.refs.len()].into_boxed_slice(),
                    ..Extra::default()
                })),
                _ => None,
            },
        }
    }

    /// Compound rules: when each referenced rule last fired for this key.
    pub(super) fn fired(&self) -> &[i64] {
        self.extra.as_ref().map_or(&[], |e| &e.fired)
    }

    /// Compound rules: records that referenced rule `pos` fired at `ts`.
    pub(super) fn set_fired(&mut self, pos: usize, ts: i64) {
        if let Some(f) = self.extra.as_mut().and_then(|e| e.fired.get_mut(pos)) {
            *f = ts;
        }
    }

    /// The recorded history, if any.
    pub(super) fn history(&self) -> Option<&History> {
        self.extra.as_ref().and_then(|e| e.history.as_ref())
    }

    /// Starts recording every evaluation from now on (traced states).
    pub(super) fn trace(&mut self) {
        let extra = self.extra.get_or_insert_with(Box::default);
        extra.traced = true;
        extra.history.get_or_insert_with(History::default);
    }

    /// Appends an evaluation to the history (at most `limit` points), starting it
    /// (seeded with the detector's window) when the state first becomes active.
    pub(super) fn record(
        &mut self,
        rule: &Rule,
        window: &[f64],
        ts: i64,
        value: f64,
        verdict: Verdict,
        limit: usize,
    ) {
        if limit == 0 {
            return;
        }
        if self.history().is_none() {
            if !self.track.is_active() {
                return;
            }
            let mut seed: VecDeque<(i64, f64)> = rule
                .detector
                .as_ref()
                .map(|det| {
                    det.window_points(&self.detector, window)
                        .into_iter()
                        .filter(|&(t, _)| t < ts)
                        .collect()
                })
                .unwrap_or_default();
            seed.shrink_to_fit();
            self.extra.get_or_insert_with(Box::default).history = Some(History {
                seed,
                ..History::default()
            });
        }
        let Some(extra) = self.extra.as_deref_mut() else {
            return;
        };
        if let Some(History {
            seed,
            points: h,
            since_active,
        }) = &mut extra.history
        {
            // An alert long over: once the history no longer reaches back to the time
            // it was active (and the state is not traced from birth), free it.
            *since_active = if self.track.is_active() {
                0
            } else {
                *since_active + 1
            };
            if *since_active >= limit && !extra.traced {
                extra.history = None;
                if extra.fired.is_empty() {
                    self.extra = None;
                }
                return;
            }
            while seed.len() + h.len() >= limit {
                if seed.pop_front().is_none() {
                    h.pop_front();
                }
            }
            if seed.is_empty() && seed.capacity() > 0 {
                seed.shrink_to_fit();
            }
            if h.len() == h.capacity() {
                // Grown a few points at a time, up to the limit (not doubled: most
                // alerts are short, and the limit is 720 points of 40 bytes).
                let want = (h.len() + HISTORY_GROWTH).min(limit);
                h.reserve_exact(want.saturating_sub(h.len()).max(1));
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

    /// Heap bytes held (labels, window, lifecycle detail, extra).
    fn heap_bytes(&self) -> usize {
        self.labels.heap_bytes()
            + self.detector.heap_bytes()
            + self.track.heap_bytes()
            + self.extra.as_ref().map_or(0, |e| {
                std::mem::size_of::<Extra>()
                    + e.fired.len() * 8
                    + e.history.as_ref().map_or(0, History::heap_bytes)
            })
    }
}

/// States of one rule, findable by their (string-encoded) labels.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct KeyTable {
    slab: Slab<Key>,
    #[serde(skip)]
    index: HashTable<u32>,
    /// Without an index (rules where each series has its own state, found from the
    /// series' route: see [`RuleState::one_to_one`]).
    #[serde(skip)]
    unindexed: bool,
}

impl KeyTable {
    pub(super) fn find(&self, buf: &[u8], series: &SeriesRegistry) -> Option<u32> {
        let slab = &self.slab;
        let mut scratch = Vec::new();
        self.index
            .find(labels::fast_hash(buf), |&k| {
                slab.get(k).labels.equals(buf, series, &mut scratch)
            })
            .copied()
    }

    /// Adds a state whose labels (`buf`, also kept as `labels`) are not in the table.
    pub(super) fn insert(
        &mut self,
        buf: &[u8],
        labels: KeyLabels,
        mut key: Key,
        series: &SeriesRegistry,
    ) -> u32 {
        key.labels = labels;
        let k = self.slab.insert(key);
        if self.unindexed {
            return k;
        }
        let slab = &self.slab;
        self.index.insert_unique(labels::fast_hash(buf), k, |&j| {
            slab.get(j).labels.hash(series)
        });
        k
    }

    pub(super) fn remove(&mut self, k: u32, series: &SeriesRegistry) {
        if self.slab.contains(k) {
            if !self.unindexed {
                let hash = self.slab.get(k).labels.hash(series);
                if let Ok(entry) = self.index.find_entry(hash, |&i| i == k) {
                    entry.remove();
                }
            }
            self.slab.remove(k);
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

    pub(super) fn reindex(&mut self, series: &SeriesRegistry) {
        if self.unindexed {
            self.index = HashTable::new();
            return;
        }
        let slab = &self.slab;
        let hash = |k: u32| slab.get(k).labels.hash(series);
        let mut index = HashTable::with_capacity(slab.live());
        for (k, _) in slab.iter() {
            index.insert_unique(hash(k), k, |&j| hash(j));
        }
        self.index = index;
    }
}

/// Elements per page of [`Windows`] (at most; a page holds a power of two of windows).
const WINDOW_PAGE: usize = 8192;

/// The detector windows (zscore) of a rule's states, `per` slots each, by state slot,
/// in pages (no per-state allocation, no doubling spare).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Windows {
    per: u32,
    /// log2 of the windows per page.
    shift: u32,
    pages: Vec<Box<[f64]>>,
}

impl Windows {
    fn new(per: usize) -> Self {
        Windows {
            per: per as u32,
            shift: Self::shift_for(per),
            pages: Vec::new(),
        }
    }

    fn shift_for(per: usize) -> u32 {
        (WINDOW_PAGE / per.max(1)).max(1).ilog2()
    }

    fn page_len(&self) -> usize {
        (self.per as usize) << self.shift
    }

    /// The window of state `k` (empty for rules without one).
    #[inline]
    pub(super) fn get_mut(&mut self, k: u32) -> &mut [f64] {
        let per = self.per as usize;
        if per == 0 {
            return &mut [];
        }
        let at = (k as usize & ((1 << self.shift) - 1)) * per;
        &mut self.pages[(k >> self.shift) as usize][at..at + per]
    }

    /// The window of state `k`, read-only (empty if it has none).
    pub(super) fn get(&self, k: u32) -> &[f64] {
        let per = self.per as usize;
        let at = (k as usize & ((1 << self.shift) - 1)) * per;
        self.pages
            .get((k >> self.shift) as usize)
            .map_or(&[], |p| &p[at..at + per])
    }

    /// Empties the window of a new state `k`.
    pub(super) fn reset(&mut self, k: u32) {
        if self.per == 0 {
            return;
        }
        while self.pages.len() <= (k >> self.shift) as usize {
            self.pages
                .push(vec![f64::NAN; self.page_len()].into_boxed_slice());
        }
        self.get_mut(k).fill(f64::NAN);
    }

    /// Whether windows read from a snapshot fit a rule with `per` slots a window and
    /// cover states `0..slots`.
    pub(super) fn fits(&self, per: usize, slots: usize) -> bool {
        self.per as usize == per
            && self.shift == Self::shift_for(per)
            && self.pages.iter().all(|p| p.len() == self.page_len())
            && (per == 0 || self.pages.len() << self.shift >= slots)
    }

    fn heap_bytes(&self) -> usize {
        self.pages.capacity() * std::mem::size_of::<Box<[f64]>>()
            + self.pages.len() * self.page_len() * 8
    }
}

/// Everything the evaluator keeps for one rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RuleState {
    pub(super) inputs: Slab<Input>,
    /// Aggregate and quantile rules: the latest sample of each input, by input slot.
    readings: Paged<Reading>,
    /// Rules with `rate`: the counter history of each input, by input slot.
    rates: Paged<CounterRate>,
    /// Rules with `new_series_delay`: when each state was created, by state slot.
    births: Paged<i64>,
    pub(super) keys: KeyTable,
    /// Each series has a state of its own, created and expired with it: a rule without
    /// `by`, `rate`, `aggregate` or `quantile` whose selector names one metric (the
    /// state's labels are the series' without `__name__`, so no two series share one).
    /// Such a rule has no input slots and no state index: a series' route gives the
    /// state slot directly.
    #[serde(skip)]
    pub(super) one_to_one: bool,
    /// The states' detector windows, by state slot.
    pub(super) windows: Windows,
    /// Next step time of a step rule.
    pub(super) next_step: i64,
    pub(super) stats: RuleStats,
    pub(super) cap_noticed: bool,
}

impl RuleState {
    pub(super) fn new(rule: &Rule) -> Self {
        let mut st = RuleState::empty(rule);
        st.set_mode(rule);
        st
    }

    /// Whether `rule` gives each series a state of its own (see `one_to_one`).
    fn is_one_to_one(rule: &Rule) -> bool {
        rule.kind == RuleKind::Direct
            && rule.by.is_none()
            && rule.rate_ms.is_none()
            && rule
                .selector
                .as_ref()
                .is_some_and(|s| s.metric_name().is_some())
    }

    /// Sets the derived (not serialised) mode of a new or restored state.
    pub(super) fn set_mode(&mut self, rule: &Rule) {
        self.one_to_one = Self::is_one_to_one(rule);
        self.keys.unindexed = self.one_to_one;
    }

    fn empty(rule: &Rule) -> Self {
        RuleState {
            one_to_one: false,
            windows: Windows::new(rule.detector.as_ref().map_or(0, |d| d.window_slots())),
            inputs: Slab::default(),
            readings: Paged::default(),
            rates: Paged::default(),
            births: Paged::default(),
            keys: KeyTable::default(),
            next_step: i64::MIN,
            stats: RuleStats::default(),
            cap_noticed: false,
        }
    }

    /// The counter history of input `slot`, to update (rules with `rate`).
    #[inline]
    pub(super) fn rate_mut(&mut self, slot: u32) -> &mut CounterRate {
        while self.rates.len() <= slot as usize {
            self.rates.push(CounterRate::default());
        }
        &mut self.rates[slot as usize]
    }

    /// Frees input `slot` (and its counter history); returns the input.
    pub(super) fn remove_input(&mut self, slot: u32) -> Option<Input> {
        let input = self.inputs.remove(slot)?;
        if let Some(r) = self.rates.get_mut(slot as usize) {
            *r = CounterRate::default();
        }
        Some(input)
    }

    /// Records when state `k` of `rule` was created (only rules with a
    /// `new_series_delay` need to know).
    pub(super) fn set_born(&mut self, rule: &Rule, k: u32, born: i64) {
        if rule.new_series_delay_ms > 0 {
            while self.births.len() <= k as usize {
                self.births.push(i64::MIN);
            }
            self.births[k as usize] = born;
        }
    }

    /// When state `k` was created (`i64::MIN` for rules without `new_series_delay`).
    pub(super) fn born(&self, k: u32) -> i64 {
        self.births.get(k as usize).copied().unwrap_or(i64::MIN)
    }

    /// The latest sample of input `slot` (step rules).
    pub(super) fn reading(&self, slot: u32) -> Reading {
        self.readings
            .get(slot as usize)
            .copied()
            .unwrap_or(NO_READING)
    }

    /// The latest sample of input `slot`, to update (step rules).
    pub(super) fn reading_mut(&mut self, slot: u32) -> &mut Reading {
        while self.readings.len() <= slot as usize {
            self.readings.push(NO_READING);
        }
        &mut self.readings[slot as usize]
    }

    /// Approximate heap bytes: slots, labels, windows, index.
    pub(super) fn heap_bytes(&self) -> usize {
        let inputs = self.inputs.heap_bytes()
            + self.readings.heap_bytes()
            + self.rates.heap_bytes()
            + self.births.heap_bytes()
            + self
                .rates
                .iter()
                .map(CounterRate::heap_bytes)
                .sum::<usize>();
        let keys = self.keys.slab.heap_bytes()
            + self.keys.iter().map(|(_, k)| k.heap_bytes()).sum::<usize>();
        inputs
            + keys
            + self.windows.heap_bytes()
            + self.keys.index.capacity() * (std::mem::size_of::<u32>() + 1)
    }
}
