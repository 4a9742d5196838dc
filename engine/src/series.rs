//! Samples and the series registry: every distinct label set gets a compact [`SeriesId`];
//! its labels are stored once. Ids of expired series are reused.

use serde::{Deserialize, Serialize};

use crate::labels::{self, LabelBuf, LabelIndex, Labels};
use crate::paged::Paged;
use crate::symbols::{Arena, Symbols};

/// Compact id of an interned series.
pub type SeriesId = u32;

/// One observation of one series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The series (from [`SeriesRegistry::intern`]).
    pub series: SeriesId,
    /// Event time, ms since the Unix epoch.
    pub ts: i64,
    /// Value; NaN/±Inf are dropped and counted, except the stale marker.
    pub value: f64,
}

/// Prometheus' staleness marker: a NaN with this exact bit pattern ends a series.
pub const STALE_MARKER: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

/// Whether `v` is the staleness marker.
#[inline]
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_MARKER.to_bits()
}

/// Where a series' samples go: rule index and the rule's input slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) rule: u32,
    pub(crate) input: u32,
}

/// The routes of a series: none computed yet, one (inline), or several.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Routes {
    /// Not computed yet (or the series expired).
    #[default]
    Unrouted,
    /// The series feeds no rule.
    Empty,
    /// The series feeds one rule.
    One(Route),
    /// The series feeds several rules (a thin box: the variant stays 8 bytes).
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Route>>),
}

impl Routes {
    pub(crate) fn from_vec(v: Vec<Route>) -> Self {
        match v.as_slice() {
            [] => Routes::Empty,
            [one] => Routes::One(*one),
            _ => {
                let mut v = v;
                v.shrink_to_fit();
                Routes::Many(Box::new(v))
            }
        }
    }

    #[inline]
    pub(crate) fn is_none(&self) -> bool {
        matches!(self, Routes::Unrouted)
    }

    #[inline]
    pub(crate) fn is_some(&self) -> bool {
        !self.is_none()
    }

    pub(crate) fn take(&mut self) -> Routes {
        std::mem::take(self)
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[Route] {
        match self {
            Routes::Unrouted | Routes::Empty => &[],
            Routes::One(r) => std::slice::from_ref(r),
            Routes::Many(b) => b,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Routes::Many(b) => {
                std::mem::size_of::<Vec<Route>>() + b.capacity() * std::mem::size_of::<Route>()
            }
            _ => 0,
        }
    }
}

/// Input slot value marking a series the rule refused (series cap reached).
pub(crate) const REFUSED: u32 = u32::MAX;

/// A series as a snapshot keeps it (the fields of [`Entry`], labels string-encoded).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapEntry {
    labels: LabelBuf,
    time: i64,
    buffered: u32,
    pub(crate) routed: bool,
    evaluated: bool,
    pub(crate) live: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Location of the labels, as symbol ids (see [`crate::symbols`]), in the
    /// registry's arena of label sets; meaningless when the slot is free.
    labels: u32,
    /// Once a sample was evaluated (`evaluated`), the timestamp of the last one (for
    /// duplicate detection); before, when the expiry sweep first saw the series (its
    /// staleness clock starts there), or `i64::MIN`.
    time: i64,
    /// Samples of this series waiting for the watermark; an expired series is kept
    /// in the registry (with no rule state) until they are evaluated.
    pub(crate) buffered: u32,
    /// Rules fed by this series; computed on first use, rebuilt on restore.
    pub(crate) routes: Routes,
    /// Whether `routes` was computed (kept across a snapshot: series that were never
    /// routed are routed lazily after a restore too, at their next sample).
    pub(crate) routed: bool,
    evaluated: bool,
    pub(crate) live: bool,
}

impl Entry {
    /// Timestamp of the last evaluated sample; `i64::MIN` before the first.
    #[inline]
    pub(crate) fn last_ts(&self) -> i64 {
        if self.evaluated {
            self.time
        } else {
            i64::MIN
        }
    }

