//! Series ids of OTLP data points by what names them in the request, so a series seen
//! before skips sorting and symbol-encoding its labels (about 1 µs for the 20-odd
//! labels of a Kubernetes pod's resource) and costs one hash lookup.
//!
//! The key of an output series is the 128-bit XXH3 of its inputs in request order,
//! length-prefixed: the hash of its scope's suffix pairs (scope name, resource
//! attributes and their aliases), the metric name, the extra label (`le`, `quantile`)
//! and the point's attributes. A point with several output series (a histogram's
//! `_count`, `_sum` and buckets, a summary's quantiles) hashes its scope's hash and its
//! attributes once, and each output series hashes that with its name and extra label.
//! A leading tag keeps the three kinds of input apart. The labels
//! [`SeriesRegistry::intern_pairs`] makes of them are a function of that sequence, so
//! equal keys mean equal labels: two sequences share a key only by a 128-bit collision
//! (about 10⁻²⁶ for a million series). The same series sent with its attributes in
//! another order has another key and the same id.
//!
//! Lookups follow the request's order. Each scope (resource and instrumentation scope)
//! remembers the keys of its series in the order they last came, and a lookup first
//! checks the next one there: senders repeat the same metrics in the same order every
//! export, so the common lookup reads memory next to the previous one instead of a
//! random slot of a table of every series (a cache miss per point, a fifth of the
//! engine thread's time at 100 000 series). A key out of that order is found in the
//! table of every key, and takes its place in the scope's sequence.
//!
//! The cache is dropped whenever the registry's [`Generation`] changes (a series
//! expired and its id may be reused, or the evaluator was replaced on reload) and when
//! it holds more keys, scopes or sequence entries than twice the registry's series plus
//! [`SLACK`], which bounds it under attribute-order and resource churn.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use twox_hash::XxHash3_128;
use vigil_engine::series::{Generation, SeriesId, SeriesRegistry};

/// Keys kept beyond twice the registry's series before the cache is dropped.
const SLACK: usize = 1 << 16;

/// Hashes a key that is already a uniform hash: its low 64 bits.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// The cache; see the module docs.
#[derive(Debug, Default)]
pub(super) struct IdCache {
    ids: HashMap<u128, SeriesId, BuildHasherDefault<PreHashed>>,
    /// Scope key → index into `orders`.
    scopes: HashMap<u128, u32, BuildHasherDefault<PreHashed>>,
    /// Per scope, its series' keys and ids in the order they last came.
    orders: Vec<Vec<(u128, SeriesId)>>,
    /// Entries in `orders`.
    ordered: usize,
    /// The scope being mapped (an index into `orders`) and the position in its order.
    scope: usize,
    pos: usize,
    generation: Option<Generation>,
    /// Scratch for the key being built.
    buf: Vec<u8>,
}

fn put(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// The tag of a key's kind (see the module docs), then the hash it extends.
fn put_tagged(buf: &mut Vec<u8>, tag: u8, hash: u128) {
    buf.push(tag);
    buf.extend_from_slice(&hash.to_le_bytes());
}

/// A series' name and extra label, length-prefixed.
fn put_series(buf: &mut Vec<u8>, name: &str, extra: Option<(&str, &str)>) {
    put(buf, name);
    match extra {
        Some((k, v)) => {
            buf.push(1);
            put(buf, k);
            put(buf, v);
        }
        None => buf.push(0),
    }
}

fn put_attrs<'a>(buf: &mut Vec<u8>, attrs: impl Iterator<Item = (&'a str, &'a str)>) {
    for (k, v) in attrs {
        put(buf, k);
        put(buf, v);
    }
}

impl IdCache {
    /// Drops the cache if the registry's ids may have changed meaning; call once per
    /// request before [`IdCache::get`].
    pub(super) fn sync(&mut self, series: &SeriesRegistry) {
        let generation = Some(series.generation());
        let bound = 2 * series.len() + SLACK;
        if generation != self.generation
            || self.ids.len() > bound
            || self.ordered > bound
            || self.scopes.len() > bound
        {
            self.ids.clear();
            self.scopes.clear();
            self.orders.clear();
            self.ordered = 0;
            self.generation = generation;
        }
    }

