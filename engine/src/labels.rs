//! Label sets and their compact encoding.
//!
//! At the API edges a label set is a sorted map ([`Labels`]). Inside the engine each
//! distinct set is stored once, as a length-prefixed byte string ([`LabelBuf`]) that is
//! cheap to hash, compare and project, and is decoded only when an alert is rendered.

use std::collections::BTreeMap;
use std::hash::Hasher;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

/// A label set as the outside world sees it: name → value, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// The metric-name label.
pub const METRIC_NAME: &str = "__name__";

/// An encoded, sorted label set: for each pair, `len(name) name len(value) value` with
/// LEB128 lengths. Any UTF-8 content is allowed.
pub type LabelBuf = Box<[u8]>;

/// Encodes sorted `(name, value)` pairs into `out` (cleared first). Pairs must already be
/// sorted by name with no duplicates; empty values are skipped, as in Prometheus.
pub fn encode_sorted<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>, out: &mut Vec<u8>) {
    out.clear();
    for (name, value) in pairs {
        if value.is_empty() {
            continue;
        }
        put_str(out, name);
        put_str(out, value);
    }
}

/// Encodes a [`Labels`] map.
pub fn encode(labels: &Labels) -> LabelBuf {
    let mut out = Vec::new();
    encode_sorted(
        labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &mut out,
    );
    out.into_boxed_slice()
}

/// Decodes an encoded set into a [`Labels`] map.
pub fn decode(buf: &[u8]) -> Labels {
    pairs(buf)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Iterates the `(name, value)` pairs of an encoded set, sorted by name.
pub fn pairs(buf: &[u8]) -> Pairs<'_> {
    Pairs { buf }
}

/// The value of label `name` in an encoded set.
pub fn get<'a>(buf: &'a [u8], name: &str) -> Option<&'a str> {
    pairs(buf).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// Keeps only the labels in `keep` (sorted, deduplicated), writing the result to `out`.
pub fn project(buf: &[u8], keep: &[String], out: &mut Vec<u8>) {
    encode_sorted(
        pairs(buf).filter(|(k, _)| keep.binary_search_by(|s| s.as_str().cmp(k)).is_ok()),
        out,
    );
}

/// Drops the labels in `drop` (sorted), writing the result to `out`.
pub fn without(buf: &[u8], drop: &[&str], out: &mut Vec<u8>) {
    encode_sorted(pairs(buf).filter(|(k, _)| !drop.contains(k)), out);
}

/// A stable 64-bit hash of an encoded set (FNV-1a); used for alert fingerprints, so it
/// must never change between versions.
pub fn fingerprint(buf: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in buf {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A fast in-process hash of an encoded set.
pub(crate) fn fast_hash(buf: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(buf);
    h.finish()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Appends one length-prefixed string of an encoded set.
pub(crate) fn put_bytes(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(s);
}

/// Iterator over the pairs of an encoded label set.
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    buf: &'a [u8],
}

impl<'a> Pairs<'a> {
    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    fn take_str(&mut self) -> Option<&'a str> {
        let mut n = 0usize;
        let mut shift = 0;
        loop {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            n |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let (s, rest) = self.buf.split_at_checked(n)?;
        self.buf = rest;
        // Buffers are only ever built from &str by `encode_sorted`.
        std::str::from_utf8(s).ok()
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let k = self.take_str()?;
        let v = self.take_str()?;
        Some((k, v))
    }
}

/// A hash index from encoded label sets to dense `u32` ids whose labels are stored by the
/// owner (so each set is stored once).
#[derive(Debug, Default, Clone)]
pub(crate) struct LabelIndex {
    table: HashTable<u32>,
}

impl LabelIndex {
    pub(crate) fn find<'s>(&self, buf: &[u8], labels_of: impl Fn(u32) -> &'s [u8]) -> Option<u32> {
        self.table
            .find(fast_hash(buf), |&id| labels_of(id) == buf)
            .copied()
    }

    pub(crate) fn insert<'s>(&mut self, buf: &[u8], id: u32, labels_of: impl Fn(u32) -> &'s [u8]) {
        self.table
            .insert_unique(fast_hash(buf), id, |&i| fast_hash(labels_of(i)));
    }

    pub(crate) fn remove(&mut self, buf: &[u8], id: u32) {
        if let Ok(entry) = self.table.find_entry(fast_hash(buf), |&i| i == id) {
            entry.remove();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Heap bytes held by the index.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<u32>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn encode_decode_round_trip_with_odd_content() {
        let long = "x".repeat(300);
        let l = labels(&[("a", "1"), ("node", "n\u{0}7"), ("z", &long), ("é", "ü")]);
        assert_eq!(decode(&encode(&l)), l);
    }

    #[test]
    fn empty_values_are_dropped() {
        let l = labels(&[("a", ""), ("b", "2")]);
        assert_eq!(decode(&encode(&l)), labels(&[("b", "2")]));
    }

    #[test]
    fn project_and_without() {
        let buf = encode(&labels(&[("a", "1"), ("b", "2"), ("c", "3")]));
        let mut out = Vec::new();
        project(&buf, &["a".into(), "c".into()], &mut out);
        assert_eq!(decode(&out), labels(&[("a", "1"), ("c", "3")]));
        without(&buf, &["b"], &mut out);
        assert_eq!(decode(&out), labels(&[("a", "1"), ("c", "3")]));
        assert_eq!(get(&buf, "b"), Some("2"));
        assert_eq!(get(&buf, "x"), None);
    }

    #[test]
    fn fingerprint_is_stable() {
        // Fingerprints are persisted and sent to Alertmanager: this value must not change.
        let buf = encode(&labels(&[("alertname", "X"), ("node", "n1")]));
        assert_eq!(fingerprint(&buf), 0xb49c13329a7f2a13);
    }
}