    #[inline]
    pub(crate) fn set_last_ts(&mut self, ts: i64) {
        self.time = ts;
        self.evaluated = true;
    }

    /// For a series never evaluated: when the expiry sweep first saw it (`i64::MIN`
    /// before that, and once a sample was evaluated).
    pub(crate) fn idle_since(&self) -> i64 {
        if self.evaluated {
            i64::MIN
        } else {
            self.time
        }
    }

    /// Sets [`Entry::idle_since`] (no effect once a sample was evaluated).
    pub(crate) fn set_idle_since(&mut self, t: i64) {
        if !self.evaluated {
            self.time = t;
        }
    }
}

/// Interns label sets.
#[derive(Debug, Clone, Default)]
pub struct SeriesRegistry {
    pub(crate) entries: Paged<Entry>,
    pub(crate) free: Vec<u32>,
    /// Keyed by the symbol encoding.
    index: LabelIndex,
    /// The series' label sets, as symbol ids.
    sets: Arena,
    pub(crate) symbols: Symbols,
    scratch: Vec<u8>,
    sym_scratch: Vec<u8>,
    /// A series was interned since the evaluator last looked (its staleness clock
    /// starts at the next expiry sweep, which must not be skipped).
    pub(crate) fresh: bool,
    /// Series removed so far (see [`SeriesRegistry::removals`]).
    removals: u64,
    /// Which registry this is (see [`SeriesRegistry::generation`]).
    instance: Instance,
}

/// A process-unique number per registry value: a new one for every registry made,
/// restored or cloned, so ids cached from one never pass for another's.
#[derive(Debug, PartialEq, Eq)]
struct Instance(u64);

impl Instance {
    fn next() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Instance(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl Default for Instance {
    fn default() -> Self {
        Instance::next()
    }
}

impl Clone for Instance {
    fn clone(&self) -> Self {
        Instance::next()
    }
}

/// While a registry's [`generation`](SeriesRegistry::generation) stays equal, every id
/// it handed out still names the labels it was interned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    instance: u64,
    removals: u64,
}

impl SeriesRegistry {
    /// The id of `labels`, interning it if new.
    pub fn intern(&mut self, labels: &Labels) -> SeriesId {
        let mut buf = std::mem::take(&mut self.scratch);
        labels::encode_sorted(
            labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &mut buf,
        );
        let id = self.intern_encoded(&buf);
        self.scratch = buf;
        id
    }

    /// The id of a set of pairs (sorted here; later duplicates of a name are dropped).
    pub fn intern_pairs(&mut self, pairs: &mut [(&str, &str)]) -> SeriesId {
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let mut buf = std::mem::take(&mut self.scratch);
        let mut prev: Option<&str> = None;
        labels::encode_sorted(
            pairs.iter().copied().filter(|(k, _)| {
                let dup = prev == Some(*k);
                prev = Some(k);
                !dup
            }),
            &mut buf,
        );
        let id = self.intern_encoded(&buf);
        self.scratch = buf;
        id
    }

    pub(crate) fn intern_encoded(&mut self, buf: &[u8]) -> SeriesId {
        let mut set = std::mem::take(&mut self.sym_scratch);
        if self.symbols.encode_lookup(buf, &mut set) {
            let (entries, sets) = (&self.entries, &self.sets);
            if let Some(id) = self
                .index
                .find(&set, |i| sets.get(entries[i as usize].labels))
            {
                self.sym_scratch = set;
                return id;
            }
            self.symbols.acquire_set(&set);
        } else if self.symbols.encode_acquire(buf, &mut set).is_none() {
            unreachable!("label sets are encoded by `labels::encode_sorted`");
        }
        let id = self.insert_symbols(&set);
        self.sym_scratch = set;
        id
    }