    /// Starts the series of a scope: returns the hash of its suffix pairs, the first
    /// part of its series' keys, and makes it the scope [`IdCache::get`] and
    /// [`IdCache::insert`] follow the order of.
    pub(super) fn enter_scope(&mut self, pairs: &[(&str, &str)]) -> u128 {
        let key = self.hash(|buf| put_attrs(buf, pairs.iter().copied()));
        let next = self.orders.len();
        let scope = *self.scopes.entry(key).or_insert(next as u32) as usize;
        if scope == next {
            self.orders.push(Vec::new());
        }
        self.scope = scope;
        self.pos = 0;
        key
    }

    /// The key of the one output series of a point: its scope's key, name, extra label
    /// and the point's attribute pairs (as `push_attrs` would push them, aliases
    /// excluded: they follow from the keys).
    pub(super) fn key<'a>(
        &mut self,
        scope: u128,
        name: &str,
        extra: Option<(&str, &str)>,
        attrs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> u128 {
        self.hash(|buf| {
            put_tagged(buf, 0, scope);
            put_series(buf, name, extra);
            put_attrs(buf, attrs);
        })
    }

    /// What the output series of a point with several share: its scope's key and its
    /// attribute pairs, for [`IdCache::output_key`].
    pub(super) fn point_key<'a>(
        &mut self,
        scope: u128,
        attrs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> u128 {
        self.hash(|buf| {
            put_tagged(buf, 1, scope);
            put_attrs(buf, attrs);
        })
    }

    /// The key of one output series of a point with several, from its
    /// [`IdCache::point_key`].
    pub(super) fn output_key(
        &mut self,
        point: u128,
        name: &str,
        extra: Option<(&str, &str)>,
    ) -> u128 {
        self.hash(|buf| {
            put_tagged(buf, 2, point);
            put_series(buf, name, extra);
        })
    }

    /// The XXH3-128 of what `fill` writes into the scratch buffer.
    fn hash(&mut self, fill: impl FnOnce(&mut Vec<u8>)) -> u128 {
        self.buf.clear();
        fill(&mut self.buf);
        XxHash3_128::oneshot(&self.buf)
    }

    /// The id of the series with key `key`, the next of the current scope.
    pub(super) fn get(&mut self, key: u128) -> Option<SeriesId> {
        if let Some(&(k, id)) = self.orders[self.scope].get(self.pos) {
            if k == key {
                self.pos += 1;
                return Some(id);
            }
        }
        let id = self.ids.get(&key).copied()?;
        self.place(key, id);
        Some(id)
    }

    /// Remembers `id` for `key`, the next series of the current scope; call after
    /// interning within the same generation.
    pub(super) fn insert(&mut self, key: u128, id: SeriesId) {
        self.ids.insert(key, id);
        self.place(key, id);
    }

    /// Puts `(key, id)` at the current position of the current scope's order.
    fn place(&mut self, key: u128, id: SeriesId) {
        let order = &mut self.orders[self.scope];
        match order.get_mut(self.pos) {
            Some(slot) => *slot = (key, id),
            None => {
                order.push((key, id));
                self.ordered += 1;
            }
        }
        self.pos += 1;
    }

    /// Keys cached.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scopes whose points are never cached (delta sums) still count towards the
    /// bound: resource churn cannot grow the cache without end.
    #[test]
    fn scope_churn_is_bounded() {
        let series = SeriesRegistry::default();
        let mut cache = IdCache::default();
        cache.sync(&series);
        for i in 0..=SLACK {
            cache.enter_scope(&[("pod", &i.to_string())]);
        }
        assert_eq!(cache.scopes.len(), SLACK + 1);
        cache.sync(&series);
        assert_eq!((cache.scopes.len(), cache.orders.len()), (0, 0));
        cache.enter_scope(&[("pod", "a")]);
        cache.sync(&series);
        assert_eq!(cache.scopes.len(), 1, "kept while within the bound");
    }
}
