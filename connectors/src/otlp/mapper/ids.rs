//! Series ids of OTLP data points by what names them in the request, so a series seen
//! before skips sorting and symbol-encoding its labels (about 1 µs for the 20-odd
//! labels of a Kubernetes pod's resource) and costs one hash lookup.
//!
//! The key of an output series is the 128-bit XXH3 of its inputs in request order,
//! length-prefixed: the hash of its scope's suffix pairs (scope name, resource
//! attributes and their aliases), the metric name, the extra label (`le`, `quantile`)
//! and the point's attributes. The labels [`SeriesRegistry::intern_pairs`] makes of
//! them are a function of that sequence, so equal keys mean equal labels: two sequences
//! share a key only by a 128-bit collision (about 10⁻²⁶ for a million series). The same
//! series sent with its attributes in another order has another key and the same id.
//!
//! The cache is dropped whenever the registry's [`Generation`] changes (a series
//! expired and its id may be reused, or the evaluator was replaced on reload) and when
//! it holds more keys than twice the registry's series plus [`SLACK`], which bounds it
//! under attribute-order churn.

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
    generation: Option<Generation>,
    /// Scratch for the key being built.
    buf: Vec<u8>,
}

fn put(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

impl IdCache {
    /// Drops the cache if the registry's ids may have changed meaning; call once per
    /// request before [`IdCache::get`].
    pub(super) fn sync(&mut self, series: &SeriesRegistry) {
        let generation = Some(series.generation());
        if generation != self.generation || self.ids.len() > 2 * series.len() + SLACK {
            self.ids.clear();
            self.generation = generation;
        }
    }

    /// The hash of a scope's suffix pairs, the first part of its series' keys.
    pub(super) fn scope_key(&mut self, pairs: &[(&str, &str)]) -> u128 {
        let buf = &mut self.buf;
        buf.clear();
        for (k, v) in pairs {
            put(buf, k);
            put(buf, v);
        }
        XxHash3_128::oneshot(buf)
    }

    /// The key of one output series: its scope's key, name, extra label and the
    /// point's attribute pairs (as `push_attrs` would push them, aliases excluded: they
    /// follow from the keys).
    pub(super) fn key<'a>(
        &mut self,
        scope: u128,
        name: &str,
        extra: Option<(&str, &str)>,
        attrs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> u128 {
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(&scope.to_le_bytes());
        put(buf, name);
        match extra {
            Some((k, v)) => {
                buf.push(1);
                put(buf, k);
                put(buf, v);
            }
            None => buf.push(0),
        }
        for (k, v) in attrs {
            put(buf, k);
            put(buf, v);
        }
        XxHash3_128::oneshot(buf)
    }

    pub(super) fn get(&self, key: u128) -> Option<SeriesId> {
        self.ids.get(&key).copied()
    }

    /// Remembers `id` for `key`; call after interning within the same generation.
    pub(super) fn insert(&mut self, key: u128, id: SeriesId) {
        self.ids.insert(key, id);
    }

    /// Keys cached.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}