    /// Adds a series whose labels (symbol-encoded, references taken) are new.
    fn insert_symbols(&mut self, set: &[u8]) -> SeriesId {
        let entry = Entry {
            labels: self.sets.store(set),
            time: i64::MIN,
            buffered: 0,
            routed: false,
            evaluated: false,
            routes: Routes::Unrouted,
            live: true,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        let (entries, sets) = (&self.entries, &self.sets);
        self.index
            .insert(set, id, |i| sets.get(entries[i as usize].labels));
        self.fresh = true;
        id
    }

    /// Writes the (string-)encoded labels of series `id` to `out` (cleared first),
    /// without `__name__` when `skip_name`; nothing for a free id.
    pub(crate) fn write_labels(&self, id: SeriesId, skip_name: bool, out: &mut Vec<u8>) {
        match self.entries.get(id as usize).filter(|e| e.live) {
            Some(e) => self.symbols.decode(self.sets.get(e.labels), skip_name, out),
            None => out.clear(),
        }
    }

    /// Labels of a live series.
    pub fn labels(&self, id: SeriesId) -> Option<Labels> {
        self.entries.get(id as usize).filter(|e| e.live).map(|e| {
            self.symbols
                .pairs(self.sets.get(e.labels))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    }

    /// Number of live series.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no series is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many series were removed (expired) so far. Ids of removed series are
    /// reused, so a caller that caches ids by labels must drop its cache when this
    /// changes.
    pub fn removals(&self) -> u64 {
        self.removals
    }

    /// Changes whenever an id may stop naming the labels it was interned for: a series
    /// removed (its id is reused), or this registry replaced (restored, cloned). A
    /// cache of ids by labels is valid while this stays equal.
    pub fn generation(&self) -> Generation {
        Generation {
            instance: self.instance.0,
            removals: self.removals,
        }
    }

    pub(crate) fn remove(&mut self, id: SeriesId) {
        self.removals += 1;
        let e = &mut self.entries[id as usize];
        let set = self.sets.get(e.labels);
        self.index.remove(set, id);
        self.symbols.release_set(set);
        self.sets.free(e.labels);
        e.routes = Routes::Unrouted;
        e.live = false;
        self.free.push(id);
        if self.sets.wants_compaction() {
            self.sets.compact(
                self.entries
                    .iter_mut()
                    .filter(|e| e.live)
                    .map(|e| &mut e.labels),
            );
        }
    }

    /// Replaces the entries with those of a snapshot (labels string-encoded there),
    /// interning their labels. None if a label set is malformed or appears twice.
    pub(crate) fn restore(&mut self, entries: Vec<SnapEntry>, free: Vec<u32>) -> Option<()> {
        *self = SeriesRegistry::default();
        let mut set = Vec::new();
        for e in entries {
            let mut entry = Entry {
                labels: 0,
                time: e.time,
                buffered: e.buffered,
                routes: Routes::Unrouted,
                routed: e.routed,
                evaluated: e.evaluated,
                live: e.live,
            };
            let id = self.entries.len() as u32;
            if e.live {
                self.symbols.encode_acquire(&e.labels, &mut set)?;
                let (entries, sets) = (&self.entries, &self.sets);
                if self
                    .index
                    .find(&set, |i| sets.get(entries[i as usize].labels))
                    .is_some()
                {
                    return None;
                }
                entry.labels = self.sets.store(&set);
                self.entries.push(entry);
                let (entries, sets) = (&self.entries, &self.sets);
                self.index
                    .insert(&set, id, |i| sets.get(entries[i as usize].labels));
            } else {
                self.entries.push(entry);
            }
        }
        self.free = free;
        Some(())
    }

    /// The entries as a snapshot keeps them: labels string-encoded.
    pub(crate) fn snapshot_entries(&self) -> Vec<SnapEntry> {
        self.entries
            .iter()
            .map(|e| {
                let mut buf = Vec::new();
                if e.live {
                    self.symbols.decode_all(self.sets.get(e.labels), &mut buf);
                }
                SnapEntry {
                    labels: buf.into(),
                    time: e.time,
                    buffered: e.buffered,
                    routed: e.routes.is_some(),
                    evaluated: e.evaluated,
                    live: e.live,
                }
            })
            .collect()
    }

    /// Heap bytes held (labels, entries, routes, index).
    pub fn heap_bytes(&self) -> usize {
        let entries = self.entries.heap_bytes();
        let owned: usize = self.entries.iter().map(|e| e.routes.heap_bytes()).sum();
        entries
            + owned
            + self.index.heap_bytes()
            + self.free.capacity() * 4
            + self.symbols.heap_bytes()
            + self.sets.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_ids_are_reused() {
        let mut r = SeriesRegistry::default();
        let a = r.intern_pairs(&mut [("pod", "a"), ("__name__", "x")]);
        let b = r.intern_pairs(&mut [("__name__", "x"), ("pod", "b")]);
        assert_ne!(a, b);
        assert_eq!(r.intern_pairs(&mut [("__name__", "x"), ("pod", "a")]), a);
        assert_eq!(r.len(), 2);
        r.remove(a);
        assert_eq!(r.len(), 1);
        assert!(r.labels(a).is_none());
        let c = r.intern_pairs(&mut [("__name__", "y")]);
        assert_eq!(c, a, "freed id is reused");
        assert_eq!(r.labels(c).unwrap().get("__name__").unwrap(), "y");
        assert_eq!(r.intern_pairs(&mut [("__name__", "x"), ("pod", "b")]), b);
    }

    #[test]
    fn churn_frees_and_compacts_labels() {
        let mut r = SeriesRegistry::default();
        let pod = |i: usize| format!("pod-{i:06}-abcdefgh");
        let ids: Vec<SeriesId> = (0..20_000)
            .map(|i| r.intern_pairs(&mut [("__name__", "m"), ("pod", &pod(i))]))
            .collect();
        let before = r.heap_bytes();
        for &id in &ids[..15_000] {
            r.remove(id);
        }
        assert_eq!(r.len(), 5_000);
        for (i, &id) in ids.iter().enumerate().skip(15_000) {
            assert_eq!(r.labels(id).unwrap()["pod"], pod(i));
            assert_eq!(
                r.intern_pairs(&mut [("pod", &pod(i)), ("__name__", "m")]),
                id
            );
        }
        // Churn: new pods take the freed ids, and the arenas do not grow without bound.
        for round in 0..3 {
            let fresh: Vec<SeriesId> = (0..15_000)
                .map(|i| {
                    r.intern_pairs(&mut [
                        ("__name__", "m"),
                        ("pod", &pod(100_000 * (round + 1) + i)),
                    ])
                })
                .collect();
            for &id in &fresh {
                r.remove(id);
            }
        }
        assert!(
            r.heap_bytes() <= before + before / 4,
            "{} > {before}",
            r.heap_bytes()
        );
        for (i, &id) in ids.iter().enumerate().skip(15_000) {
            assert_eq!(r.labels(id).unwrap()["pod"], pod(i));
        }
    }

    #[test]
    fn generation_changes_when_ids_may_change_meaning() {
        let mut r = SeriesRegistry::default();
        let g0 = r.generation();
        let a = r.intern_pairs(&mut [("__name__", "x")]);
        assert_eq!(r.generation(), g0, "interning keeps every id's meaning");
        r.remove(a);
        let g1 = r.generation();
        assert_ne!(g1, g0, "a removal frees an id for reuse");
        let copy = r.clone();
        assert_ne!(copy.generation(), g1, "a clone evolves on its own");
        assert_eq!(r.generation(), g1);
        let snap: Vec<SnapEntry> = Vec::new();
        r.restore(snap, Vec::new())
            .expect("an empty registry restores");
        assert_ne!(r.generation(), g1, "a restored registry is another one");
    }

    #[test]
    fn stale_marker_is_distinct_from_nan() {
        assert!(is_stale_marker(STALE_MARKER));
        assert!(!is_stale_marker(f64::NAN));
    }
}
